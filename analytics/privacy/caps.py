"""Make a property tree safe to send: scrubbed, JSON-clean and size-capped.

Scrubbing comes before capping so that a cut can never leave half a secret behind. Every value
that was shortened is named in the event's ``truncated_properties``, so a dashboard can tell a
short message from a cut one.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Final

import orjson

from analytics.privacy.scrubber import SECRET, Scrubber, names_a_secret

TRUNCATION_MARK: Final = "…[truncated]"
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
MAX_DEPTH: Final = 8
MAX_ITEMS: Final = 256
MAX_KEY_CHARS: Final = 200


class GeneratedId(str):
    """An id this library generated itself (a trace or span id), not text from the app: the
    cleaner passes it through unscrubbed. A fresh random id never hits the scrubber's cache, and
    scrubbing one cost more than the rest of the mapping together."""

    __slots__ = ()


@dataclass
class Cleaner:
    """Scrub and cap the free text of one event's properties."""

    scrubber: Scrubber
    max_value_chars: int
    max_content_chars: int
    truncated: list[str] = field(default_factory=list)

    def clean(self, properties: Mapping[str, Any], long_keys: frozenset[str]) -> dict[str, Any]:
        """Return a cleaned copy; the names of shortened values are left in ``self.truncated``."""
        out: dict[str, Any] = {}
        for key, value in properties.items():
            kind = type(value)
            if kind is int or kind is bool or value is None:  # the common case, kept cheap
                out[key] = value
                continue
            if kind is GeneratedId:
                out[key] = str(value)
                continue
            limit = self.max_content_chars if key in long_keys else self.max_value_chars
            cleaned, cut = self._value(value, limit, 0, names_a_secret(key))
            out[key] = cleaned
            if cut:
                self.truncated.append(key)
        return out

    def _value(self, value: Any, limit: int, depth: int, secret: bool = False) -> tuple[Any, bool]:
        """``secret``: the value sits under a key that names a secret (``password``, ``api_key``,
        ``db.pass``...), at any depth: every scalar in it is redacted whole, whatever it looks
        like; None, booleans and empty strings stay (they say whether, not what)."""
        kind = type(value)  # the two common kinds first: this runs for most values of every emit()
        if kind is str and not secret:
            return cap_text(self.scrubber.scrub_text(value), limit)
        if kind is float and not secret:
            return (value if math.isfinite(value) else None), False
        if value is None or isinstance(value, bool):
            return value, False
        if secret and not isinstance(value, Mapping | list | tuple | set | frozenset):
            return (value, False) if value == "" else (SECRET, False)
        if isinstance(value, int):
            return value, False
        if isinstance(value, str):
            return cap_text(self.scrubber.scrub_text(value), limit)
        if isinstance(value, float):
            return (value if math.isfinite(value) else None), False
        if depth >= MAX_DEPTH:
            return TRUNCATION_MARK, True
        if isinstance(value, Mapping):
            result: dict[str, Any] = {}
            cut = len(value) > MAX_ITEMS
            for index, (key, item) in enumerate(value.items()):
                if index >= MAX_ITEMS:
                    break
                name = str(key)
                clean_key, key_cut = cap_text(self.scrubber.scrub_text(name), MAX_KEY_CHARS)
                result[clean_key], item_cut = self._value(
                    item, limit, depth + 1, secret or names_a_secret(name)
                )
                cut = cut or key_cut or item_cut
            return result, cut
        if isinstance(value, list | tuple | set | frozenset):
            items = list(value)
            cleaned = [self._value(item, limit, depth + 1, secret) for item in items[:MAX_ITEMS]]
            return [v for v, _ in cleaned], len(items) > MAX_ITEMS or any(c for _, c in cleaned)
        if isinstance(value, datetime | date):
            return value.isoformat(), False
        if isinstance(value, bytes | bytearray):
            return f"<{len(value)} bytes>", False
        # Anything else is sent as its text, which is scrubbed like any other text.
        return cap_text(self.scrubber.scrub_text(_safe_str(value)), limit)


