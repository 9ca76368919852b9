from __future__ import annotations

import datetime as dt
import io
import re

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from parsers import registry, thread_monitor
from parsers.base import ParseContext

from ..conftest import SAMPLES

FOLDER = SAMPLES / "thread_monitor"
LINE = re.compile(rb"PID: (\d+), Threads: (\d+)")


def parse_bytes(data: bytes, name: str = "t.log", tz: dt.tzinfo = dt.timezone.utc):
    return registry.run(thread_monitor, io.BytesIO(data), ParseContext(file=name, tz=tz))


def test_classic_sample_values_and_accounting():
    raw = (FOLDER / "monitor_sleep_threads.log").read_bytes()
    result = parse_bytes(raw)
    expected = [int(m.group(2)) for m in LINE.finditer(raw)]
    assert result.accounting.total == raw.count(b"\n")
    assert result.accounting.skipped_count == 0
    assert result.metrics.get_column("value").cast(int).to_list() == expected
    assert result.metrics.get_column("line").to_list() == list(range(1, len(expected) + 1))
    assert result.metrics.get_column("entity").unique().to_list() == [f"pid:{LINE.search(raw).group(1).decode()}"]
    assert max(expected) == 42  # 4 steps of 10 threads + main + ps header


def test_date_default_and_banner_forms_are_utc_aware():
    for name in ("monitor_date_default.log", "monitor_banner.log"):
        raw = (FOLDER / name).read_bytes()
        result = parse_bytes(raw, tz=dt.timezone(dt.timedelta(hours=5)))
        assert result.tz_reason == "zone printed in each timestamp"
        first_line = raw.split(b"\n", 1)[0].decode()
        hh_mm_ss = re.search(r"\d{2}:\d{2}:\d{2}", first_line).group(0)
        # the printed UTC time survives although the policy zone is +05:00
        assert result.metrics.get_column("ts")[0].strftime("%H:%M:%S") == hh_mm_ss


def test_banner_form_counts():
    raw = (FOLDER / "monitor_banner.log").read_bytes()
    result = parse_bytes(raw)
    counts = [int(x) for x in re.findall(rb"Thread count: (\d+)", raw)]
    assert result.metrics.get_column("value").cast(int).to_list() == counts
    assert result.metrics.get_column("entity").unique().to_list() == ["proc:monitored"]


def test_naive_times_follow_the_policy_zone():
    result = parse_bytes(b"2026-01-02 10:00:05 - PID: 7, Threads: 12\n", tz=dt.timezone(dt.timedelta(hours=2)))
    assert result.metrics.get_column("ts")[0] == dt.datetime(2026, 1, 2, 8, 0, 5, tzinfo=dt.timezone.utc)


def test_pid_change_is_new_entity_and_exit_is_event():
    data = (b"2026-01-02 10:00:05 - PID: 7, Threads: 40\n"
            b"2026-01-02 10:00:06 - PID: 7, Threads: 1\n"
            b"2026-01-02 10:00:07 - PID: 7, Threads: 1\n"
            b"2026-01-02 10:00:08 - PID: 9, Threads: 3\n")
    result = parse_bytes(data)
    assert result.metrics.select("entity", "value").rows() == [("pid:7", 40.0), ("pid:9", 3.0)]
    assert result.events.select("kind", "entity").rows() == [("proc.exited", "pid:7")]
    assert result.accounting.parsed_count == 4


def test_garbage_lines_are_counted_with_reasons():
    data = b"2026-01-02 10:00:05 - PID: 7, Threads: 40\nhello world\nnot-a-time - PID: 7, Threads: 3\n\n"
    result = parse_bytes(data)
    acct = result.accounting
    assert acct.total == 4
    assert dict(acct.skipped) == {"unparsed_line": 1, "bad_timestamp": 1}
    diag = [d for d in acct.diagnostics if d.code == "unparsed_line"][0]
    assert str(diag).startswith("t.log:2: expected")


def test_sniff_rejects_other_text():
    assert thread_monitor.sniff(b"Linux 6.1.0 (host) \t01/02/26 \t_x86_64_\t(2 CPU)\n") == 0.0
    assert thread_monitor.sniff(b"2026-01-02 10:00:05,123 INFO app: started\n") == 0.0


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_mutated_samples_never_raise(data):
    raw = (FOLDER / data.draw(st.sampled_from(sorted(p.name for p in FOLDER.glob("*.log"))))).read_bytes()
    lines = raw.split(b"\n")
    ops = data.draw(st.lists(st.tuples(st.sampled_from(["del", "dup", "flip", "cut", "junk"]),
                                       st.integers(0, 10_000)), max_size=8))
    for op, pos in ops:
        i = pos % max(len(lines), 1)
        if op == "del" and lines:
            lines.pop(i)
        elif op == "dup" and lines:
            lines.insert(i, lines[i])
        elif op == "flip" and lines and lines[i]:
            b = bytearray(lines[i])
            b[pos % len(b)] ^= 0xFF
            lines[i] = bytes(b)
        elif op == "cut" and lines and lines[i]:
            lines[i] = lines[i][: pos % len(lines[i])]
        elif op == "junk":
            lines.insert(i, bytes(range(256)) * 3 + b"\r\x1b[31m")
    mutated = b"\n".join(lines)
    result = parse_bytes(mutated)
    acct = result.accounting
    assert acct.parsed_count + acct.skipped_count == acct.total
    assert acct.total == mutated.count(b"\n") + (0 if mutated.endswith(b"\n") or not mutated else 1)
    assert result.metrics.schema["ts"] == pl.Datetime("ns", "UTC")


def test_hopeless_file_is_abandoned_with_one_diagnostic():
    from parsers.base import CONSECUTIVE_FAILURE_CAP

    good = b"2026-01-02 10:00:05 - PID: 7, Threads: 40\n"
    data = good + b"garbage\n" * (CONSECUTIVE_FAILURE_CAP + 500)
    acct = parse_bytes(data).accounting
    assert acct.abandoned
    assert acct.total == CONSECUTIVE_FAILURE_CAP + 501
    assert acct.parsed_count + acct.skipped_count == acct.total
    assert acct.skipped["abandoned"] == 500
    assert [d.code for d in acct.all_diagnostics()].count("abandoned") == 1


def test_notebook_repr_escapes():
    import analyzer

    tl = analyzer.load(FOLDER / "monitor_sleep_threads.log")
    html = tl._repr_html_()
    assert "monitor_sleep_threads.log" in html and "thread_monitor" in html
    assert repr(tl).startswith("Timeline(")


def test_space_heavy_lines_do_not_backtrack():
    # psql aligned headers over a wide column look like this; a lazy-prefix regex took minutes
    import time

    line = b" " * 3000 + b"x" + b" " * 3000 + b"\n"
    banner = b"===" + b" " * 3000 + b"x" + b" " * 3000 + b"=\n"
    started = time.process_time()
    for head in (line * 5, banner * 5):
        assert thread_monitor.sniff(head) == 0.0
        assert parse_bytes(head).accounting.skipped["unparsed_line"] == 5
    assert time.process_time() - started < 5  # linear work is milliseconds; backtracking was minutes
