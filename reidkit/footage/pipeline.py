"""From videos to a gallery of person crops: detect people, link them into tracklets, cut crops.

Output folder (``out``)::

    gallery/0007_c2s1_000123_00.jpg   tracklet 7 seen by camera 2 (the second video) in frame 123
    sightings.csv                     one row per crop: video, camera, frame, time, box, score,
                                      tracklet (see reidkit.data.sidecar)
    detections.csv                    every kept detection of every processed frame
    ingest.json                       settings and progress, for resuming

The crop names follow Market-1501 (tracklet id first, ``_c<camera>``), so the folder loads with
``load_dataset("folder", out)`` as a gallery whose identities are tracklets and whose cameras are
the videos. Tracklets come from ByteTrack (the ``trackers`` package); a detection becomes a crop
once its track is confirmed.

Ingest is interruptible: progress is committed every ``checkpoint_every`` frames (files flushed,
then ``ingest.json`` replaced atomically). Running it again with the same arguments resumes from
the last commit: rows and crops written after it are dropped, the tracker is brought back to its
state by replaying the stored detections (no frame is decoded or detected twice), and the result
equals that of an uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reidkit.data.dataset import ImageRecord, Sighting
from reidkit.data.sidecar import SIDECAR, attach_sightings, sighting_row, write_rows
from reidkit.errors import MissingDependencyError
from reidkit.footage.detect import DetectionFilter, build_detector, filter_detections
from reidkit.footage.video import FootageError, VideoInfo, frames, import_cv2, probe

STATE = "ingest.json"
DETECTIONS = "detections.csv"
CROPS = "gallery"
STATE_FORMAT = "reidkit-ingest/1"
_DETECTION_COLUMNS = ("camid", "frame", "x1", "y1", "x2", "y2", "score")


class IngestError(FootageError):
    """An ingest that cannot start or resume as asked."""


@dataclass
class VideoSummary:
    """What ingest made of one video."""

    video: str
    camera: str
    camid: int
    fps: float
    frames: int = 0  # frames read (detected on every ``frame_step``-th)
    detections: int = 0
    crops: int = 0
    tracklets: int = 0
    seconds: float = 0.0  # wall time spent on it, over all runs
    finished: bool = False


@dataclass
class IngestSummary:
    """Per-video results and totals; ``resumed`` when this run continued an earlier one."""

    out: str
    videos: list[VideoSummary]
    resumed: bool = False
    interrupted: bool = False

    @property
    def crops(self) -> int:
        return sum(v.crops for v in self.videos)

    @property
    def tracklets(self) -> int:
        return sum(v.tracklets for v in self.videos)

    @property
    def frames(self) -> int:
        return sum(v.frames for v in self.videos)

    @property
    def frames_per_second(self) -> float:
        seconds = sum(v.seconds for v in self.videos)
        return self.frames / seconds if seconds else 0.0


@dataclass(frozen=True)
class IngestSettings:
    """Everything that decides the output; a resumed ingest must be given the same."""

    detector: str = "hog"
    detector_weights: str | None = None
    upscale: float = 1.5
    min_score: float = 0.5
    aspect: tuple[float, float] = (1.4, 4.0)
    min_height: int = 40
    max_height: int | None = None
    nms_iou: float = 0.4
    track_threshold: float = 0.7  # score that starts a track (lower ones only extend tracks)
    lost_seconds: float = 2.0  # how long a lost track may be found again
    frame_step: int = 1
    max_frames: int | None = None
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if self.frame_step < 1:
            raise IngestError(f"frame_step must be >= 1, got {self.frame_step}")
        if self.max_frames is not None and self.max_frames < 1:
            raise IngestError(f"max_frames must be >= 1, got {self.max_frames}")
        if not 1 <= self.jpeg_quality <= 100:
            raise IngestError(f"jpeg_quality must be 1..100, got {self.jpeg_quality}")
        if self.lost_seconds <= 0:
            raise IngestError(f"lost_seconds must be > 0, got {self.lost_seconds}")
        self.detection_filter()  # validates the filter values

    def detection_filter(self) -> DetectionFilter:
        return DetectionFilter(self.min_score, tuple(self.aspect), self.min_height, self.max_height,
                               self.nms_iou)

    def as_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["aspect"] = list(self.aspect)
        return d


@dataclass
class _Progress:
    """The committed state of one video: frames done, tracklet ids used, file sizes at the commit."""

    frames_done: int = 0
    first_tracklet: int = 1
    tracklets: int = 0
    detections: int = 0
    crops: int = 0
    seconds: float = 0.0
    finished: bool = False
    sizes: dict[str, int] = field(default_factory=dict)


def ingest(
    videos: Sequence[str | Path],
    out: str | Path,
    settings: IngestSettings | None = None,
    *,
    device: str = "cpu",
    restart: bool = False,
    progress: bool = True,
    checkpoint_every: int = 25,
    on_frame: Callable[[int, int], None] | None = None,
) -> IngestSummary:
    """Detect, track and crop the people of ``videos`` (one camera each, in order) into ``out``.

    An ``out`` holding an unfinished ingest with the same videos and settings is resumed; other
    settings are refused unless ``restart`` (which deletes the earlier ingest's files). Ctrl-C
    stops at the next frame with progress committed; the summary then has ``interrupted``.
    ``on_frame(camid, frame)`` is called after each frame (progress reporting, tests).
    """
    settings = settings or IngestSettings()
    if not videos:
        raise IngestError("give at least one video file")
    if checkpoint_every < 1:
        raise IngestError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    out = Path(out)
    infos = [probe(v) for v in videos]  # every video checked before any work
    names = _camera_names(infos)
    entries = [{"video": os.path.abspath(i.path), "camera": n, "camid": c + 1, "fps": i.fps,
                "frame_count": i.frame_count} for c, (i, n) in enumerate(zip(infos, names, strict=True))]
    state, resumed = _start(out, entries, settings, restart)
    detector = build_detector(settings.detector, settings.detector_weights, device=device,
                              upscale=settings.upscale)
    (out / CROPS).mkdir(parents=True, exist_ok=True)
    summary = IngestSummary(str(out), [], resumed=resumed)
    stop = _StopFlag()
    with stop, _Bar(progress) as bar:
        for entry, progress_state in zip(entries, state["progress"], strict=True):
            if summary.interrupted:
                break
            run = _VideoRun(out, entry, settings, progress_state, state, detector)
            if not run.progress.finished:
                run.resume()
                summary.interrupted = run.process(bar, stop, checkpoint_every, on_frame)
            summary.videos.append(run.summary())
    return summary


def gallery_records(out: str | Path) -> list[ImageRecord]:
    """The crops of an ingest folder as gallery records, each with its sighting."""
    from reidkit.data import load_dataset

    return attach_sightings(load_dataset("folder", Path(out)).gallery, out)


def _camera_names(infos: Sequence[VideoInfo]) -> list[str]:
    """Video file stems as camera names, numbered where two videos share one."""
    stems = [Path(i.path).stem for i in infos]
    return [s if stems.count(s) == 1 else f"{s}-{k + 1}" for k, s in enumerate(stems)]


def _start(out: Path, entries: list[dict[str, Any]], settings: IngestSettings,
           restart: bool) -> tuple[dict[str, Any], bool]:
    """The state to continue from (a fresh one for a new ingest) and whether it resumes one."""
    state_path = out / STATE
    fresh = {"format": STATE_FORMAT, "videos": entries, "settings": settings.as_json(),
             "progress": [asdict(_Progress()) for _ in entries]}
    if state_path.is_file():
        try:
            old = json.loads(state_path.read_text())
        except (OSError, ValueError) as exc:
            raise IngestError(f"{state_path} is unreadable ({exc}); ingest into a new folder, or "
                              "pass restart=True (--restart) to start this one over") from None
        same = (old.get("format") == STATE_FORMAT and old.get("settings") == fresh["settings"]
                and [(e["video"], e["camid"]) for e in old.get("videos", [])]
                == [(e["video"], e["camid"]) for e in entries])
        if restart:
            for name in (STATE, SIDECAR, DETECTIONS):
                (out / name).unlink(missing_ok=True)
            shutil.rmtree(out / CROPS, ignore_errors=True)
        elif not same:
            differ = [f"{k}: {old.get('settings', {}).get(k)!r} then, {v!r} now"
                      for k, v in fresh["settings"].items() if old.get("settings", {}).get(k) != v]
            if not differ:
                differ = ["the videos: " + ", ".join(e["video"] for e in old.get("videos", []))
                          + " then"]
            raise IngestError(f"{out} holds an ingest made with other settings ({'; '.join(differ)}); "
                              "ingest into a new folder, or pass restart=True (--restart) to start "
                              "this one over")
        else:
            return old, True
    elif out.exists() and any(out.iterdir()):
        raise IngestError(f"{out} is not empty and holds no ingest ({STATE}); ingest into a new or "
                          "empty folder")
    out.mkdir(parents=True, exist_ok=True)
    _write_state(out, fresh)
    return fresh, False


def _write_state(out: Path, state: dict[str, Any]) -> None:
    tmp = out / f".{STATE}.tmp"
    with open(tmp, "w") as fh:
        json.dump(state, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, out / STATE)


class _StopFlag:
    """Turns the first Ctrl-C into a request to stop at the next frame (a second one aborts)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> _StopFlag:
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: Ctrl-C is not ours to catch
            self._previous = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


class _Bar:
    """A rich progress bar with frames/s on a terminal, a plain line every 10 s elsewhere."""

    def __init__(self, enabled: bool) -> None:
        from rich.console import Console

        self.enabled = enabled
        self.console = Console(stderr=True)
        self._bar = None
        self._last_line = 0.0

    def __enter__(self) -> _Bar:
        if self.enabled and self.console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[rate]} frames/s"), TimeRemainingColumn(),
                                 console=self.console, transient=True)
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def start(self, name: str, total: int | None, done: int) -> Any:
        if self._bar is None:
            return None
        return self._bar.add_task(name, total=total or None, completed=done, rate="-")

    def update(self, task: Any, name: str, done: int, total: int | None, rate: float) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(task, completed=done, rate=f"{rate:.1f}")
        elif time.monotonic() - self._last_line >= 10:
            self._last_line = time.monotonic()
            of = f"/{total}" if total else ""
            self.console.print(f"ingest {name}: frame {done}{of}, {rate:.1f} frames/s", soft_wrap=True)


