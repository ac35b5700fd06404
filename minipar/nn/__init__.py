"""Layers and losses in PyTorch's names (``minipar.nn``, ``minipar.nn.functional``)."""

from minipar.nn import functional
from minipar.nn.activation import GELU, Flatten, ReLU, Sigmoid, Tanh
from minipar.nn.containers import Sequential
from minipar.nn.conv import Conv2d
from minipar.nn.dropout import Dropout
from minipar.nn.embedding import Embedding
from minipar.nn.linear import Linear
from minipar.nn.module import Module, Parameter
from minipar.nn.normalization import LayerNorm
from minipar.nn.pooling import MaxPool2d

__all__ = [
    "Conv2d", "Dropout", "Embedding", "Flatten", "GELU", "LayerNorm", "Linear", "MaxPool2d", "Module",
    "Parameter", "ReLU", "Sequential", "Sigmoid", "Tanh", "functional",
]


def __getattr__(name: str) -> object:
    """PyTorch's paths to what lives in ``minipar.parallel`` (DESIGN.md's named exceptions to the
    layers), resolved when first asked for: ``nn.DataParallel``, ``nn.parallel``."""
    if name == "DataParallel":
        from minipar.parallel.data_parallel.dataparallel import DataParallel

        return DataParallel
    if name == "parallel":
        import importlib

        return importlib.import_module("minipar.nn.parallel")
    raise AttributeError(f"module 'minipar.nn' has no attribute {name!r}")
