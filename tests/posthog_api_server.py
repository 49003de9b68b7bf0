"""PostHog's dashboards and insights REST endpoints on loopback, as strict as the real ones where
our client touches them: bearer auth, the project in the path, the payload's shape, and paginated
lists (``limit``/``offset`` with a ``next`` URL). The query endpoint (``/query/``) is in
``_QueryEndpoint`` below: it answers HogQL over the events a ``CaptureServer`` accepted."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.hogql import parse_select

DASHBOARD_FIELDS = {"name", "description", "pinned", "tags"}
INSIGHT_FIELDS = {"name", "description", "query", "saved", "dashboards", "tags"}


@dataclass
class _State:
    key: str
    project_id: int
    page_size: int
    dashboards: dict[int, dict[str, Any]] = field(default_factory=dict)
    insights: dict[int, dict[str, Any]] = field(default_factory=dict)
    mutations: list[tuple[str, str]] = field(default_factory=list)
    next_id: int = 100
    lock: threading.Lock = field(default_factory=threading.Lock)


class PostHogApiServer:
    def __init__(
        self,
        *,
        key: str,
        project_id: int,
        page_size: int = 4,
        events: Callable[[], list[dict[str, Any]]] | None = None,
        ingestion_delay: float | None = 0.0,
    ) -> None:
        self.state = _State(key, project_id, page_size)
        state = self.state
        self.query = _QueryEndpoint(project_id, events or list, ingestion_delay)
        query = self.query

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

            def do_PATCH(self) -> None:
                self._route("PATCH")

            def _route(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if self.headers.get("Authorization") != f"Bearer {state.key}":
                    return self._send(
                        401, {"type": "authentication_error", "detail": "Invalid personal API key."}
                    )
                parts = urlsplit(self.path)
                if query.handles(parts.path):
                    return self._send(*query.answer(method, parts.path, raw))
                match = re.fullmatch(r"/api/projects/(\d+)/(dashboards|insights)/(?:(\d+)/)?", parts.path)
                if match is None:
                    return self._send(404, {"detail": "Not found."})
                if int(match[1]) != state.project_id:
                    return self._send(404, {"detail": "Project not found."})
                kind, object_id = match[2], match[3]
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    return self._send(400, {"detail": "JSON parse error"})
                with state.lock:
                    status, answer = self._handle(method, kind, object_id, body, parse_qs(parts.query))
                self._send(status, answer)

            def _handle(
                self, method: str, kind: str, object_id: str | None, body: Any, query: dict[str, list[str]]
            ) -> tuple[int, Any]:
                table = state.dashboards if kind == "dashboards" else state.insights
                if method == "GET" and object_id is None:
                    limit = int(query.get("limit", ["100"])[0])
                    offset = int(query.get("offset", ["0"])[0])
                    page_size = min(limit, state.page_size)
                    rows = [table[k] for k in sorted(table)]
                    page = rows[offset : offset + page_size]
                    more = offset + page_size < len(rows)
                    base = f"http://{self.headers['Host']}/api/projects/{state.project_id}/{kind}/"
                    following = f"{base}?limit={limit}&offset={offset + page_size}" if more else None
                    return 200, {"count": len(rows), "next": following, "previous": None, "results": page}
                problem = _invalid(kind, body, state, creating=method == "POST")
                if problem:
                    return 400, {"type": "validation_error", "detail": problem}
                if method == "POST" and object_id is None:
                    state.next_id += 1
                    created = {"id": state.next_id, "description": "", **body}
                    if kind == "insights":
                        created["dashboards"] = list(body.get("dashboards", []))
                    table[state.next_id] = created
                    state.mutations.append((method, kind))
                    return 201, created
                if method == "PATCH" and object_id is not None and int(object_id) in table:
                    table[int(object_id)].update(body)
                    state.mutations.append((method, kind))
                    return 200, table[int(object_id)]
                return 404, {"detail": "Not found."}

            def _send(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> PostHogApiServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _invalid(kind: str, body: Any, state: _State, *, creating: bool) -> str | None:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    allowed = DASHBOARD_FIELDS if kind == "dashboards" else INSIGHT_FIELDS
    unknown = set(body) - allowed
    if unknown:
        return f"unknown fields: {sorted(unknown)}"
    if creating and not isinstance(body.get("name"), str):
        return "name is required"
    if "name" in body and (not isinstance(body["name"], str) or not body["name"].strip()):
        return "name must be a non-empty string"
    if kind == "insights":
        query = body.get("query")
        if creating or query is not None:
            if not isinstance(query, dict) or query.get("kind") != "DataVisualizationNode":
                return "query must be a DataVisualizationNode"
            source = query.get("source")
            if (
                not isinstance(source, dict)
                or source.get("kind") != "HogQLQuery"
                or not isinstance(source.get("query"), str)
            ):
                return "query.source must be a HogQLQuery with a query string"
        for dashboard in body.get("dashboards", []):
            if dashboard not in state.dashboards:
                return f"dashboard {dashboard} does not exist"
    return None


# -- the query endpoint: POST /api/projects/<id|@current>/query/ with a HogQLQuery -------------------

QUERY_REQUEST_FIELDS = {
    "query",
    "refresh",
    "client_query_id",
    "name",
    "filters_override",
    "variables_override",
}
HOGQL_QUERY_FIELDS = {
    "kind",
    "query",
    "values",
    "filters",
    "modifiers",
    "name",
    "variables",
    "explain",
    "tags",
}
BLOCKING_REFRESH = {None, True, False, "blocking", "force_blocking", "force_cache"}
INTERVALS = {"toIntervalSecond": 1, "toIntervalMinute": 60, "toIntervalHour": 3600, "toIntervalDay": 86400}
COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a is not None and a > b,
    ">=": lambda a, b: a is not None and a >= b,
    "<": lambda a, b: a is not None and a < b,
    "<=": lambda a, b: a is not None and a <= b,
}


class UnsupportedQuery(ValueError):
    """HogQL that PostHog would run but this fake does not evaluate: the test must not pass by luck."""


class _QueryEndpoint:
    """PostHog's query API over the events a capture server accepted, as strict as PostHog where our
    client touches it: QueryRequest and HogQLQuery refuse unknown fields, the HogQL must parse with
    PostHog's own parser, and placeholders need their ``values``.

    An accepted event becomes visible ``ingestion_delay`` seconds after a query first sees it
    (``None``: never, an ingestion pipeline that is down). ``fault`` = (status, body) answers every
    query, e.g. PostHog's HTTP 500 when ClickHouse fails. It evaluates the subset of HogQL the
    end-to-end check sends: fields and ``count()`` from ``events``, ANDed comparisons against
    constants, placeholders and ``now() - INTERVAL n UNIT``, ORDER BY a field, LIMIT.
    """

    def __init__(
        self, project_id: int, events: Callable[[], list[dict[str, Any]]], ingestion_delay: float | None
    ) -> None:
        self.project_id = project_id
        self.events = events
        self.ingestion_delay = ingestion_delay
        self.fault: tuple[int, Any] | None = None
        self.queries: list[dict[str, Any]] = []
        self._first_seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def handles(self, path: str) -> bool:
        return re.fullmatch(r"/api/projects/[^/]+/query/", path) is not None

    def answer(self, method: str, path: str, raw: bytes) -> tuple[int, Any]:
        project = path.split("/")[3]
        if project not in {str(self.project_id), "@current"}:
            return 404, {"type": "invalid_request", "code": "not_found", "detail": "Project not found."}
        if method != "POST":
            return 405, {"type": "invalid_request", "detail": f'Method "{method}" not allowed.'}
        try:
            body = json.loads(raw)
        except ValueError:
            return 400, {"type": "validation_error", "detail": "JSON parse error"}
        with self._lock:
            self.queries.append(body)
            if self.fault is not None:
                return self.fault
            try:
                return 200, self._run(body)
            except UnsupportedQuery as exc:
                return 400, {"type": "validation_error", "code": "unsupported_by_fake", "detail": str(exc)}
            except ValueError as exc:
                return 400, {"type": "validation_error", "code": "invalid_input", "detail": str(exc)}

    def _run(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or set(body) - QUERY_REQUEST_FIELDS:
            raise ValueError(f"unknown fields in the request: {sorted(set(body) - QUERY_REQUEST_FIELDS)}")
        if body.get("refresh") not in BLOCKING_REFRESH:
            raise UnsupportedQuery(f"refresh={body.get('refresh')!r}: the fake answers blocking queries only")
        query = body.get("query")
        if not isinstance(query, dict) or query.get("kind") != "HogQLQuery":
            raise UnsupportedQuery("only HogQLQuery")
        if set(query) - HOGQL_QUERY_FIELDS:
            raise ValueError(f"unknown fields in the HogQLQuery: {sorted(set(query) - HOGQL_QUERY_FIELDS)}")
        if not isinstance(query.get("query"), str):
            raise ValueError("query.query must be a string")
        values = query.get("values") or {}
        ast = parse_select(query["query"])  # raises ValueError as PostHog answers 400
        table = ast.get("select_from") or {}
        if (table.get("table") or {}).get("chain") != ["events"] or table.get("next_join"):
            raise UnsupportedQuery("only SELECT ... FROM events")
        for unsupported in ("ctes", "distinct", "group_by", "having", "prewhere", "qualify"):
            if ast.get(unsupported):
                raise UnsupportedQuery(f"no {unsupported.upper()}")
        rows = [e for e in self._visible() if _matches(ast.get("where"), e, values)]
        for order in reversed(ast.get("order_by") or []):
            rows.sort(
                key=lambda e, o=order: str(_value(o["expr"], e, values)), reverse=order["order"] == "DESC"
            )
        if ast.get("limit") is not None:
            rows = rows[: int(_value(ast["limit"], {}, values))]
        select = ast["select"]
        if len(select) == 1 and select[0].get("node") == "Call" and select[0].get("name") == "count":
            results: list[list[Any]] = [[len(rows)]]
            columns = ["count()"]
        else:
            results = [[_jsonable(_value(column, e, values)) for column in select] for e in rows]
            columns = [".".join(column.get("chain") or ["?"]) for column in select]
        return {"results": results, "columns": columns, "hogql": query["query"], "is_cached": False}

    def _visible(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        visible = []
        for event in self.events():
            seen = self._first_seen.setdefault(str(event.get("uuid")), now)
            if self.ingestion_delay is not None and now - seen >= self.ingestion_delay:
                visible.append(event)
        return visible


def _matches(where: Any, event: dict[str, Any], values: dict[str, Any]) -> bool:
    if where is None:
        return True
    if where.get("node") == "And":
        return all(_matches(expr, event, values) for expr in where["exprs"])
    if where.get("node") == "CompareOperation" and where["op"] in COMPARE:
        return COMPARE[where["op"]](
            _value(where["left"], event, values), _value(where["right"], event, values)
        )
    raise UnsupportedQuery(f"no {where.get('node')} {where.get('op', '')} in WHERE")


def _value(node: dict[str, Any], event: dict[str, Any], values: dict[str, Any]) -> Any:
    kind = node.get("node")
    if kind == "Constant":
        return node["value"]
    if kind == "Placeholder":
        name = ".".join(node["expr"]["chain"])
        if name not in values:
            raise ValueError(f"Placeholder {{{name}}} is not available in this context")
        return values[name]
    if kind == "Field":
        chain = node["chain"]
        if chain == ["timestamp"]:
            return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00"))
        if chain in (["event"], ["uuid"], ["distinct_id"]):
            return event.get(chain[0])
        if len(chain) == 2 and chain[0] == "properties":
            return (event.get("properties") or {}).get(chain[1])
        raise UnsupportedQuery(f"no field {'.'.join(chain)}")
    if kind == "Call" and node.get("name") == "now" and not node.get("args"):
        return datetime.now(timezone.utc)
    if kind == "Call" and node.get("name") in INTERVALS and len(node.get("args") or []) == 1:
        return timedelta(seconds=INTERVALS[node["name"]] * _value(node["args"][0], event, values))
    if kind == "ArithmeticOperation" and node["op"] in "+-":
        left, right = _value(node["left"], event, values), _value(node["right"], event, values)
        return left + right if node["op"] == "+" else left - right
    raise UnsupportedQuery(f"no {kind} {node.get('name', '')}")


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
