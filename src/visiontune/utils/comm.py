"""torch.distributed helpers driven by torchrun's environment variables only.

``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set by ``torchrun`` switch DDP on; without them everything
runs in one process and every helper here is a no-op.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

ResultType = TypeVar("ResultType")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_dist_info() -> DistInfo:
    """Read torchrun's environment variables (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    return DistInfo(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_distributed(device: torch.device) -> DistInfo:
    """Initialise the default process group when launched by torchrun (NCCL on CUDA, Gloo on CPU).

    Workers that torchrun restarted (``--max-restarts``) get a key namespace of their own in the rendezvous
    store: see :func:`_restart_attempt_store`.
    """
    info = env_dist_info()
    if not info.enabled or dist.is_initialized():
        return info
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(minutes=30)
    store = _restart_attempt_store(timeout)
    if store is None:
        dist.init_process_group(backend=backend, timeout=timeout)
    else:
        dist.init_process_group(backend=backend, store=store, rank=info.rank, world_size=info.world_size,
                                timeout=timeout)
    logger.info("distributed: rank %d/%d (local %d), backend %s", info.rank, info.world_size, info.local_rank, backend)
    return info


def _restart_attempt_store(timeout: datetime.timedelta) -> dist.Store | None:
    """The rendezvous store under a per-attempt prefix, for workers restarted by torchrun on one machine.

    torchrun's workers share the agent's TCP store, and it outlives a restart: the process group's keys (the
    Gloo/NCCL addresses of each rank) are still there from the failed attempt, and a restarted worker may read a
    dead peer's address before the new one is written (pytorch/pytorch#135712). On one machine all workers restart
    together with the same ``TORCHELASTIC_RESTART_COUNT``, so prefixing the keys with it separates the attempts.
    Across machines the counts can differ (warning: set ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` and use the
    c10d rendezvous). Returns None when no prefix is needed.
    """
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if attempt == 0 or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    if os.environ.get("LOCAL_WORLD_SIZE") != os.environ.get("WORLD_SIZE"):
        logger.warning("torchrun restart %d on several machines with the shared rendezvous store: the new workers "
                       "may read addresses of the failed attempt (pytorch/pytorch#135712); set "
                       "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 and use --rdzv-backend c10d", attempt)
        return None
    store, _, _ = next(dist.rendezvous("env://", timeout=timeout))
    return dist.PrefixStore(f"visiontune/attempt_{attempt}/", store)


def current_info() -> DistInfo:
    """Rank and world size of the initialised process group (single process when none)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                        local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def is_main_process() -> bool:
    """Whether this process is rank 0 of the initialised process group (``True`` in a single process)."""
    return current_info().is_main


def is_initialized() -> bool:
    """Whether a default process group exists (``False`` in a single process)."""
    return dist.is_available() and dist.is_initialized()


def backend_name() -> str:
    """The process group's backend (``gloo``, ``nccl``), or ``none`` in a single process."""
    return str(dist.get_backend()) if is_initialized() else "none"


def barrier() -> None:
    """Wait for every rank (no-op in one process). On NCCL the barrier runs on this process's GPU."""
    if not is_initialized():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[torch.cuda.current_device()])
    else:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (no-op in one process) and return it."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(flags: Sequence[bool], device: torch.device) -> list[bool]:
    """For each flag, whether it is set on at least one rank (one ``all_reduce``; the flags themselves in one process).

    Collective decisions (stop after a signal, time budget reached) must be taken by every rank together, or
    the ranks that carry on wait forever in the next collective.

    Args:
        flags: This rank's flags (the same number on every rank).
        device: Where the reduction runs (the training device: NCCL needs a CUDA tensor).
    """
    if not is_initialized():
        return [bool(flag) for flag in flags]
    votes = torch.tensor([float(bool(flag)) for flag in flags], dtype=torch.float32, device=device)
    dist.all_reduce(votes, op=dist.ReduceOp.SUM)
    return [bool(vote > 0) for vote in votes.tolist()]


def all_reduce_sum_with_votes(tensor: torch.Tensor, flags: Sequence[bool]) -> tuple[list[Any], list[bool]]:
    """Sum ``tensor`` over ranks and vote on ``flags`` (:func:`any_rank`) in one ``all_reduce``, then read both
    back with one device-to-host copy: ``(tensor.tolist() of the sums, flags set on any rank)``.

    The training loop's only collective between epochs: the losses of the steps since the last logging step
    and the stop vote ride together. ``tensor`` lives on the training device (NCCL needs CUDA tensors).
    """
    votes = torch.tensor([float(bool(flag)) for flag in flags], dtype=tensor.dtype, device=tensor.device)
    flat = torch.cat([tensor.reshape(-1), votes])
    all_reduce_sum(flat)
    values = flat.tolist()
    count = tensor.numel()
    summed: list[Any] = values[:count]
    if tensor.dim() == 2:  # rows, as tensor.tolist() gives them
        columns = tensor.shape[1]
        summed = [summed[row * columns:(row + 1) * columns] for row in range(tensor.shape[0])]
    return summed, [vote > 0 for vote in values[count:]]


def reduce_objects_to_main(obj: Any) -> list[Any] | None:
    """Gather one picklable object per rank on rank 0 only: the list in rank order there, ``None`` elsewhere
    (``[obj]`` in one process). Less traffic and memory than :func:`all_gather_objects` when only rank 0 needs
    them (e.g. COCO results that rank 0 alone scores)."""
    if dist.is_available() and dist.is_initialized():
        gathered: list[Any] | None = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
        dist.gather_object(obj, gathered, dst=0)
        return gathered
    return [obj]


def all_gather_objects(obj: Any) -> list[Any]:
    """Gather one picklable object per rank, in rank order (``[obj]`` in one process)."""
    if dist.is_available() and dist.is_initialized():
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, obj)
        return gathered
    return [obj]


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send ``obj`` from ``src`` to every rank."""
    if dist.is_available() and dist.is_initialized():
        holder = [obj]
        dist.broadcast_object_list(holder, src=src)
        return holder[0]
    return obj


def main_process_result(function: Callable[[], ResultType]) -> ResultType:
    """Call ``function`` on rank 0 only and return its result on every rank.

    Used for decisions that touch the file system (which run directory, which checkpoint to resume) so that
    all ranks agree even while rank 0 creates files. An exception raised on rank 0 is raised on every rank, so
    no rank is left waiting in a later collective. In one process this is ``function()``.
    """
    if not is_initialized():
        return function()
    outcome: tuple[bool, Any] = (True, None)
    if dist.get_rank() == 0:
        try:
            outcome = (True, function())
        except Exception as error:  # noqa: BLE001 - re-raised below, on every rank
            outcome = (False, error)
    succeeded, value = broadcast_object(outcome)
    if not succeeded:
        raise value
    return value


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(name: str, info: DistInfo | None = None) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``."""
    info = info or env_dist_info()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", info.local_rank)
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", info.local_rank)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} requested but CUDA is not available")
    return device
