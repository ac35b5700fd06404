"""Optimizers with PyTorch's exact update rules and state-dict layout (see ``optimizer.py``).

    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss.backward(); opt.step(); opt.zero_grad()
"""

from minipar.optim import lr_scheduler
from minipar.optim.adadelta import Adadelta
from minipar.optim.adagrad import Adagrad
from minipar.optim.adam import Adam
from minipar.optim.adamw import AdamW
from minipar.optim.optimizer import BLOCK_ELEMENTS, Optimizer
from minipar.optim.rmsprop import RMSprop
from minipar.optim.sgd import SGD

__all__ = ["BLOCK_ELEMENTS", "Adadelta", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "SGD",
           "lr_scheduler"]
