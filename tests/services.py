"""Real services the tests start on 127.0.0.1: a NATS server with JetStream, PostgreSQL.

`scripts/install-services.sh` installs them (Debian packages); `make test` runs it first.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

START_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def nats_server(store: Path) -> Iterator[str]:
    """A JetStream-enabled nats-server on a free loopback port; yields its URL."""
    with nats_process(store) as (url, _):
        yield url


@contextmanager
def nats_process(store: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`nats_server`, yielding its URL and its process (for tests that kill it)."""
    binary = shutil.which("nats-server") or shutil.which(
        "nats-server", path="/usr/sbin:/usr/bin:/usr/local/bin"
    )
    if binary is None:
        raise RuntimeError("nats-server is not installed: run scripts/install-services.sh")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        end = time.monotonic() + START_S
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > end:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"nats-server did not start: {err[-2000:]}")
            time.sleep(0.02)
        yield f"nats://127.0.0.1:{port}", proc
    finally:
        _stop(proc, 10)


def _stop(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    """SIGTERM, then SIGKILL after `grace_s`."""
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if found:
        return str(found[-1])  # the newest major version installed
    binary = shutil.which(name)
    if binary is None:
        raise RuntimeError(f"PostgreSQL's {name} is not installed: run scripts/install-services.sh")
    return binary


@contextmanager
def postgres_server(folder: Path) -> Iterator[str]:
    """A PostgreSQL server of its own (initdb into `folder`, trust authentication, loopback
    only, a free port); yields the DSN of its `postgres` database. PostgreSQL refuses to run
    as root: as root, it runs as the `postgres` user that Debian's package creates."""
    import os
    import tempfile

    as_user: list[str] = []
    own = None
    if os.geteuid() == 0:  # in a folder of its own: pytest's are root's alone (0700)
        import pwd

        pw = pwd.getpwnam("postgres")
        own = folder = Path(tempfile.mkdtemp(prefix="ordersight-pg-"))
        os.chown(folder, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, sockets = folder / "data", folder / "sock"
    subprocess.run([*as_user, "mkdir", "-p", str(sockets)], check=True)
    subprocess.run(
        [*as_user, _pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
         "-E", "UTF8", "--no-sync"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [*as_user, _pg_bin("postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
         "-k", str(sockets), "-c", "fsync=off", "-c", "max_connections=200"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        end = time.monotonic() + START_S
        while True:
            ready = subprocess.run(
                [_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            if ready.returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() > end:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"postgres did not start: {err[-2000:]}")
            time.sleep(0.05)
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        _stop(proc, 20)
        if own is not None:
            shutil.rmtree(own, ignore_errors=True)
