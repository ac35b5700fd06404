"""One flat array holding many parameters' worth of values, each parameter owning a view.

    buffer = FlatBuffer([p.shape for p in params], dtype=np.float32)
    buffer.views[i]          # parameter i's slice of ``buffer.flat``, shaped like it
    buffer.flat              # (sum of sizes,): what one collective moves

Collectives move one contiguous array far faster than many small ones (one message
per ring step instead of one per parameter), so every technique that communicates
gradients or parameters in bulk packs them here: DDP's buckets, ZeRO's flat parameters
and gradients, and the hybrid mesh's gradient average. Offsets follow the order given:
parameter i owns ``flat[offsets[i]:offsets[i + 1]]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


class FlatBuffer:
    """``flat`` of ``sum(sizes)`` elements and, per shape, a view of its slice."""

    def __init__(self, shapes: Sequence[tuple[int, ...]], dtype: Any, xp: Any = np,
                 zeros: bool = False) -> None:
        sizes = [math.prod(shape) for shape in shapes]
        self.offsets: list[int] = np.cumsum([0] + sizes).tolist()
        self.flat = (xp.zeros if zeros else xp.empty)(self.offsets[-1], dtype=dtype)
        self.views = [self.flat[lo:hi].reshape(shape)
                      for lo, hi, shape in zip(self.offsets, self.offsets[1:], shapes)]

    def __len__(self) -> int:
        return len(self.views)

    def pack(self, arrays: Sequence[Any | None]) -> Any:
        """Copy each array into its view (None: zeros); returns ``flat``."""
        for view, array in zip(self.views, arrays):
            if array is None:
                view[...] = 0
            elif array is not view:
                view[...] = array
        return self.flat
