"""The hostile-input suite, host side: what a wrong folder, another account, a broken or locked
disk, a damaged file, a signal or a fork does to the app that embeds us.

Each test is one finding of an adversarial probe (issue 11), kept so it cannot come back. For
every fault the events balance: emitted = delivered + counted drops + still queued.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from analytics import Analytics, TelemetryConfig, events
from analytics.events import InvalidEvent
from analytics.privacy.identity import INSTALL_ID_FILE, SALT_FILE, load_or_create_identity
from analytics.sinks.archive import read_archive
from analytics.state import StateFolder
from analytics.testing import CaptureServer
from tests.conftest import archived_messages, queued_messages
from tests.hostile import (
    balance,
    nonzero,
    require_file_modes,
    require_mounts,
    run_elsewhere,
    write_lock_held,
)

TOKEN = "phc_hostile_host_0123"


def tool(n: int) -> events.ToolCall:
    return events.ToolCall(tool_name=f"n{n}", duration_ms=n, success=True)


def spans(messages: list[dict[str, Any]]) -> list[int]:
    return [int(m["properties"]["$ai_span_name"][1:]) for m in messages if m["event"] == "$ai_span"]


def tree_digest(root: Path) -> dict[str, str]:
    """Every file and link under ``root`` with a digest of its bytes (or its link target)."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[rel] = "dir"
    return found


# -- 1. opting out deletes only what the library created ---------------------------------------


def test_opt_out_leaves_the_users_own_files_byte_for_byte(tmp_path: Path) -> None:
    home = tmp_path / "home"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("not ours")
    mine = {
        "notes.txt": "shopping list",
        "salt.txt": "kosher",
        "queue/mine.txt": "a file of the user's in a folder with our name",
        "archive/photo.jpg": "jpeg bytes",
        "archive/2024 taxes.jsonl": "{}",
        "sessions/notes.json": "[]",
        "meta/cache.db.bak": "a backup",
        "project/src/main.py": "print('hi')",
        "queue.corrupt-notes/readme": "named like ours, not ours",
    }
    for rel, text in mine.items():
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text(text)
    (home / "link-out").symlink_to(outside)
    (home / "sessions" / "link-in").symlink_to(outside / "precious.txt")
    before = tree_digest(home)
    before_outside = tree_digest(outside)

    config = TelemetryConfig.from_env({"TELEMETRY_DIR": str(home)}, proposal_ttl_days=1)
    telemetry = Analytics(config)
    telemetry.start()
    telemetry.emit(
        events.ProposalCreated(proposal_id="p1", file_count=1, total_lines_changed=3, operation="edit")
    )
    for n in range(5):
        telemetry.emit(tool(n))
    telemetry.capture_exception(ValueError("boom"))
    assert telemetry.flush(timeout=10)
    assert archived_messages(home)  # the library did write its own files here
    telemetry.shutdown()

    again = Analytics(TelemetryConfig.from_env({"TELEMETRY_DIR": str(home)}))
    again.emit(tool(99))  # something queued at the moment of opting out
    again.set_enabled(False)

    after = tree_digest(home)
    assert {rel: after.get(rel) for rel in before} == before  # every file of the user's, intact
    assert set(after) - set(before) == {"opted-out"}  # and nothing of ours left but the marker
    assert tree_digest(outside) == before_outside


# -- 2. an unusable state folder never raises into the app ---------------------------------------

UNUSABLE_FOLDER_APP = """
    import json, sys
    from analytics import Analytics, TelemetryConfig, events
    telemetry = Analytics(TelemetryConfig.from_env({"TELEMETRY_DIR": %r}))
    enabled, reason = telemetry.enabled, telemetry.disabled_reason
    telemetry.start()
    for n in range(20):
        telemetry.emit(events.ToolCall(tool_name="x", duration_ms=n, success=True))
    telemetry.capture_exception(RuntimeError("still fine"))
    flushed = telemetry.flush(timeout=1)
    status = telemetry.status()
    telemetry.shutdown(timeout=1)
    telemetry.set_enabled(False)
    telemetry.set_enabled(True)
    telemetry.emit(events.ToolCall(tool_name="after", duration_ms=1, success=True))
    telemetry.shutdown(timeout=1)
    print(json.dumps({"enabled": enabled, "reason": reason,
                      "storage": status.storage, "problems": list(status.problems)}))
"""


