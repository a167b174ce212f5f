"""The data set registry and the errors every parser gives for a missing data set."""

from __future__ import annotations

from pathlib import Path

import pytest

from reidkit.data import list_datasets, load_dataset
from reidkit.data.datasets import DatasetLayoutError

REQUIRED = ["market1501", "dukemtmcreid", "duke", "cuhk03", "msmt17", "cuhk01", "viper", "ilids",
            "prid2011", "folder"]


def test_every_required_name_is_registered() -> None:
    assert set(REQUIRED) <= set(list_datasets())
    assert list_datasets() == sorted(list_datasets())


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown data set 'marketplace'.*market1501"):
        load_dataset("marketplace", ".")


def test_layout_error_is_a_file_not_found_error() -> None:
    assert issubclass(DatasetLayoutError, FileNotFoundError)


# name -> (a sample file name the message shows, a word naming where the data comes from)
EXPECTED = {
    "Market-1501": ("0002_c1s1_000451_03.jpg", "Market-1501 project page"),
    "DukeMTMC-reID": ("0005_c2_f0046985.jpg", "DukeMTMC-reID release"),
    "CUHK03": ("1_001_1_01.png", "CUHK re-identification page"),
    "MSMT17": ("0000_000_01_0303morning_0015_0.jpg", "MSMT17 page"),
    "CUHK01": ("0001001.png", "CUHK re-identification page"),
    "VIPeR": ("000_45.bmp", "VIPeR page"),
    "iLIDS": ("0001001.jpg", "i-LIDS"),
    "PRID2011": ("person_0001.png", "PRID 2011 page"),
    "folder": ("0002_c1s1_000451_03.jpg", "your own images"),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_missing_data_set_names_layout_and_source(tmp_path: Path, name: str) -> None:
    sample, source = EXPECTED[name]
    with pytest.raises(DatasetLayoutError) as info:
        load_dataset(name, tmp_path / "not-here")
    msg = str(info.value)
    assert sample in msg and source in msg and str(tmp_path / "not-here") in msg


@pytest.mark.parametrize("name", [n for n in EXPECTED if n != "folder"])
def test_empty_folder_is_a_layout_error(tmp_path: Path, name: str) -> None:
    (tmp_path / "Thumbs.db").touch()
    with pytest.raises(DatasetLayoutError, match="Expected layout"):
        load_dataset(name, tmp_path)
