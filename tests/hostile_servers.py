"""Misbehaving servers on 127.0.0.1, written with raw sockets: what a flaky network, a captive portal
or a hostile host does to an HTTP client. Each connection runs a behaviour in its own thread.

    with RawServer(trickle) as server:
        url = server.url
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

Behaviour = Callable[[socket.socket, "RawServer"], None]


class RawServer:
    """A loopback TCP server. ``accept=False`` listens but never accepts (the kernel still
    completes the handshake for the backlog): a blackhole one level lower."""

    def __init__(self, behave: Behaviour | None, *, accept: bool = True) -> None:
        self._behave = behave
        self._accept = accept
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port: int = self._listener.getsockname()[1]
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self.connections = 0
        self.requests: list[bytes] = []  # every request head (and body) read by read_request
        self.received = 0  # bytes received, all connections together

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RawServer:
        if self._accept:
            threading.Thread(target=self._serve, daemon=True, name="raw-server").start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopped.set()
        self._listener.close()
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._open.append(conn)
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            if self._behave is not None:
                self._behave(conn, self)
        except OSError:
            pass
        finally:
            conn.close()

    def recv(self, conn: socket.socket, size: int = 65536) -> bytes:
        """One read that gives up when the server stops (b"" then, as at the end of the stream)."""
        conn.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                data = conn.recv(size)
            except TimeoutError:
                continue
            with self._lock:
                self.received += len(data)
            return data
        return b""

    def read_request(self, conn: socket.socket, buffer: bytearray) -> bytes | None:
        """One request (head and Content-Length body) off ``conn``; None when the client left."""
        while b"\r\n\r\n" not in buffer:
            data = self.recv(conn)
            if not data:
                return None
            buffer += data
        head_end = buffer.index(b"\r\n\r\n") + 4
        head = bytes(buffer[:head_end])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(buffer) < head_end + length:
            data = self.recv(conn)
            if not data:
                return None
            buffer += data
        request = bytes(buffer[: head_end + length])
        del buffer[: head_end + length]
        with self._lock:
            self.requests.append(request)
        return request

    def send_slowly(self, conn: socket.socket, data: bytes, pause: float) -> None:
        for byte in data:
            if self.stopped.is_set():
                return
            conn.sendall(bytes([byte]))
            time.sleep(pause)


# -- behaviours ------------------------------------------------------------------------------------


def answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Behaviour:
    """Answer every request on the connection the same way (kept alive, as HTTP/1.1 is)."""
    fields = {"Content-Type": "application/json", **(headers or {}), "Content-Length": str(len(body))}
    head = f"HTTP/1.1 {status} Whatever\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"

    def behave(conn: socket.socket, server: RawServer) -> None:
        buffer = bytearray()
        while server.read_request(conn, buffer) is not None:
            conn.sendall(head.encode("latin-1") + body)

    return behave


def redirect(status: int, location: str) -> Behaviour:
    return answer(status, b"", {"Location": location})


def trickle(pause: float = 0.1) -> Behaviour:
    """A status line, then one header that never ends, one byte every ``pause`` seconds."""

    def behave(conn: socket.socket, server: RawServer) -> None:
        if server.read_request(conn, bytearray()) is None:
            return
        server.send_slowly(conn, b"HTTP/1.1 200 OK\r\nX-Slow: ", pause)
        for _ in itertools.count():
            if server.stopped.is_set():
                return
            conn.sendall(b"a")
            time.sleep(pause)

    return behave


def trickle_body(pause: float = 0.1) -> Behaviour:
    """A well-formed head announcing a small body that arrives one byte every ``pause`` seconds."""
    body = b'{"status": 1}' + b" " * 4000

    def behave(conn: socket.socket, server: RawServer) -> None:
        if server.read_request(conn, bytearray()) is None:
            return
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        )
        server.send_slowly(conn, body, pause)

    return behave


def endless_chunked(conn: socket.socket, server: RawServer) -> None:
    """200, chunked, and chunks forever as fast as the client takes them."""
    if server.read_request(conn, bytearray()) is None:
        return
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"4000\r\n" + b"[" * 0x4000 + b"\r\n"
    while not server.stopped.is_set():
        conn.sendall(chunk)


def endless_body(conn: socket.socket, server: RawServer) -> None:
    """200 with neither a length nor chunks: the body runs until the connection closes, i.e. never."""
    if server.read_request(conn, bytearray()) is None:
        return
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + b'{"status": 1, "pad": "')
    block = b"x" * 65536
    while not server.stopped.is_set():
        conn.sendall(block)


def huge_length(conn: socket.socket, server: RawServer) -> None:
    """200 announcing 10 GB, sent as fast as the client takes it."""
    if server.read_request(conn, bytearray()) is None:
        return
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n")
    block = b" " * 65536
    while not server.stopped.is_set():
        conn.sendall(block)


def endless_interim(conn: socket.socket, server: RawServer) -> None:
    """``100 Continue`` after ``100 Continue``, never a final answer (a client skips interim answers)."""
    if server.read_request(conn, bytearray()) is None:
        return
    while not server.stopped.is_set():
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")


def endless_headers(conn: socket.socket, server: RawServer) -> None:
    """A status line, then short header lines as fast as the client takes them, never a blank line."""
    if server.read_request(conn, bytearray()) is None:
        return
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    for n in itertools.count():
        if server.stopped.is_set():
            return
        conn.sendall(b"X-Header-%d: a\r\n" % n)


def blackhole(conn: socket.socket, server: RawServer) -> None:
    """Accept, read whatever comes, never answer."""
    while server.recv(conn):
        pass


def reset(conn: socket.socket, server: RawServer) -> None:
    """Read the request, then drop the connection with a TCP reset."""
    if server.read_request(conn, bytearray()) is None:
        return
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def recorder(conn: socket.socket, server: RawServer) -> None:
    """What an attacker's host would do: take everything, and say "accepted" as PostHog does."""
    answer(200, b'{"status": 1}')(conn, server)


def describe(behaviour: Any) -> str:
    return getattr(behaviour, "__name__", type(behaviour).__name__)
