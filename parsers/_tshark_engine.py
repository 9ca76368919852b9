"""``--pcap-engine tshark``: the capture read by Wireshark's own dissectors instead of the fast
engine — slower, but Wireshark's judgement, and the reference the fast engine is tested
against.

tshark is found and version-checked through pyshark's helpers, run once with ``-T fields``
(one tab-separated line per TCP frame; multiple occurrences joined by ``\\x1e``) and its
output streamed into polars in chunks. Produced frames, as the fast engine names them:

- per-second TCP metrics per flow and per server endpoint (``net.packets_per_s``,
  ``net.bytes_per_s``, ``net.retransmits`` = retransmission + fast + spurious,
  ``net.dup_acks``, ``net.zero_window``, ``net.out_of_order``, ``net.lost_segments``,
  ``net.rsts``, ``net.ack_rtt_ms``/``net.ack_rtt_max_ms``), ``tcp.rst`` events, the ``flows``
  table (one row per ``tcp.stream``; bytes = frame lengths, as ``conv,tcp``);
- PostgreSQL and HTTP samples from the ``pgsql`` and ``http`` dissectors (PostgreSQL decoded on
  5432 and ``--pg-port``; HTTP on Wireshark's HTTP ports plus the web ports of the fast
  engine's list), turned into the same metrics, events and tables by ``_app_latency``.
  PostgreSQL latency: the frame with the query's first message (``Simple query``, or the first
  ``Parse``/``Bind``/... of an extended batch) → the frame with the ``Ready for query`` that
  answers it, FIFO per connection. HTTP latency: tshark's ``http.time`` (request frame →
  frame completing the response).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from collections import deque
from typing import BinaryIO

import polars as pl

from parsers._app_latency import build_frames
from parsers._http1 import sample_frame
from parsers.base import Accounting, ParseContext, ParseResult
from parsers.schema import UTC_NS

MIN_VERSION = (3, 0)
SEP = "\x1e"
CHUNK_LINES = 200_000
WEB_PORTS = (80, 3000, 5000, 8000, 8080, 8081, 8443, 8888, 9000)
FIELDS = ("frame.number", "frame.time_epoch", "frame.len", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst",
          "tcp.srcport", "tcp.dstport", "tcp.stream", "tcp.len", "tcp.flags.syn", "tcp.flags.ack",
          "tcp.flags.reset", "tcp.flags.fin", "tcp.analysis.retransmission", "tcp.analysis.fast_retransmission",
          "tcp.analysis.spurious_retransmission", "tcp.analysis.duplicate_ack", "tcp.analysis.zero_window",
          "tcp.analysis.out_of_order", "tcp.analysis.lost_segment", "tcp.analysis.ack_rtt", "pgsql.type",
          "pgsql.query", "pgsql.statement", "pgsql.tag", "pgsql.code", "pgsql.message", "http.request.method",
          "http.request.uri", "http.response.code", "http.time", "http.request_in")
COLS = [f.replace(".", "_") for f in FIELDS]
FLAG_COLS = {"retrans": ("tcp_analysis_retransmission", "tcp_analysis_fast_retransmission",
                         "tcp_analysis_spurious_retransmission"),
             "dup": ("tcp_analysis_duplicate_ack",), "zw": ("tcp_analysis_zero_window",),
             "ooo": ("tcp_analysis_out_of_order",), "lost": ("tcp_analysis_lost_segment",),
             "rst": ("tcp_flags_reset",)}
METRIC_OF = {"packets": "net.packets_per_s", "bytes": "net.bytes_per_s", "retrans": "net.retransmits",
             "dup": "net.dup_acks", "zw": "net.zero_window", "ooo": "net.out_of_order",
             "lost": "net.lost_segments", "rst": "net.rsts", "rtt_med": "net.ack_rtt_ms", "rtt_max": "net.ack_rtt_max_ms"}
NS = 1_000_000_000


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "\"": "\""}


def _unescape(text: str | None) -> str | None:
    """Undo the escaping ``-T fields`` applies to control characters in string fields."""
    if text is None or "\\" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPES:
            out.append(_ESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


class TsharkUnavailable(RuntimeError):
    """tshark is missing or too old; the message says which."""


def find_tshark() -> tuple[str, str]:
    """(path, version) of tshark via pyshark's helpers; raises ``TsharkUnavailable``."""
    try:
        from pyshark.tshark import tshark as pt
        path = pt.get_process_path()
        version = pt.get_tshark_version(path)
    except ImportError:
        path = shutil.which("tshark")
        if path is None:
            raise TsharkUnavailable("tshark not found (and pyshark is not installed)") from None
        out = subprocess.run([path, "--version"], capture_output=True, text=True).stdout.split()
        version = out[2] if len(out) > 2 else "0"
    except Exception as exc:  # pyshark raises its own TSharkNotFoundException
        raise TsharkUnavailable(f"tshark not found: {exc}") from None
    parts = tuple(int(p) for p in str(version).split(".")[:2] if p.isdigit())
    if parts < MIN_VERSION:
        raise TsharkUnavailable(f"tshark {version} is too old (need >= {'.'.join(map(str, MIN_VERSION))})")
    return path, str(version)


