"""applog: exact counts and golden values on the real samples in samples/applogs/ (made by
samples/generate/applog_samples.py), the bundles' app.log, look-alikes, batch boundaries,
and mutated logs (hypothesis)."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers import applog, registry
from parsers._asyncio_repr import parse_repr, split_location
from parsers.base import ParseContext

from ..conftest import SAMPLES

APPLOGS = SAMPLES / "applogs"
BUNDLES = sorted(
    p
    for p in (SAMPLES / "bundles").glob("*")
    if (p / "app.log").is_file() and (p / "expected.json").is_file()
)
UTC = dt.timezone.utc

# file: (lines, timed events, untimed records, metric rows, events by kind)
EXPECTED = {
    "gunicorn_uvicorn_worker.log": (
        68,
        18,
        0,
        4,
        {
            "http.request": 5,
            "log.error": 1,
            "loop.slow_callback": 2,
            "server.start": 3,
            "server.stop": 2,
            "server.worker_boot": 2,
            "server.worker_exit": 2,
            "server.worker_timeout": 1,
        },
    ),
    "handmade_lookalikes.log": (
        24,
        8,
        0,
        6,
        {
            "asyncio.task_destroyed": 1,
            "db.pool_error": 2,
            "loop.poll_slow": 1,
            "loop.slow_callback": 3,
            "os.too_many_open_files": 1,
        },
    ),
    "handmade_transcript_windows.log": (
        16,
        0,
        8,
        0,
        {"asyncio.task_destroyed": 1, "loop.poll_slow": 1, "loop.slow_callback": 6},
    ),
    "py311_accept_emfile.log": (96, 3, 0, 0, {"os.too_many_open_files": 3}),
    "py310_asctime_dash.log": (
        100,
        11,
        0,
        4,
        {
            "asyncio.exception_never_retrieved": 3,
            "asyncio.task_destroyed": 1,
            "log.error": 2,
            "loop.slow_callback": 4,
            "os.too_many_open_files": 1,
        },
    ),
    "py311_aiodebug.log": (
        36,
        11,
        0,
        4,
        {
            "asyncio.exception_never_retrieved": 3,
            "asyncio.task_destroyed": 1,
            "log.error": 2,
            "loop.slow_callback": 4,
            "os.too_many_open_files": 1,
        },
    ),
    "py311_asctime_db.log": (
        141,
        12,
        0,
        4,
        {
            "asyncio.exception_never_retrieved": 3,
            "asyncio.task_destroyed": 1,
            "db.timeout": 1,
            "log.error": 2,
            "loop.slow_callback": 4,
            "os.too_many_open_files": 1,
        },
    ),
    "py311_json.log": (
        13,
        11,
        0,
        4,
        {
            "asyncio.exception_never_retrieved": 3,
            "asyncio.task_destroyed": 1,
            "log.error": 2,
            "loop.slow_callback": 4,
            "os.too_many_open_files": 1,
        },
    ),
    "py311_nodebug_longrunning.log": (
        33,
        8,
        0,
        3,
        {
            "asyncio.exception_never_retrieved": 3,
            "asyncio.task_destroyed": 1,
            "log.error": 2,
            "loop.slow_callback": 1,
            "os.too_many_open_files": 1,
        },
    ),
    "py311_uvloop_basicconfig.log": (
        66,
        0,
        11,
        0,
        {
            "asyncio.exception_never_retrieved": 3,
            "asyncio.task_destroyed": 1,
            "log.error": 2,
            "loop.slow_callback": 4,
            "os.too_many_open_files": 1,
        },
    ),
    "py312_iso_offset.log": (
        102,
        11,
        0,
        4,
        {
            "asyncio.exception_never_retrieved": 3,
            "asyncio.task_destroyed": 1,
            "log.error": 2,
            "loop.slow_callback": 4,
            "os.too_many_open_files": 1,
        },
    ),
    "py313_basicconfig.log": (
        100,
        0,
        11,
        0,
        {
            "asyncio.exception_never_retrieved": 3,
            "asyncio.task_destroyed": 1,
            "log.error": 2,
            "loop.slow_callback": 4,
            "os.too_many_open_files": 1,
        },
    ),
    "py313_lastresort_nodebug.log": (
        31,
        0,
        7,
        0,
        {
            "asyncio.exception_never_retrieved": 3,
            "asyncio.task_destroyed": 1,
            "log.error": 1,
            "loop.slow_callback": 1,
            "os.too_many_open_files": 1,
        },
    ),
    "py36_lastresort.log": (
        102,
        0,
        10,
        0,
        {
            "asyncio.exception_never_retrieved": 3,
            "asyncio.task_destroyed": 1,
            "log.error": 1,
            "loop.slow_callback": 4,
            "os.too_many_open_files": 1,
        },
    ),
    "py37_lastresort.log": (
        98,
        0,
        10,
        0,
        {
            "asyncio.exception_never_retrieved": 3,
            "asyncio.task_destroyed": 1,
            "log.error": 1,
            "loop.slow_callback": 4,
            "os.too_many_open_files": 1,
        },
    ),
    "py38_basicconfig.log": (
        98,
        0,
        11,
        0,
        {
            "asyncio.exception_never_retrieved": 3,
            "asyncio.task_destroyed": 1,
            "log.error": 2,
            "loop.slow_callback": 4,
            "os.too_many_open_files": 1,
        },
    ),
    "py39_asctime_nosep.log": (
        102,
        11,
        0,
        2,
        {
            "asyncio.exception_never_retrieved": 3,
            "asyncio.task_destroyed": 1,
            "log.error": 2,
            "loop.slow_callback": 4,
            "os.too_many_open_files": 1,
        },
    ),
    "uvicorn_asyncio_debug.log": (
        55,
        0,
        12,
        0,
        {"http.request": 7, "log.error": 1, "loop.slow_callback": 2, "server.start": 1, "server.stop": 1},
    ),
    "uvicorn_app_asctime.log": (
        56,
        11,
        1,
        2,
        {"http.request": 7, "log.error": 1, "loop.slow_callback": 2, "server.start": 1, "server.stop": 1},
    ),
    "uvicorn_nodebug.log": (
        53,
        0,
        10,
        0,
        {"http.request": 7, "log.error": 1, "server.start": 1, "server.stop": 1},
    ),
    "uvicorn_uvloop_debug_colors.log": (
        55,
        0,
        12,
        0,
        {"http.request": 7, "log.error": 1, "loop.slow_callback": 2, "server.start": 1, "server.stop": 1},
    ),
}

# independent of the parser: a warning line closes with " took N.NNN seconds"
TOOK_RE = re.compile(r" took \d+\.\d{3} seconds")
BARE_DUPLICATE_RE = re.compile(r"Executing took \d")  # aiodebug users' companion line (same stall)
LONG_RUNNING_RE = re.compile(r"Long-running callback: \S+ took \d+\.\d+s")


def parse_file(path: Path, tz: dt.tzinfo = UTC, **kw) -> applog.ParseResult:
    with open(path, "rb") as fh:
        return registry.run(applog, fh, ParseContext(file=path.name, tz=tz, **kw))


def parse_bytes(data: bytes) -> applog.ParseResult:
    return applog.parse(io.BytesIO(data), ctx=ParseContext(file="mem.log"))


def all_events(result) -> pl.DataFrame:
    frames = [result.events.drop("ts", "end")]
    if "applog_untimed" in result.tables:
        frames.append(result.tables["applog_untimed"])
    return pl.concat(frames, how="diagonal_relaxed")


def attrs(row: dict) -> dict:
    return json.loads(row["attrs"])


def test_samples_are_all_listed():
    on_disk = {p.name for p in APPLOGS.glob("*") if not p.name.endswith(".md")}
    assert on_disk == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_counts(name):
    lines, timed, untimed, metric_rows, kinds = EXPECTED[name]
    result = parse_file(APPLOGS / name)
    acct = result.accounting
    assert acct.total == lines == (APPLOGS / name).read_bytes().count(b"\n")
    assert acct.parsed_count == lines and acct.skipped_count == 0
    assert result.events.height == timed
    table = result.tables.get("applog_untimed")
    assert (0 if table is None else table.height) == untimed
    assert result.metrics.height == metric_rows
    assert result.hints["applog_event_kinds"] == kinds
    assert dict(all_events(result).group_by("kind").len().iter_rows()) == kinds


@pytest.mark.parametrize(
    "path",
    sorted(APPLOGS.glob("*.log")) + [b / "app.log" for b in BUNDLES],
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_slow_callback_count_matches_independent_count(path):
    text = path.read_text(errors="replace")
    expected = sum(
        1 for ln in text.splitlines() if TOOK_RE.search(ln) and not BARE_DUPLICATE_RE.search(ln)
    ) + sum(1 for ln in text.splitlines() if LONG_RUNNING_RE.search(ln))
    events = all_events(parse_file(path))
    assert events.filter(pl.col("kind") == "loop.slow_callback").height == expected


def test_golden_task_form_asctime():
    result = parse_file(APPLOGS / "py311_asctime_db.log")
    row = result.events.filter(pl.col("line") == 2).row(0, named=True)
    assert row["kind"] == "loop.slow_callback" and row["value"] == pytest.approx(0.251)
    assert row["end"] == dt.datetime(2026, 11, 28, 5, 43, 7, 837000, tzinfo=UTC)
    assert row["ts"] == dt.datetime(2026, 11, 28, 5, 43, 7, 586000, tzinfo=UTC)
    assert row["entity"] == "coro:main@/tmp/stallscope-applog/app/faults.py:130"
    a = attrs(row)
    assert (a["task_name"], a["coro"], a["running_at"], a["state"]) == (
        "Task-1",
        "main",
        "/tmp/stallscope-applog/app/faults.py:130",
        "pending",
    )
    assert a["created_at"] == "/root/.pyenv/versions/3.11.7/lib/python3.11/asyncio/tasks.py:680"
    assert (a["logger"], a["repr_family"]) == ("asyncio", "task")


def test_golden_handle_and_timerhandle_forms():
    rows = parse_file(APPLOGS / "py311_asctime_db.log").events.filter(pl.col("line").is_in([3, 4])).to_dicts()
    handle, timer = (attrs(r) for r in rows)
    assert (
        rows[0]["entity"]
        == rows[1]["entity"]
        == "coro:slow_plain_callback@/tmp/stallscope-applog/app/faults.py:74"
    )
    assert (handle["repr_family"], handle["callback"], handle["created_at"]) == (
        "handle",
        "slow_plain_callback",
        "/tmp/stallscope-applog/app/faults.py:128",
    )
    assert (timer["repr_family"], timer["created_at"]) == (
        "timerhandle",
        "/tmp/stallscope-applog/app/faults.py:129",
    )
    assert [r["value"] for r in rows] == [0.150, 0.120]


def test_golden_py37_no_task_name_and_relative_paths():
    table = parse_file(APPLOGS / "py37_lastresort.log").tables["applog_untimed"]
    first = table.filter(pl.col("line") == 1).row(0, named=True)
    a = attrs(first)
    assert first["entity"] == "coro:main@faults.py:130" and "task_name" not in a
    assert a["created_at"] == "/root/.pyenv/versions/3.7.16/lib/python3.7/asyncio/base_events.py:566"
    done = attrs(table.filter(pl.col("line") == 4).row(0, named=True))
    assert (done["coro"], done["coro_state"], done["defined_at"]) == (
        "blocking_handler",
        "done",
        "faults.py:69",
    )


def test_golden_uvloop_handle_without_args():
    table = parse_file(APPLOGS / "py311_uvloop_basicconfig.log").tables["applog_untimed"]
    row = table.filter(pl.col("line") == 2).row(0, named=True)
    assert row["entity"] == "coro:slow_plain_callback" and row["value"] == 0.150
    assert attrs(row)["created_at"] == "/tmp/stallscope-applog/app/faults.py:128"


def test_golden_iso_offset_is_aware():
    result = parse_file(APPLOGS / "py312_iso_offset.log", tz=ZoneInfo("America/New_York"))
    assert result.tz_reason and result.tz_name == "UTC"
    row = result.events.filter(pl.col("line") == 3).row(0, named=True)
    assert row["end"] == dt.datetime(2026, 11, 28, 5, 43, 15, 890000, tzinfo=UTC)  # 11:13:15.890+0530
    assert attrs(row)["pid"] == 8448


def test_golden_json_lines():
    result = parse_file(APPLOGS / "py311_json.log")
    row = result.events.filter(pl.col("line") == 2).row(0, named=True)
    assert row["entity"] == "coro:main@/tmp/stallscope-applog/app/faults.py:130"
    assert row["end"] == dt.datetime(2026, 11, 28, 5, 43, 9, 737000, tzinfo=UTC)
    err = result.events.filter(pl.col("kind") == "os.too_many_open_files").row(0, named=True)
    assert attrs(err)["exception_type"] == "OSError" and "[Errno 24]" in attrs(err)["exception_message"]


def test_gunicorn_worker_timeout_and_unprefixed_lines_inherit_time():
    events = parse_file(APPLOGS / "gunicorn_uvicorn_worker.log").events
    timeout = events.filter(pl.col("kind") == "server.worker_timeout").row(0, named=True)
    assert (timeout["line"], timeout["entity"], timeout["severity"]) == (51, "pid:9017", "high")
    assert timeout["ts"] == dt.datetime(2026, 11, 28, 5, 43, 32, tzinfo=UTC)
    slow = events.filter(pl.col("kind") == "loop.slow_callback").to_dicts()
    assert [r["line"] for r in slow] == [11, 60]
    assert all(
        r["entity"].startswith("coro:RequestResponseCycle.run_asgi@")
        and r["entity"].endswith("uvicorn/protocols/http/h11_impl.py:409")
        for r in slow
    )
    err = events.filter(pl.col("kind") == "log.error").row(0, named=True)
    assert attrs(err)["exception_type"] == "RuntimeError" and err["entity"] == "pid:9017"


def test_exception_handler_records():
    events = parse_file(APPLOGS / "py311_asctime_db.log").events
    destroyed = events.filter(pl.col("kind") == "asyncio.task_destroyed").row(0, named=True)
    a = attrs(destroyed)
    assert destroyed["entity"] == "coro:waits_forever@/tmp/stallscope-applog/app/faults.py:84"
    assert a["has_source_traceback"] is True and a["task_name"] == "Task-6"
    never = events.filter(pl.col("kind") == "asyncio.exception_never_retrieved").sort("line").to_dicts()
    assert [
        (attrs(r)["object_class"], attrs(r)["exception_type"], attrs(r)["exception_message"]) for r in never
    ] == [
        ("_GatheringFuture", "ValueError", "bad input a"),
        ("Future", "RuntimeError", "upstream closed"),
        ("Task", "ValueError", "bad input task"),
    ]
    assert never[2]["entity"] == "coro:fails@/tmp/stallscope-applog/app/faults.py:78"
    timeout = events.filter(pl.col("kind") == "db.timeout").row(0, named=True)
    assert attrs(timeout)["exception_type"] == "TimeoutError"


def test_accept_out_of_files_names_the_listening_endpoint():
    events = parse_file(APPLOGS / "py311_accept_emfile.log").events
    port = re.search(r"listening on 127\.0\.0\.1:(\d+)", (APPLOGS / "py311_accept_emfile.log").read_text()).group(1)
    assert events.height == 3
    for row in events.to_dicts():
        assert row["kind"] == "os.too_many_open_files" and row["entity"] == f"endpoint:127.0.0.1:{port}"
        assert attrs(row)["exception_message"] == "[Errno 24] Too many open files"
        assert attrs(row)["process"] == "proc:asyncio"
    # an EMFILE from open() names no listener: the process stays the entity
    other = parse_file(APPLOGS / "py311_asctime_db.log").events.filter(pl.col("kind") == "os.too_many_open_files")
    assert other.get_column("entity").to_list() == ["proc:shop.worker"]


def test_uvicorn_access_lines_and_colours():
    plain = parse_file(APPLOGS / "uvicorn_asyncio_debug.log").tables["applog_untimed"]
    coloured = parse_file(APPLOGS / "uvicorn_uvloop_debug_colors.log").tables["applog_untimed"]
    for table in (plain, coloured):
        access = table.filter(pl.col("kind") == "http.request")
        assert sorted(access.get_column("entity").unique().to_list()) == [
            "http:GET /block",
            "http:GET /boom",
            "http:GET /missing",
            "http:GET /ok",
        ]
        statuses = sorted(attrs(r)["status"] for r in access.to_dicts())
        assert statuses == [200, 200, 200, 200, 200, 404, 500]


def test_lookalikes_are_not_slow_callbacks():
    events = parse_file(APPLOGS / "handmade_lookalikes.log").events
    assert events.filter(pl.col("line").is_in([1, 2, 24])).height == 0  # Airflow, "Executing query took"
    slow = events.filter(pl.col("kind") == "loop.slow_callback").sort("line").to_dicts()
    assert [(r["line"], r["value"]) for r in slow] == [(4, 2.306), (5, 2.3051), (6, 0.640)]
    assert slow[2]["entity"] == (
        "coro:Connection._on_timeout@/srv/shop/.venv/lib/python3.11/site-packages/asyncpg/connection.py:1460"
    )
    assert (
        attrs(slow[2])["created_at"]
        == "/srv/shop/.venv/lib/python3.11/site-packages/asyncpg/connection.py:1455"
    )
    # the app's own report of the same stall (line 5) adds only the 2 ms it reaches past line 4's
    stall = events.filter(pl.col("kind") == "loop.slow_callback")
    assert stall.height == 3
    metrics = parse_file(APPLOGS / "handmade_lookalikes.log").metrics
    total = metrics.filter(pl.col("metric") == "loop.stall_ms").get_column("value").sum()
    assert total == pytest.approx(2306 + 2 + 640, abs=0.01)


def test_transcript_wrapped_windows_dots_and_historic_forms():
    table = parse_file(APPLOGS / "handmade_transcript_windows.log").tables["applog_untimed"]
    slow = {r["line"]: r for r in table.filter(pl.col("kind") == "loop.slow_callback").to_dicts()}
    assert sorted(slow) == [1, 2, 3, 7, 9, 11]
    assert slow[2]["entity"] == r"coro:blocking_io@D:\work\proj\intro_asyncio.py:29"
    assert slow[3]["entity"] == r"coro:main@e:\project\svc\handlers\orders.py:12"  # rejoined over 3 lines
    assert attrs(slow[3])["created_at"] == r"C:\Python312\Lib\asyncio\runners.py:100"
    assert slow[7]["entity"] == "coro:slow_callback" and attrs(slow[7])["repr_family"] == "handle-legacy"
    assert slow[11]["entity"] == "loop:main"  # uvloop's C wrapper names no Python callback
    assert split_location(r"D:\x\y.py:41") == (r"D:\x\y.py", 41)


def test_no_timestamps_diagnostic():
    result = parse_file(APPLOGS / "py37_lastresort.log")
    codes = {d.code for d in result.accounting.diagnostics}
    assert "no_timestamp" in codes and result.events.height == 0 and result.metrics.height == 0


def test_stall_split_per_second_at_end_of_second():
    line = (
        "2026-01-02 10:00:06,600 WARNING asyncio: Executing <Task finished name='Task-9' coro=<h() done, "
        "defined at /app/main.py:42> result=None created at /app/main.py:7> took 1.300 seconds\n"
    )
    result = parse_bytes(line.encode())
    stall = result.metrics.filter(pl.col("metric") == "loop.stall_ms").sort("ts")
    assert stall.select("ts", "value").rows() == [
        (dt.datetime(2026, 1, 2, 10, 0, 6), pytest.approx(700.0)),
        (dt.datetime(2026, 1, 2, 10, 0, 7), pytest.approx(600.0)),
    ]
    count = result.metrics.filter(pl.col("metric") == "loop.slow_callbacks")
    assert count.select("ts", "value").rows() == [(dt.datetime(2026, 1, 2, 10, 0, 7), 1.0)]
    assert set(result.metrics.get_column("entity")) == {"loop:main"}


@pytest.mark.parametrize("batch", [64, 300, 4096])
def test_batch_boundaries_do_not_change_results(monkeypatch, batch):
    names = [
        "py311_asctime_db.log",
        "gunicorn_uvicorn_worker.log",
        "py36_lastresort.log",
        "handmade_transcript_windows.log",
        "uvicorn_app_asctime.log",
    ]
    reference = {n: parse_file(APPLOGS / n) for n in names}
    monkeypatch.setattr(applog, "BATCH_BYTES", batch)
    for name in names:
        got, ref = parse_file(APPLOGS / name), reference[name]
        assert got.accounting.total == ref.accounting.total
        assert all_events(got).sort("line", "kind").equals(all_events(ref).sort("line", "kind")), name
        assert got.metrics.equals(ref.metrics)


@pytest.mark.parametrize("batch", [64, 4096, applog.BATCH_BYTES])
def test_untimed_access_lines_take_the_time_before_them(monkeypatch, batch):
    """uvicorn's access lines carry no time when only the app's root logger prints one: each
    takes the time of the last line before it that has one, also when that line is in an
    earlier batch (64 bytes: nearly every line is a batch of its own; 4 kB: some access lines
    open a batch and are read column-wise with the time carried over)."""
    path = APPLOGS / "uvicorn_app_asctime.log"
    monkeypatch.setattr(applog, "BATCH_BYTES", batch)
    events = parse_file(path).events.filter(pl.col("kind") == "http.request")
    lines = path.read_text().splitlines()
    expected, last = [], None
    for number, text in enumerate(lines, 1):
        stamp = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ", text)
        if stamp:
            last = dt.datetime.strptime(stamp[1], "%Y-%m-%d %H:%M:%S").replace(
                microsecond=int(stamp[2]) * 1000, tzinfo=UTC
            )
        elif '" 200 OK' in text or '" 404 ' in text or '" 500 ' in text:
            assert last is not None, "the sample has an access line before any time"
            expected.append((number, last))
    assert len(expected) == 7
    assert events.select("line", "ts").rows() == expected


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_access_events_name_the_logger_and_level_of_their_line(bundle):
    """Access lines are read column-wise in bulk and one by one at batch ends; both ways give
    the event the logger, pid and level of the line's prefix."""
    rows = parse_file(bundle / "app.log").events.filter(pl.col("kind") == "http.request").to_dicts()
    lines = (bundle / "app.log").read_text(errors="replace").splitlines()
    assert rows
    for row in rows:
        head = re.match(r"\S+ \S+ (?P<level>[A-Z]+) (?P<logger>[\w.]+): ", lines[row["line"] - 1])
        a = attrs(row)
        assert (a.get("level"), a.get("logger")) == (head["level"], head["logger"])


