"""What every command that calls a running engine shares: its credentials options and a
channel that sends them."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

TOKEN_FILE = Path(".ordersight/token")
"""Where `make run` keeps its local token; client commands use it when given none."""


def client_options(s: argparse.ArgumentParser) -> None:
    """The credentials of a command that calls a running engine."""
    s.add_argument("--token", help="bearer token (default: $ORDERSIGHT_TOKEN, .ordersight/token)")
    s.add_argument("--tls-ca", help="PEM CA that signed the engine's certificate: connect with TLS")
    s.add_argument("--tls-cert", help="PEM client certificate (mutual TLS; its OU roles count)")
    s.add_argument("--tls-key", help="PEM key of --tls-cert")


def channel(args: argparse.Namespace) -> Any:
    """A channel to `--addr` that sends the token (`--token`, else $ORDERSIGHT_TOKEN, else
    TOKEN_FILE when it exists) as `authorization: Bearer` metadata on every call."""
    import grpc

    token = args.token or os.environ.get("ORDERSIGHT_TOKEN", "")
    if not token and TOKEN_FILE.is_file():
        token = TOKEN_FILE.read_text().strip()
    if args.tls_ca or args.tls_cert:

        def read(path: str | None) -> bytes | None:
            return Path(path).read_bytes() if path else None

        creds = grpc.ssl_channel_credentials(
            read(args.tls_ca), read(args.tls_key), read(args.tls_cert)
        )
        channel = grpc.secure_channel(args.addr, creds)
    else:
        channel = grpc.insecure_channel(args.addr)
    if not token:
        return channel
    header = ("authorization", f"Bearer {token}")

    class Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
        def _with(self, details: Any) -> Any:
            return details._replace(metadata=[*(details.metadata or ()), header])

        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            return continuation(self._with(details), request)

        def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
            return continuation(self._with(details), request)

    return grpc.intercept_channel(channel, Bearer())
