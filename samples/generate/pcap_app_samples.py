#!/usr/bin/env python3
"""Regenerate samples/pcap_app/: real loopback captures of PostgreSQL wire-protocol and
HTTP/1.1 traffic, for the application-latency layer of the capture parser.

    python3 samples/generate/pcap_app_samples.py            # the committed samples
    python3 samples/generate/pcap_app_samples.py --big /tmp/pg_big.pcap --mb 550
                                                            # benchmark capture (not committed)

Run as root on Debian 12 with ``postgresql tcpdump`` installed. A private cluster is created
in a temporary directory (``initdb`` as the postgres user, 127.0.0.1:54359 only, TLS with a
throw-away self-signed certificate), driven by pgbench (``-M simple|extended|prepared``, with
and without ``-C``, a pipelined script) and psql (errors with SQLSTATEs, a multi-statement
query, COPY, a notice, a TLS session), while tcpdump writes one file per scenario. A tiny
HTTP/1.1 server (``http.server``) on 127.0.0.1:18080 answers keep-alive, chunked, pipelined,
``Expect: 100-continue``, HEAD, 204/304/404/500 exchanges. Everything started is stopped and
the cluster removed at the end (also on error).
"""

from __future__ import annotations

import argparse
import gzip
import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "pcap_app"
BINDIR = "/usr/lib/postgresql/15/bin"
PG_PORT = 54359
HTTP_PORT = 18080
ENV = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "PGTZ": "UTC", "TZ": "UTC",
       "PGHOST": "127.0.0.1", "PGPORT": str(PG_PORT), "PGUSER": "postgres", "PGDATABASE": "bench"}
COMMANDS: list[str] = []


def log(msg: str) -> None:
    print(f"[pcap_app {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(args: list[str], *, env: dict | None = None, check: bool = True, user: str | None = None,
        record: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    if record:
        COMMANDS.append(f"- {record}: `{' '.join(args)}`")
    cmd = ["runuser", "-u", user, "--", *args] if user else args
    return subprocess.run(cmd, env=env or ENV, check=check, capture_output=True, text=True, input=stdin)


class Cluster:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="stallscope-pgapp-")
        shutil.chown(self.dir, "postgres", "postgres")
        self.data = os.path.join(self.dir, "data")
        self.started = False

    def start(self) -> None:
        run([f"{BINDIR}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
             "--locale", "C"], user="postgres")
        key, crt = os.path.join(self.data, "server.key"), os.path.join(self.data, "server.crt")
        run(["openssl", "req", "-new", "-x509", "-days", "2", "-nodes", "-subj", "/CN=localhost",
             "-keyout", key, "-out", crt], user="postgres")
        os.chmod(key, 0o600)
        opts = (f"-p {PG_PORT} -k {self.dir} -c listen_addresses=127.0.0.1 "
                "-c max_connections=50 -c fsync=off -c synchronous_commit=off")
        run([f"{BINDIR}/pg_ctl", "-D", self.data, "-o", opts, "-l", os.path.join(self.dir, "server.log"),
             "-w", "start"], user="postgres")
        self.started = True
        run(["createdb", "bench"])
        run(["pgbench", "-i", "-q", "-s", "2", "bench"])

    def stop(self) -> None:
        if self.started:
            run([f"{BINDIR}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"], user="postgres", check=False)
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)


class Tcpdump:
    def __init__(self, path: str, bpf: str, name: str, *, bulk: bool = False) -> None:
        # a large kernel buffer so a busy machine drops nothing; libpcap hands buffered packets
        # over within its 1 s timeout, so stop() waits longer than that before SIGINT
        cmd = ["tcpdump", "-i", "lo", "-s", "0", "-n", "-B", "262144" if bulk else "65536", "-w", path, bpf]
        COMMANDS.append(f"- `{name}`: `{' '.join(cmd)}`")
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        self.proc.stderr.readline()  # "listening on lo ..."
        time.sleep(0.3)

    def stop(self) -> str:
        time.sleep(2.5)  # let the last packets leave the kernel buffer before SIGINT
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=60)
        stats = " ".join(line.strip() for line in err.splitlines() if "packets" in line)
        COMMANDS.append(f"  - tcpdump said: {stats}")
        log(stats)
        return stats


