"""Ground truth of the committed sample bundles, checked on the raw artifacts.

Every fault listed in a bundle's expected.json must have left its mark in the raw files
the generator collected, measured here with plain Python (no stallscope code): asyncio
slow-callback warnings in the app log, iostat %util/await of the root device, the thread
monitor's count, pg_stat_statements counters, RST segments and TCP retransmissions in the
captures (tshark; those checks carry the `tools` marker). A fault-free bundle must show none
of these marks.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import shutil
import statistics
import subprocess
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUNDLES = sorted(p for p in (ROOT / "samples" / "bundles").glob("*") if (p / "expected.json").is_file())
KEYS = {
    "event_loop_blocked",
    "slow_query",
    "disk_saturation",
    "thread_exhaustion",
    "db_pool_exhaustion",
    "connection_resets",
    "network_retransmissions",
    "syn_backlog_overflow",
    "kernel_limit",
}
REQUIRED_FILES = [
    "threads.log",
    "iostat.txt",
    "iostat.json",
    "pidstat_threads.txt",
    "pidstat.txt",
    "pgss_snapshots.csv",
    "pgss_final.txt",
    "capture.pcap.gz",
    "app.log",
    "host/uname.txt",
    "host/date.txt",
    "host/timezone",
    "expected.json",
    "PROVENANCE.md",
]
SLOW_CALLBACK = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) WARNING asyncio: Executing .* took (\d+\.\d{3}) seconds$"
)
NEEDS_TSHARK = {"connection_resets", "network_retransmissions", "syn_backlog_overflow"}
RECORD_START = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (\w+) ")
THREAD_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) - PID: (\d+), Threads: (\d+)$")


def utc(text: str) -> dt.datetime:
    assert text.endswith("Z"), text
    return dt.datetime.fromisoformat(text[:-1]).replace(tzinfo=dt.timezone.utc)


def load(bundle: Path) -> dict:
    return json.loads((bundle / "expected.json").read_text())


def local_zone(bundle: Path) -> ZoneInfo:
    return ZoneInfo((bundle / "host" / "timezone").read_text().strip())


def fault_cases():
    for bundle in BUNDLES:
        for i, fault in enumerate(load(bundle)["faults"]):
            marks = [pytest.mark.tools] if fault["key"] in NEEDS_TSHARK else []
            yield pytest.param(bundle, i, id=f"{bundle.name}-{i}-{fault['key']}", marks=marks)


def window(fault: dict) -> tuple[dt.datetime, dt.datetime]:
    return utc(fault["start"]), utc(fault["end"])


def secs(n: float) -> dt.timedelta:
    return dt.timedelta(seconds=n)


# ---------------------------------------------------------------- raw readers


def slow_callbacks(bundle: Path) -> list[tuple[dt.datetime, float]]:
    """(end of the stall in UTC, seconds) for each asyncio slow-callback warning."""
    zone = local_zone(bundle)
    found = []
    for line in (bundle / "app.log").read_text(errors="replace").splitlines():
        m = SLOW_CALLBACK.match(line)
        if m:
            ts = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(
                microsecond=int(m.group(2)) * 1000, tzinfo=zone
            )
            found.append((ts.astimezone(dt.timezone.utc), float(m.group(3))))
    return found


def log_records(bundle: Path) -> list[tuple[dt.datetime, str, list[str]]]:
    """(time in UTC, first line, continuation lines) for every record of app.log."""
    zone = local_zone(bundle)
    records: list[tuple[dt.datetime, str, list[str]]] = []
    for line in (bundle / "app.log").read_text(errors="replace").splitlines():
        m = RECORD_START.match(line)
        if m:
            ts = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(
                microsecond=int(m.group(2)) * 1000, tzinfo=zone
            )
            records.append((ts.astimezone(dt.timezone.utc), line, []))
        elif records:
            records[-1][2].append(line)
    return records


def activity_by_snapshot(bundle: Path, state: str, datname: str) -> list[tuple[dt.datetime, int]]:
    """Client backends of `datname` in `state` per pg_stat_activity snapshot."""
    counts: dict[dt.datetime, int] = {}
    header = None
    for row in csv.reader(io.StringIO((bundle / "pgsa_snapshots.csv").read_text())):
        if row and row[0] == "snapshot_time":
            header = row
            continue
        rec = dict(zip(header, row, strict=True))
        ts = dt.datetime.fromisoformat(rec["snapshot_time"]).astimezone(dt.timezone.utc)
        counts.setdefault(ts, 0)
        if rec["backend_type"] == "client backend" and rec["datname"] == datname and rec["state"] == state:
            counts[ts] += 1
    return sorted(counts.items())


def thread_counts(bundle: Path) -> list[tuple[dt.datetime, int, int]]:
    zone = local_zone(bundle)
    rows = []
    for line in (bundle / "threads.log").read_text().splitlines():
        m = THREAD_LINE.match(line)
        assert m, f"unexpected thread monitor line {line!r}"
        ts = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=zone)
        rows.append((ts.astimezone(dt.timezone.utc), int(m.group(2)), int(m.group(3))))
    return rows


def iostat_json_samples(bundle: Path, device: str) -> list[tuple[dt.datetime, dict]]:
    doc = json.loads((bundle / "iostat.json").read_text())
    stats = doc["sysstat"]["hosts"][0]["statistics"]
    samples = []
    for stat in stats[1:]:  # the first report is the average since boot
        ts = dt.datetime.strptime(stat["timestamp"], "%Y-%m-%dT%H:%M:%S%z").astimezone(dt.timezone.utc)
        for disk in stat.get("disk", []):
            if disk["disk_device"] == device:
                samples.append((ts, disk))
    return samples


def iostat_text_util(bundle: Path, device: str) -> list[tuple[dt.datetime, float, float]]:
    """(time, w_await, %util) from the C-locale `iostat -xz -t` text, columns mapped by header."""
    zone = local_zone(bundle)
    reports, ts, header = [], None, None
    for line in (bundle / "iostat.txt").read_text().splitlines():
        m = re.match(r"^(\d\d/\d\d/\d\d \d\d:\d\d:\d\d)$", line.strip())
        if m:
            ts = (
                dt.datetime.strptime(m.group(1), "%m/%d/%y %H:%M:%S")
                .replace(tzinfo=zone)
                .astimezone(dt.timezone.utc)
            )
            continue
        fields = line.split()
        if fields and fields[0] in ("Device", "Device:"):
            header = fields
        elif fields and header and fields[0] == device and len(fields) == len(header):
            row = dict(zip(header, fields, strict=True))
            reports.append((ts, float(row["w_await"]), float(row["%util"])))
    return reports[1:]  # since-boot report first


def pgss_series(bundle: Path, queryid: str) -> list[tuple[dt.datetime, float, float, float]]:
    """(snapshot time, calls, total_exec_time, mean_exec_time) of one queryid, per snapshot."""
    text = (bundle / "pgss_snapshots.csv").read_text()
    by_time: dict[dt.datetime, list[float]] = {}
    header = None
    for row in csv.reader(io.StringIO(text)):
        if row and row[0] == "snapshot_time":
            header = row
            continue
        rec = dict(zip(header, row, strict=True))
        ts = dt.datetime.fromisoformat(rec["snapshot_time"]).astimezone(dt.timezone.utc)
        by_time.setdefault(ts, [0.0, 0.0])
        if rec["queryid"] == queryid:
            by_time[ts][0] += float(rec["calls"])
            by_time[ts][1] += float(rec["total_exec_time"])
    return [(ts, c, t, t / c if c else 0.0) for ts, (c, t) in sorted(by_time.items())]


def tshark_or_skip() -> str:
    tshark = shutil.which("tshark")
    if tshark is None:
        if os.environ.get("STALLSCOPE_REQUIRE_TOOLS") == "1":
            pytest.fail("tshark is required (STALLSCOPE_REQUIRE_TOOLS=1) but not installed")
        pytest.skip("tshark not installed: cannot count RST segments in capture.pcap.gz")
    return tshark


def rst_times(bundle: Path, port: int) -> list[dt.datetime]:
    return packet_times(bundle / "capture.pcap.gz", f"tcp.flags.reset == 1 && tcp.port == {port}")


def packet_times(pcap: Path, display_filter: str) -> list[dt.datetime]:
    out = subprocess.run(
        [
            tshark_or_skip(),
            "-n",
            "-r",
            str(pcap),
            "-Y",
            display_filter,
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    ).stdout
    return [dt.datetime.fromtimestamp(float(x), dt.timezone.utc) for x in out.split()]


# ---------------------------------------------------------------- bundle shape


def test_bundles_present():
    assert len(BUNDLES) >= 3, (
        f"expected demo + another faulted bundle + quiet, found {[b.name for b in BUNDLES]}"
    )
    assert any(b.name == "demo" for b in BUNDLES)
    assert any(not load(b)["faults"] for b in BUNDLES), "no fault-free bundle"


def test_bundles_small_enough():
    total = sum(f.stat().st_size for b in BUNDLES for f in b.rglob("*") if f.is_file())
    assert total < 20 * 1024 * 1024, f"bundles take {total} bytes"


@pytest.mark.parametrize("bundle", BUNDLES, ids=[b.name for b in BUNDLES])
def test_bundle_complete(bundle: Path):
    for name in REQUIRED_FILES:
        path = bundle / name
        assert path.is_file() and path.stat().st_size > 0, f"{name} missing or empty in {bundle.name}"
    doc = load(bundle)
    meta = doc["meta"]
    for field in (
        "generator_version",
        "seed",
        "python",
        "postgres",
        "sysstat",
        "ports",
        "app_pid",
        "timezone",
    ):
        assert field in meta, field
    load_start, load_end = utc(meta["load_start"]), utc(meta["load_end"])
    for fault in doc["faults"]:
        assert fault["key"] in KEYS
        start, end = window(fault)
        assert load_start <= start < end <= load_end + secs(30)
        assert fault["root"]
    # The thread monitor followed the service pid for the whole run.
    pids = {pid for _, pid, _ in thread_counts(bundle)}
    assert pids == {meta["app_pid"]}
    threads = thread_counts(bundle)
    assert threads[0][0] <= load_start and threads[-1][0] >= load_end - secs(2)


# ---------------------------------------------------------------- per fault


@pytest.mark.parametrize("bundle,index", list(fault_cases()))
def test_fault_left_its_mark(bundle: Path, index: int):
    doc = load(bundle)
    fault = doc["faults"][index]
    check = {
        "event_loop_blocked": check_event_loop_blocked,
        "disk_saturation": check_disk_saturation,
        "thread_exhaustion": check_thread_exhaustion,
        "slow_query": check_slow_query,
        "connection_resets": check_connection_resets,
        "network_retransmissions": check_network_retransmissions,
        "db_pool_exhaustion": check_db_pool_exhaustion,
        "syn_backlog_overflow": check_syn_backlog_overflow,
        "kernel_limit": check_kernel_limit,
    }[fault["key"]]
    check(bundle, fault, doc)


def check_event_loop_blocked(bundle, fault, doc):
    start, end = window(fault)
    stalls = slow_callbacks(bundle)
    inside = [took for ts, took in stalls if start <= ts <= end + secs(1)]
    outside = [took for ts, took in stalls if not start - secs(1) <= ts <= end + secs(1)]
    assert len(inside) >= 5, f"only {len(inside)} slow-callback warnings in {start}..{end}"
    assert max(inside) >= 1.0 and sum(inside) >= 5.0, inside
    # Other faults make the loop lag a little (CPU contention, thread start-up), but every
    # long stall is inside this window and the stalled time outside is a small fraction.
    assert all(took < 0.5 for took in outside), f"long stalls outside the window: {outside}"
    assert sum(outside) <= 0.2 * sum(inside), (sum(outside), sum(inside))
    # The stalled requests are the exports named as root.
    method, route = fault["root"]["http"].split(" ", 1)
    assert fault["root"]["coro"] and fault["root"]["coro"] in (bundle / "app.log").read_text()
    assert f'"{method} {route} HTTP/1.1" 200' in (bundle / "app.log").read_text()


def check_disk_saturation(bundle, fault, doc):
    start, end = window(fault)
    device = fault["root"]["device"].removeprefix("dev:")
    samples = iostat_json_samples(bundle, device)
    inside = [d for ts, d in samples if start + secs(2) <= ts <= end - secs(1)]
    outside = [d for ts, d in samples if not start - secs(2) <= ts <= end + secs(3)]
    assert len(inside) >= 8 and len(outside) >= 20
    util_in = statistics.mean(d["util"] for d in inside)
    util_out = statistics.mean(d["util"] for d in outside)
    # %util of this virtio disk stays below 100 even when its queue is full; the queue and
    # the write latency are the sharper signals.
    assert util_in >= 50.0 and util_in >= 3 * util_out, (util_in, util_out)
    await_in = statistics.mean(d["w_await"] for d in inside)
    await_out = statistics.mean(d["w_await"] for d in outside if d["w/s"] > 0)
    assert await_in > 1.5 * await_out, (await_in, await_out)
    queue_in = statistics.mean(d["aqu-sz"] for d in inside)
    queue_out = statistics.mean(d["aqu-sz"] for d in outside)
    assert queue_in > 5 * queue_out, (queue_in, queue_out)
    # The C-locale text report of the same device tells the same story.
    text = iostat_text_util(bundle, device)
    util_txt_in = statistics.mean(u for ts, _, u in text if start + secs(2) <= ts <= end - secs(1))
    util_txt_out = statistics.mean(u for ts, _, u in text if not start - secs(2) <= ts <= end + secs(3))
    assert util_txt_in >= 50.0 and util_txt_in >= 3 * util_txt_out, (util_txt_in, util_txt_out)


def check_thread_exhaustion(bundle, fault, doc):
    start, end = window(fault)
    rows = thread_counts(bundle)
    before = max(n for ts, _, n in rows if ts < start)
    inside = [(ts, n) for ts, _, n in rows if start <= ts <= end]
    peak = max(n for _, n in inside)
    max_workers = fault["root"]["max_workers"]
    assert peak >= before + 50, (before, peak)
    assert peak >= 0.8 * max_workers, (peak, max_workers)
    first_peak = next(ts for ts, _, n in rows if n == max(r[2] for r in rows))
    assert start <= first_peak <= end, first_peak
    plateau = [n for _, n in inside if n >= 0.95 * peak]
    assert len(plateau) >= 5, f"thread count reached {peak} but held it for {len(plateau)} s only"
    assert fault["root"]["pid"] == doc["meta"]["app_pid"]


def check_slow_query(bundle, fault, doc):
    start, end = window(fault)
    series = pgss_series(bundle, fault["root"]["queryid"])
    assert series, "query id not found in the snapshots"
    assert fault["root"]["query"].split(" ")[0] == "SELECT"
    last_before = [s for s in series if s[0] <= start][-1]
    first_after = [s for s in series if s[0] >= end][0]
    d_calls = first_after[1] - last_before[1]
    d_total = first_after[2] - last_before[2]
    assert d_calls >= 20, d_calls
    mean_in = d_total / d_calls
    # Per-call time during the burst vs the quiet baseline before it (deltas between snapshots).
    first, last = series[0], series[-1]
    base_calls, base_total = last_before[1] - first[1], last_before[2] - first[2]
    assert base_calls >= 3, "the report query also runs before the burst, at a low rate"
    mean_before = base_total / base_calls
    assert mean_in >= 5 * mean_before, (mean_in, mean_before)
    # ... and vs the rest of the run.
    rest_calls = (last[1] - first[1]) - d_calls
    rest_total = (last[2] - first[2]) - d_total
    assert mean_in >= 5 * (rest_total / rest_calls), (mean_in, rest_total / rest_calls)
    # The cumulative mean reported by pg_stat_statements rises across the window.
    assert first_after[3] > last_before[3] * 1.2, (last_before[3], first_after[3])
    # Execution time per second of wall clock (database load from this query) is far higher
    # in the burst than over the rest of the run.
    span_in = (first_after[0] - last_before[0]).total_seconds()
    span_rest = (last[0] - first[0]).total_seconds() - span_in
    load_in, load_rest = d_total / span_in, rest_total / span_rest
    assert load_in > 3 * load_rest, (load_in, load_rest)


def check_connection_resets(bundle, fault, doc):
    start, end = window(fault)
    port = int(fault["root"]["flow_server"].rsplit(":", 1)[1])
    times = rst_times(bundle, port)
    inside = [t for t in times if start - secs(1) <= t <= end + secs(1)]
    outside = [t for t in times if not start - secs(1) <= t <= end + secs(1)]
    assert len(inside) >= 100, len(inside)
    assert len(inside) >= 0.8 * fault["root"]["connections_reset"], (
        len(inside),
        fault["root"]["connections_reset"],
    )
    assert len(outside) <= len(inside) // 10, len(outside)


def check_network_retransmissions(bundle, fault, doc):
    start, end = window(fault)
    ip, port = fault["root"]["flow_server"].removeprefix("endpoint:").rsplit(":", 1)
    pcap = bundle / fault["root"]["capture"]
    flows = f"ip.addr == {ip} && tcp.port == {port}"
    retrans = packet_times(
        pcap,
        f"{flows} && (tcp.analysis.retransmission || tcp.analysis.fast_retransmission"
        " || tcp.analysis.spurious_retransmission)",
    )
    inside = [t for t in retrans if start - secs(1) <= t <= end + secs(2)]
    outside = [t for t in retrans if not start - secs(1) <= t <= end + secs(2)]
    assert len(inside) >= 20, len(inside)
    assert len(outside) <= max(3, len(inside) // 10), (len(inside), len(outside))
    # The same link carried traffic before and after the fault: the quiet parts are not just empty.
    data = packet_times(pcap, f"{flows} && tcp.len > 0")
    assert sum(1 for t in data if t < start) >= 50 and sum(1 for t in data if t > end + secs(2)) >= 50


def check_db_pool_exhaustion(bundle, fault, doc):
    start, end = window(fault)
    # requests that failed because no pooled connection came within the acquire timeout
    timeouts = [
        ts
        for ts, first, cont in log_records(bundle)
        if "Exception in ASGI application" in first
        and cont
        and cont[-1].startswith(("TimeoutError", "asyncio.exceptions.TimeoutError"))
        and any("pool.py" in c and "acquire" in c for c in cont)
    ]
    inside = [t for t in timeouts if start <= t <= end + secs(2)]
    assert len(inside) >= 10, len(inside)
    assert len(timeouts) == len(inside), f"{len(timeouts) - len(inside)} acquire timeouts outside the window"
    # the server saw the pool's connections held idle in a transaction
    held = activity_by_snapshot(bundle, "idle in transaction", fault["root"]["pool"])
    held_in = max(n for ts, n in held if start <= ts <= end)
    held_out = [n for ts, n in held if not start - secs(5) <= ts <= end + secs(5)]
    assert held_in >= 0.8 * doc["meta"]["pool"]["max_size"], held_in
    assert max(held_out) <= 2, max(held_out)
    assert f'"{fault["root"]["http"]} HTTP/1.1"' in (bundle / "app.log").read_text()


def check_syn_backlog_overflow(bundle, fault, doc):
    start, end = window(fault)
    port = int(fault["root"]["flow_server"].rsplit(":", 1)[1])
    retries = packet_times(
        bundle / "capture.pcap.gz",
        f"tcp.dstport == {port} && tcp.flags.syn == 1 && tcp.flags.ack == 0 && tcp.analysis.retransmission",
    )
    inside = [t for t in retries if start - secs(1) <= t <= end + secs(2)]
    assert len(inside) >= 50, len(inside)
    # a service out of file descriptors stops accepting too: its backlog overflows as well
    stopped = [window(f) for f in doc["faults"] if f["key"] == "kernel_limit"]
    elsewhere = [
        t
        for t in retries
        if not start - secs(1) <= t <= end + secs(2) and not any(a <= t <= b + secs(8) for a, b in stopped)
    ]
    assert len(elsewhere) <= len(inside) // 10, (len(inside), len(elsewhere))
    assert fault["root"]["backlog"] == doc["meta"]["backlog"] <= 256


def check_kernel_limit(bundle, fault, doc):
    start, end = window(fault)
    emfile = [ts for ts, first, cont in log_records(bundle) if any("[Errno 24]" in c for c in [first, *cont])]
    inside = [t for t in emfile if start <= t <= end + secs(1)]
    assert len(inside) >= 10, len(inside)
    assert len(emfile) == len(inside), f"{len(emfile) - len(inside)} EMFILE records outside the window"
    assert fault["root"]["limit"] == f"RLIMIT_NOFILE {doc['meta']['nofile']}"
    assert fault["injected"]["idle_connections"] >= 0.8 * doc["meta"]["nofile"]


# ---------------------------------------------------------------- fault-free bundle


@pytest.mark.tools
@pytest.mark.parametrize(
    "bundle",
    [b for b in BUNDLES if not load(b)["faults"]],
    ids=[b.name for b in BUNDLES if not load(b)["faults"]],
)
def test_quiet_bundle_is_quiet(bundle: Path):
    meta = load(bundle)["meta"]
    assert len(slow_callbacks(bundle)) <= 2
    counts = [n for _, _, n in thread_counts(bundle)]
    assert max(counts) <= 40, max(counts)
    device = meta["disk_device"].removeprefix("dev:")
    utils = [d["util"] for _, d in iostat_json_samples(bundle, device)]
    assert statistics.mean(utils) < 30, statistics.mean(utils)
    assert len(rst_times(bundle, meta["ports"]["app"])) <= 5
    assert "GET /api/items/" in (bundle / "app.log").read_text()
