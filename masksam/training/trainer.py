"""The MaskSAM trainer: a short loop whose hooks delegate to small modules.

Hooks (override in a subclass for a variant, as nnU-Net trainers): ``build_model``, ``build_criterion``,
``build_optimizer``, ``build_loader``, ``train_step``, ``validate``. Everything a checkpoint needs is in
``state_dict``/``load_state_dict``.

Reproducibility and exact resume: every epoch reseeds the data stream and torch's generator from
(seed, epoch, rank), and checkpoints are written at epoch ends, so ``--continue`` replays the same batches and
sampled points as an uninterrupted run and ends with identical weights (on CPU, deterministic kernels).
"""

from __future__ import annotations

import gc
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from masksam.data.augmentation import AugmentationConfig
from masksam.data.loader import make_train_loader, read_split
from masksam.data.plans import Plans
from masksam.data.targets import SliceTargets, build_class_slot_targets, build_targets, check_class_ids
from masksam.errors import CheckpointError
from masksam.memory import FreedMemoryGuard, release_free_memory
from masksam.model.config import MaskSamConfig
from masksam.model.masksam import DenoisingPrompts, MaskSAM, build_masksam
from masksam.precision import configure_cuda_kernels, resolve_precision
from masksam.threads import choose_threads
from masksam.training import checkpoint as ckpt
from masksam.training.box_init import typical_class_boxes
from masksam.training.budget import Schedule, extended_epochs, fit_to_budget, shortened_epochs
from masksam.training.compilation import compile_network
from masksam.training.config import TrainingConfig
from masksam.training.criterion import LossWeights, SetCriterion
from masksam.training.denoising import DenoisingSettings, denoising_queries
from masksam.training.distributed import DistributedContext, average_over_ranks, broadcast_object, sum_over_ranks
from masksam.training.matcher import MatchIndices, prompt_matching
from masksam.training.optim import PolyLR, build_optimizer, parameter_groups
from masksam.training.progress import TextLog, draw_progress, write_metrics_csv
from masksam.training.tensorboard_log import TensorBoardLog
from masksam.training.validation import ValidationPatches, confusion_counts, dice_from_counts, draw_validation_patches

# Steps timed before a time budget is turned into a schedule (the first one, with warm-up costs, is not timed).
_BUDGET_TIMED_STEPS = 2
# Steps between two loss read-outs on the progress bar (each read waits for the GPU to catch up).
_PROGRESS_EVERY = 10
# Weight of the newest epoch in the moving average of the pseudo-Dice that picks the best checkpoint (nnU-Net).
_EMA_NEW_WEIGHT = 0.1


@dataclass
class TrainerState:
    """Counters and history that a checkpoint carries besides weights."""

    epoch: int = 0  # completed epochs
    schedule: Schedule | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    best_ema: float = -math.inf
    ema: float | None = None
    # Wall seconds of training over every part of a resumed run, up to its last finished epoch: what the time
    # budget counts, so that a resumed run gets what is left of the budget rather than a fresh one.
    training_seconds: float = 0.0


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Seed of one rank's data stream and generators in one epoch."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def restore_cuda_rng(states: list[torch.Tensor], device: torch.device) -> None:
    """Restores the saved CUDA generator state of this run's GPU (``states``: one per GPU of the machine that
    wrote the checkpoint, which may have had more GPUs or none; every epoch reseeds the generators anyway)."""
    if device.type != "cuda" or not states:
        return
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index < len(states):
        torch.cuda.set_rng_state(states[index], device)


