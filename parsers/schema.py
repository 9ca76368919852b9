"""The unified timeline schema and its vocabulary: the one place that names columns,
their dtypes, metric and event names, entity shapes and skip-reason codes.

Parsers emit only names listed here; the contract test and ``validate_*`` enforce it.
"""

from __future__ import annotations

import polars as pl

UTC_NS = pl.Datetime("ns", "UTC")

# -- metrics: one row per sample, long format ------------------------------------------
METRIC_COLUMNS: dict[str, pl.DataType] = {
    "ts": UTC_NS,  # END of the sample's interval (rates, averages) or the instant (gauges)
    "source": pl.Utf8(),  # parser name
    "host": pl.Utf8(),  # host the artifact came from ("" when unknown)
    "entity": pl.Utf8(),  # dev:sda, pid:1234, tid:1234/1240, flow:..., query:<id>, cpu:all ...
    "metric": pl.Utf8(),  # a name from METRICS
    "value": pl.Float64(),
    "file": pl.Utf8(),  # path inside the bundle
    "line": pl.Int64(),  # 1-based record number in that file (provenance)
}

# -- events: discrete happenings and spans ---------------------------------------------
EVENT_COLUMNS: dict[str, pl.DataType] = {
    "ts": UTC_NS,  # start
    "end": UTC_NS,  # end of a span, null for instants
    "source": pl.Utf8(),
    "host": pl.Utf8(),
    "entity": pl.Utf8(),
    "kind": pl.Utf8(),  # a name from EVENTS
    "severity": pl.Utf8(),  # one of SEVERITIES
    "value": pl.Float64(),  # duration in seconds where the event has one
    "message": pl.Utf8(),  # short human text (untrusted: escape when shown)
    "attrs": pl.Utf8(),  # JSON object with kind-specific attributes
    "file": pl.Utf8(),
    "line": pl.Int64(),
}

# -- entities: labels and attributes of entities (command name of a pid, query text) -----
ENTITY_COLUMNS: dict[str, pl.DataType] = {
    "source": pl.Utf8(),
    "host": pl.Utf8(),
    "entity": pl.Utf8(),
    "label": pl.Utf8(),  # short label for charts
    "attrs": pl.Utf8(),  # JSON object
    "file": pl.Utf8(),
}

# -- sources: one row per input file -------------------------------------------------------
SOURCE_COLUMNS: dict[str, pl.DataType] = {
    "file": pl.Utf8(),
    "parser": pl.Utf8(),  # null when nobody recognised the file
    "variant": pl.Utf8(),
    "host": pl.Utf8(),
    "tz": pl.Utf8(),
    "tz_reason": pl.Utf8(),
    "clock_offset_s": pl.Float64(),
    "start": UTC_NS,
    "end": UTC_NS,
    "records_total": pl.Int64(),
    "records_parsed": pl.Int64(),
    "records_skipped": pl.Int64(),
    "skipped_by_reason": pl.Utf8(),  # JSON {code: n}
    "size_bytes": pl.Int64(),
    "duplicate_of": pl.Utf8(),
    "status": pl.Utf8(),  # ok | degraded | failed | unrecognised | duplicate | refused
}

# -- diagnostics -------------------------------------------------------------------------
DIAGNOSTIC_COLUMNS: dict[str, pl.DataType] = {
    "code": pl.Utf8(),
    "level": pl.Utf8(),  # info | warning | error
    "file": pl.Utf8(),
    "line": pl.Int64(),  # 1-based, null when not about a line
    "offset": pl.Int64(),  # byte offset for binary artifacts
    "excerpt": pl.Utf8(),  # <= 120 chars of the offending input
    "message": pl.Utf8(),
    "count": pl.Int64(),  # how many occurrences this row stands for
}

SEVERITIES = ("debug", "info", "low", "medium", "high", "critical")

