"""Losses as pure functions of logits / embeddings (shapes documented per function)."""

from avssl.losses.byol import byol_loss
from avssl.losses.correspondence import correspondence_loss
from avssl.losses.localization import mil_contrastive_loss, mil_contrastive_loss_global
from avssl.losses.nce import NCEConstant, estimate_log_z, info_nce_loss, nce_loss
from avssl.losses.ntxent import nt_xent, nt_xent_global

__all__ = ["NCEConstant", "byol_loss", "correspondence_loss", "estimate_log_z", "info_nce_loss",
           "mil_contrastive_loss", "mil_contrastive_loss_global", "nce_loss", "nt_xent",
           "nt_xent_global"]
