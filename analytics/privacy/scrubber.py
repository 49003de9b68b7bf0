"""The scrubber: personal data and secrets out of every free-text value we send.

Rules run in order, specific before general (a URL's credentials before an e-mail, a JWT before
a key=value pair), and each replaces its match with a placeholder that says what was there.
"""

from __future__ import annotations

import getpass
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

HOME: Final = "<home>"
USER: Final = "<user>"
HOST: Final = "<host>"
EMAIL: Final = "<email>"
SECRET: Final = "<secret>"
TOKEN: Final = "<token>"
JWT: Final = "<jwt>"
CREDENTIALS: Final = "<credentials>"
PRIVATE_KEY: Final = "<private-key>"


@dataclass(frozen=True)
class Rule:
    """One kind of sensitive text.

    ``triggers`` are substrings at least one of which any match must contain; a rule whose
    triggers are all absent is skipped without running its regex, which keeps the common case
    (short identifiers such as a model or tool name) to a few substring tests.
    """

    name: str
    pattern: str
    replace: Callable[[re.Match[str]], str]
    triggers: tuple[str, ...]
    ignore_case: bool = False


def _constant(text: str) -> Callable[[re.Match[str]], str]:
    return lambda _match: text


def _keep_group(group: str, placeholder: str) -> Callable[[re.Match[str]], str]:
    return lambda match: f"{match.group(group)}{placeholder}"


_SECRET_NAME_RE: Final = re.compile(
    r"api[_-]?key|apikey|access[_-]?key|secret[_-]?key|access[_-]?token|auth[_-]?token|refresh[_-]?token"
    r"|id[_-]?token|client[_-]?secret|private[_-]?key|session[_-]?token|secret|token|password|passwd|pwd"
    r"|authorization|auth|credentials?|[a-z0-9_-]*(?:_token|_secret|_password|_api_key)",
    re.IGNORECASE,
)


def _secret_pair(match: re.Match[str]) -> str:
    name = match.group("pair_name")
    separator = match.group("pair_sep")
    # A bare `key` counts only with `=`, so prose such as "missing key: id" keeps its meaning.
    if _SECRET_NAME_RE.fullmatch(name) or (name.lower() == "key" and "=" in separator):
        return f"{name}{separator}{SECRET}"
    return match.group(0)


# A run of word characters may start only where the previous character is not one: this keeps
# every rule below linear in the length of the text.
_START: Final = r"(?<![A-Za-z0-9_-])"

