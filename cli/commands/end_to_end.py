"""``analytics doctor --end-to-end``: one marked event through the adapter and PostHog's query API
(:mod:`analytics.end_to_end`), configured from the environment:

- ``TELEMETRY_ENDPOINT`` and ``TELEMETRY_TOKEN``: where the event goes, as for the app;
- ``POSTHOG_PERSONAL_API_KEY``: a personal API key with the ``query:read`` scope;
- ``POSTHOG_PROJECT_ID``: the project (default: the key's current project);
- ``POSTHOG_HOST``: PostHog's app URL (default: from TELEMETRY_ENDPOINT);
- ``ANALYTICS_E2E_TIMEOUT``: seconds to wait for the event after capture took it (default 120).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated

import typer

from analytics import TelemetryConfig
from analytics.end_to_end import Hop, QueryApi, app_host, run_end_to_end

EndToEndOption = Annotated[
    bool,
    typer.Option(
        "--end-to-end",
        help="Also send one marked event and wait until PostHog's query API shows it "
        "(needs POSTHOG_PERSONAL_API_KEY with query:read).",
    ),
]

DEFAULT_TIMEOUT = 120.0


def end_to_end_hops(config: TelemetryConfig, environ: Mapping[str, str] | None = None) -> list[Hop]:
    """The end-to-end check's lines, prefixed ``end-to-end:``; one failing line when it cannot run."""
    env = os.environ if environ is None else environ
    key = env.get("POSTHOG_PERSONAL_API_KEY", "").strip()
    host = env.get("POSTHOG_HOST", "").strip() or (app_host(config.endpoint) if config.endpoint else "")
    problem = None
    if not key:
        problem = (
            "POSTHOG_PERSONAL_API_KEY is not set",
            "create a personal API key with the query:read scope (Settings > Personal API keys)",
        )
    elif not host:
        problem = ("no PostHog host", "set TELEMETRY_ENDPOINT (and POSTHOG_HOST if the app is elsewhere)")
    try:
        timeout = float(env.get("ANALYTICS_E2E_TIMEOUT", "").strip() or DEFAULT_TIMEOUT)
    except ValueError:
        problem = problem or ("ANALYTICS_E2E_TIMEOUT is not a number of seconds", "unset it or give e.g. 300")
        timeout = DEFAULT_TIMEOUT
    if problem:
        return [Hop("end-to-end", "fail", *problem)]
    project = env.get("POSTHOG_PROJECT_ID", "").strip() or "@current"
    report = run_end_to_end(config, QueryApi(host, project, key), ingestion_timeout=timeout)
    return [Hop(f"end-to-end: {hop.name}", hop.status, hop.detail, hop.fix) for hop in report.hops]
