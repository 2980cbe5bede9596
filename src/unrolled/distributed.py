"""Data-parallel training under ``torchrun``: the process group, this process's rank, its shard.

``torchrun --nproc-per-node N`` starts N copies of a command with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their environment. :func:`launched` reads
them; without them (a plain process) every function here answers as a world of one and nothing
distributed is imported or initialised. :func:`init` joins the group (gloo on CPU, nccl on
CUDA, one GPU per local rank). Every rank draws the same seeded order of the rows and keeps
its strided share of each global batch (:func:`shard`, as ``DistributedSampler`` does), so a
step of N processes sees the rows of a step of one; :func:`all_reduce_` sums the ranks'
row-weighted gradients, which makes the step the one-process step to rounding.
"""

from __future__ import annotations

import os

import torch

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (its environment names a rank and a world)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def rank() -> int:
    """This process's rank (0 in a plain process)."""
    return int(os.environ["RANK"]) if launched() else 0


def world_size() -> int:
    """How many processes train together (1 in a plain process)."""
    return int(os.environ["WORLD_SIZE"]) if launched() else 1


def active() -> bool:
    """Whether there are other ranks to talk to (launched with a world of more than one)."""
    return world_size() > 1


def device(requested: str | torch.device | None) -> torch.device:
    """The device of this rank: ``cuda`` becomes ``cuda:LOCAL_RANK`` under ``torchrun``."""
    dev = torch.device(requested or "cpu")
    if dev.type == "cuda" and dev.index is None and launched():
        local, count = int(os.environ.get("LOCAL_RANK", 0)), torch.cuda.device_count()
        if local >= count:
            raise ValueError(
                f"local rank {local} needs GPU {local} but this machine has {count}; start fewer processes"
            )
        dev = torch.device("cuda", local)
    return dev


def init(dev: torch.device | None = None) -> None:
    """Join the ``torchrun`` process group (once; nothing in a plain process or a world of one).

    Parameters
    ----------
    dev : torch.device, optional
        Where this rank computes; CUDA selects nccl and this rank's GPU, anything else gloo.
    """
    if not active():
        return
    import torch.distributed as dist

    if dist.is_initialized():
        return
    missing = [k for k in ENV if k not in os.environ]
    if missing:
        raise RuntimeError(f"torchrun environment incomplete: {', '.join(missing)} not set")
    cuda = dev is not None and torch.device(dev).type == "cuda"
    if cuda:
        torch.cuda.set_device(torch.device(dev))
    dist.init_process_group("nccl" if cuda else "gloo")


def finish() -> None:
    """Leave the process group (if this process joined one)."""
    if active():
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (nothing in a plain process)."""
    if active():
        import torch.distributed as dist

        dist.barrier()


def shard(indices: torch.Tensor) -> torch.Tensor:
    """This rank's rows of one global batch: ``indices[rank::world]`` (the batch itself in a plain process)."""
    return indices[rank() :: world_size()] if active() else indices


def local_count(total: int) -> int:
    """How many of ``total`` items this rank takes when they are dealt round-robin."""
    return len(range(rank(), total, world_size()))


def all_reduce_(buffer: torch.Tensor) -> torch.Tensor:
    """Sum ``buffer`` over the ranks, in place; returned for chaining."""
    if active():
        import torch.distributed as dist

        dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    return buffer


def broadcast_(tensor: torch.Tensor) -> torch.Tensor:
    """Rank 0's ``tensor`` on every rank, in place; returned for chaining."""
    if active():
        import torch.distributed as dist

        dist.broadcast(tensor, src=0)
    return tensor


def broadcast_module(module: torch.nn.Module) -> None:
    """Give every rank rank 0's parameters and buffers (as DistributedDataParallel does at start)."""
    if active():
        with torch.no_grad():
            for tensor in module.state_dict().values():
                broadcast_(tensor)
