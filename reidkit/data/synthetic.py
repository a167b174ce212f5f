"""Procedural pedestrian crops written in the Market-1501 layout.

An identity is a set of appearance attributes drawn from small palettes (skin, hair colour and
style, upper clothing colour and pattern, sleeves, lower clothing kind and colour, shoes, bag,
build). Every attribute is shared by many identities, so no single colour identifies a person;
the combination and where each colour sits on the body do. Each camera has its own viewpoint
mix, background, illumination, colour cast, blur, resolution and noise; domains "a" and "b" use
different camera styles. Detections are misaligned (box shift and scale) and partly occluded
(another pedestrian or an object), the failures part-based models such as Pyramid target.

Everything is deterministic from ``seed``: the plan (identities, cameras, splits, file names) comes
from one generator and each image from its own generator keyed by its index, so the bytes written
do not depend on ``workers``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

FORMAT_VERSION = 1
JPEG_QUALITY = 95

PRESETS: dict[str, dict[str, Any]] = {
    # Unit tests: a handful of images, generated in well under a second.
    "tiny": dict(num_train_ids=4, num_test_ids=3, images_per_id=4, num_cams=3,
                 num_distractors=3, num_junk=2),
    # Demo and CPU benchmarks: seconds to generate, minutes to train a small CNN on.
    "demo": dict(num_train_ids=150, num_test_ids=100, images_per_id=12, num_cams=6,
                 num_distractors=200, num_junk=40),
    # Market-1501-sized identity counts for throughput and scaling measurements.
    "benchmark": dict(num_train_ids=750, num_test_ids=750, images_per_id=16, num_cams=6,
                      num_distractors=2000, num_junk=500),
}

DEFAULTS: dict[str, Any] = dict(
    num_cams=6, height=128, width=64, domain="a", seed=0, misalign=True, occlusion=True,
    query_fraction=0.5, occlusion_prob=0.3, workers=1,
)

DOMAINS = ("a", "b")

# Label values of the part map a pedestrian is drawn into.
BG, SKIN, HAIR, UPPER, UPPER_ALT, LOWER, LOWER_ALT, SHOE, BAG, HAT, SLEEVE = range(11)
NUM_PARTS = 11

# Palettes. Clothing colours come in near neighbours (black/charcoal/navy, red/maroon,
# white/light grey/beige, ...) that camera casts and gains push into each other.
CLOTHES = np.array([
    (20, 20, 22), (55, 55, 60), (28, 34, 70), (120, 120, 125), (200, 200, 200), (235, 235, 230),
    (205, 190, 160), (120, 85, 55), (170, 30, 35), (100, 25, 35), (40, 80, 160), (110, 150, 200),
    (45, 95, 55), (110, 115, 60), (215, 185, 50), (210, 120, 150),
], dtype=np.float32)
SKINS = np.array([(235, 200, 175), (215, 170, 135), (180, 130, 95), (140, 95, 65),
                  (95, 65, 45)], dtype=np.float32)
HAIRS = np.array([(20, 18, 16), (70, 45, 25), (140, 100, 55), (200, 170, 110), (150, 150, 150)],
                 dtype=np.float32)
SHOES = np.array([(15, 15, 15), (240, 240, 240), (100, 70, 45), (60, 60, 70)], dtype=np.float32)

UPPER_PATTERNS = ("plain", "hstripes", "vstripes", "checks", "logo", "jacket")
UPPER_PATTERN_P = (0.35, 0.13, 0.12, 0.1, 0.15, 0.15)
LOWER_KINDS = ("trousers", "shorts", "skirt")
LOWER_KIND_P = (0.65, 0.2, 0.15)
LOWER_PATTERNS = ("plain", "stripe")
HAIR_STYLES = ("short", "long", "hat")
BAGS = ("none", "backpack", "handbag")
BAG_P = (0.45, 0.3, 0.25)
VIEWS = ("front", "back", "side")


@dataclass(frozen=True)
class Identity:
    """Appearance attributes of one person (palette indices, a build factor, a colour tint)."""

    skin: int
    hair: int
    hair_style: str
    upper: int
    upper_alt: int
    upper_pattern: str
    long_sleeves: bool
    lower: int
    lower_alt: int
    lower_kind: str
    lower_pattern: str
    shoes: int
    bag: str
    bag_color: int
    bag_side: int  # +1: carried on the person's right, -1: left
    hat: int
    build: float
    tint: tuple[float, float, float]

    def colours(self) -> np.ndarray:
        """RGB colour of every part label, float32 ``(NUM_PARTS, 3)``."""
        table = np.zeros((NUM_PARTS, 3), np.float32)
        table[SKIN] = SKINS[self.skin]
        table[HAIR] = HAIRS[self.hair]
        table[UPPER] = CLOTHES[self.upper]
        table[UPPER_ALT] = CLOTHES[self.upper_alt]
        table[LOWER] = CLOTHES[self.lower]
        table[LOWER_ALT] = CLOTHES[self.lower_alt]
        table[SHOE] = SHOES[self.shoes]
        table[BAG] = CLOTHES[self.bag_color]
        table[HAT] = CLOTHES[self.hat]
        table[SLEEVE] = CLOTHES[self.upper]
        return np.clip(table + np.asarray(self.tint, np.float32), 0, 255)


def _other(rng: np.random.Generator, n: int, avoid: int) -> int:
    """A palette index different from ``avoid`` (so that a pattern is visible)."""
    return int((avoid + rng.integers(1, n)) % n)


def random_identity(rng: np.random.Generator, domain: str = "a") -> Identity:
    """Draw one identity; domain "b" dresses people darker, as in a winter indoor scene."""
    n = len(CLOTHES)
    weights = np.ones(n)
    if domain == "b":
        weights[[0, 1, 2, 3, 7, 9]] *= 2.5
    weights /= weights.sum()
    upper = int(rng.choice(n, p=weights))
    lower = int(rng.choice(n, p=weights))
    return Identity(
        skin=int(rng.integers(len(SKINS))),
        hair=int(rng.integers(len(HAIRS))),
        hair_style=str(rng.choice(HAIR_STYLES, p=(0.55, 0.3, 0.15))),
        upper=upper,
        upper_alt=_other(rng, n, upper),
        upper_pattern=str(rng.choice(UPPER_PATTERNS, p=UPPER_PATTERN_P)),
        long_sleeves=bool(rng.random() < 0.6),
        lower=lower,
        lower_alt=_other(rng, n, lower),
        lower_kind=str(rng.choice(LOWER_KINDS, p=LOWER_KIND_P)),
        lower_pattern=str(rng.choice(LOWER_PATTERNS, p=(0.8, 0.2))),
        shoes=int(rng.integers(len(SHOES))),
        bag=str(rng.choice(BAGS, p=BAG_P)),
        bag_color=int(rng.choice(n, p=weights)),
        bag_side=int(rng.choice((-1, 1))),
        hat=int(rng.integers(n)),
        build=float(rng.uniform(0.85, 1.2)),
        tint=tuple(float(v) for v in rng.normal(0.0, 5.0, size=3)),
    )


@dataclass(frozen=True)
class CameraStyle:
    """How one camera sees: viewpoint mix, photometry, optics and its scene."""

    view_p: tuple[float, float, float]
    light: float  # horizontal light direction: shading slope across the body
    gain: float
    gamma: float
    cast: tuple[float, float, float]
    saturation: float
    blur: float
    resolution: float  # downscale factor before upscaling back (1 = full resolution)
    noise: float
    bg_top: tuple[int, int, int]
    bg_bottom: tuple[int, int, int]
    bg_palette: tuple[tuple[int, int, int], ...]
    horizon: float


# Domain "a": outdoor daylight, mild casts, sharp. Domain "b": indoor, warm/green casts, darker,
# softer and lower resolution. Values are (low, high) ranges each camera draws from.
_DOMAIN_RANGES: dict[str, dict[str, Any]] = {
    "a": dict(gain=(0.8, 1.25), gamma=(0.8, 1.25), cast=0.12, saturation=(0.75, 1.2),
              blur=(0.0, 0.7), resolution=(0.55, 1.0), noise=(2.0, 5.0),
              bg=[(150, 160, 170), (120, 125, 120), (90, 110, 70), (160, 150, 130),
                  (70, 75, 80), (180, 185, 190), (110, 90, 70), (60, 90, 60)]),
    "b": dict(gain=(0.6, 1.0), gamma=(0.9, 1.5), cast=0.25, saturation=(0.6, 1.1),
              blur=(0.4, 1.2), resolution=(0.4, 0.8), noise=(4.0, 9.0),
              bg=[(200, 180, 140), (170, 140, 100), (230, 220, 200), (150, 60, 50),
                  (60, 90, 130), (200, 170, 60), (120, 120, 110), (90, 70, 60)]),
}
_DOMAIN_KEYS = {"a": 11, "b": 23}


@lru_cache(maxsize=64)
def camera_style(domain: str, cam: int) -> CameraStyle:
    """The fixed style of camera ``cam`` (0-based) in ``domain``; independent of the data seed."""
    _check_domain(domain)
    r = _DOMAIN_RANGES[domain]
    rng = np.random.default_rng([_DOMAIN_KEYS[domain], cam])
    # Cameras watch walkways at different angles: some see mostly faces, some backs, some sides.
    views = rng.dirichlet((0.6, 0.6, 0.6)) * 0.8 + 0.2 / 3
    palette = [tuple(int(c) for c in np.clip(np.asarray(r["bg"][i]) + rng.normal(0, 12, 3), 0, 255))
               for i in rng.choice(len(r["bg"]), size=4, replace=False)]
    cast = np.exp(rng.uniform(-r["cast"], r["cast"], 3))
    return CameraStyle(
        view_p=tuple(float(v) for v in views / views.sum()),
        light=float(rng.uniform(-0.25, 0.25)),
        gain=float(rng.uniform(*r["gain"])),
        gamma=float(rng.uniform(*r["gamma"])),
        cast=tuple(float(c) for c in cast / cast.mean()),
        saturation=float(rng.uniform(*r["saturation"])),
        blur=float(rng.uniform(*r["blur"])),
        resolution=float(rng.uniform(*r["resolution"])),
        noise=float(rng.uniform(*r["noise"])),
        bg_top=palette[0],
        bg_bottom=palette[1],
        bg_palette=tuple(palette[2:]) + (palette[0], palette[1]),
        horizon=float(rng.uniform(0.35, 0.65)),
    )


# --------------------------------------------------------------------------------------------
# Drawing: a pedestrian is a part-label image drawn with PIL primitives (fast, in C).


class _Painter:
    """Draws body parts into a part-label image; coordinates in pixels, points as (y, x)."""

    def __init__(self, image: Image.Image) -> None:
        self.draw = ImageDraw.Draw(image)

    def ellipse(self, cy: float, cx: float, ry: float, rx: float, v: int,
                top_only: bool = False) -> None:
        box = (cx - rx, cy - ry, cx + rx, cy + ry)
        if top_only:
            self.draw.chord(box, 180, 360, fill=v)
        else:
            self.draw.ellipse(box, fill=v)

    def limb(self, p0: tuple[float, float], p1: tuple[float, float], r: float, v: int) -> None:
        """A thick segment with rounded ends (arm, leg, strap)."""
        self.draw.line((p0[1], p0[0], p1[1], p1[0]), fill=v, width=max(1, round(2 * r)))
        for y, x in (p0, p1):
            self.draw.ellipse((x - r, y - r, x + r, y + r), fill=v)

    def trapezoid(self, y0: float, y1: float, cx: float, hw0: float, hw1: float, v: int) -> None:
        """Rows ``y0..y1`` centred on ``cx``, half width from ``hw0`` (top) to ``hw1`` (bottom)."""
        self.draw.polygon([(cx - hw0, y0), (cx + hw0, y0), (cx + hw1, y1), (cx - hw1, y1)], fill=v)

    def rect(self, y0: float, y1: float, x0: float, x1: float, v: int) -> None:
        if x1 - x0 >= 1 and y1 - y0 >= 1:
            self.draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=v)


def _upper_pattern(lab: np.ndarray, kind: str, y0: float, x0: float, period: float,
                   phase: float) -> None:
    """Recolour the visible torso pixels (label UPPER) into stripes or checks of UPPER_ALT."""
    ys, xs = np.nonzero(lab == UPPER)
    if ys.size == 0:
        return
    rows = np.floor((ys + 0.5 - y0) / period)
    cols = np.floor((xs + 0.5 - x0) / period + phase)
    alt = {"hstripes": rows, "vstripes": cols, "checks": rows + cols}[kind] % 2 == 1
    lab[ys[alt], xs[alt]] = UPPER_ALT


def draw_person(label: Image.Image, ident: Identity, view: str, facing: int, cx: float,
                top: float, height: float, stride: float, swing: float) -> np.ndarray:
    """Draw ``ident`` seen from ``view`` into the part-label image; return the labels as an array.

    ``top`` and ``height`` place the person vertically (pixels), ``cx`` horizontally. ``facing``
    (+1 right, -1 left) orients side views; ``stride`` (0..1) spreads the legs and ``swing``
    (-1..1) swings the arms, so two pictures of one person are never the same pose.
    """
    pt = _Painter(label)
    u = height
    w = ident.build
    side = view == "side"

    def y(f: float) -> float:  # body proportions are fractions of the height
        return top + f * u

    shoulder_hw = (0.075 if side else 0.125) * w * u
    waist_hw = (0.07 if side else 0.10) * w * u
    hip_y, foot_y = y(0.5), y(0.955)
    leg_r = (0.05 if side else 0.045) * w * u

    if ident.bag == "backpack" and side:  # behind the body
        back = cx - facing * (shoulder_hw + 0.07 * u)
        pt.rect(y(0.19), y(0.44), min(back, cx), max(back, cx), BAG)

    # Legs and feet.
    if side:
        feet = [(foot_y, cx + facing * stride * 0.12 * u), (foot_y, cx - facing * stride * 0.1 * u)]
        hips = [(hip_y, cx), (hip_y, cx)]
    else:
        off, spread = 0.05 * w * u, 0.02 * u * stride
        feet = [(foot_y, cx - off - spread), (foot_y, cx + off + spread)]
        hips = [(hip_y, cx - off), (hip_y, cx + off)]
    bare = ident.lower_kind != "trousers"
    for hp, fp in zip(hips, feet, strict=True):
        pt.limb(hp, fp, leg_r * (0.8 if bare else 1.0), SKIN if bare else LOWER)
        knee = (hp[0] + 0.35 * (fp[0] - hp[0]), hp[1] + 0.35 * (fp[1] - hp[1]))
        if ident.lower_kind == "shorts":
            pt.limb(hp, knee, leg_r * 1.05, LOWER)
        if ident.lower_pattern == "stripe" and ident.lower_kind != "skirt":
            out = 0.0 if side else math.copysign(leg_r * 0.6, hp[1] - cx)
            end = fp if ident.lower_kind == "trousers" else knee
            pt.limb((hp[0], hp[1] + out), (end[0] - 0.02 * u, end[1] + out), 0.014 * u, LOWER_ALT)
    for fy, fx in feet:
        pt.ellipse(fy + 0.01 * u, fx + (facing * 0.02 * u if side else 0.0), 0.028 * u,
                   (0.045 if side else 0.038) * u, SHOE)
    if ident.lower_kind == "skirt":
        pt.trapezoid(y(0.48), y(0.72), cx, waist_hw, waist_hw * 1.6, LOWER)
        if ident.lower_pattern == "stripe":  # a hem band
            pt.trapezoid(y(0.66), y(0.72), cx, waist_hw * 1.45, waist_hw * 1.6, LOWER_ALT)
    else:
        pt.trapezoid(y(0.48), y(0.58), cx, waist_hw * 1.05, waist_hw * 1.05, LOWER)

    # Torso, then what is printed on it or hangs over it.
    pt.trapezoid(y(0.16), y(0.52), cx, shoulder_hw, waist_hw, UPPER)
    pat = ident.upper_pattern
    if pat == "logo" and view == "front":
        pt.rect(y(0.23), y(0.32), cx + 0.02 * u, cx + 0.09 * w * u, UPPER_ALT)
    elif pat == "jacket" and side:
        pt.rect(y(0.18), y(0.5), cx + facing * 0.03 * u - 0.025 * u,
                cx + facing * 0.03 * u + 0.025 * u, UPPER_ALT)
    elif pat == "jacket" and view == "front":
        pt.trapezoid(y(0.17), y(0.52), cx, 0.035 * u, 0.05 * u, UPPER_ALT)
    if ident.bag == "backpack" and view == "back":
        pt.rect(y(0.19), y(0.46), cx - 0.09 * w * u, cx + 0.09 * w * u, BAG)
    elif ident.bag == "backpack" and view == "front":  # the straps
        for s in (-1, 1):
            sx = cx + s * 0.075 * w * u
            pt.rect(y(0.17), y(0.36), sx - 0.012 * u, sx + 0.012 * u, BAG)

    # Arms: a sleeve over skin.
    sleeve_t = 0.88 if ident.long_sleeves else 0.35
    if side:
        arms = [((y(0.19), cx), (y(0.48), cx + facing * swing * 0.09 * u))]
    else:
        arms = [((y(0.19), cx + s * (shoulder_hw - 0.02 * u)),
                 (y(0.49), cx + s * (shoulder_hw + 0.015 * u + 0.015 * u * swing * s)))
                for s in (-1, 1)]
    for (sy, sx), (hy, hx) in arms:
        pt.limb((sy, sx), (hy, hx), 0.026 * u, SKIN)
        pt.limb((sy, sx), (sy + sleeve_t * (hy - sy), sx + sleeve_t * (hx - sx)), 0.03 * u, SLEEVE)

    if ident.bag == "handbag" and (not side or ident.bag_side == facing):
        # A bag on the person's right hangs on the viewer's left when the person faces the camera.
        img_side = {"front": -ident.bag_side, "back": ident.bag_side}.get(view, 0)
        bx = cx + img_side * (shoulder_hw + 0.035 * u)
        pt.rect(y(0.42), y(0.57), bx - 0.05 * u, bx + 0.05 * u, BAG)

    # Neck, head and hair.
    head_cy, head_cx = y(0.075), cx + (facing * 0.01 * u if side else 0.0)
    pt.rect(y(0.13), y(0.17), cx - 0.025 * u, cx + 0.025 * u, SKIN)
    if ident.hair_style == "long":
        hx = head_cx - (facing * 0.02 * u if side else 0.0)
        hw = (0.045 if side else 0.062) * u
        pt.rect(head_cy, y(0.28 if view == "back" else 0.24), hx - hw, hx + hw, HAIR)
    pt.ellipse(head_cy - 0.006 * u, head_cx, 0.075 * u, 0.055 * u, HAIR)
    if view == "front":
        pt.ellipse(head_cy + 0.012 * u, head_cx, 0.062 * u, 0.046 * u, SKIN)
    elif side:
        pt.ellipse(head_cy + 0.012 * u, head_cx + facing * 0.018 * u, 0.06 * u, 0.04 * u, SKIN)
    if ident.hair_style == "hat":
        pt.ellipse(head_cy - 0.012 * u, head_cx, 0.07 * u, 0.058 * u, HAT, top_only=True)
        pt.rect(head_cy - 0.016 * u, head_cy, head_cx - 0.065 * u, head_cx + 0.065 * u, HAT)

    lab = np.array(label)
    if pat in ("hstripes", "vstripes", "checks"):
        # Stripes and checks start at a fixed body side, so a back view shows their mirror.
        _upper_pattern(lab, pat, y(0.16), cx - shoulder_hw, 0.045 * u,
                       0.0 if view == "front" else 0.5)
    return lab


# --------------------------------------------------------------------------------------------
# Scenes, cameras and boxes.


def _canvas_shape(height: int, width: int) -> tuple[int, int]:
    # Room for the largest misaligned box (scale 1.2, shifts of 12% / 7%) around the person.
    return int(round(height * 1.5)), int(round(width * 1.5))


NUM_SCENES = 3  # background scenes per camera (a camera pans, zooms, or sees both ends)


@lru_cache(maxsize=64)
def _background_plate(domain: str, cam: int, scene: int, height: int, width: int) -> np.ndarray:
    """A large textured uint8 scene; images take random windows of it.

    Scene 0 uses the camera's own palette; the others mix in colours of the whole domain, so that
    backgrounds vary within a camera and overlap between cameras.
    """
    st = camera_style(domain, cam)
    rng = np.random.default_rng([_DOMAIN_KEYS[domain], cam, 7, scene])
    domain_bg = _DOMAIN_RANGES[domain]["bg"]
    palette = [np.asarray(c, np.float32) for c in st.bg_palette]
    if scene:
        palette = palette[:2] + [np.asarray(domain_bg[i], np.float32)
                                 for i in rng.choice(len(domain_bg), size=3, replace=False)]
    ch, cw = _canvas_shape(height, width)
    ph, pw = ch * 2, cw * 4
    rows = np.arange(ph, dtype=np.float32)[:, None, None] / ph
    top, bottom = (np.asarray(c, np.float32) for c in ((st.bg_top, st.bg_bottom) if not scene
                                                       else (palette[-1], palette[-2])))
    horizon = st.horizon if not scene else float(rng.uniform(0.35, 0.65))
    blend = 1.0 / (1.0 + np.exp(-(rows - horizon) * 30.0))
    plate = (top * (1 - blend) + bottom * blend) * np.ones((1, pw, 1), np.float32)
    # Structures: poles, doors, shop fronts and windows.
    for _ in range(int(rng.integers(6, 12))):
        c = palette[int(rng.integers(len(palette)))]
        x0 = int(rng.integers(0, pw))
        bw = int(rng.integers(max(2, width // 16), max(3, width // 2)))
        y0 = int(rng.integers(0, int(ph * horizon) + 1))
        y1 = int(rng.integers(y0 + ph // 8, ph + 1))
        plate[y0:y1, x0:x0 + bw] = np.clip(c + rng.normal(0, 15, 3), 0, 255)
    # Floor seams, then low-frequency shading across the whole plate.
    plate[int(ph * horizon)::max(4, height // 10)] *= 0.85
    low = rng.uniform(0.75, 1.2, size=(6, 12)).astype(np.float32)
    low = np.asarray(Image.fromarray(low, mode="F").resize((pw, ph), Image.BILINEAR))
    plate *= low[:, :, None]
    plate += rng.normal(0, 6, size=plate.shape).astype(np.float32)
    return np.clip(plate + 0.5, 0, 255).astype(np.uint8)


@lru_cache(maxsize=8)
def _noise_field(height: int, width: int) -> np.ndarray:
    """Unit Gaussian sensor noise, cached; each image reads it at a random offset."""
    rng = np.random.default_rng(12345)
    return rng.standard_normal((2 * height, 2 * width, 3)).astype(np.float32)


@dataclass(frozen=True)
class ImageSpec:
    """Everything needed to render one file (the image's own random draws come from ``key``)."""

    path: str
    kind: str  # "id" | "distractor" | "junk"
    identity: Identity | None
    cam: int  # 0-based
    key: tuple[int, ...]


@dataclass
class RenderInfo:
    """Per-image ground truth: view, person extent in the output image, occlusion."""

    view: str
    person_top: float
    person_bottom: float
    occluded: str
    mask: np.ndarray | None = field(default=None, repr=False)


def render(spec: ImageSpec, *, domain: str, height: int, width: int, misalign: bool,
           occlusion: bool, occlusion_prob: float = 0.3,
           return_mask: bool = False) -> tuple[np.ndarray, RenderInfo]:
    """Render one detection crop ``(height, width, 3)`` uint8 and its ground truth.

    With ``return_mask`` the info carries the person's pixel mask in the crop (before occlusion).
    """
    rng = np.random.default_rng(spec.key)
    st = camera_style(domain, spec.cam)
    ch, cw = _canvas_shape(height, width)

    plate = _background_plate(domain, spec.cam, int(rng.integers(NUM_SCENES)), height, width)
    oy = int(rng.integers(0, plate.shape[0] - ch + 1))
    ox = int(rng.integers(0, plate.shape[1] - cw + 1))
    img = plate[oy:oy + ch, ox:ox + cw][:, ::rng.choice((-1, 1))].copy()
    for _ in range(int(rng.integers(0, 3))):  # per-image clutter in the scene palette
        y0, x0 = int(rng.integers(0, ch)), int(rng.integers(0, cw))
        img[y0:y0 + int(rng.integers(4, ch // 3)), x0:x0 + int(rng.integers(3, cw // 3))] = \
            st.bg_palette[int(rng.integers(len(st.bg_palette)))]

    # The person stands in the middle of the canvas; the nominal box has a 5% margin.
    person_h = 0.9 * height
    top, cx = (ch - person_h) / 2, cw / 2
    if spec.kind == "distractor" and rng.random() < 0.5:
        cx += rng.choice((-1, 1)) * rng.uniform(0.45, 0.75) * width  # a stray part of someone
    if spec.kind == "junk":
        top += rng.choice((-1, 1)) * rng.uniform(0.35, 0.5) * height
        cx += rng.uniform(-0.3, 0.3) * width
    ident = spec.identity if spec.identity is not None else random_identity(rng, domain)
    view = str(VIEWS[rng.choice(3, p=st.view_p)])
    facing = int(rng.choice((-1, 1)))
    lab = draw_person(Image.new("L", (cw, ch)), ident, view, facing, cx, top, person_h,
                      float(rng.uniform(0, 1)), float(rng.uniform(-1, 1)))
    person_mask = lab > 0
    _composite(img, lab, ident.colours(), cx, person_h, st.light)

    occluded = "none"
    if occlusion and spec.kind == "id" and rng.random() < occlusion_prob:
        occluded = _occlude(img, rng, st, domain, cx, top, person_h, width, height)

    # Detection box: nominal around the person, or shifted and rescaled when misaligned.
    scale, dy, dx = 1.0, 0.0, 0.0
    if misalign:
        scale = float(np.exp(rng.uniform(np.log(0.85), np.log(1.2))))
        dy = float(rng.uniform(-0.12, 0.12)) * height
        dx = float(rng.uniform(-0.07, 0.07)) * width
    bh, bw = height * scale, width * scale
    y0, x0 = ch / 2 + dy - bh / 2, cw / 2 + dx - bw / 2
    box = (x0, y0, x0 + bw, y0 + bh)
    out = _camera(Image.fromarray(img), box, (width, height), st, rng)
    mask = None
    if return_mask:
        mask = np.asarray(Image.fromarray(person_mask.astype(np.uint8) * 255).resize(
            (width, height), Image.NEAREST, box=box)) > 127
    info = RenderInfo(view=view, person_top=(top - y0) * height / bh,
                      person_bottom=(top + person_h - y0) * height / bh, occluded=occluded,
                      mask=mask)
    return out, info


def _composite(img: np.ndarray, lab: np.ndarray, colours: np.ndarray, cx: float, person_h: float,
               light: float) -> None:
    """Paint the labelled parts over ``img`` with a cylindrical shading across the body."""
    ys, xs = np.nonzero(lab)
    x = (xs.astype(np.float32) + 0.5 - cx) / (0.14 * person_h)
    shade = np.clip(1.0 - 0.22 * x * x + light * x, 0.55, 1.15)
    img[ys, xs] = np.clip(colours[lab[ys, xs]] * shade[:, None], 0, 255).astype(np.uint8)


def _occlude(img: np.ndarray, rng: np.random.Generator, st: CameraStyle, domain: str, cx: float,
             top: float, person_h: float, width: int, height: int) -> str:
    """Cover part of the person with a passer-by or an object; returns which."""
    ch, cw = img.shape[:2]
    if rng.random() < 0.5:
        other = random_identity(rng, domain)
        ox = cx + rng.choice((-1, 1)) * rng.uniform(0.35, 0.6) * width
        oh = person_h * rng.uniform(1.0, 1.2)  # nearer to the camera, so drawn larger
        otop = top + person_h - oh + rng.uniform(0.0, 0.15) * height
        lab = draw_person(Image.new("L", (cw, ch)), other, str(VIEWS[rng.integers(3)]),
                          int(rng.choice((-1, 1))), ox, otop, oh, float(rng.uniform(0, 1)),
                          float(rng.uniform(-1, 1)))
        _composite(img, lab, other.colours(), ox, oh, st.light)
        return "person"
    c = np.asarray(st.bg_palette[int(rng.integers(len(st.bg_palette)))], np.float32)
    c = np.clip(c * rng.uniform(0.6, 1.3), 0, 255).astype(np.uint8)
    if rng.random() < 0.6:  # bench, car, bin: from below
        oy0 = int(top + person_h - rng.uniform(0.2, 0.45) * person_h)
        half = rng.uniform(0.3, 0.6) * width
        x0 = int(cx + rng.uniform(-0.3, 0.3) * width - half)
        img[oy0:, max(x0, 0):max(int(x0 + 2 * half), 0)] = c
    else:  # pole, doorway, sign: from a side
        s = rng.choice((-1, 1))
        edge = int(cx + s * rng.uniform(0.0, 0.15) * width)
        if s > 0:
            img[:, edge:] = c
        else:
            img[:, :edge] = c
    return "object"


def _camera(scene: Image.Image, box: tuple[float, float, float, float], size: tuple[int, int],
            st: CameraStyle, rng: np.random.Generator) -> np.ndarray:
    """Crop ``box`` at the camera's resolution, blur, scale to ``size``; then photometry (gain,
    cast, gamma, saturation) and sensor noise."""
    w, h = size
    small = (max(1, round(w * st.resolution)), max(1, round(h * st.resolution)))
    crop = scene.resize(small, Image.BILINEAR, box=box)
    if st.blur > 0.05:
        crop = crop.filter(ImageFilter.GaussianBlur(st.blur * st.resolution))
    if small != size:
        crop = crop.resize(size, Image.BILINEAR)
    levels = np.arange(256, dtype=np.float32) / 255.0
    gain = st.gain * rng.uniform(0.9, 1.1)
    lut = np.stack([np.clip(levels * gain * c, 0.0, 1.0) ** st.gamma for c in st.cast], axis=1)
    x = np.asarray(crop)
    x = lut[x, np.arange(3)] * 255.0  # per-channel look-up
    grey = x.mean(axis=2, keepdims=True)
    noise = _noise_field(h, w)
    ny, nx = int(rng.integers(0, h + 1)), int(rng.integers(0, w + 1))
    x = grey + st.saturation * (x - grey) + st.noise * noise[ny:ny + h, nx:nx + w]
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Planning and writing the data set.


def _check_domain(domain: str) -> None:
    if domain not in DOMAINS:
        raise ValueError(f"unknown synthetic domain {domain!r}; use one of {DOMAINS}")


def resolve_options(preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The full, checked option set of ``generate(out_dir, preset, **overrides)``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)}")
    unknown = set(overrides) - set(DEFAULTS) - set(PRESETS["demo"])
    if unknown:
        raise TypeError(f"generate() got unknown options {sorted(unknown)}; "
                        f"valid: {sorted(set(DEFAULTS) | set(PRESETS['demo']))}")
    p = {**DEFAULTS, **PRESETS[preset], **overrides}
    _check_domain(p["domain"])
    if not 1 <= p["num_cams"] <= 9:
        raise ValueError(f"num_cams={p['num_cams']}: the Market-1501 names hold one camera digit, "
                         "use 1..9")
    if p["images_per_id"] < 2 or p["num_cams"] < 2:
        raise ValueError("images_per_id and num_cams must be >= 2 so that every identity is seen "
                         "by two cameras")
    if p["num_train_ids"] < 1 or p["num_test_ids"] < 1:
        raise ValueError("num_train_ids and num_test_ids must be >= 1")
    if p["num_train_ids"] + p["num_test_ids"] > 9999:
        raise ValueError("at most 9999 identities fit the 4-digit Market-1501 pid")
    if p["num_distractors"] < 0 or p["num_junk"] < 0:
        raise ValueError("num_distractors and num_junk must be >= 0")
    if not 0.0 < p["query_fraction"] <= 1.0:
        raise ValueError(f"query_fraction={p['query_fraction']} must be in (0, 1]")
    if not 0.0 <= p["occlusion_prob"] <= 1.0:
        raise ValueError(f"occlusion_prob={p['occlusion_prob']} must be in [0, 1]")
    if p["height"] < 16 or p["width"] < 8:
        raise ValueError(f"image size {p['height']}x{p['width']} is too small; use >= 16x8")
    if p["workers"] < 1:
        raise ValueError("workers must be >= 1")
    return p


def _split_cams(rng: np.random.Generator, n_images: int, num_cams: int) -> list[int]:
    """Cameras (0-based) of an identity's images: at least two cameras, each used at least once."""
    k = int(rng.integers(2, min(num_cams, n_images) + 1))
    cams = sorted(rng.choice(num_cams, size=k, replace=False).tolist())
    counts = np.ones(k, int) + rng.multinomial(n_images - k, np.ones(k) / k)
    return [c for c, n in zip(cams, counts, strict=True) for _ in range(n)]


class _Namer:
    """Market-1501 file names: ``PPPP_cCsS_FFFFFF_BB.jpg`` with frames unique per camera."""

    def __init__(self, rng: np.random.Generator, num_cams: int) -> None:
        self.rng = rng
        self.frame = [int(rng.integers(0, 500)) for _ in range(num_cams)]

    def __call__(self, pid: int, cam: int) -> str:
        self.frame[cam] += int(self.rng.integers(1, 60))
        seq = 1 + self.frame[cam] // 40000 % 6
        pid_s = "-1" if pid < 0 else f"{pid:04d}"
        box = int(self.rng.integers(1, 9))
        return f"{pid_s}_c{cam + 1}s{seq}_{self.frame[cam]:06d}_{box:02d}.jpg"


def plan(p: dict[str, Any]) -> list[ImageSpec]:
    """The files of a data set (paths relative to its root) and what each image shows."""
    rng = np.random.default_rng([p["seed"], _DOMAIN_KEYS[p["domain"]], 0])
    n_train, n_test = p["num_train_ids"], p["num_test_ids"]
    pids = rng.permutation(np.arange(1, n_train + n_test + 1))
    train_pids, test_pids = sorted(pids[:n_train].tolist()), sorted(pids[n_train:].tolist())
    idents = {pid: random_identity(rng, p["domain"]) for pid in range(1, n_train + n_test + 1)}
    name = _Namer(rng, p["num_cams"])
    entries: list[tuple[str, str, Identity | None, int]] = []

    for pid in train_pids:
        for cam in _split_cams(rng, p["images_per_id"], p["num_cams"]):
            entries.append(("bounding_box_train/" + name(pid, cam), "id", idents[pid], cam))
    for pid in test_pids:
        cams = _split_cams(rng, p["images_per_id"], p["num_cams"])
        present = sorted(set(cams))
        n_query = max(1, round(p["query_fraction"] * len(present)))
        query_cams = set(rng.choice(present, size=n_query, replace=False).tolist())
        # A query needs a gallery match in another camera. Giving back one failing query camera
        # puts its image in the gallery, which then serves every other query camera.
        for c in sorted(query_cams):
            if not any(cams.count(o) > (o in query_cams) for o in present if o != c):
                query_cams.discard(c)
                break
        for cam in cams:
            if cam in query_cams:
                query_cams.discard(cam)
                entries.append(("query/" + name(pid, cam), "id", idents[pid], cam))
            else:
                entries.append(("bounding_box_test/" + name(pid, cam), "id", idents[pid], cam))
    for pid, kind, count in ((0, "distractor", p["num_distractors"]), (-1, "junk", p["num_junk"])):
        for _ in range(count):
            cam = int(rng.integers(p["num_cams"]))
            entries.append(("bounding_box_test/" + name(pid, cam), kind, None, cam))
    return [ImageSpec(path, kind, ident, cam, (p["seed"], _DOMAIN_KEYS[p["domain"]], 1, i))
            for i, (path, kind, ident, cam) in enumerate(entries)]


def _render_chunk(args: tuple[str, list[ImageSpec], dict[str, Any]]) -> list[list[Any]]:
    root, specs, p = args
    rows = []
    for spec in specs:
        arr, info = render(spec, domain=p["domain"], height=p["height"], width=p["width"],
                           misalign=p["misalign"], occlusion=p["occlusion"],
                           occlusion_prob=p["occlusion_prob"])
        Image.fromarray(arr).save(os.path.join(root, spec.path), quality=JPEG_QUALITY)
        rows.append([spec.path, spec.kind, spec.cam + 1, info.view, round(info.person_top, 2),
                     round(info.person_bottom, 2), info.occluded])
    return rows


def _chunks(items: list[ImageSpec], n: int) -> Iterable[list[ImageSpec]]:
    size = max(1, math.ceil(len(items) / n))
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _counts(specs: list[ImageSpec], folder: str) -> dict[str, int]:
    sel = [s for s in specs if s.path.startswith(folder + "/")]
    pids = {s.path.split("/")[1].split("_")[0] for s in sel}
    return {"ids": len(pids - {"0000", "-1"}), "images": len(sel),
            "cams": len({s.cam for s in sel})}


def generate(out_dir: str | Path, preset: str = "demo", **overrides: Any) -> dict[str, Any]:
    """Write a synthetic data set in the Market-1501 layout to ``out_dir``; return its statistics.

    Options (each overrides the ``preset`` value): ``num_train_ids``, ``num_test_ids``,
    ``images_per_id``, ``num_cams`` (<= 9), ``num_distractors`` (pid 0000), ``num_junk``
    (pid -1), ``height``, ``width``, ``domain`` ("a" or "b"), ``seed``, ``misalign``,
    ``occlusion``, ``occlusion_prob``, ``query_fraction`` (share of an identity's test cameras
    that give a query image) and ``workers`` (processes; the output does not depend on it).
    ``out_dir`` must be empty or absent.
    """
    p = resolve_options(preset, overrides)
    root = Path(out_dir).expanduser()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not an empty folder; choose a new out_dir "
                              "or delete it first")
    for sub in ("bounding_box_train", "query", "bounding_box_test"):
        (root / sub).mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    specs = plan(p)
    jobs = [(str(root), chunk, p) for chunk in _chunks(specs, p["workers"] * 4)]
    if p["workers"] == 1:
        results = [_render_chunk(job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=p["workers"]) as pool:
            results = list(pool.map(_render_chunk, jobs))
    seconds = time.perf_counter() - start

    with open(root / "annotations.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "kind", "camera", "view", "person_top", "person_bottom",
                         "occluded"])
        for rows in results:
            writer.writerows(rows)

    gallery = _counts(specs, "bounding_box_test")
    gallery["distractors"] = sum(s.kind == "distractor" for s in specs)
    gallery["junk"] = sum(s.kind == "junk" for s in specs)
    stats = {
        "train": _counts(specs, "bounding_box_train"),
        "query": _counts(specs, "query"),
        "gallery": gallery,
        "images": len(specs),
        "seconds": seconds,
        "images_per_second": len(specs) / max(seconds, 1e-9),
    }
    params = {k: v for k, v in p.items() if k != "workers"}
    meta = {
        "generator": "reidkit.data.synthetic",
        "format_version": FORMAT_VERSION,
        "layout": "market1501",
        "preset": preset,
        "params": params,
        "jpeg_quality": JPEG_QUALITY,
        "cameras": [asdict(camera_style(p["domain"], c)) for c in range(p["num_cams"])],
        "counts": {k: v for k, v in stats.items() if k not in ("seconds", "images_per_second")},
    }
    (root / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (root / "README.txt").write_text(_readme(preset, params, stats))
    return stats


def _readme(preset: str, params: dict[str, Any], stats: dict[str, Any]) -> str:
    lines = [
        "Synthetic pedestrian re-ID data set written by reidkit.data.synthetic",
        "",
        "Layout and names follow Market-1501: bounding_box_train/, query/, bounding_box_test/,",
        "files PPPP_cCsS_FFFFFF_BB.jpg (pid, camera, sequence, frame, box). pid 0000 are",
        "distractors (never a match), pid -1 junk (ignored by the evaluation). Train and test",
        "identities are disjoint. annotations.csv gives each image's view, the person's top and",
        "bottom row in the image (misalignment) and its occlusion; meta.json the full parameters",
        "and camera styles. The same parameters and seed give the same bytes.",
        "",
        f"preset: {preset}",
        *(f"{k}: {v}" for k, v in params.items()),
        "",
        *(f"{k}: {stats[k]}" for k in ("train", "query", "gallery")),
    ]
    return "\n".join(lines) + "\n"
