"""``analytics report``: the dashboard metrics computed from the local archive, as data or as a
self-contained HTML page (inline SVG bars, no scripts, no network) for people who would rather look."""

from __future__ import annotations

import html
from collections.abc import Sequence

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
    metric = result.metric
    head = "".join(f"<th>{html.escape(metric.column(c).label)}</th>" for c in result.columns)
    rows = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(metric.column(c).fmt.render(v))}</td>"
            for c, v in zip(result.columns, row, strict=True)
        )
        + "</tr>"
        for row in result.rows
    )
    # The same series PostHog's insight plots: x and y named by the metric, tables stay tables.
    charted = metric.display != "ActionsTable" and result.rows
    chart = "".join(_bars(result, column) for column in metric.y) if charted else ""
    empty = "" if result.rows else "<p>No data in the archive yet.</p>"
    return f"<h2>{html.escape(result.title)}</h2>{chart}<table><tr>{head}</tr>{rows}</table>{empty}"


def _bars(result: MetricResult, column: str) -> str:
    """Horizontal bars of one y series, labelled by the x column."""
    metric = result.metric
    x, y = result.columns.index(metric.x), result.columns.index(column)
    values = [
        row[y] if isinstance(row[y], int | float) and not isinstance(row[y], bool) else None
        for row in result.rows
    ]
    top = max((v for v in values if v is not None), default=0.0) or 1.0
    fmt = metric.column(column).fmt
    bars = "".join(
        _bar(i, metric.column(metric.x).fmt.render(row[x]), fmt.render(value), 400 * float(value or 0) / top)
        for i, (row, value) in enumerate(zip(result.rows, values, strict=True))
    )
    label = html.escape(metric.column(column).label)
    height = 22 * len(values) + 20
    return (
        f'<svg role="img" aria-label="{label}" data-column="{html.escape(column)}" '
        f'width="640" height="{height}">'
        f'<text class="label" x="0" y="14">{label}</text><g transform="translate(0,20)">{bars}</g></svg>'
    )


def _bar(index: int, label: str, value: str, width: float) -> str:
    y = 22 * index
    return (
        f'<text class="label" x="0" y="{y + 15}">{html.escape(label)}</text>'
        f'<rect class="bar" x="160" y="{y + 4}" width="{max(1.0, width):.1f}" height="14"/>'
        f'<text class="label" x="{165 + width:.1f}" y="{y + 15}">{html.escape(value)}</text>'
    )
