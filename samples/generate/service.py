"""A small shop API used to produce real incident bundles.

starlette + uvicorn (h11, asyncio loop in debug mode), an asyncpg pool, and a large
ThreadPoolExecutor for "thumbnail" work. Some handlers carry the classic mistakes that
the bundles are meant to show (a blocking call inside a coroutine, a report query that
scans the whole table when asked for all time, blocking work pushed to an oversized
executor, a remote call awaited while a pooled connection holds a transaction open).
Listen backlog and open-files limit are options, so that small ones can be shown too.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import os
import resource
import socket
import time

import asyncpg
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
POOL_NAME = "shop-main"

log = logging.getLogger("shop.api")
state: dict = {}

ITEM_SQL = "SELECT id, sku, name, category, price, created_at FROM items WHERE id = $1"
SEARCH_SQL = (
    "SELECT id, sku, name, price FROM items WHERE category = $1 AND price BETWEEN $2 AND $3 "
    "ORDER BY price LIMIT 20"
)
# `note` has no index. With the dashboard's default window (the last few minutes) the
# created_at index keeps the report cheap; an "all time" report scans the whole table.
REPORT_SQL = (
    "SELECT category, count(*) AS n, round(avg(price), 2) AS avg_price, max(created_at) AS newest "
    "FROM items WHERE created_at >= now() - make_interval(mins => $2) AND note LIKE $1 "
    "GROUP BY category ORDER BY n DESC"
)
LIST_SQL = "SELECT id, sku, name, category, price FROM items WHERE id > $1 ORDER BY id LIMIT $2"
EXPORT_SQL = "SELECT id, sku, name, price FROM items WHERE id BETWEEN $1 AND $2 ORDER BY id"
RESERVE_SQL = "SELECT id, price FROM items WHERE id = $1 FOR UPDATE"
ACQUIRE_TIMEOUT = 2.0  # seconds a request waits for a pooled connection before failing


def acquire():
    return state["pool"].acquire(timeout=ACQUIRE_TIMEOUT)


def logging_config(path: str) -> dict:
    handler = {"class": "logging.FileHandler", "filename": path, "formatter": "plain"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": LOG_FORMAT}},
        "handlers": {"file": handler},
        "root": {"handlers": ["file"], "level": "INFO"},
        "loggers": {
            "uvicorn": {"level": "INFO"},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"level": "INFO"},
            "asyncio": {"level": "INFO"},
        },
    }


async def item(request: Request) -> JSONResponse:
    item_id = int(request.path_params["item_id"])
    async with acquire() as con:
        row = await con.fetchrow(ITEM_SQL, item_id)
    if row is None:
        return JSONResponse({"error": "not found"}, status_code=404)
    return JSONResponse({k: str(v) for k, v in row.items()})


async def list_items(request: Request) -> JSONResponse:
    after = int(request.query_params.get("after", "0"))
    limit = min(int(request.query_params.get("limit", "100")), 500)
    async with acquire() as con:
        rows = await con.fetch(LIST_SQL, after, limit)
    return JSONResponse({"items": [{k: str(v) for k, v in r.items()} for r in rows]})


async def search(request: Request) -> JSONResponse:
    category = int(request.query_params.get("category", "1"))
    low = float(request.query_params.get("min", "10"))
    high = float(request.query_params.get("max", "20"))
    async with acquire() as con:
        rows = await con.fetch(SEARCH_SQL, category, low, high)
    return JSONResponse({"items": [dict(id=r["id"], sku=r["sku"], price=str(r["price"])) for r in rows]})


async def report(request: Request) -> JSONResponse:
    pattern = "%" + request.query_params.get("q", "ab") + "%"
    minutes = int(request.query_params.get("minutes", "15"))
    async with acquire() as con:
        rows = await con.fetch(REPORT_SQL, pattern, minutes)
    return JSONResponse({"rows": [{"category": r["category"], "n": r["n"]} for r in rows]})


async def export(request: Request) -> JSONResponse:
    body = await request.json()
    first = int(body.get("from", 1))
    count = int(body.get("rows", 100))
    async with acquire() as con:
        rows = await con.fetch(EXPORT_SQL, first, first + min(count, 500))
    # The archive client is synchronous; its upload wait is modelled by time.sleep and
    # blocks the event loop for as long as the upload takes.
    time.sleep(min(2.0, count / 5000.0))
    return JSONResponse({"exported": len(rows)})


async def checkout(request: Request) -> JSONResponse:
    body = await request.json()
    item_id = int(body.get("item", 1))
    async with acquire() as con:
        async with con.transaction():
            row = await con.fetchrow(RESERVE_SQL, item_id)
            # The payment provider is called while the row lock, the transaction and the pooled
            # connection are held: a slow provider keeps connections "idle in transaction".
            await asyncio.sleep(float(body.get("provider_delay", 0.1)))
    return JSONResponse({"item": item_id, "reserved": row is not None})


def render_thumbnail(image_id: int, storage_delay: float) -> str:
    time.sleep(storage_delay)  # slow object storage read
    digest = hashlib.sha256()
    for _ in range(200):
        digest.update(image_id.to_bytes(8, "little"))
    return digest.hexdigest()[:16]


async def thumbnail(request: Request) -> JSONResponse:
    image_id = int(request.query_params.get("id", "1"))
    delay = float(request.query_params.get("delay", "0.05"))
    loop = asyncio.get_running_loop()
    digest = await loop.run_in_executor(state["executor"], render_thumbnail, image_id, delay)
    return JSONResponse({"id": image_id, "thumb": digest})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


class SlowRequestLog:
    """Pure ASGI middleware: logs requests slower than one second."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        status = {}

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.monotonic() - started
            if elapsed >= 1.0:
                log.warning(
                    "slow request %s %s status=%s duration_ms=%.1f",
                    scope["method"],
                    scope["path"],
                    status.get("code", "-"),
                    elapsed * 1000,
                )


