"""One benchmark workload per call, in a fresh interpreter, printing one JSON line.

    python bench/workloads.py NAME SINK_URL [ARGS...]

Run by bench/run.py, never by the test suite. Each workload uses one library only, so the other's
background threads cannot disturb it.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from typing import Any

TOKEN = "phc_benchmark"
CHAT_TURN = {
    "prompt_length": 120,
    "response_length": 900,
    "model": "gpt-4o",
    "latency_ms": 812,
    "token_count": 1400,
    "provider": "openai",
}
# What posthog-python sends for the same turn (its LLM analytics names).
POSTHOG_PROPERTIES = {
    "$ai_model": "gpt-4o",
    "$ai_provider": "openai",
    "$ai_latency": 0.812,
    "prompt_length": 120,
    "response_length": 900,
    "token_count": 1400,
}


def sink_count(url: str) -> int:
    with urllib.request.urlopen(f"{url}/count") as response:
        return int(json.load(response)["events"])


def sink_reset(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{url}/reset", method="POST")).close()


def wait_for(url: str, count: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sink_count(url) >= count:
            return True
        time.sleep(0.005)
    return False


def percentiles(samples: list[int]) -> dict[str, float]:
    samples.sort()
    n = len(samples)
    return {
        "p50_us": samples[n // 2] / 1e3,
        "p99_us": samples[int(n * 0.99)] / 1e3,
        "p999_us": samples[int(n * 0.999)] / 1e3,
    }


def timed(call: Callable[[], Any], count: int, warmup: int = 2000) -> list[int]:
    for _ in range(warmup):
        call()
    samples = []
    clock = time.perf_counter_ns
    for _ in range(count):
        start = clock()
        call()
        samples.append(clock() - start)
    return samples


def state_parent() -> str:
    """A folder on the file system of the platform's user data folder (where a user's state
    folder lives), not wherever tempfile puts things (often tmpfs)."""
    import platformdirs

    parent = os.path.join(platformdirs.user_data_dir("analytics-bench", appauthor=False), "runs")
    os.makedirs(parent, exist_ok=True)
    return parent


def new_state() -> str:
    """A fresh state folder, removed when this process exits (after the library's own exit
    hooks, registered later, have shut it down): 600-odd runs had left 36 GB behind."""
    state = tempfile.mkdtemp(prefix="bench-", dir=state_parent())
    atexit.register(shutil.rmtree, state, ignore_errors=True)
    return state


def ours(url: str, state: str | None = None, **config: Any) -> Any:
    from analytics import Analytics, TelemetryConfig

    state = state or new_state()
    return Analytics(TelemetryConfig.from_env({}, state_dir=state, endpoint=url, token=TOKEN, **config))


def posthog_client(url: str, **options: Any) -> Any:
    logging.getLogger("posthog").setLevel(logging.CRITICAL)  # it logs every event its full queue drops
    import posthog

    return posthog.Client(TOKEN, host=url, **options)


# -- workloads -----------------------------------------------------------------------------------


def latency_ours(url: str, count: str, group_commit: str = "0") -> dict[str, Any]:
    telemetry = ours(url, group_commit_ms=float(group_commit) or None)
    telemetry.start()  # the uploader runs, as in an app
    result = percentiles(timed(lambda: telemetry.emit("ChatTurn", CHAT_TURN), int(count)))
    telemetry.shutdown(timeout=0)
    return result


def latency_posthog(url: str, count: str) -> dict[str, Any]:
    client = posthog_client(url, max_queue_size=1_000_000)  # room for every call: no drop skews it
    result = percentiles(
        timed(
            lambda: client.capture("$ai_generation", distinct_id="install-1", properties=POSTHOG_PROPERTIES),
            int(count),
        )
    )
    client.shutdown()
    return result


def end_to_end_ours(url: str, count: str) -> dict[str, Any]:
    n = int(count)
    telemetry = started_and_counted_from_zero(url)
    started = time.perf_counter()
    for _ in range(n):
        telemetry.emit("ChatTurn", CHAT_TURN)
    telemetry.flush(timeout=120)
    ok = wait_for(url, n, 120)
    wall = time.perf_counter() - started
    telemetry.shutdown(timeout=0)
    return {"wall_s": wall, "events_per_s": n / wall, "delivered": sink_count(url), "complete": ok}


def end_to_end_posthog(url: str, count: str) -> dict[str, Any]:
    n = int(count)
    client = posthog_client(url, max_queue_size=100_000)
    sink_reset(url)
    started = time.perf_counter()
    for _ in range(n):
        client.capture("$ai_generation", distinct_id="install-1", properties=POSTHOG_PROPERTIES)
    client.flush()
    ok = wait_for(url, n, 120)
    wall = time.perf_counter() - started
    client.shutdown()
    return {"wall_s": wall, "events_per_s": n / wall, "delivered": sink_count(url), "complete": ok}


def drain_ours(url: str, count: str) -> dict[str, Any]:
    n = int(count)
    telemetry = ours(url, group_commit_ms=20)  # fills the backlog faster; the drain is what is timed
    for _ in range(n):
        telemetry.emit("ChatTurn", CHAT_TURN)
    telemetry._commit_pending()  # the backlog is on disk before the clock starts
    telemetry._runtime.queue.move_journal()  # and moved from the journal into the queue
    sink_reset(url)
    started = time.perf_counter()
    drained = telemetry.flush(timeout=300)
    wall = time.perf_counter() - started
    telemetry.shutdown(timeout=0)
    return {"wall_s": wall, "events_per_s": n / wall, "delivered": sink_count(url), "complete": drained}


def started_and_counted_from_zero(url: str, **config: Any) -> Any:
    """Started (its SessionStart delivered), with the sink's count back at zero."""
    telemetry = ours(url, **config)
    telemetry.start()
    telemetry.flush(timeout=10)
    sink_reset(url)
    return telemetry


