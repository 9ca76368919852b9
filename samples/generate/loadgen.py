"""Bounded load generator for service.py, with scheduled fault traffic.

Steady mix at --rate requests/s over loopback for --duration seconds; fault traffic
(`blocking`, `slow_query`, `threads`, `resets`, `pool`, `backlog`, `fdlimit`) runs at the offsets given in --schedule.
Writes the real start/end (UTC epoch seconds) of every fault it drove to --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import socket
import struct
import time

import httpx

STEADY_MIX = [  # (weight, kind)
    (0.55, "item"),
    (0.22, "search"),
    (0.08, "health"),
    (0.08, "thumbnail"),
    (0.04, "export"),
    (0.02, "report"),
    (0.01, "checkout"),
]
# Clients behind the namespace link page through the catalogue (large responses).
REMOTE_MIX = [(1.0, "listing")]
N_ROWS = 1_500_000
ALL_TIME_MINUTES = 60 * 24 * 365 * 5
REPORT_TERMS = [f"{a}{b}" for a in "0123456789abcdef" for b in "0123456789abcdef"]


class Stats:
    def __init__(self) -> None:
        self.sent = 0
        self.ok = 0
        self.failed = 0


async def one_request(client: httpx.AsyncClient, rng: random.Random, kind: str, stats: Stats, **kw) -> None:
    stats.sent += 1
    try:
        if kind == "item":
            r = await client.get(f"/api/items/{rng.randint(1, N_ROWS)}")
        elif kind == "search":
            low = round(rng.uniform(1, 900), 2)
            r = await client.get(
                "/api/search", params={"category": rng.randint(1, 50), "min": low, "max": low + 5}
            )
        elif kind == "listing":
            r = await client.get("/api/items", params={"after": rng.randint(0, N_ROWS - 500), "limit": 200})
        elif kind == "health":
            r = await client.get("/health")
        elif kind == "thumbnail":
            delay = kw.get("delay", rng.uniform(0.05, 0.2))
            r = await client.get(
                "/api/thumbnail", params={"id": rng.randint(1, 10_000), "delay": f"{delay:.2f}"}
            )
        elif kind == "export":
            rows = kw.get("rows", rng.randint(50, 300))
            r = await client.post("/api/export", json={"from": rng.randint(1, N_ROWS - 600), "rows": rows})
        elif kind == "report":  # the dashboard's window: the last 15 minutes unless asked otherwise
            params = {"q": rng.choice(REPORT_TERMS), "minutes": kw.get("minutes", 15)}
            r = await client.get("/api/report", params=params)
        elif kind == "checkout":
            body = {
                "item": rng.randint(1, N_ROWS),
                "provider_delay": round(kw.get("delay", rng.uniform(0.05, 0.2)), 3),
            }
            r = await client.post("/api/checkout", json=body)
        else:
            raise ValueError(kind)
        if r.status_code < 500:
            stats.ok += 1
        else:
            stats.failed += 1
    except httpx.HTTPError:
        stats.failed += 1


async def steady(client, rng, rate, until, stats, mix=STEADY_MIX) -> None:
    weights = [w for w, _ in mix]
    kinds = [k for _, k in mix]
    inflight: set[asyncio.Task] = set()
    while time.time() < until:
        await asyncio.sleep(rng.expovariate(rate))
        if len(inflight) >= 64:  # bounded: a stalled server does not get an unbounded pile-up
            continue
        task = asyncio.create_task(one_request(client, rng, rng.choices(kinds, weights)[0], stats))
        inflight.add(task)
        task.add_done_callback(inflight.discard)
    if inflight:
        await asyncio.wait(inflight, timeout=30)


async def dashboard(client, rng, period, until, stats) -> None:
    """An ops dashboard that refreshes the report every `period` seconds."""
    await asyncio.sleep(rng.uniform(0, period))
    while time.time() < until:
        await one_request(client, rng, "report", stats)
        await asyncio.sleep(period)


async def fault_blocking(client, rng, duration, stats) -> dict:
    """Large exports: the handler's blocking upload wait stalls the loop 0.3-2 s each time."""
    end = time.time() + duration
    tasks = []
    while time.time() < end:
        tasks.append(
            asyncio.create_task(one_request(client, rng, "export", stats, rows=rng.randint(1500, 10000)))
        )
        await asyncio.sleep(rng.uniform(0.8, 1.6))
    await asyncio.gather(*tasks)
    return {"requests": len(tasks)}


