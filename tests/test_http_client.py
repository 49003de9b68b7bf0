"""The deadline-bound HTTP client under delivery: framing, keep-alive, caps, TLS and proxies, against
raw loopback servers (the hostile ones are in tests/hostile_servers.py)."""

from __future__ import annotations

import base64
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest

from analytics.endpoint import Endpoint, parse_endpoint
from analytics.sinks.http import (
    BODY_CAP,
    DeadlineExceeded,
    HttpClient,
    ProtocolError,
    TransportError,
    parse_proxy,
    proxy_for,
)
from tests import hostile_servers as hs

OK = b'{"status":"Ok"}'


def client_for(url: str, **environ: str) -> HttpClient:
    return HttpClient(parse_endpoint(url), user_agent="test", environ=environ)


def post(client: HttpClient, body: bytes = b"{}", within: float = 3.0) -> tuple[int, bytes, bool]:
    response = client.request("POST", "/batch/", body, {}, deadline=time.monotonic() + within)
    return response.status, response.body, response.truncated


def raw_answer(data: bytes, *, keep_open: bool = True) -> hs.Behaviour:
    """Answer every request with exactly ``data``; ``keep_open=False`` closes after one."""

    def behave(conn: socket.socket, server: hs.RawServer) -> None:
        buffer = bytearray()
        while server.read_request(conn, buffer) is not None:
            conn.sendall(data)
            if not keep_open:
                return

    return behave


# -- framing -------------------------------------------------------------------------------------------


def test_a_kept_alive_connection_carries_the_next_request() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(OK), OK)
    with hs.RawServer(raw_answer(answer)) as server:
        client = client_for(server.url)
        assert [post(client) for _ in range(3)] == [(200, OK, False)] * 3
        client.close()
        assert server.connections == 1


def test_a_server_that_closes_kept_alive_connections_costs_nothing() -> None:
    # No "Connection: close", yet the server hangs up after each answer: the next request notices
    # and opens a new connection instead of failing.
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(OK), OK)
    with hs.RawServer(raw_answer(answer, keep_open=False)) as server:
        client = client_for(server.url)
        for _ in range(3):
            assert post(client) == (200, OK, False)
            time.sleep(0.05)
        client.close()
        assert server.connections == 3


def test_bytes_past_the_answer_retire_the_connection() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%sHTTP/1.1 200 OK\r\n" % (len(OK), OK)
    with hs.RawServer(raw_answer(answer)) as server:
        client = client_for(server.url)
        assert post(client) == (200, OK, False)
        assert post(client) == (200, OK, False)  # not the leftover half-answer
        client.close()
        assert server.connections == 2


def test_chunked_bodies_with_extensions_and_trailers() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'5;ext=1\r\n{"sta\r\nA\r\ntus":"Ok"}\r\n0\r\nX-Trailer: yes\r\n\r\n'
    )
    with hs.RawServer(raw_answer(answer)) as server:
        client = client_for(server.url)
        assert post(client) == (200, OK, False)
        assert post(client) == (200, OK, False)
        client.close()
        assert server.connections == 1  # read to its end, so kept alive


def test_interim_answers_are_skipped() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(OK), OK)
    with hs.RawServer(raw_answer(answer)) as server:
        assert post(client_for(server.url)) == (200, OK, False)


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4e20\r\n",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
    ],
    ids=["length", "chunked", "until close"],
)
def test_a_long_body_is_cut_at_the_cap_and_the_connection_dropped(head: bytes) -> None:
    answer = head + b"x" * 20000
    with hs.RawServer(raw_answer(answer, keep_open=False)) as server:
        client = client_for(server.url)
        status, body, truncated = post(client)
        assert (status, len(body), truncated) == (200, BODY_CAP, True)
        assert post(client)[2]  # a second request works, on a new connection
        client.close()
        assert server.connections == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200 + b"\r\n",
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 100_000 + b"\r\n\r\n",
    ],
    ids=[
        "not http",
        "bad status",
        "negative length",
        "two lengths",
        "negative chunk",
        "many headers",
        "long line",
    ],
)
def test_malformed_answers_are_protocol_errors(answer: bytes) -> None:
    with hs.RawServer(raw_answer(answer, keep_open=False)) as server, pytest.raises(ProtocolError):
        post(client_for(server.url))


