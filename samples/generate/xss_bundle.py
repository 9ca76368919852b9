"""Write a hand-made incident bundle whose artifacts carry XSS payloads.

Hand-made by nature: no real tool writes script tags into its output on request, so these
files imitate the layouts of the real samples (thread monitor log as in
``samples/thread_monitor/``, Python logging with asyncio slow-callback warnings as in
``samples/applogs/``, ``COPY (SELECT now() AS snapshot_time, * FROM pg_stat_statements) TO
STDOUT WITH CSV HEADER`` as in ``samples/bundles/*/pgss_snapshots.csv``, ``iostat -x -t`` in
the C locale as in ``samples/iostat/``, ``uname -a`` and ``/etc/timezone`` as in
``samples/bundles/*/host/``) and put the payloads where artifacts carry free text: file and
directory names, host name, task names, coroutine names and file paths, log messages,
query text and device names. Every file name starts with ``handmade_xss_`` (the directory
name that makes ``</script>`` inside a member path included).

The report test generates the bundle into a temporary directory; nothing is committed::

    python3 samples/generate/xss_bundle.py OUTDIR
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import sys
from pathlib import Path

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
CLOSE = "</script><script>alert(2)</script>"
PAYLOADS = (SCRIPT, IMG, CLOSE)
ZONE = "Europe/Berlin"
START = dt.datetime(2026, 11, 28, 6, 30, 0)  # bundle-local wall time (CET, UTC+01:00)
SECONDS = 90


def _threads(start: dt.datetime) -> str:
    lines = []
    for i in range(SECONDS):
        count = 12 if i < 40 else 140
        lines.append(f"{(start + dt.timedelta(seconds=i)):%Y-%m-%d %H:%M:%S} - PID: 4242, Threads: {count}")
    return "\n".join(lines) + "\n"


def _applog(start: dt.datetime) -> str:
    def stamp(sec: float) -> str:
        moment = start + dt.timedelta(seconds=sec)
        return f"{moment:%Y-%m-%d %H:%M:%S},{moment.microsecond // 1000:03d}"
    lines = [f"{stamp(0)} INFO shop.api: starting {SCRIPT}"]
    for k, sec in enumerate(range(50, 60)):
        took = 0.3 + k * 0.05
        lines.append(f"{stamp(sec)} WARNING asyncio: Executing <Task pending name='{SCRIPT}' "
                     f"coro=<export_{k % 2}{IMG}() running at /srv/app/{CLOSE}api.py:88> "
                     f"wait_for=<Future pending cb=[Task.task_wakeup()]>> took {took:.3f} seconds")
    lines.append(f"{stamp(61)} ERROR shop.api: request failed: {CLOSE} {IMG}")
    lines.append("Traceback (most recent call last):")
    lines.append(f'  File "/srv/app/{SCRIPT}.py", line 12, in handler')
    lines.append(f"RuntimeError: {SCRIPT}")
    lines.append(f"{stamp(62)} ERROR asyncio: Task was destroyed but it is pending!")
    lines.append(f"task: <Task pending name='{IMG}' coro=<worker() running at /srv/app/w.py:9>>")
    return "\n".join(lines) + "\n"


_PGSS_COLUMNS = ["snapshot_time", "userid", "dbid", "toplevel", "queryid", "query", "plans", "total_plan_time",
                 "calls", "total_exec_time", "min_exec_time", "max_exec_time", "mean_exec_time",
                 "stddev_exec_time", "rows", "shared_blks_hit", "shared_blks_read"]


def _pgss(start: dt.datetime) -> str:
    queries = [("7001", f"SELECT '{CLOSE}' AS x, $1 /* {IMG} */"), ("7002", f"UPDATE {SCRIPT} SET a = $1")]
    out = io.StringIO()
    for snap in range(8):
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(_PGSS_COLUMNS)
        when = start + dt.timedelta(seconds=10 * snap)
        for n, (qid, text) in enumerate(queries):
            calls = 10 * snap * (n + 1)
            total = (900.0 if snap > 4 and n == 0 else 20.0) * snap
            writer.writerow([f"{when:%Y-%m-%d %H:%M:%S}.000000+01", 10, 5, "t", qid, text, 0, 0.0, calls,
                             f"{total:.3f}", "0.1", "50.0", f"{total / max(calls, 1):.3f}", "1.0", calls, 100, 3])
    return out.getvalue()


def _iostat(start: dt.datetime) -> str:
    device = IMG.replace(" ", "")  # iostat's columns are blank-separated
    head = (f"Linux 6.1.0-xss ({SCRIPT}) \t{start:%m/%d/%y} \t_x86_64_\t(2 CPU)\n\n")
    header = ("Device            r/s     rkB/s   rrqm/s  %rrqm r_await rareq-sz     w/s     wkB/s   wrqm/s  "
              "%wrqm w_await wareq-sz     d/s     dkB/s   drqm/s  %drqm d_await dareq-sz     f/s f_await  "
              "aqu-sz  %util")
    blocks = []
    for i in range(6):
        util = 97 if i >= 4 else 5
        blocks.append(f"{(start + dt.timedelta(seconds=10 * i)):%m/%d/%y %H:%M:%S}\n"
                      "avg-cpu:  %user   %nice %system %iowait  %steal   %idle\n"
                      f"             17       0       6      {'40' if util > 50 else ' 2'}       0      "
                      f"{'37' if util > 50 else '75'}\n\n{header}\n"
                      f"{device:<17} 1 10 0 0 0 10 50 900 0 0 {'80' if util > 50 else ' 1'} 18 0 0 0 0 0 0 0 0 "
                      f"{'3.5' if util > 50 else '0.1'} {util}\n\n")
    return head + "".join(blocks)


def write_bundle(out: Path) -> list[Path]:
    """Write the bundle into ``out`` (created); returns the files written."""
    files = {
        Path("host/uname.txt"): f"Linux {SCRIPT} 6.1.0-xss #1 SMP PREEMPT_DYNAMIC x86_64 GNU/Linux\n",
        Path("host/timezone"): ZONE + "\n",
        Path("handmade_xss_<script>alert(1)<") / "script>handmade_xss_threads.log": _threads(START),
        Path(f"handmade_xss_app{IMG}.log"): _applog(START),
        Path("handmade_xss_pgss_snapshots.csv"): _pgss(START),
        Path("handmade_xss_iostat.txt"): _iostat(START),
        Path(f"handmade_xss_notes{IMG}.txt"): f"free text nobody parses {SCRIPT} {CLOSE}\n",
    }
    written = []
    for rel, text in files.items():
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: xss_bundle.py OUTDIR")
    for path in write_bundle(Path(sys.argv[1])):
        print(path)
