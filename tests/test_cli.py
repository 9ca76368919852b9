"""The command line: inspect, formats, report, timeline, exit codes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from analyzer.cli import main
from parsers import registry

from .conftest import ROOT, SAMPLES

MONITOR = SAMPLES / "thread_monitor" / "monitor_sleep_threads.log"


@pytest.fixture()
def mixed_dir(tmp_path: Path) -> Path:
    d = tmp_path / "bundle"
    d.mkdir()
    shutil.copy(MONITOR, d / "threads.log")
    (d / "blob.bin").write_bytes(bytes(range(256)) * 64)
    (d / "empty.txt").write_bytes(b"")
    return d


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "analyzer", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_inspect_json_lists_every_file(mixed_dir: Path, capsys):
    code = main(["inspect", str(mixed_dir), "--json"])
    doc = json.loads(capsys.readouterr().out)
    by_file = {s["file"]: s for s in doc["sources"]}
    assert set(by_file) == {"threads.log", "blob.bin", "empty.txt"}
    log = by_file["threads.log"]
    assert log["parser"] == "thread_monitor"
    assert log["records_total"] == MONITOR.read_bytes().count(b"\n")  # wc -l
    assert log["records_parsed"] + log["records_skipped"] == log["records_total"]
    assert log["tz"] == "UTC" and log["tz_reason"].startswith("assumed UTC")
    assert log["start"].endswith("Z") and log["end"].endswith("Z")
    assert by_file["blob.bin"]["parser"] is None
    assert by_file["empty.txt"]["parser"] is None
    for record in doc["sources"]:
        assert set(record) >= {"file", "parser", "variant", "host", "tz", "tz_reason", "start", "end",
                               "records_total", "records_parsed", "records_skipped", "skipped_by_reason"}
    assert code == 0


def test_formats_lists_registry_names(capsys):
    assert main(["formats"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split("\t")[0] for ln in lines] == registry.names()
    assert "thread_monitor" in registry.names()


def test_exit_code_nothing_recognised(tmp_path: Path):
    (tmp_path / "a.bin").write_bytes(b"\0\1\2" * 100)
    assert main(["inspect", str(tmp_path)]) == 4


def test_exit_code_usage_and_unreadable(tmp_path: Path, capsys):
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["inspect", str(MONITOR), "--tz", "Mars/Olympus"]) == 2
    assert main(["inspect", str(MONITOR), "--as", "nosuchparser=*"]) == 2
    assert main(["bogus"]) == 2
    assert main(["inspect", str(MONITOR), "--offset", "no-equals"]) == 2


def test_exit_code_degraded_when_many_lines_fail(tmp_path: Path):
    text = MONITOR.read_text() + "garbage line\n" * 5
    (tmp_path / "t.log").write_text(text)
    assert main(["inspect", str(tmp_path)]) == 3


def test_exit_code_complete_with_one_bad_line_in_many(tmp_path: Path):
    lines = MONITOR.read_text().splitlines() * 6  # 120 good lines
    (tmp_path / "t.log").write_text("\n".join(lines) + "\ngarbage\n")  # 1/121 < 1 %
    assert main(["inspect", str(tmp_path)]) == 0


def test_tz_for_and_offset_are_applied(tmp_path: Path, capsys):
    shutil.copy(MONITOR, tmp_path / "t.log")
    main(["inspect", str(tmp_path), "--json", "--tz-for", "t.log=Europe/Berlin", "--offset", "t.log=30"])
    rec = json.loads(capsys.readouterr().out)["sources"][0]
    assert rec["tz"] == "Europe/Berlin" and rec["tz_reason"] == "--tz-for t.log=Europe/Berlin"
    assert rec["clock_offset_s"] == 30.0
    first = MONITOR.read_text().split(" - ")[0]  # e.g. 2026-11-28 05:27:17 local Berlin (UTC+1 in Nov)
    hh = int(first[11:13])
    assert int(rec["start"][11:13]) == (hh - 1) % 24
    assert rec["start"][17:19] == f"{(int(first[17:19]) + 30) % 60:02d}"


def test_as_forces_parser(tmp_path: Path, capsys):
    (tmp_path / "weird.dat").write_bytes(MONITOR.read_bytes())
    main(["inspect", str(tmp_path / "weird.dat"), "--json", "--as", "thread_monitor=*.dat"])
    rec = json.loads(capsys.readouterr().out)["sources"][0]
    assert rec["parser"] == "thread_monitor" and "forced with --as" in rec["tz_reason"]


def test_report_escapes_artifact_strings(tmp_path: Path):
    d = tmp_path / "x"
    d.mkdir()
    payload = "<script>alert(1)</script>"
    (d / "t.log").write_bytes(MONITOR.read_bytes() + f"2026-01-02 10:00:05 {payload} junk\n".encode())
    (d / "\"><img src=x onerror=alert(1)>.log").write_bytes(MONITOR.read_bytes()[:50])
    out = tmp_path / "r.html"
    code = main(["report", str(d), "-o", str(out), "--json", str(tmp_path / "f.json")])
    html = out.read_text()
    assert code in (0, 3)
    assert payload not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html
    doc = json.loads((tmp_path / "f.json").read_text())
    assert doc["version"] == 1 and isinstance(doc["findings"], list) and doc["sources"]
    # nothing is fetched: no external scripts, styles or images (the browser test records requests)
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=[\"']?(https?:)?//", html, re.I)


def test_timeline_export_csv_and_parquet(tmp_path: Path):
    assert main(["timeline", str(MONITOR), "-o", str(tmp_path / "csv"), "--format", "csv"]) == 0
    metrics = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    assert metrics[0].split(",") == ["ts", "source", "host", "entity", "metric", "value", "file", "line"]
    assert metrics[1].split(",")[0].endswith("Z") and metrics[1].split(",")[-1] == "1"
    for name in ("metrics", "events", "sources", "diagnostics"):
        assert (tmp_path / "csv" / f"{name}.csv").exists()
    assert main(["timeline", str(MONITOR), "-o", str(tmp_path / "pq")]) == 0
    df = pl.read_parquet(tmp_path / "pq" / "metrics.parquet")
    assert df.schema["ts"] == pl.Datetime("ns", "UTC") and df.height == len(metrics) - 1


def test_python_dash_m_and_since_until(tmp_path: Path):
    proc = run_cli("inspect", str(MONITOR), "--json", "--since", "2000-01-01T00:00:00Z")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["sources"][0]["parser"] == "thread_monitor"


def _one_sample_per_parser() -> list[Path]:
    out = []
    for module in registry.PARSERS:
        folder = SAMPLES / getattr(module, "SAMPLES", module.NAME)
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".md"))
        if files:
            out.append(files[0])
    return out


@pytest.mark.parametrize("path", _one_sample_per_parser(), ids=lambda p: str(p.relative_to(SAMPLES)))
def test_report_on_any_single_sample(path: Path, tmp_path: Path):
    # the whole pipeline (skew estimate, rules, report) copes with one lone file of each kind
    assert main(["report", str(path), "-o", str(tmp_path / "r.html"), "--json", str(tmp_path / "f.json")]) in (0, 3)
    assert json.loads((tmp_path / "f.json").read_text())["sources"][0]["file"] == path.name
