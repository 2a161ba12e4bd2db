"""RpcServer / RpcClient over real loopback sockets (no sleeps used as synchronisation)."""

from __future__ import annotations

import asyncio
import socket

import msgpack
import pytest

from ringkv.errors import (Overloaded, ProtocolError, RingkvError, Timeout, TooLarge,
                           Unavailable)
from ringkv.net.frames import ERROR, HEADER, FrameDecoder, FrameEncoder
from ringkv.net.transport import RpcClient, RpcServer, is_peer_unreachable


async def echo(method: str, body: dict, peer: str) -> dict:
    if method == "sleep":
        await asyncio.sleep(body["s"])
    if method == "hang":
        await asyncio.Event().wait()
    if method == "fail":
        raise Overloaded("queue full")
    if method == "bug":
        raise ZeroDivisionError("oops")
    if method == "notdict":
        return [1, 2]  # type: ignore[return-value]
    return {"method": method, "body": body, "peer": peer}


def sync_echo(method: str, body: dict, peer: str):
    if method == "async":
        return echo("x", body, peer)  # an awaitable from a plain function is fine too
    if method == "fail":
        raise TooLarge("value", 10, 5)
    return {"method": method, "body": body}


@pytest.fixture(params=[False, True], ids=["task", "eager"])
async def server(request):
    srv = await RpcServer(echo, "127.0.0.1", 0, max_frame_bytes=64 * 1024,
                          eager=request.param).start()
    yield srv
    await srv.close()


@pytest.fixture
async def client():
    c = RpcClient(max_frame_bytes=64 * 1024, connect_timeout=2.0)
    yield c
    await c.close()


async def test_roundtrip_keeps_bytes(server, client):
    reply = await client.call("127.0.0.1", server.port, "get", {"key": b"\x00k", "r": 2})
    assert reply["method"] == "get" and reply["body"] == {"key": b"\x00k", "r": 2}
    assert reply["peer"].startswith("127.0.0.1:")


async def test_many_in_flight_on_one_connection_replies_out_of_order(server, client):
    delays = [0.05 - i * 0.001 for i in range(40)]
    calls = [client.call("127.0.0.1", server.port, "sleep", {"s": d, "i": i})
             for i, d in enumerate(delays)]
    replies = await asyncio.gather(*calls)
    assert [r["body"]["i"] for r in replies] == list(range(40))
    assert len(server._conns) == 1


async def test_pipelined_burst(server, client):
    replies = await asyncio.gather(*(client.call("127.0.0.1", server.port, "ping", {"i": i})
                                     for i in range(2000)))
    assert sorted(r["body"]["i"] for r in replies) == list(range(2000))


async def test_sync_handler_fast_path_and_awaitable_result(client):
    async with RpcServer(sync_echo, "127.0.0.1", 0) as srv:
        assert (await client.call("127.0.0.1", srv.port, "m", {"a": 1}))["body"] == {"a": 1}
        assert (await client.call("127.0.0.1", srv.port, "async", {}))["method"] == "x"
        with pytest.raises(TooLarge) as info:
            await client.call("127.0.0.1", srv.port, "fail", {})
        assert (info.value.what, info.value.size, info.value.limit) == ("value", 10, 5)


async def test_handler_ringkv_error_crosses_the_wire(server, client):
    with pytest.raises(Overloaded) as info:
        await client.call("127.0.0.1", server.port, "fail", {})
    assert info.value.retriable and info.value.detail == "queue full"


async def test_handler_bug_is_generic_error_and_server_stays_up(server, client, caplog):
    for method in ("bug", "notdict"):
        with pytest.raises(RingkvError) as info:
            await client.call("127.0.0.1", server.port, method, {})
        assert type(info.value) is RingkvError and "internal error" in str(info.value)
    assert (await client.call("127.0.0.1", server.port, "ping", {}))["method"] == "ping"
    assert "rpc handler failed" in caplog.text


async def test_timeout_raises_timeout_and_connection_stays_usable(server, client):
    with pytest.raises(Timeout) as info:
        await client.call("127.0.0.1", server.port, "hang", {}, timeout=0.05)
    assert (info.value.required, info.value.received) == (1, 0)
    assert "hang" in info.value.detail
    assert (await client.call("127.0.0.1", server.port, "ping", {}))["method"] == "ping"


