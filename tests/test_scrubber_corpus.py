"""The scrubber against a corpus it was not tuned on alone: public scanners' examples, our own
path and PII cases, and ordinary log lines it must leave alone (files in tests/corpus/).

The figures print in the terminal summary; each has its bar from issue 12.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.privacy import secret_rules
from analytics.privacy.scrubber import Scrubber, names_a_secret
from tests.conftest import CORPUS_FIGURES

CORPUS = Path(__file__).parent / "corpus"
MARK = re.compile("«(.*?)»", re.DOTALL)
PLACEHOLDER = re.compile(r"<[a-z-]+>")

# The machine the corpus imagines: its user is bob; everyone else's names are strangers'.
BOB = Scrubber(home="/home/bob", user_name="bob", host_name="bobs-laptop.local")
# A machine whose user is root (a container, CI): "root cause" must survive there.
ROOT = Scrubber(home="/root", user_name="root", host_name="ci-runner-3")


@dataclass(frozen=True)
class Case:
    label: str
    text: str
    secrets: tuple[str, ...]


def _lines(name: str) -> list[str]:
    return [
        line
        for line in (CORPUS / name).read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]


def _case(label: str, raw: str) -> Case:
    raw = raw.replace("\\n", "\n")
    secrets = tuple(MARK.findall(raw)) or (raw,)
    return Case(label, MARK.sub(lambda m: m.group(1), raw), secrets)


def load_tokens() -> list[Case]:
    return [_case(*line.split("\t", 1)) for line in _lines("tokens.txt")]


def load_marked(name: str) -> list[Case]:
    cases = []
    for line in _lines(name):
        label, _, text = line.partition("\t") if "\t" in line else ("", "", line)
        cases.append(_case(label or name, text))
    return cases


def leaked(output: str, secret: str) -> str | None:
    """A run of 8 characters of the secret still in the output (the issue's bar), if any."""
    if len(secret) < 8:
        return secret if re.search(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", output) else None
    for start in range(len(secret) - 7):
        piece = secret[start : start + 8]
        if piece in output and not PLACEHOLDER.search(piece):
            return piece
    return None


def report(figure: str, hits: int, total: int, bar: str) -> float:
    rate = hits / total
    line = f"{figure}: {hits}/{total} = {100 * rate:.1f}% (bar {bar})"
    CORPUS_FIGURES.append(line)
    print(line)
    return rate


TOKENS = load_tokens()
ASSIGNMENTS = load_marked("assignments.txt")


@pytest.mark.parametrize(
    ("form", "template"),
    [("in a sentence", "request failed: {}"), ("as NAME=secret", "SETTING={}")],
)
def test_token_formats_are_fully_scrubbed(form: str, template: str) -> None:
    misses = []
    for case in TOKENS:
        output = BOB.scrub_text(template.format(case.text))
        piece = next((p for s in case.secrets if (p := leaked(output, s))), None)
        if piece:
            misses.append(f"{case.label}: {piece!r} in {output[:120]!r}")
    rate = report(f"token formats {form}", len(TOKENS) - len(misses), len(TOKENS), ">= 95%")
    assert rate >= 0.95, "\n".join(misses)


@pytest.mark.parametrize(
    ("form", "template"), [("as written", "{}"), ("in a log line", "config loaded: {} (ok)")]
)
def test_secrets_in_assignments_and_headers_are_scrubbed(form: str, template: str) -> None:
    misses = []
    for case in ASSIGNMENTS:
        output = BOB.scrub_text(template.format(case.text))
        piece = next((p for s in case.secrets if (p := leaked(output, s))), None)
        if piece:
            misses.append(f"{piece!r} in {output!r}")
    rate = report(f"secrets in context {form}", len(ASSIGNMENTS) - len(misses), len(ASSIGNMENTS), ">= 95%")
    assert rate >= 0.95, "\n".join(misses)


def test_detect_secrets_keyword_cases_are_all_scrubbed() -> None:
    """The issue measured 0 of detect-secrets' keyword positives; the whole group must pass."""
    group = [case for case in ASSIGNMENTS if "m{{h}o)p" in case.text]
    assert len(group) >= 57
    missed = [case.text for case in group if leaked(BOB.scrub_text(case.text), case.secrets[0])]
    report("detect-secrets keyword positives", len(group) - len(missed), len(group), "all")
    assert missed == []


def test_paths_and_names_become_placeholders() -> None:
    cases = load_marked("paths.txt")
    misses = []
    for case in cases:
        output = BOB.scrub_text(case.text)
        gone = all(
            not re.search(rf"(?<![\w]){re.escape(s)}(?![\w])", output, re.IGNORECASE) for s in case.secrets
        )
        if not gone or case.label not in output:
            misses.append(f"{case.text!r} -> {output!r}")
    rate = report("home folders and names", len(cases) - len(misses), len(cases), ">= 95%")
    assert rate >= 0.95, "\n".join(misses)


def test_personal_data_gets_its_own_placeholder() -> None:
    cases = load_marked("pii.txt")
    misses = []
    for case in cases:
        output = BOB.scrub_text(case.text)
        if any(s in output for s in case.secrets) or output.count(case.label) != len(case.secrets):
            misses.append(f"{case.text!r} -> {output!r}")
    rate = report("IPs, cards, IBANs, phones, e-mails", len(cases) - len(misses), len(cases), ">= 95%")
    assert rate >= 0.95, "\n".join(misses)


def test_personal_data_goes_when_the_lines_come_as_one_text() -> None:
    # Numbers are looked for near hints in the text; an IBAN right after another used to be cut
    # short by the first one's search window and kept whole.
    cases = load_marked("pii.txt")
    output = BOB.scrub_text("\n".join(case.text for case in cases))
    kept = [secret for case in cases for secret in case.secrets if secret in output]
    assert kept == []


def test_a_format_reaches_past_a_non_ascii_letter_in_a_long_text() -> None:
    # Only runs of 20 or more are tried against one-letter heads, except where a non-ASCII letter
    # (which a format's \\w matches) ends a shorter one; a bullet elsewhere changes nothing.
    token = "Mabcdefghijklmnéééééééééé.abcdef.abcdefghijklmnopqrstuvwxyz12"
    text = "• step one\n" + "a plain line of a log\n" * 30 + f"bot {token} ok"
    assert BOB.scrub_text(text).endswith("bot <secret> ok")


def test_ordinary_log_lines_are_left_alone() -> None:
    lines = _lines("ordinary.txt")
    assert len(lines) >= 50
    changed = [
        f"{line!r} -> {out!r}"
        for line in lines
        if (out := BOB.scrub_text(line)) != line or ROOT.scrub_text(line) != line
    ]
    rate = report("ordinary log lines changed", len(changed), len(lines), "<= 5%")
    assert rate <= 0.05, "\n".join(changed)


def test_the_issues_false_positives_stay_as_they_are() -> None:
    for text in [
        "token validation failed",
        "Basic configuration",
        "pwd: /workspace/app",
        "git@github.com:org/repo.git",
    ]:
        assert BOB.scrub_text(text) == text
    assert ROOT.scrub_text("root cause") == "root cause"


def test_llm_providers_ids_stay_but_a_secret_with_their_prefix_does_not() -> None:
    # An agent app's errors are full of these ids; the entropy fallback used to eat them.
    ids = [
        "req_011CTGzAsTV2Qb3hZ8cJvKdN",
        "msg_01XFDUDYJgAACzvnptvVoYEL",
        "toolu_01A09q90qw90lq917835lq9Kz",
        "chatcmpl-AbCdEf1234567890GhIjKlMnOpQr",
        "file-BK7bzQj3FfZFXr7DbL6xJwfo",
        "call_Ab3dEf6hIj9kLm2nOp5qRs8t",
    ]
    for provider_id in ids:
        line = f"request failed ({provider_id})"
        assert BOB.scrub_text(line) == line
        # Under a secret's name, or as the value of an auth header, it is still a secret.
        assert provider_id not in BOB.scrub_text(f"API_KEY={provider_id}")
        assert provider_id not in BOB.scrub_text(f"Authorization: Bearer {provider_id}")


def test_near_misses_are_left_alone() -> None:
    changed = []
    for line in _lines("near_misses.txt"):
        _rule, text = line.split("\t", 1)
        if (out := BOB.scrub_text(text)) != text:
            changed.append(f"{text!r} -> {out!r}")
    assert changed == []


def test_every_rule_has_examples_and_near_misses() -> None:
    rules = {rule.name for rule in secret_rules.TOKEN_RULES}
    positives = {case.label for case in TOKENS}
    negatives = {line.split("\t", 1)[0] for line in _lines("near_misses.txt")}
    assert rules - positives == set()
    assert rules - negatives == set()


def test_each_example_belongs_to_the_rule_it_is_filed_under() -> None:
    """An example counts for its rule only if that rule's own pattern finds it, so the
    per-rule coverage is real and not another rule's catch."""
    by_name = {rule.name: rule for rule in secret_rules.TOKEN_RULES}
    for case in TOKENS:
        rule = by_name.get(case.label)
        if rule is None:
            continue
        found = re.search(rule.pattern, case.text)
        assert found, case
        if rule.lead:
            assert re.search(rule.lead, case.text[: found.start()]), case


# -- structure: line ends, placeholders, structured context ---------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from([c.text for c in ASSIGNMENTS[:80]] + _lines("ordinary.txt")[:40]),
        min_size=1,
        max_size=6,
    )
)
def test_no_replacement_crosses_a_line_end(lines: list[str]) -> None:
    text = "\n".join(lines)
    output = BOB.scrub_text(text)
    assert output.split("\n") == [BOB.scrub_text(line) for line in lines]


