"""Application latency from captures: a packet consumer of the capture engine that picks the
connections carrying PostgreSQL or HTTP/1.x, reassembles them (``_reassembly``), times every
query (``_pgwire``) and request (``_http1``), and hands the samples to ``_app_latency`` for
the timeline rows.

Which connections: PostgreSQL when the server port is 5432 or ``--pg-port``, or the first
payload is a startup-phase message or a plausible typed-message chain; HTTP/1.x when the
first payload is a request line or a status line. Everything else is dropped after its first
payload segment (numpy masks keep it off the per-packet path).

Memory: per-connection state is dropped ``CLOSE_GRACE_NS`` after the connection's first
FIN/RST; samples are turned into compact frames every ``FLUSH_SAMPLES``; per-query detail is
kept for the first ``TABLE_MAX`` queries and for event candidates only, (stream, start, end)
for every query (24 bytes each, for the per-second metrics).
"""

from __future__ import annotations

import gc
import json

import numpy as np
import polars as pl

from parsers._app_latency import (
    NS,
    SLOW_S,
    TABLE_MAX,
    TOP_QUERIES,
    build_frames,
    event_candidates,
    pg_per_second,
)
from parsers._capture_decode import TH_FIN, TH_RST
from parsers._http1 import Http1, looks_like_http, sample_frame
from parsers._pgwire import PgWire, looks_like_pg
from parsers._reassembly import Direction, flush, reassemble

UNKNOWN, PG, HTTP, OTHER = 0, 1, 2, 3
PG_DEFAULT_PORT = 5432
FLUSH_SAMPLES = 20_000
FLUSH_FRAMES = 4  # batches of paired queries held before they are merged and trimmed
FINALIZE_ROWS = 500_000  # (stream, start, end) rows held before finished seconds are aggregated
FINALIZE_LAG_NS = 120 * 1_000_000_000
CLOSE_GRACE_NS = 5 * 1_000_000_000  # late segments (retransmitted FINs, the last ACKs) after a close