def cap_text(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    return text[: max(0, limit - len(TRUNCATION_MARK))] + TRUNCATION_MARK, True


def _safe_str(value: object) -> str:
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def encode(message: Any) -> bytes:
    """The one JSON encoding of a message (or any part of one): compact, UTF-8, no NaN.

    orjson writes the same bytes as ``json.dumps(separators=(",", ":"), ensure_ascii=False)`` about
    twenty times faster (5 µs of emit()'s 50); the standard library takes what orjson refuses
    (an integer wider than 64 bits in an app's context).
    """
    try:
        return orjson.dumps(message)
    except (orjson.JSONEncodeError, TypeError):
        text = json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        # A lone surrogate (os.fsdecode's stand-in for a file name byte that is not UTF-8) cannot
        # be sent as UTF-8, and PostHog refuses its \u escape: it becomes U+FFFD, as a decoder
        # would have made it.
        return _SURROGATE.sub("\ufffd", text).encode()


def fit_to_budget(message: dict[str, Any], max_bytes: int, truncated: list[str]) -> bytes | None:
    """Encode ``message``, cutting its largest properties until it fits ``max_bytes``.

    A cut never changes a property's type (PostHog's pipelines read ``$exception_list`` and the
    ``$ai_*`` lists as lists): text is shortened; ``$exception_list`` loses source context lines,
    then its outermost frames (the innermost, where it failed, stay), then chained exceptions;
    other lists and objects lose their longest text, then items. Each cut property is named in
    ``truncated_properties``, and what was taken from a list or object is counted in ``truncation``.

    Returns None when even that cannot make it fit (the caller counts it as ``oversize``).
    """
    data = encode(message)
    properties: dict[str, Any] = message["properties"]
    details: dict[str, dict[str, int]] = {}
    for _ in range(64):
        excess = len(data) - max_bytes
        if excess <= 0:
            return data
        sizes = ((k, len(encode({k: v}))) for k, v in properties.items() if k not in _CUT_NOTES)
        key, size = max(sizes, key=lambda kv: kv[1], default=("", 0))
        if size < 64 or not _cut(properties, key, excess, details.setdefault(key, {})):
            return None
        if key not in truncated:
            truncated.append(key)
        properties["truncated_properties"] = sorted(truncated)
        notes = {k: v for k, v in details.items() if v}
        if notes:
            properties["truncation"] = notes
        data = encode(message)
    return data if len(data) <= max_bytes else None


# Properties the cut writes itself: never cut.
_CUT_NOTES: Final = frozenset({"truncated_properties", "truncation"})
# Text shorter than this is not worth a cut (the mark alone is 12 characters).
_MIN_CUT_CHARS: Final = 64


def _cut(properties: dict[str, Any], key: str, excess: int, note: dict[str, int]) -> bool:
    """Take at least ``excess`` bytes out of ``properties[key]``; False when nothing is left to cut."""
    value = properties[key]
    if isinstance(value, str):
        if not value:
            return False
        # Characters may be several bytes: cut by at least the excess, in characters, plus a margin.
        keep = max(0, len(value) - excess - len(TRUNCATION_MARK) - _MIN_CUT_CHARS)
        properties[key] = value[:keep] + TRUNCATION_MARK
        return True
    if key == "$exception_list" and isinstance(value, list) and _cut_exception_list(value, excess, note):
        return True
    if isinstance(value, list | dict):
        return _cut_container(value, excess, note)
    return False


def _cut_exception_list(entries: list[Any], excess: int, note: dict[str, int]) -> bool:
    """Structural cuts, in order, until ``excess`` bytes are gone: context lines of the library's
    frames, then of every frame but each exception's innermost; then the outermost frames of the
    deepest stacks; then the last chained exceptions. False when none of them applies."""
    before = len(encode({"v": entries}))
    target = before - excess
    cut_any = False
    stacks = [_frames_of(entry) for entry in entries]
    for fields in (("pre_context", "post_context"), ("context_line",)):
        for library_only in (True, False):
            lines = _drop_context(stacks, fields, library_only)
            if lines:
                cut_any = True
                note["context_lines"] = note.get("context_lines", 0) + lines
                if len(encode({"v": entries})) <= target:
                    return True
    for _ in range(64):
        size = len(encode({"v": entries}))
        if size <= target:
            return True
        deepest = max(stacks, key=len, default=[])
        if len(deepest) <= 1:
            break
        per_frame = max(1, len(encode({"v": deepest})) // len(deepest))
        drop = min(len(deepest) - 1, -(-(size - target) // per_frame))
        del deepest[:drop]  # frames run outermost first: keep the innermost
        note["frames"] = note.get("frames", 0) + drop
        cut_any = True
    while len(entries) > 1 and len(encode({"v": entries})) > target:
        entries.pop()  # depth first, parents before children: no entry left points at a removed one
        stacks.pop()
        note["exceptions"] = note.get("exceptions", 0) + 1
        cut_any = True
    return cut_any


def _frames_of(entry: Any) -> list[Any]:
    stacktrace = entry.get("stacktrace") if isinstance(entry, dict) else None
    frames = stacktrace.get("frames") if isinstance(stacktrace, dict) else None
    return frames if isinstance(frames, list) else []


def _drop_context(stacks: list[list[Any]], fields: tuple[str, ...], library_only: bool) -> int:
    """Remove ``fields`` from every frame but each stack's innermost; returns the lines removed."""
    removed = 0
    for frames in stacks:
        for frame in frames[:-1]:
            if not isinstance(frame, dict) or (library_only and frame.get("in_app") is True):
                continue
            for name in fields:
                value = frame.pop(name, None)
                if isinstance(value, list):
                    removed += len(value)
                elif value is not None:
                    removed += 1
    return removed


def _cut_container(value: list[Any] | dict[str, Any], excess: int, note: dict[str, int]) -> bool:
    """Shorten the longest text inside ``value``; with no long text left, drop items (a list's
    oldest first, keeping its last: the latest message; an object's largest entry)."""
    longest = _longest_text(value)
    if longest is not None:
        holder, slot, text = longest
        keep = max(0, len(text) - excess - len(TRUNCATION_MARK) - _MIN_CUT_CHARS)
        holder[slot] = text[:keep] + TRUNCATION_MARK
        note["texts_shortened"] = note.get("texts_shortened", 0) + 1
        return True
    freed = 0
    while freed < excess:
        if isinstance(value, list) and len(value) > 1:
            freed += len(encode({"v": value.pop(0)}))
        elif isinstance(value, dict) and value:
            largest = max(value, key=lambda k: len(encode({"v": value[k]})))
            freed += len(encode({"v": value.pop(largest)}))
        else:
            break
        note["items_removed"] = note.get("items_removed", 0) + 1
    return freed > 0


def _longest_text(value: Any) -> tuple[Any, Any, str] | None:
    """(container, key or index, text) of the longest cuttable string inside ``value``."""
    best: tuple[Any, Any, str] | None = None
    stack: list[Any] = [value]
    while stack:
        node = stack.pop()
        slots: Any = node.items() if isinstance(node, dict) else enumerate(node)
        for slot, item in slots:
            if isinstance(item, str):
                if len(item) > _MIN_CUT_CHARS + len(TRUNCATION_MARK) and (
                    best is None or len(item) > len(best[2])
                ):
                    best = (node, slot, item)
            elif isinstance(item, dict | list):
                stack.append(item)
    return best
