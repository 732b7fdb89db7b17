"""Entity keys: SipHash-2-4 against the reference vectors, keyed by the configured secret
(two secrets, two sets of keys; one secret, the same keys in any process), the oracle's
independent implementation, and how the secret is read."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from ordersight.v1 import risk_pb2 as pb

from engine.codec import order_decoder
from engine.config import load_settings
from engine.orders import hashing
from engine.orders.arrays import OrderArrays
from engine.orders.batch import OrderRules
from engine.orders.schema import ENTITY_COLUMNS, ENTITY_KINDS
from tests import oracle

# SipHash-2-4 with key 00 01 .. 0f of the messages 00 01 .. (n-1), n = 0..63: the 64-bit
# outputs as little-endian bytes, as `vectors.h` of the reference implementation (and the
# paper's appendix, n = 15: a129ca6149be45e5) gives them. Checked against the reference C
# implementation (the `siphash24` PyPI package) when they were written down.
VECTORS = (
    "310e0edd47db6f72",
    "fd67dc93c539f874",
    "5a4fa9d909806c0d",
    "2d7efbd796666785",
    "b7877127e09427cf",
    "8da699cd64557618",
    "cee3fe586e46c9cb",
    "37d1018bf50002ab",
    "6224939a79f5f593",
    "b0e4a90bdf82009e",
    "f3b9dd94c5bb5d7a",
    "a7ad6b22462fb3f4",
    "fbe50e86bc8f1e75",
    "903d84c02756ea14",
    "eef27a8e90ca23f7",
    "e545be4961ca29a1",
    "db9bc2577fcc2a3f",
    "9447be2cf5e99a69",
    "9cd38d96f0b3c14b",
    "bd6179a71dc96dbb",
    "98eea21af25cd6be",
    "c7673b2eb0cbf2d0",
    "883ea3e395675393",
    "c8ce5ccd8c030ca8",
    "94af49f6c650adb8",
    "eab8858ade92e1bc",
    "f315bb5bb835d817",
    "adcf6b0763612e2f",
    "a5c91da7acaa4dde",
    "716595876650a2a6",
    "28ef495c53a387ad",
    "42c341d8fa92d832",
    "ce7cf2722f512771",
    "e37859f94623f3a7",
    "381205bb1ab0e012",
    "ae97a10fd434e015",
    "b4a31508beff4d31",
    "81396229f0907902",
    "4d0cf49ee5d4dcca",
    "5c73336a76d8bf9a",
    "d0a704536ba93e0e",
    "925958fcd6420cad",
    "a915c29bc8067318",
    "952b79f3bc0aa6d4",
    "f21df2e41d4535f9",
    "87577519048f53a9",
    "10a56cf5dfcd9adb",
    "eb75095ccd986cd0",
    "51a9cb9ecba312e6",
    "96afadfc2ce666c7",
    "72fe52975a4364ee",
    "5a1645b276d592a1",
    "b274cb8ebf87870a",
    "6f9bb4203de7b381",
    "eaecb2a30b22a87f",
    "9924a43cc1315724",
    "bd838d3aafbf8db7",
    "0b1a2a3265d51aea",
    "135079a3231ce660",
    "932b2846e4d70666",
    "e1915f5cb1eca46c",
    "f325965ca16d629f",
    "575ff28e60381be5",
    "724506eb4c328a95",
)

REF_KEY = bytes(range(16))
SECRET_A = b"a-secret-of-32-bytes-for-tests-a"
SECRET_B = b"a-secret-of-32-bytes-for-tests-b"


@pytest.fixture(autouse=True)
def public_key_after() -> Iterator[None]:
    """The key is process-wide: every test here leaves the public one behind."""
    yield
    hashing.set_secret(None)


def test_siphash_matches_the_reference_vectors() -> None:
    assert len(VECTORS) == 64
    k0, k1 = int.from_bytes(REF_KEY[:8], "little"), int.from_bytes(REF_KEY[8:], "little")
    for n, want in enumerate(VECTORS):
        msg = bytes(range(n))
        assert hashing.siphash(REF_KEY, msg).to_bytes(8, "little").hex() == want, n
        assert oracle.siphash24(k0, k1, msg).to_bytes(8, "little").hex() == want, n


def test_the_kernel_and_the_oracle_agree_on_any_input() -> None:
    rng = np.random.default_rng(5)
    for _ in range(300):
        key = rng.bytes(16)
        msg = rng.bytes(int(rng.integers(0, 80)))
        k0, k1 = int.from_bytes(key[:8], "little"), int.from_bytes(key[8:], "little")
        assert hashing.siphash(key, msg) == oracle.siphash24(k0, k1, msg)


def test_an_entity_key_is_siphash_of_the_salt_word_and_the_value() -> None:
    hashing.set_secret(SECRET_A)
    key = oracle.derive_key(SECRET_A)
    values = ["203.0.113.7", "example.org", "", None, "é" * 9, "x" * 23]
    for salt in (1, 4, 5):
        got = hashing.hash_values(values, salt=salt).tolist()
        assert got == [oracle.entity_key(v or "", salt, key) for v in values]
    assert got[2] == 0 and got[3] == 0  # 0 stays reserved for unknown


def test_the_default_key_is_the_documented_public_one() -> None:
    hashing.set_secret(None)
    assert hashing.is_public()
    assert oracle.current_key() == oracle.derive_key(hashing.PUBLIC_SECRET)
    assert hashing.key_id() == hashing.key_id_of(hashing.PUBLIC_SECRET)


def _order(i: int, ip: str, domain: str) -> pb.Order:
    o = pb.Order(order_id=f"o-{i}", customer_id=f"c-{i % 3}", amount_minor=500, currency="EUR",
                 ip=ip, device_id=f"d-{i}", ip_country="DE")  # fmt: skip
    o.created_at.FromSeconds(1_769_947_200 + i)
    o.customer.email_domain = domain
    o.payment.card_fingerprint = f"card-{i % 2}"
    o.payment.billing_country = "DE"
    o.shipping.address_fingerprint = f"addr-{i}"
    o.shipping.country = "FR"
    return o


def _encode(orders: list[pb.Order]) -> OrderArrays:
    cols = order_decoder.decode_orders([o.SerializeToString() for o in orders])
    batch = OrderRules().check(cols, float("inf"))
    assert batch.ok.all()
    return batch.arrays


def test_keys_differ_under_two_secrets_and_match_under_one() -> None:
    orders = [_order(i, f"198.51.100.{i}", f"shop{i % 2}.example") for i in range(6)]
    hashing.set_secret(SECRET_A)
    a = _encode(orders)
    want = oracle.encode_orders(orders, oracle.derive_key(SECRET_A))
    np.testing.assert_array_equal(a.keys, want["keys"])
    hashing.set_secret(SECRET_B)
    b = _encode(orders)
    hashing.set_secret(SECRET_A)
    again = _encode(orders)
    np.testing.assert_array_equal(again.keys, a.keys)  # the kernel reads the key at each call
    assert a.keys.shape[1] == len(ENTITY_KINDS)
    # Every entity and pair key changes with the secret; equal values stay equal keys.
    assert (a.keys != b.keys).all()
    for keys in (a.keys, b.keys):
        assert keys[0, 0] == keys[3, 0] and keys[0, 0] != keys[1, 0]  # customer c-0
    # Countries are not keyed (compared only): the same under both.
    np.testing.assert_array_equal(a.billing_country, b.billing_country)
    assert a.billing_country[0] == oracle.fnv("DE")
    assert hashing.key_id_of(SECRET_A) != hashing.key_id_of(SECRET_B)


def test_entity_keys_of_equal_values_in_two_columns_differ() -> None:
    hashing.set_secret(SECRET_A)
    salts = [int(s) for s in hashing.ENTITY_SALTS]
    assert len(set(salts)) == len(ENTITY_COLUMNS)
    keys = {int(hashing.hash_values(["same"], salt=s)[0]) for s in salts}
    assert len(keys) == len(salts)


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 are needed"):
        hashing.set_secret(b"short")


def test_the_secret_file_wins_and_is_stripped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "hash.secret"
    path.write_bytes(SECRET_A + b"\n")
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING):
        assert hashing.read_secret("", str(path)) == SECRET_A
        assert not caplog.records
        assert hashing.read_secret(SECRET_B.decode(), str(path)) == SECRET_A
    assert "both set" in caplog.text
    assert SECRET_A.decode() not in caplog.text and SECRET_B.decode() not in caplog.text
    assert hashing.read_secret(SECRET_B.decode(), "") == SECRET_B
    assert hashing.read_secret("", "") is None
    path.chmod(0o644)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        hashing.read_secret("", str(path))
    assert "readable by others" in caplog.text
    with pytest.raises(ValueError, match="hash_secret_file .*missing"):
        hashing.read_secret("", str(tmp_path / "missing"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        hashing.read_secret("", str(tmp_path / "empty"))


def test_settings_take_the_secret_from_the_environment_and_never_show_it() -> None:
    s = load_settings(env={"ORDERSIGHT_HASH_SECRET": SECRET_A.decode()})
    assert s.hash_secret == SECRET_A.decode()
    assert SECRET_A.decode() not in repr(s)
    s = load_settings(env={"ORDERSIGHT_HASH_SECRET_FILE": "/run/secrets/h"})
    assert s.hash_secret_file == "/run/secrets/h"
