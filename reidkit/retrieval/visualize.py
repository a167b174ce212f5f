"""Pictures of retrieval results: ranked lists and CMC curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from reidkit.data.dataset import ImageRecord, Sighting, camera_name, identity_name

GREEN, RED, GREY = (40, 167, 69), (220, 53, 69), (160, 160, 160)


def caption(record: ImageRecord) -> str:
    """Camera and person as the data set names them, and where a video crop was seen."""
    cam = camera_name(record) or str(record.camid)
    person = identity_name(record)
    lines = [f"cam {cam}" + (f" id {person}" if person is not None else "")]
    if record.sighting is not None:
        lines.append(f"{record.sighting.time:.1f}s f{record.sighting.frame}")
    return "\n".join(lines)


def ranked_list_image(
    query: ImageRecord,
    ranked: Sequence[ImageRecord],
    distances: Sequence[float],
    *,
    labelled: bool = True,
    cell: tuple[int, int] = (64, 128),
) -> Image.Image:
    """The query, then the ranked gallery images with rank, distance and camera under each.

    With ``labelled`` a match (same pid) gets a green border and a non-match a red one. Cameras
    and people carry the data set's own names (:func:`caption`).
    """
    width, height = cell
    records = [query, *ranked]
    lines = 1 + max(caption(r).count("\n") + 1 for r in records)
    border, text_h, gap = 4, 4 + 12 * lines, 12
    tile_w, tile_h = width + 2 * border, height + 2 * border + text_h
    canvas = Image.new("RGB", (tile_w * (len(ranked) + 1) + gap, tile_h), "white")
    draw = ImageDraw.Draw(canvas)
    tiles = [(query, GREY, f"query\n{caption(query)}")]
    for rank, (record, dist) in enumerate(zip(ranked, distances, strict=True), start=1):
        color = (GREEN if record.pid == query.pid else RED) if labelled else GREY
        tiles.append((record, color, f"#{rank} d={dist:.2f}\n{caption(record)}"))
    for i, (record, color, text) in enumerate(tiles):
        x = i * tile_w + (gap if i else 0)
        picture = _thumbnail(record.path, (width, height))
        canvas.paste(ImageOps.expand(picture, border=border, fill=color), (x, 0))
        draw.multiline_text((x + 2, height + 2 * border + 1), text, fill="black", spacing=1)
    return canvas


def ranked_lists(
    distmat: np.ndarray,
    query: Sequence[ImageRecord],
    gallery: Sequence[ImageRecord],
    query_indices: Sequence[int],
    topk: int = 10,
    labelled: bool = True,
) -> list[Image.Image]:
    """Ranked-list pictures for the chosen queries (junk pid -1 and same-camera matches skipped)."""
    images = []
    for qi in query_indices:
        order = np.argsort(distmat[qi], kind="stable")
        q = query[qi]
        keep = [g for g in order
                if gallery[g].pid != -1 and not (gallery[g].pid == q.pid and gallery[g].camid == q.camid)]
        top = keep[:topk]
        images.append(ranked_list_image(q, [gallery[g] for g in top],
                                        [float(distmat[qi, g]) for g in top], labelled=labelled))
    return images


def cmc_figure(curves: dict[str, np.ndarray], max_rank: int = 20):
    """A matplotlib figure of CMC curves (rank 1..max_rank), whole-number rank ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=110)
    for name, cmc in curves.items():
        ranks = np.arange(1, min(max_rank, len(cmc)) + 1)
        ax.plot(ranks, 100 * np.asarray(cmc)[: len(ranks)], marker="o", markersize=3, label=name)
    ax.set(xlabel="rank", ylabel="matching rate (%)", title="CMC", ylim=(0, 100))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # ranks are whole numbers: no 2.5 ticks
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def plot_cmc(curves: dict[str, np.ndarray], path: str | Path, max_rank: int = 20) -> None:
    """CMC curves (rank 1..max_rank) of one or more methods into a PNG file."""
    import matplotlib.pyplot as plt

    fig = cmc_figure(curves, max_rank)
    fig.savefig(path)
    plt.close(fig)


def frame_picture(sighting: Sighting, *, color: tuple[int, int, int] = GREEN) -> Image.Image:
    """The video frame a crop was cut from, with its box drawn and camera, time and frame written."""
    from reidkit.footage.video import read_frame

    frame = Image.fromarray(read_frame(sighting.video, sighting.frame)[:, :, ::-1])
    draw = ImageDraw.Draw(frame)
    x1, y1, x2, y2 = sighting.box
    draw.rectangle((x1 - 1, y1 - 1, x2, y2), outline=color, width=3)
    label = f"camera {sighting.camera}  {sighting.time:.1f} s  frame {sighting.frame}"
    left, top, right, bottom = draw.textbbox((0, 0), label)
    draw.rectangle((0, 0, right - left + 8, bottom - top + 8), fill=(0, 0, 0))
    draw.text((4 - left, 4 - top), label, fill=(255, 255, 255))
    return frame


def _thumbnail(path: str, size: tuple[int, int]) -> Image.Image:
    try:
        with Image.open(path) as img:
            return img.convert("RGB").resize(size)
    except OSError:
        return Image.new("RGB", size, (230, 230, 230))
