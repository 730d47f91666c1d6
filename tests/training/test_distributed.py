"""DDP on the CPU: two gloo processes launched by torchrun train identical weights; only rank 0 writes files; ranks
whose clocks disagree about the time budget stop together."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

import pytest
import torch

_SCRIPT = textwrap.dedent(
    """
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

    plans_dir, output, dumps = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    context = init_distributed("cpu")
    plans = Plans.load(plans_dir)
    config = TrainingConfig(
        epochs=1, iterations_per_epoch=2, batch_size=2, validation_patches=2, num_workers=0, final_validation=False
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
    trainer.fit()
    torch.save(split_state(trainer.model)[0], dumps / f"rank{context.rank}.pt")
    shutdown_distributed(context)
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.distributed
def test_two_gloo_processes_train_the_same_weights(planned_dataset, tmp_path):
    _, plans_dir = planned_dataset
    script = tmp_path / "ddp_train.py"
    script.write_text(_SCRIPT)
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    output = tmp_path / "model"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        str(script), str(plans_dir), str(output), str(dumps),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]

    rank0, rank1 = (torch.load(dumps / f"rank{r}.pt") for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    written = sorted(p.name for p in (output / "fold_0").iterdir())
    assert written == [
        "checkpoint_best.pt", "checkpoint_final.pt", "checkpoint_latest.pt",
        "metrics.csv", "progress.png", "training_log.txt",
    ]  # fmt: skip
    assert result.stdout.count("epoch 1/1") == 1  # one rank logs


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
    (dumps / f"rank{context.rank}.txt").write_text(f"{state.epoch} {state.schedule.epochs}")
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
    assert (dumps / "rank0.txt").read_text() == (dumps / "rank1.txt").read_text() == "3 3"  # rank 0's decision
