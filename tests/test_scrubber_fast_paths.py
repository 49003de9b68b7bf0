"""The scrubber's shortcuts against the cases they could get wrong.

Each pass asks cheap questions first (what follows a name, whether a run has a dot, how many
digits a card's window holds, whether the user's name is in the text) and skips the rest when
the answer rules a find out. These cases sit on the edges of those questions: the shortcut must
leave them to the full rule, which scrubs them.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics.privacy import scrubber
from analytics.privacy import secret_rules as rules
from analytics.privacy.scrubber import Scrubber

BOB = Scrubber(home="/home/bob", user_name="bob", host_name="bobs-laptop.local")
DISCORD = "MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.ZnCjm1XVW7vRze4b7Cq4se7kKWs"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A name with two stems ("cookie", "sig") is found twice and given one placeholder.
        ("cookie_sig=)", "cookie_sig=<secret>)"),
        ("cookie_sig=abc123def456", "cookie_sig=<secret>"),
        # What follows a name decides whether it is looked at: after blanks, an operator...
        ("the token. password: hunter2", "the token. password: <secret>"),
        ("invalid password: must contain a digit", "invalid password: must contain a digit"),
        # ...anything after a command-line flag, an XML element, a reversed comparison.
        ("--password hunter2", "--password <secret>"),
        ("<password>hunter2</password>", "<password><secret></password>"),
        ('if "hunter2" == password:', 'if "<secret>" == password:'),
        ('Authorization: "abc123" == password', 'Authorization: "<secret>" == password'),
        # A stem behind "Documents and Settings", which ends with the letters of a name.
        ("C:\\Documents and Settingsecret=abc123def", "C:\\Documents and Settingsecret=<secret>"),
        # ...with another secret name glued before it: two names, each with its own value (the
        # name of the second starts after the marker's last blank, not at the first name).
        ("my_secret\\Documents and Settingsecret=hunter2", "my_secret\\Documents and Settingsecret=<secret>"),
        ('pass\\Documents and Settingsecret!="v";', 'pass\\Documents and Settingsecret!="<secret>";'),
        ("-x/Documents and Settings_token foo", "-x/Documents and Settings_token foo"),
        ('"hunter2" == /documents and settings_token', '"hunter2" == /documents and settings_token'),
    ],
)
def test_names_given_a_value_are_found_whatever_surrounds_them(text: str, expected: str) -> None:
    assert BOB.scrub_text(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Home markers that share a separator: each is a home folder of its own.
        ("/home/users/bob/x", "<home><home>/x"),
        ("open /home/home/alice/x", "open <home>/alice/x"),
        ("C:\\Users\\home\\bob\\x", "<home><home>\\x"),
    ],
)
def test_home_markers_that_overlap_are_all_found(text: str, expected: str) -> None:
    assert BOB.scrub_text(text) == expected


def test_the_host_name_is_found_only_where_the_users_name_is() -> None:
    assert BOB.scrub_text("built on bobs-laptop today") == "built on <host> today"
    assert BOB.scrub_text("built on BOBS-LAPTOP.local") == "built on <host>"
    assert BOB.scrub_text("built on laptop-7 today") == "built on laptop-7 today"


def test_short_values_are_remembered_only_when_clean() -> None:
    scrubber = Scrubber(home="/home/bob", user_name="bob")
    for _ in range(2):  # the second time, the cache of clean short values answers
        assert scrubber.scrub_text("tool_000123") == "tool_000123"
        assert scrubber.scrub_text("Bob") == "<user>"
        assert scrubber.scrub_text("10.1.2.3") == "<ip>"
        assert scrubber.scrub_text("a b") == "a b"


def test_a_card_is_found_beside_dates_and_ids_of_eight_digits() -> None:
    assert BOB.scrub_text("id 20241022 and 12345678") == "id 20241022 and 12345678"
    assert (
        BOB.scrub_text("paid 4111 1111 1111 1111 on 2024-03-12 20241022")
        == "paid <card> on 2024-03-12 20241022"
    )
    assert BOB.scrub_text("20241022 4111111111111111") == "20241022 <card>"


def test_addresses_next_to_versions_and_loopback() -> None:
    assert BOB.scrub_text("version 1.2.0.0 at 10.1.2.3") == "version 1.2.0.0 at <ip>"
    assert BOB.scrub_text("1.2.3.4.5.6 and 1.2.3.4") == "1.2.3.4.5.6 and <ip>"
    assert (
        BOB.scrub_text("http://[::1]:8000 and ::1 and 2001:db8::1 and fe80::1ff:fe23:4567:890a")
        == "http://[::1]:8000 and ::1 and <ip> and <ip>"
    )


def test_long_runs_with_dots_still_meet_the_one_character_heads() -> None:
    # A Discord token has dots, which make a run a path for the entropy fallback; its format
    # is still tried at the start of the run, beside paths and module names.
    text = f"bot {DISCORD} loaded from /srv/app/.venv/lib/python3.11/site-packages/bot/client.py"
    assert (
        BOB.scrub_text(text)
        == "bot <secret> loaded from /srv/app/.venv/lib/python3.11/site-packages/bot/client.py"
    )
    assert BOB.scrub_text(f'token="{DISCORD}"') == 'token="<secret>"'


def test_random_runs_without_dots_are_still_caught_and_ids_are_not() -> None:
    assert BOB.scrub_text("got 9fQ2xLp7Rt4Wm8Zk3Hv6Nb1Yc5Jd0Ga in reply") == "got <secret> in reply"
    assert (
        BOB.scrub_text("got req_011CTGzAsTV2Qb3hZ8cJvKdN in reply")
        == "got req_011CTGzAsTV2Qb3hZ8cJvKdN in reply"
    )
    assert (
        BOB.scrub_text("sha 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b")
        == "sha 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"
    )


# A segment: the token characters a long run is searched for (no dot, no tilde).
_SEGMENT_CHARS = string.ascii_letters + string.digits + "_-+/"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_SEGMENT_CHARS, max_size=scrubber._LONG_RUN - 1), st.booleans())
def test_no_run_shorter_than_the_long_run_is_random(body: str, quoted: bool) -> None:
    # Long runs are searched from _LONG_RUN characters on: the entropy fallback must never
    # call a shorter one random, or the search would skip secrets it should see.
    assert not scrubber._looks_random(body, quoted)
    assert not scrubber._looks_random(body + "==", quoted)


def test_the_long_run_length_is_where_random_runs_start_to_be_caught() -> None:
    assert BOB.scrub_text("x 9fQ2xLp7Rt4Wm8Zk3Hv6Nb1Y y") == "x <secret> y"  # 24
    assert BOB.scrub_text("x 9fQ2xLp7Rt4Wm8Zk3Hv6Nb1 y") == "x 9fQ2xLp7Rt4Wm8Zk3Hv6Nb1 y"  # 23


def test_a_one_character_heads_format_is_tried_where_a_non_ascii_letter_ends_a_short_run() -> None:
    # Discord's format begins with 24 [\w-], and \w takes non-ASCII letters: here the run of
    # token characters is 22 long, under the long run length, and the letters finish it.
    token = "Ma1B2c3D4e5F6g7H8i9J0k" + "ééé" + ".Cl2FMQ.ZnCjm1XVW7vRze4b7Cq4se7kKWs"
    assert BOB.scrub_text(f"bot {token} ready") == "bot <secret> ready"


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ab1 .-+@()é\u00e9\u2022x5", max_size=60))
def test_regexes_started_at_their_marks_find_what_a_scan_finds(text: str) -> None:
    folded = text.encode("ascii", "replace")
    for regex, mark in ((scrubber._EMAIL_DOMAIN_RE, b"@"), (scrubber._PHONE_RE, b"+")):
        found = [match.span() for match in scrubber._matches_at_marks(regex, text, folded, mark)]
        assert found == [match.span() for match in regex.finditer(text)]


def test_number_words_spelled_in_the_text_itself_are_not_hints() -> None:
    # "10.0.0.1" spells an IPv4 hint in the text too, and "QQ00" the IBAN hint of the map; only
    # the map's hints count.
    assert BOB.scrub_text("at 10.0.0.1:80") == "at <ip>:80"
    assert BOB.scrub_text("QQ00 and AA00 and QQ00 0000") == "QQ00 and AA00 and QQ00 0000"
    assert BOB.scrub_text("pay DE89 3704 0044 0532 0130 00 now") == "pay <iban> now"
    folded = b"QQ00 0000 0000 10.0.0.1"
    _places, hints = scrubber._find_marks(folded, folded.translate(scrubber._NUM_TABLE))
    # Each hint once, where the map has it: the text's own spellings of the same words add none.
    assert (hints.ipv4, hints.cards, hints.ibans) == ([17], [(5, 14)], [0])


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(["1", "1234", "12345678", " ", "-", ".", "x", "Q", "AB"]), max_size=30))
def test_number_hints_are_what_a_regex_scan_of_the_map_finds(pieces: list[str]) -> None:
    # Each kind has its own automaton, and cards two (one per spelling): the hints must be what
    # a plain left-to-right regex scan of the number map gives, where card spellings interleave
    # too ("1234-5678" beside a run of digits).
    text = "".join(pieces)
    numbers = text.encode().translate(scrubber._NUM_TABLE)
    _places, hints = scrubber._find_marks(text.encode(), numbers)
    ipv4 = [found.start() for found in re.finditer(rb"\.0{1,3}\.0{1,3}\.", numbers)]
    cards = [found.span() for found in re.finditer(rb"0000-0000|00000000", numbers)]
    ibans = [found.start() for found in re.finditer(rb"QQ00", numbers)]
    assert (hints.ipv4, hints.cards, hints.ibans) == (ipv4, cards, ibans)


_NAME_PARTS = sorted(
    {
        *rules.SECRET_HOLDER_NAMES,
        *rules.STRONG_NAME_PARTS,
        *rules.SECRET_SEGMENTS,
        *rules.KEY_SEGMENTS,
        *rules.NOT_SECRET_KEY_KINDS,
        *(word.decode() for word in scrubber._NOT_NAMES),
        *("value", "str", "string", "url", "db", "api", "my", "x", "conn", "connection", "auth", "monkey"),
        # Decoys and what may come before them ("access_tokens", "bearerefresh_tokens").
        *(word.decode() for word in scrubber._DECOY_STEMS),
        *("access", "refresh", "bearer", "secre", "passwor"),
    }
)


@settings(max_examples=2000, deadline=None)
@given(
    st.lists(st.sampled_from(_NAME_PARTS), min_size=1, max_size=4),
    st.sampled_from(["_", "-", ".", ""]),
    st.sampled_from([str.lower, str.upper, str.capitalize]),
    st.sampled_from(["", *(chr(end) for end in scrubber._DECOY_ENDS)]),
)
def test_every_name_that_names_a_secret_is_found_by_the_pass(
    parts: list[str], separator: str, case: Callable[[str], str], after: str
) -> None:
    # The secret-name pass only looks at names around the stems its automaton reports ("pass",
    # "token", "conn_str"...), and the automaton reports a prose word ("path") or a decoy
    # ("tokens=") instead of a stem inside it: a name the rules call secret must still hold a
    # reported stem, whatever follows it.
    name = separator.join(case(part) for part in parts)
    if scrubber._name_kind(name) is None:
        return
    assert scrubber._secret_name(name) is not None, name
    words = scrubber._find_words(f"{name}{after}".lower().encode("ascii", "replace"))
    assert any(word in scrubber._NAME_WORDS for word in words), name
    if BOB.scrub_text(name) == name:  # (a name that is itself token-shaped goes whole)
        assert "s3cr3t-value-123" not in BOB.scrub_text(f"{name}=s3cr3t-value-123"), name


def _names_ending_with_a_decoy() -> list[str]:
    """Each secret name's part before each decoy ("access_tokens"), glued or not, and run into
    it where the part ends with the decoy's start ("accesstokens", "secretokens")."""
    names = []
    for part in (*rules.STRONG_NAME_PARTS, *rules.SECRET_HOLDER_NAMES):
        for word in (word.decode() for word in scrubber._DECOY_STEMS):
            names += [part + separator + word for separator in ("", "_", "-", ".")]
            names += [part + word[size:] for size in range(1, len(word)) if part.endswith(word[:size])]
    return names


