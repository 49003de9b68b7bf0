"""PostHog's dashboards and insights REST endpoints on loopback, as strict as the real ones where our
client touches them (read from PostHog's ``posthog/api/insight.py``, ``posthog/api/dashboards/`` and
``posthog/schema.py``):

- bearer auth (401), the project in the path (404 unknown, 403 when the key may not use it), and the
  key's scopes (``insight:read``/``insight:write``, ``dashboard:read``/``dashboard:write``; 403 when
  one is missing, with PostHog's wording);
- the insight's ``query`` validated against PostHog's schema shape for a ``DataVisualizationNode``
  (pydantic ``extra="forbid"`` everywhere: an unknown key is a 400);
- stored queries upgraded by the schema migrations: a ``DataVisualizationNode`` comes back with
  ``"version": 2`` whatever was sent;
- ``dashboards`` is left out of insight answers unless ``?include_dashboards=true`` is asked
  (``dashboard_tiles`` is always there); a PATCH of ``dashboards`` replaces the insight's tiles, so an
  insight leaves every dashboard not in the list;
- lists are paginated (``limit``/``offset`` with a ``next`` URL and a ``count``) and ordered unstably,
  as PostHog's default order ties on a mostly empty column: each request shuffles, unless an insight
  listing asks for ``order``; insight listings honour ``search`` (name or description contains).

The query endpoint (``/query/``) is in ``_QueryEndpoint`` below: it answers HogQL over the events a
``CaptureServer`` accepted.
"""

from __future__ import annotations

import copy
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.hogql import parse_select
from tests.loopback import LoopbackServer, send_json

DASHBOARD_FIELDS = {"name", "description", "pinned", "tags"}
INSIGHT_FIELDS = {"name", "description", "query", "saved", "dashboards", "tags"}
ALL_SCOPES = frozenset({"dashboard:read", "dashboard:write", "insight:read", "insight:write", "query:read"})
# path segment -> the object its scopes name
RESOURCES = {"dashboards": "dashboard", "insights": "insight"}
LATEST_VERSIONS = {"DataVisualizationNode": 2}

# -- PostHog's query schema, the part a DataVisualizationNode uses ------------------------------------
# A spec is ("object", fields, required) | ("list", spec) | ("enum", values) | ("const", value)
# | ("str",) | ("bool",) | ("number",) | ("any",). Optional fields accept null, as pydantic's X | None.

Spec = tuple[Any, ...]
STR: Spec = ("str",)
BOOL: Spec = ("bool",)
NUMBER: Spec = ("number",)
ANY: Spec = ("any",)


def _object(fields: dict[str, Spec], required: Iterable[str] = ()) -> Spec:
    return ("object", fields, frozenset(required))


def _enum(*values: str) -> Spec:
    return ("enum", frozenset(values))


def _list(item: Spec) -> Spec:
    return ("list", item)


