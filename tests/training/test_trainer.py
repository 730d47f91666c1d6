"""Trainer: files written, exact resume, overfitting one batch, checkpoint safety and compatibility."""

from __future__ import annotations

import csv
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch._functorch.config as functorch_config
from training.fake_clock import FakeClock, on_fake_clock

from masksam.data.plans import Plans
from masksam.errors import CheckpointError
from masksam.memory import FreedMemoryGuard
from masksam.precision import Precision
from masksam.training import checkpoint as ckpt
from masksam.training import trainer as trainer_module
from masksam.training.config import TrainingConfig
from masksam.training.criterion import SetCriterion
from masksam.training.distributed import DistributedContext
from masksam.training.setup import model_config_for
from masksam.training.trainer import Trainer, restore_cuda_rng

FAST = TrainingConfig(epochs=2, iterations_per_epoch=2, validation_patches=2, num_workers=0, final_validation=False)


def make_trainer(planned_dataset, output: Path, config: TrainingConfig = FAST, **model_overrides) -> Trainer:
    _, plans_dir = planned_dataset
    plans = Plans.load(plans_dir)
    # A test that sets the number of queries means the paper's matched queries.
    queries = model_overrides.pop("queries", "matched" if "num_queries" in model_overrides else "class_slots")
    model_config = model_config_for(plans, backbone="tiny", queries=queries)
    model_config = replace(model_config, patch_size=(2, 64, 64), **model_overrides)
    return Trainer(
        model_config=model_config,
        training_config=config,
        plans=plans,
        plans_dir=plans_dir,
        output_dir=output,
        backbone_checkpoint=None,
        show_progress=False,
    )


@pytest.mark.parametrize("include_background", [True, False], ids=["background-segment", "no-background-segment"])
def test_validation_reports_foreground_classes_only(planned_dataset, include_background: bool):
    from masksam.training.validation import draw_validation_patches

    queries = "matched" if include_background else "class_slots"  # class slots never hold background
    trainer = make_trainer(planned_dataset, Path("unused"), include_background=include_background, queries=queries)
    trainer.plans = replace(trainer.plans, include_background=include_background)  # as planned that way
    trainer.validation_patches = draw_validation_patches(  # as fit() draws them
        trainer.plans_dir / trainer.plans.preprocessed_folder, trainer.val_ids, count=2, patch_size=(2, 64, 64), seed=0
    )
    metrics = trainer.validate()
    dice = {key for key in metrics if key.startswith("dice_")}
    assert dice == {f"dice_{name}" for name in trainer.class_names[1:]}, dice
    present = [metrics[key] for key in dice if not math.isnan(metrics[key])]
    assert metrics["mean_dice"] == pytest.approx(sum(present) / len(present))


def trainable_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    return ckpt.split_state(trainer.model)[0]


