"""Synthetic audio-visual dataset: moving coloured shapes, one of which makes a sound.

Each video shows 2-3 objects of different classes (class = shape + colour, or shape alone with
``colour_by_class=False``: colours then drawn from the palette per object) moving over a lightly
textured, noisy background. Exactly one object sounds: the audio is its class-specific sound
(distinct pitch and timbre per class, a few % of pitch jitter per video) whose loudness follows
that object's speed, so audio-visual correspondence, synchronization and sound-source
localization are all learnable; the other objects are silent distractors whose motion has the
same statistics. Optional static clutter (``clutter`` silent discs in the palette's colours,
smaller than the objects, painted into the background) makes "which colours are in view" a poor
cue to the class: a randomly initialized encoder reads colour well, so on clutter-free videos it
scores as high as a trained one on a linear probe (see ``avssl demo``). Ground truth (label,
split, per-frame box of the sounding object, the labels of all objects in view) goes to
``meta.jsonl``, which ``avssl preprocess --meta`` copies into the manifest.

Two generator variants (``variant``, recorded in ``generator.json``): ``"a"`` (the default and
the demo's data; 8 classes of plain shapes, objects 24-32 % of the short side, a grey, lightly
textured background) and ``"b"``, an independent set to check that what is learned on ``"a"``
is not tied to it: 6 other classes (other shapes, colours and sounds), objects 16-42 % of the
short side, coloured backgrounds patterned with stripes, checks or blobs, a colour gradient
and stronger noise. In both, every sounding object is fully in view.

Layout written by :func:`make_synthetic`::

    dst/videos/c<label>_<index:05d>.mp4   H.264 + AAC (mono), written atomically
    dst/meta.jsonl                        one row per video (see ``_meta_row``)
    dst/classes.json                      the class list (shape, colour, sound)
    dst/generator.json                    the settings, checked when a run is resumed

Everything random comes from ``np.random.SeedSequence([seed, index])``, so a video's content
does not depend on the number of workers or on which videos were already on disk.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from avssl.utils.atomic import atomic_write_json, atomic_write_jsonl

# --- classes --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassSpec:
    """One class: what it looks like and what it sounds like.

    ``sound`` is a dict read by ``_class_sound``: ``kind`` is ``harmonic`` (``f0`` Hz, partial
    amplitudes ``amps`` for harmonics 1, 2, ...), ``odd`` (odd harmonics only), ``inharmonic``
    (``f0`` and partial ``ratios``/``amps``), ``noise`` (a band ``lo``-``hi`` Hz), ``chirp``
    (an FM sweep ``lo``->``hi`` Hz, ``rate`` sweeps per second) or ``am`` (a tone ``f0`` Hz
    whose amplitude pulses ``rate`` times per second).
    """

    name: str
    shape: str
    colour: str
    rgb: tuple[int, int, int]
    sound: dict[str, Any]
    description: str

    @property
    def dominant_hz(self) -> float | None:
        """Frequency of the strongest partial (Hz, before per-video jitter), None for bands."""
        return float(self.sound["f0"]) if "f0" in self.sound else None


CLASSES: tuple[ClassSpec, ...] = (
    ClassSpec("red_circle", "circle", "red", (220, 40, 40),
              {"kind": "harmonic", "f0": 220.0, "amps": [1 / k for k in range(1, 11)]},
              "sawtooth-like buzz, 220 Hz, 10 harmonics falling as 1/k"),
    ClassSpec("green_square", "square", "green", (40, 200, 60),
              {"kind": "odd", "f0": 440.0, "amps": [1, 1 / 3, 1 / 5, 1 / 7, 1 / 9]},
              "hollow clarinet-like tone, 440 Hz, odd harmonics only"),
    ClassSpec("blue_triangle", "triangle", "blue", (50, 90, 235),
              {"kind": "harmonic", "f0": 880.0, "amps": [1.0, 0.25]},
              "pure whistle, 880 Hz with a weak octave"),
    ClassSpec("yellow_diamond", "diamond", "yellow", (235, 215, 40),
              {"kind": "noise", "lo": 2000.0, "hi": 3500.0},
              "hiss: band-limited noise 2-3.5 kHz"),
    ClassSpec("magenta_cross", "cross", "magenta", (220, 50, 220),
              {"kind": "chirp", "lo": 500.0, "hi": 1000.0, "rate": 2.0},
              "siren: FM sweep 0.5->1 kHz, twice a second"),
    ClassSpec("cyan_ring", "ring", "cyan", (40, 210, 220),
              {"kind": "inharmonic", "f0": 300.0, "ratios": [1.0, 2.76, 5.40, 8.93],
               "amps": [1.0, 0.6, 0.4, 0.25]},
              "metallic bell, 300 Hz with inharmonic partials x2.76, x5.40, x8.93"),
    ClassSpec("orange_star", "star", "orange", (245, 140, 30),
              {"kind": "harmonic", "f0": 110.0, "amps": [k ** -0.5 for k in range(1, 17)]},
              "bright low growl, 110 Hz, 16 harmonics falling as 1/sqrt(k)"),
    ClassSpec("white_hexagon", "hexagon", "white", (240, 240, 240),
              {"kind": "noise", "lo": 5000.0, "hi": 7000.0},
              "sizzle: band-limited noise 5-7 kHz"),
)
MAX_CLASSES = len(CLASSES)

# Variant "b": nothing shared with the classes above (shape, colour or sound).
CLASSES_B: tuple[ClassSpec, ...] = (
    ClassSpec("plum_ellipse", "ellipse", "plum", (150, 60, 170),
              {"kind": "harmonic", "f0": 165.0, "amps": [k ** -2.0 for k in range(1, 9)]},
              "mellow hum, 165 Hz, 8 harmonics falling as 1/k^2"),
    ClassSpec("teal_pentagon", "pentagon", "teal", (0, 150, 140),
              {"kind": "odd", "f0": 330.0, "amps": [1.0, 0.5, 0.3, 0.2]},
              "reedy tone, 330 Hz, odd harmonics 1, 3, 5, 7"),
    ClassSpec("brown_crescent", "crescent", "brown", (150, 95, 40),
              {"kind": "noise", "lo": 700.0, "hi": 1400.0},
              "rumble: band-limited noise 0.7-1.4 kHz"),
    ClassSpec("pink_chevron", "chevron", "pink", (255, 160, 200),
              {"kind": "chirp", "lo": 1500.0, "hi": 700.0, "rate": 3.0},
              "falling sweep 1.5->0.7 kHz, three times a second"),
    ClassSpec("lime_dome", "dome", "lime", (170, 240, 50),
              {"kind": "inharmonic", "f0": 520.0, "ratios": [1.0, 1.51, 2.24, 3.73],
               "amps": [1.0, 0.7, 0.5, 0.3]},
              "gong, 520 Hz with inharmonic partials x1.51, x2.24, x3.73"),
    ClassSpec("navy_saltire", "saltire", "navy", (25, 35, 130),
              {"kind": "am", "f0": 1800.0, "rate": 6.0},
              "tremolo: 1.8 kHz tone pulsing six times a second"),
)


@dataclass(frozen=True)
class Variant:
    """A generator variant: its classes, object sizes (side / short frame side), background
    (``"grey"``: low-saturation texture; ``"patterned"``: see ``_background_patterned``) and the
    per-frame pixel noise (standard deviation, 8-bit levels)."""

    name: str
    classes: tuple[ClassSpec, ...]
    size_range: tuple[float, float]
    background: str
    frame_noise: float
    default_classes: int


VARIANTS: dict[str, Variant] = {
    "a": Variant("a", CLASSES, (0.24, 0.32), "grey", 4.0, 4),
    "b": Variant("b", CLASSES_B, (0.16, 0.42), "patterned", 10.0, 6),
}


def get_variant(name: str) -> Variant:
    """The variant called ``name``; ValueError for an unknown one."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r} (choose from {sorted(VARIANTS)})")
    return VARIANTS[name]

