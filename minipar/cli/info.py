"""``minipar info``: versions of minipar, NumPy, MPI, CuPy and what this machine has."""


from __future__ import annotations

import os
import sys
from pathlib import Path

from minipar.cli import lessons
from minipar.cli.lessons import discover_lessons
from minipar.cli.run import mpiexec_path


def _info() -> str:
    import numpy

    import minipar
    from minipar.backend import cupy_available

    rows = [("minipar", f"{minipar.__version__}  ({Path(minipar.__file__).parent})"),
            ("Python", f"{sys.version.split()[0]}  ({sys.executable})"),
            ("NumPy", numpy.__version__)]
    try:
        import mpi4py

        rows.append(("mpi4py", mpi4py.__version__))
        from mpi4py import MPI

        library = MPI.Get_library_version().strip().splitlines()[0]
        standard = ".".join(map(str, MPI.Get_version()))
        rows.append(("MPI", f"{' '.join(library.split())} (MPI standard {standard})"))
    except ImportError:
        rows.append(("mpi4py", 'not installed (pip install -e ".[mpi]"); run_local (threads) still works'))
    try:
        rows.append(("mpiexec", str(mpiexec_path())))
    except FileNotFoundError:
        rows.append(("mpiexec", "not found"))
    if cupy_available():
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
        rows.append(("CuPy", f"{cupy.__version__}, {count} GPU(s)"))
    else:
        try:
            import cupy  # noqa: F401

            rows.append(("CuPy", "installed, but no GPU is visible (CPU only)"))
        except ImportError:
            rows.append(("CuPy", 'not installed: CPU only (pip install -e ".[gpu]" on a CUDA machine)'))
    rows.append(("cores", str(os.cpu_count())))
    if (lessons.REPO / "lessons").is_dir():
        rows.append(("repository", f"{lessons.REPO} ({len(discover_lessons())} lessons)"))
    else:
        rows.append(("repository", "not found: lessons and benchmarks need a clone (pip install -e .)"))
    return "\n".join(f"{name:<11} {value}" for name, value in rows)

