#!/usr/bin/env python3
"""Hostile HTTP clients for benches/attack.sh, bounded in count and time, 127.0.0.1 only.

  attackers.py PORT SECONDS FOREIGN_JWT_FILE KEY

Runs, for SECONDS, each attack with a fixed number of connections that reconnect when the
server cuts them:
  * slow bodies:     POST heads announcing 1 MiB, then one byte a second;
  * idle:            connections that send nothing;
  * POST flood:      foreign-signed account JWTs on keep-alive connections, at most RATE per second;
  * odd methods:     made-up HTTP methods (metric labels must stay a closed set).
Prints one line of counts at the end.
"""
import asyncio
import socket
import sys
import time

SLOW, IDLE, FLOODERS, RATE = 200, 200, 4, 1000

port, seconds = int(sys.argv[1]), float(sys.argv[2])
foreign = open(sys.argv[3], "rb").read().strip()
key = sys.argv[4]
deadline = time.monotonic() + seconds
counts = {"slow_cut": 0, "idle_cut": 0, "posts": 0, "odd": 0}


async def open_conn():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return await asyncio.open_connection(sock=sock)


async def until_closed(reader, name):
    """Waits (bounded by the deadline) for the server to close; counts it."""
    while time.monotonic() < deadline:
        try:
            left = deadline - time.monotonic()
            data = await asyncio.wait_for(reader.read(65536), timeout=max(left, 0.01))
        except (asyncio.TimeoutError, ConnectionError):
            return
        if not data:
            counts[name] += 1
            return


async def slow_body():
    while time.monotonic() < deadline:
        try:
            reader, writer = await open_conn()
            writer.write(f"POST /jwt/v1/accounts/{key} HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n".encode())
            while time.monotonic() < deadline and not reader.at_eof():
                writer.write(b"e")
                await writer.drain()
                try:
                    if not await asyncio.wait_for(reader.read(65536), timeout=1.0):
                        counts["slow_cut"] += 1
                        break
                except asyncio.TimeoutError:
                    pass
            writer.close()
        except (ConnectionError, OSError):
            await asyncio.sleep(0.1)


async def idle():
    while time.monotonic() < deadline:
        try:
            reader, writer = await open_conn()
            await until_closed(reader, "idle_cut")
            writer.close()
        except (ConnectionError, OSError):
            await asyncio.sleep(0.1)


async def flood():
    body = foreign
    request = (f"POST /jwt/v1/accounts/{key} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
    per = FLOODERS and RATE / FLOODERS
    while time.monotonic() < deadline:
        try:
            reader, writer = await open_conn()
            while time.monotonic() < deadline:
                started = time.monotonic()
                writer.write(request)
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                counts["posts"] += 1
                if b"connection: close" in head.lower():
                    break
                await asyncio.sleep(max(0.0, 1.0 / per - (time.monotonic() - started)))
            writer.close()
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            await asyncio.sleep(0.1)


async def odd_methods():
    n = 0
    while time.monotonic() < deadline:
        try:
            reader, writer = await open_conn()
            writer.write(f"XM{n:04d} /jwt/v1/accounts/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            await reader.read()
            writer.close()
            counts["odd"] += 1
            n += 1
            await asyncio.sleep(0.01)
        except (ConnectionError, OSError):
            await asyncio.sleep(0.1)


async def main():
    tasks = [slow_body() for _ in range(SLOW)]
    tasks += [idle() for _ in range(IDLE)] + [flood() for _ in range(FLOODERS)] + [odd_methods()]
    await asyncio.gather(*tasks)
    print(" ".join(f"{k}={v}" for k, v in counts.items()))


asyncio.run(main())
