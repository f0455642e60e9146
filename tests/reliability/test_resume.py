"""A stopped run (SIGTERM / SIGUSR1 at any step, mid-epoch or at an epoch's end) resumed from last.ckpt
continues the loss curve of a run never stopped, exactly: model, optimiser, schedule, EMA teacher, queue,
data order, augmentations and random states are all restored."""

import signal

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DistributedSampler

from medssl.commands.pretrain import run
from medssl.data.resumable import DataOrder, ResumableSampler, SeededItems
from medssl.reliability.preemption import Preempted

from ..commands.conftest import write_png_folder
from .conftest import Losses, SignalAt, pretrain_args


def _stopped_and_resumed(method, source, tmp_path, stops, epochs="3", signum=signal.SIGTERM, extra=()):
    epochs = ("--trainer.max_epochs", epochs, *extra)
    reference = Losses()
    run(pretrain_args(method, source, tmp_path / "ref", *epochs), [reference])
    resumed, folder, errors = Losses(), tmp_path / "stopped", []
    for n, step in enumerate(stops):
        resume = ["--ckpt_path", "last"] if n else []
        with pytest.raises(Preempted) as info:
            run(
                pretrain_args(method, source, folder, *epochs, *resume),
                [resumed, SignalAt(step, signum)],
            )
        errors.append(info.value)
    run(
        pretrain_args(method, source, folder, *epochs, "--ckpt_path", "last"),
        [resumed],
    )
    return reference.values, resumed.values, errors, folder


@pytest.mark.slow
@pytest.mark.parametrize("method, stops", [("simclr", [2, 3]), ("mae", [4]), ("moco", [5]), ("dino", [1])])
def test_resume_after_sigterm_continues_the_curve_exactly(method, stops, png16, tmp_path):
    reference, resumed, errors, folder = _stopped_and_resumed(method, png16, tmp_path, stops)
    assert [e.step for e in errors] == stops and all(e.exit_code == 143 for e in errors)
    assert all(e.checkpoint == str(folder / "checkpoints" / "last.ckpt") for e in errors)
    assert sorted(resumed) == sorted(reference) == list(range(1, 10))
    assert resumed == reference  # bit-identical: nothing was trained twice or skipped


@pytest.mark.slow
def test_resume_inside_a_repeated_pass_continues_the_curve_exactly(png16, tmp_path, recwarn):
    extra = ("--data.repeats", "2")  # epochs of two passes, 3 steps each: step 4 is in the second pass
    reference, resumed, errors, _ = _stopped_and_resumed("simclr", png16, tmp_path, [4], "2", extra=extra)
    assert errors[0].step == 4 and sorted(reference) == list(range(1, 13))
    assert resumed == reference
    # so Lightning's mid-epoch warning ("... can cause unreliable results") would mislead: it is not shown
    assert not [w for w in recwarn if "ended before the epoch ended" in str(w.message)]


@pytest.mark.slow
def test_sigusr1_checkpoints_and_stops_like_sigterm(png16, tmp_path):
    reference, resumed, errors, folder = _stopped_and_resumed(
        "simclr", png16, tmp_path, [4], signum=signal.SIGUSR1
    )
    assert errors[0].exit_code == 128 + signal.SIGUSR1 and "stopped by SIGUSR1 at step 4" in str(errors[0])
    assert resumed == reference
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 9


def test_sampler_orders_are_seeded_per_epoch_and_skip_on_resume():
    sampler = ResumableSampler(range(10), seed=3)
    first = list(sampler)
    assert sorted(i for _, i in first) == list(range(10)) and {e for e, _ in first} == {0}
    assert list(sampler) == first  # the same epoch, the same order
    sampler.set_epoch(1)
    second = list(sampler)
    assert [i for _, i in second] != [i for _, i in first] and {e for e, _ in second} == {1}
    sampler.start = 4
    assert list(sampler) == second[4:] and list(sampler) == second  # a skip applies to one pass only
    weighted = ResumableSampler(range(4), weights=[0, 0, 1, 0], seed=0)
    assert [i for _, i in weighted] == [2, 2, 2, 2]


