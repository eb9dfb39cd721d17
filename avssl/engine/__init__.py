"""Training engine: trainer loop, distributed helpers (:mod:`avssl.engine.distributed`),
checkpoint I/O and logging."""
