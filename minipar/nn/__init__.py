"""Layers and losses in PyTorch's names (``minipar.nn``, ``minipar.nn.functional``, ``minipar.nn.init``).

``nn.SyncBatchNorm`` lives in ``minipar/parallel/sync_batchnorm.py`` (it talks to a
communicator) and is looked up lazily here, by the module ``__getattr__`` below, so
importing ``minipar.nn`` never imports ``parallel`` or ``comm`` (DESIGN.md, Layout).
"""


from minipar.nn import functional, init
from minipar.nn.activation import GELU, Flatten, ReLU, Sigmoid, Tanh
from minipar.nn.avg_pooling import AdaptiveAvgPool2d, AvgPool2d
from minipar.nn.batchnorm import BatchNorm1d, BatchNorm2d
from minipar.nn.containers import Identity, ModuleDict, ModuleList, Sequential
from minipar.nn.conv import Conv2d
from minipar.nn.dropout import Dropout
from minipar.nn.embedding import Embedding
from minipar.nn.linear import Linear
from minipar.nn.loss import (
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    L1Loss,
    MSELoss,
    NLLLoss,
    SmoothL1Loss,
)
from minipar.nn.module import Module, Parameter
from minipar.nn.normalization import LayerNorm
from minipar.nn.pooling import MaxPool2d
from minipar.nn.rectifiers import LeakyReLU, SiLU
from minipar.nn.softmax_layers import LogSoftmax, Softmax

__all__ = [
    "AdaptiveAvgPool2d", "AvgPool2d", "BCELoss", "BCEWithLogitsLoss", "BatchNorm1d", "BatchNorm2d",
    "Conv2d", "CrossEntropyLoss", "Dropout", "Embedding", "Flatten", "GELU", "Identity", "L1Loss",
    "LayerNorm", "LeakyReLU", "Linear", "LogSoftmax", "MSELoss", "MaxPool2d", "Module", "ModuleDict",
    "ModuleList", "NLLLoss", "Parameter", "ReLU", "Sequential", "SiLU", "Sigmoid", "SmoothL1Loss",
    "Softmax", "SyncBatchNorm", "Tanh", "functional", "init",
]


def __getattr__(name: str) -> object:
    """PyTorch's paths to what lives in ``minipar.parallel`` (DESIGN.md's named exceptions to the
    layers, listed in pyproject.toml), imported when first asked for."""
    if name == "SyncBatchNorm":
        from minipar.parallel.sync_batchnorm import SyncBatchNorm

        return SyncBatchNorm
    if name == "DataParallel":
        from minipar.parallel.data_parallel.dataparallel import DataParallel

        return DataParallel
    if name == "utils":
        from minipar.nn import clip_grad

        return clip_grad
    if name == "parallel":
        import importlib

        return importlib.import_module("minipar.nn.parallel")  # the alias of parallel.data_parallel
    raise AttributeError(f"module 'minipar.nn' has no attribute {name!r}")