@pytest.mark.slow
def test_fit_writes_checkpoints_logs_and_pictures(planned_dataset, tmp_path):
    trainer = make_trainer(planned_dataset, tmp_path / "model")
    state = trainer.fit()
    fold = tmp_path / "model" / "fold_0"
    for name in ("checkpoint_latest.pt", "checkpoint_best.pt", "checkpoint_final.pt", "progress.png"):
        assert (fold / name).stat().st_size > 0, name
    assert state.epoch == 2
    rows = list(csv.DictReader((fold / "metrics.csv").open()))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert {"train_loss", "val_loss", "dice_class1", "dice_class2", "mean_dice", "lr", "loss_classification"} <= set(
        rows[0]
    )
    assert float(rows[1]["lr"]) < float(rows[0]["lr"])  # poly decay
    log = (fold / "training_log.txt").read_text()
    assert "epoch 2/2" in log and "pseudo-Dice" in log
    assert not [p for p in fold.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("machine_gb", [1e-9, 1e6], ids=["peak-past-the-limit", "roomy-machine"])
@pytest.mark.slow
def test_freed_memory_goes_back_once_the_peak_nears_the_machine(planned_dataset, tmp_path, machine_gb: float):
    # A batch-2 LiteMedSAM step with kept freed blocks peaks at 16.4 GB of a 24 GB machine: the trainer must
    # hand them back (once, and say so) when its peak passes half the memory, and train on.
    trainer = make_trainer(planned_dataset, tmp_path / "model")
    trainer.memory_guard = FreedMemoryGuard(machine_bytes=int(machine_gb * 2**30))
    assert trainer.fit().epoch == 2
    log = (tmp_path / "model" / "fold_0" / "training_log.txt").read_text()
    expected = 1 if machine_gb < 1 else 0
    assert log.count("freed blocks go back to the kernel") == expected
    assert trainer.memory_guard.returned == bool(expected)


@pytest.mark.slow
def test_free_memory_goes_back_before_each_epochs_workers_start(planned_dataset, tmp_path, monkeypatch):
    # Workers are forked when an epoch's loader starts; a trainer resident at 13.5 GB of freed activations
    # forked a worker that doubled it by copy-on-write, and the kernel killed the run at its second epoch.
    events: list[str] = []
    monkeypatch.setattr(trainer_module, "release_free_memory", lambda: events.append("release") or True)
    trainer = make_trainer(planned_dataset, tmp_path / "model")
    build_loader = trainer.build_loader

    def loader_that_reports_its_start(epoch: int):
        loader = build_loader(epoch)
        start_workers = loader.__iter__

        class Reporting:
            def __iter__(self):
                events.append("workers")
                return start_workers()

        return Reporting()

    trainer.build_loader = loader_that_reports_its_start
    trainer.fit()
    assert events == ["release", "workers"] * 2


@pytest.mark.slow  # a full fit() run and a reload: about 6 s
def test_checkpoint_rebuilds_the_trained_model(planned_dataset, tmp_path):
    trainer = make_trainer(planned_dataset, tmp_path / "model")
    trainer.fit()
    loaded = ckpt.load_trained_model(tmp_path / "model" / "fold_0" / "checkpoint_final.pt")
    volume = torch.randn(1, 1, 2, 64, 64)
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(volume).mask_logits
        actual = loaded.model(volume).mask_logits
    torch.testing.assert_close(actual, expected)
    payload = loaded.payload
    assert payload["frozen_state"] is not None  # tiny backbone has no weights file: stored in full
    assert all(t.device.type == "cpu" for t in payload["trainable_state"].values())


@pytest.mark.slow
def test_compiled_training_matches_eager_and_saves_plain_weights(planned_dataset, tmp_path):
    """``--compile``: the compiled network trains the same parameters (same losses as eager, within float
    tolerance) and the checkpoints hold the plain module's names (no ``_orig_mod.`` prefix)."""
    config = replace(FAST, epochs=1, iterations_per_epoch=2, validation_patches=1)
    eager = make_trainer(planned_dataset, tmp_path / "eager", config)
    compiled = make_trainer(planned_dataset, tmp_path / "compiled", replace(config, compile=True))
    assert not functorch_config.enable_autograd_cache  # its disk writes crashed the process (training/compilation.py)
    image, label = next(iter(eager.build_loader(epoch=0)))
    for step in range(2):  # the same sampled loss points for both
        torch.manual_seed(step)
        expected = eager.train_step(image, label)
        torch.manual_seed(step)
        actual = compiled.train_step(image, label)
        assert float(actual["total"]) == pytest.approx(float(expected["total"]), rel=1e-3, abs=1e-4)
    compiled.fit()
    payload = ckpt.read_checkpoint(tmp_path / "compiled" / "fold_0" / "checkpoint_final.pt")
    assert set(payload["trainable_state"]) == set(trainable_state(eager))


@pytest.mark.slow  # three full fit() runs: about 10 s
def test_resume_is_exact(planned_dataset, tmp_path):
    straight = make_trainer(planned_dataset, tmp_path / "straight")
    straight.fit()

    interrupted = make_trainer(planned_dataset, tmp_path / "resumed")
    interrupted.fit(stop_after_epochs=1)
    assert not (tmp_path / "resumed" / "fold_0" / "checkpoint_final.pt").exists()
    resumed = make_trainer(planned_dataset, tmp_path / "resumed")
    resumed.fit(resume=True)

    expected, actual = trainable_state(straight), trainable_state(resumed)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    strip = [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in resumed.state.history]
    assert strip == [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in straight.state.history]


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_of_another_model(planned_dataset, tmp_path):
    make_trainer(planned_dataset, tmp_path / "model", queries="matched").fit(stop_after_epochs=1)
    other = make_trainer(planned_dataset, tmp_path / "model", num_queries=5)
    with pytest.raises(CheckpointError, match="num_queries 8 .now 5.") as error:
        other.fit(resume=True)
    assert "\n" not in str(error.value)


def test_load_refuses_foreign_and_truncated_files(tmp_path):
    foreign = tmp_path / "sam.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(1)}, foreign)
    with pytest.raises(
        CheckpointError,
        match="not a MaskSAM checkpoint .no 'masksam-training-checkpoint' tag.; official SAM weights go to",
    ):
        ckpt.read_checkpoint(foreign)
    truncated = tmp_path / "checkpoint_latest.pt"
    truncated.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match="truncated"):
        ckpt.read_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="not found"):
        ckpt.read_checkpoint(tmp_path / "missing.pt")


@pytest.mark.slow
def test_a_few_steps_overfit_one_batch(planned_dataset):
    config = replace(FAST, epochs=1, iterations_per_epoch=1000, learning_rate=1e-2)
    trainer = make_trainer(planned_dataset, Path("unused"), config, num_queries=4)
    image, label = next(iter(trainer.build_loader(epoch=0)))
    torch.manual_seed(0)
    losses = [trainer.train_step(image, label)["total"] for _ in range(20)]
    # The median of the last five: at this learning rate a flip of the Hungarian matching can spike one step's loss
    # back to the start (seen at step 20 in float32: 6.1 -> 9.3 -> 6.7) before it falls again.
    assert sorted(losses[-5:])[2] < 0.75 * losses[0], losses


