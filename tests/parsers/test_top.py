"""top batch output: frames, first-frame CPU, dates, locales, -H rows, sniff precision."""

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

FOLDER = Path("samples/threads/top")
SAMPLES = sorted(FOLDER.glob("*.txt"))
MTIME = dt.datetime(2026, 11, 28, 5, 45, 0, tzinfo=dt.timezone.utc)
DAY = dt.date(2026, 11, 28)


def run(name: str, **ctx_args):
    path = FOLDER / name
    with path.open("rb") as fh:
        return top.parse(fh, ctx=ParseContext(file=str(path), **ctx_args))


def at(clock: str, day: dt.date = DAY) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.fromisoformat(clock))


def value(result, entity: str, metric: str, ts: dt.datetime | None = None) -> list[float]:
    df = result.metrics.filter((pl.col("entity") == entity) & (pl.col("metric") == metric))
    if ts is not None:
        df = df.filter(pl.col("ts") == ts)
    return df.get_column("value").to_list()


def codes(result) -> set[str]:
    return {d.code for d in result.accounting.all_diagnostics()}


def frames_of(name: str) -> list[str]:
    return re.findall(r"^top - (\d\d:\d\d:\d\d) ", (FOLDER / name).read_text(), re.M)


# (file, frames, first-frame %Cpu lines skipped as since_boot_sample)
EXPECTED = {
    "top_b.txt": (3, 1), "top_H_p.txt": (3, 1), "top_b_cols80.txt": (2, 1), "top_H_all.txt": (2, 1),
    "top_c_args.txt": (2, 1), "top_loop_n1.txt": (3, 3), "top_de.txt": (2, 1), "top_H_fr.txt": (2, 1),
    "top_zh.txt": (2, 1), "handmade_top_procps32.txt": (2, 1),
}


def test_expectations_cover_every_sample():
    assert {p.name for p in SAMPLES} == set(EXPECTED)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_line_accounted_and_first_frames_skipped(path: Path):
    frames, first = EXPECTED[path.name]
    result = run(path.name, file_mtime=MTIME)
    acct = result.accounting
    assert acct.total == path.read_bytes().count(b"\n")
    assert dict(acct.skipped) == {"since_boot_sample": first}
    assert acct.parsed_count == acct.total - first
    assert len(frames_of(path.name)) == frames
    stamps = sorted(set(result.metrics.get_column("ts").to_list()))
    assert len(stamps) == frames
    # CPU summary only for frames that are not a run's first
    assert result.metrics.filter(pl.col("metric") == "cpu.user_pct").height == frames - first


def test_top_b_golden_values():
    result = run("top_b.txt", reference_date=DAY)
    assert frames_of("top_b.txt") == ["05:40:04", "05:40:05", "05:40:06"]
    t2 = at("05:40:05")
    assert value(result, "cpu:all", "cpu.user_pct", t2) == [83.6]
    assert value(result, "cpu:all", "cpu.system_pct", t2) == [16.4]
    assert value(result, "cpu:all", "cpu.idle_pct", t2) == [0.0]
    assert value(result, "cpu:all", "cpu.busy_pct", t2) == [100.0]
    assert value(result, "cpu:all", "cpu.load1") == [7.22, 7.22, 7.22]
    assert value(result, "host:tasks", "sys.tasks", t2) == [4.0]
    # the workload: first frame gives memory but no CPU; later frames both
    assert value(result, "pid:76", "proc.cpu_pct") == [10.8, 12.0]  # not the first frame's 11.8
    assert value(result, "pid:76", "proc.cpu_pct", t2) == [10.8]
    assert value(result, "pid:76", "proc.rss_kb", at("05:40:04")) == [12656.0]
    assert value(result, "pid:76", "proc.mem_pct", t2) == [0.1]
    assert "first_frame_cpu" in codes(result)
    assert result.variant == "top -b, 3 frame(s), date from reference date"
    labels = dict(result.entities.select("entity", "label").iter_rows())
    assert labels["pid:76"] == "python3" and labels["pid:85"] == "top"


