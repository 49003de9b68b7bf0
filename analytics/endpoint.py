"""The PostHog host, parsed once: what the config validates is exactly what delivery connects to.

One strict parser serves the config check, the sink and ``analytics doctor``, so no second parser
can read the same text differently (``urlsplit`` reads ``http://10.1.2.3:8000\\@127.0.0.1:8000`` as
a loopback host; an HTTP client reads it as 10.1.2.3). Credentials in the URL, backslashes,
whitespace, control characters, queries and fragments are refused rather than interpreted.

Pure: no I/O, cheap to import (the config imports it).
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from dataclasses import dataclass
from typing import Final

DEFAULT_PORTS: Final = {"http": 80, "https": 443}
_LABEL_RE: Final = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
_PATH_RE: Final = re.compile(r"^(?:/[A-Za-z0-9\-._~!$&'()*+,;=:%]*)*$")
_NUMERIC_LABEL_RE: Final = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")

# posthog-python's determine_server_host: the app hosts of PostHog Cloud answer the dashboard, and
# their events go to the ingestion host (tests compare this table with posthog's own function).
INGESTION_HOSTS: Final = {
    "app.posthog.com": "us.i.posthog.com",
    "us.posthog.com": "us.i.posthog.com",
    "eu.posthog.com": "eu.i.posthog.com",
}

EXAMPLE: Final = "expected a URL such as https://eu.i.posthog.com"


@dataclass(frozen=True)
class Endpoint:
    """A validated ``scheme://host[:port][/path]``. ``host`` is ASCII (IDNA) or a bare IP literal."""

    scheme: str
    host: str
    port: int
    path: str = ""  # a prefix such as "/ingest", never ending in "/"

    @property
    def is_ip(self) -> bool:
        return _ip(self.host) is not None

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)

    @property
    def authority(self) -> str:
        """``host[:port]`` as the ``Host`` header carries it (IPv6 in brackets, default port left out)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.authority}"

    def __str__(self) -> str:
        return self.origin + self.path

    def url(self, path: str) -> str:
        return self.origin + self.path + path


def parse_endpoint(text: str) -> Endpoint:
    """Parse and validate a PostHog host; ``ValueError`` says what is wrong (never echoing the text).

    >>> parse_endpoint("https://EU.posthog.com/")
    Endpoint(scheme='https', host='eu.posthog.com', port=443, path='')
    >>> parse_endpoint("http://10.1.2.3:8000\\\\@127.0.0.1:8000")
    Traceback (most recent call last):
    ...
    ValueError: must not contain a backslash
    """
    text = text.strip()
    if any(_is_control(ch) for ch in text):
        raise ValueError("must not contain control characters")
    if any(ch.isspace() for ch in text):
        raise ValueError("must not contain spaces")
    if "\\" in text:
        raise ValueError("must not contain a backslash")
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS:
        raise ValueError(EXAMPLE)
    if "@" in rest:
        raise ValueError(
            "must not hold credentials (user:password@): the project API key goes in TELEMETRY_TOKEN"
        )
    if "?" in rest or "#" in rest:
        raise ValueError("must not have a query (?) or a fragment (#)")
    slash = rest.find("/")
    authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    host, port = _split_authority(authority, DEFAULT_PORTS[scheme])
    path = path.rstrip("/")
    if not path.isascii() or not _PATH_RE.match(path):
        raise ValueError("the path may hold only ASCII letters, digits and - . _ ~ / % and the like")
    return Endpoint(scheme, host, port, path)


def _split_authority(authority: str, default_port: int) -> tuple[str, int]:
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise ValueError("an IPv6 address must be closed with ]")
        literal, after = authority[1:end], authority[end + 1 :]
        if "%" in literal:
            raise ValueError("an IPv6 zone (%...) is not accepted")
        try:
            host = str(ipaddress.IPv6Address(literal))
        except ValueError:
            raise ValueError("not a valid IPv6 address") from None
        if after and not after.startswith(":"):
            raise ValueError(EXAMPLE)
        port_text = after[1:] if after else None
    else:
        if authority.count(":") > 1:
            raise ValueError("an IPv6 address must be written in brackets, e.g. http://[::1]:8000")
        name, colon, port_text_raw = authority.partition(":")
        port_text = port_text_raw if colon else None
        host = _host_name(name)
    if port_text is None:
        return host, default_port
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError("the port must be a number from 1 to 65535")
    return host, int(port_text)


def _host_name(name: str) -> str:
    if not name:
        raise ValueError(EXAMPLE)
    if name.endswith("."):
        name = name[:-1]
    try:
        ascii_name = name.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise ValueError("not a valid host name") from None
    labels = ascii_name.split(".")
    if _NUMERIC_LABEL_RE.match(labels[-1]):
        # An all-numeric last label makes the name an IPv4 address to resolvers ("127.1",
        # "2130706433", "0x7f.1"): accept only the plain dotted form, so everyone reads the same host.
        try:
            return str(ipaddress.IPv4Address(ascii_name))
        except ValueError:
            raise ValueError("not a valid IPv4 address (expected four decimal numbers)") from None
    if len(ascii_name) > 253 or not all(_LABEL_RE.match(label) for label in labels):
        raise ValueError("not a valid host name")
    return ascii_name


def _is_control(ch: str) -> bool:
    # Cc: C0/C1 controls; Cf: invisible format characters (zero-width space, bidi overrides).
    return unicodedata.category(ch) in {"Cc", "Cf"}


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and any loopback IP (127.0.0.0/8, ::1)."""
    if host.lower().rstrip(".") in {"localhost", "localhost.localdomain"}:
        return True
    address = _ip(host)
    return address is not None and address.is_loopback


def ingestion_endpoint(endpoint: Endpoint) -> Endpoint:
    """Where events for ``endpoint`` go: PostHog Cloud's app hosts map to their ingestion hosts."""
    target = INGESTION_HOSTS.get(endpoint.host)
    if target and endpoint.scheme == "https" and endpoint.port == 443 and not endpoint.path:
        return Endpoint("https", target, 443)
    return endpoint


def mask_url_credentials(text: str) -> str:
    """``http://alice:hunter2@host/x`` -> ``http://****@host/x``: anything before an ``@`` in the
    authority is hidden, however malformed the rest is (this is for showing, not for parsing)."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "", text
    end = len(rest)
    for delimiter in "/?#":
        found = rest.find(delimiter)
        if 0 <= found < end:
            end = found
    authority = rest[:end]
    if "@" not in authority:
        return text
    shown = "****@" + authority.rsplit("@", 1)[1] + rest[end:]
    return f"{scheme}://{shown}" if sep else shown


def describe_location(location: str, limit: int = 120) -> str:
    """A redirect target safe to show: credentials masked, query and fragment dropped, control
    characters replaced, length capped."""
    masked = mask_url_credentials(location.strip())
    for delimiter in "?#":
        masked = masked.split(delimiter, 1)[0]
    cleaned = "".join("?" if _is_control(ch) else ch for ch in masked)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"
