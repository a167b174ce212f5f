"""The cached input path: decoded once, augmented in batches, same distributions, exact resume."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import stats

from reidkit.data.cache import BatchAugment, ImageCache
from reidkit.data.dataset import ImageRecord
from reidkit.data.loader import ImageDataset
from reidkit.data.samplers import RandomBatchSampler
from reidkit.data.transforms import build_transforms
from reidkit.training.streams import CachedBatchStream

H, W, N = 32, 16, 1500


def records_of(folder: Path, count: int = 6) -> list[ImageRecord]:
    rng = np.random.default_rng(0)
    folder.mkdir(exist_ok=True)
    out = []
    for i in range(count):
        path = folder / f"{i:04d}_c{i % 2}s1_000001_00.png"
        Image.fromarray(rng.integers(0, 255, (48, 24, 3), dtype=np.uint8)).save(path)
        out.append(ImageRecord(str(path), i // 2, i % 2))
    return out


def marked_image() -> Image.Image:
    """Grey with one white pixel at (row 3, col 2): flips and crop offsets move it visibly."""
    pixels = np.full((H, W, 3), 100, np.uint8)
    pixels[3, 2] = 255
    return Image.fromarray(pixels)


def loader_samples(normalize: bool = False, **options) -> torch.Tensor:
    transform = build_transforms(H, W, train=True, normalize=normalize, **options)
    torch.manual_seed(0)
    return torch.stack([transform(marked_image()) for _ in range(N)])


def batch_samples(normalize: bool = False, **options) -> torch.Tensor:
    base = torch.from_numpy(np.array(marked_image())).permute(2, 0, 1)
    augment = BatchAugment(normalize=normalize, erase_max_area=options.pop("erase_max_area", 0.4),
                           **options)
    return augment(base.expand(N, -1, -1, -1).contiguous(), torch.Generator().manual_seed(1))


def mark_positions(images: torch.Tensor) -> np.ndarray:
    """(row, col) of the white pixel in each image, (-1, -1) where it is gone."""
    white = (images > 0.99).all(dim=1).flatten(1)
    pos = np.where(white.any(1).numpy(), white.float().argmax(1).numpy(), -1)
    return np.stack([np.where(pos >= 0, pos // W, -1), np.where(pos >= 0, pos % W, -1)], 1)


def test_no_augmentation_equals_the_test_transform(tmp_path):
    records = records_of(tmp_path / "img")
    cache = ImageCache(ImageDataset(records, lambda im: im), H, W, "bicubic")
    got = BatchAugment(flip_p=0, pad=0, erase_p=0)(cache.batch(range(6)), torch.Generator())
    transform = build_transforms(H, W, train=False, interpolation="bicubic")
    expected = torch.stack([transform(Image.open(r.path).convert("RGB")) for r in records])
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_flip_rate_matches_the_loader_transform():
    flipped = [float(np.mean(mark_positions(s)[:, 1] == W - 1 - 2))
               for s in (loader_samples(flip_p=0.5, pad=0, erase_p=0),
                         batch_samples(flip_p=0.5, pad=0, erase_p=0))]
    for rate in flipped:
        assert abs(rate - 0.5) < 4 * np.sqrt(0.25 / N)


def test_crop_offsets_are_uniform_like_the_loader_transform():
    pad = 3
    for samples in (loader_samples(flip_p=0, pad=pad, erase_p=0),
                    batch_samples(flip_p=0, pad=pad, erase_p=0)):
        rows = mark_positions(samples)[:, 0]
        shift = rows[rows >= 0] - 3  # the mark moves by pad - offset, in -pad..pad
        counts = np.bincount(shift + pad, minlength=2 * pad + 1)
        assert stats.chisquare(counts).pvalue > 1e-3
        # offsets that push the mark out of the window lose it: rows 0..2 above it
        assert set(np.unique(shift)) <= set(range(-pad, pad + 1))


def test_erased_area_and_shape_follow_the_loader_distribution():
    options = dict(flip_p=0, pad=0, erase_p=0.7, erase_max_area=0.4, normalize=True)
    areas, heights = [], []
    for samples in (loader_samples(**options), batch_samples(**options)):
        erased = (samples == 0).all(dim=1)  # normalised erasing fills 0, the grey image has none
        areas.append(erased.float().mean(dim=(1, 2)).numpy())
        heights.append(erased.any(dim=2).float().sum(1).numpy())
    for a in areas:
        assert abs(np.mean(a > 0) - 0.7) < 4 * np.sqrt(0.21 / N)
    assert stats.ks_2samp(areas[0][areas[0] > 0], areas[1][areas[1] > 0]).pvalue > 1e-3
    assert stats.ks_2samp(heights[0][heights[0] > 0], heights[1][heights[1] > 0]).pvalue > 1e-3
    assert max(a.max() for a in areas) <= 0.42


def stream(cache: ImageCache, seed: int = 3) -> CachedBatchStream:
    sampler = RandomBatchSampler(len(cache), 4, rank=0, world_size=1, seed=seed)
    return CachedBatchStream(cache, sampler, BatchAugment(flip_p=0.5, pad=2, erase_p=0.5),
                             seed=seed, stream_id=0, device=torch.device("cpu"))


def test_a_resumed_stream_draws_the_same_batches(tmp_path):
    cache = ImageCache(ImageDataset(records_of(tmp_path / "img"), lambda im: im), H, W)
    first = stream(cache)
    batches = [next(first) for _ in range(5)]  # crosses an epoch (6 images, batches of 4)
    resumed = stream(cache)
    replay = stream(cache)
    for _ in range(2):
        next(replay)
    resumed.load_state_dict(replay.state_dict())
    for want in batches[2:]:
        got = next(resumed)
        for a, b in zip(got, want, strict=True):
            assert torch.equal(a, b)


def test_the_memory_map_is_reused_by_later_runs(tmp_path, monkeypatch):
    records = records_of(tmp_path / "img")
    built = ImageCache(ImageDataset(records, lambda im: im), H, W, folder=tmp_path / "cache")
    array = np.array(built.array)
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(files) == 2 and not any(".tmp" in f for f in files)
    monkeypatch.setattr(ImageCache, "_fill", lambda self, a: pytest.fail("decoded again"))
    again = ImageCache(ImageDataset(records, lambda im: im), H, W, folder=tmp_path / "cache")
    assert np.array_equal(np.asarray(again.array), array)
    other_size = ImageCache(ImageDataset(records, lambda im: im), H, W + 2, folder=tmp_path / "cache")
    assert other_size.key() != built.key()


def test_an_unreadable_image_slot_holds_a_stand_in_with_its_label(tmp_path):
    records = records_of(tmp_path / "img")
    Path(records[2].path).write_bytes(b"")  # pid 1, camid 0
    cache = ImageCache(ImageDataset(records, lambda im: im), H, W)
    assert cache.source.tolist() == [0, 1, 3, 3, 4, 5]
    assert torch.equal(cache.batch([2]), cache.batch([3]))
    _, pids, camids, _ = next(stream(cache))
    labels = {r.pid for r in records}
    assert set(pids.tolist()) <= labels and set(camids.tolist()) <= {0, 1}


@pytest.mark.slow
def test_the_trainer_draws_the_same_batches_through_either_path(synth_root, tmp_path):
    from tiny_training import tiny_pyramid_config

    from reidkit.training.trainer import Trainer

    drawn = {}
    for path in ("loader", "cache"):
        trainer = Trainer(tiny_pyramid_config(synth_root, tmp_path / path, f"data.input_path={path}",
                                              "data.pad=2", "data.erase_p=0.5",
                                              "train.channels_last=true"))
        records = [trainer.train_step() for _ in range(3)]
        assert all(np.isfinite(r["loss"]) for r in records)
        drawn[path] = [next(trainer.streams["balanced"])[1].tolist() for _ in range(2)]
    assert drawn["loader"] == drawn["cache"]  # same sampler, same identities per step
