"""AVC: audio-visual correspondence, L3-Net style (docs/reference.md section 2.1).

Arandjelovic & Zisserman, "Look, Listen and Learn", ICCV 2017. A network is shown a video and a
sound and says whether they belong together. Every item gives one corresponding pair (its clip
and the audio window the clip sits in, class 1) and one mismatched pair (the same clip with the
audio of another video, class 0), so the two classes are exactly balanced. The video and audio
embeddings (B, D) (encoders + projection heads, L2-normalized, :class:`AVEncoders`) are
concatenated (B, 2D) and passed through a fusion MLP (``fusion_hidden``, ReLU after each layer;
[128] as published) and a linear 2-way classifier; the loss is the cross-entropy of
:func:`avssl.losses.correspondence.correspondence_loss`, logged with the accuracy ``acc_corr``
(%; chance 50).

Differences from the paper: the visual input is the data's clip (a single frame with
``data.video.num_frames: 1`` and a frame encoder) and the audio is the data's window (1 s in
L3); embeddings pass through the projection heads, so that evaluation and localization load the
same checkpoint layout as AVID. ``negatives: other_time`` takes the mismatched audio from the
same video at least ``other_gap`` seconds away (AVTS's hard negatives, Korbar et al. 2018,
section 2.2): a sound of the same scene at another moment, which the classifier can only
reject by the timing of events.

Both audio windows pass through the audio encoder in one batch (2B), so BatchNorm normalizes
the corresponding and the mismatched sounds with the same statistics (separate passes would let
the classifier tell the two batches apart by their normalization).

Distributed policy: pairs are formed within each item (its clip, its own window, its other
window), so nothing is gathered; each rank's loss is the mean over its pairs and DDP averages
the gradients. Every parameter (both encoders, both heads, the fusion MLP and the classifier)
is used by the loss, so DDP sees no unused parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from avssl.config import Config, ConfigError, opt
from avssl.data.sample import SampleSpec
from avssl.losses.correspondence import correspondence_loss
from avssl.methods.base import AVEncoders
from avssl.methods.contract import Method, MethodSettings


@dataclass
class AVCSettings(MethodSettings):
    """``method:`` keys of AVC (docs/reference.md section 2.1)."""

    name: str = "avc"
    negatives: str = opt("other_video", choices=("other_video", "other_time"),
                         doc="audio of the mismatched pair: another video (L3), or the same "
                             "video at least other_gap seconds away (harder, AVTS-like)")
    other_gap: float = opt(2.0, lo=0.0, doc="seconds between the starts of the own and the "
                                            "mismatched window, at least (other_time only)")
    fusion_hidden: list[int] = opt(factory=lambda: [128],
                                   doc="hidden sizes of the fusion MLP, each followed by ReLU; "
                                       "then a 2-way linear classifier")


def sample(settings: AVCSettings) -> SampleSpec:
    """The clip, its own audio window, and a window of another video (or time)."""
    return SampleSpec(audio="same", other_audio=settings.negatives,
                      other_gap=settings.other_gap)


def fusion_mlp(in_dim: int, hidden: list[int]) -> nn.Sequential:
    """(N, in_dim) -> (N, 2) logits: Linear + ReLU per ``hidden`` size, then a 2-way Linear."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU(inplace=True)]
        d = h
    layers.append(nn.Linear(d, 2))
    return nn.Sequential(*layers)


class AVC(Method):
    """Encoders + heads, a fusion MLP and the correspondence classifier."""

    def __init__(self, cfg: Config, settings: AVCSettings, num_rows: int) -> None:
        super().__init__()
        bad = [h for h in settings.fusion_hidden if not isinstance(h, int) or h < 1]
        if bad:
            raise ConfigError(f"method.fusion_hidden: sizes must be integers >= 1, got "
                              f"{settings.fusion_hidden}")
        self.cfg = settings
        self.encoders = AVEncoders(cfg, ("video", "audio"))
        self.fusion = fusion_mlp(2 * self.encoders.embed_dim, list(settings.fusion_hidden))

    def classify(self, v: Tensor, a: Tensor) -> Tensor:
        """Embeddings v (B, D), a (B, D) -> correspondence logits (B, 2) (index 1: they
        correspond)."""
        return self.fusion(torch.cat([v, a], dim=1))

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """batch: video (B,3,T,H,W), audio (B,1,T_a,F), audio_other (B,1,T_a,F) ->
        {loss, acc_corr} (0-d)."""
        b = batch["audio"].shape[0]
        v = self.encoders.embed_video(batch["video"])  # (B, D)
        a = self.encoders.embed_audio(torch.cat([batch["audio"], batch["audio_other"]]))
        a_pos, a_neg = a[:b], a[b:]  # (B, D) each
        loss, acc = correspondence_loss(self.classify(v, a_pos), self.classify(v, a_neg))
        return {"loss": loss, "acc_corr": acc}
