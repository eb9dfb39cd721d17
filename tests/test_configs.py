"""Every YAML under configs/ runs the way its command would, so a config that cannot run fails CI.

Configs are discovered by globbing ``configs/**/*.yaml`` (and ``*.yml``, which match no rule), and
each is run according to where it lives:

- **base files** (named ``base.yaml``): not run on their own; each must be the (transitive)
  ``base:`` of at least one config that is run, which covers it.
- **eval configs** (under ``configs/eval/``): run through every ``avssl eval <protocol>`` command
  named in the config's header comments (``avssl eval finetune configs/eval/ucf101.yaml ...``,
  ``avssl eval linear|knn``), on a tiny labelled set, with the checkpoint of the training run the
  config derives from (see :meth:`Rules.pretraining_source`). A config path written in such a
  command must be the config's own.
- **training configs** (any other folder under configs/): ``avssl train`` for 2 optimizer steps
  at the config's real architecture and input sizes; only ``data.manifest``,
  ``data.batch_size``, ``data.num_workers`` and ``train.max_steps`` are overridden, plus
  ``train.init_from`` when the config starts from another run: that must be
  ``<run_dir of another training config>/checkpoints/last.pt`` (CMA from the AVID run of the
  same dataset), and the checkpoint of that run from this test is used.

Anything else (a YAML directly in configs/ that is not a base, an eval config whose header names
no ``avssl eval`` command or a protocol this file has no data for, an ``init_from`` no config
produces) matches no rule and fails :func:`test_config_has_a_rule`, so a new config cannot go
untested. Commands run in-process through :func:`avssl.cli.main`.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from avssl.cli import main
from avssl.config import ConfigError, load_config, to_dict
from avssl.methods import resolved_dict

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

#: the keys a training run may override (the step limit, the data location and the loader's
#: size), plus ``train.init_from`` (the upstream run of this test)
TRAIN_OVERRIDE_KEYS = {"data.manifest", "data.batch_size", "data.num_workers",
                       "train.max_steps", "train.init_from"}
TRAIN_STEPS = 2
BATCH = 2

#: per protocol, the overrides that keep an eval run short, and why (every run also gets
#: data.manifest (the tiny set), data.batch_size=2, data.num_workers=0, --out and --no-progress)
EVAL_OVERRIDES: dict[str, list[str]] = {
    # 1 epoch (published: 10-16) of at most 2 optimizer steps; 2 test clips per video (10), still
    # averaged per video
    "finetune": ["train.epochs=1", "eval.max_train_steps=2", "eval.num_test_clips=2"],
    # 2 clips per video (10): the published R(2+1)D-18 over the 16 videos dominates the cost
    "retrieval": ["eval.num_clips=2"],
    # 2 crops per clip (10) and 20 L-BFGS iterations (200)
    "audio": ["eval.num_crops=2", "eval.max_iter=20"],
    # 2 probe steps (300); 2 clips per video (data.clips_per_video, 4 in the configs): feature
    # extraction at the published geometry dominates the cost
    "linear": ["eval.steps=2", "data.clips_per_video=2"],
    # the same clips as linear (the features come from the same cache); a kNN has no
    # iterations, and k is clipped to the 12 training videos
    "knn": ["data.clips_per_video=2"],
}
VIDEO_PROTOCOLS = ("finetune", "retrieval", "linear", "knn")
AUDIO_LAYOUTS = ("esc50", "dcase")

_EVAL_COMMAND = re.compile(r"avssl eval (\w+(?:\|\w+)*)(?:[ \t]+(\S+\.ya?ml))?")
_AUDIO_MANIFEST_COMMAND = re.compile(r"avssl audio-manifest (\w+)")


# ----------------------------------------------------------------------------------------------
# Discovery and rules
# ----------------------------------------------------------------------------------------------
class RuleError(Exception):
    """A config that matches no rule, or breaks the rule it matches."""


@dataclass(frozen=True)
class Case:
    """One discovered config file and how it is run."""

    path: Path
    #: ``avid/kinetics`` for configs/avid/kinetics.yaml (the test ids)
    id: str
    #: "base", "train", "eval", or "" (no rule: ``problem`` says why)
    kind: str
    #: eval configs: the protocols of the ``avssl eval`` commands in the header comments
    protocols: tuple[str, ...] = ()
    #: eval configs: config paths written in those commands (must be the config's own)
    named_paths: tuple[str, ...] = ()
    problem: str = ""


def header(path: Path) -> str:
    """The leading comment block of a YAML file."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines)


