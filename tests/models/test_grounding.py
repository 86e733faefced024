"""The grounding head, boxes from heat maps, IoU; and a head that learns to find a square."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medtune.config_train import LoraSection
from medtune.models.grounding import (
    GroundingHead,
    box_fractions,
    box_iou,
    heatmap_to_box,
    mean_iou,
)
from medtune.models.registry import create_backbone


def test_heatmap_to_box_frames_the_largest_region_above_threshold() -> None:
    heat = np.zeros((4, 4))
    heat[1:3, 2:4] = 1.0  # 4 patches, connected
    heat[3, 0] = 1.0  # one patch alone: a smaller region
    heat[0, 0] = 0.4  # below 0.5 x max
    assert heatmap_to_box(heat, 32, 0.5) == (16.0, 8.0, 32.0, 24.0)  # patch edges, 8 px each
    heat = np.zeros((6, 6))
    heat[0:2, 0:2] = 1.0
    heat[3:5, 2:5] = 1.0  # larger
    assert heatmap_to_box(heat, 48, 0.5) == (16.0, 24.0, 40.0, 40.0)
    assert heatmap_to_box(torch.ones(2, 2), 10, 0.5) == (0.0, 0.0, 10.0, 10.0)
    assert heatmap_to_box(torch.zeros(4, 4) - 1.0, 32, 0.5) == (0.0, 0.0, 32.0, 32.0)


def test_heatmap_to_box_puts_edges_inside_half_hot_patches() -> None:
    # Columns of heat 0, 0.5, 1, 1 (patches of 8 px): a half-covered patch at half heat
    # puts the box edge at its middle, x = 12, where the resized map crosses 0.5.
    heat = torch.tensor([0.0, 0.5, 1.0, 1.0]).expand(4, 4)
    assert heatmap_to_box(heat, 32, 0.5) == (12.0, 0.0, 32.0, 32.0)
    assert heatmap_to_box(heat, 32, 0.9)[0] == 18.0  # 0.5 + 0.5 (x + 0.5 - 12) / 8 >= 0.9


def test_box_iou_and_mean_iou_on_hand_made_boxes() -> None:
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert box_iou([0, 0, 10, 10], [10, 0, 20, 10]) == 0.0  # touching edges: no overlap
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(1 / 3)
    assert box_iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0  # padding boxes
    pairs = box_iou(np.array([[0, 0, 10, 10], [0, 0, 4, 4]]), np.array([[0, 0, 10, 5]] * 2))
    np.testing.assert_allclose(pairs, [0.5, 16 / 50])
    assert (
        mean_iou(
            np.array([[0, 0, 10, 10], [0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [20, 20, 30, 30]])
        )
        == 0.5
    )


def test_box_fractions_give_each_patch_its_share_inside() -> None:
    boxes = torch.tensor(
        [
            [[8.0, 0.0, 16.0, 8.0], [0.0, 0.0, 0.0, 0.0]],  # one whole patch
            [[0.0, 4.0, 12.0, 8.0], [0.0, 28.0, 32.0, 32.0]],
        ]
    )
    shares = box_fractions(boxes, (4, 4), 32)
    expected = torch.zeros(2, 4, 4)
    expected[0, 0, 1] = 1.0
    expected[1, 0, :2] = torch.tensor([0.5, 0.25])  # half the height, all and half the width
    expected[1, 3, :] = 0.5  # the bottom half of the last row
    torch.testing.assert_close(shares, expected)


def test_head_pairs_agree_with_the_diagonal_and_the_scale_is_learnt() -> None:
    torch.manual_seed(0)
    head = GroundingHead(24, 16, 8)
    tokens, queries = torch.randn(3, 6, 24), torch.randn(3, 16)
    logits = head(tokens, (2, 3), queries)
    assert logits.shape == (3, 2, 3)
    pairs = head.pair_logits(tokens, (2, 3), queries)
    torch.testing.assert_close(pairs[torch.arange(3), torch.arange(3)], logits)
    logits.sum().backward()
    assert head.logit_scale.grad is not None and head.bias.grad is not None
    assert head.config() == {"image_dim": 24, "text_dim": 16, "projection_dim": 8}


def _squares(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gray noise images (1 x 32 x 32), each with a bright and a dark square of 6-9 px apart;
    boxes (n, 2, 4): the bright square's, then the dark one's."""
    g = torch.Generator().manual_seed(seed)
    images = 0.3 + 0.3 * torch.rand(n, 1, 32, 32, generator=g)
    boxes = torch.zeros(n, 2, 4)
    for i in range(n):
        for k, value in enumerate((1.0, 0.0)):
            while True:
                side = int(torch.randint(6, 10, (), generator=g))
                x, y = (int(v) for v in torch.randint(0, 33 - side, (2,), generator=g))
                box = torch.tensor([x, y, x + side, y + side], dtype=torch.float32)
                if (
                    k == 0
                    or box_iou(box.numpy() + np.array([-1, -1, 1, 1]), boxes[i, 0].numpy()) == 0
                ):
                    break
            images[i, :, y : y + side, x : x + side] = value
            boxes[i, k] = box
    return images, boxes