def test_ground_truth_prompts_match_each_query_to_its_prompt(planned_dataset, monkeypatch):
    """Query i is prompted with segment i's box: training and validation pair them directly (no Hungarian
    matching), and validation scores each query as the class of its prompt, as prediction does."""
    from masksam.inference.semantic import prompted_semantic_scores

    trainer = make_trainer(planned_dataset, Path("unused"), prompt_mode="ground_truth")
    image, label = next(iter(trainer.build_loader(epoch=0)))

    def no_hungarian(*_args, **_kwargs):
        raise AssertionError("the Hungarian matcher ran in ground-truth prompt mode")

    monkeypatch.setattr(trainer.criterion, "matcher", no_hungarian)
    calls, criterion = [], trainer.criterion

    def spy(outputs, targets, **options):
        calls.append(options["indices"])
        return criterion(outputs, targets, **options)

    trainer.criterion = spy
    trainer.train_step(image, label)
    _, predicted = trainer.validation_batch(image, label)
    targets = trainer.targets(label)
    assert len(calls) == 2
    for matching in calls:
        valid = targets.valid.nonzero()
        assert matching.slice_index.tolist() == valid[:, 0].tolist()
        assert matching.prediction_index.tolist() == matching.target_index.tolist() == valid[:, 1].tolist()
    with torch.no_grad():
        output = trainer.model(image, targets.boxes)
    config = trainer.model_config
    scores = prompted_semantic_scores(
        targets.class_ids,
        output.mask_logits,
        num_classes=config.num_classes,
        include_background=config.include_background,
        prompt_boxes=targets.boxes,
    )
    assert torch.equal(predicted, scores.argmax(dim=1).reshape(label.shape))


@pytest.mark.parametrize("train_backbone", [False, True], ids=["frozen-sam", "trained-sam"])
def test_gradients_reach_only_trainable_parameters(planned_dataset, train_backbone: bool):
    trainer = make_trainer(planned_dataset, Path("unused"), train_backbone=train_backbone)
    sam_names = {
        f"{prefix}.{name}"
        for prefix in ("image_encoder.encoder", "prompt_encoder", "mask_decoder.decoder")
        for name, _ in trainer.model.get_submodule(prefix).named_parameters()
    }
    trained_sam = {name for name, p in trainer.model.named_parameters() if p.requires_grad and name in sam_names}
    assert bool(trained_sam) == train_backbone
    image, label = next(iter(trainer.build_loader(epoch=0)))
    config = trainer.model_config
    targets = trainer.targets(label)
    losses = SetCriterion(num_classes=config.num_classes)(trainer.model(image), targets)
    losses.total.backward()
    for name, parameter in trainer.model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        else:
            assert parameter.grad is None, name


_WRITER = textwrap.dedent(
    """
    import sys, torch
    from masksam.training.checkpoint import CHECKPOINT_VERSION, save_atomic
    path = sys.argv[1]
    big = {"format": "masksam-training-checkpoint", "version": CHECKPOINT_VERSION, "weights": torch.randn(8_000_000)}
    print("ready", flush=True)
    while True:
        save_atomic(big, path)
    """
)


@pytest.mark.slow
def test_killing_a_writer_never_corrupts_the_latest_checkpoint(tmp_path):
    path = tmp_path / "checkpoint_latest.pt"
    ckpt.save_atomic(
        {"format": "masksam-training-checkpoint", "version": ckpt.CHECKPOINT_VERSION, "weights": torch.zeros(3)}, path
    )
    for delay in (0.05, 0.3, 0.7):
        writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
        assert writer.stdout.readline().strip() == "ready"
        time.sleep(delay)
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait()
        payload = ckpt.read_checkpoint(path)  # the old or a new complete file, never a torn one
        assert payload["weights"].numel() in (3, 8_000_000)
    ckpt.save_atomic({"format": "masksam-training-checkpoint", "version": ckpt.CHECKPOINT_VERSION}, path)
    assert not list(tmp_path.glob(".checkpoint_latest.pt.*.tmp"))  # stale temporaries of killed writers removed


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_latest.pt"
    ckpt.save_atomic({"format": "masksam-training-checkpoint", "version": ckpt.CHECKPOINT_VERSION, "epoch": 1}, path)

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device.*previous checkpoint is unchanged"):
        ckpt.save_atomic(
            {"format": "masksam-training-checkpoint", "version": ckpt.CHECKPOINT_VERSION, "epoch": 2}, path
        )
    monkeypatch.undo()
    assert ckpt.read_checkpoint(path)["epoch"] == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_cpu_threads_are_chosen_by_measurement_and_logged(planned_dataset, tmp_path, monkeypatch):
    from masksam import threads

    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "measure_thread_speeds", lambda counts: {1: 95.0, 2: 179.0})
    trainer = make_trainer(planned_dataset, tmp_path / "model")
    assert trainer.threads.threads == 2 and torch.get_num_threads() == 2
    trainer.log_start()
    assert "CPU threads: 2 thread(s) (measured" in (trainer.fold_dir / "training_log.txt").read_text()
    given = make_trainer(planned_dataset, tmp_path / "other", replace(FAST, threads=1))
    assert given.threads.threads == 1 and torch.get_num_threads() == 1


