"""The ``reidkit ingest`` command, as a function the ``reidkit`` app registers (light to import)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def ingest_command(
    videos: Annotated[list[Path], typer.Argument(help="video files; each one is a camera")],
    out: Annotated[Path, typer.Option(help="folder for crops, sidecar table and progress")],
    detector: Annotated[str, typer.Option(help="hog (OpenCV, no download) or a torchvision detection "
                                               "model such as fasterrcnn_resnet50_fpn")] = "hog",
    detector_weights: Annotated[Path | None, typer.Option(
        help="local weights file of the torchvision detector (.pth state dict or .safetensors)")] = None,
    upscale: Annotated[float, typer.Option(help="enlarge frames this much for HOG (small people)")] = 1.5,
    min_score: Annotated[float, typer.Option(help="lowest detector score kept (0-1)")] = 0.5,
    track_threshold: Annotated[float, typer.Option(help="score that starts a tracklet (0-1)")] = 0.7,
    min_height: Annotated[int, typer.Option(help="smallest person box, pixels high")] = 40,
    max_height: Annotated[int | None, typer.Option(help="tallest person box, pixels high")] = None,
    frame_step: Annotated[int, typer.Option(min=1, help="detect on every n-th frame")] = 1,
    max_frames: Annotated[int | None, typer.Option(min=1, help="stop after this many frames a video")] = None,
    restart: Annotated[bool, typer.Option(help="delete an earlier ingest in --out and start over")] = False,
    device: Annotated[str, typer.Option(help="cpu | cuda (torchvision detectors)")] = "cpu",
) -> None:
    """Detect, track and crop the people of videos into a gallery that search and serve use.

    Crops are written Market-1501 style (tracklet id first, camera = video) with a sidecar table
    sightings.csv (video, camera, frame, time, box, score, tracklet). Ctrl-C stops cleanly; the
    same command again resumes.

    Example: reidkit ingest /usr/share/doc/opencv-doc/examples/data/vtest.avi --out footage/
    """
    from reidkit.footage.pipeline import IngestSettings, ingest

    settings = IngestSettings(
        detector=detector, detector_weights=None if detector_weights is None else str(detector_weights),
        upscale=upscale, min_score=min_score, track_threshold=track_threshold, min_height=min_height,
        max_height=max_height, frame_step=frame_step, max_frames=max_frames)
    summary = ingest(videos, out, settings, restart=restart)
    table = Table(title=f"{out}: {summary.crops:,} crops in {summary.tracklets:,} tracklets"
                        + (" (resumed)" if summary.resumed else ""))
    for column in ("camera", "video", "frames", "detections", "crops", "tracklets", "frames/s"):
        table.add_column(column, justify="left" if column in ("camera", "video") else "right")
    for v in summary.videos:
        rate = f"{v.frames / v.seconds:.2f}" if v.seconds else "-"
        table.add_row(v.camera, Path(v.video).name, f"{v.frames:,}", f"{v.detections:,}",
                      f"{v.crops:,}", f"{v.tracklets:,}", rate)
    console.print(table)
    if summary.interrupted:
        console.print("interrupted: progress is saved; run the same command again to resume")
        raise typer.Exit(code=130)
    console.print(f"next: reidkit extract --checkpoint MODEL --images {out} --out {out}/gallery.safetensors")
