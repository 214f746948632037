"""Several processes on one job through torch.distributed (torchrun): who this process is, its share of the
work, and the few collectives the job needs, in an order fixed so that the result is the one-process result.

Work is split in contiguous shares (rank r of n takes items [r*k/n, (r+1)*k/n)), so gathering the shares in
rank order gives the items in their one-process order: sums are then taken by every rank in that order, never
by the backend's reduction (whose order is its own). A collective that fails (a peer rank died or was stopped)
raises DistributedError naming this rank.

Outside torchrun (or with one process) the world is rank 0 of 1 and every helper is the identity.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import MXFP4Error


class DistributedError(MXFP4Error):
    """A collective failed: another rank stopped, or the process group could not be set up."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def leader(self) -> bool:
        """Rank 0: the one that writes outputs and prints results."""
        return self.rank == 0

    def share(self, count: int) -> range:
        """This rank's contiguous share of ``count`` items."""
        return range(self.rank * count // self.size, (self.rank + 1) * count // self.size)

    def owner(self, item: int) -> int:
        """The rank that computes item ``item`` of a round-robin split (experts: equal counts per rank)."""
        return item % self.size

    def describe(self) -> str:
        return f"rank {self.rank} of {self.size}"


def current_world() -> World:
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def start(device: torch.device | str | None = None) -> World:
    """Join the process group torchrun describes in the environment (gloo on the CPU, nccl for CUDA
    devices); one process alone gets World() and no group."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return current_world()
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed; run in one process")
    backend = "nccl" if torch.device(device or "cpu").type == "cuda" else "gloo"
    if backend == "nccl":  # nccl's collectives run on the current GPU: this rank's own
        torch.cuda.set_device(rank_device("cuda"))
    try:
        dist.init_process_group(backend)
    except (RuntimeError, ValueError) as error:
        raise DistributedError(f"could not join torchrun's process group ({backend}): {error}") from error
    return current_world()


def stop() -> None:
    """Leave the process group at once (a failed rank: its peers may be gone or blocked in a collective)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def finish(world: World) -> None:
    """Leave the process group after a job every rank completed: wait for all ranks first, so that no rank
    tears its group down (and its process exits) while a peer's last collective may still be in flight,
    and drop unreachable references to the group's work before it is destroyed, so its threads are joined here,
    not during the interpreter's shutdown (gloo's worker threads then abort the process)."""
    try:
        if world.distributed:
            _checked("the final barrier", dist.barrier)
    finally:
        gc.collect()
        stop()


def rank_device(device: torch.device | str | None) -> torch.device:
    """The device this rank computes on: a bare 'cuda' becomes this rank's own GPU (LOCAL_RANK)."""
    device = torch.device(device or "cpu")
    if device.type == "cuda" and device.index is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _checked(what: str, call):
    try:
        return call()
    except RuntimeError as error:  # gloo and nccl report a lost peer as RuntimeError (DistBackendError)
        world = current_world()
        detail = str(error).split(". This is typically")[0]  # gloo appends advice meant for its own developers
        raise DistributedError(f"{world.describe()}: {what} failed, another rank stopped ({detail})") from error


def gather_rows(tensor: torch.Tensor, world: World, what: str) -> torch.Tensor:
    """Every rank's ``tensor`` (same trailing shape and dtype, any first dimension), concatenated in rank
    order on every rank."""
    if not world.distributed:
        return tensor
    device = _collective_device()
    length = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=device)
    lengths = [torch.empty_like(length) for _ in range(world.size)]
    _checked(what, lambda: dist.all_gather(lengths, length))
    counts = [int(n) for n in lengths]
    padded = torch.zeros((max(counts), *tensor.shape[1:]), dtype=tensor.dtype, device=device)
    padded[: tensor.shape[0]] = tensor.to(device)
    pieces = [torch.empty_like(padded) for _ in range(world.size)]
    _checked(what, lambda: dist.all_gather(pieces, padded))
    return torch.cat([piece[:count] for piece, count in zip(pieces, counts)]).to(tensor.device)


def broadcast(tensor: torch.Tensor, source: int, world: World, what: str) -> torch.Tensor:
    """``tensor`` as rank ``source`` holds it, on every rank (others pass a tensor of the same shape and
    dtype to receive into)."""
    if not world.distributed:
        return tensor
    moved = tensor.to(_collective_device()).contiguous()
    _checked(what, lambda: dist.broadcast(moved, source))
    return moved.to(tensor.device)
