"""The scrubber's speed: µs per KB of log text without and with secrets, and the cost of a short
value (a model or tool name) the first time and every time after.

The text is the ordinary log lines of tests/corpus/ordinary.txt (tracebacks, HTTP and git and npm
output, LLM client logs), and, for "with secrets", the same lines interleaved with the secrets in
context of tests/corpus/assignments.txt. Run alone (`python bench/scrubber.py`) or by `make bench`.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analytics.privacy.scrubber import Scrubber  # noqa: E402

CORPUS = ROOT / "tests" / "corpus"
TARGET_US_PER_KB = 30.0


def corpus_lines(name: str) -> list[str]:
    text = (CORPUS / name).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def us_per_kb(scrubber: Scrubber, text: str, rounds: int = 41, calls: int = 10) -> tuple[float, float]:
    """The cost per call scaled to one KB of text: the fastest of many short rounds, and their
    median. The scrubber is pure CPU work, so a slower round is another tenant of the machine
    taking the CPU or its caches, not the scrubber's own variation: the fastest round is the
    figure (as `timeit` advises), and the median says how noisy the machine was."""
    kb = len(text.encode()) / 1024
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            scrubber.scrub_text(text)
        samples.append((time.perf_counter() - started) / calls * 1e6 / kb)
    return min(samples), statistics.median(samples)


def ns_per_call(function: object, argument: str, calls: int = 200_000) -> float:
    call = function  # a bound method, called in a tight loop
    started = time.perf_counter()
    for _ in range(calls):
        call(argument)  # type: ignore[operator]
    return (time.perf_counter() - started) / calls * 1e9


def measure() -> dict[str, float]:
    scrubber = Scrubber(home="/home/bob", user_name="bob", host_name="bobs-laptop.local")
    ordinary = corpus_lines("ordinary.txt")
    secrets = [line.replace("«", "").replace("»", "") for line in corpus_lines("assignments.txt")]
    clean = "\n".join(ordinary)
    mixed = "\n".join(line for pair in zip(ordinary, secrets, strict=False) for line in pair)
    # New names each time, so the cache of clean short values never answers.
    first_sight = [f"tool_{index:06d}" for index in range(200_000)]
    fresh = Scrubber(home="/home/bob", user_name="bob")
    started = time.perf_counter()
    for name in first_sight:
        fresh.scrub_text(name)
    first_ns = (time.perf_counter() - started) / len(first_sight) * 1e9
    clean_fastest, clean_median = us_per_kb(scrubber, clean)
    secrets_fastest, secrets_median = us_per_kb(scrubber, mixed)
    return {
        "clean_us_per_kb": clean_fastest,
        "clean_median_us_per_kb": clean_median,
        "secrets_us_per_kb": secrets_fastest,
        "secrets_median_us_per_kb": secrets_median,
        "clean_kb": len(clean.encode()) / 1024,
        "short_first_ns": first_ns,
        "short_repeat_ns": ns_per_call(scrubber.scrub_text, "gpt-4o-mini"),
    }


def main() -> int:
    figures = measure()
    if "--json" in sys.argv:
        print(json.dumps(figures))
        return 0
    print(
        f"scrub typical log text, no secrets: {figures['clean_us_per_kb']:.1f} us/KB "
        f"(median {figures['clean_median_us_per_kb']:.1f}; {figures['clean_kb']:.1f} KB; "
        f"target <= {TARGET_US_PER_KB:.0f})"
    )
    print(
        f"scrub typical log text with secrets: {figures['secrets_us_per_kb']:.1f} us/KB "
        f"(median {figures['secrets_median_us_per_kb']:.1f})"
    )
    print(
        f"scrub a short value: {figures['short_first_ns']:.0f} ns first time, "
        f"{figures['short_repeat_ns']:.0f} ns after"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
