"""R(2+1)D video encoder, the variant used by AVID + CMA.

Tran et al. 2018, "A Closer Look at Spatiotemporal Convolutions for Action Recognition";
the variant is that of Morgado et al. 2021, "Audio-Visual Instance Discrimination with
Cross-Modal Agreement" (docs/reference.md section 1.2).

It differs from torchvision's ``r2plus1d_18``: each 3x3x3 conv is factorized into a (1,3,3)
spatial and a (3,1,1) temporal conv with *no* mid-channel expansion, the shortcut projection
is a 1x1x1 conv without BN, a BN + ReLU follow the residual add, and the embedding is a global
*max* pool. Module names equal the published checkpoint's, so its ``module.video_model.*``
weights load after stripping that prefix.

Shapes (width 64, depth 18), input (B, 3, 8, 224, 224)::

    conv1  (stem)  (B,  64, 8, 56, 56)   conv (3,7,7)/(1,2,2) + BN + ReLU + maxpool (1,3,3)/(1,2,2)
    conv2x         (B,  64, 8, 56, 56)
    conv3x         (B, 128, 4, 28, 28)
    conv4x         (B, 256, 2, 14, 14)
    conv5x         (B, 512, 1,  7,  7)
    forward        (B, 512)
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from avssl.models.common import Encoder, Pool, init_weights

#: blocks per stage (conv2x..conv5x) for each supported depth
R2PLUS1D_LAYERS: dict[int, tuple[int, int, int, int]] = {
    10: (1, 1, 1, 1),
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
}
STAGES = ("conv2x", "conv3x", "conv4x", "conv5x")
SPATIAL_STRIDES = (8, 16, 32)


class BasicR2P1DBlock(nn.Module):
    """Residual (2+1)D block: (B, C_in, T, H, W) -> (B, C_out, T/s_t, H/s, W/s).

    ``spt_conv1`` (1,3,3) -> BN -> ReLU -> ``tmp_conv1`` (3,1,1) -> BN -> ReLU -> ``spt_conv2``
    (1,3,3) -> BN -> ReLU -> ``tmp_conv2`` (3,1,1); add the shortcut (identity, or ``res_conv``
    1x1x1 strided, no BN); ``out_bn``; ReLU.

    The stride (s_t, s, s) is split like a factorized strided 3x3x3 conv: the spatial part on
    ``spt_conv1``, the temporal part on ``tmp_conv1``, so the block downsamples in its first
    (2+1)D pair and the second pair runs at the output resolution. ``dilation`` dilates both
    spatial convs (stages whose spatial stride was traded for resolution, see ``R2Plus1D``);
    ``first_dilation`` (default ``dilation``) is that of ``spt_conv1``, which in the first block
    of such a stage stands where the strided conv was and keeps the previous stage's dilation.
    """

    def __init__(self, in_planes: int, out_planes: int,
                 stride: tuple[int, int, int] = (1, 1, 1), dilation: int = 1,
                 first_dilation: int | None = None) -> None:
        super().__init__()
        st, sh, sw = stride
        d, d1 = dilation, first_dilation or dilation
        self.spt_conv1 = nn.Conv3d(in_planes, out_planes, (1, 3, 3), stride=(1, sh, sw),
                                   padding=(0, d1, d1), dilation=(1, d1, d1), bias=False)
        self.spt_bn1 = nn.BatchNorm3d(out_planes)
        self.tmp_conv1 = nn.Conv3d(out_planes, out_planes, (3, 1, 1), stride=(st, 1, 1),
                                   padding=(1, 0, 0), bias=False)
        self.tmp_bn1 = nn.BatchNorm3d(out_planes)
        self.spt_conv2 = nn.Conv3d(out_planes, out_planes, (1, 3, 3), padding=(0, d, d),
                                   dilation=(1, d, d), bias=False)
        self.spt_bn2 = nn.BatchNorm3d(out_planes)
        self.tmp_conv2 = nn.Conv3d(out_planes, out_planes, (3, 1, 1), padding=(1, 0, 0),
                                   bias=False)
        self.out_bn = nn.BatchNorm3d(out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.res_conv: nn.Conv3d | None = None
        if in_planes != out_planes or stride != (1, 1, 1):
            self.res_conv = nn.Conv3d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.spt_bn1(self.spt_conv1(x)))
        y = self.relu(self.tmp_bn1(self.tmp_conv1(y)))
        y = self.relu(self.spt_bn2(self.spt_conv2(y)))
        y = self.tmp_conv2(y)
        shortcut = x if self.res_conv is None else self.res_conv(x)
        return self.relu(self.out_bn(y + shortcut))


class R2Plus1D(Encoder):
    """AVID's R(2+1)D video encoder: (B, 3, T, H, W) -> (B, 8 * width).

    Args:
        depth: 10, 18 or 34 (blocks per stage (1,1,1,1), (2,2,2,2), (3,4,6,3)).
        width: channels of the stem and conv2x; the stages have width * (1, 2, 4, 8).
            64 is the published model (15,379,136 parameters at depth 18).
        pool: global pooling of conv5x into the embedding ("max", as published, or "avg").
        spatial_stride: input pixels per conv5x location: 32 (published), 16 or 8. Below 32
            the last one or two stages keep their resolution and dilate their spatial convs
            instead (Yu & Koltun 2016; torchvision's ``replace_stride_with_dilation``): the
            same weights, a 2x or 4x finer grid for sound-source localization maps.
    """

    def __init__(self, depth: int = 18, width: int = 64, pool: Pool = "max",
                 spatial_stride: int = 32) -> None:
        super().__init__()
        if depth not in R2PLUS1D_LAYERS:
            raise ValueError(f"R2Plus1D depth must be one of {sorted(R2PLUS1D_LAYERS)}, "
                             f"got {depth}")
        if spatial_stride not in SPATIAL_STRIDES:
            raise ValueError(f"R2Plus1D spatial_stride must be one of {SPATIAL_STRIDES}, "
                             f"got {spatial_stride}")
        self.depth, self.width, self.pool = depth, width, pool
        self.spatial_stride = spatial_stride
        # MaxPool padding (0,1,1) is what turns 112x112 into 56x56 (without it: 55x55).
        self.conv1 = nn.Sequential(
            nn.Conv3d(3, width, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        in_planes = width
        self.feature_dims = {}
        total, dilation = 4, 1  # the stem's stride
        for i, (name, blocks) in enumerate(zip(STAGES, R2PLUS1D_LAYERS[depth])):
            planes = width * 2**i
            stride, previous = (1, 1, 1), dilation
            if i > 0:
                if total < spatial_stride:
                    stride, total = (2, 2, 2), total * 2
                else:  # keep the resolution, dilate to keep the receptive field
                    stride, dilation = (2, 1, 1), dilation * 2
            layers = [BasicR2P1DBlock(in_planes, planes, stride, dilation, previous)]
            layers += [BasicR2P1DBlock(planes, planes, dilation=dilation)
                       for _ in range(blocks - 1)]
            setattr(self, name, nn.Sequential(*layers))
            self.feature_dims[name] = planes
            in_planes = planes
        self.out_dim = in_planes
        init_weights(self)
        self.register_load_state_dict_pre_hook(_single_block_keys)

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:
        """(B, 3, T, H, W) -> {"conv2x": (B, w, T, H/4, W/4), ..., "conv5x": (B, 8w, T/8,
        H/s, W/s)} with s = ``spatial_stride`` (sizes rounded up at each stride)."""
        feats: dict[str, Tensor] = {}
        x = self.conv1(x)
        for name in STAGES:
            x = getattr(self, name)(x)
            feats[name] = x
        return feats

    def forward_grid(self, x: Tensor) -> Tensor:
        """(B, 3, T, H, W) -> conv5x map (B, 8w, T', H', W') before pooling (localization)."""
        x = self.conv1(x)
        for name in STAGES:
            x = getattr(self, name)(x)
        return x


def _single_block_keys(module: R2Plus1D, state_dict: dict[str, Any], prefix: str,
                       *args: Any) -> None:
    """Load-time key fix: accept ``conv2x.spt_conv1.weight`` for ``conv2x.0.spt_conv1.weight``
    in one-block stages (depth 10), where the reference code may hold a bare block rather than
    a Sequential."""
    if module.depth != 10:
        return
    for key in [k for k in state_dict if k.startswith(prefix)]:
        stage, _, rest = key[len(prefix):].partition(".")
        if stage in STAGES and rest and not rest.split(".", 1)[0].isdigit():
            state_dict[f"{prefix}{stage}.0.{rest}"] = state_dict.pop(key)
