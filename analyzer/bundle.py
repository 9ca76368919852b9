"""Open whatever the user handed us — directories, archives, single (possibly gzipped) files —
as a flat list of members, treating every byte as hostile.

Guarantees: nothing is written outside one private temporary directory; absolute paths,
``..`` components, links and special files inside archives are refused; links in input
directories are followed only when they stay inside that directory; total uncompressed
bytes, per-member compression ratio and member count are capped. Every refusal is a
diagnostic; nothing raises for bad input except an unreadable top-level path.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO

from parsers.base import Diagnostic


@dataclass(frozen=True)
class Limits:
    max_total_bytes: int = 32 * 1024**3  # all extracted/decompressed bytes together
    max_ratio: float = 200.0  # uncompressed / compressed, per member
    ratio_grace_bytes: int = 8 * 1024**2  # ratio is only enforced past this size
    max_members: int = 20_000
    max_depth: int = 1  # archives inside archives, levels


class InputError(Exception):
    """A top-level input that cannot be read at all (exit code 2)."""


@dataclass
class Member:
    name: str  # path inside the bundle, '/'-separated, for display and provenance
    path: Path  # the bytes on disk (user's file or our private copy)
    size: int  # bytes on disk
    gzipped: bool = False  # decompress transparently on open
    digest: str = ""
    duplicate_of: str | None = None

    _capped: CappedReader | None = field(default=None, repr=False, compare=False)

    def open(self, budget: ByteBudget | None = None) -> BinaryIO:
        """The member's bytes, decompressed when gzipped (capped: see ``refusal``)."""
        raw = open(self.path, "rb")  # noqa: SIM115 - returned to the caller
        if not self.gzipped:
            return raw
        unzipped: IO[bytes] = gzip.GzipFile(fileobj=raw)  # type: ignore[assignment]
        self._capped = CappedReader(unzipped, raw, budget or ByteBudget(Limits()), self.name)
        return io.BufferedReader(self._capped, buffer_size=1 << 20)  # type: ignore[return-value]

    def refusal(self) -> str | None:
        """Why the last ``open()`` stream stopped early, if it did (bomb, corrupt data)."""
        return self._capped.refused if self._capped else None


