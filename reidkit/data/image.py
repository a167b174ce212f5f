"""Reading image files: RGB PIL images, or an :class:`ImageReadError` that names file and reason."""

from __future__ import annotations

import os

from PIL import Image

from reidkit.errors import ReidkitError


class ImageReadError(ReidkitError, OSError):
    """An image file is missing, unreadable, corrupt or truncated."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")

    def __reduce__(self) -> tuple[type[ImageReadError], tuple[str, str]]:
        # DataLoader workers pickle exceptions; rebuild from (path, reason), not the message.
        return type(self), (self.path, self.reason)


def read_image(path: str | os.PathLike[str]) -> Image.Image:
    """Decode the whole image at ``path`` and return it in RGB.

    Decoding happens here, not lazily, so truncated or corrupt files fail at this call. Images
    larger than Pillow's ``MAX_IMAGE_PIXELS`` are refused before their pixels are decoded (Pillow
    itself only warns up to twice that size), so a small file cannot claim gigabytes.
    """
    return _decode(path, draft=False)


def check_image(path: str | os.PathLike[str]) -> str | None:
    """Why the image at ``path`` cannot be read (as :func:`read_image` would fail), or None.

    Reads the whole file, but decodes JPEGs at 1/8 scale, which still walks all their data:
    several times cheaper than :func:`read_image`, so a data set can be checked before a long job.
    """
    try:
        _decode(path, draft=True)
    except ImageReadError as err:
        return err.reason
    return None


def _decode(path: str | os.PathLike[str], draft: bool) -> Image.Image:
    try:
        with Image.open(path) as img:
            size = img.width * img.height
            if Image.MAX_IMAGE_PIXELS is None or size <= Image.MAX_IMAGE_PIXELS:
                if draft:
                    img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()
                return img if draft else img.convert("RGB")
    except FileNotFoundError:
        raise ImageReadError(path, "no such file") from None
    except IsADirectoryError:
        raise ImageReadError(path, "is a directory, not an image file") from None
    except Image.UnidentifiedImageError:
        raise ImageReadError(path, "not an image file, or in a format Pillow cannot read") from None
    except (OSError, SyntaxError, ValueError, NotImplementedError, Image.DecompressionBombError) as exc:
        raise ImageReadError(path, str(exc) or type(exc).__name__) from exc
    raise ImageReadError(path, f"{size:,} pixels is over Pillow's limit of {Image.MAX_IMAGE_PIXELS:,} "
                               "(a decompression bomb?)")
