"""Samplers and DataLoaders with reproducible, resumable randomness.

Training order and augmentation depend only on ``(seed, epoch, sample index)``: the sampler yields
``(sample_seed, index)`` pairs and :class:`SeededDataset` reseeds ``torch``, ``random`` and ``numpy``
from ``sample_seed`` before loading a sample. So a run resumed mid-epoch, a different ``num_workers`` or a
different world size all see the same samples with the same augmentations.
"""

from __future__ import annotations

import random
import signal
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

_SEED_MODULUS = 2**31 - 1
_PERMUTATION_STREAM = 2**32 - 1  # SeedSequence entry reserved for the epoch's permutation


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """Deterministic per-sample seed (a 31-bit integer) for epoch ``epoch`` and dataset index ``index``."""
    generator = np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index])
    return int(generator.generate_state(1)[0]) % _SEED_MODULUS


def seed_everything(seed: int) -> None:
    """Seed ``torch``, ``random`` and ``numpy`` global generators.

    Called once per sample and per step, so it must be cheap: while CUDA is not initialised (CPU runs, DataLoader
    workers) only the CPU generator is seeded, because ``torch.manual_seed`` would queue a lazy CUDA seeding that
    records a stack trace on every call. Once CUDA is up, every device generator is seeded as well.
    """
    if torch.cuda.is_initialized():
        torch.manual_seed(seed)
    else:
        torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))


class SeededDataset(Dataset):
    """Wraps a dataset so that ``dataset[(seed, index)]`` seeds every RNG with ``seed`` before loading."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        seed, index = item
        seed_everything(seed)
        return self.dataset[index]


class TrainSampler(Sampler):
    """Shuffled (or ordered) sample order for one rank, resumable within an epoch.

    Like ``DistributedSampler`` the order is padded to a multiple of ``world_size`` and rank ``r`` takes
    every ``world_size``-th sample starting at ``r``. Yields ``(sample_seed, index)`` for
    :class:`SeededDataset`.

    Args:
        num_samples: Dataset length.
        seed: Run seed.
        shuffle: Random permutation per epoch (seeded by ``seed`` and the epoch).
        rank: This process's rank.
        world_size: Number of processes.
    """

    def __init__(self, num_samples: int, *, seed: int, shuffle: bool = True, rank: int = 0,
                 world_size: int = 1) -> None:
        if num_samples < 1:
            raise ValueError("the training dataset is empty")
        self.num_samples = num_samples
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start = 0
        self.per_rank = (num_samples + world_size - 1) // world_size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's order and skip its first ``start`` samples of this rank (mid-epoch resume)."""
        self.epoch = epoch
        self.start = start

    def order(self) -> list[int]:
        """Dataset indices this rank visits in the current epoch (before skipping ``start``)."""
        if self.shuffle:
            generator = torch.Generator()
            generator.manual_seed(sample_seed(self.seed, self.epoch, _PERMUTATION_STREAM))
            indices = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            indices = list(range(self.num_samples))
        total = self.per_rank * self.world_size
        indices += indices[: total - len(indices)]
        return indices[self.rank:total:self.world_size]

    def seeded_order(self) -> list[tuple[int, int]]:
        """``(sample_seed, index)`` of every sample this rank visits in the current epoch (before skipping
        ``start``): what the loader gets, for :class:`SeededDataset`."""
        return [(sample_seed(self.seed, self.epoch, index), index) for index in self.order()]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        yield from self.seeded_order()[self.start:]

    def __len__(self) -> int:
        return self.per_rank - self.start


class DrawTrainSampler(TrainSampler):
    """Training order from one seeded global draw per epoch, with replacement (``data.sampler=balanced`` or
    ``repeat_factor``): ``draw(seed, epoch_length)`` returns the epoch's dataset indices for all ranks together,
    seeded by the run seed and the epoch, and rank ``r`` takes every ``world_size``-th position starting at ``r``
    (padded like :class:`TrainSampler`), so the shares are disjoint and their union is the draw. The draw depends
    only on ``(seed, epoch)``, so ``set_epoch(epoch, start)`` resumes mid-epoch with the same remaining samples.

    A sample drawn ``k`` times in one epoch gets a different augmentation seed each time
    (``sample_seed(seed, epoch, index + k * num_samples)``; the first draw's seed is :class:`TrainSampler`'s).

    Args:
        draw: ``(seed, length) -> indices`` (:func:`visiontune.data.samplers.balanced_draw`, ...).
        num_samples: Dataset length.
        epoch_length: Samples per epoch, all ranks together.
        seed: Run seed.
        rank: This process's rank.
        world_size: Number of processes.
    """

    def __init__(self, draw: Callable[[int, int], list[int]], num_samples: int, epoch_length: int, *, seed: int,
                 rank: int = 0, world_size: int = 1) -> None:
        super().__init__(num_samples, seed=seed, shuffle=True, rank=rank, world_size=world_size)
        if epoch_length < 1:
            raise ValueError(f"the epoch must draw at least one sample, got {epoch_length}")
        self.draw = draw
        self.epoch_length = epoch_length
        self.per_rank = (epoch_length + world_size - 1) // world_size

    def global_order(self) -> list[int]:
        """The current epoch's draw for all ranks, padded to ``per_rank * world_size``."""
        indices = list(self.draw(sample_seed(self.seed, self.epoch, _PERMUTATION_STREAM), self.epoch_length))
        total = self.per_rank * self.world_size
        return (indices + indices[: total - len(indices)])[:total]

    def order(self) -> list[int]:
        return self.global_order()[self.rank::self.world_size]

    def seeded_order(self) -> list[tuple[int, int]]:
        drawn: Counter[int] = Counter()
        pairs = []
        for position, index in enumerate(self.global_order()):
            if position % self.world_size == self.rank:
                pairs.append((sample_seed(self.seed, self.epoch, index + drawn[index] * self.num_samples), index))
            drawn[index] += 1
        return pairs