@pytest.mark.parametrize("bundle", BUNDLES, ids=lambda p: p.name)
def test_bundle_slow_callbacks_overlap_injected_blocking(bundle):
    expected = json.loads((bundle / "expected.json").read_text())
    zone = ZoneInfo((bundle / "host" / "timezone").read_text().strip())
    with open(bundle / "app.log", "rb") as fh:
        result = registry.run(applog, fh, ParseContext(file="app.log", tz=zone))
    slow = result.events.filter(pl.col("kind") == "loop.slow_callback")
    faults = [f for f in expected["faults"] if f["key"] == "event_loop_blocked"]
    text = (bundle / "app.log").read_text(errors="replace")
    for row in slow.to_dicts():  # the printed coroutine and file:line are in the attributes
        a = attrs(row)
        where = a.get("running_at") or a.get("defined_at") or a.get("source") or a["created_at"]
        assert where in text
        assert f"coro=<{a['coro']}() " in text if "coro" in a else f"{a['callback']}" in text
    for fault in faults:
        start = dt.datetime.fromisoformat(fault["start"].replace("Z", "+00:00"))
        end = dt.datetime.fromisoformat(fault["end"].replace("Z", "+00:00"))
        inside = slow.filter((pl.col("end") >= start) & (pl.col("ts") <= end + dt.timedelta(seconds=2)))
        assert inside.height >= 1, fault
        assert fault["root"]["coro"] in {attrs(r).get("coro") for r in inside.to_dicts()}


