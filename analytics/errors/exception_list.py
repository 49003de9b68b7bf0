"""PostHog's ``$exception_list`` for one exception, built as posthog-python's ``capture_exception()``
builds it, so PostHog's error tracking groups, fingerprints and shows our errors as its own SDK's.

    entries = build_exception_list(exc, project_root=os.getcwd())

- One entry per exception: the one caught first, then what caused it (``raise B from A``: source
  ``cause``) or what it was raised while handling (source ``context``, unless suppressed with
  ``from None``), then the members of an ``ExceptionGroup`` (source ``member``), depth first. Each
  entry's ``mechanism`` carries its ``exception_id`` and, below the first, its ``parent_id`` and
  ``type: "chained"``. At most 50 entries, as posthog-python.
- Frames run outermost first, as Python prints them. Each has ``filename`` relative to its import
  root (``requests/models.py``; a top-level module's own file name), ``abs_path``, ``module``,
  ``function``, ``lineno`` and five lines of source on each side of the line.
- ``in_app``: false under ``site-packages`` / ``dist-packages``, true under the project root (the
  working directory, as posthog-python), otherwise left out: PostHog then decides (it demotes the
  standard library).

Nothing here is scrubbed: :func:`scrub_exception_list` does that in the mapping, with the same
scrubber as every other value.
"""

from __future__ import annotations

import builtins
import linecache
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import FrameType, TracebackType
from typing import Any, Final

logger = logging.getLogger(__name__)

MAX_ENTRIES: Final = 50
MAX_GROUP_MEMBER_INSPECTIONS: Final = 1_000
# Far beyond Python's default recursion limit (1,000); a traceback deeper than this keeps its innermost.
MAX_FRAMES: Final = 10_000
CONTEXT_LINES: Final = 5
MAX_LINE_BYTES: Final = 1_024

_EXTERNAL_SOURCE: Final = re.compile(r"[\\/](?:dist|site)-packages[\\/]")
# Our own frames are left out of a stack we build for an exception that was never raised.
_OWN_PACKAGE: Final = __name__.partition(".")[0]
# ExceptionGroup is Python 3.11+.
_BASE_GROUP: Final[type | None] = getattr(builtins, "BaseExceptionGroup", None)


def build_exception_list(
    exc: BaseException,
    *,
    handled: bool = True,
    mechanism_type: str = "generic",
    project_root: str | None = None,
) -> list[dict[str, Any]]:
    """The ``$exception_list`` entries for ``exc`` (unscrubbed), caught exception first."""
    builder = _Builder(project_root or None)
    root_mechanism: dict[str, Any] = {"type": mechanism_type, "handled": handled}
    return builder.entries(exc, root_mechanism)


def is_external_source(path: str) -> bool:
    """An installed package's file, never the app's own (posthog-python's test)."""
    return _EXTERNAL_SOURCE.search(path) is not None


# -- building -----------------------------------------------------------------------------------------