class GroupedTrainBatchSampler(Sampler):
    """Training batches of one group each (e.g. aspect-ratio bins) where possible, in a resumable order.

    From the order of ``sampler`` (a :class:`TrainSampler`: same seed, epoch, rank and padding), each sample goes
    into its group's buffer and a full buffer becomes a batch, so single-group batches come first, in the order
    they fill up. The samples left in partly filled buffers then form mixed batches in sampler order; what is
    left after those is dropped, as ``drop_last`` does. An epoch therefore has ``per_rank // batch_size``
    batches, as without grouping, and the batches depend only on ``(seed, epoch, rank)``: a mid-epoch resume
    (``sampler.set_epoch(epoch, start=batches_done * batch_size)``) skips exactly the batches already trained.
    Yields lists of ``(sample_seed, index)`` for :class:`SeededDataset`.

    Args:
        sampler: The rank's sample order; its ``set_epoch`` selects the epoch and the batches to skip.
        group_ids: Group of every dataset index.
        batch_size: Images per batch.
    """

    def __init__(self, sampler: TrainSampler, group_ids: Sequence[int], *, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(group_ids) != sampler.num_samples:
            raise ValueError(f"{len(group_ids)} group ids for a dataset of {sampler.num_samples} samples")
        self.sampler = sampler
        self.group_ids = [int(group) for group in group_ids]
        self.batch_size = batch_size

    def epoch_batches(self) -> list[list[int]]:
        """Dataset indices of every batch of the current epoch on this rank (before skipping ``start``)."""
        return [[index for _, index in batch] for batch in self._seeded_batches()]

    def _seeded_batches(self) -> list[list[tuple[int, int]]]:
        """:meth:`epoch_batches` as ``(sample_seed, index)`` pairs (the sampler's :meth:`TrainSampler.seeded_order`)."""
        order = self.sampler.seeded_order()
        batches: list[list[tuple[int, int]]] = []
        buffers: dict[int, list[int]] = {}
        for position, (_, index) in enumerate(order):
            buffer = buffers.setdefault(self.group_ids[index], [])
            buffer.append(position)
            if len(buffer) == self.batch_size:
                batches.append([order[p] for p in buffer])
                buffers[self.group_ids[index]] = []
        leftovers = sorted(position for buffer in buffers.values() for position in buffer)
        for first in range(0, len(leftovers) - self.batch_size + 1, self.batch_size):
            batches.append([order[p] for p in leftovers[first:first + self.batch_size]])
        return batches

    def _skipped_batches(self) -> int:
        if self.sampler.start % self.batch_size:
            raise ValueError(f"a resume must skip whole batches: start={self.sampler.start} is not a multiple of "
                             f"batch_size={self.batch_size}")
        return self.sampler.start // self.batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        yield from self._seeded_batches()[self._skipped_batches():]

    def __len__(self) -> int:
        return max(0, self.sampler.per_rank // self.batch_size - self._skipped_batches())


class ShardSampler(Sampler):
    """Evaluation order for one rank: ``range(rank, N, world_size)``, no padding, so gathered results hold
    every sample exactly once."""

    def __init__(self, num_samples: int, *, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, num_samples, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def ignore_interrupts_in_worker(worker_id: int) -> None:
    """``worker_init_fn`` of every loader: DataLoader workers ignore SIGINT.

    Ctrl-C reaches every process of the terminal's process group. A worker that died from it would make the
    main process fail on its next batch instead of finishing the step and writing its checkpoint; the main
    process decides when to stop, and workers exit when it shuts them down (or when it dies).
    """
    del worker_id
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    sampler: Sampler,
    collate_fn: Callable | None,
    num_workers: int,
    pin_memory: bool,
    persistent_workers: bool,
    drop_last: bool = False,
    batch_sampler: Sampler | None = None,
) -> DataLoader:
    """A DataLoader with the usual performance options.

    Pinned memory only when CUDA is available (the trainer then copies batches with ``non_blocking=True``);
    persistent workers and prefetching only when there are workers, which ignore SIGINT
    (:func:`ignore_interrupts_in_worker`).
    """
    options: dict[str, Any] = {
        "num_workers": num_workers,
        "pin_memory": pin_memory and torch.cuda.is_available(),
        "collate_fn": collate_fn,
    }
    if num_workers > 0:
        options["persistent_workers"] = persistent_workers
        options["prefetch_factor"] = 4
        options["worker_init_fn"] = ignore_interrupts_in_worker
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, **options)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **options)
