"""A small HTTP/1.1 client whose every wait is bounded by the caller's deadline, in total.

requests bounds each socket read, not the request: a server trickling one byte every 100 ms, or
answering 200 with an endless body, holds it for as long as it likes and fills memory. Here every
blocking step (name resolution, connect, the proxy tunnel, the TLS handshake, sending, the status
line, the headers, the body) waits at most for the time left before one deadline, so the whole
request ends by it. The rest of the policy:

- response bodies are read up to a small cap (``BODY_CAP``); a longer one is cut and the connection
  closed, so memory stays flat whatever the server sends;
- redirects are answers like any other: nothing is followed;
- the connection is kept alive only after an answer that was read cleanly to its end;
- the host connected to is the validated :class:`~analytics.endpoint.Endpoint`, never a re-parse
  of a URL; a loopback endpoint only ever connects to loopback addresses;
- ``https_proxy``/``http_proxy``/``all_proxy`` and ``no_proxy`` are honoured as curl and requests
  do (HTTPS through a ``CONNECT`` tunnel); loopback endpoints never use a proxy;
- certificates are checked against the system's store plus certifi's bundle when it is installed
  (``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` too, as requests honours them).

Everything the request path needs is imported with this module, in the thread that builds the
client: the uploader thread imports nothing, so a ``fork()`` can never catch it holding an import
lock.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import logging
import os
import re
import select
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

from analytics.endpoint import Endpoint, mask_url_credentials, parse_endpoint

logger = logging.getLogger(__name__)

BODY_CAP: Final = 8 * 1024
MAX_LINE: Final = 8 * 1024
MAX_HEAD_BYTES: Final = 64 * 1024
MAX_HEADERS: Final = 100
MAX_INTERIM_ANSWERS: Final = 8
RECV_SIZE: Final = 64 * 1024
SEND_SIZE: Final = 256 * 1024
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")

# Warm the IDNA codec here: ssl and getaddrinfo encode host names with it, and a codec's first use
# imports a module, which must not happen in the uploader thread (see the module docstring).
"localhost".encode("idna")


# (family, type, proto, canonname, sockaddr), as socket.getaddrinfo returns them.
AddressInfo = tuple[Any, ...]


class TransportError(Exception):
    """No usable answer. ``reason`` is short, names no secret, and is fit for ``analytics status``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DeadlineExceeded(TransportError):
    """The caller's deadline passed before the answer was complete."""


class ProtocolError(TransportError):
    """The peer did not speak HTTP/1.x as we read it (or spoke too much of it)."""


