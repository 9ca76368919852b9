#!/usr/bin/env python3
"""Produce a real incident bundle on this machine (Debian 12, run as root).

Starts a private PostgreSQL cluster, the shop API (service.py) and the load generator
(loadgen.py), runs the real collectors (thread monitor loop, iostat, pidstat,
pg_stat_statements / pg_stat_activity snapshots, tcpdump), injects the selected faults
on a schedule with quiet baselines between them, and writes the artifacts plus
expected.json and PROVENANCE.md into --out.

    python3 samples/generate/make_bundle.py --name demo --seed 1 --faults all --out samples/bundles/demo

Everything started here is stopped again on exit, Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import gzip
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

GENERATOR_VERSION = "1.2"
HERE = os.path.dirname(os.path.abspath(__file__))
APT_PACKAGES = {
    "psql": "postgresql",
    "iostat": "sysstat",
    "pidstat": "sysstat",
    "tcpdump": "tcpdump",
    "ip": "iproute2",
    "tc": "iproute2",
    "chrt": "util-linux",
}
PIP_PACKAGES = {"asyncpg": "asyncpg", "uvicorn": "uvicorn", "starlette": "starlette", "httpx": "httpx"}

# name -> (finding key, seconds of fault traffic, seconds the effect may outlast it)
FAULTS = {
    "blocking": ("event_loop_blocked", 15, 3),
    "slow_query": ("slow_query", 20, 3),
    "disk": ("disk_saturation", 15, 1),
    "threads": ("thread_exhaustion", 20, 12),
    "resets": ("connection_resets", 10, 1),
    "netloss": ("network_retransmissions", 20, 2),
    "pool": ("db_pool_exhaustion", 12, 5),
    "backlog": ("syn_backlog_overflow", 8, 8),
    "fdlimit": ("kernel_limit", 10, 2),
}
DEFAULT_ORDER = [
    "blocking",
    "slow_query",
    "disk",
    "resets",
    "netloss",
    "threads",
    "pool",
    "backlog",
    "fdlimit",
]
# The namespace link for `netloss`: private addresses on a veth pair created (and removed) here.
NET_HOST_IP, NET_PEER_IP, NET_PREFIX = "10.213.0.1", "10.213.0.2", 30
# A tight token bucket on the server->client side of the link: bursts overflow it and drop.
NETLOSS_QDISC = ["tbf", "rate", "6mbit", "burst", "8kb", "latency", "4ms"]

PGSS_SNAPSHOT_SQL = (
    "COPY (SELECT now() AS snapshot_time, * FROM pg_stat_statements) TO STDOUT WITH CSV HEADER"
)
PGSA_SNAPSHOT_SQL = (
    "COPY (SELECT now() AS snapshot_time, pid, datname, usename, application_name, client_addr, "
    "client_port, backend_start, xact_start, query_start, state_change, wait_event_type, wait_event, "
    "state, backend_type, left(query, 300) AS query FROM pg_stat_activity) TO STDOUT WITH CSV HEADER"
)
PGSS_FINAL_SQL = (
    "SELECT queryid, calls, round(total_exec_time::numeric, 3) AS total_exec_time, "
    "round(mean_exec_time::numeric, 3) AS mean_exec_time, round(max_exec_time::numeric, 3) AS max_exec_time, "
    "rows, shared_blks_hit, shared_blks_read, round(blk_read_time::numeric, 3) AS blk_read_time, query "
    "FROM pg_stat_statements ORDER BY total_exec_time DESC"
)


def log(msg: str) -> None:
    print(f"[make_bundle {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def iso_utc(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def run(cmd, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    kw.setdefault("text", True)
    return subprocess.run(cmd, **kw)


def out_of(cmd, env=None) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable: {exc}"


# ---------------------------------------------------------------- dependencies


def ensure_dependencies() -> None:
    missing_apt = sorted({pkg for tool, pkg in APT_PACKAGES.items() if shutil.which(tool) is None})
    if not glob.glob("/usr/lib/postgresql/*/lib/pg_stat_statements.so"):
        missing_apt += ["postgresql", "postgresql-contrib"]
    if missing_apt:
        log(f"apt-get install {' '.join(sorted(set(missing_apt)))}")
        run(
            ["apt-get", "install", "-y", *sorted(set(missing_apt))],
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
    missing_pip = []
    for module, pkg in PIP_PACKAGES.items():
        try:
            __import__(module)
        except ImportError:
            missing_pip.append(pkg)
    if missing_pip:
        log(f"pip install {' '.join(missing_pip)}")
        run([sys.executable, "-m", "pip", "install", *missing_pip])


def pg_bindir() -> str:
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    if not dirs:
        raise SystemExit("PostgreSQL server binaries not found under /usr/lib/postgresql")
    return dirs[-1]


def root_device(path: str) -> str:
    """Whole-disk kernel name backing `path` (what iostat prints), e.g. vda."""
    source = out_of(["findmnt", "-n", "-o", "SOURCE", "--target", path]).splitlines()[0]
    name = os.path.basename(source)
    parent = out_of(["lsblk", "-n", "-o", "PKNAME", source]).strip()
    return parent.splitlines()[0] if parent and not parent.startswith("unavailable") else name


# ---------------------------------------------------------------- processes


class Processes:
    """Every child runs in its own session; stop() ends each group by its id."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen, int]] = []

    def start(
        self, name, cmd, *, stdout=None, env=None, stop_signal=signal.SIGTERM, **kw
    ) -> subprocess.Popen:
        kw.setdefault("stderr", subprocess.DEVNULL if stdout is not None else None)
        proc = subprocess.Popen(cmd, stdout=stdout, env=env, start_new_session=True, **kw)
        self.procs.append((name, proc, stop_signal))
        return proc

    def stop(self, name: str | None = None, timeout: float = 8.0) -> None:
        for entry in list(reversed(self.procs)):
            pname, proc, sig = entry
            if name is not None and pname != name:
                continue
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, sig)
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
                except ProcessLookupError:
                    pass
            self.procs.remove(entry)


