"""Typed blocks written out: markdown (figures linked relative to the file) or one self-contained HTML page
(figures embedded; a fold is a <details> the reader opens, the verdict is shown open)."""

from __future__ import annotations

import base64
import html as html_lib
import os
from pathlib import Path

from spikeguard.report.blocks import (
    Block,
    Code,
    Figure,
    Fold,
    Heading,
    Items,
    Paragraph,
    Table,
)

BAD_CELL = "not a bound"  # a table cell starting so is marked in HTML: the number cannot be claimed


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _markdown_table(block: Table) -> str:
    if not block.rows:
        return "(no rows)"
    lines = ["| " + " | ".join(_md_cell(h) for h in block.header) + " |", "|" + "---|" * len(block.header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
    return "\n".join(lines)


def _markdown_block(block: Block, base: Path) -> list[str]:
    """The block's lines, each block followed by an empty line."""
    if isinstance(block, Fold):
        return [f"## {block.title}", "", *(line for b in block.blocks for line in _markdown_block(b, base))]
    if isinstance(block, Heading):
        text = f"{'#' * block.level} {block.text}"
    elif isinstance(block, Paragraph):
        text = block.text
    elif isinstance(block, Items):
        text = "\n".join(f"- {item}" for item in block.items)
    elif isinstance(block, Code):
        text = f"```\n{block.text.rstrip()}\n```"
    elif isinstance(block, Figure):
        link = Path(os.path.relpath(block.path, base)).as_posix()
        text = f"![{block.caption}]({link})\n\n*{block.caption}*"
    elif isinstance(block, Table):
        text = _markdown_table(block)
    else:
        raise TypeError(f"not a report block: {block!r}")
    return [text, ""]


def render_markdown(blocks: list[Block], base: Path) -> str:
    """The document as markdown; figure links are relative to ``base`` (the file's directory)."""
    return "\n".join(line for block in blocks for line in _markdown_block(block, base))


STYLE = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d232a;background:#f6f7f9;margin:0}
main{max-width:62em;margin:0 auto;padding:1.5em 1.2em 4em}
h1{font-size:1.7em;margin:.2em 0}h2{font-size:1.25em;margin:0;display:inline}h3{font-size:1.05em;margin:1.2em 0 .4em}
section.verdict{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:.8em 1.2em;margin:1em 0}
section.verdict h2{display:block;margin-bottom:.4em}
details{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:.6em 1.2em;margin:.8em 0}
summary{cursor:pointer;padding:.2em 0}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em;font-variant-numeric:tabular-nums}
td,th{border-bottom:1px solid #e4e7eb;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#eef1f4;text-align:right}td:first-child,th:first-child{text-align:left}
td.bad{color:#a4161a;font-weight:600}
pre{background:#f1f3f5;padding:.6em;overflow-x:auto;font-size:.85em}
p,li{overflow-wrap:anywhere}
img{max-width:100%;height:auto}figure{margin:1em 0}figcaption{font-size:.85em;color:#555}
"""


def _html_cell(cell) -> str:
    text = str(cell)
    marked = ' class="bad"' if text.startswith(BAD_CELL) else ""
    return f"<td{marked}>{html_lib.escape(text)}</td>"


def _html_table(block: Table) -> str:
    head = "".join(f"<th>{html_lib.escape(str(h))}</th>" for h in block.header)
    rows = "".join("<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in block.rows)
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>'


def _html_fold(block: Fold) -> list[str]:
    title = html_lib.escape(block.title)
    opening, closing = ((f"<details><summary><h2>{title}</h2></summary>", "</details>") if block.folded
                        else (f'<section class="verdict"><h2>{title}</h2>', "</section>"))
    return [opening, *(part for b in block.blocks for part in _html_block(b)), closing]


def _html_block(block: Block) -> list[str]:
    esc = html_lib.escape
    if isinstance(block, Fold):
        return _html_fold(block)
    if isinstance(block, Heading):
        return [f"<h{block.level}>{esc(block.text)}</h{block.level}>"]
    if isinstance(block, Paragraph):
        return [f"<p>{esc(block.text)}</p>"]
    if isinstance(block, Items):
        return ["<ul>" + "".join(f"<li>{esc(i)}</li>" for i in block.items) + "</ul>"]
    if isinstance(block, Code):
        return [f"<pre>{esc(block.text)}</pre>"]
    if isinstance(block, Figure):
        data = base64.b64encode(Path(block.path).read_bytes()).decode("ascii")
        image = f'<img alt="{esc(block.caption)}" src="data:image/png;base64,{data}">'
        return [f"<figure>{image}<figcaption>{esc(block.caption)}</figcaption></figure>"]
    if isinstance(block, Table):
        return [_html_table(block)]
    raise TypeError(f"not a report block: {block!r}")


def render_html(blocks: list[Block], title: str = "spikeguard report") -> str:
    """The document as one self-contained page."""
    body = [part for block in blocks for part in _html_block(block)]
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html_lib.escape(title)}</title><style>{STYLE}</style></head><body><main>\n" + "\n".join(body)
            + "\n</main></body></html>\n")
