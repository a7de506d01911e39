"""Global batches in a fixed order, split between processes.

Global batch t is positions t*B .. t*B+B-1 of an endless stream: epoch e is a permutation of
the items seeded by (seed, e), and the item at position p is augmented with seed
(seed, p). Process r of N takes the r-th of N equal slices of each global batch. So the
batches are a function of (seed, t) alone: the same for a resumed run and for any N.
"""
from __future__ import annotations

import torch

from ..errors import InputError
from .data import Batch, ItemData, LoaderData
from .distributed import World

_SEED_STRIDE = 1_000_003  # seeds of different runs' positions do not collide for < 1e6 positions


def _check_split(batch_size: int, world: World, source: str) -> int:
    if batch_size % world.size:
        raise InputError(f"{source}: a global batch of {batch_size} does not split into {world.size} equal "
                         f"shares: give a batch size that {world.size} processes divide")
    return batch_size // world.size


class ItemStream:
    def __init__(self, data: ItemData, batch_size: int, seed: int, world: World):
        self.data, self.batch_size, self.seed, self.world = data, batch_size, seed, world
        self.local = _check_split(batch_size, world, data.source)
        self._perms: dict[int, torch.Tensor] = {}

    @property
    def items(self) -> int:
        return len(self.data)

    def _index(self, pos: int) -> int:
        epoch, j = divmod(pos, len(self.data))
        if epoch not in self._perms:
            self._perms = {epoch: torch.randperm(len(self.data), generator=torch.Generator().manual_seed(
                self.seed * _SEED_STRIDE + epoch))}
        return int(self._perms[epoch][j])

    def local_batch(self, step: int) -> Batch:
        first = step * self.batch_size + self.world.rank * self.local
        return collate([self.data.sample(self._index(p), self.seed * _SEED_STRIDE + p)
                        for p in range(first, first + self.local)], self.data.has_labels)

    def batches(self, start: int, stop: int, num_workers: int = 0):
        """(step, local batch) for steps start .. stop-1, prepared by DataLoader workers."""
        loader = torch.utils.data.DataLoader(_Steps(self), batch_size=None, sampler=range(start, stop),
                                             num_workers=num_workers)
        return zip(range(start, stop), loader)

    def eval_batches(self, items: int):
        """The first `items` items in order, unaugmented, in whole batches of the local size
        (every process measures the same ones; a graph exported for one batch size takes no other)."""
        n = min(items, len(self.data))
        n = n - n % self.local if n >= self.local else n
        for first in range(0, n, self.local):
            yield collate([self.data[i] for i in range(first, min(n, first + self.local))], self.data.has_labels)

    def whole_batches(self, items: int):
        """The first `items` items in order, unaugmented, in batches of the GLOBAL size: the
        same batches in every process, whatever their number (norm statistics depend on how
        items are batched)."""
        n = min(items, len(self.data))
        for first in range(0, n, self.batch_size):
            yield collate([self.data[i] for i in range(first, min(n, first + self.batch_size))], self.data.has_labels)


class _Steps(torch.utils.data.Dataset):
    """steps as a map-style dataset, so that DataLoader workers can prepare them ahead."""

    def __init__(self, stream: ItemStream):
        self.stream = stream

    def __getitem__(self, step):
        return self.stream.local_batch(step)


def collate(items: list, has_labels: bool) -> Batch:
    if has_labels:
        inputs = tuple(torch.stack(col) for col in zip(*(it[:-1] for it in items)))
        return Batch(inputs, torch.stack([torch.as_tensor(it[-1]) for it in items]).long())
    return Batch(tuple(torch.stack(col) for col in zip(*items)), None)


class LoaderStream:
    """A user's DataLoader: its batches are the global batches, taken in epochs; epoch e starts
    with torch's RNG seeded to (seed, e), so a shuffling loader's order repeats on resume."""

    def __init__(self, data: LoaderData, seed: int, world: World):
        self.data, self.seed, self.world = data, seed, world
        try:
            self.per_epoch = len(data.loader)
        except TypeError:
            self.per_epoch = None

    @property
    def items(self) -> int | None:
        return self.per_epoch

    def _epoch(self, e: int):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * _SEED_STRIDE + e)
            it = iter(self.data.loader)
        return it

    def _global(self, start: int):
        """Global batches from step `start` on (skipping what earlier steps used)."""
        e, step = 0, 0
        while True:
            it, empty = self._epoch(e), True
            for batch in it:
                empty = False
                if step >= start:
                    yield step, self.data.split(batch)
                step += 1
            if empty:
                raise InputError(f"{self.data.source}: the DataLoader yields no batches: give it data")
            e += 1

    def _shard(self, batch: Batch) -> Batch:
        n = int(batch.inputs[0].shape[0])
        local = _check_split(n, self.world, self.data.source)
        part = slice(self.world.rank * local, (self.world.rank + 1) * local)
        return Batch(tuple(t[part] for t in batch.inputs), None if batch.labels is None else batch.labels[part])

    def batches(self, start: int, stop: int, num_workers: int = 0):
        for step, batch in self._global(start):
            if step >= stop:
                return
            yield step, self._shard(batch)

    def eval_batches(self, items: int):
        seen = 0
        for _, batch in self._global(0):
            if seen >= items:
                return
            seen += int(batch.inputs[0].shape[0])
            yield batch

    whole_batches = eval_batches  # global batches already


def make_stream(data, batch_size: int, seed: int, world: World):
    return LoaderStream(data, seed, world) if isinstance(data, LoaderData) else \
        ItemStream(data, batch_size, seed, world)
