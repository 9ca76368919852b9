"""An asyncio server whose open-files limit is too small for its clients: accept() fails
with EMFILE and asyncio logs "socket.accept() out of system resource" (with the listening
socket) once per failed accept, retrying a second later.

A client process opens more connections than the limit allows and holds them for a while.
"""

import asyncio
import logging
import resource
import sys

logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
log = logging.getLogger("shop.api")

CLIENT = """
import socket, sys, time
held = []
for _ in range(int(sys.argv[2])):
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", int(sys.argv[1])))
    except BlockingIOError:
        pass
    held.append(s)
    time.sleep(0.002)
time.sleep(2.5)
"""


async def handle(reader, writer):
    await reader.read(1)
    writer.close()


async def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (48, hard))
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4)
    port = server.sockets[0].getsockname()[1]
    log.info("listening on 127.0.0.1:%d with RLIMIT_NOFILE 48", port)
    client = await asyncio.create_subprocess_exec(sys.executable, "-c", CLIENT, str(port), "80")
    await client.wait()
    await asyncio.sleep(1.2)
    server.close()
    await server.wait_closed()
    log.info("server closed")


asyncio.run(main(), debug=True)