def classify(path: Path) -> Case:
    """Decide from where ``path`` lives (and, for eval configs, its header) how it is run."""
    rel = path.relative_to(CONFIGS.parent)
    cid = path.relative_to(CONFIGS).with_suffix("").as_posix()
    if path.suffix != ".yaml":
        return Case(path, cid, "", problem=f"{rel}: configs are *.yaml (rename it)")
    if path.name == "base.yaml":
        return Case(path, cid, "base")
    if len(rel.parts) == 2:
        return Case(path, cid, "", problem=f"{rel}: a config directly in configs/ must be a base "
                                           "(base.yaml); put a runnable config in a folder")
    if rel.parts[1] == "eval":
        protocols: list[str] = []
        named: list[str] = []
        for m in _EVAL_COMMAND.finditer(header(path)):
            protocols += [p for p in m.group(1).split("|") if p not in protocols]
            if m.group(2):
                named.append(m.group(2))
        if not protocols:
            return Case(path, cid, "", problem=f"{rel}: no `avssl eval <protocol>` command in "
                                               "the header comments")
        return Case(path, cid, "eval", tuple(protocols), tuple(named))
    return Case(path, cid, "train")


def discover() -> list[Case]:
    """Every config under configs/, sorted by path."""
    files = sorted({*CONFIGS.rglob("*.yaml"), *CONFIGS.rglob("*.yml")})
    return [classify(p) for p in files]


CASES = discover()
BY_ID = {c.id: c for c in CASES}
TRAIN_IDS = [c.id for c in CASES if c.kind == "train"]
EVAL_PARAMS = [pytest.param(c.id, p, id=f"{c.id}-{p}")
               for c in CASES if c.kind == "eval" for p in c.protocols]


def base_chain(path: Path) -> list[Path]:
    """The files ``path`` inherits from through ``base:``, nearest first (resolved paths)."""
    chain: list[Path] = []
    current = path.resolve()
    while True:
        data = yaml.safe_load(current.read_text()) or {}
        base = data.get("base") if isinstance(data, dict) else None
        if not isinstance(base, str):
            return chain
        current = (current.parent / base).resolve()
        if current in chain or current == path.resolve():
            raise RuleError(f"{path.relative_to(CONFIGS.parent)}: circular base: chain")
        chain.append(current)


@cache
def resolved(cid: str) -> dict[str, Any]:
    """The config ``cid`` resolved (base chain, defaults, the method's own defaults) as a
    plain dict."""
    return resolved_dict(load_config(BY_ID[cid].path, require_paths=False))


def loadable(cid: str) -> dict[str, Any] | None:
    """:func:`resolved`, or None for a config that does not load (its own test reports it), so
    that one broken config does not fail the checks of the others."""
    try:
        return resolved(cid)
    except ConfigError:
        return None


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"data": {"batch_size": 2}}`` -> ``{"data.batch_size": 2}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def differing_keys(a: dict[str, Any], b: dict[str, Any]) -> set[str]:
    """Dotted keys whose values differ between two nested dicts."""
    fa, fb = flatten(a), flatten(b)
    return {k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)}