def test_repeats_give_each_epoch_several_seeded_passes_and_resume_inside_them():
    sampler = ResumableSampler(range(6), seed=3, repeats=3)
    first = list(sampler)
    assert len(sampler) == len(first) == 18
    assert [n for n, _ in first] == [0] * 6 + [1] * 6 + [2] * 6  # the pass seeds each view
    assert all(sorted(i for n, i in first if n == p) == list(range(6)) for p in range(3))
    assert [i for n, i in first if n == 0] != [i for n, i in first if n == 1]  # a new order each pass
    sampler.set_epoch(1)
    epoch_1 = list(sampler)
    assert {n for n, _ in epoch_1} == {3, 4, 5}
    sampler.start = 8  # resumed inside the second pass of epoch 1
    assert list(sampler) == epoch_1[8:] and list(sampler) == epoch_1
    once, torch_order = ResumableSampler(range(6), seed=3), DistributedSampler(range(6), 1, 0, seed=3)
    once.set_epoch(4)
    torch_order.set_epoch(4)
    assert list(once) == [(4, i) for i in torch_order]  # repeats=1: the pass is the epoch, torch's order


def test_data_order_state_round_trip():
    order = DataOrder(seed=5)
    order.load_state_dict(
        {"epoch": 2, "batches": 3, "batch_size": 2, "batches_per_epoch": 5, "world_size": 1, "seed": 5}
    )
    loader = order.loader(list(range(10)), batch_size=2, num_workers=0, train=True)
    fresh = ResumableSampler(list(range(10)), seed=5)
    fresh.set_epoch(2)
    assert [i for _, i in loader.sampler] == [i for _, i in list(fresh)[6:]]
    order.load_state_dict(  # saved at the end of epoch 2: the next one starts from its beginning
        {"epoch": 2, "batches": 5, "batch_size": 2, "batches_per_epoch": 5, "world_size": 1, "seed": 5}
    )
    assert (order.train_sampler.epoch, order.train_sampler.start) == (3, 0)


def test_seeded_items_give_the_same_views_for_the_same_epoch_and_index():
    from monai.transforms import Compose, RandGaussianNoised

    class Items(list):
        transform = Compose([RandGaussianNoised("x", prob=1.0)])

        def __getitem__(self, i):
            return self.transform({"x": torch.zeros(3)})

    items = SeededItems(Items([0, 1]), seed=0)
    a, b, c = items[(0, 1)]["x"], items[(1, 1)]["x"], items[(0, 1)]["x"]
    assert torch.equal(a, c) and not torch.equal(a, b)


class _HardKill(BaseException):
    """Stands for SIGKILL: no Exception handler on the way catches it, nothing is saved on the way out."""


class _KillAt(pl.Callback):
    """Die at ``where`` ("batch_end", "validation" or "next_batch") of optimiser step ``step``."""

    def __init__(self, where, step):
        self.where, self.step = where, step

    def on_train_batch_end(self, trainer, *args):
        if self.where == "batch_end" and trainer.global_step == self.step:
            raise _HardKill

    def on_validation_batch_end(self, trainer, *args):
        if self.where == "validation" and trainer.global_step == self.step and not trainer.sanity_checking:
            raise _HardKill

    def on_train_batch_start(self, trainer, *args):
        if self.where == "next_batch" and trainer.global_step == self.step:
            raise _HardKill


@pytest.mark.slow
def test_a_chain_of_kills_around_epoch_ends_resumes_exactly(tmp_path):
    """Kills between an epoch's last step and its end used to leave a checkpoint that Lightning resumes
    with epoch counters one behind: the resumed run was right, the one resumed from it drifted."""
    source = write_png_folder(tmp_path / "png", count=24)  # 18 training images: 4 steps per epoch
    overlay = tmp_path / "every_4.yaml"
    overlay.write_text(
        "trainer:\n  callbacks:\n    - class_path: medssl.reliability.checkpoints.RunCheckpoint\n"
        "      init_args: {save_last_every_n_steps: 4}\n"
    )
    common = ("--config", str(overlay), "--trainer.max_epochs", "6")
    reference = Losses()
    run(pretrain_args("moco", source, tmp_path / "ref", *common), [reference])
    resumed, folder = Losses(), tmp_path / "killed"
    for n, (where, step) in enumerate(
        [("validation", 8), ("batch_end", 10), ("validation", 16), ("next_batch", 20)]
    ):
        with pytest.raises(_HardKill):
            run(
                pretrain_args("moco", source, folder, *common, *(["--ckpt_path", "last"] if n else [])),
                [resumed, _KillAt(where, step)],
            )
    run(pretrain_args("moco", source, folder, *common, "--ckpt_path", "last"), [resumed])
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 24
    assert resumed.values == reference.values
