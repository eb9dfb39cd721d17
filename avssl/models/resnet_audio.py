"""ResNet-18 on the (1, T, F) spectrogram, behind the encoder contract.

He et al. 2016, "Deep Residual Learning for Image Recognition"; an alternative audio encoder to
AVID's 10-layer CNN (Morgado et al. 2021). Built from torchvision's ``BasicBlock`` with
torchvision's module names (``conv1``, ``bn1``, ``layer1``..``layer4``), a 1-channel first conv
and no ``fc``; width scales every stage.

Shapes (width 64), input (B, 1, 200, 257)::

    stem (conv1 + maxpool) (B,  64, 50, 65)
    conv2x (layer1)        (B,  64, 50, 65)
    conv3x (layer2)        (B, 128, 25, 33)
    conv4x (layer3)        (B, 256, 13, 17)
    conv5x (layer4)        (B, 512,  7,  9)
    forward                (B, 512)
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, conv1x1

from avssl.models.common import Encoder, Pool, init_weights
from avssl.models.r2plus1d import R2PLUS1D_LAYERS

LAYER_TO_STAGE = {"layer1": "conv2x", "layer2": "conv3x", "layer3": "conv4x", "layer4": "conv5x"}


class ResNetAudio(Encoder):
    """2D ResNet over a spectrogram: (B, in_channels, T, F) -> (B, 8 * width).

    Args:
        depth: 10, 18 or 34 (BasicBlocks per stage as in :data:`R2PLUS1D_LAYERS`).
        width: channels of conv1/layer1; stages have width * (1, 2, 4, 8).
        in_channels: 1 for a spectrogram.
        pool: global pooling of layer4 ("max", like AVID's audio CNN, or "avg").
    """

    def __init__(self, depth: int = 18, width: int = 64, in_channels: int = 1,
                 pool: Pool = "max") -> None:
        super().__init__()
        if depth not in R2PLUS1D_LAYERS:
            raise ValueError(f"depth must be one of {sorted(R2PLUS1D_LAYERS)}, got {depth}")
        self.pool = pool
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_planes = width
        self.feature_dims = {}
        for i, (name, blocks) in enumerate(zip(LAYER_TO_STAGE, R2PLUS1D_LAYERS[depth])):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            downsample = None
            if stride != 1 or in_planes != planes:
                downsample = nn.Sequential(conv1x1(in_planes, planes, stride),
                                           nn.BatchNorm2d(planes))
            layers = [BasicBlock(in_planes, planes, stride, downsample)]
            layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
            setattr(self, name, nn.Sequential(*layers))
            self.feature_dims[LAYER_TO_STAGE[name]] = planes
            in_planes = planes
        self.out_dim = in_planes
        init_weights(self)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """(B, 1, T, F) -> {"conv2x": layer1 map, ..., "conv5x": layer4 map}."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats: dict[str, Tensor] = {}
        for layer, stage in LAYER_TO_STAGE.items():
            x = getattr(self, layer)(x)
            feats[stage] = x
        return feats

    def forward_grid(self, x: Tensor) -> Tensor:
        """(B, 1, T, F) -> layer4 map (B, 8w, T', F') before pooling."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for layer in LAYER_TO_STAGE:
            x = getattr(self, layer)(x)
        return x
