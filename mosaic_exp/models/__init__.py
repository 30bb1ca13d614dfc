"""Model loaders and architecture adapters."""

from mosaic_exp.models.adapters import ADAPTERS, ArchAdapter, get_adapter
from mosaic_exp.models.loader import ModelUnavailableError, check_model_available, load_model

__all__ = ["ADAPTERS", "ArchAdapter", "get_adapter", "ModelUnavailableError", "check_model_available",
           "load_model"]
