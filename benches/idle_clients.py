#!/usr/bin/env python3
"""Opens N keep-alive connections to 127.0.0.1:PORT and keeps them idle.

Used by benches/memory.sh:

    python3 benches/idle_clients.py PORT N [--requests 1] [--concurrency 200]

Each connection sends --requests `GET /` requests one after another (0: the
connection is only opened) and reads every answer, which must be a 200.
At most --concurrency connections are being opened or answered at a time,
so the proxy's upstream pool stays small and what remains is the cost of
idle client connections. When all are open and answered, prints
"ready N" and waits for a line (or end of input) on stdin; then closes every
connection, prints "closed" and exits. Exits non-zero, with the reason on
stderr, if any connection fails.
"""

import argparse
import asyncio
import resource
import sys

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: porteiro-memory-bench\r\n\r\n"


async def read_response(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    if len(status) < 2 or status[1] != "200":
        raise RuntimeError(f"answered {lines[0]!r}")
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        elif name.strip().lower() == "transfer-encoding":
            raise RuntimeError("chunked answer; the bench upstream sends a fixed length")
    if length is None:
        raise RuntimeError("answer without Content-Length")
    await reader.readexactly(length)


async def open_one(port: int, requests: int, gate: asyncio.Semaphore):
    async with gate:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(requests):
            writer.write(REQUEST)
            await read_response(reader)
        return reader, writer


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("connections", type=int)
    parser.add_argument("--requests", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()

    # One descriptor per connection, plus a few: raise the soft limit as far
    # as the hard one allows.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 64
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < want:
            print(f"idle_clients: open-file hard limit {hard} < {want}", file=sys.stderr)
            return 2

    gate = asyncio.Semaphore(args.concurrency)
    tasks = [asyncio.create_task(open_one(args.port, args.requests, gate)) for _ in range(args.connections)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    writers = [r[1] for r in results if not isinstance(r, BaseException)]
    if errors:
        print(f"idle_clients: {len(errors)} of {args.connections} connections failed, e.g. {errors[0]!r}",
              file=sys.stderr)
        for w in writers:
            w.close()
        return 1

    print(f"ready {len(writers)}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for w in writers:
        w.close()
    await asyncio.gather(*(w.wait_closed() for w in writers), return_exceptions=True)
    print("closed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
