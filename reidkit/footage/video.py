"""Reading video files with OpenCV: their properties, their frames in order, one frame by index."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reidkit.errors import MissingDependencyError, ReidkitError


class FootageError(ReidkitError, ValueError):
    """Footage that cannot be read or ingested as asked."""


class VideoError(FootageError):
    """A video file that is missing, unreadable or corrupt."""


@dataclass(frozen=True)
class VideoInfo:
    """A video's frame rate, size and frame count (as its container reports it; 0 when unknown)."""

    path: str
    fps: float
    width: int
    height: int
    frame_count: int


def import_cv2():
    """The cv2 module, or an ``ImportError`` that says how to install it."""
    try:
        import cv2
    except ImportError:
        raise MissingDependencyError("reading video needs OpenCV 4, from the 'video' extra: "
                          "pip install 'reidkit[video]'") from None
    return cv2


def _open(path: str | Path):
    cv2 = import_cv2()
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"video {path} does not exist; check the path")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise VideoError(f"video {path} cannot be opened: it is not a video file OpenCV can decode, "
                         "or it is corrupt; convert it (e.g. ffmpeg -i in.mov out.mp4) or check it")
    return cap


def probe(path: str | Path) -> VideoInfo:
    """The video's properties; raises :class:`VideoError` unless its first frame decodes."""
    cv2 = import_cv2()
    cap = _open(path)
    try:
        ok, frame = cap.read()
        if not ok or frame is None:
            raise VideoError(f"video {path} opens but no frame decodes: the file is truncated or "
                             "corrupt; check it or re-encode it")
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not np.isfinite(fps) or fps <= 0 or fps > 1000:
            raise VideoError(f"video {path} does not state a usable frame rate ({fps}); re-encode it "
                             "with one (ffmpeg -i in -r 25 out.mp4)")
        return VideoInfo(str(path), fps, frame.shape[1], frame.shape[0],
                         max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)))
    finally:
        cap.release()


def frames(path: str | Path, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(index, BGR frame)`` from frame ``start`` up to ``stop`` (exclusive) or the end.

    Frames before ``start`` are decoded and dropped, so the indices are exact for any codec.
    """
    cap = _open(path)
    try:
        index = 0
        while stop is None or index < stop:
            if index < start:
                if not cap.grab():
                    return
                index += 1
                continue
            ok, frame = cap.read()
            if not ok or frame is None:
                return
            yield index, frame
            index += 1
    finally:
        cap.release()


def read_frame(path: str | Path, index: int) -> np.ndarray:
    """Frame ``index`` of the video as a BGR array; :class:`VideoError` if the video is shorter."""
    cv2 = import_cv2()
    cap = _open(path)
    try:
        # Seek close to the frame, then decode forward to it: seeking alone may land on a keyframe.
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        position = int(cap.get(cv2.CAP_PROP_POS_FRAMES))
        if position != index:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            position = 0
        while position < index:
            if not cap.grab():
                break
            position += 1
        ok, frame = cap.read()
        if position != index or not ok or frame is None:
            raise VideoError(f"video {path} has no frame {index}; it has fewer frames or is damaged")
        return frame
    finally:
        cap.release()
