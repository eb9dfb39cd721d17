"""`avssl splits`: the official UCF-101 / HMDB-51 train/test splits as manifest columns.

The downstream configs (``configs/eval/ucf101.yaml``, ``hmdb51.yaml``) select rows by the
manifest's single ``split`` column (``train1`` / ``test1`` by default, ``train<K>`` /
``test<K>`` for official split K). A video is in the training set of one split and the test set
of another, so one manifest carries one split; splits 2 and 3 are manifests of their own, named
by ``manifest:`` in ``eval.splits`` (:class:`avssl.eval.common.SplitSpec`).

Two outputs, both written atomically:

- a **meta file** (default): ``{"path", "label", "split"}`` per listed video, ``path`` relative
  to the folder of the class folders (``UCF-101/``, HMDB-51's ``videos/``), which is the SRC of
  ``avssl preprocess SRC DST --meta FILE``; preprocessing copies ``label`` and ``split`` into
  the manifest rows (matched by that relative path, the same path the rows' ``id`` comes from).
- with ``--manifest PREPARED``: a copy of an already prepared manifest whose ``label`` and
  ``split`` are set from split K (rows matched by source path, else by ``id``); nothing is
  re-encoded, and ``path`` / ``audio_path`` are rewritten relative to the new file's folder.

Official formats: UCF-101 ``ucfTrainTestlist/`` holds ``classInd.txt`` (``1 ApplyEyeMakeup``),
``trainlist0K.txt`` (``ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1``) and ``testlist0K.txt``
(``ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi``). HMDB-51 ``testTrainMulti_7030_splits/``
holds ``<class>_test_split<K>.txt`` with ``<video>.avi <0|1|2>`` (1 train, 2 test, 0 unused;
unused videos get a label but no split). Labels are class names (what ``--label-from-dir``
gives for the same layout).
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

FORMATS = ("ucf101", "hmdb51")
SPLITS = (1, 2, 3)
# HMDB-51 class names contain underscores (brush_hair): the split number is the last field.
_HMDB_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<k>[1-9])\.txt$")


def _usage(msg: str) -> Exception:
    from avssl.utils.errors import UsageError

    return UsageError(msg)


def _lines(path: Path, hint: str = "") -> list[tuple[int, list[str]]]:
    """``(line number, whitespace-separated fields)`` of the non-blank lines (CRLF, BOM ok)."""
    if not path.is_file():
        raise _usage(f"{path}: not found{hint}")
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    return [(n, line.split()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _add(entries: dict[str, dict[str, Any]], rel: str, label: str, split: str | None,
         where: str) -> None:
    """Record one video; a path listed twice (e.g. in both train and test) is an error."""
    rel = Path(rel.replace("\\", "/")).as_posix()
    if rel in entries:
        raise _usage(f"{where}: {rel!r} is listed twice")
    entries[rel] = {"label": label} if split is None else {"label": label, "split": split}


def ucf101_entries(split_dir: str | Path, k: int) -> dict[str, dict[str, Any]]:
    """``{relative path: {"label", "split"}}`` of UCF-101 split ``k`` from ``ucfTrainTestlist``.

    Every path's folder must be a class of ``classInd.txt``, and the 1-based class index of a
    ``trainlist`` line must match it (catches lists of another dataset or version).
    """
    d = Path(split_dir)
    hint = " (SPLIT_DIR must be UCF-101's ucfTrainTestlist/)"
    if not d.is_dir():
        raise _usage(f"{d}: not a folder{hint}")
    classes: dict[str, int] = {}
    for n, f in _lines(d / "classInd.txt", hint):
        if len(f) != 2 or not f[0].isdigit():
            raise _usage(f"{d / 'classInd.txt'}:{n}: expected '<index> <class>'")
        classes[f[1]] = int(f[0])
    entries: dict[str, dict[str, Any]] = {}
    for kind in ("train", "test"):
        path = d / f"{kind}list{k:02d}.txt"
        for n, f in _lines(path, hint):
            where = f"{path}:{n}"
            rel = f[0].replace("\\", "/")
            shape_ok = (len(f) == 2 and f[1].isdigit()) if kind == "train" else len(f) == 1
            if not shape_ok or "/" not in rel:
                index = " <class index>" if kind == "train" else ""
                raise _usage(f"{where}: expected '<class>/<video>.avi{index}'")
            cls = rel.split("/")[0]
            if cls not in classes:
                raise _usage(f"{where}: class {cls!r} is not in classInd.txt")
            if kind == "train" and int(f[1]) != classes[cls]:
                raise _usage(f"{where}: class index {f[1]} but classInd.txt gives "
                             f"{classes[cls]} for {cls!r}")
            _add(entries, f[0], cls, f"{kind}{k}", where)
    return entries


def hmdb51_entries(split_dir: str | Path, k: int) -> dict[str, dict[str, Any]]:
    """``{"<class>/<video>.avi": {"label", "split"?}}`` of HMDB-51 split ``k`` from
    ``testTrainMulti_7030_splits/<class>_test_split<k>.txt``; every class with a list of any
    split must have one for ``k``."""
    d = Path(split_dir)
    if not d.is_dir():
        raise _usage(f"{d}: not a folder (expected HMDB-51's testTrainMulti_7030_splits/)")
    found: dict[str, set[int]] = {}
    for p in d.iterdir():
        if m := _HMDB_FILE.match(p.name):
            found.setdefault(m["cls"], set()).add(int(m["k"]))
    if not found:
        raise _usage(f"{d}: no <class>_test_split<K>.txt files (HMDB-51 split lists)")
    entries: dict[str, dict[str, Any]] = {}
    names = {1: "train", 2: "test"}
    for cls in sorted(found):
        path = d / f"{cls}_test_split{k}.txt"
        if k not in found[cls]:
            raise _usage(f"{path}: not found (the folder has other splits of {cls!r})")
        for n, f in _lines(path):
            where = f"{path}:{n}"
            if len(f) != 2 or f[1] not in ("0", "1", "2"):
                raise _usage(f"{where}: expected '<video>.avi <0|1|2>'")
            flag = int(f[1])
            _add(entries, f"{cls}/{f[0]}", cls, f"{names[flag]}{k}" if flag else None, where)
    return entries


def split_entries(fmt: str, split_dir: str | Path, k: int) -> dict[str, dict[str, Any]]:
    """The entries of ``fmt`` (``ucf101`` / ``hmdb51``) for official split ``k`` (1-3)."""
    if fmt not in FORMATS:
        raise _usage(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if k not in SPLITS:
        raise _usage(f"--split must be one of {', '.join(map(str, SPLITS))}, got {k}")
    return (ucf101_entries if fmt == "ucf101" else hmdb51_entries)(split_dir, k)


def meta_rows(entries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Meta-file rows for ``avssl preprocess --meta`` (sorted by path)."""
    return [{"path": rel, **entries[rel]} for rel in sorted(entries)]