# -- metric vocabulary: name -> description (unit in the name) ----------------------------
METRICS: dict[str, str] = {
    # threads / processes
    "proc.threads": "threads of a process (gauge)",
    "proc.cpu_pct": "CPU used by a task, percent of one CPU",
    "proc.usr_pct": "user CPU of a task, percent",
    "proc.system_pct": "system CPU of a task, percent",
    "proc.guest_pct": "guest CPU of a task, percent",
    "proc.wait_pct": "time a task waited for a CPU, percent",
    "proc.minflt_per_s": "minor page faults per second",
    "proc.majflt_per_s": "major page faults per second",
    "proc.vsz_kb": "virtual size, KiB",
    "proc.rss_kb": "resident set size, KiB",
    "proc.mem_pct": "share of physical memory, percent",
    "proc.read_kbps": "KiB read per second by a task",
    "proc.write_kbps": "KiB written per second by a task",
    "proc.cancelled_write_kbps": "KiB of cancelled writes per second",
    "proc.iodelay_ticks": "block I/O delay, clock ticks per interval",
    "proc.cswch_per_s": "voluntary context switches per second",
    "proc.nvcswch_per_s": "involuntary context switches per second",
    "proc.fd_nr": "open file descriptors",
    "proc.stack_size_kb": "stack size, KiB",
    "proc.stack_ref_kb": "stack referenced, KiB",
    "proc.prio": "real-time priority",
    # cpu
    "cpu.user_pct": "user CPU, percent",
    "cpu.nice_pct": "nice CPU, percent",
    "cpu.system_pct": "system CPU, percent",
    "cpu.iowait_pct": "CPU idle while I/O outstanding, percent",
    "cpu.steal_pct": "stolen CPU, percent",
    "cpu.idle_pct": "idle CPU, percent",
    "cpu.busy_pct": "100 - idle, percent",
    "cpu.load1": "1-minute load average",
    "sys.tasks": "tasks or threads counted by top",
    # disk
    "disk.r_per_s": "read requests per second",
    "disk.w_per_s": "write requests per second",
    "disk.d_per_s": "discard requests per second",
    "disk.f_per_s": "flush requests per second",
    "disk.read_kbps": "KiB read per second",
    "disk.write_kbps": "KiB written per second",
    "disk.discard_kbps": "KiB discarded per second",
    "disk.rrqm_per_s": "read requests merged per second",
    "disk.wrqm_per_s": "write requests merged per second",
    "disk.r_await_ms": "mean read request time, ms",
    "disk.w_await_ms": "mean write request time, ms",
    "disk.d_await_ms": "mean discard request time, ms",
    "disk.f_await_ms": "mean flush request time, ms",
    "disk.await_ms": "mean request time (combined), ms",
    "disk.svctm_ms": "service time (deprecated by sysstat), ms",
    "disk.aqu_sz": "average queue length",
    "disk.util_pct": "percent of time the device had I/O in flight",
    "disk.tps": "transfers per second",
    "disk.rareq_kb": "mean read request size, KiB",
    "disk.wareq_kb": "mean write request size, KiB",
    "disk.areq_kb": "mean request size, KiB",
    # event loop
    "loop.stall_ms": "event-loop stall time inside each second, ms",
    "loop.slow_callbacks": "slow callbacks finishing inside each second",
    # network
    "net.packets_per_s": "packets per second",
    "net.packets_c2s_per_s": "packets per second, client to server",
    "net.packets_s2c_per_s": "packets per second, server to client",
    "net.bytes_per_s": "bytes per second",
    "net.bytes_c2s_per_s": "bytes per second, client to server",
    "net.bytes_s2c_per_s": "bytes per second, server to client",
    "net.retransmits": "TCP retransmissions per second",
    "net.dup_acks": "duplicate ACKs per second",
    "net.zero_window": "zero-window segments per second",
    "net.out_of_order": "out-of-order segments per second",
    "net.lost_segments": "previous-segment-not-captured per second",
    "net.rsts": "RST segments per second",
    "net.syns": "SYN segments per second",
    "net.ack_rtt_ms": "ACK round-trip time p50, ms",
    "net.ack_rtt_max_ms": "ACK round-trip time max, ms",
    "net.connections_opened": "connections opened per second",
    # database
    "pg.calls_per_s": "statement executions per second",
    "pg.exec_ms_per_s": "database execution time spent per wall second, ms/s",
    "pg.plan_ms_per_s": "planning time per wall second, ms/s",
    "pg.mean_exec_ms": "mean execution time in the interval, ms",
    "pg.stddev_exec_ms": "stddev of execution time in the interval, ms",
    "pg.rows_per_s": "rows returned or affected per second",
    "pg.shared_blks_hit_per_s": "shared buffer hits per second",
    "pg.shared_blks_read_per_s": "shared blocks read per second",
    "pg.temp_blks_written_per_s": "temp blocks written per second",
    "pg.blk_read_time_ms_per_s": "block read time per wall second, ms/s",
    "pg.blk_write_time_ms_per_s": "block write time per wall second, ms/s",
    "pg.active": "backends in state active",
    "pg.idle": "backends in state idle",
    "pg.idle_in_tx": "backends idle in transaction",
    "pg.waiting": "backends waiting on a wait event (entity names the event)",
    "pg.wire_latency_ms": "PostgreSQL query latency seen on the wire p50, ms",
    "pg.wire_latency_p99_ms": "PostgreSQL query latency seen on the wire p99, ms",
    "pg.wire_latency_max_ms": "PostgreSQL query latency seen on the wire max, ms",
    "pg.wire_queries_per_s": "PostgreSQL queries completed per second on the wire",
    # http
    "http.latency_ms": "HTTP latency p50, ms",
    "http.latency_p99_ms": "HTTP latency p99, ms",
    "http.latency_max_ms": "HTTP latency max, ms",
    "http.requests_per_s": "HTTP requests completed per second",
    "http.errors_per_s": "HTTP 5xx responses per second",
}

