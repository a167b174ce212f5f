"""Real footage: turn videos into a searchable gallery of person crops (detect, track, crop).

Names are imported on first use, so that ``reidkit --help`` does not load torch and OpenCV.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DetectionFilter": "detect", "DetectorError": "detect", "HOGDetector": "detect",
    "TorchvisionDetector": "detect", "build_detector": "detect",
    "IngestError": "pipeline", "IngestSettings": "pipeline", "IngestSummary": "pipeline",
    "VideoSummary": "pipeline", "gallery_records": "pipeline", "ingest": "pipeline",
    "FootageError": "video", "VideoError": "video", "VideoInfo": "video", "probe": "video",
    "read_frame": "video",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'reidkit.footage' has no attribute {name!r}")
    return getattr(importlib.import_module(f"reidkit.footage.{_EXPORTS[name]}"), name)