def test_threads_mode_uses_header_total_and_unknown_tgid():
    result = run("top_H_p.txt", reference_date=DAY)
    totals = value(result, "host:threads", "sys.tasks")
    text = (FOLDER / "top_H_p.txt").read_text()
    assert totals == [float(n) for n in re.findall(r"^Threads:\s+(\d+) total", text, re.M)] == [13.0, 16.0, 20.0]
    assert value(result, "tid:?/77", "proc.cpu_pct", at("05:40:08")) == [4.0]  # spin-0
    assert value(result, "tid:?/78", "proc.cpu_pct", at("05:40:09")) == [3.0]  # spin-1
    # thread rows carry no per-process figures and no invented process
    assert not result.metrics.filter(pl.col("entity").str.starts_with("pid:")).height
    assert result.metrics.filter(pl.col("metric") == "proc.threads").height == 0
    labels = dict(result.entities.select("entity", "label").iter_rows())
    assert labels["tid:?/79"] == "io work+"
    assert result.variant.startswith("top -H -b (threads), 3 frame(s)")


def test_loop_of_single_runs_skips_every_frames_cpu():
    result = run("top_loop_n1.txt", reference_date=DAY)
    assert result.accounting.skipped["since_boot_sample"] == 3
    assert result.metrics.filter(pl.col("metric") == "proc.cpu_pct").height == 0
    task_rows = len(re.findall(r"^ +\d+ ", (FOLDER / "top_loop_n1.txt").read_text(), re.M))
    assert result.metrics.filter(pl.col("metric") == "proc.rss_kb").height == task_rows == 15


def test_translated_headers_and_decimal_commas():
    de = run("top_de.txt", reference_date=DAY)
    fr = run("top_H_fr.txt", reference_date=DAY)
    zh = run("top_zh.txt", reference_date=DAY)
    for result, name in ((de, "top_de.txt"), (fr, "top_H_fr.txt"), (zh, "top_zh.txt")):
        second = at(frames_of(name)[1])
        cpu_line = re.findall(r"^%CPU\(s\):(.*)$|^%Cpu\(s\):(.*)$", (FOLDER / name).read_text(), re.M)[1]
        numbers = [float(x.replace(",", ".")) for x in re.findall(r"(\d+[.,]\d)", "".join(cpu_line))]
        assert value(result, "cpu:all", "cpu.user_pct", second) == [numbers[0]]
        assert value(result, "cpu:all", "cpu.idle_pct", second) == [numbers[3]]
        assert value(result, "cpu:all", "cpu.steal_pct", second) == [numbers[7]]
    assert value(de, "cpu:all", "cpu.load1")[0] == float(
        re.search(r"load average: (\d+),(\d+)", (FOLDER / "top_de.txt").read_text()).group(0)[-5:].replace(",", "."))
    assert value(fr, "tid:?/78", "proc.cpu_pct") == [5.0]  # "5,0" in the second frame
    assert value(fr, "host:threads", "sys.tasks") == [31.0, 31.0]
    # zh_CN: 进程号 is PID and the S column has no header; values still land in their columns
    zh_rows = [ln.split() for ln in (FOLDER / "top_zh.txt").read_text().splitlines()[-4:] if ln.strip()]
    for row in zh_rows:
        assert value(zh, f"pid:{row[0]}", "proc.rss_kb", at(frames_of("top_zh.txt")[1])) == [float(row[5])]
        assert value(zh, f"pid:{row[0]}", "proc.cpu_pct", at(frames_of("top_zh.txt")[1])) == [float(row[8])]


def test_command_line_with_spaces():
    result = run("top_c_args.txt", reference_date=DAY)
    ents = {e: lab for e, lab in result.entities.select("entity", "label").iter_rows()}
    assert ents["pid:76"] == "python3"
    attrs = result.entities.filter(pl.col("entity") == "pid:76")["attrs"][0]
    assert "--workload 40.0" in attrs


