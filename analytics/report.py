"""``analytics report``: the dashboard metrics computed from the local archive, as data or as a
self-contained HTML page (inline SVG bars, no scripts, no network) for people who would rather look."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from analytics.metrics import Message, MetricResult, compute_all
from analytics.sinks.archive import read_archive
from analytics.state import StateFolder


def archive_messages(state: StateFolder) -> list[Message]:
    """The archived messages, each uuid once."""
    return list(read_archive(state.archive_dir))


def report(state: StateFolder) -> list[MetricResult]:
    return compute_all(archive_messages(state))


def render_html(results: Sequence[MetricResult], *, title: str = "analytics report") -> str:
    sections = "\n".join(_section(result) for result in results)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; color: #1d1f27; }}
h1 {{ font-size: 1.4rem; }} h2 {{ font-size: 1.1rem; margin-top: 2rem; }}
table {{ border-collapse: collapse; }}
td, th {{ padding: .25rem .75rem; border-bottom: 1px solid #ddd; text-align: left; }}
.bar {{ fill: #1d4aff; }} .label {{ font-size: 12px; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
{sections}
</body></html>
"""


def _section(result: MetricResult) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in result.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>" for row in result.rows
    )
    chart = _bars(result) if len(result.rows) > 1 else ""
    empty = "" if result.rows else "<p>No data in the archive yet.</p>"
    return f"<h2>{html.escape(result.title)}</h2>{chart}<table><tr>{head}</tr>{rows}</table>{empty}"


def _bars(result: MetricResult) -> str:
    """Horizontal bars of the first numeric column, labelled by the first column."""
    numeric = next(
        (i for i in range(1, len(result.columns)) if all(isinstance(r[i], int | float) for r in result.rows)),
        None,
    )
    if numeric is None:
        return ""
    values = [float(row[numeric]) for row in result.rows]
    top = max(values) or 1.0
    height = 22 * len(values)
    bars = "".join(
        _bar(i, _cell(row[0]), value, 400 * value / top)
        for i, (row, value) in enumerate(zip(result.rows, values, strict=True))
    )
    label = html.escape(result.columns[numeric])
    return f'<svg role="img" aria-label="{label}" width="640" height="{height}">{bars}</svg>'


def _bar(index: int, label: str, value: float, width: float) -> str:
    y = 22 * index
    return (
        f'<text class="label" x="0" y="{y + 15}">{html.escape(label)}</text>'
        f'<rect class="bar" x="160" y="{y + 4}" width="{max(1.0, width):.1f}" height="14"/>'
        f'<text class="label" x="{165 + width:.1f}" y="{y + 15}">{html.escape(_cell(value))}</text>'
    )


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    return str(value)
