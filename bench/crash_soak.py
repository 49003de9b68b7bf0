"""Crash soak: kill -9 a producing, uploading app many times; prove no acknowledged emit is lost.

    python bench/crash_soak.py --kills 100

The same protocol as tests/test_crash.py, for longer: a producer prints each number after
``emit()`` returned, is SIGKILLed at a random instant, and is restarted where it left off. At the
end a clean start delivers the backlog to a loopback capture server, and the script reports
acknowledged, delivered, lost (must be 0) and duplicated events (bounded by in-flight batches).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from analytics import Analytics, TelemetryConfig
from analytics.delivery.uploader import MAX_BATCH_EVENTS
from analytics.testing import CaptureServer

TOKEN = "phc_crash_soak"
PRODUCER = Path(__file__).resolve().parent.parent / "tests" / "crash_producer.py"


def one_life(state: Path, url: str, first: int, rng: random.Random) -> list[int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TELEMETRY_", "SENTRY_"))}
    producer = subprocess.Popen(
        [sys.executable, str(PRODUCER), str(state), url, str(first), TOKEN],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert producer.stdout is not None
    target = rng.randint(1, 2000)
    acknowledged: list[int] = []
    for line in producer.stdout:
        acknowledged.append(int(line))
        if len(acknowledged) >= target:
            break
    time.sleep(rng.uniform(0, 0.05))
    producer.send_signal(signal.SIGKILL)
    rest, _ = producer.communicate(timeout=60)
    acknowledged.extend(int(line) for line in rest.split())
    return acknowledged


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=100, help="how many SIGKILLs (default 100)")
    parser.add_argument("--seed", type=int, default=1, help="random seed for targets and kill instants")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    state = Path(tempfile.mkdtemp(prefix="crash-soak-")) / "state"
    started = time.monotonic()
    with CaptureServer(api_key=TOKEN) as server:
        acknowledged: list[int] = []
        for _ in range(args.kills):
            acknowledged.extend(one_life(state, server.url, acknowledged[-1] + 1 if acknowledged else 0, rng))
        config = TelemetryConfig.from_env(state_dir=state, endpoint=server.url, token=TOKEN)
        final = Analytics(config)
        drained = final.flush(timeout=120)
        final.shutdown(timeout=5)
        delivered = server.events
    numbers = {int(e["properties"]["$ai_span_name"][1:]) for e in delivered if e["event"] == "$ai_span"}
    lost = sorted(set(acknowledged) - numbers)
    duplicates = sum(c - 1 for c in Counter(e["uuid"] for e in delivered).values() if c > 1)
    print(f"kills                 {args.kills}")
    print(f"acknowledged emits    {len(acknowledged)}")
    print(f"delivered events      {len(delivered)} (backlog drained: {drained})")
    print(f"lost                  {len(lost)}")
    print(f"duplicates            {duplicates} (bound: {args.kills} x {MAX_BATCH_EVENTS} in-flight)")
    print(f"wall time             {time.monotonic() - started:.1f} s")
    return 0 if not lost and drained else 1


if __name__ == "__main__":
    sys.exit(main())
