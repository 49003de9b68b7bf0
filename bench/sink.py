"""A fast loopback capture sink for the benchmarks, in its own process.

It answers PostHog's ``/batch/`` the way PostHog does (200 with a small JSON body) and counts the
events it received, without validating them: the point is that neither client waits on the sink.
``GET /count`` returns the count; ``POST /reset`` zeroes it.

    python bench/sink.py PORT
"""

from __future__ import annotations

import asyncio
import sys
import zlib

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{"status": 1}'


class Counter:
    events = 0
    requests = 0


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            headers = {
                k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if path.startswith("/count"):
                text = f'{{"events": {Counter.events}, "requests": {Counter.requests}}}'.encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text))
            elif path.startswith("/reset"):
                Counter.events = Counter.requests = 0
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            else:
                if headers.get("content-encoding") == "gzip":
                    body = zlib.decompress(body, 31)
                Counter.events += body.count(b'"uuid"')  # one per event in both clients' payloads
                Counter.requests += 1
                writer.write(OK)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, limit=64 * 1024 * 1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
