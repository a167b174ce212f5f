"""Property-based tests of image decoding against malformed files.

``read_image`` must return an RGB image or raise ``ImageReadError`` naming the file: never another
exception, a half-decoded picture, or a huge allocation. ``ImageDataset(on_error="skip")`` must
step over such a file.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from reidkit.data import ImageRecord
from reidkit.data.image import ImageReadError, read_image
from reidkit.data.loader import ImageDataset

FUZZ = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

_PIXELS = np.random.default_rng(0).integers(0, 256, (12, 8, 3), dtype=np.uint8)


def _encode(fmt: str, mode: str, **kwargs: object) -> bytes:
    img = Image.fromarray(_PIXELS)
    img = img.quantize(16) if mode == "P" else img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


VALID = {
    "png-rgb": _encode("PNG", "RGB"),
    "png-la": _encode("PNG", "LA"),
    "jpeg": _encode("JPEG", "RGB", quality=90),
    "bmp": _encode("BMP", "RGB"),
    "gif": _encode("GIF", "P"),
    "tiff-lzw": _encode("TIFF", "RGB", compression="tiff_lzw"),
    "webp": _encode("WEBP", "RGB"),
    "ppm": _encode("PPM", "L"),
}
# Signatures Pillow dispatches on: a file that starts like one of these reaches that format's decoder.
SIGNATURES = [
    b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"P6\n", b"\x00\x00\x01\x00", b"icns", b"qoif", b"\x01\xda\x01\x01",
    b"\x0a\x05\x01\x08", b"8BPS\x00\x01", b"gimp xcf ", b"\x00\x00\x00\x0cjP  \r\n\x87\n",
    b"BLP2", b"#define", b"/* XPM */", b"\x59\xa6\x6a\x95", b"DDS |\x00\x00\x00", b"FTEX",
]
# A DDS header (128 bytes) whose pixel-format flags name no format Pillow knows.
DDS_UNKNOWN_FORMAT = (b"DDS " + struct.pack("<7I", 124, 0x1007, 4, 4, 0, 0, 0) + bytes(44)
                      + struct.pack("<8I", 32, 0x8000, 0, 0, 0, 0, 0, 0) + bytes(20) + bytes(64))


def _truncate(name: str, at: int) -> bytes:
    data = VALID[name]
    return data[: at % (len(data) + 1)]


def _splice(name: str, keep: int, garbage: bytes) -> bytes:
    data = VALID[name]
    return data[: keep % (len(data) + 1)] + garbage


def _flip(name: str, flips: list[tuple[int, int]]) -> bytes:
    data = bytearray(VALID[name])
    for where, value in flips:
        data[where % len(data)] = value
    return bytes(data)


def _png(width: int, height: int, idat: bytes, *, bit_depth: int = 8, colour: int = 2) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat)
            + chunk(b"IEND", b""))


NAMES = st.sampled_from(sorted(VALID))
TRUNCATED = st.builds(_truncate, NAMES, st.integers(0, 10**6))
SPLICED = st.builds(_splice, NAMES, st.integers(0, 64), st.binary(max_size=512))
FLIPPED = st.builds(_flip, NAMES, st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                           min_size=1, max_size=4))
SIGNED_GARBAGE = st.builds(lambda sig, tail: sig + tail, st.sampled_from(SIGNATURES),
                           st.binary(max_size=600))
MALFORMED = st.one_of(st.binary(max_size=1024), TRUNCATED, SPLICED, FLIPPED, SIGNED_GARBAGE)


def decode(data: bytes, suffix: str = ".jpg") -> Image.Image | ImageReadError:
    """Write ``data`` to a file and read it back: the image, or the ImageReadError raised."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "crop" + suffix)
        with open(path, "wb") as f:
            f.write(data)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF and the like
                img = read_image(path)
        except ImageReadError as err:
            assert err.path == path and path in str(err) and err.reason
            return err
    assert isinstance(img, Image.Image) and img.mode == "RGB"
    assert img.width >= 1 and img.height >= 1
    return img


@FUZZ
@given(MALFORMED)
@example(b"")
@example(DDS_UNKNOWN_FORMAT)
def test_malformed_bytes(data: bytes) -> None:
    decode(data)


