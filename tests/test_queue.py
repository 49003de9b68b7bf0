"""The durable queue: shared across processes, bounded, and unbreakable from the app's side."""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics import events
from tests.conftest import MakeTelemetry, archived_messages, queued_messages, run_python, wait_until

DAY = 86_400.0


def tool(n: int) -> events.ToolCall:
    return events.ToolCall(tool_name=f"tool-{n}", duration_ms=n, success=True)


def tool_numbers(state_dir: Path) -> list[int]:
    return [int(m["properties"]["$ai_span_name"].split("-")[1]) for m in queued_messages(state_dir)]


def test_events_emitted_in_one_process_are_read_whole_by_another(state_dir: Path) -> None:
    writer = run_python(
        f"""
        from analytics import Analytics, TelemetryConfig, events
        t = Analytics(TelemetryConfig.from_env(state_dir={str(state_dir)!r}, strict=True))
        for n in range(200):
            turn = events.ChatTurn(
                prompt_length=n, response_length=2 * n, model="gpt-4o", latency_ms=n, turn_id=f"t{{n}}"
            )
            t.emit(turn)
        print(t.distinct_id)
        """
    )
    assert writer.returncode == 0, writer.stderr
    reader = run_python(
        f"""
        import json
        from analytics.queue import DiskQueue
        q = DiskQueue(__import__("pathlib").Path({str(state_dir / "queue")!r}))
        print(json.dumps([json.loads(r) for _k, r in q.iter_all()]))
        """
    )
    assert reader.returncode == 0, reader.stderr
    messages = json.loads(reader.stdout)
    assert len(messages) == 200
    assert [m["properties"]["prompt_length"] for m in messages] == list(range(200))
    assert {m["distinct_id"] for m in messages} == {writer.stdout.strip()}
    assert len({m["uuid"] for m in messages}) == 200
    assert all(m["properties"]["$ai_trace_id"] == f"t{n}" for n, m in enumerate(messages))