async def test_short_timeout_behind_a_long_one_still_fires_on_time(server, client):
    # one connection, requests with different timeouts: the short one must not wait for
    # the long one's deadline (the transport keeps no timer per request)
    slow = asyncio.ensure_future(client.call("127.0.0.1", server.port, "hang", {}, timeout=30))
    await client.call("127.0.0.1", server.port, "ping", {})  # connected, "hang" in flight
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(Timeout):
        await client.call("127.0.0.1", server.port, "hang", {}, timeout=0.05)
    assert loop.time() - started < 5.0
    assert not slow.done()
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow


async def test_answered_requests_leave_no_deadline_behind(server, client):
    for _ in range(50):
        await client.call("127.0.0.1", server.port, "ping", {}, timeout=0.05)
    conn = client._pool[("127.0.0.1", server.port)][0]
    assert conn is not None
    with pytest.raises(Timeout):  # answered entries go lazily, at the latest with this one
        await client.call("127.0.0.1", server.port, "hang", {}, timeout=0.05)
    assert not conn.pending and not conn._deadlines and conn._sweep_handle is None


async def test_connection_refused_is_unavailable(client):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(Unavailable) as info:
            await client.call("127.0.0.1", port, "ping", {})
    assert is_peer_unreachable(info.value) and info.value.retriable


async def test_server_gone_fails_in_flight_calls_then_reconnects(client):
    srv = await RpcServer(echo, "127.0.0.1", 0).start()
    port = srv.port
    pending = asyncio.ensure_future(client.call("127.0.0.1", port, "hang", {}, timeout=10))
    await client.call("127.0.0.1", port, "ping", {})  # the hang request is in flight now
    await srv.close()
    with pytest.raises(Unavailable) as info:
        await pending
    assert is_peer_unreachable(info.value)
    async with RpcServer(echo, "127.0.0.1", port) as again:
        assert (await client.call("127.0.0.1", again.port, "ping", {}))["method"] == "ping"


async def test_client_refuses_oversized_request_without_sending(server, client):
    with pytest.raises(TooLarge) as info:
        await client.call("127.0.0.1", server.port, "put", {"value": b"x" * 70_000})
    assert info.value.what == "frame"
    assert (await client.call("127.0.0.1", server.port, "ping", {}))["method"] == "ping"


async def test_oversized_reply_becomes_too_large_error():
    async def big(method, body, peer):
        return {"blob": b"x" * 5000}

    async with RpcServer(big, "127.0.0.1", 0, max_frame_bytes=1024) as srv:
        async with RpcClient() as c:
            with pytest.raises(TooLarge):
                await c.call("127.0.0.1", srv.port, "get", {})