class _StaleConnection(Exception):
    """A kept-alive connection the server had closed before our request reached it."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # names in lower case; a repeated header's values joined by ", "
    body: bytes  # at most the body cap
    truncated: bool = False  # the body went on past the cap (and was not read)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class Proxy:
    endpoint: Endpoint | None
    authorization: str | None = None  # a Proxy-Authorization value
    error: str | None = None  # why this proxy setting cannot be used (each request fails with it)


class HttpClient:
    """Requests to one endpoint over one kept-alive connection. One request at a time (a second
    caller waits for the first, within its own deadline); ``close()`` from any thread aborts a
    request in flight."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        user_agent: str,
        body_cap: int = BODY_CAP,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.endpoint = endpoint
        self._user_agent = user_agent
        self._body_cap = body_cap
        self._proxy = proxy_for(endpoint, env)
        self._ca_files = _ca_files(env) if endpoint.scheme == "https" else []
        self._tls: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self._conn: _Connection | None = None
        self._active: _Connection | None = None
        self._closed = False
        _reset_in_child(self)

    @property
    def proxy(self) -> Proxy | None:
        return self._proxy

    def request(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str], *, deadline: float
    ) -> Response:
        """Send one request and read its answer, all before ``deadline`` (a ``time.monotonic()``
        value). Raises :class:`TransportError` (or :class:`DeadlineExceeded`) instead."""
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise DeadlineExceeded("timed out waiting for another request to finish")
        try:
            if self._closed:
                raise TransportError("the client was closed")
            if self._proxy is not None and self._proxy.error:
                raise TransportError(self._proxy.error)
            message = self._message(method, path, body, headers)
            conn, reused = self._take_connection(deadline)
            try:
                return self._exchange(conn, reused, method, message, deadline)
            except _StaleConnection:
                return self._exchange(self._open(deadline), False, method, message, deadline)
        finally:
            self._lock.release()

    def close(self) -> None:
        """Close the kept-alive connection and abort a request in flight (its thread sees EOF)."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        active = self._active
        if active is not None:
            active.abort()

    # -- one exchange --------------------------------------------------------------------------

    def _message(self, method: str, path: str, body: bytes, headers: Mapping[str, str]) -> bytes:
        endpoint = self.endpoint
        forward_proxy = self._proxy is not None and endpoint.scheme == "http"
        target = endpoint.url(path) if forward_proxy else endpoint.path + path
        fields = {
            "Host": endpoint.authority,
            "User-Agent": self._user_agent,
            "Accept-Encoding": "identity",
            **headers,
            "Content-Length": str(len(body)),
        }
        if forward_proxy and self._proxy is not None and self._proxy.authorization:
            fields["Proxy-Authorization"] = self._proxy.authorization
        lines = [f"{method} {target} HTTP/1.1"]
        for name, value in fields.items():
            if any(ch in name + value for ch in "\r\n\0") or ":" in name:
                raise ValueError(f"header {name!r} holds a character HTTP does not allow")
            lines.append(f"{name}: {value}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    def _take_connection(self, deadline: float) -> tuple[_Connection, bool]:
        conn, self._conn = self._conn, None
        if conn is not None:
            if not conn.idle_and_open():
                conn.close()
            else:
                return conn, True
        return self._open(deadline), False

    def _exchange(
        self, conn: _Connection, reused: bool, method: str, message: bytes, deadline: float
    ) -> Response:
        self._active = conn
        try:
            try:
                conn.send_all(message, deadline)
            except DeadlineExceeded:
                raise
            except TransportError as send_error:
                # A server may answer before reading the whole body (a 413, then close): use it.
                try:
                    response, _reusable = _read_response(conn, method, deadline, self._body_cap)
                except TransportError:
                    if reused and not conn.received_any:
                        raise _StaleConnection from None
                    raise send_error from None
                conn.close()
                return response
            try:
                response, reusable = _read_response(conn, method, deadline, self._body_cap)
            except TransportError:
                if reused and not conn.received_any and not isinstance(conn.last_error, DeadlineExceeded):
                    raise _StaleConnection from None
                raise
        except BaseException:
            conn.close()
            raise
        finally:
            self._active = None
        if reusable and not conn.buffer and not self._closed:  # bytes past the answer: not HTTP we trust
            self._conn = conn
        else:
            conn.close()
        return response

    # -- opening a connection ------------------------------------------------------------------

    def _open(self, deadline: float) -> _Connection:
        proxy = self._proxy
        target = proxy.endpoint if proxy is not None and proxy.endpoint is not None else self.endpoint
        sock = _connect(target, deadline)
        conn = _Connection(sock)
        try:
            if proxy is not None and self.endpoint.scheme == "https":
                self._tunnel(conn, proxy, deadline)
            if self.endpoint.scheme == "https":
                conn = _Connection(self._handshake(sock, deadline))
        except BaseException:
            conn.close()
            sock.close()
            raise
        return conn

    def _tunnel(self, conn: _Connection, proxy: Proxy, deadline: float) -> None:
        endpoint = self.endpoint
        host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
        lines = [
            f"CONNECT {host}:{endpoint.port} HTTP/1.1",
            f"Host: {host}:{endpoint.port}",
            f"User-Agent: {self._user_agent}",
        ]
        if proxy.authorization:
            lines.append(f"Proxy-Authorization: {proxy.authorization}")
        conn.send_all(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), deadline)
        status, _version, _headers = _read_head(conn, deadline)
        if status // 100 != 2:
            raise TransportError(f"the proxy refused the tunnel (HTTP {status})")
        if conn.buffer:
            raise ProtocolError("the proxy sent data before the tunnel was used")

    def _handshake(self, sock: socket.socket, deadline: float) -> socket.socket:
        if self._tls is None:
            self._tls = _tls_context(self._ca_files)
        tls = self._tls.wrap_socket(sock, server_hostname=self.endpoint.host, do_handshake_on_connect=False)
        try:
            tls.settimeout(_time_left(deadline, "the TLS handshake"))
            tls.do_handshake()  # its timeout bounds the whole handshake, not each read
        except BaseException as exc:
            tls.close()
            if isinstance(exc, TimeoutError):
                raise DeadlineExceeded("timed out in the TLS handshake") from None
            if isinstance(exc, ssl.SSLCertVerificationError):
                raise TransportError(f"TLS: certificate not accepted ({exc.verify_message})") from None
            if isinstance(exc, ssl.SSLError):
                raise TransportError(f"TLS: {exc.reason or 'handshake failed'}") from None
            if isinstance(exc, OSError):
                raise TransportError(_os_reason(exc)) from None
            raise
        return tls


class _Connection:
    """A socket and the bytes read from it that nobody consumed yet."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.received_any = False
        self.last_error: TransportError | None = None

    def send_all(self, data: bytes, deadline: float) -> None:
        # socket.sendall's timeout bounds the whole call, but SSLSocket.sendall's bounds each
        # chunk: send piece by piece, each wait bounded by the time left.
        view = memoryview(data)
        sent = 0
        while sent < len(view):
            self.sock.settimeout(_time_left(deadline, "sending"))
            try:
                sent += self.sock.send(view[sent : sent + SEND_SIZE])
            except TimeoutError:
                raise DeadlineExceeded("timed out sending the request") from None
            except OSError as exc:
                raise TransportError(_os_reason(exc)) from None

    def fill(self, deadline: float, what: str) -> bool:
        """Read more into the buffer; False at the end of the stream."""
        try:
            self.sock.settimeout(_time_left(deadline, what))
            data = self.sock.recv(RECV_SIZE)
        except TimeoutError:
            self.last_error = DeadlineExceeded(f"timed out waiting for {what}")
            raise self.last_error from None
        except DeadlineExceeded as exc:
            self.last_error = exc
            raise
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return False
        except ssl.SSLError as exc:
            raise TransportError(f"TLS: {exc.reason or 'read failed'}") from None
        except OSError as exc:
            if isinstance(exc, ConnectionResetError) and not self.received_any:
                return False  # the usual way a server drops a kept-alive connection
            raise TransportError(_os_reason(exc)) from None
        if not data:
            return False
        self.received_any = True
        self.buffer += data
        return True

    def idle_and_open(self) -> bool:
        """An idle kept-alive connection is readable only when the server closed it (or sent
        something unasked): either way it must not carry the next request."""
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return False
        try:
            if hasattr(select, "poll"):
                poller = select.poll()
                poller.register(self.sock, select.POLLIN)
                return not poller.poll(0)
            readable, _, _ = select.select([self.sock], [], [], 0)
            return not readable
        except (OSError, ValueError):
            return False

    def abort(self) -> None:
        # shutdown, not close: a thread blocked in recv wakes with EOF, and the descriptor stays
        # ours until that thread closes it (a closed number could be reused by the app meanwhile).
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


