#!/usr/bin/env python3
"""Regenerate samples/pg_stat_statements/ and samples/pg_stat_activity/ from a real PostgreSQL.

Run as root on Debian 12 with ``postgresql postgresql-contrib`` installed::

    python3 samples/generate/pg_samples.py

A private cluster is created in /tmp/pgss_samples_db (port 54339, 127.0.0.1 and a socket in
/tmp only), loaded with ``pgbench -i -s 5``, driven by pgbench plus a few hand-picked queries
(a slow one, a multi-line one, one containing ``|``/``||``), and dumped in every form the
parsers read. The cluster is stopped and removed at the end (also on error).
Files ending in ``handmade_*`` are not produced here (see PROVENANCE.md).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PGSS_DIR = ROOT / "samples" / "pg_stat_statements"
PGSA_DIR = ROOT / "samples" / "pg_stat_activity"
DATADIR = "/tmp/pgss_samples_db"
PORT = 54339
BINDIR = "/usr/lib/postgresql/15/bin"
ENV = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "PGTZ": "UTC", "TZ": "UTC"}

PGSS_COPY = "COPY (SELECT now() AS snapshot_time, * FROM pg_stat_statements) TO STDOUT WITH CSV HEADER"
PGSS_COPY_NOHEADER = "COPY (SELECT now() AS snapshot_time, * FROM pg_stat_statements) TO STDOUT WITH CSV"
PGSS_COLUMNS = (
    "userid, dbid, toplevel, queryid, calls, total_exec_time, mean_exec_time, stddev_exec_time, "
    "rows, shared_blks_hit, shared_blks_read, temp_blks_written, blk_read_time, query"
)
PGSS_SELECT = f"SELECT {PGSS_COLUMNS} FROM pg_stat_statements ORDER BY queryid, toplevel"
PGSS_JSON_AGG = (
    "SELECT json_agg(row_to_json(s)) FROM (SELECT now() AS snapshot_time, * FROM pg_stat_statements) s"
)
PGSS_JSONB_PRETTY = ("SELECT jsonb_pretty(jsonb_agg(to_jsonb(s))) FROM (SELECT now() AS snapshot_time, "
                     "userid, dbid, toplevel, queryid, calls, total_exec_time, mean_exec_time, "
                     "stddev_exec_time, rows, shared_blks_read, query FROM pg_stat_statements) s")
PGSS_JSONL = "SELECT row_to_json(s) FROM (SELECT now() AS snapshot_time, * FROM pg_stat_statements) s"
PGSS_FINAL = (
    "SELECT queryid, calls, round(total_exec_time::numeric, 3) AS total_exec_time, "
    "round(mean_exec_time::numeric, 3) AS mean_exec_time, rows, shared_blks_hit, "
    "shared_blks_read, round(blk_read_time::numeric, 3) AS blk_read_time, query "
    "FROM pg_stat_statements ORDER BY total_exec_time DESC"
)
PGSA_COPY = (
    "COPY (SELECT now() AS snapshot_time, pid, datname, usename, application_name, client_addr, "
    "backend_start, xact_start, query_start, state_change, wait_event_type, wait_event, state, "
    "backend_type, left(query, 200) AS query FROM pg_stat_activity) TO STDOUT WITH CSV HEADER"
)
PGSA_SELECT = (
    "SELECT pid, datname, usename, wait_event_type, wait_event, state, backend_type, "
    "left(query, 120) AS query FROM pg_stat_activity ORDER BY pid"
)

MULTILINE_QUERY = """SELECT b.bid,
       count(*) AS accounts,
       sum(a.abalance) AS balance