def test_an_early_answer_to_a_large_body_is_read() -> None:
    # nginx's client_max_body_size: 413 before the body is read, then the connection closes.
    def behave(conn: socket.socket, server: hs.RawServer) -> None:
        head = bytearray()
        while b"\r\n\r\n" not in head:
            head += server.recv(conn)
        conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        conn.shutdown(socket.SHUT_WR)
        time.sleep(0.5)

    with hs.RawServer(behave) as server:
        status, _body, _truncated = post(client_for(server.url), body=b"x" * (32 * 1024 * 1024), within=5)
    assert status == 413


def test_headers_cannot_be_injected() -> None:
    client = client_for("http://127.0.0.1:9")
    with pytest.raises(ValueError, match="does not allow"):
        client.request("POST", "/batch/", b"", {"X-A": "1\r\nX-Injected: 1"}, deadline=time.monotonic() + 1)


def test_close_from_another_thread_aborts_a_request_in_flight() -> None:
    with hs.RawServer(hs.blackhole) as server:
        client = client_for(server.url)
        failed: list[BaseException] = []

        def request() -> None:
            try:
                post(client, within=30)
            except TransportError as exc:
                failed.append(exc)

        worker = threading.Thread(target=request)
        worker.start()
        time.sleep(0.3)
        began = time.monotonic()
        client.close()
        worker.join(5)
        assert not worker.is_alive()
        assert time.monotonic() - began < 1.0
        assert failed


def test_a_refused_connection_names_itself() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(TransportError, match="refused"):
        post(client_for(f"http://127.0.0.1:{port}"))


