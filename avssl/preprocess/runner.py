"""Run the conversion over a folder: parallel, resumable, sharded, with a failure report.

Layout of DST::

    videos/<id>.mp4  audio/<id>.wav        the outputs (written under .tmp-* names, renamed)
    .records/<id>.json                     {"row": {...}} or {"failure": {...}}, written LAST
    preprocess.json                        the output settings (a rerun must use the same)
    manifest[.shard-K-of-N].jsonl          rows sorted by id
    failures[.shard-K-of-N].jsonl          {"source", "id", "reason", "error"} sorted by source

An input is done iff its record exists, so a run killed at any moment (even ``kill -9``) and
started again redoes only unfinished inputs; a half-written output never has a record. Failure
records count as done: delete ``.records/<id>.json`` to retry one input. An input that runs past
the time limit (``timeout``, e.g. a decoder that hangs) or kills its worker becomes a failure
record; its worker is replaced and the run goes on (see ``avssl.preprocess.pool``).

A video whose audio stream exists but cannot be decoded is kept with ``has_audio: false`` and
the reason in ``audio_error``; a digitally silent track is kept (``audio_rms_db`` -120).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from avssl.data.manifest import make_id, write_manifest
from avssl.preprocess.encode import ConversionError, EncodeSettings, convert, describe
from avssl.preprocess.pool import Lost, run_tasks
from avssl.preprocess.scan import PreprocessError, load_meta, parse_shard, scan_videos
from avssl.utils.atomic import TMP_PREFIX, atomic_write_json, atomic_write_jsonl

RECORDS = ".records"
SETTINGS_FILE = "preprocess.json"
SILENT_DB = -60.0
DEFAULT_TIMEOUT_S = 600.0  # per input; real clips take seconds, a 2-hour film a few minutes
# Tests only: process() hangs forever on inputs whose relative path contains this value.
HANG_ENV = "AVSSL_TEST_HANG_ON"
# atomic_path names temporaries ".tmp-<target stem>-<8 mkstemp chars><target suffix>".
_TMP_RE = re.compile(r"^\.tmp-(?P<stem>.*)-[a-z0-9_]{8}(?P<suffix>\.[^.]*)?$")
_SHARD_RE = re.compile(r"^manifest\.shard-(\d+)-of-(\d+)\.jsonl$")


@dataclass
class Summary:
    """What a run produced: counts over all inputs of the run (or shard), not just new ones."""

    dst: Path
    manifest: Path
    ok: int = 0  # videos in the manifest
    no_audio: int = 0  # ... of which without (usable) audio
    silent: int = 0  # ... of which with audio quieter than -60 dBFS RMS
    failed: int = 0
    processed: int = 0  # inputs converted by this run
    skipped: int = 0  # inputs already done before this run
    seconds: float = 0.0
    failures: list[dict[str, Any]] = field(default_factory=list)
    meta_unmatched: int = 0  # meta rows naming no input
    failures_file: Path | None = None

    @property
    def all_failed(self) -> bool:
        """Every input failed (and there was at least one)."""
        return self.failed > 0 and self.ok == 0

    def format(self, max_failures: int = 20) -> str:
        """A short human-readable report (several lines)."""
        lines = [
            f"preprocess: {self.ok} videos ok ({self.no_audio} without audio, {self.silent} silent"
            f" < {SILENT_DB:.0f} dB), {self.failed} failed; {self.processed} converted now,"
            f" {self.skipped} already done; {self.seconds:.1f} s",
        ]
        for f in self.failures[:max_failures]:
            lines.append(f"  failed: {f['source']}: {f['reason']}")
        if len(self.failures) > max_failures:
            lines.append(f"  ... and {len(self.failures) - max_failures} more")
        if self.failures:
            lines.append(f"  (delete {self.dst / RECORDS}/<id>.json to retry an input)")
        if self.meta_unmatched:
            lines.append(f"  warning: {self.meta_unmatched} meta rows name no input video")
        lines.append(f"manifest: {self.manifest}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Task:
    """One input for a worker (picklable)."""

    src: Path
    rel: str
    id: str
    dst: Path
    settings: EncodeSettings


def record_path(dst: Path, id_: str) -> Path:
    return dst / RECORDS / f"{id_}.json"


def process(task: Task) -> dict[str, Any]:
    """Convert one input and write its record; never raises (errors become failure records).

    Returns the record. If the record cannot be written (disk full, ...) it is still returned,
    so the input shows up in this run's report, and a rerun retries it.
    """
    if (hang := os.environ.get(HANG_ENV)) and hang in task.rel:
        while True:  # stands in for a decoder that never returns (see tests)
            time.sleep(60)
    try:
        record: dict[str, Any] = {"row": convert(task.src / task.rel, task.dst, task.id, task.rel,
                                                 task.settings)}
    except Exception as e:  # any error in one input must not stop the run
        error = e.error if isinstance(e, ConversionError) else type(e).__name__
        record = {"failure": {"source": task.rel, "id": task.id, "reason": describe(e),
                              "error": error}}
    with contextlib.suppress(OSError):
        atomic_write_json(record_path(task.dst, task.id), record, indent=None)
    return record


def read_record(dst: Path, id_: str, rel: str) -> dict[str, Any] | None:
    """The finished record of an input, or None when it must be (re)done: no record, a record
    of another source path, or a row whose output files have since been deleted."""
    try:
        record = json.loads(record_path(dst, id_).read_text())
    except (OSError, ValueError):
        return None
    body = record.get("row") or record.get("failure") or {}
    if body.get("source") != rel:
        return None
    outputs = [record["row"]["path"], record["row"]["audio_path"]] if "row" in record else []
    return record if all(p is None or (dst / p).is_file() for p in outputs) else None


def _lost_record(task: Task, lost: Lost) -> dict[str, Any]:
    """The record of an input whose worker was killed (time limit) or died.

    A record the worker managed to write before that is kept. Otherwise its temporaries are
    removed and a failure record written, so the input counts as done (a rerun skips it).
    """
    record = read_record(task.dst, task.id, task.rel)
    if record is not None:
        return record
    _remove_temporaries_of(task.dst, task.id)
    record = {"failure": {"source": task.rel, "id": task.id, "reason": lost.reason,
                          "error": lost.error}}
    with contextlib.suppress(OSError):
        atomic_write_json(record_path(task.dst, task.id), record, indent=None)
    return record


def _remove_temporaries_of(dst: Path, id_: str) -> None:
    """Delete the ``.tmp-*`` outputs of one input (a killed worker leaves them behind); only
    the input's own folders are listed, not all of DST (which may hold 100k+ files)."""
    parent, _, name = id_.rpartition("/")
    for top in ("videos", "audio", RECORDS):
        folder = dst / top / parent
        with contextlib.suppress(OSError), os.scandir(folder) as entries:
            for entry in entries:
                m = _TMP_RE.match(entry.name)
                if m and m.group("stem") == name:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)