class Rules:
    """The relations between configs that decide what a run needs."""

    @staticmethod
    def upstream(cid: str) -> str | None:
        """The training config whose run ``train.init_from`` of ``cid`` starts from."""
        init_from = resolved(cid)["train"]["init_from"]
        if not init_from:
            return None
        want = Path(init_from)
        if want.name != "last.pt" or want.parent.name != "checkpoints":
            raise RuleError(f"{cid}: train.init_from={init_from} is not "
                            "<run_dir>/checkpoints/last.pt of a training config")
        for other in TRAIN_IDS:
            run_dir = (loadable(other) or {}).get("run_dir")
            if other != cid and run_dir and Path(run_dir) == want.parent.parent:
                return other
        raise RuleError(f"{cid}: train.init_from={init_from}: no training config under configs/ "
                        f"has run_dir {want.parent.parent}")

    @staticmethod
    def pretraining_source(cid: str) -> str:
        """The training config whose checkpoint an eval config is evaluated with: the nearest
        config of its ``base:`` chain that is a training config (synthetic_linear ->
        demo/avid); if a base file comes first, among the from-scratch training configs
        (no ``train.init_from``) of the base's method that inherit it, the one that differs
        from it in the fewest keys (base.yaml -> avid/kinetics: 3 keys, avid/audioset: 6)."""
        train_paths = {BY_ID[t].path.resolve(): t for t in TRAIN_IDS}
        for ancestor in base_chain(BY_ID[cid].path):
            if ancestor in train_paths:
                return train_paths[ancestor]
            if ancestor.name != "base.yaml":
                continue
            base_cfg = to_dict(load_config(ancestor, require_paths=False))
            method = base_cfg["method"]["name"]
            candidates = [t for t in TRAIN_IDS if ancestor in base_chain(BY_ID[t].path)
                          and loadable(t) and not resolved(t)["train"]["init_from"]
                          and resolved(t)["method"]["name"] == method]
            if candidates:
                return min(candidates,
                           key=lambda t: (len(differing_keys(resolved(t), base_cfg)), t))
        raise RuleError(f"{cid}: no training config under configs/ to take a checkpoint from "
                        "(its base: chain reaches neither a training config nor a base.yaml "
                        "that a from-scratch training config inherits)")

    @staticmethod
    def audio_layout(cid: str) -> str:
        """The benchmark layout of an audio eval config, from its `avssl audio-manifest`
        command."""
        layouts = _AUDIO_MANIFEST_COMMAND.findall(header(BY_ID[cid].path))
        if len(layouts) != 1 or layouts[0] not in AUDIO_LAYOUTS:
            raise RuleError(f"{cid}: `avssl eval audio` needs exactly one `avssl audio-manifest "
                            f"<layout>` command in the header, layout one of {AUDIO_LAYOUTS} "
                            f"(found {layouts}); add a builder here for a new layout")
        return layouts[0]


def check_rule(case: Case) -> None:
    """Raise :class:`RuleError` unless ``case`` matches a rule and everything it needs exists."""
    if not case.kind:
        raise RuleError(case.problem)
    cfg = resolved(case.id)  # loads and validates (ConfigError on a bad key)
    rel = case.path.relative_to(ROOT).as_posix()
    if case.kind == "base":
        users = [c.id for c in CASES if c.kind in ("train", "eval")
                 and case.path.resolve() in base_chain(c.path)]
        if not users:
            raise RuleError(f"{rel}: a base file that no training or eval config inherits "
                            "(nothing runs it)")
    elif case.kind == "train":
        Rules.upstream(case.id)
    else:
        unknown = [p for p in case.protocols if p not in EVAL_OVERRIDES]
        if unknown:
            raise RuleError(f"{rel}: protocol(s) {unknown} named in the header: no data recipe "
                            f"in tests/test_configs.py (known: {sorted(EVAL_OVERRIDES)})")
        wrong = [p for p in case.named_paths if p != rel]
        if wrong:
            raise RuleError(f"{rel}: the header's avssl eval command names {wrong}, not {rel}")
        source = Rules.pretraining_source(case.id)
        if any(p in VIDEO_PROTOCOLS for p in case.protocols):
            d = cfg["data"]
            if not d["split"] or not d["eval_split"]:
                raise RuleError(f"{rel}: data.split and data.eval_split must name the train and "
                                "test splits")
        if "audio" in case.protocols:
            Rules.audio_layout(case.id)
            ours, theirs = cfg["data"]["audio"], resolved(source)["data"]["audio"]
            if ours != theirs:  # documented in esc50.yaml: must match pretraining
                raise RuleError(f"{rel}: data.audio differs from its pretraining config "
                                f"{source} in {sorted(differing_keys(ours, theirs))}")