# Motion and appearance constants (coordinates are fractions of the frame width/height).
V_MAX = 0.6            # top object speed, frame fractions per second (also the loudness scale)
SIZE_RANGE = VARIANTS["a"].size_range  # object side / short side: box area ~5-10 % of the frame
CLUTTER_RADIUS = (0.04, 0.08)  # clutter disc radius / short frame side (objects: 0.12-0.16)
LOUDNESS_FLOOR = 0.15  # loudness of a still sounding object, relative to full speed
PITCH_JITTER = 0.04    # per-video pitch factor in [1 - j, 1 + j]
MIN_SAMPLE_RATE = 16000  # the highest class band reaches 7.3 kHz


def shape_mask(shape: str, n: int) -> np.ndarray:
    """Boolean (n, n) mask of ``shape`` inscribed in the square [-1, 1]^2 (y down)."""
    c = (np.arange(n) + 0.5) / n * 2 - 1
    v, u = np.meshgrid(c, c, indexing="ij")
    r = np.hypot(u, v)
    if shape == "circle":
        return r <= 1
    if shape == "square":
        return (np.abs(u) <= 0.9) & (np.abs(v) <= 0.9)
    if shape == "triangle":  # apex up
        return (v <= 1) & (np.abs(u) <= (v + 1) / 2)
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1
    if shape == "cross":
        return (np.abs(u) <= 0.34) | (np.abs(v) <= 0.34)
    if shape == "ring":
        return (r <= 1) & (r >= 0.5)
    if shape == "star":  # five points; radius alternates 1 / 0.45 every 36 degrees
        theta = np.arctan2(u, -v)  # 0 = up
        frac = np.abs(((theta / (2 * np.pi / 5)) % 1) - 0.5) * 2  # 1 at a point, 0 between
        return r <= 0.45 + 0.55 * frac ** 1.6
    if shape == "hexagon":
        return (np.abs(v) <= math.sqrt(3) / 2) & (math.sqrt(3) * np.abs(u) + np.abs(v)
                                                   <= math.sqrt(3))
    # variant "b"
    if shape == "ellipse":  # wide, 1 : 0.55
        return u ** 2 + (v / 0.55) ** 2 <= 1
    if shape == "pentagon":  # regular, a vertex up: r <= cos(pi/5) / cos(angle to edge normal)
        theta = np.arctan2(u, -v)
        sector = np.abs((theta % (2 * np.pi / 5)) - np.pi / 5)
        return r * np.cos(sector) <= np.cos(np.pi / 5)
    if shape == "crescent":  # a disc with an offset disc cut out
        return (r <= 1) & (np.hypot(u - 0.45, v + 0.1) > 0.78)
    if shape == "chevron":  # a thick "^"
        d = v - (1.5 * np.abs(u) - 0.8)
        return (d >= 0) & (d <= 0.9) & (np.abs(u) <= 1)
    if shape == "dome":  # half an ellipse standing on its flat side
        return (v <= 1) & (u ** 2 + ((1 - v) / 2) ** 2 <= 1)
    if shape == "saltire":  # a diagonal cross
        bars = (np.abs(u - v) <= 0.42) | (np.abs(u + v) <= 0.42)
        return bars & (np.maximum(np.abs(u), np.abs(v)) <= 0.95)
    raise ValueError(f"unknown shape {shape!r}")


