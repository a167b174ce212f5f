"""ImageDataset and the test loader: items, unreadable-file handling, order and batching."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from reidkit.data.dataset import ImageRecord
from reidkit.data.image import ImageReadError
from reidkit.data.loader import ImageDataset, build_test_loader, check_records
from reidkit.data.transforms import build_transforms

TO_TENSOR = build_transforms(8, 4, train=False, normalize=False)


@pytest.fixture
def records(tmp_path):
    """Five images, each a constant grey level 10 * (i + 1); record 1 is corrupt."""
    out = []
    for i in range(5):
        path = tmp_path / f"{i:04d}_c{i % 2 + 1}.png"
        if i == 1:
            path.write_bytes(b"this is not an image")
        else:
            Image.fromarray(np.full((8, 4, 3), 10 * (i + 1), np.uint8)).save(path)
        out.append(ImageRecord(str(path), pid=100 + i, camid=i % 2))
    return out


def grey_level(x):
    return round(float(x.mean()) * 255)


def test_items_are_image_pid_camid_index(records):
    ds = ImageDataset(records, TO_TENSOR)
    x, pid, camid, index = ds[3]
    assert x.shape == (3, 8, 4) and grey_level(x) == 40
    assert (pid, camid, index) == (103, 1, 3)
    assert len(ds) == 5
    assert ds[-1][1:] == (104, 0, 4)


def test_unreadable_image_is_replaced_by_the_next_and_logged_once(records, caplog):
    ds = ImageDataset(records, TO_TENSOR)
    with caplog.at_level(logging.WARNING, logger="reidkit.data.loader"):
        x, pid, camid, index = ds[1]
        assert (grey_level(x), pid, camid, index) == (30, 102, 0, 2)
        assert ds[1][1:] == (102, 0, 2)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert records[1].path in warnings[0].getMessage()
    assert ds.failed_paths == {records[1].path}


def test_substitution_wraps_around_and_skips_known_failures(tmp_path, records):
    missing = ImageRecord(str(tmp_path / "gone.jpg"), 7, 0)
    ds = ImageDataset([records[0], records[1], missing], TO_TENSOR)
    assert ds[1][1:] == (100, 0, 0)
    assert ds.failed_paths == {records[1].path, missing.path}
    assert ds[2][1:] == (100, 0, 0)


def test_a_training_run_continues_past_a_corrupt_file(records, caplog):
    ds = ImageDataset(records, TO_TENSOR)
    with caplog.at_level(logging.WARNING, logger="reidkit.data.loader"):
        batches = list(DataLoader(ds, batch_size=2, shuffle=False))
    pids = torch.cat([b[1] for b in batches]).tolist()
    assert pids == [100, 102, 102, 103, 104]
    assert sum(records[1].path in r.getMessage() for r in caplog.records) == 1


def test_on_error_raise_reraises(records):
    ds = ImageDataset(records, TO_TENSOR, on_error="raise")
    with pytest.raises(ImageReadError, match="0001_c2.png"):
        ds[1]
    assert ds.failed_paths == set()


def test_all_images_unreadable_is_a_clear_error(tmp_path):
    bad = [ImageRecord(str(tmp_path / f"{i}.jpg"), i, 0) for i in range(3)]
    ds = ImageDataset(bad, TO_TENSOR)
    with pytest.raises(RuntimeError, match="none of the 3 images could be read"):
        ds[0]


def test_bad_arguments(records):
    with pytest.raises(ValueError, match="on_error"):
        ImageDataset(records, TO_TENSOR, on_error="ignore")
    with pytest.raises(ValueError, match="no image records"):
        ImageDataset([], TO_TENSOR)
    with pytest.raises(IndexError):
        ImageDataset(records, TO_TENSOR)[5]
    with pytest.raises(ValueError, match="batch_size"):
        build_test_loader(records, TO_TENSOR, batch_size=0)


def test_test_loader_keeps_order_and_the_last_partial_batch(records):
    good = [r for i, r in enumerate(records) if i != 1]
    loader = build_test_loader(good, TO_TENSOR, batch_size=3, num_workers=0)
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [3, 1]
    images = torch.cat([b[0] for b in batches])
    assert images.shape == (4, 3, 8, 4)
    assert [grey_level(x) for x in images] == [10, 30, 40, 50]
    assert torch.cat([b[3] for b in batches]).tolist() == [0, 1, 2, 3]
    assert torch.cat([b[2] for b in batches]).tolist() == [0, 0, 1, 0]


@pytest.mark.parametrize("workers", [0, 1])
def test_test_loader_raises_on_unreadable_files_by_default(records, workers):
    # with workers too: one clean error naming the file, not the worker's traceback as text
    with pytest.raises(ImageReadError) as info:
        list(build_test_loader(records, TO_TENSOR, batch_size=2, num_workers=workers))
    assert info.value.path == records[1].path
    assert "Traceback" not in str(info.value) and "remove or replace" in str(info.value)


def test_check_records_finds_every_unreadable_image_up_front(records, tmp_path):
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "0003_c2.png")
    data = (tmp_path / "0003_c2.png").read_bytes()
    (tmp_path / "0003_c2.png").write_bytes(data[: len(data) // 2])  # truncated
    kept, bad = check_records(records + records[:1])
    assert kept == [records[0], records[2], records[4], records[0]]
    assert [(u.path, u.reason.split(",")[0][:24]) for u in bad] == [
        (records[1].path, "not an image file"), (records[3].path, "image file is truncated")]
