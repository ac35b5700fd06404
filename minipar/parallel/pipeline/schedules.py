"""Pipeline schedules: in which order each stage runs its forwards and backwards.

A schedule is a plain list of actions for one stage, ``("forward", i)`` or
``("backward", i)`` for micro-batch i; ``PipelineParallel`` (pipeline.py) runs
the list and the messages between stages make the stages wait for each
other. With p stages, m micro-batches, and every stage taking t_f per
micro-batch forward and t_b backward:

    schedule  order on stage s                      step time             bubble        peak stash
    naive     F(batch) B(batch)                     p (t_f + t_b) M       (p-1)/p       1 (whole batch)
    gpipe     F0 F1 ... F(m-1)  B0 B1 ... B(m-1)    (m+p-1)(t_f + t_b)    (p-1)/(m+p-1)  m
    1f1b      p-s-1 forwards, then F B pairs,       (m+p-1)(t_f + t_b)    (p-1)/(m+p-1)  min(p-s, m)
              then the remaining backwards

(naive runs the whole batch as one micro-batch, M = m micro-batches' worth of
work.) The bubble is the fraction of the step a stage sits idle: each stage
is busy m (t_f + t_b) out of (m+p-1)(t_f + t_b). GPipe (Huang et al. 2019)
and 1F1B (PipeDream-Flush, Narayanan et al. 2021) have the same bubble; 1F1B
starts backwards as early as possible, so stage s never holds more than
p - s micro-batches' activations instead of all m.

    >>> one_f_one_b_schedule(stage=0, stages=2, microbatches=3)
    [('forward', 0), ('forward', 1), ('backward', 0), ('forward', 2), ('backward', 1), ('backward', 2)]
"""

from __future__ import annotations

Action = tuple[str, int]  # ("forward" | "backward", micro-batch index)


def naive_schedule(stage: int, stages: int, microbatches: int = 1) -> list[Action]:
    """The whole batch as one micro-batch: forward, then backward. Only one stage works at a time."""
    return [("forward", 0), ("backward", 0)]


def gpipe_schedule(stage: int, stages: int, microbatches: int) -> list[Action]:
    """All forwards, then all backwards (GPipe). Every stage holds all m micro-batches at the turn."""
    return ([("forward", i) for i in range(microbatches)]
            + [("backward", i) for i in range(microbatches)])


def one_f_one_b_phases(stage: int, stages: int, microbatches: int) -> dict[str, list[Action]]:
    """1F1B's three phases on stage s: warm-up forwards, steady F/B pairs, cool-down backwards.

    Stage s runs ``p - s - 1`` warm-up forwards: exactly enough that the last
    stage's first backward comes back just as it is needed. From then on each
    new forward is paired with the oldest backward, so at most ``p - s``
    micro-batches are in flight on stage s; the backwards still owed finish last.

    >>> one_f_one_b_phases(stage=0, stages=3, microbatches=4)["warm-up"]
    [('forward', 0), ('forward', 1)]
    """
    warmup = min(stages - stage - 1, microbatches)
    steady: list[Action] = []
    for i in range(microbatches - warmup):
        steady += [("forward", warmup + i), ("backward", i)]
    return {"warm-up": [("forward", i) for i in range(warmup)],
            "steady": steady,
            "cool-down": [("backward", i) for i in range(microbatches - warmup, microbatches)]}


def one_f_one_b_schedule(stage: int, stages: int, microbatches: int) -> list[Action]:
    """Warm-up forwards, then one forward / one backward, then cool-down backwards (1F1B)."""
    phases = one_f_one_b_phases(stage, stages, microbatches)
    return phases["warm-up"] + phases["steady"] + phases["cool-down"]


SCHEDULES = {"naive": naive_schedule, "gpipe": gpipe_schedule, "1f1b": one_f_one_b_schedule}


def bubble_formula(stages: int, microbatches: int) -> float:
    """(p - 1) / (m + p - 1): idle fraction of each stage when all stages cost the same."""
    return (stages - 1) / (microbatches + stages - 1)


def peak_stash_formula(schedule: str, stage: int, stages: int, microbatches: int) -> int:
    """Most micro-batches whose activations stage s holds at once under ``schedule``."""
    if schedule == "naive":
        return 1
    if schedule == "gpipe":
        return microbatches
    return min(stages - stage, microbatches)


def simulate(schedule: str, stages: int, microbatches: int, forward_time: float = 1.0,
             backward_time: float = 2.0) -> list[list[tuple[str, int, float, float]]]:
    """Replay a schedule with fixed costs and instant messages: each stage's (kind, i, start, end).

    An action starts when its stage is free and its input exists: forward i on
    stage s needs forward i done on s-1, backward i needs backward i done on s+1.
    The ideal timeline a measured one is compared with; a RuntimeError if the
    schedule can never finish (a deadlock).
    """
    orders = [SCHEDULES[schedule](s, stages, microbatches) for s in range(stages)]
    finished: dict[tuple[str, int, int], float] = {}  # (kind, microbatch, stage) -> end time
    clock, position = [0.0] * stages, [0] * stages
    spans: list[list[tuple[str, int, float, float]]] = [[] for _ in range(stages)]
    progress = True
    while progress:
        progress = False
        for s in range(stages):
            while position[s] < len(orders[s]):
                kind, i = orders[s][position[s]]
                source = s - 1 if kind == "forward" else s + 1  # who sends this action's input
                if 0 <= source < stages and (kind, i, source) not in finished:
                    break  # wait for the message
                start = max(clock[s], finished.get((kind, i, source), 0.0))
                end = start + (forward_time if kind == "forward" else backward_time)
                finished[(kind, i, s)] = clock[s] = end
                spans[s].append((kind, i, start, end))
                position[s] += 1
                progress = True
    if any(position[s] < len(orders[s]) for s in range(stages)):
        raise RuntimeError(f"schedule {schedule!r} deadlocks at p={stages}, m={microbatches}")
    return spans


def peak_in_flight(order: list[Action]) -> int:
    """Replay a schedule and count the most forwards not yet matched by their backward."""
    held = peak = 0
    for kind, _ in order:
        held += 1 if kind == "forward" else -1
        peak = max(peak, held)
    return peak