def test_encoder_adapters_pause_for_the_first_share_of_steps(planned_dataset):
    """Paused: no gradient reaches the encoder's adapters (the encoder ran without autograd); afterwards it does."""
    config = replace(FAST, iterations_per_epoch=4, encoder_adapters_from=0.5, threads=1)
    trainer = make_trainer(planned_dataset, Path("unused"), config)
    image, label = next(iter(trainer.build_loader(epoch=0)))
    encoder_adapters = list(trainer.model.image_encoder.attention_adapters.parameters())
    reached = []
    for _ in range(4):  # 2 epochs × 4 steps planned: steps 0-3 paused, 4-7 not
        trainer.optimizer.zero_grad(set_to_none=True)
        paused = trainer.pause_encoder_adapters()
        trainer.train_step(image, label)
        reached.append((paused, any(p.grad is not None for p in encoder_adapters)))
    assert reached == [(True, False)] * 4
    trainer.scheduler.last_epoch = 4
    assert not trainer.pause_encoder_adapters()
    trainer.train_step(image, label)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder_adapters)


def test_paused_and_full_steps_are_weighted_by_their_share(planned_dataset):
    trainer = make_trainer(planned_dataset, Path("unused"), replace(FAST, encoder_adapters_from=0.25, threads=1))
    assert trainer.mean_step_seconds([(True, 2.0), (False, 6.0)]) == pytest.approx(0.25 * 2 + 0.75 * 6)
    assert trainer.mean_step_seconds([(True, 2.0), (True, 4.0)]) == pytest.approx(3.0)


def test_the_step_probe_times_as_a_budgeted_run_does(planned_dataset, monkeypatch):
    """The first step (5 s of warm-up) is not timed, the last runs with the encoder's adapters on (3 s against 1 s
    paused), and the two are weighted by their phase's share of the schedule."""
    config = replace(FAST, encoder_adapters_from=0.5, threads=1)
    trainer = make_trainer(planned_dataset, Path("unused"), config)
    clock = FakeClock(step_seconds=lambda index: {0: 5.0, 1: 1.0}.get(index, 3.0))
    on_fake_clock(trainer, clock, monkeypatch)
    paused = []
    pause = trainer.pause_encoder_adapters
    monkeypatch.setattr(
        trainer, "pause_encoder_adapters", lambda **kwargs: paused.append(pause(**kwargs)) or paused[-1]
    )
    assert trainer.probe_step_seconds() == pytest.approx(0.5 * 1.0 + 0.5 * 3.0)
    assert paused == [True, True, False] and clock.steps == 3


def test_a_budgeted_run_times_its_first_steps_as_the_step_probe_does(planned_dataset, tmp_path, monkeypatch):
    """The epoch loop's timing follows the probe's rule: the first step untimed, the last timed step with the
    encoder's adapters on, the later steps paused again while the schedule's first half lasts."""
    config = replace(BUDGETED, time_budget_minutes=0.75, encoder_adapters_from=0.5)
    clock = FakeClock(step_seconds=lambda index: {0: 5.0, 1: 1.0}.get(index, 3.0))
    trainer = make_trainer(planned_dataset, tmp_path / "model", config, num_queries=4)
    on_fake_clock(trainer, clock, monkeypatch)
    paused = []
    pause = trainer.pause_encoder_adapters
    monkeypatch.setattr(
        trainer, "pause_encoder_adapters", lambda **kwargs: paused.append(pause(**kwargs)) or paused[-1]
    )
    trainer.fit(stop_after_epochs=1)
    assert paused[:4] == [True, True, False, True]
    assert "one step takes 2.00 s here" in (trainer.fold_dir / "training_log.txt").read_text()


def test_a_schedule_for_a_budget_counts_validation(planned_dataset):
    """9 s at 1 s a step, 2 validation patches of about half a step each (0.5 s): 3 epochs of 2 steps."""
    trainer = make_trainer(planned_dataset, Path("unused"), BUDGETED, num_queries=4)
    schedule = trainer.schedule_for_budget(9.0, 1.0)
    assert (schedule.epochs, schedule.iterations_per_epoch) == (3, 2)


def test_class_slot_queries_start_at_their_class_boxes_and_train_with_denoising(planned_dataset, tmp_path):
    config = replace(FAST, box_init="dataset", denoising_groups=2, threads=1)
    trainer = make_trainer(planned_dataset, tmp_path / "model", config)
    assert trainer.model_config.queries == "class_slots" and trainer.model_config.num_queries == 2
    trainer.initialise_boxes()
    with torch.no_grad():
        image, label = next(iter(trainer.build_loader(epoch=0)))
        output = trainer.model(image)
    first_boxes = output.aux_boxes.mean(dim=0)  # (N, 4): the image-dependent part starts small
    assert not torch.allclose(first_boxes[0], first_boxes[1], atol=0.02)  # the two classes start apart
    log = (trainer.fold_dir / "training_log.txt").read_text()
    assert "class-slot boxes start at the training patches' median boxes" in log
    terms = trainer.train_step(image, label)
    assert terms["denoising_mask_dice"] > 0 and terms["denoising_classification"] > 0


