"""Cluster-secret authentication (D32): the handshake's logic, then RpcServer/RpcClient
over real loopback sockets with and without the secret, and raw bytes from a client that
skips, forges or replays the handshake."""

from __future__ import annotations

import asyncio

import pytest

from ringkv.errors import AuthenticationFailed, ConfigError, InvalidRequest, RingkvError, from_wire
from ringkv.net import auth
from ringkv.net import transport
from ringkv.net.frames import ERROR, OK, FrameDecoder, FrameEncoder
from ringkv.net.transport import RpcClient, RpcServer

SECRET = b"s3cret-s3cret-s3cret"
OTHER = b"another-secret-entirely"


def ping(method: str, body: dict, peer: str) -> dict:
    return {"method": method}


def unknown_method(method: str, body: dict, peer: str) -> dict:
    """What a node without a secret answers the handshake's first request with."""
    raise InvalidRequest(f"unknown method {method!r}")


# ------------------------------------------------------------------ logic, no IO

def test_proofs_depend_on_secret_both_nonces_and_direction() -> None:
    sn, cn = b"s" * 16, b"c" * 16
    p = auth.client_proof(SECRET, sn, cn)
    assert p == auth.client_proof(SECRET, sn, cn) and len(p) == 32
    assert p != auth.client_proof(OTHER, sn, cn)
    assert p != auth.client_proof(SECRET, b"t" * 16, cn)
    assert p != auth.client_proof(SECRET, sn, b"d" * 16)
    assert p != auth.server_proof(SECRET, sn, cn)  # a server's proof is no client's
    assert auth.proof_matches(p, p) and not auth.proof_matches(p, p[:-1] + b"x")
    assert not auth.proof_matches(p, None) and not auth.proof_matches(p, p.hex())


def test_nonce_shape() -> None:
    assert auth.valid_nonce(b"x" * auth.NONCE_BYTES)
    assert not auth.valid_nonce(b"x" * 15) and not auth.valid_nonce("x" * 16)
    assert not auth.valid_nonce(None)


def test_secret_file_rules(tmp_path, monkeypatch) -> None:
    good = tmp_path / "secret"
    good.write_bytes(SECRET + b"\n")
    assert auth.read_secret_file(str(good)) == SECRET  # the trailing newline is not part of it
    short = tmp_path / "short"
    short.write_bytes(b"tooshort\n")
    with pytest.raises(ConfigError, match="at least 16"):
        auth.read_secret_file(str(short))
    with pytest.raises(ConfigError, match="cannot read"):
        auth.read_secret_file(str(tmp_path / "missing"))
    monkeypatch.setenv(auth.SECRET_FILE_ENV, str(good))
    assert auth.secret_from_env() == SECRET
    monkeypatch.setenv(auth.SECRET_FILE_ENV, "")
    assert auth.secret_from_env() is None
    with pytest.raises(ConfigError):
        RpcServer(ping, secret=b"short")


def test_error_crosses_the_wire_as_its_own_type() -> None:
    err = from_wire(AuthenticationFailed("wrong cluster secret").to_wire())
    assert type(err) is AuthenticationFailed and not err.retriable
    assert "wrong cluster secret" in str(err)


# ------------------------------------------------------------------ real sockets

@pytest.fixture
async def secured():
    srv = await RpcServer(ping, "127.0.0.1", 0, secret=SECRET, eager=True).start()
    yield srv
    await srv.close()


async def test_right_secret_is_served(secured) -> None:
    async with RpcClient(secret=SECRET) as c:
        for _ in range(3):  # one handshake, then the pooled connection
            assert (await c.call("127.0.0.1", secured.port, "ping", {}))["method"] == "ping"


async def test_no_secret_wrong_secret_and_unauthenticating_peer_are_refused(secured) -> None:
    async with RpcClient() as c:  # no handshake: the first request is refused
        with pytest.raises(AuthenticationFailed, match="requires the cluster secret"):
            await c.call("127.0.0.1", secured.port, "ping", {})
    async with RpcClient(secret=OTHER) as c:
        with pytest.raises(AuthenticationFailed, match="wrong cluster secret"):
            await c.call("127.0.0.1", secured.port, "ping", {})
    plain = await RpcServer(ping, "127.0.0.1", 0).start()  # a node with no secret set
    try:
        async with RpcClient(secret=SECRET) as c:
            with pytest.raises(AuthenticationFailed, match="does not authenticate"):
                await c.call("127.0.0.1", plain.port, "ping", {})
    finally:
        await plain.close()
    unknown = await RpcServer(unknown_method, "127.0.0.1", 0).start()  # a node with no secret
    try:
        async with RpcClient(secret=SECRET) as c:
            with pytest.raises(AuthenticationFailed, match="does not authenticate.*unknown method"):
                await c.call("127.0.0.1", unknown.port, "ping", {})
    finally:
        await unknown.close()
    async with RpcClient(secret=SECRET) as c:  # refusals cost the server nothing
        assert (await c.call("127.0.0.1", secured.port, "ping", {}))["method"] == "ping"


