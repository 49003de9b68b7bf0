"""The scrubber: personal data and secrets out of every free-text value we send.

Passes run in order, each replacing what it finds with a placeholder that says what was there
and that no later pass matches again: private key blocks, credentials in URLs, token formats
(the rule table in ``secret_rules``), secret-named assignments and auth headers, e-mail
addresses, home folders and the user's and machine's names, then IP addresses, payment cards,
IBANs and phone numbers. No replacement crosses a line end (a private key block keeps its
lines, each scrubbed).

Speed: the scrubber runs on every string an event carries, so each pass first asks a question
that C answers (a substring test, one regex scan) and only then does Python-level work on what
it found. Short values that were clean once (model and tool names) are remembered.
"""

from __future__ import annotations

import getpass
import ipaddress
import os
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

import ahocorasick_rs

from analytics.privacy import secret_rules as rules
from analytics.privacy.checks import is_card_number, is_iban, shannon_entropy
from analytics.privacy.secret_rules import CREDENTIALS, JWT, PRIVATE_KEY, SECRET, TOKEN

HOME: Final = "<home>"
USER: Final = "<user>"
HOST: Final = "<host>"
EMAIL: Final = "<email>"
IP: Final = "<ip>"
CARD: Final = "<card>"
IBAN: Final = "<iban>"
PHONE: Final = "<phone>"

__all__ = [
    "CARD",
    "CREDENTIALS",
    "EMAIL",
    "HOME",
    "HOST",
    "IBAN",
    "IP",
    "JWT",
    "PHONE",
    "PRIVATE_KEY",
    "SECRET",
    "TOKEN",
    "USER",
    "Rule",
    "Scrubber",
    "names_a_secret",
]

Span = tuple[int, int, str]


@dataclass(frozen=True)
class Rule:
    """An extra rule an app adds: ``pattern`` is replaced by ``replace(match)`` wherever one of
    ``triggers`` occurs in the text (``ignore_case`` compares the triggers case-insensitively)."""

    name: str
    pattern: str
    replace: Callable[[re.Match[str]], str]
    triggers: tuple[str, ...]
    ignore_case: bool = False


# -- token formats -----------------------------------------------------------------------------

# The text is screened as bytes, one byte per character (non-ASCII becomes "?"), mapped through
# tables so that C's substring search finds what needs a look in Python: a run of 12 characters
# tokens are made of, a digit group that may start an IP, a card or an IBAN. A regex scan over
# the text would cost 10-20 us per KB each; the mapping and the searches cost about one.
_TOKEN_CHARS: Final = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+/.~"
# Whether a byte is a token character, as 1 or 0: a run's bounds are read one byte at a time.
_IS_TOKEN_BYTE: Final = bytes(1 if byte in _TOKEN_CHARS else 0 for byte in range(256))
_RUN_TABLE: Final = bytes(ord("a") if byte in _TOKEN_CHARS else ord(" ") for byte in range(256))
# A run of 12 token characters: the shortest a token format matches.
_RUN_START_RE: Final = re.compile(b"[" + re.escape(_TOKEN_CHARS) + b"]{12}")
_SEGMENT_TABLE: Final = bytes(
    ord("a") if byte in _TOKEN_CHARS and byte not in b".~" else ord(" ") for byte in range(256)
)
# The number map: a digit is "0", an upper case letter "Q", a blank or a dash (a card's group
# separators) "-", a dot itself, anything else "x".
_NUM_TABLE: Final = bytes(
    ord("0")
    if 48 <= byte <= 57
    else ord("Q")
    if 65 <= byte <= 90
    else ord("-")
    if byte in b" -"
    else byte
    if byte == ord(".")
    else ord("x")
    for byte in range(256)
)
_MIN_SCAN: Final = 7


@dataclass(frozen=True)
class _CompiledToken:
    rule: rules.TokenRule
    regex: re.Pattern[str]
    lead: re.Pattern[str] | None


def _compile_tokens() -> tuple[
    dict[str, list[tuple[str, _CompiledToken]]], list[tuple[bytes, _CompiledToken]]
]:
    by_head: dict[str, list[tuple[str, _CompiledToken]]] = {}
    infixes: list[tuple[str, _CompiledToken]] = []
    for rule in rules.TOKEN_RULES:
        lead = re.compile(rule.lead) if rule.lead else None
        compiled = _CompiledToken(rule, re.compile(rule.pattern), lead)
        for prefix in rule.prefixes:
            if lead is not None:
                infixes.append((prefix, compiled))
            else:
                by_head.setdefault(prefix[:2], []).append((prefix, compiled))
    infix_table = [(infix.encode(), compiled) for infix, compiled in infixes]
    for entries in by_head.values():
        entries.sort(key=lambda entry: len(entry[0]), reverse=True)
    return by_head, infix_table


_BY_HEAD, _INFIXES = _compile_tokens()
# A full DFA: about 1 ms to build at import, and a third faster per KB than the default NFA.
_DFA: Final = ahocorasick_rs.Implementation.DFA


def _needle(word: bytes) -> ahocorasick_rs.BytesAhoCorasick:
    """A finder for one word, whose ``find_matches_as_indexes`` is a SIMD memmem: C's ``find``
    and ``in`` read a needle of two to ten bytes a few bytes at a time, four to eight times
    slower over a KB of log."""
    return ahocorasick_rs.BytesAhoCorasick(
        [word], implementation=_DFA, matchkind=ahocorasick_rs.MatchKind.LeftmostFirst
    )


# One automaton finds every prefix of two or more characters and every infix in one pass, so
# that only runs starting with a prefix are tried against the formats, and the markers the first
# pass asks about (key blocks, URLs, webhook hosts). One-character heads (Discord's "M", "N",
# "O") would match everywhere: their runs are tried in the long-run loop.
_SINGLE_HEADS: Final = "".join(head for head in _BY_HEAD if len(head) == 1)
_PREFIX_WORDS: Final = frozenset(
    prefix.encode() for entries in _BY_HEAD.values() for prefix, _ in entries if len(prefix) > 1
)
_KEY_BLOCK_MARKERS: Final = (b"PRIVATE KEY", b"PuTTY-User-Key")
_URL_MARKER: Final = b"://"
_URL_RULES: Final = tuple((trigger.encode(), re.compile(pattern)) for trigger, pattern in rules.URL_RULES)
_TOKEN_WORDS: Final = tuple(
    sorted(
        _PREFIX_WORDS
        | {infix for infix, _ in _INFIXES}
        | {*_KEY_BLOCK_MARKERS, _URL_MARKER}
        | {trigger for trigger, _ in _URL_RULES}
    )
)
_TOKEN_FINDER: Final = ahocorasick_rs.BytesAhoCorasick(_TOKEN_WORDS, implementation=_DFA)
# In the number map: ".0.0." (an IPv4 address's middle: groups of one to three digits), two
# groups of four digits (a card), "QQ00" (an IBAN's country and check digits). One automaton
# per kind, each leftmost-first: its prefilter skips to the words' first bytes (a word alone is
# searched with SIMD), where one automaton for all of them read every byte of the map (cards
# and IBANs start with its commonest bytes, digits and capitals) and cost three times as much.
_IPV4_FINDER: Final = ahocorasick_rs.BytesAhoCorasick(
    [b"." + b"0" * first + b"." + b"0" * second + b"." for first in (1, 2, 3) for second in (1, 2, 3)],
    implementation=_DFA,
    matchkind=ahocorasick_rs.MatchKind.LeftmostFirst,
)
_CARD_FINDERS: Final = (_needle(b"00000000"), _needle(b"0000-0000"))
# Both card words, where a text holds both (rare: the regex scan costs more than the finders).
_CARD_HINT_RE: Final = re.compile(rb"00000000|0000-0000")
_IBAN_FINDER: Final = _needle(b"QQ00")


@dataclass(frozen=True)
class _NumberHints:
    """Where IPv4 addresses, cards and IBANs may be, as a left-to-right scan finds them: a hint
    inside the one before is left out (each kind's hints have one length per start)."""

    ipv4: list[int]
    cards: list[tuple[int, int]]
    ibans: list[int]


