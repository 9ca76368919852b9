#!/usr/bin/env python3
"""Regenerates samples/threads/{ps,top,proc_status}/: real ps, top and /proc/PID/status
output captured while a multi-threaded Python workload runs (threads sleeping, two threads
spinning, a thread pool that grows step by step, OS thread names set with prctl).

Usage: python3 samples/generate/thread_samples.py      (needs root, procps, util-linux unshare,
       the de_DE/fr_FR/zh_CN UTF-8 locales for the translated top captures)

Most captures run inside a fresh PID namespace (``unshare --pid --fork --mount-proc``, like a
container) so that ``ps -e``/``top`` list only the workload and the capture tools. The
narrow-column ``ps -Lf`` form is captured outside it (procps sizes PID columns by pid_max,
which is 32768 on the host and 4194304 inside the namespace). The workload runs as the user
``stallscope-worker`` (created if missing) so ps/top print a truncated user name (``stallsc+``).
"""

from __future__ import annotations

import ctypes
import datetime as dt
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "threads"
USER = "stallscope-worker"


# -- the workload -------------------------------------------------------------------------
def _name_thread(name: str) -> None:
    libc = ctypes.CDLL(None)
    libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME: the comm ps/top show


def _sleeper(name: str, seconds: float) -> None:
    _name_thread(name)
    time.sleep(seconds)


def _spinner(name: str, seconds: float) -> None:
    _name_thread(name)
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += 1


def workload(seconds: float) -> None:
    """1 main + 2 spinning + 1 'io worker' + a pool growing by 4 threads a second (to 24)."""
    start = time.monotonic()
    left = lambda: max(0.5, seconds - (time.monotonic() - start))  # noqa: E731
    for i in range(2):
        threading.Thread(target=_spinner, args=(f"spin-{i}", left()), daemon=True).start()
    threading.Thread(target=_sleeper, args=("io worker", left()), daemon=True).start()
    n = 0
    for _step in range(6):
        time.sleep(1.0)
        for _ in range(4):
            threading.Thread(target=_sleeper, args=(f"pool-{n}", left()), daemon=True).start()
            n += 1
    time.sleep(left())


# -- capture helpers --------------------------------------------------------------------------
def sh(cmd: str, out: Path, *, append: bool = False, env: dict[str, str] | None = None) -> None:
    full_env = {**os.environ, "LC_ALL": "C", "COLUMNS": "", **(env or {})}
    full_env = {k: v for k, v in full_env.items() if v != ""}
    with out.open("ab" if append else "wb") as fh:
        subprocess.run(["bash", "-c", cmd], stdout=fh, stderr=subprocess.DEVNULL, env=full_env, check=False)


def start_workload(seconds: float) -> subprocess.Popen:
    # the system interpreter: a non-root user cannot run one installed under /root
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    cmd = [python, __file__, "--workload", str(seconds)]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", USER, "--", *cmd]
    proc = subprocess.Popen(cmd)
    time.sleep(0.5)
    # with runuser the python process is runuser's child
    kids = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    proc.workload_pid = int(kids[0]) if kids else proc.pid  # type: ignore[attr-defined]
    return proc


