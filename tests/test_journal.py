"""The journal: emit()'s one-write durable step, read back whole after a crash, never shared.

Real processes and real kills: a producer is SIGKILLed with events still in its journal, a torn
record is written the way a cut-short write leaves it, two processes journal into one folder at
once, a forked child emits beside its parent. Every acknowledged event reaches a loopback capture
server exactly once; what cannot be read back is counted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

from analytics import Analytics, TelemetryConfig
from analytics.queue import journal
from analytics.state import StateFolder
from analytics.testing import CaptureServer
from tests.conftest import PROJECT_ROOT, queued_messages, run_python

TOKEN = "phc_journal_test"


def producer(state: Path, first: int, count: int, *, then: str = "kill") -> subprocess.Popen[str]:
    """A process that emits ``count`` numbered events (printing each after emit() returned), then
    waits to be killed (``kill``) or shuts down (``shutdown``)."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from analytics import Analytics, TelemetryConfig, events
        t = Analytics(TelemetryConfig.from_env(state_dir={str(state)!r}))
        for n in range({first}, {first + count}):
            t.emit(events.ToolCall(tool_name=f"n{{n}}", duration_ms=1, success=True))
            print(n, flush=True)
        if {then!r} == "shutdown":
            t.shutdown(timeout=0)
        else:
            time.sleep(60)
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEMETRY_", "SENTRY_"))}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)


def emit_and_kill(state: Path, first: int, count: int) -> list[int]:
    process = producer(state, first, count)
    assert process.stdout is not None
    acknowledged = [int(process.stdout.readline()) for _ in range(count)]
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    return acknowledged


def delivered_numbers(server: CaptureServer) -> list[int]:
    return [int(e["properties"]["$ai_span_name"][1:]) for e in server.events if e["event"] == "$ai_span"]


def deliver_all(state: Path, server: CaptureServer) -> Analytics:
    telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state, endpoint=server.url, token=TOKEN))
    assert telemetry.flush(timeout=30)
    return telemetry


def test_a_journal_left_by_a_killed_process_is_read_back_and_delivered(tmp_path: Path) -> None:
    state = tmp_path / "state"
    acknowledged = emit_and_kill(state, 0, 300)
    segments = journal.segment_paths(StateFolder(state).journal_dir)
    assert segments, "the killed process left its journal segment behind"
    with CaptureServer(api_key=TOKEN) as server:
        telemetry = deliver_all(state, server)
        telemetry.shutdown(timeout=5)
        numbers = delivered_numbers(server)
    assert sorted(numbers) == acknowledged
    assert journal.segment_paths(StateFolder(state).journal_dir) == []  # adopted, moved, removed


def test_a_torn_last_record_is_skipped_and_counted_and_the_rest_delivered(tmp_path: Path) -> None:
    state = tmp_path / "state"
    acknowledged = emit_and_kill(state, 0, 20)
    (segment,) = journal.segment_paths(StateFolder(state).journal_dir)
    whole = segment.read_bytes()
    # A write cut short: the last record's frame is there, only part of its bytes.
    with segment.open("ab") as file:
        file.write(journal.frame(b'{"event":"cut short"}')[:13])
    with CaptureServer(api_key=TOKEN) as server:
        telemetry = deliver_all(state, server)
        drops = telemetry.status().drops
        telemetry.shutdown(timeout=5)
        numbers = delivered_numbers(server)
    assert sorted(numbers) == acknowledged
    assert drops.get("journal_torn") == 1
    assert len(whole) > 13  # the segment really held the 20 records before the torn one


def test_a_damaged_record_mid_segment_ends_the_readable_part_and_is_counted(tmp_path: Path) -> None:
    records = [b'{"n":1}', b'{"n":2}', b'{"n":3}']
    data = bytearray(journal.MAGIC + b"".join(journal.frame(r) for r in records))
    data[-3] ^= 0xFF  # one flipped byte in the last record: its checksum no longer matches
    found = journal.parse(bytes(data))
    assert found.records == records[:2]
    assert found.torn == 1
    assert journal.parse(b"not a journal") == journal.ReadBack([], 1)


