"""Suite-wide settings: one BLAS thread per process.

The machine has 2 cores and tests start several processes (mpiexec ranks,
notebook kernels); letting each one spawn a BLAS thread pool per core makes
everything slower, not faster. Children inherit these variables.
"""

import os

for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, "1")

try:  # numpy may already be imported by a plugin: limit its pool directly too
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
except ImportError:  # threadpoolctl comes with scikit-learn ([dev]); without it the env vars do
    pass

from emulated_cluster import emulated_cluster  # noqa: E402,F401  (the multi-host tests share this fixture)
