"""PyTorch's ``torch.utils`` paths: ``minipar.utils.data`` (datasets, loaders, samplers) and
``minipar.utils.checkpoint`` (an alias of ``minipar.checkpoint``)."""


def __getattr__(name: str) -> object:
    """``minipar.utils.data`` / ``.checkpoint`` after a bare ``import minipar``, as in torch."""
    if name in ("data", "checkpoint"):
        import importlib

        return importlib.import_module(f"minipar.utils.{name}")
    raise AttributeError(f"module 'minipar.utils' has no attribute {name!r}")
