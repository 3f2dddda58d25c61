"""Node classifiers with one estimator API: baselines and GraphMNL."""

from .registry import create, get_method, method_names, methods

__all__ = ["create", "get_method", "method_names", "methods"]