@FUZZ
@given(NAMES, st.integers(0, 10**6))
def test_truncated_file_is_rejected_or_complete(name: str, at: int) -> None:
    """A cut file never yields a partial picture: it fails, or decodes exactly like the whole file."""
    whole = decode(VALID[name])
    assert isinstance(whole, Image.Image)
    cut = decode(_truncate(name, at))
    if isinstance(cut, Image.Image):
        np.testing.assert_array_equal(np.asarray(cut), np.asarray(whole))


def test_whole_files_decode_to_their_pixels() -> None:
    """The lossless encodings round-trip, so the truncation test compares against real pixels."""
    for name in ("png-rgb", "bmp", "tiff-lzw"):
        img = decode(VALID[name])
        assert isinstance(img, Image.Image)
        np.testing.assert_array_equal(np.asarray(img), _PIXELS)


@FUZZ
@given(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1), st.binary(max_size=64))
@example(100_000, 100_000, b"")
def test_declared_huge_dimensions(width: int, height: int, idat: bytes) -> None:
    """A PNG header may claim any size: the file is rejected, or is a small real image."""
    result = decode(_png(width, height, zlib.compress(idat)), ".png")
    if width * height > 2 * Image.MAX_IMAGE_PIXELS:
        assert isinstance(result, ImageReadError)
        assert "decompression bomb" in result.reason


_BOMB_CHILD = r"""
import resource, sys, warnings
from reidkit.data.image import ImageReadError, read_image
vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 256 * 2**20, resource.RLIM_INFINITY))
warnings.simplefilter("ignore")
try:
    print("decoded", read_image(sys.argv[1]).size)
except ImageReadError as err:
    print("ImageReadError:", err)
except BaseException as err:
    print("escaped", type(err).__name__, err)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and sets RLIMIT_AS")
def test_compressed_bomb_is_rejected_without_allocating(tmp_path: Path) -> None:
    """A 17 kB PNG that inflates to 12000 x 12000 pixels (over Pillow's bomb warning threshold).

    Decoding it would take ~0.6 GB; the child may grow by 256 MB only, so the image must be
    refused from its header.
    """
    side = 12_000
    assert Image.MAX_IMAGE_PIXELS < side * side < 2 * Image.MAX_IMAGE_PIXELS  # warning zone
    deflate = zlib.compressobj(9)
    row = bytes(1 + side // 8)  # filter byte + one bit per pixel
    idat = b"".join(deflate.compress(row) for _ in range(side)) + deflate.flush()
    path = tmp_path / "bomb.png"
    path.write_bytes(_png(side, side, idat, bit_depth=1, colour=0))
    child = subprocess.run([sys.executable, "-c", _BOMB_CHILD, str(path)], capture_output=True,
                           text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert child.returncode == 0, child.stderr
    assert child.stdout.startswith("ImageReadError:") and str(path) in child.stdout, child.stdout


def test_zero_length_and_missing(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    for path in (empty, tmp_path / "absent.jpg", tmp_path):
        with pytest.raises(ImageReadError) as err:
            read_image(path)
        assert str(path) in str(err.value)


def _to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)


@FUZZ
@given(MALFORMED)
@example(DDS_UNKNOWN_FORMAT)
@example(VALID["png-rgb"][:100])
def test_image_dataset_skips_bad_file(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, name) for name in ("a.png", "bad.jpg", "c.png")]
        for path, content in zip(paths, (VALID["png-rgb"], data, VALID["bmp"]), strict=True):
            with open(path, "wb") as f:
                f.write(content)
        records = [ImageRecord(p, pid, camid) for p, pid, camid in zip(paths, (3, 5, 7), (0, 1, 2),
                                                                       strict=True)]
        dataset = ImageDataset(records, _to_tensor, on_error="skip")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            items = [dataset[i] for i in range(3)]
    for i in (0, 2):
        image, pid, camid, index = items[i]
        assert (pid, camid, index) == (records[i].pid, records[i].camid, i)
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), _PIXELS)
    _, pid, camid, index = items[1]
    if index == 2:  # the bad file was skipped in favour of the next readable one
        assert dataset.failed_paths == {paths[1]} and (pid, camid) == (7, 2)
    else:
        assert (index, pid, camid) == (1, 5, 1) and not dataset.failed_paths
