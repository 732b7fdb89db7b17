"""TLS and mutual TLS on a real server, with certificates made in a fixture: the gRPC port
(fronts and one process) and the metrics port, client certificates carrying roles, and
reflection off by default once TLS is on."""

from __future__ import annotations

import socket
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from ordersight.v1 import risk_pb2 as pb
from ordersight.v1 import risk_pb2_grpc as pb_grpc

from engine.cli import main
from engine.config import load_settings
from engine.serving.auth import hash_token, new_token
from engine.serving.server import Server
from tests.certs import Authority, Pem
from tests.grpc_harness import TIMEOUT_S, RunningServer, rpc_error, simple_order

ADMIN = new_token()
TOKENS = [{"name": "ops", "sha256": hash_token(ADMIN), "roles": ["admin"]}]
LAYOUTS = pytest.mark.parametrize("single_process", [False, True], ids=["fronts", "one_process"])


class Certs:
    def __init__(self, folder: Path) -> None:
        self.ca = Authority(folder)
        self.server = self.ca.issue("server", "localhost", server=True)
        self.scorer = self.ca.issue("scorer", "checkout-1", ("score",))
        self.nobody = self.ca.issue("nobody", "no-roles")
        other = folder / "other"
        other.mkdir()
        self.stranger = Authority(other, "Another CA").issue("stranger", "c-2", ("score", "admin"))

    def settings(self, mutual: bool) -> dict[str, str]:
        out = {"tls_cert": str(self.server.cert), "tls_key": str(self.server.key)}
        if mutual:
            out["tls_client_ca"] = str(self.ca.pem.cert)
        return out

    def client(self, who: Pem | None = None) -> grpc.ChannelCredentials:
        ca = self.ca.pem.cert.read_bytes()
        if who is None:
            return grpc.ssl_channel_credentials(ca)
        return grpc.ssl_channel_credentials(ca, who.key.read_bytes(), who.cert.read_bytes())


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("tls"))


def _start(models_dir: Path, creds: grpc.ChannelCredentials, **settings: object) -> RunningServer:
    return RunningServer(models_dir, credentials=creds, **settings).start()


def _health(channel: grpc.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S).status


@LAYOUTS
def test_tls_serves_encrypted_and_refuses_plaintext(
    models_dir: Path, certs: Certs, single_process: bool
) -> None:
    srv = _start(models_dir, certs.client(), single_process=single_process,
                 **certs.settings(mutual=False))  # fmt: skip
    try:
        assert srv.stub.Score(simple_order("tls-1"), timeout=TIMEOUT_S).order_id == "tls-1"
        assert _health(srv.channel) == health_pb2.HealthCheckResponse.SERVING
        with grpc.insecure_channel(f"127.0.0.1:{srv.port}") as plain:
            err = rpc_error(lambda: pb_grpc.OrderRiskStub(plain).Score(simple_order(), timeout=5))
            assert err.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as info:  # reflection: off by default with TLS
            ProtoReflectionDescriptorDatabase(srv.channel).get_services()
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        srv.stop()


def test_reflection_can_be_turned_on_with_tls(models_dir: Path, certs: Certs) -> None:
    srv = _start(models_dir, certs.client(), reflection="on", **certs.settings(mutual=False))
    try:
        services = ProtoReflectionDescriptorDatabase(srv.channel).get_services()
        assert "ordersight.v1.OrderRisk" in services
    finally:
        srv.stop()


