"""The 8x8 handwritten digits bundled with scikit-learn, split into train and test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np


# ----- the digits ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)  # eq on arrays would be ambiguous
class Digits:
    """Train and test split of scikit-learn's 8x8 handwritten digits (10 classes).

    x_*: (N, 64) floats in [0, 1] (row-major 8x8 pixels); y_*: (N,) int64 in 0..9.
    Unpacks as a tuple: ``x_train, y_train, x_test, y_test = load_digits()``.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int = 10

    @property
    def train_images(self) -> np.ndarray:
        """x_train as (N, 1, 8, 8) images (channels first) for a CNN; a view, not a copy."""
        return self.x_train.reshape(-1, 1, 8, 8)

    @property
    def test_images(self) -> np.ndarray:
        """x_test as (N, 1, 8, 8) images."""
        return self.x_test.reshape(-1, 1, 8, 8)

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.x_train, self.y_train, self.x_test, self.y_test))


def load_digits(test_fraction: float = 0.2, seed: int = 0, dtype: Any = np.float32) -> Digits:
    """The 1797 digits bundled with scikit-learn (no download), split train/test.

    Pixels (0..16 in the source) are divided by 16. The split is stratified and
    deterministic: the indices of each class are permuted by
    ``numpy.random.default_rng(seed)`` (classes in order 0..9) and the first
    ``round(test_fraction * class_count)`` of them go to the test set; both sets
    are then sorted back into the original order. The default gives 1438 train
    and 359 test digits. The global minipar RNG is not used.
    """
    if not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"dtype must be a floating dtype, got {dtype}")
    from sklearn.datasets import load_digits as sklearn_digits  # bundled csv, ~0.1 s

    bunch = sklearn_digits()
    pixels = (bunch.data / 16.0).astype(dtype)  # (1797, 64)
    labels = bunch.target.astype(np.int64)  # (1797,)
    rng = np.random.default_rng(seed)
    test_parts = []
    for label in range(10):
        members = rng.permutation(np.flatnonzero(labels == label))
        test_parts.append(members[: round(test_fraction * len(members))])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test_parts)] = True
    return Digits(pixels[~is_test], labels[~is_test], pixels[is_test], labels[is_test])