# 12 s for at most 3 epochs: after the 3 timed steps of 1 s, 3 epochs × 2 steps fit (3.5 + 2.5 + 2.5 s).
BUDGETED = replace(FAST, epochs=3, iterations_per_epoch=100, time_budget_minutes=0.2, validation_patches=2, threads=1)


@pytest.mark.slow
def test_a_budgeted_run_ends_within_its_budget_at_learning_rate_zero(planned_dataset, tmp_path, monkeypatch):
    """1 s steps and 0.5 s validations in 12 s: the fitted schedule is trained to its end (the poly schedule
    reaches 0, which is what a budget-cut run would miss) and the run ends inside its budget."""
    clock = FakeClock()
    trainer = make_trainer(planned_dataset, tmp_path / "model", BUDGETED, num_queries=4)
    on_fake_clock(trainer, clock, monkeypatch)
    state = trainer.fit()
    assert state.schedule.iterations_per_epoch < 100 and state.epoch == state.schedule.epochs == 3
    learning_rates = [record["lr"] for record in state.history]
    assert all(lr > 0 for lr in learning_rates[:-1]), learning_rates  # no epoch trained at lr 0
    assert learning_rates[-1] == 0.0
    assert clock.elapsed <= 12.0
    assert sum(record["epoch_seconds"] for record in state.history) <= 12.0
    assert "time budget used up" not in (trainer.fold_dir / "training_log.txt").read_text()


@pytest.mark.slow
def test_a_run_whose_epochs_are_faster_than_its_first_steps_uses_its_whole_budget(
    planned_dataset, tmp_path, monkeypatch
):
    """The first steps carry a fresh process's warm-up (1.5 s here, 0.5 s later): the schedule fitted from them
    (4 epochs) would leave most of the 18 s unused. Once a later epoch is timed, the run takes the epochs that fit
    (6, all it asked for), the poly schedule still ends at 0, and the run stays inside its budget."""
    config = replace(BUDGETED, epochs=6, time_budget_minutes=0.3, encoder_adapters_from=0.0)
    clock = FakeClock(step_seconds=lambda index: 1.5 if index < 3 else 0.5)
    trainer = make_trainer(planned_dataset, tmp_path / "model", config, num_queries=4)
    on_fake_clock(trainer, clock, monkeypatch)
    state = trainer.fit()
    log = (trainer.fold_dir / "training_log.txt").read_text()
    assert "so this run does 4 epochs" in log and "does 6 epochs instead of 4" in log
    assert state.epoch == state.schedule.epochs == 6
    learning_rates = [record["lr"] for record in state.history]
    assert all(lr > 0 for lr in learning_rates[:-1]) and learning_rates[-1] == 0.0, learning_rates
    assert clock.elapsed <= 18.0


@pytest.mark.slow
def test_a_run_whose_epochs_slow_down_ends_its_schedule_at_learning_rate_zero(planned_dataset, tmp_path, monkeypatch):
    """Steps of 1 s fit 6 epochs × 2 in 18 s; from the 9th step on they take 2 s. After epoch 4 (3.5 s) the 2 epochs
    left no longer fit: the schedule ends at 5, so the learning rate reaches 0 on the last step, where the budget
    would have cut the run after epoch 5 of 6 with the learning rate above 0."""
    config = replace(BUDGETED, epochs=6, time_budget_minutes=0.3, encoder_adapters_from=0.0)
    clock = FakeClock(step_seconds=lambda index: 1.0 if index < 8 else 2.0)
    trainer = make_trainer(planned_dataset, tmp_path / "model", config, num_queries=4)
    on_fake_clock(trainer, clock, monkeypatch)
    state = trainer.fit()
    log = (trainer.fold_dir / "training_log.txt").read_text()
    assert "so this run does 6 epochs" in log and "more than planned, so this run does 5 epochs instead of 6" in log
    assert "time budget used up" not in log
    assert state.epoch == state.schedule.epochs == 5
    learning_rates = [record["lr"] for record in state.history]
    assert all(lr > 0 for lr in learning_rates[:-1]) and learning_rates[-1] == 0.0, learning_rates
    assert clock.elapsed <= 18.0


