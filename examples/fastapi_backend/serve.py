"""Run the example backend with uvicorn: the entry point a desktop shell starts (and the one
PyInstaller freezes, see README "Shipping in a desktop app").

    python -m examples.fastapi_backend.serve --port 8765 --exit-with-parent

``--exit-with-parent`` stops the server (gracefully: the lifespan's shutdown sends SessionEnd and
flushes) when the process that started it goes away. That matters for a PyInstaller ``--onefile``
build: the launched executable is a bootloader that runs the app as its child, and when the
desktop shell kills the bootloader with SIGKILL the child would otherwise run on as an orphan.
Two signs are watched, both cheap: the parent pid changing (the orphan is re-parented) and, with
``--exit-on-stdin-eof``, standard input closing (the shell's pipe closes when the shell dies).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable

import uvicorn

PARENT_POLL_SECONDS = 0.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--exit-with-parent", action="store_true", help="stop when the parent process dies")
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help="stop when standard input closes")
    args = parser.parse_args(argv)

    # Imported here, not at the top: the app reads its telemetry settings from the environment.
    from examples.fastapi_backend.app import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(), host=args.host, port=args.port, log_level="warning"))

    def stop(why: str) -> None:
        print(f"backend stopping: {why}", file=sys.stderr, flush=True)
        server.should_exit = True

    if args.exit_with_parent:
        watch_parent(os.getppid(), stop)
    if args.exit_on_stdin_eof:
        watch_stdin(stop)
    server.run()
    return 0


def watch_parent(parent_pid: int, stop: Callable[[str], None]) -> threading.Thread:
    """Call ``stop`` once the parent is gone: an orphan is re-parented (to init or a subreaper)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_SECONDS)
        stop(f"parent process {parent_pid} exited")

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread


def watch_stdin(stop: Callable[[str], None]) -> threading.Thread:
    def watch() -> None:
        for _chunk in iter(lambda: sys.stdin.buffer.read1(4096), b""):
            pass  # the shell may write; only the end of the stream matters
        stop("standard input closed")

    thread = threading.Thread(target=watch, name="stdin-watch", daemon=True)
    thread.start()
    return thread


if __name__ == "__main__":
    sys.exit(main())
