"""DDP on the CPU: two gloo processes launched by torchrun train identical weights on different batches, validate
disjoint shares of the validation patches whose counts add up to one process's, and only rank 0 writes files; ranks
whose clocks disagree about the time budget stop together, and ranks whose CPUs disagree about bf16 train in rank 0's
precision."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from masksam.data.plans import Plans
from masksam.training import checkpoint as ckpt
from masksam.training.config import TrainingConfig
from masksam.training.setup import model_config_for
from masksam.training.trainer import Trainer
from masksam.training.validation import confusion_counts, draw_validation_patches

PATCH = (2, 64, 64)
# One thread in every process (torchrun's default too), so a rank and the single process compute bit for bit alike.
CONFIG = TrainingConfig(
    amp="off",  # spawned ranks do not see conftest's fp32 pin; on an AMX CPU `auto` would be bf16 there
    epochs=1,
    iterations_per_epoch=2,
    batch_size=2,
    validation_patches=4,
    num_workers=0,
    final_validation=False,
    threads=1,
)

_SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    from dataclasses import replace
    from pathlib import Path

    import torch

    from masksam.data.plans import Plans
    from masksam.training.checkpoint import split_state
    from masksam.training.config import TrainingConfig
    from masksam.training.distributed import init_distributed, shutdown_distributed
    from masksam.training.setup import model_config_for
    from masksam.training.trainer import Trainer
    from masksam.training.validation import confusion_counts

    plans_dir, output, dumps = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    config = TrainingConfig.from_dict(json.loads(sys.argv[4]))


    class RecordingTrainer(Trainer):
        \"\"\"Keeps the batches this rank trained on and what it scored in its validation share.\"\"\"

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.batches, self.scored, self.counts = [], [], []

        def train_step(self, image, label):
            self.batches.append(image.clone())
            return super().train_step(image, label)

        def validation_batch(self, image, label):
            loss, predicted = super().validation_batch(image, label)
            self.scored.append(image.cpu().clone())
            self.counts.append(confusion_counts(predicted, label, self.model_config.num_classes).cpu())
            return loss, predicted


    context = init_distributed("cpu")
    plans = Plans.load(plans_dir)
    trainer = RecordingTrainer(
        model_config=replace(model_config_for(plans, backbone="tiny"), patch_size=(2, 64, 64)),
        training_config=config,
        plans=plans,
        plans_dir=plans_dir,
        output_dir=output,
        backbone_checkpoint=None,
        context=context,
        show_progress=False,
    )
    trainer.fit()
    torch.save(
        {
            "trainable": split_state(trainer.model)[0],
            "batches": torch.stack(trainer.batches),
            "scored": torch.cat(trainer.scored),
            "counts": torch.stack(trainer.counts).sum(dim=0),
            "metrics": trainer.state.history[-1],
        },
        dumps / f"rank{context.rank}.pt",
    )
    shutdown_distributed(context)
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_rank_run(planned_dataset, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, Path, str]:
    """(rank 0's record, rank 1's record, output folder, stdout) of one 2-process gloo training run."""
    _, plans_dir = planned_dataset
    root = tmp_path_factory.mktemp("ddp")
    script = root / "ddp_train.py"
    script.write_text(_SCRIPT)
    dumps = root / "dumps"
    dumps.mkdir()
    output = root / "model"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        str(script), str(plans_dir), str(output), str(dumps), json.dumps(CONFIG.to_dict()),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (torch.load(dumps / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    return rank0, rank1, output, result.stdout


@pytest.mark.slow
@pytest.mark.distributed
def test_two_gloo_processes_train_the_same_weights(two_rank_run):
    rank0, rank1, output, stdout = two_rank_run
    assert rank0["trainable"].keys() == rank1["trainable"].keys()
    for key in rank0["trainable"]:
        assert torch.equal(rank0["trainable"][key], rank1["trainable"][key]), key
    written = sorted(p.name for p in (output / "fold_0").iterdir())
    assert written == [
        "checkpoint_best.pt", "checkpoint_final.pt", "checkpoint_latest.pt",
        "metrics.csv", "progress.png", "training_log.txt",
    ]  # fmt: skip
    assert stdout.count("epoch 1/1") == 1  # one rank logs


@pytest.mark.slow
@pytest.mark.distributed
def test_each_rank_draws_its_own_batches(two_rank_run):
    """Equal weights alone would also hold if both ranks trained on the same batches (half the data per step)."""
    rank0, rank1, _, _ = two_rank_run
    assert rank0["batches"].shape == rank1["batches"].shape == (CONFIG.iterations_per_epoch, 1, 1, *PATCH)
    for step, (batch0, batch1) in enumerate(zip(rank0["batches"], rank1["batches"], strict=True)):
        assert not torch.equal(batch0, batch1), f"step {step}: both ranks trained on the same batch"


@pytest.mark.slow
@pytest.mark.distributed
def test_validation_patches_are_shared_out_and_their_counts_add_up(planned_dataset, two_rank_run, tmp_path):
    """Each rank scores its own half of the validation patches; the counts summed over ranks, and so the reported
    pseudo-Dice, equal one process scoring every patch with the same weights."""
    rank0, rank1, output, _ = two_rank_run
    _, plans_dir = planned_dataset
    plans = Plans.load(plans_dir)
    threads = torch.get_num_threads()
    try:
        single = Trainer(
            model_config=replace(model_config_for(plans, backbone="tiny"), patch_size=PATCH),
            training_config=replace(CONFIG, batch_size=1),  # the ranks' batch: one patch per forward pass
            plans=plans,
            plans_dir=plans_dir,
            output_dir=tmp_path / "unused",
            backbone_checkpoint=None,
            show_progress=False,
        )
        # The weights both ranks validated with (the final checkpoint is written after that validation).
        trained = ckpt.load_trained_model(output / "fold_0" / "checkpoint_final.pt")
        single.model.load_state_dict(trained.model.state_dict())
        patches = draw_validation_patches(  # as fit() draws them
            plans_dir / plans.preprocessed_folder,
            single.val_ids,
            count=CONFIG.validation_patches,
            patch_size=PATCH,
            seed=CONFIG.seed,
        )
        single.validation_patches = patches
        metrics = single.validate()
        counts = torch.zeros(plans.num_classes, 3, dtype=torch.int64)
        with torch.no_grad():
            single.model.eval()
            for image, label in patches.batches(1):
                _, predicted = single.validation_batch(image, label)
                counts += confusion_counts(predicted, label, plans.num_classes)
    finally:
        torch.set_num_threads(threads)  # the Trainer set one thread for the test process

    assert torch.equal(rank0["scored"], patches.images[0::2]) and torch.equal(rank1["scored"], patches.images[1::2])
    assert not any(torch.equal(a, b) for a in rank0["scored"] for b in rank1["scored"])  # disjoint shares
    assert counts.sum() > 0 and not torch.equal(rank0["counts"], counts)  # a share is not the whole
    assert torch.equal(rank0["counts"] + rank1["counts"], counts)
    for record in (rank0["metrics"], rank1["metrics"]):  # every rank reports the summed result
        dice = [key for key in record if key.startswith("dice_")] + ["mean_dice"]
        assert len(dice) == plans.num_classes  # a Dice per foreground class, and their mean
        for key in dice:
            assert record[key] == pytest.approx(metrics[key], nan_ok=True), key
        assert record["val_loss"] == pytest.approx(metrics["val_loss"], rel=1e-5)


# Each rank on its own fake clock: a training step costs 1 s on rank 0 and 3 s on rank 1, a validation 0.5 s.
# Rank 0 fits 3 epochs (3 + 2 + 2 steps and validations) into the 12 s budget; on its own clock rank 1 would stop
# after the first (9.5 s, and another would end past 12 s) and leave rank 0 waiting in the next all-reduce.
_DISAGREEING_CLOCKS = textwrap.dedent(
    """
    import datetime
    import sys
    from dataclasses import replace
    from pathlib import Path
    from types import SimpleNamespace

    import torch.distributed as dist

    from masksam import precision
    from masksam.data.plans import Plans
    from masksam.training import trainer as trainer_module
    from masksam.training.config import TrainingConfig
    from masksam.training.distributed import init_distributed, shutdown_distributed
    from masksam.training.setup import model_config_for
    from masksam.training.trainer import Trainer

    plans_dir, output, dumps = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))  # a rank left waiting fails soon
    context = init_distributed("cpu")
    step_seconds = 1.0 if context.rank == 0 else 3.0
    # The ranks' CPUs disagree about bf16 too: rank 0 measures no speedup (fp32), rank 1 a large one (bf16).
    precision.cpu_bf16_speedup = lambda *args, **kwargs: 1.0 if context.rank == 0 else 10.0
    clock = SimpleNamespace(now=1000.0)
    trainer_module.time = SimpleNamespace(monotonic=lambda: clock.now)
    trainer_module.draw_progress = lambda *args, **kwargs: None
    plans = Plans.load(plans_dir)
    config = TrainingConfig(
        epochs=3, iterations_per_epoch=100, time_budget_minutes=0.2, batch_size=2, validation_patches=2,
        num_workers=0, final_validation=False, threads=1,
    )
    trainer = Trainer(
        model_config=replace(model_config_for(plans, backbone="tiny"), patch_size=(2, 64, 64)),
        training_config=config,
        plans=plans,
        plans_dir=plans_dir,
        output_dir=output,
        backbone_checkpoint=None,
        context=context,
        show_progress=False,
    )
    train_step, validate = trainer.train_step, trainer.validate

    def timed_step(*args):
        clock.now += step_seconds
        return train_step(*args)

    def timed_validation():
        clock.now += 0.5
        return validate()

    trainer.train_step, trainer.validate = timed_step, timed_validation
    state = trainer.fit()
    (dumps / f"rank{context.rank}.txt").write_text(f"{state.epoch} {state.schedule.epochs} {trainer.precision.name}")
    shutdown_distributed(context)
    """
)


@pytest.mark.slow
@pytest.mark.distributed
def test_ranks_whose_clocks_disagree_stop_together(planned_dataset, tmp_path):
    _, plans_dir = planned_dataset
    script = tmp_path / "ddp_budget.py"
    script.write_text(_DISAGREEING_CLOCKS)
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        str(script), str(plans_dir), str(tmp_path / "model"), str(dumps),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # Rank 0's decisions: the epochs its clock allowed, and its precision (float32: its CPU measured no bf16 gain).
    assert (dumps / "rank0.txt").read_text() == (dumps / "rank1.txt").read_text() == "3 3 fp32"
