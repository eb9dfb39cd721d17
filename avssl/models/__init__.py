"""Encoders (video, audio) and heads, and the builders that make them from a config.

Every encoder follows the contract of docs/design.md: ``forward(x) -> (B, out_dim)`` pooled,
``forward_features(x) -> {"conv2x": ..., "conv5x": ...}``, ``forward_grid(x)`` the last map
before pooling, attributes ``out_dim`` and ``feature_dims`` (stage name -> channels).
"""

from avssl.models.audio_cnn import AudioCNN
from avssl.models.common import Encoder, global_pool, init_weights
from avssl.models.frame import FrameEncoder
from avssl.models.heads import LinearClassifier, ProjectionHead, predictor
from avssl.models.r2plus1d import R2Plus1D
from avssl.models.registry import (
    AUDIO_ENCODERS,
    VIDEO_ENCODERS,
    build_audio_encoder,
    build_head,
    build_video_encoder,
    load_pretrained,
)
from avssl.models.resnet_audio import ResNetAudio
from avssl.models.torchvision_video import TorchvisionVideoResNet

__all__ = [
    "AUDIO_ENCODERS",
    "VIDEO_ENCODERS",
    "AudioCNN",
    "Encoder",
    "FrameEncoder",
    "LinearClassifier",
    "ProjectionHead",
    "R2Plus1D",
    "ResNetAudio",
    "TorchvisionVideoResNet",
    "build_audio_encoder",
    "build_head",
    "build_video_encoder",
    "global_pool",
    "init_weights",
    "load_pretrained",
    "predictor",
]
