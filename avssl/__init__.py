"""avssl: audio-visual self-supervised learning (AVID + CMA and friends) in PyTorch."""

__version__ = "0.1.0"
