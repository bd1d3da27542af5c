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
            self._epoch, self._order = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._order