def _outcomes(tasks: list[Task], workers: int,
              timeout: float) -> Iterator[tuple[Task, dict[str, Any] | Lost]]:
    """``(task, record or Lost)`` as tasks finish. In this process only when there is no time
    limit and one worker would do; otherwise in child processes, which can be killed."""
    if timeout <= 0 and (workers <= 1 or len(tasks) <= 1):
        return ((task, process(task)) for task in tasks)
    return run_tasks(process, tasks, workers, timeout)


def _run_tasks(tasks: list[Task], workers: int, progress: bool,
               timeout: float = DEFAULT_TIMEOUT_S) -> Iterator[dict[str, Any]]:
    """Records of ``tasks`` as they finish, under a progress bar (files done, failures).

    An input running longer than ``timeout`` seconds (0: no limit) becomes a failure record
    and its worker is replaced; the other inputs go on.
    """
    bar = tqdm(total=len(tasks), unit="file", desc="preprocess", disable=not (progress and tasks),
               dynamic_ncols=True)
    failed = 0
    try:
        for task, outcome in _outcomes(tasks, workers, timeout):
            record = _lost_record(task, outcome) if isinstance(outcome, Lost) else outcome
            failed += "failure" in record
            bar.update(1)
            bar.set_postfix(failed=failed, refresh=False)
            yield record
    finally:
        bar.close()


