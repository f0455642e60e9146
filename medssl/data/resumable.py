"""Training data order and augmentations that a resumed run continues exactly where it stopped.

Lightning 2.x restores the loop counters of a mid-epoch checkpoint but not the position of a plain
DataLoader, and MONAI's random transforms draw from per-worker random states that no checkpoint holds.
Here both become functions of ``(seed, epoch, index)``:

- ``ResumableSampler`` draws each pass over the data from ``seed + pass`` (shuffled, sequential or weighted),
  split across ranks like ``DistributedSampler`` (so Lightning does not replace it), and can start an epoch
  after its first ``n`` samples. An epoch is ``repeats`` passes (1 unless a tiny dataset asks for more).
  It yields ``(pass, index)`` pairs: the pass seeds the augmentations, so repeated images get new views.
- ``SeededItems`` wraps a dataset: before item ``index`` of pass ``p`` is transformed, every MONAI
  ``Randomizable`` in its transform is reseeded from ``(seed, p, index)``. The views of a sample are the
  same with any number of workers, persistent or not, and after a resume.
- ``DataOrder`` builds such loaders for a DataModule and is its ``state_dict`` / ``load_state_dict``:
  the epoch and the batches already trained in it (Lightning's own progress counter, which, unlike a count
  of batches yielded, does not include the batches the loader prefetched).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from monai.data import DataLoader
from monai.data.utils import worker_init_fn as monai_worker_init_fn
from monai.transforms import Randomizable
from torch.utils.data import Dataset, DistributedSampler

log = logging.getLogger("medssl.data")


class ResumableSampler(DistributedSampler):
    """Epoch-seeded order over ``dataset`` for this rank, yielding ``(epoch, index)``; see the module doc.

    Args:
        dataset: the (sized) dataset to draw indices of.
        shuffle: a new permutation each epoch (``seed + epoch``); else ``0 .. n-1``.
        weights: draw ``len(dataset)`` indices with replacement, with these weights (balanced sampling).
        seed: base seed of the order.
        drop_last: as ``DistributedSampler``: drop the tail that does not divide across ranks.
        repeats: passes over the dataset per epoch, each in its own order and with its own augmentations.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        shuffle: bool = True,
        weights: Sequence[float] | None = None,
        seed: int = 0,
        drop_last: bool = False,
        repeats: int = 1,
    ) -> None:
        world, rank = (dist.get_world_size(), dist.get_rank()) if dist.is_initialized() else (1, 0)
        super().__init__(
            dataset, num_replicas=world, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
        )
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self.repeats = check_repeats(repeats)
        self.start = 0  # samples of this rank's share of the current epoch to skip (set on resume)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self.start = epoch, 0

    def __len__(self) -> int:
        return self.num_samples * self.repeats

    def epoch_keys(self) -> list[tuple[int, int]]:
        """This rank's share of the current epoch: ``(pass, index)`` for each of its ``repeats`` passes."""
        first = self.epoch * self.repeats
        return [(p, index) for p in range(first, first + self.repeats) for index in self._pass(p)]

    def _pass(self, number: int) -> list[int]:
        """This rank's share of pass ``number``'s order (drawn from ``seed + number``)."""
        if self.weights is None:
            epoch, self.epoch = self.epoch, number  # DistributedSampler orders by self.epoch
            try:
                return list(super().__iter__())
            finally:
                self.epoch = epoch
        generator = torch.Generator().manual_seed(self.seed + number)
        drawn = torch.multinomial(self.weights, self.total_size, replacement=True, generator=generator)
        return drawn[self.rank : self.total_size : self.num_replicas].tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start, self.start = self.start, 0  # a skip applies to one epoch only
        return iter(self.epoch_keys()[start:])


class SeededItems(Dataset):
    """``dataset[index]`` with its random transforms reseeded from ``(seed, pass, index)`` first.

    Keys are ``(pass, index)`` pairs (from ``ResumableSampler``) or plain indices (pass 0).
    """

    def __init__(self, dataset: Any, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self._random: list[Randomizable] | None = None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> Any:
        number, index = key if isinstance(key, tuple) else (0, key)
        if self._random is None:
            self._random = randomizables(getattr(self.dataset, "transform", None))
        seeds = np.random.SeedSequence([self.seed, int(number), int(index)]).generate_state(len(self._random))
        for transform, seed in zip(self._random, seeds, strict=True):
            reseed(transform, int(seed))
        return self.dataset[int(index)]


def reseed(transform: Randomizable, seed: int) -> None:
    """``transform.set_random_state(seed=seed)``'s state, reached ~100x faster when the transform has its own.

    A new ``RandomState`` costs ~250 us under numpy 2 and ``set_random_state`` of a ``Compose`` makes one per
    child too: per sample, that was most of a 2D pretraining step's data time. Reseeding in place gives the
    same draws (every child is reseeded itself, as ``randomizables`` lists it).
    """
    if "R" in vars(transform):
        transform.R.seed(seed)
    else:  # still on the class-wide default state, which other transforms share: give it its own
        transform.set_random_state(seed=seed)


def randomizables(obj: Any) -> list[Randomizable]:
    """Every MONAI ``Randomizable`` reachable from ``obj`` (attributes, lists, dicts), in a fixed order."""
    found: list[Randomizable] = []
    seen: set[int] = set()

    def walk(value: Any) -> None:
        if id(value) in seen or isinstance(value, str | bytes | int | float | np.ndarray | torch.Tensor):
            return
        seen.add(id(value))
        if isinstance(value, Randomizable):
            found.append(value)
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list | tuple):
            children = value
        else:
            children = getattr(value, "__dict__", {}).values()
        for child in children:
            walk(child)

    walk(obj)
    return found