def capture(name: str, body, bpf: str = f"tcp port {PG_PORT}", attempts: int = 4) -> None:
    """Run ``body`` while tcpdump writes samples/pcap_app/<name>.pcap.gz; again (up to
    ``attempts`` times) when the kernel dropped packets, so the samples are loss-free."""
    raw = os.path.join(tempfile.gettempdir(), name + ".pcap")
    for attempt in range(1, attempts + 1):
        mark = len(COMMANDS)
        dump = Tcpdump(raw, bpf, name + ".pcap.gz")
        try:
            body()
        finally:
            stats = dump.stop()
        dropped = re.search(r"(\d+) packets? dropped by kernel", stats)
        if dropped is None or dropped.group(1) == "0" or attempt == attempts:
            break
        log(f"{name}: kernel dropped packets, capturing again")
        del COMMANDS[mark:]
    with open(raw, "rb") as src, gzip.open(OUT / f"{name}.pcap.gz", "wb", 9) as dst:
        shutil.copyfileobj(src, dst)
    os.unlink(raw)
    log(f"wrote {name}.pcap.gz ({(OUT / f'{name}.pcap.gz').stat().st_size} bytes)")


PIPELINE_SCRIPT = """\\set aid random(1, 100000 * :scale)
\\set delta random(-5000, 5000)
\\startpipeline
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT count(*) FROM pgbench_branches;
\\endpipeline
"""

PSQL_SESSION = """\
SELECT 1 AS one;
SELECT 1/0;
SELECT * FROM no_such_table;
SELEC broken syntax;
BEGIN;
UPDATE pgbench_branches SET bbalance = bbalance + 1 WHERE bid = 1;
SELECT 1/0;
SELECT 2;
ROLLBACK;
DO $$ BEGIN RAISE NOTICE 'hello from a notice'; END $$;
SELECT pg_sleep(0.3);
COPY (SELECT aid, abalance FROM pgbench_accounts WHERE aid <= 2000) TO STDOUT;
CREATE TEMP TABLE t (a int);
COPY t FROM STDIN;
1
2
3
\\.
LISTEN chan;
NOTIFY chan, 'payload';
SELECT aid, bid, abalance, filler FROM pgbench_accounts WHERE aid <= 400;
"""


def pg_samples() -> None:
    for mode in ("simple", "extended", "prepared"):
        def bench(mode: str = mode) -> None:
            run(["pgbench", "-n", "-M", mode, "-c", "2", "-t", "40", "bench"], record=f"pgbench {mode}")
            run(["pgbench", "-n", "-M", mode, "-C", "-c", "2", "-t", "15", "bench"], record=f"pgbench {mode} -C")
        capture(f"pgbench_{mode}", bench)
    script = os.path.join(tempfile.gettempdir(), "pipeline.sql")
    Path(script).write_text(PIPELINE_SCRIPT)
    capture("pgbench_pipeline", lambda: run(
        ["pgbench", "-n", "-M", "extended", "-c", "2", "-t", "40", "-f", script, "bench"],
        record="pgbench pipeline (script with \\startpipeline/\\endpipeline)"))
    os.unlink(script)

    def errors() -> None:
        proc = run(["psql", "-X", "-v", "ON_ERROR_STOP=0", "-f", "-", "bench"], stdin=PSQL_SESSION,
                   record="psql session (errors 22012/42P01/42601/25P02, multi-statement, COPY, NOTICE)")
        assert "division by zero" in proc.stderr, proc.stderr
        # psql -c sends its string as one Query message: several CommandComplete, one ReadyForQuery
        run(["psql", "-X", "-c", "SELECT 1; SELECT 2; SELECT 3", "bench"], record="psql multi-statement query")
    capture("psql_errors", errors)
    run(["psql", "-X", "-c", "ALTER SYSTEM SET ssl = on", "bench"], record="enable TLS (reload)")
    run(["psql", "-X", "-c", "SELECT pg_reload_conf()", "bench"])
    time.sleep(1)

    def tls() -> None:
        run(["psql", "-X", "-c", "SELECT 42", "bench"], env={**ENV, "PGSSLMODE": "require"},
            record="psql sslmode=require")
        run(["psql", "-X", "-c", "SELECT 43", "bench"], env={**ENV, "PGSSLMODE": "disable"},
            record="psql sslmode=disable")
    capture("psql_ssl", tls)


