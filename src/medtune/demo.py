"""``medtune demo``: the embedded default, end to end on a laptop CPU.

First form: generate the synthetic multi-site cohort into the workspace and summarise it. Later
stages (ingest, curate, pretrain, evaluate) are added here as they land, so ``make demo`` stays
the one entry point.
"""

from __future__ import annotations

from medtune.config import DemoConfig, dump_yaml
from medtune.synth.cohort import Progress, Summary, generate_cohort
from medtune.workspace import Workspace


def run_demo(config: DemoConfig, progress: Progress | None = None) -> Summary:
    """Run the demo recipe; return the summary tables to print."""
    workspace = Workspace(config.workspace).create()
    workspace.save_config(dump_yaml(config))
    cohort_dir = workspace.sources_dir / "synth"
    summary = generate_cohort(config.synth, cohort_dir, force=True, progress=progress)
    summary.lines.append(f"workspace: {workspace.root}")
    return summary