class NamespaceLink:
    """A network namespace holding remote clients, joined to the host by a veth pair."""

    def __init__(self) -> None:
        tag = os.getpid() % 100000
        self.ns = f"stallscope{tag}"
        self.host_if = f"ssh{tag}"
        self.peer_if = f"ssp{tag}"
        self.created = False
        self.shaped = False

    def setup(self) -> None:
        if NET_HOST_IP in out_of(["ip", "-4", "addr"]):
            raise SystemExit(f"{NET_HOST_IP} is already configured on this host")
        run(["ip", "netns", "add", self.ns])
        self.created = True
        run(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if])
        run(["ip", "link", "set", self.peer_if, "netns", self.ns])
        run(["ip", "addr", "add", f"{NET_HOST_IP}/{NET_PREFIX}", "dev", self.host_if])
        run(["ip", "link", "set", self.host_if, "up"])
        run(["ip", "-n", self.ns, "addr", "add", f"{NET_PEER_IP}/{NET_PREFIX}", "dev", self.peer_if])
        run(["ip", "-n", self.ns, "link", "set", self.peer_if, "up"])
        run(["ip", "-n", self.ns, "link", "set", "lo", "up"])

    def shape(self, on: bool) -> None:
        if on:
            run(["tc", "qdisc", "add", "dev", self.host_if, "root", *NETLOSS_QDISC])
        else:
            run(["tc", "qdisc", "del", "dev", self.host_if, "root"], check=False, stderr=subprocess.DEVNULL)
        self.shaped = on

    def teardown(self) -> None:
        if self.shaped:
            self.shape(False)
        if self.created:
            run(["ip", "link", "del", self.host_if], check=False, stderr=subprocess.DEVNULL)
            run(["ip", "netns", "del", self.ns], check=False, stderr=subprocess.DEVNULL)
            self.created = False


class Postgres:
    def __init__(self, workdir: str, port: int, env: dict) -> None:
        self.bindir = pg_bindir()
        self.datadir = os.path.join(workdir, "pgdata")
        self.logfile = os.path.join(workdir, "postgres.log")
        self.sockdir = os.path.join(workdir, "pgsock")
        self.port = port
        self.env = env
        self.started = False

    def as_postgres(self, args, **kw):
        return run(["runuser", "-u", "postgres", "--", *args], env=self.env, **kw)

    def start(self) -> None:
        os.makedirs(self.datadir, mode=0o700)
        os.makedirs(self.sockdir, mode=0o755)
        for d in (self.datadir, self.sockdir):
            shutil.chown(d, "postgres", "postgres")
        open(self.logfile, "w").close()
        shutil.chown(self.logfile, "postgres", "postgres")
        self.as_postgres(
            [
                f"{self.bindir}/initdb",
                "-D",
                self.datadir,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale",
                "C",
            ],
            stdout=subprocess.DEVNULL,
        )
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as conf:
            conf.write(
                "\n# stallscope sample generator\n"
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.sockdir}'\n"
                "max_connections = 60\n"
                "shared_preload_libraries = 'pg_stat_statements'\n"
                "pg_stat_statements.track = all\n"
                "track_io_timing = on\n"
                "shared_buffers = 256MB\n"
            )
        try:
            self.as_postgres(
                [f"{self.bindir}/pg_ctl", "-D", self.datadir, "-l", self.logfile, "-w", "start"],
                stdout=subprocess.DEVNULL,
            )
        except subprocess.CalledProcessError:
            sys.stderr.write(open(self.logfile).read()[-2000:])
            raise
        self.started = True

    def stop(self) -> None:
        if self.started:
            self.as_postgres(
                [f"{self.bindir}/pg_ctl", "-D", self.datadir, "-m", "fast", "-w", "stop"],
                check=False,
                stdout=subprocess.DEVNULL,
            )
            self.started = False

    def psql_cmd(self, db: str = "shop") -> list[str]:
        return [
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            db,
        ]

    def sql(self, sql: str, db: str = "shop") -> str:
        r = run([*self.psql_cmd(db), "-At", "-c", sql], capture_output=True, env=self.env, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"psql failed: {r.stderr.strip()}")
        return r.stdout.strip()

    def version(self) -> str:
        return out_of([f"{self.bindir}/postgres", "--version"])


