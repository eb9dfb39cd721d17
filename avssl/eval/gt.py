"""Ground-truth maps for sound-source localization: Flickr-SoundNet, VGG-SS, synthetic tracks.

Boxes are carried normalized to [0, 1] as ``[x0, y0, x1, y1]`` and rasterized onto any grid
(224 x 224 for the benchmarks) with the reference evaluators' rounding: pixel edges
``int(v * size)``, rows ``y0:y1`` and columns ``x0:x1`` filled (end exclusive).

- **Flickr-SoundNet** (Senocak et al. 2018): one XML file per image, boxes of 3 annotators in
  the pixel coordinates of the 256 x 256 SoundNet image (LVS/EZ-VSL scale by 224 / 256). The map
  is the sum of every annotator box / 2, clipped at 1: a pixel inside one box counts 0.5, inside
  two or more 1 (consensus).
- **VGG-SS** (Chen et al. 2021): a JSON list ``[{"file": ..., "bbox": [[x0, y0, x1, y1], ...]}]``
  on the middle frame. The released boxes are normalized to [0, 1] (EZ-VSL/SLAVC load them as
  ``clip(bbox, 0, 1) * 224``); pixel boxes are accepted with ``normalized=False`` and the image
  size. The map is the union of the boxes.
- **Synthetic** (:mod:`avssl.data.synthetic`): a manifest/meta row's ``boxes = {"fps", "xyxy"}``,
  one normalized box of the sounding object per source frame; the map at time ``t`` is that
  frame's box.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avssl.utils.jsonl import iter_jsonl

GT_SIZE = 224
FLICKR_IMAGE_SIZE = (256, 256)  # (width, height) of the Flickr-SoundNet test images
COMBINE = ("consensus", "union")

Box = list[float]  # normalized [x0, y0, x1, y1]


class GroundTruthError(ValueError):
    """An annotation file that cannot be read (message names the file)."""


# ----------------------------------------------------------------------------------------------
# Rasterization
# ----------------------------------------------------------------------------------------------
def box_to_pixels(box: Sequence[float], height: int, width: int) -> tuple[int, int, int, int]:
    """Normalized ``[x0, y0, x1, y1]`` -> integer pixel edges on an (H, W) grid, clipped.

    ``int(v * size)`` as the reference loaders (a tiny epsilon keeps 0.5 * 224 at 112 despite
    float rounding).
    """
    x0, y0, x1, y1 = (float(v) for v in box)

    def px(v: float, n: int) -> int:
        return min(max(math.floor(v * n + 1e-6), 0), n)

    return px(x0, width), px(y0, height), px(x1, width), px(y1, height)


def boxes_map(boxes: Iterable[Sequence[float]], height: int = GT_SIZE, width: int = GT_SIZE,
              combine: str = "union") -> np.ndarray:
    """float64 (H, W) map of normalized boxes.

    ``combine="union"``: 1 inside any box (VGG-SS, synthetic). ``"consensus"``: the number of
    boxes covering a pixel / 2, clipped at 1 (Flickr-SoundNet's 3 annotators).
    """
    if combine not in COMBINE:
        raise ValueError(f"combine must be one of {list(COMBINE)}, got {combine!r}")
    count = np.zeros((height, width))
    for box in boxes:
        x0, y0, x1, y1 = box_to_pixels(box, height, width)
        count[y0:y1, x0:x1] += 1
    if combine == "consensus":
        return np.minimum(count / 2, 1.0)
    return (count > 0).astype(np.float64)


# ----------------------------------------------------------------------------------------------
# Flickr-SoundNet
# ----------------------------------------------------------------------------------------------
def _xml_root(source: str | Path) -> tuple[ET.Element, str]:
    text = str(source)
    if text.lstrip().startswith("<"):
        name = "<xml text>"
    else:
        path = Path(source)
        name = str(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise GroundTruthError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return ET.fromstring(text), name
    except ET.ParseError as e:
        raise GroundTruthError(f"{name}: not valid XML ({e})") from None


def _number(el: ET.Element | None) -> float | None:
    if el is None or el.text is None:
        return None
    try:
        return float(el.text.strip())
    except ValueError:
        return None


def parse_flickr_xml(source: str | Path,
                     image_size: tuple[int, int] | None = None) -> list[Box]:
    """Annotator boxes of one Flickr-SoundNet XML file (path or XML text), normalized.

    Every ``<bbox>`` or ``<bndbox>`` element is a box: its ``xmin``, ``ymin``, ``xmax``,
    ``ymax`` children by name, else its last four numeric children in that order (the released
    files put an annotator field first, which LVS/EZ-VSL skip by position). Coordinates are
    divided by the image size: ``<size><width>/<height>`` when the file has one, else
    ``image_size`` (width, height), else 256 x 256 (the SoundNet images).
    """
    root, name = _xml_root(source)
    w, h = image_size or FLICKR_IMAGE_SIZE
    size = root.find(".//size")
    if size is not None:
        sw, sh = _number(size.find("width")), _number(size.find("height"))
        if sw and sh:
            w, h = sw, sh
    boxes: list[Box] = []
    for el in root.iter():
        if el.tag not in ("bbox", "bndbox"):
            continue
        named = [_number(el.find(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        if all(v is not None for v in named):
            vals = named
        else:
            nums = [v for v in (_number(c) for c in el) if v is not None]
            if len(nums) < 4:
                raise GroundTruthError(f"{name}: <{el.tag}> without 4 coordinates")
            vals = nums[-4:]
        x0, y0, x1, y1 = (float(v) for v in vals)  # type: ignore[arg-type]
        boxes.append([x0 / w, y0 / h, x1 / w, y1 / h])
    if not boxes:
        raise GroundTruthError(f"{name}: no <bbox>/<bndbox> element")
    return boxes


def flickr_gt_map(source: str | Path, size: int = GT_SIZE,
                  image_size: tuple[int, int] | None = None) -> np.ndarray:
    """Flickr-SoundNet ground truth (size, size): annotator boxes summed / 2, clipped at 1."""
    return boxes_map(parse_flickr_xml(source, image_size), size, size, "consensus")


# ----------------------------------------------------------------------------------------------
# VGG-SS
# ----------------------------------------------------------------------------------------------
def parse_vggss_json(source: str | Path | list[dict[str, Any]], normalized: bool = True,
                     image_size: tuple[int, int] | None = None) -> dict[str, list[Box]]:
    """VGG-SS annotations ``[{"file": ..., "bbox": [[x0, y0, x1, y1], ...]}]`` -> ``{file: boxes}``
    with normalized boxes.

    ``normalized=True`` (the released file): coordinates in [0, 1], clipped as EZ-VSL does.
    ``normalized=False``: pixel coordinates, divided by ``image_size`` (width, height), which is
    then required. Keys are the ``file`` values without a file extension.
    """
    name = "<json>"
    if isinstance(source, list):
        data: Any = source
    else:
        text = str(source)
        if not text.lstrip().startswith("["):
            name = text
            try:
                text = Path(source).read_text()
            except OSError as e:
                raise GroundTruthError(f"{name}: cannot read ({e.strerror or e})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise GroundTruthError(f"{name}: not valid JSON ({e.msg})") from None
    if not isinstance(data, list):
        raise GroundTruthError(f"{name}: expected a list of {{'file', 'bbox'}} entries")
    if not normalized and image_size is None:
        raise ValueError("pixel VGG-SS boxes (normalized=False) need image_size=(width, height)")
    out: dict[str, list[Box]] = {}
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or "file" not in entry or "bbox" not in entry:
            raise GroundTruthError(f"{name}: entry {i} lacks 'file' or 'bbox'")
        boxes = []
        for b in entry["bbox"]:
            if len(b) != 4:
                raise GroundTruthError(f"{name}: entry {i}: a box needs 4 numbers, got {b}")
            if normalized:
                boxes.append([min(max(float(v), 0.0), 1.0) for v in b])
            else:
                w, h = image_size  # type: ignore[misc]
                boxes.append([float(b[0]) / w, float(b[1]) / h, float(b[2]) / w,
                              float(b[3]) / h])
        out[_key(entry["file"])] = boxes
    return out


def vggss_gt_map(boxes: Iterable[Sequence[float]], size: int = GT_SIZE) -> np.ndarray:
    """VGG-SS ground truth (size, size): union of normalized boxes."""
    return boxes_map(boxes, size, size, "union")


# ----------------------------------------------------------------------------------------------
# Synthetic / per-frame tracks
# ----------------------------------------------------------------------------------------------
def track_frame(boxes_field: dict[str, Any], t: float) -> int:
    """Source frame index shown at time ``t`` (s) of a ``{"fps", "xyxy"}`` track, clamped."""
    n = len(boxes_field["xyxy"])
    return min(max(math.floor(float(t) * float(boxes_field["fps"]) + 1e-6), 0), n - 1)


def synthetic_gt_map(boxes_field: dict[str, Any], t: float, height: int = GT_SIZE,
                     width: int = GT_SIZE) -> np.ndarray:
    """Binary (H, W) map of the sounding object's box at time ``t`` from a manifest row's
    ``boxes = {"fps": ..., "xyxy": [[x0, y0, x1, y1] per frame, normalized]}``."""
    box = boxes_field["xyxy"][track_frame(boxes_field, t)]
    return boxes_map([box], height, width, "union")


@dataclass
class BoxAnnotation:
    """Ground truth of one video or image.

    ``frames``: per annotated frame, a list of normalized boxes. ``fps``: frame rate of a track
    (frame k shown from k / fps), or None for one static annotation, which applies to the
    middle frame of a video (VGG-SS's convention; a Flickr image is its own middle frame).
    ``combine``: "consensus" (Flickr) or "union".
    """

    frames: list[list[Box]]
    fps: float | None = None
    combine: str = "union"
    source: str = "track"

    @property
    def static(self) -> bool:
        """One annotation for the middle frame (no per-frame track)."""
        return self.fps is None

    def boxes_at(self, t: float) -> list[Box]:
        if self.fps is None:
            return self.frames[0]
        k = min(max(math.floor(float(t) * self.fps + 1e-6), 0), len(self.frames) - 1)
        return self.frames[k]

    def map_at(self, t: float, height: int = GT_SIZE, width: int = GT_SIZE) -> np.ndarray:
        """float64 (H, W) ground-truth map at time ``t`` (ignored for static annotations)."""
        return boxes_map(self.boxes_at(t), height, width, self.combine)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> BoxAnnotation | None:
        """The track of a manifest/meta row's ``boxes`` field, or None when it has none."""
        b = row.get("boxes")
        if not b:
            return None
        if not isinstance(b, dict) or "fps" not in b or "xyxy" not in b:
            raise GroundTruthError(f"row {row.get('id', row.get('path'))!r}: 'boxes' must be "
                                   "{'fps': ..., 'xyxy': [[x0, y0, x1, y1], ...]}")
        return cls([[list(map(float, box))] for box in b["xyxy"]], float(b["fps"]), "union")


def _key(name: str) -> str:
    """Lookup key of a file name or id: the last path component without its extension."""
    stem = Path(str(name)).name
    return stem.rsplit(".", 1)[0] if "." in stem else stem


def load_boxes(path: str | Path, normalized: bool = True,
               image_size: tuple[int, int] | None = None) -> dict[str, BoxAnnotation]:
    """Read ground truth from any supported file, keyed by file stem (see :func:`find`).

    - a folder of ``*.xml`` or one ``.xml``: Flickr-SoundNet (consensus maps);
    - ``.json`` holding a list: VGG-SS (``normalized`` / ``image_size`` as
      :func:`parse_vggss_json`);
    - ``.json`` holding a dict: ours, ``{name: {"fps", "xyxy"}}`` (a track) or
      ``{name: [[x0, y0, x1, y1], ...]}`` (static, normalized, union);
    - ``.jsonl``: rows with ``boxes = {"fps", "xyxy"}`` (the synthetic ``meta.jsonl`` or a
      manifest), keyed by ``id`` and by the stem of ``path``.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.xml"))
        if not files:
            raise GroundTruthError(f"{path}: folder has no .xml annotation files")
        return {f.stem: BoxAnnotation([parse_flickr_xml(f, image_size)], None, "consensus",
                                      "flickr") for f in files}
    if not path.is_file():
        raise GroundTruthError(f"{path}: boxes file not found")
    suffix = path.suffix.lower()
    if suffix == ".xml":
        return {path.stem: BoxAnnotation([parse_flickr_xml(path, image_size)], None,
                                         "consensus", "flickr")}
    if suffix == ".jsonl":
        return _load_jsonl(path)
    if suffix != ".json":
        raise GroundTruthError(f"{path}: unknown boxes format (expected a folder of .xml, "
                               ".xml, .json or .jsonl)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise GroundTruthError(f"{path}: not valid JSON ({e.msg})") from None
    if isinstance(data, list):
        return {k: BoxAnnotation([v], None, "union", "vggss")
                for k, v in parse_vggss_json(data, normalized, image_size).items()}
    if not isinstance(data, dict):
        raise GroundTruthError(f"{path}: expected a list (VGG-SS) or a dict of boxes")
    out: dict[str, BoxAnnotation] = {}
    for name, value in data.items():
        if isinstance(value, dict):
            ann = BoxAnnotation.from_row({"id": name, "boxes": value})
        elif isinstance(value, list) and all(isinstance(b, list) and len(b) == 4 for b in value):
            ann = BoxAnnotation([[list(map(float, b)) for b in value]], None, "union", "static")
        else:
            raise GroundTruthError(f"{path}: {name!r}: expected {{'fps', 'xyxy'}} or a list of "
                                   "[x0, y0, x1, y1] boxes")
        if ann is not None:
            out[_key(name)] = ann
    return out


def _load_jsonl(path: Path) -> dict[str, BoxAnnotation]:
    out: dict[str, BoxAnnotation] = {}
    for lineno, row in iter_jsonl(path, GroundTruthError):
        try:
            ann = BoxAnnotation.from_row(row)
        except GroundTruthError as e:
            raise GroundTruthError(f"{path}:{lineno}: {e}") from None
        if ann is None:
            continue
        for k in (row.get("id"), row.get("path"), row.get("file")):
            if k:
                out[_key(k)] = ann
                out.setdefault(str(k), ann)
    return out


def find(annotations: dict[str, BoxAnnotation], *names: str | Path | None) -> BoxAnnotation | None:
    """The annotation of the first of ``names`` (ids, relative or absolute paths) found, by exact
    key, then by file stem."""
    for n in names:
        if n is None:
            continue
        for k in (str(n), _key(str(n))):
            if k in annotations:
                return annotations[k]
    return None


__all__ = [
    "FLICKR_IMAGE_SIZE", "GT_SIZE", "BoxAnnotation", "GroundTruthError", "box_to_pixels",
    "boxes_map", "find", "flickr_gt_map", "load_boxes", "parse_flickr_xml", "parse_vggss_json",
    "synthetic_gt_map", "track_frame", "vggss_gt_map",
]
