"""One synthetic timeline per diagnosis rule: the rule fires with the right root, window and
wording, and stays silent on the look-alike it must not confuse with its fault."""

from __future__ import annotations

import random

import pytest

from analyzer import rules
from tests._timeline_factory import at, entity, event, level, series, timeline

N = 120  # seconds of data per synthetic timeline
BURST = range(60, 75)  # the fault: samples 60..74 (ts 61..75 s)


def by_key(tl, key):
    return [f for f in tl.findings() if f["key"] == key]


def test_every_rule_is_registered_once_with_its_documented_key():
    assert sorted(rules.KEYS) == sorted([
        "event_loop_blocked", "thread_exhaustion", "slow_query", "db_pool_exhaustion", "disk_saturation",
        "cpu_saturation", "network_retransmissions", "connection_resets", "syn_backlog_overflow",
        "kernel_limit"])
    for rule in rules.RULES:
        assert rule.key in rules.__doc__
        assert set(rule.explains) <= set(rules.KEYS), rule.key


# -- event_loop_blocked ---------------------------------------------------------------------
APP_CORO = "coro:export_csv@/srv/shop/api.py:88"
FRAMEWORK_CORO = ("coro:RequestResponseCycle.run_asgi@/usr/lib/python3.11/site-packages/uvicorn/"
                  "protocols/http/h11_impl.py:409")
STALLS = [(60.0, 60.8), (62.0, 63.5), (65.0, 65.4), (68.0, 69.9)]


def test_event_loop_blocked_names_the_coroutine_and_line():
    tl = timeline(events=[event("loop.slow_callback", s, e, entity=APP_CORO, value=e - s, line=i)
                          for i, (s, e) in enumerate(STALLS, 1)])
    [f] = by_key(tl, "event_loop_blocked")
    assert f["entities"][0] == APP_CORO
    assert f["start"] == "2026-01-02T10:01:00.000Z" and f["end"] == "2026-01-02T10:01:09.900Z"
    assert "export_csv (/srv/shop/api.py:88)" in f["title"] and "4 stalls totalling 4.6 s" in f["title"]
    assert f["severity"] == "high" and f["confidence"] == 0.9
    assert any("run_in_executor" in r or "to_thread" in r for r in f["recommendations"])


def test_event_loop_blocked_finds_the_handler_behind_a_framework_frame():
    rnd = random.Random(5)
    evs = []
    line = 1
    for s, e in STALLS:
        # the guilty handler's access line is written just before the warning ...
        evs.append(event("http.request", e - 0.001, entity="http:POST /api/export", line=line))
        evs.append(event("loop.slow_callback", s, e, entity=FRAMEWORK_CORO, value=e - s, line=line + 1))
        # ... the requests queued behind it finish right after
        evs += [event("http.request", e + 0.002 + k / 100, entity=f"http:GET /api/items/{rnd.randint(1, 9999)}",
                      line=line + 2 + k) for k in range(3)]
        line += 10
    evs += [event("http.request", t / 3, entity="http:GET /health", line=1000 + t) for t in range(0, 3 * N)]
    [f] = by_key(timeline(events=evs), "event_loop_blocked")
    assert f["entities"][:2] == ["http:POST /api/export", FRAMEWORK_CORO]
    assert f["title"].startswith("The POST /api/export handler blocks the asyncio event loop")
    flight = next(e for e in f["evidence"] if e["role"] == "in_flight_request")
    assert flight["stalls_explained"] == 4 and flight["stall_share"] == 1.0


def test_event_loop_blocked_attributes_capture_spans_by_both_edges():
    # capture-style requests carry their start and end: the guilty one began as the stall did
    evs = []
    for s, e in STALLS:
        evs.append(event("loop.slow_callback", s, e, entity=FRAMEWORK_CORO, value=e - s))
        evs.append(event("http.request", s - 0.004, e + 0.003, entity="http:POST /api/export", source="pcap",
                         file="cap.pcap", value=e - s + 0.007))
        evs.append(event("http.request", s - 0.9, e + 0.001, entity="http:GET /api/search", source="pcap",
                         file="cap.pcap", value=e - s + 0.901))
    [f] = by_key(timeline(events=evs), "event_loop_blocked")
    assert f["entities"][0] == "http:POST /api/export"
    assert "was in flight across 4 of 4 stalls" in f["confidence_reason"]