def _rel_to(path: str | None, src_manifest: Path, out: Path) -> str | None:
    """A manifest-relative path re-expressed relative to ``out``'s folder."""
    if path is None or Path(path).is_absolute():
        return path
    target = (src_manifest.parent / path).resolve()
    try:
        return Path(os.path.relpath(target, out.parent.resolve())).as_posix()
    except ValueError:  # another drive (Windows): keep it absolute
        return str(target)


def split_manifest(entries: dict[str, dict[str, Any]], manifest: str | Path, out: str | Path
                   ) -> tuple[list[dict[str, Any]], int]:
    """Rows of ``manifest`` with ``label`` / ``split`` from ``entries`` (a row listed without a
    split, or not listed, loses its ``split``), paths relative to ``out``; and how many listed
    videos have no row (failed or skipped in preprocessing)."""
    from avssl.data.manifest import make_id, read_manifest
    from avssl.preprocess.scan import normalize_relpath

    manifest, out = Path(manifest), Path(out)
    by_id = {make_id(rel): rel for rel in entries}
    rows, matched = [], set()
    for row in read_manifest(manifest):
        row = dict(row)
        src = normalize_relpath(row["source"]) if isinstance(row.get("source"), str) else None
        rel = src if src in entries else by_id.get(row["id"])
        row.pop("split", None)  # a split of another set must not linger
        if rel is not None:
            row.update(entries[rel])
            matched.add(rel)
        row["path"] = _rel_to(row["path"], manifest, out)
        row["audio_path"] = _rel_to(row.get("audio_path"), manifest, out)
        rows.append(row)
    return rows, len(entries) - len(matched)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``avssl splits ucf101|hmdb51 SPLIT_DIR --out FILE [--split K]
    [--manifest PREPARED]``."""
    parser.description = (
        "Write the official train/test split K of UCF-101 or HMDB-51 as `label` and `split` "
        "(train<K> / test<K>, the names configs/eval/ucf101.yaml and hmdb51.yaml select): a "
        "meta file for `avssl preprocess SRC DST --meta FILE` (SRC = the folder of the class "
        "folders), or, with --manifest, a re-split copy of a prepared manifest (splits 2 and "
        "3, without re-encoding).")
    parser.add_argument("format", metavar="{ucf101,hmdb51}", help="dataset of the split lists")
    parser.add_argument("split_dir", metavar="SPLIT_DIR",
                        help="ucfTrainTestlist/ (UCF-101) or testTrainMulti_7030_splits/ "
                             "(HMDB-51), as distributed")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="meta JSON lines to write (a manifest with --manifest)")
    parser.add_argument("--split", default="1", metavar="K",
                        help="official split, 1, 2 or 3 (default: %(default)s)")
    parser.add_argument("--manifest", metavar="PREPARED",
                        help="write a copy of this prepared manifest.jsonl with split K's "
                             "columns instead of a meta file (default: write a meta file)")


def run(args: argparse.Namespace) -> int:
    """Write the meta file or manifest; errors raise UsageError (one line, exit code 2)."""
    from avssl.data.manifest import write_manifest
    from avssl.utils.atomic import atomic_write_jsonl

    if not str(args.split).strip().isdigit():
        raise _usage(f"--split must be one of {', '.join(map(str, SPLITS))}, got {args.split!r}")
    k = int(args.split)
    entries = split_entries(args.format, args.split_dir, k)
    out = Path(args.out)
    if out.is_dir():
        raise _usage(f"--out {out}: is a folder (give a file name)")
    if args.manifest is not None and out.resolve() == Path(args.manifest).resolve():
        raise _usage("--out must differ from --manifest (preprocess rewrites its manifest)")
    counts = {s: sum(e.get("split") == s for e in entries.values()) for s in (f"train{k}",
                                                                             f"test{k}")}
    unused = len(entries) - sum(counts.values())
    classes = len({e["label"] for e in entries.values()})
    summary = f"{counts[f'train{k}']} train{k}, {counts[f'test{k}']} test{k}" + \
        (f", {unused} unused" if unused else "") + f"; {classes} classes"
    try:
        if args.manifest is None:
            atomic_write_jsonl(out, meta_rows(entries))
        else:
            rows, missing = split_manifest(entries, args.manifest, out)
            write_manifest(out, rows)
            if missing:
                summary += f"; {missing} listed videos are not in {args.manifest}"
    except OSError as e:
        raise _usage(f"cannot write {out}: {e.strerror or e}") from None
    print(f"wrote {out}: {summary}")
    return 0
