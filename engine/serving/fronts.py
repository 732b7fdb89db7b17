"""The engine's front processes (`engine.serving.front`): started on a reserved shared port,
each waited for until it serves, replaced when one dies, stopped with a grace period.

`Fronts.start` reserves the port (SO_REUSEPORT, `front.reserve_port`), opens the engine's end
of the link (`engine.serving.link.Link`) in a private run folder, writes the token table the
fronts check calls against (digests only), then starts `count` fronts; a start-up that fails
leaves no front behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.config import Settings
from engine.serving.auth import Token, write_tokens
from engine.serving.front import reserve_port
from engine.serving.link import Link
from engine.serving.tls import TlsFiles

log = logging.getLogger(__name__)

START_S = 60.0
"""Longest a front process may take to connect and serve, or to exit once told to."""
_SCRUBBED = ("ORDERSIGHT_HASH_SECRET",)
"""Environment the fronts do not inherit: they never hash."""


class Fronts:
    def __init__(
        self,
        settings: Settings,
        link: Link,
        count: int,
        tokens: Sequence[Token],
        tls: TlsFiles,
        reflection: bool,
    ) -> None:
        self.settings, self.link, self.count = settings, link, count
        self.tokens, self.tls, self.reflection = tokens, tls, reflection
        self.procs: list[asyncio.subprocess.Process] = []
        self.port = 0
        self._args: list[str] = []
        self._reserved: socket.socket | None = None
        self._rundir: tempfile.TemporaryDirectory[str] | None = None
        self._stopping = False

    async def start(self) -> int:
        """Reserve the port, open the link, start the fronts and wait until each serves;
        the port."""
        s = self.settings
        self._reserved = reserve_port(s.host, s.port)
        self.port = self._reserved.getsockname()[1]
        self._rundir = tempfile.TemporaryDirectory(prefix="ordersight-")
        run = Path(self._rundir.name)
        self._args = [
            "--link", str(run / "engine.sock"), "--host", s.host, "--port", str(self.port),
            "--max-request-bytes", str(s.max_request_bytes), "--grace", str(s.grace_s),
            "--log-level", s.log_level, "--max-in-flight", str(s.max_in_flight),
            "--reflection" if self.reflection else "--no-reflection", *self.tls.args(),
        ]  # fmt: skip
        if self.tokens:  # the fronts check every call against the same table
            write_tokens(self.tokens, run / "tokens.json")
            self._args += ["--auth", str(run / "tokens.json")]
        await self.link.start(str(run / "engine.sock"))
        try:
            await asyncio.gather(*(self._spawn() for _ in range(self.count)))
        except BaseException:  # no front outlives a start-up that failed
            self._stopping = True
            for proc in self.procs:
                if proc.returncode is None:
                    proc.kill()
            await asyncio.gather(*(p.wait() for p in self.procs), return_exceptions=True)
            await self.link.close()
            self._reserved.close()
            raise
        log.info("%d front processes serving on %s:%d", self.count, s.host, self.port)
        return self.port

    async def _spawn(self) -> None:
        """Start one front process and wait until it serves; one that exits or stalls first
        fails with the reason."""
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engine.serving.front", *self._args, env=env
        )
        self.procs.append(proc)
        ready = self.link.expect(proc.pid)
        exited = asyncio.ensure_future(proc.wait())
        waits: set[asyncio.Future[Any]] = {ready, exited}
        done, _ = await asyncio.wait(waits, timeout=START_S, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            if exited not in done:
                proc.kill()
            why = f"exited with {proc.returncode}" if exited in done else "did not start"
            raise OSError(f"front process {proc.pid} {why} (on {self.settings.host}:{self.port})")
        exited.add_done_callback(lambda _f: self._exited(proc))

    def _exited(self, proc: asyncio.subprocess.Process) -> None:
        if self._stopping:
            return
        log.error("front process %d exited with %s: starting another", proc.pid, proc.returncode)
        self.link.metrics.restarts += 1
        with contextlib.suppress(ValueError):
            self.procs.remove(proc)
        asyncio.get_running_loop().create_task(self._respawn())

    async def _respawn(self) -> None:
        try:
            await self._spawn()
        except OSError as exc:
            log.error("could not replace a front process: %s", exc)

    async def stop(self) -> None:
        """Fronts stop taking calls and finish those in flight (the engine still answers
        them), then exit; one that overstays its grace is killed."""
        self._stopping = True
        for conn in list(self.link.connections):
            conn.stop()
        waits = [asyncio.ensure_future(p.wait()) for p in self.procs]
        if waits:
            _, late = await asyncio.wait(waits, timeout=self.settings.grace_s + START_S)
            for proc in self.procs:
                if proc.returncode is None:
                    log.error("front process %d did not stop: killed", proc.pid)
                    proc.kill()
            if late:
                await asyncio.wait(late)
        await self.link.close()
        if self._reserved is not None:
            self._reserved.close()
        if self._rundir is not None:
            self._rundir.cleanup()