def test_a_lone_short_slow_callback_is_no_finding():
    tl = timeline(events=[event("loop.slow_callback", 10.0, 10.12, entity=APP_CORO, value=0.12)])
    assert by_key(tl, "event_loop_blocked") == []


# -- thread_exhaustion ----------------------------------------------------------------------
def test_thread_exhaustion_sees_the_climb_to_a_plateau():
    counts = [5.0] * 60 + [5 + 32 * k for k in range(1, 5)] + [133.0] * 56
    tl = timeline(series("proc.threads", "pid:4242", counts, source="thread_monitor", file="threads.log"),
                  entities=[entity("pid:4242", "python3")])
    [f] = by_key(tl, "thread_exhaustion")
    assert f["entities"][0] == "pid:4242"
    assert f["start"] == "2026-01-02T10:01:00.000Z" and f["end"] == "2026-01-02T10:01:04.000Z"
    assert f["severity"] == "high"
    assert "from 5 to 133 threads" in f["title"] and "held flat" in f["title"] and "(python3)" in f["title"]


def test_a_slow_drift_of_threads_is_no_exhaustion():
    counts = [20 + i // 10 for i in range(N)]
    assert by_key(timeline(series("proc.threads", "pid:1", counts, source="thread_monitor")), "thread_exhaustion") == []


# -- slow_query -----------------------------------------------------------------------------
def test_slow_query_names_the_statement_that_gained_time():
    hot = level(5.0, 2500.0, n=12, burst=range(6, 8))
    steady = [40.0 + (i % 3) for i in range(12)]
    tl = timeline(series("pg.exec_ms_per_s", "query:-777", hot, source="pg_stat_statements", step=10)
                  + series("pg.exec_ms_per_s", "query:12", steady, source="pg_stat_statements", step=10)
                  + series("pg.exec_ms_per_s", "query:all", [h + s for h, s in zip(hot, steady, strict=True)],
                           source="pg_stat_statements", step=10),
                  entities=[entity("query:-777", "SELECT category …", query="SELECT category, count(*) FROM items "
                                   "WHERE note LIKE $1 GROUP BY category")])
    [f] = by_key(tl, "slow_query")
    assert f["entities"] == ["query:-777"]
    # snapshot deltas carry the END of their interval: samples at 61 s and 71 s cover 51..71 s
    assert (f["start"], f["end"]) == ("2026-01-02T10:00:51.000Z", "2026-01-02T10:01:11.000Z")
    assert "WHERE note LIKE $1" in f["title"] and "2,500 ms of database time per second" in f["title"]
    assert f["severity"] == "high"


# -- db_pool_exhaustion ---------------------------------------------------------------------
def test_db_pool_exhaustion_names_the_pool():
    errs = [event("db.pool_error", 61 + i, entity="pool:shop-main", message="pool exhausted", line=i)
            for i in range(6)]
    [f] = by_key(timeline(events=errs), "db_pool_exhaustion")
    assert f["entities"][0] == "pool:shop-main" and f["severity"] == "medium"
    assert f["title"].startswith("Database pool shop-main ran dry: 6 requests failed")


def test_db_pool_exhaustion_without_a_pool_name_takes_the_database_whose_backends_were_held():
    errs = [event("db.timeout", 61 + i, entity="proc:app", message="TimeoutError in pool.acquire()", line=i)
            for i in range(6)]
    rows = (series("pg.idle_in_tx", "pool:shop", level(1.0, 9.0, n=24, burst=range(11, 15)),
                   source="pg_stat_activity", step=5)
            + series("pg.active", "pool:shop", [1.0] * 24, source="pg_stat_activity", step=5)
            + series("pg.active", "pool:reports", [3.0] * 24, source="pg_stat_activity", step=5)
            + series("pg.idle_in_tx", "pool:all", level(1.0, 9.0, n=24, burst=range(11, 15)),
                     source="pg_stat_activity", step=5))
    [f] = by_key(timeline(rows, events=errs), "db_pool_exhaustion")
    assert f["entities"][0] == "pool:shop"
    assert f["title"].startswith("Database pool shop ran dry: 6 requests failed or timed out")
    # the same errors with no server-side view name no pool
    [g] = by_key(timeline(events=errs), "db_pool_exhaustion")
    assert not any(e.startswith("pool:") for e in g["entities"])


def test_db_pool_exhaustion_from_lock_waits_and_a_dry_pool():
    rows = (series("pg.waiting", "wait:Lock/transactionid", level(0.0, 8.0, n=24, burst=range(12, 16)),
                   source="pg_stat_activity", step=5)
            + series("pg.idle", "pool:shop", level(4.0, 0.0, n=24, burst=range(11, 17)), source="pg_stat_activity",
                     step=5)
            + series("pg.idle", "pool:all", [6.0] * 24, source="pg_stat_activity", step=5))
    [f] = by_key(timeline(rows), "db_pool_exhaustion")
    assert f["entities"][0] == "pool:shop" and f["severity"] == "medium"
    assert "backends waited while none was idle" in f["title"]
    no_lock = [r for r in rows if r["entity"] != "wait:Lock/transactionid"]
    assert by_key(timeline(no_lock), "db_pool_exhaustion") == []


# -- disk_saturation ------------------------------------------------------------------------
def _disk(dev: str, *, await_peak: float, util: float, noise: int = 0) -> list[dict]:
    rnd = random.Random(noise)
    return (series("disk.await_ms", dev, [a + rnd.random() * 0.3 for a in level(0.5, await_peak, n=N, burst=BURST)])
            + series("disk.aqu_sz", dev, level(0.01, 9.0, n=N, burst=BURST))
            + series("disk.util_pct", dev, level(1.0, util, n=N, burst=BURST))
            + series("disk.write_kbps", dev, level(100.0, 250_000.0, n=N, burst=BURST)))


def test_disk_saturation_on_a_fast_device_with_low_util():
    tl = timeline(_disk("dev:dm-0", await_peak=60.0, util=30.0, noise=1) + _disk("dev:vda", await_peak=80.0, util=25.0)
                  + series("cpu.iowait_pct", "cpu:all", level(0.5, 40.0, n=N, burst=BURST))
                  + series("proc.write_kbps", "pid:77", level(0.0, 240_000.0, n=N, burst=BURST), source="pidstat")
                  + series("pg.exec_ms_per_s", "query:9", level(20.0, 900.0, n=12, burst=range(6, 8)),
                           source="pg_stat_statements", step=10),
                  entities=[entity("pid:77", "dd")])
    [f] = by_key(tl, "disk_saturation")
    assert f["entities"][:3] == ["dev:vda", "dev:dm-0", "pid:77"]
    assert (f["start"], f["end"]) == ("2026-01-02T10:01:00.000Z", "2026-01-02T10:01:15.000Z")
    assert "while %util stayed low" in f["title"] and "dd did the I/O" in f["title"]
    assert f["severity"] == "medium"
    slowed = [e for e in f["evidence"] if e["role"] == "slowed"]
    assert slowed and slowed[0]["metric"] == "pg.exec_ms_per_s"
    # the database finding that followed the disk burst is its downstream symptom
    [q] = by_key(tl, "slow_query")
    assert q["upstream"] == [f["id"]] and f["downstream"] == [q["id"]]


def test_one_busy_second_without_iowait_is_no_saturation():
    burst = range(60, 61)
    tl = timeline(series("disk.await_ms", "dev:vda", level(0.5, 30.0, n=N, burst=burst))
                  + series("cpu.iowait_pct", "cpu:all", [0.5] * N))
    assert by_key(tl, "disk_saturation") == []


# -- cpu_saturation -------------------------------------------------------------------------
def test_cpu_saturation_counts_busy_cpu_not_iowait():
    rows = (series("cpu.idle_pct", "cpu:all", level(70.0, 1.0, n=N, burst=BURST))
            + series("cpu.iowait_pct", "cpu:all", [0.5] * N)
            + series("proc.cpu_pct", "pid:9", level(2.0, 190.0, n=N, burst=BURST), source="pidstat"))
    stalls = [event("loop.slow_callback", s, s + 0.5, entity=APP_CORO, value=0.5) for s in (64, 66, 70)]
    [f] = by_key(timeline(rows, stalls, entities=[entity("pid:9", "postgres")]), "cpu_saturation")
    assert f["severity"] == "high" and f["entities"] == ["cpu:all", "pid:9"]
    assert "mostly postgres" in f["title"]
    assert [e["kind"] for e in f["evidence"] if e["role"] == "symptom"] == ["loop.slow_callback"]
    # the same busy host while the service shows nothing: a note, not an incident
    [quiet] = by_key(timeline(rows, entities=[entity("pid:9", "postgres")]), "cpu_saturation")
    assert quiet["severity"] == "low" and "no symptom" in quiet["confidence_reason"]
    waiting = timeline(series("cpu.idle_pct", "cpu:all", level(70.0, 1.0, n=N, burst=BURST))
                       + series("cpu.iowait_pct", "cpu:all", level(0.5, 95.0, n=N, burst=BURST)))
    assert by_key(waiting, "cpu_saturation") == []


@pytest.mark.parametrize(("cpu_from", "query_is_cause"), [(50, True), (51, True), (38, False)])
def test_a_query_that_starts_with_the_cpu_saturation_is_its_cause(cpu_from, query_is_cause):
    """Eight full scans at once fill the CPUs: the query comes first in the story. CPUs that were
    saturated well before the query slowed down are its cause instead."""
    hot = level(5.0, 2500.0, n=12, burst=range(6, 8))
    rows = (series("cpu.idle_pct", "cpu:all", level(70.0, 1.0, n=N, burst=range(cpu_from, 75)))
            + series("cpu.iowait_pct", "cpu:all", [0.5] * N)
            + series("pg.exec_ms_per_s", "query:-777", hot, source="pg_stat_statements", step=10)
            + series("pg.exec_ms_per_s", "query:all", hot, source="pg_stat_statements", step=10))
    tl = timeline(rows, entities=[entity("query:-777", "SELECT …", query="SELECT category FROM items")])
    [cpu] = by_key(tl, "cpu_saturation")
    [query] = by_key(tl, "slow_query")
    if query_is_cause:
        assert cpu["upstream"] == [query["id"]] and query["upstream"] == []
    else:
        assert query["upstream"] == [cpu["id"]] and cpu["upstream"] == []


# -- network_retransmissions ----------------------------------------------------------------
def test_network_retransmissions_are_summed_per_server_endpoint():
    rows = []
    for port in range(40000, 40004):
        rows += series("net.retransmits", f"flow:10.0.0.5:{port}>10.0.0.9:5432",
                       level(0.0, 6.0, n=N, burst=range(60, 66)), source="pcap", file="cap.pcap")
    [f] = by_key(timeline(rows), "network_retransmissions")
    assert f["entities"] == ["endpoint:10.0.0.9:5432"]
    assert "up to 24/s" in f["title"] and f["severity"] == "medium"


@pytest.mark.parametrize(("server", "explained"), [("127.0.0.1:8000", True), ("10.0.0.9:8000", False)])
def test_a_starved_cpu_explains_retransmissions_only_on_loopback(server, explained):
    rows = series("cpu.idle_pct", "cpu:all", level(70.0, 1.0, n=N, burst=range(50, 80)))
    rows += series("net.retransmits", f"endpoint:{server}", level(0.0, 6.0, n=N, burst=range(60, 66)), source="pcap")
    rows += series("net.packets_per_s", f"endpoint:{server}", [100.0] * N, source="pcap")
    tl = timeline(rows)
    [net] = by_key(tl, "network_retransmissions")
    [cpu] = by_key(tl, "cpu_saturation")
    assert net["upstream"] == ([cpu["id"]] if explained else [])
    assert "36 in all, 5.1 % of segments" in net["title"] and net["severity"] == "high"


# -- connection_resets ----------------------------------------------------------------------
def test_connection_resets_name_the_endpoint_and_sender():
    rsts = [event("tcp.rst", 61 + i / 10, entity=f"flow:127.0.0.1:{50000 + i}>127.0.0.1:8000",
                  attrs={"by": "client"}, source="pcap", file="cap.pcap", line=i) for i in range(60)]
    rsts += [event("tcp.rst", 5.0, entity="flow:127.0.0.1:49999>127.0.0.1:8000", source="pcap", file="cap.pcap")]
    [f] = by_key(timeline(events=rsts), "connection_resets")
    assert f["entities"] == ["endpoint:127.0.0.1:8000"] and f["severity"] == "medium"
    assert f["title"] == "60 connection resets on 127.0.0.1:8000 within 5.9 s, sent by the client."


# -- syn_backlog_overflow -------------------------------------------------------------------
def test_syn_backlog_overflow_from_retries_and_the_kernel_message():
    evs = [event("tcp.syn_retry", 61 + i / 4, entity=f"flow:10.0.0.5:{41000 + i}>10.0.0.9:443", source="pcap",
                 file="cap.pcap") for i in range(12)]
    evs.append(event("kernel.syn_flood", 62, entity="endpoint:10.0.0.9:443", source="kernel", file="dmesg.txt",
                     message="TCP: request_sock_TCP: Possible SYN flooding on port 443. Sending cookies."))
    [f] = by_key(timeline(events=evs), "syn_backlog_overflow")
    assert f["entities"] == ["endpoint:10.0.0.9:443"] and f["severity"] == "high"
    assert "12 SYN retransmissions and the kernel's SYN-flooding warning" in f["title"]


@pytest.mark.parametrize(("server", "explained"), [("10.0.0.9:443", True), ("10.0.0.7:443", False)])
def test_a_backlog_overflow_explains_retransmissions_on_its_own_endpoint(server, explained):
    evs = [event("tcp.syn_retry", 61 + i / 4, entity=f"flow:10.0.0.5:{41000 + i}>10.0.0.9:443", source="pcap",
                 file="cap.pcap") for i in range(12)]
    rows = series("net.retransmits", f"endpoint:{server}", level(0.0, 6.0, n=N, burst=range(60, 66)), source="pcap")
    rows += series("net.packets_per_s", f"endpoint:{server}", [100.0] * N, source="pcap")
    tl = timeline(rows, events=evs)
    [syn] = by_key(tl, "syn_backlog_overflow")
    [net] = by_key(tl, "network_retransmissions")
    assert net["upstream"] == ([syn["id"]] if explained else [])


# -- kernel_limit ---------------------------------------------------------------------------
def test_kernel_limit_reports_too_many_open_files():
    evs = [event("os.too_many_open_files", 61 + i, entity="pid:300", message="OSError: [Errno 24] Too many open files")
           for i in range(3)]
    [f] = by_key(timeline(events=evs), "kernel_limit")
    assert f["entities"] == ["pid:300"] and f["severity"] == "high"
    assert f["title"] == "Hit too many open files (3 messages, pid:300)."
    accept = [event("os.too_many_open_files", 61 + i / 10, entity="endpoint:127.0.0.1:8000",
                    message="socket.accept() out of system resource (OSError: [Errno 24] Too many open files)")
              for i in range(40)]
    [g] = by_key(timeline(events=accept), "kernel_limit")
    assert g["entities"] == ["endpoint:127.0.0.1:8000"]
    assert g["title"] == ("Hit too many open files (40 messages: the server could not accept connections on "
                          "127.0.0.1:8000).")
    assert f["title"] == "Hit too many open files (3 messages, pid:300)."
    assert "LimitNOFILE" in f["recommendations"][0]


# -- nothing happened -----------------------------------------------------------------------
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_noisy_quiet_timeline_has_nothing_above_low(seed):
    rnd = random.Random(seed)
    rows = (series("disk.await_ms", "dev:vda", [0.4 + rnd.random() for _ in range(N)])
            + series("disk.util_pct", "dev:vda", [2 + 5 * rnd.random() for _ in range(N)])
            + series("cpu.idle_pct", "cpu:all", [60 + 20 * rnd.random() for _ in range(N)])
            + series("cpu.iowait_pct", "cpu:all", [rnd.random() for _ in range(N)])
            + series("proc.threads", "pid:1", [10 + rnd.randint(0, 2) for _ in range(N)], source="thread_monitor"))
    loud = [f for f in timeline(rows).findings() if f["severity"] not in ("info", "low")]
    assert loud == []


def test_findings_are_ordered_by_severity_and_times_are_utc_z():
    tl = timeline(series("cpu.idle_pct", "cpu:all", level(70.0, 1.0, n=N, burst=BURST)),
                  events=[event("os.too_many_open_files", 10, entity="pid:1")])
    found = tl.findings()
    assert [f["key"] for f in found] == ["cpu_saturation", "kernel_limit"] or \
        [f["severity"] for f in found] == sorted([f["severity"] for f in found], key=("critical", "high", "medium",
                                                                                           "low").index)
    assert all(f["start"].endswith("Z") and f["end"].endswith("Z") for f in found)
    assert at(0).tzinfo is not None
