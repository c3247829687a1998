"""Compatibility names for the old ``infer.video`` module, split by concern into :mod:`.sources` (video
input), :mod:`.tracking` (the IoU tracker) and :mod:`.smoothing` (probability smoothing, flicker).
Import from those; this module goes once nothing imports it."""

from .smoothing import ProbabilitySmoother, flicker_rate, label_changes
from .sources import VIDEO_SUFFIXES, VideoFrame, VideoSource, camera_index, is_video_path
from .tracking import IoUTracker

__all__ = [
    "VIDEO_SUFFIXES",
    "IoUTracker",
    "ProbabilitySmoother",
    "VideoFrame",
    "VideoSource",
    "camera_index",
    "flicker_rate",
    "is_video_path",
    "label_changes",
]