def burst_ours(url: str, count: str) -> dict[str, Any]:
    n = int(count)
    telemetry = started_and_counted_from_zero(url)
    for _ in range(n):
        telemetry.emit("ChatTurn", CHAT_TURN)
    telemetry.flush(timeout=300)
    wait_for(url, n, 60)
    delivered = sink_count(url)
    telemetry.shutdown(timeout=0)
    return {"delivered": delivered, "lost": n - delivered}


def burst_posthog(url: str, count: str) -> dict[str, Any]:
    n = int(count)
    client = posthog_client(url)  # its defaults: a 10,000-event queue
    sink_reset(url)
    for _ in range(n):
        client.capture("$ai_generation", distinct_id="install-1", properties=POSTHOG_PROPERTIES)
    client.flush()
    time.sleep(0.5)
    delivered = sink_count(url)
    client.shutdown()
    return {"delivered": delivered, "lost": n - delivered}


def memory_and_disk_ours(url: str, count: str) -> dict[str, Any]:
    """Queue `count` events (nothing delivered), then measure this process and the queue's size."""
    n = int(count)
    # The default, durable mode, never started (everything stays queued), bounded above the count.
    telemetry = ours("http://127.0.0.1:9", max_queue_events=2 * n, max_queue_bytes=2000 * n)
    for _ in range(n):
        telemetry.emit("ChatTurn", CHAT_TURN)
    status = telemetry.status()
    rss_mb = _rss_mb()
    telemetry.shutdown(timeout=0)
    # What the events take on disk wherever they are: in the queue's files, or still in the
    # journal's segments (not all moved yet when the producer has just stopped).
    state = telemetry.config.resolved_state_dir
    on_disk = sum(
        path.stat().st_size
        for folder in ("queue", "journal")
        for path in (state / folder).glob("*")
        if path.is_file()
    )
    return {"queued": status.queue_depth, "rss_mb": rss_mb, "bytes_per_event": on_disk / status.queue_depth}


def curve_ours(url: str, queued: str, bound: str = "none") -> dict[str, Any]:
    """emit() latency with ``queued`` events already waiting (undeliverable: the host is down),
    far from the bounds, or right at the event bound (``count``) or the byte bound (``bytes``)."""
    from analytics.queue.disk import DiskQueue
    from analytics.state import StateFolder

    n = int(queued)
    state = new_state()
    # The backlog is written straight into the queue (as many apps' earlier runs would have left
    # it); the record is a real ChatTurn message, mapped by a throwaway instance.
    probe = ours("http://127.0.0.1:9", state)
    probe.emit("ChatTurn", CHAT_TURN)
    probe.shutdown(timeout=0)
    disk = DiskQueue(StateFolder(__import__("pathlib").Path(state)).queue_dir)
    (_key, record), *_ = disk.peek(1)
    for start in range(0, n, 5000):
        disk.put_batch([record] * min(5000, n - start))
    volume = disk.volume()
    disk.close()
    bounds: dict[str, Any] = {"max_queue_events": 10 * n + 1_000_000, "max_queue_bytes": 2**40}
    if bound == "count":
        bounds["max_queue_events"] = n
    elif bound == "bytes":
        bounds["max_queue_bytes"] = volume
    telemetry = ours("http://127.0.0.1:9", state, **bounds)
    telemetry.start()
    result = percentiles(timed(lambda: telemetry.emit("ChatTurn", CHAT_TURN), 20_000))
    result["queued_after"] = telemetry.status().queue_depth
    telemetry.shutdown(timeout=0)
    return result


def start_cost_ours(url: str, sentry: str = "0") -> dict[str, Any]:
    """What start() adds to an app's startup (a fresh interpreter, import included or not)."""
    started = time.perf_counter()
    from analytics import Analytics, TelemetryConfig

    imported = time.perf_counter()
    extra = {"sentry_dsn": f"http://public@127.0.0.1:{url.rsplit(':', 1)[1]}/1"} if sentry == "1" else {}
    telemetry = Analytics(
        TelemetryConfig.from_env({}, state_dir=new_state(), endpoint=url, token=TOKEN, **extra)
    )
    telemetry.start()
    done = time.perf_counter()
    telemetry.shutdown(timeout=0)
    return {"import_ms": (imported - started) * 1000, "start_ms": (done - imported) * 1000}


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


WORKLOADS: dict[str, Callable[..., dict[str, Any]]] = {
    name: function
    for name, function in globals().items()
    if callable(function) and name.endswith(("_ours", "_posthog"))
}

if __name__ == "__main__":
    name, url, *args = sys.argv[1:]
    print(json.dumps(WORKLOADS[name](url, *args)))