def _find_marks(folded: bytes, numbers: bytes) -> tuple[_Words, _NumberHints]:
    """Where each token word starts in the folded text, and the number hints of the number map."""
    places: _Words = defaultdict(list)
    for index, start, _end in _TOKEN_FINDER.find_matches_as_indexes(folded, overlapping=True):
        places[_TOKEN_WORDS[index]].append(start)
    runs, groups = (finder.find_matches_as_indexes(numbers) for finder in _CARD_FINDERS)
    if runs and groups:  # where they interleave, each finder's own left-to-right scan differs
        cards = [found.span() for found in _CARD_HINT_RE.finditer(numbers)]
    else:
        cards = [(start, end) for _, start, end in runs or groups]
    hints = _NumberHints(
        [start for _, start, _end in _IPV4_FINDER.find_matches_as_indexes(numbers)],
        cards,
        [start for _, start, _end in _IBAN_FINDER.find_matches_as_indexes(numbers)],
    )
    return places, hints


# Where each word of an automaton starts, in order, overlapping ones included.
_Words = dict[bytes, list[int]]


_SPACE: Final = ord(" ")
_DIGIT: Final = ord("0")
# The shortest run the entropy fallback can call random, and the shortest start of Discord's
# format (the one-character heads'): runs shorter than this are not visited (see _claim_long_runs).
_LONG_RUN: Final = 24
_LONG_SEED_END: Final = b"a" * _LONG_RUN + b" "
_HEX_DIGITS: Final = "0123456789abcdefABCDEF"
_QUOTES: Final = frozenset("\"'`")
_HAS_DIGIT_RE: Final = re.compile(r"\d")
_WORDISH_RE: Final = re.compile(r"[a-z]+(?:[_\-.][a-z]+)*\d*")


def _one_case_or_letters(body: str) -> bool:
    """An unquoted run _looks_random always rejects: hex or one case only, or letters only."""
    return body.islower() or body.isupper() or body.isalpha()


def _looks_random(candidate: str, quoted: bool) -> bool:
    """The high-entropy fallback for a run no token format claimed (detect-secrets' idea).

    Hex runs are digests and ids unless quoted; other runs must mix upper case, lower case
    and digits; the entropy bar is lower inside quotes, where a value is more likely a literal
    secret than prose. Cheap string tests come first: most runs are words, paths and names.
    """
    body = candidate.rstrip("=")
    length = len(body)
    if length < 20 or "." in body or "~" in body:
        return False
    if not body.strip(_HEX_DIGITS):
        return quoted and length >= 32 and shannon_entropy(body) > 3.0
    if body.islower() or body.isupper() or body.isalpha() or (length == 36 and body.count("-") == 4):
        return False
    if quoted:
        return length >= 24 and shannon_entropy(body) >= 3.7
    if length < 24 or _HAS_DIGIT_RE.search(body) is None:
        return False
    return shannon_entropy(body) >= 4.2


def _scan_spans(
    text: str, folded: bytes, numbers: bytes, places: _Words, hints: _NumberHints, spans: list[Span]
) -> None:
    for infix, compiled in _INFIXES:
        after = 0
        for at in places.get(infix, ()):
            if at >= after:
                _claim_infix(text, at, compiled, spans)
                after = at + len(infix)
    claimed = _claim_runs_by_prefix(text, folded, places, spans)
    _claim_long_runs(text, folded, claimed, spans)
    if hints.ipv4:
        _ipv4_spans(text, numbers, hints.ipv4, spans)
    if hints.cards:
        _card_spans(text, numbers, hints.cards, spans)
    if hints.ibans:
        _iban_spans(text, hints.ibans, spans)


def _claim_runs_by_prefix(text: str, folded: bytes, places: _Words, spans: list[Span]) -> set[int]:
    """Each run of 12 or more token characters that starts with a prefix, tried against the
    formats of its first two characters; the starts of the runs a format claimed."""
    tried: set[int] = set()
    claimed: set[int] = set()
    for word, starts in places.items():
        if word not in _PREFIX_WORDS:
            continue
        for at in starts:
            if at in tried or (at and _IS_TOKEN_BYTE[folded[at - 1]]) or not _RUN_START_RE.match(folded, at):
                continue  # inside a run, or a run too short to look at
            tried.add(at)
            if _claim_prefix(text, at, _BY_HEAD[text[at : at + 2]], spans):
                claimed.add(at)
    return claimed


def _claim_long_runs(text: str, folded: bytes, claimed: set[int], spans: list[Span]) -> None:
    """Runs long enough for a one-character head's format or the entropy fallback: runs under
    24 characters (most words, names and paths) are not visited, except where a non-ASCII
    character ends one (see _claim_runs_before_non_ascii).

    The search is for 24 token characters without a dot or a tilde (a segment): a run with
    one is a module path, a file name or a version, never random (see _looks_random), and
    half the long runs of a log. Only a one-character head's format is tried on such a run,
    at its start, and the format (Discord's) begins with 24 characters of [\\w-]: a segment.
    The entropy fallback needs 24 characters too (32 for hex), so a shorter segment could
    only be looked at to be let go."""
    length = len(text)
    # The search is for the end of a segment (its last 24 characters and the space after it):
    # C's search for 24 of the same byte alone compares each byte of a shorter run many times.
    segments = folded.translate(_SEGMENT_TABLE) + b" "
    end = segments.find(_LONG_SEED_END)
    while end >= 0:
        end += _LONG_RUN
        at = segments.rfind(b" ", 0, end) + 1
        if (at == 0 or not _IS_TOKEN_BYTE[folded[at - 1]]) and at not in claimed:  # it starts a run
            head = text[at]
            single = head in _SINGLE_HEADS and text[at : at + 2] not in _BY_HEAD
            if single and _claim_prefix(text, at, _BY_HEAD[head], spans):
                pass
            elif end == length or not _IS_TOKEN_BYTE[folded[end]]:  # and it is the whole run
                body = text[at:end]
                quoted = at > 0 and text[at - 1] in _QUOTES
                if (
                    quoted or not (body.islower() or body.isupper() or body.isalpha())
                ) and not text.startswith(rules.PUBLIC_ID_PREFIXES, at):
                    _random_run(text, at, end, spans)
                # else: most long runs of a log (hex ids, snake_case names, providers' request
                # ids), which _random_run rules out first (see _one_case_or_letters): no call
        end = segments.find(_LONG_SEED_END, end + 1)
    if not text.isascii():
        _claim_runs_before_non_ascii(text, folded, claimed, spans)


def _claim_runs_before_non_ascii(text: str, folded: bytes, claimed: set[int], spans: list[Span]) -> None:
    """A pattern's ``\\w`` also matches non-ASCII letters, which are not token characters, so a
    one-character head's format may reach past a run of 12 to 23 that such a letter ends.
    Non-ASCII characters are "?" in the folded text (C finds those faster than a regex)."""
    runs = b""  # the runs map, made when a run ends with such a letter
    end = folded.find(b"?")
    while end >= 0:
        if end and _IS_TOKEN_BYTE[folded[end - 1]] and not text[end].isascii():
            runs = runs or folded.translate(_RUN_TABLE)
            at = runs.rfind(b" ", 0, end) + 1
            single = text[at] in _SINGLE_HEADS and text[at : at + 2] not in _BY_HEAD
            if single and 12 <= end - at < _LONG_RUN and at not in claimed:
                _claim_prefix(text, at, _BY_HEAD[text[at]], spans)
        end = folded.find(b"?", end + 1)


def _random_run(text: str, at: int, end: int, spans: list[Span]) -> None:
    """The entropy fallback for a run of 24 or more, without dots, that no format claimed."""
    body_end = end
    while end < len(text) and text[end] == "=":
        end += 1
    quote = text[at - 1] if at else ""
    quoted = quote != "" and quote in "\"'`" and text[end : end + 1] == quote
    if not quoted and _one_case_or_letters(text[at:body_end]):
        return  # most long runs of a log: what _looks_random rules out first, without a call
    run = text[at:end]
    if run.startswith(rules.PUBLIC_ID_PREFIXES):
        return
    if _looks_random(run, quoted):
        spans.append((at, end, SECRET))


