"""Turn the engine's partial aggregates into timeline frames: per-second metrics per flow
and per server endpoint, TCP events, and the ``flows`` table.

Row-count policy (big captures stay readable):
- ``endpoint:<server>`` series exist for every server endpoint and every second it carried
  packets, with every counter (zeros included): a hundred short connections to PostgreSQL
  are one lane.
- ``flow:<client>><server>`` series exist for a flow when the capture holds at most
  ``ALL_FLOWS_UP_TO`` connections, or the flow carried ``FLOW_MIN_PACKETS`` packets, or it
  had a retransmission, reset, zero window, lost or out-of-order segment. Packet and byte
  rates are emitted for every second with packets; the anomaly counters only when non-zero.
- ACK RTT p50 per second is exact within a batch; a second that spans two batches combines
  their medians weighted by sample count (an approximation).
- ``tcp.handshake`` events: every handshake when the capture has at most
  ``ALL_HANDSHAKES_UP_TO`` connections, otherwise only slow ones (iRTT >= ``SLOW_HANDSHAKE_S``).
"""

from __future__ import annotations

import polars as pl

from parsers._capture_engine import NS, CaptureEngine
from parsers.base import attrs_json
from parsers.schema import UTC_NS

FLOW_MIN_PACKETS = 50
ALL_FLOWS_UP_TO = 1000
ALL_HANDSHAKES_UP_TO = 200
SLOW_HANDSHAKE_S = 0.2

_COUNTS = ("retrans", "dup", "zw", "ooo", "lost", "rst", "syn", "synack", "fin")
_METRIC_OF = {
    "packets": "net.packets_per_s", "packets_c2s": "net.packets_c2s_per_s",
    "packets_s2c": "net.packets_s2c_per_s", "bytes": "net.bytes_per_s", "bytes_c2s": "net.bytes_c2s_per_s",
    "bytes_s2c": "net.bytes_s2c_per_s", "retrans": "net.retransmits", "dup": "net.dup_acks",
    "zw": "net.zero_window", "ooo": "net.out_of_order", "lost": "net.lost_segments", "rst": "net.rsts",
    "syn": "net.syns", "opened": "net.connections_opened", "rtt_med": "net.ack_rtt_ms",
    "rtt_max": "net.ack_rtt_max_ms",
}
_ANOMALIES = ("retrans", "dup", "zw", "ooo", "lost", "rst", "syn")


def _ts(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.Datetime("ns")).dt.replace_time_zone("UTC")


def _rtt_combine() -> list[pl.Expr]:
    weighted = (pl.col("rtt_med").fill_nan(None) * pl.col("rtt_n")).sum() / pl.col("rtt_n").sum()
    return [pl.when(pl.col("rtt_n").sum() > 0).then(weighted).otherwise(None).alias("rtt_med"),
            pl.col("rtt_max").fill_nan(None).max().alias("rtt_max"), pl.col("rtt_n").sum().alias("rtt_n")]


def stream_frame(engine: CaptureEngine) -> pl.DataFrame:
    flows = engine.flows
    n = len(flows)
    names = [flows.endpoints(s) for s in range(n)]
    return pl.DataFrame({
        "s": pl.Series(range(n), dtype=pl.Int64),
        "client_dir": pl.Series(flows.client_dir, dtype=pl.Int64),
        "client": [c for c, _ in names], "server": [s for _, s in names],
        "irtt_ns": pl.Series(engine.state.s["first_rtt"][:n].tolist() if n else [], dtype=pl.Int64),
    }).with_columns(("flow:" + pl.col("client") + ">" + pl.col("server")).alias("entity"))


