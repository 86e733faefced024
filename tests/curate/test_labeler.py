"""The report labeler: scored against synthetic reports whose truth is known, plus hand cases.

The synthetic reports come from medtune.synth.reports, which decides what FINDINGS and
IMPRESSION say about each finding before writing them; the hand-written reports cover styles it
does not write (British spelling, capitals, telegraphic notes, numbered impressions).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from medtune.config import Anatomy, Finding
from medtune.curate.labeler import Evidence, Label, Rules, label_report, load_rules
from medtune.errors import MedtuneError
from medtune.synth.reports import Report, write_report
from tests.synth.report_inputs import make_input

MENTIONED = ("positive", "negative", "uncertain")


@pytest.fixture(scope="module")
def rules() -> Rules:
    return load_rules()


def labels(text: str, rules: Rules) -> dict[str, str]:
    return {k: v.status for k, v in label_report(text, rules).items()}


# ---------------------------------------------------------------------------------------------
# Synthetic inputs, shaped like the renderer's ground truth (as in tests/synth/test_reports.py).


@pytest.fixture(scope="module")
def scored(rules) -> list[tuple[Report, dict[str, Label]]]:
    rng = np.random.default_rng(20240611)
    out = []
    for i in range(1500):
        report = write_report(make_input(rng, Anatomy.CHEST if i % 2 else None), rng)
        out.append((report, label_report(report.text, rules)))
    return out


def f1_scores(
    scored: list[tuple[Report, dict[str, Label]]], scope_to_input: bool
) -> dict[Finding, float]:
    """Micro F1 over positive/negative/uncertain per finding; not_mentioned is the null class."""
    counts = {f: Counter() for f in Finding}
    for report, predicted in scored:
        for finding in Finding:
            if scope_to_input and finding not in report.status:
                continue
            true = report.status.get(finding, "not_mentioned")
            pred = predicted[finding.value].status
            if pred == true != "not_mentioned":
                counts[finding]["tp"] += 1
                continue
            counts[finding]["fp"] += pred != "not_mentioned"
            counts[finding]["fn"] += true != "not_mentioned"
    return {
        f: 2 * c["tp"] / (2 * c["tp"] + c["fp"] + c["fn"]) if c["tp"] else 0.0
        for f, c in counts.items()
    }


@pytest.mark.slow
def test_f1_on_synthetic_reports(scored):
    """Per-finding F1 >= 0.97 over the report-finding pairs the writer knows the truth of.

    The writer's truth covers the findings of its input: a chest input has no fracture, yet its
    bone filler ("No acute osseous abnormality.") negates one, truly; those pairs are scored by
    the next test rather than counted as errors here.
    """
    scores = f1_scores(scored, scope_to_input=True)
    assert all(score >= 0.97 for score in scores.values()), scores


@pytest.mark.slow
def test_f1_counting_every_finding_of_every_report(scored):
    """Scored over all pairs (absent from the truth = not_mentioned), only the chest reports'
    bone fillers separate fracture from the truth; everything else still scores >= 0.97."""
    scores = f1_scores(scored, scope_to_input=False)
    assert all(s >= 0.97 for f, s in scores.items() if f is not Finding.FRACTURE), scores
    extra = Counter()
    for report, predicted in scored:
        if Finding.FRACTURE not in report.status:
            for e in predicted["fracture"].evidence:
                extra[report.text[e.start : e.end].lower()] += 1
    assert set(extra) <= {"no acute osseous abnormality", "osseous structures are intact"}, extra


def test_every_finding_is_a_key(rules):
    out = label_report("", rules)
    assert tuple(out) == rules.findings
    assert all(label == Label("not_mentioned", ()) for label in out.values())
    assert rules.findings[:6] == tuple(f.value for f in Finding)
    assert len(rules.findings) == 15  # the cohort's 6 and CheXpert's 14, 5 shared


# ---------------------------------------------------------------------------------------------
# Triggers: every shipped pattern, around one mention.


def _modifiers() -> dict:
    from importlib import resources

    import yaml

    text = resources.files("medtune.curate").joinpath("rules", "modifiers.yaml").read_text()
    return yaml.safe_load(text)


MODIFIERS = _modifiers()


@pytest.mark.parametrize("trigger", MODIFIERS["negation"]["pre"])
def test_every_negation_pre_trigger(trigger, rules):
    assert labels(f"{trigger} pneumothorax.", rules)["pneumothorax"] == "negative"


@pytest.mark.parametrize("trigger", MODIFIERS["negation"]["post"])
def test_every_negation_post_trigger(trigger, rules):
    assert labels(f"Pneumothorax {trigger}.", rules)["pneumothorax"] == "negative"


@pytest.mark.parametrize("trigger", MODIFIERS["uncertainty"]["pre"])
def test_every_uncertainty_pre_trigger(trigger, rules):
    assert labels(f"{trigger} pneumothorax.", rules)["pneumothorax"] == "uncertain"


@pytest.mark.parametrize("trigger", MODIFIERS["uncertainty"]["post"])
def test_every_uncertainty_post_trigger(trigger, rules):
    assert labels(f"Pneumothorax {trigger}.", rules)["pneumothorax"] == "uncertain"


@pytest.mark.parametrize(
    ("text", "finding", "status"),
    [
        ("No displaced fracture.", "fracture", "negative"),
        ("Without evidence of pneumothorax.", "pneumothorax", "negative"),
        ("Negative for acute fracture.", "fracture", "negative"),
        ("The pneumothorax has resolved.", "pneumothorax", "negative"),
        ("Pleural effusion is not seen.", "pleural_effusion", "negative"),
        ("Heart size is normal.", "cardiomegaly", "negative"),
        ("The heart is not enlarged.", "cardiomegaly", "negative"),
        ("The costophrenic angles are sharp.", "pleural_effusion", "negative"),
        ("The lungs are clear.", "consolidation", "negative"),
        ("Cannot exclude a small nodule.", "nodule", "uncertain"),
        ("Findings may represent early consolidation.", "consolidation", "uncertain"),
        ("Suspicious for pneumonia.", "pneumonia", "uncertain"),
        ("Opacity concerning for pneumonia.", "pneumonia", "uncertain"),
        ("Borderline heart size.", "cardiomegaly", "uncertain"),
        ("Atelectasis versus consolidation.", "consolidation", "uncertain"),
        ("Atelectasis versus consolidation.", "atelectasis", "uncertain"),
        ("Fracture is unlikely.", "fracture", "negative"),
        ("Consolidation, consistent with pneumonia.", "pneumonia", "positive"),
        ("Unchanged small nodule in the right upper lobe.", "nodule", "positive"),
        ("Cardiac silhouette may be mildly enlarged.", "cardiomegaly", "uncertain"),
    ],
)
def test_natural_sentences(text, finding, status, rules):
    assert labels(text, rules)[finding] == status


def test_pseudo_negation(rules):
    out = labels("No change in the left pleural effusion.", rules)
    assert out["pleural_effusion"] == "positive"
    out = labels("No interval change in the right upper lobe nodule. No pneumothorax.", rules)
    assert out["nodule"] == "positive" and out["pneumothorax"] == "negative"
    assert labels("Effusion, not significantly changed.", rules)["pleural_effusion"] == "positive"


def test_negation_stays_in_its_sentence(rules):
    out = labels("No pneumothorax. Large left pleural effusion.", rules)
    assert out["pneumothorax"] == "negative" and out["pleural_effusion"] == "positive"
    out = labels("No pneumothorax\nLarge left pleural effusion", rules)
    assert out["pleural_effusion"] == "positive"
    out = labels("No pneumothorax; moderate right effusion.", rules)
    assert out["pleural_effusion"] == "positive"


def test_negation_window_and_terminators(rules):
    out = labels("No pneumothorax but there is a small left pleural effusion.", rules)
    assert out["pleural_effusion"] == "positive" and out["pneumothorax"] == "negative"
    out = labels("No consolidation, small left pleural effusion.", rules)
    assert out["consolidation"] == "negative" and out["pleural_effusion"] == "positive"
    far = "No evidence on this single portable view of the chest today of a pneumothorax."
    assert labels(far, rules)["pneumothorax"] == "positive"  # beyond the 6-word window


def test_negation_distributes_over_lists(rules):
    out = labels("No pleural effusion or pneumothorax.", rules)
    assert out["pleural_effusion"] == out["pneumothorax"] == "negative"
    out = labels("There is no focal consolidation, pleural effusion, or pneumothorax.", rules)
    assert out["consolidation"] == out["pleural_effusion"] == out["pneumothorax"] == "negative"
    out = labels("Pleural effusion and pneumothorax have resolved.", rules)
    assert out["pleural_effusion"] == out["pneumothorax"] == "negative"
    out = labels("Possible small effusion or pneumothorax.", rules)
    assert out["pleural_effusion"] == out["pneumothorax"] == "uncertain"


def test_positive_with_negative_in_one_sentence(rules):
    out = labels("Moderate right pleural effusion without evidence of pneumothorax.", rules)
    assert out["pleural_effusion"] == "positive" and out["pneumothorax"] == "negative"


def test_aggregation_follows_chexpert(rules):
    text = "No pneumothorax. Possible small left pneumothorax. Small right pneumothorax."
    assert labels(text, rules)["pneumothorax"] == "positive"
    text = "No pneumothorax. Possible small left pneumothorax."
    assert labels(text, rules)["pneumothorax"] == "uncertain"


# ---------------------------------------------------------------------------------------------
# Sections, regions, typos, abbreviations.


def test_only_findings_and_impression_are_read(rules):
    text = (
        "EXAMINATION: XR CHEST 2 VIEWS\n"
        "INDICATION: Cough and fever, r/o pneumonia. f/u nodule. Known effusion?\n"
        "CLINICAL HISTORY: Pneumothorax last year.\n"
        "COMPARISON: None.\nTECHNIQUE: PA and lateral views.\n"
        "FINDINGS: Heart size is normal. No pneumothorax.\n"
        "IMPRESSION: No acute cardiopulmonary process.\n"
    )
    out = labels(text, rules)
    assert out["pneumonia"] == out["nodule"] == out["pleural_effusion"] == "not_mentioned"
    assert out["pneumothorax"] == "negative" and out["cardiomegaly"] == "negative"
    assert out["no_finding"] == "positive"


def test_header_forms(rules):
    text = (
        "Reason for exam: rule out pneumonia\nFindings\nClear lungs.\n"
        "IMPRESSION/RECOMMENDATIONS:\n1. Small left pleural effusion."
    )
    out = labels(text, rules)
    assert out["pneumonia"] == "negative"  # "clear lungs" in FINDINGS, not the r/o question
    assert out["pleural_effusion"] == "positive"
    assert labels("Small left pleural effusion.", rules)["pleural_effusion"] == "positive"
    conclusion = "History: pneumothorax.\nConclusion: No pneumothorax."
    assert labels(conclusion, rules)["pneumothorax"] == "negative"


def test_structured_line_labels_are_not_findings(rules):
    text = "FINDINGS:\nSupport devices: None.\nHeart: Heart size is normal.\nPleura: No effusion."
    out = labels(text, rules)
    assert out["support_devices"] == "not_mentioned"
    assert out["cardiomegaly"] == out["pleural_effusion"] == "negative"


@pytest.mark.parametrize(
    ("text", "finding", "region"),
    [
        (
            "There is a nondisplaced fracture of the left distal radius.",
            "fracture",
            "left distal radius",
        ),
        ("Fracture of the fifth metatarsal base.", "fracture", "fifth metatarsal"),
        ("Subcapital fracture of the neck of femur.", "fracture", "neck of femur"),
        ("Small L effusion.", "pleural_effusion", "left"),
        ("8 mm RUL nodule.", "nodule", "right upper lobe"),
        ("Bilateral pleural effusions.", "pleural_effusion", "bilateral"),
        ("Consolidation in the right lower zone.", "consolidation", "right lower zone"),
        ("Small apical pneumothorax on the right.", "pneumothorax", "apical"),
        ("Cardiomegaly.", "cardiomegaly", None),
    ],
)
def test_region_hints(text, finding, region, rules):
    evidence = label_report(text, rules)[finding].evidence
    assert evidence and evidence[0].region == region


def test_lower_case_l_is_not_a_side(rules):
    evidence = label_report("small l effusion.", rules)["pleural_effusion"].evidence
    assert evidence[0].region is None


@pytest.mark.parametrize(
    ("text", "finding", "status"),
    [
        ("Small right pneumothroax.", "pneumothorax", "positive"),
        ("No pnuemothorax.", "pneumothorax", "negative"),
        ("Mild cardiomegally.", "cardiomegaly", "positive"),
        ("Left pleural effusoin.", "pleural_effusion", "positive"),
        ("Patchy consolidaton at the right base.", "consolidation", "positive"),
        ("The cardiac silhouete is wihtin normal limits.", "cardiomegaly", "negative"),
        ("Possibel fracture of the scaphoid.", "fracture", "uncertain"),
        ("No PTX.", "pneumothorax", "negative"),
        ("Small left ptx.", "pneumothorax", "positive"),
        ("Fx of the distal radius.", "fracture", "positive"),
        ("Fractured clavicle.", "fracture", "positive"),
        ("Findings suggest CHF.", "edema", "uncertain"),
        ("Bilateral effusions.", "pleural_effusion", "positive"),
        ("Bilateral pneumothoraces.", "pneumothorax", "positive"),
        ("Cardiac enlargement.", "cardiomegaly", "positive"),
        ("Enlarged heart.", "cardiomegaly", "positive"),
        ("Heart size is enlarged.", "cardiomegaly", "positive"),
        ("Right basilar airspace disease.", "consolidation", "positive"),
        ("Left lower lobe infiltrate.", "lung_opacity", "positive"),
        ("Right pleural effusion (small).", "pleural_effusion", "positive"),
    ],
)
def test_typos_and_abbreviations(text, finding, status, rules):
    assert labels(text, rules)[finding] == status


def test_evidence_spans_point_into_the_original_text(rules):
    text = "FINDINGS: The cardiac silhouete is wihtin normal limits. Small left pneumothroax."
    label = label_report(text, rules)["pneumothorax"]
    (evidence,) = label.evidence
    assert isinstance(evidence, Evidence)
    assert text[evidence.start : evidence.end] == "pneumothroax"
    assert text[slice(*evidence.sentence)] == "Small left pneumothroax."
    assert evidence.status == "positive" and evidence.trigger is None and evidence.region == "left"
    negative = label_report(text, rules)["cardiomegaly"].evidence[0]
    assert text[negative.start : negative.end] == "cardiac silhouete is wihtin normal limits"


def test_joint_effusion_is_not_pleural(rules):
    text = "FINDINGS: Small suprapatellar joint effusion. No knee joint effusion. No fracture."
    out = labels(text, rules)
    assert out["pleural_effusion"] == "not_mentioned" and out["fracture"] == "negative"


def test_no_finding(rules):
    assert labels("IMPRESSION: Normal chest radiograph.", rules)["no_finding"] == "positive"
    assert labels("No acute osseous abnormality.", rules)["no_finding"] == "positive"
    text = "Small left effusion. Otherwise no acute cardiopulmonary abnormality."
    assert labels(text, rules)["no_finding"] == "not_mentioned"
    text = "Endotracheal tube in good position. No acute cardiopulmonary process."
    out = labels(text, rules)
    assert out["no_finding"] == "positive" and out["support_devices"] == "positive"
    assert labels("No pneumothorax.", rules)["no_finding"] == "not_mentioned"


# ---------------------------------------------------------------------------------------------
# Hand-written reports in other styles.

HAND_REPORTS = [
    (  # British spelling, CLINICAL DETAILS header
        "Clinical details: ?pneumonia\nReport: The heart is not enlarged. Patchy consolidation "
        "in the left lower zone. No pleural effusion. Mild interstitial oedema.",
        {
            "pneumonia": "not_mentioned",
            "cardiomegaly": "negative",
            "consolidation": "positive",
            "pleural_effusion": "negative",
            "edema": "positive",
        },
    ),
    (  # all capitals
        "FINDINGS: THERE IS A LARGE RIGHT PNEUMOTHORAX. NO PLEURAL EFFUSION.\n"
        "IMPRESSION: LARGE RIGHT PNEUMOTHORAX.",
        {"pneumothorax": "positive", "pleural_effusion": "negative", "no_finding": "not_mentioned"},
    ),
    (  # telegraphic
        "No PTX. Small L effusion. Heart nl size? ",
        {"pneumothorax": "negative", "pleural_effusion": "positive"},
    ),
    (  # numbered impression
        "IMPRESSION:\n1. Right lower lobe pneumonia.\n2. No pneumothorax.\n3) Stable cardiomegaly.",
        {"pneumonia": "positive", "pneumothorax": "negative", "cardiomegaly": "positive"},
    ),
    (
        "FINDINGS: Lungs are clear bilaterally. Cardiomediastinal silhouette is within normal "
        "limits. No acute osseous abnormality.\nIMPRESSION: Normal study.",
        {
            "consolidation": "negative",
            "cardiomegaly": "negative",
            "fracture": "negative",
            "enlarged_cardiomediastinum": "negative",
            "no_finding": "positive",
            "nodule": "not_mentioned",
        },
    ),
    (
        "Impression: Comminuted fracture of the distal radius with dorsal angulation. "
        "No dislocation.",
        {"fracture": "positive"},
    ),
    (
        "FINDINGS: Subtle lucency at the scaphoid waist; an occult fracture cannot be excluded. "
        "Recommend repeat radiographs in 10 days.",
        {"fracture": "uncertain"},
    ),
    (
        "IMPRESSION: Interval resolution of the left pneumothorax. Left chest tube in place.",
        {"pneumothorax": "negative", "support_devices": "positive"},
    ),
    (
        "FINDINGS: Stable 6 mm nodule in the right upper lobe, unchanged from prior. "
        "No new nodules. No consolidation.",
        {"nodule": "positive", "lung_lesion": "positive", "consolidation": "negative"},
    ),
    (
        "Findings: Increased interstitial markings and vascular congestion, consistent with "
        "CHF. Small bilateral effusions. Mild cardiomegaly.",
        {"edema": "positive", "pleural_effusion": "positive", "cardiomegaly": "positive"},
    ),
    (
        "CONCLUSION: Right middle lobe collapse. Probable underlying mass.",
        {"atelectasis": "positive", "lung_lesion": "uncertain", "nodule": "not_mentioned"},
    ),
    (
        "IMPRESSION: Left basilar opacity, likely atelectasis, although pneumonia is not excluded.",
        {"lung_opacity": "positive", "atelectasis": "uncertain", "pneumonia": "uncertain"},
    ),
    (
        "FINDINGS:\n- ETT terminates 4 cm above the carina.\n- NG tube below the diaphragm.\n"
        "- Lungs: clear.\n- Pleura: no effusion, no PTX.",
        {"support_devices": "positive", "pleural_effusion": "negative", "pneumothorax": "negative"},
    ),
    (
        "IMPRESSION: Widened mediastinum, concerning for aortic injury. Recommend CT.",
        {"enlarged_cardiomediastinum": "positive"},
    ),
    (
        "FINDINGS: Pleural thickening at the left apex. No focal airspace disease.",
        {"pleural_other": "positive", "consolidation": "negative", "lung_opacity": "negative"},
    ),
    (
        "Findings: No fracture is identified. Soft tissue swelling over the lateral malleolus.",
        {"fracture": "negative", "edema": "not_mentioned"},
    ),
    (
        "IMPRESSION: No evidence of pneumothorax following biopsy. Small hemorrhage along the "
        "needle track.",
        {"pneumothorax": "negative"},
    ),
    (
        "FINDINGS: Apart from a tiny left apical pneumothorax, the lungs are clear.",
        {"pneumothorax": "positive", "consolidation": "negative"},
    ),
]


@pytest.mark.parametrize(("text", "expected"), HAND_REPORTS)
def test_hand_written_reports(text, expected, rules):
    out = labels(text, rules)
    assert {k: out[k] for k in expected} == expected


# ---------------------------------------------------------------------------------------------
# User rules.


def test_user_yaml_adds_a_finding_synonyms_and_triggers(tmp_path: Path):
    extra = tmp_path / "site.yaml"
    extra.write_text(
        "findings:\n"
        "  hiatal_hernia:\n"
        "    mentions: [hiatal hernia, hiatus hernia]\n"
        "  pneumothorax:\n"
        "    mentions: [air leak]\n"
        "negation:\n"
        "  pre: [no convincing]\n"
        "uncertainty:\n"
        "  pre: [cannot be certain of]\n",
        encoding="utf-8",
    )
    rules = load_rules([extra])
    assert rules.findings[-1] == "hiatal_hernia"
    assert rules.findings[:-1] == load_rules().findings
    out = labels("Small hiatus hernia. Cannot be certain of an air leak.", rules)
    assert out["hiatal_hernia"] == "positive" and out["pneumothorax"] == "uncertain"
    assert labels("No hiatal hernias.", rules)["hiatal_hernia"] == "negative"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("findings: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("findings:\n  edema:\n    mentions: oedema\n", "expected a list of phrases"),
        ("findings:\n  edema:\n    synonyms: [oedema]\n", "unknown key 'synonyms'"),
        ("findings:\n  Bad-Name: {mentions: [x]}\n", "snake_case"),
        ("findings:\n  edema:\n    mentions: ['re:(unclosed']\n", "not a valid regex"),
        ("negation:\n  before: [nope]\n", "unknown key 'before'"),
        ("colours: [red]\n", "unknown section 'colours'"),
        ("window: {pre: many}\n", "whole number"),
    ],
)
def test_malformed_user_yaml_names_file_and_problem(tmp_path: Path, content, problem):
    bad = tmp_path / "bad_rules.yaml"
    bad.write_text(content, encoding="utf-8")
    with pytest.raises(MedtuneError) as caught:
        load_rules([bad])
    message = str(caught.value)
    assert "bad_rules.yaml" in message and problem in message
    assert "\n" not in message


def test_missing_user_file(tmp_path: Path):
    with pytest.raises(MedtuneError, match=r"missing\.yaml"):
        load_rules([tmp_path / "missing.yaml"])


def test_default_rules_are_compiled_once():
    assert load_rules() is load_rules()