def _miou(model, query: torch.Tensor, images: torch.Tensor, boxes: torch.Tensor) -> float:
    """mIoU of the boxes the grounding ``model`` finds for ``query`` against ``boxes`` (n, 4)."""
    with torch.no_grad():
        features = model.features(images)
        heat = torch.sigmoid(
            model.head(features.tokens, features.grid, query.expand(len(images), -1))
        )
    predicted = np.array([heatmap_to_box(h, 32, 0.5) for h in heat])
    return mean_iou(predicted, boxes.numpy())


@pytest.mark.slow
def test_head_learns_to_find_what_the_phrase_names(tmp_path: Path) -> None:
    """Two phrases, "bright square" and "dark square", on images holding both: a trained head
    finds each phrase's square, so it follows the text and does not just mark anything odd."""
    from medtune.train.grounding import GroundingModel, grounding_loss
    from medtune.train.loop import LoopConfig, fit
    from medtune.train.modes import prepare_backbone

    torch.manual_seed(0)
    encoder = create_backbone("medtune-vit", image_size=32, patch_size=4, dim=32, depth=2, heads=2)
    queries = torch.randn(2, 16)  # the embeddings of the two phrases
    model = GroundingModel(
        prepare_backbone(encoder, "probe", LoraSection()),
        GroundingHead(encoder.dim, 16, 32),
        queries,
    )
    test_images, test_boxes = _squares(48, seed=99)
    untrained = [_miou(model, queries[k], test_images, test_boxes[:, k]) for k in (0, 1)]
    images, boxes = _squares(256, seed=1)
    phrase = torch.randint(0, 2, (256,), generator=torch.Generator().manual_seed(2))
    wanted = boxes[torch.arange(256), phrase][:, None]  # (256, 1, 4): one box per item
    batches = [
        {"image": images[i : i + 16], "boxes": wanted[i : i + 16], "phrase": phrase[i : i + 16]}
        for i in range(0, 256, 16)
    ]

    def step(model, batch):
        features = model.features(batch["image"])
        target = box_fractions(batch["boxes"], features.grid, 32)
        return grounding_loss(model.head, features, model.queries, batch["phrase"], target)[0]

    config = LoopConfig(max_steps=60, lr=3e-3, precision="fp32", log_every=20)
    fit(model, step, batches, config, tmp_path / "run", progress=False)
    model.cpu().eval()
    trained = [_miou(model, queries[k], test_images, test_boxes[:, k]) for k in (0, 1)]
    swapped = _miou(model, queries[1], test_images, test_boxes[:, 0])
    assert min(trained) > 0.6 and np.mean(trained) > np.mean(untrained) + 0.3, (untrained, trained)
    assert swapped < 0.1, swapped  # "dark square" does not find the bright one
