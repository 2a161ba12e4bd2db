"""RespServer on loopback, driven by redis-py (redis.asyncio) and raw sockets.

The node behind it is ringkv.testing.MemoryOps: a dict with sibling semantics standing in
for the node's kv_get/kv_put/kv_delete. What is under test is the RESP front end.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest
import redis.asyncio as aredis
from redis.exceptions import ResponseError

from ringkv.config import LimitsConfig
from ringkv.errors import Overloaded, Timeout, Unavailable
from ringkv.net.resp import encode_command
from ringkv.resp_server import RespServer
from ringkv.testing.fake_clock import FakeClock
from ringkv.testing.memory_ops import MemoryOps

LIMITS = LimitsConfig(max_key_bytes=64, max_value_bytes=4096, max_frame_bytes=64 * 1024)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def ops(clock):
    return MemoryOps(clock=clock.monotonic)


@pytest.fixture
async def server(ops):
    srv = RespServer(ops, "127.0.0.1", 0, LIMITS, lambda: {"node_id": "n1", "keys": 3,
                                                         "engine": {"puts": 5}})
    await srv.start()
    yield srv
    await srv.stop()


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
async def r(request, server):
    client = aredis.Redis(port=server.port, protocol=request.param, socket_timeout=5)
    yield client
    await client.aclose()


async def raw(server, data: bytes, *, expect_close: bool = False, timeout: float = 3) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(data)
    await writer.drain()
    if expect_close:
        out = await asyncio.wait_for(reader.read(), timeout)
    else:
        out = await asyncio.wait_for(reader.read(65536), timeout)
    writer.close()
    return out


async def test_basic_commands(r, ops):
    assert await r.ping() is True
    assert await r.echo(b"hi") == b"hi"
    assert await r.set("a", "1") is True
    assert await r.get("a") == b"1"
    assert await r.get("missing") is None
    assert await r.mset({"x": "1", "y": "2"}) is True
    assert await r.mget("x", "y", "nope") == [b"1", b"2", None]
    assert await r.exists("x", "y", "nope", "x") == 3
    assert await r.delete("x", "nope", "x") == 1
    assert await r.get("x") is None


async def test_set_without_context_overwrites(r, ops):
    for v in (b"1", b"2", b"3"):
        await r.set("k", v)
    assert ops.siblings(b"k") == [b"3"]
    await r.mset({"k": "4", "j": "1"})
    assert ops.siblings(b"k") == [b"4"]


async def make_siblings(r, key: str, *values: str) -> None:
    """Concurrent writers: each puts with the context of the key when it was still missing."""
    stale, = await r.execute_command("RINGKV.GETALL", key)
    for v in values:
        await r.execute_command("RINGKV.PUT", key, v, stale)


async def test_siblings_are_an_error_on_get_and_visible_through_ringkv_commands(r, ops):
    await make_siblings(r, "s", "a", "b")
    with pytest.raises(ResponseError, match=r"^SIBLINGS 2 siblings"):
        await r.get("s")
    mget = await r.mget("s", "none")
    assert isinstance(mget[0], ResponseError) and mget[1] is None
    ctx, *values = await r.execute_command("RINGKV.GETALL", "s")
    assert sorted(values) == [b"a", b"b"]
    new_ctx = await r.execute_command("RINGKV.PUT", "s", "ab", ctx)
    assert await r.get("s") == b"ab"
    assert await r.execute_command("RINGKV.DEL", "s", new_ctx) in (b"OK", "OK", True)
    assert await r.get("s") is None


async def test_set_overwrite_resolves_siblings(r, ops):
    await make_siblings(r, "s", "a", "b")
    await r.set("s", "c")
    assert await r.get("s") == b"c"


async def test_set_options(r, ops, clock):
    assert await r.set("n", "1", nx=True) is True
    assert await r.set("n", "2", nx=True) is None
    assert await r.set("m", "1", xx=True) is None
    assert await r.set("n", "3", xx=True) is True
    assert await r.set("n", "4", get=True) == b"3"
    assert await r.set("t", "v", ex=10) is True
    clock.advance(9)
    assert await r.get("t") == b"v"
    clock.advance(2)
    assert await r.get("t") is None
    assert await r.set("t", "v", px=500) is True
    with pytest.raises(ResponseError, match="invalid expire time"):
        await r.set("t", "v", ex=0)
    with pytest.raises(ResponseError, match="syntax error"):
        await r.execute_command("SET", "t", "v", "BOGUS")
    with pytest.raises(ResponseError, match="KEEPTTL"):
        await r.execute_command("SET", "t", "v", "KEEPTTL")


async def test_unknown_command_and_wrong_arity_keep_the_connection(r):
    with pytest.raises(ResponseError, match="unknown command 'FOO'"):
        await r.execute_command("FOO", "bar")
    with pytest.raises(ResponseError, match="wrong number of arguments for 'get'"):
        await r.execute_command("GET")
    with pytest.raises(ResponseError, match="not supported"):
        await r.execute_command("CLIENT", "KILL", "x")
    assert await r.ping() is True


@pytest.mark.parametrize("exc,prefix", [
    (Unavailable(2, 1), "UNAVAILABLE"), (Timeout(2, 1), "TIMEOUT"), (Overloaded("queue"), "OVERLOADED"),
])
async def test_node_errors_map_to_redis_errors(r, ops, exc, prefix):
    ops.fail_with = exc
    with pytest.raises(ResponseError, match=f"^{prefix} "):
        await r.get("k")
    with pytest.raises(ResponseError, match=f"^{prefix} "):
        await r.set("k", "v")
    ops.fail_with = None
    assert await r.set("k", "v") is True


async def test_too_large_key_and_value(r):
    with pytest.raises(ResponseError, match="^TOOLARGE key"):
        await r.get("k" * 65)
    with pytest.raises(ResponseError, match="^TOOLARGE value"):
        await r.set("k", "v" * 5000)
    assert await r.ping() is True


async def test_bad_consistency_level_is_an_error(r):
    assert await r.execute_command("RINGKV.LEVEL", "bogus", "-") == [b"BOGUS", b"-"]
    with pytest.raises(ResponseError, match="consistency level"):
        await r.get("k")
    await r.execute_command("RINGKV.LEVEL", "ONE", "QUORUM")
    assert await r.set("k", "v") is True


async def test_pipeline_replies_in_order_and_sees_its_own_writes(server, ops):
    ops.delay = 0.002
    client = aredis.Redis(port=server.port, protocol=2)
    pipe = client.pipeline(transaction=False)
    for i in range(30):
        pipe.set(f"k{i % 5}", i)
        pipe.get(f"k{i % 5}")
        pipe.ping()
    out = await pipe.execute()
    for i in range(30):
        assert out[3 * i:3 * i + 3] == [True, str(i).encode(), True]
    await client.aclose()


async def test_pipelined_reads_run_concurrently(server, ops):
    ops.delay = 0.05
    client = aredis.Redis(port=server.port, protocol=2)
    pipe = client.pipeline(transaction=False)
    for i in range(40):
        pipe.get(f"k{i}")
    started = time.monotonic()
    assert await pipe.execute() == [None] * 40
    assert time.monotonic() - started < 40 * 0.05 / 4  # far less than sequential
    await client.aclose()


async def test_protocol_error_replies_then_closes(server):
    out = await raw(server, b"PING\r\n*1\r\n$x\r\n", expect_close=True)
    assert out.startswith(b"+PONG\r\n-ERR Protocol error")
    assert server.stats["protocol_errors"] == 1


async def test_bulk_over_the_frame_limit_closes(server):
    out = await raw(server, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$999999999\r\n", expect_close=True)
    assert out.startswith(b"-ERR Protocol error: bulk length")


async def test_quit_closes_after_earlier_replies(server, ops):
    ops.delay = 0.01
    out = await raw(server, encode_command("SET", "a", "1") + encode_command("QUIT") + b"PING\r\n",
                    expect_close=True)
    assert out == b"+OK\r\n+OK\r\n"


async def test_inline_commands_work(server):
    out = await raw(server, b"PING\r\nECHO hello\r\n")
    assert out.startswith(b"+PONG\r\n")


async def test_server_commands(r):
    info = await r.info()
    assert info["redis_version"] == "7.0.0" and info["node_id"] == "n1"
    assert info["engine_puts"] == 5
    assert "keys" in await r.info("ringkv")
    assert await r.execute_command("SELECT", 0) in (b"OK", "OK", True)
    with pytest.raises(ResponseError, match="DB index"):
        await r.execute_command("SELECT", 1)
    assert await r.client_setname("me") is True
    assert await r.client_getname() in (b"me", "me")
    assert await r.client_id() > 0
    assert await r.config_get("save") == {"save": ""}
    assert await r.config_get("appendonly") == {"appendonly": "no"}
    assert await r.command_count() > 10
    commands = await r.command()
    assert "get" in commands
    assert await r.execute_command("COMMAND", "DOCS") in ({}, [])
    assert len(await r.time()) == 2


async def test_info_callback_failure_does_not_break_info(ops):
    def broken() -> dict:
        raise RuntimeError("boom")
    async with RespServer(ops, "127.0.0.1", 0, LIMITS, broken) as srv:
        client = aredis.Redis(port=srv.port, protocol=2)
        assert (await client.info())["info_error"] == "RuntimeError"
        await client.aclose()


async def test_connection_limit(ops):
    async with RespServer(ops, "127.0.0.1", 0, LIMITS, dict, max_connections=1) as srv:
        r1, w1 = await asyncio.open_connection("127.0.0.1", srv.port)
        w1.write(b"PING\r\n")
        assert await r1.readline() == b"+PONG\r\n"
        out = await raw(srv, b"PING\r\n", expect_close=True)
        assert out.startswith(b"-ERR max number of clients")
        assert srv.stats["rejected_connections"] == 1
        w1.close()


async def test_garbage_never_kills_the_server(server):
    rng = random.Random(5)
    for _ in range(30):
        junk = bytes(rng.choice(b"*$:\r\n-+0123456789abcGETSET ") for _ in range(rng.randrange(1, 300)))
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(junk)
        await writer.drain()
        writer.close()
    client = aredis.Redis(port=server.port, protocol=2)
    assert await client.ping() is True
    await client.aclose()


async def test_stop_with_commands_in_flight(ops):
    ops.delay = 0.2
    srv = RespServer(ops, "127.0.0.1", 0, LIMITS, dict)
    await srv.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
    writer.write(encode_command("GET", "a"))
    await writer.drain()
    await asyncio.sleep(0.02)
    await asyncio.wait_for(srv.stop(), 5)
    assert await reader.read() == b""


PASSWORD = b"0123456789abcdef-resp"


@pytest.fixture
async def locked(ops):
    srv = RespServer(ops, "127.0.0.1", 0, LIMITS, dict, password=PASSWORD)
    await srv.start()
    yield srv
    await srv.stop()


@pytest.mark.parametrize("protocol", [2, 3])
async def test_a_password_is_asked_for_as_redis_requirepass_does(locked, protocol):
    """redis-py's password= (AUTH, or HELLO 3 AUTH) gets in; nothing else does."""
    good = aredis.Redis(port=locked.port, protocol=protocol, password=PASSWORD.decode(),
                        socket_timeout=5)
    try:
        assert await good.set("k", "v") is True and await good.get("k") == b"v"
    finally:
        await good.aclose()
    for password in (None, "wrong"):
        bad = aredis.Redis(port=locked.port, protocol=protocol, password=password,
                           socket_timeout=5)
        try:
            with pytest.raises(Exception, match="(?i)auth|invalid username-password"):
                await bad.get("k")
        finally:
            await bad.aclose()


async def test_commands_before_auth_get_noauth_and_auth_opens_the_connection(locked):
    out = await raw(locked, b"PING\r\nGET k\r\nAUTH nope\r\nAUTH other " + PASSWORD + b"\r\n"
                    b"AUTH default " + PASSWORD + b"\r\nPING\r\n")
    assert out == (b"-NOAUTH Authentication required.\r\n" * 2
                   + b"-WRONGPASS invalid username-password pair or user is disabled.\r\n" * 2
                   + b"+OK\r\n+PONG\r\n")
    assert (await raw(locked, b"HELLO 3\r\n")).startswith(b"-NOAUTH HELLO must be called")
    assert await raw(locked, b"QUIT\r\n", expect_close=True) == b"+OK\r\n"


async def test_auth_without_a_password_configured_says_so(server):
    out = await raw(server, b"AUTH secret\r\nPING\r\n")
    assert out.startswith(b"-ERR AUTH <password> called without any password configured")
    assert out.endswith(b"+PONG\r\n")