def test_sniff_claims_python_logs_only():
    for name in EXPECTED:
        assert applog.sniff((APPLOGS / name).read_bytes()[:65536]) >= 0.5, name
    tracebacks_only = (
        b'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\nValueError: x\n'
    )
    assert applog.sniff(tracebacks_only) >= 0.5
    folders = {SAMPLES / getattr(m, "SAMPLES", m.NAME) for m in registry.PARSERS if m.NAME != "applog"}
    others = [
        p
        for folder in folders
        if folder.is_dir()
        for p in folder.rglob("*")
        if p.is_file() and not p.name.endswith(".md")
    ]
    assert others, "expected other parsers' samples to compare against"
    claimed = [str(p) for p in others if applog.sniff(p.read_bytes()[:65536]) >= 0.5]
    assert claimed == []
    assert applog.sniff(b"\x00\x01\x02binary") == 0.0 and applog.sniff(b"") == 0.0


def test_repr_edge_cases():
    info = parse_repr(
        "<Task cancelling name='t' coro=<A.<locals>.b() running at /a.py:3> cb=[x(), <1 more>, y()]>"
    )
    assert (info.state, info.coro, info.location) == ("cancelling", "A.<locals>.b", "/a.py:3")
    info = parse_repr("<Handle cancelled f(<x>, 'a>b') at /m.py:9>")
    assert (info.state, info.callback, info.location) == ("cancelled", "f", "/m.py:9")