async def test_a_server_that_cannot_prove_the_secret_is_refused() -> None:
    """A stand-in that answers the handshake without knowing the secret (a port taken
    over, a misdirected seed): the client does not send it a single request."""
    calls: list[str] = []

    def impostor(method: str, body: dict, peer: str) -> dict:
        calls.append(method)
        if method == auth.AUTH_HELLO:
            return {"v": 1, "nonce": b"n" * 16}
        return {"proof": b"p" * 32}

    srv = await RpcServer(impostor, "127.0.0.1", 0).start()
    try:
        async with RpcClient(secret=SECRET) as c:
            with pytest.raises(AuthenticationFailed, match="does not know the cluster secret"):
                await c.call("127.0.0.1", srv.port, "put", {"key": b"k"})
    finally:
        await srv.close()
    assert calls == [auth.AUTH_HELLO, auth.AUTH]  # never the put


class RawConn:
    """One raw connection speaking frames by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder, self.encoder = FrameDecoder(), FrameEncoder()
        self.inbox: list = []

    @classmethod
    async def open(cls, port: int) -> "RawConn":
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def request(self, rid: int, method: str, body: dict) -> tuple:
        self.writer.write(self.encoder.request(rid, method, body))
        while not self.inbox:
            data = await asyncio.wait_for(self.reader.read(65536), 5.0)
            if not data:
                raise ConnectionError("closed")
            self.inbox.extend(self.decoder.feed(data))
        return self.inbox.pop(0)

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(), 5.0) == b"" and self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


async def test_raw_handshake_then_requests_and_a_replayed_proof_fails(secured) -> None:
    a = await RawConn.open(secured.port)
    kind, _rid, _code, hello = await a.request(1, auth.AUTH_HELLO, {"v": auth.VERSION})
    assert kind == OK and auth.valid_nonce(hello["nonce"])
    cn = b"c" * 16
    proof = auth.client_proof(SECRET, hello["nonce"], cn)
    kind, _rid, _code, reply = await a.request(2, auth.AUTH, {"nonce": cn, "proof": proof})
    assert kind == OK and reply["proof"] == auth.server_proof(SECRET, hello["nonce"], cn)
    assert (await a.request(3, "ping", {}))[3] == {"method": "ping"}
    a.close()
    # the same proof on a new connection: that connection's nonce is another one
    b = await RawConn.open(secured.port)
    kind, _rid, _code, hello2 = await b.request(1, auth.AUTH_HELLO, {"v": auth.VERSION})
    assert hello2["nonce"] != hello["nonce"]
    kind, rid, code, _body = await b.request(2, auth.AUTH, {"nonce": cn, "proof": proof})
    assert (kind, rid, code) == (ERROR, 2, "AuthenticationFailed")
    assert await b.closed()


async def test_raw_requests_before_or_instead_of_the_handshake_are_refused(secured) -> None:
    c = await RawConn.open(secured.port)
    kind, rid, code, _ = await c.request(7, "put", {"key": b"k", "value": b"v"})
    assert (kind, rid, code) == (ERROR, 7, "AuthenticationFailed") and await c.closed()
    c = await RawConn.open(secured.port)  # auth with no hello first: no nonce to prove
    kind, _rid, code, _ = await c.request(1, auth.AUTH, {"nonce": b"c" * 16, "proof": b"p" * 32})
    assert (kind, code) == (ERROR, "AuthenticationFailed") and await c.closed()
    c = await RawConn.open(secured.port)
    kind, _rid, code, body = await c.request(1, auth.AUTH_HELLO, {"v": 99})
    assert (kind, code) == (ERROR, "AuthenticationFailed") and "version" in str(body)


async def test_silent_connection_is_closed_after_the_handshake_timeout(secured, monkeypatch) -> None:
    monkeypatch.setattr(transport, "HANDSHAKE_TIMEOUT_S", 0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", secured.port)
    try:
        data = await asyncio.wait_for(reader.read(), 5.0)  # EOF once the server gives up
    finally:
        writer.close()
    kind, _rid, code, _ = FrameDecoder().feed(data)[0]
    assert (kind, code) == (ERROR, "AuthenticationFailed")


async def test_client_error_is_typed_through_the_client_api(secured) -> None:
    from ringkv.client import AsyncClient

    client = AsyncClient([f"127.0.0.1:{secured.port}"], secret=OTHER, retries=0)
    try:
        with pytest.raises(AuthenticationFailed):
            await client.get(b"k")
    finally:
        await client.close()
    assert issubclass(AuthenticationFailed, RingkvError)