def inside() -> None:
    """Runs as PID 1 of a new PID namespace."""
    ps_dir, top_dir, st_dir = ROOT / "ps", ROOT / "top", ROOT / "proc_status"
    proc = start_workload(14.0)
    pid = proc.workload_pid  # type: ignore[attr-defined]
    time.sleep(2.7)  # pool has 8 threads
    sh("ps -eLf", ps_dir / "ps_eLf.txt")
    sh(f"ps -T -p {pid}", ps_dir / "ps_T_p.txt")
    sh(f"ps -L -o pid,lwp,nlwp,pcpu,stat,comm -p {pid}", ps_dir / "ps_L_o.txt")
    sh(f"ps -L -o pid,tid,comm,pcpu,rss -p {pid}", ps_dir / "ps_L_o_comm_middle.txt")
    sh("ps -eLo pid,tid,nlwp,pcpu,pmem,rss,vsz,stat,comm,args", ps_dir / "ps_eLo.txt")
    sh("ps -eo user,pid,nlwp,pcpu,pmem,rss,comm", ps_dir / "ps_eo_nlwp.txt")
    sh(f"cat /proc/{pid}/status", st_dir / "status_pid.txt")
    sh("tail -n +1 /proc/[0-9]*/status", st_dir / "status_tail_all.txt")
    sh("grep -H Threads /proc/[0-9]*/status", st_dir / "status_grep_threads.txt")
    sh(f"head -n 60 /proc/{pid}/task/*/status", st_dir / "status_tasks_head.txt")
    # multi-snapshot loops, each with its own time line
    sh("for i in 1 2 3 4; do date; ps -eLf; sleep 1; done", ps_dir / "ps_eLf_loop_date.txt")
    sh(
        f'for i in 1 2 3; do echo "# $(date -Is)"; ps -L -o pid,lwp,nlwp,pcpu,comm -p {pid}; sleep 1; done',
        ps_dir / "ps_L_o_loop_iso.txt",
    )
    sh(
        f"for i in 1 2 3; do date '+%F %T'; cat /proc/{pid}/status; sleep 1; done",
        st_dir / "status_loop_date.txt",
    )
    proc.wait()

    proc = start_workload(40.0)  # outlives all top captures (about 30 s)
    pid = proc.workload_pid  # type: ignore[attr-defined]
    time.sleep(1.5)
    sh("top -b -n 3 -d 1", top_dir / "top_b.txt")
    sh(f"top -H -b -n 3 -d 1 -p {pid}", top_dir / "top_H_p.txt")
    sh("top -b -n 2 -d 1", top_dir / "top_b_cols80.txt", env={"COLUMNS": "80"})
    sh("top -H -b -n 2 -d 1", top_dir / "top_H_all.txt")
    sh("top -c -b -n 2 -d 1 -w 200", top_dir / "top_c_args.txt")
    sh("for i in 1 2 3; do top -b -n 1; sleep 1; done", top_dir / "top_loop_n1.txt")
    for loc, name in (
        ("de_DE.UTF-8", "top_de.txt"),
        ("fr_FR.UTF-8", "top_H_fr.txt"),
        ("zh_CN.UTF-8", "top_zh.txt"),
    ):
        flag = "-H " if "_H_" in name else ""
        sh(f"top {flag}-b -n 2 -d 1", top_dir / name, env={"LC_ALL": loc})
    proc.kill()
    proc.wait()


def outside() -> None:
    """Host PID namespace: the narrow-column ps form (pid_max 32768)."""
    ps_dir = ROOT / "ps"
    proc = start_workload(6.0)
    pid = proc.workload_pid  # type: ignore[attr-defined]
    time.sleep(2.2)
    sh(f"ps -Lf -p {pid}", ps_dir / "ps_Lf_narrow.txt")
    proc.wait()


def ensure_user() -> None:
    if os.geteuid() != 0:
        return
    if subprocess.run(["id", "-u", USER], capture_output=True).returncode != 0:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER], check=True
        )


def tool_versions() -> str:
    def out(cmd: list[str]) -> str:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]

    return f"{out(['ps', '--version'])}; {out(['top', '-V'])}; {out(['uname', '-sr'])}"


PROVENANCE = """\
Produced by samples/generate/thread_samples.py on {date} ({versions}).
Workload: a python3 process (run as user `stallscope-worker`, so ps/top print `stallsc+`) with
2 spinning threads (`spin-0`, `spin-1`), a sleeping thread named `io worker` (space in the
comm), and a pool growing by 4 threads (`pool-N`) every second to 24; OS thread names set with
prctl(PR_SET_NAME). Captures run inside `unshare --pid --fork --mount-proc` (only the workload
and the capture tools are visible) unless noted. Locale C unless noted. Machine zone: {tz}.
{files}
"""

