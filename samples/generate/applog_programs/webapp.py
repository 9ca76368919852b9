"""A tiny starlette app whose handlers misbehave, for real uvicorn/gunicorn logs.

    GET /ok           fast
    GET /block?s=0.4  time.sleep inside the coroutine (asyncio slow callback in debug mode)
    GET /boom         raises: uvicorn logs "Exception in ASGI application" with a traceback
    GET /hang?s=5     blocks longer than gunicorn's --timeout: WORKER TIMEOUT

Debug mode: WEBAPP_ASYNCIO_DEBUG=1 in the environment. WEBAPP_ROOT_LOGGING=asctime: the app
configures the root logger with %(asctime)s (asyncio's warnings then carry a time), while
uvicorn's own loggers keep uvicorn's default format (no time).
"""

import asyncio
import contextlib
import logging
import os
import time

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

if os.environ.get("WEBAPP_ROOT_LOGGING") == "asctime":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


async def ok(request):
    return PlainTextResponse("ok")


async def block(request):
    seconds = float(request.query_params.get("s", "0.4"))
    time.sleep(seconds)  # the bug under study
    return PlainTextResponse(f"blocked {seconds:.2f}")


async def boom(request):
    await asyncio.sleep(0)
    raise RuntimeError("inventory service returned garbage")


async def hang(request):
    time.sleep(float(request.query_params.get("s", "5")))
    return PlainTextResponse("late")


@contextlib.asynccontextmanager
async def lifespan(app):
    loop = asyncio.get_running_loop()
    if os.environ.get("WEBAPP_ASYNCIO_DEBUG") == "1":
        # uvicorn's runner does not honour PYTHONASYNCIODEBUG: switch debug mode on here
        loop.set_debug(True)
        loop.slow_callback_duration = 0.1
    yield


app = Starlette(
    routes=[Route("/ok", ok), Route("/block", block), Route("/boom", boom), Route("/hang", hang)],
    lifespan=lifespan,
)