# -- reading an answer ---------------------------------------------------------------------------


def _read_line(conn: _Connection, deadline: float, what: str, limit: int = MAX_LINE) -> bytes:
    while True:
        end = conn.buffer.find(b"\n")
        if end >= 0:
            if end > limit:
                raise ProtocolError(f"{what}: line too long")
            line = bytes(conn.buffer[: end + 1])
            del conn.buffer[: end + 1]
            return line
        if len(conn.buffer) > limit:
            raise ProtocolError(f"{what}: line too long")
        if not conn.fill(deadline, what):
            if conn.received_any:
                raise ProtocolError("the connection closed in the middle of the answer")
            raise TransportError("the server closed the connection without answering")


def _read_exact(conn: _Connection, size: int, deadline: float) -> bytes:
    while len(conn.buffer) < size:
        if not conn.fill(deadline, "the body"):
            raise ProtocolError("the connection closed before the body was complete")
    data = bytes(conn.buffer[:size])
    del conn.buffer[:size]
    return data


def _read_head(conn: _Connection, deadline: float) -> tuple[int, bytes, dict[str, str]]:
    line = _read_line(conn, deadline, "the status line")
    if line in (b"\r\n", b"\n"):  # RFC 9112 2.2: a client may ignore an empty line before it
        line = _read_line(conn, deadline, "the status line")
    parts = line.rstrip(b"\r\n").split(b" ", 2)
    if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") or not _is_status(parts[1]):
        raise ProtocolError("the answer is not HTTP/1.x")
    headers: dict[str, str] = {}
    total = len(line)
    count = 0
    last: str | None = None
    while True:
        line = _read_line(conn, deadline, "the headers")
        total += len(line)
        if total > MAX_HEAD_BYTES:
            raise ProtocolError("the headers are too large")
        if line in (b"\r\n", b"\n"):
            return int(parts[1]), parts[0], headers
        text = line.rstrip(b"\r\n").decode("latin-1")
        if text[:1] in (" ", "\t"):  # obsolete line folding
            if last is None:
                raise ProtocolError("malformed headers")
            headers[last] = f"{headers[last]} {text.strip()}"
            continue
        name, colon, value = text.partition(":")
        name = name.strip().lower()
        if not colon or not name:
            raise ProtocolError("malformed headers")
        count += 1
        if count > MAX_HEADERS:
            raise ProtocolError("too many headers")
        headers[name] = f"{headers[name]}, {value.strip()}" if name in headers else value.strip()
        last = name


