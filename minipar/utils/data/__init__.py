"""Data: the 8x8 digits, a ``DataLoader`` over arrays, and a ``DistributedSampler``.

    digits = load_digits()                       # 1438 train / 359 test, pixels in [0, 1]
    loader = DataLoader(digits.x_train, digits.y_train, batch_size=64, shuffle=True)
    for x, y in loader:                          # x: Tensor (64, 64) float32, y: Tensor (64,) int64
        loss = F.cross_entropy(model(x), y)

Data parallel training gives each rank its own share of every epoch:

    sampler = DistributedSampler(len(digits.y_train), comm, shuffle=True, seed=0)
    loader = DataLoader(digits.x_train, digits.y_train, batch_size=16, sampler=sampler)
    for epoch in range(epochs):
        loader.set_epoch(epoch)                  # same new permutation on every rank

``DistributedSampler`` follows PyTorch's rules exactly. With ``n`` indices and
``p`` ranks every rank gets ``ceil(n / p)`` of them (``floor(n / p)`` with
``drop_last``): the (shuffled) list ``0..n-1`` is padded by wrapping around to
its start until its length is ``p * ceil(n / p)`` (or cut to ``p * floor(n / p)``),
and rank ``r`` takes positions ``r, r + p, r + 2p, ...``. The permutation of
epoch ``e`` comes from a generator seeded with ``seed + e`` alone, so every rank
computes the same one without talking, and the global RNG is left untouched.
"""

from minipar.utils.data.dataloader import DataLoader
from minipar.utils.data.digits import Digits, load_digits
from minipar.utils.data.sampler import DistributedSampler

__all__ = ["DataLoader", "Digits", "DistributedSampler", "load_digits"]
