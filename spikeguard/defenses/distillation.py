"""A distilled SR student (docs/findings.md, question 2): one network trained to match a frozen teacher's
softened outputs (knowledge distillation, Hinton et al. 2015) while carrying SR's penalty, so that a single
model may keep what an ensemble of SR models buys at one model's energy.

loss = (1 - kd_alpha) CE(z_s, y) + kd_alpha T^2 KL(softmax(z_t / T) || softmax(z_s / T)) + lamb SR(student)

T^2 keeps the distillation term's gradient on the scale of the cross-entropy's as T changes. The teacher is one
checkpoint or several whose logits are averaged (an ensemble, spikeguard/models/ensemble.py); it runs in eval
mode without gradients. The student is deployed at temperature 1: a high T is the known route to defensive
distillation's masked gradients (saturated logits), which the strong suite's margin losses are there to see
through.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from spikeguard.adapters import stateless
from spikeguard.defenses.objectives import Defense
from spikeguard.defenses.sparsity import sparsity_terms
from spikeguard.errors import UserError
from spikeguard.runtime import eval_mode


def distillation_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch."""
    return F.kl_div(F.log_softmax(student_logits / temperature, 1), F.log_softmax(teacher_logits / temperature, 1),
                    reduction="batchmean", log_target=True) * temperature ** 2


class SparsityDistillation(Defense):
    """The SR student: cross-entropy and the distillation term mixed by kd_alpha, plus lamb x the SR penalty on
    clean inputs (the same penalty SR alone trains with)."""

    name = "sr_distill"

    def __init__(self, teacher: nn.Module, lamb: float, h: float, temperature: float, alpha: float):
        self.teacher, self.lamb, self.h, self.temperature, self.alpha = teacher, lamb, h, temperature, alpha

    def loss(self, model, x, y):
        with torch.no_grad(), stateless(self.teacher) as teacher, eval_mode(teacher):
            teacher_logits = teacher(x)
        logits, penalty = sparsity_terms(model, x, y, self.h)
        ce = F.cross_entropy(logits, y)
        kd = distillation_term(logits, teacher_logits, self.temperature)
        loss = (1 - self.alpha) * ce + self.alpha * kd + self.lamb * penalty
        return loss, {"ce": ce.detach(), "kd": kd.detach(), "penalty": penalty.detach()}


def load_teacher(paths: list[str], dataset: str, device: torch.device) -> tuple[nn.Module, list[dict]]:
    """The frozen teacher (one model, or the logit average of several) on ``device``, and what a run records of
    it: each checkpoint's path and sha256, so that a resumed run refuses a teacher that has changed. Every
    teacher must come from the student's data set, whose test split is fixed across seeds: no teacher has seen
    a test image. (A teacher trained with another seed has seen some of the student's validation images, which
    the student's best-epoch choice reads; the test numbers are untouched by it.)"""
    from spikeguard.checkpoint import load_model
    from spikeguard.models.ensemble import LogitAverage
    from spikeguard.provenance import file_sha256
    from spikeguard.rundir import BEST

    models, record = [], []
    for path in paths:
        file = Path(path) / BEST if Path(path).is_dir() else Path(path)
        if not file.is_file():
            raise UserError(f"teacher '{path}' is neither a checkpoint nor a run directory holding {BEST}")
        model, _ = load_model(file, expect_dataset=dataset)  # the same data set: the same classes
        models.append(model)
        record.append({"path": str(file), "sha256": file_sha256(file)})
    teacher = models[0] if len(models) == 1 else LogitAverage(models)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.to(device).eval(), record

