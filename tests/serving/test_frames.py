"""The front/engine link's frames: every frame arrives whole and in order, however the byte
stream is cut, small bodies and large ones (read into their own buffer) alike."""

from __future__ import annotations

import asyncio
import random
import socket

from engine.serving import frames

SIZES = [0, 1, 17, frames.SCRATCH - frames.HEADER.size, frames.SCRATCH + 5, 3 << 20, 2, 0]


def _payloads() -> list[bytes]:
    rng = random.Random(7)
    return [rng.randbytes(n) for n in SIZES]


def _stream(payloads: list[bytes]) -> bytes:
    return b"".join(
        frames.HEADER.pack(len(p), frames.CALL, i, i % 5, 1.5 * i) + p
        for i, p in enumerate(payloads)
    )


def test_frames_survive_any_cut_of_the_stream() -> None:
    payloads = _payloads()
    stream = _stream(payloads)
    rng = random.Random(11)
    for _ in range(20):
        got: list[tuple] = []
        proto = frames.FrameProtocol(lambda *f, got=got: got.append(f), lambda exc: None)
        at = 0
        while at < len(stream):  # the transport reads what fits, in chunks of any size
            buf = proto.get_buffer(-1)
            n = min(len(buf), rng.choice([1, 3, 20, 1000, 70_000, 1 << 22]), len(stream) - at)
            buf[:n] = stream[at : at + n]
            proto.buffer_updated(n)
            at += n
        assert [bytes(f[4]) for f in got] == payloads
        assert [(f[0], f[1], f[2], f[3]) for f in got] == [
            (frames.CALL, i, i % 5, 1.5 * i) for i in range(len(payloads))
        ]


def test_frames_over_a_real_unix_socket() -> None:
    payloads = _payloads()

    async def main() -> list[bytes]:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        got: list[bytes] = []
        done = loop.create_future()

        def on_frame(kind: int, call: int, code: int, deadline: float, body: frames.Body) -> None:
            got.append(bytes(body))
            if len(got) == len(payloads):
                done.set_result(None)

        _, sender = await loop.create_connection(
            lambda: frames.FrameProtocol(lambda *f: None, lambda exc: None), sock=a
        )
        await loop.create_connection(
            lambda: frames.FrameProtocol(on_frame, lambda exc: None), sock=b
        )
        for i, p in enumerate(payloads):
            sender.send(frames.CALL, i, 0, p)
        await asyncio.wait_for(done, 60)
        sender.close()
        return got

    assert asyncio.run(main()) == payloads
