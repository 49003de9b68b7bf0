"""PostHog's own HogQL parser (``hogql-parser`` from PyPI), usable outside PostHog's Django app.

The compiled module imports ``posthog.hogql.errors`` when it loads, to raise its errors by name;
the posthog SDK has no such module, so we provide one with the exception classes it looks up.
"""

from __future__ import annotations

import json
import sys
import types
from typing import Any


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
