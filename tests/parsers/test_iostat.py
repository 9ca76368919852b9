"""iostat: exact accounting on every real sample, golden values, times, JSON, hostile input."""

from __future__ import annotations

import datetime as dt
import io
import re
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers import iostat, registry, schema
from parsers.base import ParseContext

from .._mutate import apply_line_ops, n_lines
from ..conftest import SAMPLES

FOLDER = SAMPLES / "iostat"
TEXT_SAMPLES = sorted(p for p in FOLDER.glob("*.txt") if not p.name.startswith("handmade_"))
JSON_SAMPLES = sorted(FOLDER.glob("*.json"))
TS_LINE = re.compile(r"^\s*(Time:\s*)?\S.*\d{1,2}(:|时)\d{2}(:|分)\d{2}(秒)?(\s*[AP]M)?([+-]\d{4})?\s*$")


def run(path: Path | str, **ctx_args) -> tuple:
    path = Path(path)
    with path.open("rb") as fh:
        result = iostat.parse(fh, ctx=ParseContext(file=path.name, **ctx_args))
    return result, result.accounting



def value(result, entity: str, metric: str, ts: dt.datetime) -> float:
    df = result.metrics.filter((pl.col("entity") == entity) & (pl.col("metric") == metric))
    df = df.with_columns(pl.col("ts").dt.replace_time_zone(None))
    rows = df.filter(pl.col("ts") == ts)
    assert rows.height == 1, df
    return rows.item(0, "value")