@dataclass
class _Builder:
    project_root: str | None
    seen: set[int] = field(default_factory=set)
    inspected_members: int = 0
    next_id: int = 0
    out: list[dict[str, Any]] = field(default_factory=list)
    # Source lines per file, read once per exception (a deep recursion repeats one file 2,000 times).
    sources: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    # The objects walked, kept alive so that no id() is reused during the walk.
    keep: list[BaseException] = field(default_factory=list)

    def entries(self, exc: BaseException, root_mechanism: dict[str, Any]) -> list[dict[str, Any]]:
        self._walk(exc, root_mechanism, parent_id=None, source=None)
        return self.out

    def _walk(
        self, exc: BaseException, mechanism: dict[str, Any], parent_id: int | None, source: str | None
    ) -> None:
        if id(exc) in self.seen or self.next_id >= MAX_ENTRIES:
            return
        self.seen.add(id(exc))
        self.keep.append(exc)
        exception_id = self.next_id
        self.next_id += 1
        self.out.append(self._entry(exc, mechanism, exception_id, parent_id, source))

        cause, relationship = _cause_of(exc)
        if cause is not None and self.next_id < MAX_ENTRIES:
            self._walk(cause, {}, exception_id, relationship)
        members = _group_members(exc)
        index = 0
        while (
            index < len(members)
            and self.next_id < MAX_ENTRIES
            and self.inspected_members < MAX_GROUP_MEMBER_INSPECTIONS
        ):
            self.inspected_members += 1
            member = members[index]
            index += 1
            if isinstance(member, BaseException):
                self._walk(member, {}, exception_id, "member")

    def _entry(
        self,
        exc: BaseException,
        mechanism: dict[str, Any],
        exception_id: int,
        parent_id: int | None,
        source: str | None,
    ) -> dict[str, Any]:
        frames, synthetic = self._frames(exc, exception_id)
        entry: dict[str, Any] = {
            "mechanism": _mechanism(exc, mechanism, exception_id, parent_id, source, synthetic),
            "module": _type_module(type(exc)),
            "type": _type_name(type(exc)),
            "value": _message(exc),
        }
        if frames:
            entry["stacktrace"] = {"frames": frames, "type": "raw"}
        return entry

    def _frames(self, exc: BaseException, exception_id: int) -> tuple[list[dict[str, Any]], bool]:
        tb = exc.__traceback__
        synthetic = False
        if tb is not None:
            steps = list(_traceback_steps(tb))
        elif exception_id == 0:
            # Never raised: posthog-python reports where it was captured, marked synthetic.
            steps = _capture_site_steps()
            synthetic = bool(steps)
        else:
            steps = []
        steps = [(frame, lineno) for frame, lineno in steps if not _hidden(frame)][-MAX_FRAMES:]
        return [self._frame(frame, lineno) for frame, lineno in steps], synthetic

    def _frame(self, frame: FrameType, lineno: int | None) -> dict[str, Any]:
        code = frame.f_code
        raw_path = code.co_filename or None
        module = _frame_module(frame)
        abs_path = os.path.abspath(raw_path) if raw_path else None
        result: dict[str, Any] = {
            "platform": "python",
            "filename": _filename_for_module(module, raw_path) or None,
            "abs_path": abs_path,
            "function": code.co_name or "<unknown>",
            "module": module,
            "lineno": lineno,
        }
        pre, line, post = self._context(frame, raw_path, module, lineno)
        result["pre_context"], result["context_line"], result["post_context"] = pre, line, post
        in_app = _in_app(abs_path, self.project_root)
        if in_app is not None:
            result["in_app"] = in_app
        return result

    def _context(
        self, frame: FrameType, path: str | None, module: str | None, lineno: int | None
    ) -> tuple[list[str], str | None, list[str]]:
        if module is None or path is None or lineno is None:
            return [], None, []
        key = (path, module)
        lines = self.sources.get(key)
        if lines is None:
            lines = _source_lines(frame, path, module)
            self.sources[key] = lines
        index = lineno - 1
        if not lines or not 0 <= index < len(lines):
            return [], None, []
        low = max(0, index - CONTEXT_LINES)
        high = min(index + 1 + CONTEXT_LINES, len(lines))
        return (
            [_context_line(text) for text in lines[low:index]],
            _context_line(lines[index]),
            [_context_line(text) for text in lines[index + 1 : high]],
        )


def _cause_of(exc: BaseException) -> tuple[BaseException | None, str]:
    if getattr(exc, "__suppress_context__", False):
        return _as_exception(getattr(exc, "__cause__", None)), "cause"
    return _as_exception(getattr(exc, "__context__", None)), "context"


def _as_exception(value: object) -> BaseException | None:
    return value if isinstance(value, BaseException) else None


def _group_members(exc: BaseException) -> tuple[object, ...]:
    if not _is_group(exc):
        return ()
    members = getattr(exc, "exceptions", ())
    return tuple(members) if isinstance(members, tuple | list) else ()


def _is_group(exc: BaseException) -> bool:
    return _BASE_GROUP is not None and isinstance(exc, _BASE_GROUP)


def _mechanism(
    exc: BaseException,
    given: dict[str, Any],
    exception_id: int,
    parent_id: int | None,
    source: str | None,
    synthetic: bool,
) -> dict[str, Any]:
    mechanism = dict(given)
    mechanism["exception_id"] = exception_id
    errno = getattr(exc, "errno", None)
    if errno is not None and isinstance(errno, int | str):
        mechanism["meta"] = {"errno": {"number": errno}}
    if exception_id == 0:
        mechanism.setdefault("type", "generic")
        mechanism.setdefault("handled", True)
    elif parent_id is not None:
        if source:
            mechanism["source"] = source
        mechanism["parent_id"] = parent_id
        mechanism["type"] = "chained"
        mechanism.pop("handled", None)
    mechanism.setdefault("synthetic", synthetic)
    if _is_group(exc):
        mechanism["is_exception_group"] = True
    return mechanism


def _type_name(cls: type) -> str | None:
    name = getattr(cls, "__qualname__", None) or getattr(cls, "__name__", None)
    return name if isinstance(name, str) else None


def _type_module(cls: type) -> str | None:
    module = getattr(cls, "__module__", None)
    return module if isinstance(module, str) and module not in ("builtins", "__builtins__") else None


def _message(exc: BaseException) -> str:
    """posthog-python's message: an exception's ``message`` or ``detail`` attribute, else ``str()``."""
    try:
        chosen: object = getattr(exc, "message", "") or getattr(exc, "detail", "") or exc
        return str(chosen)
    except Exception:
        try:
            return repr(exc)
        except Exception:
            return "<broken repr>"


# -- frames ---------------------------------------------------------------------------------------------


