"""Old and PyTorch-shaped import paths as aliases of the module that holds the code.

``import minipar.trace`` gives the module ``minipar.observe.trace`` itself (one file, two
names), imported only when first asked for, so ``import minipar`` stays cheap. A package
registers the paths it answers for: ``alias("minipar.trace", "minipar.observe.trace")``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

_TARGETS: dict[str, str] = {}
_REAL_SPECS: dict[str, importlib.machinery.ModuleSpec] = {}


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an alias's name and loads it as the target module (never a second copy)."""

    def find_spec(self, name: str, path: object = None, target: object = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if name not in _TARGETS:
            return None
        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(_TARGETS[spec.name])
        _REAL_SPECS[spec.name] = module.__spec__  # the import system writes the alias's spec over it
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The target ran when it was imported; give it back its own spec, so that its
        # ``__name__`` and ``__spec__`` still name its file whichever path imported it.
        real = _REAL_SPECS[module.__spec__.name]
        module.__spec__, module.__name__, module.__loader__ = real, real.name, real.loader


    def get_code(self, name: str) -> object:
        """The target's code, for ``python -m old.path`` (runpy asks the loader for it)."""
        target = _TARGETS[name]
        return importlib.util.find_spec(target).loader.get_code(target)


_FINDER = _AliasFinder()


def alias(name: str, target: str) -> None:
    """Make ``import name`` (and ``from parent import leaf``) give the module ``target``."""
    _TARGETS[name] = target
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)
