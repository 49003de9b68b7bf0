"""PostHog's own HogQL parser (``hogql-parser`` from PyPI), usable outside PostHog's Django app, and a
small evaluator of the time-bucket expressions our queries use.

The compiled module imports ``posthog.hogql.errors`` when it loads, to raise its errors by name;
the posthog SDK has no such module, so we provide one with the exception classes it looks up.
"""

from __future__ import annotations

import json
import sys
import types
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo


def _provide_errors_module() -> None:
    if "posthog.hogql.errors" in sys.modules:
        return
    import posthog

    package = types.ModuleType("posthog.hogql")
    package.__path__ = []
    errors = types.ModuleType("posthog.hogql.errors")

    class BaseHogQLError(Exception):
        def __init__(
            self, message: str = "", *, start: int | None = None, end: int | None = None, **_: Any
        ) -> None:
            super().__init__(message)
            self.start, self.end = start, end

    errors.BaseHogQLError = BaseHogQLError  # type: ignore[attr-defined]
    for name in (
        "ExposedHogQLError",
        "InternalHogQLError",
        "SyntaxError",
        "NotImplementedError",
        "ParsingError",
    ):
        setattr(errors, name, type(name, (BaseHogQLError,), {}))
    package.errors = errors  # type: ignore[attr-defined]
    posthog.hogql = package  # type: ignore[attr-defined]
    sys.modules["posthog.hogql"] = package
    sys.modules["posthog.hogql.errors"] = errors


def parse_select(query: str) -> dict[str, Any]:
    """The AST of a HogQL SELECT, as PostHog's parser builds it; raises ValueError when it fails."""
    _provide_errors_module()
    import hogql_parser

    result: dict[str, Any] = json.loads(hogql_parser.parse_select_json(query))
    if result.get("error"):
        raise ValueError(f"{result.get('type')}: {result.get('message')}")
    return result


# -- evaluating the time buckets of a query, as ClickHouse would for one event ---------------------------


def selects(node: Any) -> list[dict[str, Any]]:
    """Every SelectQuery in the AST, outermost first."""
    found: list[dict[str, Any]] = []

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("node") == "SelectQuery":
                found.append(value)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(node)
    return found


def events_select(ast: dict[str, Any]) -> dict[str, Any]:
    """The SELECT that reads the events table."""
    for select in selects(ast):
        table = (select.get("select_from") or {}).get("table") or {}
        if table.get("node") == "Field" and table.get("chain") == ["events"]:
            return select
    raise ValueError("no SELECT reads from events")


def aliased(select: dict[str, Any], alias: str) -> dict[str, Any]:
    for item in select["select"]:
        if item.get("node") == "Alias" and item.get("alias") == alias:
            expr: dict[str, Any] = item["expr"]
            return expr
    raise ValueError(f"no column {alias!r}")


def evaluate_time(expr: dict[str, Any], when: datetime, project_tz: str) -> Any:
    """The value of a time expression for an event at ``when``, in a project whose time zone is
    ``project_tz``. PostHog reads ``timestamp`` as ``toTimeZone(events.timestamp, <project tz>)``;
    the functions below follow ClickHouse, where a DateTime carries its zone and ``toDate`` or
    ``toStartOf*`` work in that zone. Anything else raises, so a query using other functions fails
    the test instead of passing it by accident."""
    node = expr.get("node")
    if node == "Constant":
        return expr["value"]
    if node == "Field":
        if expr["chain"] == ["timestamp"]:
            return when.astimezone(ZoneInfo(project_tz))
        raise NotImplementedError(f"field {expr['chain']}")
    if node != "Call":
        raise NotImplementedError(str(node))
    args = [evaluate_time(arg, when, project_tz) for arg in expr["args"]]
    name = expr["name"]
    if name == "toTimeZone" and len(args) == 2 and isinstance(args[0], datetime):
        return args[0].astimezone(ZoneInfo(args[1]))
    if name == "toDate" and len(args) == 1 and isinstance(args[0], datetime):
        return args[0].date()
    if name == "toStartOfDay" and len(args) == 1 and isinstance(args[0], datetime):
        return args[0].replace(hour=0, minute=0, second=0, microsecond=0)
    if name == "toStartOfWeek" and len(args) in (1, 2):
        day = args[0].date() if isinstance(args[0], datetime) else args[0]
        mode = args[1] if len(args) == 2 else 0
        if mode not in (0, 1):
            raise NotImplementedError(f"toStartOfWeek mode {mode}")
        # mode 0: weeks start on Sunday; mode 1: on Monday
        return day - timedelta(days=(day.weekday() + (1 if mode == 0 else 0)) % 7)
    raise NotImplementedError(f"{name}({len(args)} arguments)")
