"""A producing app for crash tests: emits numbered events forever, printing each number only
after ``emit()`` returned, while its uploader runs.

    python tests/crash_producer.py STATE_DIR CAPTURE_URL FIRST_NUMBER TOKEN

Used by tests/test_crash.py and bench/crash_soak.py, which SIGKILL it at random instants.
"""

import sys

from analytics import Analytics, TelemetryConfig, events
from analytics.delivery.retry import RetryPolicy

state, url, first, token = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
config = TelemetryConfig.from_env(state_dir=state, endpoint=url, token=token)
telemetry = Analytics(
    config, retry_policy=RetryPolicy(base=0.02, cap=0.1, jitter=False), upload_interval=0.01
)
telemetry.start()
n = first
while True:
    telemetry.emit(events.ToolCall(tool_name=f"n{n}", duration_ms=1, success=True))
    sys.stdout.write(f"{n}\n")
    sys.stdout.flush()
    n += 1
