"""ExpressNet: facial expression recognition with ExpressNet-MoE (arXiv 2510.13493)."""

from .nn import ExpressNetConfig, ExpressNetMoE, create_model, list_presets

__version__ = "0.1.0"

__all__ = ["ExpressNetConfig", "ExpressNetMoE", "__version__", "create_model", "list_presets"]