# ----------------------------------------------------------------------------------------------
# Running commands
# ----------------------------------------------------------------------------------------------
def run_cli(argv: list[str]) -> tuple[int, str]:
    """``avssl.cli.main(argv)`` in-process: (exit code, its stdout+stderr, plus the traceback
    of an unexpected exception, which counts as exit code 1)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse errors
            rc = e.code if isinstance(e.code, int) else 1
        except Exception:
            traceback.print_exc(file=buf)
            rc = 1
    return rc, buf.getvalue()


def command_line(argv: list[str]) -> str:
    return "avssl " + " ".join(argv)


def finite_numbers(obj: Any, where: str = "") -> list[str]:
    """Dotted paths of non-finite numbers in a JSON value."""
    if isinstance(obj, bool):
        return []
    if isinstance(obj, (int, float)):
        return [] if math.isfinite(obj) else [where]
    if isinstance(obj, dict):
        return [b for k, v in obj.items() for b in finite_numbers(v, f"{where}.{k}")]
    if isinstance(obj, list):
        return [b for i, v in enumerate(obj) for b in finite_numbers(v, f"{where}[{i}]")]
    return []


@dataclass
class Outcome:
    """A finished command (or the reason it could not run)."""

    argv: list[str]
    rc: int
    output: str
    seconds: float
    run_dir: Path | None = None
    out: Path | None = None
    #: set when a run it depends on failed
    upstream_error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def check_ok(self) -> None:
        if self.upstream_error:
            pytest.fail(self.upstream_error, pytrace=False)
        if self.rc != 0:
            tail = "\n".join(self.output.strip().splitlines()[-30:])
            pytest.fail(f"{command_line(self.argv)}\nexited with {self.rc}:\n{tail}",
                        pytrace=False)


class Runs:
    """Runs each training config once (its upstream first) and each eval command on demand,
    in fresh folders; outcomes are cached for the module."""

    def __init__(self, factory: pytest.TempPathFactory, manifest: Path) -> None:
        self.factory, self.manifest = factory, manifest
        self.trained: dict[str, Outcome] = {}
        self._video_manifests: dict[tuple[str, str], Path] = {}
        self._audio_manifests: dict[str, Path] = {}

    def _mktemp(self, name: str) -> Path:
        return self.factory.mktemp(re.sub(r"[^\w]+", "-", name))

    # training ---------------------------------------------------------------------------------
    def train(self, cid: str) -> Outcome:
        if cid not in self.trained:
            self.trained[cid] = self._train(cid)
        return self.trained[cid]

    def _train(self, cid: str) -> Outcome:
        run_dir = self._mktemp(f"run-{cid}")
        argv = ["train", str(BY_ID[cid].path), "--run-dir", str(run_dir), "--no-progress",
                f"data.manifest={self.manifest}", f"data.batch_size={BATCH}",
                "data.num_workers=0", f"train.max_steps={TRAIN_STEPS}"]
        try:
            up = Rules.upstream(cid)
        except (RuleError, ConfigError) as e:
            return Outcome(argv, 1, "", 0.0, upstream_error=str(e))
        if up is not None:
            parent = self.train(up)
            if parent.rc != 0 or parent.upstream_error:
                return Outcome(argv, 1, "", 0.0, upstream_error=f"{cid} starts from the run of "
                               f"{up}, which failed (see test_train[{up}])")
            argv.append(f"train.init_from={parent.run_dir / 'checkpoints' / 'last.pt'}")
        t0 = time.perf_counter()
        rc, output = run_cli(argv)
        return Outcome(argv, rc, output, time.perf_counter() - t0, run_dir=run_dir,
                       extra={"upstream": up})

    # data for the eval protocols ------------------------------------------------------------
    def video_manifest(self, train_split: str, test_split: str) -> Path:
        """The tiny labelled set with its train/test splits renamed to the config's; paths
        made absolute (they are relative to the manifest's folder)."""
        key = (train_split, test_split)
        if key not in self._video_manifests:
            rows = []
            for line in self.manifest.read_text().splitlines():
                if not line.strip():
                    continue
                r = json.loads(line)
                r["split"] = {"train": train_split, "test": test_split}[r["split"]]
                for k in ("path", "audio_path"):
                    if r.get(k):
                        r[k] = str((self.manifest.parent / r[k]).resolve())
                rows.append(json.dumps(r))
            out = self._mktemp(f"manifest-{train_split}-{test_split}") / "manifest.jsonl"
            out.write_text("\n".join(rows) + "\n")
            self._video_manifests[key] = out
        return self._video_manifests[key]

    def _tiny_audio(self, root: Path) -> list[tuple[str, int, str]]:
        """Copy the tiny set's wavs to ``root/audio``: (relative path, label, split) each."""
        (root / "audio").mkdir(parents=True)
        clips = []
        for line in self.manifest.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                name = f"audio/{Path(r['id']).name}.wav"
                shutil.copy(self.manifest.parent / r["audio_path"], root / name)
                clips.append((name, int(r["label"]), r["split"]))
        return clips

    def audio_manifest(self, layout: str, single_split: bool) -> Path:
        """The tiny set's audio laid out as the benchmark ``layout`` is distributed, turned
        into a manifest by ``avssl audio-manifest`` (as the config's header says)."""
        key = f"{layout}-{'split' if single_split else 'folds'}"
        if key not in self._audio_manifests:
            work = self._mktemp(f"audio-{key}")
            root = work / layout
            clips = self._tiny_audio(root)
            if layout == "esc50":  # meta/esc50.csv, folds 1..5
                (root / "meta").mkdir()
                lines = ["filename,fold,target,category,esc10,src_file,take"]
                lines += [f"{Path(n).name},{1 + i % 5},{y},cat{y},False,x,A"
                          for i, (n, y, _) in enumerate(clips)]
                (root / "meta" / "esc50.csv").write_text("\n".join(lines) + "\n")
            else:  # DCASE evaluation_setup/: one fold1 split (2018-2020), or 2 folds (2016/17)
                setup = root / "evaluation_setup"
                setup.mkdir()
                if single_split:
                    lists = {1: ([c for c in clips if c[2] == "train"],
                                 [c for c in clips if c[2] == "test"])}
                else:
                    lists = {k: ([c for i, c in enumerate(clips) if i % 2 != k - 1],
                                 [c for i, c in enumerate(clips) if i % 2 == k - 1])
                             for k in (1, 2)}
                for k, (train, test) in lists.items():
                    for part, rows in (("train", train), ("evaluate", test)):
                        (setup / f"fold{k}_{part}.csv").write_text(
                            "filename\tscene_label\n"
                            + "".join(f"{n}\tscene{y}\n" for n, y, _ in rows))
            out = work / "manifest.jsonl"
            argv = ["audio-manifest", layout, str(root), "--out", str(out)]
            rc, output = run_cli(argv)
            assert rc == 0, f"{command_line(argv)} exited with {rc}:\n{output}"
            self._audio_manifests[key] = out
        return self._audio_manifests[key]

    # evaluation -------------------------------------------------------------------------------
    def evaluate(self, cid: str, protocol: str) -> Outcome:
        case = BY_ID[cid]
        cfg = resolved(cid)
        source = Rules.pretraining_source(cid)
        if protocol == "audio":
            single = bool(cfg["eval"].get("train_split") or cfg["eval"].get("test_split"))
            manifest = self.audio_manifest(Rules.audio_layout(cid), single)
        else:
            manifest = self.video_manifest(cfg["data"]["split"], cfg["data"]["eval_split"])
        pre = self.train(source)
        ckpt = pre.run_dir / "checkpoints" / "last.pt" if pre.run_dir else Path("none")
        out = self._mktemp(f"eval-{cid}-{protocol}") / "results.json"
        argv = ["eval", protocol, str(case.path), "--checkpoint", str(ckpt), "--out", str(out),
                "--no-progress", f"data.manifest={manifest}", f"data.batch_size={BATCH}",
                "data.num_workers=0", *EVAL_OVERRIDES[protocol]]
        if pre.rc != 0 or pre.upstream_error:
            return Outcome(argv, 1, "", 0.0, upstream_error=f"{cid} is evaluated with the "
                           f"checkpoint of {source}, whose run failed (see test_train[{source}])")
        t0 = time.perf_counter()
        rc, output = run_cli(argv)
        return Outcome(argv, rc, output, time.perf_counter() - t0, out=out,
                       extra={"source": source})


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_prepared: Path) -> Runs:
    """Training runs (one per training config) and eval data, shared by this module's tests."""
    return Runs(tmp_path_factory, tiny_prepared)


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------
def test_discovery_finds_every_kind() -> None:
    """The glob sees configs/ (a wrong root would make every other test vacuous)."""
    kinds = {c.kind for c in CASES}
    assert {"base", "train", "eval"} <= kinds, f"found {sorted(kinds)} under {CONFIGS}"
    assert "avid/kinetics" in TRAIN_IDS and "cma/kinetics" in TRAIN_IDS