def _is_status(token: bytes) -> bool:
    return len(token) == 3 and token.isdigit() and token[:1] != b"0"


def _read_response(conn: _Connection, method: str, deadline: float, cap: int) -> tuple[Response, bool]:
    """The answer (1xx interim answers skipped) and whether the connection can carry another."""
    for _ in range(MAX_INTERIM_ANSWERS):
        status, version, headers = _read_head(conn, deadline)
        if not 100 <= status < 200 or status == 101:
            break
    else:
        raise ProtocolError("too many interim (1xx) answers")
    keep_alive = version == b"HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    coding = headers.get("transfer-encoding", "").lower()
    if method == "HEAD" or status in (101, 204, 304):
        return Response(status, headers, b""), keep_alive and status != 101
    if coding:
        if coding.rsplit(",", 1)[-1].strip() != "chunked":
            body, truncated = _read_until_close(conn, deadline, cap)
            return Response(status, headers, body, truncated), False
        body, truncated = _read_chunked(conn, deadline, cap)
        return Response(status, headers, body, truncated), keep_alive and not truncated
    if "content-length" in headers:
        values = {value.strip() for value in headers["content-length"].split(",")}
        text = values.pop() if len(values) == 1 else ""
        if not text.isascii() or not text.isdigit():
            raise ProtocolError("the Content-Length is not a number")
        length = int(text)
        body = _read_exact(conn, min(length, cap), deadline)
        truncated = length > cap
        return Response(status, headers, body, truncated), keep_alive and not truncated
    body, truncated = _read_until_close(conn, deadline, cap)
    return Response(status, headers, body, truncated), False


def _read_chunked(conn: _Connection, deadline: float, cap: int) -> tuple[bytes, bool]:
    body = bytearray()
    while True:
        line = _read_line(conn, deadline, "a chunk", limit=1024)
        size_text = line.split(b";", 1)[0].strip()
        if not size_text or len(size_text) > 16 or not _HEX.issuperset(size_text):
            raise ProtocolError("malformed chunked body")
        size = int(size_text, 16)
        if size == 0:
            trailer_bytes = 0
            while (trailer := _read_line(conn, deadline, "the trailers")) not in (b"\r\n", b"\n"):
                trailer_bytes += len(trailer)
                if trailer_bytes > MAX_HEAD_BYTES:
                    raise ProtocolError("the trailers are too large")
            return bytes(body), False
        if len(body) + size > cap:
            body += _read_exact(conn, cap - len(body), deadline)
            return bytes(body), True
        body += _read_exact(conn, size, deadline)
        if _read_line(conn, deadline, "a chunk", limit=2) not in (b"\r\n", b"\n"):
            raise ProtocolError("malformed chunked body")


def _read_until_close(conn: _Connection, deadline: float, cap: int) -> tuple[bytes, bool]:
    while len(conn.buffer) <= cap:
        if not conn.fill(deadline, "the body"):
            break
    truncated = len(conn.buffer) > cap
    body = bytes(conn.buffer[:cap])
    conn.buffer.clear()
    return body, truncated


# -- connecting ----------------------------------------------------------------------------------


