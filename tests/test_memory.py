"""Memory accounting: tracemalloc regions (peaks, phases, nesting) and bytes held by a graph."""

from __future__ import annotations

import tracemalloc
import weakref
from typing import Any

import numpy as np
import pytest

import minipar
from minipar.autograd import Function
from minipar.observe import memory

pytestmark = pytest.mark.timeout(60)

MiB = 1024 * 1024
SLACK = 256 * 1024  # interpreter bookkeeping that tracemalloc also sees


def allocate_and_free(nbytes: int) -> None:
    block = np.ones(nbytes // 8)  # touched, so really allocated
    del block


def test_region_peak_sees_a_temporary_array_that_is_gone_at_the_end():
    with memory.track() as region:
        allocate_and_free(8 * MiB)
    assert 8 * MiB <= region.peak_bytes < 8 * MiB + SLACK
    assert abs(region.net_bytes) < SLACK


def test_net_bytes_counts_what_the_region_kept():
    with memory.track() as region:
        kept = np.ones(MiB // 8)
    assert MiB <= region.net_bytes < MiB + SLACK
    del kept


def test_each_phase_has_its_own_peak():
    with memory.track() as region:
        with region.phase("big"):
            allocate_and_free(8 * MiB)
        with region.phase("small"):
            allocate_and_free(MiB)
    assert region.phases["big"] >= 8 * MiB
    assert MiB <= region.phases["small"] < MiB + SLACK
    assert region.peak_bytes >= 8 * MiB


def test_nested_region_does_not_hide_the_outer_peak_before_or_inside_it():
    with memory.track() as outer:
        allocate_and_free(8 * MiB)  # before the inner region restarts tracemalloc's peak
        with memory.track() as inner:
            allocate_and_free(MiB)
        with memory.track():
            allocate_and_free(2 * MiB)
    assert MiB <= inner.peak_bytes < MiB + SLACK
    assert outer.peak_bytes >= 8 * MiB

    with memory.track() as outer:
        with memory.track():
            allocate_and_free(4 * MiB)  # the inner peak is the outer's too
    assert outer.peak_bytes >= 4 * MiB


def test_track_stops_tracemalloc_only_if_it_started_it():
    assert not tracemalloc.is_tracing()
    with memory.track():
        assert tracemalloc.is_tracing()
    assert not tracemalloc.is_tracing()
    tracemalloc.start()
    try:
        with memory.track():
            pass
        assert tracemalloc.is_tracing()
    finally:
        tracemalloc.stop()


class SavesTwiceAndAView(Function):
    """Keeps one fresh 1000-float buffer three times: itself, again, and a view of it."""

    @staticmethod
    def forward(ctx: Any, x: Any) -> Any:
        buffer = x * 2.0
        ctx.save_for_backward(buffer, buffer, buffer[::2])
        ctx.mask = buffer > 0  # an array kept as an attribute counts too
        return buffer.sum(keepdims=True)

    @staticmethod
    def backward(ctx: Any, grad: Any) -> Any:
        return grad * 2.0 + 0 * ctx.saved_tensors[0]


def test_graph_bytes_counts_each_buffer_once_and_views_as_their_base():
    x = minipar.tensor(np.arange(1000.0), requires_grad=True)
    out = SavesTwiceAndAView.apply(x)
    assert memory.graph_bytes(out) == 8000 + 1000  # float64 buffer + boolean mask
    assert memory.graph_bytes(out, include_leaves=True) == 8000 + 1000 + 8000  # + x itself
    out.sum().backward()
    # backward freed the saved arrays; an attribute lives as long as the node does
    assert memory.graph_bytes(out) == 1000


def test_graph_bytes_excludes_views_of_leaves_and_counts_only_what_is_saved():
    weight = minipar.tensor(np.ones((10, 10)), requires_grad=True)
    x = minipar.tensor(np.ones((4, 10)))
    hidden = x @ weight.T  # matmul saves x and a transposed view of weight: both leaves' buffers
    assert memory.graph_bytes(hidden) == 0
    out = hidden.tanh()  # saves only its output: hidden's array is not kept by the graph
    assert memory.graph_bytes(out) == 4 * 10 * 8
    hidden_array = weakref.ref(hidden.array)
    del hidden
    assert hidden_array() is None  # freed as soon as the program drops it, as in PyTorch
    assert memory.graph_bytes(minipar.tensor([1.0])) == 0


def test_graph_bytes_rejects_non_tensors():
    with pytest.raises(TypeError, match="expects a Tensor"):
        memory.graph_bytes(np.zeros(3))