def test_a_live_processs_journal_is_not_adopted_by_another(tmp_path: Path) -> None:
    state = tmp_path / "state"
    process = producer(state, 0, 10)
    assert process.stdout is not None
    acknowledged = [int(process.stdout.readline()) for _ in range(10)]
    try:
        # The CLI's view sees the live journal's events without taking them from their owner.
        assert [m["properties"]["$ai_span_name"] for m in queued_messages(state)] == [
            f"n{n}" for n in acknowledged
        ]
        with CaptureServer(api_key=TOKEN) as server:
            telemetry = Analytics(
                TelemetryConfig.from_env({}, state_dir=state, endpoint=server.url, token=TOKEN)
            )
            telemetry.flush(timeout=5)
            assert delivered_numbers(server) == []  # its owner is alive: its segment stays its own
            telemetry.shutdown(timeout=1)
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    with CaptureServer(api_key=TOKEN) as server:
        deliver_all(state, server).shutdown(timeout=5)
        assert sorted(delivered_numbers(server)) == acknowledged


def test_two_processes_journaling_into_one_folder_deliver_every_event_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first, second = producer(state, 0, 2000, then="shutdown"), producer(state, 10_000, 2000, then="shutdown")
    outputs = [p.communicate(timeout=120)[0] for p in (first, second)]
    assert first.returncode == 0
    assert second.returncode == 0
    acknowledged = [int(n) for out in outputs for n in out.split()]
    assert len(acknowledged) == 4000
    with CaptureServer(api_key=TOKEN) as server:
        deliver_all(state, server).shutdown(timeout=5)
        numbers = delivered_numbers(server)
        uuids = Counter(e["uuid"] for e in server.events)
    assert sorted(numbers) == sorted(acknowledged)
    assert max(uuids.values()) == 1


def test_opting_out_purges_journals_but_nothing_else_in_the_folder(tmp_path: Path) -> None:
    state = tmp_path / "state"
    emit_and_kill(state, 0, 5)  # an orphaned segment of a process that died
    folder = StateFolder(state).journal_dir
    mine = folder / "notes.txt"
    mine.write_text("the user's own file, beside ours")
    telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state))
    telemetry.emit("ToolCall", {"tool_name": "read_file", "duration_ms": 1, "success": True})
    assert journal.segment_paths(folder)  # the live one and the orphan
    telemetry.set_enabled(False)
    assert journal.segment_paths(folder) == []
    assert queued_messages(state) == []
    assert mine.read_text() == "the user's own file, beside ours"