async def fault_slow_query(client, rng, duration, stats, workers=8) -> dict:
    """Several callers ask for the "all time" report at once: the same statement as the
    dashboard's, but over the whole table (no index on `note`)."""
    end = time.time() + duration
    count = 0

    async def worker():
        nonlocal count
        while time.time() < end:
            await one_request(client, rng, "report", stats, minutes=ALL_TIME_MINUTES)
            count += 1

    await asyncio.gather(*(worker() for _ in range(workers)))
    return {"requests": count, "concurrency": workers, "minutes": ALL_TIME_MINUTES}


async def paced(client, rng, duration, stats, rate, kind, delays) -> int:
    """`rate` requests/s of `kind` for `duration` s, each with a server-side delay drawn from
    `delays`; waits for all of them and returns how many were sent."""
    end = time.time() + duration
    tasks = []
    while time.time() < end:
        delay = rng.uniform(*delays)
        tasks.append(asyncio.create_task(one_request(client, rng, kind, stats, delay=delay)))
        await asyncio.sleep(1.0 / rate)
    await asyncio.gather(*tasks)
    return len(tasks)


async def fault_threads(client, rng, duration, stats, rate=25.0) -> dict:
    """Slow storage: many thumbnail renders block executor threads for 6-9 s each."""
    sent = await paced(client, rng, duration, stats, rate, "thumbnail", (6.0, 9.0))
    return {"requests": sent, "rate": rate}


async def fault_resets(host, port, rng, duration, rate=30.0) -> dict:
    """Clients that abort: connect, send a request, close with SO_LINGER=0 (RST)."""
    loop = asyncio.get_running_loop()
    end = time.time() + duration
    count = 0
    while time.time() < end:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (host, port))
            request = f"GET /api/items/{rng.randint(1, N_ROWS)} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n"
            await loop.sock_sendall(sock, request.encode())
            await asyncio.sleep(rng.uniform(0.0, 0.02))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            count += 1
        except OSError:
            pass
        finally:
            sock.close()
        await asyncio.sleep(rng.expovariate(rate))
    return {"connections_reset": count, "rate": rate}


async def fault_pool(client, rng, duration, stats, rate=4.0) -> dict:
    """Checkouts while the payment provider answers in 3-4 s: each holds a pooled connection
    (in a transaction) for that long, so the 10-connection pool runs dry and other requests
    time out waiting for a connection."""
    sent = await paced(client, rng, duration, stats, rate, "checkout", (3.0, 4.0))
    return {"requests": sent, "rate": rate, "provider_delay_s": [3.0, 4.0]}


