"""The 10-layer 2D audio CNN of AVID + CMA, on a (1, T, F) spectrogram.

Morgado et al. 2021, "Audio-Visual Instance Discrimination with Cross-Modal Agreement"
(docs/reference.md section 1.2). A plain (non-residual) VGG-like stack: conv1 (7x7, stride 2)
then four blocks of two 3x3 convs, each conv followed by BN and ReLU, global max pool.
Module names equal the published checkpoint's (``module.audio_model.*`` after stripping).

Shapes (width 64), input (B, 1, 200, 257) = (batch, 1, time frames, frequency bins)::

    conv1   (B,  64, 100, 129)
    block1  (B,  64,  50,  65)   stride 2
    block2  (B, 128,  25,  33)   stride 2
    block3  (B, 256,  13,  17)   stride 2
    block4  (B, 512,  13,  17)   stride 1
    forward (B, 512)

The reference text lists no max-pool after conv1 and the key list cannot tell (a pool has no
parameters); we follow the text: conv, BN, ReLU only.
"""

from __future__ import annotations

from torch import Tensor, nn

from avssl.models.common import Encoder, Pool, init_weights

BLOCKS = ("block1", "block2", "block3", "block4")
#: aliases so video-style probes (conv2x..conv5x) run unchanged on audio
ALIASES = {"conv2x": "block1", "conv3x": "block2", "conv4x": "block3", "conv5x": "block4"}


class Basic2DBlock(nn.Module):
    """(B, C_in, T, F) -> (B, C_out, T/s, F/s): conv3x3(stride s) BN ReLU conv3x3 BN ReLU."""

    def __init__(self, in_planes: int, out_planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(x)))


class AudioCNN(Encoder):
    """AVID's audio encoder: (B, 1, T, F) spectrogram -> (B, 8 * width).

    Args:
        width: channels of conv1 and block1; blocks have width * (1, 2, 4, 8).
            64 is the published model (4,725,696 parameters).
        in_channels: input channels (1 for a spectrogram).
        pool: global pooling of block4 ("max", as published, or "avg").
    """

    last_stage = "block4"

    def __init__(self, width: int = 64, in_channels: int = 1, pool: Pool = "max") -> None:
        super().__init__()
        self.width, self.pool = width, pool
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        self.block1 = Basic2DBlock(width, width, stride=2)
        self.block2 = Basic2DBlock(width, 2 * width, stride=2)
        self.block3 = Basic2DBlock(2 * width, 4 * width, stride=2)
        self.block4 = Basic2DBlock(4 * width, 8 * width, stride=1)
        self.out_dim = 8 * width
        dims = {"conv1": width, "block1": width, "block2": 2 * width, "block3": 4 * width,
                "block4": 8 * width}
        self.feature_dims = dims | {a: dims[b] for a, b in ALIASES.items()}
        init_weights(self)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """(B, 1, T, F) -> {"conv1", "block1".."block4"} maps, plus the aliases
        "conv2x".."conv5x" (the same tensors as block1..block4)."""
        x = self.conv1(x)
        feats = {"conv1": x}
        for name in BLOCKS:
            x = getattr(self, name)(x)
            feats[name] = x
        return feats | {a: feats[b] for a, b in ALIASES.items()}

    def forward_grid(self, x: Tensor) -> Tensor:
        """(B, 1, T, F) -> block4 map (B, 8w, T', F') before pooling."""
        x = self.conv1(x)
        for name in BLOCKS:
            x = getattr(self, name)(x)
        return x
