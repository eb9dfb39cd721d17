"""AVID: audio-visual instance discrimination against per-modality memory banks.

Morgado, Vasconcelos, Misra. "Audio-Visual Instance Discrimination with Cross-Modal Agreement",
CVPR 2021. Each video instance i owns a row in a video bank and an audio bank. The published
(cross-modal) variant scores the video embedding against the audio bank and the audio embedding
against the video bank; the positive is instance i's own row, K negatives are drawn uniformly.
Self-modal (video vs video bank, audio vs audio bank) and joint (both) are the paper's ablations.

Distributed policy: every rank draws its own negatives; the banks are updated with the
all-gathered embeddings so all ranks hold identical banks (see :mod:`avssl.memory.bank`); the
noise constant Z is estimated on the first batch, averaged across ranks, then frozen.

Optional (``method.localization_weight`` > 0, not in the paper): the multiple-instance term of
:mod:`avssl.losses.localization` (EZ-VSL) is added, to train sound-source localization maps;
``localization_pairs`` computes it on clips placed side by side in pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from avssl.config import Config, ConfigError, opt
from avssl.data.sample import SampleSpec
from avssl.losses.localization import mil_contrastive_loss_global, side_by_side, split_pairs
from avssl.losses.nce import NCEConstant, info_nce_loss, nce_loss
from avssl.memory.bank import MemoryBank
from avssl.methods.base import AVEncoders, float32
from avssl.methods.contract import Method, MethodSettings
from avssl.utils import distributed as D

# term name -> (embedding, memory bank): "v2a" scores the video embedding against the audio bank
_PAIRS = {"v2a": ("v", "audio"), "a2v": ("a", "video"), "v2v": ("v", "video"),
          "a2a": ("a", "audio")}
TERMS = {"cross": ("v2a", "a2v"), "self": ("v2v", "a2a"), "joint": ("v2a", "a2v", "v2v", "a2a")}


@dataclass
class AVIDSettings(MethodSettings):
    """``method:`` keys of AVID (docs/reference.md section 1.3)."""

    name: str = "avid"
    variant: str = opt("cross", choices=("cross", "self", "joint"))
    loss: str = opt("nce", choices=("nce", "infonce"))
    temperature: float = opt(0.07, lo=1e-4)
    num_negatives: int = opt(1024, lo=1)
    memory_momentum: float = opt(0.5, lo=0.0, hi=1.0)
    localization_weight: float = opt(0.0, lo=0.0,
                                     doc="weight of an in-batch multiple-instance term (EZ-VSL): "
                                         "each sound vs the best-matching location of every "
                                         "video; trains the localization maps directly")
    localization_pairs: bool = opt(False,
                                   doc="compute the multiple-instance term on pairs of clips "
                                       "placed side by side, each clip's half its own bag (one "
                                       "more video forward per step)")


def sample(settings: AVIDSettings) -> SampleSpec:
    """One clip and its own audio window per item."""
    return SampleSpec()


class ContrastTerm(nn.Module):
    """One embedding-vs-bank NCE term with its own frozen noise constant log Z."""

    def __init__(self) -> None:
        super().__init__()
        self.z = NCEConstant()

    def forward(self, emb: Tensor, bank: MemoryBank, pos_idx: Tensor, neg_idx: Tensor,
                temperature: float, loss: str) -> Tensor:
        """emb (B, D) normalized; pos_idx (B, P); neg_idx (B, K) -> scalar loss."""
        emb = float32(emb)
        # Autocast would run the einsums (bmm) in bf16/fp16 whatever the input dtype: score in
        # fp32 (bf16 rounds cos/T near 1/0.07 by up to 0.06).
        with torch.autocast(device_type=emb.device.type, enabled=False):
            pos = torch.einsum("bd,bpd->bp", emb, float32(bank.rows(pos_idx))) / temperature
            neg = torch.einsum("bd,bkd->bk", emb, float32(bank.rows(neg_idx))) / temperature
        if loss == "infonce":
            return info_nce_loss(pos, neg)
        log_z = self.z(neg.detach(), bank.num_rows)  # estimated on the first batch, then frozen
        return nce_loss(pos, neg, log_z, bank.num_rows)


class AVID(Method):
    """Encoders + heads, a memory bank per modality, and the AVID objective."""

    def __init__(self, cfg: Config, settings: AVIDSettings, num_rows: int) -> None:
        super().__init__()
        m = settings
        if m.localization_pairs and m.localization_weight <= 0:
            raise ConfigError("method.localization_pairs: the pairs feed the multiple-instance "
                              "term, which is off; set method.localization_weight > 0")
        world = D.world_size()
        if m.localization_pairs and cfg.data.batch_size // world < 2:
            raise ConfigError(f"method.localization_pairs: pairs need 2 clips per process or "
                              f"more; data.batch_size {cfg.data.batch_size} over {world} "
                              f"process(es) gives {cfg.data.batch_size // world}")
        self.cfg = m
        self.encoders = AVEncoders(cfg)
        dim = self.encoders.embed_dim
        self.memory = nn.ModuleDict({
            "video": MemoryBank(num_rows, dim, momentum=m.memory_momentum, seed=cfg.seed),
            "audio": MemoryBank(num_rows, dim, momentum=m.memory_momentum, seed=cfg.seed + 1),
        })
        self.num_negatives = min(m.num_negatives, num_rows - 1)
        self.terms = nn.ModuleDict({name: ContrastTerm() for name in TERMS[m.variant]})

    def instance_terms(self, emb: dict[str, Tensor], idx: Tensor) -> dict[str, Tensor]:
        """Instance discrimination: positive = own row, K uniform negatives (self excluded)."""
        neg_idx = self.memory["video"].sample_negatives(idx, self.num_negatives)
        out = {}
        for name, term in self.terms.items():
            e, b = _PAIRS[name]
            out[f"loss_{name}"] = term(emb[e], self.memory[b], idx[:, None], neg_idx,
                                       self.cfg.temperature, self.cfg.loss)
        return out

    def update_memory(self, emb: dict[str, Tensor], idx: Tensor) -> None:
        self.memory["video"].update(idx, emb["v"].detach())
        self.memory["audio"].update(idx, emb["a"].detach())

    def embed(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Embeddings {"v": (B, D), "a": (B, D)} and the localization term when
        ``method.localization_weight`` > 0 ({"loss_mil": scalar}, else {})."""
        if self.cfg.localization_weight <= 0:
            v, a = self.encoders(batch)
            return {"v": v, "a": a}, {}
        if self.cfg.localization_pairs:
            v, a = self.encoders(batch)
            bags = split_pairs(self.encoders.embed_locations(side_by_side(batch["video"])))
            return {"v": v, "a": a}, {"loss_mil": mil_contrastive_loss_global(
                bags, a[:bags.shape[0]], self.cfg.temperature)}
        v, locs = self.encoders.embed_video_and_locations(batch["video"])
        a = self.encoders.embed_audio(batch["audio"])
        assert locs is not None
        return {"v": v, "a": a}, {"loss_mil": mil_contrastive_loss_global(
            locs, a, self.cfg.temperature)}

    def localization_loss(self, extra: dict[str, Tensor]) -> Tensor | float:
        return self.cfg.localization_weight * extra["loss_mil"] if extra else 0.0

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """batch: video (B,3,T,H,W), audio (B,1,T_a,F), index (B,) -> {loss, loss_<term>...}."""
        emb, extra = self.embed(batch)
        idx = batch["index"].to(emb["v"].device)
        parts = self.instance_terms(emb, idx)
        loss = torch.stack(list(parts.values())).mean() + self.localization_loss(extra)
        self.update_memory(emb, idx)  # after scoring: the positive is the bank's old row
        return {"loss": loss, **parts, **extra}