FROM pgbench_accounts a
JOIN pgbench_branches b USING (bid)
WHERE a.aid < 20000
GROUP BY b.bid"""
PIPE_QUERY = "SELECT 'acct' || aid::text || '|' || bid::text AS label FROM pgbench_accounts WHERE aid < 50"
SLOW_QUERY = (
    "SELECT count(*) FROM pgbench_accounts a, generate_series(1, 3) g "
    "WHERE a.filler LIKE '%zz%' OR a.abalance > g * 100000"
)
COMMANDS: list[str] = []


def log(msg: str) -> None:
    print(f"[pg_samples {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def as_postgres(args: list[str], **kw) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    return subprocess.run(["runuser", "-u", "postgres", "--", *args], env=ENV, **kw)


def psql_args(db: str = "bench", user: str = "postgres", extra: tuple[str, ...] = ()) -> list[str]:
    return [
        "psql",
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "127.0.0.1",
        "-p",
        str(PORT),
        "-U",
        user,
        "-d",
        db,
        *extra,
    ]


def psql(*args: str, db: str = "bench", user: str = "postgres", env: dict | None = None) -> str:
    cmd = psql_args(db, user, args)
    result = subprocess.run(cmd, env=env or ENV, capture_output=True, text=True, check=True)
    return result.stdout


def record(name: str, cmd: str) -> None:
    COMMANDS.append(f"- `{name}`: {cmd}")


class Cluster:
    def __init__(self) -> None:
        self.started = False

    def start(self) -> None:
        if os.path.exists(DATADIR):
            shutil.rmtree(DATADIR)
        os.makedirs(DATADIR, mode=0o700)
        shutil.chown(DATADIR, "postgres", "postgres")
        as_postgres(
            [
                f"{BINDIR}/initdb",
                "-D",
                DATADIR,
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
        opts = (
            f"-p {PORT} -k /tmp -c listen_addresses=127.0.0.1 "
            "-c shared_preload_libraries=pg_stat_statements -c track_io_timing=on "
            "-c pg_stat_statements.track=all -c deadlock_timeout=60s"
        )
        as_postgres(
            [f"{BINDIR}/pg_ctl", "-D", DATADIR, "-o", opts, "-l", f"{DATADIR}/server.log", "-w", "start"],
            stdout=subprocess.DEVNULL,
        )
        self.started = True

    def stop(self) -> None:
        if self.started:
            as_postgres(
                [f"{BINDIR}/pg_ctl", "-D", DATADIR, "-m", "fast", "-w", "stop"],
                check=False,
                stdout=subprocess.DEVNULL,
            )
            self.started = False
        shutil.rmtree(DATADIR, ignore_errors=True)


class Session:
    """A long-lived psql session fed through stdin (to hold transactions and locks)."""

    def __init__(self, name: str, db: str = "bench") -> None:
        self.proc = subprocess.Popen(
            psql_args(
                db,
                extra=("-q", "-v", "ON_ERROR_STOP=0", "-c", f"SET application_name = '{name}'", "-f", "-"),
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
            env=ENV,
        )

    def send(self, sql: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(sql.rstrip() + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
            self.proc.wait(timeout=20)
        except (subprocess.TimeoutExpired, BrokenPipeError):
            self.proc.kill()
            self.proc.wait()


class Workload:
    """pgbench plus hand-picked queries in the background until stopped."""

    def __init__(self) -> None:
        self.stop_flag = threading.Event()
        self.threads: list[threading.Thread] = []
        self.pgbench: subprocess.Popen | None = None

    def start(self, seconds: int) -> None:
        self.pgbench = subprocess.Popen(
            [
                "pgbench",
                "-h",
                "127.0.0.1",
                "-p",
                str(PORT),
                "-U",
                "postgres",
                "-c",
                "3",
                "-j",
                "1",
                "-R",
                "150",
                "-T",
                str(seconds),
                "-n",
                "bench",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=ENV,
        )
        self.stop_flag.clear()
        self.threads = [threading.Thread(target=self._queries, daemon=True)]
        for t in self.threads:
            t.start()

    def _queries(self) -> None:
        n = 0
        while not self.stop_flag.is_set():
            sqls = [
                MULTILINE_QUERY,
                PIPE_QUERY,
                f"SELECT abalance FROM pgbench_accounts WHERE aid = {n % 500 + 1}",
            ]
            if n % 4 == 0:
                sqls.append(SLOW_QUERY)
            psql("-q", "-c", ";\n".join(sqls) + ";")
            n += 1
            self.stop_flag.wait(0.3)

    def stop(self) -> None:
        self.stop_flag.set()
        for t in self.threads:
            t.join()
        if self.pgbench is not None:
            self.pgbench.wait()


def snapshots(name: str, count: int, every: float, take) -> None:
    with open(PGSS_DIR / name, "w") as fh:
        for i in range(count):
            fh.write(take(i))
            fh.flush()
            if i < count - 1:
                time.sleep(every)


def pgss_samples() -> None:
    log("pg_stat_statements samples")
    work = Workload()
    work.start(40)
    try:
        time.sleep(2)
        snapshots("pgss_copy_header_per_snapshot.csv", 6, 3.0, lambda i: psql("-q", "-c", PGSS_COPY))
        record(
            "pgss_copy_header_per_snapshot.csv",
            f'6 x every 3 s: `psql -c "{PGSS_COPY}" >> file` (a header per snapshot)',
        )
        snapshots(
            "pgss_copy_one_header.csv",
            4,
            3.0,
            lambda i: psql("-q", "-c", PGSS_COPY if i == 0 else PGSS_COPY_NOHEADER),
        )
        record("pgss_copy_one_header.csv", "4 x every 3 s, the first with `CSV HEADER`, the rest `CSV` only")
        snapshots("pgss_aligned_now.txt", 4, 3.0, lambda i: psql("-c", "SELECT now()", "-c", PGSS_SELECT))
        record(
            "pgss_aligned_now.txt",
            f"4 x every 3 s: `psql -c 'SELECT now()' -c \"{PGSS_SELECT}\"` "
            "(psql aligned output, default settings)",
        )
        ny = {**ENV, "PGTZ": "America/New_York", "TZ": "America/New_York"}
        snapshots(
            "pgss_aligned_date_echo.txt",
            3,
            3.0,
            lambda i: (
                subprocess.run(["date", "+=== %F %T %Z ==="], capture_output=True, text=True, env=ny).stdout
                + psql("-c", PGSS_SELECT, env=ny)
            ),
        )
        record(
            "pgss_aligned_date_echo.txt",
            "3 x every 3 s with TZ=America/New_York: "
            "`date '+=== %F %T %Z ==='; psql -c \"" + PGSS_SELECT + '"`',
        )
        snapshots(
            "pgss_expanded.txt",
            3,
            3.0,
            lambda i: psql(
                "-x", "-c", "SELECT now() AS snapshot_time, * FROM pg_stat_statements ORDER BY queryid"
            ),
        )
        record(
            "pgss_expanded.txt",
            "3 x every 3 s: `psql -x -c 'SELECT now() AS snapshot_time, * FROM "
            "pg_stat_statements ORDER BY queryid'`",
        )
        snapshots("pgss_jsonb_pretty_psql.txt", 3, 3.0, lambda i: psql("-c", PGSS_JSONB_PRETTY))
        record("pgss_jsonb_pretty_psql.txt", f'3 x every 3 s: `psql -c "{PGSS_JSONB_PRETTY}"` '
               "(aligned; the pretty JSON's lines wrapped with +)")
        snapshots("pgss_json_agg_tuples.txt", 3, 3.0, lambda i: psql("-t", "-c", PGSS_JSON_AGG))
        record("pgss_json_agg_tuples.txt", f'3 x every 3 s: `psql -t -c "{PGSS_JSON_AGG}"` (tuples only)')
        snapshots("pgss_json_agg.json", 3, 3.0, lambda i: psql("-At", "-c", PGSS_JSON_AGG))
        record("pgss_json_agg.json", f'3 x every 3 s: `psql -At -c "{PGSS_JSON_AGG}"`')
        snapshots("pgss_rows.jsonl", 3, 3.0, lambda i: psql("-At", "-c", PGSS_JSONL))
        record("pgss_rows.jsonl", f'3 x every 3 s: `psql -At -c "{PGSS_JSONL}"` (JSON lines)')
    finally:
        work.stop()
    # a reset between two snapshots
    work.start(12)
    try:
        time.sleep(2)
        with open(PGSS_DIR / "pgss_reset_pair.csv", "w") as fh:
            fh.write(psql("-q", "-c", PGSS_COPY))
            time.sleep(3)
            fh.write(psql("-q", "-c", PGSS_COPY))
            psql("-q", "-c", "SELECT pg_stat_statements_reset()")
            time.sleep(3)
            fh.write(psql("-q", "-c", PGSS_COPY))
            time.sleep(3)
            fh.write(psql("-q", "-c", PGSS_COPY))
        record(
            "pgss_reset_pair.csv",
            "4 COPY snapshots 3 s apart; `SELECT pg_stat_statements_reset()` right after the second",
        )
        psql("-q", "-c", "CREATE ROLE reporter LOGIN")
        psql("-At", "-c", "SELECT count(*) FROM pg_class", user="reporter")
        with open(PGSS_DIR / "pgss_insufficient_privilege.csv", "w") as fh:
            fh.write(psql("-q", "-c", PGSS_COPY, user="reporter"))
            time.sleep(3)
            psql("-At", "-c", "SELECT relname FROM pg_class WHERE oid = 1259", user="reporter")
            fh.write(psql("-q", "-c", PGSS_COPY, user="reporter"))
        record(
            "pgss_insufficient_privilege.csv",
            "2 COPY snapshots as the non-superuser role `reporter` "
            "(no pg_read_all_stats): other users' rows show "
            "`<insufficient privilege>`",
        )
    finally:
        work.stop()
    with open(PGSS_DIR / "pgss_final_no_time.txt", "w") as fh:
        fh.write(psql("-c", PGSS_FINAL))
    record("pgss_final_no_time.txt", f'`psql -c "{PGSS_FINAL}"` once at the end (no time anywhere)')


# Column sets of other extension versions, rendered by this machine's real psql/COPY from the
# PG 15 view with columns renamed, dropped or added in SQL (files named handmade_*).
PG12_COLS = ("userid, dbid, queryid, query, calls, total_exec_time AS total_time, min_exec_time AS min_time, "
             "max_exec_time AS max_time, mean_exec_time AS mean_time, stddev_exec_time AS stddev_time, rows, "
             "shared_blks_hit, shared_blks_read, shared_blks_dirtied, shared_blks_written, local_blks_hit, "
             "local_blks_read, local_blks_dirtied, local_blks_written, temp_blks_read, temp_blks_written, "
             "blk_read_time, blk_write_time")
PG94_COLS = ("userid, dbid, queryid, query, calls, total_exec_time AS total_time, rows, shared_blks_hit, "
             "shared_blks_read, temp_blks_written, blk_read_time, blk_write_time")
PG13_COLS = ("userid, dbid, queryid, query, plans, total_plan_time, min_plan_time, max_plan_time, "
             "mean_plan_time, stddev_plan_time, calls, total_exec_time, min_exec_time, max_exec_time, "
             "mean_exec_time, stddev_exec_time, rows, shared_blks_hit, shared_blks_read, shared_blks_dirtied, "
             "shared_blks_written, temp_blks_read, temp_blks_written, blk_read_time, blk_write_time, "
             "wal_records, wal_fpi, wal_bytes")
PG14_COLS = PG13_COLS.replace("dbid, queryid", "dbid, toplevel, queryid")
PG17_COLS = ("s.userid, s.dbid, s.toplevel, s.queryid, s.query, s.plans, s.total_plan_time, s.calls, "
             "s.total_exec_time, s.min_exec_time, s.max_exec_time, s.mean_exec_time, s.stddev_exec_time, s.rows, "
             "s.shared_blks_hit, s.shared_blks_read, s.temp_blks_written, s.blk_read_time AS shared_blk_read_time, "
             "s.blk_write_time AS shared_blk_write_time, 0::float8 AS local_blk_read_time, "
             "0::float8 AS local_blk_write_time, s.temp_blk_read_time, s.temp_blk_write_time, s.wal_records, "
             "s.wal_fpi, s.wal_bytes, s.jit_functions, 0::bigint AS jit_deform_count, "
             "0::float8 AS jit_deform_time, e.since AS stats_since, e.since AS minmax_stats_since")
PG18_EXTRA = ("0::bigint AS wal_buffers_full, 0::bigint AS parallel_workers_to_launch, "
              "0::bigint AS parallel_workers_launched, 0::float8 AS total_plan_cpu_time")


def handmade_samples() -> None:
    log("other versions' column sets (handmade_*)")
    work = Workload()
    work.start(30)
    try:
        time.sleep(2)
        snapshots("handmade_pg12_total_time.csv", 3, 3.0, lambda i: psql(
            "-q", "-c", f"COPY (SELECT now() AS snapshot_time, {PG12_COLS} FROM pg_stat_statements WHERE toplevel) "
            "TO STDOUT WITH CSV HEADER"))
        snapshots("handmade_pg94_aligned.txt", 2, 3.0, lambda i: psql(
            "-c", "SELECT now()", "-c", f"SELECT {PG94_COLS} FROM pg_stat_statements WHERE toplevel ORDER BY queryid"))
        snapshots("handmade_pg13_aligned.txt", 2, 3.0, lambda i: psql(
            "-c", "SELECT now() AS ts", "-c", f"SELECT {PG13_COLS} FROM pg_stat_statements WHERE toplevel "
            "ORDER BY queryid"))
        snapshots("handmade_pg14_expanded.txt", 2, 3.0, lambda i: psql(
            "-x", "-c", f"SELECT now() AS captured_at, {PG14_COLS} FROM pg_stat_statements ORDER BY queryid"))
        psql("-q", "-c", "CREATE TABLE IF NOT EXISTS entry_since AS SELECT DISTINCT queryid, now() AS since "
                         "FROM pg_stat_statements")
        pg17 = (f"COPY (SELECT now() AS snapshot_time, {PG17_COLS} FROM pg_stat_statements s "
                "JOIN entry_since e USING (queryid)) TO STDOUT WITH CSV HEADER")

        def pg17_snapshot(i: int) -> str:
            if i == 2:  # one entry reset on its own: new stats_since, counters restart
                qid = psql("-At", "-c", "SELECT queryid FROM pg_stat_statements WHERE query LIKE 'UPDATE "
                                        "pgbench_accounts%'").split()[0]
                psql("-q", "-c", f"SELECT pg_stat_statements_reset(0, 0, {qid})")
                psql("-q", "-c", f"UPDATE entry_since SET since = now() WHERE queryid = {qid}")
                time.sleep(1.5)
            return psql("-q", "-c", pg17)

        snapshots("handmade_pg17.csv", 4, 3.0, pg17_snapshot)
        snapshots("handmade_pg18.jsonl", 3, 3.0, lambda i: psql(
            "-At", "-c", f"SELECT row_to_json(x) FROM (SELECT now() AS snapshot_time, {PG17_COLS}, {PG18_EXTRA} "
            "FROM pg_stat_statements s JOIN entry_since e USING (queryid)) x"))
    finally:
        work.stop()


def pgsa_samples() -> None:
    log("pg_stat_activity samples")
    psql("-q", "-c", "CREATE TABLE IF NOT EXISTS lock_demo(id int primary key, v int)")
    psql("-q", "-c", "INSERT INTO lock_demo VALUES (1, 0) ON CONFLICT DO NOTHING")
    sessions = [Session(f"idle_{i}") for i in range(3)]
    holder = Session("holder")
    waiters = [Session(f"waiter_{i}") for i in range(2)]
    busy = Session("busy")
    try:
        for s in sessions:
            s.send("SELECT 1;")
        time.sleep(1)
        out_csv = open(PGSA_DIR / "pgsa_snapshots.csv", "w")
        out_txt = open(PGSA_DIR / "pgsa_aligned_now.txt", "w")
        with out_csv, out_txt:

            def snap() -> None:
                out_csv.write(psql("-q", "-c", PGSA_COPY))
                out_txt.write(psql("-c", "SELECT now()", "-c", PGSA_SELECT))

            snap()
            holder.send("BEGIN; UPDATE lock_demo SET v = v + 1 WHERE id = 1;")
            time.sleep(2)
            snap()  # holder idle in transaction
            for w in waiters:
                w.send("UPDATE lock_demo SET v = v + 10 WHERE id = 1;")
            busy.send("SELECT pg_sleep(8);")
            time.sleep(2)
            snap()  # two lock waiters, one active sleeper
            time.sleep(2)
            snap()
            holder.send("COMMIT;")
            time.sleep(2)
            snap()  # locks released
        record(
            "pgsa_snapshots.csv",
            f'5 x ~2 s: `psql -c "{PGSA_COPY}"` while 3 sessions idle, one holds a row '
            "lock idle in transaction, two wait for it and one runs pg_sleep(8)",
        )
        record("pgsa_aligned_now.txt", f"the same moments: `psql -c 'SELECT now()' -c \"{PGSA_SELECT}\"`")
    finally:
        for s in [*sessions, holder, *waiters, busy]:
            s.close()


def provenance(version: str) -> None:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    common = (
        f"Produced by `python3 samples/generate/pg_samples.py` on {now} with {version} "
        f"(Debian 12 package, pg_stat_statements 1.10), psql {psql('--version').strip()}, "
        f"pgbench -i -s 5, LC_ALL=C.UTF-8, server and client TimeZone UTC unless stated.\n"
        f'Cluster: initdb --locale C, `pg_ctl -o "-p {PORT} -k /tmp -c listen_addresses=127.0.0.1 '
        "-c shared_preload_libraries=pg_stat_statements -c track_io_timing=on "
        '-c pg_stat_statements.track=all"`.\n'
        "Workload: `pgbench -c 3 -j 1 -R 150` plus a loop running a multi-line aggregate, a query "
        "with `||` and `'|'`, an indexed lookup and every 4th round a slow scan "
        "(`SELECT count(*) FROM pgbench_accounts a, generate_series(1, 3) g WHERE ...`).\n\n"
    )
    pgss = [c for c in COMMANDS if not c.startswith("- `pgsa")]
    pgsa = [c for c in COMMANDS if c.startswith("- `pgsa")]
    (PGSS_DIR / "PROVENANCE.md").write_text(
        "# pg_stat_statements samples\n\n"
        + common
        + "## Real dumps\n\n"
        + "\n".join(pgss)
        + "\n\n"
        + HANDMADE_NOTE
    )
    (PGSA_DIR / "PROVENANCE.md").write_text(
        "# pg_stat_activity samples\n\n" + common + "## Real dumps\n\n" + "\n".join(pgsa) + "\n"
    )


HANDMADE_NOTE = """## `handmade_*`: other PostgreSQL versions' column sets

