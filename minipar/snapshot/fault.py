"""Failures on purpose, and loudly: fault injection and an opt-in NaN check.

    MINIPAR_FAULT=1:13 mpiexec -n 3 python -m mpi4py lessons/11_fault_tolerance.py

Fault injection. A training loop calls ``maybe_fail(step, comm)`` at the top of
every step (``step`` = the number of steps already done). With
``MINIPAR_FAULT="rank:step"`` that rank raises ``InjectedFault`` there, before
computing anything. Under ``mpiexec`` nothing catches it, so minipar.comm's
abort hook prints the traceback with the rank and calls ``MPI_Abort``: every
rank ends at once, the job exits non-zero, and the message names the rank.
(Without the hook the other ranks would wait forever in their next all-reduce
for a rank that is gone.) Under ``comm.run_local`` the exception is re-raised
in the caller with the rank named. Variants:

    MINIPAR_FAULT=1:13,2:40     several faults (the first that is reached fires)
    MINIPAR_FAULT=1:13:kill     the rank SIGKILLs itself: no exception, no cleanup,
                                no abort hook -- a lost node or an OOM kill; mpiexec
                                sees a rank die and ends the job (MPI jobs only:
                                under run_local it raises like the default)

The recovery this tests is the one a real job needs: snapshot every N steps
(``parallel.snapshot.save_distributed``), and after a crash start again from
the last committed snapshot. Work lost: at most N - 1 steps.

NaN check (opt-in). ``check_finite(loss, step, comm, params)`` raises
``ValueError`` naming the rank, the step and what is not finite (the loss, or
the first gradient with NaN/inf and how many) when ``MINIPAR_CHECK_NAN=1`` is
set or ``enabled=True`` is passed; otherwise it returns at once. It costs one
pass over the checked arrays, so it is off by default.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterable
from typing import Any

from minipar.backend import get_array_module
from minipar.comm.safety import launched_rank_and_size
from minipar.tensor import Tensor

FAULT_ENV = "MINIPAR_FAULT"
NAN_ENV = "MINIPAR_CHECK_NAN"


class InjectedFault(RuntimeError):
    """The failure ``MINIPAR_FAULT`` asked for (a RuntimeError: an error of the run, not of input)."""


def parse_faults(spec: str) -> list[tuple[int, int, str]]:
    """``"1:13,2:40:kill"`` -> ``[(1, 13, "raise"), (2, 40, "kill")]``; bad text is a ValueError."""
    faults = []
    for item in spec.replace(" ", "").split(","):
        if not item:
            continue
        parts = item.split(":")
        mode = parts[2] if len(parts) == 3 else "raise"
        numbers_ok = len(parts) in (2, 3) and all(p.isdigit() for p in parts[:2])
        if not numbers_ok or mode not in ("raise", "kill"):
            raise ValueError(
                f"{FAULT_ENV} must be 'rank:step' or 'rank:step:kill' items separated by commas, "
                f"e.g. '1:13' or '1:13,2:40:kill'; got {spec!r}"
            )
        faults.append((int(parts[0]), int(parts[1]), mode))
    return faults


def _rank_of(comm: Any) -> tuple[int, int]:
    if comm is not None:
        return comm.rank, comm.size
    return launched_rank_and_size() or (0, 1)


def maybe_fail(step: int, comm: Any = None) -> None:
    """Die here if ``MINIPAR_FAULT`` names this rank and ``step``; otherwise return at once.

    ``comm`` gives this rank (pass the world communicator); without it the
    launcher's environment does (``PMI_RANK``), else rank 0.
    """
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return
    rank, size = _rank_of(comm)
    for fault_rank, fault_step, mode in parse_faults(spec):
        if fault_rank == rank and fault_step == step:
            message = (f"injected fault: rank {rank} of {size} fails at step {step} "
                       f"({FAULT_ENV}={spec}, at unix time {time.time():.3f})")
            if mode == "kill" and getattr(comm, "backend", "mpi") == "mpi":
                sys.stderr.write(f"minipar: {message}: SIGKILL\n")
                sys.stderr.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            raise InjectedFault(message)


def _enabled(enabled: bool | None) -> bool:
    if enabled is not None:
        return enabled
    return os.environ.get(NAN_ENV, "0").strip() not in ("", "0")


def check_finite(loss: Any, step: int, comm: Any = None, params: Iterable[Any] | None = None,
                 enabled: bool | None = None) -> None:
    """ValueError if ``loss`` (or a parameter's gradient) holds NaN or inf -- when enabled.

    ``enabled=None`` reads ``MINIPAR_CHECK_NAN``. ``params`` (e.g.
    ``model.parameters()``) also checks every ``.grad``, in order.
    """
    if not _enabled(enabled):
        return
    rank, size = _rank_of(comm)
    where = f"rank {rank} of {size}, step {step}"
    value = loss.array if isinstance(loss, Tensor) else loss
    xp = get_array_module(value)
    if not bool(xp.all(xp.isfinite(xp.asarray(value)))):
        raise ValueError(f"{NAN_ENV}: {where}: the loss is {xp.asarray(value).tolist()}, "
                         "expected a finite number")
    for index, param in enumerate(params or ()):
        grad = getattr(param, "grad", None)
        if grad is None:
            continue
        xp = get_array_module(grad)
        bad = int((~xp.isfinite(grad)).sum())
        if bad:
            raise ValueError(f"{NAN_ENV}: {where}: the gradient of parameter {index} (shape "
                             f"{tuple(grad.shape)}) has {bad} non-finite values, expected none")
