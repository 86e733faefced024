"""A tiny document model for the dataset card, and its two renderings: Markdown and HTML.

card.py decides what the card says, as a list of blocks; this module decides how it looks, so
card.md and card.html can never disagree. The HTML is self-contained: inline CSS, plots as
``data:`` URIs, no scripts, no links, no fonts to fetch; every value goes through
:func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from typing import Any

from medtune.curate.plots import Plot
from medtune.curate.tables import Table


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Text:
    """A paragraph; `backticks` mark code. ``alert`` paragraphs are shown loud."""

    text: str
    alert: bool = False


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]
    alert: bool = False


@dataclass(frozen=True)
class TableBlock:
    table: Table


@dataclass(frozen=True)
class Figure:
    plot: Plot


@dataclass(frozen=True)
class Code:
    text: str


Block = Heading | Text | Bullets | TableBlock | Figure | Code


def cell(value: Any) -> str:
    """A value as the card shows it: thousands separated, floats without trailing zeros."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    return str(value)


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------------
# Markdown (GitHub / Hugging Face flavour).


def render_markdown(blocks: list[Block], image_dir: str) -> str:
    """The blocks as Markdown; figures are files ``<image_dir>/<name>.png``, relative."""
    parts = [_markdown_block(block, image_dir) for block in blocks]
    return "\n\n".join(parts) + "\n"


def _markdown_block(block: Block, image_dir: str) -> str:
    if isinstance(block, Heading):
        return "#" * block.level + " " + _md_text(block.text)
    if isinstance(block, Text):
        return f"**{_md_text(block.text)}**" if block.alert else _md_text(block.text)
    if isinstance(block, Bullets):
        mark = "**" if block.alert else ""
        return "\n".join(f"- {mark}{_md_text(item)}{mark}" for item in block.items)
    if isinstance(block, TableBlock):
        return _markdown_table(block.table)
    if isinstance(block, Figure):
        caption = _md_text(block.plot.caption)
        return f"![{caption}]({image_dir}/{block.plot.name}.png)\n\n*{caption}*"
    return "```yaml\n" + block.text.rstrip("\n").replace("```", "'''") + "\n```"


def _md_text(text: str) -> str:
    # Raw HTML in Markdown would render; values are text, so its markup characters are escaped.
    return html.escape(text, quote=False)


def _md_cell(value: Any) -> str:
    return _md_text(cell(value)).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _markdown_table(table: Table) -> str:
    lines = [f"**{_md_text(table.title)}**", ""]
    if table.rows:
        lines.append("| " + " | ".join(_md_cell(c) for c in table.columns) + " |")
        align = [
            "---:" if any(_numeric(r[i]) for r in table.rows) else "---"
            for i in range(len(table.columns))
        ]
        lines.append("| " + " | ".join(align) + " |")
        lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in table.rows]
    else:
        lines.append("*(none)*")
    if table.note:
        lines += ["", f"*{_md_text(table.note)}*"]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# HTML, one self-contained file.

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f;
       margin: 0; background: #fafafa; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5rem 2rem 4rem; background: #fff; }
h1 { font-size: 1.8rem; border-bottom: 2px solid #ddd; padding-bottom: .3rem; }
h2 { font-size: 1.35rem; margin-top: 2.2rem; border-bottom: 1px solid #e5e5e5; }
h3 { font-size: 1.1rem; margin-top: 1.6rem; }
.scroll { overflow-x: auto; margin: .4rem 0 1.2rem; }
table { border-collapse: collapse; font-size: 13px; }
caption { text-align: left; font-weight: 600; padding: .3rem 0; }
th, td { border: 1px solid #ddd; padding: .2rem .55rem; white-space: nowrap; }
th { background: #f2f2f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
p.note { color: #555; font-size: 13px; margin-top: -.8rem; }
.alert { background: #fdecea; border-left: 5px solid #c62828; padding: .5rem .8rem;
         color: #8e0000; font-weight: 600; }
ul.alert { padding-left: 2rem; }
pre { background: #f5f5f7; padding: .8rem; overflow-x: auto; font-size: 13px; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
figure { margin: 1rem 0 2rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 13px; }
"""


def render_html(title: str, blocks: list[Block]) -> str:
    """The blocks as one HTML page that needs nothing but itself."""
    body = "\n".join(_html_block(block) for block in blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def _inline(text: str) -> str:
    # Escape first, then turn `code` into <code>: the backticks survive escaping unchanged.
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _html_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{_inline(block.text)}</h{block.level}>"
    if isinstance(block, Text):
        return (
            f'<p class="alert">{_inline(block.text)}</p>'
            if block.alert
            else (f"<p>{_inline(block.text)}</p>")
        )
    if isinstance(block, Bullets):
        items = "".join(f"<li>{_inline(item)}</li>" for item in block.items)
        return f'<ul class="alert">{items}</ul>' if block.alert else f"<ul>{items}</ul>"
    if isinstance(block, TableBlock):
        return _html_table(block.table)
    if isinstance(block, Figure):
        data = base64.b64encode(block.plot.png).decode("ascii")
        caption = html.escape(block.plot.caption)
        return (
            f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    return f"<pre><code>{html.escape(block.text)}</code></pre>"


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    rows = []
    for row in table.rows:
        cells = "".join(
            f'<td class="num">{html.escape(cell(v))}</td>'
            if _numeric(v)
            else f"<td>{html.escape(cell(v))}</td>"
            for v in row
        )
        rows.append(f"<tr>{cells}</tr>")
    body = "".join(rows) or f'<tr><td colspan="{len(table.columns)}">(none)</td></tr>'
    note = f'\n<p class="note">{html.escape(table.note)}</p>' if table.note else ""
    return (
        f'<div class="scroll"><table><caption>{html.escape(table.title)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{note}"
    )