async def _short_request(host, port) -> bool:
    """One fresh connection: GET /health with Connection: close."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 15)
        writer.write(f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        await asyncio.wait_for(reader.read(), 15)
        writer.close()
        return True
    except (OSError, asyncio.TimeoutError):
        return False


async def fault_backlog(host, port, rng, duration, burst=150, every=2.0) -> dict:
    """Reconnect storms: every `every` seconds `burst` clients open a fresh connection at the
    same moment (as after a load-balancer failover); the small listen backlog overflows and
    the kernel drops their SYNs, which the clients retransmit."""
    end = time.time() + duration
    tasks = []
    while time.time() < end:
        tasks += [asyncio.create_task(_short_request(host, port)) for _ in range(burst)]
        await asyncio.sleep(every)
    done = await asyncio.gather(*tasks)
    return {"connections": len(tasks), "burst": burst, "every_s": every, "completed": sum(done)}


async def fault_fdlimit(host, port, rng, duration, idle=1100) -> dict:
    """A proxy's connection pool warming up: `idle` connections opened over a few seconds
    and held open without a request, more than the service's open-files limit allows; its
    accept() fails with EMFILE while they are held."""
    end = time.time() + duration
    writers = []

    async def hold():
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), max(1.0, end - time.time())
            )
            writers.append(writer)
        except (OSError, asyncio.TimeoutError):
            pass

    tasks = []
    for _ in range(idle):
        tasks.append(asyncio.create_task(hold()))
        await asyncio.sleep(rng.uniform(0.0, 0.01))
    await asyncio.sleep(max(0.0, end - time.time()))
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    held = len(writers)
    for w in writers:
        w.close()
    return {"idle_connections": held, "attempted": idle}


async def run_fault(name, offset, duration, t0, new_client, rng, stats, host, port, results, params) -> None:
    """Each HTTP fault has clients of its own, which close their connections when it ends."""
    await asyncio.sleep(max(0.0, t0 + offset - time.time()))
    async with new_client() as client:
        await _run_fault(name, duration, client, rng, stats, host, port, results, params)


async def _run_fault(name, duration, client, rng, stats, host, port, results, params) -> None:
    start = time.time()
    if name == "blocking":
        info = await fault_blocking(client, rng, duration, stats)
    elif name == "slow_query":
        info = await fault_slow_query(client, rng, duration, stats)
    elif name == "threads":
        info = await fault_threads(client, rng, duration, stats)
    elif name == "resets":
        info = await fault_resets(host, port, rng, duration)
    elif name == "pool":
        info = await fault_pool(client, rng, duration, stats)
    elif name == "backlog":
        info = await fault_backlog(host, port, rng, duration, **params)
    elif name == "fdlimit":
        info = await fault_fdlimit(host, port, rng, duration, **params)
    else:
        raise ValueError(name)
    results.append({"name": name, "start": start, "end": time.time(), **info})


async def main_async(args) -> None:
    global N_ROWS
    N_ROWS = args.rows
    schedule = json.loads(open(args.schedule).read()) if args.schedule else []
    t0 = args.t0 or time.time()
    rng = random.Random(args.seed)
    base = f"http://{args.host}:{args.port}"
    stats = Stats()
    results: list[dict] = []
    timeout = httpx.Timeout(60.0)
    async with httpx.AsyncClient(
        base_url=base, timeout=timeout, limits=httpx.Limits(max_connections=64), trust_env=False
    ) as steady_client:

        def fault_client():
            limits = httpx.Limits(max_connections=400)
            return httpx.AsyncClient(base_url=base, timeout=timeout, limits=limits, trust_env=False)

        jobs = [
            run_fault(
                f["name"],
                f["offset"],
                f["duration"],
                t0,
                fault_client,
                random.Random(rng.random()),
                stats,
                args.host,
                args.port,
                results,
                f.get("params", {}),
            )
            for f in schedule
        ]
        if args.profile == "local":
            jobs.append(dashboard(steady_client, random.Random(rng.random()), 5.0, t0 + args.duration, stats))
        await asyncio.gather(
            steady(
                steady_client,
                rng,
                args.rate,
                t0 + args.duration,
                stats,
                REMOTE_MIX if args.profile == "remote" else STEADY_MIX,
            ),
            *jobs,
        )
    out = {"t0": t0, "faults": results, "sent": stats.sent, "ok": stats.ok, "failed": stats.failed}
    with open(args.out, "w") as fh:
        json.dump(out, fh, indent=2)


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))  # fault clients
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--rate", type=float, default=12.0)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rows", type=int, default=N_ROWS, help="rows in the items table")
    p.add_argument("--schedule")
    p.add_argument("--profile", choices=["local", "remote"], default="local")
    p.add_argument("--t0", type=float)
    p.add_argument("--out", required=True)
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
