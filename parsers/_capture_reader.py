"""Capture file record walking: classic pcap (µs/ns, either byte order), pcapng (any
number of sections and interfaces, EPB/SPB/obsolete PB, unknown blocks skipped by length),
gzip-compressed either way.

The walk yields ``RecordBatch``es: one contiguous buffer plus numpy columns describing
the packet records in it (data offset, captured/original length, UTC nanoseconds, link
type, file offset). The record-header walk follows the length chain with numpy
(``_capture_pcapwalk``; pcapng's non-packet blocks are walked one by one); uncompressed
pcap is read straight into the batch buffers. Batches are bounded (``CHUNK_BYTES``/
``MAX_RECORDS``), so memory does not depend on the capture size.

Accounting: a record is a packet record (pcap record, EPB, SPB, PB). Structural pcapng
blocks (SHB, IDB, NRB, ISB, DSB, custom, unknown) are not records: they are walked and
skipped by length without being counted.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from parsers._capture_np import byte_rows
from parsers._capture_np import gather_u16 as _gather_u16
from parsers._capture_np import gather_u32 as _gather_u32
from parsers._capture_pcapwalk import epb_chain, record_chain
from parsers.base import Accounting
from parsers.lines import fill

CHUNK_BYTES = 8 << 20
MAX_RECORDS = 1 << 17
MAX_CAPLEN = 1 << 18  # Wireshark's largest standard record (262144); bigger means corruption
PAD = 256  # zero bytes after each batch buffer so header gathers never index out of range
EPB_WINDOW = 1 << 18  # pcapng: bytes scanned for a run of enhanced packet blocks (grows to 4x)
EPB_MIN_RUN = 16  # shorter runs: the blocks are walked one by one ...
EPB_PAUSE = 256  # ... for this many blocks

PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000), b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1), b"\xa1\xb2\x3c\x4d": (">", 1),
}
PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
GZIP_MAGIC = b"\x1f\x8b"
BLOCK_SHB, BLOCK_IDB, BLOCK_PB, BLOCK_SPB, BLOCK_EPB = 0x0A0D0D0A, 1, 2, 3, 6


@dataclass
class RecordBatch:
    """Packet records of one stretch of the file, as numpy columns over ``buf``."""

    buf: np.ndarray  # uint8, record bytes (+PAD zero bytes)
    data_off: np.ndarray  # int64, offset of each packet's first byte in buf
    caplen: np.ndarray  # int64, captured bytes
    origlen: np.ndarray  # int64, length on the wire (tshark's frame length)
    ts_ns: np.ndarray  # int64, UTC nanoseconds since the epoch
    linktype: np.ndarray  # int64, LINKTYPE_* of each record
    file_off: np.ndarray  # int64, file offset of each record header (diagnostics)
    first_record: int  # 1-based number of the batch's first record in the file
    raw: bytes | None = None  # when set, ``buf`` is a view of raw[raw_base:]
    raw_base: int = 0

    def __len__(self) -> int:
        return len(self.data_off)

    def source(self) -> tuple[bytes, int]:
        """The batch's bytes as a ``bytes`` object and the offset of ``buf[0]`` in it."""
        if self.raw is not None:
            return self.raw, self.raw_base
        return self.buf.tobytes(), 0


@dataclass
class CaptureInfo:
    """What the walk learned about the file (filled while reading)."""

    kind: str = ""  # "pcap" | "pcapng" | ""
    byte_order: str = ""
    resolution: str = ""  # "us" | "ns" | "pcapng"
    gzipped: bool = False
    linktypes: set[int] = field(default_factory=set)
    sections: int = 0
    interfaces: int = 0
    records: int = 0
    bytes_read: int = 0
    snaplen: int = 0


class _Prepend:
    """A read-only stream that first returns ``head`` and then the rest of ``raw``."""

    def __init__(self, head: bytes, raw: BinaryIO) -> None:
        self.head, self.raw = head, raw

    def readinto(self, b: memoryview) -> int:
        if self.head:
            k = min(len(b), len(self.head))
            b[:k] = self.head[:k]
            self.head = self.head[k:]
            return k
        return fill(self.raw, b, 0, len(b))

    def read(self, n: int = -1) -> bytes:
        if self.head:
            if n is None or n < 0:
                out, self.head = self.head + self.raw.read(), b""
                return out
            out, self.head = self.head[:n], self.head[n:]
            if len(out) < n:
                out += self.raw.read(n - len(out))
            return out
        return self.raw.read(n)


