"""Self-distillation without labels: DINO (Caron et al. 2021), with iBOT's masked-patch term
(Zhou et al. 2022) as an option; the objective of the multi-anatomy X-ray foundation models.

A student (backbone + :class:`DinoHead`) learns to give, for every multi-crop view of an image
(2 global views at the backbone's size, N small local views), the distribution over
``out_dim`` prototypes that an EMA teacher gives for the *other* global views. The teacher's
outputs are centred (a running mean, so no prototype wins every image) and sharpened (a low
temperature); together they keep the pair from collapsing to a constant. With ``ibot``, the
student also sees its global views with random patches replaced by a learned mask token and
predicts, at each masked patch, the teacher's distribution for the unmasked patch; patch and
image tokens share one head (DINOv2's default), with a centre of their own.

Everything the objective keeps is in the :class:`Dino` module, so the loop's checkpoints hold
it: the teacher, both centres, and where the teacher's EMA schedule is. The teacher follows the
student once per optimizer step, but :func:`~medtune.train.loop.fit` steps the optimizer after
``step_fn`` returns, so the update of step t runs lazily at the start of step t + 1's first
``step_fn`` call (a micro-batch counter says when a step has passed, also under gradient
accumulation). Evaluation after step t therefore sees the teacher before that step's update,
and :meth:`Dino.catch_up_teacher` applies the last one after training. Masks draw from torch's
global generator, which the loop seeds and checkpoints: a resumed run draws the same masks.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from medtune.config_train import DinoSection
from medtune.errors import MedtuneError
from medtune.models.contract import Encoder, Features
from medtune.train.augment import MultiCrop

N_GLOBAL = 2  # global views per image: each is the teacher's target for the other
LOCAL_FRACTION = 3 / 7  # local view side / global view side (DINO: 96 px for 224 px)


class DinoHead(nn.Module):
    """DINO's projection head: a 3-layer MLP to a ``bottleneck``, L2-normalised, then cosine
    scores against ``out_dim`` prototypes. The prototypes are a weight-normalised linear layer
    with its norm fixed at 1 (DINO's ``norm_last_layer``): each row is normalised in forward."""

    def __init__(self, dim: int, out_dim: int, hidden: int, bottleneck: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, bottleneck),
        )
        self.prototypes = nn.Parameter(torch.empty(out_dim, bottleneck))
        for module in self.mlp:
            if isinstance(module, nn.Linear):  # DINO's init: truncated normal, zero bias
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.prototypes, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., dim) features to (..., out_dim) scores in [-1, 1]."""
        x = F.normalize(self.mlp(x), dim=-1)
        return F.linear(x, F.normalize(self.prototypes, dim=-1))


@dataclass
class DinoOutput:
    loss: torch.Tensor  # dino + ibot_weight * ibot
    dino: torch.Tensor
    ibot: torch.Tensor | None
    teacher_pooled: torch.Tensor  # (2B, D) the teacher's pooled features of the global views

    def metrics(self) -> dict[str, torch.Tensor]:
        values = {"loss": self.loss, "dino": self.dino.detach()}
        return values | ({"ibot": self.ibot.detach()} if self.ibot is not None else {})


class Dino(nn.Module):
    """Student, EMA teacher, centres and schedules of one DINO (optionally iBOT) run.

    ``max_steps`` sets the teacher-momentum schedule (a cosine from ``teacher_momentum`` to 1);
    ``accumulation`` is the loop's micro-batches per optimizer step. Train
    :meth:`student_parameters` (the teacher has no gradients), with :func:`dino_step`."""

    def __init__(
        self,
        encoder: Encoder,
        section: DinoSection,
        max_steps: int,
        accumulation: int = 1,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if section.ibot and encoder.patch_size is None:
            raise MedtuneError(
                f"{encoder.family}: the masked-patch (iBOT) term needs a backbone with patch "
                "hooks (medtune-vit, timm ViTs); set dino.ibot: false"
            )
        self.section, self.max_steps, self.accumulation = section, max_steps, accumulation
        with torch.random.fork_rng(devices=[]):  # same seed, same head; caller's RNG untouched
            torch.manual_seed(seed)
            head = DinoHead(encoder.dim, section.out_dim, section.head_hidden,
                            section.head_bottleneck)  # fmt: skip
        self.student = nn.ModuleDict({"backbone": encoder, "head": head})
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.mask_token = nn.Parameter(torch.zeros(encoder.dim)) if section.ibot else None
        self.register_buffer("center", torch.zeros(1, section.out_dim))
        self.register_buffer("patch_center", torch.zeros(1, section.out_dim))
        # Micro-batches trained, and optimizer steps the teacher has followed (see module doc).
        self.register_buffer("micro_batches", torch.zeros((), dtype=torch.int64))
        self.register_buffer("teacher_steps", torch.zeros((), dtype=torch.int64))

    def student_parameters(self) -> list[nn.Parameter]:
        """What trains: the student and the mask token (the teacher only follows by EMA)."""
        extra = [self.mask_token] if self.mask_token is not None else []
        return [*self.student.parameters(), *extra]

    @torch.no_grad()
    def catch_up_teacher(self) -> None:
        """Apply the EMA updates of the optimizer steps taken since the last call."""
        done = int(self.micro_batches) // self.accumulation  # one GPU sync per step: negligible
        teacher = list(self.teacher.parameters())
        student = [p.detach() for p in self.student.parameters()]
        for step in range(int(self.teacher_steps), done):
            momentum = teacher_momentum(step, self.max_steps, self.section.teacher_momentum)
            torch._foreach_lerp_(teacher, student, 1.0 - momentum)
        self.teacher_steps.fill_(max(done, int(self.teacher_steps)))

    def losses(self, views: list[torch.Tensor], mask: bool = True) -> DinoOutput:
        """The objective on one multi-crop batch (``views``: global first, as
        :class:`MultiCrop` yields them). Centres update in training mode only; ``mask``:
        draw iBOT masks (when the run has the term)."""
        s = self.section
        temp = teacher_temperature(int(self.teacher_steps), s)
        globals_ = torch.cat(views[:N_GLOBAL])
        masks = None
        if self.mask_token is not None and mask:
            student_global, masks = self._student_masked(globals_)
        else:
            student_global = encode(self.student["backbone"], globals_)
        student = [self.student["head"](student_global.pooled).chunk(N_GLOBAL)]
        for group in _same_size_runs(views[N_GLOBAL:]):
            features = encode(self.student["backbone"], torch.cat(group))
            student.append(self.student["head"](features.pooled).chunk(len(group)))
        logits = [v.float() / s.student_temp for chunk in student for v in chunk]
        with torch.no_grad():
            teacher = encode(self.teacher["backbone"], globals_)
            t_scores = self.teacher["head"](teacher.pooled).float()
            t_probs = F.softmax((t_scores - self.center) / temp, dim=-1).chunk(N_GLOBAL)
        dino = dino_loss(list(t_probs), logits)
        ibot, t_patch = None, None
        if masks is not None:
            with torch.no_grad():
                t_patch = self.teacher["head"](teacher.tokens[masks]).float()
                t_patch_probs = F.softmax((t_patch - self.patch_center) / temp, dim=-1)
            s_patch = self.student["head"](student_global.tokens[masks]).float() / s.student_temp
            ibot = ibot_loss(t_patch_probs, s_patch, masks)
        if self.training:
            self._update_centers(t_scores, t_patch)
        loss = dino if ibot is None else dino + s.ibot_weight * ibot
        return DinoOutput(loss, dino, ibot, teacher.pooled)

    def _student_masked(self, x: torch.Tensor) -> tuple[Features, torch.Tensor]:
        """The student on ``x`` with random patches masked; the (B, N) mask."""
        backbone = self.student["backbone"]
        tokens, grid = backbone.embed_patches(_to_backbone_size(backbone, x))
        masks = random_patch_masks(tokens.shape[0], tokens.shape[1], self.section.mask_ratio)
        masks = masks.to(tokens.device)
        tokens = torch.where(masks.unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        return backbone.forward_patches(tokens, grid), masks

    @torch.no_grad()
    def _update_centers(self, scores: torch.Tensor, patch_scores: torch.Tensor | None) -> None:
        m = self.section.center_momentum
        for center, values in ((self.center, scores), (self.patch_center, patch_scores)):
            if values is None:
                continue
            mean = _mean_over_ranks(values.sum(dim=0, keepdim=True), len(values))
            center.mul_(m).add_(mean, alpha=1.0 - m)


def dino_step(model: Dino, batch: dict) -> dict[str, torch.Tensor]:
    """The loop's ``step_fn``: the teacher catches up with the last optimizer step, then the
    loss of the batch's multi-crop views (``batch["image"]``, a list of tensors)."""
    model.catch_up_teacher()
    out = model.losses(batch["image"])
    model.micro_batches += 1
    return out.metrics() | {"teacher_temp": teacher_temperature(int(model.teacher_steps),
                                                                model.section)}  # fmt: skip


