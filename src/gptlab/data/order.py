"""Batch positions as a pure function of the batch index: seeded shuffles, one per epoch.

Because batch `i` is always the same items, a resumed run continues exactly where it stopped
and DDP ranks can take interleaved batch indices without any sampler state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class EpochOrder:
    """Items 0..n-1 visited once per epoch, in a seeded order per epoch (or in order)."""

    n: int  # number of items
    seed: int = 0
    shuffle: bool = True
    lengths: list[int] | None = None  # item lengths: put similar lengths next to each other (less padding)
    group: int = 400  # with `lengths`: sort within windows of this many items, then shuffle runs of `run`
    run: int = 8  # with `lengths`: items that stay together (the batch size)
    _epoch: int = field(default=-1, init=False, repr=False)  # the epoch whose order is cached
    _order: np.ndarray | None = field(default=None, init=False, repr=False)

    def positions(self, index: int, batch_size: int) -> np.ndarray:
        """Item positions of batch number `index`; batches run on across epoch boundaries."""
        flat = np.arange(index * batch_size, (index + 1) * batch_size)
        epochs, offsets = np.divmod(flat, self.n)
        return np.array([self.epoch_order(e)[o] for e, o in zip(epochs.tolist(), offsets.tolist())])

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The permutation of `epoch` (cached: consecutive batches share an epoch)."""
        if not self.shuffle:
            return np.arange(self.n)
        if self._epoch != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            order = rng.permutation(self.n)
            if self.lengths is not None:
                order = self._grouped_by_length(order, rng)
            self._epoch, self._order = epoch, order
        return self._order

    def _grouped_by_length(self, order: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sort each window of `group` shuffled items by length, then shuffle runs of `run` items:
        batches hold similar lengths, yet which batches come when stays random."""
        lengths = np.asarray(self.lengths)
        groups = np.split(order, range(self.group, self.n, self.group))
        windows = [w[np.argsort(lengths[w], kind="stable")] for w in groups]
        runs = np.split(np.concatenate(windows), range(self.run, self.n, self.run))
        return np.concatenate([runs[i] for i in rng.permutation(len(runs))])


def in_order(index: int, batch_size: int, n: int) -> np.ndarray:
    """Positions of batch `index` when `n` items are visited once, in order (the last batch may be short)."""
    return np.arange(index * batch_size, min((index + 1) * batch_size, n))
