"""Batched, seeded data augmentation on float image tensors (N, C, H, W) in [0, 1].

All randomness comes from an explicit ``torch.Generator`` so that a run (and a resumed run, and every
rank of a distributed run) draws exactly the same augmentations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    """Geometric, photometric and erasing augmentation; all off (zeros) for the paper recipe."""

    flip: float = 0.0  # probability of a horizontal flip
    rotate: float = 0.0  # max rotation, degrees
    scale: float = 0.0  # zoom in [1 - scale, 1 + scale]
    translate: float = 0.0  # max shift, fraction of the side
    brightness: float = 0.0  # additive, +- this
    contrast: float = 0.0  # multiplicative around the mean, 1 +- this
    erase: float = 0.0  # probability of random erasing (Zhong et al. 2017)
    erase_area: tuple[float, float] = (0.02, 0.25)

    @property
    def geometric(self) -> bool:
        return bool(self.flip or self.rotate or self.scale or self.translate)


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g) * (high - low) + low


def augment(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Augment a batch. Random draws happen on the CPU generator, so results do not depend on the device."""
    n = x.shape[0]
    if cfg.geometric:
        angle = _uniform(n, -cfg.rotate, cfg.rotate, g) * math.pi / 180
        zoom = _uniform(n, 1 - cfg.scale, 1 + cfg.scale, g)
        tx, ty = _uniform(n, -cfg.translate, cfg.translate, g) * 2, _uniform(n, -cfg.translate, cfg.translate, g) * 2
        flip = torch.where(torch.rand(n, generator=g) < cfg.flip, -1.0, 1.0)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
        )  # (N, 2, 3): output -> input sampling grid
        grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if cfg.brightness or cfg.contrast:
        b = _uniform(n, -cfg.brightness, cfg.brightness, g).view(n, 1, 1, 1).to(x)
        c = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, g).view(n, 1, 1, 1).to(x)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = ((x - mean) * c + mean + b).clamp(0, 1)
    if cfg.erase:
        x = random_erase(x, cfg.erase, cfg.erase_area, g)
    return x


def random_erase(x: torch.Tensor, p: float, area: tuple[float, float], g: torch.Generator) -> torch.Tensor:
    """Replace one random rectangle per chosen image with uniform noise."""
    n, _, h, w = x.shape
    chosen = torch.rand(n, generator=g) < p
    frac = _uniform(n, *area, g)
    aspect = torch.exp(_uniform(n, math.log(0.3), math.log(3.3), g))
    eh = (torch.sqrt(frac * aspect) * h).clamp(1, h).long()
    ew = (torch.sqrt(frac / aspect) * w).clamp(1, w).long()
    top = (torch.rand(n, generator=g) * (h - eh + 1)).long()
    left = (torch.rand(n, generator=g) * (w - ew + 1)).long()
    noise = torch.rand(x.shape, generator=g).to(x)
    rows = torch.arange(h).view(1, h, 1)
    cols = torch.arange(w).view(1, 1, w)
    mask = (
        (rows >= top.view(n, 1, 1))
        & (rows < (top + eh).view(n, 1, 1))
        & (cols >= left.view(n, 1, 1))
        & (cols < (left + ew).view(n, 1, 1))
        & chosen.view(n, 1, 1)
    )
    return torch.where(mask.unsqueeze(1).to(x.device), noise, x)


def mix(
    x: torch.Tensor, target: torch.Tensor, mixup: float, cutmix: float, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp or CutMix (chosen 50/50 when both are on) with soft targets (N, K); identity when both are 0."""
    if not (mixup or cutmix):
        return x, target
    n = x.shape[0]
    perm = torch.randperm(n, generator=g).to(x.device)
    use_cutmix = bool(cutmix) and (not mixup or bool(torch.rand(1, generator=g) < 0.5))
    alpha = cutmix if use_cutmix else mixup
    lam = _beta(alpha, g)
    if use_cutmix:
        h, w = x.shape[2:]
        ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(torch.randint(h, (1,), generator=g)), int(torch.randint(w, (1,), generator=g))
        y0, y1, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = x[perm, :, y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = lam * x + (1 - lam) * x[perm]
    return x, lam * target + (1 - lam) * target[perm]


def _beta(alpha: float, g: torch.Generator) -> float:
    """A Beta(alpha, alpha) draw determined by the generator."""
    return float(np.random.default_rng(int(torch.randint(2**31, (1,), generator=g))).beta(alpha, alpha))
