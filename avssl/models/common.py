"""Pieces shared by the encoders: weight init, global pooling, the encoder base class."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

Pool = Literal["max", "avg"]


def init_weights(module: nn.Module) -> None:
    """Initialize every conv with Kaiming-normal (fan_out, ReLU), every BN with weight 1 and bias 0.

    Same scheme as torchvision's ResNets. Linear layers keep PyTorch's default init. The
    published AVID code uses PyTorch defaults; Kaiming fan_out trains at least as well and makes
    the untrained demo encoders less degenerate.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def global_pool(x: Tensor, mode: Pool = "max") -> Tensor:
    """(B, C, *spatial) -> (B, C): global max or average over every non-channel axis.

    A reduction instead of AdaptiveMaxPool*d: it is layout-agnostic (channels_last) and works
    for any dtype under autocast.
    """
    dims = tuple(range(2, x.ndim))
    if mode == "max":
        return x.amax(dim=dims)
    if mode == "avg":
        return x.mean(dim=dims)
    raise ValueError(f"pool must be 'max' or 'avg', got {mode!r}")


class Encoder(nn.Module):
    """Base of every encoder (docs/design.md, "Encoder").

    Subclasses set ``out_dim``, ``feature_dims`` (stage name -> channels, in order) and
    ``pool``, and implement :meth:`forward_features`. ``forward`` pools the last map.
    """

    out_dim: int
    feature_dims: dict[str, int]
    pool: Pool
    #: name of the last stage, the one pooled into the embedding
    last_stage: str = "conv5x"

    def forward_features(self, x: Tensor) -> dict[str, Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_grid(self, x: Tensor) -> Tensor:
        """The last stage's map before pooling, (B, out_dim, *grid)."""
        return self.forward_features(x)[self.last_stage]

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, ...) -> (B, out_dim), globally pooled."""
        return global_pool(self.forward_grid(x), self.pool)