def _time_left(deadline: float, what: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded(f"timed out before {what}")
    return left


def _connect(target: Endpoint, deadline: float) -> socket.socket:
    addresses = _resolve(target.host, target.port, deadline)
    if target.is_loopback:
        # "localhost" was accepted over plain http because it is this machine: hold it to that.
        addresses = [a for a in addresses if ipaddress.ip_address(str(a[4][0]).split("%")[0]).is_loopback]
        if not addresses:
            raise TransportError(f"{target.host} does not resolve to a loopback address")
    last: OSError | None = None
    for family, kind, proto, _name, address in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(_time_left(deadline, "connecting"))
            sock.connect(address)
        except TimeoutError:
            sock.close()
            raise DeadlineExceeded("timed out connecting") from None
        except DeadlineExceeded:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            last = exc
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise TransportError(_os_reason(last) if last else "no address to connect to")


def _resolve(host: str, port: int, deadline: float) -> list[AddressInfo]:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    # getaddrinfo has no timeout (a dead DNS server holds it for 10 s and more): ask in a helper
    # thread and wait for it only as long as the deadline allows.
    found: list[AddressInfo] = []
    failed: list[OSError] = []

    def lookup() -> None:
        try:
            found.extend(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
        except OSError as exc:
            failed.append(exc)

    helper = threading.Thread(target=lookup, name="analytics-resolve", daemon=True)
    try:
        helper.start()
    except RuntimeError:  # the interpreter is exiting and refuses new threads: ask directly
        lookup()
    else:
        helper.join(_time_left(deadline, "resolving the host name"))
        if helper.is_alive():
            raise DeadlineExceeded("timed out resolving the host name")
    if failed:
        raise TransportError(f"cannot resolve the host name ({_os_reason(failed[0])})")
    if not found:
        raise TransportError("the host name resolves to no address")
    return found


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return exc.strerror or "name resolution failed"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(exc, BrokenPipeError | ConnectionAbortedError):
        return "the server closed the connection"
    return exc.strerror or type(exc).__name__


def _tls_context(ca_files: list[str]) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for path in ca_files:
        try:
            context.load_verify_locations(cafile=path)
        except (OSError, ssl.SSLError) as exc:
            logger.debug("telemetry: CA bundle %s not loaded: %s", path, exc)
    return context


def _ca_files(environ: Mapping[str, str]) -> list[str]:
    files = [environ[name] for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE") if environ.get(name)]
    try:
        import certifi  # with the client, never in the uploader thread
    except ImportError:
        return files
    try:
        return [*files, certifi.where()]
    except Exception:  # a broken certifi install: the system store still works
        return files


# -- proxies -------------------------------------------------------------------------------------


def proxy_for(endpoint: Endpoint, environ: Mapping[str, str]) -> Proxy | None:
    """The proxy the environment asks for to reach ``endpoint``, as curl and requests read it."""
    if endpoint.is_loopback or _bypassed(endpoint, _env(environ, "no_proxy")):
        return None
    # httpoxy: under CGI, HTTP_PROXY can come from a request header, so only the lower case counts.
    upper_http = "REQUEST_METHOD" not in environ
    names = ["https_proxy", "all_proxy"] if endpoint.scheme == "https" else ["http_proxy", "all_proxy"]
    for name in names:
        value = _env(environ, name, upper=upper_http or name != "http_proxy")
        if value:
            return parse_proxy(value)
    return None


def _env(environ: Mapping[str, str], name: str, *, upper: bool = True) -> str:
    value = environ.get(name) or (environ.get(name.upper()) if upper else None) or ""
    return value.strip()


def parse_proxy(text: str) -> Proxy:
    """``http://[user:password@]host:port`` -> a :class:`Proxy` (its error says what is unusable)."""
    shown = mask_url_credentials(text)
    if "://" not in text:
        text = "http://" + text
    scheme, _, rest = text.partition("://")
    if scheme.lower() != "http":
        return Proxy(None, error=f"proxy {shown}: only http:// proxies are supported")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    userinfo, at, hostport = authority.rpartition("@")
    try:
        endpoint = parse_endpoint(f"http://{hostport}")
    except ValueError as exc:
        return Proxy(None, error=f"proxy {shown} is not usable: {exc}")
    authorization = None
    if at:
        user, _, password = userinfo.partition(":")
        token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
        authorization = f"Basic {token}"
    return Proxy(endpoint, authorization)


def _bypassed(endpoint: Endpoint, no_proxy: str) -> bool:
    host = endpoint.host
    for raw in re.split(r"[,\s]+", no_proxy.lower()):
        entry = raw.strip()
        if not entry:
            continue
        if entry == "*":
            return True
        if "/" in entry:
            try:
                if endpoint.is_ip and ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        entry_host, port = _split_no_proxy_entry(entry)
        if port is not None and port != endpoint.port:
            continue
        entry_host = entry_host.lstrip("*").lstrip(".")
        if entry_host and (host == entry_host or host.endswith("." + entry_host)):
            return True
    return False


def _split_no_proxy_entry(entry: str) -> tuple[str, int | None]:
    if entry.startswith("["):
        literal, _, after = entry[1:].partition("]")
        port = after[1:] if after.startswith(":") else ""
        return literal, int(port) if port.isdigit() else None
    if entry.count(":") == 1:
        name, _, port = entry.partition(":")
        return name, int(port) if port.isdigit() else None
    return entry, None


# -- fork safety ---------------------------------------------------------------------------------


def _reset_in_child(client: HttpClient) -> None:
    """A forked child must not talk on the parent's connection (their bytes would interleave), nor
    wait on a lock the parent's uploader held at the fork."""
    ref = weakref.ref(client)

    def reset() -> None:
        target = ref()
        if target is None:
            return
        target._lock = threading.Lock()
        target._active = None
        conn, target._conn = target._conn, None
        if conn is not None:
            conn.close()  # closes the child's copy of the descriptor; the parent's stays open

    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=reset)