def tshark_command(path: str, capture: str, pg_ports: set[int]) -> list[str]:
    cmd = [path, "-r", capture, "-n", "-Y", "tcp", "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a",
           "-E", f"aggregator={SEP}", "-E", "quote=n", "-o", "tcp.desegment_tcp_streams:TRUE"]
    for port in sorted(pg_ports):
        cmd += ["-d", f"tcp.port=={port},pgsql"]
    for port in WEB_PORTS:
        cmd += ["-d", f"tcp.port=={port},http"]
    for f in FIELDS:
        cmd += ["-e", f]
    return cmd


def parse(stream: BinaryIO, *, ctx: ParseContext) -> ParseResult:
    acct = Accounting(ctx.file)
    path, version = find_tshark()
    pg_ports = {5432} | ({ctx.pg_port} if ctx.pg_port else set())
    own = getattr(stream, "name", None)
    tmp = None
    if not (isinstance(own, str) and os.path.isfile(own)):
        tmp = tempfile.NamedTemporaryFile(prefix="stallscope-", suffix=".pcap", delete=False)
        shutil.copyfileobj(stream, tmp)
        tmp.close()
        own = tmp.name
    try:
        tcp, app_rows, err = _run(tshark_command(path, own, pg_ports))
        total = _count_frames(path, own)
    finally:
        if tmp is not None:
            os.unlink(tmp.name)
    acct.total = total
    acct.parsed(total)
    if err.strip():
        acct.note("tshark_stderr", err.strip().splitlines()[-1][:200], level="warning")
    flows = _flows(tcp)
    metrics, events = _tcp_frames(tcp, flows)
    app = _AppFromTshark(flows, app_rows, pg_ports)
    app_metrics, app_events, tables = build_frames(app)  # type: ignore[arg-type]
    if flows.height:
        tables["flows"] = flows.drop("s", "client_dir_src")
    result = ParseResult(metrics=pl.concat([metrics, app_metrics]), events=pl.concat([events, app_events]),
                         accounting=acct, variant=f"tshark {version}", tables=tables)
    result.tz_reason = "capture timestamps are UTC epoch"
    result.tz_name = "UTC"
    return result


def _count_frames(path: str, capture: str) -> int:
    out = subprocess.run([path, "-r", capture, "-n", "-T", "fields", "-e", "frame.number"], capture_output=True)
    return out.stdout.count(b"\n")


