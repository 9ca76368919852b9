"""TCP traffic for the capture samples: a small request/response server and clients that
exercise the TCP behaviours the capture engine reports (resets, zero windows, refused
connections, SYN retries on a full accept queue, source-port reuse, bulk transfers).

    python3 pcap_traffic.py server HOST PORT            # serves until killed
    python3 pcap_traffic.py clients HOST PORT [--bulk N] [--scenarios a,b,...]

Only ever run against loopback or a private network namespace.
"""

from __future__ import annotations

import argparse
import socket
import struct
import threading
import time


def serve(host: str, port: int) -> None:
    srv = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(64)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=_handle, args=(conn,), daemon=True).start()


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = conn.recv(n - len(out))
        if not chunk:
            raise ConnectionError("peer closed")
        out += chunk
    return bytes(out)


def _handle(conn: socket.socket) -> None:
    """Protocol: 1-byte command + 4-byte length. 'E' echo N bytes back, 'G' send N bytes,
    'S' sleep N ms then reply 1 byte, 'P' pause reading for N ms (fills the window), 'R' reset."""
    try:
        while True:
            head = conn.recv(5, socket.MSG_WAITALL)
            if len(head) < 5:
                break
            cmd, n = head[:1], struct.unpack("!I", head[1:])[0]
            if cmd == b"E":
                conn.sendall(_recv_exact(conn, n))
            elif cmd == b"G":
                conn.sendall(b"g" * n)
            elif cmd == b"S":
                time.sleep(n / 1000)
                conn.sendall(b"s")
            elif cmd == b"P":
                time.sleep(n / 1000)
                conn.sendall(b"p")
            elif cmd == b"R":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                break
            elif cmd == b"B":  # bulk upload: read N bytes, reply 1
                _recv_exact(conn, n)
                conn.sendall(b"b")
    except OSError:
        pass
    finally:
        conn.close()


def _connect(host: str, port: int, src_port: int = 0, rcvbuf: int = 0) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if src_port:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, src_port))
    s.connect((host, port))
    return s


def _req(s: socket.socket, cmd: bytes, n: int, body: bytes = b"") -> None:
    s.sendall(cmd + struct.pack("!I", n) + body)


def scenario_echo(host: str, port: int) -> None:
    for size in (10, 300, 5000, 70000):
        s = _connect(host, port)
        for _ in range(3):
            _req(s, b"E", size, b"x" * size)
            _recv_exact(s, size)
        s.close()


def scenario_slow(host: str, port: int) -> None:
    s = _connect(host, port)
    for ms in (5, 250, 20):
        _req(s, b"S", ms)
        _recv_exact(s, 1)
    s.close()


def scenario_reset(host: str, port: int) -> None:
    # the server resets
    s = _connect(host, port)
    _req(s, b"R", 0)
    try:
        s.recv(10)
    except OSError:
        pass
    s.close()
    # the client resets (linger 0) in the middle of a download
    s = _connect(host, port)
    _req(s, b"G", 200000)
    s.recv(1000)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def scenario_refused(host: str, port: int) -> None:
    for _ in range(2):
        try:
            _connect(host, port + 1).close()  # nothing listens there: SYN answered by RST
        except OSError:
            pass


def scenario_zero_window(host: str, port: int) -> None:
    # a client with a tiny receive buffer that stops reading while the server sends
    s = _connect(host, port, rcvbuf=4096)
    _req(s, b"G", 400000)
    time.sleep(0.6)
    got = 0
    while got < 400000:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += len(chunk)
        time.sleep(0.002)
    s.close()


def scenario_port_reuse(host: str, port: int) -> None:
    # the same source port three times (reset closes leave no TIME_WAIT behind)
    for _ in range(3):
        s = _connect(host, port, src_port=47999)
        _req(s, b"E", 4, b"ping")
        _recv_exact(s, 4)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        time.sleep(0.05)


def scenario_syn_retry(host: str, port: int) -> None:
    # a listener that never accepts, with a backlog of 1: further SYNs are dropped and retried
    lst = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind((host, port + 2))
    lst.listen(0)
    socks = []
    for _ in range(4):
        s = socket.socket(lst.family, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect((host, port + 2))
        except BlockingIOError:
            pass
        socks.append(s)
        time.sleep(0.05)
    time.sleep(2.5)
    for s in socks:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    lst.close()


def scenario_bulk(host: str, port: int, size: int) -> None:
    s = _connect(host, port)
    _req(s, b"B", size)
    block = b"b" * 65536
    sent = 0
    while sent < size:
        part = block[: min(len(block), size - sent)]
        s.sendall(part)
        sent += len(part)
    _recv_exact(s, 1)
    _req(s, b"G", size // 2)
    _recv_exact(s, size // 2)
    s.close()


SCENARIOS = {
    "echo": scenario_echo,
    "slow": scenario_slow,
    "reset": scenario_reset,
    "refused": scenario_refused,
    "zero_window": scenario_zero_window,
    "port_reuse": scenario_port_reuse,
    "syn_retry": scenario_syn_retry,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["server", "clients"])
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--bulk", type=int, default=0)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = ap.parse_args()
    if args.mode == "server":
        serve(args.host, args.port)
        return
    for name in filter(None, args.scenarios.split(",")):
        SCENARIOS[name](args.host, args.port)
        time.sleep(0.05)
    if args.bulk:
        scenario_bulk(args.host, args.port, args.bulk)


if __name__ == "__main__":
    main()
