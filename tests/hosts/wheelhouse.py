"""A local wheelhouse for the nspawn test hosts, which have no internet.

Air-gapped GPU datacenters install Python software the same way: the wheels are downloaded once
on a machine that can reach an index, then served inside the datacenter and installed with
``pip install --no-index --find-links URL``. This script does exactly that for the test hosts:

    wheelhouse.py build                      download the vLLM CPU lock's wheels (cached)
    wheelhouse.py serve --state-dir DIR      serve them over HTTP on the bridge (10.200.0.1:PORT)
    wheelhouse.py stop --state-dir DIR       stop that server
    wheelhouse.py path                       print the cached directory

Standard library only; runs on the controller (the build needs PyPI access, the server does not).
"""

from __future__ import annotations

import argparse
import hashlib
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
REPO = HERE.parent.parent
DEFAULT_LOCK = REPO / "requirements" / "vllm-cpu.lock"
DEFAULT_BIND = "10.200.0.1"
DEFAULT_PORT = 8765
PIDFILE = "wheelhouse.pid"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] wheelhouse: {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    if os.environ.get("LLMOPS_CACHE"):
        return Path(os.environ["LLMOPS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llmops-platform"


def wheelhouse_dir(lock: Path = DEFAULT_LOCK) -> Path:
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:12]
    return cache_root() / f"wheelhouse-{digest}"


def build(lock: Path = DEFAULT_LOCK) -> Path:
    """Download every pinned wheel of ``lock`` (no dependency resolution: the lock is complete).

    torch's CPU build (``torch==2.13.0+cpu`` in the lock) is not on PyPI's default index; pip
    finds it through PIP_FIND_LINKS / pip.conf (``/opt/wheels`` on the project's machines).
    The download goes to a temporary directory that is renamed into place only when complete, so
    an interrupted build is redone rather than trusted.
    """
    target = wheelhouse_dir(lock)
    if (target / ".complete").is_file():
        log(f"cached: {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    tmp.mkdir()
    log(f"downloading the wheels of {lock.name} into {target} (once per lock; a few minutes)")
    started = time.monotonic()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--progress-bar=off"]
    cmd += ["-d", str(tmp), "-r", str(lock)]
    wanted = sum(1 for line in lock.read_text().splitlines() if line.strip() and not line.startswith("#"))
    saved = 0
    last_shown = 0.0
    output = []
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "is ignored: it is neither a file nor a directory" in line:
            continue  # noise from pip.conf's file:// extra indexes that lack a project
        output.append(line)
        if line.startswith("Saved ") or "File was already downloaded" in line:
            saved += 1
            if time.monotonic() - last_shown > 5 or saved == wanted:
                log(f"{saved}/{wanted} wheels ({line.split('/')[-1].strip()})")
                last_shown = time.monotonic()
    if proc.wait() != 0:
        raise SystemExit("pip download failed:\n" + "".join(output[-30:]))
    shutil.copy2(lock, tmp / "requirements.lock")
    (tmp / ".complete").write_text(f"{lock}\n")
    tmp.rename(target)
    count = len(list(target.glob("*.whl")))
    log(f"{count} wheels in {time.monotonic() - started:.0f} s")
    return target


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _read_pid(state_dir: Path) -> int | None:
    try:
        pid = int((state_dir / PIDFILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def url(bind: str = DEFAULT_BIND, port: int = DEFAULT_PORT) -> str:
    return f"http://{bind}:{port}/"


def _serves(base_url: str, directory: Path) -> bool:
    """True when base_url serves this wheelhouse (its requirements.lock has the same bytes)."""
    try:
        with urllib.request.urlopen(base_url + "requirements.lock", timeout=5) as response:
            return response.read() == (directory / "requirements.lock").read_bytes()
    except (OSError, ValueError):
        return False


def serve(state_dir: Path, bind: str = DEFAULT_BIND, port: int = DEFAULT_PORT, lock: Path = DEFAULT_LOCK) -> str:
    """Start ``python -m http.server`` on bind:port serving the wheelhouse; idempotent."""
    directory = build(lock)
    state_dir.mkdir(parents=True, exist_ok=True)
    if _read_pid(state_dir) is not None and _port_open(bind, port):
        log(f"already serving {url(bind, port)}")
        return url(bind, port)
    if _port_open(bind, port):
        # Another set of test hosts (or a run whose teardown never ran) serves the same wheelhouse:
        # share it. Anything else on the port is an error.
        if _serves(url(bind, port), directory):
            log(f"reusing the wheelhouse already served at {url(bind, port)}")
            return url(bind, port)
        raise SystemExit(f"{bind}:{port} is already taken by another process; choose --port")
    logfile = (state_dir / "wheelhouse.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", bind, "--directory", str(directory)],
        stdin=subprocess.DEVNULL,
        stdout=logfile,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    (state_dir / PIDFILE).write_text(f"{proc.pid} {bind} {port}\n")
    deadline = time.monotonic() + 15
    while not _port_open(bind, port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"wheelhouse server did not start; see {state_dir / 'wheelhouse.log'}")
        time.sleep(0.2)
    log(f"serving {directory} at {url(bind, port)} (pid {proc.pid})")
    return url(bind, port)


def stop(state_dir: Path) -> None:
    pid = _read_pid(state_dir)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        for _attempt in range(50):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
        log(f"stopped server pid {pid}")
    (state_dir / PIDFILE).unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lock", type=Path, default=DEFAULT_LOCK, help="pinned requirements file")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="download the wheels (cached by the lock's hash)")
    sub.add_parser("path", help="print the wheelhouse directory")
    p_serve = sub.add_parser("serve", help="serve the wheelhouse over HTTP")
    p_serve.add_argument("--state-dir", type=Path, required=True, help="where the pidfile and log go")
    p_serve.add_argument("--bind", default=DEFAULT_BIND)
    p_serve.add_argument("--port", type=int, default=DEFAULT_PORT)
    p_stop = sub.add_parser("stop", help="stop the server started by serve")
    p_stop.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.command == "build":
        print(build(args.lock))
    elif args.command == "path":
        print(wheelhouse_dir(args.lock))
    elif args.command == "serve":
        print(serve(args.state_dir, args.bind, args.port, args.lock))
    elif args.command == "stop":
        stop(args.state_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
