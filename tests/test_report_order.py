"""Report tables list tied rows in one order, whatever order the timeline's rows came in
(aggregations run on threads and return groups in any order)."""

from __future__ import annotations

import datetime as dt

import polars as pl

from analyzer import report_tables as rt


def _metrics(order: list[int]) -> pl.DataFrame:
    t0 = dt.datetime(2026, 1, 2, 10, 0, tzinfo=dt.timezone.utc)
    rows = []
    for pid in range(1, 9):  # eight tasks with the same CPU: every one ties
        for k in range(3):
            rows.append({"ts": t0 + dt.timedelta(seconds=k), "entity": f"pid:{pid}", "metric": "proc.cpu_pct",
                         "value": 11.76, "file": "pidstat.txt"})
            rows.append({"ts": t0 + dt.timedelta(seconds=k), "entity": f"pid:{pid}", "metric": "proc.threads",
                         "value": 4.0, "file": "pidstat.txt"})
    frame = pl.DataFrame(rows)
    return frame[order]


def test_tied_rows_keep_one_order():
    n = 8 * 3 * 2
    forward, backward = _metrics(list(range(n))), _metrics(list(range(n))[::-1])
    for build in (lambda m: rt._process_cpu(m, {}), lambda m: rt._threads(m, {})):
        a, b = build(forward), build(backward)
        assert len(a["rows"]) == 8
        assert a["rows"] == b["rows"]
    cpu = rt._process_cpu(forward, {})
    assert [r[0]["code"] for r in cpu["rows"]] == [f"pid:{i}" for i in range(1, 9)]
