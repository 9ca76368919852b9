"""Regenerates samples/applogs/: real Python application logs with asyncio debug-mode
messages, produced by running the small programs in applog_programs/ under several
CPython versions and logging set-ups, plus uvicorn and gunicorn serving a misbehaving
starlette app over loopback.

Usage: python3 samples/generate/applog_samples.py [--out samples/applogs]

Needs pyenv-style interpreters under $PYENV_ROOT/versions (3.6 .. 3.13; missing ones are
skipped and said so), and for the web samples uvicorn, gunicorn, starlette, uvloop, aiodebug,
python-json-logger, asyncpg in the interpreter running this script (pip-installed when missing).
Everything listens on 127.0.0.1 only; every process started is stopped again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROGRAMS = HERE / "applog_programs"
PYENV = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions"
WORKDIR = Path("/tmp/stallscope-applog/app")  # stable paths inside the reprs
WEB_DEPS = ["uvicorn", "gunicorn", "starlette", "uvloop", "aiodebug", "python-json-logger", "asyncpg"]

# (file name, python version prefix, faults.py arguments, extra environment, what it shows)
FAULT_RUNS = [
    ("py36_lastresort.log", "3.6", ["--logging", "none"], {}, "no logging config (lastResort), 3.6 reprs"),
    ("py37_lastresort.log", "3.7", ["--logging", "none"], {}, "no logging config, 3.7 reprs (no task names)"),
    ("py38_basicconfig.log", "3.8", ["--logging", "basic"], {}, "logging.basicConfig(): LEVEL:name:msg"),
    (
        "py39_asctime_nosep.log",
        "3.9",
        ["--logging", "asctime-nosep"],
        {},
        "%(asctime)s%(levelname)s:%(name)s:%(message)s (no separator after the time)",
    ),
    (
        "py310_asctime_dash.log",
        "3.10",
        ["--logging", "asctime-dash"],
        {},
        "%(asctime)s - %(name)s - %(levelname)s - %(message)s",
    ),
    (
        "py311_asctime_db.log",
        "3.11",
        ["--logging", "asctime", "--db"],
        {},
        "%(asctime)s %(levelname)s %(name)s: %(message)s; asyncpg pool connect timeout",
    ),
    ("py311_json.log", "3.11", ["--logging", "json"], {}, "python-json-logger JSON lines"),
    (
        "py311_nodebug_longrunning.log",
        "3.11",
        ["--logging", "asctime", "--no-debug"],
        {},
        "debug mode off: no slow-callback warnings, an app-level 'Long-running callback' line",
    ),
    (
        "py311_aiodebug.log",
        "3.11",
        ["--logging", "asctime-dash", "--aiodebug", "--no-debug"],
        {},
        "aiodebug.log_slow_callbacks without debug mode",
    ),
    ("py311_uvloop_basicconfig.log", "3.11", ["--logging", "basic", "--uvloop"], {}, "uvloop reprs"),
    (
        "py312_iso_offset.log",
        "3.12",
        ["--logging", "iso"],
        {"TZ": "Asia/Kolkata"},
        "ISO-8601 time with +0530 offset and [pid]",
    ),
    ("py313_basicconfig.log", "3.13", ["--logging", "basic"], {}, "basicConfig, 3.13 reprs"),
    (
        "py313_lastresort_nodebug.log",
        "3.13",
        ["--logging", "none", "--no-debug"],
        {},
        "no logging config, debug off: exception-handler records without source_traceback",
    ),
]


# (file name, python version prefix, program, what it shows): other small programs
EXTRA_RUNS = [
    (
        "py311_accept_emfile.log",
        "3.11",
        "accept_emfile.py",
        "asyncio server over its open-files limit: 'socket.accept() out of system resource' naming the "
        "listening socket, EMFILE",
    ),
]


def interpreter(prefix: str) -> Path | None:
    for cand in sorted(PYENV.glob(f"{prefix}.*")):
        exe = cand / "bin" / "python"
        if exe.exists():
            return exe
    return None


def version_of(exe: Path | str) -> str:
    return subprocess.run(
        [str(exe), "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 10.0) -> None:
    try:
        urllib.request.urlopen(url, timeout=timeout).read()
    except Exception:  # 500s and timeouts are the point of some requests
        pass


def wait_listening(port: int, limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port}")


def stop(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_web(
    out: Path,
    name: str,
    cmd: list[str],
    port: int,
    paths: list[str],
    env: dict[str, str],
    stop_sig: int = signal.SIGINT,
    settle: float = 1.0,
) -> None:
    with open(out / name, "wb") as fh:
        proc = subprocess.Popen(
            cmd, cwd=WORKDIR, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **env}
        )
        try:
            wait_listening(port)
            for path in paths:
                if path.startswith("sleep:"):
                    time.sleep(float(path[6:]))
                else:
                    get(f"http://127.0.0.1:{port}{path}")
            time.sleep(settle)
        finally:
            stop(proc, stop_sig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(HERE.parent / "applogs"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    missing = [
        d
        for d in WEB_DEPS
        if subprocess.run([sys.executable, "-m", "pip", "show", "-q", d], capture_output=True).returncode
    ]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)
    if WORKDIR.exists():
        shutil.rmtree(WORKDIR)
    WORKDIR.mkdir(parents=True)
    for prog in ("faults.py", "webapp.py", *(run[2] for run in EXTRA_RUNS)):
        shutil.copy(PROGRAMS / prog, WORKDIR / prog)

    prov = [
        "# samples/applogs provenance",
        "",
        f"Produced by `python3 samples/generate/applog_samples.py` on {dt.date.today()} "
        f"({os.uname().sysname} {os.uname().release}, Debian 12), programs copied to `{WORKDIR}` first "
        "so the paths inside the reprs are stable. stdout+stderr of each run, unedited. Machine zone: UTC "
        "unless a TZ is listed.",
        "",
        f"Interpreters: CPython builds under `{PYENV}` (3.6-3.13, one per minor version); the uvicorn/gunicorn "
        "runs use the interpreter running the generator.",
        "",
        "| file | python | command | shows |",
        "| --- | --- | --- | --- |",
    ]
    for name, prefix, fargs, env, what in FAULT_RUNS:
        exe = interpreter(prefix)
        if exe is None:
            print(f"skip {name}: no python {prefix} under {PYENV}", file=sys.stderr)
            continue
        # 3.6-3.8 print the script path as given; run it relative for short, stable paths
        cmd = [str(exe), "faults.py", *fargs]
        with open(out / name, "wb") as fh:
            subprocess.run(
                cmd,
                cwd=WORKDIR,
                stdout=fh,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                check=True,
                timeout=120,
            )
        envtext = " ".join(f"{k}={v}" for k, v in env.items())
        prov.append(
            f"| {name} | {version_of(exe)} | `{envtext + ' ' if envtext else ''}python faults.py "
            f"{' '.join(fargs)}` | {what} |"
        )

    for name, prefix, program, what in EXTRA_RUNS:
        exe = interpreter(prefix)
        if exe is None:
            print(f"skip {name}: no python {prefix} under {PYENV}", file=sys.stderr)
            continue
        with open(out / name, "wb") as fh:
            subprocess.run(
                [str(exe), program], cwd=WORKDIR, stdout=fh, stderr=subprocess.STDOUT, check=True, timeout=120
            )
        prov.append(f"| {name} | {version_of(exe)} | `python {program}` | {what} |")

    pyver = version_of(sys.executable)
    bin_dir = Path(sys.executable).parent
    uvicorn = (
        [str(bin_dir / "uvicorn")] if (bin_dir / "uvicorn").exists() else [sys.executable, "-m", "uvicorn"]
    )
    gunicorn = (
        [str(bin_dir / "gunicorn")] if (bin_dir / "gunicorn").exists() else [sys.executable, "-m", "gunicorn"]
    )
    requests = ["/ok", "/block?s=0.3", "/ok", "/block?s=0.45", "/boom", "/ok?x=1&y=2", "/missing"]
    debug = {"WEBAPP_ASYNCIO_DEBUG": "1"}
    web_runs = [
        (
            "uvicorn_asyncio_debug.log",
            uvicorn + ["--loop", "asyncio"],
            debug,
            requests,
            "uvicorn default logging (`INFO:     ` level prefix), asyncio loop in debug mode",
        ),
        (
            "uvicorn_uvloop_debug_colors.log",
            uvicorn + ["--loop", "uvloop", "--use-colors"],
            debug,
            requests,
            "uvicorn with uvloop in debug mode, ANSI colours forced",
        ),
        (
            "uvicorn_app_asctime.log",
            uvicorn + ["--loop", "asyncio"],
            {**debug, "WEBAPP_ROOT_LOGGING": "asctime"},
            requests,
            "the app's root logger with %(asctime)s, uvicorn's loggers in their default format (no time): "
            "access lines inherit the time of the line before them",
        ),
        (
            "uvicorn_nodebug.log",
            uvicorn + ["--loop", "asyncio"],
            {},
            requests,
            "uvicorn, debug mode off (no slow-callback warnings)",
        ),
    ]
    for name, base, env, paths, what in web_runs:
        port = free_port()
        cmd = base + ["--host", "127.0.0.1", "--port", str(port), "webapp:app"]
        run_web(out, name, cmd, port, paths, env)
        prov.append(
            f"| {name} | {pyver} | `{' '.join(f'{k}={v}' for k, v in env.items())} uvicorn "
            f"{' '.join(cmd[len(uvicorn) :])}` + GET {', '.join(paths)} | {what} |"
        )

    port = free_port()
    gcmd = gunicorn + [
        "-k",
        "uvicorn.workers.UvicornWorker",
        "--timeout",
        "2",
        "-w",
        "1",
        "-b",
        f"127.0.0.1:{port}",
        "--access-logfile",
        "-",
        "webapp:app",
    ]
    gpaths = ["/ok", "/block?s=0.3", "/boom", "/hang?s=6", "sleep:3", "/ok", "/block?s=0.2"]
    run_web(
        out, "gunicorn_uvicorn_worker.log", gcmd, port, gpaths, debug, stop_sig=signal.SIGTERM, settle=1.5
    )
    prov.append(
        f"| gunicorn_uvicorn_worker.log | {pyver} | `WEBAPP_ASYNCIO_DEBUG=1 gunicorn "
        f"{' '.join(gcmd[len(gunicorn) :])}` + GET {', '.join(gpaths)} | gunicorn prefixes, WORKER "
        "TIMEOUT after a 6 s blocking handler, worker re-boot, unprefixed uvicorn access lines |"
    )
    prov += [
        "",
        "Tool versions: "
        + subprocess.run(
            [
                sys.executable,
                "-c",
                "import uvicorn, gunicorn, starlette, uvloop; print('uvicorn', "
                "uvicorn.__version__, 'gunicorn', gunicorn.__version__, 'starlette', starlette.__version__, "
                "'uvloop', uvloop.__version__)",
            ],
            capture_output=True,
            text=True,
        ).stdout.strip(),
        "",
        "Hand-made files (`handmade_*`) imitate layouts this machine's tools do not print; each says what it "
        "imitates in `handmade_README.md`.",
    ]
    (out / "PROVENANCE.md").write_text("\n".join(prov) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