def evaluate_dino(model: Dino, batches: Iterable[dict]) -> dict[str, float]:
    """``val_loss``: the DINO loss on the global views of ``batches`` (no masks, centres
    frozen); ``feature_std``: the spread of the teacher's L2-normalised pooled features over
    the whole set, per dimension times sqrt(D) (about 1 when spread evenly, 0 at collapse)."""
    _restart(batches)
    device = next(model.parameters()).device
    losses, pooled = [], []
    for batch in batches:
        views = [v.to(device) for v in batch["image"][:N_GLOBAL]]
        out = model.losses(views, mask=False)
        losses.append((out.dino.item(), len(views[0])))
        pooled.append(F.normalize(out.teacher_pooled.float(), dim=-1))
    features = torch.cat(pooled)
    total = sum(n for _, n in losses)
    return {
        "val_loss": sum(loss * n for loss, n in losses) / total,
        "feature_std": (features.std(dim=0).mean() * math.sqrt(features.shape[1])).item(),
    }


# ---------------------------------------------------------------------------------------------
# The pieces, as plain functions.


def dino_loss(
    teacher_probs: list[torch.Tensor], student_logits: list[torch.Tensor]
) -> torch.Tensor:
    """Mean cross-entropy between each teacher view's probabilities and the student's
    log-softmax of every *other* view (a view is not its own target)."""
    total, pairs = 0.0, 0
    for t, probs in enumerate(teacher_probs):
        for v, logits in enumerate(student_logits):
            if v != t:
                total = total + torch.sum(-probs * F.log_softmax(logits, dim=-1), dim=-1).mean()
                pairs += 1
    return total / pairs


