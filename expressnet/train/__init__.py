"""Training: configuration and recipes, the loop, augmentation, EMA, distributed helpers, run logging."""
