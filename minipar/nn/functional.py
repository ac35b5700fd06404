"""``minipar.nn.functional``: the stateless functions behind the layers, under PyTorch's names.

Each function lives beside its layer and is gathered here:

- activations: ``relu, gelu, tanh, sigmoid`` (activation.py), ``silu, leaky_relu`` (rectifiers.py),
  ``softmax, log_softmax`` (softmax.py)
- layers: ``linear, conv2d, max_pool2d, avg_pool2d, adaptive_avg_pool2d, dropout, embedding,
  layer_norm, batch_norm``
- losses: ``cross_entropy, nll_loss`` (functional_losses.py, class dimension 1, ``ignore_index``,
  ``label_smoothing``, probability targets), ``mse_loss, l1_loss, smooth_l1_loss,
  binary_cross_entropy, binary_cross_entropy_with_logits`` (pointwise_losses.py)
- tools: ``one_hot, pad, normalize`` (functional_misc.py)
"""

from minipar.nn.activation import gelu, relu, sigmoid, tanh
from minipar.nn.avg_pooling import adaptive_avg_pool2d, avg_pool2d
from minipar.nn.batchnorm import batch_norm
from minipar.nn.conv import conv2d
from minipar.nn.dropout import dropout
from minipar.nn.embedding import embedding
from minipar.nn.functional_losses import cross_entropy, nll_loss
from minipar.nn.functional_misc import normalize, one_hot, pad
from minipar.nn.linear import linear
from minipar.nn.normalization import layer_norm
from minipar.nn.pointwise_losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    l1_loss,
    mse_loss,
    smooth_l1_loss,
)
from minipar.nn.pooling import max_pool2d
from minipar.nn.rectifiers import leaky_relu, silu
from minipar.nn.softmax_layers import log_softmax, softmax

__all__ = [
    "adaptive_avg_pool2d", "avg_pool2d", "batch_norm", "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "conv2d", "cross_entropy", "dropout", "embedding", "gelu",
    "l1_loss", "layer_norm", "leaky_relu", "linear", "log_softmax", "max_pool2d", "mse_loss", "nll_loss",
    "normalize", "one_hot", "pad", "relu", "sigmoid", "silu", "smooth_l1_loss", "softmax", "tanh",
]