def test_bad_input_never_raises():
    junk = (
        b"\x00\xff\xfe" * 1000 + b"\nWARNING:asyncio:Executing <Task" + b"x" * 300_000 + b"\n\xef\xbb\xbf\r\n"
    )
    result = parse_bytes(junk)
    acct = result.accounting
    assert acct.total == 3 and acct.parsed_count + acct.skipped_count == 3
    assert acct.skipped.get("decode_error") == 1


def test_variant_counts_the_lines_read_column_wise():
    """The file's log format is named also when every record is read column-wise (here the
    real slow-callback warnings of a sample and nothing else)."""
    lines = (APPLOGS / "py311_asctime_db.log").read_text().splitlines(keepends=True)
    warnings = [ln for ln in lines if re.search(r"Executing <.*> took \d+\.\d+ seconds$", ln)]
    result = parse_bytes("".join(warnings).encode())
    assert result.events.height == len(warnings) > 0
    assert result.variant == "logging with %(asctime)s"
    bundle = parse_file(BUNDLES[0] / "app.log")
    assert bundle.variant.startswith("logging with %(asctime)s")


def _with_nul_lines(*runs: int) -> tuple[bytes, int]:
    """A real sample with runs of corrupted lines (a NUL byte in each, hand-made: no tool
    here writes them) between copies of it; returns the bytes and their line count."""
    sample = (APPLOGS / "py311_asctime_db.log").read_bytes()
    bad = b"2026-11-28 05:43:07,000 INFO app: \x00\x00 corrupted\n"
    data = sample + b"".join(bad * n + sample for n in runs)
    return data, data.count(b"\n")