def seed_everything(seed: int) -> None:
    # Our numpy code draws from explicit Generators (seeded per epoch and worker), never the global one.
    random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Trains one fold of MaskSAM and writes its files into ``output_dir/fold_F``.

    Args:
        model_config: The network to build.
        training_config: Optimisation, schedule, budget, logging.
        plans: Plans of the preprocessed dataset.
        plans_dir: Folder with plans.json, splits_final.json and the cache.
        output_dir: Model folder (``fold_F`` sub-folders).
        backbone_checkpoint: Official SAM weights (None: random backbone, stored in the checkpoints).
        context: Rank and device of this process.
        show_progress: Draw a progress bar per epoch (rank 0).
    """

    # ``amp auto`` on a CPU whose bf16 matrix products are fast (AMX) trains in bf16 (`resolve_precision`).
    cpu_auto_bf16 = True

    def __init__(
        self,
        *,
        model_config: MaskSamConfig,
        training_config: TrainingConfig,
        plans: Plans,
        plans_dir: Path,
        output_dir: Path,
        backbone_checkpoint: Path | None,
        context: DistributedContext = DistributedContext(),
        show_progress: bool = True,
    ) -> None:
        self.model_config = model_config
        self.config = training_config
        self.plans = plans
        self.plans_dir = Path(plans_dir)
        self.fold_dir = ckpt.fold_dir(Path(output_dir), training_config.fold)
        self.context = context
        self.show_progress = show_progress and context.is_main
        self.backbone_source = ckpt.BackboneSource.from_file(model_config.backbone, backbone_checkpoint)
        # Rank 0's choice on every rank: `auto` on a CPU measures bf16's speed, and two ranks could measure apart.
        self.precision = broadcast_object(
            resolve_precision(training_config.amp, context.device, cpu_auto_bf16=self.cpu_auto_bf16), context
        )
        configure_cuda_kernels(context.device)
        self.log = TextLog(self.fold_dir / "training_log.txt", echo=print) if context.is_main else (lambda _: None)
        self.tensorboard = (
            TensorBoardLog(self.fold_dir / "tensorboard") if training_config.tensorboard and context.is_main else None
        )
        if training_config.batch_size is not None:
            global_batch = training_config.batch_size
        else:
            global_batch = plans.batch_size
        if global_batch % context.world_size:
            raise CheckpointError(f"batch size {global_batch} does not split over {context.world_size} processes")
        self.batch_per_rank = global_batch // context.world_size
        self.train_ids, self.val_ids = read_split(self.plans_dir, training_config.fold)
        # Class id == label value (nnU-Net labels are consecutive); names in value order.
        self.class_names = [name for name, _ in sorted(plans.labels.items(), key=lambda item: item[1])]

        self.threads = None
        if context.device.type == "cpu":
            self.threads = choose_threads(training_config.threads)
            torch.set_num_threads(self.threads.threads)
        seed_everything(training_config.seed)
        self.model = self.build_model(backbone_checkpoint)
        self.network = self.wrap_model(self.model)
        self.scaler = self.precision.scaler()
        self.criterion = self.build_criterion()
        self.optimizer = self.build_optimizer()
        schedule = Schedule(training_config.epochs, training_config.iterations_per_epoch)
        self.scheduler = PolyLR(
            self.optimizer,
            total_steps=schedule.total_steps,
            exponent=training_config.poly_exponent,
            warmup_steps=training_config.warmup_steps,
        )
        self.state = TrainerState(schedule=schedule)
        self.validation_patches: ValidationPatches | None = None
        self.memory_guard = FreedMemoryGuard()

    # ---- hooks -------------------------------------------------------------------------------------------

    def build_model(self, backbone_checkpoint: Path | None) -> MaskSAM:
        model = build_masksam(self.model_config, backbone_checkpoint).to(self.context.device)
        model.image_encoder.gradient_checkpointing = self.config.gradient_checkpointing
        return model.train()

    def wrap_model(self, model: MaskSAM) -> nn.Module:
        network: nn.Module = model
        if self.context.is_distributed:
            device_ids = [self.context.device.index] if self.context.device.type == "cuda" else None
            network = nn.parallel.DistributedDataParallel(
                model,
                device_ids=device_ids,
                # Every trainable parameter reaches the loss in every configuration (tests/training/test_trainer.py),
                # except the encoder's adapters during a pause phase; without one, no graph walk per step.
                find_unused_parameters=self.config.encoder_adapters_from > 0,
                broadcast_buffers=False,  # the only buffers are frozen SAM statistics, equal on every rank
            )
        if self.config.compile:
            network = compile_network(network)
        return network

    def build_criterion(self) -> SetCriterion:
        weight = self.config.aux_mask_weight
        weights = LossWeights(aux_mask_bce=weight, aux_mask_dice=weight)
        # fp16: an overflow makes the outputs non-finite; the matcher still pairs them and GradScaler skips the step.
        return SetCriterion(
            num_classes=self.model_config.num_classes, weights=weights, tolerate_non_finite=self.scaler.is_enabled()
        )

    def build_optimizer(self) -> torch.optim.Optimizer:
        return build_optimizer(parameter_groups(self.model, self.config), self.config)

    def build_loader(self, epoch: int):
        augmentation = AugmentationConfig() if self.config.augment else None
        return make_train_loader(
            self.plans_dir,
            case_ids=self.train_ids,
            batch_size=self.batch_per_rank,
            patch_size=self.model_config.patch_size,
            augmentation=augmentation,
            num_workers=self.config.num_workers,
            seed=epoch_seed(self.config.seed, epoch, 0),
            rank=self.context.rank,
            pin_memory=self.context.device.type == "cuda",  # asynchronous host-to-GPU copies
        )

    def train_step(self, image: torch.Tensor, label: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimiser step on a batch: image (B, C, T, H, W), label (B, T, H, W) class ids of any integer type.

        Returns the loss terms as detached scalars on the device (reading them waits for the GPU: the caller
        does so rarely). Under fp16 a step whose gradients overflowed is skipped by GradScaler; its terms are
        not finite.
        """
        device = self.context.device
        check_class_ids(label, self.model_config.num_classes)  # on the CPU before the copy: no wait for the GPU
        image = image.to(device, non_blocking=True)
        label = label.to(device, non_blocking=True).long()  # travels as the loader's small integer type
        targets = self.targets(label)
        prompted = self.model_config.prompt_mode == "ground_truth"
        denoising, denoising_targets = self.denoising(label)
        with self.precision.autocast():
            output = self.network(image, targets.boxes if prompted else None, denoising)
        losses = self.criterion(output, targets, indices=self.fixed_pairs(targets), denoising_targets=denoising_targets)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses.total).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.trainable_parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return losses.as_dict()

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Loss and pseudo-Dice per class on the fixed validation patches (summed over ranks)."""
        if self.validation_patches is None:
            return {}
        self.network.eval()
        device = self.context.device
        num_classes = self.model_config.num_classes
        counts = torch.zeros(num_classes, 3, dtype=torch.int64, device=device)
        loss_sum = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of losses, number of batches)
        shard = self.validation_patches.shard(self.context.rank, self.context.world_size)
        for image, label in shard.batches(self.batch_per_rank):
            loss, predicted = self.validation_batch(image.to(device), label.to(device))
            loss_sum += torch.stack([loss.detach().double(), loss_sum.new_ones(())])
            counts += confusion_counts(predicted, label.to(device), num_classes)
        self.network.train()
        sum_over_ranks(counts, self.context)
        sum_over_ranks(loss_sum, self.context)
        dice = dice_from_counts(counts.cpu())
        foreground = range(1, num_classes)  # class 0 is background whether or not it is a segment
        metrics = {f"dice_{self.class_names[i]}": float(dice[i]) for i in foreground}
        present = [float(dice[i]) for i in foreground if not math.isnan(float(dice[i]))]
        metrics["mean_dice"] = float(np.mean(present)) if present else math.nan
        metrics["val_loss"] = float(loss_sum[0] / loss_sum[1].clamp(min=1))
        return metrics

    def validation_batch(self, image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, predicted class ids (B, T, H, W)) of a validation batch: image (B, C, T, H, W), label (B, T, H, W)."""
        from masksam.inference.semantic import query_scores

        targets = self.targets(label)
        prompted = self.model_config.prompt_mode == "ground_truth"
        with self.precision.autocast():
            output = self.model(image, targets.boxes if prompted else None)
        losses = self.criterion(output, targets, indices=self.fixed_pairs(targets), synchronise=False)  # unequal shares
        scores = query_scores(
            output,
            targets if prompted else None,  # ground-truth prompts: each query has its prompt's class, as predict
            num_classes=self.model_config.num_classes,
            include_background=self.model_config.include_background,
        )  # (B*T, K, H, W)
        return losses.total, scores.argmax(dim=1).reshape(label.shape)

    # ---- the loop ----------------------------------------------------------------------------------------

    def targets(self, label: torch.Tensor) -> SliceTargets:
        """Per-slice targets of a label batch (B, T, H, W): one slot per class for class-slot queries."""
        config = self.model_config
        if config.queries == "class_slots" and config.prompt_mode == "generated":
            return build_class_slot_targets(
                label, num_classes=config.num_classes, include_background=config.include_background
            )
        return build_targets(
            label,
            num_classes=config.num_classes,
            num_queries=config.num_queries,
            include_background=config.include_background,
        )

    def fixed_pairs(self, targets: SliceTargets) -> MatchIndices | None:
        """Query i answers for segment i (ground-truth prompts, class slots); None: Hungarian matching."""
        config = self.model_config
        if config.prompt_mode == "ground_truth" or config.queries == "class_slots":
            return prompt_matching(targets.valid)
        return None

    def denoising(self, label: torch.Tensor) -> tuple[DenoisingPrompts | None, SliceTargets | None]:
        """The batch's denoising queries and their targets (none when off or with ground-truth prompts)."""
        config = self.model_config
        if self.config.denoising_groups == 0 or config.prompt_mode == "ground_truth":
            return None, None
        per_class = build_class_slot_targets(
            label, num_classes=config.num_classes, include_background=config.include_background
        )
        return denoising_queries(
            per_class,
            num_slices=config.num_slices,
            settings=DenoisingSettings(
                groups=self.config.denoising_groups,
                box_jitter=self.config.denoising_box_jitter,
                mask_flip=self.config.denoising_mask_flip,
            ),
            mask_size=config.image_size if self.model.uses_mask_prompts else None,
            slots=config.queries == "class_slots",
        )

    def fit(
        self, *, resume: bool = False, extend_to_epochs: int | None = None, stop_after_epochs: int | None = None
    ) -> TrainerState:
        """Trains until the schedule ends, the time budget runs out, or ``stop_after_epochs`` epochs ran.

        Args:
            resume: Continue from ``checkpoint_latest.pt`` in the fold folder.
            extend_to_epochs: On resume, stretch the schedule to this many epochs (train longer than planned).
            stop_after_epochs: Stop (as if interrupted) after this many epochs of this call (tests, debugging).
        """
        started = time.monotonic()
        if resume:
            self.resume(extend_to_epochs)
        else:
            self.initialise_boxes()
            self.log_start()
        trained_before = self.state.training_seconds  # by earlier parts of a resumed run
        deadline = None
        if self.config.time_budget_minutes is not None:
            deadline = started + 60 * self.config.time_budget_minutes - trained_before
        self.validation_patches = draw_validation_patches(
            self.plans_dir / self.plans.preprocessed_folder,
            self.val_ids,
            count=self.config.validation_patches,
            patch_size=self.model_config.patch_size,
            seed=self.config.seed,
        )
        epochs_this_call = 0
        stopped_by_budget = False
        while self.state.epoch < self.state.schedule.epochs:
            # An epoch that would end past the deadline (the last epoch's time as its estimate) is not started;
            # checked before each epoch, so a resumed run whose budget is spent trains none.
            if deadline is not None and self.state.history and self.budget_spent(deadline):
                stopped_by_budget = True
                break
            epoch_started = time.monotonic()
            self.run_epoch(deadline if self.state.epoch == 0 and not resume else None)
            validation = self.validate()
            self.watch_memory()
            self.state.training_seconds = trained_before + time.monotonic() - started
            self.end_epoch(validation, time.monotonic() - epoch_started)
            if deadline is not None:
                self.refit_to_budget(deadline)
            epochs_this_call += 1
            if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
                return self.state
        self.finish(stopped_by_budget)
        return self.state

    def run_epoch(self, plan_deadline: float | None) -> None:
        """One epoch of training steps; with ``plan_deadline``, times the first steps and fits the schedule."""
        epoch = self.state.epoch
        seed_everything(epoch_seed(self.config.seed, epoch, self.context.rank))
        loader = self.build_loader(epoch)
        gc.collect()
        release_free_memory()  # the workers forked next must not inherit the freed activations (memory.py)
        batches = iter(loader)
        step = 0
        # Under a time budget the number of epochs is known only after the first steps are timed.
        of_epochs = "?" if plan_deadline is not None else self.state.schedule.epochs
        bar = tqdm(
            total=self.state.schedule.iterations_per_epoch,
            desc=f"epoch {epoch + 1}/{of_epochs}",
            disable=not self.show_progress,
            file=sys.stderr,
            dynamic_ncols=True,
            leave=False,
        )
        step_seconds: list[tuple[bool, float]] = []  # (encoder paused, seconds) of the steps timed for the budget
        # Sums of the loss terms on the device, over the steps with a finite loss (GradScaler skipped the others).
        totals: dict[str, torch.Tensor] = {}
        finite_steps: torch.Tensor | int = 0
        while step < self.state.schedule.iterations_per_epoch:
            image, label = next(batches)
            if plan_deadline is not None:
                self.synchronise()  # a timed step starts with the GPU idle ...
            started = time.monotonic()
            paused = self.pause_encoder_adapters(force_on=plan_deadline is not None and self.times_full_step(step))
            terms = self.train_step(image, label)
            if plan_deadline is not None and step >= 1:
                self.synchronise()  # ... and ends when its kernels have
                step_seconds.append((paused, time.monotonic() - started))
            self.watch_memory()
            step += 1
            finite = torch.isfinite(torch.as_tensor(terms["total"]))
            for key, value in terms.items():
                value = torch.as_tensor(value)
                totals[key] = totals.get(key, 0.0) + torch.where(finite, value, torch.zeros_like(value))
            finite_steps = finite_steps + finite
            bar.update(1)
            if self.show_progress and (step == 1 or step % _PROGRESS_EVERY == 0):
                bar.set_postfix(loss=f"{float(terms['total']):.3f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
            if plan_deadline is not None and step == 1 + _BUDGET_TIMED_STEPS:
                self.plan_budget(plan_deadline, self.mean_step_seconds(step_seconds), step)
                bar.total = self.state.schedule.iterations_per_epoch
                bar.set_description(f"epoch {epoch + 1}/{self.state.schedule.epochs}")  # as the log says
                plan_deadline = None
        bar.close()
        del batches, loader  # stops the workers of this epoch
        names = list(totals)
        means = (torch.stack([totals[name] for name in names]).double() / finite_steps).tolist()  # one read per epoch
        self._epoch_train_terms = average_over_ranks(dict(zip(names, means, strict=True)), self.context)

    def synchronise(self) -> None:
        """Waits for the GPU's queued work (nothing on the CPU): before reading a clock that should count it."""
        if self.context.device.type == "cuda":
            torch.cuda.synchronize(self.context.device)

    def budget_spent(self, deadline: float) -> bool:
        """Whether the next epoch would end past the deadline (the last epoch's time as its estimate).

        Rank 0 decides on its clock and every rank follows: ranks deciding on their own clocks could disagree, and
        those that went on would wait in the next collective until the NCCL timeout.
        """
        spent = time.monotonic() + self.state.history[-1]["epoch_seconds"] > deadline
        return bool(broadcast_object(spent, self.context))

    def pause_encoder_adapters(self, force_on: bool = False) -> bool:
        """Pauses the encoder's adapters (encoder without autograd) for the first ``encoder_adapters_from`` share
        of the schedule's steps; returns whether they are paused for the next step."""
        start = self.config.encoder_adapters_from * self.scheduler.total_steps
        paused = self.scheduler.last_epoch < start and not force_on
        self.model.image_encoder.adapters_paused = paused
        return paused

    def times_full_step(self, step: int) -> bool:
        """Whether step ``step`` of the steps timed for a budget runs with the encoder's adapters on: the last timed
        one when the schedule has a pause phase, so that both step costs are known (the epoch loop and
        `probe_step_seconds` time alike)."""
        phased = 0.0 < self.config.encoder_adapters_from < 1.0
        return phased and step == _BUDGET_TIMED_STEPS

    def mean_step_seconds(self, timed: list[tuple[bool, float]]) -> float:
        """Expected seconds per step over the schedule from the timed steps, weighting paused and full steps by
        the share of the schedule each phase takes."""
        paused = [seconds for was_paused, seconds in timed if was_paused]
        full = [seconds for was_paused, seconds in timed if not was_paused]
        if not paused or not full:
            return float(np.mean([seconds for _, seconds in timed]))
        share = min(1.0, self.config.encoder_adapters_from)
        return share * float(np.mean(paused)) + (1 - share) * float(np.mean(full))

    def watch_memory(self) -> None:
        """Hands kept freed memory back to the kernel once this process's peak nears the machine's memory."""
        if self.memory_guard.check():
            self.log(
                f"memory: the peak passed {self.memory_guard.limit_bytes / 2**30:.1f} GB "
                f"({self.memory_guard.peak_limit:.0%} of this machine), so freed blocks go back to the kernel from "
                "now on (slower CPU steps, no out-of-memory kill)"
            )

    def plan_budget(self, deadline: float, step_seconds: float, steps_done: int) -> None:
        """Fits epochs × iterations to the time left (rank 0 decides, every rank follows).

        The ``steps_done`` steps already taken in this first epoch stay in it, even if the fitted epochs are
        shorter, and the poly schedule counts them, so the learning rate reaches zero at the last step.
        """
        schedule = broadcast_object(self.schedule_for_budget(deadline - time.monotonic(), step_seconds), self.context)
        self.state.schedule = schedule
        self.scheduler.set_total_steps(schedule.total_steps + max(0, steps_done - schedule.iterations_per_epoch))
        self.log(
            f"time budget: one step takes {step_seconds:.2f} s here, so this run does {schedule.epochs} epochs × "
            f"{schedule.iterations_per_epoch} iterations"
        )

    def schedule_for_budget(self, budget_seconds: float, step_seconds: float) -> Schedule:
        """The schedule that fits ``budget_seconds`` at ``step_seconds`` a step, end-of-epoch validation included."""
        batches = math.ceil(self.config.validation_patches / (self.batch_per_rank * self.context.world_size))
        validation_seconds = batches * step_seconds * 0.5 if self.val_ids else 0.0
        return fit_to_budget(
            budget_seconds=budget_seconds,
            step_seconds=step_seconds,
            validation_seconds=validation_seconds,
            epochs=self.state.schedule.epochs,
            iterations_per_epoch=self.state.schedule.iterations_per_epoch,
        )

    def probe_step_seconds(self) -> float:
        """Seconds per optimiser step over this run's schedule, measured as a budgeted run measures them: steps on
        one training batch, the first (with warm-up costs) untimed, the last with the encoder's adapters on when
        the schedule has a pause phase. The steps train the model: probe with a trainer that is then dropped."""
        loader = self.build_loader(epoch=0)
        image, label = next(iter(loader))
        del loader  # stops its workers
        timed: list[tuple[bool, float]] = []
        for step in range(1 + _BUDGET_TIMED_STEPS):
            paused = self.pause_encoder_adapters(force_on=self.times_full_step(step))
            self.synchronise()
            started = time.monotonic()
            self.train_step(image, label)
            self.synchronise()
            if step >= 1:
                timed.append((paused, time.monotonic() - started))
        return self.mean_step_seconds(timed)

    def refit_to_budget(self, deadline: float) -> None:
        """Adds epochs when the epochs run faster than the first steps said (``budget.extended_epochs``), drops
        planned ones when they run slower (``budget.shortened_epochs``); the poly schedule is re-planned to end at
        the new last step. Rank 0 decides, every rank follows."""
        schedule = self.state.schedule
        last_epoch_seconds = self.state.history[-1]["epoch_seconds"]
        seconds_left = deadline - time.monotonic()
        epochs = extended_epochs(
            schedule=schedule,
            epochs_done=self.state.epoch,
            max_epochs=self.config.epochs,
            seconds_left=seconds_left,
            last_epoch_seconds=last_epoch_seconds,
            steps_done=self.scheduler.last_epoch,
            total_steps=self.scheduler.total_steps,
            pause_share=self.config.encoder_adapters_from,
        )
        if epochs == schedule.epochs:
            epochs = shortened_epochs(
                schedule=schedule,
                epochs_done=self.state.epoch,
                seconds_left=seconds_left,
                last_epoch_seconds=last_epoch_seconds,
            )
        epochs = broadcast_object(epochs, self.context)
        if epochs == schedule.epochs:
            return
        self.state.schedule = Schedule(epochs=epochs, iterations_per_epoch=schedule.iterations_per_epoch)
        self.scheduler.set_total_steps(
            self.scheduler.total_steps + (epochs - schedule.epochs) * schedule.iterations_per_epoch
        )
        pace = "less" if epochs > schedule.epochs else "more"
        self.log(
            f"time budget: epochs take {last_epoch_seconds:.0f} s, {pace} than planned, so this run does {epochs} "
            f"epochs instead of {schedule.epochs}"
        )

    def end_epoch(self, validation: dict[str, float], seconds: float) -> None:
        """Records the epoch, updates the moving-average Dice, writes logs and checkpoints (rank 0)."""
        self.state.epoch += 1
        record: dict[str, Any] = {"epoch": self.state.epoch, "train_loss": self._epoch_train_terms.pop("total")}
        record.update({f"loss_{key}": value for key, value in self._epoch_train_terms.items()})
        record.update(validation)
        mean_dice = validation.get("mean_dice", math.nan)
        if not math.isnan(mean_dice):
            previous = self.state.ema
            self.state.ema = (
                mean_dice if previous is None else (1 - _EMA_NEW_WEIGHT) * previous + _EMA_NEW_WEIGHT * mean_dice
            )
            record["mean_dice_ema"] = self.state.ema
        record["lr"] = self.scheduler.get_last_lr()[0]
        record["epoch_seconds"] = seconds
        self.state.history.append(record)
        improved = self.state.ema is not None and self.state.ema > self.state.best_ema
        if improved:
            self.state.best_ema = self.state.ema
        if not self.context.is_main:
            return
        self.log(self.describe(record) + ("  (new best)" if improved else ""))
        if self.state.epoch % self.config.save_every == 0 or self.state.epoch == self.state.schedule.epochs:
            self.save("latest")
        if improved:
            self.save("best")
        write_metrics_csv(self.state.history, self.fold_dir / "metrics.csv")
        if self.tensorboard is not None:
            self.tensorboard.write(record)
        draw_progress(
            self.state.history,
            self.fold_dir / "progress.png",
            class_names=self.class_names,
            title=f"{self.model_title()} on {self.plans.dataset_name}, fold {self.config.fold}",
        )

    def model_title(self) -> str:
        """What is trained, for the progress picture's title."""
        return f"MaskSAM ({self.model_config.backbone})"

    def describe(self, record: dict[str, Any]) -> str:
        parts = [f"epoch {record['epoch']}/{self.state.schedule.epochs}", f"train loss {record['train_loss']:.4f}"]
        if "val_loss" in record:
            parts.append(f"val loss {record['val_loss']:.4f}")
        dice = [f"{k.removeprefix('dice_')} {v:.3f}" for k, v in record.items() if k.startswith("dice_")]
        if dice:
            parts.append("pseudo-Dice " + ", ".join(dice))
        if "mean_dice_ema" in record:
            parts.append(f"mean {record['mean_dice']:.3f} (EMA {record['mean_dice_ema']:.3f})")
        parts.append(f"lr {record['lr']:.2e}")
        parts.append(f"{record['epoch_seconds']:.1f} s")
        return ", ".join(parts)

    def finish(self, stopped_by_budget: bool) -> None:
        if not self.context.is_main:
            return
        self.save("latest")
        self.save("final")
        if not (self.fold_dir / "checkpoint_best.pt").is_file():
            self.save("best")  # no validation cases: the final model is the best we know
        if stopped_by_budget:
            self.log(
                f"time budget used up after epoch {self.state.epoch} of {self.state.schedule.epochs} "
                f"({self.state.training_seconds / 60:.1f} of {self.config.time_budget_minutes:g} minutes trained); "
                "run again with --continue and a larger --time-budget (or none) to finish the schedule"
            )
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.log(f"TensorBoard: tensorboard --logdir {self.tensorboard.folder}")
        self.log(f"checkpoints, metrics.csv, progress.png and training_log.txt are in {self.fold_dir}")

    def validate_cases(self, dataset_dir: Path) -> None:
        """Sliding-window prediction of the fold's validation cases, then Dice/HD95 into ``validation/summary.json``."""
        from masksam.data.io import list_cases, read_dataset_json
        from masksam.evaluation.summary import evaluate_folders, write_summary

        if not self.context.is_main or not self.val_ids:
            return
        dataset_dir = Path(dataset_dir)
        cases = {c.case_id: c for c in list_cases(dataset_dir, read_dataset_json(dataset_dir), "Tr")}
        output = self.fold_dir / "validation"
        predictor = self.validation_predictor()
        self.log(f"final validation: predicting {len(self.val_ids)} validation cases into {output}")
        for case_id in tqdm(self.val_ids, desc="validation cases", disable=not self.show_progress, file=sys.stderr):
            predictor.predict_case(
                cases[case_id].images,
                output / f"{case_id}{self.plans.file_ending}",
                prompt_labels=cases[case_id].label,  # box prompts of a ground_truth prompt mode model; else unread
            )
        summary = evaluate_folders(
            output, dataset_dir / "labelsTr", labels=dataset_dir / "dataset.json", case_ids=self.val_ids
        )
        write_summary(summary, output / "summary.json")
        per_class = ", ".join(f"{c.name} {c.dice:.3f}" for c in summary.classes)
        self.log(
            f"final validation Dice (sliding window, no TTA): {per_class}; mean {summary.foreground_dice:.3f}, "
            f"HD95 {summary.foreground_hd95:.1f} mm — {output / 'summary.json'}"
        )

    def validation_predictor(self):
        """The predictor of the final validation: the trained model, sliding window without TTA."""
        from masksam.inference.predictor import Predictor

        final = ckpt.TrainedModel(self.model, self.plans, {}, ckpt.checkpoint_path(self.fold_dir, "final"))
        return Predictor([final], device=self.context.device, tta=False, amp=self.precision.amp)

    # ---- checkpoints -------------------------------------------------------------------------------------

    def model_payload(self) -> dict[str, Any]:
        """The part of a checkpoint that rebuilds the model (config, plans, backbone source, weights)."""
        return ckpt.model_payload(self.model, self.plans, self.backbone_source)

    def load_model_payload(self, payload: dict[str, Any], path: Path) -> None:
        """Checks that ``payload`` was made for this model and loads its weights."""
        ckpt.check_compatible(payload, self.model_config, path)
        ckpt.load_model_state(self.model, payload["trainable_state"], path, strict_frozen=False)

    def read_checkpoint(self, path: Path) -> dict[str, Any]:
        return ckpt.read_checkpoint(path)

    def state_dict(self) -> dict[str, Any]:
        """The model payload plus everything an exact resume needs."""
        payload = self.model_payload()
        payload.update(
            training_config=self.config.to_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler={**self.scheduler.state_dict(), "total_steps": self.scheduler.total_steps},
            scaler=self.scaler.state_dict(),
            rng={
                "python": random.getstate(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
            epoch=self.state.epoch,
            schedule={"epochs": self.state.schedule.epochs, "iterations": self.state.schedule.iterations_per_epoch},
            history=self.state.history,
            best_ema=self.state.best_ema,
            ema=self.state.ema,
            training_seconds=self.state.training_seconds,
        )
        return payload

    def save(self, name: str) -> None:
        ckpt.save_atomic(self.state_dict(), ckpt.checkpoint_path(self.fold_dir, name))

    def load_state_dict(self, payload: dict[str, Any], path: Path) -> None:
        self.load_model_payload(payload, path)
        self.optimizer.load_state_dict(payload["optimizer"])
        scheduler_state = dict(payload["scheduler"])
        self.scheduler.total_steps = scheduler_state.pop("total_steps")
        self.scheduler.load_state_dict(scheduler_state)
        if payload["scaler"]:
            # A bf16, fp32 or CPU checkpoint has an empty scaler state: resumed in fp16 the scaler starts afresh.
            # Resumed without fp16, a disabled scaler ignores the state.
            self.scaler.load_state_dict(payload["scaler"])
        rng = payload["rng"]
        random.setstate(rng["python"])
        torch.set_rng_state(rng["torch"])
        restore_cuda_rng(rng["cuda"], self.context.device)
        self.state = TrainerState(
            epoch=payload["epoch"],
            schedule=Schedule(payload["schedule"]["epochs"], payload["schedule"]["iterations"]),
            history=list(payload["history"]),
            best_ema=payload["best_ema"],
            ema=payload["ema"],
            # Checkpoints written before runs recorded it: the time of their epochs.
            training_seconds=payload.get(
                "training_seconds", sum(record.get("epoch_seconds", 0.0) for record in payload["history"])
            ),
        )

    def resume(self, extend_to_epochs: int | None) -> None:
        path = ckpt.checkpoint_path(self.fold_dir, "latest")
        self.load_state_dict(self.read_checkpoint(path), path)
        if extend_to_epochs is not None and extend_to_epochs > self.state.schedule.epochs:
            # A longer run asked for: the poly schedule is stretched to the new end.
            self.state.schedule = Schedule(extend_to_epochs, self.state.schedule.iterations_per_epoch)
            self.scheduler.set_total_steps(self.state.schedule.total_steps)
        self.log(
            f"resumed from {path} after epoch {self.state.epoch} of {self.state.schedule.epochs} "
            f"({self.state.schedule.iterations_per_epoch} iterations each)"
        )

    def initialise_boxes(self) -> None:
        """``box_init: dataset``: class-slot query k starts at class k's typical box in training patches."""
        config = self.model_config
        if self.config.box_init != "dataset" or config.queries != "class_slots":
            return
        boxes = typical_class_boxes(
            self.plans_dir / self.plans.preprocessed_folder,
            self.train_ids,
            patch_size=config.patch_size,
            num_classes=config.num_classes,
            include_background=config.include_background,
            seed=self.config.seed,
        )
        self.model.prompt_generator.set_initial_boxes(boxes)
        described = ", ".join(
            f"{self.class_names[k]} {'/'.join(f'{v:.2f}' for v in box)}"
            for k, box in zip(config.segment_class_ids(), boxes.tolist(), strict=True)
        )
        self.log(f"class-slot boxes start at the training patches' median boxes (xyxy): {described}")

    def log_start(self) -> None:
        from masksam.model.parameters import count_parameters

        report = count_parameters(self.model)
        self.log(
            f"training MaskSAM ({self.model_config.backbone}, {report.tunable / 1e6:.2f}M tunable / "
            f"{report.frozen / 1e6:.2f}M frozen) on {self.plans.dataset_name} fold {self.config.fold}: "
            f"{len(self.train_ids)} training / {len(self.val_ids)} validation cases, patch "
            f"{'×'.join(map(str, self.model_config.patch_size))}, batch {self.batch_per_rank * self.context.world_size}"
            f" on {self.context.world_size} × {self.context.device.type}, precision {self.precision.name}"
        )
        if self.threads is not None:
            self.log(f"CPU threads: {self.threads.describe()}")