HOGQL_QUERY = _object(
    {
        "kind": ("const", "HogQLQuery"),
        "query": STR,
        "connectionId": STR,
        "explain": BOOL,
        "filters": ANY,
        "modifiers": ANY,
        "name": STR,
        "response": ANY,
        "sendRawQuery": BOOL,
        "tags": ANY,
        "values": ANY,
        "variables": ANY,
        "version": NUMBER,
    },
    required=("query",),
)
FORMATTING = _object(
    {
        "decimalPlaces": NUMBER,
        "prefix": STR,
        "style": _enum("none", "number", "short", "percent"),
        "suffix": STR,
    }
)
SERIES_DISPLAY = _object(
    {
        "color": STR,
        "displayType": _enum("auto", "line", "bar"),
        "label": STR,
        "trendLine": BOOL,
        "yAxisPosition": _enum("left", "right"),
    }
)
CHART_AXIS = _object(
    {"column": STR, "settings": _object({"display": SERIES_DISPLAY, "formatting": FORMATTING})},
    required=("column",),
)
Y_AXIS_SETTINGS = _object(
    {"scale": _enum("linear", "logarithmic"), "showGridLines": BOOL, "showTicks": BOOL, "startAtZero": BOOL}
)
GOAL_LINE = _object(
    {
        "borderColor": STR,
        "displayIfCrossed": BOOL,
        "displayLabel": BOOL,
        "label": STR,
        "position": _enum("start", "end"),
        "value": NUMBER,
    },
    required=("label", "value"),
)
CHART_SETTINGS = _object(
    {
        "goalLines": _list(GOAL_LINE),
        "heatmap": ANY,
        "leftYAxisSettings": Y_AXIS_SETTINGS,
        "rightYAxisSettings": Y_AXIS_SETTINGS,
        "seriesBreakdownColumn": STR,
        "showLegend": BOOL,
        "showNullsAsZero": BOOL,
        "showTotalRow": BOOL,
        "showXAxisBorder": BOOL,
        "showXAxisTicks": BOOL,
        "showYAxisBorder": BOOL,
        "stackBars100": BOOL,
        "xAxis": CHART_AXIS,
        "yAxis": _list(CHART_AXIS),
        "yAxisAtZero": BOOL,
    }
)
TABLE_SETTINGS = _object(
    {"columns": _list(CHART_AXIS), "conditionalFormatting": _list(ANY), "pinnedColumns": _list(STR)}
)
CHART_DISPLAY_TYPES = _enum(
    "Auto",
    "ActionsLineGraph",
    "ActionsBar",
    "ActionsUnstackedBar",
    "ActionsStackedBar",
    "ActionsAreaGraph",
    "ActionsLineGraphCumulative",
    "BoldNumber",
    "ActionsPie",
    "ActionsBarValue",
    "ActionsTable",
    "WorldMap",
    "CalendarHeatmap",
    "TwoDimensionalHeatmap",
    "BoxPlot",
)
DATA_VISUALIZATION_NODE = _object(
    {
        "chartSettings": CHART_SETTINGS,
        "display": CHART_DISPLAY_TYPES,
        "kind": ("const", "DataVisualizationNode"),
        "source": HOGQL_QUERY,
        "tableSettings": TABLE_SETTINGS,
        "version": NUMBER,
    },
    required=("kind", "source"),
)


def schema_problem(value: Any, spec: Spec, where: str = "query") -> str | None:
    """The first way ``value`` breaks ``spec``, worded like a pydantic error, or None."""
    kind = spec[0]
    if kind == "any":
        return None
    if kind == "str":
        return None if isinstance(value, str) else f"{where}: Input should be a valid string"
    if kind == "bool":
        return None if isinstance(value, bool) else f"{where}: Input should be a valid boolean"
    if kind == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else f"{where}: Input should be a valid number"
    if kind == "const":
        return None if value == spec[1] else f"{where}: Input should be '{spec[1]}'"
    if kind == "enum":
        return None if value in spec[1] else f"{where}: Input should be one of {sorted(spec[1])}"
    if kind == "list":
        if not isinstance(value, list):
            return f"{where}: Input should be a valid list"
        for index, item in enumerate(value):
            problem = schema_problem(item, spec[1], f"{where}.{index}")
            if problem:
                return problem
        return None
    fields, required = spec[1], spec[2]
    if not isinstance(value, dict):
        return f"{where}: Input should be a valid dictionary"
    for key in sorted(set(value) - set(fields)):
        return f"{where}.{key}: Extra inputs are not permitted"
    for key in sorted(required - set(value)):
        return f"{where}.{key}: Field required"
    for key, item in value.items():
        if item is None and key not in required:
            continue
        problem = schema_problem(item, fields[key], f"{where}.{key}")
        if problem:
            return problem
    return None


def upgrade(node: Any) -> Any:
    """PostHog's schema migrations as they show in an answer: every node of a versioned kind gets
    its latest ``version``."""
    if isinstance(node, list):
        return [upgrade(item) for item in node]
    if isinstance(node, dict):
        upgraded = {key: upgrade(value) for key, value in node.items()}
        kind = upgraded.get("kind")
        if isinstance(kind, str) and kind in LATEST_VERSIONS:
            upgraded["version"] = max(int(upgraded.get("version") or 1), LATEST_VERSIONS[kind])
        return upgraded
    return node