@pytest.mark.slow
def test_a_resumed_run_gets_what_is_left_of_its_budget(planned_dataset, tmp_path, monkeypatch):
    """Interrupted after its first epoch (3.5 s of 12), resumed on a busier machine (2 s steps): the second part
    may use the 8.5 s left, not a fresh 12 s, so the run's training time stays within its budget."""
    first = make_trainer(planned_dataset, tmp_path / "model", BUDGETED, num_queries=4)
    on_fake_clock(first, FakeClock(), monkeypatch)
    first.fit(stop_after_epochs=1)
    latest = ckpt.read_checkpoint(first.fold_dir / "checkpoint_latest.pt")
    assert latest["training_seconds"] == pytest.approx(3.5)  # recorded for the next part

    second = make_trainer(planned_dataset, tmp_path / "model", BUDGETED, num_queries=4)
    clock = FakeClock(step_seconds=lambda index: 2.0, start=5000.0)
    on_fake_clock(second, clock, monkeypatch)
    state = second.fit(resume=True)
    assert state.epoch == 2  # a third 4.5 s epoch would end past the 12 s (a fresh deadline allowed it: 12.5 s)
    assert clock.elapsed <= 12.0 - 3.5
    assert state.training_seconds == pytest.approx(3.5 + 4.5)
    assert sum(record["epoch_seconds"] for record in state.history) <= 12.0
    log = (second.fold_dir / "training_log.txt").read_text()
    assert "time budget used up after epoch 2 of 3 (0.1 of 0.2 minutes trained)" in log
    assert ckpt.read_checkpoint(second.fold_dir / "checkpoint_final.pt")["training_seconds"] == pytest.approx(8.0)


@pytest.mark.slow
def test_a_run_whose_budget_is_spent_trains_no_epoch_on_continue(planned_dataset, tmp_path, monkeypatch):
    """Steps slowed from 1 s to 4 s after the schedule was fitted: the budget stops the run after epoch 2 of 3
    (3.5 + 8.5 s of 12). Continued under the same budget, it trains nothing more; without one, it finishes."""
    first = make_trainer(planned_dataset, tmp_path / "model", BUDGETED, num_queries=4)
    on_fake_clock(first, FakeClock(step_seconds=lambda index: 1.0 if index < 3 else 4.0), monkeypatch)
    assert first.fit().epoch == 2
    assert (
        "run again with --continue and a larger --time-budget (or none)"
        in (first.fold_dir / "training_log.txt").read_text()
    )

    again = make_trainer(planned_dataset, tmp_path / "model", BUDGETED, num_queries=4)
    clock = FakeClock()
    on_fake_clock(again, clock, monkeypatch)
    assert again.fit(resume=True).epoch == 2 and clock.steps == 0

    no_budget = replace(BUDGETED, time_budget_minutes=None)
    unbudgeted = make_trainer(planned_dataset, tmp_path / "model", no_budget, num_queries=4)
    on_fake_clock(unbudgeted, FakeClock(), monkeypatch)
    state = unbudgeted.fit(resume=True)
    assert state.epoch == state.schedule.epochs == 3 and state.history[-1]["lr"] == 0.0


@pytest.mark.slow
def test_a_checkpoint_from_before_training_seconds_counts_its_epochs(planned_dataset, tmp_path, monkeypatch):
    first = make_trainer(planned_dataset, tmp_path / "model", BUDGETED, num_queries=4)
    on_fake_clock(first, FakeClock(), monkeypatch)
    first.fit(stop_after_epochs=1)
    path = first.fold_dir / "checkpoint_latest.pt"
    payload = ckpt.read_checkpoint(path)
    del payload["training_seconds"]
    payload["history"][0]["epoch_seconds"] = 11.0
    ckpt.save_atomic(payload, path)
    resumed = make_trainer(planned_dataset, tmp_path / "model", BUDGETED, num_queries=4)
    clock = FakeClock()
    on_fake_clock(resumed, clock, monkeypatch)
    resumed.fit(resume=True)
    assert resumed.state.epoch == 1 and clock.steps == 0  # 11 s of 12 spent: no 11 s epoch fits


@pytest.mark.slow  # the budget is 15 s of real time
def test_time_budget_schedule_ends_with_the_run(planned_dataset, tmp_path):
    """The same on the real clock: the budget holds the run's whole wall time (planning, epochs, validation)."""
    config = replace(FAST, epochs=100, iterations_per_epoch=100, time_budget_minutes=0.25, validation_patches=2)
    trainer = make_trainer(planned_dataset, tmp_path / "model", config, num_queries=4)
    started = time.monotonic()
    state = trainer.fit()
    assert 1 <= state.epoch <= state.schedule.epochs < 100
    assert sum(record["epoch_seconds"] for record in state.history) <= 15.0
    assert time.monotonic() - started <= 15.0 + 5.0  # and the final checkpoints, written after the deadline check
    learning_rates = [record["lr"] for record in state.history]
    assert all(lr > 0 for lr in learning_rates[:-1]), learning_rates  # no epoch trained at lr 0


@pytest.mark.slow
def test_the_first_epoch_bar_counts_the_epochs_the_budget_fits(planned_dataset, tmp_path, capsys):
    config = replace(FAST, epochs=100, iterations_per_epoch=5, time_budget_minutes=0.05, validation_patches=1)
    trainer = make_trainer(planned_dataset, tmp_path / "model", config, num_queries=4)
    trainer.show_progress = True
    state = trainer.fit(stop_after_epochs=1)
    assert state.schedule.epochs < 100
    bars = capsys.readouterr().err
    assert "epoch 1/100" not in bars  # the configured epochs, before the budget fitted them
    assert f"epoch 1/{state.schedule.epochs}" in bars  # what the log says


