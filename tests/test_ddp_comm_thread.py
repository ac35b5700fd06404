"""DDP's communication thread (``buckets.CommThread``): one per wrapper, reused by every backward.

It must run the buckets' reduce steps off the main thread, in order, step after step on
the same thread; hand back the first error of a step exactly once, skipping the jobs
queued behind it; and end when its wrapper is garbage-collected.
"""

from __future__ import annotations

import gc
import threading
from typing import Any

import numpy as np
import pytest
from test_data_parallel import (
    REFERENCE,
    STEPS,
    X,
    Y,
    assert_matches_reference,
    make_model,
    shard,
    train_wrapped,
)

import minipar
from minipar.comm import run_local
from minipar.nn import functional as F
from minipar.parallel import DistributedDataParallel
from minipar.parallel.data_parallel.buckets import CommThread


class RecordingDDP(DistributedDataParallel):
    """DDP whose reduce step notes the thread it ran on."""

    def reduce_bucket(self, flat: Any) -> Any:
        self.threads.append(threading.get_ident())
        return super().reduce_bucket(flat)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("world_size", [2, 3])
def test_one_communication_thread_serves_every_backward_and_training_matches_one_process(
        world_size: int) -> None:
    def body(comm: Any) -> tuple[list[np.ndarray], set[int], int, int]:
        ddp = RecordingDDP(make_model(), comm=comm, bucket_cap_mb=1e-6, overlap=True)
        ddp.threads = []
        trained = train_wrapped(ddp, comm, STEPS)
        return trained, set(ddp.threads), len(ddp.threads), threading.get_ident()

    results = run_local(body, world_size)
    assert_matches_reference([trained for trained, *_ in results], REFERENCE)
    for _, threads, calls, rank_thread in results:
        assert calls == STEPS * 6  # 6 one-parameter buckets per step, every step
        assert len(threads) == 1 and rank_thread not in threads  # one thread, not the rank's own


@pytest.mark.timeout(30)
def test_comm_thread_hands_back_an_error_once_skipping_the_jobs_queued_behind_it() -> None:
    thread = CommThread("test-comm")
    ran: list[str] = []
    release = threading.Event()

    def fail() -> None:
        release.wait(5)  # the next jobs are queued before this one fails
        raise OSError("link down")

    thread.submit(lambda: ran.append("before"))
    thread.submit(fail)
    thread.submit(lambda: ran.append("skipped"))
    release.set()
    with pytest.raises(OSError, match="link down") as info:
        thread.wait()
    assert any("communication thread" in note for note in getattr(info.value, "__notes__", []))
    assert ran == ["before"]
    thread.submit(lambda: ran.append("next step"))  # the next step runs on the same thread
    thread.wait()
    assert ran == ["before", "next step"]
    thread.close()
    assert not thread.thread.is_alive()
    with pytest.raises(RuntimeError, match="closed"):
        thread.submit(lambda: None)


@pytest.mark.timeout(60)
def test_comm_thread_ends_when_its_wrapper_is_garbage_collected() -> None:
    def body(comm: Any) -> threading.Thread:
        ddp = DistributedDataParallel(make_model(), comm=comm, bucket_cap_mb=1e-6, overlap=True)
        x, y = shard(X, comm.rank, comm.size), shard(Y, comm.rank, comm.size)
        F.cross_entropy(ddp(minipar.tensor(x)), y).backward()
        assert ddp._comm_thread is not None
        return ddp._comm_thread.thread

    threads = run_local(body, 2)
    gc.collect()
    for thread in threads:
        thread.join(5)
        assert not thread.is_alive()