# -- TLS -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("behaviour", [hs.blackhole, hs.trickle(0.1)], ids=["silent", "trickling"])
def test_a_tls_handshake_is_bounded_by_the_deadline(behaviour: hs.Behaviour) -> None:
    with hs.RawServer(behaviour) as server:
        client = client_for(f"https://127.0.0.1:{server.port}")
        began = time.monotonic()
        with pytest.raises(TransportError):
            post(client, within=1.5)
        assert time.monotonic() - began < 2.0


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throwaway CA and a certificate for posthog.example, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ca_extensions = [
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Test CA", *ca_extensions,
        "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=posthog.example",
        "-keyout", "leaf.key", "-out", "leaf.csr")  # fmt: skip
    (folder / "leaf.ext").write_text(
        "subjectAltName=DNS:posthog.example\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    run("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-out", "leaf.pem", "-extfile", "leaf.ext")  # fmt: skip
    return folder


def tunnel_proxy(certificates: Path, seen: list[bytes]) -> hs.Behaviour:
    """An HTTP proxy that accepts CONNECT and then plays the destination itself, over TLS."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificates / "leaf.pem", certificates / "leaf.key")

    def behave(conn: socket.socket, server: hs.RawServer) -> None:
        head = bytearray()
        while b"\r\n\r\n" not in head:
            head += server.recv(conn)
        seen.append(bytes(head))
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        conn.settimeout(5)
        with context.wrap_socket(conn, server_side=True) as tls:
            request = bytearray()
            while b"\r\n\r\n" not in request:
                request += tls.recv(65536)
            seen.append(bytes(request))
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(OK), OK))
            time.sleep(0.2)

    return behave


def test_https_through_a_proxy_tunnel_with_the_certificate_checked(certificates: Path) -> None:
    seen: list[bytes] = []
    with hs.RawServer(tunnel_proxy(certificates, seen)) as proxy:
        environ = {
            "HTTPS_PROXY": f"http://proxy%20user:pa%3Ass@127.0.0.1:{proxy.port}",
            "REQUESTS_CA_BUNDLE": str(certificates / "ca.pem"),
        }
        client = HttpClient(parse_endpoint("https://posthog.example"), user_agent="test", environ=environ)
        status, body, _ = post(client)
        client.close()
    assert (status, body) == (200, OK)
    connect, request = seen
    assert connect.startswith(b"CONNECT posthog.example:443 HTTP/1.1\r\n")
    assert b"Proxy-Authorization: Basic " + base64.b64encode(b"proxy user:pa:ss") in connect
    assert request.startswith(b"POST /batch/ HTTP/1.1\r\nHost: posthog.example\r\n")
    assert b"Proxy-Authorization" not in request  # the proxy's password never reaches the destination


def test_a_certificate_for_another_name_is_refused(certificates: Path) -> None:
    seen: list[bytes] = []
    with hs.RawServer(tunnel_proxy(certificates, seen)) as proxy:
        environ = {
            "https_proxy": f"127.0.0.1:{proxy.port}",
            "REQUESTS_CA_BUNDLE": str(certificates / "ca.pem"),
        }
        client = HttpClient(parse_endpoint("https://other.example"), user_agent="test", environ=environ)
        with pytest.raises(TransportError, match="certificate"):
            post(client)


def test_a_proxy_that_refuses_the_tunnel_says_so() -> None:
    answer = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"
    with hs.RawServer(raw_answer(answer)) as proxy:
        client = HttpClient(
            parse_endpoint("https://posthog.example"),
            user_agent="test",
            environ={"https_proxy": f"http://127.0.0.1:{proxy.port}"},
        )
        with pytest.raises(TransportError, match="407"):
            post(client)


# -- which proxy, if any ---------------------------------------------------------------------------------


def proxy_endpoint(url: str, **environ: str) -> Endpoint | None:
    proxy = proxy_for(parse_endpoint(url), environ)
    return None if proxy is None else proxy.endpoint


def test_proxy_selection_follows_the_usual_variables() -> None:
    assert proxy_endpoint("https://eu.i.posthog.com", HTTPS_PROXY="http://p:3128") == Endpoint(
        "http", "p", 3128
    )
    assert proxy_endpoint("https://eu.i.posthog.com", ALL_PROXY="p:8080") == Endpoint("http", "p", 8080)
    assert proxy_endpoint("https://eu.i.posthog.com", HTTP_PROXY="http://p:3128") is None
    assert proxy_endpoint("http://10.0.0.5:8000", http_proxy="http://p:3128") == Endpoint("http", "p", 3128)
    # httpoxy: under CGI, an HTTP_PROXY could come from a request header
    assert proxy_endpoint("http://10.0.0.5:8000", HTTP_PROXY="http://p:3128", REQUEST_METHOD="GET") is None
    # loopback never goes through a proxy
    assert proxy_endpoint("http://127.0.0.1:8000", http_proxy="http://p:3128") is None
    assert proxy_endpoint("https://localhost:8443", https_proxy="http://p:3128") is None


@pytest.mark.parametrize(
    ("no_proxy", "bypassed"),
    [
        ("*", True),
        ("posthog.com", True),
        (".posthog.com", True),
        ("*.posthog.com", True),
        ("eu.i.posthog.com:443", True),
        ("eu.i.posthog.com:8443", False),
        ("other.com, posthog.com", True),
        ("i.posthog.co", False),
        ("sthog.com", False),
    ],
)
def test_no_proxy(no_proxy: str, bypassed: bool) -> None:
    found = proxy_endpoint("https://eu.i.posthog.com", https_proxy="http://p:3128", no_proxy=no_proxy)
    assert (found is None) is bypassed


def test_no_proxy_with_address_ranges() -> None:
    assert proxy_endpoint("https://10.1.2.3", https_proxy="p:1", NO_PROXY="10.0.0.0/8") is None
    assert proxy_endpoint("https://11.1.2.3", https_proxy="p:1", NO_PROXY="10.0.0.0/8") is not None


def test_an_unusable_proxy_fails_every_request_with_a_masked_reason() -> None:
    proxy = parse_proxy("socks5://alice:hunter2@p:1080")
    assert proxy.endpoint is None
    assert proxy.error is not None
    assert "only http://" in proxy.error
    assert "hunter2" not in proxy.error
    client = HttpClient(
        parse_endpoint("https://eu.i.posthog.com"),
        user_agent="test",
        environ={"https_proxy": "socks5://alice:hunter2@p:1080"},
    )
    with pytest.raises(TransportError) as failed:
        post(client)
    assert "hunter2" not in str(failed.value)


def test_a_loopback_name_only_ever_reaches_loopback() -> None:
    with hs.RawServer(raw_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n" + OK)) as server:
        assert post(client_for(f"http://localhost:{server.port}")) == (200, OK, False)


def test_a_deadline_already_past_fails_at_once() -> None:
    with hs.RawServer(hs.blackhole) as server:
        client = client_for(server.url)
        began = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            client.request("POST", "/batch/", b"{}", {}, deadline=time.monotonic() - 1)
        assert time.monotonic() - began < 0.1