def quiet_worker_init(worker_id: int) -> None:
    """MONAI's worker seeding, and SIGTERM / SIGUSR1 ignored: the main process saves and stops the workers.

    Without this a scheduler's SIGTERM to the whole process group kills the workers first and the main
    process fails with "DataLoader worker exited unexpectedly" instead of checkpointing.
    """
    monai_worker_init_fn(worker_id)
    for signum in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, signal.SIG_IGN)


def check_repeats(repeats: int) -> int:
    """``repeats`` if it is a whole number of passes >= 1 (data modules check it when built)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    return repeats


def warn_one_batch_per_epoch(images: int, batch_size: int) -> None:
    """Say that one batch per epoch stalls the loader workers, and the ``repeats`` giving about eight."""
    log.warning(
        "%d training images at batch_size %d make one batch per epoch: the loader workers cannot prepare "
        "the next batch while the model trains (and validation by epoch runs after every step); set "
        "data.repeats (e.g. %d)",
        images,
        batch_size,
        max(2, -(-8 * batch_size // images)),
    )


class DataOrder:
    """Loaders whose order and augmentations resume exactly (see the module doc), and their state."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.train_sampler: ResumableSampler | None = None
        self._batch_size = 1
        self._pending: dict[str, Any] | None = None

    def loader(
        self,
        dataset: Any,
        *,
        batch_size: int,
        num_workers: int,
        train: bool,
        weights: Sequence[float] | None = None,
        repeats: int = 1,
    ) -> DataLoader:
        """A training (shuffled or weighted, last partial batch dropped; ``repeats`` passes per epoch; the
        batch at most the dataset) or evaluation (in order, one pass) loader."""
        if train and batch_size > len(dataset):
            log.warning("only %d training images: batch_size lowered to %d", len(dataset), len(dataset))
            batch_size = len(dataset)
        sampler = ResumableSampler(
            dataset,
            shuffle=train and weights is None,
            weights=weights,
            seed=self.seed,
            drop_last=False,
            repeats=repeats if train else 1,
        )
        if train:
            self.train_sampler, self._batch_size = sampler, batch_size
            self._apply_pending()
            if num_workers and len(sampler) // batch_size < 2:  # workers idle: nothing to prefetch
                warn_one_batch_per_epoch(len(dataset), batch_size)
        return DataLoader(
            SeededItems(dataset, self.seed),
            batch_size=batch_size,
            sampler=sampler,
            drop_last=train,
            num_workers=num_workers,
            persistent_workers=num_workers > 0,
            worker_init_fn=quiet_worker_init,
            generator=torch.Generator().manual_seed(self.seed),  # the global RNG stays untouched
        )

    def state_dict(self, trainer: pl.Trainer | None) -> dict[str, Any]:
        """Where the training loader is: its epoch and the batches of it this rank has trained on."""
        sampler = self.train_sampler
        if sampler is None or trainer is None:
            return {}
        return {
            "epoch": sampler.epoch,
            "batches": trainer.fit_loop.epoch_loop.batch_progress.current.ready,
            "batch_size": self._batch_size,
            "batches_per_epoch": len(sampler) // self._batch_size,
            "world_size": sampler.num_replicas,
            "seed": self.seed,
            "repeats": sampler.repeats,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Remember ``state``; the next training loader starts there."""
        self._pending = dict(state) if state else None
        self._apply_pending()

    def _apply_pending(self) -> None:
        state, sampler = self._pending, self.train_sampler
        if not state or sampler is None:
            return
        self._pending = None
        epoch, batches = int(state["epoch"]), int(state["batches"])
        saved = (state.get("world_size"), state.get("seed"), state.get("repeats", 1))
        if saved != (sampler.num_replicas, self.seed, sampler.repeats):
            log.warning(
                "resumed with another number of processes, data seed or repeats than the checkpoint's "
                "(%s -> %s ranks, seed %s -> %s, repeats %s -> %s): the data order restarts at epoch %d",
                saved[0],
                sampler.num_replicas,
                saved[1],
                self.seed,
                saved[2],
                sampler.repeats,
                epoch + 1,
            )
            batches = int(state["batches_per_epoch"])
        if batches >= int(state["batches_per_epoch"]):  # saved at the end of an epoch
            sampler.epoch, sampler.start = epoch + 1, 0
        else:
            sampler.epoch, sampler.start = epoch, batches * int(state["batch_size"])