class _SafeReader:
    """Reads that turn a cut or corrupt compressed stream into a clean EOF plus a note."""

    def __init__(self, raw: BinaryIO, acct: Accounting, gzipped: bool) -> None:
        self.raw, self.acct, self.gzipped = raw, acct, gzipped
        self.failed = False

    def read_chunk(self, rest: bytes | np.ndarray, n: int) -> np.ndarray | bytes:
        """``rest`` followed by up to ``n`` more bytes and PAD zero bytes. Uncompressed input is
        read straight into one numpy buffer (no intermediate ``bytes`` to copy again)."""
        if self.gzipped or not isinstance(self.raw, _Prepend):
            return b"".join((bytes(rest), self.read(n), bytes(PAD)))
        keep = len(rest)
        buf = np.empty(keep + n + PAD, dtype=np.uint8)
        buf[:keep] = np.frombuffer(rest, dtype=np.uint8) if isinstance(rest, bytes) else rest
        view = memoryview(buf)
        got = keep
        while got < keep + n:
            k = self.raw.readinto(view[got:keep + n])
            if not k:
                break
            got += k
        buf[got:got + PAD] = 0
        return buf[:got + PAD]

    def read(self, n: int) -> bytes:
        if self.failed:
            return b""
        if not self.gzipped:
            return self.raw.read(n)
        parts: list[bytes] = []
        got = 0
        try:  # read1 steps: a cut stream keeps everything decompressed before the cut
            while got < n:
                part = self.raw.read1(min(n - got, 1 << 20))  # type: ignore[attr-defined]
                if not part:
                    break
                parts.append(part)
                got += len(part)
        except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
            self.failed = True
            self.acct.note("truncated_record", f"compressed stream ends early or is corrupt "
                           f"({type(exc).__name__}: {exc}); analysed what came before", level="warning")
        return b"".join(parts)


def open_capture(stream: BinaryIO, acct: Accounting, info: CaptureInfo) -> tuple[_SafeReader, bytes]:
    """Undo gzip if present; return a reader and the first bytes of the capture itself."""
    head = stream.read(4) or b""
    reader = _SafeReader(_Prepend(head, stream), acct, False)
    if head[:2] == GZIP_MAGIC:
        info.gzipped = True
        reader = _SafeReader(gzip.GzipFile(fileobj=_Prepend(head, stream)), acct, True)  # type: ignore[arg-type]
    first = reader.read(4)
    return reader, first


def describe_magic(first: bytes) -> str:
    if not first:
        return "empty file"
    return f"unknown magic 0x{first.hex()}" + ("" if len(first) >= 4 else " (file shorter than 4 bytes)")


def iter_records(stream: BinaryIO, acct: Accounting, info: CaptureInfo) -> Iterator[RecordBatch]:
    """Walk any supported capture; diagnostics go to ``acct``; never raises on bad input."""
    reader, first = open_capture(stream, acct, info)
    if first[:4] in PCAP_MAGICS:
        yield from _walk_pcap(reader, first, acct, info)
    elif first[:4] == PCAPNG_SHB:
        yield from _walk_pcapng(reader, first, acct, info)
    else:
        acct.note("decode_error", f"{describe_magic(first)}: expected pcap (a1b2c3d4 / a1b23c4d, either "
                  "byte order) or pcapng (0a0d0d0a)", offset=0, text=first.hex(), level="error")


# -- classic pcap -----------------------------------------------------------------------

