"""The bundle reader treats archives as hostile."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

import analyzer
from analyzer.bundle import InputError, Limits, archive_kind, open_inputs

from .conftest import SAMPLES

MONITOR = SAMPLES / "thread_monitor" / "monitor_sleep_threads.log"
# every line of this sample is a sample (its 2 -> 1 drop is too small to call an exit)
MONITOR_LINES = MONITOR.read_bytes().count(b"\n")
GIB = 1024**3


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


class _Zeros(io.RawIOBase):
    """1 GiB of zeros, streamed, so the test never holds it in memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        n = min(len(buffer), self.left)
        buffer[:n] = b"\0" * n
        self.left -= n
        return n


@pytest.fixture(scope="module")
def hostile_tar(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("hostile") / "customer.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=9) as tar:
        tar.add(MONITOR, arcname="logs/threads.log")
        _add_bytes(tar, "../escape.txt", b"escaped!\n")
        _add_bytes(tar, "/abs.txt", b"absolute!\n")
        link = tarfile.TarInfo("logs/passwd")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        tar.addfile(link)
        hard = tarfile.TarInfo("logs/hard")
        hard.type = tarfile.LNKTYPE
        hard.linkname = "../../etc/shadow"
        tar.addfile(hard)
        fifo = tarfile.TarInfo("logs/fifo")
        fifo.type = tarfile.FIFOTYPE
        tar.addfile(fifo)
        bomb = tarfile.TarInfo("logs/zeros.bin")
        bomb.size = GIB
        tar.addfile(bomb, io.BufferedReader(_Zeros(GIB), buffer_size=1 << 20))
    return path


def test_bomb_archive_is_small(hostile_tar: Path):
    assert hostile_tar.stat().st_size < 3 * 1024 * 1024  # 1 GiB of zeros compressed to a few MB


def test_hostile_tar_refusals(hostile_tar: Path, tmp_path: Path):
    before = set(os.listdir(tmp_path.parent))
    with open_inputs([hostile_tar]) as bundle:
        names = [m.name for m in bundle.members]
        codes = dict((name.split("/", 1)[1], code) for name, code in bundle.refused)
        temp = bundle.tempdir
        for member in bundle.members:  # everything we wrote is inside our private temp dir
            assert member.path.resolve().is_relative_to(temp.resolve())
    assert names == ["customer.tar.gz/logs/threads.log"]
    assert codes == {"../escape.txt": "unsafe_path", "/abs.txt": "unsafe_path", "logs/passwd": "link_refused",
                     "logs/hard": "link_refused", "logs/fifo": "special_file", "logs/zeros.bin": "bomb_refused"}
    assert not (hostile_tar.parent.parent / "escape.txt").exists()
    assert not Path("/abs.txt").exists()
    assert not temp.exists()  # cleaned up on close
    assert set(os.listdir(tmp_path.parent)) - before <= {tmp_path.name}


def test_hostile_tar_rest_still_analysed(hostile_tar: Path):
    tl = analyzer.load(hostile_tar)
    assert tl.metrics.height == MONITOR_LINES
    refused = tl.sources.filter(tl.sources["status"] == "refused")
    assert refused.height == 6
    assert set(tl.diagnostics["code"]) >= {"unsafe_path", "link_refused", "special_file", "bomb_refused"}
    assert tl.exit_code() == 3  # degraded: a bomb was refused


def test_zip_traversal_and_bomb(tmp_path: Path):
    path = tmp_path / "b.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(MONITOR, "ok/threads.log")
        zf.writestr("../../evil.txt", "x")
        zf.writestr("C:\\windows\\evil.txt", "x")
        with zf.open("zeros.bin", "w", force_zip64=True) as out:
            chunk = b"\0" * (1 << 20)
            for _ in range(64):
                out.write(chunk)
    with open_inputs([path], Limits(max_ratio=100)) as bundle:
        assert [m.name for m in bundle.members] == ["b.zip/ok/threads.log"]
        assert sorted(code for _, code in bundle.refused) == ["bomb_refused", "unsafe_path", "unsafe_path"]


def test_nested_archive_one_level(tmp_path: Path):
    inner = tmp_path / "inner.tar.gz"
    with tarfile.open(inner, "w:gz") as tar:
        tar.add(MONITOR, arcname="threads.log")
    deeper = tmp_path / "deeper.zip"
    with zipfile.ZipFile(deeper, "w") as zf:
        zf.write(inner, "inner.tar.gz")
    outer = tmp_path / "outer.zip"
    with zipfile.ZipFile(outer, "w") as zf:
        zf.write(inner, "nested/inner.tar.gz")
        zf.write(deeper, "deeper.zip")
    with open_inputs([outer]) as bundle:
        assert [m.name for m in bundle.members] == ["outer.zip/nested/inner.tar.gz/threads.log"]
        assert [(n, c) for n, c in bundle.refused] == [("outer.zip/deeper.zip/inner.tar.gz", "nested_too_deep")]


def test_directory_links_and_special_files(tmp_path: Path):
    root = tmp_path / "bundle"
    root.mkdir()
    shutil.copy(MONITOR, root / "threads.log")
    (root / "inside.log").symlink_to(root / "threads.log")
    (root / "outside").symlink_to("/etc/hostname")
    (root / "dirlink").symlink_to("/etc")
    os.mkfifo(root / "pipe")
    with open_inputs([root]) as bundle:
        names = sorted(m.name for m in bundle.members)
        refused = dict(bundle.refused)
        dup = [m for m in bundle.members if m.duplicate_of]
    assert names == ["inside.log", "threads.log"]
    assert refused == {"outside": "link_refused", "dirlink": "link_refused", "pipe": "special_file"}
    assert [m.name for m in dup] == ["threads.log"]  # same bytes as inside.log: parsed once


def test_duplicates_parsed_once(tmp_path: Path):
    shutil.copy(MONITOR, tmp_path / "a.log")
    shutil.copy(MONITOR, tmp_path / "b.log")
    tl = analyzer.load(tmp_path)
    assert tl.metrics.height == MONITOR_LINES
    rows = {r["file"]: r for r in tl.sources.iter_rows(named=True)}
    assert rows["b.log"]["status"] == "duplicate" and rows["b.log"]["duplicate_of"] == "a.log"


def test_gzip_single_file(tmp_path: Path):
    path = tmp_path / "threads.log.gz"
    path.write_bytes(gzip.compress(MONITOR.read_bytes()))
    assert archive_kind(path) == "gz"
    tl = analyzer.load(path)
    assert tl.sources.row(0, named=True)["parser"] == "thread_monitor"
    assert tl.metrics.height == MONITOR_LINES


def test_gzip_bomb_single_file(tmp_path: Path):
    path = tmp_path / "zeros.log.gz"
    with gzip.open(path, "wb") as fh:
        chunk = b"\0" * (1 << 20)
        for _ in range(64):
            fh.write(chunk)
    tl = analyzer.load(path)
    # nobody recognises zeros; counting its lines must still stop at the ratio cap
    row = tl.sources.row(0, named=True)
    assert row["parser"] is None


def test_corrupt_archive_is_a_diagnostic(tmp_path: Path):
    path = tmp_path / "broken.tar.gz"
    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as tar:
        tar.add(MONITOR, arcname="threads.log")
    path.write_bytes(good.read_bytes()[:-40])
    with open_inputs([path]) as bundle:
        codes = [d.code for d in bundle.diagnostics]
    assert "corrupt_archive" in codes or "corrupt_member" in codes


def test_missing_input_raises_input_error(tmp_path: Path):
    with pytest.raises(InputError, match="no such file"):
        open_inputs([tmp_path / "nope"])