def _traceback_steps(tb: TracebackType) -> Iterator[tuple[FrameType, int | None]]:
    current: TracebackType | None = tb
    while current is not None:
        yield current.tb_frame, current.tb_lineno
        current = current.tb_next


def _capture_site_steps() -> list[tuple[FrameType, int | None]]:
    """The stack where the app captured a never-raised exception, outermost first, without ours."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and _is_own_frame(frame):
        frame = frame.f_back
    steps: list[tuple[FrameType, int | None]] = []
    while frame is not None:
        steps.append((frame, frame.f_lineno))
        frame = frame.f_back
    steps.reverse()
    return steps


def _is_own_frame(frame: FrameType) -> bool:
    module = _frame_module(frame) or ""
    return module == _OWN_PACKAGE or module.startswith(_OWN_PACKAGE + ".")


def _hidden(frame: FrameType) -> bool:
    """Frames Sentry's and posthog-python's serializers leave out."""
    module = _frame_module(frame)
    if module is not None and module.startswith("sentry_sdk."):
        return True
    for flag in ("__traceback_hide__", "__tracebackhide__"):
        try:
            if frame.f_locals[flag]:
                return True
        except Exception:
            continue
    return False


def _frame_module(frame: FrameType) -> str | None:
    try:
        module = frame.f_globals["__name__"]
    except Exception:
        return None
    return module if isinstance(module, str) else None


def _filename_for_module(module: str | None, path: str | None) -> str | None:
    """The file relative to its import root: ``requests/models.py``; a top-level module's file name."""
    if not path or not module:
        return path
    try:
        if path.endswith(".pyc"):
            path = path[:-1]
        base_module = module.split(".", 1)[0]
        if base_module == module:
            return os.path.basename(path)
        base_file = getattr(sys.modules[base_module], "__file__", None)
        if not base_file:
            return path
        return path.split(base_file.rsplit(os.sep, 2)[0], 1)[-1].lstrip(os.sep)
    except Exception:
        return path


def _in_app(abs_path: str | None, project_root: str | None) -> bool | None:
    if abs_path is None:
        return None
    if is_external_source(abs_path):
        return False
    if project_root is not None and abs_path.startswith(project_root):
        return True
    return None


def _source_lines(frame: FrameType, path: str, module: str) -> list[str]:
    loader = frame.f_globals.get("__loader__")
    get_source = getattr(loader, "get_source", None)
    if callable(get_source):
        try:
            text = get_source(module)
        except (ImportError, OSError):
            text = None
        except Exception:
            text = None
        if isinstance(text, str):
            return text.splitlines()
    try:
        return linecache.getlines(path)
    except Exception:
        return []


def _context_line(text: str) -> str:
    line = text.strip("\r\n")
    encoded = line.encode("utf-8", "surrogatepass")
    if len(encoded) <= MAX_LINE_BYTES:
        return line
    return encoded[: MAX_LINE_BYTES - 3].decode("utf-8", "ignore") + "..."


# -- scrubbing ----------------------------------------------------------------------------------------

MAX_LIST_ITEMS: Final = MAX_FRAMES
MAX_DEPTH: Final = 12


def scrub_exception_list(
    entries: object, scrub: Callable[[str], str], limit: int, mark: str
) -> tuple[list[Any], bool]:
    """Every string in ``entries`` scrubbed and capped at ``limit`` characters (ending in ``mark``);
    True when something was cut. The structure and every other type are kept: a list stays a list.

    Scrubbing is memoised per call: the frames of a deep recursion repeat the same few strings.
    """
    memo: dict[str, str] = {}
    cut = [False]

    def text(value: str) -> str:
        done = memo.get(value)
        if done is None:
            done = scrub(value)
            if len(done) > limit:
                done = done[: max(0, limit - len(mark))] + mark
                cut[0] = True
            memo[value] = done
        return done

    def walk(value: Any, depth: int) -> Any:
        if value is None or isinstance(value, bool | int):
            return value
        if isinstance(value, str):
            return text(value)
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if depth >= MAX_DEPTH:
            cut[0] = True
            return None
        if isinstance(value, dict):
            return {text(str(key)): walk(item, depth + 1) for key, item in value.items()}
        if isinstance(value, list | tuple):
            items = list(value)
            if len(items) > MAX_LIST_ITEMS:
                cut[0] = True
                items = items[-MAX_LIST_ITEMS:]  # frames: the innermost are the ones that matter
            return [walk(item, depth + 1) for item in items]
        try:
            rendered = str(value)
        except Exception:
            rendered = f"<unprintable {type(value).__name__}>"
        return text(rendered)

    source = entries if isinstance(entries, list | tuple) else [entries]
    result = walk(list(source)[:MAX_ENTRIES], 0)
    return (result if isinstance(result, list) else []), cut[0]