@dataclass
class _State:
    key: str
    project_id: int
    page_size: int
    scopes: frozenset[str]
    projects: set[int]
    key_projects: set[int]
    rng: random.Random
    dashboards: dict[int, dict[str, Any]] = field(default_factory=dict)
    insights: dict[int, dict[str, Any]] = field(default_factory=dict)
    tiles: list[dict[str, Any]] = field(default_factory=list)
    mutations: list[tuple[str, str]] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    next_id: int = 100
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- what a person does in PostHog's UI, for tests ------------------------------------------------

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def add_dashboard(self, name: str, description: str = "") -> int:
        dashboard_id = self.new_id()
        self.dashboards[dashboard_id] = {
            "id": dashboard_id,
            "name": name,
            "description": description,
            "pinned": False,
            "tags": [],
        }
        return dashboard_id

    def add_insight(self, name: str, description: str = "", dashboards: Iterable[int] = ()) -> int:
        insight_id = self.new_id()
        self.insights[insight_id] = {
            "id": insight_id,
            "short_id": f"s{insight_id}",
            "name": name,
            "description": description,
            "query": {"kind": "DataVisualizationNode", "source": {"kind": "HogQLQuery", "query": "SELECT 1"}},
            "saved": True,
            "tags": [],
        }
        self.set_dashboards(insight_id, dashboards)
        return insight_id

    def attach(self, insight_id: int, dashboard_id: int) -> None:
        self.set_dashboards(insight_id, [*self.dashboards_of(insight_id), dashboard_id])

    def detach(self, insight_id: int, dashboard_id: int) -> None:
        self.set_dashboards(insight_id, [d for d in self.dashboards_of(insight_id) if d != dashboard_id])

    def dashboards_of(self, insight_id: int) -> list[int]:
        return sorted(
            t["dashboard_id"] for t in self.tiles if t["insight_id"] == insight_id and not t["deleted"]
        )

    def set_dashboards(self, insight_id: int, dashboard_ids: Iterable[int]) -> None:
        """As PostHog's ``_update_insight_dashboards``: tiles not listed are soft-deleted."""
        wanted = set(dashboard_ids)
        for tile in self.tiles:
            if tile["insight_id"] == insight_id:
                tile["deleted"] = tile["dashboard_id"] not in wanted
        have = {t["dashboard_id"] for t in self.tiles if t["insight_id"] == insight_id}
        for dashboard_id in sorted(wanted - have):
            tile_id = self.new_id()
            self.tiles.append(
                {"id": tile_id, "dashboard_id": dashboard_id, "insight_id": insight_id, "deleted": False}
            )

    def insight_view(self, insight_id: int, *, include_dashboards: bool) -> dict[str, Any]:
        stored = self.insights[insight_id]
        view = copy.deepcopy(stored)
        view["query"] = upgrade(view.get("query"))
        view["dashboard_tiles"] = [
            {"id": t["id"], "dashboard_id": t["dashboard_id"], "deleted": False}
            for t in self.tiles
            if t["insight_id"] == insight_id and not t["deleted"]
        ]
        if include_dashboards:
            view["dashboards"] = self.dashboards_of(insight_id)
        return view


