"""Report generation: a GPT-2-architecture decoder conditioned on a backbone's image tokens.

:class:`ReportGenerator` projects the image's patch tokens and its pooled vector (one more
token) to the decoder's width and conditions a transformers causal LM on them, one of two ways:

- ``cross``: every decoder layer cross-attends to all image tokens (GPT-2 with
  ``add_cross_attention``). The image is seen at every layer and every step, which makes the
  same-report-for-every-image collapse harder: the default for decoders trained here.
- ``prefix``: the image tokens come first in the decoder's input, as a soft prompt (ClipCap).
  The only choice for a pretrained LM without cross-attention layers.

Decoders come from :func:`scratch_decoder` (a small GPT-2 trained from scratch with a BPE
learnt on the local reports) or :func:`hf_decoder` (any causal LM in a local directory, with its
own tokenizer, optionally with LoRA: :func:`add_decoder_lora`). Generation is transformers'
``generate`` (beam search, greedy, nucleus sampling): it takes the image tokens as
``encoder_hidden_states`` for ``cross`` and the prefix as ``inputs_embeds`` for ``prefix``, so no
decoding loop of our own is needed::

    generator = ReportGenerator(scratch_decoder(tokenizer, ...), tokenizer, encoder.dim, "cross")
    loss = generator.loss(encoder.forward_features(images), *generator.tokenize(texts))
    reports = generator.generate(features, decode="beam", beams=3)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from medtune.errors import MedtuneError
from medtune.models.contract import Features
from medtune.models.report_tokenizer import encode_reports, token_ids

CONDITIONINGS = ("prefix", "cross")
DECODES = ("beam", "greedy", "sample")
Conditioning = Literal["prefix", "cross"]
# GPT-2's attention and MLP layers (Conv1D); other models get PEFT's defaults for their type.
GPT2_LORA_TARGETS = ["c_attn", "c_proj", "c_fc"]


class ReportGenerator(nn.Module):
    """Image tokens to report text: a projection of the image tokens and a causal LM."""

    def __init__(
        self,
        decoder: nn.Module,
        tokenizer: Any,
        image_dim: int,
        conditioning: Conditioning = "cross",
        max_tokens: int = 128,
    ) -> None:
        super().__init__()
        config = decoder.config
        if conditioning not in CONDITIONINGS:
            raise MedtuneError(
                f"conditioning {conditioning!r}: unknown (use {', '.join(CONDITIONINGS)})"
            )
        if conditioning == "cross" and not getattr(config, "add_cross_attention", False):
            raise MedtuneError(
                f"decoder {config.model_type!r}: has no cross-attention layers; "
                "use conditioning: prefix"
            )
        width = int(config.hidden_size)
        # LayerNorm first: backbones' token scales differ by family; the decoder sees one scale.
        self.projection = nn.Sequential(nn.LayerNorm(image_dim), nn.Linear(image_dim, width))
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.conditioning = conditioning
        self.max_tokens = max_tokens
        self.bos, self.eos, self.pad = token_ids(tokenizer)

    def condition(self, features: Features) -> torch.Tensor:
        """(B, N + 1, width): the pooled vector and the N patch tokens, projected."""
        tokens = torch.cat([features.pooled.unsqueeze(1), features.tokens], dim=1)
        return self.projection(tokens)

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) of ``<bos> report <eos>``, on the generator's device."""
        ids, mask = encode_reports(self.tokenizer, texts, self.max_tokens)
        device = self.projection[1].weight.device
        return ids.to(device), mask.to(device)

    def logits(
        self, features: Features, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """(B, T, vocab) next-token logits at each position of ``input_ids`` (teacher forcing)."""
        image = self.condition(features)
        if self.conditioning == "cross":
            out = self.decoder(
                input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image
            )
            return out.logits
        text = self.decoder.get_input_embeddings()(input_ids)
        prefix_mask = attention_mask.new_ones(image.shape[:2])
        out = self.decoder(
            inputs_embeds=torch.cat([image.to(text.dtype), text], dim=1),
            attention_mask=torch.cat([prefix_mask, attention_mask], dim=1),
        )
        return out.logits[:, image.shape[1] :]  # the prefix predicts nothing (labels -100)

    def loss(
        self,
        features: Features,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        label_smoothing: float = 0.0,
    ) -> torch.Tensor:
        """Mean cross-entropy of each real next token (padding excluded)."""
        logits = self.logits(features, input_ids, attention_mask)[:, :-1]
        labels = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
        return F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]),
            labels.reshape(-1),
            ignore_index=-100,
            label_smoothing=label_smoothing,
        )

    @torch.no_grad()
    def generate(
        self,
        features: Features,
        decode: str = "beam",
        beams: int = 3,
        top_p: float = 0.9,
        temperature: float = 1.0,
        max_tokens: int | None = None,
        seed: int = 0,
    ) -> list[str]:
        """One report per image: ``beam`` search with ``beams`` beams or ``greedy`` (both
        deterministic), or nucleus ``sample`` (``top_p``, ``temperature``) drawn from a
        generator seeded with ``seed`` (the caller's random state is left as it was). At most
        ``max_tokens`` tokens (default the generator's)."""
        if decode not in DECODES:
            raise MedtuneError(f"decode {decode!r}: unknown (use {', '.join(DECODES)})")
        image = self.condition(features)
        options = _decode_options(decode, beams, top_p, temperature)
        options |= {"max_new_tokens": (max_tokens or self.max_tokens) + 1,  # + <eos>
                    "eos_token_id": self.eos, "pad_token_id": self.pad}  # fmt: skip
        start = torch.full((image.shape[0], 1), self.bos, dtype=torch.long, device=image.device)
        if self.conditioning == "cross":
            inputs = {"input_ids": start, "encoder_hidden_states": image}
        else:
            embeds = torch.cat([image, self.decoder.get_input_embeddings()(start)], dim=1)
            inputs = {"inputs_embeds": embeds}
        length = inputs["inputs_embeds"].shape[1] if "inputs_embeds" in inputs else 1
        inputs["attention_mask"] = start.new_ones((image.shape[0], length))
        with _eval_mode(self), _seeded(seed if decode == "sample" else None, image.device):
            out = self.decoder.generate(**inputs, **options)
        if self.conditioning == "cross":
            out = out[:, 1:]  # the <bos> it started from; with inputs_embeds only new tokens
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        return [text.strip() for text in texts]


