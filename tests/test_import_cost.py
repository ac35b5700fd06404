"""``import minipar`` stays cheap (issue 15, item 1): the heavy optional packages load only when a
feature needs them, and the namespaces (nn, optim, ...) load on first use.

The time it adds to ``import numpy`` is a benchmark matter (measured with ``python -X importtime``,
reported in the issue), not a test: here only what gets imported is checked.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("mpi4py", "torch", "matplotlib", "safetensors", "ml_dtypes", "cupy")
LAZY = ("minipar.nn", "minipar.optim", "minipar.utils", "minipar.amp", "minipar.cuda", "minipar.comm",
        "minipar.parallel", "minipar.observe")


def modules_after(code: str) -> set[str]:
    script = f"import sys\n{code}\nimport json\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_import_minipar_loads_none_of_the_heavy_packages():
    loaded = modules_after("import minipar")
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}


def test_namespaces_are_imported_only_when_first_used():
    loaded = modules_after("import minipar")
    assert not loaded & set(LAZY)
    after_use = modules_after("import minipar\nminipar.optim.SGD")
    assert "minipar.optim" in after_use and "minipar.nn" not in after_use


def test_using_nn_and_optim_still_loads_no_heavy_package():
    loaded = modules_after("import minipar\nminipar.nn.Linear(2, 2)\nminipar.optim.SGD\n"
                           "minipar.cuda.is_available()")
    assert not {m for m in loaded if m.split(".")[0] in set(HEAVY) - {"cupy"}}
