"""read_image: RGB output, and ImageReadError for missing, corrupt and truncated files."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reidkit.data.image import ImageReadError, read_image


def save(path: Path, img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def test_reads_rgb_from_any_mode(tmp_path: Path) -> None:
    pixels = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    save(tmp_path / "rgb.png", Image.fromarray(pixels), "PNG")
    img = read_image(tmp_path / "rgb.png")
    assert img.mode == "RGB" and img.size == (6, 4)
    np.testing.assert_array_equal(np.asarray(img), pixels)

    save(tmp_path / "gray.png", Image.fromarray(np.full((3, 2), 77, np.uint8)), "PNG")
    gray = read_image(str(tmp_path / "gray.png"))
    assert gray.mode == "RGB" and np.asarray(gray).tolist() == [[[77] * 3] * 2] * 3

    save(tmp_path / "rgba.png", Image.new("RGBA", (2, 2), (10, 20, 30, 0)), "PNG")
    assert read_image(tmp_path / "rgba.png").getpixel((0, 0)) == (10, 20, 30)

    save(tmp_path / "p.bmp", Image.new("P", (2, 2), 0), "BMP")
    assert read_image(tmp_path / "p.bmp").mode == "RGB"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jpg"
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    err = info.value
    assert isinstance(err, OSError)
    assert err.path == str(path) and err.reason == "no such file"
    assert str(path) in str(err) and "no such file" in str(err)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="directory"):
        read_image(tmp_path)


@pytest.mark.parametrize("content", [b"", b"Thumbs.db is not an image", b"\x89PNG\r\n\x1a\nxx"])
def test_not_an_image(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match="bad.jpg"):
        read_image(path)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (64, 32, 3), dtype=np.uint8))
    path = tmp_path / f"cut.{fmt.lower()}"
    data = save(path, img, fmt)
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert info.value.path == str(path) and info.value.reason


def test_error_survives_pickling() -> None:
    err = ImageReadError("/data/x.jpg", "image file is truncated")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, ImageReadError)
    assert (back.path, back.reason, str(back)) == (err.path, err.reason, str(err))
