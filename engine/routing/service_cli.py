"""`ordersight route agent | agent-state | agents | case | complete | assign | show`: the
Routing service of a running engine, over gRPC (`ordersight.v1.Routing`; the token needs the
`route` role). Every verb prints what the engine answered; `--json` prints it as JSON."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

_CLOCK = re.compile(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})")
_DAYS = {"mon-fri": "1111100", "mon-sat": "1111110", "every": "1111111", "weekend": "0000011"}


def _skills(text: str) -> list[tuple[str, int]]:
    out = []
    for part in text.split(","):
        name, _, level = part.strip().partition(":")
        if not name or not level.isdigit():
            raise argparse.ArgumentTypeError(f"--skills: SKILL:LEVEL[,...], not {part!r}")
        out.append((name, int(level)))
    return out


def _shift(text: str) -> tuple[int, int]:
    m = _CLOCK.fullmatch(text.strip())
    if m is None:
        raise argparse.ArgumentTypeError(f"--shift: HH:MM-HH:MM in UTC, not {text!r}")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    return h1 * 60 + m1, h2 * 60 + m2


def _line(text: str) -> tuple[str, str, int, bool]:
    parts = text.split(":")
    if len(parts) not in (3, 4) or not parts[2].isdigit() or parts[3:] not in ([], ["bto"]):
        raise argparse.ArgumentTypeError(f"--line: SKU:CATEGORY:QTY[:bto], not {text!r}")
    return parts[0], parts[1], int(parts[2]), parts[3:] == ["bto"]


def add_verbs(verbs: Any) -> None:
    from engine.client import client_options
    from engine.routing.order_features import TIERS
    from engine.routing.team import PRIORITIES

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--addr", default="127.0.0.1:50051", help="engine address (host:port)")
    common.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    common.add_argument("--json", action="store_true", help="print the answer as JSON")
    client_options(common)

    s = verbs.add_parser("agent", parents=[common], help="add or replace an agent (UpsertAgent)")
    s.add_argument("agent_id")
    s.add_argument("--skills", type=_skills, required=True, help="SKILL:LEVEL[,...], level 1..5")
    s.add_argument("--languages", default="", help="comma-separated ISO 639-1 codes ('' = any)")
    s.add_argument("--capacity", type=int, default=1, help="cases worked at once (default 1)")
    s.add_argument("--shift", type=_shift, help="HH:MM-HH:MM in UTC (default: always)")
    s.add_argument("--days", default="every", help="mon-fri, mon-sat, every, weekend, or 7 digits")
    s.add_argument("--name", default="")
    s.add_argument("--team", default="")
    s.set_defaults(func=run)

    s = verbs.add_parser("agent-state", parents=[common], help="an agent's state (SetAgentState)")
    s.add_argument("agent_id")
    s.add_argument("--state", choices=("available", "away", "offline"))
    s.add_argument("--load", type=int, help="the agent's cases in hand")
    s.set_defaults(func=run)

    s = verbs.add_parser("agents", parents=[common], help="agents, their load and history")
    s.set_defaults(func=run)

    s = verbs.add_parser("case", parents=[common], help="route one case (Route)")
    s.add_argument("case_id")
    s.add_argument("--subject", default="")
    s.add_argument("--body", default="")
    s.add_argument("--category", default="", help="the skill needed, when known (no text model)")
    s.add_argument("--review-order", default="", help="route this order's REVIEW case")
    s.add_argument("--priority", default="", choices=("", *PRIORITIES))
    s.add_argument("--language", default="", help="ISO 639-1 code of the text")
    s.add_argument("--order-id", default="")
    s.add_argument("--customer-id", default="")
    s.add_argument("--tier", default="", choices=("", *TIERS))
    s.add_argument("--customer-orders", type=int, help="the customer's earlier orders")
    s.add_argument("--amount", type=float, default=0.0, help="order value (major units)")
    s.add_argument("--currency", default="")
    s.add_argument("--payment-terms", default="")
    s.add_argument(
        "--line", type=_line, action="append", default=[], help="SKU:CATEGORY:QTY[:bto], repeatable"
    )
    s.set_defaults(func=run)

    s = verbs.add_parser("complete", parents=[common], help="a case's outcome (CompleteCase)")
    s.add_argument("case_id")
    s.add_argument("--handle-s", type=float, required=True, help="seconds worked on it")
    s.add_argument("--quality", type=float, default=1.0, help="0..1 (default 1: right first time)")
    s.add_argument("--rework", action="store_true", help="not resolved: route it again")
    s.set_defaults(func=run)

    s = verbs.add_parser("assign", parents=[common], help="assign the queued backlog (AssignBatch)")
    s.add_argument("--max-cases", type=int, default=0, help="cases solved at once (0 = 500)")
    s.set_defaults(func=run)

    s = verbs.add_parser("show", parents=[common], help="one routed case (GetRoutedCase)")
    s.add_argument("case_id")
    s.set_defaults(func=run)


SERVICE_VERBS = ("agent", "agent-state", "agents", "case", "complete", "assign", "show")


def _request(args: argparse.Namespace, pb: Any) -> tuple[str, Any]:
    verb = args.route_command
    if verb == "agent":
        days = _DAYS.get(args.days, args.days)
        start, end = args.shift or (0, 1440)
        return "UpsertAgent", pb.RoutingAgent(
            agent_id=args.agent_id, name=args.name, team=args.team, capacity=args.capacity,
            skills=[pb.AgentSkill(skill=k, level=v) for k, v in args.skills],
            languages=[x for x in args.languages.split(",") if x],
            shift=pb.AgentShift(start_minute=start, end_minute=end, days=days),
        )  # fmt: skip
    if verb == "agent-state":
        req = pb.SetAgentStateRequest(agent_id=args.agent_id)
        if args.state:
            req.state = pb.AgentState.Value(args.state.upper())
        if args.load is not None:
            req.load = args.load
        return "SetAgentState", req
    if verb == "agents":
        return "ListAgents", pb.ListAgentsRequest()
    if verb == "case":
        case = pb.RoutingCase(
            case_id=args.case_id, subject=args.subject, body=args.body, category=args.category,
            review_order_id=args.review_order, priority=args.priority, language=args.language,
            order_id=args.order_id, customer_id=args.customer_id, customer_tier=args.tier,
            amount=args.amount, currency=args.currency, payment_terms=args.payment_terms,
            lines=[pb.RoutingLine(sku=a, category=b, quantity=q, built_to_order=t)
                   for a, b, q, t in args.line],
        )  # fmt: skip
        if args.customer_orders is not None:
            case.customer_orders = args.customer_orders
        return "Route", pb.RouteRequest(case=case)
    if verb == "complete":
        return "CompleteCase", pb.CompleteCaseRequest(
            case_id=args.case_id, handle_s=args.handle_s, quality=args.quality, rework=args.rework
        )
    if verb == "assign":
        return "AssignBatch", pb.AssignBatchRequest(max_cases=args.max_cases)
    return "GetRoutedCase", pb.GetRoutedCaseRequest(case_id=args.case_id)


def run(args: argparse.Namespace) -> int:
    import grpc
    from google.protobuf.json_format import MessageToJson
    from ordersight.v1 import risk_pb2 as pb
    from ordersight.v1 import risk_pb2_grpc as pb_grpc

    from engine.client import channel as _channel

    method, req = _request(args, pb)
    with _channel(args) as channel:
        try:
            got = getattr(pb_grpc.RoutingStub(channel), method)(req, timeout=args.timeout)
        except grpc.RpcError as exc:
            print(f"ordersight route: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    if args.json:
        print(MessageToJson(got, preserving_proto_field_name=True))
    elif method == "ListAgents":
        _agents(got, pb)
    elif method in ("UpsertAgent", "SetAgentState"):
        _agents(pb.ListAgentsResponse(agents=[got]), pb)
    elif method == "CompleteCase":
        _decision(got.completed)
        if got.HasField("next"):
            print("routed again:")
            _decision(got.next)
    elif method == "AssignBatch":
        for d in got.assigned:
            _decision(d)
        print(f"{len(got.assigned)} assigned; {got.still_queued} still queued")
    else:
        _decision(got)
    return 0


def _decision(d: Any) -> None:
    who = f"agent {d.agent_id}" if d.agent_id else f"queue {d.queue}"
    how = "by" if d.status == "completed" else "to"
    print(f"{d.case_id}: {d.status} {how} {who} ({d.category}, confidence {d.confidence:.2f}, "
          f"priority {d.priority}, routes {d.routes})")  # fmt: skip
    if d.agent_id:
        print(f"  expected handle {d.predicted_handle_s / 60:.0f} min, resolution "
              f"{d.predicted_resolution_s / 60:.0f} min of SLA {d.sla_s / 60:.0f} min, "
              f"breach risk {d.p_sla_breach:.0%}")  # fmt: skip
    for r in d.reasons:
        print(f"  - {r}")


def _agents(got: Any, pb: Any) -> None:
    for a in got.agents:
        skills = ", ".join(f"{s.skill}:{s.level}" for s in a.skills)
        langs = ",".join(a.languages) or "any"
        print(f"{a.agent_id:<16} {pb.AgentState.Name(a.state).lower():<9} load {a.load}/"
              f"{a.capacity}  {langs:<8} {skills}")  # fmt: skip
        for p in a.performance:
            print(f"    {p.category}: {p.cases} cases, median {p.median_handle_s / 60:.0f} min, "
                  f"quality {p.mean_quality:.0%}")  # fmt: skip
    for queue, n in sorted(getattr(got, "queued", {}).items()):
        print(f"queue {queue}: {n} waiting")