def test_event_bound_drops_the_oldest_and_counts_them(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    telemetry = make_telemetry(max_queue_events=10)
    for n in range(25):
        telemetry.emit(tool(n))
    # Bounds are kept in the background, where the journal moves into the queue: not on emit().
    assert wait_until(lambda: tool_numbers(state_dir) == list(range(15, 25)))
    assert telemetry.status().drops["queue_full"] == 15


def test_drops_counted_from_several_threads_at_once_are_counted_once_each(tmp_path: Path) -> None:
    # Two writers of the pending counts used to take the same snapshot and both add it: a
    # bound's drops came out doubled under load (queue_full == 30 for 15 dropped).
    from analytics.queue.meta import MetaStore

    meta = MetaStore(tmp_path / "meta")
    go = threading.Barrier(4)

    def count() -> None:
        go.wait()
        for _ in range(300):
            meta.count_drop("queue_full")

    threads = [threading.Thread(target=count) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert meta.drops()["queue_full"] == 1200
    meta.close()
    again = MetaStore(tmp_path / "meta")
    assert again.drops()["queue_full"] == 1200  # and all of them reached the disk
    again.close()


def test_age_bound_drops_events_older_than_the_limit(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    now = [1_800_000_000.0]
    first = make_telemetry(clock=lambda: now[0], max_event_age_days=30)
    for n in range(5):
        first.emit(tool(n))
    now[0] += 10 * DAY
    for n in range(5, 8):
        first.emit(tool(n))
    now[0] += 25 * DAY  # the first five are now 35 days old, the last three 25
    second = make_telemetry(clock=lambda: now[0], max_event_age_days=30)
    second.emit(tool(8))
    # The bound is kept in the background (by whichever instance moves its journal first); the
    # drop is counted right after the records go.
    assert wait_until(
        lambda: tool_numbers(state_dir) == [5, 6, 7, 8] and second.status().drops.get("too_old") == 5
    )
    assert second.status().drops["too_old"] == 5


def test_byte_bound_keeps_the_queue_small_and_counts(make_telemetry: MakeTelemetry, state_dir: Path) -> None:
    limit = 256 * 1024
    telemetry = make_telemetry(full_content=True, max_queue_bytes=limit)
    for n in range(300):
        telemetry.emit(events.ProposalDiff(proposal_id=f"p-{n}", diff=f"+{n}\n" * 1000))

    def settled() -> bool:
        stats = telemetry.status()
        return stats.drops.get("queue_bytes", 0) > 0 and stats.queue_depth + stats.drops["queue_bytes"] == 300

    assert wait_until(settled)
    stats = telemetry.status()
    assert stats.queue_bytes <= limit
    assert stats.drops["queue_bytes"] > 0
    assert stats.queue_depth + stats.drops["queue_bytes"] == 300
    ids = [m["properties"]["proposal_id"] for m in queued_messages(state_dir)]
    assert ids == [f"p-{n}" for n in range(300 - len(ids), 300)]  # the newest are the ones kept


def test_corrupted_queue_file_is_set_aside_and_emit_carries_on(
    make_telemetry: MakeTelemetry, state_dir: Path
) -> None:
    # An endpoint without a token: events wait in the queue, nothing delivers them.
    waiting = {"endpoint": "http://127.0.0.1:9", "token": None}
    first = make_telemetry(**waiting)
    for n in range(3):
        first.emit(tool(n))
    first.shutdown(timeout=0.1)
    for name in os.listdir(state_dir / "queue"):
        (state_dir / "queue" / name).write_bytes(b"this is not a database " * 200)
    second = make_telemetry(**waiting)
    second.emit(tool(9))
    assert tool_numbers(state_dir) == [9]
    second.flush(timeout=0.1)  # upkeep reads the damaged file back, off the app's path
    # Nothing could be read back: the three events it held are counted, one by one.
    assert second.status().drops["queue_corrupted"] == 3
    assert not [p for p in state_dir.iterdir() if p.name.startswith("queue.corrupt-")]


def test_queue_damaged_while_running_never_breaks_emit(
    make_telemetry: MakeTelemetry, state_dir: Path
) -> None:
    telemetry = make_telemetry()
    for n in range(20):
        telemetry.emit(tool(n))
    db = state_dir / "queue" / "cache.db"
    db.write_bytes(os.urandom(db.stat().st_size))
    for n in range(20, 600):
        telemetry.emit(tool(n))  # must return normally, whatever SQLite makes of it
    assert telemetry.status().queue_depth > 0


def test_deleted_state_folder_is_recreated_and_nothing_is_lost(
    make_telemetry: MakeTelemetry, state_dir: Path
) -> None:
    telemetry = make_telemetry()
    for n in range(5):
        telemetry.emit(tool(n))
    install_id = (state_dir / "install_id").read_text()
    shutil.rmtree(state_dir)
    for n in range(5, 305):
        telemetry.emit(tool(n))
    # The five from before the deletion too, once the journal (written through the deletion) moves.
    assert wait_until(lambda: tool_numbers(state_dir) == list(range(305)))
    assert (state_dir / "install_id").read_text() == install_id
    telemetry.shutdown()
    archived = [m["properties"]["$ai_span_name"] for m in archived_messages(state_dir)]
    assert archived == [f"tool-{n}" for n in range(305)]


def read_only_wrapper(folder: Path) -> list[str]:
    """A command prefix under which ``folder`` cannot be written, even by root.

    Root ignores file modes, so as root the folder is bind-mounted read-only in a private mount
    namespace (a read-only file system, as on a locked-down profile); otherwise mode 0555 does it.
    """
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
        return []
    script = f'mount --bind -o ro "{folder}" "{folder}" && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]


def test_read_only_state_folder_leaves_emit_returning_normally(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    try:
        result = run_python(
            f"""
            from analytics import Analytics, TelemetryConfig, events
            t = Analytics(TelemetryConfig.from_env(state_dir={str(state)!r}))
            t.start()
            for n in range(50):
                t.emit(events.ToolCall(tool_name="x", duration_ms=n, success=True))
            s = t.status()
            t.shutdown()
            print(s.storage, s.queue_depth)
            """,
            wrapper=read_only_wrapper(state),
        )
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout.split() == ["memory", "51"]  # SessionStart + 50, held for delivery
        assert "events kept in memory" in result.stderr
        assert list(state.iterdir()) == []
    finally:
        os.chmod(state, stat.S_IRWXU)


def test_unwritable_then_writable_disk_moves_memory_events_to_disk(state_dir: Path) -> None:
    from analytics.queue import OfflineQueue, QueueBounds
    from analytics.state import StateFolder

    state_dir.write_text("a file where the folder should be")
    queue = OfflineQueue(StateFolder(state_dir), QueueBounds(100, 10**9, 1e9), retry_interval=0.0)
    queue.put(b'{"timestamp": "2026-01-01T00:00:00+00:00"}')
    assert queue.stats().storage == "memory"
    state_dir.unlink()
    queue.put(b'{"timestamp": "2026-01-01T00:00:01+00:00"}')
    assert queue.stats().storage == "disk"
    assert [record for _key, record in queue.peek(10)] == [
        b'{"timestamp": "2026-01-01T00:00:00+00:00"}',
        b'{"timestamp": "2026-01-01T00:00:01+00:00"}',
    ]
    queue.close()


def test_peek_leaves_records_and_ack_removes_exactly_those(state_dir: Path) -> None:
    from analytics.queue import OfflineQueue, QueueBounds
    from analytics.state import StateFolder

    queue = OfflineQueue(StateFolder(state_dir), QueueBounds(100, 10**9, 1e9))
    for n in range(5):
        queue.put(json.dumps({"timestamp": "2026-01-01T00:00:00+00:00", "n": n}).encode())
    batch = queue.peek(3)
    assert [json.loads(r)["n"] for _k, r in batch] == [0, 1, 2]
    assert len(queue) == 5
    assert queue.ack([k for k, _r in batch]) == 3
    assert [json.loads(r)["n"] for _k, r in queue.peek(10)] == [3, 4]
    queue.close()


@pytest.mark.parametrize("threads", [4])
def test_concurrent_emitters_lose_nothing(
    make_telemetry: MakeTelemetry, state_dir: Path, threads: int
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    telemetry = make_telemetry()

    def work(offset: int) -> None:
        for n in range(offset, offset + 250):
            telemetry.emit(tool(n))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(0, threads * 250, 250)))
    assert sorted(tool_numbers(state_dir)) == list(range(threads * 250))


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=10,
    )
)
def test_the_stored_shorthand_is_exactly_reversible(value: object) -> None:
    from analytics.privacy.caps import encode
    from analytics.queue.shorthand import pack, unpack, unpack_many

    message = {
        "event": "$ai_span",
        "distinct_id": "d",
        "uuid": "u",
        "timestamp": "t",
        "properties": {"x": value, "$session_id": "s", "app_version": "1", "schema_version": 1},
    }
    record = encode(message)
    assert unpack(pack(record)) == record
    assert len(pack(record)) < len(record)
    assert pack(pack(record)) == pack(record)  # a record already stored short stays as it is
    assert unpack(record) == record  # a plain record (an older queue's) reads as it is
    # A batch read back in one pass, stored short or plain (a queue an older version wrote).
    assert unpack_many([pack(record)] * 3) == [record] * 3
    assert unpack_many([pack(record), record, pack(record)]) == [record] * 3


def test_format_1_records_still_read_and_format_2_shortens_what_anonymous_and_llm_events_repeat() -> None:
    from analytics.privacy.caps import encode
    from analytics.queue import shorthand

    properties = {
        "$ai_trace_id": "t",
        "$ai_lib": "analytics-telemetry",
        "$ai_lib_version": "1.0",
        "$process_person_profile": False,
        "$session_id": "s",
        "app_version": "1",
        "schema_version": 1,
    }
    record = encode(
        {"event": "$ai_span", "distinct_id": "d", "uuid": "u", "timestamp": "t", "properties": properties}
    )
    stored_by_format_1 = b"\x00\x01" + functools.reduce(
        lambda text, pair: text.replace(*pair), shorthand.ENCODE_V1, record
    )
    assert shorthand.unpack(stored_by_format_1) == record  # a queue written before the upgrade
    assert shorthand.unpack(shorthand.pack(record)) == record
    assert len(shorthand.pack(record)) <= len(stored_by_format_1) - 70


def test_an_emit_racing_a_close_is_kept_but_one_racing_an_opt_out_is_not(state_dir: Path) -> None:
    """An emit that held the queue when close() ran writes its event straight to the queue file,
    for the next start. When the close is an opt-out's, the folder is purged next: an event
    written after that would recreate the queue the user asked to delete, and be sent the day
    they opt back in."""
    from analytics.queue import OfflineQueue, QueueBounds
    from analytics.state import StateFolder

    record = json.dumps({"event": "e", "timestamp": "2026-01-01T00:00:00+00:00"}).encode()
    for discard in (False, True):
        folder = StateFolder(state_dir / str(discard))
        queue = OfflineQueue(folder, QueueBounds(100, 10**9, 1e9))
        queue.close(discard=discard)
        if discard:
            folder.purge()
        queue.put(record)  # the emit that was already past its checks
        assert len(queued_messages(folder.root)) == (0 if discard else 1), discard
        assert not discard or not folder.queue_dir.exists()
