"""The floor of the front/engine layout: the product's own front process before an engine
stand-in that scores nothing.

The stand-in speaks the engine's side of the link (`engine.serving.frames`) and answers each
Score frame with the echo server's canned Decision (`benchmarks.echo_server`), the order's
id copied in as the echo does. Measured beside the echo and the real engine, it splits
OrderSight's cost per call into what any Python gRPC server pays (the echo), what the hop to
a second process adds (this floor) and what scoring adds (the rest).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
from pathlib import Path

from ordersight.v1 import risk_pb2 as pb

from benchmarks.echo_server import canned_decision
from engine.serving import frames


class _Connection:
    def __init__(self, template: pb.Decision, ready: asyncio.Event) -> None:
        self.template, self.ready = template, ready
        self.protocol = frames.FrameProtocol(self._on_frame, lambda _exc: None)

    def _on_frame(
        self, kind: int, call: int, code: int, deadline: float, body: frames.Body
    ) -> None:
        if kind == frames.CALL and code == 0:
            d = pb.Decision()
            d.CopyFrom(self.template)
            d.order_id = pb.Order.FromString(body).order_id
            self.protocol.send(frames.REPLY, call, 0, d.SerializeToString())
        elif kind == frames.CALL:
            self.protocol.send(frames.REPLY, call, 12, b"not served by the link floor")
        elif kind == frames.READY:
            self.ready.set()


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    template, ready = canned_decision(), asyncio.Event()
    with tempfile.TemporaryDirectory(prefix="link-floor-") as rundir:
        path = str(Path(rundir) / "engine.sock")
        server = await loop.create_unix_server(lambda: _Connection(template, ready).protocol, path)
        front = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "engine.serving.front", "--link", path,
            "--host", "127.0.0.1", "--port", str(port), "--max-request-bytes", str(4 << 20),
        )  # fmt: skip
        await asyncio.wait_for(ready.wait(), 60)
        print(f"link floor listening on 127.0.0.1:{port}", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        front.terminate()
        await front.wait()
        server.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=50062)
    asyncio.run(serve(p.parse_args().port))


if __name__ == "__main__":
    main()
