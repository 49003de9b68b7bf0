"""All CLI output goes through here: human tables by default, JSON with ``--json``, errors as one
line on stderr. Exit codes: 0 ok, 1 error, 2 usage."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A failure to report as one line on stderr with exit code 1."""


def console() -> Console:
    return Console(soft_wrap=True)


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def emit_table(
    title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, header: bool = True
) -> None:
    table = Table(title=title, show_header=header, header_style="bold")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_cell(value) for value in row))
    console().print(table)


def emit_fields(title: str, fields: Iterable[tuple[str, Any]]) -> None:
    emit_table(title, ["", ""], fields, header=False)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    sys.stderr.write(f"analytics: error: {message}\n")
    raise typer.Exit(code)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
