"""Options every command shares, and the config they build."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from analytics import TelemetryConfig
from analytics.state import StateFolder

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
StateDirOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Telemetry state folder (default: TELEMETRY_DIR, else the platform's data folder).",
        show_default=False,
    ),
]


YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def load_config(state_dir: Path | None, **overrides: Any) -> TelemetryConfig:
    """The same configuration the app would build, with ``--state-dir`` and other options winning."""
    given: dict[str, Any] = {key: value for key, value in overrides.items() if value is not None}
    if state_dir is not None:
        given["state_dir"] = state_dir
    return TelemetryConfig.from_env(**given)


def state_of(state_dir: Path | None) -> StateFolder:
    return StateFolder(load_config(state_dir).resolved_state_dir)