def ibot_loss(
    teacher_probs: torch.Tensor, student_logits: torch.Tensor, masks: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy at the masked patches (``teacher_probs``, ``student_logits``: (M, K) for
    the M True entries of ``masks`` (B, N), in order), averaged per image then over the
    batch, as iBOT does; 0 when nothing is masked."""
    per_patch = torch.sum(-teacher_probs * F.log_softmax(student_logits, dim=-1), dim=-1)
    weights = masks / masks.sum(dim=1, keepdim=True).clamp(min=1)
    return (per_patch * weights[masks]).sum() / masks.shape[0]


def random_patch_masks(
    batch: int, tokens: int, ratio: tuple[float, float], generator: torch.Generator | None = None
) -> torch.Tensor:
    """(batch, tokens) boolean masks, each image's ratio uniform in ``ratio``, patches chosen
    at random (iBOT's "rand" shape), from torch's global generator unless one is given."""
    low, high = ratio
    counts = ((low + (high - low) * torch.rand(batch, generator=generator)) * tokens).round()
    ranks = torch.rand(batch, tokens, generator=generator).argsort(dim=1).argsort(dim=1)
    return ranks < counts.unsqueeze(1)


def teacher_momentum(step: int, max_steps: int, base: float) -> float:
    """The EMA momentum after optimizer step ``step``: a cosine from ``base`` up to 1."""
    progress = min(1.0, step / max(1, max_steps))
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


def teacher_temperature(step: int, section: DinoSection) -> float:
    """The teacher's temperature: linear from ``warmup_teacher_temp`` to ``teacher_temp`` over
    ``warmup_teacher_temp_steps``, then constant (DINO warms it up to avoid early collapse)."""
    warmup = section.warmup_teacher_temp_steps
    if step >= warmup:
        return section.teacher_temp
    return section.warmup_teacher_temp + (section.teacher_temp - section.warmup_teacher_temp) * (
        step / warmup
    )


def encode(backbone: Encoder, x: torch.Tensor) -> Features:
    """``backbone``'s features of ``x`` of any size: through the patch hooks when the family
    takes other sizes, else resized to the contract's size (see :func:`multi_crop`)."""
    x = _to_backbone_size(backbone, x)
    size = backbone.contract.size
    if tuple(x.shape[-2:]) == (size, size):
        return backbone.forward_features(x)
    return backbone.forward_patches(*backbone.embed_patches(x))


def multi_crop(
    section: DinoSection, encoder: Encoder, view: dict | None = None, local: bool = True
) -> MultiCrop:
    """The run's views: 2 global (``global_size``, default the backbone's), and without
    ``local`` = False, ``local_crops`` local ones (``local_size``, default 3/7 of the global
    side, a whole number of patches). ``view``: the steps after each crop."""
    global_size, local_size = view_sizes(section, encoder)
    return MultiCrop(
        global_size,
        local_size,
        n_local=section.local_crops if local else 0,
        n_global=N_GLOBAL,
        global_scale=tuple(section.global_scale),
        local_scale=tuple(section.local_scale),
        view=view,
    )


def view_sizes(section: DinoSection, encoder: Encoder) -> tuple[int, int]:
    """(global, local) view sides in px. Sizes other than the contract's need a family that
    takes any size (``Encoder.any_size``) and a whole number of its patches; for other
    families such views are resized to the contract's size in the step (correct, slower)."""
    patch = encoder.patch_size or 1
    global_size = section.global_size or encoder.contract.size
    local_size = section.local_size or max(
        patch, round(global_size * LOCAL_FRACTION / patch) * patch
    )
    for name, size in (("global_size", global_size), ("local_size", local_size)):
        if encoder.any_size and size % patch:
            raise MedtuneError(f"dino.{name}: {size} px is not a whole number of the "
                               f"backbone's {patch} px patches")  # fmt: skip
    return global_size, local_size


def _to_backbone_size(backbone: Encoder, x: torch.Tensor) -> torch.Tensor:
    size = backbone.contract.size
    if backbone.any_size or tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def _same_size_runs(views: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Consecutive views of one shape, batched together through the backbone."""
    runs: list[list[torch.Tensor]] = []
    for view in views:
        if runs and runs[-1][0].shape == view.shape:
            runs[-1].append(view)
        else:
            runs.append([view])
    return runs


def _mean_over_ranks(total: torch.Tensor, count: int) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
        count *= dist.get_world_size()
    return total / count


def _restart(batches: Iterable[dict]) -> None:
    """Put a seeded loader back at epoch 0, so every evaluation sees the same crops."""
    sampler = getattr(batches, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(0)