def load_data(pg: Postgres, rows: int, seed: int) -> None:
    pg.sql("CREATE DATABASE shop", db="postgres")
    pg.sql("CREATE EXTENSION pg_stat_statements")
    pg.sql(
        f"SELECT setseed({(seed % 1000) / 1000.0});"
        "CREATE TABLE items (id bigint PRIMARY KEY, sku text NOT NULL, name text NOT NULL, "
        "category int NOT NULL, price numeric(10,2) NOT NULL, created_at timestamptz NOT NULL, note text NOT NULL);"
        "INSERT INTO items SELECT i, 'SKU-' || lpad(i::text, 8, '0'), 'item ' || i, 1 + (i % 50), "
        "round((random() * 1000)::numeric, 2), now() - make_interval(secs => i), "
        f"md5(i::text) || md5((i * 7)::text) FROM generate_series(1, {rows}) AS i;"
        "CREATE INDEX items_category_price ON items (category, price);"
        "CREATE INDEX items_created_at ON items (created_at);"
    )
    pg.sql("VACUUM ANALYZE items")
    # Warm the cache once so that the report's cost is CPU, not a first cold read.
    pg.sql("SELECT count(*) FROM items WHERE note LIKE '%zz%'")
    pg.sql("SELECT pg_stat_statements_reset()")


# ---------------------------------------------------------------- collectors


def start_collectors(procs: Processes, pg: Postgres, out: str, work: str, app_port: int, env: dict) -> dict:
    """System-wide collectors (before the app starts). Returns the command lines used."""
    cmds = {}
    pcap = os.path.join(work, "capture.pcap")
    cmds["tcpdump"] = [
        "tcpdump",
        "-i",
        "lo",
        "-s",
        "0",
        "-n",
        "-Z",
        "root",
        "-w",
        pcap,
        f"tcp port {app_port} or tcp port {pg.port}",
    ]
    procs.start("tcpdump", cmds["tcpdump"], stdout=subprocess.DEVNULL, env=env, stop_signal=signal.SIGINT)
    for name, cmd, file, extra in (
        ("iostat_text", ["iostat", "-xz", "-t", "1"], "iostat.txt", {}),
        ("iostat_json", ["iostat", "-x", "-t", "-o", "JSON", "1"], "iostat.json", {"S_TIME_FORMAT": "ISO"}),
        ("pidstat", ["pidstat", "-u", "-d", "1"], "pidstat.txt", {}),
    ):
        cmds[name] = cmd
        procs.start(
            name,
            cmd,
            stdout=open(os.path.join(out, file), "w"),
            env={**env, **extra},
            stop_signal=signal.SIGINT,
        )
    psql = " ".join(shlex.quote(a) for a in pg.psql_cmd())
    for name, sql, file, period in (
        ("pgss_loop", PGSS_SNAPSHOT_SQL, "pgss_snapshots.csv", 10),
        ("pgsa_loop", PGSA_SNAPSHOT_SQL, "pgsa_snapshots.csv", 5),
    ):
        cmds[name] = (
            f"while :; do {psql} -c {shlex.quote(sql)} >> {shlex.quote(os.path.join(out, file))}; "
            f"sleep $(({period} - $(date +%s) % {period})); done"
        )
        procs.start(name, ["bash", "-c", cmds[name]], stdout=subprocess.DEVNULL, env=env)
    return cmds


def start_process_collectors(procs: Processes, pid: int, out: str, env: dict) -> dict:
    cmds = {}
    cmds["thread_monitor"] = (
        f"PID={pid}; while :; do "
        "echo \"$(date '+%F %T') - PID: $PID, Threads: $(ps -T -p $PID | wc -l)\"; sleep 1; done"
    )
    procs.start(
        "thread_monitor",
        ["bash", "-c", cmds["thread_monitor"]],
        stdout=open(os.path.join(out, "threads.log"), "w"),
        env=env,
    )
    cmds["pidstat_threads"] = ["pidstat", "-h", "-u", "-r", "-d", "-w", "-t", "-p", str(pid), "1"]
    procs.start(
        "pidstat_threads",
        cmds["pidstat_threads"],
        stdout=open(os.path.join(out, "pidstat_threads.txt"), "w"),
        env=env,
        stop_signal=signal.SIGINT,
    )
    return cmds


# ---------------------------------------------------------------- faults