# -- event vocabulary ------------------------------------------------------------------
EVENTS: dict[str, str] = {
    "loop.slow_callback": "asyncio callback ran longer than slow_callback_duration; span [t-took, t]",
    "loop.poll_slow": "asyncio selector poll took long (debug INFO)",
    "asyncio.task_destroyed": "Task was destroyed but it is pending",
    "asyncio.exception_never_retrieved": "Task/Future exception was never retrieved",
    "log.error": "ERROR/CRITICAL log record (traceback collapsed)",
    "log.warning": "WARNING log record of interest",
    "http.request": "an HTTP request (access log line or capture); value = latency s",
    "server.worker_timeout": "gunicorn WORKER TIMEOUT",
    "server.worker_boot": "server worker started",
    "server.worker_exit": "server worker exited",
    "server.start": "server started",
    "server.stop": "server stopped",
    "os.too_many_open_files": "EMFILE: too many open files",
    "db.pool_error": "database pool/connection error",
    "db.timeout": "database call timed out",
    "pg.query": "a PostgreSQL query seen on the wire; value = latency s",
    "pg.stats_reset": "pg_stat_statements counters were reset or entries evicted",
    "pg.snapshot": "a pg_stat_statements snapshot was taken",
    "proc.exited": "a monitored process disappeared or was replaced",
    "tcp.rst": "RST segment",
    "tcp.zero_window": "zero-window episode; value = duration s",
    "tcp.syn_retry": "SYN retransmitted",
    "tcp.handshake": "TCP handshake; value = initial RTT s",
    "tcp.connection": "a TCP connection (open..close)",
    "kernel.conntrack_full": "nf_conntrack: table full",
    "kernel.syn_flood": "possible SYN flooding",
    "kernel.oom_kill": "OOM killer",
    "kernel.limit": "other kernel limit message",
    "host.fact": "a fact about the host (time zone, uname)",
}

# Entity prefixes a parser may use.
ENTITY_PREFIXES = (
    "dev:", "cpu:", "pid:", "tid:", "query:", "flow:", "endpoint:", "http:", "coro:", "pool:",
    "host:", "wait:", "loop:", "proc:", "worker:",
)

# Skip reasons that are intentional (not failures: they do not make a run "degraded").
INTENTIONAL_SKIPS = frozenset({
    "since_boot_sample",  # iostat/pidstat first report: averages since boot
    "summary_row",  # Average:/Summary rows
    "comment",
    "duplicate_record",
    "insufficient_privilege",  # pg_stat_statements rows hidden from the dumping user
    "out_of_range",  # outside --since/--until
    "not_applicable",  # lines of a shared log that belong to no known record kind
    "empty_block",
})

# Skip reasons that are failures.
FAILURE_SKIPS = frozenset({
    "unparsed_line",  # nobody could understand this record
    "bad_value",  # a field that should be a number was not
    "bad_timestamp",
    "no_timestamp",  # samples printed without any time (iostat without -t) and no --interval to place them
    "truncated_record",
    "abandoned",  # lines after the consecutive-failure cap
    "decode_error",
    "limit_exceeded",
})


def is_failure(code: str) -> bool:
    """True when a skip code means input that could not be understood."""
    return code not in INTENTIONAL_SKIPS


def empty_metrics() -> pl.DataFrame:
    return pl.DataFrame(schema=METRIC_COLUMNS)


def empty_events() -> pl.DataFrame:
    return pl.DataFrame(schema=EVENT_COLUMNS)


def empty_entities() -> pl.DataFrame:
    return pl.DataFrame(schema=ENTITY_COLUMNS)


def conform(df: pl.DataFrame, columns: dict[str, pl.DataType]) -> pl.DataFrame:
    """Select ``columns`` in order, casting to their dtypes and adding missing ones as null."""
    exprs = []
    for name, dtype in columns.items():
        if name in df.columns:
            exprs.append(pl.col(name).cast(dtype))
        else:
            exprs.append(pl.lit(None, dtype=dtype).alias(name))
    return df.select(exprs)


def unknown_names(df: pl.DataFrame, column: str, vocabulary: dict[str, str]) -> list[str]:
    """Names in ``df[column]`` that the vocabulary does not know (empty list = valid)."""
    if df.height == 0:
        return []
    names = df.get_column(column).unique().drop_nulls().to_list()
    return sorted(n for n in names if n not in vocabulary)


def bad_entities(df: pl.DataFrame) -> list[str]:
    """Entity strings without a known prefix."""
    if df.height == 0:
        return []
    ents = df.get_column("entity").unique().drop_nulls().to_list()
    return sorted(e for e in ents if not e.startswith(ENTITY_PREFIXES))
