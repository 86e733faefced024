"""``medtune demo``: the embedded default, end to end on a laptop CPU.

Generate the synthetic multi-site cohort, then ingest and de-identify it into the workspace
dataset as a hospital's export would be (the leak check against the cohort's PHI manifest must
pass), then curate it: labels from the reports (scored against the cohort's truth), a
patient-grouped split and an out-of-domain one, and the dataset card; then pretrain the tiny ViT
on chest images only and on every image under one budget, evaluate both and an untrained one,
fine-tune report generation and grounding from each, and write one evaluation report
(medtune.demo_train), so ``make demo`` stays the one entry point.
"""

from __future__ import annotations

from pathlib import Path

from medtune.config import DemoConfig, dump_yaml
from medtune.errors import MedtuneError
from medtune.synth.cohort import Progress, Summary, generate_cohort
from medtune.workspace import Workspace


def run_demo(config: DemoConfig, progress: Progress | None = None) -> Summary:
    """Run the demo recipe; return the summary tables to print."""
    from medtune.dataset.ingest import ingest_with_reports
    from medtune.dataset.leakcheck import check_workspace, identifiers_from_phi_manifest
    from medtune.deid.leak import describe
    from medtune.deid.pseudonyms import Pseudonymizer, load_or_create_key

    workspace = Workspace(config.workspace).create()
    cohort_dir = workspace.sources_dir / "synth"
    summary = generate_cohort(config.synth, cohort_dir, force=True, progress=progress)

    def files(done: int, total: int) -> None:
        if progress:
            progress("ingest", done, total)

    ingested = ingest_with_reports(
        cohort_dir / "dicom", workspace.root, config.ingest, config.key,
        [cohort_dir / "reports"], progress=files,
    )  # fmt: skip
    workspace.save_config(dump_yaml(config))
    cohort = identifiers_from_phi_manifest(cohort_dir / "truth" / "phi.parquet")
    hits = check_workspace(workspace, cohort, Pseudonymizer(load_or_create_key(config.key)))
    if hits:
        raise MedtuneError(f"leak check failed: {describe(hits)} in the workspace")
    summary.tables.update({f"ingest: {k}": v for k, v in ingested.tables.items()})
    summary.lines.extend(ingested.lines)
    summary.lines.append("leak check: no identifier of the cohort's PHI manifest in the dataset")
    curate(config, workspace, cohort_dir, summary, progress)
    if config.train.enabled:
        from medtune.demo_train import train

        train(config, workspace, cohort_dir, summary, progress)
    summary.lines.append(f"workspace: {workspace.root}")
    return summary


def curate(
    config: DemoConfig, workspace: Workspace, cohort_dir: Path, summary: Summary,
    progress: Progress | None,
) -> None:  # fmt: skip
    """Labels, splits and the card, as `medtune label`, `split` and `card` make them."""
    from medtune.curate.card import write_card
    from medtune.curate.labels import label_workspace
    from medtune.curate.splits import SplitSpec, make_split

    options = config.curate
    if progress:
        progress("curate", 0, 4)
    labelled = label_workspace(workspace.root)
    summary.tables["labels vs the cohort's truth"] = label_agreement(workspace, cohort_dir)
    specs = [SplitSpec(seed=options.seed, fractions=options.fractions)]
    if options.hold_out:
        specs.append(SplitSpec(method=options.hold_out, seed=options.seed,
                               fractions=options.fractions))  # fmt: skip
    for spec in specs:
        try:
            result = make_split(workspace.root, spec)
        except MedtuneError as err:  # a cohort too small for it (--set synth.patients=6)
            summary.lines.append(f"no {spec.method} split: {err}")
            continue
        first = next(iter(result.tables))
        how = "by patient" if spec.method == "patient" else f"{spec.method}s held out as ood"
        summary.tables[f"{first} ({how})"] = result.tables[first]
    card = write_card(workspace.root, sample_per_site=options.card_sample_per_site)
    summary.lines.extend(labelled.lines[:1])
    summary.lines.extend(line for line in card.lines if line.startswith(("warning", "card")))
    if progress:
        progress("curate", 4, 4)


def label_agreement(workspace: Workspace, cohort_dir: Path) -> list[list[object]]:
    """Per finding: how often the catalog's label equals what the synthetic report states.

    Joined image by image through ``input_id`` (the opaque id of each source file), since the
    catalog holds only pseudonyms."""
    import pyarrow.parquet as pq

    from medtune.curate.labels import LABEL_PREFIX
    from medtune.io.folder import input_id

    truth = pq.read_table(cohort_dir / "truth" / "images.parquet", columns=["file", "study_key"])
    study_of = {input_id(f.removeprefix("dicom/")): s for f, s in
                zip(*truth.to_pydict().values(), strict=True)}  # fmt: skip
    stated: dict[tuple[str, str], str] = {}
    for row in pq.read_table(cohort_dir / "truth" / "reports.parquet").to_pylist():
        stated[row["study_key"], row["finding"]] = row["status"]
    value = {"positive": 1, "negative": 0, "uncertain": -1}
    counts: dict[str, list[int]] = {}
    for row in pq.read_table(workspace.catalog_path).to_pylist():
        study = study_of.get(row["input_id"])
        for (key, finding), status in stated.items():
            if key == study and status in value and LABEL_PREFIX + finding in row:
                pair = counts.setdefault(finding, [0, 0])
                pair[0] += 1
                pair[1] += row[LABEL_PREFIX + finding] == value[status]
    rows: list[list[object]] = [["finding", "images", "agree %"]]
    rows += [[f, n, f"{100 * a / n:.1f}"] for f, (n, a) in sorted(counts.items())]
    return rows
