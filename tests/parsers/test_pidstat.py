"""pidstat: exact accounting on every sample, golden thread values, clocks, entities, hostile input."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers import pidstat, registry
from parsers.base import ParseContext

from .._mutate import apply_line_ops, n_lines
from ..conftest import SAMPLES

FOLDER = SAMPLES / "pidstat"
ALL_SAMPLES = sorted(p for p in FOLDER.glob("*.txt"))
AVERAGE = re.compile(r"^(Average|Moyenne|Durchschn\.|平均时间|Media|Summary)\s?:")



def run(path: Path, **ctx_args):
    with path.open("rb") as fh:
        result = pidstat.parse(fh, ctx=ParseContext(file=path.name, **ctx_args))
    return result, result.accounting


def value(result, entity: str, metric: str, ts: dt.datetime) -> float:
    df = result.metrics.filter((pl.col("entity") == entity) & (pl.col("metric") == metric))
    rows = df.with_columns(pl.col("ts").dt.replace_time_zone(None)).filter(pl.col("ts") == ts)
    assert rows.height == 1, df
    return rows.item(0, "value")


@pytest.mark.parametrize("path", ALL_SAMPLES, ids=lambda p: p.name)
def test_accounting_is_exact(path: Path):
    """records_skipped is exactly the Average lines (and the since-boot report's rows)."""
    result, acct = run(path)
    raw = re.sub(r"\x1b\[[0-9;]*m", "", path.read_text()).splitlines()
    averages = sum(1 for ln in raw if AVERAGE.match(ln))
    assert acct.total == n_lines(path.read_bytes())
    assert acct.parsed_count + acct.skipped_count == acct.total
    if "since_boot" in path.name:
        rows = len([ln for ln in raw if ln[:1].isdigit()]) - 1  # minus the header row
        assert dict(acct.skipped) == {"since_boot_sample": rows} and result.metrics.height == 0
    elif averages:
        assert dict(acct.skipped) == {"summary_row": averages}
    else:
        assert dict(acct.skipped) == {}
    if "since_boot" not in path.name:
        assert result.metrics.height > 0


def test_golden_thread_cpu_and_io_h_t():
    result, acct = run(FOLDER / "h_urdwt_c.txt")
    at = dt.datetime(2026, 11, 28, 5, 33, 41)
    assert value(result, "tid:17126/17189", "proc.cpu_pct", at) == 2.97
    assert value(result, "tid:17126/17189", "proc.wait_pct", at) == 86.14
    assert value(result, "tid:17126/17195", "proc.write_kbps", at) == 2027.72
    assert value(result, "pid:17126", "proc.vsz_kb", at) == 395300
    assert value(result, "pid:17126", "proc.iodelay_ticks", at) == 0
    assert value(result, "tid:17126/17192", "proc.nvcswch_per_s", at) == 23.76
    ents = result.entities.filter(pl.col("entity") == "tid:17126/17189")
    assert ents.item(0, "label") == "python3"  # "|__" stripped
    assert json.loads(ents.item(0, "attrs")) == {"command": "python3", "uid": "0"}
    assert result.variant.startswith("pidstat -h -t UID")


def test_epoch_times_are_utc():
    result, _ = run(FOLDER / "hh_epoch_urdwt_c.txt")
    assert result.tz_name == "UTC" and result.metrics.schema["ts"] == pl.Datetime("ns", "UTC")
    first = int((FOLDER / "hh_epoch_urdwt_c.txt").read_text().splitlines()[3].split()[0])
    assert result.metrics.get_column("ts").min() == dt.datetime.fromtimestamp(first, dt.timezone.utc)


def test_twelve_hour_midnight_rollover():
    result, _ = run(FOLDER / "u_en_us_midnight.txt")
    cpu = result.metrics.filter(metric="proc.cpu_pct").sort("ts")
    assert cpu.get_column("ts").to_list() == [dt.datetime(2026, 11, 28, 23, 59, 58),
                                               dt.datetime(2026, 11, 28, 23, 59, 59),
                                               dt.datetime(2026, 11, 29, 0, 0), dt.datetime(2026, 11, 29, 0, 0, 1),
                                               dt.datetime(2026, 11, 29, 0, 0, 2)]
    assert cpu.get_column("value").to_list()[2] == 29.70


def test_cjk_clock_and_translated_average():
    result, acct = run(FOLDER / "urt_zh_cn.txt")
    assert value(result, "tid:17126/17192", "proc.cpu_pct", dt.datetime(2026, 11, 28, 5, 34, 19)) == 12.0
    assert acct.skipped["summary_row"] == 16 and "CJK" in result.variant


def test_decimal_comma_and_durchschn():
    result, acct = run(FOLDER / "urd_de_de.txt")
    assert value(result, "pid:17126", "proc.cpu_pct", dt.datetime(2026, 11, 28, 5, 34, 13)) == 36.0
    assert value(result, "pid:17126", "proc.mem_pct", dt.datetime(2026, 11, 28, 5, 34, 13)) == 0.06


def test_command_lines_with_spaces():
    result, _ = run(FOLDER / "l_u_c.txt")
    labels = result.entities.get_column("label").to_list()
    assert any(" --" in lab for lab in labels)
    hand, _ = run(FOLDER / "handmade_ist_zone_l.txt")
    assert hand.entities.filter(entity="pid:4242").item(0, "label") == "/usr/bin/python3 worker.py --queue default"
    assert value(hand, "pid:4242", "proc.cpu_pct", dt.datetime(2014, 9, 4, 1, 9, 7)) == 16.0
    assert "zone name IST" in hand.variant


def test_sentinels_and_placeholders_are_missing():
    result, acct = run(FOLDER / "handmade_10x_en_us_no_wait.txt")
    assert result.metrics.filter(entity="pid:2").height == 0  # kthreadd: all -1.00
    assert result.metrics.filter(metric="proc.wait_pct").height == 0  # sysstat 10: no %wait
    assert value(result, "pid:1642", "proc.write_kbps", dt.datetime(2020, 2, 15, 12, 6, 39)) == 812.0
    assert value(result, "pid:1642", "proc.cpu_pct", dt.datetime(2020, 2, 15, 12, 6, 40)) == 57.0
    h, _ = run(FOLDER / "handmade_10x_h_epoch_l.txt")
    assert h.metrics.filter((pl.col("entity") == "pid:1") & (pl.col("metric") == "proc.read_kbps")).height == 0
    assert h.metrics.filter(metric="proc.rss_kb").height == 4


def test_no_uid_layout():
    result, _ = run(FOLDER / "handmade_9x_no_uid.txt")
    assert value(result, "pid:2318", "proc.cpu_pct", dt.datetime(2015, 3, 2, 20, 28, 20)) == 100.0
    assert "no UID" in result.variant


def test_other_reports():
    v, _ = run(FOLDER / "v_c.txt")
    assert set(v.metrics.get_column("metric").unique()) == {"proc.threads", "proc.fd_nr"}
    assert v.metrics.filter(metric="proc.threads")["value"].to_list() == [6.0, 6.0, 6.0]
    s, _ = run(FOLDER / "s_c.txt")
    assert set(s.metrics.get_column("metric").unique()) == {"proc.stack_size_kb", "proc.stack_ref_kb"}
    r, _ = run(FOLDER / "rr_c.txt")
    assert set(r.metrics.get_column("metric").unique()) == {"proc.prio"}
    u, _ = run(FOLDER / "uu_user_c.txt")
    assert json.loads(u.entities.item(0, "attrs"))["user"] == "root"


def test_hostile_input_never_raises():
    real = (FOLDER / "t_u_c.txt").read_bytes()
    cases = [b"\xef\xbb\xbf" + real.replace(b"\n", b"\r\n"), bytes(range(256)) * 64,
             real[:300] + b"y" * (10 << 20) + b"\n" + real[300:], b"", real[: len(real) // 3]]
    for data in cases:
        result = registry.run(pidstat, io.BytesIO(data), ParseContext(file="hostile"))
        acct = result.accounting
        assert not result.hints.get("failed"), acct.all_diagnostics()
        assert acct.parsed_count + acct.skipped_count == acct.total == n_lines(data)
    crlf = registry.run(pidstat, io.BytesIO(cases[0]), ParseContext(file="c"))
    assert dict(crlf.accounting.skipped) == {"summary_row": 7}


SEEDS = [FOLDER / "h_urdwt_c.txt", FOLDER / "t_multi_c.txt", FOLDER / "urt_zh_cn.txt",
         FOLDER / "handmade_10x_en_us_no_wait.txt"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS), ops=st.lists(st.tuples(st.sampled_from(["del", "dup", "flip", "cut"]),
                                                          st.integers(0, 10 ** 6), st.integers(0, 255)),
                                                max_size=6))
def test_mutated_samples_keep_accounting(seed: Path, ops):
    data = apply_line_ops(seed.read_bytes(), ops)
    result = registry.run(pidstat, io.BytesIO(data), ParseContext(file=seed.name))
    acct = result.accounting
    assert not result.hints.get("failed"), acct.all_diagnostics()
    assert acct.parsed_count + acct.skipped_count == acct.total == n_lines(data)
