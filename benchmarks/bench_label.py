"""Benchmark the report labeler: reports labelled per second on one core.

Writes N synthetic reports with medtune.synth.reports (half chest, half any anatomy, fixed seed),
then times `label_report` over all of them in this one process (best of 3; the rules are loaded
and compiled once, before timing). Target: at least 2,000 reports/s on one core. The time is
this process's CPU time: labelling is single-threaded and CPU-bound, and CPU time is what one
core spends, whatever else the machine runs meanwhile.

The labeler remembers the sentences it has labelled (reports repeat "No pneumothorax." far more
than they vary), so every timed pass starts with an empty memory, as a real run does: the rate
is that of labelling N reports once. The cold rate, with nothing remembered between reports, is
the floor for reports that share no sentence at all.

Then times the `medtune card` command on a synthetic 100,000-row workspace (see bench_card.py;
target under 60 s).

    python benchmarks/bench_label.py                 # 5,000 reports
    python benchmarks/bench_label.py --reports 20000
"""

from __future__ import annotations

import argparse
import datetime
import time

import numpy as np

TARGET_REPORTS_PER_S = 2_000.0


def make_reports(count: int, seed: int) -> list[str]:
    """Report texts from random inputs shaped like the renderer's ground truth."""
    from medtune.config import CHEST_FINDINGS, Anatomy, Finding
    from medtune.synth import identity as ident
    from medtune.synth.reports import FindingTruth, ReportInput, write_report

    rng = np.random.default_rng(seed)
    places = ("right upper zone", "left lower zone", "right costophrenic angle", "left apex")
    bones = ("distal radius", "fifth metatarsal", "patella", "L2 vertebral body", "clavicle")

    def truth(finding: Finding) -> FindingTruth:
        if rng.random() >= 0.3:
            return FindingTruth(finding, False)
        if finding is Finding.FRACTURE:
            return FindingTruth(finding, True, bones[int(rng.integers(len(bones)))], "left")
        if finding is Finding.CARDIOMEGALY:
            return FindingTruth(finding, True, "heart")
        place = places[int(rng.integers(len(places)))]
        return FindingTruth(finding, True, place, place.split()[0], float(rng.uniform(4, 40)))

    texts = []
    for i in range(count):
        anatomy = Anatomy.CHEST if i % 2 else list(Anatomy)[int(rng.integers(len(Anatomy)))]
        kinds = CHEST_FINDINGS if anatomy is Anatomy.CHEST else (Finding.FRACTURE,)
        site = int(rng.integers(8))
        study = datetime.datetime(2015, 1, 1, 8) + datetime.timedelta(hours=int(rng.integers(9e4)))
        sex = "F" if rng.random() < 0.5 else "M"
        inp = ReportInput(
            anatomy=anatomy,
            views=("PA", "LAT") if anatomy is Anatomy.CHEST else ("PA", "OBL", "LAT"),
            laterality="L" if anatomy in (Anatomy.HAND, Anatomy.KNEE, Anatomy.FOOT) else None,
            study_datetime=study,
            accession=ident.make_accession(rng, site, study.year),
            mrn=ident.make_mrn(rng, site),
            patient=ident.make_person(rng, sex),
            age_years=int(rng.integers(18, 100)),
            sex=sex,
            patient_address=ident.make_address(rng),
            patient_phone=ident.make_phone(rng),
            findings=tuple(truth(f) for f in kinds),
            prior_dates=(study.date() - datetime.timedelta(days=400),),
            referring=ident.make_physician(rng),
            radiologist=ident.make_physician(rng),
            institution=ident.make_institution(rng, site),
        )
        texts.append(write_report(inp, rng).text)
    return texts


def best_rate(texts: list[str], repeats: int, cold: bool = False) -> float:
    """Reports per second, best of ``repeats`` passes (the least disturbed by other work).

    Each pass starts with no sentence remembered; ``cold`` forgets them after every report too.
    """
    from medtune.curate.labeler import label_report, load_rules

    rules = load_rules()  # compiled once, outside the timing, as a real run does
    best = float("inf")
    for _ in range(repeats):
        rules.clear_cache()
        start = time.process_time()
        for text in texts:
            label_report(text, rules)
            if cold:
                rules.clear_cache()
        best = min(best, time.process_time() - start)
    return len(texts) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=5_000, help="reports to label (5,000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the best counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--card-rows", type=int, default=100_000, help="then time `medtune card` (0: skip)"
    )
    args = parser.parse_args()
    texts = make_reports(args.reports, args.seed)
    rate = best_rate(texts, args.repeats)
    cold = best_rate(texts, args.repeats, cold=True)
    ratio = rate / TARGET_REPORTS_PER_S
    print(
        f"label: {len(texts)} reports, 1 core: {rate:,.0f} reports/s "
        f"(target {TARGET_REPORTS_PER_S:,.0f}: {ratio:.1f}x); "
        f"cold, no sentence remembered: {cold:,.0f} reports/s"
    )
    if args.card_rows:
        from bench_card import TARGET_S, card_times  # this folder: a script's path comes first

        wall, cpu = card_times(args.card_rows)
        print(
            f"card: `medtune card` on {args.card_rows:,} catalog rows: {wall:.1f} s "
            f"({cpu:.1f} s CPU) (target under {TARGET_S:.0f} s: {wall / TARGET_S:.2f}x of it)"
        )


if __name__ == "__main__":
    main()
