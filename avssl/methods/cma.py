"""CMA: cross-modal agreement, AVID's second stage (Morgado et al., CVPR 2021).

Instances whose video AND audio memories are both close to instance i's form i's positive set:
agreement(i, j) = min(video_sim(i, j), audio_sim(i, j)), top ``num_positives`` (self excluded).
The loss mixes the cross-modal instance NCE of AVID with a within-modal NCE in which the
positive-set memories are positives against ``positive_negatives`` negatives drawn outside the
set. Training starts from an AVID checkpoint (``train.init_from``); the sets are re-mined every
``resample_every`` epochs and saved with the checkpoint.

Mining never builds the N x N matrix: rows are processed in chunks, so memory is
O(chunk * N + N * k); the chunk is ``mining_chunk`` rows at most and small enough for the two
(chunk, N) buffers to fit in ``mining_memory_gb`` (AudioSet, N = 1.78M: 4096 rows would take
58 GB; the 4 GB default gives 280 rows). Every rank mines from its identical banks, so the sets
agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from avssl.config import Config, ConfigError, opt
from avssl.methods.avid import _PAIRS, AVID, AVIDSettings, ContrastTerm


@dataclass
class CMASettings(AVIDSettings):
    """``method:`` keys of CMA: AVID's (the instance terms) and the positive sets'
    (docs/reference.md section 1.4)."""

    name: str = "cma"
    num_positives: int = opt(32, lo=1)
    positive_negatives: int = opt(64, lo=1, doc="negatives for the positive-set NCE")
    resample_every: int = opt(5, lo=1, doc="epochs between positive-set mining")
    cross_weight: float = opt(0.5, lo=0.0)
    within_weight: float = opt(0.5, lo=0.0)
    mining_chunk: int = opt(4096, lo=1, doc="rows per CMA mining chunk, at most")
    mining_memory_gb: float = opt(4.0, lo=0.0, doc="memory for the two (chunk, N) mining "
                                                   "buffers; sets the chunk below mining_chunk")


def mining_chunk_rows(n: int, max_rows: int, memory_gb: float, bytes_per_value: int = 4) -> int:
    """Rows per mining chunk: at most ``max_rows`` and ``n``, and the two (chunk, n) buffers of
    :func:`mine_positive_sets` within ``memory_gb`` (at least 1 row)."""
    fit = int(memory_gb * 1e9) // (2 * n * bytes_per_value)
    return max(1, min(max_rows, n, fit))


@torch.no_grad()
def mine_positive_sets(video_mem: Tensor, audio_mem: Tensor, k: int, chunk: int = 4096) -> Tensor:
    """Top-``k`` cross-modal agreement neighbours of every row, self excluded.

    video_mem, audio_mem: (N, D) L2-normalized memories. Returns (N, k) long, sorted by
    decreasing agreement. Time O(N^2 D), memory O(chunk * N).
    """
    n = video_mem.shape[0]
    if k >= n:
        raise ValueError(f"num_positives={k} must be smaller than the number of instances ({n})")
    out = torch.empty(n, k, dtype=torch.long, device=video_mem.device)
    chunk = min(chunk, n)
    # Two reused (chunk, N) buffers: fresh blocks per chunk cost page faults and a third block.
    sim = torch.empty(chunk, n, dtype=video_mem.dtype, device=video_mem.device)
    other = torch.empty_like(sim)
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        c = e - s
        torch.mm(video_mem[s:e], video_mem.T, out=sim[:c])
        torch.mm(audio_mem[s:e], audio_mem.T, out=other[:c])
        agree = torch.minimum(sim[:c], other[:c], out=sim[:c])
        agree[torch.arange(c), torch.arange(s, e)] = -float("inf")  # self is no positive
        out[s:e] = agree.topk(k, dim=1).indices
    return out


class CMA(AVID):
    """AVID encoders and banks + positive sets mined by cross-modal agreement."""

    def __init__(self, cfg: Config, settings: CMASettings, num_rows: int) -> None:
        super().__init__(cfg, settings, num_rows)
        m = settings
        self.cfg: CMASettings = settings
        if m.variant != "cross":
            raise ConfigError(f"method.variant: CMA builds on the cross-modal AVID variant, "
                              f"got {m.variant!r}")
        self.num_positives = min(m.num_positives, num_rows - 2)
        self.num_within_negatives = min(m.positive_negatives, num_rows - self.num_positives - 1)
        self.register_buffer("positive_set",
                             torch.full((num_rows, self.num_positives), -1, dtype=torch.long))
        self.register_buffer("mined_epoch", torch.tensor(-1))
        self.within = nn.ModuleDict({"v2v": ContrastTerm(), "a2a": ContrastTerm()})

    def on_epoch_start(self, epoch: int) -> dict[str, float]:
        """Re-mine every ``resample_every`` epochs (and whenever no sets exist yet)."""
        never = int(self.mined_epoch) < 0
        if not never and (epoch % self.cfg.resample_every != 0 or int(self.mined_epoch) == epoch):
            return {}
        t0 = time.perf_counter()
        video, audio = self.memory["video"].memory, self.memory["audio"].memory
        chunk = mining_chunk_rows(video.shape[0], self.cfg.mining_chunk,
                                  self.cfg.mining_memory_gb, video.element_size())
        sets = mine_positive_sets(video, audio, self.num_positives, chunk)
        self.positive_set.copy_(sets)
        self.mined_epoch.fill_(epoch)
        return {"cma_mining_s": time.perf_counter() - t0}

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """batch: video, audio, index -> {loss, instance and positive-set terms}."""
        if int(self.mined_epoch) < 0:
            raise RuntimeError("CMA positive sets were never mined: call on_epoch_start first")
        emb, extra = self.embed(batch)
        idx = batch["index"].to(emb["v"].device)
        cross = self.instance_terms(emb, idx)
        pos = self.positive_set[idx]  # (B, P)
        excluded = torch.cat([idx[:, None], pos], dim=1)
        neg = self.memory["video"].sample_negatives_excluding(excluded, self.num_within_negatives)
        within = {}
        for name, term in self.within.items():
            e, b = _PAIRS[name]
            within[f"loss_{name}_pos"] = term(emb[e], self.memory[b], pos, neg,
                                              self.cfg.temperature, self.cfg.loss)
        loss = (self.cfg.cross_weight * torch.stack(list(cross.values())).mean()
                + self.cfg.within_weight * torch.stack(list(within.values())).mean()
                + self.localization_loss(extra))
        self.update_memory(emb, idx)
        return {"loss": loss, **cross, **within, **extra}


def positive_set_purity(positive_set: Tensor, labels: Tensor) -> float:
    """Fraction of positive-set members sharing the anchor's label (a check on synthetic data).

    positive_set: (N, P) long; labels: (N,) long, -1 for unknown (ignored).
    """
    known = labels >= 0
    same = labels[positive_set] == labels[:, None]
    return float(same[known].float().mean()) if known.any() else float("nan")
