"""`avssl audio-manifest`: manifests for the audio benchmarks from their official layouts.

The audio evaluation (:mod:`avssl.eval.audio_eval`) reads rows with ``audio_path`` (relative to
the manifest's folder, or absolute), ``label`` and, for cross-validation, ``fold``; a single
train/test setup uses ``split`` instead. Nothing is re-encoded: the audio is read and resampled
at evaluation time.

- **ESC-50** (Piczak 2015): ``meta/esc50.csv`` (filename, fold 1-5, target, category, ...) and
  ``audio/<filename>``. Rows: ``label`` = target, ``category``, ``fold``.
- **DCASE acoustic scenes** (2016-2020 task 1 development sets): ``evaluation_setup/`` holds
  ``fold<K>_train`` and ``fold<K>_evaluate`` lists (``.txt`` or ``.csv``; tab-separated
  ``filename  scene_label``, header line optional), with paths relative to the dataset root.
  When every listed file is evaluated in exactly one fold (2016/2017: 4-fold cross-validation)
  the rows get ``fold`` = that fold; otherwise (2018-2020: one fold1 train/evaluate split) they
  get ``split`` = ``train`` / ``test`` from fold 1, and ``configs/eval/dcase.yaml`` evaluates
  that one split. Without ``evaluation_setup/``, ``train.txt`` and ``test.txt`` at the root
  (``filename label`` per line; the DCASE 2014 scenes as the AVID-CMA code reads them) give the
  same one split.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import sys
from pathlib import Path
from typing import Any

from avssl.utils.atomic import atomic_write_jsonl

LAYOUTS = ("esc50", "dcase")


class AudioLayoutError(ValueError):
    """The folder does not have the layout asked for (the message says what is missing)."""


def _rel(path: Path, out_dir: Path) -> str:
    """``path`` relative to the manifest's folder (absolute when on another drive)."""
    try:
        return os.path.relpath(path.resolve(), out_dir.resolve())
    except ValueError:
        return str(path.resolve())


