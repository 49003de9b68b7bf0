"""Options every command shares, and the config they build."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from analytics import TelemetryConfig

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
StateDirOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Telemetry state folder (default: TELEMETRY_DIR, else the platform's data folder).",
        show_default=False,
    ),
]


def load_config(state_dir: Path | None) -> TelemetryConfig:
    """The same configuration the app would build, with ``--state-dir`` winning over the env."""
    if state_dir is None:
        return TelemetryConfig.from_env()
    return TelemetryConfig.from_env(state_dir=state_dir)