def _require_rule(cid: str) -> None:
    """Fail the calling test with the one-line reason when ``cid`` breaks a rule."""
    problem = ""
    try:
        check_rule(BY_ID[cid])
    except (RuleError, ConfigError) as e:
        problem = str(e)
    if problem:
        pytest.fail(problem, pytrace=False)


@pytest.mark.parametrize("cid", [c.id for c in CASES])
def test_config_has_a_rule(cid: str) -> None:
    """Each config matches a rule, loads, and everything its run needs exists under configs/."""
    _require_rule(cid)


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("cid", TRAIN_IDS)
def test_train(cid: str, runs: Runs) -> None:
    """``avssl train CONFIG``: 2 optimizer steps at the config's own architecture and input
    sizes, a checkpoint at RUN/checkpoints/last.pt with the resolved config in it."""
    from avssl.utils.checkpoint import load_checkpoint

    _require_rule(cid)
    res = runs.train(cid)
    res.check_ok()
    assert res.run_dir is not None
    ckpt = load_checkpoint(res.run_dir / "checkpoints" / "last.pt")
    assert ckpt["global_step"] == TRAIN_STEPS
    changed = differing_keys(ckpt["config"], resolved(cid))
    assert changed <= TRAIN_OVERRIDE_KEYS, f"the run changed more than allowed: {sorted(changed)}"
    if res.extra["upstream"]:
        assert "train.init_from" in changed
    losses = [m["loss"] for m in _metrics(res.run_dir) if m.get("kind") == "train"]
    assert losses and all(math.isfinite(v) for v in losses), losses