def test_procps32_header_units_rt_and_midnight():
    result = run("handmade_top_procps32.txt", reference_date=dt.date(2024, 2, 29))
    late, early = at("23:59:58", dt.date(2024, 2, 29)), at("00:00:01", dt.date(2024, 3, 1))
    assert sorted(set(result.metrics.get_column("ts").to_list())) == [late, early]
    assert value(result, "cpu:all", "cpu.iowait_pct", early) == [17.6]
    assert value(result, "cpu:all", "cpu.user_pct", early) == [72.4]
    assert value(result, "pid:4410", "proc.rss_kb", early) == [11.0 * 1024 * 1024]  # "11g"
    assert value(result, "pid:4410", "proc.cpu_pct", early) == [142.6]
    assert value(result, "pid:17", "proc.cpu_pct", early) == [0.3]  # PR "rt"
    assert value(result, "pid:1100", "proc.mem_pct", early) == [0.0]  # NI -20
    assert "procps 3.2 header" in result.variant


def test_date_from_mtime_anchors_last_frame():
    result = run("top_b.txt", file_mtime=MTIME)
    assert sorted(set(result.metrics.get_column("ts").to_list())) == [
        at("05:40:04"), at("05:40:05"), at("05:40:06")]
    assert "date_from_mtime" in codes(result)
    # mtime just after midnight: the frames belong to the day before
    result = run("top_b.txt", file_mtime=dt.datetime(2026, 11, 29, 0, 0, 30, tzinfo=dt.timezone.utc))
    assert min(result.metrics.get_column("ts").to_list()) == at("05:40:04", dt.date(2026, 11, 28))


def test_no_date_keeps_samples_off_the_timeline():
    result = run("top_b.txt")
    assert result.metrics.height == 0
    table = result.tables["undated_metrics"]
    assert table.get_column("clock").unique().sort().to_list() == ["05:40:04", "05:40:05", "05:40:06"]
    assert "time_unknown" in codes(result)


def test_time_line_before_frames_gives_date_and_new_run():
    body = (FOLDER / "top_b.txt").read_bytes()
    blob = b"Sat Nov 28 05:40:03 UTC 2026\n" + body
    result = top.parse(io.BytesIO(blob), ctx=ParseContext())
    assert min(result.metrics.get_column("ts").to_list()) == at("05:40:04")
    assert result.accounting.skipped["since_boot_sample"] == 1


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_sniff_precision(path: Path):
    head = path.read_bytes()[:65536]
    assert top.sniff(head) >= 0.8
    assert ps_threads.sniff(head) == 0.0
    assert proc_status.sniff(head) == 0.0


def test_does_not_claim_ps_or_status():
    for path in Path("samples/threads").glob("[pp]*/*.txt"):
        if "top" not in path.parts:
            assert top.sniff(path.read_bytes()) == 0.0, path


@pytest.mark.parametrize("blob", [
    b"\xef\xbb\xbftop - 10:00:00 up 1 day,  load average: 0.00, 0.01, 0.05\r\nTasks: 1 total\r\n",
    b"\x1b[H\x1b[2Jtop - 10:00:00 up 1 min\n\x1b[1mTasks:\x1b[0m 1 total, 1 running\n\n  PID USER PR NI VIRT RES SHR S %CPU %MEM TIME+ COMMAND\n",
    b"top - 10:00:00 up 1 min\n" + b"y" * (10 << 20),
    bytes(range(256)) * 40,
    b"",
])
def test_hostile_input_never_raises(blob: bytes):
    result = top.parse(io.BytesIO(blob), ctx=ParseContext(file_mtime=MTIME))
    acct = result.accounting
    assert acct.parsed_count + acct.skipped_count == acct.total


_LINES = [ln for p in SAMPLES for ln in p.read_bytes().splitlines(keepends=True)]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(picks=st.lists(st.integers(0, len(_LINES) - 1), min_size=1, max_size=60),
       cut=st.integers(0, 200), junk=st.binary(max_size=40), where=st.integers(0, 59))
def test_mutated_samples_keep_accounting(picks, cut, junk, where):
    blob = splice_lines(_LINES, picks, cut, junk, where)
    result = top.parse(io.BytesIO(blob), ctx=ParseContext(file_mtime=MTIME))
    acct = result.accounting
    assert acct.total == n_lines(blob)
    assert acct.parsed_count + acct.skipped_count == acct.total