def _claim_prefix(
    text: str, start: int, entries: list[tuple[str, _CompiledToken]], spans: list[Span]
) -> bool:
    """A token format whose prefix starts the run at ``start``; True when one matched."""
    for prefix, compiled in entries:
        if text.startswith(prefix, start):
            found = compiled.regex.match(text, start)
            if found:
                spans.append((start, found.end(), compiled.rule.placeholder))
                return True
    return False


def _claim_infix(text: str, at: int, compiled: _CompiledToken, spans: list[Span]) -> None:
    """A token format found by a prefix inside a token (its lead comes before). The format,
    anchored, fails fast ("AA" in a tracking number); the lead is searched over a window."""
    found = compiled.regex.match(text, at)
    if found:
        lead_start = _lead_start(text, at, compiled)
        if lead_start is not None:
            spans.append((lead_start, found.end(), compiled.rule.placeholder))


def _lead_start(text: str, at: int, compiled: _CompiledToken) -> int | None:
    assert compiled.lead is not None
    window_start = max(0, at - 96)
    found = compiled.lead.search(text, window_start, at)
    if found is None:
        return None
    begin = found.start()
    if begin > 0 and (text[begin - 1].isalnum() or text[begin - 1] in "_-"):
        return None
    return begin


# -- secret names ------------------------------------------------------------------------------

_SEGMENT_RE: Final = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_VALUE_SUFFIXES: Final = frozenset(
    {"value", "val", "str", "string", "b64", "base64", "hex", "raw", "plain", "plaintext", "text", "data"}
)


@lru_cache(maxsize=4096)
def _name_kind(name: str) -> str | None:
    """What a name says of its value: "secret", "key" (secret if it looks like one), "pass"
    (secret after "="), "auth" (an Authorization header), or None."""
    low = name.lower().strip("$@-_.[]'\"` ")
    if not low or low in rules.NOT_SECRET_NAMES:
        return None
    segments = [segment.lower() for segment in _SEGMENT_RE.findall(name)]
    if not segments:
        return None
    last = segments[-1]
    if len(segments) > 1 and last in _VALUE_SUFFIXES:
        segments.pop()
        last = segments[-1]
    if any(part in low for part in rules.SECRET_HOLDER_NAMES):
        return "secret"
    if len(segments) > 1 and last in rules.ABOUT_A_SECRET:
        return None
    if last == "authorization" or low.endswith("authorization"):
        return "auth"
    if any(part in low for part in rules.STRONG_NAME_PARTS):
        return None if "secretary" in low else "secret"
    if last in rules.SECRET_SEGMENTS:
        if last in {"pass", "pw", "pwd", "pat", "auth"} and len(segments) == 1:
            return "pass" if last in {"pass", "auth"} else None
        return "secret"
    if last.endswith("token") and len(last) > 5:
        return "secret"
    if last in rules.KEY_SEGMENTS:
        if len(segments) > 1 and segments[-2] in rules.NOT_SECRET_KEY_KINDS:
            return None
        return "key"
    if last.endswith("key") and len(last) > 3 and low.replace("_", "").replace("-", "").endswith("key"):
        # Glued names such as "cloudantkey", "slapikey": treated like "..._key".
        return "key" if not last.endswith(("monkey", "turkey", "hotkey", "donkey", "whiskey")) else None
    return None


def names_a_secret(name: str) -> bool:
    """Whether a structured key (``password``, ``api_key``, ``db.pass``, ``X-Api-Key``...)
    names a secret, so that its value is redacted whole whatever it looks like. A bare ``key``
    does not: in structured data it is far more often a lookup key than a credential."""
    kind = _name_kind(name)
    if kind == "key":
        return name.lower().strip("$@-_.") not in {"key", "keys"}
    return kind is not None


_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.$")
_STEMS: Final = (
    b"pass",
    b"pwd",
    b"secret",
    b"token",
    b"key",
    b"auth",
    b"cred",
    b"sig",
    b"dsn",
    b"cookie",
    b"_url",
    b"databaseurl",
    b"database-url",
    # A connection string's names, not "conn": "connection" is mostly prose in a log.
    b"conn_str",
    b"connection_string",
    b"connectionstring",
    b"pat",  # a personal access token: GITHUB_PAT, gitlabPat, ci.pat
    b"_pw",
    b"pw",  # dbPw, db-pw: found with C's find (see _SHORT_STEMS)
    b"contrase",  # contraseña, contrasena
)
# Prose words that hold a short stem ("pat", above): listed before the stems, they are what a
# leftmost-first automaton reports where they start, and they are let go at once. No name the
# rules call secret is spelled with one of them where its stem is.
_NOT_NAMES: Final = (b"path", b"patch", b"pattern", b"compat", b"dispatch", b"spatial")
_STEM_TEXTS: Final = tuple(stem.decode() for stem in _STEMS)
# Decoys: prose words of a log that end a name, each with a character that may follow it
# ("max_tokens=4096", "1400 tokens,", "57 passed"). The automaton reports the decoy where the
# stem inside it starts, and the decoy is let go: no rule calls a name secret for its last
# segment "tokens" or "passed", only for a secret name's part running into it, and such a part
# holds another stem further left, which the automaton reports instead; after the few that do
# not (see _holders: "access_tokens"), the stem is looked at. A decoy costs a fifth of a
# stem's look, and a log has dozens.
_DECOY_STEMS: Final = {b"tokens": b"token", b"passed": b"pass"}
# Longer than any name a secret is given: a longer run of name characters is text.
_LONGEST_NAME: Final = 256
# A decoy's other stems are sure to reach its end only where its name starts this close before
# it; a longer name (no blank this far back) has its stem looked at.
_DECOY_REACH: Final = _LONGEST_NAME - max(len(word) for word in _DECOY_STEMS) - 2
_DECOY_ENDS: Final = b" =,:)\n\t"  # (more ends slow the automaton more than they save)


def _holders(word: bytes) -> tuple[bytes, ...]:
    """What a decoy's name must end with before it for the stem it hides to matter: the start of
    a secret name's part that runs into the decoy and holds no other stem ("access_" of
    "access_token", against "access_tokens=")."""
    starts = set()
    for part in (*rules.STRONG_NAME_PARTS, *rules.SECRET_HOLDER_NAMES):
        low = part.lower().encode("ascii", "replace")
        for size in range(1, len(word) + 1):
            if low.endswith(word[:size]):
                start = low[:-size]
                if not any(0 <= low.find(other) < len(start) for other in _STEMS):
                    starts.add(start)
    return tuple(sorted(starts))


_DECOYS: Final = {
    word + bytes([end]): (stem, _holders(word)) for word, stem in _DECOY_STEMS.items() for end in _DECOY_ENDS
}
# In the names map a name character is "n" and anything else a space, so that C's find and rfind
# give the bounds of the name around a stem.
_NAME_TABLE: Final = bytes(ord("n") if chr(byte) in _NAME_CHARS else ord(" ") for byte in range(256))
_IN_A_NAME: Final = ord("n")
# A value is read at most this far: in text where names and values are glued together
# ("key=val|key=val|..."), each name's value would otherwise run to the end of the text, and
# the pass would take time in the square of the text's length (8 KB took half a second, the
# 200,000 characters of full content minutes). A longer bare value is still replaced whole:
# its end is found by C (see _run_end), once for all the names inside it.
_LONGEST_VALUE: Final = 512
_LONGEST_QUOTED_VALUE: Final = 4096
# The blanks before an operator are taken whole ("*+"): split between the gap and the blanks
# after a missing operator, a run of them was tried every way, in the square of its length
# ("--password" and 10,000 blanks took 5 s).
_ASSIGN_RE: Final = re.compile(
    r"(?P<close>(?:\\*[\"'`]|\[\d*\]|\])*)(?P<gap>[ \t]*+)"
    r"(?P<op>:=|=>|===|!==|==|!=|\?=|\+=|=|:(?![:/\\]))?[ \t]*+@?"
    rf"(?:(?P<q>\\*[\"'`])(?P<quoted>[^\n]{{0,{_LONGEST_QUOTED_VALUE}}}?)(?P=q)"
    rf"|(?P<bare>[^\s\"'`,;&]{{1,{_LONGEST_VALUE}}})|(?P<long>[\"'`]))"
)
# A quote, to find the one that closes a value too long for _ASSIGN_RE's quoted form (its
# "long" group is the opening quote alone).
_QUOTE_RES: Final = {quote: re.compile(quote) for quote in "\"'`"}
_BARE_VALUE_ENDS_RE: Final = re.compile(r"[\s\"'`,;&]")
_AUTH_VALUE_ENDS_RE: Final = re.compile(r"[\s\"'`,;]")
_LINE_END_RE: Final = re.compile(r"\n")
_SEMICOLON_RE: Final = re.compile(";")
_NOT_EQUALS: Final = _needle(b"!=")
# The run of value characters last found around a place, per kind of run: (from, to).
_RunEnds = dict[re.Pattern[str], tuple[int, int]]