def _unit(values: list[Any], hi: float = 1.0) -> None:
    assert values, "no headline numbers"
    for v in values:
        assert isinstance(v, (int, float)) and 0.0 <= v <= hi, values


#: per protocol: the headline numbers of its results JSON, and their upper bound
HEADLINES: dict[str, tuple[Callable[[dict[str, Any]], list[Any]], float]] = {
    "finetune": (lambda r: [r["mean"]["clip@1"], r["mean"]["video@1"]], 1.0),
    "retrieval": (lambda r: list(r["mean"].values()), 1.0),
    "audio": (lambda r: [v["mean"] for v in r["layers"].values()], 1.0),
    "linear": (lambda r: list(r["top1"]["checkpoint"].values()), 100.0),
    "knn": (lambda r: list(r["top1"]["checkpoint"].values()), 100.0),
}


@pytest.mark.slow
@pytest.mark.parametrize("cid,protocol", EVAL_PARAMS)
def test_eval(cid: str, protocol: str, runs: Runs) -> None:
    """``avssl eval <protocol> CONFIG --checkpoint CKPT`` on the tiny labelled set: exit code
    0, a results JSON whose numbers are finite and whose headline metrics are in range."""
    _require_rule(cid)
    res = runs.evaluate(cid, protocol)
    res.check_ok()
    assert res.out is not None and res.out.is_file(), f"no results JSON at {res.out}"
    result = json.loads(res.out.read_text())
    assert not finite_numbers(result), f"non-finite numbers: {finite_numbers(result)}"
    get, hi = HEADLINES[protocol]
    _unit(get(result), hi)
