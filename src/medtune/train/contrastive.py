"""Image-report contrastive learning (CLIP, Radford et al. 2021; ConVIRT, Zhang et al. 2022).

An image tower (a registry backbone's pooled features) and a text tower (a registry text
encoder's mean-pooled tokens) each end in a linear projection to a shared space; both
projections are L2-normalised, and a batch's image-report pairs are pulled together and the
other pairings pushed apart by the symmetric InfoNCE loss over the cosine-similarity matrix,
scaled by a learned ``logit_scale`` (1 / temperature, at most 100, as CLIP clamps it).

Images of one study share its report. Identical reports embed identically, so the loss
cannot push them apart and needs no special case (its floor is log of the number of copies);
retrieval counts any copy of an image's report as a hit.

``text_lr_scale``: the text tower learns at the loop's rate times this (``fit``'s
``lr_scale``: a pretrained tower adapts gently while the projections and the image tower learn
at full rate); 0 freezes it (left out of the trainable parameters, kept in eval mode).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from medtune.config_train import ContrastiveSection
from medtune.models.contract import Encoder
from medtune.models.text import TextEncoder

MAX_LOGIT_SCALE = 100.0  # CLIP's clamp: a temperature of at least 0.01
RECALL_AT = (1, 5)
_QUERY_CHUNK = 1024  # retrieval queries scored at a time: (chunk x N) similarities in memory


class Contrastive(nn.Module):
    """The two towers, their projections and the logit scale (a parameter when learned, a
    buffer when fixed, so checkpoints hold it either way)."""

    def __init__(
        self, image: Encoder, text: TextEncoder, section: ContrastiveSection, seed: int = 0
    ) -> None:
        super().__init__()
        self.image, self.text = image, text
        self.text_frozen = section.text_lr_scale == 0
        with torch.random.fork_rng(devices=[]):  # same seed, same projections
            torch.manual_seed(seed)
            self.image_projection = nn.Linear(image.dim, section.projection_dim, bias=False)
            self.text_projection = nn.Linear(text.dim, section.projection_dim, bias=False)
        scale = torch.tensor(math.log(1.0 / section.temperature))
        if section.learn_temperature:
            self.log_logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("log_logit_scale", scale)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What trains: everything but a frozen text tower (and a fixed temperature)."""
        frozen = {id(p) for p in self.text.parameters()} if self.text_frozen else set()
        return [p for p in self.parameters() if id(p) not in frozen]

    def train(self, mode: bool = True) -> Contrastive:
        super().train(mode)
        if self.text_frozen:  # a frozen tower keeps its eval behaviour (no dropout)
            self.text.eval()
        return self

    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, P) unit vectors of a batch of images (shaped by the image tower's contract)."""
        return F.normalize(self.image_projection(self.image(images)).float(), dim=-1)

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """(B, P) unit vectors of report texts (tokenized here, on the towers' device)."""
        device = self.text_projection.weight.device
        tokens = {k: v.to(device) for k, v in self.text.tokenize(texts).items()}
        return F.normalize(self.text_projection(self.text(**tokens)).float(), dim=-1)

    def loss(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """The symmetric InfoNCE loss of a batch of image-report pairs."""
        return info_nce(self.embed_images(images), self.embed_texts(texts), self.logit_scale())


def contrastive_step(model: Contrastive, batch: dict) -> dict[str, torch.Tensor]:
    """The loop's ``step_fn``: the loss of the batch's images and their reports."""
    loss = model.loss(batch["image"], batch["text"])
    return {"loss": loss, "logit_scale": model.logit_scale().detach()}


def evaluate_contrastive(model: Contrastive, batches: Iterable[dict]) -> dict[str, float]:
    """``val_loss`` (the mean per-batch loss: it depends on the batch size, as the training
    loss does) and retrieval over the whole set: ``i2t_recall@k`` (an image finds its report
    among the k most similar) and ``t2i_recall@k``, for k in 1 and 5."""
    device = next(model.parameters()).device
    images, texts, all_texts, total, count = [], [], [], 0.0, 0
    for batch in batches:
        image = model.embed_images(batch["image"].to(device))
        text = model.embed_texts(batch["text"])
        total += info_nce(image, text, model.logit_scale()).item() * len(image)
        count += len(image)
        images.append(image)
        texts.append(text)
        all_texts += batch["text"]
    groups = text_groups(all_texts).to(device)
    image, text = torch.cat(images), torch.cat(texts)
    metrics = {"val_loss": total / count}
    for k in RECALL_AT:
        metrics[f"i2t_recall@{k}"] = recall_at(image, text, groups, k)
        metrics[f"t2i_recall@{k}"] = recall_at(text, image, groups, k)
    return metrics


def info_nce(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric cross-entropy over ``scale`` x the (B, B) cosine similarities of unit vectors:
    image i's report is text i, and text i's image is image i."""
    logits = scale * image @ text.T
    labels = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def recall_at(queries: torch.Tensor, keys: torch.Tensor, groups: torch.Tensor, k: int) -> float:
    """Share of queries whose ``k`` most similar keys include one of their group (query i and
    key i are a pair; ``groups`` marks identical reports)."""
    k = min(k, len(keys))
    hits = 0
    for start in range(0, len(queries), _QUERY_CHUNK):
        scores = queries[start : start + _QUERY_CHUNK] @ keys.T
        top = scores.topk(k, dim=1).indices  # (chunk, k)
        wanted = groups[start : start + _QUERY_CHUNK, None]
        hits += int((groups[top] == wanted).any(dim=1).sum())
    return hits / len(queries)


def text_groups(texts: list[str]) -> torch.Tensor:
    """(B,) ids that are equal exactly where the texts are."""
    ids: dict[str, int] = {}
    return torch.tensor([ids.setdefault(text, len(ids)) for text in texts])
