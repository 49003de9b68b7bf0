"""``analytics report``: the dashboard metrics from the local archive."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from analytics.report import render_html
from analytics.report import report as compute_report

from ..options import JsonOption, StateDirOption, state_of
from ..output import emit_json, emit_table, fail


def report(
    html: Annotated[
        Path | None,
        typer.Option("--html", help="Also write the report as an HTML page with charts.", show_default=False),
    ] = None,
    json_output: JsonOption = False,
    state_dir: StateDirOption = None,
) -> None:
    """Compute the dashboard metrics (sessions, proposals, review time, latency, failures, errors,
    crash-free sessions, active installs) from the local archive, as the PostHog insights do: UTC
    days and Monday weeks, the same row limits, the same charted series."""
    results = compute_report(state_of(state_dir))
    if html is not None:
        try:
            html.write_text(render_html(results), encoding="utf-8")
        except OSError as exc:
            fail(f"cannot write {html}: {exc.strerror or exc}")
    if json_output:
        emit_json({result.key: result.as_dicts() for result in results})
        return
    for result in results:
        emit_table(
            result.title,
            list(result.columns),
            result.rows or [("no data",) + ("",) * (len(result.columns) - 1)],
        )
    if html is not None:
        typer.echo(f"wrote {html}")