@pytest.mark.parametrize("text", [c.text for c in TOKENS + ASSIGNMENTS] + _lines("paths.txt"))
def test_placeholders_never_match_again(text: str) -> None:
    once = BOB.scrub_text(text)
    assert BOB.scrub_text(once) == once


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "api_key",
        "apiKey",
        "X-Api-Key",
        "AWS_SECRET_ACCESS_KEY",
        "STRIPE_SECRET_KEY",
        "DB_PASS",
        "dbPass",
        "githubToken",
        "_authToken",
        "DATABASE_URL",
        "SENTRY_DSN",
        "Authorization",
        "client_secret",
        "refresh_token",
        "private_key",
        "token",
        "pass",
        "credentials",
        "cookie",
    ],
)
def test_names_of_secrets(name: str) -> None:
    assert names_a_secret(name)


@pytest.mark.parametrize(
    "name",
    [
        "token_count",
        "max_tokens",
        "$ai_input_tokens",
        "input_tokens",
        "token_type",
        "password_length",
        "secret_name",
        "pwd",
        "PWD",
        "cache_key",
        "primary_key",
        "public_key",
        "$session_id",
        "distinct_id",
        "passed",
        "bypass",
        "keyboard",
        "monkey",
        "path",
        "model",
    ],
)
def test_names_that_hold_no_secret(name: str) -> None:
    assert not names_a_secret(name)
