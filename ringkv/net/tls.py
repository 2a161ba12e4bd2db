"""TLS for a node's ports and for its clients: the ``ssl`` contexts, built from files.

With ``[security] tls_cert_file``, ``tls_key_file`` and ``tls_ca_file`` set, a node serves
TLS only on its RPC, HTTP and RESP ports (:func:`server_context`) and speaks TLS to its
peers (:func:`client_context`), presenting its own certificate and checking theirs
against the CA (docs/decisions.md D33). Python's ``ssl`` does the protocol; this module
only chooses the settings, so that every port and every client gets the same ones:

- TLS 1.2 or newer, the ``ssl`` module's default ciphers;
- the CA file is the only trust anchor: the system's CA store is never loaded, so a
  certificate some public CA issued does not get into the cluster;
- a client always checks the server's chain against the CA; it checks the host name the
  server was dialed at unless told not to (``check_hostname=False``: certificates that
  name no host, or one shared by every node);
- a server asks for a client certificate when it has a CA; ``require_client_cert``
  makes one mandatory (mutual TLS). Peers always present theirs.

A file that cannot be read or does not hold what it should becomes a ConfigError naming
the field, at start-up rather than at the first connection.
"""

from __future__ import annotations

import os
import ssl

from ringkv.errors import ConfigError

CA_FILE_ENV = "RINGKV_TLS_CA_FILE"  # client tools (the CLI): the CA to check nodes against
CERT_FILE_ENV = "RINGKV_TLS_CERT_FILE"  # ... and, optionally, the certificate they present
KEY_FILE_ENV = "RINGKV_TLS_KEY_FILE"
NO_HOSTNAME_ENV = "RINGKV_TLS_NO_HOSTNAME_CHECK"  # "1": do not match the node's host name


def server_context(cert_file: str, key_file: str, ca_file: str = "", *,
                   require_client_cert: bool = False,
                   field: str = "security") -> ssl.SSLContext:
    """The context a node's listening ports serve TLS with."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # no system CAs: only ca_file is trusted
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, cert_file, key_file, field)
    if ca_file:
        _load_ca(ctx, ca_file, field)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    elif require_client_cert:
        raise ConfigError(f"{field}.tls_ca_file", "tls_require_client_cert needs a CA to check "
                                                   "client certificates against")
    return ctx


def client_context(ca_file: str, cert_file: str = "", key_file: str = "", *,
                   check_hostname: bool = True, field: str = "security") -> ssl.SSLContext:
    """The context a node (to its peers) or a client connects with: the server's chain
    checked against ``ca_file``; ``cert_file``/``key_file`` presented when given."""
    if not ca_file:
        raise ConfigError(f"{field}.tls_ca_file", "a TLS client needs the CA that signed the "
                                                   "nodes' certificates")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED; no system CAs loaded
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_ca(ctx, ca_file, field)
    ctx.check_hostname = check_hostname
    if cert_file or key_file:
        _load_chain(ctx, cert_file, key_file, field)
    return ctx


def context_from_env() -> ssl.SSLContext | None:
    """A client context from ``RINGKV_TLS_CA_FILE`` (and the optional certificate and key
    variables), or None when the CA variable is unset or empty."""
    ca = os.environ.get(CA_FILE_ENV, "")
    if not ca:
        return None
    return client_context(ca, os.environ.get(CERT_FILE_ENV, ""), os.environ.get(KEY_FILE_ENV, ""),
                          check_hostname=os.environ.get(NO_HOSTNAME_ENV, "") in ("", "0"),
                          field="environment")


def _load_chain(ctx: ssl.SSLContext, cert_file: str, key_file: str, field: str) -> None:
    if not cert_file or not key_file:
        raise ConfigError(f"{field}.tls_cert_file", "needs both a certificate and its key file")
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{field}.tls_cert_file", f"cannot load {cert_file} with key {key_file}: "
                                                     f"{_reason(exc)}") from None


def _load_ca(ctx: ssl.SSLContext, ca_file: str, field: str) -> None:
    try:
        ctx.load_verify_locations(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{field}.tls_ca_file", f"cannot load {ca_file}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return exc.reason.lower().replace("_", " ")
    return getattr(exc, "strerror", None) or str(exc)


__all__ = ["server_context", "client_context", "context_from_env", "CA_FILE_ENV",
           "CERT_FILE_ENV", "KEY_FILE_ENV", "NO_HOSTNAME_ENV"]
