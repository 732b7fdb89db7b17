"""The floor: a bare grpc.aio server answering OrderRisk.Score with a canned Decision.

Same service, same request and a response of the same size as the engine's typical answer,
no work in between: no Python gRPC engine can beat it on this machine.
"""

from __future__ import annotations

import argparse
import asyncio

import grpc
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc


def canned_decision() -> pb.Decision:
    """An APPROVE decision like the engine's for a screened-out order (no reasons)."""
    return pb.Decision(
        order_id="o-000000000123",
        action=pb.APPROVE,
        score=0.0012345678,
        path=pb.SCREENED_OUT,
        model_version="20261130T095840Z",
        latency_us=123,
        raw_score=-6.7,
    )


class Echo(pb_grpc.OrderRiskServicer):
    def __init__(self) -> None:
        self.template = canned_decision()

    async def Score(self, request: pb.Order, context: grpc.aio.ServicerContext) -> pb.Decision:
        d = pb.Decision()
        d.CopyFrom(self.template)
        d.order_id = request.order_id
        return d


async def serve(port: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_OrderRiskServicer_to_server(Echo(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"echo listening on 127.0.0.1:{bound}", flush=True)
    await server.wait_for_termination()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=50061)
    asyncio.run(serve(p.parse_args().port))


if __name__ == "__main__":
    main()