class PostHogApiServer(LoopbackServer):
    def __init__(
        self,
        *,
        key: str,
        project_id: int,
        page_size: int = 4,
        scopes: Iterable[str] = ALL_SCOPES,
        other_projects: Iterable[int] = (),
        key_projects: Iterable[int] | None = None,
        seed: int = 0,
        events: Callable[[], list[dict[str, Any]]] | None = None,
        ingestion_delay: float | None = 0.0,
    ) -> None:
        projects = {project_id, *other_projects}
        self.state = _State(
            key,
            project_id,
            page_size,
            frozenset(scopes),
            projects,
            set(projects if key_projects is None else key_projects),
            random.Random(seed),
        )
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
                with state.lock:
                    state.requests.append((method, self.path))
                if self.headers.get("Authorization") != f"Bearer {state.key}":
                    return self._send(
                        401,
                        {
                            "type": "authentication_error",
                            "code": "authentication_failed",
                            "detail": "Invalid personal API key.",
                            "attr": None,
                        },
                    )
                parts = urlsplit(self.path)
                if query.handles(parts.path):
                    return self._send(*query.answer(method, parts.path, raw))
                match = re.fullmatch(r"/api/projects/(\d+)/([a-z_]+)/(?:(\d+)/)?", parts.path)
                if match is None or match[2] not in RESOURCES:
                    return self._send(404, {"type": "invalid_request", "detail": "Not found."})
                project = int(match[1])
                if project not in state.projects:
                    return self._send(404, {"type": "invalid_request", "detail": "Not found."})
                if project not in state.key_projects:
                    return self._forbidden("API key does not have access to the requested project.")
                scope = f"{RESOURCES[match[2]]}:{'read' if method == 'GET' else 'write'}"
                granted = scope in state.scopes or scope.replace(":read", ":write") in state.scopes
                if not granted:
                    return self._forbidden(f"API key missing required scope '{scope}'")
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    return self._send(400, {"type": "validation_error", "detail": "JSON parse error"})
                with state.lock:
                    status, answer = self._handle(method, match[2], match[3], body, parse_qs(parts.query))
                self._send(status, answer)

            def _forbidden(self, detail: str) -> None:
                self._send(
                    403,
                    {
                        "type": "authentication_error",
                        "code": "permission_denied",
                        "detail": detail,
                        "attr": None,
                    },
                )

            def _handle(
                self, method: str, kind: str, object_id: str | None, body: Any, query: dict[str, list[str]]
            ) -> tuple[int, Any]:
                include = query.get("include_dashboards", ["false"])[0].lower() == "true"
                view: Callable[[int], dict[str, Any]]
                if kind == "insights":
                    table = state.insights
                    view = lambda key: state.insight_view(key, include_dashboards=include)  # noqa: E731
                else:
                    table = state.dashboards
                    view = lambda key: copy.deepcopy(table[key])  # noqa: E731
                if method == "GET" and object_id is None:
                    return 200, self._list(kind, table, view, query)
                if method == "GET" and object_id is not None and int(object_id) in table:
                    return 200, view(int(object_id))
                problem = _invalid(kind, body, state, creating=method == "POST")
                if problem:
                    return 400, {
                        "type": "validation_error",
                        "code": "parse_error",
                        "detail": problem,
                        "attr": None,
                    }
                if method == "POST" and object_id is None:
                    new_id = state.new_id()
                    created = {"id": new_id, "description": "", "tags": [], **body}
                    dashboards = created.pop("dashboards", [])
                    if kind == "insights":
                        created["short_id"] = f"s{new_id}"
                        created["query"] = upgrade(created.get("query"))
                        table[new_id] = created
                        state.set_dashboards(new_id, dashboards)
                    else:
                        table[new_id] = created
                    state.mutations.append((method, kind))
                    return 201, view(new_id)
                if method == "PATCH" and object_id is not None and int(object_id) in table:
                    changes = dict(body)
                    dashboards = changes.pop("dashboards", None)
                    if "query" in changes:
                        changes["query"] = upgrade(changes["query"])
                    table[int(object_id)].update(changes)
                    if dashboards is not None:
                        state.set_dashboards(int(object_id), dashboards)
                    state.mutations.append((method, kind))
                    return 200, view(int(object_id))
                return 404, {"type": "invalid_request", "detail": "Not found."}

            def _list(
                self,
                kind: str,
                table: dict[int, dict[str, Any]],
                view: Callable[[int], dict[str, Any]],
                query: dict[str, list[str]],
            ) -> dict[str, Any]:
                keys = list(table)
                search = query.get("search", [""])[0].lower()
                if kind == "insights" and search:
                    keys = [
                        k
                        for k in keys
                        if search in str(table[k].get("name") or "").lower()
                        or search in str(table[k].get("description") or "").lower()
                    ]
                order = query.get("order", [""])[0]
                if kind == "insights" and order in ("id", "-id"):
                    keys.sort(reverse=order == "-id")
                else:
                    state.rng.shuffle(keys)
                limit = int(query.get("limit", ["100"])[0])
                offset = int(query.get("offset", ["0"])[0])
                page_size = min(limit, state.page_size)
                page = keys[offset : offset + page_size]
                following = None
                if offset + page_size < len(keys):
                    params = {k: v[0] for k, v in query.items()}
                    params["offset"] = str(offset + page_size)
                    base = f"http://{self.headers['Host']}/api/projects/{state.project_id}/{kind}/"
                    following = f"{base}?{urlencode(params)}"
                return {
                    "count": len(keys),
                    "next": following,
                    "previous": None,
                    "results": [view(k) for k in page],
                }

            def _send(self, status: int, payload: Any) -> None:
                send_json(self, status, payload)

        super().__init__(Handler)


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
        if creating and not query:
            return "query is required"
        if query:  # PostHog's QuerySchemaParser validates a present, non-empty query
            if not isinstance(query, dict) or query.get("kind") != "DataVisualizationNode":
                return "query must be a DataVisualizationNode"
            problem = schema_problem(query, DATA_VISUALIZATION_NODE)
            if problem:
                return problem
        dashboards = body.get("dashboards", [])
        if not isinstance(dashboards, list):
            return "dashboards must be a list of ids"
        for dashboard in dashboards:
            if (
                not isinstance(dashboard, int)
                or isinstance(dashboard, bool)
                or dashboard not in state.dashboards
            ):
                return f'Invalid pk "{dashboard}" - object does not exist.'
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