# --- plan: everything that fixes the ground truth ----------------------------------------------

SUPERSAMPLE = 4  # objects are placed on a quarter-pixel grid, anti-aliased


@dataclass
class ObjectTrack:
    """One object's class, look and trajectory over the video's T frames.

    ``xy`` (T, 2) float: top-left corner of its (side+1)-pixel canvas in pixels, on the
    quarter-pixel grid it is rendered at; ``xyxy`` (T, 4): its tight box normalized to [0, 1];
    ``speed`` (T,): speed of the unquantized trajectory in frame fractions per second.
    """

    label: int
    side: int
    rgb: tuple[int, int, int]
    xy: np.ndarray
    xyxy: np.ndarray
    speed: np.ndarray


@dataclass
class VideoPlan:
    """Ground truth of one video; :func:`render_video` turns it into frames and audio.

    ``objects[0]`` is the sounding object; ``draw_order`` lists object indices back to front;
    ``clutter`` (K, 6) float: static silent discs painted into the background, one row per disc:
    centre x, y and radius in pixels, then R, G, B. ``variant``: the generator variant (its
    classes, background and noise).
    """

    index: int
    seed: int
    label: int
    name: str
    num_frames: int
    fps: float
    width: int
    height: int
    sample_rate: int
    num_samples: int
    pitch: float
    objects: list[ObjectTrack]
    draw_order: list[int] = field(default_factory=list)
    clutter: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))
    variant: str = "a"