@pytest.mark.parametrize("batch", [4096, applog.BATCH_BYTES])
def test_scattered_bad_lines_do_not_abandon_the_file(monkeypatch, batch):
    """1,500 corrupted lines, good ones, 1,500 more: no run reaches the 2,000 that abandon a file."""
    monkeypatch.setattr(applog, "BATCH_BYTES", batch)
    data, lines = _with_nul_lines(1500, 1500)
    acct = parse_bytes(data).accounting
    assert not acct.abandoned
    assert acct.total == lines and acct.skipped.get("decode_error") == 3000
    assert acct.parsed_count == lines - 3000


@pytest.mark.parametrize("batch", [4096, 16384])
def test_a_long_run_of_bad_lines_abandons_and_counts_every_line(monkeypatch, batch):
    """Batches are scanned ahead in parallel: the lines of those not yet taken when the file
    is abandoned are counted as abandoned, none lost. (Abandoning is decided between
    batches, so the batches here are smaller than the file.)"""
    monkeypatch.setattr(applog, "BATCH_BYTES", batch)
    data, lines = _with_nul_lines(2500, 0, 0)
    acct = parse_bytes(data).accounting
    assert acct.abandoned
    assert acct.total == lines and acct.parsed_count + acct.skipped_count == lines
    assert acct.skipped.get("decode_error") >= 2000 and acct.skipped.get("abandoned") > 0


