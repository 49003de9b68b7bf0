"""The `analytics` CLI: every command with CliRunner on real folders, and end to end as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from analytics import events
from analytics_cli.main import app
from tests.conftest import PROJECT_ROOT, MakeTelemetry, wait_until

runner = CliRunner()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TELEMETRY_", "SENTRY_")) and k != "DO_NOT_TRACK"
    }
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "analytics_cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_ROOT,
        timeout=60,
        check=False,
    )


def test_status_on_a_folder_that_does_not_exist_creates_nothing(tmp_path: Path) -> None:
    result = runner.invoke(app, ["status", "--json", "--state-dir", str(tmp_path / "none")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["queue_depth"] == 0
    assert report["state_dir_exists"] is False
    assert not (tmp_path / "none").exists()


def test_status_reports_queue_and_drops(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    telemetry = make_telemetry(max_queue_events=3)
    for n in range(5):
        telemetry.emit(events.ToolCall(tool_name=f"t{n}", duration_ms=1, success=True))
    telemetry.emit("NoSuchEvent", {})

    # The app is still running, as when a developer inspects a user's machine. The bound is kept
    # by the app's background step (emit() only journals), within moments: status says so then.
    def status() -> dict[str, Any]:
        result = runner.invoke(app, ["status", "--json", "--state-dir", str(state_dir)])
        assert result.exit_code == 0, result.output
        return dict(json.loads(result.stdout))

    assert wait_until(lambda: status()["queue_depth"] <= 3)
    report = status()
    assert report["enabled"] is True
    assert report["queue_depth"] == 3
    assert report["queue_bytes"] > 0
    assert report["oldest_event_age_seconds"] >= 0
    assert report["drops"]["queue_full"] == 2
    assert report["drops"]["unknown_event"] == 1
    assert report["destination"] == "archive"

    human = runner.invoke(app, ["status", "--state-dir", str(state_dir)])
    assert human.exit_code == 0
    assert "queued events" in human.stdout
    assert "queue_full" in human.stdout


def test_status_says_why_telemetry_is_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    result = runner.invoke(app, ["status", "--json", "--state-dir", str(tmp_path)])
    report = json.loads(result.stdout)
    assert report["enabled"] is False
    assert report["disabled_reason"] == "DO_NOT_TRACK=1"


def test_events_lists_the_whole_catalog() -> None:
    result = runner.invoke(app, ["events", "--json"])
    assert result.exit_code == 0
    listed = json.loads(result.stdout)["events"]
    assert [e["event"] for e in listed] == list(events.CATALOG)
    chat = next(e for e in listed if e["event"] == "ChatTurn")
    assert chat["posthog_event"] == "$ai_generation"
    assert {f["name"] for f in chat["fields"]} >= {"prompt_length", "model", "latency_ms", "turn_id"}

    table = runner.invoke(app, ["events"], env={"COLUMNS": "200"})
    assert table.exit_code == 0
    for name, model in events.CATALOG.items():
        assert name in table.stdout
        assert model.posthog_event in table.stdout


def test_events_json_schema_validates_real_events() -> None:
    result = runner.invoke(app, ["events", "--json-schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert set(schema["$defs"]) >= set(events.CATALOG)
    tool = schema["$defs"]["ToolCall"]
    assert tool["x-posthog-event"] == "$ai_span"
    assert set(tool["required"]) == {"tool_name", "duration_ms", "success"}
    assert tool["additionalProperties"] is False


def test_demo_then_status_agree(tmp_path: Path) -> None:
    state = tmp_path / "demo-state"
    demo = cli("demo", "--json", "--state-dir", str(state))
    assert demo.returncode == 0, demo.stderr
    summary = json.loads(demo.stdout)
    status = cli("status", "--json", "--state-dir", str(state))
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert summary["emitted"] == summary["delivered"] == summary["archived_events"] == 28
    assert report["queue_depth"] == summary["queued_now"] == 0
    assert report["archived_events"] == summary["archived_events"]
    assert report["last_delivery"]["events"] > 0
    assert summary["sample"][-1]["event"] == "session_ended"
    assert "token=<secret>" in json.dumps(summary["sample"])


def test_usage_errors_are_one_line_with_exit_code_2() -> None:
    result = cli("status", "--no-such-option")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "--no-such-option" in result.stderr
    assert "Traceback" not in result.stderr
    unknown = cli("frobnicate")
    assert unknown.returncode == 2
    assert unknown.stderr.count("\n") == 1


def test_a_group_without_a_command_prints_its_help_only() -> None:
    result = cli("queue")
    assert result.returncode == 2
    assert "peek" in result.stdout
    assert result.stderr == ""


def test_a_bad_environment_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    env_result = subprocess.run(
        [sys.executable, "-m", "analytics_cli.main", "status", "--json", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "TELEMETRY_ENVIRONMENT": "bad value"},
        cwd=PROJECT_ROOT,
        timeout=60,
        check=False,
    )
    assert env_result.returncode == 0
    assert "TELEMETRY_ENVIRONMENT" in env_result.stderr
    json.loads(env_result.stdout)


def test_version() -> None:
    from analytics import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.stdout


def all_commands() -> list[tuple[tuple[str, ...], Any]]:
    """Every command, groups included (queue peek, dead-letters list, ...), with its path."""
    import typer

    found: list[tuple[tuple[str, ...], Any]] = []

    def walk(path: tuple[str, ...], command: Any) -> None:
        children = getattr(command, "commands", None)
        if children:
            for name, child in children.items():
                walk((*path, name), child)
        found.append((path, command))

    walk((), typer.main.get_command(app))
    return [(path, command) for path, command in found if path]


def test_the_documented_commands_exist() -> None:
    paths = {" ".join(path) for path, _ in all_commands()}
    assert paths >= {
        "status", "events", "demo", "replay", "doctor",
        "queue peek", "queue export", "queue purge",
        "dead-letters list", "dead-letters requeue", "dead-letters purge",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("path", "command"), all_commands(), ids=lambda v: " ".join(v) if isinstance(v, tuple) else ""
)
def test_every_command_and_option_has_help(path: tuple[str, ...], command: Any) -> None:
    assert command.help, f"{path} has no help"
    for param in command.params:
        if param.param_type_name in {"option", "argument"} and param.name != "help":
            assert getattr(param, "help", None), f"{' '.join(path)} {param.name} has no help"
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0


def test_every_command_that_reports_data_has_json() -> None:
    for path, command in all_commands():
        if getattr(command, "commands", None):
            continue
        names = {param.name for param in command.params}
        assert "json_output" in names, path
        # The catalog and the dashboards read no state folder; everything else does.
        reads_no_state = {("events",), ("dashboards", "export"), ("dashboards", "apply")}
        assert "state_dir" in names or path in reads_no_state, path