async def raw_exchange(port: int, data: bytes) -> tuple[list, bool]:
    """Send raw bytes; return the messages received until the server closes (and whether it did)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    received = await asyncio.wait_for(reader.read(), 5.0)  # read() returns at EOF
    writer.close()
    return FrameDecoder().feed(received), reader.at_eof()


async def test_oversized_frame_gets_too_large_and_close(server, client):
    msgs, closed = await raw_exchange(server.port, HEADER.pack(10**7) + b"junk")
    assert closed and msgs[0][0] == ERROR and msgs[0][2] == "TooLarge"
    assert (await client.call("127.0.0.1", server.port, "ping", {}))["method"] == "ping"


async def test_garbage_gets_protocol_error_and_close(server, client):
    msgs, closed = await raw_exchange(server.port, HEADER.pack(3) + b"\xc1\xc1\xc1")
    assert closed and msgs[0][2] == "ProtocolError"
    payload = msgpack.packb([0, 42, "get", "not a map"])
    msgs, closed = await raw_exchange(server.port, HEADER.pack(len(payload)) + payload)
    assert closed and msgs[0][1] == 42 and msgs[0][2] == "ProtocolError"
    assert (await client.call("127.0.0.1", server.port, "ping", {}))["method"] == "ping"


async def test_response_kind_sent_to_server_is_protocol_error(server):
    msgs, closed = await raw_exchange(server.port, FrameEncoder().ok(3, {}))
    assert closed and msgs[0][2] == "ProtocolError"


@pytest.mark.parametrize("eager", [False, True])
async def test_server_bounds_in_flight_requests_per_connection(client, eager):
    gate = asyncio.Event()
    started = 0

    async def slow(method, body, peer):
        nonlocal started
        started += 1
        await gate.wait()
        return {}

    async with RpcServer(slow, "127.0.0.1", 0, max_inflight=8, eager=eager) as srv:
        calls = asyncio.gather(*(client.call("127.0.0.1", srv.port, "x", {}, timeout=10)
                                 for _ in range(100)))
        for _ in range(200):  # let the server read what it will
            await asyncio.sleep(0)
        assert started <= 8 + 8  # reading pauses at the bound (one read may overshoot it)
        gate.set()
        assert len(await calls) == 100


async def test_caller_cancellation_forgets_request(server, client):
    task = asyncio.ensure_future(client.call("127.0.0.1", server.port, "hang", {}, timeout=10))
    await client.call("127.0.0.1", server.port, "ping", {})
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    conn = client._pool[("127.0.0.1", server.port)][0]
    assert conn is not None and not conn.pending


async def test_several_connections_per_peer():
    async with RpcServer(echo, "127.0.0.1", 0) as srv:
        async with RpcClient(connections_per_peer=3) as c:
            await asyncio.gather(*(c.call("127.0.0.1", srv.port, "ping", {}) for _ in range(30)))
            for _ in range(6):
                await c.call("127.0.0.1", srv.port, "ping", {})
            assert 1 < len(srv._conns) <= 3


async def test_closed_client_refuses_calls(server):
    c = RpcClient()
    await c.call("127.0.0.1", server.port, "ping", {})
    await c.close()
    with pytest.raises(RingkvError):
        await c.call("127.0.0.1", server.port, "ping", {})


def test_protocol_error_is_not_retriable():
    assert not ProtocolError("x").retriable


def test_same_behaviour_on_uvloop():
    import uvloop  # a pinned dependency: its absence is a failure, not a skip

    async def main() -> None:
        async with RpcServer(echo, "127.0.0.1", 0, max_frame_bytes=4096) as srv:
            async with RpcClient(max_frame_bytes=4096) as c:
                replies = await asyncio.gather(*(c.call("127.0.0.1", srv.port, "ping", {"i": i})
                                                 for i in range(500)))
                assert [r["body"]["i"] for r in replies] == list(range(500))
                with pytest.raises(Overloaded):
                    await c.call("127.0.0.1", srv.port, "fail", {})
                with pytest.raises(Timeout):
                    await c.call("127.0.0.1", srv.port, "hang", {}, timeout=0.05)
                with pytest.raises(TooLarge):
                    await c.call("127.0.0.1", srv.port, "put", {"v": b"x" * 5000})
                msgs, closed = await raw_exchange(srv.port, HEADER.pack(10**6))
                assert closed and msgs[0][2] == "TooLarge"
                assert (await c.call("127.0.0.1", srv.port, "ping", {}))["method"] == "ping"

    uvloop.run(main())


async def test_random_bytes_never_take_the_server_down(server, client):
    import random

    rng = random.Random(1234)
    for _ in range(30):
        blob = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 200)))
        if rng.random() < 0.5:  # a plausible header in front of garbage
            blob = HEADER.pack(rng.randrange(0, 300)) + blob
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(blob)
        writer.write_eof()
        await asyncio.wait_for(reader.read(), 5.0)  # the server answers or closes; never hangs
        writer.close()
    assert (await client.call("127.0.0.1", server.port, "ping", {}))["method"] == "ping"


async def test_eager_handlers_suspend_fail_and_finish_like_tasks(client):
    loop = asyncio.get_running_loop()

    async def handler(method, body, peer):
        if method == "now":
            return {"eager": asyncio.current_task() is None}  # no suspension at all
        await asyncio.sleep(0)  # a bare yield
        fut = loop.create_future()
        loop.call_later(0.001, fut.set_result, 5)
        got = await fut  # an asyncio future
        if method == "fail":
            raise Overloaded("after suspending")
        if method == "cancelled":
            dead = loop.create_future()
            dead.cancel()
            await dead
        if method == "task":
            got += await asyncio.ensure_future(asyncio.sleep(0.001, result=1))
        return {"got": got}

    async with RpcServer(handler, "127.0.0.1", 0, eager=True) as srv:
        call = lambda m: client.call("127.0.0.1", srv.port, m, {})  # noqa: E731
        assert await call("now") == {"eager": True}
        assert await call("x") == {"got": 5}
        assert await call("task") == {"got": 6}
        with pytest.raises(Overloaded):
            await call("fail")
        with pytest.raises(RingkvError):
            await call("cancelled")
        replies = await asyncio.gather(*(call("x") for _ in range(300)))
        assert replies == [{"got": 5}] * 300