def disk_burst(work: str, duration: float, env: dict) -> str:
    """Backup-like direct writes plus an fsync-heavy journal, for `duration` seconds."""
    d = shlex.quote(work)
    return (
        f"end=$((SECONDS+{int(duration)})); "
        "for w in 1 2 3 4 5 6 7 8; do (while [ $SECONDS -lt $end ]; do "
        f"dd if=/dev/zero of={d}/backup.$w bs=4M count=32 oflag=direct conv=notrunc status=none; done) & done; "
        "(while [ $SECONDS -lt $end ]; do "
        f"dd if=/dev/zero of={d}/journal bs=4k count=256 oflag=dsync conv=notrunc status=none; done) & "
        "wait"
    )


def build_schedule(
    order: list[str], warmup: float, gap: float, params: dict | None = None
) -> tuple[list[dict], float]:
    schedule, t = [], warmup
    for name in order:
        _, duration, linger = FAULTS[name]
        entry = {"name": name, "offset": t, "duration": duration}
        if params and params.get(name):
            entry["params"] = params[name]
        schedule.append(entry)
        t += duration + linger + gap
    return schedule, t


def fault_params(args) -> dict:
    """Fault traffic sized to the service's limits: a reconnect storm several times the listen
    backlog, and idle connections beyond the open-files limit."""
    params = {}
    if "backlog" in args.fault_order:
        if args.backlog > 256:
            raise SystemExit("the backlog fault needs a small listen backlog (--backlog <= 256, e.g. 16)")
        params["backlog"] = {"burst": max(100, args.backlog * 10)}
    if "fdlimit" in args.fault_order:
        if not args.nofile:
            raise SystemExit("the fdlimit fault needs the service's open-files limit (--nofile N)")
        params["fdlimit"] = {"idle": args.nofile + 100}
    return params


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"service did not answer {url} within {timeout}s")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


# ---------------------------------------------------------------- truth


def slow_callback_coro(app_log: str) -> str | None:
    import re

    counts: dict[str, int] = {}
    pattern = re.compile(
        r"Executing <Task .*?coro=<([^>]*?)\(\) (?:running at|done, defined at) ([^>]+?)>.* took \d+\.\d+ seconds$"
    )
    with open(app_log, errors="replace") as fh:
        for line in fh:
            m = pattern.search(line.rstrip("\n"))
            if m:
                key = f"coro:{m.group(1)}@{m.group(2)}"
                counts[key] = counts.get(key, 0) + 1
    return max(counts, key=counts.get) if counts else None


def expected_faults(
    results: dict, host_windows: dict, pg: Postgres, app: dict, device: str, out: str
) -> list[dict]:
    faults = []
    windows = {f["name"]: f for f in results["faults"]}
    windows.update(host_windows)
    for name in sorted(windows, key=lambda n: windows[n]["start"]):
        w = windows[name]
        key, _, linger = FAULTS[name]
        end = w["end"] + (1.0 if name in ("blocking", "disk", "resets", "netloss") else 0.0)
        entry = {"key": key, "start": iso_utc(w["start"]), "end": iso_utc(end)}
        if name == "blocking":
            coro = slow_callback_coro(os.path.join(out, "app.log"))
            entry["root"] = {
                "http": "POST /api/export",
                "function": "time.sleep",
                "coro": coro.split(":", 1)[1].split("@")[0] if coro else None,
                "coro_entity": coro,
                "handler": "service.export",
            }
        elif name == "slow_query":
            row = pg.sql(
                "SELECT queryid || E'\\t' || query FROM pg_stat_statements "
                "WHERE query LIKE '%note LIKE%GROUP BY category%' ORDER BY total_exec_time DESC LIMIT 1"
            )
            queryid, _, query = row.partition("\t")
            entry["root"] = {
                "queryid": queryid,
                "query": query,
                "http": "GET /api/report",
                "concurrency": w.get("concurrency"),
            }
        elif name == "disk":
            entry["root"] = {"device": f"dev:{device}", "writer": "dd oflag=direct / oflag=dsync"}
        elif name == "threads":
            entry["root"] = {
                "executor": "ThreadPoolExecutor",
                "max_workers": app["workers"],
                "pid": app["pid"],
                "thread_name_prefix": "thumbnail",
                "http": "GET /api/thumbnail",
            }
        elif name == "resets":
            entry["root"] = {
                "flow_server": f"endpoint:127.0.0.1:{app['port']}",
                "initiator": "client",
                "connections_reset": w.get("connections_reset"),
            }
        elif name == "pool":
            entry["root"] = {
                "pool": "shop",  # the database whose connections the app's pool holds
                "app_pool": "shop-main",
                "http": "POST /api/checkout",
                "holder": "idle in transaction (payment provider awaited inside the transaction)",
            }
        elif name == "backlog":
            entry["root"] = {
                "flow_server": f"endpoint:127.0.0.1:{app['port']}",
                "backlog": app["backlog"],
            }
        elif name == "fdlimit":
            entry["root"] = {
                "flow_server": f"endpoint:127.0.0.1:{app['port']}",
                "pid": app["pid"],
                "limit": f"RLIMIT_NOFILE {app['nofile']}",
                "app_log_message": "socket.accept() out of system resource ([Errno 24] Too many open files)",
            }
        elif name == "netloss":
            entry["root"] = {
                "flow_server": f"endpoint:{NET_HOST_IP}:{app['port']}",
                "client": NET_PEER_IP,
                "interface": w["interface"],
                "capture": "capture_remote.pcap.gz",
                "http": "GET /api/items",
            }
        entry["injected"] = {k: v for k, v in w.items() if k not in ("name", "start", "end")}
        faults.append(entry)
    return faults


