"""A 2-D image encoder applied to every frame of a clip: the image pretext tasks (SimCLR, BYOL,
rotation, jigsaw, ...) reused on video frames, behind the video-encoder contract.

Input (B, 3, T, H, W) -> every frame through the 2-D backbone as a batch of B*T images
(einops ``rearrange``) -> stage maps put back as (B, C, T, h, w). So the encoder has the same
``forward`` / ``forward_features`` / ``forward_grid`` as the 3-D encoders and can stand
wherever a video encoder is expected (probes, localization, AVID); ``forward`` pools over time
and space. A single frame is a clip of T = 1.

Backbones: torchvision ResNet-18/50 (He et al. CVPR 2016; randomly initialized, no weights are
downloaded), or ``small`` (a 4-stage CNN of plain 3x3 convolutions whose ``width`` scales, for
tests and CPU runs). Stages are named ``conv2x`` .. ``conv5x`` like the video
encoders (torchvision's ``layer1`` .. ``layer4``).
"""

from __future__ import annotations

from collections.abc import Callable

from einops import rearrange
from torch import Tensor, nn

from avssl.models.common import Encoder, Pool, init_weights

STAGES = ("conv2x", "conv3x", "conv4x", "conv5x")


def _resnet(depth: int, width: int) -> tuple[nn.Module, list[nn.Module], list[int]]:
    """Stem and the four stages of torchvision's ResNet-18/50 (random init); ``width`` must be
    its 64 (the ``small`` backbone is the one to shrink)."""
    from torchvision.models import resnet18, resnet50

    if width != 64:
        raise ValueError(f"resnet{depth} frame encoders have width 64, got {width} "
                         "(use backbone 'small' for a narrower encoder)")
    net = resnet18() if depth == 18 else resnet50()
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    expansion = 1 if depth == 18 else 4
    return stem, [net.layer1, net.layer2, net.layer3, net.layer4], \
        [64 * m * expansion for m in (1, 2, 4, 8)]


def _small(width: int) -> tuple[nn.Module, list[nn.Module], list[int]]:
    """A tiny CNN: stem conv, then four stages of one strided 3x3 conv + BN + ReLU."""
    def conv(c_in: int, c_out: int, stride: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
                             nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))

    dims = [width, 2 * width, 4 * width, 8 * width]
    stages = [conv(c_in, c_out, 1 if i == 0 else 2)
              for i, (c_in, c_out) in enumerate(zip([width, *dims[:-1]], dims))]
    return conv(3, width, 2), stages, dims


BACKBONES: dict[str, Callable[[int], tuple[nn.Module, list[nn.Module], list[int]]]] = {
    "resnet18": lambda width: _resnet(18, width),
    "resnet50": lambda width: _resnet(50, width),
    "small": _small,
}


class FrameEncoder(Encoder):
    """A 2-D backbone per frame: (B, 3, T, H, W) -> stage maps (B, C, T, h, w); pooled (B, C).

    Args:
        backbone: ``resnet18``, ``resnet50`` or ``small``.
        width: channels of the first stage (64 in the published ResNets).
        pool: global pooling over time and space for :meth:`forward` (max, like every
            encoder of the package; "avg" is the usual image-model choice).
    """

    def __init__(self, backbone: str = "resnet18", width: int = 64, pool: Pool = "max") -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown frame backbone {backbone!r} (known: {list(BACKBONES)})")
        stem, stages, dims = BACKBONES[backbone](width)
        self.stem = stem
        self.stages = nn.ModuleDict(dict(zip(STAGES, stages)))
        self.feature_dims = dict(zip(STAGES, dims))
        self.out_dim, self.pool, self.backbone = dims[-1], pool, backbone
        init_weights(self)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """(B, 3, T, H, W) -> {stage: (B, C, T, h, w)}; a (B, 3, H, W) image is one frame."""
        if x.ndim == 4:
            x = x.unsqueeze(2)
        b = x.shape[0]
        h = self.stem(rearrange(x, "b c t h w -> (b t) c h w"))
        out = {}
        for name, stage in self.stages.items():
            h = stage(h)
            out[name] = rearrange(h, "(b t) c h w -> b c t h w", b=b)
        return out
