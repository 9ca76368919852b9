"""Shared mutations of real samples for the property tests: the same damage, one place."""

from __future__ import annotations

from collections.abc import Sequence


def n_lines(data: bytes) -> int:
    """Physical lines as records: LF-terminated, plus an unterminated last line."""
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def apply_line_ops(raw: bytes, ops: Sequence[tuple[str, int, int]]) -> bytes:
    """Delete, duplicate, byte-flip or cut-after lines of ``raw`` as ``(op, pos, byte)`` say."""
    lines = raw.split(b"\n")
    for op, pos, byte in ops:
        i = pos % max(len(lines), 1)
        if op == "del" and lines:
            del lines[i]
        elif op == "dup" and lines:
            lines.insert(i, lines[i])
        elif op == "flip" and lines and lines[i]:
            j = pos % len(lines[i])
            lines[i] = lines[i][:j] + bytes([byte]) + lines[i][j + 1:]
        elif op == "cut":
            lines = lines[: i + 1]
    return b"\n".join(lines)


def splice_lines(pool: Sequence[bytes], picks: Sequence[int], cut: int, junk: bytes, where: int) -> bytes:
    """Lines picked from ``pool`` (with line ends), with ``junk`` spliced into one of them."""
    lines = [pool[i] for i in picks]
    k = where % len(lines)
    lines[k] = lines[k][:cut] + junk + lines[k][cut:]
    return b"".join(lines)
