"""Shared line mechanics: decoding, BOM/CR/ANSI stripping, numbering.

A record of a text artifact is one physical line (``\\n``-terminated); numbering is 1-based.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")
ANSI_BYTES_RE = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")
BOM = "\ufeff"
CHUNK = 1 << 20


def clean(text: str) -> str:
    """Strip a trailing CR and ANSI escapes from one decoded line."""
    if text.endswith("\r"):
        text = text[:-1]
    if "\x1b" in text:
        text = ANSI_RE.sub("", text)
    return text


def decode(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def iter_lines(stream: BinaryIO) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for every physical line, cleaned.

    A final line without a newline is still yielded. Lines are decoded as UTF-8 with
    replacement characters, so binary junk never raises.
    """
    number = 0
    first = True
    for raw in stream:
        number += 1
        text = decode(raw.rstrip(b"\n"))
        if first:
            first = False
            if text.startswith(BOM):
                text = text[1:]
        yield number, clean(text)


def iter_line_blocks(stream: BinaryIO, batch_bytes: int = 16 * CHUNK) -> Iterator[bytes]:
    """Yield blocks of whole lines (ending with ``\\n`` except possibly the very last one),
    a leading UTF-8 BOM dropped. For vectorised parsers that count lines themselves.

    Reads into one reused buffer behind the carried partial line, so each block is copied
    once on its way out; a line longer than a block grows the buffer."""
    buf = bytearray(2 * batch_bytes)
    have = 0  # bytes of the carried partial line at the start of buf (it holds no newline)
    first = True
    while True:
        if len(buf) - have < batch_bytes:
            buf.extend(bytes(batch_bytes))
        got = fill(stream, buf, have, batch_bytes)
        if not got:
            break
        end = have + got
        start = 0
        if first:
            first = False
            if end >= 3 and buf.startswith(b"\xef\xbb\xbf"):
                start = 3
        cut = buf.rfind(b"\n", max(start, have), end)
        if cut < 0:
            del buf[:start]
            have = end - start
            continue
        with memoryview(buf) as view:
            block = bytes(view[start : cut + 1])
            rest = end - cut - 1
            view[:rest] = view[cut + 1 : end]
        yield block
        have = rest
    if have:
        with memoryview(buf) as view:
            yield bytes(view[:have])


def fill(stream: BinaryIO, buf: bytearray | memoryview, at: int, n: int) -> int:
    """Up to ``n`` bytes of ``stream`` into ``buf[at:]``; 0 at the end."""
    with memoryview(buf) as view:
        if hasattr(stream, "readinto"):
            return stream.readinto(view[at : at + n]) or 0
        data = stream.read(n)
        view[at : at + len(data)] = data
        return len(data)


def iter_line_batches(stream: BinaryIO, batch_bytes: int = 16 * CHUNK) -> Iterator[tuple[int, bytes]]:
    """Yield ``(first_line_number, block)`` where block holds whole lines (ending with
    ``\\n`` except possibly the very last one). For vectorised parsers."""
    line_no = 1
    for block in iter_line_blocks(stream, batch_bytes):
        yield line_no, block
        line_no += block.count(b"\n")


def head_text(head: bytes) -> str:
    """Decode a sniffing head, dropping a BOM and ANSI escapes and a possibly cut last line."""
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    if b"\x1b" in head:
        head = ANSI_BYTES_RE.sub(b"", head)
    return head.decode("utf-8", "replace").replace("\r\n", "\n")


def is_binary(head: bytes) -> bool:
    """Heuristic: NUL bytes or many control characters mean not a text artifact."""
    if not head:
        return False
    if b"\x00" in head[:4096]:
        return True
    sample = head[:4096]
    ctrl = sum(1 for b in sample if b < 9 or 13 < b < 27 or 27 < b < 32)
    return ctrl > len(sample) * 0.05


def head_lines(head: bytes, limit: int = 60) -> list[str]:
    lines = head_text(head).split("\n")
    if len(lines) > 1 and not head.endswith(b"\n"):
        lines = lines[:-1]  # the sniffing window probably cut the last line
    return [ln.rstrip("\r") for ln in lines[:limit]]
