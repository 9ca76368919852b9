"""A small asyncio program that really produces the log records stallscope's applog parser
reads: slow callbacks (Task form, Handle form, TimerHandle form), a destroyed pending task,
never-retrieved exceptions (Task, Future, _GatheringFuture), an ERROR with a traceback, an
EMFILE error and a database-connect timeout against a silent loopback listener.

Runs unchanged on Python 3.6 .. 3.13 (no newer syntax). Usage:

    python faults.py --logging none|basic|asctime|asctime-nosep|asctime-dash|iso|json
                     [--no-debug] [--uvloop] [--aiodebug] [--db]

Everything goes to stderr (the logging handlers' default).
"""

import argparse
import asyncio
import gc
import json
import logging
import resource
import socket
import sys
import time

log = logging.getLogger("shop.worker")


class JsonFormatter(logging.Formatter):
    """What python-json-logger-style formatters print: one JSON object per record."""

    def format(self, record):
        doc = {
            "asctime": self.formatTime(record),
            "levelname": record.levelname,
            "name": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def setup_logging(style):
    if style == "none":
        return  # lastResort handler: bare messages, WARNING and above
    if style == "basic":
        logging.basicConfig()
        return
    if style == "json":
        handler = logging.StreamHandler()
        try:
            from pythonjsonlogger.json import JsonFormatter as PJL  # python-json-logger >= 3.1

            handler.setFormatter(PJL("%(asctime)s %(levelname)s %(name)s %(message)s"))
        except ImportError:
            handler.setFormatter(JsonFormatter())
        logging.basicConfig(handlers=[handler], level=logging.INFO)
        return
    fmt = {
        "asctime": "%(asctime)s %(levelname)s %(name)s: %(message)s",
        "asctime-nosep": "%(asctime)s%(levelname)s:%(name)s:%(message)s",
        "asctime-dash": "%(asctime)s - %(name)s - %(levelname)s - %(message)s",
        "iso": "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s",
    }[style]
    handler = logging.StreamHandler()
    formatter = logging.Formatter(fmt)
    if style == "iso":
        formatter.formatTime = lambda record, datefmt=None: (
            time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
            + f".{int(record.msecs):03d}"
            + time.strftime("%z", time.localtime(record.created))
        )
    handler.setFormatter(formatter)
    logging.basicConfig(handlers=[handler], level=logging.INFO)


async def blocking_handler(seconds):
    time.sleep(seconds)  # the bug: a blocking call inside a coroutine
    return seconds


def slow_plain_callback(seconds):
    time.sleep(seconds)


async def fails(kind):
    await asyncio.sleep(0)
    raise ValueError(f"bad input {kind}")


async def waits_forever(fut):
    await fut


async def silent_server_timeout(loop):
    """Connect to a loopback listener that never answers; asyncpg when installed."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]
    try:
        try:
            import asyncpg
        except ImportError:
            asyncpg = None
        if asyncpg is not None:
            await asyncpg.create_pool(
                host="127.0.0.1", port=port, user="app", database="shop", min_size=1, max_size=2, timeout=0.3
            )
        else:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 0.3)
            await asyncio.wait_for(reader.read(1), 0.3)
    except Exception:
        log.exception("db pool 'shop-main' acquire failed")
    finally:
        srv.close()


def exhaust_fds():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
    held = []
    try:
        while True:
            held.append(open("/dev/null"))
    except OSError:
        log.exception("could not open upload spool file")
    finally:
        for fh in held:
            fh.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def main(loop, args, keep):
    log.info("worker starting, python %s", sys.version.split()[0])
    await blocking_handler(0.25)  # Task form: the main task itself blocks
    loop.call_soon(slow_plain_callback, 0.15)  # Handle form
    loop.call_later(0.01, slow_plain_callback, 0.12)  # TimerHandle form
    await asyncio.sleep(0.2)
    task = loop.create_task(blocking_handler(0.3))  # Task form, another task
    await task
    # never retrieved: a task that fails and nobody awaits
    keep.append(loop.create_task(fails("task")))
    # a Future with an exception nobody looks at
    fut = loop.create_future()
    fut.set_exception(RuntimeError("upstream closed"))
    keep.append(fut)
    # gather whose outer future nobody awaits
    keep.append(asyncio.gather(fails("a"), fails("b")))
    # pending forever: destroyed when the loop is dropped
    keep.append(loop.create_task(waits_forever(loop.create_future())))
    await asyncio.sleep(0.05)
    try:
        {}["customer_id"]
    except KeyError:
        log.exception("request failed: POST /api/orders")
    log.error("payment provider returned 503")
    exhaust_fds()
    if args.db:
        await silent_server_timeout(loop)
    log.info("worker done")


def run():
    parser = argparse.ArgumentParser()
    parser.add_argument("--logging", default="none")
    parser.add_argument("--no-debug", action="store_true")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--aiodebug", action="store_true")
    parser.add_argument("--db", action="store_true")
    args = parser.parse_args()
    setup_logging(args.logging)
    if args.uvloop:
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    if args.aiodebug:
        from aiodebug import log_slow_callbacks

        log_slow_callbacks.enable(0.1)
    if not args.no_debug:
        loop.set_debug(True)
        loop.slow_callback_duration = 0.1
    keep = []
    loop.run_until_complete(main(loop, args, keep))
    if args.no_debug and not args.aiodebug:
        # without debug mode asyncio says nothing about slow callbacks; apps often log their own
        t0 = time.monotonic()
        slow_plain_callback(0.13)
        logging.getLogger("shop.loopmon").warning(
            "Long-running callback: %s took %.4fs", "slow_plain_callback", time.monotonic() - t0
        )
    loop.close()
    keep.clear()
    gc.collect()


if __name__ == "__main__":
    run()