def esc50_rows(root: str | Path, out_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of ESC-50 from ``root/meta/esc50.csv``; every audio file must exist."""
    root, out_dir = Path(root), Path(out_dir)
    meta = root / "meta" / "esc50.csv"
    if not meta.is_file():
        raise AudioLayoutError(f"{meta}: not found (ESC-50 layout: meta/esc50.csv, audio/*.wav)")
    rows = []
    with meta.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"filename", "fold", "target"} - set(reader.fieldnames or ())
        if missing:
            raise AudioLayoutError(f"{meta}: columns {sorted(missing)} missing")
        for lineno, r in enumerate(reader, 2):
            audio = root / "audio" / r["filename"]
            if not audio.is_file():
                raise AudioLayoutError(f"{meta}:{lineno}: {audio} not found")
            rows.append({"id": Path(r["filename"]).stem, "audio_path": _rel(audio, out_dir),
                         "label": int(r["target"]), "category": r.get("category"),
                         "fold": int(r["fold"])})
    return sorted(rows, key=lambda r: r["id"])


_FOLD_FILE = re.compile(r"^fold(\d+)_(train|evaluate)\.(txt|csv)$")


def _read_list(path: Path) -> list[tuple[str, str | None]]:
    """(filename, label or None) per line of a DCASE list; a header line is skipped."""
    out = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.strip().split("\t") if "\t" in line else line.split()
        if not parts or not parts[0]:
            continue
        if lineno == 1 and parts[0] == "filename":
            continue
        out.append((parts[0], parts[1] if len(parts) > 1 and parts[1] else None))
    return out


def dcase_rows(root: str | Path, out_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of a DCASE scene-classification development set (see the module docstring)."""
    root, out_dir = Path(root), Path(out_dir)
    setup = root / "evaluation_setup"
    if not setup.is_dir() and (root / "train.txt").is_file() and (root / "test.txt").is_file():
        return _split_list_rows(root, out_dir)
    if not setup.is_dir():
        raise AudioLayoutError(f"{setup}: not found (DCASE layout: evaluation_setup/"
                               f"fold<K>_train.txt and fold<K>_evaluate.txt, or train.txt and "
                               f"test.txt in {root})")
    lists: dict[int, dict[str, list[tuple[str, str | None]]]] = {}
    for p in sorted(setup.iterdir()):
        m = _FOLD_FILE.match(p.name)
        if m:
            lists.setdefault(int(m.group(1)), {})[m.group(2)] = _read_list(p)
    folds = sorted(k for k, v in lists.items() if {"train", "evaluate"} <= set(v))
    if not folds:
        raise AudioLayoutError(f"{setup}: no fold<K>_train + fold<K>_evaluate pair")
    labels: dict[str, str] = {}
    test_folds: dict[str, list[int]] = {}
    for k in folds:
        for part in ("train", "evaluate"):
            for name, label in lists[k][part]:
                if label is None:
                    raise AudioLayoutError(f"{setup}/fold{k}_{part}: {name} has no label")
                if labels.setdefault(name, label) != label:
                    raise AudioLayoutError(f"{setup}: {name} labelled both {labels[name]!r} "
                                           f"and {label!r}")
                if part == "evaluate":
                    test_folds.setdefault(name, []).append(k)
    cross_validation = len(folds) > 1 and all(len(test_folds.get(n, [])) == 1 for n in labels)
    train1 = {n for n, _ in lists[folds[0]]["train"]}
    rows = []
    for name in sorted(labels):
        audio = root / name
        if not audio.is_file():
            raise AudioLayoutError(f"{setup}: listed file {audio} not found")
        row: dict[str, Any] = {"id": Path(name).stem, "audio_path": _rel(audio, out_dir),
                               "label": labels[name]}
        if cross_validation:
            row["fold"] = test_folds[name][0]
        else:
            row["split"] = "train" if name in train1 else "test"
        rows.append(row)
    if not cross_validation:  # files outside fold 1's lists are not part of the setup
        rows = [r for r, n in zip(rows, sorted(labels))
                if n in train1 or folds[0] in test_folds.get(n, [])]
    return rows


def _split_list_rows(root: Path, out_dir: Path) -> list[dict[str, Any]]:
    """``root/train.txt`` + ``root/test.txt`` (``filename label``) -> rows with ``split``."""
    rows = []
    for split in ("train", "test"):
        lst = root / f"{split}.txt"
        for name, label in _read_list(lst):
            audio = root / name
            if label is None:
                raise AudioLayoutError(f"{lst}: {name} has no label")
            if not audio.is_file():
                raise AudioLayoutError(f"{lst}: listed file {audio} not found")
            rows.append({"id": Path(name).stem, "audio_path": _rel(audio, out_dir),
                         "label": label, "split": split})
    return rows


def write_audio_manifest(layout: str, root: str | Path, out: str | Path) -> list[dict[str, Any]]:
    """Build the rows of ``layout`` under ``root`` and write them to ``out`` atomically."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    builder = {"esc50": esc50_rows, "dcase": dcase_rows}[layout]
    rows = builder(root, out.parent)
    atomic_write_jsonl(out, rows)
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("layout", choices=LAYOUTS, help="dataset layout")
    parser.add_argument("root", help="the dataset's folder (as distributed)")
    parser.add_argument("--out", required=True, help="manifest to write (JSON lines)")


def run(args: argparse.Namespace) -> int:
    try:
        rows = write_audio_manifest(args.layout, args.root, args.out)
    except AudioLayoutError as e:
        print(f"avssl audio-manifest: error: {e}", file=sys.stderr)
        return 2
    how = ("folds " + ", ".join(str(f) for f in sorted({r["fold"] for r in rows}))
           if "fold" in rows[0] else "one train/test split")
    print(f"{len(rows)} clips, {len({r['label'] for r in rows})} classes, {how} -> {args.out}")
    return 0
