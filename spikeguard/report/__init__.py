"""`spikeguard report`: paper-style tables, flags, theory measurements, figures and configs from results
files, run directories and analysis directories, as markdown or self-contained HTML.

In three parts: collect.py finds the inputs, sections.py builds the document as typed blocks (blocks.py),
render.py writes it out; tables.py holds the table helpers and the paper table the study summary shares;
explain.py writes the mechanism's sentences from measured numbers (the report, the study summary, the demo);
the figures themselves are drawn by spikeguard.figures. Importing the package imports none of them (the
collector needs PyTorch, through the analysis format): each name loads its module on first use.
"""

from spikeguard.registry import lazy_exports

__getattr__, __dir__ = lazy_exports(globals(), {
    "write_report": "spikeguard.report.write",
    "Inputs": "spikeguard.report.collect",
    "build_document": "spikeguard.report.sections", "SECTIONS": "spikeguard.report.sections",
    "headline_mark": "spikeguard.report.sections",
    "render_markdown": "spikeguard.report.render", "render_html": "spikeguard.report.render",
    "attack_column": "spikeguard.report.tables", "table_column": "spikeguard.report.tables",
    "params_text": "spikeguard.report.tables",
})
