"""`medtune card`: card.md (Hugging Face front matter), self-contained card.html, PNGs, CSVs."""

from __future__ import annotations

import datetime
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from medtune.curate.card import CardSummary, size_category, write_card
from medtune.curate.card_doc import (
    Figure,
    Heading,
    TableBlock,
    Text,
    render_html,
    render_markdown,
)
from medtune.curate.plots import Plot, heat_map
from medtune.curate.stats import dataset_stats
from medtune.curate.tables import Table
from medtune.dataset.catalog import read_catalog, write_catalog
from medtune.workspace import Workspace

NOW = datetime.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.UTC)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module", autouse=True)
def no_network() -> Iterator[None]:
    """Every card in this module is rendered with the network blocked."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the card tried to reach the network")

    with pytest.MonkeyPatch.context() as patch:
        for name in ("connect", "connect_ex"):
            patch.setattr(socket.socket, name, refuse)
        patch.setattr(socket, "create_connection", refuse)
        patch.setattr(socket, "getaddrinfo", refuse)
        yield


def _copy(source: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "ws"
    shutil.copytree(source, copy, symlinks=True)
    return copy


@pytest.fixture(scope="module")
def labelled_card(ingested_workspace: Path, tmp_path_factory: pytest.TempPathFactory):
    """A copy of the fixture with two label columns and a split column, its card written."""
    ws = _copy(ingested_workspace, tmp_path_factory.mktemp("card"))
    catalog = read_catalog(Workspace(ws).catalog_path)
    n = catalog.num_rows
    columns = {
        "label_nodule": pa.array([(1, 0, -1, None)[i % 4] for i in range(n)], pa.int8()),
        "label_fracture": pa.array([(1, None)[i % 2] for i in range(n)], pa.int8()),
        "split": [("train", "train", "val", "test")[i % 4] for i in range(n)],
    }
    metadata = {
        "labels": {"findings": ["nodule", "fracture"], "rules": ["findings.yaml"]},
        "splits": {"split": {"method": "random", "seed": 7}},
    }
    write_catalog(Workspace(ws).catalog_path, catalog, columns, metadata)
    return ws, write_card(ws, now=NOW)


@pytest.fixture(scope="module")
def labelled(labelled_card: tuple[Path, CardSummary]) -> Path:
    return labelled_card[0]


@pytest.fixture(scope="module")
def deid_off(ingested_workspace: Path, tmp_path_factory: pytest.TempPathFactory):
    """A copy with de-identification off in medtune.yaml, no labels, no splits, and a plot
    left from an earlier card; its card written."""
    ws = _copy(ingested_workspace, tmp_path_factory.mktemp("card-deid-off"))
    config = Workspace(ws).config_path
    data = yaml.safe_load(config.read_text())
    data["deid"]["enabled"] = False
    config.write_text(yaml.safe_dump(data))
    stale = Workspace(ws).dataset_dir / "card" / "prevalence.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(PNG_MAGIC)
    return ws, write_card(ws, now=NOW)


def _front_matter(text: str) -> dict[str, object]:
    assert text.startswith("---\n")
    header, _, _ = text[4:].partition("\n---\n")
    return yaml.safe_load(header)


def test_card_md_has_hugging_face_front_matter_and_every_section(labelled: Path) -> None:
    text = Workspace(labelled).card_md_path.read_text()
    meta = _front_matter(text)
    assert meta == {
        "pretty_name": "medtune dataset ws",
        "license": "other",
        "task_categories": ["image-classification"],
        "tags": ["medical", "radiology", "x-ray", "medtune"],
        "size_categories": ["n<1K"],
    }
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert headings == [
        "Summary",
        "Provenance",
        "Composition",
        "Labels",
        "Splits",
        "Near-duplicates",
        "Warnings",
        "Plots",
    ]
    assert "68 images of 43 studies from 24 patients at 5 sites" in text
    assert "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile" in text
    assert "2026-01-02 03:04 UTC" in text
    assert "| nodule | 17 | 17 | 17 | 17 | 25 | 25 |" in text  # the cycle 1, 0, -1, null
    assert "**Images per site and split**" in text and "method: random" in text


def test_card_md_plots_are_pngs_beside_it(labelled: Path) -> None:
    ws = Workspace(labelled)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", ws.card_md_path.read_text())
    assert links == [
        "card/counts.png",
        "card/age_pyramid.png",
        "card/prevalence.png",
        "card/samples.png",
    ]
    for link in links:
        assert (ws.dataset_dir / link).read_bytes().startswith(PNG_MAGIC)


def test_card_tables_are_exported_as_csv(labelled: Path) -> None:
    tables = Workspace(labelled).dataset_dir / "card" / "tables"
    sites = (tables / "sites.csv").read_text().splitlines()
    assert sites[0] == "site,images,studies,patients,manufacturers,anatomies"
    assert sum(int(line.split(",")[1]) for line in sites[1:]) == 68
    assert {"prevalence.csv", "split_split.csv", "duplicates.csv"} <= {
        p.name for p in tables.iterdir()
    }


def test_card_html_is_self_contained(labelled: Path) -> None:
    page = Workspace(labelled).card_html_path.read_text()
    images = re.findall(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]+"', page)
    assert len(images) == 4
    urls = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, flags=re.IGNORECASE)
    assert urls and all(url.startswith("data:image/png;base64,") for url in urls)
    for external in ("http://", "https://", "<script", "<link", "@import", "url("):
        assert external not in page.replace(images[0], "")
    assert "<style>" in page and page.rstrip().endswith("</html>")


def test_card_never_shows_report_text_or_source_paths(labelled: Path, synth_cohort) -> None:
    ws = Workspace(labelled)
    card = ws.card_md_path.read_text() + ws.card_html_path.read_text()
    texts = pq.read_table(ws.reports_path, columns=["text"]).column("text").to_pylist()
    sentences = {s.strip() for t in texts for s in t.split(".") if len(s.strip()) > 30}
    assert sentences and not any(s in card for s in sentences)
    assert str(synth_cohort) not in card


def test_summary_has_tables_and_lines_for_the_cli(labelled_card) -> None:
    ws, summary = labelled_card
    assert summary.card_md == Workspace(ws).card_md_path
    per_site = summary.tables["per site"]
    assert per_site[0] == ["site", "images", "studies", "patients"]
    assert sum(row[1] for row in per_site[1:]) == 68
    assert summary.tables["findings"][0][0] == "finding"
    assert any(line.startswith("warning: 5 of 5 sites") for line in summary.lines)
    assert summary.lines[-1].startswith("card: ")


def test_card_without_labels_or_splits_says_what_to_run(deid_off) -> None:
    ws, _ = deid_off
    text = Workspace(ws).card_md_path.read_text()
    assert "Labels were not made yet: run `medtune label`." in text
    assert "No splits yet: run `medtune split`." in text
    assert "card/prevalence.png" not in text
    assert not (Workspace(ws).dataset_dir / "card" / "prevalence.png").exists()  # stale, gone


def test_deid_off_is_loud(deid_off) -> None:
    ws, summary = deid_off
    text = Workspace(ws).card_md_path.read_text()
    page = Workspace(ws).card_html_path.read_text()
    assert text.count("DE-IDENTIFICATION OFF") >= 3  # summary, provenance, warnings
    assert '<p class="alert">DE-IDENTIFICATION OFF' in page
    assert "Annex E Basic Application Level" not in text
    assert any("DE-IDENTIFICATION OFF" in line for line in summary.lines)


def test_the_network_is_blocked_while_cards_render() -> None:
    # The module's cards were all written under this block (see no_network).
    with pytest.raises(AssertionError, match="network"):
        socket.create_connection(("127.0.0.1", 9))


def test_values_are_escaped_in_html_and_markdown() -> None:
    hostile = '<script>alert("x")</script> | a'
    table = Table("t", ["site", "n"], [[hostile, 1]], note=hostile)
    plot = Plot("p", hostile, PNG_MAGIC)
    blocks = [Heading(hostile), Text(hostile), Figure(plot)]
    page = render_html(hostile, [*blocks, TableBlock(table)])
    assert "<script" not in page and "&lt;script&gt;" in page
    markdown = render_markdown([TableBlock(table)], "card")
    assert "<script" not in markdown and "\\| a" in markdown


def test_size_categories_follow_hugging_face_buckets() -> None:
    assert [size_category(n) for n in (68, 1_000, 99_999, 100_000, 2_000_000)] == [
        "n<1K",
        "1K<n<10K",
        "10K<n<100K",
        "100K<n<1M",
        "1M<n<10M",
    ]


def test_plots_are_deterministic(labelled: Path) -> None:
    written = (Workspace(labelled).dataset_dir / "card" / "prevalence.png").read_bytes()
    again = heat_map(dataset_stats(labelled).tables["prevalence_site"])
    assert again == written
