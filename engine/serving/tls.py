"""TLS and mutual TLS of the gRPC port (and the metrics port), from PEM files in the config.

`tls_cert` and `tls_key` turn TLS on; `tls_client_ca` also makes every client present a
certificate that chains to that CA (mutual TLS). A client certificate's subject can carry
roles as organizational units (`OU=score`, `OU=report`, `OU=admin`): `cert_roles` reads them
from what gRPC verified, so such a client needs no bearer token (`engine.serving.auth`).

Standard library and grpc only: the front processes terminate TLS with it.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

_RDN = re.compile(r"(?<!\\),")  # RFC 4514 separators (an escaped comma is part of a value)


@dataclass(frozen=True)
class TlsFiles:
    cert: str = ""
    key: str = ""
    client_ca: str = ""

    @property
    def on(self) -> bool:
        return bool(self.cert)

    @property
    def mutual(self) -> bool:
        return bool(self.client_ca)

    def check(self) -> None:
        """ValueError naming the setting when the files do not make a usable setup."""
        if bool(self.cert) != bool(self.key):
            raise ValueError("tls_cert and tls_key: set both (a certificate and its key) or none")
        if self.client_ca and not self.cert:
            raise ValueError("tls_client_ca needs tls_cert and tls_key (mutual TLS is TLS)")
        for name, path in (("tls_cert", self.cert), ("tls_key", self.key),
                           ("tls_client_ca", self.client_ca)):  # fmt: skip
            if path:
                _read(name, path)
        if not self.cert:
            return
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:  # what gRPC would only find at the first handshake, and the metrics port at start
            ctx.load_cert_chain(self.cert, self.key)
        except ssl.SSLError as exc:
            raise ValueError(
                f"tls_cert and tls_key: {self.cert} with {self.key} do not load ({exc.reason}: "
                "a certificate and its own private key, PEM)"
            ) from exc
        if self.client_ca:
            try:
                ctx.load_verify_locations(self.client_ca)
            except ssl.SSLError as exc:
                raise ValueError(f"tls_client_ca: {self.client_ca} does not load ({exc})") from exc

    def args(self) -> list[str]:
        """The same files as a front process's command-line options."""
        out = []
        for flag, path in (("--tls-cert", self.cert), ("--tls-key", self.key),
                           ("--tls-client-ca", self.client_ca)):  # fmt: skip
            if path:
                out += [flag, path]
        return out


def _read(name: str, path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{name}: cannot read {path}: {exc.strerror}") from exc
    if b"-----BEGIN " not in data:
        raise ValueError(f"{name}: {path} is not PEM (no -----BEGIN line)")
    return data


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials | None:
    """gRPC server credentials for `files` (None: plaintext)."""
    if not files.on:
        return None
    files.check()
    return grpc.ssl_server_credentials(
        [(_read("tls_key", files.key), _read("tls_cert", files.cert))],
        root_certificates=_read("tls_client_ca", files.client_ca) if files.mutual else None,
        require_client_auth=files.mutual,
    )


def add_port(server: Any, address: str, files: TlsFiles) -> int:
    """Listen on `address`, with TLS when `files` say so; the port (0 when it failed)."""
    creds = server_credentials(files)
    if creds is None:
        return int(server.add_insecure_port(address))
    return int(server.add_secure_port(address, creds))


def cert_roles(context: grpc.aio.ServicerContext) -> frozenset[str]:
    """The organizational units of the client certificate gRPC verified (none without
    mutual TLS)."""
    subject = context.auth_context().get("x509_subject")
    if not subject:
        return frozenset()
    units = set()
    for rdn in _RDN.split(subject[0].decode("utf-8", "replace")):
        key, _, value = rdn.strip().partition("=")
        if key.upper() == "OU":
            units.add(value)
    return frozenset(units)


def cert_name(context: grpc.aio.ServicerContext) -> str:
    cn = context.auth_context().get("x509_common_name")
    return cn[0].decode("utf-8", "replace") if cn else "?"


def http_ssl_context(tls: TlsFiles) -> ssl.SSLContext | None:
    """The HTTP port's TLS, from the gRPC port's files (None: plaintext); under mutual TLS a
    client must present a certificate that chains to `tls_client_ca`."""
    if not tls.on:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls.cert, tls.key)
    if tls.mutual:
        ctx.load_verify_locations(tls.client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
