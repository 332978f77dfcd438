"""Data order for training: global batches of an epoch's shard-aware shuffle, each rank
taking a contiguous slice of every global batch, resumable at a global batch index."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from anyecg_edge.training.train_config import TrainError
from torch.utils.data import Sampler

__all__ = ["EpochBatchSampler", "shard_aware_order"]


class EpochBatchSampler(Sampler[list[int]]):
    """This rank's part of every global batch of an epoch; resumable at a global batch index.

    ``order_fn(epoch)`` returns the epoch's global order of dataset indices. Global batch
    ``b`` is ``order[b*B:(b+1)*B]``; rank ``r`` takes its contiguous ``np.array_split``
    part. A last global batch smaller than the world size is dropped (a rank would get
    nothing to step on). ``drop_last`` drops any partial last batch when there is at least
    one full batch: under torch.compile a new batch shape costs a recompilation (measured
    ~30 s for ECGFounder on an H200) and may leave dynamic-shape kernels behind; the order is
    reshuffled every epoch, so every window is still used.
    """

    def __init__(
        self,
        order_fn: Callable[[int], np.ndarray],
        n_items: int,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        if batch_size < world_size:
            raise TrainError(
                f"batch_size {batch_size} is smaller than the number of processes {world_size}"
            )
        self.order_fn = order_fn
        self.n_items = int(n_items)
        self.batch_size = int(batch_size)
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        self.start_batch = 0

    @property
    def num_batches(self) -> int:
        full, rest = divmod(self.n_items, self.batch_size)
        if self.drop_last and full:
            return full
        return full + (1 if rest >= self.world_size else 0)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def __len__(self) -> int:
        return max(0, self.num_batches - self.start_batch)

    def __iter__(self) -> Iterator[list[int]]:
        order = np.asarray(self.order_fn(self.epoch), dtype=np.int64)
        for b in range(self.start_batch, self.num_batches):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield np.array_split(batch, self.world_size)[self.rank].tolist()


def shard_aware_order(dataset: Any, seed: int) -> Callable[[int], np.ndarray]:
    """The corpus' shard-aware shuffle (shards in random order, rows shuffled within)."""
    from anyecg_edge.training.data.dataset import ShardAwareSampler

    base = getattr(dataset, "dataset", dataset)  # unwrap index-returning wrappers
    sampler = ShardAwareSampler(base, shuffle=True, seed=seed)

    def order(epoch: int) -> np.ndarray:
        sampler.set_epoch(epoch)
        return np.fromiter(iter(sampler), dtype=np.int64, count=len(sampler))

    return order