@pytest.mark.parametrize("name", _names_ending_with_a_decoy())
def test_a_decoy_hides_no_secret_name(name: str) -> None:
    # "tokens=" is reported instead of the stem "token" inside it, and let go: a name that ends
    # so and that the rules call secret must still be looked at, whatever ends it.
    for case in (str.lower, str.upper, str.capitalize):
        spelled = case(name)
        if scrubber._name_kind(spelled) is None:
            continue
        for end in (chr(end) for end in scrubber._DECOY_ENDS):
            words = scrubber._find_words(f"x {spelled}{end}".lower().encode("ascii", "replace"))
            assert any(word in scrubber._NAME_WORDS for word in words), (spelled, end)
        assert "s3cr3t-value-123" not in BOB.scrub_text(f"{spelled}=s3cr3t-value-123"), spelled


@pytest.mark.parametrize(
    ("name", "decoy", "glue"),
    [
        *(("password", "tokens=", glue) for glue in (200, 242, 245, 248)),
        *(("secret", "passed: ", glue) for glue in (200, 244, 248, 250)),
        *(("db.password.", ".max_tokens: ", glue) for glue in (200, 230, 236)),
    ],
)
def test_a_decoy_at_the_end_of_a_long_name_hides_no_secret_name(name: str, decoy: str, glue: int) -> None:
    # A name is read at most _LONGEST_NAME past its stem: from "password", the end of a name of
    # 250 characters is out of reach, and only the stem inside the decoy, which reads as far
    # back, reaches it (found by a helper: such names went out whole).
    text = f"{name}{'_' * glue}{decoy}hunter2Secret99"
    assert "hunter2Secret99" not in BOB.scrub_text(text)