def scratch_decoder(
    tokenizer: Any,
    *,
    dim: int = 256,
    layers: int = 3,
    heads: int = 4,
    positions: int = 256,
    cross: bool = True,
    seed: int = 0,
) -> nn.Module:
    """A GPT-2 with random weights (drawn from ``seed``) for ``tokenizer``'s vocabulary,
    ``positions`` positions long (the prefix, if any, plus the report), with cross-attention
    layers when ``cross``."""
    from transformers import GPT2Config

    if dim % heads:
        raise MedtuneError(f"report decoder: dim {dim} is not a multiple of heads {heads}")
    bos, eos, _ = token_ids(tokenizer)
    # No pad_token_id in the config (generate is given it): with one, transformers warns of
    # "padding without an attention mask" when a finished sequence is fed its padding.
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=positions, n_embd=dim, n_layer=layers,
        n_head=heads, add_cross_attention=cross, bos_token_id=bos, eos_token_id=eos,
    )  # fmt: skip
    return decoder_from_config(config.to_dict(), seed=seed)


def decoder_from_config(config: Mapping[str, Any], seed: int = 0) -> nn.Module:
    """A causal LM with random weights from its transformers config (a dict, as an export
    records it); the weights are loaded afterwards."""
    from transformers import AutoConfig, AutoModelForCausalLM

    values = {k: v for k, v in config.items() if k not in ("dtype", "torch_dtype", "auto_map")}
    model_type = values.pop("model_type", None)
    try:
        built = AutoConfig.for_model(model_type, **values)
    except (ValueError, KeyError) as exc:
        raise MedtuneError(f"decoder config: unknown model type {model_type!r}") from exc
    with torch.random.fork_rng(devices=[]):  # same seed, same weights; caller's RNG untouched
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(built, dtype=torch.float32)


def hf_decoder(directory: str | os.PathLike[str]) -> nn.Module:
    """The causal LM in the local Hugging Face ``directory``: safetensors weights only, no
    remote code, in float32 (the loop's autocast gives bf16 where it helps)."""
    from transformers import AutoModelForCausalLM

    directory = Path(directory)
    if not directory.is_dir():
        raise MedtuneError(f"{directory}: no such decoder directory")
    if not any(directory.glob("*.safetensors")):
        raise MedtuneError(f"{directory}: no .safetensors weights (medtune loads no pickles)")
    try:
        return AutoModelForCausalLM.from_pretrained(
            directory, local_files_only=True, trust_remote_code=False, use_safetensors=True,
            dtype=torch.float32,
        )  # fmt: skip
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MedtuneError(f"{directory}: cannot load a causal language model ({first})") from exc


def add_decoder_lora(
    decoder: nn.Module, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0
) -> list[nn.Parameter]:
    """Inject LoRA adapters into ``decoder`` in place (GPT-2: c_attn, c_proj, c_fc; other
    types: PEFT's defaults for the type); freeze the rest; return the adapter parameters."""
    from peft import LoraConfig, inject_adapter_in_model

    from medtune.models.lora import lora_parameters

    gpt2 = decoder.config.model_type == "gpt2"
    config = LoraConfig(
        r=rank, lora_alpha=alpha, lora_dropout=dropout,
        target_modules=GPT2_LORA_TARGETS if gpt2 else None,
        fan_in_fan_out=gpt2,  # GPT-2's Conv1D stores its weight transposed
    )  # fmt: skip
    decoder.requires_grad_(False)
    try:
        inject_adapter_in_model(config, decoder)
    except ValueError as exc:  # no default targets for this model type, or none found
        first = str(exc).strip().splitlines()[0]
        raise MedtuneError(f"decoder {decoder.config.model_type!r}: LoRA cannot wrap it "
                           f"({first})") from exc  # fmt: skip
    return lora_parameters(decoder)


def merge_decoder_lora(generator: ReportGenerator) -> ReportGenerator:
    """``generator`` with its decoder's LoRA adapters merged into plain weights (in place),
    so its state dict fits a decoder rebuilt from the config alone. Without adapters, as is."""
    from medtune.models.lora import has_lora, merged_copy

    if has_lora(generator.decoder):
        generator.decoder = merged_copy(generator.decoder)
    return generator


def _decode_options(decode: str, beams: int, top_p: float, temperature: float) -> dict:
    if decode == "sample":
        # top_k 0: only the nucleus cut, not a pretrained model's default top-k as well.
        return {"do_sample": True, "num_beams": 1, "top_p": top_p, "top_k": 0,
                "temperature": temperature}  # fmt: skip
    return {"do_sample": False, "num_beams": beams if decode == "beam" else 1}


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode inside (no dropout while decoding), each module's own mode restored after."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.train(training)


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
