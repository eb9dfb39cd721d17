"""YAML configs -> typed dataclasses.

A config file is YAML whose keys mirror the dataclasses below. ``base: other.yaml`` (relative to
the file) inherits another config; keys given here override it, dicts merge recursively. Command
line overrides are ``key.sub=value`` with YAML values (``optim.lr=1e-4``, ``data.split=null``).

Any problem (missing file, unknown key, wrong type, value out of range) raises :class:`ConfigError`
with one line naming the file and the dotted key; the CLI prints it and exits with code 2.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from avssl.utils.atomic import atomic_write_text

T = TypeVar("T")


class ConfigError(ValueError):
    """A bad config: the message is one line naming the file and the dotted key."""


def opt(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING,
        lo: float | None = None, hi: float | None = None, choices: tuple[Any, ...] | None = None,
        exists: bool = False, doc: str = "") -> Any:
    """A dataclass field with validation metadata: range ``[lo, hi]``, ``choices``, or a path
    that must ``exist``."""
    meta = {"lo": lo, "hi": hi, "choices": choices, "exists": exists, "doc": doc}
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# ----------------------------------------------------------------------------------------------
# Schema
# ----------------------------------------------------------------------------------------------
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class VideoConfig:
    """Clip geometry and augmentation (docs/reference.md section 1.1)."""

    num_frames: int = opt(8, lo=1)
    fps: float = opt(16.0, lo=0.1)
    crop_size: int = opt(112, lo=8)
    resize: int = opt(128, lo=8, doc="test-time short side before the centre crop")
    min_scale: float = opt(0.08, lo=0.0, hi=1.0, doc="RandomResizedCrop lower scale")
    flip: bool = True
    color_jitter: list[float] = opt(factory=lambda: [0.4, 0.4, 0.4, 0.2],
                                    doc="brightness, contrast, saturation, hue")
    mean: list[float] = opt(factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = opt(factory=lambda: list(IMAGENET_STD))


@dataclass
class AudioConfig:
    """Audio window and spectrogram (docs/reference.md section 1.1)."""

    sample_rate: int = opt(24000, lo=1000)
    duration: float = opt(2.0, lo=0.1, doc="seconds of audio per clip")
    feature: str = opt("linear", choices=("linear", "logmel"))
    n_fft: int = opt(1024, lo=16)
    hop_length: int = opt(240, lo=1)
    n_mels: int = opt(128, lo=1)
    num_frames: int = opt(200, lo=1, doc="spectrogram time frames kept")
    top_db: float = opt(100.0, lo=0.0)
    stats: str | None = opt(None, doc="npz with per-bin mean/std (avssl audio-stats)")
    volume_jitter: float = opt(0.1, lo=0.0, hi=1.0, doc="random gain in [1-j, 1+j]")


@dataclass
class DataConfig:
    manifest: str = opt("", exists=True, doc="manifest.jsonl written by avssl preprocess")
    split: str | None = opt("train", doc="rows of this split (null: all rows)")
    eval_split: str | None = opt("test", doc="held-out rows for evaluation")
    backend: str = opt("pyav", choices=("pyav", "decord"))
    clips_per_video: int = opt(1, lo=1)
    max_offset: float = opt(0.5, lo=0.0, doc="max seconds the video may leave the audio window")
    batch_size: int = opt(32, lo=1, doc="global batch (split across ranks)")
    num_workers: int = opt(2, lo=0)
    max_failure_fraction: float = opt(0.01, lo=0.0, hi=1.0)
    require_audio: bool = True
    video: VideoConfig = field(default_factory=VideoConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)


@dataclass
class EncoderConfig:
    arch: str = "r2plus1d"
    depth: int | None = opt(None, lo=1, doc="null: the arch's own (r2plus1d 18, audio_cnn 10)")
    width: int = opt(64, lo=1, doc="channels of the first stage (64 in the paper)")
    pretrained: str | None = None
    spatial_stride: int = opt(32, choices=(8, 16, 32),
                              doc="r2plus1d only: pixels per conv5x location (32 published; "
                                  "16/8 dilate the last stages for finer localization maps)")


@dataclass
class HeadConfig:
    hidden: list[int] = opt(factory=lambda: [512, 512])
    out_dim: int = opt(128, lo=1)
    video_grid_pool: str = opt("off", choices=("off", "max", "avg"),
                               doc="off: pool conv5x, then project (published); max/avg: "
                                   "project every conv5x location and pool the projections, "
                                   "so training shapes the space localization maps live in")
    bn: bool = opt(False, doc="BatchNorm after each hidden layer (SimCLR, BYOL)")


@dataclass
class ModelConfig:
    video: EncoderConfig = field(default_factory=EncoderConfig)
    audio: EncoderConfig = field(
        default_factory=lambda: EncoderConfig(arch="audio_cnn"))
    head: HeadConfig = field(default_factory=HeadConfig)


@dataclass
class OptimConfig:
    name: str = opt("adam", choices=("adam", "adamw", "sgd"))
    lr: float = opt(2e-4, lo=0.0)
    weight_decay: float = opt(1e-5, lo=0.0)
    momentum: float = opt(0.9, lo=0.0, hi=1.0)
    schedule: str = opt("constant", choices=("constant", "cosine", "step"))
    milestones: list[int] = opt(factory=list)
    gamma: float = opt(0.1, lo=0.0)
    warmup_epochs: float = opt(0.0, lo=0.0)
    grad_clip: float | None = opt(None, lo=0.0)


@dataclass
class TrainConfig:
    epochs: int = opt(30, lo=0, doc="0: no training steps (fine-tuning: the warm-up only)")
    amp: str = opt("none", choices=("none", "bf16", "fp16"))
    channels_last: bool = False
    deterministic: bool = False
    checkpoint_every_steps: int = opt(0, lo=0, doc="0: only at epoch ends")
    max_steps: int = opt(0, lo=0, doc="stop after this many optimizer steps in all (0: no "
                                      "limit), checkpointed and resumable; the lr schedule "
                                      "still spans train.epochs")
    log_every_steps: int = opt(10, lo=1)
    print_every_seconds: float = opt(30.0, lo=0.0, doc="progress line interval when the "
                                                        "output is not a terminal")
    eval_retrieval: bool = True
    init_from: str | None = opt(None, doc="checkpoint to start from (weights, banks, Z), e.g. "
                                          "the AVID run CMA continues; ignored on --resume")


@dataclass
class Config:
    """A whole run: data, model, method, optimizer, trainer."""

    seed: int = 0
    run_dir: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: dict[str, Any] = opt(factory=lambda: {"name": "avid"},
                                 doc="the training method's settings: `name` and that "
                                     "method's own keys (validated by avssl.methods)")
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: dict[str, Any] = opt(factory=dict, doc="the evaluation protocol's settings (an "
                                                 "`eval` section, validated by `avssl eval`)")


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------
def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read one YAML file and, recursively, its ``base``; return the merged dict."""
    path = path.resolve()
    if path in chain:
        raise ConfigError(f"{path}: base: circular inheritance via {chain[-1]}")
    if not path.is_file():
        where = f"{chain[-1]}: base: " if chain else ""
        raise ConfigError(f"{where}config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: expected a file name, got {base!r}")
    parent = _read_yaml(path.parent / base, (*chain, path))
    return _merge(parent, data)


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"optim.lr=1e-4"`` -> (["optim", "lr"], 1e-4)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key.sub=value")
    key, _, raw = item.partition("=")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _apply_override(d: dict[str, Any], keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        nxt = d.get(k)
        if not isinstance(nxt, dict):
            nxt = d[k] = {}
        d = nxt
    d[keys[-1]] = value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str, src: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert int->float and numeric strings."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key, src)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{src}: {key}: expected a mapping, got {value!r}")
        return _build(tp, value, key, src)
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{src}: {key}: expected a list, got {value!r}")
        return [_convert(v, item_tp, f"{key}[{i}]", src) for i, v in enumerate(value)]
    if origin is dict or tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str and isinstance(value, str):
        return value
    raise ConfigError(f"{src}: {key}: expected {_type_name(tp)}, got {value!r}")