class AppLatency:
    """Capture-engine consumer (``CaptureEngine(consumers=[app])``); ``build(flows)`` at the end."""

    def __init__(self, pg_port: int | None = None) -> None:
        self.pg_ports = {PG_DEFAULT_PORT} | ({pg_port} if pg_port else set())
        self.kind = np.zeros(1024, dtype=np.int8)
        self.tries: dict[int, int] = {}
        self.pg, self.http = PgWire(), Http1()
        self.pg.table_room = TABLE_MAX
        self.pg_dirs: dict[int, Direction] = {}
        self.http_dirs: dict[int, Direction] = {}
        self.pg_parts: list[pl.DataFrame] = []
        self.pg_times: list[pl.DataFrame] = []  # (stream, start, end) of queries in open seconds
        self.pg_seconds: list[pl.DataFrame] = []  # metric rows of finished seconds
        self.pg_count = 0
        self.pg_detail: list[pl.DataFrame] = []  # pg_table + pg_cands, for build_frames
        self.pg_table: list[pl.DataFrame] = []  # the first TABLE_MAX queries
        self.pg_cands: list[pl.DataFrame] = []  # later queries that may become events
        self.pg_table_top = np.zeros(0, dtype=np.int64)
        self.pg_table_rows = 0
        self.http_parts: list[pl.DataFrame] = []
        self.flows = None
        self.closing: dict[int, int] = {}  # stream -> capture time of its first FIN/RST

    # -- consumer -------------------------------------------------------------------------
    def __call__(self, batch) -> None:  # batch: parsers._capture_engine.PacketBatch
        collecting = gc.isenabled()
        gc.disable()  # a batch allocates many short-lived small objects; no cycles are made
        try:
            self._consume(batch)
        finally:
            if collecting:
                gc.enable()

    def _consume(self, batch) -> None:
        tcp = batch.tcp
        self.flows = batch.flows
        if len(batch.flows) > len(self.kind):
            self.kind = np.concatenate([self.kind, np.zeros(max(len(batch.flows), 2 * len(self.kind)) - len(self.kind),
                                                            dtype=np.int8)])
        stream = batch.stream
        sel = tcp.payload_cap > 0
        kind = self.kind[stream]
        unknown = np.flatnonzero(sel & (kind == UNKNOWN))
        if len(unknown):
            self._classify(batch, unknown)
            kind = self.kind[stream]
        raw, base = None, 0
        for which, dirs in ((PG, self.pg_dirs), (HTTP, self.http_dirs)):
            rows = np.flatnonzero(sel & (kind == which))
            if not len(rows):
                continue
            key = stream[rows] * 2 + (~batch.c2s[rows]).astype(np.int64)
            seglen = tcp.seglen[rows]
            cap = tcp.payload_cap[rows]
            seglen = np.where(seglen < 0, cap, seglen)
            lead = self.pg.lead(key) if which == PG else None
            if raw is None:
                raw, base = batch.records.source()
            dv = reassemble(key, tcp.seq[rows], seglen, cap, tcp.payload_off[rows] + base, tcp.ts_ns[rows],
                            batch.frame[rows], raw, dirs, lead, tcp.ack[rows])
            if which == PG:
                self.pg.process(dv)
                self._drop_dead()
            else:
                self.http.process(dv)
        self._evict_closed(batch, kind)
        if len(self.pg.samples) >= FLUSH_SAMPLES or len(self.pg.frames) >= FLUSH_FRAMES:
            self._absorb_pg()
        if len(self.http.samples) >= FLUSH_SAMPLES:
            self._absorb_http()

    def _classify(self, batch, rows: np.ndarray) -> None:
        streams, first = np.unique(batch.stream[rows], return_index=True)
        tcp = batch.tcp
        for s, i in zip(streams.tolist(), rows[first].tolist(), strict=True):
            c2s = bool(batch.c2s[i])
            server_port = int(tcp.dport[i] if c2s else tcp.sport[i])
            data = batch.payload(i)
            if server_port in self.pg_ports or looks_like_pg(data, c2s):
                self.kind[s] = PG
            elif looks_like_http(data, c2s):
                self.kind[s] = HTTP
            else:
                tries = self.tries.get(s, 0) + 1
                self.tries[s] = tries
                if tries >= 2 or len(data) >= 16:
                    self.kind[s] = OTHER
                    self.tries.pop(s, None)

    def _drop_dead(self) -> None:
        """Encrypted connections and cancel requests carry nothing more to read."""
        for s in self.pg.dead:
            self.kind[s] = OTHER
            self.pg_dirs.pop(2 * s, None)
            self.pg_dirs.pop(2 * s + 1, None)
        self.pg.dead.clear()

    def _evict_closed(self, batch, kind: np.ndarray) -> None:
        """Forget connections CLOSE_GRACE_NS after their first FIN/RST (state must not grow with
        the number of connections a capture holds): what they still owed is counted as lost."""
        tcp = batch.tcp
        ending = np.flatnonzero(((tcp.flags & (TH_FIN | TH_RST)) != 0) & ((kind == PG) | (kind == HTTP)))
        if len(ending):
            streams, first = np.unique(batch.stream[ending], return_index=True)
            for s, t in zip(streams.tolist(), tcp.ts_ns[ending][first].tolist(), strict=True):
                self.closing.setdefault(s, t)
        if not self.closing or not len(tcp):
            return
        horizon = int(tcp.ts_ns.max()) - CLOSE_GRACE_NS
        for s in [s for s, t in self.closing.items() if t < horizon]:
            del self.closing[s]
            if self.kind[s] == PG:
                self.pg.forget(s)
                dirs = self.pg_dirs
            elif self.kind[s] == HTTP:
                self.http.forget(s)
                dirs = self.http_dirs
            else:
                continue
            dirs.pop(2 * s, None)
            dirs.pop(2 * s + 1, None)
            self.kind[s] = OTHER

    def finish(self) -> None:
        for which, dirs in ((PG, self.pg_dirs), (HTTP, self.http_dirs)):
            dv = flush(dirs)
            if len(dv):
                (self.pg if which == PG else self.http).process(dv)
        self.pg.finish()
        self.http.finish()
        self._absorb_pg()
        self._absorb_http()

    # -- samples → compact frames -----------------------------------------------------------
    def _absorb_pg(self) -> None:
        rows = self.pg.samples
        if self.pg.frames:
            self.pg_parts.extend(self.pg.frames)
            self.pg.frames = []
        if not rows:
            if self.pg_parts:
                self._trim_pg()
            return
        self.pg.samples = []
        cols = list(zip(*rows, strict=True))
        self.pg_parts.append(pl.DataFrame({
            "stream": pl.Series(cols[0], dtype=pl.Int64), "start": pl.Series(cols[1], dtype=pl.Int64),
            "end": pl.Series(cols[2], dtype=pl.Int64), "kind": pl.Series(cols[3], dtype=pl.UInt8),
            "text": pl.Series(cols[4], dtype=pl.Binary), "tag": pl.Series(cols[5], dtype=pl.Binary),
            "commands": pl.Series(cols[6], dtype=pl.Int64), "error": pl.Series(cols[7], dtype=pl.Binary),
            "frame_start": pl.Series(cols[8], dtype=pl.Int64), "frame_end": pl.Series(cols[9], dtype=pl.Int64),
            "tx_status": pl.Series(cols[10], dtype=pl.UInt8),
        }))
        self._trim_pg()

    def _trim_pg(self) -> None:
        """Bound memory: (stream, start, end) of every query for the per-second metrics; full
        detail only for the first TABLE_MAX queries (the table) and for event candidates."""
        df = pl.concat(self.pg_parts) if len(self.pg_parts) > 1 else self.pg_parts[0]
        self.pg_parts = []
        self.pg_times.append(df.select("stream", "start", "end"))
        self.pg_count += df.height
        if sum(p.height for p in self.pg_times) > FINALIZE_ROWS:
            self._finalize_seconds()
        room = TABLE_MAX - self.pg_table_rows
        if room > 0:
            part = df.head(room)
            self.pg_table.append(part.with_columns(pl.lit(True).alias("in_table")))
            self.pg_table_rows += part.height
            lat = (part.get_column("end") - part.get_column("start")).to_numpy()
            top = np.concatenate([self.pg_table_top, lat])
            self.pg_table_top = -np.sort(-top)[:TOP_QUERIES]  # the table's slowest, for detail_ns
            df = df.slice(room)
        if df.height:
            # candidates are filtered among themselves: a superset of what the whole detail
            # frame would keep (a rank among fewer rows is never worse), so events do not change
            self.pg_cands.append(df.with_columns(pl.lit(False).alias("in_table")))
            self.pg_cands = [event_candidates(pl.concat(self.pg_cands))]
            cand = self.pg_cands[0]
            lat = np.concatenate([self.pg_table_top, (cand.get_column("end") - cand.get_column("start")).to_numpy()])
            if len(lat) >= TOP_QUERIES:  # later queries faster than this cannot become events
                self.pg.detail_ns = min(int(-np.partition(-lat, TOP_QUERIES - 1)[TOP_QUERIES - 1]), int(SLOW_S * NS))
        self.pg_detail = [*self.pg_table, *self.pg_cands]

    def _finalize_seconds(self) -> None:
        """Per-second metrics of seconds that can no longer receive queries (completion times
        run in capture order, give or take ``FINALIZE_LAG_NS``): only their rows are kept."""
        times = pl.concat(self.pg_times)
        horizon = (int(times.get_column("end").max()) - FINALIZE_LAG_NS) // NS * NS
        done = times.filter(pl.col("end") < horizon)
        if done.height:
            self.pg_seconds.append(pg_per_second(self, done))
        self.pg_times = [times.filter(pl.col("end") >= horizon)]

    def _absorb_http(self) -> None:
        rows = self.http.samples
        if not rows:
            return
        self.http.samples = []
        self.http_parts.append(sample_frame(rows))

    # -- results ----------------------------------------------------------------------------
    def build(self) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, pl.DataFrame]]:
        """(metrics, events, tables)."""
        return build_frames(self)

    def notes(self) -> list[tuple[str, str]]:
        pg, http = self.pg, self.http
        out = []
        if pg.connections:
            out.append(("pg_wire_summary", json.dumps({
                "connections": pg.connections, "queries": self.count("pg"), "connection_setups": pg.setups,
                "tls_connections": pg.tls_streams, "cancel_requests": pg.cancels, "resyncs": pg.resyncs,
                "unmatched_ready_for_query": pg.unmatched_z, "queries_without_answer": pg.lost_queries})))
        if http.connections:
            out.append(("http_summary", json.dumps({
                "connections": http.connections, "requests": self.count("http"), "unanswered": http.unanswered,
                "incomplete_requests": http.incomplete,
                "unmatched_responses": http.unmatched, "framing_errors": http.errors})))
        return out

    def count(self, which: str) -> int:
        return self.pg_count if which == "pg" else sum(p.height for p in self.http_parts)
