"""The vectorised engine behind ``parsers.iostat`` for text reports.

Lines arrive in batches (``lines.iter_line_batches``); each batch becomes a polars frame of
lines that is classified by pattern (blank, ``Linux`` header, ``-t`` time line, ``avg-cpu``
header, ``Device`` header, value row), stateful facts are carried by forward fills (current
report, current time, current header layout, report since the last ``Linux`` header), rows are
split into tokens and mapped **by header name** into long metric rows. Only the rare odd
lines (wrapped or glued rows, junk) go through per-line Python.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

import polars as pl

from parsers import _sysstat as ss
from parsers.base import Accounting
from parsers.lines import ANSI_RE
from parsers.timeutil import DayRoller

# kinds of lines
BLANK, HEADER, CPU_HDR, DEV_HDR, STAMP, DATA, HDR_CONT = 0, 1, 2, 3, 4, 5, 7
NO_BLOCK = -9
SENTINEL = dt.datetime(1800, 1, 1)  # "this report's time line was unreadable"
MAX_ODD_LINE = 4096

# device columns: header name -> (metric, factor to the metric's unit)
DEVICE_COLUMNS: dict[str, tuple[str, float]] = {
    "r/s": ("disk.r_per_s", 1.0), "w/s": ("disk.w_per_s", 1.0),
    "d/s": ("disk.d_per_s", 1.0), "f/s": ("disk.f_per_s", 1.0),
    "rkB/s": ("disk.read_kbps", 1.0), "rMB/s": ("disk.read_kbps", 1024.0), "rsec/s": ("disk.read_kbps", 0.5),
    "wkB/s": ("disk.write_kbps", 1.0), "wMB/s": ("disk.write_kbps", 1024.0),
    "wsec/s": ("disk.write_kbps", 0.5),
    "dkB/s": ("disk.discard_kbps", 1.0), "dMB/s": ("disk.discard_kbps", 1024.0),
    "kB_read/s": ("disk.read_kbps", 1.0), "MB_read/s": ("disk.read_kbps", 1024.0),
    "Blk_read/s": ("disk.read_kbps", 0.5),
    "kB_wrtn/s": ("disk.write_kbps", 1.0), "MB_wrtn/s": ("disk.write_kbps", 1024.0),
    "Blk_wrtn/s": ("disk.write_kbps", 0.5),
    "kB_dscd/s": ("disk.discard_kbps", 1.0), "MB_dscd/s": ("disk.discard_kbps", 1024.0),
    "Blk_dscd/s": ("disk.discard_kbps", 0.5),
    "rrqm/s": ("disk.rrqm_per_s", 1.0), "wrqm/s": ("disk.wrqm_per_s", 1.0),
    "r_await": ("disk.r_await_ms", 1.0), "w_await": ("disk.w_await_ms", 1.0),
    "d_await": ("disk.d_await_ms", 1.0), "f_await": ("disk.f_await_ms", 1.0), "await": ("disk.await_ms", 1.0),
    "rareq-sz": ("disk.rareq_kb", 1.0), "wareq-sz": ("disk.wareq_kb", 1.0),
    "avgrq-sz": ("disk.areq_kb", 0.5),  # classic: sectors
    "areq-sz": ("disk.areq_kb", 1.0),
    "aqu-sz": ("disk.aqu_sz", 1.0), "avgqu-sz": ("disk.aqu_sz", 1.0),
    "svctm": ("disk.svctm_ms", 1.0), "%util": ("disk.util_pct", 1.0), "util": ("disk.util_pct", 1.0),
    "tps": ("disk.tps", 1.0),
}
CPU_COLUMNS = {"%user": "cpu.user_pct", "%nice": "cpu.nice_pct", "%system": "cpu.system_pct",
               "%sys": "cpu.system_pct", "%iowait": "cpu.iowait_pct", "%steal": "cpu.steal_pct",
               "%idle": "cpu.idle_pct"}
# every column name iostat has printed (for header continuations of wrapped output)
KNOWN_COLUMNS = set(DEVICE_COLUMNS) | {"%rrqm", "%wrqm", "%drqm", "drqm/s", "dareq-sz", "kB_read", "kB_wrtn",
                                       "kB_dscd", "MB_read", "MB_wrtn", "MB_dscd", "Blk_read", "Blk_wrtn",
                                       "Blk_dscd", "kB/s", "MB/s", "rqm/s", "Device", "Device:"}

HEADER_PAT = r"^\s*Linux \S+ \([^)]*\)\s+\S"
CPU_HDR_PAT = r"^\s*avg-cpu:"
DEV_HDR_PAT = r"^\s*Device:?(?:\s|$)|\sDevice\s*$"
CLOCK_PAT = r"\d{1,2}(?::|时|時)\d{2}(?::|分)\d{2}(?:[.,]\d+)?秒?"
STAMP_PAT = (r"^\s*(?:Time:\s*)?(?:\S.{0,40}?[T ]\s*)?(?:午前|午後|上午|下午)?\s*" + CLOCK_PAT
             + r"(?:\s*[AaPp]\.?[Mm]\.?)?(?:Z|[+-]\d{2}:?\d{2})?\s*$")
HDR_CONT_PAT = r"^(?:" + "|".join(re.escape(c) for c in sorted(KNOWN_COLUMNS - {"Device", "Device:"},
                                                            key=len, reverse=True)) + r")(?:\s|$)"
SUFFIX_PAT = r"\d[BkKMGTP%](?:\s|$)"


@dataclass
class Layout:
    """One header row: which token holds what."""

    id: int
    kind: str  # "cpu" | "dev"
    text: str
    names: list[str]
    device_pos: int = -1
    columns: list[tuple[int, str, float]] = field(default_factory=list)  # (token index, metric, factor)

    @property
    def ncols(self) -> int:
        return len(self.names)


def make_layout(layout_id: int, kind: str, text: str) -> Layout:
    names = text.split()
    if kind == "cpu":
        names = names[1:]  # "avg-cpu:"
        cols = [(i, CPU_COLUMNS[n], 1.0) for i, n in enumerate(names) if n in CPU_COLUMNS]
        return Layout(layout_id, kind, text, names, -1, cols)
    pos = next((i for i, n in enumerate(names) if n in ("Device", "Device:")), 0)
    chosen: dict[str, tuple[int, str, float]] = {}
    for i, n in enumerate(names):
        if n in DEVICE_COLUMNS:
            metric, factor = DEVICE_COLUMNS[n]
            # old -x prints rsec/s and rkB/s side by side: one column per metric, kB preferred
            if metric not in chosen or (chosen[metric][2] != 1.0 and factor == 1.0):
                chosen[metric] = (i, metric, factor)
    return Layout(layout_id, kind, text, names, pos, sorted(chosen.values()))


def stamp_format(sample: str, order: str) -> str | None:
    """A strptime format (polars/chrono) equivalent to ``ss.parse_stamp`` for this line shape."""
    text = sample.strip()
    if re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{4}$", text):
        return "%Y-%m-%dT%H:%M:%S%z"
    m = re.match(r"^(\S+)(\s+)(\d{1,2}[:时時]\d{2}[:分]\d{2}秒?)(\s*[AaPp][Mm])?$", text)
    if not m:
        return None
    date, sep, clock, ampm = m.group(1), m.group(2), m.group(3), m.group(4)
    dates = [(r"^\d{1,2}/\d{1,2}/\d{2}$", "%m/%d/%y" if order == "mdy" else "%d/%m/%y"),
             (r"^\d{1,2}/\d{1,2}/\d{4}$", "%m/%d/%Y" if order == "mdy" else "%d/%m/%Y"),
             (r"^\d{4}-\d{1,2}-\d{1,2}$", "%Y-%m-%d"), (r"^\d{4}/\d{1,2}/\d{1,2}$", "%Y/%m/%d"),
             (r"^\d{1,2}\.\d{1,2}\.\d{4}$", "%d.%m.%Y"), (r"^\d{1,2}\.\d{1,2}\.\d{2}$", "%d.%m.%y"),
             (r"^\d{4}年\d{1,2}月\d{1,2}日$", "%Y年%m月%d日")]
    date_fmt = next((f for p, f in dates if re.match(p, date)), None)
    if date_fmt is None:
        return None
    if "时" in clock or "時" in clock:
        clock_fmt = "%H" + clock[2] + "%M分%S秒" if clock.endswith("秒") else None
        if clock_fmt is None or len(clock) != 9:
            return None
    else:
        clock_fmt = "%I:%M:%S" if ampm else "%H:%M:%S"
    return date_fmt + sep + clock_fmt + (ampm[: len(ampm) - 2] + "%p" if ampm else "")


class TextEngine:
    """Carries iostat state across line batches and accumulates long metric frames."""

    def __init__(self, acct: Accounting, *, timeless_ok: bool) -> None:
        self.acct = acct
        self.timeless_ok = timeless_ok  # rows without -t times can be placed later (interval + mtime)
        self.header: ss.Header | None = None
        self.marker: tuple[int, str] | None = None  # what starts a report: (kind, text)
        self.rep = 0  # reports started so far
        self.hdr_rep: int | None = None  # report count when the last Linux header was seen
        self.blk = NO_BLOCK
        self.last_kind = BLANK
        self.ts_carry: dt.datetime | None = None
        self.layouts: dict[str, Layout] = {}
        self.by_id: list[Layout] = []
        self.order = "mdy"
        self.fmt: str | None = None
        self.fmt_decided = False
        self.aware = False
        self.stamp_form = ""
        self.roller: DayRoller | None = None
        self.frames: list[pl.DataFrame] = []
        self.entity_names: set[str] = set()  # every entity of the frames
        self.human = False
        self.pretty = False
        self.since_boot_lines = 0
        self.untimed_rows = 0

    # -- layouts ------------------------------------------------------------------------
    def layout(self, kind: str, text: str) -> Layout:
        key = kind + "\0" + " ".join(text.split())
        found = self.layouts.get(key)
        if found is None:
            found = make_layout(len(self.by_id), kind, " ".join(text.split()))
            if kind == "dev" and found.ncols > 1 and found.device_pos == found.ncols - 1:
                self.pretty = True
            self.layouts[key] = found
            self.by_id.append(found)
        return found

    # -- one batch ------------------------------------------------------------------------
    def feed(self, first_line: int, text: str) -> None:
        if "\r" in text:
            text = text.replace("\r\n", "\n")
        if "\x1b" in text:
            text = ANSI_RE.sub("", text)
        if text.endswith("\n"):
            text = text[:-1]
        df = pl.DataFrame({"t": text.split("\n")}).with_row_index("i").with_columns(
            pl.col("t").str.strip_chars().alias("st"))
        t, st = pl.col("t"), pl.col("st")
        df = df.with_columns(
            pl.when(st == "").then(BLANK)
            .when(t.str.starts_with("Linux ") & t.str.contains(HEADER_PAT)).then(HEADER)
            .when(st.str.starts_with("avg-cpu:")).then(CPU_HDR)
            .when(st.str.starts_with("Device") | st.str.ends_with(" Device") | st.str.ends_with("\tDevice"))
            .then(DEV_HDR)
            .otherwise(DATA).cast(pl.Int8).alias("kind"))
        # the costlier patterns only on the few candidate lines
        cand = df.filter((pl.col("kind") == DATA) & (pl.col("st").str.len_bytes() < 100)).select("i", "st")
        stamp_i = cand.filter(pl.col("st").str.contains(r"^(?:\d|Time:|午|上|下)")
                              & pl.col("st").str.contains(STAMP_PAT)).get_column("i")
        cont_i = cand.filter(pl.col("st").str.contains(r"^[A-Za-z%]") & pl.col("st").str.contains(HDR_CONT_PAT)
                             & ~pl.col("st").str.contains(r"\d\s|\d$")).get_column("i")
        if stamp_i.len() or cont_i.len():
            kind = df.get_column("kind").scatter(stamp_i, STAMP).scatter(cont_i, HDR_CONT)
            df = df.with_columns(kind)
        kinds = df.get_column("kind")
        if self.marker is None:
            self._decide_marker(df)
        df = df.with_columns(self._block_ids(df))
        df = df.with_columns(self._report_start(df).cast(pl.Int32).cum_sum().alias("rep_local"))
        df = df.with_columns((pl.col("rep_local").cast(pl.Int64) + self.rep).alias("rep"))
        df = self._headers(df)
        df = self._stamps(df, first_line)
        prev = kinds.shift(1, fill_value=self.last_kind)
        df = df.with_columns(prev.alias("prev"))
        self._rows(df, first_line)
        # carry state to the next batch
        self.rep = int(df.get_column("rep")[-1]) if df.height else self.rep
        self.blk = int(df.get_column("blk")[-1]) if df.height else self.blk
        self.last_kind = int(kinds[-1]) if df.height else self.last_kind

    def _decide_marker(self, df: pl.DataFrame) -> None:
        structural = df.filter(pl.col("kind").is_in([STAMP, CPU_HDR, DEV_HDR]))
        if structural.height:
            kind, text = structural.row(0, named=True)["kind"], structural.row(0, named=True)["st"]
            self.marker = (int(kind), " ".join(text.split()))

    def _report_start(self, df: pl.DataFrame) -> pl.Expr:
        if self.marker is None:
            return pl.lit(False)
        kind, text = self.marker
        if kind == DEV_HDR:
            return (pl.col("kind") == DEV_HDR) & (pl.col("norm") == text)
        return pl.col("kind") == kind

    def _block_ids(self, df: pl.DataFrame) -> list[pl.Expr]:
        """Layout id of the header each line falls under (header continuations merged), and
        the normalised text of header lines."""
        hdr = df.filter(pl.col("kind").is_in([CPU_HDR, DEV_HDR, HDR_CONT])).select(
            "i", "kind", pl.col("st").str.replace_all(r"\s+", " ").alias("norm"))
        ids: dict[int, int] = {}
        if (hdr.get_column("kind") == HDR_CONT).any():
            last_dev: int | None = None
            pending: list[str] = []
            norm: dict[int, str] = {}
            for i, kind, text in hdr.iter_rows():
                if kind == HDR_CONT and last_dev is not None:
                    pending.append(text)
                    ids[last_dev] = ids[i] = self.layout("dev", " ".join([norm[last_dev], *pending])).id
                    continue
                if kind == HDR_CONT:
                    continue  # a continuation without a header: left as an odd line
                pending = []
                norm[i] = text
                ids[i] = self.layout("cpu" if kind == CPU_HDR else "dev", text).id
                last_dev = i if kind == DEV_HDR else None
            index = pl.Series(list(ids.keys()), dtype=pl.UInt32)
            values = pl.Series(list(ids.values()), dtype=pl.Int32)
        else:
            texts = hdr.get_column("norm")
            known = {text: self.layout("cpu" if text.startswith("avg-cpu:") else "dev", text).id
                     for text in texts.unique().to_list()}
            index = hdr.get_column("i")
            values = texts.replace_strict(known, return_dtype=pl.Int32) if hdr.height else \
                pl.Series([], dtype=pl.Int32)
        blk = pl.Series("blk", [], dtype=pl.Int32).extend_constant(None, df.height).scatter(index, values)
        norm_full = pl.Series("norm", [], dtype=pl.Utf8).extend_constant(None, df.height).scatter(hdr.get_column("i"),
                                                                                 hdr.get_column("norm"))
        kind = pl.col("kind")
        return [
            norm_full,
            pl.when(kind.is_in([HEADER, STAMP])).then(pl.lit(NO_BLOCK, pl.Int32))
            .otherwise(pl.lit(blk)).forward_fill().fill_null(self.blk).alias("blk"),
        ]

    def _headers(self, df: pl.DataFrame) -> pl.DataFrame:
        heads = df.filter(pl.col("kind") == HEADER)
        for text in heads.get_column("st"):
            header = ss.parse_header(text)
            if header is not None:
                self.header = header
        hrep = (pl.when(pl.col("kind") == HEADER).then(pl.col("rep")).otherwise(None)
                .forward_fill())
        if self.hdr_rep is not None:
            hrep = hrep.fill_null(self.hdr_rep)
        df = df.with_columns(hrep.alias("hrep"))
        if heads.height:
            self.hdr_rep = int(df.get_column("hrep")[-1])
        return df

    def _stamps(self, df: pl.DataFrame, first_line: int) -> pl.DataFrame:
        stamp_rows = df.filter(pl.col("kind") == STAMP).select("i", "st")
        if stamp_rows.height == 0:
            return df.with_columns(pl.lit(self.ts_carry, pl.Datetime("us")).alias("ts"))
        texts = stamp_rows.get_column("st")
        if not self.fmt_decided:
            self._decide_format(texts.head(20).to_list())
        values = self._parse_stamps(texts)
        bad = values.is_null()
        for i, text in stamp_rows.filter(bad).iter_rows():
            self.acct.skip("bad_timestamp", first_line + i, text,
                           f"{self.acct.file}:{first_line + i}: expected a report time such as "
                           f"'11/28/26 05:28:10' or '2026-11-28T05:28:10+0000'")
        values = values.fill_null(SENTINEL)
        full = pl.Series("ts", [], dtype=pl.Datetime("us")).extend_constant(None, df.height).scatter(
            stamp_rows.get_column("i"), values)
        ts = full.forward_fill()
        if self.ts_carry is not None:
            ts = ts.fill_null(self.ts_carry)
        self.ts_carry = ts[-1]
        return df.with_columns(ts)

    def _decide_format(self, samples: list[str]) -> None:
        self.fmt_decided = True
        twelve = any(re.search(r"[AaPp][Mm]\s*$", s) for s in samples)
        self.order = ss.date_order(samples, self.header.date_text if self.header else "", twelve)
        first = samples[0]
        stamp = ss.parse_stamp(first, prefer=self.order)
        self.stamp_form = _form_name(first, twelve)
        if stamp is None:
            return
        if stamp.when is None:  # "Time: 07:55:39 AM": clock only, date from the header
            self.roller = DayRoller(self.header.date.date if self.header and self.header.date
                                    else dt.date(1970, 1, 1))
            return
        fmt = stamp_format(first, self.order)
        if fmt is None:
            return
        got = pl.Series([first.strip()]).str.strptime(pl.Datetime("us"), fmt, strict=False)
        if got.dtype.time_zone is not None:  # type: ignore[union-attr]
            got = got.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        want = stamp.when.astimezone(dt.timezone.utc).replace(tzinfo=None) if stamp.aware else stamp.when
        if got[0] == want:
            self.fmt = fmt
            self.aware = stamp.aware

    def _parse_stamps(self, texts: pl.Series) -> pl.Series:
        if self.fmt is not None:
            values = texts.str.strptime(pl.Datetime("us"), self.fmt, strict=False)
            if values.dtype.time_zone is not None:  # type: ignore[union-attr]
                values = values.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
            if values.null_count() == 0:
                return values.cast(pl.Datetime("us"))
            fixed = [v if v is not None else self._one_stamp(t) for v, t in zip(values, texts, strict=True)]
            return pl.Series("ts", fixed, dtype=pl.Datetime("us"))
        return pl.Series("ts", [self._one_stamp(t) for t in texts], dtype=pl.Datetime("us"))

    def _one_stamp(self, text: str) -> dt.datetime | None:
        stamp = ss.parse_stamp(text, prefer=self.order)
        if stamp is None:
            return None
        if stamp.when is None:
            if self.roller is None:
                self.roller = DayRoller(self.header.date.date if self.header and self.header.date
                                        else dt.date(1970, 1, 1))
            return self.roller.at(stamp.clock) if stamp.clock else None
        if stamp.aware:
            self.aware = True
            return stamp.when.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return stamp.when

    # -- value rows ----------------------------------------------------------------------
    def _rows(self, df: pl.DataFrame, first_line: int) -> None:
        acct = self.acct
        kind, blk = pl.col("kind"), pl.col("blk")
        n_struct = df.filter(kind.is_in([BLANK, HEADER, CPU_HDR, DEV_HDR, STAMP, HDR_CONT])).height
        bad_stamp_lines = df.filter((kind == STAMP) & (pl.col("ts") == SENTINEL)).height
        acct.parsed(n_struct - bad_stamp_lines)
        cpu_ids = [lay.id for lay in self.by_id if lay.kind == "cpu"]
        data = df.filter(kind == DATA)
        if data.height == 0:
            return
        data = data.with_columns(pl.col("st").str.replace_all(r"[ \t]+", " ").alias("norm"))
        data = data.with_columns(pl.col("norm").str.split(" ").alias("tok"))
        is_cpu = blk.is_in(cpu_ids) & (pl.col("prev") == CPU_HDR)
        is_dev = ~blk.is_in(cpu_ids) & (blk >= 0)
        data = data.with_columns(pl.col("tok").list.len().alias("ntok"),
                                 blk.replace_strict(list(range(len(self.by_id))), [lay.ncols for lay in self.by_id],
                                                    default=-1, return_dtype=pl.Int32).alias("ncols"))
        good = (is_cpu | is_dev) & (pl.col("ntok") == pl.col("ncols"))
        rows, odd = data.filter(good), data.filter(~good)
        if rows.height and not self.human and rows.get_column("norm").str.contains(SUFFIX_PAT).any():
            self.human = True
        frames, bad_values = self._emit(rows)
        odd_rows = self._odd(odd, df, first_line)
        if odd_rows is not None:
            frames.append(odd_rows)
        for frame in frames:
            self._place(frame, first_line)
        if bad_values.height:
            for i, text in bad_values.select("i", "t").head(5).iter_rows():
                acct.skip("bad_value", first_line + i, text,
                          f"{acct.file}:{first_line + i}: expected numbers in every column of the header")
            if bad_values.height > 5:
                acct.skip("bad_value", first_line + int(bad_values["i"][5]), None,
                          "expected numbers in every column of the header", n=bad_values.height - 5)

    def _emit(self, rows: pl.DataFrame) -> tuple[list[pl.DataFrame], pl.DataFrame]:
        """Valid rows → long frames (line, ts, rep, hrep, entity, metric, value); rows with a
        non-numeric cell are returned apart."""
        frames: list[pl.DataFrame] = []
        bad: list[pl.DataFrame] = []
        for blk_id in rows.get_column("blk").unique(maintain_order=True).to_list():
            lay = self.by_id[blk_id]
            part = rows.filter(pl.col("blk") == blk_id)
            tok = pl.col("tok")
            values = [self._num(tok.list.get(j)).mul(factor).alias(f"v{n}") for n, (j, _m, factor)
                      in enumerate(lay.columns)]
            entity = (pl.lit("dev:") + tok.list.get(lay.device_pos)) if lay.kind == "dev" else pl.lit("cpu:all")
            wide = part.select("i", "ts", "rep", "hrep", entity.alias("entity"), *values)
            vcols = [f"v{n}" for n in range(len(lay.columns))]
            ok = pl.all_horizontal([pl.col(c).is_not_null() for c in vcols]) if vcols else pl.lit(True)
            bad.append(part.filter(~wide.select(ok.alias("ok")).get_column("ok")).select("i", "t"))
            wide = wide.filter(ok)
            names = {f"v{n}": metric for n, (_j, metric, _f) in enumerate(lay.columns)}
            wide = wide.rename(names)
            metrics = list(dict.fromkeys(names.values()))
            if lay.kind == "dev" and "disk.await_ms" not in metrics and {
                    "disk.r_await_ms", "disk.w_await_ms", "disk.r_per_s", "disk.w_per_s"} <= set(metrics):
                r, w = pl.col("disk.r_per_s"), pl.col("disk.w_per_s")
                wide = wide.with_columns(
                    pl.when(r + w > 0).then((r * pl.col("disk.r_await_ms") + w * pl.col("disk.w_await_ms"))
                                            / (r + w)).otherwise(0.0).alias("disk.await_ms"))
                metrics.append("disk.await_ms")
            frames.append(wide.unpivot(on=metrics, index=["i", "ts", "rep", "hrep", "entity"],
                                       variable_name="metric", value_name="value"))
        return frames, pl.concat(bad) if bad else pl.DataFrame(schema={"i": pl.UInt32, "t": pl.Utf8})

    def _num(self, expr: pl.Expr) -> pl.Expr:
        expr = expr.str.replace(",", ".", literal=True)
        if not self.human:
            return expr.cast(pl.Float64, strict=False)
        suffix = expr.str.extract(r"([BkKMGTP%])$", 1)
        factor = suffix.replace_strict(list(ss.HUMAN_FACTORS) + ["%"], [*ss.HUMAN_FACTORS.values(), 1.0],
                                       default=1.0, return_dtype=pl.Float64)
        return expr.str.strip_chars_end("BkKMGTP%").cast(pl.Float64, strict=False) * factor

    def _odd(self, odd: pl.DataFrame, df: pl.DataFrame, first_line: int) -> pl.DataFrame | None:
        """Wrapped rows (rejoined), glued rows (split) and junk (unparsed_line), per line."""
        if odd.height == 0:
            return None
        acct = self.acct
        consumed: set[int] = set()
        out: list[dict] = []
        odd_by_i = {r["i"]: r for r in odd.iter_rows(named=True)}
        for i in sorted(odd_by_i):
            if i in consumed:
                continue
            row = odd_by_i[i]
            text, blk = row["t"], row["blk"]
            lay = self.by_id[blk] if 0 <= blk < len(self.by_id) else None
            tokens = row["norm"].split(" ") if len(text) <= MAX_ODD_LINE else []
            emitted: list[list[str]] = []
            nxt = None
            if lay is not None and lay.kind == "dev" and tokens:
                n = lay.ncols
                if len(tokens) == 2 * n and ss.to_number(tokens[n + lay.device_pos]) is None:
                    emitted = [tokens[:n], tokens[n:]]
                elif len(tokens) < n:
                    nxt = odd_by_i.get(i + 1)
                    if nxt is None and i + 2 in odd_by_i and i + 1 < df.height \
                            and df.get_column("kind")[i + 1] == BLANK:
                        nxt = odd_by_i[i + 2]
                    if nxt is not None and len(nxt["norm"].split(" ")) + len(tokens) == n:
                        emitted = [tokens + nxt["norm"].split(" ")]
            rows = [self._py_row(lay, toks) for toks in emitted] if lay else []
            if emitted and all(r is not None for r in rows):
                if len(emitted) == 1 and nxt is not None:
                    consumed.add(nxt["i"])
                for values in rows:
                    out.extend({"i": i, "ts": row["ts"], "rep": row["rep"], "hrep": row["hrep"],
                                "entity": ent, "metric": m, "value": v} for ent, m, v in values)  # type: ignore[union-attr]
                if len(emitted) == 1 and nxt is not None:
                    acct.parsed()  # the continuation line; the row's own line is counted by _place
                continue
            expected = (f"{lay.ncols} columns as in its header ({' '.join(lay.names[:4])} ...)" if lay
                        else "an iostat 'Linux' header, a -t time line, 'avg-cpu:' or 'Device' header, "
                             "or a value row under one")
            if lay is not None and lay.kind == "cpu":
                expected = "one avg-cpu value row right after its header"
            acct.skip("unparsed_line", first_line + i, text,
                      f"{acct.file}:{first_line + i}: expected {expected}, saw {len(tokens)} fields")
        if not out:
            return None
        return pl.DataFrame(out, schema={"i": pl.UInt32, "ts": pl.Datetime("us"), "rep": pl.Int64,
                                         "hrep": pl.Int64, "entity": pl.Utf8, "metric": pl.Utf8,
                                         "value": pl.Float64})

    def _py_row(self, lay: Layout, tokens: list[str]) -> list[tuple[str, str, float]] | None:
        entity = "dev:" + tokens[lay.device_pos]
        values: dict[str, float] = {}
        for j, metric, factor in lay.columns:
            v = ss.to_number(tokens[j], decimal_comma=True)
            if v is None:
                return None
            values[metric] = v * factor
        r, w = values.get("disk.r_per_s"), values.get("disk.w_per_s")
        if "disk.await_ms" not in values and r is not None and w is not None \
                and "disk.r_await_ms" in values and "disk.w_await_ms" in values:
            values["disk.await_ms"] = ((r * values["disk.r_await_ms"] + w * values["disk.w_await_ms"])
                                       / (r + w)) if r + w > 0 else 0.0
        return [(entity, m, v) for m, v in values.items()]

    def _place(self, frame: pl.DataFrame, first_line: int) -> None:
        """Accounting per row line, then keep the frame (since-boot and untimed rows dropped)."""
        acct = self.acct
        frame = frame.with_columns(
            (pl.col("hrep").is_not_null() & (pl.col("rep") == pl.col("hrep") + 1)).alias("boot"),
            (pl.col("ts") == SENTINEL).fill_null(False).alias("badts"))
        per_line = frame.group_by("i").agg(pl.col("boot").first(), pl.col("badts").first()).sort("i")
        boot = per_line.filter(pl.col("boot"))
        if boot.height:
            self.since_boot_lines += boot.height
            acct.skip("since_boot_sample", first_line + int(boot["i"][0]), None,
                      "first report after the 'Linux' header holds averages since boot (iostat without "
                      "-y), not an interval sample", n=boot.height)
        rest = per_line.filter(~pl.col("boot"))
        badts = rest.filter(pl.col("badts"))
        if badts.height:
            acct.skip("bad_timestamp", first_line + int(badts["i"][0]), None,
                      "row of a report whose time line was unreadable", n=badts.height)
        timed = rest.height - badts.height
        timeless = self.marker is not None and self.marker[0] != STAMP
        if timeless and not self.timeless_ok:
            if timed:
                self.untimed_rows += timed
                acct.skip("no_timestamp", first_line + int(rest["i"][0]), None,
                          "iostat without -t prints no per-report time: pass --interval GLOB=SECONDS "
                          "(and keep the file's modification time) to place these reports", n=timed)
            return
        acct.parsed(timed)
        keep = frame.filter(~pl.col("boot") & ~pl.col("badts"))
        if keep.height:
            self.entity_names.update(keep.get_column("entity").unique().to_list())
            self.frames.append(keep.with_columns((pl.col("i").cast(pl.Int64) + first_line).alias("line"))
                               .select("line", pl.col("ts").cast(pl.Datetime("ns")), pl.col("rep").cast(pl.Int32),
                                       "entity", "metric", pl.col("value").cast(pl.Float64)))


def _form_name(sample: str, twelve: bool) -> str:
    text = sample.strip()
    if text.startswith("Time:"):
        return "old 'Time:' clock"
    if re.match(r"^\d{4}-\d{2}-\d{2}T", text):
        return "ISO 8601 with offset"
    if twelve:
        return "12-hour clock"
    if re.match(r"^\d{1,2}/\d{1,2}/\d{2}\s", text):
        return "C locale"
    return "locale date"