def _check_settings(dst: Path, settings: EncodeSettings) -> None:
    """Refuse to mix outputs of different settings in one DST."""
    wanted = {"fps": float(settings.fps), "short_side": settings.short_side,
              "sample_rate": settings.sample_rate, "gop": settings.gop,
              "audio_format": settings.audio_format}
    path = dst / SETTINGS_FILE
    if path.is_file():
        try:
            have = json.loads(path.read_text())
        except ValueError:
            have = None
        if have is not None and have != wanted:
            diff = ", ".join(f"{k}={have.get(k)!r}" for k in wanted if have.get(k) != wanted[k])
            raise PreprocessError(f"{dst} was prepared with {diff}; use a new DST for new settings")
        if have is not None:
            return
    atomic_write_json(path, wanted)


def _ensure_writable(dst: Path) -> None:
    try:
        dst.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=dst, prefix=TMP_PREFIX + "probe-"):
            pass
    except OSError as e:
        raise PreprocessError(f"DST {dst} is not writable: {e.strerror or e}") from None


def remove_stale_temporaries(dst: Path, ids: set[str] | None,
                             own_names: set[str] | None = None) -> int:
    """Delete ``.tmp-*`` files left by a killed run; return how many.

    ``ids=None`` removes all of them. Otherwise (a shard, while other shards may be writing)
    only temporaries of outputs of ``ids`` and top-level ones whose target stem is in
    ``own_names`` are removed.
    """
    removed = 0
    for dirpath, _, filenames in os.walk(dst):
        here = Path(dirpath)
        for name in filenames:
            m = _TMP_RE.match(name)
            if not name.startswith(TMP_PREFIX) or (ids is not None and not m):
                continue
            if ids is not None:
                assert m is not None
                if here == dst:
                    if m.group("stem") not in (own_names or set()):
                        continue
                else:
                    rel_dir = here.relative_to(dst).parts[1:]  # drop videos/, audio/, .records/
                    if "/".join((*rel_dir, m.group("stem"))) not in ids:
                        continue
            with contextlib.suppress(FileNotFoundError):
                (here / name).unlink()
                removed += 1
    return removed


#: top-level folder names that give a row its split (``SRC/train/<class>/clip.mp4``)
SPLIT_DIRS = ("train", "val", "test")


def labels_from_dir(rel: str) -> dict[str, str]:
    """``label`` (and ``split``) from a source path relative to SRC: ``<class>/...`` gives the
    label (UCF-101 style); ``{train,val,test}/<class>/...`` gives the split and the label
    (ImageFolder style). A file at the top level gets neither."""
    parts = rel.split("/")
    if len(parts) > 2 and parts[0] in SPLIT_DIRS:
        return {"split": parts[0], "label": parts[1]}
    return {"label": parts[0]} if len(parts) > 1 else {}


def _build_row(row: dict[str, Any], meta: dict[str, dict[str, Any]],
               label_from_dir: bool) -> dict[str, Any]:
    """The manifest row: computed fields, then ``label`` (and ``split``) from the folders, then
    meta keys."""
    row = dict(row)
    if label_from_dir:
        row.update(labels_from_dir(row["source"]))
    row.update(meta.get(row["source"], {}))
    return row


def _write_jsonl(path: Path, rows: list[dict[str, Any]], *, manifest: bool) -> None:
    """Write JSON lines atomically (a manifest through ``write_manifest``, sorted by id),
    leaving the file untouched when its content would not change (a rerun is a no-op)."""
    if manifest:
        rows = sorted(rows, key=lambda r: r["id"])
    text = "".join(json.dumps(r) + "\n" for r in rows)
    with contextlib.suppress(OSError):
        if path.read_text() == text:
            return
    if manifest:
        write_manifest(path, rows)
    else:
        atomic_write_jsonl(path, rows)