This machine has PostgreSQL 15 only (pg_stat_statements 1.10). The `handmade_*` files imitate
the column sets of other extension versions listed in ../../../shared/FORMATS.md §5.1 (from
pg_stat_statements--1.7--1.8.sql, --1.10--1.11.sql, --1.11--1.12.sql). They are still output of
the real psql/COPY of this run, but of a `SELECT` that renames, drops or adds columns of the
PG 15 view (see `handmade_samples()` in the generator), so their values are real PG 15 counters:

- `handmade_pg12_total_time.csv`: 9.5–12 (ext 1.3–1.7): `total_time`, `min/max/mean/stddev_time`,
  `blk_read_time`, no `toplevel`, no plan columns; 3 COPY snapshots with a header each.
- `handmade_pg94_aligned.txt`: 9.4 (ext 1.2) psql aligned after `SELECT now()`: `queryid`,
  `total_time`, no min/max/mean/stddev.
- `handmade_pg13_aligned.txt`: 13 (ext 1.8): plan/exec split and `wal_*`, no `toplevel`; the time
  comes from a `SELECT now() AS ts` table.
- `handmade_pg14_expanded.txt`: 14 (ext 1.9) `psql -x` output with a `captured_at` time column
  and `toplevel`.
- `handmade_pg17.csv`: 17 (ext 1.11): `shared_blk_read_time`, `local_blk_*_time`, `jit_deform_*`,
  `stats_since`, `minmax_stats_since` (imitated from a side table holding each entry's creation
  time); before the third snapshot one entry (`UPDATE pgbench_accounts ...`) is reset with
  `pg_stat_statements_reset(0, 0, queryid)` and gets a new `stats_since`.
