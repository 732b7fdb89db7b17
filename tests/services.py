"""Real services the tests start on 127.0.0.1: a NATS server with JetStream.

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
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