def _build(cls: type[T], values: dict[str, Any], prefix: str, src: str) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for k, v in values.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in fields:
            close = difflib.get_close_matches(str(k), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(fields)})"
            raise ConfigError(f"{src}: {key}: unknown key{hint}")
        val = _convert(v, hints[k], key, src)
        _check(fields[k].metadata, val, key, src)
        kwargs[k] = val
    return cls(**kwargs)


def _check(meta: Any, val: Any, key: str, src: str) -> None:
    if val is None or not meta:
        return
    lo, hi, choices = meta.get("lo"), meta.get("hi"), meta.get("choices")
    if choices is not None and val not in choices:
        raise ConfigError(f"{src}: {key}: {val!r} is not one of {list(choices)}")
    if isinstance(val, (int, float)) and not isinstance(val, bool):
        if lo is not None and val < lo:
            raise ConfigError(f"{src}: {key}: {val} is below the minimum {lo}")
        if hi is not None and val > hi:
            raise ConfigError(f"{src}: {key}: {val} is above the maximum {hi}")


def _check_required(obj: Any, prefix: str, src: str) -> None:
    for f in dataclasses.fields(obj):
        val = getattr(obj, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(val):
            _check_required(val, key, src)
        elif f.metadata.get("exists") and val == "":
            raise ConfigError(f"{src}: {key}: required (path to an existing file)")
        elif f.metadata.get("exists") and isinstance(val, str) and not Path(val).exists():
            raise ConfigError(f"{src}: {key}: file not found: {val}")


def from_dict(values: dict[str, Any], cls: type[T] = Config, src: str = "<config>",  # type: ignore[assignment]
              require_paths: bool = True, prefix: str = "") -> T:
    """Build a typed config from a plain dict (validated like a file); ``prefix`` is the
    dotted key of the section in error messages (e.g. ``method``)."""
    cfg = _build(cls, values, prefix, src)
    if require_paths:
        _check_required(cfg, "", src)
    return cfg


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = (),
                cls: type[T] = Config, require_paths: bool = True) -> T:  # type: ignore[assignment]
    """Load ``path`` (following ``base``), apply ``key.sub=value`` overrides, validate."""
    data = _read_yaml(Path(path))
    for item in overrides:
        keys, value = parse_override(item)
        _apply_override(data, keys, value)
    src = str(path) + (" (with overrides)" if overrides else "")
    return from_dict(data, cls, src, require_paths)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def dump_config(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config (every default filled in) atomically."""
    atomic_write_text(path, dump_config(cfg))