def video_seed(seed: int, index: int) -> int:
    """The per-video seed (stable across numpy versions and worker counts)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def video_name(index: int, label: int) -> str:
    return f"c{label}_{index:05d}"


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 (sigma in samples), edges held."""
    if sigma <= 0:
        return x
    r = max(1, int(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.concatenate([np.repeat(x[:1], r, 0), x, np.repeat(x[-1:], r, 0)])
    if x.ndim == 1:
        return np.convolve(pad, k, mode="valid")
    return np.stack([np.convolve(pad[:, j], k, mode="valid") for j in range(x.shape[1])], 1)


def _speed_profile(rng: np.random.Generator, n: int, fps: float) -> np.ndarray:
    """Per-frame speed (n,) in frame fractions per second: piecewise-constant targets lasting
    0.3-1 s (30 % of them pauses), each at least 0.3 V_MAX away from the previous one, smoothed
    over ~0.15 s, so speed changes often and smoothly (the loudness follows it)."""
    target = np.empty(n)
    t, prev = 0, -1.0
    while t < n:
        length = max(1, round(rng.uniform(0.3, 1.0) * fps))
        value = prev
        while abs(value - prev) < 0.3 * V_MAX:
            value = 0.0 if rng.random() < 0.3 else rng.uniform(0.2, 1.0) * V_MAX
        target[t:t + length] = prev = value
        t += length
    return np.clip(_smooth(target, 0.15 * fps), 0, None)


def _trajectories(rng: np.random.Generator, n: int, fps: float, half: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Move K objects together: smooth random headings, bounces off the walls and each other.

    ``half`` (K, 2): half the extent of each object's canvas in frame fractions (x, y). Returns
    canvas centres (K, n, 2) in frame fractions and the speed each object is seen moving at
    (K, n), frame fractions per second. Objects start apart and bounce off each other (as
    boxes), so the sounding object is rarely hidden for long.
    """
    k = len(half)
    speed = np.stack([_speed_profile(rng, n, fps) for _ in range(k)])
    turn = np.stack([_smooth(rng.normal(0, 4.0, n), 0.2 * fps) for _ in range(k)])  # rad/s
    angle = rng.uniform(0, 2 * np.pi, k)
    d = np.stack([np.cos(angle), np.sin(angle)], 1)  # unit headings (K, 2)
    lo, hi = half, 1 - half
    p = np.empty((k, 2))
    for i in range(k):  # rejection-sample non-overlapping starts (best effort)
        for _ in range(100):
            p[i] = rng.uniform(lo[i], hi[i])
            if all((np.abs(p[i] - p[j]) >= half[i] + half[j]).any() for j in range(i)):
                break
    pos = np.empty((k, n, 2))
    pos[:, 0] = p
    for t in range(1, n):
        c, s = np.cos(turn[:, t] / fps), np.sin(turn[:, t] / fps)
        d = np.stack([c * d[:, 0] - s * d[:, 1], s * d[:, 0] + c * d[:, 1]], 1)
        for i in range(k):
            for j in range(k):
                gap = np.abs(p[i] - p[j]) - (half[i] + half[j])
                if i != j and (gap < 0).all():  # touching: head away along the shallow axis
                    a = int(gap.argmax())
                    d[i, a] = np.sign(p[i, a] - p[j, a] or 1.0) * abs(d[i, a])
        p = p + speed[:, t, None] / fps * d
        below, above = p < lo, p > hi  # bounce off the walls
        p = np.where(below, 2 * lo - p, np.where(above, 2 * hi - p, p)).clip(lo, hi)
        d = np.where(below | above, -d, d)
        pos[:, t] = p
    seen = np.hypot(*np.moveaxis(np.gradient(pos, axis=1), 2, 0)) * fps  # what frames show
    return pos, seen


def _mask_extent(shape: str, side: int) -> tuple[float, float, float, float]:
    """Tight extent (x0, y0, x1, y1) in pixels of the shape drawn in a side x side square."""
    m = shape_mask(shape, side * SUPERSAMPLE)
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    s = SUPERSAMPLE
    return cols[0] / s, rows[0] / s, (cols[-1] + 1) / s, (rows[-1] + 1) / s


def plan_video(index: int, *, seed: int = 0, classes: int | None = None, duration: float = 4.0,
               fps: float = 25.0, size: tuple[int, int] = (128, 128), sample_rate: int = 32000,
               distractors: tuple[int, int] = (1, 2),
               colour_by_class: bool = True, clutter: int = 0, variant: str = "a") -> VideoPlan:
    """The ground truth of video ``index``: label (round-robin), objects and trajectories.

    ``size`` is (width, height) in pixels. ``colour_by_class=False`` paints every object in a
    colour drawn from the whole palette, independent of its class, so only shape (and sound)
    tell the classes apart. ``clutter`` static discs (radius ``CLUTTER_RADIUS`` of the short
    side, colour drawn from the whole palette, anywhere in the frame) are drawn from their own
    random stream, so objects, sound and background do not change with their number.
    ``variant`` picks the classes and object sizes (:data:`VARIANTS`); ``classes`` defaults to
    the variant's. Cheap (no rendering), so meta rows of videos already on disk are recomputed
    rather than read back.
    """
    var = get_variant(variant)
    palette = var.classes
    classes = var.default_classes if classes is None else classes
    vseed = video_seed(seed, index)
    rng = np.random.default_rng([vseed, 0])
    label = index % classes
    width, height = size
    n = max(1, round(duration * fps))
    lo, hi = distractors
    k = min(int(rng.integers(lo, hi + 1)), classes - 1)
    others = [c for c in range(classes) if c != label]
    labels = [label] + [int(c) for c in rng.choice(others, size=k, replace=False)]
    sides = [max(4, round(rng.uniform(*var.size_range) * min(width, height))) for _ in labels]
    # each canvas is side+1 px (room for the sub-pixel shift) and stays inside the frame
    half = np.array([[(s + 1) / 2 / width, (s + 1) / 2 / height] for s in sides])
    centres, speeds = _trajectories(rng, n, fps, half)
    objects = []
    q = SUPERSAMPLE
    for c, side, h, centre, speed in zip(labels, sides, half, centres, speeds):
        xy = np.round((centre - h) * (width, height) * q) / q  # canvas top-left, pixels
        ex = _mask_extent(palette[c].shape, side)
        xyxy = np.concatenate([xy + ex[:2], xy + ex[2:]], 1) / (width, height, width, height)
        jitter = rng.integers(-10, 11, 3)
        base = palette[c].rgb if colour_by_class else palette[int(rng.integers(len(palette)))].rgb
        rgb = tuple(int(v) for v in np.clip(np.array(base) + jitter, 0, 255))
        objects.append(ObjectTrack(c, side, rgb, xy, np.clip(xyxy, 0, 1), speed))
    order = [int(i) for i in rng.permutation(len(objects))]
    pitch = float(1 + rng.uniform(-PITCH_JITTER, PITCH_JITTER))
    crng = np.random.default_rng([vseed, 3])
    discs = np.zeros((clutter, 6))
    for row in discs:
        y, x = crng.uniform(0, height), crng.uniform(0, width)
        r = crng.uniform(*CLUTTER_RADIUS) * min(width, height)
        row[:] = (x, y, r, *palette[int(crng.integers(len(palette)))].rgb)
    return VideoPlan(index=index, seed=vseed, label=label, name=video_name(index, label),
                     num_frames=n, fps=fps, width=width, height=height,
                     sample_rate=sample_rate, num_samples=round(duration * sample_rate),
                     pitch=pitch, objects=objects, draw_order=order, clutter=discs,
                     variant=variant)


# --- rendering -----------------------------------------------------------------------------------


def _alpha_variants(shape: str, side: int) -> np.ndarray:
    """Anti-aliased alpha masks (q, q, side+1, side+1) float32 for each quarter-pixel offset."""
    q = SUPERSAMPLE
    hr = shape_mask(shape, side * q).astype(np.float32)
    out = np.zeros((q, q, side + 1, side + 1), np.float32)
    for dy in range(q):
        for dx in range(q):
            canvas = np.zeros(((side + 1) * q, (side + 1) * q), np.float32)
            canvas[dy:dy + side * q, dx:dx + side * q] = hr
            out[dy, dx] = canvas.reshape(side + 1, q, side + 1, q).mean((1, 3))
    return out


def _upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of (h, w, C) to (height, width, C) with two small matrices."""

    def interp_matrix(n_out: int, n_in: int) -> np.ndarray:
        x = (np.arange(n_out) + 0.5) / n_out * (n_in - 1)
        m = np.zeros((n_out, n_in))
        i0 = np.floor(x).astype(int).clip(0, n_in - 2)
        w = x - i0
        m[np.arange(n_out), i0] = 1 - w
        m[np.arange(n_out), i0 + 1] = w
        return m

    ay, ax = interp_matrix(height, grid.shape[0]), interp_matrix(width, grid.shape[1])
    return np.einsum("yh,hwc,xw->yxc", ay, grid, ax)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Static low-saturation textured background (H, W, 3) float32, values ~50-150."""
    base = rng.uniform(70, 120) + rng.uniform(-8, 8, 3)
    coarse = _upsample(rng.normal(0, 14, (6, 6, 1)), height, width)
    fine = _upsample(rng.normal(0, 6, (24, 24, 1)), height, width)
    return (base + coarse + fine).astype(np.float32)


def _background_patterned(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Coloured, textured background (H, W, 3) float32 (variant "b"): two random colours blended
    by a random pattern (soft stripes at any angle, a checkerboard or blobs), a colour gradient,
    coarse colour noise and fine pixel noise. The colours may come close to an object's."""
    c1, c2 = rng.uniform(20, 235, 3), rng.uniform(20, 235, 3)
    yy, xx = (np.mgrid[0:height, 0:width] + 0.5) / max(height, width)
    kind = int(rng.integers(3))
    if kind == 0:
        angle, period = rng.uniform(0, np.pi), rng.uniform(0.08, 0.3)
        m = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period
                               + rng.uniform(0, 2 * np.pi))
    elif kind == 1:
        p = rng.uniform(0.06, 0.2)
        m = ((np.floor(xx / p) + np.floor(yy / p)) % 2).astype(np.float64)
    else:
        m = 1 / (1 + np.exp(-3 * _upsample(rng.normal(0, 1, (5, 5, 1)), height, width)[..., 0]))
    img = c1 + m[..., None] * (c2 - c1)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = xx * np.cos(angle) + yy * np.sin(angle) - 0.5
    img = img + ramp[..., None] * rng.uniform(-60, 60, 3)
    img = img + _upsample(rng.normal(0, 12, (12, 12, 3)), height, width)
    img = img + rng.normal(0, 6, (height, width, 3))
    return np.clip(img, 0, 255).astype(np.float32)


def _paint_discs(image: np.ndarray, discs: np.ndarray) -> np.ndarray:
    """``image`` (H, W, 3) float with anti-aliased discs (K, 6) painted over it, in order."""
    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    for x, y, r, *rgb in discs:
        alpha = np.clip(r + 0.5 - np.hypot(xx - x, yy - y), 0, 1)[..., None]
        image = image + alpha * (np.asarray(rgb, np.float32) - image)
    return image.astype(np.float32)


def iter_frames(plan: VideoPlan) -> Iterator[np.ndarray]:
    """Yield the plan's frames, each uint8 (H, W, 3) RGB; deterministic for the plan's seed."""
    var = get_variant(plan.variant)
    rng = np.random.default_rng([plan.seed, 1])
    h, w = plan.height, plan.width
    background = _background if var.background == "grey" else _background_patterned
    bg = _paint_discs(background(rng, h, w), plan.clutter)
    # a bank, drawn per frame
    noise = rng.normal(0, var.frame_noise, (8, h, w, 3)).astype(np.float32)
    picks = rng.integers(0, len(noise), plan.num_frames)
    alphas = [_alpha_variants(var.classes[o.label].shape, o.side) for o in plan.objects]
    q = SUPERSAMPLE
    for t in range(plan.num_frames):
        frame = bg + noise[picks[t]]
        for i in plan.draw_order:
            o = plan.objects[i]
            x, y = o.xy[t]
            ix, iy = math.floor(x), math.floor(y)
            a = alphas[i][round((y - iy) * q) % q, round((x - ix) * q) % q][..., None]
            region = frame[iy:iy + o.side + 1, ix:ix + o.side + 1]
            region += a * (np.asarray(o.rgb, np.float32) - region)
        yield np.clip(frame, 0, 255).astype(np.uint8)


def render_frames(plan: VideoPlan) -> np.ndarray:
    """All frames as uint8 (T, H, W, 3)."""
    return np.stack(list(iter_frames(plan)))


def _band_noise(rng: np.random.Generator, n: int, sr: int, lo: float, hi: float) -> np.ndarray:
    spec = np.fft.rfft(rng.normal(0, 1, n))
    f = np.fft.rfftfreq(n, 1 / sr)
    spec[(f < lo) | (f > hi)] = 0
    return np.fft.irfft(spec, n)


def _class_sound(spec: ClassSpec, rng: np.random.Generator, n: int, sr: int, pitch: float
                 ) -> np.ndarray:
    """The class's steady sound (n,) float64 with unit RMS, pitch scaled by ``pitch``."""
    s = spec.sound
    t = np.arange(n) / sr
    nyq = 0.45 * sr
    kind = s["kind"]
    if kind in ("harmonic", "odd", "inharmonic"):
        f0 = s["f0"] * pitch
        if kind == "harmonic":
            ratios = np.arange(1, len(s["amps"]) + 1)
        elif kind == "odd":
            ratios = np.arange(1, 2 * len(s["amps"]), 2)
        else:
            ratios = np.asarray(s["ratios"])
        y = np.zeros(n)
        for r, a in zip(ratios, s["amps"]):
            if r * f0 < nyq:
                y += a * np.sin(2 * np.pi * r * f0 * t + rng.uniform(0, 2 * np.pi))
    elif kind == "noise":
        y = _band_noise(rng, n, sr, s["lo"] * pitch, min(s["hi"] * pitch, nyq))
    elif kind == "chirp":
        saw = (t * s["rate"] + rng.uniform()) % 1.0
        freq = s["lo"] * pitch * (s["hi"] / s["lo"]) ** saw  # exponential sweep, then reset
        phase = 2 * np.pi * np.cumsum(freq) / sr
        y = np.sin(phase) + 0.3 * np.sin(2 * phase)
    elif kind == "am":
        gate = 0.5 + 0.5 * np.cos(2 * np.pi * s["rate"] * t + rng.uniform(0, 2 * np.pi))
        y = gate ** 2 * np.sin(2 * np.pi * s["f0"] * pitch * t + rng.uniform(0, 2 * np.pi))
    else:
        raise ValueError(f"unknown sound kind {kind!r}")
    return y / max(float(np.sqrt(np.mean(y ** 2))), 1e-8)


def loudness(speed: np.ndarray) -> np.ndarray:
    """Loudness envelope (relative amplitude in [LOUDNESS_FLOOR, 1]) for a speed (fractions/s)."""
    return LOUDNESS_FLOOR + (1 - LOUDNESS_FLOOR) * np.clip(speed / V_MAX, 0, 1)


def render_audio(plan: VideoPlan) -> np.ndarray:
    """Mono audio (S,) float32 in [-1, 1]: the sounding object's class sound, its loudness
    following that object's speed (sample s plays at s / sample_rate s, frame t at t / fps),
    plus light white noise."""
    rng = np.random.default_rng([plan.seed, 2])
    n, sr = plan.num_samples, plan.sample_rate
    src = plan.objects[0]
    y = _class_sound(get_variant(plan.variant).classes[src.label], rng, n, sr, plan.pitch)
    env_t = np.arange(plan.num_frames) / plan.fps
    env = np.interp(np.arange(n) / sr, env_t, loudness(_smooth(src.speed, 1.0)))
    audio = 0.2 * env * y + rng.normal(0, 0.004, n)
    return np.clip(audio, -1, 1).astype(np.float32)


def render_video(plan: VideoPlan) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 (T, H, W, 3) and audio float32 (S,) of a plan."""
    return render_frames(plan), render_audio(plan)


# --- the dataset --------------------------------------------------------------------------------


def stratified_split(labels: list[int], classes: int, test_fraction: float, seed: int
                     ) -> list[str]:
    """``"train"``/``"test"`` per item: in each class, ``round(n * test_fraction)`` items
    (at least one, and never all, of a class with two or more) go to test; deterministic."""
    split = ["train"] * len(labels)
    rng = np.random.default_rng([seed, 0x5EED])
    for c in range(classes):
        idx = [i for i, lab in enumerate(labels) if lab == c]
        n_test = round(len(idx) * test_fraction)
        if test_fraction > 0 and len(idx) >= 2:  # at least one of each, when there are two
            n_test = min(max(n_test, 1), len(idx) - 1)
        for j in rng.permutation(len(idx))[:n_test]:
            split[idx[j]] = "test"
    return split


def _meta_row(plan: VideoPlan, split: str) -> dict[str, Any]:
    boxes = [[round(float(v), 4) for v in box] for box in plan.objects[0].xyxy]
    return {"path": f"videos/{plan.name}.mp4", "label": plan.label,
            "class_name": get_variant(plan.variant).classes[plan.label].name, "split": split,
            "boxes": {"fps": plan.fps, "xyxy": boxes}, "seed": plan.seed,
            "labels_in_view": [o.label for o in plan.objects]}


def _write_one(dst: str, index: int, params: dict[str, Any]) -> tuple[int, float]:
    """Render and encode one video (skipped when it exists); returns (index, seconds)."""
    from avssl.data.writer import write_av

    t0 = time.perf_counter()
    plan = plan_video(index, **params)
    path = Path(dst) / "videos" / f"{plan.name}.mp4"
    if not path.exists():
        write_av(path, iter_frames(plan), plan.fps, render_audio(plan), plan.sample_rate)
    return index, time.perf_counter() - t0


def _check(num_videos: int, classes: int, duration: float, fps: float, size: tuple[int, int],
           sample_rate: int, test_fraction: float, distractors: tuple[int, int],
           clutter: int = 0, variant: str = "a") -> None:
    n_max = len(get_variant(variant).classes)
    if not 2 <= classes <= n_max:
        raise ValueError(f"classes must be between 2 and {n_max} (variant {variant}), "
                         f"got {classes}")
    if num_videos < classes:
        raise ValueError(f"num_videos ({num_videos}) must be at least classes ({classes})")
    if duration <= 0 or fps <= 0 or round(duration * fps) < 2:
        raise ValueError(f"duration ({duration} s) at fps ({fps}) must give at least 2 frames")
    w, h = size
    if w < 32 or h < 32 or w % 2 or h % 2:
        raise ValueError(f"size must be even and at least 32x32 pixels, got {w}x{h}")
    if sample_rate < MIN_SAMPLE_RATE:
        raise ValueError(f"sample_rate must be at least {MIN_SAMPLE_RATE}, got {sample_rate}")
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    lo, hi = distractors
    if not 0 <= lo <= hi:
        raise ValueError(f"distractors must be a range (lo, hi) with 0 <= lo <= hi, got "
                         f"{distractors}")
    if clutter < 0:
        raise ValueError(f"clutter must be >= 0 discs, got {clutter}")


def make_synthetic(dst: str | Path, num_videos: int = 200, classes: int | None = None,
                   seed: int = 0, duration: float = 4.0, fps: float = 25.0,
                   size: tuple[int, int] = (128, 128), sample_rate: int = 32000,
                   test_fraction: float = 0.2, distractors: tuple[int, int] = (1, 2),
                   colour_by_class: bool = True, clutter: int = 0, variant: str = "a",
                   workers: int = 1, progress: bool = True) -> Path:
    """Generate the dataset into ``dst`` (see the module docstring) and return ``dst``.

    ``size`` is (width, height) in pixels, ``duration`` seconds, ``distractors`` the inclusive
    range of silent objects per video, ``colour_by_class``, ``clutter`` and ``variant`` see
    :func:`plan_video` (``classes`` defaults to the variant's: 4 for "a", 6 for "b"). Videos
    already in ``dst/videos`` are kept (the writer is atomic, so a file there is complete); a
    ``dst`` made with other settings raises ValueError.
    """
    var = get_variant(variant)
    classes = var.default_classes if classes is None else int(classes)
    size = (int(size[0]), int(size[1]))
    distractors = (int(distractors[0]), int(distractors[1]))
    _check(num_videos, classes, duration, fps, size, sample_rate, test_fraction, distractors,
           clutter, variant)
    dst = Path(dst)
    params = {"seed": seed, "classes": classes, "duration": duration, "fps": fps,
              "size": size, "sample_rate": sample_rate, "distractors": distractors,
              "colour_by_class": bool(colour_by_class), "clutter": int(clutter),
              "variant": variant}
    settings = {**params, "size": list(size), "distractors": list(distractors),
                "num_videos": num_videos, "test_fraction": test_fraction}
    gen_file = dst / "generator.json"
    if gen_file.is_file():
        # keys added later default to what older files were made with
        old = {"colour_by_class": True, "clutter": 0, "variant": "a",
               **json.loads(gen_file.read_text())}
        if old != settings:
            diff = sorted(k for k in settings.keys() | old.keys() if old.get(k) != settings.get(k))
            raise ValueError(f"{dst} holds a synthetic dataset made with other settings "
                             f"({', '.join(diff)} differ); use another folder")
    else:
        dst.mkdir(parents=True, exist_ok=True)
        atomic_write_json(gen_file, settings)

    from tqdm import tqdm

    todo = list(range(num_videos))
    seconds: list[float] = []
    with tqdm(total=num_videos, desc="make-synthetic", unit="video", disable=not progress) as bar:
        if workers <= 1:
            for i in todo:
                seconds.append(_write_one(str(dst), i, params)[1])
                bar.update()
        else:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(_write_one, str(dst), i, params) for i in todo]
                for fut in as_completed(futures):
                    seconds.append(fut.result()[1])
                    bar.update()

    plans = [plan_video(i, **params) for i in range(num_videos)]
    splits = stratified_split([p.label for p in plans], classes, test_fraction, seed)
    atomic_write_jsonl(dst / "meta.jsonl", (_meta_row(p, s) for p, s in zip(plans, splits)))
    atomic_write_json(dst / "classes.json", [
        {"index": i, "name": c.name, "shape": c.shape, "colour": c.colour, "rgb": list(c.rgb),
         "sound": c.description, "sound_params": c.sound}
        for i, c in enumerate(var.classes[:classes])])
    return dst


# --- command line ---------------------------------------------------------------------------------


def _parse_size(text: str) -> tuple[int, int]:
    """``"128"`` -> (128, 128); ``"160x120"`` -> (160, 120) (width x height)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise ValueError(f"--size must be N or WxH, got {text!r}")
    return parts[0], parts[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``avssl make-synthetic`` (also used by tools/make_synthetic.py)."""
    parser.add_argument("dst", help="output folder (videos/, meta.jsonl, classes.json)")
    parser.add_argument("--num-videos", type=int, default=200, help="(default: %(default)s)")
    parser.add_argument("--classes", type=int, default=None,
                        help=f"2..{MAX_CLASSES} for variant a (default 4), 2..{len(CLASSES_B)} "
                             f"for variant b (default {len(CLASSES_B)})")
    parser.add_argument("--variant", default="a", choices=sorted(VARIANTS),
                        help="generator variant: a (the demo's data) or b (other shapes, "
                             "sizes, colours, sounds and patterned coloured backgrounds; default: "
                             "%(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    parser.add_argument("--duration", type=float, default=4.0,
                        help="seconds per video (default: %(default)s)")
    parser.add_argument("--fps", type=float, default=25.0, help="(default: %(default)s)")
    parser.add_argument("--size", default="128",
                        help="frame size, N or WxH pixels (default: %(default)s)")
    parser.add_argument("--sample-rate", type=int, default=32000,
                        help="audio samples per second (default: %(default)s)")
    parser.add_argument("--test-fraction", type=float, default=0.2,
                        help="share of videos in the test split (default: %(default)s)")
    parser.add_argument("--random-colours", action="store_true",
                        help="colour objects independently of their class (shape and sound "
                             "remain class-specific)")
    parser.add_argument("--clutter", type=int, default=0,
                        help="static silent discs in the palette's colours scattered over the "
                             "background (colour alone then tells little about the class; "
                             "default: %(default)s)")
    parser.add_argument("--workers", type=int, default=max(1, min(8, os.cpu_count() or 1)),
                        help="processes (default: the CPU count, at most 8: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``make-synthetic``; bad arguments print one line and return 2."""
    t0 = time.perf_counter()
    try:
        size = _parse_size(args.size)
        dst = make_synthetic(args.dst, num_videos=args.num_videos, classes=args.classes,
                             seed=args.seed, duration=args.duration, fps=args.fps, size=size,
                             sample_rate=args.sample_rate, test_fraction=args.test_fraction,
                             colour_by_class=not args.random_colours, clutter=args.clutter,
                             variant=args.variant, workers=args.workers,
                             progress=not args.no_progress)
    except ValueError as e:
        print(f"avssl make-synthetic: error: {e}", file=sys.stderr)
        return 2
    dt = time.perf_counter() - t0
    print(f"wrote {args.num_videos} videos to {dst} in {dt:.1f} s "
          f"({dt / max(args.num_videos, 1):.2f} s/video with {args.workers} worker(s))")
    return 0