def test_decoys_are_let_go_where_their_name_is_prose() -> None:
    lowered = b"input_tokens=1400 output_tokens: 212 (57 passed, 2 failed) 900 tokens\n"
    words = scrubber._find_words(lowered)
    assert b"token" not in words
    assert b"pass" not in words
    assert BOB.scrub_text(lowered.decode()) == lowered.decode()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Names the rules call secret that no stem used to reach: they were never looked at.
        ("contrasena=hunter2", "contrasena=<secret>"),
        ("Contraseña: hunter2", "Contraseña: <secret>"),
        ("DATABASEURL=postgres://u:p@db/app", "DATABASEURL=<secret>"),
        ("database-url: mysql://db/app?x=1", "database-url: <secret>"),
        # A name going on with letters of another script is one name, not cut where they start.
        ("tokenñ=abc123def", "tokenñ=<secret>"),
        ("la contraseña es incorrecta", "la contraseña es incorrecta"),
        # A connection string's names are found without "conn", which is prose in a log.
        ("DB_CONN_STR=Server=db;Password=abc123", "DB_CONN_STR=<secret>;Password=<secret>"),
        ('connectionString: "Server=db;User=sa;Password=Secr3t!"', 'connectionString: "<secret>"'),
        ("connection: keep-alive", "connection: keep-alive"),
    ],
)
def test_names_outside_the_common_stems_are_found(text: str, expected: str) -> None:
    assert BOB.scrub_text(text) == expected


