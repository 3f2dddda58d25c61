"""Node classifiers with one estimator API: baselines and GraphMNL."""

from .persistence import load_estimator, save_estimator
from .registry import create, get_method, method_names, methods

__all__ = ["create", "get_method", "load_estimator", "method_names", "methods", "save_estimator"]