def test_a_forked_child_journals_into_its_own_segment_never_its_parents(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with CaptureServer(api_key=TOKEN) as server:
        result = run_python(
            f"""
            import os
            from analytics import Analytics, TelemetryConfig, events
            from analytics.queue import journal
            from analytics.state import StateFolder
            from pathlib import Path
            folder = StateFolder(Path({str(state)!r})).journal_dir
            t = Analytics(TelemetryConfig.from_env(state_dir={str(state)!r}))
            t.emit(events.ToolCall(tool_name="n1", duration_ms=1, success=True))
            (parent_segment,) = journal.segment_paths(folder)
            before = parent_segment.read_bytes()
            pid = os.fork()
            if pid == 0:
                t.emit(events.ToolCall(tool_name="n2", duration_ms=1, success=True))
                names = [p.name for p in journal.segment_paths(folder)]
                ok = parent_segment.read_bytes() == before and any(
                    n.startswith(f"{{os.getpid()}}-") for n in names
                )
                os._exit(0 if ok else 3)
            _, status = os.waitpid(pid, 0)
            print(os.waitstatus_to_exitcode(status))
            t.emit(events.ToolCall(tool_name="n3", duration_ms=1, success=True))
            """
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == ["0"]  # the child wrote only into a segment named by its pid
        deliver_all(state, server).shutdown(timeout=5)
        assert sorted(delivered_numbers(server)) == [1, 2, 3]


def test_a_segment_being_made_is_never_taken_for_a_dead_processs(tmp_path: Path) -> None:
    # A segment gets its name only once it is locked: between create and lock, a scan (a signal
    # handler's shutdown in the very thread making it) used to adopt the empty file and remove
    # it, and the record written next went into an unlinked file. One left by a process killed in
    # that moment is removed by the next adoption, and by an opt-out.
    state = tmp_path / "state"
    folder = StateFolder(state).journal_dir
    folder.mkdir(parents=True)
    unfinished = folder / "4242-0badcafe.new"
    unfinished.write_bytes(journal.MAGIC)
    assert journal.segment_paths(folder) == []
    assert journal.read_all(folder) == []
    journal.adopt_orphans(folder, lambda records: None)
    assert not unfinished.exists()
    unfinished.write_bytes(journal.MAGIC)
    telemetry = Analytics(TelemetryConfig.from_env({}, state_dir=state))
    telemetry.emit("ToolCall", {"tool_name": "read_file", "duration_ms": 1, "success": True})
    assert [path.suffix for path in journal.segment_paths(folder)] == [".seg"]
    telemetry.set_enabled(False)
    assert not unfinished.exists()


def test_what_a_segment_keeps_in_memory_is_what_its_file_holds_and_stays_bounded(tmp_path: Path) -> None:
    """A move reads this process's own segments from memory, not from their files: the two must
    hold the same records. While moves fail, only a few segments keep theirs in memory."""
    folder = tmp_path / "journal"
    folder.mkdir()
    log = journal.Journal(folder, rotate_bytes=200)
    written = [f'{{"event":"e","n":{n}}}'.encode() * 4 for n in range(60)]
    for n in range(0, 60, 3):
        log.append(written[n : n + 3])  # ~240 bytes: each append fills and retires a segment
    segments = log.retire()
    assert len(segments) == 20
    kept = [segment for segment in segments if segment.records is not None]
    assert 0 < len(kept) <= 8
    from_files = [journal.parse(journal.read_fd(segment.fd)).records for segment in segments]
    assert [record for records in from_files for record in records] == written
    for segment in kept:
        assert segment.records == journal.parse(journal.read_fd(segment.fd)).records
    log.close()


def test_a_background_move_waits_while_the_app_emits_but_never_past_its_limits(tmp_path: Path) -> None:
    """Moving the journal is SQLite work that competes with a busy app for the GIL and a CPU, and
    journaled events are already durable: the background thread waits for a quiet moment, but
    not once the journal holds too much or has held an event too long, and an explicit move
    (flush, shutdown, the CLI) never waits."""
    from analytics.queue import DiskQueue, OfflineQueue, QueueBounds
    from analytics.queue.offline import MOVE_INTERVAL_SECONDS, MoveDeferral

    def in_queue(folder: StateFolder) -> int:
        disk = DiskQueue(folder.queue_dir)
        try:
            return len(disk)
        finally:
            disk.close()

    never_quiet = {"quiet_seconds": 600.0, "longest_seconds": 600.0, "most_bytes": 10**9}
    cases = {
        "busy": MoveDeferral(**never_quiet),
        "quiet": MoveDeferral(**{**never_quiet, "quiet_seconds": 0.0}),
        "too big": MoveDeferral(**{**never_quiet, "most_bytes": 500}),
        "too old": MoveDeferral(**{**never_quiet, "longest_seconds": 0.0}),
    }
    for name, deferral in cases.items():
        folder = StateFolder(tmp_path / name)
        queue = OfflineQueue(folder, QueueBounds(10_000, 10**9, 1e9), move_deferral=deferral)
        for n in range(20):
            queue.put(b'{"event":"e","timestamp":"2026-01-01T00:00:00Z","n":%d}' % n)
        if name == "busy":
            time.sleep(3 * MOVE_INTERVAL_SECONDS)  # the background thread's rounds leave it be too
            assert queue.move_journal(polite=True) == 0
            assert in_queue(folder) == 0
            assert queue.move_journal() == 20  # an explicit move does not wait
        else:
            queue.move_journal(polite=True)  # (or the background thread's round did it first)
            assert in_queue(folder) == 20, name
        queue.close()


def test_a_move_that_outlives_close_never_closes_a_descriptor_twice(tmp_path: Path) -> None:
    """The background thread's move may finish after close() let go of the segment it moved (its
    join waits a bounded time): closing the segment's number again would close whatever file the
    app opened under that number meanwhile."""
    folder = tmp_path / "journal"
    folder.mkdir()
    log = journal.Journal(folder)
    log.append([b'{"event":"e"}'])
    [segment] = log.retire()  # the move has read it and is writing it into the queue...
    log.close()  # ...when shutdown() gives up waiting for it and lets go of the journal
    apps_file = os.open(tmp_path / "the-apps-own-file", os.O_RDWR | os.O_CREAT, 0o600)
    assert apps_file == segment.fd  # the lowest free number: the segment's, reused
    log.moved(segment)  # the move finishes
    os.fstat(apps_file)  # still open
    assert not segment.path.exists()  # its records are in the queue: nobody may adopt them again
    os.close(apps_file)
