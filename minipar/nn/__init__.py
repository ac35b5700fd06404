"""Layers and losses in PyTorch's names (``minipar.nn``, ``minipar.nn.functional``)."""

from minipar.nn import functional
from minipar.nn.activation import ReLU
from minipar.nn.containers import Sequential
from minipar.nn.linear import Linear
from minipar.nn.module import Module, Parameter

__all__ = ["Linear", "Module", "Parameter", "ReLU", "Sequential", "functional"]
