"""Stable 64-bit keys for strings: keyed SipHash-2-4 for the entity columns, FNV-1a for
countries.

Entity values (customer id, device, card fingerprint, IP, e-mail domain, shipping address)
become keys of the velocity state, the snapshot and the decision log's replay record, so a
key must not give its value back: an unkeyed hash of an IP address or an e-mail domain is
undone by hashing every candidate. Entity keys are therefore SipHash-2-4 (Aumasson and
Bernstein's keyed PRF for short inputs) under a 128-bit key derived from the configured
secret with HMAC-SHA256 (`set_secret`). The derivation is HMAC, once at start-up; the
per-field hash is SipHash, built for short inputs and still a PRF under its key, because
HMAC-SHA256 takes four SHA-256 compressions for each of six fields of every order on the
Score path. The column's salt is the
message's first 8-byte word (little-endian), so equal strings in different columns get
unrelated keys. Pairs (customer+device, customer+card) are mixed from their two entity keys.

Countries (billing, shipping, IP country) keep the unkeyed FNV-1a with a splitmix64
finaliser: they are ISO 3166 codes, compared with each other only (the mismatch features),
one of some 250 values whatever the hash, and not personal data on their own.

The key lives in `KEY`, a uint64[2] array that the encoder's plan hands to the kernel, so
the kernel reads the key at call time and Numba's cache holds no key. With no secret
configured `KEY` holds a fixed public key (`PUBLIC_SECRET`): keys are then stable but not
secret (the server warns). The same string gives the same key in every process under one
secret (Python's `hash` is salted per process and would break training/serving parity);
models depend only on which keys are equal, never on their values, so they are trained
under any key. 0 is reserved for an unknown (empty) value. See docs/SECURITY.md.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.jit import njit, njit_inline
from engine.orders.schema import ENTITY_COLUMNS, PAIRS

log = logging.getLogger(__name__)

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
ENTITY_SALTS = np.array([j + 1 for j in range(len(ENTITY_COLUMNS))], np.uint64)
COUNTRY_SALT = 0
PAIR_SALTS = np.array([100 + p for p in range(len(PAIRS))], np.uint64)

PUBLIC_SECRET = b"ordersight: the public entity key, not a secret"
"""The secret of the default key, used when none is configured: written here, so anyone
can recompute keys under it."""
MIN_SECRET_BYTES = 16
_KEY_LABEL = b"ordersight entity keys v1"
_ID_LABEL = b"ordersight key id"

KEY = np.zeros(2, np.uint64)
"""k0, k1 of the entity keys' SipHash: read by the encoder at every call (`set_secret`)."""
_state = {"key_id": "", "public": True}


def derive_key(secret: bytes) -> tuple[int, int]:
    """SipHash's (k0, k1): the first 16 bytes of HMAC-SHA256(secret, label), little-endian."""
    d = hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()
    return int.from_bytes(d[:8], "little"), int.from_bytes(d[8:16], "little")


def key_id_of(secret: bytes) -> str:
    """A name for the key that does not give it away: the first 8 bytes of
    HMAC-SHA256(secret, "ordersight key id"), hex. Snapshots and log segments record it."""
    return hmac.new(secret, _ID_LABEL, hashlib.sha256).digest()[:8].hex()


def set_secret(secret: bytes | None) -> None:
    """Key every entity key from now on by `secret` (None: the public key). Call before
    anything is encoded: keys made under another secret never match."""
    if secret is not None and len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"the hash secret is {len(secret)} bytes, at least {MIN_SECRET_BYTES} are needed "
            "(make one with: head -c 32 /dev/urandom | base64)"
        )
    s = PUBLIC_SECRET if secret is None else secret
    KEY[:] = np.array(derive_key(s), np.uint64)
    _state["key_id"], _state["public"] = key_id_of(s), secret is None


def key_id() -> str:
    """The id of the key in use (`key_id_of` its secret)."""
    return str(_state["key_id"])


def is_public() -> bool:
    """Whether the key in use is the public default (no secret configured)."""
    return bool(_state["public"])


def read_secret(secret: str = "", secret_file: str = "") -> bytes | None:
    """The configured secret: the content of `secret_file` when given (surrounding
    whitespace stripped), else `secret`, else None. The file should be readable by its
    owner only: a warning says when it is not. Nothing here logs the secret."""
    if secret_file:
        path = Path(secret_file)
        try:
            data = path.read_bytes().strip()
            mode = path.stat().st_mode
        except OSError as exc:
            raise ValueError(f"hash_secret_file {path}: {exc.strerror or exc}") from exc
        if not data:
            raise ValueError(f"hash_secret_file {path} is empty")
        if secret:
            log.warning("hash_secret_file and hash_secret both set: the file's secret is used")
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "hash_secret_file %s is readable by others (mode %o): chmod 600 it",
                path, stat.S_IMODE(mode),
            )  # fmt: skip
        return data
    if secret:
        return secret.strip().encode()
    return None


set_secret(None)


@njit_inline
def mix64(x):
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@njit_inline
def fnv(buf, lo, hi, salt):
    """Unkeyed key of buf[lo:hi] (countries): 0 for empty, never 0 otherwise."""
    if hi == lo:
        return np.uint64(0)
    h = FNV_OFFSET ^ np.uint64(salt)
    for j in range(lo, hi):
        h = (h ^ np.uint64(buf[j])) * FNV_PRIME
    h = mix64(h)
    return h if h != 0 else np.uint64(1)


