"""MobileNet v1 (Howard et al. 2017) as HSE FaceRes uses it: TensorFlow's 'SAME' padding, ReLU6, and each
BatchNorm folded into the convolution before it (a bias), as the TF.js graph model ships them.

HSE FaceRes (HSE-asavchenko/HSE_FaceRec_tf, Apache-2.0) is a MobileNet v1 (width 1.0) trained for face
identification on VGGFace2, then for age and gender; its 1024-d global-average-pooled features are what the
expression model builds on. It reads RGB pixel values in 0..255 (no scaling), which :class:`MobileNetV1` applies
itself to the [0, 1] images every ExpressNet model takes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# (output channels, stride) of the 13 depthwise-separable blocks after the 3x3/2 stem conv (32 channels)
BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow's 'SAME' padding for a square kernel: the extra pixel of an odd total goes bottom/right."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dimension first
        # only non-negative integer division: an ONNX export traces it as Div, which truncates (not floors)
        out = (size + stride - 1) // stride
        total = max((out - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class TFConv(nn.Conv2d):
    """A 3x3 (or 1x1) convolution with 'SAME' padding and a bias (the folded BatchNorm), then ReLU6."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, stride=stride, groups=groups, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size[0], self.stride[0]
        if k > 1:
            x = same_pad(x, k, s)
        return F.relu6(super().forward(x))


class MobileNetV1(nn.Module):
    """MobileNet v1 features: image (N, C, H, W) in [0, 1] -> pooled features (N, ``out_features``).

    ``input_scale`` multiplies the input first (255 for HSE FaceRes, which reads 0..255 pixel values); a gray
    input (C = 1) is repeated to RGB.
    """

    def __init__(self, input_scale: float = 255.0, width: float = 1.0) -> None:
        super().__init__()
        self.input_scale = input_scale
        stem = int(32 * width)
        self.conv1 = TFConv(3, stem, 3, 2)
        layers: list[nn.Module] = []
        cin = stem
        for cout, stride in BLOCKS:
            cout = int(cout * width)
            layers += [TFConv(cin, cin, 3, stride, groups=cin), TFConv(cin, cout, 1, 1)]
            cin = cout
        self.blocks = nn.Sequential(*layers)
        self.out_features = cin

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.blocks(self.conv1(x * self.input_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_maps(x).mean(dim=(2, 3))
