"""PyTorch's ``torch.utils.data``: datasets, samplers, ``DataLoader``; and the 8x8 digits.

    digits = load_digits()                       # 1438 train / 359 test, pixels in [0, 1]
    train = TensorDataset(digits.x_train, digits.y_train)
    loader = DataLoader(train, batch_size=64, shuffle=True)
    for x, y in loader:                          # x: Tensor (64, 64) float32, y: Tensor (64,) int64
        loss = F.cross_entropy(model(x), y)

Data parallel training gives each rank its own share of every epoch:

    sampler = DistributedSampler(train, comm=comm, shuffle=True, seed=0)   # or the process group
    loader = DataLoader(train, batch_size=16, sampler=sampler)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)                 # same new permutation on every rank

Files: ``dataset.py`` (Dataset, IterableDataset, TensorDataset, Subset, ConcatDataset,
random_split), ``sampler.py`` (Sequential/Random/SubsetRandom/Batch samplers),
``distributed_sampler.py`` (DistributedSampler: PyTorch's split over ranks),
``collate.py`` (default_collate), ``dataloader.py``, ``digits.py``. ``minipar.data`` is
an alias of this package.
"""

from minipar.utils.data.collate import default_collate, default_convert
from minipar.utils.data.dataloader import DataLoader
from minipar.utils.data.dataset import (
    ConcatDataset,
    Dataset,
    IterableDataset,
    Subset,
    TensorDataset,
    random_split,
)
from minipar.utils.data.digits import Digits, load_digits
from minipar.utils.data.distributed_sampler import DistributedSampler, default_process_group
from minipar.utils.data.sampler import (
    BatchSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    SubsetRandomSampler,
)

__all__ = [
    "BatchSampler", "ConcatDataset", "DataLoader", "Dataset", "Digits", "DistributedSampler",
    "IterableDataset", "RandomSampler", "Sampler", "SequentialSampler", "Subset", "SubsetRandomSampler",
    "TensorDataset",
    "default_collate", "default_convert", "default_process_group", "load_digits", "random_split",
]