@njit_inline
def _rotl(x, b):
    return (x << np.uint64(b)) | (x >> np.uint64(64 - b))


@njit_inline
def _round(v0, v1, v2, v3):
    """One SipRound."""
    v0 += v1
    v1 = _rotl(v1, 13) ^ v0
    v0 = _rotl(v0, 32)
    v2 += v3
    v3 = _rotl(v3, 16) ^ v2
    v0 += v3
    v3 = _rotl(v3, 21) ^ v0
    v2 += v1
    v1 = _rotl(v1, 17) ^ v2
    v2 = _rotl(v2, 32)
    return v0, v1, v2, v3


@njit_inline
def _compress(v0, v1, v2, v3, m):
    """Absorb one message word: two SipRounds (the "2" of SipHash-2-4)."""
    v3 ^= m
    v0, v1, v2, v3 = _round(v0, v1, v2, v3)
    v0, v1, v2, v3 = _round(v0, v1, v2, v3)
    return v0 ^ m, v1, v2, v3


@njit_inline
def _word(buf, j):
    """buf[j:j+8] as a little-endian word (LLVM makes it one load)."""
    return (
        np.uint64(buf[j])
        | (np.uint64(buf[j + 1]) << np.uint64(8))
        | (np.uint64(buf[j + 2]) << np.uint64(16))
        | (np.uint64(buf[j + 3]) << np.uint64(24))
        | (np.uint64(buf[j + 4]) << np.uint64(32))
        | (np.uint64(buf[j + 5]) << np.uint64(40))
        | (np.uint64(buf[j + 6]) << np.uint64(48))
        | (np.uint64(buf[j + 7]) << np.uint64(56))
    )


@njit_inline
def siphash24(k0, k1, prefix, n_prefix, buf, lo, hi):
    """SipHash-2-4 under (k0, k1) of `n_prefix` (0 or 1) little-endian words `prefix`
    followed by buf[lo:hi]."""
    v0 = k0 ^ np.uint64(0x736F6D6570736575)
    v1 = k1 ^ np.uint64(0x646F72616E646F6D)
    v2 = k0 ^ np.uint64(0x6C7967656E657261)
    v3 = k1 ^ np.uint64(0x7465646279746573)
    if n_prefix:
        v0, v1, v2, v3 = _compress(v0, v1, v2, v3, prefix)
    n = hi - lo
    end = lo + (n // 8) * 8
    for j in range(lo, end, 8):
        v0, v1, v2, v3 = _compress(v0, v1, v2, v3, _word(buf, j))
    b = np.uint64((8 * n_prefix + n) & 0xFF) << np.uint64(56)
    for k in range(hi - end):
        b |= np.uint64(buf[end + k]) << np.uint64(8 * k)
    v0, v1, v2, v3 = _compress(v0, v1, v2, v3, b)
    v2 ^= np.uint64(0xFF)
    for _ in range(4):  # the "4": finalization rounds
        v0, v1, v2, v3 = _round(v0, v1, v2, v3)
    return v0 ^ v1 ^ v2 ^ v3


@njit_inline
def entity_key(k0, k1, buf, lo, hi, salt):
    """Keyed key of buf[lo:hi] in the column of `salt`, under the key (k0, k1): SipHash-2-4
    of the salt's 8-byte word and the bytes; 0 for empty, never 0 otherwise."""
    if hi == lo:
        return np.uint64(0)
    h = siphash24(k0, k1, np.uint64(salt), 1, buf, lo, hi)
    return h if h != 0 else np.uint64(1)


@njit_inline
def pair_key(a, b, salt):
    """Key of a pair of keys (0 when either is unknown)."""
    if a == 0 or b == 0:
        return np.uint64(0)
    h = mix64(a ^ mix64(b ^ salt))
    return h if h != 0 else np.uint64(1)


@njit
def _hash_spans(key, buf, starts, ends, salt, out):
    k0, k1 = key[0], key[1]
    for i in range(out.shape[0]):
        out[i] = entity_key(k0, k1, buf, starts[i], ends[i], salt)


@njit
def _siphash_bytes(k0, k1, buf):
    return siphash24(k0, k1, np.uint64(0), 0, buf, 0, buf.shape[0])


def siphash(key: bytes, data: bytes) -> int:
    """Plain SipHash-2-4 of `data` under a 16-byte key, by the kernel the encoder inlines
    (for the reference test vectors)."""
    k0, k1 = int.from_bytes(key[:8], "little"), int.from_bytes(key[8:16], "little")
    buf = np.frombuffer(data or b"\0", np.uint8)[: len(data)]
    return int(_siphash_bytes(np.uint64(k0), np.uint64(k1), buf))


def hash_values(values: Sequence[str | None], salt: int = 0) -> np.ndarray:
    """Entity keys of Python strings in the column of `salt` (None and "" are unknown, 0),
    under the current key, as the codecs compute them."""
    raw = [v.encode() if v else b"" for v in values]
    ends = np.cumsum([len(b) for b in raw], dtype=np.int64)
    starts = ends - np.array([len(b) for b in raw], np.int64)
    out = np.empty(len(raw), np.uint64)
    _hash_spans(KEY, np.frombuffer(b"".join(raw) or b"\0", np.uint8), starts, ends, salt, out)
    return out
