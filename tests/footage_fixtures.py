"""The real test video (Debian's opencv-doc vtest.avi) and a short ingest of it, shared by test modules.

Without the video the tests skip with the install command, and fail under CI (CI installs it).
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
INSTALL = "apt-get install opencv-doc"
FRAMES = 20  # frames ingested by the shared fixture: HOG takes about 0.5-0.8 s a frame here


def vtest_path(tmp_factory: pytest.TempPathFactory) -> Path:
    """vtest.avi, unpacked from vtest.avi.gz where the Debian release ships it compressed."""
    if VTEST.is_file():
        return VTEST
    packed = VTEST.with_name(VTEST.name + ".gz")
    if packed.is_file():
        target = tmp_factory.mktemp("video") / VTEST.name
        with gzip.open(packed, "rb") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        return target
    message = f"the real-footage tests need {VTEST} (Debian package opencv-doc): run `{INSTALL}`"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def ingest_slice(video: Path, out: Path, frames: int = FRAMES, **kwargs):
    """Ingest the first ``frames`` frames of ``video`` into ``out`` with the default settings."""
    from reidkit.footage import IngestSettings, ingest

    return ingest([video], out, IngestSettings(max_frames=frames), progress=False, **kwargs)
