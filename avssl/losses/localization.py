"""Multiple-instance audio-visual contrast: a sound against the best-matching place in each video.

Mo & Morgado 2022, "Localizing Visual Sounds the Easy Way" (EZ-VSL). A video is a bag of
locations (the video head applied at every conv5x location); its similarity with a sound is the
largest cosine over the bag, so only the location that explains the sound has to agree with it
and the localization map (the cosine at every location) is what the loss trains. In-batch
InfoNCE in both directions: video i against every sound of the batch, sound i against every
video.

Side-by-side pairs (:func:`side_by_side`, :func:`split_pairs`; not in EZ-VSL): two clips placed
next to each other form one input, and each clip's half of the location grid is its bag. The other
half of the same input is then a negative bag that sees the same receptive fields across the seam,
so a location scores high for a sound only if what lies *at* that location explains it; bags of
whole clips cannot teach that when every location's receptive field covers the whole frame.

Distributed policy: anchors are this process's clips, candidates are the clips of every process
(autograd-aware gather, :func:`avssl.utils.distributed.all_gather_grad`); with DDP's gradient
averaging this is exactly the loss of one process holding the global batch. Pairs are formed
within each process's batch, so this holds for them too when every process's batch is even.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from avssl.utils import distributed as D


def mil_similarity(video_loc: Tensor, audio: Tensor) -> Tensor:
    """Max over locations of the dot product: (Nv, L, D) x (Na, D) -> (Nv, Na).

    With L2-normalized inputs this is the largest cosine between a sound and any location.
    """
    return torch.einsum("vld,ad->val", video_loc, audio).amax(dim=-1)


def mil_contrastive_loss(video_loc: Tensor, audio: Tensor, temperature: float,
                         video_all: Tensor | None = None, audio_all: Tensor | None = None,
                         offset: int = 0) -> Tensor:
    """Symmetric multiple-instance InfoNCE, scalar.

    video_loc: (B, L, D) normalized location embeddings of the anchors' videos; audio: (B, D)
    normalized embeddings of their sounds; ``video_all`` (N, L, D) / ``audio_all`` (N, D) the
    candidates (default: the anchors themselves), in which anchor b sits at row ``offset + b``.
    ``loss = (CE(S[b, :] / T, offset + b) + CE(S[:, b] / T, offset + b)) / 2`` averaged over the
    anchors, with S[v, a] = :func:`mil_similarity` (fp32 even under autocast).
    """
    video_all = video_loc if video_all is None else video_all
    audio_all = audio if audio_all is None else audio_all
    with torch.autocast(device_type=audio.device.type, enabled=False):
        v, a = video_loc.float(), audio.float()
        v_all, a_all = video_all.float(), audio_all.float()
        target = torch.arange(offset, offset + v.shape[0], device=v.device)
        v2a = mil_similarity(v, a_all) / temperature  # (B, N): my videos vs every sound
        a2v = mil_similarity(v_all, a).T / temperature  # (B, N): my sounds vs every video
        return 0.5 * (F.cross_entropy(v2a, target) + F.cross_entropy(a2v, target))


def mil_contrastive_loss_global(video_loc: Tensor, audio: Tensor, temperature: float) -> Tensor:
    """:func:`mil_contrastive_loss` with the candidates gathered from every process (a single
    process: its own batch)."""
    if not D.is_dist() or D.world_size() == 1:
        return mil_contrastive_loss(video_loc, audio, temperature)
    offset = D.rank_offset(video_loc.shape[0], video_loc.device)
    return mil_contrastive_loss(video_loc, audio, temperature, D.all_gather_grad(video_loc),
                                D.all_gather_grad(audio), offset)


def side_by_side(video: Tensor) -> Tensor:
    """Pairs of neighbouring clips as single inputs: (B, C, T, H, W) -> (B // 2, C, T, H, 2W),
    clip 2k on the left of clip 2k + 1 (with an odd B the last clip is left out). Neighbours,
    so that with even per-process batches the pairs of DDP processes are those of one process
    holding the global batch."""
    p = video.shape[0] // 2
    return torch.cat([video[0:2 * p:2], video[1:2 * p:2]], dim=-1)


def split_pairs(locations: Tensor) -> Tensor:
    """Bags of the two clips of each :func:`side_by_side` input, in clip order: (P, T', H', W2, D)
    location embeddings -> (2P, T' H' (W2 // 2), D), row 2k the left half of input k and row
    2k + 1 its right half. An odd grid width leaves out the middle column, which straddles both
    clips."""
    w = locations.shape[3] // 2
    left = locations[:, :, :, :w].flatten(1, 3)
    right = locations[:, :, :, locations.shape[3] - w:].flatten(1, 3)
    return torch.stack([left, right], dim=1).flatten(0, 1)