def test_a_folder_of_another_account_disables_telemetry_without_raising(tmp_path: Path) -> None:
    require_file_modes(tmp_path)
    private = tmp_path / "someone-else"
    private.mkdir(mode=0o000)
    os.chmod(private, 0o000)
    result = run_elsewhere(UNUSABLE_FOLDER_APP % str(private / "telemetry"), file_modes_apply=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # Whether this user opted out cannot be read: that fails closed.
    assert report["enabled"] is False
    assert "opt-out cannot be checked" in report["reason"]
    assert "Traceback" not in result.stderr


def test_a_symlink_into_a_private_folder_disables_telemetry_without_raising(tmp_path: Path) -> None:
    require_file_modes(tmp_path)
    private = tmp_path / "vault"
    (private / "telemetry").mkdir(parents=True)
    os.chmod(private, 0o000)
    (tmp_path / "link").symlink_to(private / "telemetry")
    result = run_elsewhere(UNUSABLE_FOLDER_APP % str(tmp_path / "link"), file_modes_apply=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["enabled"] is False
    assert "Traceback" not in result.stderr


def test_a_path_too_long_to_exist_keeps_events_in_memory_and_says_so(tmp_path: Path) -> None:
    too_long = tmp_path / ("x" * 300) / "telemetry"
    result = run_elsewhere(UNUSABLE_FOLDER_APP % str(too_long))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["enabled"] is True
    assert report["storage"] == "memory"
    assert any("memory" in problem for problem in report["problems"])
    # At exit the events that could be neither stored nor delivered are counted, and said.
    assert "could neither be stored nor delivered" in result.stderr
    assert "Traceback" not in result.stderr


# -- 4. signals and forks ------------------------------------------------------------------------

SIGNAL_APP = """
    import faulthandler, glob, json, random, signal, sys, tempfile, threading
    from pathlib import Path
    from analytics import Analytics, TelemetryConfig, events
    from tests.conftest import queued_messages
    faulthandler.dump_traceback_later(60, exit=True)   # a hang fails the run, with the stacks
    rng = random.Random(11)
    unbalanced = []
    for run in range(40):
        folder = tempfile.mkdtemp()
        telemetry = Analytics(TelemetryConfig.from_env({"TELEMETRY_DIR": folder}))
        telemetry.start()
        done = []
        emitted = [0]
        def handler(signum, frame):
            if %(mode)r == "shutdown":
                telemetry.shutdown(2)
            else:
                telemetry.emit(events.ToolCall(tool_name="from-handler", duration_ms=1, success=True))
                emitted[0] += 1
            done.append(True)
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, rng.uniform(0.0005, 0.02))
        while not done:
            telemetry.emit(events.ToolCall(tool_name="main", duration_ms=1, success=True))
            emitted[0] += 1
        telemetry.shutdown(2)
        # The accounting: every tool call emitted (in the loop or in the handler) is delivered to
        # the archive, counted as a drop, or still queued. An emit cut short by the signal counts
        # as emitted only if it returned, so delivered may exceed the tally by at most that one.
        # A shutdown that interrupted an emit leaves the journal for the next start (nothing is
        # moved under an append in progress): the queue then holds the session's own events too,
        # so the tool calls are counted by name, and status() must count every queued message.
        report = telemetry.status()
        delivered = sum(
            1
            for path in glob.glob(folder + "/archive/*.jsonl")
            for line in open(path)
            if json.loads(line)["event"] == "$ai_span"
        )
        queued = queued_messages(Path(folder))
        spans = sum(1 for message in queued if message["event"] == "$ai_span")
        total = delivered + sum(report.drops.values()) + spans
        if not emitted[0] <= total <= emitted[0] + 1 or report.queue_depth != len(queued):
            unbalanced.append((run, emitted[0], delivered, dict(report.drops), spans, report.queue_depth))
    print(json.dumps(unbalanced))
"""


@pytest.mark.parametrize("mode", ["shutdown", "emit"])
def test_a_signal_handler_using_telemetry_while_the_app_emits_never_hangs(mode: str) -> None:
    result = run_elsewhere(SIGNAL_APP % {"mode": mode}, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) == [], "runs where emitted != delivered + drops + queued"


SHUTDOWN_WHILE_EMITTING_APP = """
    import glob, json, tempfile, threading, time
    from pathlib import Path
    from analytics import Analytics, TelemetryConfig, events
    from tests.conftest import queued_messages
    unbalanced = []
    for run in range(12):
        folder = tempfile.mkdtemp()
        telemetry = Analytics(TelemetryConfig.from_env({"TELEMETRY_DIR": folder}))
        telemetry.start()
        emitted = [0]
        stop = threading.Event()
        def worker():
            while not stop.is_set():
                telemetry.emit(events.ToolCall(tool_name="w", duration_ms=1, success=True))
                emitted[0] += 1
        thread = threading.Thread(target=worker)
        thread.start()
        time.sleep(0.02)
        telemetry.shutdown(1)   # while the worker emits: some of its emits race with the close
        time.sleep(0.01)
        stop.set()
        thread.join()
        telemetry.shutdown(0)   # the emits after the first shutdown opened the queue again: close it
        # The session's own events may still be queued too (a shutdown that spent its time waiting
        # for start()'s thread delivers nothing): the tool calls are counted by name, and status()
        # must count every queued message.
        report = telemetry.status()
        delivered = sum(
            1
            for path in glob.glob(folder + "/archive/*.jsonl")
            for line in open(path)
            if json.loads(line)["event"] == "$ai_span"
        )
        queued = queued_messages(Path(folder))
        spans = sum(1 for message in queued if message["event"] == "$ai_span")
        if delivered + sum(report.drops.values()) + spans != emitted[0] or report.queue_depth != len(queued):
            unbalanced.append((run, emitted[0], delivered, spans, report.queue_depth, len(queued)))
    print(json.dumps(unbalanced))
"""


def test_events_emitted_while_another_thread_shuts_down_are_never_lost(tmp_path: Path) -> None:
    # An emit holding the queue that shutdown() closed used to land in that queue's memory
    # buffer, which nothing reads again: gone, and counted nowhere.
    result = run_elsewhere(SHUTDOWN_WHILE_EMITTING_APP, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout) == [], "runs where emitted != delivered + drops + queued"


FORK_WHILE_EMITTING_APP = """
    import os, signal, sys, threading, time
    from analytics import Analytics, TelemetryConfig, events
    telemetry = Analytics(TelemetryConfig.from_env({"TELEMETRY_DIR": %r}))
    telemetry.start()
    stop = False
    def worker():
        while not stop:
            telemetry.emit(events.ToolCall(tool_name="parent", duration_ms=1, success=True))
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    hung = 0
    for child in range(30):
        time.sleep(0.01)
        pid = os.fork()
        if pid == 0:
            signal.alarm(10)   # a child that hangs dies of SIGALRM and is counted as hung
            telemetry.emit(events.ToolCall(tool_name="child-%%d" %% child, duration_ms=1, success=True))
            telemetry.flush(timeout=1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        hung += 0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else 1
    stop = True
    for thread in threads:
        thread.join()
    telemetry.flush(timeout=10)
    telemetry.shutdown()
    print(hung)
"""


def test_fork_while_app_threads_emit_leaves_no_child_hung(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = run_elsewhere(FORK_WHILE_EMITTING_APP % str(state), timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "0", result.stderr[-3000:]
    names = {m["properties"]["$ai_span_name"] for m in archived_messages(state) if m["event"] == "$ai_span"}
    children = {name for name in names if name.startswith("child-")}
    assert len(children) == 30  # each child's event is durable and delivered (by whoever uploads)


def test_fork_right_after_start_lets_the_child_flush(tmp_path: Path) -> None:
    code = f"""
        import os, signal, sys
        from analytics import Analytics, TelemetryConfig, events
        from analytics.testing import CaptureServer
        server = CaptureServer(api_key={TOKEN!r}).__enter__()
        hung = 0
        for run in range(8):
            telemetry = Analytics(TelemetryConfig.from_env({{
                "TELEMETRY_DIR": {str(tmp_path / "state")!r} + str(run),
                "TELEMETRY_ENDPOINT": server.url,
                "TELEMETRY_TOKEN": {TOKEN!r},
            }}))
            telemetry.start()
            pid = os.fork()
            if pid == 0:
                signal.alarm(10)
                telemetry.emit(events.ToolCall(tool_name="child", duration_ms=1, success=True))
                os._exit(0 if telemetry.flush(timeout=5) else 3)
            _, status = os.waitpid(pid, 0)
            hung += 0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else 1
            telemetry.shutdown(timeout=5)
        print(hung)
    """
    result = run_elsewhere(code, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "0", result.stderr[-3000:]


def test_a_forked_child_exiting_normally_does_not_end_the_parents_session(tmp_path: Path) -> None:
    state = tmp_path / "state"
    code = f"""
        import os, sys
        from analytics import Analytics, TelemetryConfig, events
        telemetry = Analytics(TelemetryConfig.from_env({{"TELEMETRY_DIR": {str(state)!r}}}))
        telemetry.start()
        pid = os.fork()
        if pid == 0:
            telemetry.emit(events.ToolCall(tool_name="child", duration_ms=1, success=True))
            sys.exit(0)   # a normal exit: atexit hooks run in the child
        os.waitpid(pid, 0)
        telemetry.emit(events.ToolCall(tool_name="parent", duration_ms=1, success=True))
        print(telemetry.session_id, flush=True)
        os.kill(os.getpid(), 9)   # the parent crashes later
    """
    result = run_elsewhere(code)
    session_id = result.stdout.strip()
    assert len(os.listdir(state / "sessions")) == 1  # the parent's marker survived its child
    later = Analytics(TelemetryConfig.from_env({"TELEMETRY_DIR": str(state)}))
    later.start()
    later.flush(timeout=5)
    later.shutdown()
    ended = [m for m in archived_messages(state) if m["event"] == "session_ended"]
    parent_ends = [m for m in ended if m["properties"]["$session_id"] == session_id]
    assert [m["properties"]["end_reason"] for m in parent_ends] == ["crash"]  # once, and as a crash
    assert {"child", "parent"} <= {
        m["properties"]["$ai_span_name"] for m in archived_messages(state) if m["event"] == "$ai_span"
    }


# -- 5. another process holding the queue's write lock --------------------------------------------


def test_emit_never_waits_on_another_process_holding_the_queue_lock(state_dir: Path) -> None:
    config = TelemetryConfig.from_env({"TELEMETRY_DIR": str(state_dir)})
    first = Analytics(config)
    first.emit(tool(0))  # creates the queue
    first.shutdown(timeout=0)
    with write_lock_held(StateFolder(state_dir).queue_dir / "cache.db"):
        telemetry = Analytics(config)  # opens the queue while it is locked
        began = time.monotonic()
        for n in range(1, 101):
            telemetry.emit(tool(n))
        elapsed = time.monotonic() - began
        assert elapsed < 5, f"100 emits took {elapsed:.1f} s behind another process's lock"
    # Once the lock is gone the memory buffer reaches the disk, then the archive: nothing lost.
    assert telemetry.flush(timeout=10)
    telemetry.shutdown()
    assert sorted(spans(archived_messages(state_dir))) == list(range(101))
    assert nonzero(telemetry.status().drops) == {}


def test_proposal_events_survive_a_locked_proposal_store(state_dir: Path) -> None:
    config = TelemetryConfig.from_env({"TELEMETRY_DIR": str(state_dir)})
    first = Analytics(config)
    first.emit(
        events.ProposalCreated(proposal_id="p0", file_count=1, total_lines_changed=1, operation="edit")
    )
    first.shutdown()
    with write_lock_held(StateFolder(state_dir).proposals_dir / "cache.db"):
        telemetry = Analytics(config, clock=iter(range(1000, 2000)).__next__)
        began = time.monotonic()
        telemetry.emit(
            events.ProposalCreated(proposal_id="p1", file_count=1, total_lines_changed=9, operation="edit")
        )
        telemetry.emit(events.ProposalDecision(proposal_id="p1", decision="approved"))
        assert time.monotonic() - began < 2
        telemetry.flush(timeout=10)
        telemetry.shutdown()
    proposal_events = [m for m in archived_messages(state_dir) if m["event"].startswith("proposal_")]
    decided = [m for m in proposal_events if m["event"] == "proposal_decided"]
    assert len(proposal_events) == 3
    assert len(decided) == 1
    assert decided[0]["properties"]["review_duration_ms"] == 1000  # remembered in memory meanwhile


# -- 6. text that is not valid UTF-8 ---------------------------------------------------------------


def test_a_lone_surrogate_in_an_errors_context_is_sent_not_lost(make_telemetry: Any, state_dir: Path) -> None:
    telemetry = make_telemetry()
    name = os.fsdecode(b"caf\xe9-notes.txt")  # a file name that is not UTF-8
    telemetry.capture_exception(FileNotFoundError(name), context={"file": name, name: "key too"})
    telemetry.emit("ToolCall", {"tool_name": name, "duration_ms": 1, "success": True})
    assert telemetry.flush(timeout=10)
    sent = archived_messages(state_dir)
    [error] = [m for m in sent if m["event"] == "$exception"]
    assert "\ufffd-notes.txt" in json.dumps(error, ensure_ascii=False)
    [span] = [m for m in sent if m["event"] == "$ai_span"]
    assert span["properties"]["$ai_span_name"] == "caf\ufffd-notes.txt"
    assert nonzero(telemetry.status().drops) == {}


def test_one_bad_string_costs_group_commit_nothing(make_telemetry: Any, state_dir: Path) -> None:
    telemetry = make_telemetry(group_commit_ms=50)
    for n in range(100):
        telemetry.emit(tool(n))
    telemetry.emit("ToolCall", {"tool_name": "bad\udce9", "duration_ms": 1, "success": True})
    for n in range(100, 200):
        telemetry.emit(tool(n))
    assert telemetry.flush(timeout=10)
    sent = [m for m in archived_messages(state_dir) if m["event"] == "$ai_span"]
    assert len(sent) == 201
    assert sorted(spans([m for m in sent if m["properties"]["$ai_span_name"].startswith("n")])) == list(
        range(200)
    )


def test_a_user_id_that_is_not_utf8_falls_back_to_the_install_id(state_dir: Path) -> None:
    config = TelemetryConfig.from_env({"TELEMETRY_DIR": str(state_dir), "TELEMETRY_USER_ID": "b\udce9b"})
    assert config.user_id is None
    with pytest.raises(Exception, match="TELEMETRY_USER_ID"):
        TelemetryConfig.from_env({"TELEMETRY_USER_ID": "b\udce9b", "TELEMETRY_STRICT": "1"})
    telemetry = Analytics(config)
    telemetry.start()
    for n in range(50):
        telemetry.emit(tool(n))
    assert telemetry.flush(timeout=10)
    telemetry.shutdown()
    sent = archived_messages(state_dir)
    assert sorted(spans(sent)) == list(range(50))
    assert [m["event"] for m in sent].count("session_started") == 1
    assert {m["distinct_id"] for m in sent} == {telemetry.distinct_id or sent[0]["distinct_id"]}


# -- 8. a read-only state folder, with the server up and down --------------------------------------

READ_ONLY_APP = """
    import json, sys
    from analytics import Analytics, TelemetryConfig, events
    from analytics.delivery.retry import RetryPolicy
    telemetry = Analytics(TelemetryConfig.from_env({"TELEMETRY_DIR": %r, "TELEMETRY_ENDPOINT": %r,
                                                   "TELEMETRY_TOKEN": %r}),
                          retry_policy=RetryPolicy(base=0.05, cap=0.1, jitter=False))
    telemetry.start()
    for n in range(40):
        telemetry.emit(events.ToolCall(tool_name="n%%d" %% n, duration_ms=n, success=True))
    flushed = telemetry.flush(timeout=5)
    report = telemetry.status()
    telemetry.shutdown(timeout=1)
    print(json.dumps({"flushed": flushed, "drops": {k: v for k, v in report.drops.items() if v},
                      "queued": report.queue_depth}))
"""


def test_a_read_only_state_folder_still_delivers_everything(tmp_path: Path) -> None:
    require_mounts(tmp_path)
    with CaptureServer(api_key=TOKEN) as server:
        state = tmp_path / "state"
        existing = Analytics(TelemetryConfig.from_env({"TELEMETRY_DIR": str(state)}))
        existing.emit(events.WorkspaceSelected(workspace_path="/w", is_git_repo=True))  # an existing queue
        existing.shutdown(timeout=0)
        result = run_elsewhere(READ_ONLY_APP % (str(state), server.url, TOKEN), read_only=state)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report == {"flushed": True, "drops": {}, "queued": 0}, result.stderr
        received = sorted(spans(server.events))
        assert received == list(range(40))  # from memory: the queue on disk could not be written
        assert [e["event"] for e in server.events].count("session_started") == 1


def test_a_read_only_state_folder_with_the_server_down_counts_what_it_loses(tmp_path: Path) -> None:
    require_mounts(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    result = run_elsewhere(READ_ONLY_APP % (str(state), "http://127.0.0.1:9", TOKEN), read_only=state)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["flushed"] is False
    # Before shutdown: the session's start and 40 tool calls, none delivered, all waiting in memory
    # (the identity: emitted 41 = delivered 0 + drops 0 + queued 41).
    assert report["drops"] == {}
    assert report["queued"] == 41, result.stdout
    # At exit, with the session's end: none stored, none sent, all counted where it can be.
    assert "42 events could neither be stored nor delivered" in result.stderr


# -- 9. a damaged queue file -------------------------------------------------------------------------


def _queue_up(state_dir: Path, count: int, *, checkpoint: bool) -> None:
    waiting = TelemetryConfig.from_env({"TELEMETRY_DIR": str(state_dir)}, endpoint="http://127.0.0.1:9")
    telemetry = Analytics(waiting)  # an endpoint without a token: events wait in the queue
    for n in range(count):
        telemetry.emit(tool(n))
    telemetry.shutdown(timeout=0)
    if checkpoint:  # fold the log into the file, so cutting the file cuts events
        con = sqlite3.connect(StateFolder(state_dir).queue_dir / "cache.db")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()


def _deliver_everything(state_dir: Path, server: CaptureServer) -> Analytics:
    telemetry = Analytics(
        TelemetryConfig.from_env({"TELEMETRY_DIR": str(state_dir)}, endpoint=server.url, token=TOKEN)
    )
    telemetry.emit(tool(100_000))  # a new event must go out too
    assert telemetry.flush(timeout=30)
    return telemetry


def test_a_queue_file_cut_in_half_is_read_back_and_the_rest_counted(state_dir: Path) -> None:
    _queue_up(state_dir, 2000, checkpoint=True)
    db = StateFolder(state_dir).queue_dir / "cache.db"
    os.truncate(db, db.stat().st_size // 2)
    with CaptureServer(api_key=TOKEN) as server:
        telemetry = _deliver_everything(state_dir, server)
        received = spans(server.events)
        drops = nonzero(telemetry.status().drops)
        assert 100_000 in received
        recovered = [n for n in received if n < 2000]
        assert len(recovered) == len(set(recovered))  # nothing sent twice
        assert 0 < len(recovered) < 2000
        assert len(recovered) + drops.get("queue_corrupted", 0) == 2000, balance(
            2000, len(recovered), drops, len(queued_messages(state_dir))
        )
        assert any("damaged" in p for p in telemetry.status().problems)
        telemetry.shutdown()


def test_a_queue_file_cut_to_nothing_counts_every_event_it_held(state_dir: Path) -> None:
    _queue_up(state_dir, 2000, checkpoint=False)
    db = StateFolder(state_dir).queue_dir / "cache.db"
    os.truncate(db, 0)
    with CaptureServer(api_key=TOKEN) as server:
        telemetry = _deliver_everything(state_dir, server)
        received = spans(server.events)
        drops = nonzero(telemetry.status().drops)
        assert received == [100_000]
        assert drops == {"queue_corrupted": 2000}, balance(2000, 0, drops, len(queued_messages(state_dir)))
        telemetry.shutdown()


def test_a_queue_damaged_while_delivering_does_not_stall_delivery(state_dir: Path) -> None:
    _queue_up(state_dir, 600, checkpoint=True)
    db = StateFolder(state_dir).queue_dir / "cache.db"
    with CaptureServer(api_key=TOKEN) as server:
        telemetry = Analytics(
            TelemetryConfig.from_env({"TELEMETRY_DIR": str(state_dir)}, endpoint=server.url, token=TOKEN)
        )
        telemetry.emit(tool(100_000))  # opens the queue while it is whole
        with db.open("r+b") as handle:  # then damage its pages behind its back
            handle.seek(8 * 4096)
            handle.write(b"\xff" * 64 * 4096)
        telemetry.flush(timeout=20)
        telemetry.emit(tool(100_001))
        assert telemetry.flush(timeout=20)
        received = spans(server.events)
        drops = nonzero(telemetry.status().drops)
        assert {100_000, 100_001} <= set(received)
        old = set(n for n in received if n < 600)
        assert len(old) + drops.get("queue_corrupted", 0) >= 600, balance(600, len(old), drops, 0)
        telemetry.shutdown()


# -- 10. a half-written archive line ------------------------------------------------------------------


def test_a_half_written_archive_line_does_not_swallow_the_next_record(
    make_telemetry: Any, state_dir: Path
) -> None:
    telemetry = make_telemetry()
    telemetry.emit(tool(1))
    assert telemetry.flush(timeout=10)
    [day] = list((state_dir / "archive").glob("*.jsonl"))
    with day.open("ab") as handle:
        handle.write(b'{"event":"$ai_span","uuid":"cut-short-by-a-cra')  # no newline: a crash mid-write
    telemetry.emit(tool(2))
    assert telemetry.flush(timeout=10)
    assert sorted(spans(list(read_archive(state_dir / "archive")))) == [1, 2]


# -- 11. a damaged session marker ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        {"chat_turns": 1e400},
        {"chat_turns": -5},
        {"started_at": "yesterday"},
        {"session_id": "../../etc/passwd"},
        {"counters": [1, 2]},
    ],
)
def test_a_damaged_session_marker_never_breaks_start(
    make_telemetry: Any, state_dir: Path, damage: dict[str, Any]
) -> None:
    sessions = state_dir / "sessions"
    sessions.mkdir(parents=True)
    marker: dict[str, Any] = {
        "session_id": "0190c5a0-0000-7000-8000-000000000001",
        "started_at": 1_700_000_000.0,
        "last_seen": 1_700_000_100.0,
        "counters": {"chat_turns": 2, "tool_calls": 1},
    }
    for key, value in damage.items():
        if key in marker:
            marker[key] = value
        else:
            marker["counters"][key] = value
    path = sessions / "0190c5a0-0000-7000-8000-000000000001.json"
    path.write_text(json.dumps(marker).replace("Infinity", "1e400"))
    telemetry = make_telemetry()
    telemetry.start()
    assert telemetry.status().problems == ()  # (status waits for start()'s thread)
    assert not path.exists()  # read or not, a dead session's marker is gone
    assert telemetry._uploader is not None
    assert telemetry._uploader.running
    assert telemetry.flush(timeout=10)
    assert [m["event"] for m in archived_messages(state_dir)] == ["session_started"]


# -- 17. nothing the app passed is echoed into an error message ----------------------------------------


def test_strict_errors_never_echo_a_payload_key_that_could_be_a_secret() -> None:
    secret = "sk-live-4f9a8b7c6d5e4f3a2b1c"
    with pytest.raises(InvalidEvent) as caught:
        events.parse_event("ToolCall", {"tool_name": "x", "duration_ms": 1, "success": True, secret: 1})
    assert secret not in str(caught.value)
    assert "<key withheld>" in str(caught.value)
    with pytest.raises(InvalidEvent) as unknown:
        events.parse_event(secret, {})
    assert secret not in str(unknown.value)
    # Ordinary mistakes still say which field.
    with pytest.raises(InvalidEvent, match="tool_nmae"):
        events.parse_event("ToolCall", {"tool_nmae": "x", "duration_ms": 1, "success": True})


# -- counts that mean what they say ----------------------------------------------------------------


def test_a_damaged_salt_keeps_the_install_id(state_dir: Path) -> None:
    state_dir.mkdir()
    first = load_or_create_identity(state_dir)
    (state_dir / SALT_FILE).write_text("not hex at all")
    second = load_or_create_identity(state_dir)
    assert second.install_id == first.install_id
    assert second.salt != first.salt
    assert len(second.salt) == 32
    (state_dir / INSTALL_ID_FILE).write_text("garbage")
    third = load_or_create_identity(state_dir)
    assert third.install_id != first.install_id
    assert third.salt == second.salt


def test_status_and_doctor_report_a_damaged_queue_as_a_problem(state_dir: Path) -> None:
    _queue_up(state_dir, 50, checkpoint=True)
    db = StateFolder(state_dir).queue_dir / "cache.db"
    os.truncate(db, db.stat().st_size // 2)
    telemetry = Analytics(
        TelemetryConfig.from_env({"TELEMETRY_DIR": str(state_dir)}, endpoint="http://127.0.0.1:9")
    )
    telemetry.flush(timeout=1)
    telemetry.shutdown(timeout=0)
    env = {"TELEMETRY_DIR": str(state_dir), "TELEMETRY_ENDPOINT": "http://127.0.0.1:9"}

    def cli(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "analytics_cli.main", command, "--json"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    report = json.loads(cli("status").stdout)
    assert "damaged" in (report["problem"] or "")
    doctor = cli("doctor")
    checks = {c["name"]: c for c in json.loads(doctor.stdout)}
    assert checks["queue"]["status"] == "fail"
    assert "damaged" in checks["queue"]["detail"]
    assert doctor.returncode == 1


def test_a_session_marker_cut_short_by_someone_else_never_kills_the_app(tmp_path: Path) -> None:
    """Another program truncates the running session's marker (``open(path, "w")``, a cleanup
    tool). A write through a shared map of it would then fault (SIGBUS) and kill the host app;
    the app must go on, and the crash report must still carry the session's counters."""
    state = tmp_path / "state"
    result = run_elsewhere(
        f"""
        import glob, os, signal
        from analytics import Analytics, TelemetryConfig
        telemetry = Analytics(TelemetryConfig.from_env({{"TELEMETRY_DIR": {str(state)!r}}}))
        telemetry.start()
        telemetry.flush(timeout=5)  # start()'s thread has made the marker
        with telemetry.tool_call("before"):
            pass
        [marker] = glob.glob(os.path.join({str(state)!r}, "sessions", "*.json"))
        os.truncate(marker, 0)
        with telemetry.tool_call("after"):
            pass
        print("survived", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    assert result.stdout.strip() == "survived", (result.returncode, result.stderr[-2000:])
    assert result.returncode == -9
    later = Analytics(TelemetryConfig.from_env({"TELEMETRY_DIR": str(state)}))
    later.start()
    assert later.flush(timeout=10)
    later.shutdown()
    ended = [m for m in archived_messages(state) if m["event"] == "session_ended"]
    assert [m["properties"]["end_reason"] for m in ended] == ["crash", "shutdown"], ended
    assert ended[0]["properties"]["tool_calls"] == 2


def test_a_lone_surrogate_in_an_event_the_app_builds_itself_is_sent_not_raised(
    make_telemetry: Any, state_dir: Path
) -> None:
    name = os.fsdecode(b"caf\xe9-notes.txt")
    event = events.ToolCall(tool_name=name, duration_ms=1, success=True)  # in the app's own code
    assert event.tool_name == "caf\ufffd-notes.txt"
    telemetry = make_telemetry()
    telemetry.emit(event)
    telemetry.emit("ToolCall", {"tool_name": name, "duration_ms": 2, "success": True})
    assert telemetry.flush(timeout=10)
    names = [
        m["properties"]["$ai_span_name"] for m in archived_messages(state_dir) if m["event"] == "$ai_span"
    ]
    assert names == ["caf\ufffd-notes.txt"] * 2
