"""The report decoder: its BPE tokenizer, the image-conditioned GPT-2, generation, LoRA."""

from __future__ import annotations

import pytest
import torch

from medtune.errors import MedtuneError
from medtune.models.registry import create_backbone
from medtune.models.report_decoder import (
    ReportGenerator,
    add_decoder_lora,
    hf_decoder,
    merge_decoder_lora,
    scratch_decoder,
)
from medtune.models.report_tokenizer import (
    BPE_SPECIALS,
    encode_reports,
    hf_tokenizer,
    load_tokenizer,
    save_tokenizer,
    train_bpe,
)
from medtune.train.loop import LoopConfig, fit
from medtune.train.tracking import read_metrics

# A site writing in French, with its own abbreviations: the BPE must learn them.
TRAIN_TEXTS = [
    "Épanchement pleural droit de faible abondance. Pas de PNO.",
    "Pas d'épanchement pleural. Cardiomégalie modérée.",
    "Épanchement pleural gauche. Pas de PNO.\nConclusion : épanchement gauche.",
    "Poumons clairs. Pas de PNO. Pas d'épanchement.",
] * 3
VAL_ONLY = "Pneumomédiastin spontané."


def _tiny_vit():
    return create_backbone("medtune-vit", image_size=32, patch_size=8, dim=32, depth=2, heads=2)


def _generator(tokenizer, conditioning="cross", image_dim=32, seed=0, max_tokens=16):
    decoder = scratch_decoder(tokenizer, dim=32, layers=2, heads=2, positions=64,
                              cross=conditioning == "cross", seed=seed)  # fmt: skip
    torch.manual_seed(seed)
    return ReportGenerator(decoder, tokenizer, image_dim, conditioning, max_tokens)


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe(TRAIN_TEXTS, vocab_size=300)