@pytest.mark.timeout(60)  # a hang detector: the linear scrubber takes a tenth of a second here
@pytest.mark.parametrize(
    "glued",
    [
        "token日本",  # names that go on with letters of another script, each cut by the next
        "tokenñ",  # one run of name characters and such letters, 240,000 long
        "token_",  # one run of ASCII name characters
    ],
)
def test_a_long_run_of_glued_names_is_scrubbed_in_time_linear_in_its_length(glued: str) -> None:
    # Every stem used to read the rest of the run to find its name's end, or slice out a name
    # as long as the run: 35 KB of "token日本" took 8 s, the 200,000 characters full content
    # may hold would have taken minutes on the app's thread.
    text = glued * (200_000 // len(glued)) + "=hunter2"
    assert BOB.scrub_text(text).startswith(glued * 10)


def test_a_name_is_at_most_the_longest_name_long() -> None:
    longest = scrubber._LONGEST_NAME
    assert BOB.scrub_text("a" * (longest - 10) + "_token=hunter2x").endswith("_token=<secret>")
    assert BOB.scrub_text("ñ" * (longest + 10) + "token=hunter2x").endswith("token=<secret>")
    # Longer, it is a run of text: a value glued to one is not looked for.
    assert BOB.scrub_text("a" * (longest + 10) + "_token=hunter2x").endswith("_token=hunter2x")


@pytest.mark.timeout(60)  # a hang detector: each of these takes well under a second now
@pytest.mark.parametrize(
    "glued",
    [
        "key=",
        "key=val|",
        "token:",
        "password=",
        "<password>",
        'key="',
        "authorization=",
        'key"',
        'secret "',
        # Found by a helper: blanks after a name and no value took time in their square (5 s for
        # 10,000 of them, so 100 s for 200 KB of these), in the scrubber before this one too.
        "--password" + " " * 10_000 + ",",
        "--token" + "\t" * 10_000 + "&",
        "password" + " " * 10_000 + '"' + "x" * 4096 + "\n",
    ],
)
def test_names_and_values_glued_together_are_scrubbed_in_time_linear_in_their_length(glued: str) -> None:
    # Each name's value used to run to the end of the text: 8 KB of "key=" took half a second,
    # 32 KB seven, and full content (200,000 characters) minutes, on the app's thread.
    text = glued * (200_000 // len(glued))
    assert len(BOB.scrub_text(text)) <= len(text) + 10


_LONG_SECRET = "A1b2" * 200  # 800 characters: longer than a value is read


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"token={_LONG_SECRET} done", "token=<secret> done"),
        (f"api_key={_LONG_SECRET}|next", "api_key=<secret>"),
        (f"Authorization: Bearer {_LONG_SECRET} ok", "Authorization: Bearer <token> ok"),
        (f"authorization={_LONG_SECRET}", "authorization=<token>"),
        (f"<password>{_LONG_SECRET}</password>", "<password><secret></password>"),
        (f'password="{_LONG_SECRET}"', 'password="<secret>"'),
    ],
)
def test_a_value_longer_than_it_is_read_still_goes_whole(text: str, expected: str) -> None:
    assert BOB.scrub_text(text) == expected