def _run_end(text: str, at: int, ends: re.Pattern[str], known: _RunEnds) -> int:
    """Where the run of value characters going on at ``at`` ends: the first character ``ends``
    matches. The last run found is kept, and every place inside it has the same end."""
    start, end = known.get(ends, (-1, -1))
    if start <= at <= end:
        return end
    found = ends.search(text, at)
    end = found.start() if found else len(text)
    known[ends] = (at, end)
    return end


# apikey "value"; (a statement in C-like languages: no operator, quotes and a semicolon)
_QUOTED_STATEMENT_RE: Final = re.compile(
    rf"(?P<gap>[ \t]*)(?P<q>[\"'`])(?P<quoted>[^\n]{{0,{_LONGEST_QUOTED_VALUE}}}?)(?P=q)(?=;)"
)
# "value" == password (detect-secrets' reversed comparison).
_REVERSED_RE: Final = re.compile(r"(?P<q>[\"'`])(?P<value>[^\"'`\n]+)(?P=q)[ \t]*[!=]{2,3}[ \t]*\Z")
_CODE_VALUE_RE: Final = re.compile(
    r"[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)+\Z|[A-Za-z_$][\w$.]*[(\[]|\$\{?[A-Za-z_]\w*\}?\Z"
    r"|%[sd(]|\{\{.*\}\}\Z|\{\}\Z|<[^<>]*>\Z|\*+\Z|\.\.\.\Z"
)
_SCHEME_RE: Final = re.compile(r"(?P<scheme>[A-Za-z][\w.-]*)[ \t]+(?P<cred>[^\s\"'`,;]+)")
_CRED_AFTER_SCHEME_RE: Final = re.compile(r"[ \t]+(?P<cred>[A-Za-z0-9._~+/-]{8,}=*)(?![\w=+/-])")
_BARE_VALUE_RE: Final = re.compile(r"[^\s\"'`,;]+")
_TOKENISH_RE: Final = re.compile(r".*(?:\d|[._~+/=-]|[a-z][A-Z]|[A-Z]{2}[a-z])")


def _is_tokenish(value: str) -> bool:
    return _TOKENISH_RE.match(value) is not None


_ASCII_DIGIT_RE: Final = re.compile(r"[0-9]")
_ASCII_LETTER_RE: Final = re.compile(r"[A-Za-z]")


def _credential_like(value: str, quoted: bool) -> bool:
    if len(value) < 12 or " " in value or ":" in value or value.startswith(("/", "./", "~/")):
        return False
    if value.isascii():  # C's regex, not a loop of Python over each character
        has_digit = _ASCII_DIGIT_RE.search(value) is not None
        has_alpha = _ASCII_LETTER_RE.search(value) is not None
    else:
        has_digit = any(char.isdigit() for char in value)
        has_alpha = any(char.isalpha() for char in value)
    return (has_digit and has_alpha) or (quoted and len(value) >= 16)


def _balanced_end(value: str) -> int:
    """Drop closing brackets the value did not open: "(password=abc)" keeps its ")"."""
    end = len(value)
    if not value.endswith((")", "]", "}")):
        return end
    for opener, closer in (("(", ")"), ("[", "]"), ("{", "}")):
        while end and value[end - 1] == closer and value.count(opener, 0, end) < value.count(closer, 0, end):
            end -= 1
    return end


def _end_of_name(text: str, at: int, stop: int) -> int:
    """Where a name that goes on with letters outside ASCII ends (the names map stops there),
    looking no further than ``stop``."""
    stop = min(stop, len(text))
    while at < stop and (text[at] in _NAME_CHARS or (not text[at].isascii() and text[at].isalnum())):
        at += 1
    return at


def _assignment_spans(text: str, lowered: bytes, words: _Words, spans: list[Span]) -> None:
    """Each name that holds a stem, once, in the order of its first stem in _STEMS, then of
    place (the first span of two at one place wins in _apply).

    Most names with a stem in a log are prose ("token validation failed", "passed in 0.4s"):
    what follows them cannot give them a value, which a few tests of single characters tell
    (a superset of what _assignment_at accepts) before the name is even sliced out. The
    characters are read from ``lowered`` as numbers: a method call or a slice costs twenty
    times as much here, and there are dozens of names per KB of a log."""
    names = lowered.translate(_NAME_TABLE)
    length = len(text)
    # A name given no value still matters after "==" or "!=" ("value" == password) or in an
    # XML element (<password>...). Whether the text could hold either is asked once.
    # ("!=" is rare, and its finder reads the text faster than C's search; "==" is common in
    # logs, "=====" lines give dozens of matches, and C's search stops at the first.)
    compared = b"==" in lowered or bool(_NOT_EQUALS.find_matches_as_indexes(lowered))
    tagged = b"<" in lowered
    found: list[tuple[int, int, int, str, str, bool]] = []
    walked_from = walked_to = -1
    for word, starts in words.items():
        if word not in _NAME_WORDS:
            continue  # a home marker ending with a separator: no stem overlaps it
        last = len(word) - 1  # the word's last character is in the name it was found in
        # A stem is all name characters, so its name starts at or before it; "documents and
        # settings" holds blanks, and its name starts after the last one ("Settingsecret=").
        inside = 0 if word in _STEM_WORDS else last
        for at in starts:
            # A name with two stems is looked at twice here (cheaper than remembering every
            # name), and once below.
            # A name is looked for no further than _LONGEST_NAME around its stem: in a run of
            # text glued together ("token_token_..."), every stem would otherwise read the
            # rest of the run, and a long value would take time in the square of its length.
            stop = at + _LONGEST_NAME
            end = names.find(b" ", at + last, stop)
            if end < 0:
                if stop < length:
                    continue  # no name is this long
                end = length
            if end < length and lowered[end] == _QUESTION and not text[end].isascii():
                # "contraseña": a letter of another script goes on. How far the last walk got is
                # kept, so that a run of such names glued together is walked once, not per stem.
                if not walked_from <= end <= walked_to:
                    walked_from = walked_to = end
                walked_to = _end_of_name(text, walked_to, stop)
                end = walked_to
                if end >= stop:
                    continue  # no name is this long
            while lowered[end - 1] == _DOT:  # stops at the word, which ends with a letter
                end -= 1  # "...the token." ends a sentence
            follows = _FOLLOWS_A_NAME[lowered[end]] if end < length else _NO_VALUE
            if follows == _VALUE:
                assignable = True  # a closing quote or bracket, an operator
            elif follows == _BLANK:
                # After blanks: an operator or a quote, or anything for a command-line flag.
                rest = end + 1
                while rest < length and (lowered[rest] == _SPACE or lowered[rest] == _TAB):
                    rest += 1
                then = _FOLLOWS_BLANKS[lowered[rest]] if rest < length else _NO_VALUE
                assignable = then == _VALUE or (then == _NOT_ASCII_OR_QUESTION and text[rest] == "?")
            elif follows == _NOT_ASCII_OR_QUESTION:
                assignable = text[end] == "?"  # "?=", or a letter of another script
            else:
                assignable = False
            # Where the name starts: most often at the stem itself.
            if not inside and (at == 0 or names[at - 1] == _SPACE):
                begin = at
            else:
                floor = at + inside - _LONGEST_NAME
                begin = names.rfind(b" ", floor if floor > 0 else 0, at + inside) + 1
                if begin == 0 and floor > 0:
                    continue  # no name is this long
            if not assignable and follows == _BLANK:
                assignable = lowered[begin] == _DASH  # a command-line flag: --password s3cret
            if not assignable:
                tag = tagged and follows == _TAG_END and begin > 0 and lowered[begin - 1] == _TAG_START
                if not (tag or (compared and _EQUALS in lowered[begin - 4 if begin > 4 else 0 : begin])):
                    continue  # no value, no reversed comparison ("value" == name), no XML element
            name = text[begin:end]
            secret = _secret_name(name)
            if secret is not None:  # most names with a stem hold none: "tokens", "passed", "monkeypatch"
                found.append((secret[0], begin, end, name, secret[1], assignable))
    if len(found) > 1:
        found.sort()
    known: _RunEnds = {}
    previous = -1
    for _first, begin, end, name, kind, assignable in found:
        if begin != previous:  # a name with two stems comes twice, side by side once sorted
            _assignment_at(text, begin, end, name, kind, assignable, spans, known)
            previous = begin


