"""FaPN Lab core library: faithful FaPN/FPN segmentation models, checkpoints, metrics and introspection.

No Streamlit imports here: the app in ``app/`` and ``pages/`` is a thin layer over this package.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "build_model", "list_models", "get_model_config"]


def __getattr__(name: str):
    # Lazy: importing fapn_core (e.g. for metrics) must not import torch.
    if name in ("build_model", "list_models", "get_model_config"):
        from .models import zoo

        return getattr(zoo, name)
    raise AttributeError(name)