def build_app(dsn: str, pool_min: int, pool_max: int, workers: int):
    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["pool"] = await asyncpg.create_pool(
            dsn,
            min_size=pool_min,
            max_size=pool_max,
            # one plan per parameter set: the report's cheap index plan must not be replaced by a
            # generic full-scan plan after an expensive call
            server_settings={"plan_cache_mode": "force_custom_plan", "application_name": "shop-api"},
        )
        state["executor"] = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="thumbnail"
        )
        log.info("db pool %r ready min_size=%d max_size=%d", POOL_NAME, pool_min, pool_max)
        log.info("thumbnail executor ThreadPoolExecutor(max_workers=%d) pid=%d", workers, os.getpid())
        try:
            yield
        finally:
            await state["pool"].close()
            state["executor"].shutdown(wait=False, cancel_futures=True)

    routes = [
        Route("/api/items", list_items),
        Route("/api/items/{item_id:int}", item),
        Route("/api/search", search),
        Route("/api/report", report),
        Route("/api/export", export, methods=["POST"]),
        Route("/api/checkout", checkout, methods=["POST"]),
        Route("/api/thumbnail", thumbnail),
        Route("/health", health),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    return SlowRequestLog(app)


async def serve(args) -> None:
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = 0.1
    app = build_app(args.dsn, args.pool_min, args.pool_max, args.workers)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        loop="asyncio",
        http="h11",
        log_config=logging_config(args.log),
        access_log=True,
        timeout_keep_alive=5,
        backlog=args.backlog,
    )
    sockets = None
    if args.extra_host:  # also serve clients on a second (namespace-local) address
        sockets = [listening_socket(host, args.port, args.backlog) for host in (args.host, args.extra_host)]
    await uvicorn.Server(config).serve(sockets=sockets)


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--extra-host", help="a second address to listen on (same port)")
    parser.add_argument("--log", required=True)
    parser.add_argument("--pool-min", type=int, default=4)
    parser.add_argument("--pool-max", type=int, default=10)
    parser.add_argument("--workers", type=int, default=128)
    parser.add_argument("--backlog", type=int, default=2048, help="listen backlog of the server socket(s)")
    parser.add_argument("--nofile", type=int, help="soft RLIMIT_NOFILE (open files) for the service")
    args = parser.parse_args()
    if args.nofile:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))
    asyncio.run(serve(args), debug=True)


if __name__ == "__main__":
    main()
