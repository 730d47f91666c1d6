"""DDP on the CPU: two gloo processes launched by torchrun train identical weights; only rank 0 writes files."""

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