SAMPLE_BYTES = [
    (APPLOGS / n).read_bytes()
    for n in (
        "py311_asctime_db.log",
        "gunicorn_uvicorn_worker.log",
        "py36_lastresort.log",
        "py311_json.log",
        "handmade_transcript_windows.log",
        "uvicorn_uvloop_debug_colors.log",
    )
]


@st.composite
def mutated_log(draw):
    data = bytearray(draw(st.sampled_from(SAMPLE_BYTES)))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "dup", "crlf"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            data = data[:pos] + data[pos + draw(st.integers(0, 400)) :]
        elif op == "insert":
            data[pos:pos] = draw(
                st.sampled_from(
                    [
                        b"\n",
                        b"\x1b[31m",
                        b" took 1.5 seconds",
                        b"Traceback (most recent call last):\n",
                        b"\x00",
                        b'{"msg": ',
                        b"Executing <Task ",
                        b"2026-13-45 99:99:99,000 ERROR x: y\n",
                    ]
                )
            )
        elif op == "dup":
            data[pos:pos] = data[pos : pos + draw(st.integers(0, 300))]
        else:
            data = bytearray(bytes(data).replace(b"\n", b"\r\n"))
    return bytes(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_log())
def test_mutated_logs_never_raise_and_accounting_holds(data):
    result = parse_bytes(data)
    acct = result.accounting
    expected_lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    assert acct.total == expected_lines
    assert acct.parsed_count + acct.skipped_count == acct.total
    assert acct.skipped.get("unparsed_line", 0) == 0
    finished = registry.finalize(result, "applog", ParseContext(file="mem.log"))
    assert finished.events.height >= 0


@pytest.mark.parametrize(
    "name",
    [
        "py311_asctime_db.log",
        "handmade_lookalikes.log",
        "py312_iso_offset.log",
        "py39_asctime_nosep.log",
        "gunicorn_uvicorn_worker.log",
    ],
)
def test_column_wise_and_per_line_paths_agree(monkeypatch, name):
    fast = parse_file(APPLOGS / name)
    monkeypatch.setattr(applog, "FAST_RX", r"^\b$never")  # every warning through the per-line path
    slow = parse_file(APPLOGS / name)
    assert fast.events.sort("line").equals(slow.events.sort("line"))
    assert fast.metrics.equals(slow.metrics)
