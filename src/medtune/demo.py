"""``medtune demo``: the embedded default, end to end on a laptop CPU.

Generate the synthetic multi-site cohort, then ingest and de-identify it into the workspace
dataset as a hospital's export would be (the leak check against the cohort's PHI manifest must
pass). Later stages (curate, pretrain, evaluate) are added here as they land, so ``make demo``
stays the one entry point.
"""

from __future__ import annotations

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
    summary.lines.append(f"workspace: {workspace.root}")
    return summary
