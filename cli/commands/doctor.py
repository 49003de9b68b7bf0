"""``analytics doctor``: is everything set up right on this machine? Each check says ok / warn /
fail / info and, when something is wrong, the one thing to do about it. Secrets are masked."""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from dataclasses import asdict, dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from urllib.parse import urlsplit

import typer

from analytics import ConfigError, TelemetryConfig
from analytics.config import ENV_VARS, mask_secret
from analytics.delivery.lease import UploadLease
from analytics.state import StateFolder
from analytics.status import build_status

from ..options import JsonOption, StateDirOption, load_config
from ..output import EXIT_ERROR, emit_json, emit_table
from .end_to_end import EndToEndOption, end_to_end_hops

MAX_CLOCK_SKEW_SECONDS = 60.0


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok, warn, fail, info
    detail: str
    fix: str = ""


def doctor(
    json_output: JsonOption = False, state_dir: StateDirOption = None, end_to_end: EndToEndOption = False
) -> None:
    """Check the config, the state folder, PostHog (reachable? key accepted?), Sentry and the clock."""
    checks = run_checks(state_dir)
    if end_to_end:
        checks.extend(Check(**asdict(hop)) for hop in end_to_end_hops(load_config(state_dir)))
    if json_output:
        emit_json([asdict(check) for check in checks])
    else:
        emit_table(
            "analytics doctor",
            ["check", "status", "detail", "fix"],
            [(c.name, c.status.upper() if c.status == "fail" else c.status, c.detail, c.fix) for c in checks],
        )
    if any(check.status == "fail" for check in checks):
        raise typer.Exit(EXIT_ERROR)


def run_checks(state_dir: Path | None) -> list[Check]:
    checks = list(_configuration())
    config = load_config(state_dir)
    checks.append(
        Check("telemetry", "info", "enabled" if config.is_enabled else f"disabled ({config.disabled_reason})")
    )
    state = StateFolder(config.resolved_state_dir)
    checks.extend(_state_folder(state))
    checks.extend(_delivery_state(config))
    checks.extend(_posthog(config))
    checks.extend(_sentry(config))
    holder = UploadLease(state.lease_path).holder() if state.exists() else None
    checks.append(Check("upload lease", "info", f"held by {holder}" if holder else "free"))
    return checks


def _configuration() -> list[Check]:
    try:
        TelemetryConfig.from_env(strict=True)
    except ConfigError as exc:
        return [
            Check(
                "configuration", "fail", str(problem), f"set {problem.source} to a valid value, or unset it"
            )
            for problem in exc.problems
        ]
    names = ", ".join(name for name in ENV_VARS if os.environ.get(name)) or "none (all defaults)"
    return [Check("configuration", "ok", f"variables set: {names}")]


def _state_folder(state: StateFolder) -> list[Check]:
    root = state.root
    if not root.exists():
        return [Check("state folder", "info", f"{root} (not created yet: created on first use)")]
    if not root.is_dir():
        return [Check("state folder", "fail", f"{root} is not a folder", "remove it or set TELEMETRY_DIR")]
    checks = []
    mode = stat.S_IMODE(root.stat().st_mode)
    if mode & 0o077:
        checks.append(
            Check("state folder", "fail", f"{root} is {oct(mode)}: others can read it", f"chmod 700 {root}")
        )
    elif not os.access(root, os.W_OK):
        checks.append(
            Check("state folder", "fail", f"{root} is not writable", f"give this user write access to {root}")
        )
    else:
        checks.append(Check("state folder", "ok", f"{root} ({oct(mode)})"))
    loose = [p for p in root.rglob("*") if p.is_file() and stat.S_IMODE(p.stat().st_mode) & 0o077]
    if loose:
        checks.append(
            Check(
                "state files",
                "fail",
                f"{len(loose)} files readable by others, e.g. {loose[0].name}",
                f"chmod -R go-rwx {root}",
            )
        )
    return checks


