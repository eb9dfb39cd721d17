"""Training state beside the weights: per-modality :class:`MemoryBank` (NPID / AVID-CMA), MoCo's
:class:`Queue` and EMA targets (BYOL, MoCo's key encoder), all kept identical across DDP ranks
and saved in ``state_dict``."""

from avssl.memory.bank import MemoryBank, merge_duplicates, random_unit_rows
from avssl.memory.ema import cosine_momentum, ema_target, ema_update_
from avssl.memory.queue import Queue

__all__ = ["MemoryBank", "Queue", "cosine_momentum", "ema_target", "ema_update_",
           "merge_duplicates", "random_unit_rows"]