@lru_cache(maxsize=4096)
def _secret_name(name: str) -> tuple[int, str] | None:
    """For a name that names a secret: the place in _STEMS of the first stem it holds (names are
    looked at in that order) and its kind (see _name_kind). None for any other name, and for a
    name found by an overlapping word that holds no stem alone ("basic" in "basicookie" hides
    "cookie")."""
    kind = _name_kind(name)
    if kind is None:
        return None
    low = name.lower()
    for index, stem in enumerate(_STEM_TEXTS):
        if stem in low:
            return index, kind
    return None


def _assignment_at(
    text: str,
    begin: int,
    end: int,
    name: str,
    kind: str,
    assignable: bool,
    spans: list[Span],
    known: _RunEnds,
) -> None:
    """The value given to the secret name ``text[begin:end]``, if any, by any of the forms
    _ASSIGN_RE, _QUOTED_STATEMENT_RE, _REVERSED_RE and XML elements spell. ``assignable``:
    what follows the name can give it a value (a closing quote or bracket; after blanks an
    operator, a quote or "@", or for a command-line flag anything). Prose ("the token is
    expired") fails there, before any regex runs."""
    before = text[begin - 4 if begin > 4 else 0 : begin]
    reversed_value = (
        _REVERSED_RE.search(text, max(0, begin - 200), begin)
        if "=" in before and before.rstrip().endswith(("==", "!="))
        else None
    )
    if reversed_value and kind != "key":
        spans.append((reversed_value.start("value"), reversed_value.end("value"), SECRET))
    if begin > 0 and text[begin - 1] == "<" and text[end : end + 1] == ">":
        # On the same line, and read at most as far as a quoted value.
        tag = f"</{name}>"
        stop = min(_run_end(text, end + 1, _LINE_END_RE, known), end + 1 + _LONGEST_QUOTED_VALUE + len(tag))
        closing = text.find(tag, end + 1, stop)
        if closing > end + 1:
            spans.append((end + 1, closing, SECRET))  # <password>value</password>
        return
    if not assignable:
        return
    found = _ASSIGN_RE.match(text, end)
    if (found is None or found.group("op") is None) and _run_end(text, end, _SEMICOLON_RE, known) < _run_end(
        text, end, _LINE_END_RE, known
    ):  # a statement ends with ";" on its line
        found = _QUOTED_STATEMENT_RE.match(text, end) or found
    if found is None:
        return
    if found.re is _ASSIGN_RE:
        op, quote, value, gap, long = found.group("op", "q", "quoted", "gap", "long")
    else:
        op = long = None
        quote, value, gap = found.group("q", "quoted", "gap")
    found_end = found.end()
    if long is not None:
        # A quoted value longer than the regex reads: its closing quote, on the same line, is
        # found by C, once for all the names before it (a search per name would read the rest
        # of the line each time). After an operator only: a name's own closing quote ("key'")
        # is not a value's opening one.
        if op is None:
            return
        closing = _run_end(text, found_end, _QUOTE_RES[long], known)
        if closing >= _run_end(text, found_end, _LINE_END_RE, known):
            return  # no closing quote on the line: not a quoted value
        quote, value_start, value, found_end = long, found_end, text[found_end:closing], closing + 1
    else:
        if quote is None:
            value = found.group("bare")
        value_start = found.start("bare" if quote is None else "quoted")
    quoted = quote is not None
    if op is None:
        after = text[found_end : found_end + 1]
        cli_flag = name.startswith("-") and bool(gap)
        if not (quoted and after == ";") and not cli_flag:
            return
    if not value:
        return
    if kind == "auth":
        _authorization_value(text, value_start, found_end if quoted else None, spans, known)
        return
    if kind == "pass" and op not in {"=", ":=", "=>", "?="}:
        return
    value_end = value_start + len(value)
    if not quoted:
        if _CODE_VALUE_RE.match(value) or value == name or value.lower() in rules.STATUS_WORDS:
            return
        if op == ":" and value.isalpha() and value.islower():
            rest = text[found_end : found_end + 2]
            if rest[:1] == " " and rest[1:].isalpha():
                return  # prose: "invalid password: must contain a digit"
        if len(value) == _LONGEST_VALUE:  # read this far: the rest of its run goes too
            value_end = _run_end(text, value_end, _BARE_VALUE_ENDS_RE, known)
        else:
            value = value[: _balanced_end(value)]
            value_end = value_start + len(value)
    elif value.startswith(("${", "{{", "<", "%(")) or value in {"%s", "{}"}:
        return
    if value.startswith("<") and value.endswith(">"):
        return
    if kind == "key" and not _credential_like(value, quoted):
        return
    spans.append((value_start, value_end, SECRET))


_CLOSERS: Final = "\\\"'`[]"
_OPERATOR_OR_QUOTE: Final = ":=!?+\"'`@\\"
# Characters as numbers, for the bytes of the lowered text, where one outside ASCII is "?".
_DOT: Final = ord(".")
_TAB: Final = ord("\t")
_DASH: Final = ord("-")
_TAG_START: Final = ord("<")
_EQUALS: Final = ord("=")
_QUESTION: Final = ord("?")
_NO_VALUE, _VALUE, _BLANK, _NOT_ASCII_OR_QUESTION, _TAG_END = range(5)


def _follows_table(values: str) -> bytes:
    """What a byte after a name (or after the blanks that follow it) says: ``values`` may start
    or announce a value; blanks are looked past; "?" is "?=" or a character outside ASCII."""
    kinds = bytearray(_NO_VALUE for _ in range(256))
    for char in values:
        kinds[ord(char)] = _VALUE
    kinds[ord(" ")] = kinds[_TAB] = _BLANK
    kinds[ord("?")] = _NOT_ASCII_OR_QUESTION
    kinds[ord(">")] = _TAG_END
    return bytes(kinds)


# Right after a name given a value: a closing quote or bracket, an operator or a quote.
_FOLLOWS_A_NAME: Final = _follows_table(_CLOSERS + _OPERATOR_OR_QUOTE)
_FOLLOWS_BLANKS: Final = _follows_table(_OPERATOR_OR_QUOTE)