def _delivery_state(config: TelemetryConfig) -> list[Check]:
    report = build_status(config, disabled_reason=config.disabled_reason, check_integrity=True)
    checks = []
    if report.problem:
        checks.append(
            Check("queue", "fail", report.problem, "export what can be read with `analytics queue export`")
        )
    else:
        age = report.oldest_event_age_seconds
        oldest = "" if age is None else f", oldest {age:,.0f} s old"
        checks.append(Check("queue", "ok", f"{report.queue_depth:,} events waiting{oldest}"))
    if report.paused:
        reason = report.paused.get("reason") or f"HTTP {report.paused.get('status')}"
        checks.append(
            Check("delivery", "fail", f"paused: {reason}", "fix the token, then `analytics replay`")
        )
    elif report.last_error:
        detail = report.last_error.get("detail") or f"HTTP {report.last_error.get('status')}"
        checks.append(
            Check("delivery", "warn", f"last attempt failed: {detail}", "events are kept and retried")
        )
    if report.dead_letters:
        checks.append(
            Check(
                "dead letters",
                "warn",
                f"{report.dead_letters} events refused by PostHog",
                "`analytics dead-letters list`",
            )
        )
    return checks


def _posthog(config: TelemetryConfig) -> list[Check]:
    if not config.endpoint:
        return [Check("posthog", "info", "no TELEMETRY_ENDPOINT: events go to the local archive")]
    if config.token is None:
        return [
            Check(
                "posthog", "fail", "TELEMETRY_TOKEN is not set", "set TELEMETRY_TOKEN to the project API key"
            )
        ]
    import requests

    token = config.token.get_secret_value()
    # An empty batch: PostHog checks the key and stores nothing, so the check leaves no event behind.
    body = {"api_key": token, "batch": [], "sent_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        response = requests.post(
            f"{config.endpoint}/batch/",
            data=json.dumps(body),
            timeout=5,
            headers={"Content-Type": "application/json"},
        )
    except requests.RequestException as exc:
        return [
            Check(
                "posthog",
                "fail",
                f"cannot reach {config.endpoint}: {type(exc).__name__}",
                "check TELEMETRY_ENDPOINT and the network",
            )
        ]
    checks = []
    masked = mask_secret(token)
    if response.status_code in (401, 403):
        checks.append(
            Check(
                "posthog token",
                "fail",
                f"the project API key {masked} was refused (HTTP {response.status_code})",
                "copy the Project API key from PostHog: Settings > Project > Project API key",
            )
        )
    else:
        checks.append(Check("posthog", "ok", f"{config.endpoint} reachable, key {masked} not refused"))
    checks.extend(_clock_skew(response.headers.get("Date")))
    return checks


def _clock_skew(date_header: str | None) -> list[Check]:
    if not date_header:
        return []
    try:
        server_time = parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError):
        return []
    skew = time.time() - server_time
    if abs(skew) > MAX_CLOCK_SKEW_SECONDS:
        return [
            Check(
                "clock",
                "warn",
                f"this machine's clock is {skew:+,.0f} s off the server's",
                "enable network time; PostHog corrects event times with sent_at, sessions may still look odd",
            )
        ]
    return [Check("clock", "ok", f"{skew:+.0f} s from the server's clock")]


def _sentry(config: TelemetryConfig) -> list[Check]:
    if config.sentry_dsn is None:
        return [Check("sentry", "info", "no SENTRY_DSN: errors go to PostHog only")]
    parts = urlsplit(config.sentry_dsn.get_secret_value())
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    shown = f"{parts.scheme}://****@{host}{':' + str(parts.port) if parts.port else ''}{parts.path}"
    try:
        with socket.create_connection((host, port), timeout=3):
            pass
    except OSError as exc:
        return [
            Check(
                "sentry",
                "fail",
                f"cannot reach {shown}: {exc.strerror or exc}",
                "check SENTRY_DSN and the network",
            )
        ]
    return [Check("sentry", "ok", f"{shown} reachable")]