# ---- the GPU path, shown on the CPU ------------------------------------------------------------------------------


@pytest.fixture
def fp16_scaler(monkeypatch):
    """Trainers built in this test get fp16's enabled GradScaler (on the CPU, autocast stays off): the precision
    ``--amp auto`` resolves to on a V100 or T4."""
    monkeypatch.setattr(Precision, "needs_scaler", property(lambda self: True))


def trainable_parameters(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in trainer.model.named_parameters() if p.requires_grad}


def test_an_fp16_overflow_skips_the_step_instead_of_ending_the_run(planned_dataset, fp16_scaler):
    """Matched queries (the Hungarian matcher runs) and non-finite outputs, as one fp16 overflow gives: no error;
    GradScaler leaves the weights alone and halves its scale; the next step trains."""
    trainer = make_trainer(planned_dataset, Path("unused"), num_queries=4)
    assert trainer.scaler.is_enabled() and trainer.model_config.queries == "matched"
    image, label = next(iter(trainer.build_loader(epoch=0)))
    before, scale = trainable_parameters(trainer), trainer.scaler.get_scale()
    network = trainer.network

    def overflowing(*args, **kwargs):
        output = network(*args, **kwargs)
        output.mask_logits = output.mask_logits * float("inf")
        return output

    trainer.network = overflowing
    terms = trainer.train_step(image, label)
    assert not math.isfinite(float(terms["total"]))
    after = trainable_parameters(trainer)
    assert all(torch.equal(before[name], after[name]) for name in before)  # the step was skipped
    assert trainer.scaler.get_scale() == scale / 2
    trainer.network = network
    assert math.isfinite(float(trainer.train_step(image, label)["total"]))
    after = trainable_parameters(trainer)
    assert any(not torch.equal(before[name], after[name]) for name in before)


def test_a_skipped_step_is_left_out_of_the_epochs_mean_loss(planned_dataset, tmp_path, monkeypatch):
    config = replace(FAST, epochs=1, iterations_per_epoch=3, validation_patches=1)
    trainer = make_trainer(planned_dataset, tmp_path / "model", config)
    losses = iter([float("inf"), 1.0, 2.0])
    monkeypatch.setattr(trainer, "train_step", lambda *args: {"total": torch.tensor(next(losses))})
    trainer.run_epoch(None)
    assert trainer._epoch_train_terms == {"total": 1.5}


@pytest.mark.slow
def test_a_bf16_or_cpu_checkpoint_resumes_in_fp16_and_back(planned_dataset, tmp_path, monkeypatch):
    """``--amp auto`` is fp32 on a CPU and bf16 on an A100 (the scaler's state is empty), fp16 on a V100."""
    config = replace(FAST, epochs=3)
    first = make_trainer(planned_dataset, tmp_path / "model", config)
    first.fit(stop_after_epochs=1)
    assert ckpt.read_checkpoint(first.fold_dir / "checkpoint_latest.pt")["scaler"] == {}
    with monkeypatch.context() as patched:
        patched.setattr(Precision, "needs_scaler", property(lambda self: True))
        in_fp16 = make_trainer(planned_dataset, tmp_path / "model", config)
        in_fp16.fit(resume=True, stop_after_epochs=1)  # the scaler starts afresh
        assert in_fp16.state.epoch == 2 and in_fp16.scaler.is_enabled()
        assert ckpt.read_checkpoint(first.fold_dir / "checkpoint_latest.pt")["scaler"]["scale"] > 0
    back = make_trainer(planned_dataset, tmp_path / "model", config)
    assert back.fit(resume=True).epoch == 3 and not back.scaler.is_enabled()


@pytest.mark.slow
def test_a_checkpoint_of_an_8_gpu_node_resumes_on_fewer_gpus(planned_dataset, tmp_path, monkeypatch):
    first = make_trainer(planned_dataset, tmp_path / "model")
    first.fit(stop_after_epochs=1)
    path = first.fold_dir / "checkpoint_latest.pt"
    payload = ckpt.read_checkpoint(path)
    states = [torch.full((16,), index, dtype=torch.uint8) for index in range(8)]  # one per GPU of that node
    payload["rng"]["cuda"] = states
    ckpt.save_atomic(payload, path)

    restored: list[tuple[int, torch.Tensor]] = []

    def set_rng_state(state, device="cuda"):  # as torch.cuda on a machine with 2 GPUs
        index = device if isinstance(device, int) else torch.device(device).index or 0
        if index >= 2:
            raise IndexError("list index out of range")
        restored.append((index, state))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    monkeypatch.setattr(  # as torch.cuda: every saved state to the GPU of its index
        torch.cuda, "set_rng_state_all", lambda saved: [set_rng_state(state, i) for i, state in enumerate(saved)]
    )
    resumed = make_trainer(planned_dataset, tmp_path / "model")
    resumed.resume(None)  # a CPU run on a machine with GPUs: their generators are not this run's
    assert resumed.state.epoch == 1 and restored == []
    for device, index in ((torch.device("cuda", 1), 1), (torch.device("cuda"), 0)):  # a rank's GPU of this machine
        restored.clear()
        restore_cuda_rng(states, device)
        assert [i for i, _ in restored] == [index] and torch.equal(restored[0][1], states[index])
    restored.clear()
    restore_cuda_rng([], torch.device("cuda", 1))  # written by a CPU run
    assert restored == []


