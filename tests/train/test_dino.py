"""DINO self-distillation with the iBOT masked-patch term, and the backbone hooks it needs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from medtune.config_train import DinoSection
from medtune.errors import MedtuneError
from medtune.models.registry import create_backbone
from medtune.train.augment import MultiCrop
from medtune.train.data import ImageDataset, make_loader
from medtune.train.dino import (
    Dino,
    dino_loss,
    dino_step,
    encode,
    evaluate_dino,
    ibot_loss,
    multi_crop,
    random_patch_masks,
    teacher_momentum,
    teacher_temperature,
    view_sizes,
)
from medtune.train.loop import LoopConfig, fit
from medtune.train.tracking import read_metrics

SMALL_HEAD = {"out_dim": 64, "head_hidden": 32, "head_bottleneck": 16}


def _vit(seed: int = 0):
    return create_backbone(
        "medtune-vit", image_size=32, patch_size=8, dim=32, depth=2, heads=2, seed=seed
    )


def _timm_vit(dynamic: bool):
    kwargs = {"depth": 2, "patch_size": 8, "dynamic_img_size": dynamic}
    return create_backbone("timm", model_name="vit_tiny_patch16_224", image_size=32, in_chans=1,
                           model_kwargs=kwargs)  # fmt: skip


def _views(n: int = 8, seed: int = 0, local: int = 2) -> list[torch.Tensor]:
    """Multi-crop views of structured images: a bright square whose corner depends on the
    image, plus noise (something for the student to tell apart)."""
    g = torch.Generator().manual_seed(seed)
    images = 0.2 * torch.rand(n, 1, 48, 48, generator=g)
    for i in range(n):
        r, c = divmod(i % 4, 2)
        images[i, :, r * 24 : r * 24 + 24, c * 24 : c * 24 + 24] += 0.7
    crops = MultiCrop(32, 16, n_local=local)
    per_image = [crops(image, g) for image in images]
    return [torch.stack([views[v] for views in per_image]) for v in range(2 + local)]


# ---------------------------------------------------------------------------------------------
# The backbone hooks.


@pytest.mark.parametrize("make", [_vit, lambda: _timm_vit(False), lambda: _timm_vit(True)])
def test_patch_hooks_compose_to_forward_features(make) -> None:
    backbone = make().eval()
    x = torch.randn(2, 1, 32, 32)
    expected = backbone.forward_features(x)
    got = backbone.forward_patches(*backbone.embed_patches(x))
    assert got.grid == expected.grid == (4, 4)
    torch.testing.assert_close(got.pooled, expected.pooled)
    torch.testing.assert_close(got.tokens, expected.tokens)


@pytest.mark.parametrize(("make", "any_size"), [(_vit, True), (lambda: _timm_vit(True), True),
                                                (lambda: _timm_vit(False), False)])  # fmt: skip
def test_other_sizes_run_where_the_family_allows(make, any_size: bool) -> None:
    backbone = make()
    assert backbone.any_size is any_size and backbone.patch_size == 8
    small = torch.randn(3, 1, 16, 24)
    if any_size:
        features = backbone.forward_patches(*backbone.embed_patches(small))
        assert features.grid == (2, 3) and features.tokens.shape == (3, 6, 32 if make is _vit
                                                                      else 192)  # fmt: skip
    else:
        with pytest.raises(MedtuneError, match="contract"):
            backbone.embed_patches(small)
    # encode() serves either: other sizes through the hooks, or resized to the contract's.
    features = encode(backbone, torch.randn(3, 1, 16, 16))
    assert features.grid == ((2, 2) if any_size else (4, 4))
    with pytest.raises(MedtuneError, match="contract"):
        backbone.forward_features(small)  # the plain forward still checks the contract


def test_vit_refuses_a_partial_patch() -> None:
    with pytest.raises(MedtuneError, match="whole number"):
        _vit().embed_patches(torch.randn(1, 1, 20, 20))


def test_families_without_hooks_say_so_and_refuse_ibot() -> None:
    convnet = create_backbone("timm", model_name="resnet18", image_size=32, in_chans=1)
    assert convnet.patch_size is None and not convnet.any_size
    with pytest.raises(MedtuneError, match="patch-level hooks"):
        convnet.embed_patches(torch.randn(1, 1, 32, 32))
    with pytest.raises(MedtuneError, match=r"resnet|timm.*iBOT"):
        Dino(convnet, DinoSection(ibot=True, **SMALL_HEAD), max_steps=10)
    Dino(convnet, DinoSection(**SMALL_HEAD), max_steps=10)  # DINO alone is fine


# ---------------------------------------------------------------------------------------------
# The pieces.


def test_dino_loss_skips_a_view_matching_itself() -> None:
    k = 8
    a, b = torch.eye(k)[0:1], torch.eye(k)[1:2]  # teacher: view 0 says A, view 1 says B
    sharp = 20.0
    # A student agreeing with each teacher view on the *same* view only is not rewarded...
    same = dino_loss([a, b], [sharp * a, sharp * b])
    # ...one predicting each view's partner is.
    crossed = dino_loss([a, b], [sharp * b, sharp * a])
    assert crossed < 0.01 < sharp - 1 < same


def test_dino_loss_of_uniform_outputs_is_log_k() -> None:
    k = 64
    uniform = torch.full((4, k), 1.0 / k)
    loss = dino_loss([uniform, uniform], [torch.zeros(4, k)] * 4)
    assert loss.item() == pytest.approx(math.log(k))


def test_ibot_loss_is_zero_without_masks_and_positive_with() -> None:
    b, n, k = 2, 4, 16
    masks = torch.zeros(b, n, dtype=torch.bool)
    empty = torch.zeros(0, k)
    assert ibot_loss(empty, empty, masks).item() == 0.0
    masks[0, :2] = True
    probs = torch.softmax(torch.randn(2, k), dim=-1)
    assert ibot_loss(probs, torch.randn(2, k), masks).item() > 0.0


def test_random_patch_masks_follow_the_ratio() -> None:
    g = torch.Generator().manual_seed(0)
    masks = random_patch_masks(200, 64, (0.1, 0.5), g)
    counts = masks.sum(dim=1)
    assert counts.min() >= round(0.1 * 64) and counts.max() <= round(0.5 * 64)
    assert counts.float().std() > 3  # ratios vary per image
    again = random_patch_masks(200, 64, (0.1, 0.5), torch.Generator().manual_seed(0))
    assert torch.equal(masks, again)


def test_schedules() -> None:
    assert teacher_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert teacher_momentum(50, 100, 0.996) == pytest.approx(0.998)
    assert teacher_momentum(100, 100, 0.996) == 1.0
    section = DinoSection(warmup_teacher_temp=0.02, teacher_temp=0.06, warmup_teacher_temp_steps=10)
    temps = [teacher_temperature(s, section) for s in (0, 5, 10, 50)]
    assert temps == pytest.approx([0.02, 0.04, 0.06, 0.06])


def test_default_views() -> None:
    tiny = create_backbone("medtune-vit-tiny")  # 128 px, 16 px patches
    assert view_sizes(DinoSection(), tiny) == (128, 48)  # 3/7 of 128 = 55, to whole patches
    assert view_sizes(DinoSection(local_size=64), tiny) == (128, 64)
    with pytest.raises(MedtuneError, match="local_size"):
        view_sizes(DinoSection(local_size=50), tiny)
    crops = multi_crop(DinoSection(local_crops=3), tiny)
    assert len(crops(torch.rand(1, 64, 64))) == 5


# ---------------------------------------------------------------------------------------------
# The model: teacher, centres, masks.


def test_initial_loss_is_about_log_out_dim() -> None:
    section = DinoSection(out_dim=1024, head_hidden=128, head_bottleneck=128, local_crops=2)
    out = Dino(_vit(), section, max_steps=10).losses(_views())
    assert 0.6 * math.log(1024) < out.dino.item() < 1.2 * math.log(1024)


@pytest.mark.slow
def test_the_teacher_follows_the_student_by_ema_only(tmp_path: Path) -> None:
    views = [_views(seed=s) for s in range(3)]
    section = DinoSection(teacher_momentum=0.9, local_crops=2, ibot=True, **SMALL_HEAD)
    model = Dino(_vit(), section, max_steps=6, accumulation=2)
    start = [p.detach().clone() for p in model.teacher.parameters()]
    batches = [{"image": v} for v in views]
    config = LoopConfig(max_steps=6, lr=1e-3, batch_accumulation=2, checkpoint_every=100)
    fit(model, dino_step, batches, config, tmp_path, trainable=model.student_parameters(),
        progress=False)  # fmt: skip
    assert all(p.grad is None and not p.requires_grad for p in model.teacher.parameters())
    assert int(model.micro_batches) == 12 and int(model.teacher_steps) == 5  # one pending
    model.catch_up_teacher()
    assert int(model.teacher_steps) == 6
    model.catch_up_teacher()  # nothing more to apply
    assert int(model.teacher_steps) == 6

    def distance(a, b) -> float:
        return sum((x - y).pow(2).sum().item() for x, y in zip(a, b, strict=True))

    student, teacher = list(model.student.parameters()), list(model.teacher.parameters())
    assert distance(teacher, start) > 0
    assert distance(teacher, student) < distance(start, student)


def test_the_ema_update_is_exact_and_once_per_optimizer_step() -> None:
    section = DinoSection(teacher_momentum=0.9, **SMALL_HEAD)
    model = Dino(_vit(), section, max_steps=10, accumulation=2)
    with torch.no_grad():
        for p in model.student.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.teacher.parameters()]
    model.micro_batches.fill_(1)  # mid-step: no optimizer step yet
    model.catch_up_teacher()
    assert all(torch.equal(a, b) for a, b in zip(before, model.teacher.parameters(), strict=True))
    model.micro_batches.fill_(2)  # one optimizer step taken
    model.catch_up_teacher()
    m = teacher_momentum(0, 10, 0.9)
    for old, new, s in zip(before, model.teacher.parameters(), model.student.parameters(),
                           strict=True):  # fmt: skip
        torch.testing.assert_close(new, m * old + (1 - m) * s)


@pytest.mark.slow
def test_a_fixed_teacher_is_learned_by_the_student(tmp_path: Path) -> None:
    # With the teacher frozen (momentum 1) and the centre set by each batch, the targets are
    # fixed: plain distillation, whose loss must fall.
    section = DinoSection(teacher_momentum=1.0, center_momentum=0.0, local_crops=2, **SMALL_HEAD)
    model = Dino(_vit(), section, max_steps=12)
    teacher = [p.detach().clone() for p in model.teacher.parameters()]
    batches = [{"image": _views(8, seed=s)} for s in range(4)]
    config = LoopConfig(max_steps=12, lr=1e-3, checkpoint_every=100)
    fit(model, dino_step, batches, config, tmp_path, trainable=model.student_parameters(),
        progress=False)  # fmt: skip
    losses = [r["dino"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "train"]
    assert sum(losses[-4:]) / 4 < 0.85 * sum(losses[1:5]) / 4  # step 1 used a zero centre
    assert all(torch.equal(a, b) for a, b in zip(teacher, model.teacher.parameters(),
                                                 strict=True))  # fmt: skip


def test_centres_update_in_training_only() -> None:
    section = DinoSection(center_momentum=0.9, local_crops=2, ibot=True, **SMALL_HEAD)
    model = Dino(_vit(), section, max_steps=10)
    views = _views()
    model.eval()
    model.losses(views)
    assert not model.center.any() and not model.patch_center.any()
    model.train()
    with torch.no_grad():
        scores = model.teacher["head"](
            encode(model.teacher["backbone"], torch.cat(views[:2])).pooled
        )
    model.losses(views)
    torch.testing.assert_close(model.center, 0.1 * scores.mean(dim=0, keepdim=True))
    assert model.patch_center.abs().sum() > 0


def test_ibot_term_is_zero_without_masked_patches_and_trains_the_mask_token() -> None:
    views = _views()
    none = DinoSection(ibot=True, mask_ratio=(0.0, 0.0), local_crops=2, **SMALL_HEAD)
    out = Dino(_vit(), none, max_steps=10).losses(views)
    assert out.ibot.item() == 0.0
    some = DinoSection(ibot=True, mask_ratio=(0.3, 0.5), local_crops=2, **SMALL_HEAD)
    model = Dino(_vit(), some, max_steps=10)
    out = model.losses(views)
    assert out.ibot.item() > 0.0
    torch.testing.assert_close(out.loss, out.dino + out.ibot)
    out.loss.backward()
    assert model.mask_token.grad is not None and model.mask_token.grad.abs().sum() > 0
    assert any(p is model.mask_token for p in model.student_parameters())


@pytest.mark.slow
def test_multi_crop_batches_from_a_workspace_train_and_evaluate(ingested_workspace: Path) -> None:
    backbone = _vit()
    section = DinoSection(local_crops=2, ibot=True, **SMALL_HEAD)
    model = Dino(backbone, section, max_steps=10)
    train = ImageDataset(ingested_workspace, contract=backbone.contract, label_columns=[],
                         augment=multi_crop(section, backbone))  # fmt: skip
    batch = next(iter(make_loader(train, batch_size=4, seed=0)))
    assert [v.shape[-1] for v in batch["image"]] == [32, 32, 16, 16]  # 3/7 of 32, whole patches
    out = dino_step(model, batch)
    assert out["loss"].requires_grad and {"dino", "ibot"} <= set(out)
    val = ImageDataset(ingested_workspace, contract=backbone.contract, label_columns=[],
                       augment=multi_crop(section, backbone, local=False))  # fmt: skip
    loader = make_loader(val, batch_size=16, shuffle=False, seed=0)
    model.eval()
    with torch.no_grad():
        first, second = evaluate_dino(model, loader), evaluate_dino(model, loader)
    assert first == second  # the same crops every evaluation
    assert first["val_loss"] > 0 and 0 < first["feature_std"] < 2