class _VideoRun:
    """Ingest of one video, resumable from its committed progress."""

    def __init__(self, out: Path, entry: dict[str, Any], settings: IngestSettings,
                 progress_state: dict[str, Any], state: dict[str, Any], detector: Any) -> None:
        try:
            from trackers import ByteTrackTracker
        except ImportError:
            raise MissingDependencyError("linking detections into tracklets needs the trackers package, from "
                              "the 'video' extra: pip install 'reidkit[video]'") from None
        self.out, self.entry, self.settings, self.state = out, entry, settings, state
        self.progress = _Progress(**progress_state)
        self._state_slot = progress_state
        self.detector = detector
        self.rule = settings.detection_filter()
        rate = entry["fps"] / settings.frame_step
        self.tracker = ByteTrackTracker(
            lost_track_buffer=max(1, round(settings.lost_seconds * rate)), frame_rate=rate,
            track_activation_threshold=settings.track_threshold,
            high_conf_det_threshold=settings.track_threshold, minimum_consecutive_frames=2)
        self.ids: dict[int, int] = {}  # tracker's id -> global tracklet id

    # ------------------------------------------------------------------ resume
    def resume(self) -> None:
        """Drop what was written after the last commit and replay the tracker up to it."""
        if self.progress.first_tracklet == 1 and self.progress.frames_done == 0:
            self.progress.first_tracklet = self._next_tracklet()
        for name in (SIDECAR, DETECTIONS):
            path = self.out / name
            size = self.progress.sizes.get(name)
            if size is not None and path.is_file() and path.stat().st_size > size:
                with open(path, "r+b") as fh:
                    fh.truncate(size)
        camid = self.entry["camid"]
        for crop in (self.out / CROPS).glob(f"*_c{camid}s1_*.jpg"):
            if int(crop.stem.split("_")[2]) >= self.progress.frames_done:
                crop.unlink()
        if self.progress.frames_done == 0:
            return
        by_frame: dict[int, list[list[float]]] = {}
        with open(self.out / DETECTIONS, newline="") as fh:
            for row in csv.DictReader(fh):
                if int(row["camid"]) == camid and int(row["frame"]) < self.progress.frames_done:
                    by_frame.setdefault(int(row["frame"]), []).append(
                        [float(row[k]) for k in ("x1", "y1", "x2", "y2", "score")])
        for index in range(0, self.progress.frames_done, self.settings.frame_step):
            rows = np.array(by_frame.get(index, []), dtype=np.float64).reshape(-1, 5)
            self._track(index, rows[:, :4], rows[:, 4])

    def _next_tracklet(self) -> int:
        """The first tracklet id after those of the videos before this one."""
        used = [p["first_tracklet"] + p["tracklets"] for p in self.state["progress"]
                if p["finished"] or p["frames_done"]]
        return max(used, default=1)

    # ------------------------------------------------------------------ processing
    def _track(self, index: int, boxes: np.ndarray,
               scores: np.ndarray) -> list[tuple[int, np.ndarray, float]]:
        """Feed one frame's detections to the tracker: (tracklet, box, score) of confirmed tracks."""
        import supervision as sv

        detections = sv.Detections(xyxy=boxes.astype(np.float32).reshape(-1, 4),
                                   confidence=scores.astype(np.float32))
        tracked = self.tracker.update(detections, timestamp=index / self.entry["fps"])
        out = []
        for box, score, tid in zip(tracked.xyxy, tracked.confidence, tracked.tracker_id, strict=True):
            if tid < 0:
                continue
            if tid not in self.ids:
                self.ids[tid] = self.progress.first_tracklet + len(self.ids)
            out.append((self.ids[tid], box, float(score)))
        return out

    def process(self, bar: _Bar, stop: _StopFlag, checkpoint_every: int,
                on_frame: Callable[[int, int], None] | None) -> bool:
        """Run to the end of the video (or ``max_frames``); True when stopped by Ctrl-C."""
        cv2 = import_cv2()
        s, e, p = self.settings, self.entry, self.progress
        total = e["frame_count"] or None
        if s.max_frames is not None:
            total = min(total or s.max_frames, s.max_frames)
        task = bar.start(e["camera"], total, p.frames_done)
        started = run_started = time.monotonic()
        since_commit = 0
        sidecar = open(self.out / SIDECAR, "a", newline="", encoding="utf-8")  # noqa: SIM115
        dets = open(self.out / DETECTIONS, "a", newline="")  # noqa: SIM115
        try:
            if sidecar.tell() == 0:
                write_rows(sidecar, [], header=True)
            if dets.tell() == 0:
                csv.writer(dets, lineterminator="\n").writerow(_DETECTION_COLUMNS)
            det_writer = csv.writer(dets, lineterminator="\n")
            done_at_start = p.frames_done
            for index, frame in frames(e["video"], start=p.frames_done, stop=s.max_frames):
                if index % s.frame_step == 0:
                    boxes, scores = filter_detections(*self.detector(frame), self.rule, frame.shape)
                    # float32 values, written exactly (repr) so that a resume replays the same input.
                    rows = [[float(v) for v in (*b, sc)] for b, sc in zip(boxes, scores, strict=True)]
                    det_writer.writerows([e["camid"], index, *r] for r in rows)
                    p.detections += len(rows)
                    arr = np.array(rows, dtype=np.float64).reshape(-1, 5)
                    crops = self._write_crops(cv2, frame, index, self._track(index, arr[:, :4], arr[:, 4]))
                    write_rows(sidecar, crops, header=False)
                p.frames_done = index + 1
                since_commit += 1
                elapsed = p.seconds + time.monotonic() - started
                bar.update(task, e["camera"], p.frames_done, total,
                           (p.frames_done - done_at_start) / max(time.monotonic() - run_started, 1e-9))
                if on_frame is not None:
                    on_frame(e["camid"], index)
                if since_commit >= checkpoint_every or stop.requested:
                    self._commit(sidecar, dets, elapsed)
                    started, since_commit = time.monotonic(), 0
                    p.seconds = elapsed
                    if stop.requested:
                        return True
            if p.frames_done == 0:
                raise IngestError(f"video {e['video']}: no frame could be decoded")
            p.finished = True
            self._commit(sidecar, dets, p.seconds + time.monotonic() - started)
            return False
        finally:
            sidecar.close()
            dets.close()

    def _write_crops(self, cv2: Any, frame: np.ndarray, index: int,
                     tracked: list[tuple[int, np.ndarray, float]]) -> list[dict[str, object]]:
        e, rows = self.entry, []
        for tracklet, box, score in tracked:
            x1, y1, x2, y2 = (int(round(float(v))) for v in box)
            if x2 - x1 < 2 or y2 - y1 < 2:
                continue
            name = f"{tracklet:04d}_c{e['camid']}s1_{index:06d}_00.jpg"
            if not cv2.imwrite(str(self.out / CROPS / name), frame[y1:y2, x1:x2],
                               [cv2.IMWRITE_JPEG_QUALITY, self.settings.jpeg_quality]):
                raise IngestError(f"cannot write {self.out / CROPS / name}; check the disk and "
                                  "the folder's permissions")
            sighting = Sighting(video=e["video"], camera=e["camera"], frame=index,
                                time=index / e["fps"], box=(x1, y1, x2, y2), score=score,
                                tracklet=tracklet)
            rows.append(sighting_row(f"{CROPS}/{name}", e["camid"], sighting))
        self.progress.crops += len(rows)
        return rows

    def _commit(self, sidecar: Any, dets: Any, seconds: float) -> None:
        for fh in (sidecar, dets):
            fh.flush()
            os.fsync(fh.fileno())
        p = self.progress
        p.tracklets = len(self.ids)
        p.seconds = seconds
        p.sizes = {SIDECAR: sidecar.tell(), DETECTIONS: dets.tell()}
        self._state_slot.clear()
        self._state_slot.update(asdict(p))
        _write_state(self.out, self.state)

    def summary(self) -> VideoSummary:
        e, p = self.entry, self.progress
        return VideoSummary(video=e["video"], camera=e["camera"], camid=e["camid"], fps=e["fps"],
                            frames=p.frames_done, detections=p.detections, crops=p.crops,
                            tracklets=p.tracklets, seconds=p.seconds, finished=p.finished)
