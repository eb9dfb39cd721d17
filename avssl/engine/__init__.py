"""Training engine: the trainer loop, optimizers and schedules, device/precision policy, run
logging. (Distributed helpers and checkpoint I/O sit lower, in :mod:`avssl.utils`, where
losses, memory banks and models may use them.)"""
