"""Instance memories: per-modality :class:`MemoryBank` (NPID / AVID-CMA) and MoCo's
:class:`Queue`, both kept identical across DDP ranks and saved in ``state_dict``."""

from avssl.memory.bank import MemoryBank, merge_duplicates, random_unit_rows
from avssl.memory.queue import Queue

__all__ = ["MemoryBank", "Queue", "merge_duplicates", "random_unit_rows"]
