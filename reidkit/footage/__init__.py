"""Real footage: turn videos into a searchable gallery of person crops (detect, track, crop)."""

from reidkit.footage.detect import (
    DetectionFilter,
    DetectorError,
    HOGDetector,
    TorchvisionDetector,
    build_detector,
)
from reidkit.footage.ingest import (
    IngestError,
    IngestSettings,
    IngestSummary,
    VideoSummary,
    gallery_records,
    ingest,
)
from reidkit.footage.video import VideoError, VideoInfo, probe, read_frame

__all__ = [
    "DetectionFilter",
    "DetectorError",
    "HOGDetector",
    "IngestError",
    "IngestSettings",
    "IngestSummary",
    "TorchvisionDetector",
    "VideoError",
    "VideoInfo",
    "VideoSummary",
    "build_detector",
    "gallery_records",
    "ingest",
    "probe",
    "read_frame",
]
