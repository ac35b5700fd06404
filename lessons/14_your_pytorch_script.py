"""Your PyTorch script, on minipar: only the imports change, and every byte under it shows.

    mpiexec -n 2 python -m mpi4py lessons/14_your_pytorch_script.py

(2 to 4 ranks; on a machine with fewer cores than ranks add MPIR_CVAR_ENABLE_HEAVY_YIELD=1.)

Below the imports this is a classic PyTorch DDP training script, the kind the
PyTorch examples and tutorials teach: a small CNN on the 8x8 digits, a
``TensorDataset`` in a ``DataLoader`` fed by a ``DistributedSampler``, SGD with a
``StepLR`` schedule, the model wrapped in ``DistributedDataParallel``, a test pass
whose counts are summed with ``dist.all_reduce``, the device picked by
``torch.cuda.is_available()`` and everything moved with ``.to(device)``. It is
written to run under PyTorch with the imports swapped back to ``import torch`` (and
``load_digits`` replaced by any source of arrays) and the lines marked "minipar only"
left out.

Under minipar nothing is hidden: every collective is minipar's own, built from
point-to-point messages, and counted. The last lines (marked: the only minipar
code in the script) list the collectives that ran, how many calls and bytes,
and set the bytes each rank sent per training step beside the ring all-reduce's
cost: with Psi the bytes of the parameters and p ranks, every rank sends

    2 (p - 1) / p * Psi        bytes per step (reduce-scatter, then all-gather)

DDP's buckets change how many messages carry them, not how many bytes. Measured
here (Psi = 24,232 B, one bucket): 24,232 B in 2 messages per step at p = 2 (ratio
1.0000), 36,344 B in 6 messages at p = 4 (0.9999: the ring's chunks are whole
elements, 6,058 of them in chunks of 1,515 and 1,514). Only rank 0 prints.
"""

from __future__ import annotations  # noqa: I001 (ruff sorts the alias minipar.nn.parallel as third-party)

# The script's imports: PyTorch's, with minipar for torch.
import minipar as torch
import minipar.distributed as dist
import minipar.nn as nn
import minipar.nn.functional as F
import minipar.optim as optim
from minipar.nn.parallel import DistributedDataParallel as DDP
from minipar.optim.lr_scheduler import StepLR
from minipar.utils.data import DataLoader, DistributedSampler, TensorDataset, load_digits

# ----- minipar only: listen to every collective the script runs (the report is at the end) -------
CALLS: list = []  # minipar.comm.CollectiveCall records: name, bytes and messages sent
torch.comm.add_observer(CALLS.append, collectives=True)
# ---------------------------------------------------------------------------------------------------

EPOCHS, BATCH_SIZE, LR, LOG_INTERVAL = 4, 32, 0.1, 10


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 2 * 2, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (N, 8, 4, 4)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (N, 16, 2, 2)
        x = torch.flatten(x, 1)                     # (N, 64)
        x = F.relu(self.fc1(x))                     # (N, 64) @ (64, 64)^T
        return self.fc2(x)                          # (N, 64) @ (10, 64)^T -> logits (N, 10)