class ByteBudget:
    """Shared allowance of decompressed bytes across a whole run."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.used = 0

    def take(self, n: int) -> bool:
        self.used += n
        return self.used <= self.limits.max_total_bytes


class CappedReader(io.RawIOBase):
    """A decompressing reader that stops (EOF) when the member's ratio or the run's
    total budget is exceeded, and remembers why (``refused``)."""

    def __init__(self, inner: IO[bytes], raw: IO[bytes], budget: ByteBudget, name: str) -> None:
        self.inner, self.raw, self.budget, self.name = inner, raw, budget, name
        self.produced = 0
        self.refused: str | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        if self.refused:
            return 0
        try:
            data = self.inner.read(len(buffer))
        except (OSError, EOFError, zlib_error()) as exc:
            self.refused = f"corrupt compressed data after {self.produced} bytes: {exc}"
            return 0
        n = len(data)
        self.produced += n
        consumed = max(self.raw.tell(), 1)
        limits = self.budget.limits
        if self.produced > limits.ratio_grace_bytes and self.produced / consumed > limits.max_ratio:
            self.refused = (f"compression ratio above {limits.max_ratio:g}:1 after "
                            f"{self.produced} bytes (decompression bomb?)")
            return 0
        if not self.budget.take(n):
            self.refused = f"total uncompressed size above {limits.max_total_bytes} bytes"
            return 0
        buffer[:n] = data
        return n

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            self.raw.close()
        super().close()


def zlib_error() -> type[Exception]:
    import zlib

    return zlib.error


@dataclass
class Bundle:
    members: list[Member] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (name, code)
    budget: ByteBudget = field(default_factory=lambda: ByteBudget(Limits()))
    _tempdir: str | None = None

    def refuse(self, name: str, code: str, message: str) -> None:
        self.refused.append((name, code))
        self.diagnostics.append(Diagnostic(code=code, message=message, file=name, level="warning"))

    def close(self) -> None:
        if self._tempdir:
            shutil.rmtree(self._tempdir, ignore_errors=True)
            self._tempdir = None

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def tempdir(self) -> Path:
        if self._tempdir is None:
            self._tempdir = tempfile.mkdtemp(prefix="stallscope-")
        return Path(self._tempdir)


# -- kind detection --------------------------------------------------------------------

def _magic(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(512)


def archive_kind(path: Path) -> str | None:
    """'tar', 'tar.gz', 'tar.bz2', 'tar.xz', 'zip', 'gz' (a single gzipped file) or None."""
    head = _magic(path)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    opener = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}
    for magic, func in opener.items():
        if head.startswith(magic):
            try:
                with func(path, "rb") as fh:  # type: ignore[operator]
                    inner = fh.read(512)
            except (OSError, EOFError, lzma.LZMAError, ValueError):
                inner = b""
            suffix = {b"\x1f\x8b": "gz", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz"}[magic]
            if len(inner) >= 262 and inner[257:262] == b"ustar":
                return f"tar.{suffix}"
            return "gz" if suffix == "gz" else None
    return None


# -- opening inputs ----------------------------------------------------------------------

def open_inputs(inputs: list[str | os.PathLike[str]], limits: Limits | None = None) -> Bundle:
    """List the members of every input. Raises InputError only for a path that does not
    exist or cannot be read at all."""
    bundle = Bundle(budget=ByteBudget(limits or Limits()))
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.exists() and not p.is_symlink():
            raise InputError(f"{p}: no such file or directory")
        if not os.access(p, os.R_OK):
            raise InputError(f"{p}: not readable")
    prefix_needed = len(paths) > 1
    try:
        for p in paths:
            prefix = p.name if prefix_needed else ""
            if p.is_dir():
                _walk_dir(bundle, p, prefix)
            else:
                _add_file(bundle, p, prefix or p.name, depth=0, top=True)
    except BaseException:
        bundle.close()
        raise
    _mark_duplicates(bundle)
    return bundle


def _join(prefix: str, rel: str) -> str:
    return f"{prefix}/{rel}" if prefix else rel


def _walk_dir(bundle: Bundle, root: Path, prefix: str) -> None:
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for link in [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            rel = (Path(dirpath) / link).relative_to(root).as_posix()
            bundle.refuse(_join(prefix, rel), "link_refused", "directory symlink not followed")
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
        for fname in sorted(filenames):
            full = Path(dirpath) / fname
            rel = _join(prefix, full.relative_to(root).as_posix())
            if full.is_symlink():
                target = full.resolve()
                if not target.is_relative_to(real_root):
                    bundle.refuse(rel, "link_refused",
                                  f"symlink points outside the bundle ({os.readlink(full)}); not followed")
                    continue
                if not target.is_file():
                    bundle.refuse(rel, "special_file", "symlink to a non-regular file")
                    continue
                full = target
            st = full.stat()
            if not stat.S_ISREG(st.st_mode):
                bundle.refuse(rel, "special_file", "not a regular file (device, FIFO or socket); skipped")
                continue
            _add_file(bundle, full, rel, depth=0)


def _add_file(bundle: Bundle, path: Path, name: str, depth: int, top: bool = False) -> None:
    if len(bundle.members) >= bundle.budget.limits.max_members:
        bundle.refuse(name, "limit_exceeded", f"more than {bundle.budget.limits.max_members} members")
        return
    try:
        kind = archive_kind(path)
    except OSError as exc:
        if top:
            raise InputError(f"{path}: {exc.strerror or exc}") from exc
        bundle.refuse(name, "unreadable", f"cannot read: {exc}")
        return
    if kind in ("tar", "tar.gz", "tar.bz2", "tar.xz", "zip"):
        if depth > bundle.budget.limits.max_depth:
            bundle.refuse(name, "nested_too_deep",
                          f"archive nested more than {bundle.budget.limits.max_depth} level(s) deep; not opened")
            return
        dest = bundle.tempdir / f"a{len(bundle.members)}_{len(bundle.refused)}_{depth}"
        dest.mkdir()
        before = len(bundle.members)
        if kind == "zip":
            _extract_zip(bundle, path, name, dest, depth)
        else:
            _extract_tar(bundle, path, name, dest, depth)
        if len(bundle.members) == before and top and not bundle.refused:
            bundle.diagnostics.append(Diagnostic(code="empty_archive", message="archive holds no files",
                                                 file=name))
        return
    size = path.stat().st_size
    bundle.members.append(Member(name=name, path=path, size=size, gzipped=(kind == "gz")))


def _safe_parts(name: str) -> list[str] | None:
    """Archive member name → safe relative components, or None when it must be refused."""
    text = name.replace("\\", "/")
    if "\x00" in text or text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        return None
    parts = [p for p in PurePosixPath(text).parts if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        return None
    return parts


def _write_member(bundle: Bundle, source: IO[bytes], dest_root: Path, parts: list[str],
                  display: str, compressed_size: int | None, counter: _Consumed | None) -> Path | None:
    """Copy one member into our temp dir under the limits; None when refused."""
    limits = bundle.budget.limits
    target = dest_root.joinpath(*parts)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError as exc:
        bundle.refuse(display, "unsafe_path", f"cannot place member safely: {exc.strerror or exc}")
        return None
    written = 0
    start_consumed = counter.value if counter else 0
    reason = None
    with os.fdopen(fd, "wb") as out:
        while True:
            try:
                chunk = source.read(1 << 20)
            except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, lzma.LZMAError,
                    zlib_error()) as exc:
                reason = ("corrupt_member", f"corrupt member data after {written} bytes: {exc}")
                break
            if not chunk:
                break
            written += len(chunk)
            consumed = (counter.value - start_consumed) if counter else (compressed_size or 0)
            if written > limits.ratio_grace_bytes and written / max(consumed, 1) > limits.max_ratio:
                reason = ("bomb_refused", f"compression ratio above {limits.max_ratio:g}:1 after "
                          f"{written} bytes (decompression bomb?); member refused")
                break
            if not bundle.budget.take(len(chunk)):
                reason = ("limit_exceeded", f"total uncompressed size above {limits.max_total_bytes} bytes")
                break
            out.write(chunk)
    if reason:
        target.unlink(missing_ok=True)
        bundle.refuse(display, *reason)
        if reason[0] == "bomb_refused":
            _drain(source, bundle)
        return None
    return target


def _drain(source: IO[bytes], bundle: Bundle) -> None:
    """Read a refused member to its end in large reads (a compressed stream cannot seek past
    it; tarfile's own skip reads it in tiny pieces), charging the run's byte budget."""
    try:
        while chunk := source.read(8 << 20):
            if not bundle.budget.take(len(chunk)):
                break
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, lzma.LZMAError, zlib_error()):
        pass


class _Consumed:
    """Counts compressed bytes read from an archive file (for per-member ratios)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw

    @property
    def value(self) -> int:
        return self.raw.tell()


def _extract_tar(bundle: Bundle, path: Path, name: str, dest: Path, depth: int) -> None:
    raw = open(path, "rb")
    counter = _Consumed(raw)
    try:
        with tarfile.open(fileobj=raw, mode="r|*") as tar:
            for info in tar:
                display = f"{name}/{info.name}"
                if info.isdir():
                    continue
                if info.issym() or info.islnk():
                    bundle.refuse(display, "link_refused",
                                  f"link in archive not followed (-> {info.linkname})")
                    continue
                if not info.isreg():
                    bundle.refuse(display, "special_file", "device, FIFO or other special member skipped")
                    continue
                parts = _safe_parts(info.name)
                if parts is None:
                    bundle.refuse(display, "unsafe_path",
                                  "absolute path or '..' in archive member name; refused")
                    continue
                if len(bundle.members) >= bundle.budget.limits.max_members:
                    bundle.refuse(display, "limit_exceeded", "too many members")
                    break
                source = tar.extractfile(info)
                if source is None:
                    continue
                target = _write_member(bundle, source, dest, parts, display, None, counter)
                if target is not None:
                    _add_file(bundle, target, f"{name}/{'/'.join(parts)}", depth=depth + 1)
    except (tarfile.TarError, OSError, EOFError, lzma.LZMAError, zlib_error()) as exc:
        bundle.diagnostics.append(Diagnostic(code="corrupt_archive", file=name, level="error",
                                             message=f"archive is damaged, read stopped: {exc}"))
    finally:
        raw.close()


def _extract_zip(bundle: Bundle, path: Path, name: str, dest: Path, depth: int) -> None:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        bundle.diagnostics.append(Diagnostic(code="corrupt_archive", file=name, level="error",
                                             message=f"not a readable zip: {exc}"))
        return
    with archive:
        for info in archive.infolist():
            display = f"{name}/{info.filename}"
            if info.is_dir():
                continue
            mode = (info.external_attr >> 16) & 0o170000
            if mode == stat.S_IFLNK:
                bundle.refuse(display, "link_refused", "symlink in archive not followed")
                continue
            if mode and mode != stat.S_IFREG:
                bundle.refuse(display, "special_file", "special member skipped")
                continue
            parts = _safe_parts(info.filename)
            if parts is None:
                bundle.refuse(display, "unsafe_path", "absolute path or '..' in archive member name; refused")
                continue
            if len(bundle.members) >= bundle.budget.limits.max_members:
                bundle.refuse(display, "limit_exceeded", "too many members")
                break
            try:
                source = archive.open(info)
            except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError) as exc:
                bundle.refuse(display, "corrupt_member", f"cannot open member: {exc}")
                continue
            with source:
                target = _write_member(bundle, source, dest, parts, display, info.compress_size, None)
            if target is not None:
                _add_file(bundle, target, f"{name}/{'/'.join(parts)}", depth=depth + 1)


def _mark_duplicates(bundle: Bundle) -> None:
    first_by_digest: dict[tuple[int, str], str] = {}
    for member in bundle.members:
        if member.size == 0:
            continue
        h = hashlib.blake2b(digest_size=16)
        with open(member.path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        member.digest = h.hexdigest()
        key = (member.size, member.digest)
        if key in first_by_digest:
            member.duplicate_of = first_by_digest[key]
        else:
            first_by_digest[key] = member.name