FILES = {
    "ps": [
        ("ps_eLf.txt", "`ps -eLf` (procps-ng 4 wide PID columns: pid_max 4194304 in the namespace)"),
        ("ps_T_p.txt", "`ps -T -p PID`"),
        ("ps_L_o.txt", "`ps -L -o pid,lwp,nlwp,pcpu,stat,comm -p PID`"),
        ("ps_L_o_comm_middle.txt", "`ps -L -o pid,tid,comm,pcpu,rss -p PID` (comm with a space, not last)"),
        ("ps_eLo.txt", "`ps -eLo pid,tid,nlwp,pcpu,pmem,rss,vsz,stat,comm,args`"),
        ("ps_eo_nlwp.txt", "`ps -eo user,pid,nlwp,pcpu,pmem,rss,comm` (no thread rows: NLWP only)"),
        ("ps_eLf_loop_date.txt", "`for i in 1 2 3 4; do date; ps -eLf; sleep 1; done`"),
        (
            "ps_L_o_loop_iso.txt",
            '`echo "# $(date -Is)"; ps -L -o pid,lwp,nlwp,pcpu,comm -p PID` x3, 1 s apart',
        ),
        (
            "ps_Lf_narrow.txt",
            "`ps -Lf -p PID` in the host namespace (pid_max 32768: the narrow, pre-3.3.15-looking columns)",
        ),
    ],
    "top": [
        ("top_b.txt", "`top -b -n 3 -d 1`"),
        ("top_H_p.txt", "`top -H -b -n 3 -d 1 -p PID` (threads of the workload)"),
        ("top_b_cols80.txt", "`COLUMNS=80 top -b -n 2 -d 1`"),
        ("top_H_all.txt", "`top -H -b -n 2 -d 1` (all threads)"),
        ("top_c_args.txt", "`top -c -b -n 2 -d 1 -w 200` (COMMAND is the command line, with spaces)"),
        ("top_loop_n1.txt", "`for i in 1 2 3; do top -b -n 1; sleep 1; done` (every frame is a first frame)"),
        (
            "top_de.txt",
            "`LC_ALL=de_DE.UTF-8 top -b -n 2 -d 1` (decimal commas, `%CPU(s):`, `MiB Spch`, `ZEIT+ BEFEHL`)",
        ),
        ("top_H_fr.txt", "`LC_ALL=fr_FR.UTF-8 top -H -b -n 2 -d 1` (`ut` for us, `UTIL.`, `TEMPS+ COM.`)"),
        (
            "top_zh.txt",
            "`LC_ALL=zh_CN.UTF-8 top -b -n 2 -d 1` (`进程号` for PID, the S column header is blank)",
        ),
    ],
    "proc_status": [
        ("status_pid.txt", "`cat /proc/PID/status`"),
        ("status_tail_all.txt", "`tail -n +1 /proc/[0-9]*/status` (`==> file <==` headers)"),
        ("status_grep_threads.txt", "`grep -H Threads /proc/[0-9]*/status`"),
        (
            "status_tasks_head.txt",
            "`head -n 60 /proc/PID/task/*/status` (one status per thread: Pid != Tgid)",
        ),
        ("status_loop_date.txt", "`date '+%F %T'; cat /proc/PID/status` x3, 1 s apart"),
    ],
}


def write_provenance(folder: str, extra: str = "") -> None:
    files = "\n".join(f"- {name}: {what}" for name, what in FILES[folder]) + extra
    tz = Path("/etc/timezone").read_text().strip() if Path("/etc/timezone").exists() else "unknown"
    (ROOT / folder / "PROVENANCE.md").write_text(
        PROVENANCE.format(date=dt.date.today().isoformat(), versions=tool_versions(), tz=tz, files=files)
    )


HANDMADE_NOTE = {
    "ps": "\nHand-written (this procps cannot emit them):\n"
    "- handmade_ps_eLf_pasted.txt: `ps -eLf` as pasted into documentation (old procps 3.2 "
    "narrow columns, a `$ ps -eLf` prompt line, `[...]` and `...` elision lines, users truncated with `+` such as `agent-a+`, "
    "kernel threads `[kthreadd]`, STIME `Jun28`), modelled on the pstack page of "
    "jaywcjlove/linux-command and FORMATS.md §1.2.\n",
    "top": "\nHand-written (this procps cannot emit them):\n"
    "- handmade_top_procps32.txt: procps 3.2 `top -b -n 2` (RHEL 5/6): `Cpu(s):  0.3%us, ...`, "
    "`Mem:   4147888k total`, `rt` priorities, negative NI, `21.4g` VIRT, modelled on "
    "dreamlate00 docs/linux/top.md and FORMATS.md §1.3.\n",
}


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--workload":
        workload(float(sys.argv[2]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--inside":
        inside()
        return
    ensure_user()
    for folder in FILES:
        d = ROOT / folder
        d.mkdir(parents=True, exist_ok=True)
        for path in d.iterdir():
            if not path.name.startswith("handmade_") and path.suffix != ".md":
                path.unlink()
    subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, __file__, "--inside"], check=True
    )
    outside()
    for folder in FILES:
        write_provenance(folder, HANDMADE_NOTE.get(folder, ""))


if __name__ == "__main__":
    main()