def write_host_facts(out: str, env: dict, tz_name: str) -> None:
    host = os.path.join(out, "host")
    os.makedirs(host, exist_ok=True)
    facts = {
        "uname.txt": ["uname", "-a"],
        "date.txt": ["date"],
        "date_utc_offset.txt": ["date", "+%z"],
        "hostname.txt": ["hostname"],
        "lsblk.txt": ["lsblk"],
        "nproc.txt": ["nproc"],
        "locale.txt": ["locale"],
    }
    for name, cmd in facts.items():
        with open(os.path.join(host, name), "w") as fh:
            fh.write(out_of(cmd, env=env) + "\n")
    with open(os.path.join(host, "timezone"), "w") as fh:
        fh.write(tz_name + "\n")
    if shutil.which("timedatectl"):
        text = out_of(["timedatectl"], env=env)
        if "Local time" in text:
            with open(os.path.join(host, "timedatectl.txt"), "w") as fh:
                fh.write(text + "\n")


def system_tz() -> str:
    try:
        return open("/etc/timezone").read().strip()
    except OSError:
        link = os.path.realpath("/etc/localtime")
        return link.split("zoneinfo/")[-1] if "zoneinfo/" in link else "UTC"


def write_provenance(out: str, args, argv: list[str], meta: dict, cmds: dict, schedule: list[dict]) -> None:
    lines = [
        f"# Provenance of bundle `{args.name}`",
        "",
        f"Generated on {meta['generated_at']} on host `{meta['hostname']}` by",
        "",
        "```",
        "python3 " + " ".join(shlex.quote(a) for a in argv),
        "```",
        "",
        f"Generator version {GENERATOR_VERSION}; run time {meta['run_seconds']:.0f} s; seed {args.seed}; "
        f"faults {', '.join(args.fault_order) or 'none'}.",
        "",
        "## Environment",
        "",
        f"- kernel: `{meta['uname']}`",
        f"- python: {meta['python']}; asyncpg {meta['versions']['asyncpg']}, uvicorn {meta['versions']['uvicorn']}, "
        f"starlette {meta['versions']['starlette']}, httpx {meta['versions']['httpx']}",
        f"- PostgreSQL: {meta['postgres']} (private cluster on 127.0.0.1:{meta['ports']['postgres']}, "
        "pg_stat_statements, track_io_timing=on, pg_stat_statements.track=all)",
        f"- sysstat: {meta['sysstat']}; tcpdump: {meta['tcpdump']}",
        f"- collectors ran with LC_ALL=C, TZ={meta['timezone']} (host/timezone); app log times are local time in that zone",
        f"- disk for the I/O burst: `{meta['disk_device']}`",
        f"- everything started by the generator ran at nice {meta['nice']}, the service under "
        f"{meta['service_sched']} (the machine was shared with other work)",
        f"- table `items`: {meta['rows']} rows; indexes on (category, price) and (created_at); `note` is not "
        "indexed (the report is cheap over its default 15-minute window, a full scan over all time)",
        f"- service: pid {meta['app_pid']} on 127.0.0.1:{meta['ports']['app']}, asyncio debug on, "
        f"slow_callback_duration=0.1, asyncpg pool '{meta['pool']['name']}' max_size={meta['pool']['max_size']}, "
        f"ThreadPoolExecutor(max_workers={meta['executor_max_workers']}), listen backlog {meta['backlog']}, "
        f"open-files limit {meta['nofile']}, pool acquire timeout 2 s",
        f"- load: ~{args.rate} req/s steady mix; requests sent {meta['load']['sent']}, ok {meta['load']['ok']}, "
        f"failed {meta['load']['failed']}",
        "",
        "## Collector command lines",
        "",
    ]
    for name, cmd in cmds.items():
        text = cmd if isinstance(cmd, str) else " ".join(shlex.quote(c) for c in cmd)
        lines.append(f"- `{name}`: `{text}`")
    lines += [
        "- `pgss_final.txt`: `psql -c " + shlex.quote(PGSS_FINAL_SQL) + "` after the load stopped",
        "- `capture.pcap.gz`: the tcpdump file, gzip-compressed after capture "
        f"(PostgreSQL runs on port {meta['ports']['postgres']}: decode with "
        f"`tshark -d tcp.port=={meta['ports']['postgres']},pgsql -d tcp.port=={meta['ports']['app']},http`)",
    ]
    if meta.get("namespace_link"):
        nl = meta["namespace_link"]
        lines.append(
            f"- `capture_remote.pcap.gz`: tcpdump on `{nl['interface']}`, the host end of a veth pair whose peer "
            f"({nl['client']}) sits in a private network namespace with remote clients; the service also "
            f"listens on {nl['server']}:{meta['ports']['app']}"
        )
    lines += [
        "",
        "## Fault schedule (offsets from the start of the load)",
        "",
    ]
    if not schedule:
        lines.append("No faults: a quiet baseline.")
    for f in schedule:
        lines.append(f"- {f['name']}: +{f['offset']:.0f} s for {f['duration']} s ({FAULTS[f['name']][0]})")
    lines += ["", "Real injected windows (UTC) are in `expected.json`.", ""]
    with open(os.path.join(out, "PROVENANCE.md"), "w") as fh:
        fh.write("\n".join(lines))