def with_variant(planned_dataset, overrides: dict) -> dict:
    """``overrides`` of `make_trainer`, a ``variant`` key turned into the tiny preset's prompt generator with it."""
    overrides = dict(overrides)
    variant = overrides.pop("variant", None)
    if variant is not None:
        generator = model_config_for(Plans.load(planned_dataset[1]), backbone="tiny").prompt_generator
        overrides["prompt_generator"] = replace(generator, variant=variant)
    return overrides


# Every way the model can be set up: prompt variants, ground-truth prompts, matched queries, SAM trained or not.
EVERY_CONFIG = [
    pytest.param({"variant": variant, "train_backbone": train}, id=f"{variant}-{'trained' if train else 'frozen'}-sam")
    for variant in ("mask", "box", "mask_box", "mask_avg_box")
    for train in (False, True)
] + [
    pytest.param({"prompt_mode": "ground_truth", "num_queries": 4}, id="ground-truth-prompts"),
    pytest.param({"prompt_mode": "ground_truth", "num_queries": 4, "train_backbone": True}, id="ground-truth-sam"),
    pytest.param({"num_queries": 4, "variant": "box"}, id="matched-queries-box"),
    pytest.param({"num_queries": 4}, id="matched-queries"),
]


@pytest.mark.parametrize("overrides", EVERY_CONFIG)
def test_every_trainable_parameter_reaches_the_loss(planned_dataset, overrides):
    """DDP without find_unused_parameters fails at step 2 ("Expected to have finished reduction") when a trainable
    parameter gets no gradient; the encoder adapters' pause phase is the one case that turns the search on."""
    config = replace(FAST, encoder_adapters_from=0.0)
    trainer = make_trainer(planned_dataset, Path("unused"), config, **with_variant(planned_dataset, overrides))
    image, label = next(iter(trainer.build_loader(epoch=0)))
    trainer.train_step(image, label)
    unused = [name for name, p in trainer.model.named_parameters() if p.requires_grad and p.grad is None]
    assert unused == []


@pytest.mark.parametrize(
    ("overrides", "adapters_from", "search"),
    [
        pytest.param({"prompt_mode": "ground_truth", "num_queries": 4}, 0.0, False, id="ground-truth-prompts"),
        pytest.param({}, 0.0, False, id="generated-prompts"),
        pytest.param({}, 0.5, True, id="encoder-adapters-pause"),
    ],
)
def test_ddp_searches_for_unused_parameters_only_in_a_pause_phase(
    planned_dataset, monkeypatch, overrides, adapters_from, search
):
    wrapped = {}

    def ddp(module, **kwargs):
        wrapped.update(kwargs)
        return module

    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", ddp)
    config = replace(FAST, encoder_adapters_from=adapters_from)
    trainer = make_trainer(planned_dataset, Path("unused"), config, **overrides)
    trainer.context = DistributedContext(rank=0, world_size=2)
    trainer.wrap_model(trainer.model)
    assert wrapped["find_unused_parameters"] is search


def test_the_loader_pins_batches_for_a_gpu_run_and_labels_travel_small(planned_dataset, monkeypatch):
    trainer = make_trainer(planned_dataset, Path("unused"))
    image, label = next(iter(trainer.build_loader(epoch=0)))
    assert label.dtype == torch.uint8 and not trainer.build_loader(epoch=0).pin_memory
    trainer.context = DistributedContext(device=torch.device("cuda", 0))
    assert trainer.build_loader(epoch=0).pin_memory


def test_out_of_range_labels_are_refused_before_the_copy(planned_dataset):
    trainer = make_trainer(planned_dataset, Path("unused"))
    image, label = next(iter(trainer.build_loader(epoch=0)))
    label[0, 0, 0, 0] = trainer.model_config.num_classes
    with pytest.raises(ValueError, match=r"label values must lie in 0\.\."):
        trainer.train_step(image, label)


def test_the_final_validation_predicts_in_the_runs_precision(planned_dataset, tmp_path):
    for amp, expected in (("auto", "fp32"), ("bf16", "bf16"), ("off", "fp32")):
        trainer = make_trainer(planned_dataset, tmp_path / amp, replace(FAST, amp=amp))
        assert trainer.validation_predictor().precision.name == expected == trainer.precision.name


def test_the_final_validation_keeps_the_runs_measured_cpu_precision(planned_dataset, tmp_path, monkeypatch):
    speedups = iter([8.0])  # the run's probe finds fast bf16; a second probe would find it slow
    monkeypatch.setattr("masksam.precision.cpu_bf16_speedup", lambda *args, **kwargs: next(speedups, 1.0))
    trainer = make_trainer(planned_dataset, tmp_path, replace(FAST, amp="auto"))
    assert trainer.precision.name == "bf16" == trainer.validation_predictor().precision.name
