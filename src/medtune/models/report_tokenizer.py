"""Tokenizers of the report decoder: a byte-level BPE learnt from the local reports, or the
tokenizer of a local Hugging Face causal LM.

A decoder trained from scratch gets a BPE (GPT-2's byte-level scheme, trained with the
``tokenizers`` library) on the training split's report text only, so the vocabulary fits the
site's language, abbreviations and templates, and no validation or test text leaks into it.
Either kind is handled as a transformers ``PreTrainedTokenizerFast``, so generation, decoding
and saving work the same way; an export stores it as one ``tokenizer.json`` plus the names of
its special tokens::

    tokenizer = train_bpe(train_texts, vocab_size=2000)
    ids, mask = encode_reports(tokenizer, ["No pneumothorax."], max_tokens=128)
    save_tokenizer(tokenizer, export / "tokenizer.json")
    tokenizer = load_tokenizer(export / "tokenizer.json", special_tokens(tokenizer))
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from medtune.errors import MedtuneError
from medtune.workspace import atomic_write_text

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
BPE_SPECIALS = {"pad_token": PAD, "bos_token": BOS, "eos_token": EOS}
TOKENIZER_FILE = "tokenizer.json"


def train_bpe(texts: Iterable[str], vocab_size: int) -> Any:
    """A byte-level BPE of at most ``vocab_size`` tokens (fewer when the texts run out of
    merges) learnt from ``texts``, with ``<pad>``, ``<bos>``, ``<eos>`` as its first ids.

    Byte-level: every string can be encoded (unseen letters fall back to bytes), so a report
    in another language or with local abbreviations never meets an unknown token. Training is
    deterministic: the same texts give the same vocabulary."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    texts = [text for text in texts if text]
    if not texts:
        raise MedtuneError("report tokenizer: no report text to learn a vocabulary from")
    tokenizer = Tokenizer(models.BPE())
    # NFC: a letter typed precomposed or as letter + accent is one token sequence.
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return _wrap(tokenizer, BPE_SPECIALS)


def hf_tokenizer(directory: str | os.PathLike[str]) -> Any:
    """The tokenizer of the Hugging Face model in ``directory`` (local files only, no remote
    code), with a padding token (its end-of-text when it has none, as GPT-2's)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(
            Path(directory), local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MedtuneError(f"{directory}: cannot load the decoder's tokenizer ({first})") from exc
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise MedtuneError(f"{directory}: the decoder's tokenizer has no fast (tokenizers) form")
    if tokenizer.eos_token is None:
        raise MedtuneError(f"{directory}: the decoder's tokenizer has no end-of-text token")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # padding is masked out of every loss
    return tokenizer


def special_tokens(tokenizer: Any) -> dict[str, str]:
    """The special tokens an export records beside ``tokenizer.json``: pad, bos and eos (bos
    is eos for tokenizers without one, as GPT-2's ``<|endoftext|>`` serves both)."""
    return {
        "pad_token": tokenizer.pad_token,
        "bos_token": tokenizer.bos_token or tokenizer.eos_token,
        "eos_token": tokenizer.eos_token,
    }


def token_ids(tokenizer: Any) -> tuple[int, int, int]:
    """(bos, eos, pad) ids of ``tokenizer``."""
    specials = special_tokens(tokenizer)
    ids = [tokenizer.convert_tokens_to_ids(specials[k]) for k in ("bos_token", "eos_token",
                                                                   "pad_token")]  # fmt: skip
    return ids[0], ids[1], ids[2]


def save_tokenizer(tokenizer: Any, path: str | os.PathLike[str]) -> Path:
    """Write ``tokenizer`` as one ``tokenizer.json`` (the ``tokenizers`` library's format)."""
    path = Path(path)
    atomic_write_text(path, tokenizer.backend_tokenizer.to_str(pretty=True))
    return path


def load_tokenizer(path: str | os.PathLike[str], specials: Mapping[str, str]) -> Any:
    """A tokenizer saved by :func:`save_tokenizer`, with the ``specials`` recorded beside it."""
    from tokenizers import Tokenizer

    path = Path(path)
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own Exception subclass
        raise MedtuneError(f"{path}: not a readable tokenizer ({type(exc).__name__})") from exc
    vocab = tokenizer.get_vocab()
    missing = [token for token in specials.values() if token not in vocab]
    if missing:
        raise MedtuneError(f"{path}: lacks the special tokens {', '.join(sorted(set(missing)))}")
    return _wrap(tokenizer, specials)


def encode_reports(
    tokenizer: Any, texts: list[str], max_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of ``texts`` as ``<bos> report <eos>``, right-padded to the
    longest; each report is cut to its first ``max_tokens`` tokens (then it ends without
    ``<eos>``: the decoder learns to stop only where reports really end)."""
    bos, eos, pad = token_ids(tokenizer)
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    rows = [[bos, *ids[:max_tokens], *([eos] if len(ids) <= max_tokens else [])]
            for ids in encoded]  # fmt: skip
    length = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return input_ids, mask


def _wrap(tokenizer: Any, specials: Mapping[str, str]) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **dict(specials))
