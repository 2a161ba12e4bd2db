"""FastRespParser (hiredis in front of the exact Python parser) against RespParser: same
commands, same errors, bounded memory. Pure: no sockets."""

from __future__ import annotations

import random
import tracemalloc

from ringkv.net.resp import RespLimits, RespParser, encode_command
from ringkv.net.resp_fast import FastRespParser

LIMITS = RespLimits(max_bulk_bytes=5000, max_array_len=300, max_inline_bytes=300,
                    max_command_bytes=20000)


def _piece(rng: random.Random) -> bytes:
    """One piece of a request stream: mostly valid commands, some inline, some hostile."""
    r = rng.random()
    if r < 0.55:
        args = [rng.choice([b"SET", b"GET", b"MSET"])]
        for _ in range(rng.choice([1, 2, 2, 3, 5, 40, 150])):
            kind = rng.random()
            if kind < 0.6:
                args.append(bytes(rng.randrange(256) for _ in range(rng.randrange(12))))
            elif kind < 0.9:  # payloads that look like headers
                args.append(rng.choice([b"\n*2\r\n", b"a\n%1", b"\n~3\r\n$1\r\n", b"$123456789",
                                        b"*1234", b"\r\n*1\r\n$4\r\nPING\r\n", b"\n+OK", b"\n>2"]))
            else:
                args.append(b"v" * rng.choice([0, 100, 4999, 5001]))
        return encode_command(*args)
    if r < 0.65:
        return rng.choice([b"PING\r\n", b"set a 'b c'\r\n", b"\r\n", b"GET \"k\\x41\"\n"])
    if r < 0.72:
        return rng.choice([b"*0\r\n", b"*-1\r\n", b"*-2\r\n"])
    return rng.choice([
        b"*2\r\n*1\r\n$1\r\na\r\n$1\r\nb\r\n",  # nested array
        b"*1\r\n:1\r\n", b"*1\r\n+OK\r\n", b"*1\r\n$-1\r\n", b"*1\r\n$-5\r\n", b"*x\r\n",
        b"*999999999999\r\n", b"*1\r\n$99999999\r\n", b"*301\r\n", b"*1\r\n$03\r\nabc\r\n",
        b"*1\r\n%1\r\n$1\r\na\r\n$1\r\nb\r\n", b"$3\r\nabc\r\n", b"+PING\r\n", b"x" * 301,
        b"*2\r\n$3\r\nGET\r\nPING\r\n",  # an inline line where a bulk header should be
    ])


def _run(parser, data: bytes, cuts: list[int]) -> tuple[list, str | None]:
    out, prev = [], 0
    for cut in cuts + [len(data)]:
        out += parser.feed(data[prev:cut])
        prev = cut
    return out, (str(parser.error) if parser.error is not None else None)


def test_same_commands_and_errors_as_the_python_parser():
    rng = random.Random(5)
    for _ in range(1500):
        data = b"".join(_piece(rng) for _ in range(rng.randrange(1, 12)))
        cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randrange(0, 6))))
        if rng.random() < 0.1:
            cuts = list(range(1, len(data)))  # byte by byte
        expected = _run(RespParser(LIMITS), data, cuts)
        got = _run(FastRespParser(LIMITS), data, cuts)
        assert got == expected, (data, cuts)


def test_hiredis_takes_back_after_inline_and_large_commands():
    p = FastRespParser()
    assert p.feed(b"PING\r\n") == [[b"PING"]]
    assert p._py is None  # the Python parser handed the stream back at the boundary
    big = encode_command("SET", "k", b"v" * (3 << 20))  # past the 1 MiB hiredis window
    out = []
    for i in range(0, len(big), 65536):
        out += p.feed(big[i:i + 65536])
    assert out == [[b"SET", b"k", b"v" * (3 << 20)]] and p._py is None
    assert p.feed(encode_command("GET", "k")) == [[b"GET", b"k"]] and p._py is None
    assert p.buffered == 0


def test_nested_arrays_cost_bounded_memory():
    """hiredis would build nested lists (preallocated per header); the parser must stop
    them within a chunk of where they start, with a protocol error, never a MemoryError."""
    for chunk in (b"*99\r\n" * 50_000, b"*2\r\n" + b"*99\r\n$1\r\na\r\n" * 10_000):
        p = FastRespParser()
        tracemalloc.start()
        try:
            fed = 0
            while p.error is None and fed < 50:
                p.feed(chunk if fed == 0 else b"*99\r\n" * 1000)
                fed += 1
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert p.error is not None and fed == 1
        assert peak < 200 * len(chunk) + (8 << 20)


def test_huge_headers_are_refused_before_allocation():
    for bad in (b"*4294967295\r\n", b"*1048577\r\n", b"*1\r\n$17000000\r\n", b"*1\r\n%99999999\r\n"):
        p = FastRespParser()
        assert p.feed(encode_command("PING") + bad) == [[b"PING"]]
        assert p.error is not None