def raw_reports(path: Path) -> list[list[str]]:
    """Independent split of a text sample into reports: lines from one report start to the next."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", path.read_text()).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    has_t = any(TS_LINE.match(ln) for ln in lines)
    starts = [i for i, ln in enumerate(lines) if (TS_LINE.match(ln) if has_t else ln.startswith("avg-cpu:"))]
    if not starts:  # -d without -t: a report starts at each Device header
        starts = [i for i, ln in enumerate(lines) if ln.startswith("Device")]
    return [lines[a:b] for a, b in zip(starts, starts[1:] + [len(lines)], strict=True)]


def value_lines(report: list[str]) -> int:
    return sum(1 for ln in report if ln.strip() and not TS_LINE.match(ln)
               and not ln.startswith(("avg-cpu:", "Device")) and not re.search(r"\sDevice\s*$", ln))


@pytest.mark.parametrize("path", TEXT_SAMPLES, ids=lambda p: p.name)
def test_real_text_sample_accounting_is_exact(path: Path):
    result, acct = run(path)
    total = n_lines(path.read_bytes())
    reports = raw_reports(path)
    since_boot = value_lines(reports[0])
    later = sum(value_lines(r) for r in reports[1:])
    assert acct.total == total
    assert acct.parsed_count + acct.skipped_count == total
    assert acct.skipped["since_boot_sample"] == since_boot > 0
    if "no_t" in path.name:  # no -t and no --interval: later reports cannot be placed
        assert dict(acct.skipped) == {"since_boot_sample": since_boot, "no_timestamp": later}
        assert result.metrics.height == 0 and result.hints["untimed_reports"] == len(reports)
    else:
        assert dict(acct.skipped) == {"since_boot_sample": since_boot}
        assert result.metrics.height > 0
        assert result.metrics.get_column("line").n_unique() == later
    assert result.host == "vm"
    assert schema.unknown_names(result.metrics, "metric", schema.METRICS) == []


def test_golden_12x_await_util_and_cpu():
    result, _ = run(FOLDER / "xt_c.txt")
    at = dt.datetime(2026, 11, 28, 5, 32, 30)
    assert value(result, "dev:vda", "disk.util_pct", at) == 51.60
    assert value(result, "dev:vda", "disk.w_await_ms", at) == 0.96
    assert value(result, "dev:vda", "disk.wareq_kb", at) == 799.91
    assert value(result, "dev:vda", "disk.write_kbps", at) == 455948.00
    # 12.x has no combined await: weighted by r/s and w/s
    assert value(result, "dev:vda", "disk.await_ms", at) == pytest.approx((1.0 * 1.00 + 570.0 * 0.96) / 571.0)
    assert value(result, "cpu:all", "cpu.iowait_pct", at) == 1.01
    assert value(result, "cpu:all", "cpu.steal_pct", at) == 1.52
    assert result.variant == "iostat avg-cpu, -x sysstat 12.x; -t C locale"
    assert result.tz_reason is None  # naive local wall clock: the framework's zone policy applies


def test_twelve_hour_clock_rolls_over_midnight():
    result, acct = run(FOLDER / "xt_en_us_midnight.txt")
    times = sorted(result.metrics.get_column("ts").unique().to_list())
    assert times[0] == dt.datetime(2026, 11, 28, 23, 59, 58)
    assert dt.datetime(2026, 11, 29, 0, 0) in times  # "11/29/2026 12:00:00 AM"
    assert times[-1] == dt.datetime(2026, 11, 29, 0, 0, 1)
    assert "12-hour" in result.variant


def test_iso_times_are_utc_aware():
    result, _ = run(FOLDER / "xt_iso.txt")
    assert result.tz_name == "UTC" and "ISO" in result.tz_reason
    assert result.metrics.schema["ts"] == pl.Datetime("ns", "UTC")


@pytest.mark.parametrize("name", ["xt_de_de.txt", "xt_fr_fr.txt", "xt_zh_cn.txt", "xt_en_ca.txt"])
def test_locales_give_same_shape(name: str):
    result, acct = run(FOLDER / name)
    assert dict(acct.skipped) == {"since_boot_sample": 2}
    assert result.metrics.get_column("ts").n_unique() == 2
    assert result.metrics.get_column("ts").min().date() == dt.date(2026, 11, 28)


def test_decimal_comma_values():
    result, _ = run(FOLDER / "xt_de_de.txt")
    text = (FOLDER / "xt_de_de.txt").read_text().splitlines()
    util = float(text[23].split()[-1].replace(",", "."))  # second report's vda row
    assert sorted(result.metrics.filter(pl.col("metric") == "disk.util_pct")["value"].to_list())[0] <= util
    assert util in result.metrics.filter(pl.col("metric") == "disk.util_pct")["value"].to_list()


def test_human_pretty_units_and_percent():
    result, _ = run(FOLDER / "h_xt_c.txt")
    lines = (FOLDER / "h_xt_c.txt").read_text().splitlines()
    row = next(ln for ln in lines[20:] if ln.strip().startswith(tuple("0123456789")) and ln.endswith("vda")
               and "rareq" not in ln)
    rkb = row.split()[1]
    expected = float(rkb[:-1]) * {"k": 1, "M": 1024, "G": 1024 ** 2}[rkb[-1]]
    assert expected in result.metrics.filter(pl.col("metric") == "disk.read_kbps")["value"].to_list()
    assert "--pretty" in result.variant and "--human" in result.variant
    cpu = result.metrics.filter(pl.col("metric") == "cpu.idle_pct")["value"]
    assert cpu.max() <= 100.0
    # pretty sub-tables are re-joined to derive the combined await
    assert result.metrics.filter(pl.col("metric") == "disk.await_ms").height == 2


def test_units_mb_and_blocks_are_converted_to_kib():
    mb, _ = run(FOLDER / "mdt_c.txt")
    blk, _ = run(FOLDER / "posix_dt_c.txt")
    mb_line = (FOLDER / "mdt_c.txt").read_text().splitlines()[9]
    assert float(mb_line.split()[3]) * 1024 in mb.metrics.filter(metric="disk.write_kbps")["value"].to_list()
    blk_line = (FOLDER / "posix_dt_c.txt").read_text().splitlines()[9]
    assert float(blk_line.split()[3]) / 2 in blk.metrics.filter(metric="disk.write_kbps")["value"].to_list()


def test_without_t_interval_and_mtime_place_reports():
    mtime = dt.datetime(2026, 11, 28, 6, 0, 0, tzinfo=dt.timezone.utc)
    result, acct = run(FOLDER / "x_c_no_t.txt", interval_s=1.0, file_mtime=mtime)
    assert dict(acct.skipped) == {"since_boot_sample": 2}
    times = sorted(result.metrics.get_column("ts").unique().to_list())
    assert [t.replace(tzinfo=None) for t in times] == [dt.datetime(2026, 11, 28, 5, 59, 59),
                                                        dt.datetime(2026, 11, 28, 6, 0, 0)]
    assert any(d.code == "times_inferred" for d in acct.diagnostics)
    assert result.tz_name == "UTC"


def test_json_with_timestamps_and_killed_run():
    result, acct = run(FOLDER / "x_json_t_c.json")
    assert dict(acct.skipped) == {"since_boot_sample": 2}
    assert acct.parsed_count + acct.skipped_count == acct.total == 35
    assert result.metrics.get_column("ts").n_unique() == 2
    assert result.host == "vm" and "JSON" in result.variant
    iso, _ = run(FOLDER / "x_json_t_iso.json")
    assert iso.tz_name == "UTC"
    killed, kacct = run(FOLDER / "x_json_t_iso_killed.json")
    assert "unparsed_line" not in kacct.skipped and killed.metrics.height > 0
    # every disk line's util equals the number printed in the file
    text = (FOLDER / "x_json_t_c.json").read_text()
    utils = [float(u) for u in re.findall(r'"util": ([\d.]+)', text)[1:]]
    assert sorted(result.metrics.filter(metric="disk.util_pct")["value"].to_list()) == sorted(utils)


def test_json_without_t_needs_interval():
    result, acct = run(FOLDER / "x_json_no_t.json")
    assert acct.skipped["no_timestamp"] == 4 and result.metrics.height == 0


def test_handmade_classic_layout():
    result, acct = run(FOLDER / "handmade_classic_x_en_us.txt")
    assert dict(acct.skipped) == {"since_boot_sample": 4}
    at = dt.datetime(2021, 11, 30, 23, 59, 59)
    assert value(result, "dev:sda", "disk.await_ms", at) == 91.22  # the classic column, not derived
    assert value(result, "dev:sda", "disk.areq_kb", at) == 500.0  # avgrq-sz 1000 sectors
    assert value(result, "dev:sda", "disk.aqu_sz", at) == 37.40
    assert value(result, "dev:sda", "disk.svctm_ms", at) == 2.41
    assert value(result, "dev:dm-0", "disk.util_pct", dt.datetime(2021, 12, 1)) == 0.40
    assert "classic" in result.variant and result.host == "localhost.localdomain"


def test_handmade_intermediate_wide_values():
    result, acct = run(FOLDER / "handmade_intermediate_x_c.txt")
    at = dt.datetime(2019, 9, 17, 14, 2, 11)
    assert value(result, "dev:nvme0n1", "disk.r_per_s", at) == 16597.0
    assert value(result, "dev:nvme0n1", "disk.write_kbps", at) == 1321984.0
    assert value(result, "dev:nvme0n1", "disk.aqu_sz", at) == 92.57
    assert "11.5-12.0" in result.variant


def test_handmade_old_time_lines_sectors_and_rollover():
    result, acct = run(FOLDER / "handmade_rhel5_time_sectors.txt")
    assert dict(acct.skipped) == {"since_boot_sample": 3}
    assert value(result, "dev:sda", "disk.write_kbps", dt.datetime(2015, 12, 31, 23, 59, 59)) == 4500.0
    assert value(result, "dev:sda", "disk.await_ms", dt.datetime(2016, 1, 1)) == 5.0
    assert "Time:" in result.variant


def test_handmade_wrapped_and_glued_rows():
    result, acct = run(FOLDER / "handmade_wrapped_glued.txt")
    assert dict(acct.skipped) == {"since_boot_sample": 1}
    assert acct.parsed_count == 18
    at = dt.datetime(2004, 7, 15, 14, 10, 6)
    assert value(result, "dev:hda", "disk.util_pct", at) == 1.0  # value from the continuation line
    assert value(result, "dev:hdc", "disk.areq_kb", at) == 4.8  # second half of a glued line
    assert value(result, "dev:hdb", "disk.util_pct", at) == 0.0


def test_hostile_input_never_raises():
    real = (FOLDER / "xt_c.txt").read_bytes()
    cases = {
        "crlf_bom": b"\xef\xbb\xbf" + real.replace(b"\n", b"\r\n"),
        "binary": bytes(range(256)) * 64,
        "long_line": real[:400] + b"x" * (10 << 20) + b"\n" + real[400:],
        "ansi": b"\x1b[1;31m" + real,
        "empty": b"",
        "truncated": real[: len(real) // 2],
    }
    for name, data in cases.items():
        result = registry.run(iostat, io.BytesIO(data), ParseContext(file=name))
        acct = result.accounting
        assert not result.hints.get("failed"), (name, acct.all_diagnostics())
        assert acct.parsed_count + acct.skipped_count == acct.total == n_lines(data), name
    crlf = registry.run(iostat, io.BytesIO(cases["crlf_bom"]), ParseContext(file="c"))
    assert crlf.accounting.skipped.get("unparsed_line", 0) == 0 and crlf.metrics.height == 48


SEEDS = [FOLDER / "xzt_c.txt", FOLDER / "h_xt_c.txt", FOLDER / "x_json_t_c.json",
         FOLDER / "handmade_wrapped_glued.txt", FOLDER / "handmade_rhel5_time_sectors.txt"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.sampled_from(SEEDS), ops=st.lists(st.tuples(st.sampled_from(["del", "dup", "flip", "cut"]),
                                                          st.integers(0, 10 ** 6), st.integers(0, 255)),
                                                max_size=6))
def test_mutated_samples_keep_accounting(seed: Path, ops):
    data = apply_line_ops(seed.read_bytes(), ops)
    result = registry.run(iostat, io.BytesIO(data), ParseContext(file=seed.name))
    acct = result.accounting
    assert not result.hints.get("failed"), acct.all_diagnostics()
    assert acct.parsed_count + acct.skipped_count == acct.total == n_lines(data)
