"""Shortcut warnings: signs that a model could learn the hospital instead of the disease.

Each rule is a small function over per-image arrays and returns warnings with the numbers that
made it fire. The thresholds are deliberately plain so a reader can check them by hand:

- a finding is *concentrated* when one site (or manufacturer) holds at least half of its
  positives and at least twice its share of the images, with at least ``MIN_POSITIVES``
  positives (fewer is noise);
- a label is *predictable from site* when the site's prevalence alone, used as a score, reaches
  an AUROC of ``SITE_AUROC``; the prevalence comes from other patients (patient-grouped k-fold),
  so a site does not score itself;
- a site with fewer than ``MIN_SITE_PATIENTS`` patients is too small to be its own test split
  (its AUROC would swing by tenths with one patient);
- near-duplicate images under different patients, and de-identification switched off or not
  recorded, are warned about as well.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medtune.curate.tables import Groups

MIN_POSITIVES = 10
CONCENTRATION_SHARE = 0.5  # of a finding's positives, in one group
CONCENTRATION_RATIO = 2.0  # times the group's share of the images
SITE_AUROC = 0.75
MIN_SITE_PATIENTS = 20
FOLDS = 5
LISTED = 10  # sites named in one warning


@dataclass(frozen=True)
class DatasetWarning:
    """One warning for the card and the CLI: a kind (a stable slug) and a one-line message."""

    kind: str  # concentrated_finding, site_predicts_label, small_site, cross_patient_duplicates,
    # deid_off, deid_unknown
    message: str


def shortcut_warnings(
    sites: Groups,
    vendors: Groups,
    patients: Groups,
    positives: dict[str, np.ndarray],
    cross_patient_pairs: int,
    near_duplicate_bits: int,
    deid: dict[str, Any] | None,
    min_site_patients: int = MIN_SITE_PATIENTS,
) -> list[DatasetWarning]:
    """Every rule over one catalog: the images grouped by site, manufacturer and patient and,
    per finding, a boolean array of positive images."""
    warnings = deid_warnings(deid)
    for finding, positive in positives.items():
        warnings += concentrated_finding(finding, positive, sites, "site")
        warnings += concentrated_finding(finding, positive, vendors, "manufacturer")
    warnings += site_predicts_labels(positives, sites, patients)
    warnings += small_sites(sites, patients, min_site_patients)
    warnings += cross_patient_duplicates(cross_patient_pairs, near_duplicate_bits)
    return warnings


def concentrated_finding(
    finding: str, positive: np.ndarray, groups: Groups, what: str
) -> list[DatasetWarning]:
    """A warning when one group holds most of ``finding``'s positives, far above its share."""
    total = int(positive.sum())
    if total < MIN_POSITIVES:
        return []
    count = len(groups.names)
    images = np.bincount(groups.codes, minlength=count) / len(groups.codes)
    held = np.bincount(groups.codes, weights=positive, minlength=count) / total
    out = []
    for k in np.flatnonzero((held >= CONCENTRATION_SHARE) & (held >= CONCENTRATION_RATIO * images)):
        message = (
            f"{finding}: {what} {groups.names[k]} holds {held[k]:.0%} of {total} positives with "
            f"{images[k]:.0%} of the images ({held[k] / images[k]:.1f}x its share)"
        )
        out.append(DatasetWarning("concentrated_finding", message))
    return out


def site_predicts_labels(
    positives: dict[str, np.ndarray], sites: Groups, patients: Groups
) -> list[DatasetWarning]:
    """A warning per finding whose out-of-fold site prevalence reaches ``SITE_AUROC``."""
    # AUROC over a handful of positives (or negatives) means nothing.
    enough = {f: p for f, p in positives.items() if min(p.sum(), len(p) - p.sum()) >= MIN_POSITIVES}
    if not enough or len(sites.names) < 2 or len(patients.names) < 2:
        return []
    from sklearn.metrics import roc_auc_score  # here: about 1 s to import, needed only now

    folds = patient_folds(patients)
    out = []
    for finding, positive in enough.items():
        score = site_prevalence_out_of_fold(positive, sites, folds)
        auroc = float(roc_auc_score(positive, score))
        if auroc >= SITE_AUROC:
            message = (
                f"{finding}: the site alone predicts the label with AUROC {auroc:.2f} "
                f"({int(positive.sum())} positives at {len(sites.names)} sites)"
            )
            out.append(DatasetWarning("site_predicts_label", message))
    return out


def patient_folds(patients: Groups, folds: int = FOLDS) -> np.ndarray:
    """A fold number per image, all images of a patient in one fold (at least 2 patients)."""
    from sklearn.model_selection import GroupKFold

    fold = np.empty(len(patients.codes), dtype=np.int64)
    splitter = GroupKFold(n_splits=min(folds, len(patients.names)))
    for k, (_, test) in enumerate(splitter.split(patients.codes, groups=patients.codes)):
        fold[test] = k
    return fold


def site_prevalence_out_of_fold(
    positive: np.ndarray, sites: Groups, folds: np.ndarray
) -> np.ndarray:
    """Each image's score: its site's prevalence among the other folds' images (the overall
    prevalence of the other folds for a site they do not contain)."""
    codes, count = sites.codes, len(sites.names)
    score = np.empty(len(positive), dtype=np.float64)
    for fold in np.unique(folds):
        train = folds != fold
        images = np.bincount(codes[train], minlength=count)
        hits = np.bincount(codes[train], weights=positive[train], minlength=count)
        overall = hits.sum() / max(images.sum(), 1)
        prevalence = np.where(images > 0, hits / np.maximum(images, 1), overall)
        score[~train] = prevalence[codes[~train]]
    return score


def small_sites(sites: Groups, patients: Groups, minimum: int) -> list[DatasetWarning]:
    """One warning naming the sites with fewer than ``minimum`` patients."""
    pairs = np.unique(sites.codes * len(patients.names) + patients.codes)  # (site, patient)
    people = np.bincount(pairs // len(patients.names), minlength=len(sites.names))
    small = sorted((int(n), sites.names[k]) for k, n in enumerate(people) if n < minimum)
    if not small:
        return []
    listed = ", ".join(f"{name} ({n})" for n, name in small[:LISTED])
    more = f" and {len(small) - LISTED} more" if len(small) > LISTED else ""
    message = (
        f"{len(small)} of {len(sites.names)} sites have fewer than {minimum} patients, too few "
        f"for a test split of their own: {listed}{more}"
    )
    return [DatasetWarning("small_site", message)]


def cross_patient_duplicates(pairs: int, bits: int) -> list[DatasetWarning]:
    """A warning when near-duplicate images belong to different patients."""
    if not pairs:
        return []
    message = (
        f"{pairs} near-duplicate image pairs (at most {bits} bits apart) belong to different "
        "patients: one image under two ids can leak across splits"
    )
    return [DatasetWarning("cross_patient_duplicates", message)]


def deid_warnings(deid: dict[str, Any] | None) -> list[DatasetWarning]:
    """A warning when de-identification was off, or when its settings were not recorded."""
    if deid is None:
        message = "de-identification settings unknown: the workspace has no readable medtune.yaml"
        return [DatasetWarning("deid_unknown", message)]
    if not deid.get("enabled", True):
        message = "DE-IDENTIFICATION OFF: the dataset may hold identifying data; do not share it"
        return [DatasetWarning("deid_off", message)]
    return []
