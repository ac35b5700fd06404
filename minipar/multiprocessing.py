"""``torch.multiprocessing.spawn``'s shape: ``spawn(fn, args, nprocs)`` runs ``fn(rank, *args)``
on ``nprocs`` ranks -- here in-process *thread* ranks (``minipar.comm.run_local``).

    import minipar.multiprocessing as mp
    def train(rank, world_size):
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
        ...
    mp.spawn(train, args=(4,), nprocs=4, join=True)

Inside ``fn``, ``minipar.distributed.init_process_group`` finds the thread's communicator,
each rank's random stream is its own (``minipar.manual_seed`` in one rank does not move
another's), and an exception on any rank ends them all and is re-raised by ``spawn``.
Threads share one process: the GIL serialises Python (NumPy's matmuls still run in
parallel), and ``os.environ`` is shared, so a rank asks ``dist.get_rank()``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from minipar.comm import run_local


class ProcessContext:
    """What ``spawn(..., join=False)`` returns: ``join()`` waits and returns True when done."""

    def __init__(self, thread: threading.Thread, errors: list[BaseException]) -> None:
        self._thread, self._errors = thread, errors

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        if self._errors:
            raise self._errors[0]
        return not self._thread.is_alive()


def spawn(fn: Callable[..., Any], args: tuple[Any, ...] = (), nprocs: int = 1, join: bool = True,
          daemon: bool = False, start_method: str = "spawn") -> ProcessContext | None:
    """Run ``fn(rank, *args)`` on ``nprocs`` thread ranks; with ``join`` wait for all of them."""
    from minipar import distributed

    if isinstance(nprocs, bool) or not isinstance(nprocs, int) or nprocs < 1:
        raise ValueError(f"spawn needs nprocs >= 1, got {nprocs!r}")

    def rank_body(comm: Any) -> Any:
        distributed._here.spawned = comm
        try:
            return fn(comm.rank, *args)
        finally:
            distributed._here.spawned = distributed._here.default = None

    if join:
        run_local(rank_body, nprocs)
        return None
    errors: list[BaseException] = []

    def run() -> None:
        try:
            run_local(rank_body, nprocs)
        except BaseException as error:  # noqa: B036 - handed to join()
            errors.append(error)

    thread = threading.Thread(target=run, name="minipar-spawn", daemon=daemon)
    thread.start()
    return ProcessContext(thread, errors)