@LAYOUTS
def test_mutual_tls_takes_roles_from_the_client_certificate(
    models_dir: Path, certs: Certs, single_process: bool
) -> None:
    srv = _start(models_dir, certs.client(certs.scorer), tokens=TOKENS,
                 single_process=single_process, **certs.settings(mutual=True))  # fmt: skip
    target = f"127.0.0.1:{srv.port}"
    try:
        # OU=score: Score without a token; an admin method is refused, naming the certificate
        assert srv.stub.Score(simple_order("m-1"), timeout=TIMEOUT_S).order_id == "m-1"
        admin = pb_grpc.ModelAdminStub(srv.channel)
        err = rpc_error(lambda: admin.GetStatus(pb.GetModelStatusRequest(), timeout=TIMEOUT_S))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "client certificate 'checkout-1' lacks the role 'admin'" in (err.details() or "")
        # a certificate without roles needs a token; with the admin token it gets admin
        with grpc.secure_channel(target, certs.client(certs.nobody)) as ch:
            stub = pb_grpc.OrderRiskStub(ch)
            err = rpc_error(lambda: stub.Score(simple_order("m-2"), timeout=TIMEOUT_S))
            assert err.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "OU=score|report|admin" in (err.details() or "")
            md = (("authorization", f"Bearer {ADMIN}"),)
            status = pb_grpc.ModelAdminStub(ch).GetStatus(
                pb.GetModelStatusRequest(), metadata=md, timeout=TIMEOUT_S
            )
            assert status.champion
        # no client certificate, or one from another CA: the handshake fails
        for creds in (certs.client(), _other_ca_client(certs)):
            with grpc.secure_channel(target, creds) as ch:
                stub = pb_grpc.OrderRiskStub(ch)
                err = rpc_error(lambda s=stub: s.Score(simple_order("m-3"), timeout=5))
                assert err.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        srv.stop()


def _other_ca_client(certs: Certs) -> grpc.ChannelCredentials:
    s = certs.stranger
    return grpc.ssl_channel_credentials(
        certs.ca.pem.cert.read_bytes(), s.key.read_bytes(), s.cert.read_bytes()
    )


def test_the_metrics_port_speaks_tls_and_wants_a_client_certificate(
    models_dir: Path, certs: Certs
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    srv = _start(models_dir, certs.client(certs.scorer), metrics_port=port,
                 single_process=True, **certs.settings(mutual=True))  # fmt: skip
    url = f"https://127.0.0.1:{port}/metrics"
    try:
        ctx = ssl.create_default_context(cafile=str(certs.ca.pem.cert))
        ctx.load_cert_chain(str(certs.scorer.cert), str(certs.scorer.key))
        text = urllib.request.urlopen(url, context=ctx, timeout=TIMEOUT_S).read().decode()
        assert "ordersight_component_up" in text and "process_resident_memory_bytes" in text
        no_cert = ssl.create_default_context(cafile=str(certs.ca.pem.cert))
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            urllib.request.urlopen(url, context=no_cert, timeout=TIMEOUT_S).read()
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=TIMEOUT_S).read()
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tls_cert": "x.crt"}, "tls_cert and tls_key: set both"),
        ({"tls_client_ca": "ca.crt"}, "tls_client_ca needs tls_cert and tls_key"),
        ({"tls_cert": "/nonexistent.crt", "tls_key": "/nonexistent.key"}, "tls_cert: cannot read"),
        ({"reflection": "maybe"}, "reflection must be auto, on or off"),
    ],
)
def test_a_bad_tls_setting_stops_start_up_naming_it(
    models_dir: Path, settings: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Server(load_settings(env={}, models=str(models_dir), **settings))


def test_a_file_that_is_not_pem_is_named(models_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.crt"
    bad.write_text("not a certificate")
    with pytest.raises(ValueError, match=r"tls_cert: .*bad.crt is not PEM"):
        Server(load_settings(env={}, models=str(models_dir), tls_cert=str(bad), tls_key=str(bad)))


def test_the_cli_connects_with_tls_and_a_client_certificate(
    models_dir: Path,
    certs: Certs,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    example = Path("proto/examples/order.json").resolve()
    monkeypatch.chdir(tmp_path)  # no .ordersight/token here: the certificate is the credential
    monkeypatch.delenv("ORDERSIGHT_TOKEN", raising=False)
    srv = _start(models_dir, certs.client(certs.scorer), tokens=TOKENS,
                 **certs.settings(mutual=True))  # fmt: skip
    try:
        args = ["score", "--addr", f"127.0.0.1:{srv.port}", "--tls-ca", str(certs.ca.pem.cert),
                "--tls-cert", str(certs.scorer.cert), "--tls-key", str(certs.scorer.key),
                str(example)]  # fmt: skip
        assert main(args) == 0
        assert '"orderId": "o-1"' in capsys.readouterr().out
    finally:
        srv.stop()


def test_a_key_that_is_not_the_certificates_is_named(models_dir: Path, certs: Certs) -> None:
    with pytest.raises(ValueError, match="tls_cert and tls_key: .* do not load"):
        Server(
            load_settings(
                env={}, models=str(models_dir), tls_cert=str(certs.server.cert),
                tls_key=str(certs.scorer.key),
            )
        )  # fmt: skip
