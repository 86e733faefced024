"""Text metrics equal pycocoevalcap's Bleu(4), Rouge and Cider on the same tokens, to 1e-6."""

from __future__ import annotations

import random

import pytest

from medtune.errors import MedtuneError
from medtune.evaluate.text_metrics import (
    _lcs_length,
    _match_masks,
    bleu,
    cider_d,
    rouge_l,
    text_scores,
    tokenize,
)

pytest.importorskip("pycocoevalcap.bleu.bleu")  # a dev extra: the reference implementation
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

KEYS = ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"]
VOCAB = [
    *[
        "no",
        "acute",
        "cardiopulmonary",
        "process",
        "the",
        "lungs",
        "are",
        "clear",
        "there",
        "is",
        "a",
        "small",
        "left",
        "right",
    ],
    *[
        "pleural",
        "effusion",
        "heart",
        "size",
        "normal",
        "mild",
        "atelectasis",
        "at",
        "base",
        "pneumothorax",
        ".",
        ",",
    ],
]


def coco_scores(preds: dict, refs: dict) -> dict[str, float]:
    """pycocoevalcap's scores (gts first, as it takes them), keyed as text_scores."""
    bleus, _ = Bleu(4).compute_score(refs, preds, verbose=0)
    scores = dict(zip(KEYS[:4], bleus, strict=True))
    scores["ROUGE_L"] = float(Rouge().compute_score(refs, preds)[0])
    scores["CIDEr"] = float(Cider().compute_score(refs, preds)[0])
    return scores


def assert_equal_to_coco(preds: dict, refs: dict) -> None:
    ours = text_scores(preds, refs)
    theirs = coco_scores(preds, refs)
    assert list(ours) == KEYS
    for key in KEYS:
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6), key
    assert bleu(preds, refs) == pytest.approx([theirs[k] for k in KEYS[:4]], abs=1e-6)
    assert rouge_l(preds, refs) == pytest.approx(theirs["ROUGE_L"], abs=1e-6)
    assert cider_d(preds, refs) == pytest.approx(theirs["CIDEr"], abs=1e-6)


HAND_MADE = {
    "identical": (
        {1: ["no acute process ."], 2: ["small left pleural effusion ."]},
        {1: ["no acute process ."], 2: ["small left pleural effusion ."]},
    ),
    "empty prediction": (
        {1: [""], 2: ["the lungs are clear ."], 3: ["heart size normal"]},
        {1: ["no acute process ."], 2: ["the lungs are clear ."], 3: ["heart size is normal"]},
    ),
    "repeated words": (
        {1: ["the the the the the the"], 2: ["effusion effusion effusion"]},
        {1: ["the cat is on the mat the"], 2: ["small effusion , no effusion"]},
    ),
    "multiple references": (
        {1: ["mild atelectasis at the left base ."], 2: ["no pneumothorax"]},
        {
            1: ["mild left basal atelectasis .", "atelectasis at the left base .", "clear ."],
            2: ["no pneumothorax .", "there is no pneumothorax", "lungs are clear"],
        },
    ),
    "shorter than references": (
        {1: ["clear"], 2: ["small effusion"], 3: ["no"]},
        {1: ["the lungs are clear ."], 2: ["small right pleural effusion ."], 3: ["no acute"]},
    ),
    "closest length tie": (
        {1: ["a b c d"], 2: ["x y"]},
        {1: ["a b c", "a b c d e"], 2: ["x", "x y z"]},
    ),
    "one report": ({"only": ["no acute process"]}, {"only": ["no acute cardiopulmonary process"]}),
    "odd spaces": (
        {1: ["no  acute process "], 2: ["clear"]},
        {1: ["no acute  process"], 2: [" clear"]},
    ),
}


@pytest.mark.parametrize("case", HAND_MADE, ids=list(HAND_MADE))
def test_hand_made_cases_equal_pycocoevalcap(case: str) -> None:
    preds, refs = HAND_MADE[case]
    assert_equal_to_coco(preds, refs)


def _report(rng: random.Random) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(1, 30)))


def test_random_reports_equal_pycocoevalcap() -> None:
    rng = random.Random(6)
    preds = {f"s{i}": [_report(rng)] for i in range(200)}
    refs = {f"s{i}": [_report(rng) for _ in range(rng.choice([1, 1, 2, 3]))] for i in range(200)}
    # Some predictions copy a reference with an edit, so that high scores are exercised too.
    for i in range(0, 200, 4):
        words = refs[f"s{i}"][0].split()
        words[rng.randrange(len(words))] = rng.choice(VOCAB)
        preds[f"s{i}"] = [" ".join(words)]
    assert_equal_to_coco(preds, refs)


def test_lcs_matches_the_dynamic_programme() -> None:
    rng = random.Random(0)
    for _ in range(300):
        a = [rng.choice("abcd") for _ in range(rng.randint(1, 12))]
        b = [rng.choice("abcd") for _ in range(rng.randint(1, 12))]
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                up_left, up, left = table[i][j], table[i][j + 1], table[i + 1][j]
                table[i + 1][j + 1] = up_left + 1 if x == y else max(up, left)
        assert _lcs_length(_match_masks(a), len(a), b) == table[-1][-1]


def test_tokenize_default_splits_punctuation_and_keeps_decimals() -> None:
    assert tokenize("Small L pleural effusion, 3.5cm.\nNo PTX!") == [
        "small", "l", "pleural", "effusion", ",", "3.5", "cm", ".", "no", "ptx", "!",
    ]  # fmt: skip


def test_tokenize_r2gen_strips_punctuation_and_numbering() -> None:
    text = '1. Heart size is normal.. 2. No effusion (left/right); "clear" lungs.'
    assert " ".join(tokenize(text, r2gen=True)) == (
        "heart size is normal . no effusion leftright clear lungs ."
    )


def test_mismatched_ids_and_bad_layout_are_user_errors() -> None:
    with pytest.raises(MedtuneError, match="different ids"):
        text_scores({1: ["a"]}, {2: ["a"]})
    with pytest.raises(MedtuneError, match="exactly one"):
        text_scores({1: ["a", "b"]}, {1: ["a"]})
    with pytest.raises(MedtuneError, match="one or more"):
        text_scores({1: ["a"]}, {1: []})
    with pytest.raises(MedtuneError, match="empty"):
        text_scores({}, {})