def _outputs_names(shard: tuple[int, int] | None) -> tuple[str, str]:
    tag = "" if shard is None else f".shard-{shard[0]}-of-{shard[1]}"
    return f"manifest{tag}.jsonl", f"failures{tag}.jsonl"


def _summarize(summary: Summary, rows: list[dict[str, Any]],
               failures: list[dict[str, Any]]) -> Summary:
    summary.ok = len(rows)
    summary.no_audio = sum(not r["has_audio"] for r in rows)
    summary.silent = sum(bool(r["has_audio"]) and r["audio_rms_db"] < SILENT_DB for r in rows)
    summary.failed = len(failures)
    summary.failures = failures
    return summary


def preprocess(src: str | Path, dst: str | Path, *, fps: float = 16.0, short_side: int = 256,
               sample_rate: int = 24000, gop: int = 16, workers: int = 1,
               shard: str | tuple[int, int] | None = None, audio_format: str = "wav",
               meta: str | Path | None = None, label_from_dir: bool = False,
               progress: bool = True, timeout: float = DEFAULT_TIMEOUT_S) -> Summary:
    """Prepare every video under ``src`` into ``dst`` (see the module docstring for the layout).

    ``fps`` frames/s, ``short_side`` pixels (even), ``sample_rate`` Hz, ``gop`` frames between
    keyframes, ``shard`` ``"K/N"`` (inputs whose sorted index % N == K), ``meta`` a JSON-lines
    file of extra keys per input (default ``src/meta.jsonl`` if present), ``timeout`` seconds
    per input before its worker is killed and the input reported failed (0: no limit; with a
    limit even ``workers=1`` converts in a child process). Raises PreprocessError on bad
    arguments; failed inputs are reported, not raised.
    """
    t0 = time.perf_counter()
    src, dst = Path(src), Path(dst)
    shard = parse_shard(shard)
    settings = _validate(src, fps, short_side, sample_rate, gop, workers, audio_format)
    if not timeout >= 0:  # also rejects NaN
        raise PreprocessError(f"--timeout must be >= 0 seconds (0: no limit), got {timeout}")
    meta_rows = _load_meta_default(src, meta)
    inputs = scan_videos(src, exclude=dst)
    if not inputs:
        raise PreprocessError(f"no video files under {src}")
    _ensure_writable(dst)
    _check_settings(dst, settings)
    # Codec threads share the cores with the other workers.
    settings = replace(settings, threads=max(1, (os.cpu_count() or 1) // workers))
    owner: dict[str, str] = {}
    collisions: dict[str, dict[str, Any]] = {}
    for rel in inputs:  # sorted: the first path wins an id
        id_ = make_id(rel)
        if id_ in owner:
            collisions[rel] = {"source": rel, "id": id_, "error": "DuplicateId",
                               "reason": f"id {id_!r} is already used by {owner[id_]!r}"}
        else:
            owner[id_] = rel
    mine = [rel for i, rel in enumerate(inputs) if shard is None or i % shard[1] == shard[0]]
    manifest_name, failures_name = _outputs_names(shard)
    my_ids = {make_id(rel) for rel in mine if rel not in collisions}
    remove_stale_temporaries(dst, None if shard is None else my_ids,
                             {Path(manifest_name).stem, Path(failures_name).stem})

    records: dict[str, dict[str, Any]] = {}
    tasks: list[Task] = []
    for rel in mine:
        if rel in collisions:
            continue
        record = read_record(dst, make_id(rel), rel)
        if record is None:
            tasks.append(Task(src, rel, make_id(rel), dst, settings))
        else:
            records[rel] = record
    summary = Summary(dst=dst, manifest=dst / manifest_name, skipped=len(records),
                      processed=len(tasks), failures_file=dst / failures_name)
    for record in _run_tasks(tasks, workers, progress, timeout):
        body = record.get("row") or record["failure"]
        records[body["source"]] = record

    rows = [_build_row(r["row"], meta_rows, label_from_dir) for r in records.values() if "row" in r]
    failures = [r["failure"] for r in records.values() if "failure" in r]
    failures = sorted([*failures, *(collisions[rel] for rel in mine if rel in collisions)],
                      key=lambda f: f["source"])
    _write_jsonl(dst / manifest_name, rows, manifest=True)
    _write_jsonl(dst / failures_name, failures, manifest=False)
    summary.meta_unmatched = len(set(meta_rows) - set(inputs))
    summary.seconds = time.perf_counter() - t0
    return _summarize(summary, rows, failures)


def merge(dst: str | Path) -> Summary:
    """Join ``manifest.shard-K-of-N.jsonl`` (and failures) of all N shards into
    ``manifest.jsonl`` and ``failures.jsonl``; raises PreprocessError if a shard is missing."""
    t0 = time.perf_counter()
    dst = Path(dst)
    if not dst.is_dir():
        raise PreprocessError(f"DST not found: {dst}")
    found: dict[int, set[int]] = {}
    for p in dst.iterdir():
        if m := _SHARD_RE.match(p.name):
            found.setdefault(int(m.group(2)), set()).add(int(m.group(1)))
    if not found:
        raise PreprocessError(f"no shard manifests (manifest.shard-K-of-N.jsonl) in {dst}")
    if len(found) > 1:
        raise PreprocessError(f"{dst} holds shards of several splits (N = {sorted(found)});"
                              " remove the stale ones")
    (n, ks), = found.items()
    names = [_outputs_names((k, n)) for k in range(n)]
    missing = [k for k, (man, fail) in enumerate(names)
               if k not in ks or not (dst / fail).is_file()]
    if missing:
        raise PreprocessError(f"shards {missing} of {n} are not finished in {dst}")
    rows = [row for man, _ in names for row in _read_jsonl(dst / man)]
    failures = sorted((f for _, fail in names for f in _read_jsonl(dst / fail)),
                      key=lambda f: f["source"])
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise PreprocessError(f"shard manifests in {dst} share ids; were shards run twice?")
    _write_jsonl(dst / "manifest.jsonl", rows, manifest=True)
    _write_jsonl(dst / "failures.jsonl", failures, manifest=False)
    summary = Summary(dst=dst, manifest=dst / "manifest.jsonl", seconds=time.perf_counter() - t0,
                      failures_file=dst / "failures.jsonl")
    return _summarize(summary, rows, failures)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _validate(src: Path, fps: float, short_side: int, sample_rate: int, gop: int, workers: int,
              audio_format: str) -> EncodeSettings:
    if not src.is_dir():
        raise PreprocessError(f"SRC is not a folder: {src}")
    checks = [
        (fps > 0, f"--fps must be > 0, got {fps}"),
        (short_side >= 2 and short_side % 2 == 0,
         f"--short-side must be an even number >= 2 (H.264 4:2:0), got {short_side}"),
        (sample_rate > 0, f"--sample-rate must be > 0, got {sample_rate}"),
        (gop >= 1, f"--gop must be >= 1, got {gop}"),
        (workers >= 1, f"--workers must be >= 1, got {workers}"),
        (audio_format in ("wav", "flac"),
         f"--audio-format must be wav or flac, got {audio_format!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise PreprocessError(message)
    return EncodeSettings(fps=fps, short_side=short_side, sample_rate=sample_rate, gop=gop,
                          audio_format=audio_format)


def _load_meta_default(src: Path, meta: str | Path | None) -> dict[str, dict[str, Any]]:
    if meta is not None:
        return load_meta(meta)
    default = src / "meta.jsonl"
    return load_meta(default) if default.is_file() else {}
