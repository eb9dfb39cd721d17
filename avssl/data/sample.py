"""SampleSpec: what one training item holds, as a method declares it (docs/design.md).

The trainer builds one :class:`avssl.data.dataset.AVClipDataset` from the spec of the method it
trains, so a new method states its sample here instead of writing a dataset. Every item decodes
its frames once (the union of the views' frames) and its audio windows once each, and draws
each view's crop/flip/jitter from its own part of the item's random stream.

Keys of an item (batched by the default collate):

- ``video`` (3, T, H, W) when ``views == 1``; ``views``: a list of ``views`` such tensors
  otherwise (each its own augmentation, of the same frames or of a shifted clip);
- ``audio`` (1, T_a, F): the window the clip sits in (``audio="same"``);
- ``audio_other`` (1, T_a, F): a window of another video (``other_audio="other_video"``) or of
  the same video at least ``other_gap`` seconds away (``"other_time"``), with
  ``other_index`` (the video it came from) and ``other_start`` (seconds);
- always ``index`` (the video's row), ``label``, ``video_start``, ``audio_start``, ``offset_s``.
"""

from __future__ import annotations

from dataclasses import dataclass

AUDIO = (None, "same")
OTHER_AUDIO = (None, "other_video", "other_time")


@dataclass(frozen=True)
class SampleSpec:
    """What one training item holds.

    views: augmented views of the clip (1: key ``video``; more: key ``views``, a list).
    view_shift: seconds; each view after the first starts up to this far from the first one
        (a whole number of the video's frames, uniform over those within the shift in either
        direction, then kept inside the video): a temporal positive. 0 (or less than one
        frame): every view shows the same frames, differently augmented.
    audio: ``"same"`` (the clip's own window, key ``audio``) or None (no audio is decoded).
    other_audio: None, ``"other_video"`` or ``"other_time"`` (key ``audio_other``).
    other_gap: seconds between the starts of the own and the ``"other_time"`` windows, at
        least (a video too short for it gives the farthest window it has).
    """

    views: int = 1
    view_shift: float = 0.0
    audio: str | None = "same"
    other_audio: str | None = None
    other_gap: float = 2.0

    def __post_init__(self) -> None:
        if self.views < 1:
            raise ValueError(f"SampleSpec.views must be >= 1, got {self.views}")
        if self.view_shift < 0 or self.other_gap < 0:
            raise ValueError("SampleSpec.view_shift and other_gap must be >= 0")
        if self.audio not in AUDIO:
            raise ValueError(f"SampleSpec.audio must be one of {AUDIO}, got {self.audio!r}")
        if self.other_audio not in OTHER_AUDIO:
            raise ValueError(f"SampleSpec.other_audio must be one of {OTHER_AUDIO}, got "
                             f"{self.other_audio!r}")

    @property
    def needs_audio(self) -> bool:
        """Whether items decode any audio (rows without audio are then skipped)."""
        return self.audio is not None or self.other_audio is not None
