"""The example backend frozen with PyInstaller (--onefile), run as a desktop shell runs it.

Not collected by the default test run: `make frozen-test` builds the executable from a normal
install and runs this file with ANALYTICS_FROZEN_BACKEND naming it. A --onefile executable is a
bootloader that runs the app as its child process, so each test finds that child and checks it
is gone at the end, not just the process it started.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from analytics.testing import CaptureServer

TOKEN = "phc_frozen_backend"


def executable() -> Path:
    named = os.environ.get("ANALYTICS_FROZEN_BACKEND")
    if not named:
        raise RuntimeError("run through `make frozen-test`: ANALYTICS_FROZEN_BACKEND names the executable")
    return Path(named)


@dataclass
class Running:
    bootloader: subprocess.Popen[bytes]
    app_pid: int
    base: str
    state_dir: Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name is in parentheses and may hold spaces: fields follow the last ')'.
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent has not reaped it yet


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def server() -> Iterator[CaptureServer]:
    with CaptureServer(api_key=TOKEN) as capture:
        yield capture


@pytest.fixture
def backend(server: CaptureServer, tmp_path: Path) -> Iterator[Running]:
    port = free_port()
    state_dir = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEMETRY_", "SENTRY_"))}
    env.update(
        TELEMETRY_ENDPOINT=server.url,
        TELEMETRY_TOKEN=TOKEN,
        TELEMETRY_DIR=str(state_dir),
        TELEMETRY_APP_VERSION="2.0.0-frozen",
    )
    bootloader = subprocess.Popen(
        [str(executable()), "--port", str(port), "--exit-with-parent", "--exit-on-stdin-eof"],
        env=env,
        stdin=subprocess.PIPE,  # as Electron's spawn() gives it: closed when the shell dies
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(base) or bootloader.poll() is not None, 120, "the frozen backend")
        assert bootloader.poll() is None, "the frozen backend exited at start"
        [app_pid] = children_of(bootloader.pid)
        yield Running(bootloader, app_pid, base, state_dir)
    finally:
        for pid in [bootloader.pid, *children_of(bootloader.pid)]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        bootloader.wait(timeout=10)


def answers(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/settings", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def post(base: str, path: str, body: Any) -> Any:
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def drive_one_chat_turn_and_one_proposal(base: str) -> None:
    with connect(base.replace("http://", "ws://") + "/ws/chat") as chat:
        chat.send("explain the frozen build")
        assert "frozen build" in json.loads(chat.recv(timeout=10))["answer"]
    proposal = post(base, "/proposals", {"files": ["main.py"], "lines_changed": 5})
    assert post(base, f"/proposals/{proposal['id']}/approve", {})["decision"] == "approved"


def names(server: CaptureServer) -> list[str]:
    return [e["event"] for e in server.events]


def test_killing_the_bootloader_stops_its_orphaned_app_which_delivers_its_session(
    backend: Running, server: CaptureServer
) -> None:
    drive_one_chat_turn_and_one_proposal(backend.base)
    # What a launcher's hard kill does (Electron's kill("SIGKILL"), a task manager): only the
    # bootloader dies; its child is re-parented and notices.
    os.kill(backend.bootloader.pid, signal.SIGKILL)
    backend.bootloader.wait(timeout=10)
    wait_until(lambda: not alive(backend.app_pid), 30, "the orphaned app process to exit")
    assert server.wait_for_events(6, timeout=10)
    events = names(server)
    for expected in ("session_started", "$ai_generation", "proposal_created", "proposal_decided"):
        assert expected in events
    [ended] = [e for e in server.events if e["event"] == "session_ended"]
    assert ended["properties"]["end_reason"] == "shutdown"  # a clean stop, not a crash found later
    assert ended["properties"]["chat_turns"] == 1
    assert ended["properties"]["proposals_approved"] == 1
    assert {e["properties"]["app_version"] for e in server.events} == {"2.0.0-frozen"}


def test_the_shell_dying_closes_stdin_and_the_whole_backend_stops(
    backend: Running, server: CaptureServer
) -> None:
    drive_one_chat_turn_and_one_proposal(backend.base)
    assert backend.bootloader.stdin is not None
    backend.bootloader.stdin.close()  # the pipe's other end goes when the shell process dies
    assert backend.bootloader.wait(timeout=30) == 0
    assert not alive(backend.app_pid)
    [ended] = [e for e in server.events if e["event"] == "session_ended"]
    assert ended["properties"]["end_reason"] == "shutdown"
    assert "$ai_generation" in names(server)
    assert "proposal_decided" in names(server)
