"""/proc/PID/status dumps: Threads per process, task records, times, switch rates."""

from __future__ import annotations

import datetime as dt
import io
import re
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers import proc_status, ps_threads, top
from parsers.base import ParseContext

from .._mutate import n_lines, splice_lines

FOLDER = Path("samples/threads/proc_status")
SAMPLES = sorted(FOLDER.glob("*.txt"))
MTIME = dt.datetime(2026, 11, 28, 6, 0, 0, tzinfo=dt.timezone.utc)


def run(name: str, **ctx_args):
    path = FOLDER / name
    with path.open("rb") as fh:
        return proc_status.parse(fh, ctx=ParseContext(file=str(path), **ctx_args))


def value(result, entity: str, metric: str) -> list[float]:
    df = result.metrics.filter((pl.col("entity") == entity) & (pl.col("metric") == metric))
    return df.get_column("value").to_list()


def codes(result) -> set[str]:
    return {d.code for d in result.accounting.all_diagnostics()}


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_line_accounted(path: Path):
    result = run(path.name, file_mtime=MTIME)
    acct = result.accounting
    assert acct.total == path.read_bytes().count(b"\n")
    assert acct.parsed_count == acct.total and acct.skipped_count == 0
    assert result.metrics.height > 0


def test_single_status_threads_rss_vsz():
    text = (FOLDER / "status_pid.txt").read_text()
    result = run("status_pid.txt", file_mtime=MTIME)
    assert value(result, "pid:3", "proc.threads") == [float(re.search(r"^Threads:\t(\d+)$", text, re.M)[1])] \
        == [16.0]
    assert value(result, "pid:3", "proc.rss_kb") == [12808.0]
    assert value(result, "pid:3", "proc.vsz_kb") == [float(re.search(r"^VmSize:\s+(\d+) kB$", text, re.M)[1])]
    assert result.metrics.get_column("ts").unique().to_list() == [MTIME.replace(tzinfo=None)]
    assert "time_from_mtime" in codes(result)
    assert result.entities.filter(pl.col("entity") == "pid:3")["label"][0] == "python3"


def test_head_tail_headers_one_record_per_process():
    text = (FOLDER / "status_tail_all.txt").read_text()
    heads = re.findall(r"^==> /proc/(\d+)/status <==$", text, re.M)
    threads = re.findall(r"^Threads:\t(\d+)$", text, re.M)
    assert len(heads) == len(threads) == 4
    result = run("status_tail_all.txt", file_mtime=MTIME)
    got = result.metrics.filter(pl.col("metric") == "proc.threads")
    assert dict(zip(got["entity"].to_list(), got["value"].to_list(), strict=False)) == {
        f"pid:{p}": float(n) for p, n in zip(heads, threads, strict=False)}
    assert value(result, "pid:3", "proc.threads") == [16.0]


def test_task_status_records_belong_to_their_process():
    text = (FOLDER / "status_tasks_head.txt").read_text()
    tids = re.findall(r"^==> /proc/3/task/(\d+)/status <==$", text, re.M)
    assert len(tids) == 16
    result = run("status_tasks_head.txt", file_mtime=MTIME)
    # every task repeats the process's Threads: one sample, for the process
    assert value(result, "pid:3", "proc.threads") == [16.0]
    assert result.metrics.filter(pl.col("metric") == "proc.threads").height == 1
    ents = dict(result.entities.select("entity", "label").iter_rows())
    assert {e for e in ents if e.startswith("tid:3/")} == {f"tid:3/{t}" for t in tids}
    assert ents["tid:3/6"] == "io worker"


def test_grep_form():
    result = run("status_grep_threads.txt", file_mtime=MTIME)
    assert value(result, "pid:3", "proc.threads") == [16.0]
    assert sorted(result.metrics.get_column("entity").to_list()) == ["pid:1", "pid:2", "pid:28", "pid:3"]


def test_loop_date_lines_and_switch_rates():
    text = (FOLDER / "status_loop_date.txt").read_text()
    stamps = [dt.datetime.fromisoformat(t) for t in re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)$", text, re.M)]
    result = run("status_loop_date.txt")
    threads = result.metrics.filter(pl.col("metric") == "proc.threads")
    assert threads["ts"].to_list() == stamps
    assert threads["value"].to_list() == [28.0, 28.0, 28.0]
    # the main thread sleeps: no switches between dumps → rates 0 for the 2 later dumps
    assert value(result, "pid:3", "proc.cswch_per_s") == [0.0, 0.0]
    # raise the counters of the later dumps: 168 → 178 → 198 over 1 s steps
    bumped = text.replace("voluntary_ctxt_switches:\t168", "voluntary_ctxt_switches:\tX")
    parts = bumped.split("voluntary_ctxt_switches:\tX")
    assert len(parts) == 4  # one voluntary line per dump
    rebuilt = parts[0] + "voluntary_ctxt_switches:\t168" + parts[1] + "voluntary_ctxt_switches:\t178" + \
        parts[2] + "voluntary_ctxt_switches:\t198" + parts[3]
    result = proc_status.parse(io.BytesIO(rebuilt.encode()), ctx=ParseContext())
    seconds = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:], strict=False)]
    assert value(result, "pid:3", "proc.cswch_per_s") == [10 / seconds[0], 20 / seconds[1]]


def test_no_time_keeps_samples_in_table():
    result = run("status_pid.txt")
    assert result.metrics.height == 0 and result.tables["undated_metrics"].height == 3


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_sniff_precision(path: Path):
    head = path.read_bytes()[:65536]
    assert proc_status.sniff(head) >= 0.85
    assert ps_threads.sniff(head) == 0.0
    assert top.sniff(head) == 0.0


@pytest.mark.parametrize("blob", [
    b"\xef\xbb\xbfName:\tx\r\nPid:\t5\r\nTgid:\t5\r\nThreads:\t3\r\n",
    b"\x1b[31mName:\x1b[0m\tx\nThreads:\tnot-a-number\nVmRSS:\tlots kB\n",
    b"Name:\tx\nMems_allowed:\t" + b"0" * (10 << 20) + b"\n",
    bytes(range(256)) * 40,
    b"",
])
def test_hostile_input_never_raises(blob: bytes):
    result = proc_status.parse(io.BytesIO(blob), ctx=ParseContext(file_mtime=MTIME))
    acct = result.accounting
    assert acct.parsed_count + acct.skipped_count == acct.total


def test_crlf_bom_status_parses():
    blob = b"\xef\xbb\xbfName:\tx\r\nTgid:\t5\r\nPid:\t5\r\nThreads:\t3\r\nVmRSS:\t  100 kB\r\n"
    result = proc_status.parse(io.BytesIO(blob), ctx=ParseContext(file_mtime=MTIME))
    assert value(result, "pid:5", "proc.threads") == [3.0]
    assert value(result, "pid:5", "proc.rss_kb") == [100.0]


_LINES = [ln for p in SAMPLES for ln in p.read_bytes().splitlines(keepends=True)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(picks=st.lists(st.integers(0, len(_LINES) - 1), min_size=1, max_size=80),
       cut=st.integers(0, 200), junk=st.binary(max_size=40), where=st.integers(0, 79))
def test_mutated_samples_keep_accounting(picks, cut, junk, where):
    blob = splice_lines(_LINES, picks, cut, junk, where)
    result = proc_status.parse(io.BytesIO(blob), ctx=ParseContext(file_mtime=MTIME))
    acct = result.accounting
    assert acct.total == n_lines(blob)
    assert acct.parsed_count + acct.skipped_count == acct.total
