"""`ordersight score|alerts|models`: commands that call a running engine over gRPC."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from engine.client import channel as _channel
from engine.client import client_options as _client_options
from engine.errors import InvalidInput


def _score(args: argparse.Namespace) -> int:
    import grpc
    from google.protobuf import json_format
    from ordersight.v1 import risk_pb2 as pb
    from ordersight.v1 import risk_pb2_grpc as pb_grpc

    try:
        data = json.loads(Path(args.file).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{args.file}: {exc}", "file") from exc
    items = data if isinstance(data, list) else [data]
    try:
        orders = [json_format.ParseDict(o, pb.Order()) for o in items]
    except json_format.ParseError as exc:
        raise InvalidInput(f"{args.file}: {exc}", "file") from exc
    with _channel(args) as channel:
        stub = pb_grpc.OrderRiskStub(channel)
        for o in orders:
            try:
                d = stub.Score(o, timeout=args.timeout)
            except grpc.RpcError as exc:
                print(f"{o.order_id}: {exc.code().name}: {exc.details()}", file=sys.stderr)
                return 1
            print(json_format.MessageToJson(d, indent=2))
    return 0


def _alerts(args: argparse.Namespace) -> int:
    import grpc
    from google.protobuf import json_format
    from ordersight.v1 import risk_pb2 as pb
    from ordersight.v1 import risk_pb2_grpc as pb_grpc

    def show(a: pb.Alert) -> None:
        state = f"resolved {a.end.ToJsonString()}" if a.HasField("end") else "open"
        print(
            f"{a.severity.upper():8s} {a.kind:5s} {a.series}  since {a.start.ToJsonString()} "
            f"({state}): {a.explanation}",
            flush=True,
        )
        if args.json:
            print(json_format.MessageToJson(a, indent=None), flush=True)

    with _channel(args) as channel:
        stub = pb_grpc.OrderRiskStub(channel)
        try:
            if args.follow:
                for a in stub.WatchAlerts(pb.WatchAlertsRequest(include_active=True)):
                    show(a)
            else:
                alerts = stub.ListAlerts(pb.ListAlertsRequest(), timeout=args.timeout).alerts
                for a in alerts:
                    show(a)
                if not alerts:
                    print("no open alerts")
        except grpc.RpcError as exc:
            print(f"{exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 0
    return 0


def _models(args: argparse.Namespace) -> int:
    import grpc
    from ordersight.v1 import risk_pb2 as pb
    from ordersight.v1 import risk_pb2_grpc as pb_grpc

    def when(ts: Any) -> str:
        return str(ts.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ"))

    def show(s: pb.ModelStatus) -> None:
        print(f"champion {s.champion}  ({s.champion_path}, since {when(s.loaded_since)})")
        print(f"previous {s.previous or '-'}")
        print(f"swaps {s.swaps}; parity max error {s.parity_max_error:.1e}")
        if s.challenger:
            print(
                f"challenger {s.challenger}: {s.challenger_decisions:,} orders decided, "
                f"{s.challenger_dropped:,} dropped, {s.challenger_agreement:.2%} same action"
            )
        print(f"velocity state: {s.state_bytes / 2**20:,.0f} MiB, {s.state_orders:,} orders seen")
        for p in s.problems:
            print(f"problem: {p}")

    with _channel(args) as channel:
        stub = pb_grpc.ModelAdminStub(channel)
        try:
            if args.action == "list":
                listed = stub.ListModels(pb.ListModelsRequest(), timeout=args.timeout)
                print(f"registry {listed.registry}  (* champion, < previous)")
                for m in listed.models:
                    mark = "*" if m.champion else "<" if m.previous else " "
                    made = when(m.created_at) if m.HasField("created_at") else "-"
                    line = f"{mark} {m.version or '?':24s} {Path(m.path).name:16s} {made}"
                    if m.problem:
                        line += f"  unusable: {m.problem}"
                    else:
                        line += f"  AUC {m.tier2_auc:.4f}  AP {m.tier2_average_precision:.4f}"
                    print(line)
            elif args.action == "status":
                show(stub.GetStatus(pb.GetModelStatusRequest(), timeout=args.timeout))
            elif args.action == "challenger" and args.clear:
                show(stub.ClearChallenger(pb.ClearChallengerRequest(), timeout=args.timeout))
            elif args.action in ("load", "challenger"):
                if bool(args.version) == bool(args.path):
                    print(
                        f"ordersight models {args.action}: give a VERSION or --path",
                        file=sys.stderr,
                    )
                    return 2
                req = (
                    pb.LoadModelRequest(path=str(Path(args.path).resolve()))
                    if args.path
                    else pb.LoadModelRequest(version=args.version)
                )
                call = stub.LoadModel if args.action == "load" else stub.SetChallenger
                show(call(req, timeout=args.timeout))
            else:
                show(stub.Rollback(pb.RollbackRequest(), timeout=args.timeout))
        except grpc.RpcError as exc:
            print(f"{exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    s = sub.add_parser("alerts", help="list (or --follow) a running engine's operational alerts")
    s.add_argument("--addr", default="127.0.0.1:50051")
    s.add_argument("--follow", action="store_true", help="stream alerts as they change")
    s.add_argument("--json", action="store_true", help="also print each alert as JSON")
    s.add_argument("--timeout", type=float, default=5.0)
    _client_options(s)
    s.set_defaults(func=_alerts)

    s = sub.add_parser("score", help="score orders from a JSON file against a running engine")
    s.add_argument("--addr", default="127.0.0.1:50051")
    s.add_argument("--timeout", type=float, default=5.0)
    s.add_argument("file", help="one Order or a list of Orders, protobuf JSON")
    _client_options(s)
    s.set_defaults(func=_score)
    s = sub.add_parser("models", help="list, inspect, load or roll back a running engine's models")
    s.add_argument("action", choices=("list", "status", "load", "rollback", "challenger"))
    s.add_argument(
        "version", nargs="?", help="load, challenger: a version or folder name in the registry"
    )
    s.add_argument("--path", help="load, challenger: a model folder the engine can read, instead")
    s.add_argument("--clear", action="store_true", help="challenger: stop shadowing")
    s.add_argument("--addr", default="127.0.0.1:50051")
    s.add_argument(
        "--timeout", type=float, default=120.0, help="seconds (a load verifies and warms)"
    )
    _client_options(s)
    s.set_defaults(func=_models)
