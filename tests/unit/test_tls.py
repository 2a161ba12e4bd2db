"""TLS on the RPC transport (D33), over real loopback sockets with certificates from a
throwaway CA (trustme): trusted and untrusted servers, plaintext on either side, client
certificates, host names, and TLS together with the cluster secret."""

from __future__ import annotations

import ssl

import pytest
import trustme

from ringkv.config import SecurityConfig
from ringkv.errors import AuthenticationFailed, ConfigError, RingkvError
from ringkv.net import tls
from ringkv.net.transport import RpcClient, RpcServer

SECRET = b"s3cret-s3cret-s3cret"


def ping(method: str, body: dict, peer: str) -> dict:
    return {"method": method}


class Pki:
    """A CA, a certificate for 127.0.0.1/localhost signed by it, and their PEM files."""

    def __init__(self, directory, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> None:
        self.ca = trustme.CA()
        self.cert = self.ca.issue_cert(*hosts)
        self.ca_file = str(directory / "ca.pem")
        self.cert_file = str(directory / "node.pem")
        self.key_file = str(directory / "node.key")
        self.ca.cert_pem.write_to_path(self.ca_file)
        self.cert.private_key_pem.write_to_path(self.key_file)
        for i, blob in enumerate(self.cert.cert_chain_pems):
            blob.write_to_path(self.cert_file, append=i > 0)

    def server(self, **kw) -> ssl.SSLContext:
        return tls.server_context(self.cert_file, self.key_file, self.ca_file, **kw)

    def client(self, present: bool = True, **kw) -> ssl.SSLContext:
        if present:
            return tls.client_context(self.ca_file, self.cert_file, self.key_file, **kw)
        return tls.client_context(self.ca_file, **kw)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("other-pki"))


async def serve(**kw) -> RpcServer:
    return await RpcServer(ping, "127.0.0.1", 0, eager=True, **kw).start()


async def test_trusted_server_is_served_over_tls(pki) -> None:
    srv = await serve(ssl=pki.server())
    try:
        async with RpcClient(ssl=pki.client()) as c:
            assert (await c.call("127.0.0.1", srv.port, "ping", {}))["method"] == "ping"
            conn = c._pool[("127.0.0.1", srv.port)][0]
            assert conn.transport.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
    finally:
        await srv.close()


async def test_untrusted_or_plaintext_peers_are_refused(pki, other_pki) -> None:
    srv = await serve(ssl=pki.server())
    plain = await serve()
    try:
        async with RpcClient(ssl=other_pki.client()) as c:  # signed by a CA we do not trust
            with pytest.raises(AuthenticationFailed, match="not trusted"):
                await c.call("127.0.0.1", srv.port, "ping", {})
        async with RpcClient(ssl=pki.client()) as c:  # a server without TLS
            with pytest.raises(AuthenticationFailed, match="TLS handshake .* failed"):
                await c.call("127.0.0.1", plain.port, "ping", {})
        async with RpcClient(connect_timeout=2.0) as c:  # a client without TLS gets nothing
            with pytest.raises(RingkvError, match="before any reply; a node that serves TLS"):
                await c.call("127.0.0.1", srv.port, "ping", {}, timeout=2.0)
        async with RpcClient(ssl=pki.client()) as c:  # and the server is still fine
            assert (await c.call("127.0.0.1", srv.port, "ping", {}))["method"] == "ping"
    finally:
        await srv.close()
        await plain.close()


async def test_host_name_is_checked_unless_told_not_to(tmp_path) -> None:
    named = Pki(tmp_path, hosts=("node1.example.test",))  # names no address we dial
    srv = await serve(ssl=named.server())
    try:
        async with RpcClient(ssl=named.client()) as c:
            with pytest.raises(AuthenticationFailed, match="not trusted"):
                await c.call("127.0.0.1", srv.port, "ping", {})
        async with RpcClient(ssl=named.client(check_hostname=False)) as c:
            assert (await c.call("127.0.0.1", srv.port, "ping", {}))["method"] == "ping"
    finally:
        await srv.close()


async def test_required_client_certificate(pki, other_pki) -> None:
    srv = await serve(ssl=pki.server(require_client_cert=True))
    try:
        async with RpcClient(ssl=pki.client(present=True)) as c:
            assert (await c.call("127.0.0.1", srv.port, "ping", {}))["method"] == "ping"
        for ctx in (pki.client(present=False),  # none, or one from another CA
                    tls.client_context(pki.ca_file, other_pki.cert_file, other_pki.key_file)):
            async with RpcClient(ssl=ctx) as c:
                with pytest.raises(RingkvError):  # refused in the handshake or right after it
                    await c.call("127.0.0.1", srv.port, "ping", {}, timeout=2.0)
    finally:
        await srv.close()


async def test_tls_and_the_secret_together(pki) -> None:
    srv = await serve(ssl=pki.server(), secret=SECRET)
    try:
        async with RpcClient(ssl=pki.client(), secret=SECRET) as c:
            assert (await c.call("127.0.0.1", srv.port, "ping", {}))["method"] == "ping"
        async with RpcClient(ssl=pki.client(), secret=b"x" * 20) as c:
            with pytest.raises(AuthenticationFailed, match="wrong cluster secret"):
                await c.call("127.0.0.1", srv.port, "ping", {})
    finally:
        await srv.close()


def test_bad_files_and_half_configurations_are_config_errors(pki, tmp_path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="tls_cert_file"):
        tls.server_context(str(junk), pki.key_file)
    with pytest.raises(ConfigError, match="tls_ca_file"):
        tls.client_context(str(junk))
    with pytest.raises(ConfigError, match="tls_ca_file"):
        tls.client_context("")
    with pytest.raises(ConfigError, match="cannot load"):
        tls.client_context(str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="all three"):
        SecurityConfig(tls_cert_file=pki.cert_file, tls_key_file=pki.key_file).validate()
    with pytest.raises(ConfigError, match="tls_require_client_cert"):
        SecurityConfig(tls_require_client_cert=True).validate()
    SecurityConfig(tls_cert_file="a", tls_key_file="b", tls_ca_file="c").validate()


def test_client_context_from_the_environment(pki, monkeypatch) -> None:
    monkeypatch.delenv(tls.CA_FILE_ENV, raising=False)
    assert tls.context_from_env() is None
    monkeypatch.setenv(tls.CA_FILE_ENV, pki.ca_file)
    ctx = tls.context_from_env()
    assert ctx is not None and ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    monkeypatch.setenv(tls.NO_HOSTNAME_ENV, "1")
    assert not tls.context_from_env().check_hostname


def test_no_tls_older_than_1_2_and_only_the_cluster_ca_trusted(pki) -> None:
    for ctx in (pki.server(), pki.client(), pki.server(require_client_cert=True)):
        assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
        assert ctx.cert_store_stats()["x509_ca"] == 1  # ours; never the system's CA store
    assert pki.client().verify_mode == ssl.CERT_REQUIRED and pki.client().check_hostname
    assert pki.server().verify_mode == ssl.CERT_OPTIONAL
    assert pki.server(require_client_cert=True).verify_mode == ssl.CERT_REQUIRED