@pytest.mark.parametrize("length", [4095, 4096, 4097, 5000, 60_000])
@pytest.mark.parametrize(
    ("before", "after"), [('password="', '"'), ("'api_key': '", "'}"), ("token = `", "`;")]
)
def test_a_quoted_value_longer_than_a_regex_reads_still_goes_whole(
    before: str, after: str, length: int
) -> None:
    # Over 4,096 characters the value's regex gives up; its closing quote is found by C instead
    # (such values leaked from one session to the next).
    value = ("hunter2 " * (length // 8 + 1))[:length]
    assert BOB.scrub_text(f"{before}{value}{after} next") == f"{before}<secret>{after} next"


@pytest.mark.timeout(60)  # a hang detector: each takes a tenth of a second
@pytest.mark.parametrize("unit", ['password="' + "x" * 5000 + "\n", 'token: "' + "y" * 4100 + "\n"])
def test_quoted_values_without_a_closing_quote_are_read_in_linear_time(unit: str) -> None:
    text = unit * (200_000 // len(unit))
    assert BOB.scrub_text(text) == text  # no closing quote on the line: not a quoted value


@pytest.mark.parametrize("length", [4085, 4086, 4096])
def test_an_xml_element_as_long_as_a_quoted_value_is_read_whole(length: int) -> None:
    # Found by a helper: the window for the closing tag did not hold the tag itself.
    value = ("hunter2 " * 600)[:length]
    assert BOB.scrub_text(f"<password>{value}</password>") == "<password><secret></password>"
