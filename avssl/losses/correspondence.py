"""Audio-visual correspondence: a 2-way classification of (video, audio) pairs.

Arandjelovic & Zisserman, "Look, Listen and Learn", ICCV 2017 (L3-Net). Class 1: the audio is
the video's own (the same moment of the same video); class 0: it is not (another video, or,
harder, the same video far in time). The loss is the cross-entropy of the classifier's two
logits, averaged over every pair; the corresponding and the mismatched pairs come in equal
numbers, so chance is 50 % accuracy and ``log 2`` (0.693) loss.

Computed in fp32 with autocast off, even when the logits come from a bf16/fp16 classifier
(fp64 logits stay fp64, so gradcheck can run).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from avssl.losses.precision import full_precision


def correspondence_loss(logits_pos: Tensor, logits_neg: Tensor) -> tuple[Tensor, Tensor]:
    """Cross-entropy of the correspondence classifier and its accuracy.

    logits_pos: (B, 2), the classifier's logits for the B corresponding pairs (target 1).
    logits_neg: (B', 2), the logits for the B' mismatched pairs (target 0); B' = B in AVC.

    Returns ``(loss, acc)``, both 0-d: the cross-entropy averaged over the B + B' pairs
    (``-log softmax(logits)[target]``), and the percentage of pairs whose larger logit is the
    target's (a tie counts as class 0); ``acc`` carries no gradient.
    """
    for name, x in (("logits_pos", logits_pos), ("logits_neg", logits_neg)):
        if x.dim() != 2 or x.shape[1] != 2 or x.shape[0] < 1:
            raise ValueError(f"{name}: expected (B, 2) logits with B >= 1, got "
                             f"{tuple(x.shape)}")
    with torch.autocast(device_type=logits_pos.device.type, enabled=False):
        pos, neg = full_precision(logits_pos), full_precision(logits_neg)
        logits = torch.cat([pos, neg.to(pos.dtype)])  # (B + B', 2)
        target = torch.cat([torch.ones(pos.shape[0], dtype=torch.long, device=pos.device),
                            torch.zeros(neg.shape[0], dtype=torch.long, device=pos.device)])
        loss = F.cross_entropy(logits, target)
        with torch.no_grad():
            pred = (logits[:, 1] > logits[:, 0]).long()
            acc = (pred == target).float().mean() * 100.0
    return loss, acc
