"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``, Davis King, CC0) in PyTorch.

dlib defines it (``dnn_face_recognition_ex.cpp``) as::

    block<N, stride>  = affine(con<N,3x3,1>(relu(affine(con<N,3x3,stride>(x)))))
    ares<N>           = relu(x + block<N,1>(x))
    ares_down<N>      = relu(avg_pool<2x2,2>(x) + block<N,2>(x))
    net = fc_no_bias<128>(avg_pool_everything(
              ares_down<256>(ares<256> x2 (ares_down<256>(ares<128> x2 (ares_down<128>(ares<64> x3 (ares_down<64>(
              ares<32> x3 (max_pool<3x3,2>(relu(affine(con<32,7x7,2>(input_rgb_image_sized<150>))))))))))))))

with dlib's conventions, which this module reproduces exactly:

- a convolution or pooling with stride 2 has no padding, a stride-1 3x3 convolution pads 1;
- ``add_prev`` adds tensors of different shapes by treating what one lacks as zeros (the shortcut has fewer
  channels, the strided block one row and column fewer than the pooled shortcut at odd sizes);
- ``affine`` is a BatchNorm folded into a per-channel scale and shift;
- the input layer maps RGB pixels p to (p - mean) / 256 with dlib's channel means.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

MEAN_RGB = (122.782, 117.001, 104.298)  # dlib's input_rgb_image: avg_red, avg_green, avg_blue
# (filters, down) of each residual unit, input side first
UNITS = (
    (32, False),
    (32, False),
    (32, False),
    (64, True),
    (64, False),
    (64, False),
    (64, False),
    (128, True),
    (128, False),
    (128, False),
    (256, True),
    (256, False),
    (256, False),
    (256, True),
)


class Affine(nn.Module):
    """dlib's ``affine`` layer: y = x * gamma + beta per channel (an inference-mode BatchNorm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum over the larger shape, each tensor zero-padded (channels, bottom, right)."""
    shape = [max(x, y) for x, y in zip(a.shape, b.shape)]

    def grow(t: torch.Tensor) -> torch.Tensor:
        pads = [0, shape[3] - t.shape[3], 0, shape[2] - t.shape[2], 0, shape[1] - t.shape[1]]
        return F.pad(t, pads) if any(pads) else t

    return grow(a) + grow(b)


class Unit(nn.Module):
    """``ares`` (down=False) or ``ares_down`` (down=True)."""

    def __init__(self, cin: int, cout: int, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.bn1 = Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.bn2 = Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(add_zero_padded(shortcut, out))


class DlibResNet(nn.Module):
    """Image (N, C, S, S) in [0, 1] -> average-pooled 256-d features. dlib's 128-d face descriptor is its
    ``fc_no_bias`` layer on them (``fc.weight`` in the converted file, which backbones do not use). 150 px is
    the size dlib was trained at."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(MEAN_RGB).view(1, 3, 1, 1) / 255.0, persistent=False)
        self.conv1 = nn.Conv2d(3, 32, 7, stride=2)
        self.bn1 = Affine(32)
        units = []
        cin = 32
        for cout, down in UNITS:
            units.append(Unit(cin, cout, down))
            cin = cout
        self.units = nn.Sequential(*units)
        self.out_features = 256

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = (x - self.mean) * (255.0 / 256.0)
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2)
        return self.units(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_maps(x).mean(dim=(2, 3))
