"""Linear probe on frozen features: per layer BatchNorm (no affine) + linear classifier.

docs/reference.md sec. 4.2: frozen encoder, features max-pooled from conv2x..conv5x, BN + linear per
layer, top-1 reported for each layer. All layers' classifiers train together in one loop over
the cached feature tensors (full batch or mini-batches), so a probe takes seconds on CPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avssl.config import opt
from avssl.eval.features import LAYERS

#: below this many feature values, CPU training runs on one thread: the probe's ops are tiny and
#: OpenMP threads spin-waiting on busy shared cores made it 100x slower (measured: 9 s vs 0.09 s)
SINGLE_THREAD_BELOW = 4_000_000


@dataclass
class LinearSettings:
    """The ``eval`` section of ``avssl eval linear`` (or ``eval.*`` overrides; a command-line
    flag of the same name wins). Unknown keys and out-of-range values are config errors."""

    steps: int = opt(300, lo=1, doc="optimizer steps (cosine schedule over them)")
    lr: float = opt(1e-2, lo=0.0)
    weight_decay: float = opt(1e-4, lo=0.0)
    optimizer: str = opt("adam", choices=("adam", "sgd"), doc="sgd: momentum 0.9")
    probe_batch_size: int | None = opt(None, lo=1, doc="null: full batch (deterministic)")
    layers: list[str] = opt(factory=lambda: list(LAYERS), doc="encoder stages probed")


@contextlib.contextmanager
def _cpu_threads(device: torch.device, numel: int) -> Iterator[None]:
    """One intra-op thread for small CPU problems; the previous count is restored."""
    if device.type != "cpu" or numel >= SINGLE_THREAD_BELOW:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class LayerProbes(nn.Module):
    """One ``BatchNorm1d(affine=False) -> Linear(C_layer, num_classes)`` per layer."""

    def __init__(self, dims: Mapping[str, int], num_classes: int) -> None:
        super().__init__()
        # momentum=None: cumulative average, the exact statistics of the (fixed) train features
        self.probes = nn.ModuleDict({
            name: nn.Sequential(nn.BatchNorm1d(d, affine=False, momentum=None),
                                nn.Linear(d, num_classes))
            for name, d in dims.items()})

    def forward(self, feats: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """{layer: (B, C_layer)} -> {layer: logits (B, num_classes)}."""
        return {name: p(feats[name]) for name, p in self.probes.items()}


def train_linear_probes(train_feats: Mapping[str, Tensor], train_labels: Tensor,
                        num_classes: int | None = None, steps: int = 300, lr: float = 1e-2,
                        weight_decay: float = 1e-4, optimizer: str = "adam",
                        batch_size: int | None = None, seed: int = 0,
                        device: torch.device | str = "cpu") -> LayerProbes:
    """Fit every layer's probe on ``train_feats`` ({layer: (N, C_layer)}) and labels (N,).

    ``batch_size`` None: full batch (deterministic); else random mini-batches. ``optimizer``:
    "adam" or "sgd" (momentum 0.9). Returns the probes in eval mode.
    """
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    labels = train_labels.long()
    if (labels < 0).any():
        raise ValueError("linear probe: every train video needs a label (found -1)")
    c = int(num_classes if num_classes is not None else int(labels.max()) + 1)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        probes = LayerProbes({k: v.shape[1] for k, v in train_feats.items()}, c)
    device = torch.device(device)
    probes.to(device).train()
    x = {k: v.float().to(device) for k, v in train_feats.items()}
    y = labels.to(device)
    params = list(probes.parameters())
    opt: torch.optim.Optimizer = (
        torch.optim.Adam(params, lr=lr, weight_decay=weight_decay) if optimizer == "adam"
        else torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps))
    with _cpu_threads(device, sum(v.numel() for v in x.values())):
        _fit(probes, opt, sched, x, y, steps, batch_size, gen)
    return probes.eval()


def _fit(probes: LayerProbes, opt: torch.optim.Optimizer,
         sched: torch.optim.lr_scheduler.LRScheduler, x: dict[str, Tensor], y: Tensor,
         steps: int, batch_size: int | None, gen: torch.Generator) -> None:
    n = y.shape[0]
    device = y.device
    for _ in range(steps):
        if batch_size is None or batch_size >= n:
            xb, yb = x, y
        else:
            sel = torch.randperm(n, generator=gen)[:batch_size].to(device)
            xb, yb = {k: v[sel] for k, v in x.items()}, y[sel]
        logits = probes(xb)
        loss = sum(F.cross_entropy(v, yb) for v in logits.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[union-attr]
        opt.step()
        sched.step()


@torch.no_grad()
def probe_top1(probes: LayerProbes, feats: Mapping[str, Tensor], labels: Tensor
               ) -> dict[str, float]:
    """Top-1 accuracy (percent) of each layer's probe on ({layer: (M, C)}, labels (M,))."""
    device = next(probes.parameters()).device
    probes.eval()
    logits = probes({k: v.float().to(device) for k, v in feats.items()})
    y = labels.long().to(device)
    return {k: 100.0 * float((v.argmax(1) == y).float().mean()) for k, v in logits.items()}


def linear_probe(train_feats: Mapping[str, Tensor], train_labels: Tensor,
                 test_feats: Mapping[str, Tensor], test_labels: Tensor,
                 **kwargs: object) -> dict[str, float]:
    """Train per-layer probes and return test top-1 (percent) per layer.

    Shapes: train_feats {layer: (N, C)}, train_labels (N,), test_feats {layer: (M, C)},
    test_labels (M,). ``kwargs`` go to :func:`train_linear_probes`.
    """
    num_classes = int(max(int(train_labels.max()), int(test_labels.max()))) + 1
    kwargs.setdefault("num_classes", num_classes)
    probes = train_linear_probes(train_feats, train_labels, **kwargs)  # type: ignore[arg-type]
    return probe_top1(probes, test_feats, test_labels)
