"""Losses as pure functions of logits / embeddings (shapes documented per function)."""

from avssl.losses.nce import NCEConstant, estimate_log_z, info_nce_loss, nce_loss

__all__ = ["NCEConstant", "estimate_log_z", "info_nce_loss", "nce_loss"]
