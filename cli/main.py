"""The ``analytics`` command line (Typer). Errors are one line on stderr, never a traceback."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from analytics import __version__

from .commands.dashboards import dashboards_app
from .commands.dead_letters import dead_letters_app
from .commands.demo import demo
from .commands.doctor import doctor
from .commands.events import events
from .commands.queue import queue_app
from .commands.replay import replay
from .commands.report import report
from .commands.status import status
from .output import EXIT_ERROR, EXIT_USAGE

app = typer.Typer(
    name="analytics",
    help="Inspect, export and replay the offline telemetry queue.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(status)
app.add_typer(queue_app, name="queue")
app.command()(replay)
app.add_typer(dead_letters_app, name="dead-letters")
app.command()(doctor)
app.command()(events)
app.command()(demo)
app.command()(report)
app.add_typer(dashboards_app, name="dashboards")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"analytics {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Inspect, export and replay the offline telemetry queue."""


def main(argv: list[str] | None = None) -> int:
    """Console entry point: runs the app, turning every failure into one line and an exit code."""
    logging.basicConfig(level=logging.WARNING, format="analytics: %(message)s", stream=sys.stderr)
    try:
        result = app(args=argv, prog_name="analytics", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code)
    except typer.Abort:
        sys.stderr.write("analytics: aborted\n")
        return EXIT_ERROR
    except Exception as exc:
        # Typer's (vendored click) usage errors carry an exit code of 2 and a format_message();
        # anything else is a failure of ours: one line either way, never a traceback.
        code = getattr(exc, "exit_code", None)
        format_message = getattr(exc, "format_message", None)
        if isinstance(code, int) and callable(format_message):
            message = format_message()
            if message:  # a group called with no command already printed its help: nothing to add
                kind = "usage error" if code == EXIT_USAGE else "error"
                hint = " (see --help)" if code == EXIT_USAGE else ""
                sys.stderr.write(f"analytics: {kind}: {message}{hint}\n")
            return code
        sys.stderr.write(f"analytics: error: {type(exc).__name__}: {exc}\n")
        return EXIT_ERROR
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
