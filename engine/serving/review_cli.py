"""`ordersight reviews list|show|resolve`: the review queue of a running engine, over gRPC
(`ordersight.v1.Reviews`; the token needs the `review` role)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from engine.client import client_options as _client_options

    s = sub.add_parser("reviews", help="list, show or resolve a running engine's review cases")
    inner = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--addr", default="127.0.0.1:50051", help="engine address (host:port)")
    common.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    _client_options(common)
    ls = inner.add_parser("list", parents=[common], help="cases, oldest first")
    ls.add_argument("--status", choices=("open", "resolved", "all"), default="open")
    ls.add_argument("--trigger", default="", help="only cases with this review trigger")
    ls.add_argument("--channel", default="", help="only orders of this channel")
    ls.add_argument("--min-amount", type=float, default=0.0, help="amount at least (major units)")
    ls.add_argument("--max-amount", type=float, default=0.0, help="amount at most (0: no bound)")
    ls.add_argument("--min-age", type=int, default=0, help="open at least this many seconds")
    ls.add_argument("-n", type=int, default=50, help="cases to show (default 50)")
    show = inner.add_parser("show", parents=[common], help="one case, with its reasons and facts")
    show.add_argument("order_id")
    res = inner.add_parser("resolve", parents=[common], help="give a case its verdict")
    res.add_argument("order_id")
    res.add_argument("--verdict", required=True, choices=("fraud", "legitimate"))
    res.add_argument("--reviewer", required=True, help="who decided (kept with the verdict)")
    res.add_argument("--note", default="", help="why (at most 2,000 characters)")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import grpc
    from ordersight.v1 import risk_pb2 as pb
    from ordersight.v1 import risk_pb2_grpc as pb_grpc

    from engine.client import channel as _channel

    with _channel(args) as channel:
        stub = pb_grpc.ReviewsStub(channel)
        try:
            if args.action == "list":
                return _list(stub, args, pb)
            if args.action == "show":
                got = stub.GetReview(
                    pb.GetReviewRequest(order_id=args.order_id), timeout=args.timeout
                )
                _show(got, pb)
                return 0
            verdict = pb.FRAUD if args.verdict == "fraud" else pb.LEGITIMATE
            got = stub.ResolveReview(
                pb.ResolveReviewRequest(
                    order_id=args.order_id, verdict=verdict, reviewer=args.reviewer, note=args.note
                ),
                timeout=args.timeout,
            )
            print(f"{got.order_id}: resolved {pb.Verdict.Name(got.verdict)} by {got.reviewer}")
            return 0
        except grpc.RpcError as exc:
            print(f"ordersight reviews: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1


def _list(stub: Any, args: argparse.Namespace, pb: Any) -> int:
    if args.n < 1:
        print("ordersight reviews: error: -n: must be at least 1", file=sys.stderr)
        return 2
    token, shown, depth = "", 0, 0
    head = ("order_id", "opened (UTC)", "amount", "channel", "score")
    print(f"{head[0]:<24} {head[1]:<20} {head[2]:>12} {head[3]:<12} {head[4]:>6}  triggers")
    while shown < args.n:
        page = stub.ListReviews(
            pb.ListReviewsRequest(
                status=args.status, trigger=args.trigger, channel=args.channel,
                min_amount=args.min_amount, max_amount=args.max_amount, min_age_s=args.min_age,
                page_size=min(args.n - shown, 500), page_token=token,
            ),
            timeout=args.timeout,
        )  # fmt: skip
        depth = page.open
        for c in page.cases:
            when = c.opened_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
            amount = f"{c.amount:,.2f} {c.currency}"
            print(
                f"{c.order_id:<24} {when:<20} {amount:>12} {c.channel:<12} {c.score:>6.3f}  "
                f"{','.join(c.review_triggers) or '-'}"
            )
            shown += 1
        token = page.next_page_token
        if not token:
            break
    print(f"{shown} shown; {depth} open in the queue")
    return 0


def _show(c: Any, pb: Any) -> None:
    print(f"order {c.order_id} (customer {c.customer_id}), {c.status}")
    print(f"  amount {c.amount:,.2f} {c.currency}, channel {c.channel or '-'}")
    print(f"  created {c.created_at.ToJsonString()}, opened {c.opened_at.ToJsonString()}")
    print(f"  score {c.score:.3f} by {pb.Path.Name(c.path)} ({c.model_version})")
    print(f"  triggers: {', '.join(c.review_triggers) or 'none'}")
    print("  reasons:")
    for r in c.reasons:
        print(f"    {r.contribution:+.2f}  {r.message}  [{r.code}]")
    print("  facts:")
    for f in c.facts:
        print(f"    {f.name}: {f.value:g}")
    if c.status == "resolved":
        at = c.resolved_at.ToJsonString()
        print(f"  verdict {pb.Verdict.Name(c.verdict)} by {c.reviewer} at {at}")
        if c.note:
            print(f"  note: {c.note}")