def train(model: nn.Module, device: torch.device, loader: DataLoader, optimizer: optim.Optimizer,
          epoch: int, rank: int) -> int:
    model.train()
    for batch_idx, (data, target) in enumerate(loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.cross_entropy(output, target)
        loss.backward()
        optimizer.step()
        if rank == 0 and batch_idx % LOG_INTERVAL == 0:
            print(f"Train Epoch: {epoch} [{batch_idx * len(data)}/{len(loader.sampler)}]"
                  f"\tLoss: {loss.item():.6f}")
    return len(loader)


def test(model: nn.Module, device: torch.device, loader: DataLoader) -> tuple[float, float]:
    model.eval()
    totals = torch.zeros(3, dtype=torch.float64)  # summed loss, correct, count
    with torch.no_grad():
        for data, target in loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            pred = output.argmax(dim=1, keepdim=True)
            totals += torch.tensor([F.cross_entropy(output, target, reduction="sum").item(),
                                    pred.eq(target.view_as(pred)).sum().item(), len(target)],
                                   dtype=torch.float64)
    dist.all_reduce(totals, op=dist.ReduceOp.SUM)
    loss_sum, correct, count = totals.tolist()
    return loss_sum / count, correct / count


def main() -> None:
    dist.init_process_group(backend="gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(1)
    use_cuda = torch.cuda.is_available()
    device = torch.device("cuda" if use_cuda else "cpu")

    digits = load_digits()
    train_set = TensorDataset(torch.from_numpy(digits.x_train).view(-1, 1, 8, 8),
                              torch.from_numpy(digits.y_train))
    test_set = TensorDataset(torch.from_numpy(digits.x_test).view(-1, 1, 8, 8),
                             torch.from_numpy(digits.y_test))
    train_sampler = DistributedSampler(train_set, num_replicas=world_size, rank=rank, shuffle=True)
    test_sampler = DistributedSampler(test_set, num_replicas=world_size, rank=rank, shuffle=False)
    train_loader = DataLoader(train_set, batch_size=BATCH_SIZE, sampler=train_sampler)
    test_loader = DataLoader(test_set, batch_size=256, sampler=test_sampler)

    model = DDP(Net().to(device))
    optimizer = optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.7)

    # ----- minipar only: the communicator's counters, read around the training steps --------------
    comm, step_bytes, step_messages, steps = dist.default_group(), 0, 0, 0
    # -----------------------------------------------------------------------------------------------
    for epoch in range(1, EPOCHS + 1):
        train_sampler.set_epoch(epoch)
        sent = (comm.bytes_sent, comm.messages_sent)                            # minipar only
        steps += train(model, device, train_loader, optimizer, epoch, rank)
        step_bytes += comm.bytes_sent - sent[0]                                 # minipar only
        step_messages += comm.messages_sent - sent[1]                           # minipar only
        test_loss, accuracy = test(model, device, test_loader)
        if rank == 0:
            print(f"Test set: Average loss: {test_loss:.4f}, Accuracy: {100 * accuracy:.1f}%"
                  f"  (lr {scheduler.get_last_lr()[0]:.4f})")
        scheduler.step()

    if rank == 0:
        report(model.module, world_size, steps, step_bytes, step_messages)
    dist.destroy_process_group()


# ----- minipar only: what ran under the script ----------------------------------------------------
def report(model: nn.Module, p: int, steps: int, step_bytes: int, step_messages: int) -> None:
    """The collectives rank 0 took part in, then bytes per training step beside 2(p-1)/p * Psi."""
    psi = sum(param.numel() * param.dtype.itemsize for param in model.parameters())
    by_name: dict[str, list[int]] = {}
    for call in CALLS:
        calls, nbytes, messages = by_name.setdefault(call.name, [0, 0, 0])
        by_name[call.name] = [calls + 1, nbytes + call.nbytes, messages + call.messages]
    print(f"\nCollectives rank 0 ran ({p} ranks; a collective inside another is listed too):")
    print(f"  {'collective':<28}{'calls':>7}{'bytes sent':>14}{'messages':>10}")
    for name, (calls, nbytes, messages) in sorted(by_name.items(), key=lambda item: -item[1][1]):
        print(f"  {name:<28}{calls:>7}{nbytes:>14,}{messages:>10}")
    formula = 2 * (p - 1) / p * psi
    print(f"\nParameters: Psi = {psi:,} B. Training steps on this rank: {steps}.")
    print(f"  bytes sent per step (counters):  {step_bytes / steps:>12,.0f}"
          f"   in {step_messages / steps:.1f} messages")
    print(f"  2(p-1)/p * Psi:                  {formula:>12,.0f}"
          f"   measured / formula = {step_bytes / steps / formula:.4f}")


if __name__ == "__main__":
    main()