def test_bpe_learns_the_local_language_from_its_texts_only(tokenizer):
    def tokens(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    assert tokenizer.convert_ids_to_tokens([0, 1, 2]) == ["<pad>", "<bos>", "<eos>"]
    # Frequent local words and abbreviations are one token each (Ġ: a leading space).
    assert len(tokens("Épanchement")) == 1
    assert len(tokens(" PNO")) == 1
    # A word the training texts never had is spelt out in pieces, and still round-trips.
    assert len(tokens(VAL_ONLY)) > 6
    for text in [*TRAIN_TEXTS[:4], VAL_ONLY, "ü ß 中 \t x"]:
        assert tokenizer.decode(tokens(text)) == text  # byte-level: nothing is unknown
    # Deterministic: the same texts give the same vocabulary.
    assert train_bpe(TRAIN_TEXTS, 300).get_vocab() == tokenizer.get_vocab()


def test_tokenizer_file_round_trip(tokenizer, tmp_path):
    path = save_tokenizer(tokenizer, tmp_path / "tokenizer.json")
    loaded = load_tokenizer(path, BPE_SPECIALS)
    text = TRAIN_TEXTS[2] + VAL_ONLY
    assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert (loaded.bos_token_id, loaded.eos_token_id, loaded.pad_token_id) == (1, 2, 0)
    with pytest.raises(MedtuneError, match="special tokens <start>"):
        load_tokenizer(path, {**BPE_SPECIALS, "bos_token": "<start>"})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(MedtuneError, match="not a readable tokenizer"):
        load_tokenizer(tmp_path / "bad.json", BPE_SPECIALS)


def test_encode_reports_wraps_pads_and_cuts(tokenizer):
    ids, mask = encode_reports(tokenizer, ["Pas de PNO.", TRAIN_TEXTS[2]], max_tokens=5)
    short = tokenizer("Pas de PNO.", add_special_tokens=False)["input_ids"]
    assert len(short) < 5
    assert ids[0, : len(short) + 2].tolist() == [1, *short, 2]  # <bos> report <eos>
    assert ids[0, len(short) + 2 :].eq(0).all() and mask[0].sum() == len(short) + 2
    assert ids.shape[1] == 6 and mask[1].all()  # cut to 5 tokens: <bos> + 5, no <eos>
    assert 2 not in ids[1].tolist()


@pytest.mark.parametrize("conditioning", ["cross", "prefix"])
def test_generator_shapes_and_loss(tokenizer, conditioning):
    encoder = _tiny_vit()
    generator = _generator(tokenizer, conditioning)
    features = encoder.forward_features(torch.randn(3, 1, 32, 32))
    ids, mask = generator.tokenize(TRAIN_TEXTS[:3])
    image = generator.condition(features)
    assert image.shape == (3, 16 + 1, 32)  # 4x4 patch tokens and the pooled one
    logits = generator.logits(features, ids, mask)
    assert logits.shape == (3, ids.shape[1], len(tokenizer))
    loss = generator.loss(features, ids, mask)
    assert loss.ndim == 0 and 4.0 < loss.item() < 7.5  # about log(vocab) when untrained
    loss.backward()
    assert generator.projection[1].weight.grad.abs().sum() > 0  # the image reaches the loss
    # The image matters: other images, other logits.
    other = encoder.forward_features(torch.randn(3, 1, 32, 32))
    assert not torch.allclose(generator.logits(other, ids, mask), logits)


@pytest.mark.parametrize("conditioning", ["cross", "prefix"])
def test_padding_does_not_count_in_the_loss(tokenizer, conditioning):
    generator = _generator(tokenizer, conditioning).eval()
    features = _tiny_vit().forward_features(torch.randn(1, 1, 32, 32))
    ids, mask = generator.tokenize(["Pas de PNO."])
    padded_ids = torch.cat([ids, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(1, 5, dtype=torch.long)], dim=1)
    torch.testing.assert_close(generator.loss(features, padded_ids, padded_mask),
                               generator.loss(features, ids, mask))  # fmt: skip


def test_cross_conditioning_needs_cross_attention(tokenizer):
    decoder = scratch_decoder(tokenizer, dim=32, layers=1, heads=2, positions=32, cross=False)
    with pytest.raises(MedtuneError, match=r"no cross-attention.*conditioning: prefix"):
        ReportGenerator(decoder, tokenizer, 32, "cross")


def test_generation_is_deterministic_and_sampling_seeded(tokenizer):
    generator = _generator(tokenizer, "cross", seed=3)
    torch.manual_seed(0)
    features = _tiny_vit().forward_features(torch.randn(4, 1, 32, 32))
    generator.train()  # generation switches dropout off, then restores the mode
    for decode in ("beam", "greedy"):
        first = generator.generate(features, decode=decode, beams=3, max_tokens=12)
        assert len(first) == 4 and all(isinstance(text, str) for text in first)
        assert generator.generate(features, decode=decode, beams=3, max_tokens=12) == first
    assert generator.training
    state = torch.get_rng_state()
    one = generator.generate(features, decode="sample", seed=1, top_p=1.0, temperature=1.5)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's randomness is untouched
    assert generator.generate(features, decode="sample", seed=1, top_p=1.0,
                              temperature=1.5) == one  # fmt: skip
    assert generator.generate(features, decode="sample", seed=2, top_p=1.0,
                              temperature=1.5) != one  # fmt: skip
    with pytest.raises(MedtuneError, match="decode 'nucleus'"):
        generator.generate(features, decode="nucleus")


def test_loss_falls_on_a_tiny_learnable_set(tokenizer, tmp_path):
    encoder = _tiny_vit()
    generator = _generator(tokenizer, "prefix")
    images = torch.randn(8, 1, 32, 32)
    batches = [{"image": images, "text": TRAIN_TEXTS[:8]}]
    model = torch.nn.ModuleDict({"encoder": encoder, "generator": generator})

    def step(model, batch):
        ids, mask = generator.tokenize(batch["text"])
        return {"loss": generator.loss(encoder.forward_features(batch["image"]), ids, mask)}

    config = LoopConfig(max_steps=20, lr=1e-2, precision="fp32", log_every=1)
    fit(model, step, batches, config, tmp_path / "run", progress=False)
    losses = [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")
              if r["kind"] == "train"]  # fmt: skip
    assert losses[-1] < 0.6 * losses[0]


def _save_hf_gpt2(directory, tokenizer, positions=64):
    """A tiny GPT-2 and its tokenizer saved as a user's local model directory would be."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=positions, n_embd=32, n_layer=2,
                        n_head=2, bos_token_id=1, eos_token_id=2)  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_hf_decoder_loads_from_a_local_directory_with_its_tokenizer(tokenizer, tmp_path):
    directory = _save_hf_gpt2(tmp_path / "gpt2", tokenizer)
    assert list(directory.glob("*.safetensors"))
    decoder, loaded = hf_decoder(directory), hf_tokenizer(directory)
    assert decoder.config.model_type == "gpt2" and not decoder.config.add_cross_attention
    assert loaded(VAL_ONLY)["input_ids"] == tokenizer(VAL_ONLY)["input_ids"]
    with pytest.raises(MedtuneError, match="no cross-attention"):
        ReportGenerator(decoder, loaded, 32, "cross")
    generator = ReportGenerator(decoder, loaded, 32, "prefix", max_tokens=8)
    assert len(generator.generate(_tiny_vit().forward_features(torch.randn(2, 1, 32, 32)))) == 2
    for weights in directory.glob("*.safetensors"):  # only pickles left: refused
        weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(MedtuneError, match=r"no \.safetensors"):
        hf_decoder(directory)
    with pytest.raises(MedtuneError, match="no such decoder directory"):
        hf_decoder(tmp_path / "missing")


def test_decoder_lora_wraps_gpt2_layers_and_merges_to_the_same_outputs(tokenizer, tmp_path):
    decoder = hf_decoder(_save_hf_gpt2(tmp_path / "gpt2", tokenizer))
    generator = ReportGenerator(decoder, tokenizer, 32, "prefix", max_tokens=8)
    adapters = add_decoder_lora(decoder, rank=4, alpha=8)
    wrapped = {name.split(".lora_")[0].split(".")[-1] for name, _ in decoder.named_parameters()
               if "lora_" in name}  # fmt: skip
    assert wrapped == {"c_attn", "c_proj", "c_fc"}
    assert all(p.requires_grad for p in adapters)
    assert not any(p.requires_grad for n, p in decoder.named_parameters() if "lora_" not in n)
    with torch.no_grad():  # adapters start at zero: give them a value, as training would
        for p in adapters:
            p.normal_(0, 0.2)
    features = _tiny_vit().forward_features(torch.randn(2, 1, 32, 32))
    ids, mask = generator.tokenize(TRAIN_TEXTS[:2])
    generator.eval()
    before = generator.logits(features, ids, mask)
    merge_decoder_lora(generator)
    assert not any("lora_" in name for name, _ in generator.named_parameters())
    torch.testing.assert_close(generator.logits(features, ids, mask), before, atol=1e-4, rtol=0)