def _authorization_value(
    text: str, start: int, quoted_end: int | None, spans: list[Span], known: _RunEnds
) -> None:
    """ "Bearer abc", "Api-Token abc" or a bare credential: the credential goes, the scheme stays.
    Read at most _LONGEST_VALUE far, like any value; a credential cut there goes to its end."""
    end = len(text) if quoted_end is None else quoted_end
    window = min(end, start + _LONGEST_VALUE)
    scheme = _SCHEME_RE.match(text, start, window)
    if scheme:
        cred = scheme.group("cred")
        if not (cred.startswith("<") and cred.endswith(">")):
            cred_end = scheme.end("cred")
            if cred_end == window < end:
                cred_end = min(end, _run_end(text, cred_end, _AUTH_VALUE_ENDS_RE, known))
            spans.append((scheme.start("cred"), cred_end, TOKEN))
        return
    bare = _BARE_VALUE_RE.match(text, start, window)
    value = bare.group() if bare else ""
    if (
        value
        and not (value.startswith("<") and value.endswith(">"))
        and value.lower() not in rules.AUTH_SCHEMES
    ):
        value_end = start + len(value)
        if value_end == window < end:
            value_end = min(end, _run_end(text, value_end, _AUTH_VALUE_ENDS_RE, known))
        spans.append((start, value_end, TOKEN))


def _bare_scheme_spans(text: str, words: _Words, spans: list[Span]) -> None:
    """ "Bearer abc123" outside a header; "Basic configuration" is prose and stays."""
    length = len(text)
    for scheme in _BARE_SCHEMES:
        after = len(scheme)
        for at in words.get(scheme, ()):
            if at + after >= length or text[at + after] not in " \t":
                continue  # "tokens", "token:": no blank before a credential
            before = text[at - 1 : at]
            if not (before and (before.isalnum() or before in "_-")):
                found = _CRED_AFTER_SCHEME_RE.match(text, at + after)
                if found and _is_tokenish(found.group("cred")):
                    spans.append((found.start("cred"), found.end("cred"), TOKEN))


# -- the rest: keys, URLs, e-mail, paths, numbers -----------------------------------------------

