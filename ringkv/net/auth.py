"""Cluster-secret authentication of an RPC connection: the handshake's logic.

When a cluster secret is set (``[security] secret_file``), a connection to a node's RPC
port carries no request until both ends have shown they know the secret (mutual
challenge-response, docs/decisions.md D32):

    client -> server   request AUTH_HELLO  {"v": 1}
    server -> client   ok                  {"v": 1, "nonce": server_nonce}
    client -> server   request AUTH        {"nonce": client_nonce, "proof": client_proof}
    server -> client   ok                  {"proof": server_proof}

    client_proof = HMAC-SHA256(secret, b"ringkv-auth-v1 client" + server_nonce + client_nonce)
    server_proof = HMAC-SHA256(secret, b"ringkv-auth-v1 server" + server_nonce + client_nonce)

Invariants: the secret itself never crosses the wire; each side contributes a fresh
random nonce, so a recorded handshake cannot be replayed to either side; proofs are
compared in constant time; the two directions use different labels, so a server's proof
cannot be reflected back as a client's. What it does not give: secrecy or integrity of the
requests that follow, nor protection from a man in the middle, who can relay a whole
handshake between a real client and a real node and then read or change the traffic
(that is TLS's job, ringkv.net.tls; see docs/operations.md "Security").

The transport (``ringkv.net.transport``) drives the exchange and makes the nonces; this
module computes and checks, and reads the secret file (its only IO).
"""

from __future__ import annotations

import hashlib
import hmac
import os

from ringkv.errors import ConfigError

AUTH_HELLO = "auth_hello"
AUTH = "auth"
VERSION = 1
NONCE_BYTES = 16
MIN_SECRET_BYTES = 16
SECRET_FILE_ENV = "RINGKV_SECRET_FILE"  # client tools (the CLI) read the secret from here
_CLIENT_LABEL = b"ringkv-auth-v1 client"
_SERVER_LABEL = b"ringkv-auth-v1 server"


def client_proof(secret: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """What the connecting side sends to show it knows ``secret``."""
    return hmac.new(secret, _CLIENT_LABEL + server_nonce + client_nonce, hashlib.sha256).digest()


def server_proof(secret: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """What the accepting side answers to show it knows ``secret`` too."""
    return hmac.new(secret, _SERVER_LABEL + server_nonce + client_nonce, hashlib.sha256).digest()


def valid_nonce(nonce: object) -> bool:
    """A nonce as the handshake requires: NONCE_BYTES bytes."""
    return type(nonce) is bytes and len(nonce) == NONCE_BYTES


def proof_matches(expected: bytes, got: object) -> bool:
    """Constant-time comparison; anything but bytes never matches."""
    return type(got) is bytes and hmac.compare_digest(expected, got)


def check_secret(secret: bytes, field: str = "security.secret_file") -> bytes:
    """``secret`` if it is long enough to be one, else ConfigError."""
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(field, f"the secret has {len(secret)} bytes; use at least "
                                 f"{MIN_SECRET_BYTES} (e.g. `openssl rand -hex 32 > FILE`)")
    return secret


def read_secret_file(path: str, field: str = "security.secret_file") -> bytes:
    """The secret held in the file at ``path`` (surrounding whitespace dropped)."""
    try:
        with open(path, "rb") as f:
            secret = f.read().strip()
    except OSError as exc:
        raise ConfigError(field, f"cannot read {path}: {exc.strerror or exc}") from None
    return check_secret(secret, field)


def secret_from_env() -> bytes | None:
    """The secret named by ``RINGKV_SECRET_FILE``, or None when that is unset or empty."""
    path = os.environ.get(SECRET_FILE_ENV, "")
    return read_secret_file(path, SECRET_FILE_ENV) if path else None


__all__ = ["AUTH_HELLO", "AUTH", "VERSION", "NONCE_BYTES", "MIN_SECRET_BYTES", "SECRET_FILE_ENV",
           "client_proof", "server_proof", "valid_nonce", "proof_matches", "check_secret",
           "read_secret_file", "secret_from_env"]