def build(engine: CaptureEngine) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(metrics, events, flows table, entities) of one capture."""
    info = stream_frame(engine)
    if not engine.flow_parts:
        empty = pl.DataFrame(schema={"ts": UTC_NS, "entity": pl.Utf8, "metric": pl.Utf8, "value": pl.Float64,
                                     "line": pl.Int64})
        return empty, _events(engine, info, pl.DataFrame()), _flows_table(info, None), None
    per = (pl.concat(engine.flow_parts).group_by("s", "d", "sec")
           .agg(pl.col("packets").sum(), pl.col("bytes").sum(), *[pl.col(c).sum() for c in _COUNTS],
                pl.col("tmin").min(), pl.col("tmax").max())
           .join(info.select("s", "client_dir", "entity", "server"), on="s")
           .with_columns((pl.col("d") == pl.col("client_dir")).alias("c2s")))
    totals = per.group_by("s").agg(
        pl.col("packets").filter(pl.col("c2s")).sum().alias("packets_c2s"),
        pl.col("packets").filter(~pl.col("c2s")).sum().alias("packets_s2c"),
        pl.col("bytes").filter(pl.col("c2s")).sum().alias("bytes_c2s"),
        pl.col("bytes").filter(~pl.col("c2s")).sum().alias("bytes_s2c"),
        pl.col("retrans").sum().alias("retransmits"), pl.col("rst").sum().alias("rsts"),
        pl.col("rst").filter(pl.col("c2s")).sum().alias("rst_c"),
        pl.col("rst").filter(~pl.col("c2s")).sum().alias("rst_s"),
        pl.col("syn").sum().alias("syns"), pl.col("synack").sum().alias("synacks"),
        pl.col("fin").filter(pl.col("c2s")).sum().alias("fin_c"),
        pl.col("fin").filter(~pl.col("c2s")).sum().alias("fin_s"),
        (pl.col("zw") + pl.col("lost") + pl.col("ooo") + pl.col("dup")).sum().alias("other_anomalies"),
        pl.col("tmin").min().alias("start_ns"), pl.col("tmax").max().alias("end_ns"))
    flows_table = _flows_table(info, totals)
    engine.close_open_episodes(dict(zip(totals.get_column("s").to_list(), totals.get_column("end_ns").to_list(),
                                        strict=True)))
    metrics = pl.concat([_flow_metrics(per, totals, len(info), engine.flow_rtt_parts), _endpoint_metrics(engine, per, info)],
                        how="vertical_relaxed")
    # the same capture gives the same rows in the same order, whatever the threads did
    metrics = metrics.sort("ts", "entity", "metric")
    events = _events(engine, info, totals)
    entities = (info.group_by("server", maintain_order=True).agg(pl.len().alias("connections"))
                .select(("endpoint:" + pl.col("server")).alias("entity"), pl.col("server").alias("label"),
                        pl.format('{{"connections":{}}}', pl.col("connections")).alias("attrs")))
    return metrics, events, flows_table, entities


def _long(wide: pl.DataFrame, entity: pl.Expr, keep_zero: bool) -> pl.DataFrame:
    value_cols = [c for c in _METRIC_OF if c in wide.columns]
    out = (wide.with_columns(entity.alias("entity"), _ts("ts_ns").alias("ts"))
           .unpivot(index=["ts", "entity"], on=value_cols, variable_name="metric", value_name="value")
           .filter(pl.col("value").is_not_null()))
    if not keep_zero:
        out = out.filter(~pl.col("metric").is_in(list(_ANOMALIES)) | (pl.col("value") != 0))
    # rounded to the nanosecond: parallel sums may differ in the last bit from run to run
    return out.with_columns(pl.col("metric").replace_strict(_METRIC_OF), pl.col("value").cast(pl.Float64).round(6),
                            pl.lit(None, dtype=pl.Int64).alias("line")).select("ts", "entity", "metric", "value",
                                                                                "line")


def _sums(keys: list[str]) -> list[pl.Expr]:
    return [
        pl.col("packets").sum(), pl.col("bytes").sum(),
        pl.col("packets").filter(pl.col("c2s")).sum().alias("packets_c2s"),
        pl.col("packets").filter(~pl.col("c2s")).sum().alias("packets_s2c"),
        pl.col("bytes").filter(pl.col("c2s")).sum().alias("bytes_c2s"),
        pl.col("bytes").filter(~pl.col("c2s")).sum().alias("bytes_s2c"),
        *[pl.col(c).sum() for c in _ANOMALIES],
    ]


def _flow_metrics(per: pl.DataFrame, totals: pl.DataFrame, n_streams: int,
                  rtt_parts: list[pl.DataFrame]) -> pl.DataFrame:
    chosen = totals.filter((pl.lit(n_streams <= ALL_FLOWS_UP_TO))
                           | ((pl.col("packets_c2s") + pl.col("packets_s2c")) >= FLOW_MIN_PACKETS)
                           | ((pl.col("retransmits") + pl.col("rsts") + pl.col("other_anomalies")) > 0))
    sel = per.join(chosen.select("s"), on="s", how="semi")
    wide = sel.group_by("entity", "sec").agg(*_sums([]))
    if rtt_parts:
        rtt = (pl.concat(rtt_parts).join(chosen.select("s"), on="s", how="semi")
               .join(per.select("s", "entity").unique(), on="s").group_by("entity", "sec").agg(*_rtt_combine())
               .drop("rtt_n"))
        wide = wide.join(rtt, on=["entity", "sec"], how="left")
    wide = wide.with_columns(((pl.col("sec") + 1) * NS).alias("ts_ns"))
    return _long(wide, pl.col("entity"), keep_zero=False)


def _endpoint_metrics(engine: CaptureEngine, per: pl.DataFrame, info: pl.DataFrame) -> pl.DataFrame:
    wide = per.group_by("server", "sec").agg(*_sums([]))
    opened = pl.DataFrame({"s": list(engine.stream_first_syn.keys()),
                           "sec": [t // NS for t in engine.stream_first_syn.values()]},
                          schema={"s": pl.Int64, "sec": pl.Int64})
    opened = (opened.join(info.select("s", "server"), on="s").group_by("server", "sec")
              .agg(pl.len().cast(pl.Int64).alias("opened")))
    wide = wide.join(opened, on=["server", "sec"], how="left").with_columns(pl.col("opened").fill_null(0))
    if engine.ep_rtt_parts:
        names = pl.DataFrame({"ep": pl.Series(range(len(engine.flows.ep_names)), dtype=pl.Int64),
                              "server": pl.Series(engine.flows.ep_names, dtype=pl.Utf8)})
        rtt = (pl.concat(engine.ep_rtt_parts).group_by("ep", "sec").agg(*_rtt_combine())
               .join(names, on="ep").drop("ep", "rtt_n"))
        wide = wide.join(rtt, on=["server", "sec"], how="left")
    wide = wide.with_columns(((pl.col("sec") + 1) * NS).alias("ts_ns"))
    return _long(wide, "endpoint:" + pl.col("server"), keep_zero=True)


def _state() -> pl.Expr:
    answered = (pl.col("synacks") > 0) | (pl.col("packets_s2c") > 0)
    return (pl.when((pl.col("syns") > 0) & (pl.col("synacks") == 0) & (pl.col("rst_s") > 0)).then(pl.lit("rejected"))
            .when(pl.col("rst_c") > 0).then(pl.lit("reset_by_client"))
            .when(pl.col("rst_s") > 0).then(pl.lit("reset_by_server"))
            .when((pl.col("syns") > 0) & ~answered).then(pl.lit("syn_unanswered"))
            .when((pl.col("fin_c") > 0) & (pl.col("fin_s") > 0)).then(pl.lit("closed"))
            .when((pl.col("fin_c") > 0) | (pl.col("fin_s") > 0)).then(pl.lit("half_closed"))
            .when((pl.col("syns") > 0) | (pl.col("synacks") > 0)).then(pl.lit("open"))
            .otherwise(pl.lit("midstream")))


def _flows_table(info: pl.DataFrame, totals: pl.DataFrame | None) -> pl.DataFrame:
    if totals is None or info.height == 0:
        return pl.DataFrame(schema={"flow": pl.Utf8, "stream": pl.Int64, "client": pl.Utf8, "server": pl.Utf8,
                                    "start": UTC_NS, "end": UTC_NS, "packets_c2s": pl.Int64,
                                    "packets_s2c": pl.Int64, "bytes_c2s": pl.Int64, "bytes_s2c": pl.Int64,
                                    "retransmits": pl.Int64, "rsts": pl.Int64, "state": pl.Utf8,
                                    "irtt_ms": pl.Float64})
    t = info.join(totals, on="s", how="inner").sort("s")
    return t.select(
        pl.col("entity").alias("flow"), pl.col("s").alias("stream"), "client", "server",
        _ts("start_ns").alias("start"), _ts("end_ns").alias("end"),
        *[pl.col(c).cast(pl.Int64) for c in ("packets_c2s", "packets_s2c", "bytes_c2s", "bytes_s2c",
                                             "retransmits", "rsts")],
        _state().alias("state"),
        pl.when(pl.col("irtt_ns") != 0).then(pl.col("irtt_ns") / 1e6).otherwise(None).alias("irtt_ms"))


def _events(engine: CaptureEngine, info: pl.DataFrame, totals: pl.DataFrame) -> pl.DataFrame:
    rows: list[dict] = []
    ent = info.get_column("entity").to_list()
    client_dir = info.get_column("client_dir").to_list()
    names = list(zip(info.get_column("client").to_list(), info.get_column("server").to_list(), strict=True))
    ev = engine.events

    def side(s: int, d: int) -> str:
        return "client" if d == client_dir[s] else "server"

    for ts, s, d, frame in ev.rst:
        who = side(s, d)
        rows.append(dict(ts=ts, end=None, entity=ent[s], kind="tcp.rst", severity="low", value=None,
                         message=f"RST from the {who} ({names[s][0 if who == 'client' else 1]})",
                         attrs=attrs_json({"by": who, "stream": s}), line=frame))
    for ts, s, d, frame, synack in ev.syn_retry:
        what = "SYN/ACK" if synack else "SYN"
        rows.append(dict(ts=ts, end=None, entity=ent[s], kind="tcp.syn_retry", severity="medium", value=None,
                         message=f"{what} retransmitted to {names[s][0] if synack else names[s][1]}",
                         attrs=attrs_json({"segment": what, "by": side(s, d), "stream": s}), line=frame))
    for start, end, s, d, count, still_open in ev.zero_window:
        who = side(s, d)
        rows.append(dict(ts=start, end=end, entity=ent[s], kind="tcp.zero_window", severity="medium",
                         value=(end - start) / NS,
                         message=f"{who} advertised a zero window for {(end - start) / NS:.3f} s",
                         attrs=attrs_json({"side": who, "segments": count, "stream": s,
                                           "open_at_end": still_open or None}), line=None))
    n = len(info)
    answered = set(totals.filter(pl.col("synacks") > 0).get_column("s").to_list()) if totals.height else set()
    for s, syn_ts in engine.stream_first_syn.items():
        irtt = int(engine.state.s["first_rtt"][s])
        if irtt == 0 or s not in answered:  # a SYN answered by RST is no handshake
            continue
        slow = irtt / NS >= SLOW_HANDSHAKE_S
        if not slow and n > ALL_HANDSHAKES_UP_TO:
            continue
        rows.append(dict(ts=syn_ts, end=syn_ts + max(irtt, 0), entity=ent[s], kind="tcp.handshake",
                         severity="medium" if slow else "info", value=irtt / NS,
                         message=f"handshake with {names[s][1]}: initial RTT {irtt / 1e6:.3f} ms",
                         attrs=attrs_json({"stream": s, "slow": slow or None}), line=None))
    schema = {"ts": pl.Int64, "end": pl.Int64, "entity": pl.Utf8, "kind": pl.Utf8, "severity": pl.Utf8,
              "value": pl.Float64, "message": pl.Utf8, "attrs": pl.Utf8, "line": pl.Int64}
    df = pl.DataFrame(rows, schema=schema)
    return df.with_columns(_ts("ts").alias("ts"), _ts("end").alias("end"))
