"""Noise-contrastive estimation against a memory bank (Wu et al. 2018, NPID; as used by Morgado
et al. 2021, AVID-CMA) and the InfoNCE alternative.

Logits are ``cosine / temperature``. NPID models the instance probability ``s = exp(logit) / Z``
with a constant ``Z`` (estimated on the first batch, then frozen) and noise ``Pn = 1/N`` for a
bank of N rows. With K negatives, the posterior that a pair came from the data is
``h = s / (s + K*Pn)``, and

    loss = mean_batch[ -mean_P log h(pos) - sum_K log(1 - h(neg)) ].

docs/reference.md section 1.3 writes the same thing with raw exponentials: ``s / (s + K/N)`` with
``s = exp(logit) / Z`` equals ``exp(logit) / (exp(logit) + K * Z / N)``, i.e. its noise constant
is ``Z / N`` = the mean of ``exp(logit)`` over the negatives. We compute it in log space:
with ``x = logit - log Z`` and ``c = log(K / N)``, ``-log h = softplus(c - x)`` and
``-log(1 - h) = softplus(x - c)``; no overflow, and no ``eps`` is needed (the reference adds
1e-7 to the denominators, a difference far below float precision for realistic values).
Losses are computed in fp32 even under bf16/fp16 autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from avssl.utils.distributed import all_gather_nograd


def _full(x: Tensor) -> Tensor:
    """Half precisions -> fp32; fp32/fp64 unchanged (so gradcheck can run in fp64)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check(pos_logits: Tensor, neg_logits: Tensor) -> Tensor:
    pos = pos_logits.unsqueeze(1) if pos_logits.dim() == 1 else pos_logits
    if pos.dim() != 2 or neg_logits.dim() != 2 or pos.shape[0] != neg_logits.shape[0]:
        raise ValueError(f"expected pos (B, P) and neg (B, K), got {tuple(pos_logits.shape)} "
                         f"and {tuple(neg_logits.shape)}")
    if pos.shape[1] < 1 or neg_logits.shape[1] < 1:
        raise ValueError("need at least one positive and one negative per row")
    return pos


def nce_loss(pos_logits: Tensor, neg_logits: Tensor, log_z: float | Tensor,
             num_rows: int) -> Tensor:
    """NPID NCE loss (Wu et al. 2018), scalar.

    pos_logits: (B, P) or (B,), cosine/temperature of each positive (several: terms averaged).
    neg_logits: (B, K), the same for K negatives drawn uniformly from the N = ``num_rows`` rows.
    log_z: the frozen normalizer log Z (see :func:`estimate_log_z`); no gradient flows into it.
    """
    pos = _check(pos_logits, neg_logits)
    if num_rows < 1:
        raise ValueError(f"num_rows must be >= 1, got {num_rows}")
    with torch.autocast(device_type=pos.device.type, enabled=False):
        pos, neg = _full(pos), _full(neg_logits)
        # A Python float goes straight to the logits' dtype (as_tensor alone would round it
        # to fp32 first).
        lz = torch.as_tensor(log_z, dtype=pos.dtype, device=pos.device).detach()
        c = math.log(neg.shape[1] / num_rows)  # log(K * Pn)
        pos_term = F.softplus(c - (pos - lz)).mean(dim=1)  # -mean_P log h(pos)
        neg_term = F.softplus((neg - lz) - c).sum(dim=1)  # -sum_K log(1 - h(neg))
        return (pos_term + neg_term).mean()


@torch.no_grad()
def estimate_log_z(neg_logits: Tensor, num_rows: int) -> Tensor:
    """log Z with Z = N * mean(exp(neg_logits)) (NPID), averaged over ranks; a 0-d tensor.

    neg_logits: (B, K) (any shape). Under DDP each rank's Z is averaged in linear space (equal to
    the global-batch estimate when ranks have equal batches), so every rank gets the same value.
    """
    if num_rows < 1:
        raise ValueError(f"num_rows must be >= 1, got {num_rows}")
    if neg_logits.numel() == 0:
        raise ValueError("cannot estimate Z from no logits")
    with torch.autocast(device_type=neg_logits.device.type, enabled=False):
        neg = _full(neg_logits.detach()).reshape(-1)
        log_mean = torch.logsumexp(neg, 0) - math.log(neg.numel())  # log mean exp, stable
        per_rank = all_gather_nograd(log_mean.reshape(1))
        log_mean = torch.logsumexp(per_rank, 0) - math.log(per_rank.numel())
        return log_mean + math.log(num_rows)


class NCEConstant(nn.Module):
    """The frozen NCE normalizer: ``log_z`` is estimated on the first call, then kept.

    ``log_z`` is a persistent buffer (NaN until estimated), so it is saved with the checkpoint
    and a resumed run does not re-estimate it. Under DDP call it on every rank (the first call
    does a collective).
    """

    log_z: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("log_z", torch.tensor(float("nan")))
        self._known = False  # cached so the check does not sync the device every step

    @property
    def initialized(self) -> bool:
        if not self._known:
            self._known = not bool(torch.isnan(self.log_z))
        return self._known

    def forward(self, neg_logits: Tensor, num_rows: int) -> Tensor:
        """neg_logits (B, K) -> log Z, a 0-d tensor (estimated from ``neg_logits`` the first
        time only)."""
        if not self.initialized:
            self.log_z.copy_(estimate_log_z(neg_logits, num_rows))
            self._known = True
        return self.log_z

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(*args, **kwargs)
        self._known = False


def info_nce_loss(pos_logits: Tensor, neg_logits: Tensor) -> Tensor:
    """InfoNCE / cross-entropy (Oord et al. 2018), scalar: each positive against the K negatives.

    pos_logits: (B, P) or (B,); neg_logits: (B, K). Per positive,
    ``-log(exp(pos_p) / (exp(pos_p) + sum_K exp(neg_k)))``, averaged over P then the batch.
    """
    pos = _check(pos_logits, neg_logits)
    with torch.autocast(device_type=pos.device.type, enabled=False):
        pos, neg = _full(pos), _full(neg_logits)
        lse_neg = torch.logsumexp(neg, dim=1, keepdim=True)  # (B, 1)
        return (torch.logaddexp(pos, lse_neg) - pos).mean()