def _run(cmd: list[str]) -> tuple[pl.DataFrame, pl.DataFrame, str]:
    """Run tshark; (slim TCP frame, rows carrying pgsql/http fields, stderr)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    tcp_parts, app_parts = [], []
    while True:
        lines = proc.stdout.readlines(CHUNK_LINES * 120)
        if not lines:
            break
        chunk = _read_chunk(b"".join(lines))
        tcp_parts.append(chunk.select(_slim()))
        app = chunk.filter(pl.any_horizontal([pl.col(c).is_not_null() for c in COLS[23:]]))
        if app.height:
            app_parts.append(app.select("frame_number", "tcp_stream", "tcp_srcport", "tcp_dstport",
                                        "frame_time_epoch", *COLS[23:]))
    err = proc.stderr.read().decode("utf-8", "replace")
    proc.wait()
    tcp = pl.concat(tcp_parts) if tcp_parts else _read_chunk(b"").select(_slim())
    app_rows = pl.concat(app_parts) if app_parts else pl.DataFrame()
    return tcp, app_rows, err


def _read_chunk(data: bytes) -> pl.DataFrame:
    if not data:
        return pl.DataFrame(schema={c: pl.Utf8 for c in COLS})
    return pl.read_csv(io.BytesIO(data), separator="\t", has_header=False, new_columns=COLS, quote_char=None,
                       infer_schema=False, truncate_ragged_lines=True)


def _slim() -> list[pl.Expr]:
    flag = {name: pl.any_horizontal([pl.col(c).is_not_null() & (pl.col(c) != "0") for c in cols]).cast(pl.Int64)
            for name, cols in FLAG_COLS.items()}
    return [pl.col("frame_number").cast(pl.Int64).alias("frame"),
            (pl.col("frame_time_epoch").cast(pl.Float64) * 1e9).round(0).cast(pl.Int64).alias("t"),
            pl.col("frame_len").cast(pl.Int64).alias("len"),
            pl.coalesce("ip_src", "ipv6_src").str.split(SEP).list.first().alias("src"),
            pl.coalesce("ip_dst", "ipv6_dst").str.split(SEP).list.first().alias("dst"),
            pl.col("ipv6_src").is_not_null().alias("v6"),
            pl.col("tcp_srcport").str.split(SEP).list.first().cast(pl.Int64).alias("sport"),
            pl.col("tcp_dstport").str.split(SEP).list.first().cast(pl.Int64).alias("dport"),
            pl.col("tcp_stream").str.split(SEP).list.first().cast(pl.Int64).alias("s"),
            ((pl.col("tcp_flags_syn") == "1") & (pl.col("tcp_flags_ack") != "1")).alias("pure_syn"),
            (pl.col("tcp_analysis_ack_rtt").cast(pl.Float64, strict=False) * 1000).alias("rtt"),
            *[e.alias(n) for n, e in flag.items()]]


def _name(ip: pl.Expr, v6: pl.Expr, port: pl.Expr) -> pl.Expr:
    return pl.when(v6).then(pl.format("[{}]:{}", ip, port)).otherwise(pl.format("{}:{}", ip, port))


def _flows(tcp: pl.DataFrame) -> pl.DataFrame:
    """One row per tcp.stream: client = sender of the first SYN, else the side not on a known
    server port (the lower port serves when neither is)."""
    from parsers._capture_flows import KNOWN_SERVER_PORTS
    known = list(KNOWN_SERVER_PORTS)
    first = tcp.sort("frame").group_by("s", maintain_order=True).agg(
        pl.col("src").first(), pl.col("dst").first(), pl.col("sport").first(), pl.col("dport").first(),
        pl.col("v6").first(), pl.col("src").filter(pl.col("pure_syn")).first().alias("syn_src"),
        pl.col("sport").filter(pl.col("pure_syn")).first().alias("syn_sport"))
    src_is_client = pl.when(pl.col("syn_src").is_not_null()).then(
        (pl.col("syn_src") == pl.col("src")) & (pl.col("syn_sport") == pl.col("sport"))).otherwise(
        pl.when((pl.col("dport") < 1024) | pl.col("dport").is_in(known)).then(True)
        .when((pl.col("sport") < 1024) | pl.col("sport").is_in(known)).then(False)
        .otherwise(pl.col("dport") <= pl.col("sport")))
    sides = first.with_columns(src_is_client.alias("client_dir_src")).with_columns(
        pl.when(pl.col("client_dir_src")).then(_name(pl.col("src"), pl.col("v6"), pl.col("sport")))
        .otherwise(_name(pl.col("dst"), pl.col("v6"), pl.col("dport"))).alias("client"),
        pl.when(pl.col("client_dir_src")).then(_name(pl.col("dst"), pl.col("v6"), pl.col("dport")))
        .otherwise(_name(pl.col("src"), pl.col("v6"), pl.col("sport"))).alias("server"))
    c2s = _c2s_expr(sides)
    per = tcp.join(sides.select("s", "client", "server", "client_dir_src", "src", "sport").rename(
        {"src": "src0", "sport": "sport0"}), on="s").with_columns(c2s.alias("c2s"))
    return per.group_by("s").agg(
        ("flow:" + pl.col("client").first() + ">" + pl.col("server").first()).alias("flow"),
        pl.col("client").first(), pl.col("server").first(),
        pl.col("t").min().cast(pl.Datetime("ns")).dt.replace_time_zone("UTC").alias("start"),
        pl.col("t").max().cast(pl.Datetime("ns")).dt.replace_time_zone("UTC").alias("end"),
        pl.col("c2s").sum().alias("packets_c2s"), (~pl.col("c2s")).sum().alias("packets_s2c"),
        pl.col("len").filter(pl.col("c2s")).sum().alias("bytes_c2s"),
        pl.col("len").filter(~pl.col("c2s")).sum().alias("bytes_s2c"),
        pl.col("retrans").sum().alias("retransmits"), pl.col("rst").sum().alias("rsts"),
        pl.col("client_dir_src").first()).sort("s")


def _c2s_expr(_: pl.DataFrame) -> pl.Expr:
    same = (pl.col("src") == pl.col("src0")) & (pl.col("sport") == pl.col("sport0"))
    return pl.when(pl.col("client_dir_src")).then(same).otherwise(~same)


def _tcp_frames(tcp: pl.DataFrame, flows: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    names = flows.select("s", "flow", ("endpoint:" + pl.col("server")).alias("endpoint"))
    rows = tcp.join(names, on="s").with_columns(((pl.col("t") // NS + 1) * NS).alias("sec"))
    counts = [pl.len().alias("packets"), pl.col("len").sum().alias("bytes"),
              *[pl.col(c).sum().alias(c) for c in FLAG_COLS],
              pl.col("rtt").median().alias("rtt_med"), pl.col("rtt").max().alias("rtt_max")]
    out = []
    for entity in ("flow", "endpoint"):
        per = rows.group_by(entity, "sec").agg(counts).rename({entity: "entity"})
        long = per.unpivot(index=["entity", "sec"], variable_name="name", value_name="value").filter(
            pl.col("value").is_not_null() & ((pl.col("value") != 0) | pl.col("name").is_in(["packets", "bytes"])))
        out.append(long.select(pl.col("sec").cast(pl.Datetime("ns")).dt.replace_time_zone("UTC").alias("ts"),
                               "entity", pl.col("name").replace_strict(METRIC_OF).alias("metric"),
                               pl.col("value").cast(pl.Float64), pl.lit(None, dtype=pl.Int64).alias("line")))
    metrics = pl.concat(out).sort("entity", "metric", "ts")
    rst = rows.filter(pl.col("rst") > 0)
    events = rst.select(pl.col("t").cast(pl.Datetime("ns")).dt.replace_time_zone("UTC").alias("ts"),
                        pl.lit(None, dtype=UTC_NS).alias("end"), pl.col("flow").alias("entity"),
                        pl.lit("tcp.rst").alias("kind"), pl.lit("low").alias("severity"),
                        pl.lit(None, dtype=pl.Float64).alias("value"),
                        pl.format("RST from {}:{}", "src", "sport").alias("message"),
                        pl.format('{{"stream":{}}}', "s").alias("attrs"), pl.col("frame").alias("line"))
    return metrics, events


class _Endpoints:
    def __init__(self, flows: pl.DataFrame) -> None:
        self.names = {s: (c, v) for s, c, v in flows.select("s", "client", "server").iter_rows()}

    def endpoints(self, s: int) -> tuple[str, str]:
        return self.names.get(s, ("?", "?"))


class _AppFromTshark:
    """The attributes ``_app_latency.build_frames`` reads, filled from dissector fields."""

    def __init__(self, flows: pl.DataFrame, rows: pl.DataFrame, pg_ports: set[int]) -> None:
        self.flows = _Endpoints(flows)
        self.pg_times: list[pl.DataFrame] = []
        self.pg_detail: list[pl.DataFrame] = []
        self.http_parts: list[pl.DataFrame] = []
        if rows.height:
            self._pg(rows.filter(pl.col("pgsql_type").is_not_null()), pg_ports)
            self._http(rows.filter(pl.col("http_request_method").is_not_null()
                                   | pl.col("http_response_code").is_not_null()))

    def _pg(self, rows: pl.DataFrame, pg_ports: set[int]) -> None:
        pending: dict[int, deque] = {}
        open_: dict[int, list] = {}
        names: dict[tuple[int, str], str] = {}
        resp: dict[int, list] = {}
        out = []
        openers = {"Simple query", "Parse", "Bind", "Execute", "Describe", "Close", "Flush", "Function call"}
        for frame, s, _sport, dport, t, types, query, stmt, tag, code, msg in rows.select(
                "frame_number", "tcp_stream", "tcp_srcport", "tcp_dstport", "frame_time_epoch", "pgsql_type",
                "pgsql_query", "pgsql_statement", "pgsql_tag", "pgsql_code", "pgsql_message").iter_rows():
            s, ts, frame = int(s.split(SEP)[0]), round(float(t) * 1e9), int(frame)
            client = int(dport.split(SEP)[0]) in pg_ports
            queries = iter([_unescape(x) for x in query.split(SEP)]) if query else iter(())
            stmts = iter((stmt or "").split(SEP)) if stmt else iter(())
            tags = iter((tag or "").split(SEP)) if tag else iter(())
            q = pending.setdefault(s, deque())
            cur = open_.setdefault(s, [None, None, 0])
            r = resp.setdefault(s, [None, 0, None, None])
            for ty in types.split(SEP):
                if client:
                    if ty in openers and cur[0] is None:
                        cur[0], cur[2] = ts, frame
                    if ty == "Startup message":
                        q.append(("0", ts, frame, None))
                    elif ty == "Simple query":
                        q.append(("Q", cur[0], cur[2], next(queries, None)))
                        open_[s] = cur = [None, None, 0]
                    elif ty == "Parse":
                        name, text = next(stmts, ""), next(queries, None)
                        names[(s, name)] = text or ""
                        cur[1] = cur[1] or text
                    elif ty == "Bind":
                        name = next(stmts, "")
                        cur[1] = cur[1] or names.get((s, name))
                    elif ty in ("Sync", "Function call"):
                        q.append(("S" if ty == "Sync" else "F", cur[0] if cur[0] is not None else ts,
                                  cur[2] or frame, cur[1]))
                        open_[s] = cur = [None, None, 0]
                    continue
                if ty == "Command completion":
                    r[0], r[1] = next(tags, None), r[1] + 1
                elif ty == "Error" and r[2] is None:
                    r[2], r[3] = code, msg
                elif ty == "Ready for query":
                    if q:
                        kind, start, f0, text = q.popleft()
                        if kind != "0":
                            out.append((s, start, ts, kind, text, r[0], r[1], r[2], r[3], f0, frame))
                    resp[s] = r = [None, 0, None, None]
        if not out:
            return
        cols = list(zip(*out, strict=True))
        err = [None if c is None else (b"C" + c.split(SEP)[0].encode() + b"\0M" + (m or "").split(SEP)[0].encode())
               for c, m in zip(cols[7], cols[8], strict=True)]
        df = pl.DataFrame({
            "stream": pl.Series(cols[0], dtype=pl.Int64), "start": pl.Series(cols[1], dtype=pl.Int64),
            "end": pl.Series(cols[2], dtype=pl.Int64), "kind": pl.Series([ord(k) for k in cols[3]], dtype=pl.UInt8),
            "text": pl.Series([None if x is None else x.encode() for x in cols[4]], dtype=pl.Binary),
            "tag": pl.Series([None if x is None else x.encode() for x in cols[5]], dtype=pl.Binary),
            "commands": pl.Series(cols[6], dtype=pl.Int64), "error": pl.Series(err, dtype=pl.Binary),
            "frame_start": pl.Series(cols[9], dtype=pl.Int64), "frame_end": pl.Series(cols[10], dtype=pl.Int64),
            "tx_status": pl.Series([None] * len(out), dtype=pl.UInt8)})
        self.pg_times.append(df.select("stream", "start", "end"))
        self.pg_detail.append(df.with_columns(pl.lit(True).alias("in_table")))

    def _http(self, rows: pl.DataFrame) -> None:
        requests: dict[int, list[tuple[int, str, str]]] = {}  # request frame -> requests in it
        answered: dict[int, int] = {}
        out = []
        for frame, s, t, method, uri, code, htime, req_in in rows.select(
                "frame_number", "tcp_stream", "frame_time_epoch", "http_request_method", "http_request_uri",
                "http_response_code", "http_time", "http_request_in").iter_rows():
            frame, s, ts = int(frame), int(s.split(SEP)[0]), round(float(t) * 1e9)
            if method:
                requests[frame] = [(ts, m, u) for m, u in zip(method.split(SEP), (uri or "").split(SEP),
                                                              strict=False)]
            if code:
                codes, times = code.split(SEP), (htime or "").split(SEP)
                reqs = (req_in or "").split(SEP)
                for i, c in enumerate(codes):
                    rf = int(reqs[i]) if i < len(reqs) and reqs[i] else None
                    req = None
                    if rf is not None and requests.get(rf):
                        k = answered.get(rf, 0)
                        req = requests[rf][min(k, len(requests[rf]) - 1)]
                        if not c.startswith("1"):  # an interim response leaves the request open
                            answered[rf] = k + 1
                    took = float(times[i]) if i < len(times) and times[i] else None
                    start = ts - round(took * 1e9) if took is not None else (req[0] if req else ts)
                    out.append((s, req[1] if req else "", req[2] if req else "", int(c), start, ts, ts,
                                rf or 0, frame, []))
        if out:
            self.http_parts.append(sample_frame(out))
