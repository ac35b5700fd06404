"""Pipeline parallelism: a ``Sequential`` cut into p stages, one per rank, fed micro-batches.

    mpiexec -n 4 python -m mpi4py lessons/06_pipeline.py

    model = nn.Sequential(...)          # the same full model on every rank (same seed)
    pipe = PipelineParallel(model, comm, microbatches=8, schedule="1f1b")
    optimizer = optim.SGD(pipe.stage_module.parameters(), lr=0.1)
    loss = pipe.train_step(x, y, F.mse_loss)        # the batch loss, on every rank
    optimizer.step(); optimizer.zero_grad()

What lives where. Stage s = ``comm.rank`` keeps layers ``layer_range`` of the
model (``stage_module``, the same layer objects, so the full model's
parameters in that range are the ones trained); the other layers are simply
never called on this rank. Layers are split into contiguous stages with about
equal parameter counts (or ``balance=[layers per stage]``).

What is fed to which rank. The first stage reads ``x``, the last stage reads
``y``; any other rank may pass None. The simplest program gives every rank the
same batch; ranks check whatever they are given, so a batch that does not
split into ``microbatches`` equal parts raises the same ``ValueError``
everywhere. ``x`` is cut along axis 0 into m micro-batches (the naive schedule
runs the whole batch as one); when ``x`` is a Tensor that requires grad, the
first stage fills ``x.grad`` as one process would.

Messages. Activations go forward and their gradients back through
``SendForward``/``RecvForward``, autograd Functions (pipeline_comm.py); shapes
travel in a small header message once per step; sends are non-blocking.

Gradients. ``loss_fn(output, target)`` must return the mean over its
micro-batch (``mse_loss``, ``cross_entropy``). Each micro-batch's backward
starts from ``loss / m``, so ``.grad`` of ``stage_module`` sums to the
full-batch gradient; ``train_step`` returns the mean of the m losses, the
full-batch loss, on every rank (the last stage sends it to the others).

Counters (``stats``, per stage, for the last step): busy seconds (forward and
backward compute, not waiting), idle = step - busy, the timeline of spans and
``peak_stashed``, the most micro-batches whose activations were held at once
(GPipe m, 1F1B min(p - s, m)). The same spans go to ``minipar.observe.trace``. With
``train_step(..., synchronize=True)`` a barrier before and after makes the
step span one global interval, so ``stats.bubble`` = idle / step measures the
schedule's bubble, to compare with (p-1)/(m+p-1) (pipeline_schedules.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from minipar.autograd import no_grad
from minipar.backend import get_array_module
from minipar.comm import require_communicator
from minipar.nn import Sequential
from minipar.observe import trace
from minipar.parallel.pipeline.schedules import SCHEDULES
from minipar.parallel.pipeline.stage_comm import (
    MAX_NDIM,
    TAG_HEADER,
    TAG_LOSS,
    TAG_OUTPUT,
    RecvForward,
    SendForward,
    StageLink,
    make_header,
    read_header,
)
from minipar.tensor import Tensor, recording_anchor


def balance_by_parameters(layers: list[Any], stages: int) -> list[int]:
    """Layers per stage, contiguous, each stage's parameter count near total/p.

    Boundary k goes where the running parameter count is closest to k/p of the
    total (ties to the later layer, so a ReLU stays with the Linear before it);
    every stage keeps at least one layer. Without parameters: equal layer counts.
    """
    counts = [sum(p.array.size for p in layer.parameters()) for layer in layers]
    total, n = sum(counts), len(counts)
    if total == 0:
        return [len(part) for part in np.array_split(np.arange(n), stages)]
    cumulative = np.concatenate([[0], np.cumsum(counts)])
    bounds = [0]
    for k in range(1, stages):
        candidates = range(bounds[-1] + 1, n - (stages - k) + 1)
        target = k * total / stages
        bounds.append(min(candidates, key=lambda b: (abs(cumulative[b] - target), -b)))
    bounds.append(n)
    return [hi - lo for lo, hi in zip(bounds, bounds[1:])]


@dataclass
class StageStats:
    """What one stage measured in its last ``train_step`` or ``predict`` (``time.perf_counter()`` s)."""

    schedule: str
    microbatches: int
    step_start: float = 0.0
    step_seconds: float = 0.0  # entering to leaving train_step (barrier to barrier if synchronized)
    busy_seconds: float = 0.0  # forward and backward compute, message waits excluded
    peak_stashed: int = 0
    timeline: list[tuple[str, int, float, float]] = field(default_factory=list)  # kind, mb, start, end

    @property
    def idle_seconds(self) -> float:
        return self.step_seconds - self.busy_seconds

    @property
    def bubble(self) -> float:
        """Idle fraction of the step on this stage: 1 - busy / step."""
        return self.idle_seconds / self.step_seconds if self.step_seconds > 0 else 0.0


class PipelineParallel:
    """Train a ``Sequential`` split over ``comm``'s ranks, with a naive, GPipe or 1F1B schedule.

    ``comm``: the pipeline's ranks (the world, or ``ProcessMesh.pp``); stage = ``comm.rank``.
    ``microbatches``: m, equal parts of each batch. ``schedule``: "naive", "gpipe", "1f1b".
    ``balance``: layers per stage (default: by parameter count). ``checkpoint``: run each
    micro-batch's stage forward under ``minipar.checkpoint`` (keep only its input).
    """

    def __init__(self, module: Sequential, comm: Any, microbatches: int, schedule: str = "1f1b",
                 balance: list[int] | None = None, checkpoint: bool = False) -> None:
        if not isinstance(module, Sequential):
            raise TypeError(f"PipelineParallel needs an nn.Sequential, got {type(module).__name__}")
        require_communicator(comm, "PipelineParallel")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {sorted(SCHEDULES)}, got {schedule!r}")
        if not isinstance(microbatches, int) or isinstance(microbatches, bool) or microbatches < 1:
            raise ValueError(f"microbatches must be a positive int, got {microbatches!r}")
        layers, stages = list(module), comm.size
        if stages > len(layers):
            raise ValueError(f"{stages} pipeline stages but the Sequential has only {len(layers)} "
                             "layers: every stage needs at least one layer")
        if balance is None:
            balance = balance_by_parameters(layers, stages)
        elif (len(balance) != stages or any(not isinstance(b, int) or b < 1 for b in balance)
              or sum(balance) != len(layers)):
            raise ValueError(f"balance must list {stages} positive layer counts summing to "
                             f"{len(layers)}, got {balance!r}")
        self.comm, self.stage, self.stages = comm, comm.rank, stages
        self.schedule, self.microbatches, self.balance = schedule, microbatches, list(balance)
        start = sum(balance[:self.stage])
        self.layer_range = range(start, start + balance[self.stage])
        self.stage_module = Sequential(*layers[start:start + balance[self.stage]])
        self.is_first_stage, self.is_last_stage = self.stage == 0, self.stage == stages - 1
        self._run_stage = self.stage_module
        if checkpoint:  # keep each micro-batch's stage input only; recompute in its backward
            from minipar.checkpoint import checkpoint_stage

            self._run_stage = lambda x: checkpoint_stage(self.stage_module, x)
        params = list(self.stage_module.parameters())
        xp = get_array_module(params[0].array) if params else np
        dtype = params[0].dtype if params else np.float64
        self._anchor = recording_anchor(dtype, xp)
        self._link = StageLink(comm, self._record, xp)
        self.stats = StageStats(schedule, microbatches)

    def __repr__(self) -> str:
        return (f"PipelineParallel(stage {self.stage} of {self.stages}, layers "
                f"{self.layer_range.start}..{self.layer_range.stop - 1}, schedule={self.schedule!r}, "
                f"microbatches={self.microbatches})")

    # ----- timing -------------------------------------------------------------------
    def _record(self, kind: str, microbatch: int, start: float, end: float) -> None:
        self.stats.timeline.append((kind, microbatch, start, end))
        category = "comm" if kind in ("send", "recv") else "compute"
        trace.add_span(f"{kind} mb{microbatch}", category, start, end, stage=self.stage,
                       microbatch=microbatch)

    def _timed(self, kind: str, microbatch: int, fn: Any, *args: Any) -> Any:
        """Run one forward/backward; its compute span lies between its recv and its send."""
        mark, start = len(self.stats.timeline), time.perf_counter()
        result = fn(*args)
        end = time.perf_counter()
        messages = self.stats.timeline[mark:]
        compute_start = max([e for k, _, _, e in messages if k == "recv"], default=start)
        compute_end = max(min([s for k, _, s, _ in messages if k == "send"], default=end), compute_start)
        self.stats.busy_seconds += compute_end - compute_start
        self._record(kind, microbatch, compute_start, compute_end)
        return result

    # ----- training -----------------------------------------------------------------
    def _split(self, batch: Any, parts: int, name: str) -> list[Any]:
        """Cut along axis 0 into ``parts`` equal micro-batches (Tensors stay Tensors)."""
        data = batch.array if isinstance(batch, Tensor) else batch
        rows = data.shape[0]
        if rows % parts:
            raise ValueError(f"a batch of {rows} rows ({name}.shape = {tuple(data.shape)}) does not "
                             f"split into {parts} equal micro-batches; use a multiple of {parts}")
        size = rows // parts
        pieces = [data[i * size:(i + 1) * size] for i in range(parts)]
        if isinstance(batch, Tensor) or name == "x":
            return [Tensor(p, requires_grad=getattr(batch, "requires_grad", False)) for p in pieces]
        return pieces

    def _inputs(self, x: Any, y: Any, parts: int,
                need_y: bool = True) -> tuple[list[Any] | None, list[Any] | None]:
        for name, batch, needed in (("x", x, self.is_first_stage), ("y", y, self.is_last_stage and need_y)):
            if batch is None and needed:
                role = "first" if name == "x" else "last"
                raise ValueError(f"stage {self.stage} is the {role} stage and needs {name}, got None")
        inputs = self._split(x, parts, "x") if x is not None else None
        targets = self._split(y, parts, "y") if y is not None else None
        return inputs, targets

    def _forward(self, i: int, inputs: Any, targets: Any, loss_fn: Any, losses: list[float]) -> Tensor:
        """One micro-batch forward; returns what its backward starts from."""
        x = inputs[i] if self.is_first_stage else RecvForward.apply(self._anchor, self._link, i)
        out = self._run_stage(x)
        if self.is_last_stage:
            loss = loss_fn(out, targets[i])
            losses.append(loss.item())
            return loss
        return SendForward.apply(out, self._anchor, self._link, i)

    def _backward(self, handle: Tensor, parts: int) -> None:
        if self.is_last_stage:
            handle.backward(1.0 / parts)  # d(mean of m losses)/d(loss_i) = 1/m
        else:
            handle.backward()  # SendForward's backward receives the real gradient

    def train_step(self, x: Any, y: Any, loss_fn: Any, synchronize: bool = False) -> float:
        """One forward/backward of the batch over the pipeline; returns the batch loss on every rank.

        Gradients accumulate into ``stage_module``'s ``.grad`` (call the optimizer
        after). ``synchronize=True`` adds a barrier before and after, for timing.
        """
        parts = 1 if self.schedule == "naive" else self.microbatches
        inputs, targets = self._inputs(x, y, parts)
        if synchronize:
            self.comm.barrier()
        self.stats = StageStats(self.schedule, parts, step_start=time.perf_counter())
        self._link.start_step()
        stash: dict[int, Tensor] = {}  # micro-batches whose activations are held
        losses: list[float] = []
        for kind, i in SCHEDULES[self.schedule](self.stage, self.stages, parts):
            if kind == "forward":
                stash[i] = self._timed("forward", i, self._forward, i, inputs, targets, loss_fn, losses)
                self.stats.peak_stashed = max(self.stats.peak_stashed, len(stash))
            else:
                self._timed("backward", i, self._backward, stash.pop(i), parts)
        if self.is_first_stage and isinstance(x, Tensor) and x.requires_grad:  # as one process would
            xp = get_array_module(x.array)
            grad = xp.concatenate([xp.zeros_like(mb.array) if mb.grad is None else mb.grad.array
                                   for mb in inputs])
            if x.grad is None:
                x.grad = Tensor(grad)
            else:
                x.grad.array = x.grad.array + grad
        loss = self._share(np.array([np.mean(losses) if losses else 0.0]), TAG_LOSS)
        self._link.finish_step()
        if synchronize:
            self.comm.barrier()
        self.stats.step_seconds = time.perf_counter() - self.stats.step_start
        return float(loss[0])

    def _share(self, array: Any, tag: int, xp: Any = np) -> Any:
        """The last stage's ``array`` on every rank, as an ``xp`` array (a header first: shape, dtype)."""
        last = self.stages - 1
        if self.is_last_stage:
            for rank in range(last):
                self._link.isend(make_header(array), rank, TAG_HEADER, -1)
                self._link.isend(array, rank, tag, -1)
            return array
        header = np.empty(MAX_NDIM + 2, dtype=np.int64)
        self.comm.recv(header, last, TAG_HEADER)
        return self._link.recv(*read_header(header), last, tag, -1, xp=xp)

    # ----- inference ----------------------------------------------------------------
    def predict(self, x: Any) -> Tensor:
        """Forward only, micro-batched, no graph; the model's output on every rank."""
        parts = 1 if self.schedule == "naive" else self.microbatches
        inputs, _ = self._inputs(x, None, parts, need_y=False)
        self.stats = StageStats(self.schedule, parts, step_start=time.perf_counter())
        self._link.start_step()
        outputs = []
        with no_grad():
            for i in range(parts):
                stage_input = inputs[i] if self.is_first_stage else Tensor(self._link.recv_activation(i))
                out = self.stage_module(stage_input).array
                if self.is_last_stage:
                    outputs.append(out)
                else:
                    self._link.send_activation(out, i)
        full = get_array_module(outputs[0]).concatenate(outputs) if outputs else None
        result = self._share(full, TAG_OUTPUT, self._link.xp)
        self._link.finish_step()
        return Tensor(result)

    __call__ = predict