# ---------------------------------------------------------------- main


def parse_faults(text: str) -> list[str]:
    if text == "all":
        return list(DEFAULT_ORDER)
    if text in ("none", ""):
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        raise SystemExit(f"unknown fault(s) {unknown}; choose from {sorted(FAULTS)} or 'all'/'none'")
    return names


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--faults", default="all", help=f"comma list of {','.join(DEFAULT_ORDER)}, or all, or none"
    )
    p.add_argument("--out", required=True)
    p.add_argument("--rate", type=float, default=12.0, help="steady requests per second")
    p.add_argument("--warmup", type=float, default=25.0, help="quiet seconds before the first fault")
    p.add_argument("--gap", type=float, default=22.0, help="quiet seconds between faults")
    p.add_argument("--tail", type=float, default=20.0, help="quiet seconds after the last fault")
    p.add_argument("--duration", type=float, help="total load seconds (default: from the schedule)")
    p.add_argument("--rows", type=int, default=1_500_000)
    p.add_argument("--pg-port", type=int, default=54329)
    p.add_argument("--app-port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=128, help="thumbnail ThreadPoolExecutor max_workers")
    p.add_argument(
        "--backlog", type=int, default=2048, help="the service's listen backlog (uvicorn's default)"
    )
    p.add_argument(
        "--nofile", type=int, default=0, help="the service's open-files limit (ulimit -n; 0: inherit)"
    )
    p.add_argument("--tz", help="TZ for the service and collectors (default: the host's zone)")
    p.add_argument(
        "--nice",
        type=int,
        default=-10,
        help="scheduling priority for everything started here (a busy shared machine otherwise adds "
        "stalls of its own to the bundle)",
    )
    p.add_argument(
        "--service-rr",
        type=int,
        default=10,
        help="run the service under SCHED_RR with this priority (0: normal scheduling); keeps CPU "
        "contention from other work on the machine out of its event loop",
    )
    args = p.parse_args(argv)
    args.fault_order = parse_faults(args.faults)
    if "backlog" in args.fault_order and args.backlog == p.get_default("backlog"):
        args.backlog = 16  # a misconfigured listen backlog is what the storm overflows
    if "fdlimit" in args.fault_order and not args.nofile:
        args.nofile = 1024  # the usual soft `ulimit -n`
    fault_params(args)  # refuse impossible combinations before starting anything
    if os.geteuid() != 0:
        raise SystemExit("run as root (initdb via runuser, tcpdump, iostat on the host disk)")

    ensure_dependencies()
    os.setpriority(os.PRIO_PROCESS, 0, args.nice)  # inherited by every child
    import asyncpg  # versions for the metadata
    import httpx
    import starlette
    import uvicorn

    out = os.path.abspath(args.out)
    if os.path.exists(out):
        if os.listdir(out) and not os.path.exists(os.path.join(out, "expected.json")):
            raise SystemExit(f"{out} exists and is not a bundle; refusing to overwrite")
        shutil.rmtree(out)
    os.makedirs(out)
    for port in (args.pg_port, args.app_port):
        if not port_free(port):
            raise SystemExit(f"port {port} on 127.0.0.1 is in use")

    tz_name = args.tz or system_tz()
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    if args.tz:
        env["TZ"] = args.tz
    env.pop("S_TIME_FORMAT", None)
    env.pop("S_COLORS", None)

    work = tempfile.mkdtemp(prefix="stallscope-gen-")
    os.chmod(work, 0o755)
    procs = Processes()
    link: NamespaceLink | None = None
    complete = False
    pg = Postgres(work, args.pg_port, env)
    started = time.time()

    def on_term(signum, frame):
        log(f"signal {signum}: stopping everything that was started")
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started from a shell that ignores SIGINT
    try:
        log(f"initdb + start PostgreSQL on 127.0.0.1:{args.pg_port} ({work})")
        pg.start()
        log(f"loading {args.rows} rows")
        load_data(pg, args.rows, args.seed)
        device = root_device(work)
        if "netloss" in args.fault_order:
            link = NamespaceLink()
            link.setup()
        cmds = start_collectors(procs, pg, out, work, args.app_port, env)
        if link:
            cmds["tcpdump_remote"] = [
                "tcpdump", "-i", link.host_if, "-s", "0", "-n", "-Z", "root",
                "-w", os.path.join(work, "capture_remote.pcap"), f"tcp port {args.app_port}",
            ]  # fmt: skip
            procs.start("tcpdump_remote", cmds["tcpdump_remote"], stdout=subprocess.DEVNULL, env=env,
                        stop_signal=signal.SIGINT)  # fmt: skip
        time.sleep(1.5)

        app_env = {**env, "PYTHONASYNCIODEBUG": "1", "PYTHONUNBUFFERED": "1"}
        app_cmd = [
            sys.executable,
            os.path.join(HERE, "service.py"),
            "--dsn",
            f"postgresql://postgres@127.0.0.1:{args.pg_port}/shop",
            "--port",
            str(args.app_port),
            "--log",
            os.path.join(out, "app.log"),
            "--workers",
            str(args.workers),
            "--pool-max",
            "10",
            "--backlog",
            str(args.backlog),
        ]
        if args.nofile:
            app_cmd += ["--nofile", str(args.nofile)]
        if link:
            app_cmd += ["--extra-host", NET_HOST_IP]
        if args.service_rr > 0:
            app_cmd = ["chrt", "--rr", str(args.service_rr), *app_cmd]
        app_stderr = os.path.join(work, "service.stderr")
        app_proc = procs.start(
            "service", app_cmd, stdout=open(app_stderr, "w"), env=app_env, stderr=subprocess.STDOUT
        )
        cmds["service"] = app_cmd
        try:
            wait_http(f"http://127.0.0.1:{args.app_port}/health")
        except RuntimeError:
            sys.stderr.write(open(app_stderr).read()[-3000:])
            raise
        cmds.update(start_process_collectors(procs, app_proc.pid, out, env))
        log(f"service pid {app_proc.pid} up; collectors running")

        schedule, end_offset = build_schedule(args.fault_order, args.warmup, args.gap, fault_params(args))
        duration = args.duration or (
            end_offset - args.gap + args.tail if schedule else args.warmup + args.tail
        )
        load_schedule = [f for f in schedule if f["name"] not in ("disk", "netloss")]
        with open(os.path.join(work, "schedule.json"), "w") as fh:
            json.dump(load_schedule, fh)
        t0 = time.time() + 2.0
        results_path = os.path.join(work, "loadgen.json")
        load_cmd = [
            sys.executable,
            os.path.join(HERE, "loadgen.py"),
            "--port",
            str(args.app_port),
            "--rate",
            str(args.rate),
            "--rows",
            str(args.rows),
            "--duration",
            str(duration),
            "--seed",
            str(args.seed),
            "--schedule",
            os.path.join(work, "schedule.json"),
            "--t0",
            str(t0),
            "--out",
            results_path,
        ]
        load_proc = procs.start("loadgen", load_cmd, env=env)
        cmds["loadgen"] = load_cmd
        log(
            f"load for {duration:.0f}s; schedule: "
            + (", ".join(f"{f['name']}@+{f['offset']:.0f}s" for f in schedule) or "no faults")
        )

        host_windows: dict = {}
        host_jobs: list[threading.Thread] = []
        disk = next((f for f in schedule if f["name"] == "disk"), None)
        if disk:

            def disk_job():
                time.sleep(max(0.0, t0 + disk["offset"] - time.time()))
                start = time.time()
                procs.start(
                    "disk_burst", ["bash", "-c", disk_burst(work, disk["duration"], env)], env=env
                ).wait()
                host_windows["disk"] = {"name": "disk", "start": start, "end": time.time()}
                for f in glob.glob(os.path.join(work, "backup.*")) + glob.glob(os.path.join(work, "journal")):
                    os.unlink(f)

            host_jobs.append(threading.Thread(target=disk_job, daemon=True))
            cmds["disk_burst"] = disk_burst(work, disk["duration"], env).replace(work, "$WORKDIR")
        netloss = next((f for f in schedule if f["name"] == "netloss"), None)
        if link and netloss:
            remote_cmd = [
                "ip", "netns", "exec", link.ns, sys.executable, os.path.join(HERE, "loadgen.py"),
                "--host", NET_HOST_IP, "--port", str(args.app_port), "--profile", "remote", "--rate", "1.5",
                "--rows", str(args.rows), "--duration", str(duration), "--seed", str(args.seed + 1000),
                "--t0", str(t0), "--out", os.path.join(work, "loadgen_remote.json"),
            ]  # fmt: skip
            procs.start("loadgen_remote", remote_cmd, env=env)
            cmds["loadgen_remote"] = remote_cmd

            def netloss_job():
                time.sleep(max(0.0, t0 + netloss["offset"] - time.time()))
                start = time.time()
                link.shape(True)
                time.sleep(netloss["duration"])
                link.shape(False)
                host_windows["netloss"] = {
                    "name": "netloss", "start": start, "end": time.time(), "interface": link.host_if,
                    "qdisc": " ".join(NETLOSS_QDISC),
                }  # fmt: skip

            host_jobs.append(threading.Thread(target=netloss_job, daemon=True))
            cmds["netloss"] = (
                f"tc qdisc add dev {link.host_if} root {' '.join(NETLOSS_QDISC)}  (removed after {netloss['duration']} s)"
            )
        for job in host_jobs:
            job.start()

        while load_proc.poll() is None:
            time.sleep(1)
            if app_proc.poll() is not None:
                raise RuntimeError("service exited during the run")
        if load_proc.returncode != 0:
            raise RuntimeError(f"load generator failed with exit code {load_proc.returncode}")
        for job in host_jobs:
            job.join(timeout=60)
        time.sleep(3)  # let the last 1 s / 10 s samples land
        results = json.load(open(results_path))

        with open(os.path.join(out, "pgss_final.txt"), "w") as fh:
            run([*pg.psql_cmd(), "-c", PGSS_FINAL_SQL], stdout=fh, env=env)
        for name in (
            "thread_monitor",
            "pidstat_threads",
            "pgss_loop",
            "pgsa_loop",
            "pidstat",
            "iostat_json",
            "iostat_text",
        ):
            procs.stop(name)
        procs.stop("service", timeout=15)
        time.sleep(1)
        procs.stop("loadgen_remote")
        procs.stop("tcpdump")
        procs.stop("tcpdump_remote")
        for name in ("capture", "capture_remote"):
            pcap = os.path.join(work, f"{name}.pcap")
            if not os.path.exists(pcap):
                continue
            with (
                open(pcap, "rb") as src,
                gzip.open(os.path.join(out, f"{name}.pcap.gz"), "wb", compresslevel=9) as dst,
            ):
                shutil.copyfileobj(src, dst)

        write_host_facts(out, env, tz_name)
        versions = {m.__name__: getattr(m, "__version__", "?") for m in (asyncpg, uvicorn, starlette, httpx)}
        meta = {
            "generator": "samples/generate/make_bundle.py",
            "generator_version": GENERATOR_VERSION,
            "name": args.name,
            "seed": args.seed,
            "faults_requested": args.fault_order,
            "generated_at": iso_utc(started),
            "run_seconds": round(time.time() - started, 1),
            "load_start": iso_utc(t0),
            "load_end": iso_utc(t0 + duration),
            "python": platform.python_version(),
            "versions": versions,
            "postgres": pg.version(),
            "sysstat": out_of(["iostat", "-V"]).splitlines()[0],
            "tcpdump": out_of(["tcpdump", "--version"]).splitlines()[0],
            "uname": out_of(["uname", "-a"]),
            "hostname": socket.gethostname(),
            "timezone": tz_name,
            "utc_offset": out_of(["date", "+%z"], env=env),
            "locale": "C",
            "nice": args.nice,
            "service_sched": f"SCHED_RR {args.service_rr}" if args.service_rr > 0 else "SCHED_OTHER",
            "ports": {"app": args.app_port, "postgres": args.pg_port},
            "namespace_link": (
                {"server": NET_HOST_IP, "client": NET_PEER_IP, "interface": link.host_if} if link else None
            ),
            "app_pid": app_proc.pid,
            "disk_device": f"dev:{device}",
            "pool": {"name": "shop-main", "min_size": 4, "max_size": 10},
            "executor_max_workers": args.workers,
            "rows": args.rows,
            "rate": args.rate,
            "backlog": args.backlog,
            "nofile": args.nofile or out_of(["bash", "-c", "ulimit -n"]),
            "load": {k: results[k] for k in ("sent", "ok", "failed")},
            "schedule": schedule,
        }
        app = {"pid": app_proc.pid, "port": args.app_port, "workers": args.workers, "backlog": args.backlog,
               "nofile": args.nofile}  # fmt: skip
        faults = expected_faults(results, host_windows, pg, app, device, out)
        with open(os.path.join(out, "expected.json"), "w") as fh:
            json.dump({"faults": faults, "meta": meta}, fh, indent=2)
            fh.write("\n")
        write_provenance(out, args, ["samples/generate/make_bundle.py", *argv], meta, cmds, schedule)
        log(f"bundle written to {out} in {time.time() - started:.0f}s")
        complete = True
        return 0
    finally:
        if not complete:  # never leave a half-written bundle behind
            shutil.rmtree(out, ignore_errors=True)
        procs.stop()
        if link:
            link.teardown()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