def _walk_pcap(reader: _SafeReader, first: bytes, acct: Accounting, info: CaptureInfo) -> Iterator[RecordBatch]:
    order, divisor = PCAP_MAGICS[first[:4]]
    info.kind, info.byte_order = "pcap", "little-endian" if order == "<" else "big-endian"
    info.resolution = "us" if divisor == 1000 else "ns"
    header = first + reader.read(20)
    if len(header) < 24:
        acct.note("truncated_record", f"pcap file header cut short ({len(header)} of 24 bytes)",
                  offset=0, level="error")
        return
    _major, _minor, _res1, _res2, snaplen, link_field = struct.unpack(order + "HHIIII", header[4:24])
    linktype = link_field & 0xFFFF  # upper bits: FCS length and reserved flags
    info.snaplen = snaplen
    info.linktypes.add(linktype)
    info.sections = 1
    cap_limit = max(MAX_CAPLEN, snaplen if snaplen < (1 << 26) else 0)
    caplen_at = struct.Struct(order + "I").unpack_from
    data_off = 24  # file offset of data[0]
    rest = b""
    record_no = 1
    eof = False
    while not eof:
        data = reader.read_chunk(rest, CHUNK_BYTES)  # batches are views of it; PAD zero bytes after the end
        n = len(data) - PAD
        eof = n == len(rest)
        positions, pos, corrupt = record_chain(data, n, order, cap_limit, 1_000_000_000 // divisor)
        for first in range(0, len(positions), MAX_RECORDS):
            part = positions[first:first + MAX_RECORDS]
            stop = int(positions[first + MAX_RECORDS]) if first + MAX_RECORDS < len(positions) else pos
            yield _pcap_batch(data, int(part[0]), stop, part, order, divisor, linktype, data_off, record_no)
            record_no += len(part)
        if corrupt:
            acct.total += 1
            acct.skip("decode_error", offset=data_off + pos, text=bytes(data[pos:pos + 16]).hex(),
                      message=f"record at offset {data_off + pos} claims {corrupt} captured bytes "
                              f"(snaplen {snaplen}): corrupt record header; stopped reading here")
            info.bytes_read = data_off + pos
            return
        rest = data[pos:n]
        data_off += pos
        info.bytes_read = data_off
    if len(rest):
        acct.total += 1
        rest = bytes(rest)
        need = "a 16-byte record header" if len(rest) < 16 else f"{16 + caplen_at(rest, 8)[0]} bytes"
        acct.skip("truncated_record", offset=data_off, text=rest[:16].hex(),
                  message=f"last record at offset {data_off} cut short: {len(rest)} bytes present, "
                          f"{need} expected (capture ended mid-record)")


def _slice_buffer(data: bytes, start: int, end: int) -> np.ndarray:
    buf = np.zeros(end - start + PAD, dtype=np.uint8)
    buf[:end - start] = np.frombuffer(data, dtype=np.uint8, count=end - start, offset=start)
    return buf


def _pcap_batch(data: bytes | np.ndarray, start: int, end: int, positions: np.ndarray, order: str, divisor: int,
                linktype: int, data_off: int, record_no: int) -> RecordBatch:
    """``data`` holds at least PAD bytes after ``end``: the batch buffer is a view, not a copy."""
    buf = np.frombuffer(data, dtype=np.uint8, count=end - start + PAD, offset=start)
    pos = np.asarray(positions, dtype=np.int64) - start
    hdr = byte_rows(buf, pos, 16)
    fields = hdr.view(order + "u4").reshape(-1, 4).astype(np.int64)
    ts_ns = fields[:, 0] * 1_000_000_000 + fields[:, 1] * divisor
    return RecordBatch(buf=buf, data_off=pos + 16, caplen=fields[:, 2], origlen=fields[:, 3], ts_ns=ts_ns,
                       linktype=np.full(len(pos), linktype, dtype=np.int64),
                       file_off=pos + start + data_off, first_record=record_no,
                       raw=data if isinstance(data, bytes) else None, raw_base=start if isinstance(data, bytes) else 0)


# -- pcapng -----------------------------------------------------------------------------

@dataclass
class _Iface:
    linktype: int
    snaplen: int
    mult: int = 1000  # nanoseconds per unit = mult / div (default 10^-6 s)
    div: int = 1
    offset_ns: int = 0


_BOM = {b"\x4d\x3c\x2b\x1a": "<", b"\x1a\x2b\x3c\x4d": ">"}


def _walk_pcapng(reader: _SafeReader, first: bytes, acct: Accounting, info: CaptureInfo) -> Iterator[RecordBatch]:
    info.kind, info.resolution = "pcapng", "pcapng"
    order = ""
    ifaces: list[_Iface] = []
    data_off = 0
    data = first
    record_no = 1
    eof = False
    window, pause = EPB_WINDOW, 0  # vectorised EPB runs: bytes scanned at once; blocks to walk singly first
    while not eof:
        more = reader.read(CHUNK_BYTES)
        eof = not more
        data = data + more if data else more
        n = len(data)
        arr = np.frombuffer(data, dtype=np.uint8)
        pos = 0
        stop = False
        while True:
            start = pos
            rec_pos: list[int] = []
            rec_kind: list[int] = []
            rec_len: list[int] = []
            while pos + 12 <= n and len(rec_pos) < MAX_RECORDS:
                if data[pos:pos + 4] == PCAPNG_SHB:
                    if rec_pos:  # a new section may change byte order and interfaces: flush first
                        break
                    new_order = _BOM.get(data[pos + 8:pos + 12])
                    if new_order is None:
                        acct.note("decode_error", f"section header at offset {data_off + pos} has "
                                  f"byte-order magic 0x{data[pos + 8:pos + 12].hex()} (expected 1a2b3c4d); "
                                  "stopped reading", offset=data_off + pos, level="error")
                        stop = True
                        break
                    order = new_order
                btype, blen = struct.unpack_from(order + "II", data, pos)
                if blen < 12 or blen % 4 or blen > MAX_CAPLEN * 4:
                    acct.note("decode_error", f"block at offset {data_off + pos} (type 0x{btype:x}) has "
                              f"invalid length {blen}; stopped reading here", offset=data_off + pos,
                              text=data[pos:pos + 12].hex(), level="error")
                    if btype in (BLOCK_EPB, BLOCK_SPB, BLOCK_PB):
                        acct.total += 1
                        acct.skip("decode_error", offset=data_off + pos,
                                  message=f"packet block at offset {data_off + pos} has invalid length {blen}")
                    stop = True
                    break
                if pos + blen > n:
                    break
                if btype == BLOCK_EPB and order and pause <= 0:
                    run_pos, run_len = epb_chain(arr, pos, n, order, MAX_RECORDS - len(rec_pos), window)
                    if len(run_pos) >= EPB_MIN_RUN:
                        rec_pos.extend(run_pos.tolist())
                        rec_kind.extend([BLOCK_EPB] * len(run_pos))
                        rec_len.extend(run_len.tolist())
                        pos = int(run_pos[-1] + run_len[-1])
                        window = min(2 * window, 4 * EPB_WINDOW)
                        continue
                    window, pause = EPB_WINDOW, EPB_PAUSE  # other blocks interleave: one at a time for a while
                pause -= 1
                if btype == BLOCK_EPB or btype == BLOCK_SPB or btype == BLOCK_PB:
                    rec_pos.append(pos)
                    rec_kind.append(btype)
                    rec_len.append(blen)
                elif btype == BLOCK_SHB:
                    ifaces = []
                    info.sections += 1
                elif btype == BLOCK_IDB and blen >= 20:
                    ifaces.append(_parse_idb(data, pos, blen, order))
                    info.interfaces += 1
                    info.linktypes.add(ifaces[-1].linktype)
                    info.snaplen = max(info.snaplen, ifaces[-1].snaplen)
                pos += blen
            if rec_pos:
                batch = _pcapng_batch(data, start, pos, rec_pos, rec_kind, rec_len, order, ifaces, data_off,
                                      record_no, acct)
                if batch is not None:
                    yield batch
                record_no += len(rec_pos)
            if stop:
                info.bytes_read = data_off + pos
                return
            if not rec_pos or (len(rec_pos) < MAX_RECORDS and data[pos:pos + 4] != PCAPNG_SHB):
                break
        data = data[pos:]
        data_off += pos
        info.bytes_read = data_off
    if data:
        if len(data) >= 8 and order and struct.unpack_from(order + "I", data, 0)[0] in (
                BLOCK_EPB, BLOCK_SPB, BLOCK_PB):
            acct.total += 1
            acct.skip("truncated_record", offset=data_off, text=data[:16].hex(),
                      message=f"last packet block at offset {data_off} cut short: {len(data)} bytes present "
                              "(capture ended mid-record)")
        else:
            acct.note("truncated_record", f"last block at offset {data_off} cut short ({len(data)} bytes)",
                      offset=data_off, text=data[:16].hex(), level="warning")


def _parse_idb(data: bytes, pos: int, blen: int, order: str) -> _Iface:
    linktype, _res, snaplen = struct.unpack_from(order + "HHI", data, pos + 8)
    iface = _Iface(linktype=linktype, snaplen=snaplen)
    opt = pos + 16
    end = pos + blen - 4
    while opt + 4 <= end:
        code, length = struct.unpack_from(order + "HH", data, opt)
        value = data[opt + 4:opt + 4 + length]
        if code == 0:
            break
        if code == 9 and length >= 1:  # if_tsresol
            r = value[0]
            if r & 0x80:
                iface.mult, iface.div = 1_000_000_000, 1 << (r & 0x7F)
            elif (r & 0x7F) <= 9:
                iface.mult, iface.div = 10 ** (9 - r), 1
            else:
                iface.mult, iface.div = 1, 10 ** (r - 9)
        elif code == 14 and length >= 8:  # if_tsoffset, seconds
            iface.offset_ns = struct.unpack_from(order + "q", value, 0)[0] * 1_000_000_000
        opt += 4 + ((length + 3) & ~3)
    return iface


def _pcapng_batch(data: bytes, start: int, end: int, rec_pos: list[int], rec_kind: list[int],
                  rec_len: list[int], order: str, ifaces: list[_Iface], data_off: int, record_no: int,
                  acct: Accounting) -> RecordBatch | None:
    buf = _slice_buffer(data, start, end)
    pos = np.asarray(rec_pos, dtype=np.int64) - start
    file_pos = pos + start + data_off
    kind = np.asarray(rec_kind, dtype=np.int64)
    blen = np.asarray(rec_len, dtype=np.int64)
    n = len(pos)
    is_pb, is_spb = kind == BLOCK_PB, kind == BLOCK_SPB
    iface = np.where(is_pb, _gather_u16(buf, pos + 8, order), _gather_u32(buf, pos + 8, order))
    iface = np.where(is_spb, 0, iface)
    hi = _gather_u32(buf, pos + 12, order).astype(np.uint64)
    lo = _gather_u32(buf, pos + 16, order).astype(np.uint64)
    caplen = _gather_u32(buf, pos + 20, order)
    origlen = _gather_u32(buf, pos + 24, order)
    data_start = pos + 28
    spb_orig = _gather_u32(buf, pos + 8, order)
    snap0 = ifaces[0].snaplen if ifaces and ifaces[0].snaplen else MAX_CAPLEN
    origlen = np.where(is_spb, spb_orig, origlen)
    caplen = np.where(is_spb, np.minimum(np.minimum(spb_orig, snap0), blen - 16), caplen)
    data_start = np.where(is_spb, pos + 12, data_start)
    room = np.where(is_spb, blen - 16, blen - 32)
    bad = (caplen > room) | (iface >= len(ifaces))
    ok = ~bad
    if bad.any():
        count = int(bad.sum())
        first_bad = int(np.flatnonzero(bad)[0])
        reason = (f"interface {int(iface[first_bad])} not described by an interface block"
                  if iface[first_bad] >= len(ifaces) else
                  f"captured length {int(caplen[first_bad])} larger than its block ({int(blen[first_bad])} bytes)")
        acct.total += count
        acct.skip("decode_error", n=count, offset=int(file_pos[first_bad]),
                  message=f"packet block at offset {int(file_pos[first_bad])}: {reason}"
                          + (f" ({count} such blocks in this stretch)" if count > 1 else ""))
    if not ok.any():
        return None
    lt = np.array([f.linktype for f in ifaces] or [0], dtype=np.int64)
    mult = np.array([f.mult for f in ifaces] or [1000], dtype=np.uint64)
    div = np.array([f.div for f in ifaces] or [1], dtype=np.uint64)
    off_ns = np.array([f.offset_ns for f in ifaces] or [0], dtype=np.int64)
    idx = np.where(ok, iface, 0)
    units = (hi << np.uint64(32)) | lo
    m, d = mult[idx], div[idx]
    with np.errstate(over="ignore"):
        ts = ((units // d) * m + ((units % d) * m) // d).astype(np.int64) + off_ns[idx]
    if is_spb.any():
        # simple packet blocks carry no time: they inherit the previous packet's timestamp
        last = np.maximum.accumulate(np.where(~is_spb, np.arange(n), -1))
        ts = np.where(last >= 0, ts[np.maximum(last, 0)], 0)
        acct.note("no_timestamp", f"{int(is_spb.sum())} simple packet blocks carry no timestamp; "
                  "they take the previous packet's time", level="info")
    return RecordBatch(buf=buf, data_off=data_start[ok], caplen=caplen[ok], origlen=origlen[ok], ts_ns=ts[ok],
                       linktype=lt[idx][ok], file_off=file_pos[ok], first_record=record_no)
