"""iostat text fast path: on repeated real samples (small batches, so that batch boundaries,
the general-engine prefix and declined pieces all occur) it gives exactly what the general
per-batch engine gives: the same metric rows and the same accounting."""

from __future__ import annotations

import io

import polars as pl
import pytest

from parsers import _sysstat_iostat_fast as fast
from parsers import iostat
from parsers.base import ParseContext

from ..conftest import SAMPLES

FOLDER = SAMPLES / "iostat"


def _input(names: list[str], copies: int) -> bytes:
    data = b"".join((FOLDER / n).read_bytes() for n in names)
    return data * copies


CASES = {
    "xt_c": _input(["xt_c.txt"], 40),
    "megabytes": _input(["mxt_c.txt"], 40),
    "names": _input(["n_xt_c.txt"], 40),
    "decimal_comma": _input(["xt_de_de.txt"], 40),
    "iso_utc": _input(["xt_iso.txt"], 40),
    "cjk": _input(["xt_zh_cn.txt"], 40),
    "partitions": _input(["p_all_dt_c.txt"], 25),
    "z_device_set_changes": _input(["xzt_c.txt"], 30),
    "classic": _input(["handmade_classic_x_en_us.txt"], 30),
    "no_t": _input(["x_c_no_t.txt"], 40),
    "d_no_t": _input(["d_c_no_t.txt"], 80),
    # odd rows and a junk line in the middle: those stretches go the general way
    # tabs and trailing blanks in value rows; a row with one cell too many amid regular ones
    "tabs": _input(["xt_c.txt"], 40).replace(b"    0.", b"\t0."),
    "trailing_blanks": _input(["xt_c.txt"], 20) + _input(["xt_c.txt"], 5).replace(b"6.45\n", b"6.45 \t\n")
    + _input(["xt_c.txt"], 20),
    "extra_cell": _input(["xt_c.txt"], 20) + (FOLDER / "xt_c.txt").read_bytes().replace(b" 6.45\n", b" 6.45 9.99\n")
    + _input(["xt_c.txt"], 20),
    "mixed": _input(["xt_c.txt"], 20) + (FOLDER / "handmade_wrapped_glued.txt").read_bytes()
    + _input(["xt_c.txt"], 10) + b"junk line\n" + _input(["xt_c.txt"], 10) + b"vda 1.00 2.00",
}


def _parse(data: bytes, ctx_args: dict) -> tuple:
    result = iostat.parse(io.BytesIO(data), ctx=ParseContext(file="big.txt", **ctx_args))
    acct = result.accounting
    return (result.metrics.sort(["line", "metric", "entity"]), acct.total, acct.parsed_count,
            dict(acct.skipped), result.variant, result.host)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("placed", [False, True], ids=["no_interval", "interval"])
def test_fast_path_equals_general_engine(name: str, placed: bool, monkeypatch):
    import datetime as dt

    ctx_args = {"interval_s": 1.0, "file_mtime": dt.datetime(2026, 11, 28, 6, tzinfo=dt.timezone.utc)} \
        if placed else {}
    monkeypatch.setattr(iostat, "BATCH_BYTES", 16 << 10)
    monkeypatch.setattr(fast, "PRIME_BYTES", 2 << 10)
    monkeypatch.setattr(fast, "PIECE_BYTES", 3 << 10)
    used = []
    real = fast.try_fast

    def counting(*args):
        ok = real(*args)
        used.append(ok)
        return ok

    monkeypatch.setattr(fast, "try_fast", counting)
    got = _parse(CASES[name], ctx_args)
    monkeypatch.setattr(fast, "try_fast", lambda *args: False)
    want = _parse(CASES[name], ctx_args)
    assert sum(used) >= 3, "the fast path took no batch"
    if name == "mixed":
        assert not all(used)
    assert got[1:] == want[1:]
    assert got[0].schema == want[0].schema
    assert got[0].equals(want[0])
    assert got[0].height > 0 or not placed and "no_t" in name


def test_declines_leave_engine_untouched():
    """A batch the fast path declines changes no state: same result as the general engine."""
    data = _input(["pretty_xt_c.txt"], 40)  # --pretty: Device last, always declined
    result = iostat.parse(io.BytesIO(data), ctx=ParseContext(file="p.txt"))
    assert result.accounting.skipped_count == result.accounting.skipped["since_boot_sample"]
    assert result.metrics.filter(pl.col("metric") == "disk.await_ms").height > 0


# -- the batch reader ----------------------------------------------------------------------------

class _ReadOnly(io.RawIOBase):
    """A stream with only ``read`` (``readinto`` not implemented), returning short reads."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def read(self, n: int = -1) -> bytes:
        n = min(n if n >= 0 else len(self.data), 1000)
        chunk = self.data[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk

    def readable(self) -> bool:
        return True


@pytest.mark.parametrize("data", [
    b"", b"\n", b"a\nb\n", b"a\nb", b"\xef\xbb\xbfLinux x\n1\n", b"x" * 20000 + b"\nshort\n" + b"y" * 9000,
    (FOLDER / "xt_c.txt").read_bytes() * 7,
], ids=["empty", "newline", "two", "unterminated", "bom", "long_lines", "sample"])
@pytest.mark.parametrize("read_only", [False, True], ids=["readinto", "read"])
def test_batches_match_line_batches(data: bytes, read_only: bool):
    """Same lines and numbers as lines.iter_line_batches; lines longer than the buffer grow it."""
    from parsers._sysstat_batches import iter_batches
    from parsers.lines import iter_line_batches

    stream = _ReadOnly(data) if read_only else io.BytesIO(data)
    got, numbers = b"", []
    for first, block, ends in iter_batches(stream, 4096):
        text = block.tobytes()
        assert list(ends) == [i for i, b in enumerate(text) if b == 10]
        assert text.endswith(b"\n") or not ends.size
        numbers.append(first)
        got += text
    want = b"".join(block for _first, block in iter_line_batches(io.BytesIO(data), batch_bytes=4096))
    assert got == want
    lines_before = [got[:i].count(b"\n") + 1 for i in range(len(got) + 1)]
    assert all(n in lines_before for n in numbers)
