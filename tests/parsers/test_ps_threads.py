"""ps listings: thread counts per PID, per-thread CPU, snapshot times, sniff precision."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers import proc_status, ps_threads, registry, top
from parsers.base import ParseContext

from .._mutate import n_lines, splice_lines

FOLDER = Path("samples/threads/ps")
SAMPLES = sorted(p for p in FOLDER.glob("*.txt"))
MTIME = dt.datetime(2026, 11, 28, 6, 0, 0, tzinfo=dt.timezone.utc)


def run(name: str, **ctx_args):
    path = FOLDER / name
    ctx = ParseContext(file=str(path), **ctx_args)
    with path.open("rb") as fh:
        return ps_threads.parse(fh, ctx=ctx)


def rows_of(name: str) -> list[list[str]]:
    """Data rows split on whitespace (independent of the parser), header lines excluded."""
    out = []
    for line in (FOLDER / name).read_text().splitlines():
        tokens = line.split()
        if tokens and tokens[0] != "UID" and tokens[0] != "PID" and (tokens[0].isdigit() or len(tokens) > 8):
            out.append(tokens)
    return out


def value(result, entity: str, metric: str, ts: dt.datetime | None = None) -> list[float]:
    df = result.metrics.filter((pl.col("entity") == entity) & (pl.col("metric") == metric))
    if ts is not None:
        df = df.filter(pl.col("ts") == ts)
    return df.get_column("value").to_list()


def codes(result) -> set[str]:
    return {d.code for d in result.accounting.all_diagnostics()}


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_line_accounted(path: Path):
    result = run(path.name, file_mtime=MTIME)
    acct = result.accounting
    assert acct.total == path.read_bytes().count(b"\n")
    assert acct.parsed_count == acct.total and acct.skipped_count == 0, acct.skipped
    assert result.metrics.height > 0


def test_ps_eLf_threads_equal_lwp_rows_and_nlwp():
    rows = rows_of("ps_eLf.txt")  # UID PID PPID LWP C NLWP STIME TTY TIME CMD...
    workload = next(r[1] for r in rows if r[0] == "stallsc+")
    lwps = [r for r in rows if r[1] == workload]
    assert len(lwps) == 12 and {r[5] for r in lwps} == {"12"}
    result = run("ps_eLf.txt", file_mtime=MTIME)
    assert value(result, f"pid:{workload}", "proc.threads") == [len(lwps)]
    # every thread's C column, stamped with the file time (ps prints none)
    for r in lwps:
        assert value(result, f"tid:{workload}/{r[3]}", "proc.cpu_pct", MTIME.replace(tzinfo=None)) == [float(r[4])]
    assert value(result, "tid:3/4", "proc.cpu_pct") == [23.0]  # golden: spin-0's C
    assert result.metrics.height == 15 + 4  # 15 thread rows' C + proc.threads of 4 PIDs
    assert "time_from_mtime" in codes(result)
    assert result.variant == "1 snapshot(s), time from file mtime"
    labels = dict(result.entities.select("entity", "label").iter_rows())
    assert labels[f"pid:{workload}"] == "python3"
    attrs = json.loads(result.entities.filter(pl.col("entity") == f"pid:{workload}")["attrs"][0])
    assert attrs["user"] == "stallsc+" and attrs["cmdline"].endswith("--workload 14.0")


def snapshots_of(name: str, is_time) -> list[tuple[str, list[list[str]]]]:
    """(time line, data rows) per snapshot, read independently of the parser."""
    out: list[tuple[str, list[list[str]]]] = []
    for ln in (FOLDER / name).read_text().splitlines():
        if is_time(ln):
            out.append((ln, []))
        elif ln.split() and ln.split()[0] not in ("UID", "PID"):
            out[-1][1].append(ln.split())
    return out


def test_loop_with_date_lines_gives_one_snapshot_per_date():
    shots = snapshots_of("ps_eLf_loop_date.txt", lambda ln: ln.endswith(" UTC 2026"))
    dates = [dt.datetime.strptime(t, "%a %b %d %H:%M:%S UTC %Y") for t, _ in shots]
    counts = [sum(1 for r in rows if r[1] == "3") for _, rows in shots]
    nlwp = [[r[5] for r in rows if r[1] == "3"][-1] for _, rows in shots]  # the latest reading
    assert len(shots) == 4
    result = run("ps_eLf_loop_date.txt")  # no mtime: the date lines alone place the snapshots
    threads = result.metrics.filter((pl.col("metric") == "proc.threads") & (pl.col("entity") == "pid:3"))
    assert threads.get_column("ts").to_list() == dates
    assert threads.get_column("value").to_list() == [float(c) for c in counts] == [float(n) for n in nlwp]
    assert threads.get_column("value").to_list() == [16.0, 20.0, 20.0, 23.0]  # golden: the pool grows
    # snapshot 2 is a real race: NLWP went from 19 to 20 while ps listed the threads
    assert sorted({r[5] for r in shots[1][1] if r[1] == "3"}) == ["19", "20"]
    assert "thread_rows_mismatch" in codes(result)
    assert "time_from_mtime" not in codes(result) and snap_table(result) is None
    assert result.variant == "4 snapshot(s), time lines"


def snap_table(result):
    return result.tables.get("undated_metrics")


def test_iso_comment_lines_are_snapshot_times_in_file_zone():
    from zoneinfo import ZoneInfo
    berlin = ZoneInfo("Europe/Berlin")
    result = run("ps_L_o_loop_iso.txt", tz=berlin)
    shots = snapshots_of("ps_L_o_loop_iso.txt", lambda ln: ln.startswith("# "))
    iso = [dt.datetime.fromisoformat(t[2:]).astimezone(berlin).replace(tzinfo=None) for t, _ in shots]
    assert len(iso) == 3
    # +00:00 stamps become Berlin wall time (the framework localises naive times with ctx.tz)
    assert sorted(set(result.metrics.get_column("ts").to_list())) == iso
    threads = result.metrics.filter(pl.col("metric") == "proc.threads").get_column("value").to_list()
    assert threads == [float(rows[0][2]) for _, rows in shots] == [float(len(rows)) for _, rows in shots]
    for stamp, (_, rows) in zip(iso, shots, strict=False):
        for r in rows:
            assert value(result, f"tid:3/{r[1]}", "proc.cpu_pct", stamp) == [float(r[3])]
    assert value(result, "tid:3/4", "proc.cpu_pct", iso[0]) == [18.1]  # golden: spin-0


def test_comm_with_space_in_the_middle_column():
    result = run("ps_L_o_comm_middle.txt", file_mtime=MTIME)
    labels = dict(result.entities.select("entity", "label").iter_rows())
    assert labels["tid:3/6"] == "io worker"
    assert labels["tid:3/4"] == "spin-0"
    assert value(result, "tid:3/6", "proc.cpu_pct") == [0.0]
    assert value(result, "tid:3/4", "proc.cpu_pct") == [23.1]
    assert value(result, "pid:3", "proc.rss_kb") == [12708.0]  # once per PID, not per thread row
    assert value(result, "pid:3", "proc.threads") == [13.0]  # no NLWP column: distinct TID rows


def test_comm_and_args_columns_both_named_command():
    result = run("ps_eLo.txt", file_mtime=MTIME)
    ents = {e: (lab, json.loads(a)) for e, lab, a in result.entities.iter_rows()}
    assert ents["pid:3"][0] == "python3"
    assert ents["pid:3"][1]["cmdline"] == "/usr/bin/python3 /work/main/samples/generate/thread_samples.py --workload 14.0"
    assert ents["tid:3/6"][0] == "io worker"
    assert value(result, "pid:3", "proc.threads") == [13.0]
    assert value(result, "pid:3", "proc.vsz_kb") == [912416.0]
    assert value(result, "pid:3", "proc.mem_pct") == [0.0]
    assert value(result, "tid:3/3", "proc.cpu_pct") == [47.1]


def test_nlwp_only_listing_uses_nlwp():
    result = run("ps_eo_nlwp.txt", file_mtime=MTIME)
    assert value(result, "pid:3", "proc.threads") == [16.0]
    assert value(result, "pid:1", "proc.threads") == [1.0]
    assert value(result, "pid:3", "proc.cpu_pct") == [46.9]  # process row: pid entity
    assert not any(e.startswith("tid:") for e in result.entities.get_column("entity").to_list())


def test_ps_T_and_narrow_columns():
    result = run("ps_T_p.txt", file_mtime=MTIME)
    assert value(result, "pid:3", "proc.threads") == [12.0]
    assert result.metrics.height == 1  # no CPU column in ps -T's default format
    narrow = run("ps_Lf_narrow.txt", file_mtime=MTIME)
    rows = rows_of("ps_Lf_narrow.txt")
    pid = rows[0][1]
    assert value(narrow, f"pid:{pid}", "proc.threads") == [float(len(rows))] == [float(rows[0][5])]


def test_pasted_listing_with_elisions_prompt_and_truncated_users():
    result = run("handmade_ps_eLf_pasted.txt", file_mtime=MTIME)
    assert result.accounting.parsed_count == 16
    assert value(result, "pid:2817", "proc.threads") == [5.0]
    assert value(result, "pid:4410", "proc.threads") == [3.0]
    assert value(result, "tid:4410/4411", "proc.cpu_pct") == [41.0]
    labels = dict(result.entities.select("entity", "label").iter_rows())
    assert labels["pid:2"] == "[kthreadd]"
    assert labels["pid:2817"] == "agent-app"
    assert "elided_rows" in codes(result)


def test_no_time_anywhere_keeps_samples_off_the_timeline():
    result = run("ps_eLf.txt")  # no time line, no mtime
    assert result.metrics.height == 0
    table = snap_table(result)
    assert table is not None and table.height == 19
    assert "time_unknown" in codes(result)


def test_threads_mismatch_between_nlwp_and_rows_is_noted():
    text = (FOLDER / "ps_eLf.txt").read_text().splitlines()
    filtered = "\n".join([text[0]] + [ln for ln in text[1:] if "--workload" in ln][:5]) + "\n"
    result = ps_threads.parse(io.BytesIO(filtered.encode()), ctx=ParseContext(file_mtime=MTIME))
    assert value(result, "pid:3", "proc.threads") == [12.0]  # NLWP, not the 5 rows left by grep
    assert "thread_rows_mismatch" in codes(result)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_sniff_precision(path: Path):
    head = path.read_bytes()[: registry.SNIFF_BYTES]
    assert ps_threads.sniff(head) >= 0.7
    assert top.sniff(head) == 0.0
    assert proc_status.sniff(head) == 0.0


def test_not_claiming_other_tables():
    pidstat_like = (b"Linux 6.1.0 (host) \t11/28/2026 \t_x86_64_\t(2 CPU)\n\n"
                    b"05:34:18 AM   UID       PID    %usr %system  %guest   %wait    %CPU   CPU  Command\n"
                    b"05:34:19 AM     0         1    0.00    0.00    0.00    0.00    0.00     0  init\n")
    assert ps_threads.sniff(pidstat_like) == 0.0
    for path in Path("samples/threads/top").glob("*.txt"):
        assert ps_threads.sniff(path.read_bytes()) == 0.0, path


@pytest.mark.parametrize("blob", [
    b"\xef\xbb\xbfUID PID PPID LWP C NLWP STIME TTY TIME CMD\r\nroot 1 0 1 0 1 10:00 ? 00:00:00 init\r\n",
    b"\x1b[1mPID   LWP NLWP %CPU COMMAND\x1b[0m\n  1  1  1 0.0 init\n",
    b"PID LWP CMD\n" + b"x" * (10 << 20) + b"\n1 1 init",
    bytes(range(256)) * 50,
    b"",
])
def test_hostile_input_never_raises(blob: bytes):
    result = ps_threads.parse(io.BytesIO(blob), ctx=ParseContext(file_mtime=MTIME))
    acct = result.accounting
    assert acct.parsed_count + acct.skipped_count == acct.total


def test_bom_crlf_ansi_rows_are_parsed():
    blob = b"\xef\xbb\xbf\x1b[1mUID PID PPID LWP C NLWP STIME TTY TIME CMD\x1b[0m\r\nroot 7 0 7 3 2 10:00 ? 00:00:00 app\r\n" \
           b"root 7 0 8 9 2 10:00 ? 00:00:00 app\r\n"
    result = ps_threads.parse(io.BytesIO(blob), ctx=ParseContext(file_mtime=MTIME))
    assert result.accounting.skipped_count == 0
    assert value(result, "pid:7", "proc.threads") == [2.0]
    assert value(result, "tid:7/8", "proc.cpu_pct") == [9.0]


_LINES = [ln for p in SAMPLES for ln in p.read_bytes().splitlines(keepends=True)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(picks=st.lists(st.integers(0, len(_LINES) - 1), min_size=1, max_size=60),
       cut=st.integers(0, 200), junk=st.binary(max_size=40), where=st.integers(0, 59))
def test_mutated_samples_keep_accounting(picks, cut, junk, where):
    blob = splice_lines(_LINES, picks, cut, junk, where)
    result = ps_threads.parse(io.BytesIO(blob), ctx=ParseContext(file_mtime=MTIME))
    acct = result.accounting
    assert acct.total == n_lines(blob)
    assert acct.parsed_count + acct.skipped_count == acct.total
    assert set(result.metrics.get_column("metric").unique().to_list()) <= {
        "proc.threads", "proc.cpu_pct", "proc.rss_kb", "proc.vsz_kb", "proc.mem_pct"}
