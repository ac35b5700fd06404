"""PyTorch's ``torch.utils`` paths: ``minipar.utils.data`` (datasets, loaders, samplers) and
``minipar.utils.checkpoint`` (an alias of ``minipar.checkpoint``)."""
