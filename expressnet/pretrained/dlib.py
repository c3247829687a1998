"""Convert dlib's serialized face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) to
:class:`expressnet.nn.backbones.dlib_resnet.DlibResNet` (work in progress: written by the dlib converter task)."""

from __future__ import annotations

from pathlib import Path

import torch

from .tfjs import ConversionError


def dlib_resnet_state(path: str | Path) -> dict[str, torch.Tensor]:
    raise ConversionError(f"{path}: the dlib converter is not written yet")