def big_capture(path: str, megabytes: int) -> None:
    """pgbench over loopback until tcpdump's file reaches ``megabytes``."""
    dump = Tcpdump(path, f"tcp port {PG_PORT}", os.path.basename(path), bulk=True)
    procs = []
    try:
        for mode, extra in (("simple", []), ("extended", []), ("prepared", []), ("simple", ["-C"])):
            procs.append(subprocess.Popen(["pgbench", "-n", "-M", mode, *extra, "-c", "1", "-T", "3600", "bench"],
                                          env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        while os.path.getsize(path) < megabytes << 20:
            time.sleep(2)
    finally:
        for p in procs:
            p.terminate()  # pgbench -T ignores SIGINT until its duration ends
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        dump.stop()
    log(f"wrote {path} ({os.path.getsize(path)} bytes)")


# -- HTTP/1.1 ----------------------------------------------------------------------------

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if status not in (204, 304) and self.command != "HEAD" or self.command == "HEAD":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        if path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(5):
                part = f"chunk {i} ".encode() * (i + 1)
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                self.wfile.flush()
                time.sleep(0.02)
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/slow":
            time.sleep(0.25)
            self._send(200, b"slow\n")
        elif path == "/empty":
            self._send(204, b"")
        elif path == "/cached":
            self._send(304, b"")
        elif path == "/boom":
            self._send(500, b"internal error\n")
        elif path == "/big":
            self._send(200, b"x" * 200_000)
        elif path.startswith("/item"):
            self._send(200, b'{"ok": true}\n', {"Content-Type": "application/json"})
        else:
            self._send(404, b"not found\n")

    do_HEAD = do_GET  # noqa: N815

    def do_POST(self) -> None:  # noqa: N802
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        self._send(201, b"got " + str(len(body)).encode() + b"\n")


def http_client() -> None:
    def exchange(raw: bytes, expect_responses: int, *, pause: float = 0.0) -> None:
        s = socket.create_connection(("127.0.0.1", HTTP_PORT))
        s.sendall(raw)
        buf = b""
        s.settimeout(5)
        while buf.count(b"HTTP/1.1 ") < expect_responses or not buf.endswith((b"\n", b"\r\n\r\n")):
            part = s.recv(65536)
            if not part:
                break
            buf += part
            if pause:
                time.sleep(pause)
        time.sleep(0.05)
        s.close()

    host = f"Host: 127.0.0.1:{HTTP_PORT}\r\n"
    # keep-alive: several requests, one connection, one after the other
    s = socket.create_connection(("127.0.0.1", HTTP_PORT))
    f = s.makefile("rb")
    for path in ("/item/1?x=1", "/item/2", "/chunked", "/slow", "/empty", "/cached", "/boom", "/missing",
                 "/big", "/item/3"):
        s.sendall(f"GET {path} HTTP/1.1\r\n{host}\r\n".encode())
        status = f.readline()
        headers = {}
        while (line := f.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode().partition(":")
            headers[k.strip().lower()] = v.strip()
        code = int(status.split()[1])
        if headers.get("transfer-encoding") == "chunked":
            while True:
                size = int(f.readline().strip(), 16)
                f.read(size + 2)
                if size == 0:
                    break
        elif code not in (204, 304):
            f.read(int(headers.get("content-length", "0")))
    s.sendall(f"HEAD /item/4 HTTP/1.1\r\n{host}\r\n".encode())
    while f.readline() not in (b"\r\n", b""):
        pass
    s.close()
    # pipelining: three requests in one segment
    exchange((f"GET /item/10 HTTP/1.1\r\n{host}\r\n" + f"GET /chunked HTTP/1.1\r\n{host}\r\n"
              + f"GET /item/11 HTTP/1.1\r\n{host}Connection: close\r\n\r\n").encode(), 3)
    # Expect: 100-continue, body sent after the interim response
    s = socket.create_connection(("127.0.0.1", HTTP_PORT))
    body = b"a=1&b=2" * 100
    s.sendall(f"POST /upload HTTP/1.1\r\n{host}Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n".encode())
    s.settimeout(5)
    first = s.recv(4096)
    assert first.startswith(b"HTTP/1.1 100"), first
    s.sendall(body)
    s.recv(4096)
    s.close()
    # a POST with a body in the request, Connection: close
    exchange(f"POST /form HTTP/1.1\r\n{host}Content-Length: 11\r\nConnection: close\r\n\r\nhello world".encode(), 1)


def http_samples() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", HTTP_PORT), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        COMMANDS.append(f"- http server: python3 http.server.ThreadingHTTPServer, HTTP/1.1, 127.0.0.1:{HTTP_PORT} "
                        "(handler in this script); client: raw sockets (keep-alive sequence, pipelined "
                        "triple, Expect: 100-continue, POST)")
        capture("http_keepalive", http_client, f"tcp port {HTTP_PORT}")
    finally:
        server.shutdown()
        server.server_close()


def write_provenance() -> None:
    versions = {
        "tcpdump": run(["tcpdump", "--version"]).stdout.splitlines()[0],
        "postgres": run([f"{BINDIR}/postgres", "--version"]).stdout.strip(),
        "pgbench": run(["pgbench", "--version"]).stdout.strip(),
        "python": sys.version.split()[0],
    }
    text = ["# samples/pcap_app — provenance", "",
            f"Produced by `python3 samples/generate/pcap_app_samples.py` on {time.strftime('%Y-%m-%d')} "
            f"({os.uname().sysname} {os.uname().release}; {'; '.join(versions.values())}; LC_ALL=C.UTF-8).", "",
            f"All traffic is loopback (`-i lo`, Ethernet link type). PostgreSQL 15 private cluster on "
            f"127.0.0.1:{PG_PORT} (TLS off while the plain captures run, so libpq's default sslmode=prefer "
            f"sends SSLRequest and the server answers `N`; then TLS is switched on with a throw-away "
            f"self-signed certificate for psql_ssl, where `S` is answered and the session is encrypted). HTTP/1.1 server: python http.server on 127.0.0.1:{HTTP_PORT}.", "",
            "Decode with `tshark -d tcp.port==54359,pgsql -d tcp.port==18080,http`.", "",
            "`pgbench_extended_kernel_drops.pcap.gz` is not rewritten by this script: it is the output of an "
            "earlier run of it (same commands as `pgbench_extended`: `pgbench -n -M extended -c 2 -t 40` then "
            "`-C -c 2 -t 15`) in which tcpdump ran with `-U --immediate-mode` on a loaded machine and the "
            "kernel dropped packets (tshark: `tcp.analysis.lost_segment` on both directions). It is kept as a "
            "real capture with gaps, for the resynchronisation tests.", "",
            "## Commands (in capture order)", "", *COMMANDS, ""]
    (OUT / "PROVENANCE.md").write_text("\n".join(text))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big", help="write a large all-PostgreSQL capture to this path instead")
    parser.add_argument("--mb", type=int, default=550)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root (tcpdump on lo, initdb as the postgres user)")
    OUT.mkdir(exist_ok=True)
    cluster = Cluster()
    try:
        cluster.start()
        if args.big:
            big_capture(args.big, args.mb)
            return
        pg_samples()
        http_samples()
        write_provenance()
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
