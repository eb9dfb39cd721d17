"""torchvision's R(2+1)D-18 and R3D-18 behind the encoder contract, with width scaling.

Tran et al. 2018, "A Closer Look at Spatiotemporal Convolutions for Action Recognition".
Built from torchvision's own blocks (``torchvision.models.video.resnet``) with the same module
names (``stem``, ``layer1``..``layer4``), so torchvision's Kinetics weights load without the
``fc.*`` keys. Nothing is ever downloaded. Unlike AVID's variant (``r2plus1d.py``) the blocks
have torchvision's mid-channel expansion, BN on the shortcut and no stem max-pool.

Shapes (width 64), input (B, 3, 8, 112, 112)::

    stem            (B,  64, 8, 56, 56)
    conv2x (layer1) (B,  64, 8, 56, 56)
    conv3x (layer2) (B, 128, 4, 28, 28)
    conv4x (layer3) (B, 256, 2, 14, 14)
    conv5x (layer4) (B, 512, 1,  7,  7)
    forward         (B, 512)
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn
from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, Conv3DSimple

from avssl.models.common import Encoder, Pool, init_weights
from avssl.models.r2plus1d import R2PLUS1D_LAYERS

TvArch = Literal["r2plus1d_18", "r3d_18"]
LAYER_TO_STAGE = {"layer1": "conv2x", "layer2": "conv3x", "layer3": "conv4x", "layer4": "conv5x"}


def _stem(arch: TvArch, width: int) -> nn.Sequential:
    """torchvision's R2Plus1dStem / BasicStem with the channel counts scaled by width / 64."""
    if arch == "r3d_18":
        return nn.Sequential(
            nn.Conv3d(3, width, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
        )
    mid = max(1, round(45 * width / 64))  # torchvision hard-codes 45 mid channels at width 64
    return nn.Sequential(
        nn.Conv3d(3, mid, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
        nn.BatchNorm3d(mid),
        nn.ReLU(inplace=True),
        nn.Conv3d(mid, width, (3, 1, 1), padding=(1, 0, 0), bias=False),
        nn.BatchNorm3d(width),
        nn.ReLU(inplace=True),
    )


def _layer(conv: type[nn.Module], in_planes: int, planes: int, blocks: int,
           stride: int) -> nn.Sequential:
    """A stage of torchvision BasicBlocks (same structure as ``VideoResNet._make_layer``)."""
    downsample = None
    if stride != 1 or in_planes != planes:
        downsample = nn.Sequential(
            nn.Conv3d(in_planes, planes, 1, stride=conv.get_downsample_stride(stride),  # type: ignore[attr-defined]
                      bias=False),
            nn.BatchNorm3d(planes),
        )
    layers = [BasicBlock(in_planes, planes, conv, stride, downsample)]
    layers += [BasicBlock(planes, planes, conv) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class TorchvisionVideoResNet(Encoder):
    """torchvision ``r2plus1d_18`` / ``r3d_18`` trunk: (B, 3, T, H, W) -> (B, 8 * width).

    Args:
        arch: "r2plus1d_18" (factorized (2+1)D convs) or "r3d_18" (full 3x3x3 convs).
        depth: blocks per stage as in :data:`R2PLUS1D_LAYERS` (18 is torchvision's model).
        width: stem/layer1 channels; stages have width * (1, 2, 4, 8). 64 is torchvision's.
        pool: global pooling of conv5x ("max" by default, like the AVID encoder, so that
            swapping the arch changes one thing; torchvision's classifier uses "avg").
    """

    def __init__(self, arch: TvArch = "r2plus1d_18", depth: int = 18, width: int = 64,
                 pool: Pool = "max") -> None:
        super().__init__()
        if arch not in ("r2plus1d_18", "r3d_18"):
            raise ValueError(f"arch must be 'r2plus1d_18' or 'r3d_18', got {arch!r}")
        if depth not in R2PLUS1D_LAYERS:
            raise ValueError(f"depth must be one of {sorted(R2PLUS1D_LAYERS)}, got {depth}")
        self.arch, self.pool = arch, pool
        conv = Conv2Plus1D if arch == "r2plus1d_18" else Conv3DSimple
        self.stem = _stem(arch, width)
        in_planes = width
        self.feature_dims = {}
        for i, (name, blocks) in enumerate(zip(LAYER_TO_STAGE, R2PLUS1D_LAYERS[depth])):
            planes = width * 2**i
            setattr(self, name, _layer(conv, in_planes, planes, blocks, 1 if i == 0 else 2))
            self.feature_dims[LAYER_TO_STAGE[name]] = planes
            in_planes = planes
        self.out_dim = in_planes
        init_weights(self)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """(B, 3, T, H, W) -> {"conv2x": layer1 map, ..., "conv5x": layer4 map}."""
        x = self.stem(x)
        feats: dict[str, Tensor] = {}
        for layer, stage in LAYER_TO_STAGE.items():
            x = getattr(self, layer)(x)
            feats[stage] = x
        return feats

    def forward_grid(self, x: Tensor) -> Tensor:
        """(B, 3, T, H, W) -> layer4 map (B, 8w, T', H', W') before pooling."""
        x = self.stem(x)
        for layer in LAYER_TO_STAGE:
            x = getattr(self, layer)(x)
        return x
