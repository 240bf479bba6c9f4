"""Running a tool as several processes (``torchrun``), one machine or many, same results.

Launched by ``torchrun --nproc-per-node N [--nnodes M ...] tools/<tool>.py ...`` each
process finds its place in ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and
``LOCAL_WORLD_SIZE`` (:func:`world_from_env`); without them (a plain ``python tools/...``)
the world is one process and nothing here does anything.

How the work is split, identically for every tool:

1. every process opens the same config and dataset and computes the per-image work of
   its strided shard, ``image_ids[rank::world_size]`` (:meth:`World.shard`): proposals,
   SPP-net's conv5 maps of the training images, test detections. Each image's result
   goes to its keyed, atomically written entry in the shared cache or output directory
   (:class:`sppcore.fileio.KeyedEntries`), exactly the entry a single process writes;
2. a barrier (:func:`barrier`);
3. rank 0 does the sequential rest reading every entry back (all present, none
   recomputed): SVM training (positives and the hard-negative mining pass, which adds
   each image's hard negatives to a cache the SVMs are retrained on, so the images'
   order matters), box regression, fine-tuning's SGD steps, sealing the model or
   network directory, evaluation,
   ``results.json``; the other processes wait at the final barrier (:func:`finish`)
   and exit 0.

So the results are the single-process run's: the same proposal entries, SVMs, detections
and mAP. ``cache_dir`` and ``output_dir`` must be on a filesystem every machine shares
(NFS, Lustre, ...), since rank 0 reads back what the others wrote. Only rank 0 logs at
INFO and shows progress bars; the others log warnings and errors.

The process group uses gloo for CPU runs and NCCL when ``features.device`` is a CUDA
device (each process then takes GPU ``LOCAL_RANK``); its timeout is
:data:`BARRIER_TIMEOUT`, since the other processes wait for all of rank 0's sequential
work at the final barrier.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Mapping, Sequence, TypeVar

from sppcore.errors import UserError

__all__ = ["World", "SINGLE", "world_from_env", "init", "current", "barrier", "finish", "cores_available",
           "proposal_workers", "BARRIER_TIMEOUT"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# how long a process waits at a barrier: the final one lasts for all of rank 0's
# sequential work (SVM mining over VOC07 trainval takes hours on a CPU)
BARRIER_TIMEOUT = datetime.timedelta(days=7)

# the variables torchrun sets for every process it starts
_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@dataclass(frozen=True)
class World:
    """This process's place among the processes of one run: ``rank`` of ``size``,
    ``local_rank`` of ``local_size`` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that does the sequential work and writes final outputs."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    def shard(self, items: Sequence[T]) -> list[T]:
        """This process's strided share of ``items``: every ``size``-th from ``rank`` on
        (so the shards differ in length by at most one and share the work of every part
        of the list)."""
        return list(items)[self.rank :: self.size]


SINGLE = World()


def _env_int(environ: Mapping[str, str], name: str) -> int:
    raw = environ[name]
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"environment variable {name}={raw!r}: not an integer (set by torchrun)") from None


def world_from_env(environ: Mapping[str, str] | None = None) -> World:
    """The :class:`World` torchrun's variables describe; :data:`SINGLE` without them."""
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return SINGLE
    missing = [name for name in _ENV if name not in environ]
    if missing:
        raise UserError(f"environment variable {missing[0]} missing: WORLD_SIZE is set, so the tool expects "
                        "torchrun's RANK, LOCAL_RANK and LOCAL_WORLD_SIZE too")
    size, rank = _env_int(environ, "WORLD_SIZE"), _env_int(environ, "RANK")
    local_size, local_rank = _env_int(environ, "LOCAL_WORLD_SIZE"), _env_int(environ, "LOCAL_RANK")
    if size < 1 or not 0 <= rank < size:
        raise UserError(f"environment variables WORLD_SIZE={size}, RANK={rank}: need 0 <= RANK < WORLD_SIZE")
    if local_size < 1 or not 0 <= local_rank < local_size or local_size > size:
        raise UserError(f"environment variables LOCAL_WORLD_SIZE={local_size}, LOCAL_RANK={local_rank}: "
                        "need 0 <= LOCAL_RANK < LOCAL_WORLD_SIZE <= WORLD_SIZE")
    return World(rank, size, local_rank, local_size)


_current: World = SINGLE
_backend: str | None = None


def current() -> World:
    """The world :func:`init` joined (:data:`SINGLE` before, and without torchrun)."""
    return _current


def backend_for(device: str) -> str:
    """``nccl`` for a CUDA ``features.device``, ``gloo`` otherwise."""
    return "nccl" if device.startswith("cuda") else "gloo"


def init(device: str = "cpu", environ: Mapping[str, str] | None = None) -> World:
    """Join the process group torchrun describes (once; later calls return the same
    world). Without torchrun: :data:`SINGLE`, nothing initialised. Processes other than
    rank 0 log warnings and errors only."""
    global _current, _backend
    if _backend is not None:
        return _current
    world = world_from_env(environ)
    if not world.parallel:
        return world
    import torch
    import torch.distributed as dist

    backend = backend_for(device)
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise UserError(f"features.device={device}: torch sees no CUDA device on this machine")
        if world.local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK={world.local_rank}: this machine has {torch.cuda.device_count()} CUDA "
                            "devices; start at most that many processes per machine")
        # "cuda" then means this process's own GPU, and the config (part of every key) stays "cuda"
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=BARRIER_TIMEOUT)
    _current, _backend = world, backend
    if not world.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    log.info("process group: %d processes (%s), %d on this machine", world.size, backend, world.local_size)
    return world


def barrier() -> None:
    """Wait until every process of the group gets here (nothing without one)."""
    if _backend is None:
        return
    import torch.distributed as dist

    if _backend == "nccl":
        dist.barrier(device_ids=[_current.local_rank])
    else:
        dist.barrier()


def finish() -> None:
    """The final barrier (the other processes wait here for rank 0), then leave the group."""
    global _current, _backend
    if _backend is None:
        return
    import torch.distributed as dist

    barrier()
    dist.destroy_process_group()
    _current, _backend = SINGLE, None


def cores_available() -> int:
    """The CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def proposal_workers(configured: int, world: World | None = None, cores: int | None = None) -> int:
    """Proposal worker processes for this process: ``configured`` when positive (the
    ``proposals.workers`` setting), else its share of the cores: all of them for one
    process, ``cores // local_size`` (at least 1) for each of the processes on a machine."""
    if configured > 0:
        return configured
    world = current() if world is None else world
    cores = cores_available() if cores is None else cores
    return max(1, cores // world.local_size)