- `handmade_pg18.jsonl`: 18 (ext 1.12): the PG 17 set + `wal_buffers_full`,
  `parallel_workers_to_launch`, `parallel_workers_launched`, and one unknown future column
  (`total_plan_cpu_time`, FORMATS.md's "1.13" note).
"""


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("run as root (the cluster runs as the postgres user)")
    PGSS_DIR.mkdir(parents=True, exist_ok=True)
    PGSA_DIR.mkdir(parents=True, exist_ok=True)
    for d in (PGSS_DIR, PGSA_DIR):
        for f in d.iterdir():
            if f.is_file() and not f.name.startswith("handmade_") and f.name != "PROVENANCE.md":
                f.unlink()
    cluster = Cluster()
    try:
        log("starting cluster")
        cluster.start()
        version = psql("-At", "-c", "SELECT version()", db="postgres").strip().split(" on ")[0]
        psql("-q", "-c", "CREATE DATABASE bench", db="postgres")
        subprocess.run(
            ["pgbench", "-h", "127.0.0.1", "-p", str(PORT), "-U", "postgres", "-i", "-s", "5", "-q", "bench"],
            env=ENV,
            check=True,
            capture_output=True,
        )
        psql("-q", "-c", "CREATE EXTENSION pg_stat_statements")
        psql("-q", "-c", "SELECT pg_stat_statements_reset()")
        pgss_samples()
        handmade_samples()
        pgsa_samples()
        provenance(version)
        log("done")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