_PRIVATE_KEY_RE: Final = re.compile(
    r"(?P<begin>-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----)(?P<body>[\s\S]*?)"
    r"(?P<end>-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)"
)
_PUTTY_RE: Final = re.compile(r"PuTTY-User-Key-File-\d+:?[^\n]*(?:\n(?!\n)[^\n]*)*")
_URL_CREDENTIALS_RE: Final = re.compile(r"://(?P<cred>[^\s/@:\"'<>]+(?::[^\s/@\"'<>]*)?)@(?=[\w\[])")
_EMAIL_DOMAIN_RE: Final = re.compile(r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.(?P<tld>[A-Za-z]{2,})(?![\w-])")
_LOCAL_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")
_NOT_EMAIL_LOCALS: Final = frozenset({"git", "hg"})
_FILE_TLDS: Final = frozenset(
    {"png", "jpg", "jpeg", "gif", "svg", "webp", "js", "css", "py", "ts", "json", "map"}
)
# /home/x, /Users/x, C:\Users\x (any slash, doubled or not), \\wsl$\distro\home\x,
# C:\Documents and Settings\x; a name may hold spaces when a separator follows it.
_HOME_AT_RE: Final = re.compile(
    r"(?i:[\\/]+(?:home|users|documents and settings)[\\/]+)"
    r"(?!<)(?P<name>[^\\/\s\"'<>|*?:]+(?: [^\\/\s\"'<>|*?:]+)*(?=[\\/])|[^\\/\s\"'<>|*?:,;)\]}]+)"
)
_HOME_TRIGGERS: Final = (
    b"/home/",
    b"\\home\\",
    b"/users/",
    b"\\users\\",
    b"/documents and settings",
    b"\\documents and settings",
)
# The words the second and third passes look for in the lowered text: secret-name stems, auth
# schemes, home folder markers. One Aho-Corasick automaton finds them all in one pass of compiled
# code; a bytes.find per word costs 0.5-1 us per KB each, and there are 33. It reports matches
# that do not overlap (leftmost first), which lets it skip ahead on rare bytes: 0.8 us per KB
# where reporting every match costs 2.5. What that leaves out is made up for below: a home
# marker may start at the separator another one ends with ("/home/users/"), and a stem hidden
# by an overlapping match ("_pwd", "basicookie") lies in a name already found (_assignment_spans).
_BARE_SCHEMES: Final = (b"bearer", b"basic", b"token")
# A stem of two letters ("pw") has an automaton of its own: the main one's prefilter reads the
# first three bytes of its words, and a word of two made its pass half again as slow. A word
# alone is searched with SIMD, a quarter of the cost of C's find. (An automaton's speed moves
# with its word set in ways measured, not designed: 33 words took 87k instructions per 8 KB of
# log where 32 took 147k. Measure a change with bench/scrubber.py.)
_SHORT_STEMS: Final = tuple(stem for stem in _STEMS if len(stem) < 3)
_SHORT_STEM_FINDERS: Final = tuple((stem, _needle(stem)) for stem in _SHORT_STEMS)
_WORDS: Final = tuple(
    dict.fromkeys(
        _NOT_NAMES
        + tuple(_DECOYS)
        + tuple(stem for stem in _STEMS if stem not in _SHORT_STEMS)
        + _BARE_SCHEMES
        + _HOME_TRIGGERS
    )
)
_WORD_FINDER: Final = ahocorasick_rs.BytesAhoCorasick(
    _WORDS, implementation=_DFA, matchkind=ahocorasick_rs.MatchKind.LeftmostFirst
)
# Words whose last character is a name's: stems, schemes, "documents and settings" (see above).
_NAME_WORDS: Final = frozenset(
    word
    for word in (*_WORDS[len(_NOT_NAMES) + len(_DECOYS) :], *_SHORT_STEMS)
    if chr(word[-1]) in _NAME_CHARS
)
_STEM_WORDS: Final = frozenset(_STEMS)
_ENDS_WITH_SEPARATOR: Final = frozenset(trigger for trigger in _HOME_TRIGGERS if trigger[-1] in b"/\\")


# What each word of the automaton is, by its index: let go, a decoy (let go unless what comes
# before it makes its stem matter), kept, or kept with the home markers that may start at its
# last character.
_SKIPPED, _DECOY, _KEPT, _KEPT_WITH_MARKERS = range(4)
_WORD_ROLES: Final = tuple(
    _SKIPPED
    if word in _NOT_NAMES
    else _DECOY
    if word in _DECOYS
    else _KEPT_WITH_MARKERS
    if word in _ENDS_WITH_SEPARATOR
    else _KEPT
    for word in _WORDS
)


def _find_words(lowered: bytes) -> _Words:
    found: _Words = defaultdict(list)
    for index, start, end in _WORD_FINDER.find_matches_as_indexes(lowered):
        role = _WORD_ROLES[index]
        if role == _SKIPPED:
            continue
        if role == _DECOY:
            stem, holders = _DECOYS[_WORDS[index]]
            near = start - _DECOY_REACH
            if lowered.endswith(holders, 0, start) or (  # "access_tokens": the stem is looked at
                near > 0
                and _NAME_TABLE[lowered[start - 1]] == _IN_A_NAME
                and lowered.rfind(b" ", near, start) < 0
            ):  # and in a name that may be too long for its other stems to reach its end
                found[stem].append(start)
            continue
        found[_WORDS[index]].append(start)
        if role == _KEPT_WITH_MARKERS:
            for trigger in _HOME_TRIGGERS:
                if lowered.startswith(trigger, end - 1):
                    found[trigger].append(end - 1)
    for stem, finder in _SHORT_STEM_FINDERS:
        # Inside a word found above ("pwd") too: the name is looked at once.
        starts = [start for _, start, _end in finder.find_matches_as_indexes(lowered)]
        if starts:
            found[stem] = starts
    return found


_TILDE_RE: Final = re.compile(r"~(?P<name>[A-Za-z_][\w.-]*)(?=[\\/])")
_IPV4_RE: Final = re.compile(
    r"(?<![\w.])(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}(?![\w]|\.\d)"
)
_CARD_RE: Final = re.compile(r"(?<![\w.-])\d(?:[ -]?\d){12,18}(?![\w-]|\.\d)")
_CARD_MIN_DIGITS: Final = 13
_IBAN_RE: Final = re.compile(
    r"(?<![A-Za-z0-9])[A-Z]{2}\d\d(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?(?![A-Za-z0-9])"
)
_PHONE_RE: Final = re.compile(r"\+[1-9][\d \-.()/]{6,22}\d(?![\w])")
_IPV6_RE: Final = re.compile(r"[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:[0-9A-Fa-f:.]*")
_VERSION_BEFORE_RE: Final = re.compile(r"(?i:version|ver\.?|release|build|rev)[ \t]*[:=]?[ \t]*\Z")
_IPV6_HINT_RE: Final = re.compile(r":(?::|[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:)")
_HEX_COLON: Final = frozenset("0123456789abcdefABCDEF:")
_KEPT_IPS: Final = ("127.", "0.0.0.0", "255.255.255.255")
_IPV6_KEPT: Final = frozenset({"::1", "::"})


def _home_spans(text: str, places: list[int], trigger: bytes, spans: list[Span]) -> None:
    """Someone's home folder at each place the trigger ("/home/", "\\users\\"...) occurs,
    with the drive letter and doubled separators that precede it."""
    after = 0
    for at in places:
        if at < after:
            continue  # "/home/home/": the second one shares the first one's slash
        after = at + len(trigger)
        found = _HOME_AT_RE.match(text, at)
        if found:
            begin = at
            while begin > 0 and text[begin - 1] in "\\/":
                begin -= 1
            if begin >= 2 and text[begin - 1] == ":" and text[begin - 2].isalpha():
                begin -= 2
            spans.append((begin, found.end(), HOME))


def _private_key_spans(text: str, spans: list[Span]) -> None:
    for found in _PRIVATE_KEY_RE.finditer(text):
        # Each line of the body is replaced on its own: no replacement crosses a line end.
        offset = found.start("body")
        for line in found.group("body").split("\n"):
            stripped = line.strip()
            if stripped:
                at = offset + line.index(stripped)
                spans.append((at, at + len(stripped), PRIVATE_KEY))
            offset += len(line) + 1
    for found in _PUTTY_RE.finditer(text):
        offset = found.start()
        for line in found.group().split("\n"):
            if line:
                spans.append((offset, offset + len(line), PRIVATE_KEY))
            offset += len(line) + 1


def _matches_at_marks(
    regex: re.Pattern[str], text: str, folded: bytes, mark: bytes
) -> Iterator[re.Match[str]]:
    """What ``regex.finditer(text)`` finds, for a regex whose every match starts with ``mark``:
    C's find jumps from one mark to the next (a regex's own scan for its first character costs
    six to eight instructions a character, and the marks are few)."""
    at = folded.find(mark)
    while at >= 0:
        found = regex.match(text, at)
        if found:
            yield found
            at = folded.find(mark, found.end())
        else:
            at = folded.find(mark, at + 1)


def _email_spans(text: str, folded: bytes, spans: list[Span]) -> None:
    for found in _matches_at_marks(_EMAIL_DOMAIN_RE, text, folded, b"@"):
        at = found.start()
        begin = at
        while begin > 0 and at - begin < 64 and text[begin - 1] in _LOCAL_CHARS:
            begin -= 1
        local = text[begin:at]
        if not local or local.lower() in _NOT_EMAIL_LOCALS or found.group("tld").lower() in _FILE_TLDS:
            continue
        spans.append((begin, found.end(), EMAIL))


def _public_ipv4(text: str, found: re.Match[str]) -> bool:
    return not found.group().startswith(_KEPT_IPS) and not _is_version(text, found.start())


def _card(_text: str, found: re.Match[str]) -> bool:
    return is_card_number(found.group().replace(" ", "").replace("-", ""))


def _iban(_text: str, found: re.Match[str]) -> bool:
    return is_iban(found.group().replace(" ", ""))


def _ipv4_spans(text: str, numbers: bytes, hints: list[int], spans: list[Span]) -> None:
    """An IPv4 address at each ".0.0." of the number map: its first group is the (at most three)
    digits right before, so the address regex is tried at one place, not over a window."""
    done = 0
    for at in hints:
        if at < done:
            continue
        begin = at
        while begin > 0 and at - begin < 3 and numbers[begin - 1] == _DIGIT:
            begin -= 1
        if text.startswith(_KEPT_IPS, begin):
            continue  # loopback and the like (a hint inside an address can match nothing)
        found = _IPV4_RE.match(text, begin)
        if found:
            done = found.end()
            if _public_ipv4(text, found):
                spans.append((found.start(), found.end(), IP))


def _card_spans(text: str, numbers: bytes, hints: list[tuple[int, int]], spans: list[Span]) -> None:
    """Card numbers around each "0000 0000" of the number map: the number may start a few
    digits before it (groups of other sizes), so the regex scans a window, unless the window
    holds fewer digits than a card has (dates, version strings, ids of eight digits)."""
    done = 0
    ascii_digits_only = text.isascii()  # \d also matches other scripts' digits, not mapped to "0"
    for hint_start, hint_end in hints:
        if hint_start < done:
            continue
        begin = max(0, hint_start - 4)
        stop = min(len(text), hint_end + 40)
        if ascii_digits_only and numbers.count(b"0", begin, stop) < _CARD_MIN_DIGITS:
            continue
        for found in _CARD_RE.finditer(text, begin, stop):
            done = found.end()
            if _card(text, found):
                spans.append((found.start(), found.end(), CARD))


def _iban_spans(text: str, hints: list[int], spans: list[Span]) -> None:
    """An IBAN at each "QQ00" of the number map, which is where its country code starts."""
    done = 0
    for at in hints:
        if at < done:
            continue
        found = _IBAN_RE.match(text, at)
        if found:
            done = found.end()
            if _iban(text, found):
                spans.append((found.start(), found.end(), IBAN))


def _is_version(text: str, at: int) -> bool:
    """ "Chrome/120.0.0.0" and "version 2.1.0.0" are versions, not addresses."""
    if at >= 2 and text[at - 1] == "/" and text[at - 2].isalpha():
        return True
    return _VERSION_BEFORE_RE.search(text, max(0, at - 16), at) is not None


def _phone_spans(text: str, folded: bytes, spans: list[Span]) -> None:
    for found in _matches_at_marks(_PHONE_RE, text, folded, b"+"):
        before = text[found.start() - 1 : found.start()]
        if before and (before.isalnum() or before in "_+"):
            continue
        value = found.group()
        digits = sum(char.isdigit() for char in value)
        if 8 <= digits <= 15 and value.count("(") == value.count(")"):
            spans.append((found.start(), found.end(), PHONE))


def _ipv6_spans(text: str, spans: list[Span]) -> None:
    """IPv6 addresses around "::" or a run of hex groups (timestamps' "10:15:32" is too short)."""
    done = 0
    for hint in _IPV6_HINT_RE.finditer(text):
        if hint.start() < done:
            continue
        begin = hint.start()
        while begin > 0 and text[begin - 1] in _HEX_COLON:
            begin -= 1
        found = _IPV6_RE.match(text, begin)
        if found is None:
            continue
        done = found.end()
        value = found.group().rstrip(".")
        if begin > 0 and (text[begin - 1].isalnum() or text[begin - 1] in "_."):
            continue
        if value.count(":") < 2 or not any(char.isdigit() for char in value):
            continue
        if value in _IPV6_KEPT:
            continue  # "::1" and "::", the usual spellings, without building an address
        try:
            address = ipaddress.IPv6Address(value)
        except ValueError:
            continue
        if not (address.is_loopback or address.is_unspecified):
            spans.append((begin, begin + len(value), IP))


def _apply(text: str, spans: list[Span]) -> str:
    """Replace non-overlapping spans, earliest first; a span inside an earlier one is dropped."""
    if not spans:
        return text
    spans.sort(key=lambda span: (span[0], -span[1]))
    parts: list[str] = []
    position = 0
    for start, end, placeholder in spans:
        if start < position:
            if end <= position:
                continue
            start = position
        parts.append(text[position:start])
        parts.append(placeholder)
        position = end
    parts.append(text[position:])
    return "".join(parts)


# -- the scrubber --------------------------------------------------------------------------------

# A value shorter than this made of word characters, dots, dashes and spaces can hold no token,
# card or IBAN; only an IPv4 address or this machine's user or host name.
_SHORT: Final = 13
_SHORT_SAFE_CHARS: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_. -"
# Values this short that came out unchanged are remembered: model, tool and event names repeat.
_CACHED: Final = 64
_CACHE_LIMIT: Final = 4096


class Scrubber:
    """Replace personal data and secrets in text with placeholders.

    >>> scrubber = Scrubber(home="/home/alice", user_name="alice")
    >>> scrubber.scrub_text("alice@example.com opened /home/alice/notes.txt with token=abc123")
    '<email> opened <home>/notes.txt with token=<secret>'
    """

    def __init__(
        self,
        *,
        home: str | None = None,
        user_name: str | None = None,
        host_name: str | None = None,
        extra_rules: Iterable[Rule] = (),
    ) -> None:
        self._home_res = [
            re.compile(re.escape(spelling) + r"(?![A-Za-z0-9_.-])", re.IGNORECASE)
            for spelling in _home_spellings(home)
        ]
        # Whether a spelling is there is asked of its finder (see _needle), then its regex runs.
        self._home_finders = tuple(
            _needle(spelling.lower().encode("ascii", "replace")) for spelling in _home_spellings(home)
        )
        self._words: list[tuple[str, re.Pattern[str], str]] = []
        if user_name and len(user_name) >= 2 and user_name.lower() not in rules.SYSTEM_ACCOUNTS:
            self._words.append((user_name.lower(), _word_re(user_name), USER))
        for name in _host_spellings(host_name):
            self._words.append((name.lower(), _word_re(name), HOST))
        # A name that holds one looked for before it (the host "bobs-laptop", the user "bob")
        # cannot be there when that one is not. ASCII only: lower() may lengthen other text.
        self._contains_shorter = {
            word: frozenset(
                earlier for earlier, _, _ in self._words[:index] if earlier in word and earlier.isascii()
            )
            for index, (word, _, _) in enumerate(self._words)
            if word.isascii()
        }
        self._word_finders = {word: _needle(word.encode()) for word, _, _ in self._words if word.isascii()}
        # The names alone, lower case, for the short-value path (a loop over a tuple of strings
        # costs a fifth of a generator over the triples).
        self._names = tuple(word for word, _, _ in self._words)
        self._extra = [
            (rule, re.compile(rule.pattern, re.IGNORECASE if rule.ignore_case else 0)) for rule in extra_rules
        ]
        self._clean_short: dict[str, None] = {}

    @classmethod
    def for_this_machine(cls) -> Scrubber:
        """A scrubber that knows this machine's home folder, user name and host name."""
        return cls(
            home=os.path.expanduser("~"), user_name=_current_user_name(), host_name=_current_host_name()
        )

    def scrub_text(self, text: str) -> str:
        """``text`` with every secret and personal detail replaced by a placeholder."""
        if text in self._clean_short:
            return text
        length = len(text)
        if length < _SHORT and not text.strip(_SHORT_SAFE_CHARS) and text.count(".") < 3:
            scrubbed = text
            if self._names:
                lowered = text.lower()
                for name in self._names:
                    if name in lowered:
                        scrubbed = self._scrub(text)
                        break
        else:
            scrubbed = self._scrub(text)
        if length < _CACHED and scrubbed == text:
            if len(self._clean_short) >= _CACHE_LIMIT:
                self._clean_short.clear()
            self._clean_short[text] = None
        return scrubbed

    def _scrub(self, text: str) -> str:
        # Pass 1: what a token's own shape gives away, before names and words are looked at.
        spans: list[Span] = []
        folded = text.encode("ascii", "replace")
        numbers = folded.translate(_NUM_TABLE)
        places, hints = _find_marks(folded, numbers)
        if any(marker in places for marker in _KEY_BLOCK_MARKERS):
            _private_key_spans(text, spans)
        if _URL_MARKER in places:
            if b"@" in folded:  # user:password@host: a match starts at a "://" (none holds another)
                for at in places[_URL_MARKER]:
                    found = _URL_CREDENTIALS_RE.match(text, at)
                    if found:
                        spans.append((found.start("cred"), found.end("cred"), CREDENTIALS))
            for trigger, regex in _URL_RULES:
                if trigger in places:
                    spans.extend((found.start(), found.end(), SECRET) for found in regex.finditer(text))
        if len(text) >= _MIN_SCAN:
            _scan_spans(text, folded, numbers, places, hints, spans)
        _phone_spans(text, folded, spans)
        if b":" in folded:
            _ipv6_spans(text, spans)
        if spans:
            text = _apply(text, spans)
            folded = text.encode("ascii", "replace")

        # Pass 2: secret names, auth schemes, e-mail addresses.
        spans = []
        lowered = folded.lower()
        words = _find_words(lowered)
        _assignment_spans(text, lowered, words, spans)
        _bare_scheme_spans(text, words, spans)
        _email_spans(text, folded, spans)
        if spans:
            text = _apply(text, spans)
            lowered = text.encode("ascii", "replace").lower()
            words = _find_words(lowered)

        # Pass 3: whose machine it is: home folders, the user's and the host's names.
        spans = []
        for home, regex in zip(self._home_finders, self._home_res, strict=True):
            if home.find_matches_as_indexes(lowered):
                spans.extend((found.start(), found.end(), HOME) for found in regex.finditer(text))
        for folder in _HOME_TRIGGERS:
            if folder in words:
                _home_spans(text, words[folder], folder, spans)
        if b"~" in lowered:
            for found in _TILDE_RE.finditer(text):
                before = text[found.start() - 1 : found.start()]
                if not (before and (before.isalnum() or before in "_~")):
                    spans.append((found.start(), found.end(), HOME))
        if spans:
            text = _apply(text, spans)
            lowered = text.encode("ascii", "replace").lower()
        spans = []
        unicode_lowered: str | None = None
        absent: set[str] = set()
        for word, regex, placeholder in self._words:
            if word in self._contains_shorter and not absent.isdisjoint(self._contains_shorter[word]):
                present = False  # "bobs-laptop" when "bob" is not there
            elif word.isascii():
                present = bool(self._word_finders[word].find_matches_as_indexes(lowered))
            else:
                unicode_lowered = unicode_lowered if unicode_lowered is not None else text.lower()
                present = word in unicode_lowered
            if present:
                spans.extend((found.start(), found.end(), placeholder) for found in regex.finditer(text))
            else:
                absent.add(word)
        text = _apply(text, spans)

        for rule, regex in self._extra:
            folded_text = text.lower()
            if any((t.lower() in folded_text) if rule.ignore_case else (t in text) for t in rule.triggers):
                text = regex.sub(rule.replace, text)
        return text


def _word_re(word: str) -> re.Pattern[str]:
    """The word on its own, any case: "Bob" and "BOB" for user bob, never "bobcat"."""
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(word)}(?![A-Za-z0-9])", re.IGNORECASE)


def _home_spellings(home: str | None) -> list[str]:
    if not home or home in {"/", "~"} or len(home) < 2:
        return []
    spellings = {
        home.rstrip("/\\"),
        home.rstrip("/\\").replace("\\", "/"),
        home.rstrip("/\\").replace("\\", "\\\\"),
    }
    # ("//" is no home: nothing is left of it, and an empty spelling would match everywhere.)
    return sorted((spelling for spelling in spellings if spelling), key=len, reverse=True)


def _host_spellings(host_name: str | None) -> list[str]:
    """The machine's name as it may appear: fully qualified and its first label."""
    if not host_name or host_name in {"localhost", "localhost.localdomain"}:
        return []
    names = {host_name, host_name.split(".")[0]}
    return sorted(
        (n for n in names if len(n) >= 2 and n.lower() not in rules.SYSTEM_ACCOUNTS), key=len, reverse=True
    )


def _current_host_name() -> str | None:
    import socket

    try:
        return socket.gethostname() or None
    except OSError:
        return None


def _current_user_name() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # no user database entry (containers): nothing to scrub by name
        return None