_BASE_RULES: Final = (
    Rule(
        "private_key",
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
        _constant(PRIVATE_KEY),
        ("PRIVATE KEY",),
    ),
    # scheme://user:password@host -> scheme://<credentials>@host (also a DSN's public key).
    Rule(
        "url_credentials",
        r"(?P<url_scheme>(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*+://)[^\s/@:]++(?::[^\s/@]*+)?@",
        lambda m: f"{m.group('url_scheme')}{CREDENTIALS}@",
        ("://",),
    ),
    Rule(
        "jwt",
        _START + r"eyJ[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]{4,}+\.[A-Za-z0-9_-]*+",
        _constant(JWT),
        ("eyJ",),
    ),
    # Provider key formats: OpenAI / Anthropic, AWS access key ids, Google, Stripe, GitHub (classic
    # and fine-grained), Slack (tokens and webhooks), Hugging Face, Groq, PostHog personal keys,
    # npm and PyPI tokens.
    Rule(
        "openai_key",
        _START + r"sk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",
        _constant(SECRET),
        ("sk-",),
    ),
    Rule(
        "aws_key_id",
        _START + r"(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}(?![A-Za-z0-9])",
        _constant(SECRET),
        ("AKIA", "ASIA", "AGPA", "AIDA", "AROA"),
    ),
    Rule("google_key", _START + r"AIza[0-9A-Za-z_-]{30,}", _constant(SECRET), ("AIza",)),
    Rule(
        "stripe_key",
        _START + r"[rs]k_(?:live|test)_[0-9A-Za-z]{16,}",
        _constant(SECRET),
        ("k_live_", "k_test_"),
    ),
    Rule(
        "github_token",
        _START + r"(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})",
        _constant(SECRET),
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    ),
    Rule(
        "slack_token",
        _START + r"xox[abposre]-[A-Za-z0-9-]{10,}|https://hooks\.slack\.com/services/[A-Za-z0-9/_-]+",
        _constant(SECRET),
        ("xox", "hooks.slack.com"),
    ),
    Rule(
        "other_provider_key",
        _START + r"(?:hf_[A-Za-z0-9]{30,}|gsk_[A-Za-z0-9]{40,}|phx_[A-Za-z0-9]{20,}|npm_[A-Za-z0-9]{36}"
        r"|pypi-[A-Za-z0-9_-]{50,})",
        _constant(SECRET),
        ("hf_", "gsk_", "phx_", "npm_", "pypi-"),
    ),
    # name=value / name: value / "name": "value" where the name means a secret; the value may
    # start with an auth scheme ("Authorization: Bearer abc").
    Rule(
        "secret_pair",
        r"(?<![A-Za-z0-9_-])(?P<pair_name>[A-Za-z][A-Za-z0-9_-]{2,39}+)(?P<pair_sep>[\"']?\s*[:=]\s*[\"']?)"
        r"(?:(?i:bearer|basic|token)\s+)?[^\s\"'&,;)\]}>]{3,}",
        _secret_pair,
        ("=", ":"),
    ),
    Rule(
        "auth_header",
        r"(?P<auth_scheme>(?<![A-Za-z0-9])(?i:bearer|basic|token)\s+)[A-Za-z0-9._~+/=-]{8,}",
        _keep_group("auth_scheme", TOKEN),
        ("bearer", "basic", "token"),
        ignore_case=True,
    ),
    Rule(
        "email",
        r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]++@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![A-Za-z])",
        _constant(EMAIL),
        ("@",),
    ),
    # Anyone's home folder, not just ours: a path written on another machine still names a person.
    Rule(
        "home_folder",
        r"(?:/home/|/Users/|[A-Za-z]:\\Users\\|[A-Za-z]:/Users/)(?!<)[^/\\\s\"':]+",
        _constant(HOME),
        ("/home/", "/Users/", ":\\Users\\"),
    ),
)


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
        rules: list[Rule] = []
        # This machine's home folder first, in both slash styles: it may not live under /home.
        for spelling in _home_spellings(home):
            pattern = re.escape(spelling) + r"(?![A-Za-z0-9_.-])"
            rules.append(Rule("this_home", pattern, _constant(HOME), (spelling,)))
        rules.extend(_BASE_RULES)
        rules.extend(extra_rules)
        if user_name and len(user_name) >= 2 and user_name.lower() not in _PLACEHOLDER_WORDS:
            pattern = rf"(?<![A-Za-z0-9]){re.escape(user_name)}(?![A-Za-z0-9])"
            rules.append(Rule("user_name", pattern, _constant(USER), (user_name,)))
        for name in _host_spellings(host_name):
            pattern = rf"(?<![A-Za-z0-9.-]){re.escape(name)}(?![A-Za-z0-9-])"
            rules.append(Rule("host_name", pattern, _constant(HOST), (name,)))
        self._rules = [(rule, re.compile(rule.pattern)) for rule in rules]
        self._triggers = tuple({t for rule in rules if not rule.ignore_case for t in rule.triggers})
        self._folded_triggers = tuple(
            {t.lower() for rule in rules if rule.ignore_case for t in rule.triggers}
        )

    @classmethod
    def for_this_machine(cls) -> Scrubber:
        """A scrubber that knows this machine's home folder and user name."""
        return cls(
            home=os.path.expanduser("~"), user_name=_current_user_name(), host_name=_current_host_name()
        )

    def scrub_text(self, text: str) -> str:
        if not self._may_contain_something(text):
            return text
        # Rules run one after another; each placeholder is left unchanged by the rules after it.
        lowered: str | None = None
        for rule, regex in self._rules:
            if rule.ignore_case:
                lowered = lowered if lowered is not None else text.lower()
                hit = any(trigger in lowered for trigger in rule.triggers)
            else:
                hit = any(trigger in text for trigger in rule.triggers)
            if hit:
                text = regex.sub(rule.replace, text)
                lowered = None
        return text

    def _may_contain_something(self, text: str) -> bool:
        # Most values are short identifiers (a model, a tool name): a few substring tests, no regex.
        for trigger in self._triggers:
            if trigger in text:
                return True
        lowered = text.lower()
        return any(trigger in lowered for trigger in self._folded_triggers)


_PLACEHOLDER_WORDS: Final = frozenset(
    {"home", "user", "host", "email", "secret", "token", "jwt", "credentials"}
)


def _home_spellings(home: str | None) -> list[str]:
    if not home or home in {"/", "~"} or len(home) < 2:
        return []
    spellings = {home.rstrip("/\\"), home.rstrip("/\\").replace("\\", "/")}
    return sorted(spellings, key=len, reverse=True)


def _host_spellings(host_name: str | None) -> list[str]:
    """The machine's name as it may appear: fully qualified and its first label."""
    if not host_name or host_name in {"localhost", "localhost.localdomain"}:
        return []
    names = {host_name, host_name.split(".")[0]}
    return sorted(
        (n for n in names if len(n) >= 2 and n.lower() not in _PLACEHOLDER_WORDS), key=len, reverse=True
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
