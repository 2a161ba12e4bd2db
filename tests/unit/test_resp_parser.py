"""RESP2 parser and encoder (ringkv.net.resp): pure, no sockets."""

from __future__ import annotations

import random

import pytest

from ringkv.config import LimitsConfig
from ringkv.errors import ProtocolError
from ringkv.net import resp
from ringkv.net.resp import RespLimits, RespParser, encode_command, split_inline
from ringkv.net.resp_fast import FastRespParser


@pytest.fixture(params=[RespParser, FastRespParser], ids=["python", "hiredis"])
def Parser(request):
    """Every parser test runs against both parsers: the exact Python one and the server's."""
    return request.param


def feed_bytewise(parser, data: bytes) -> list[list[bytes]]:
    out = []
    for i in range(len(data)):
        out += parser.feed(data[i:i + 1])
    return out


def test_one_command(Parser):
    assert Parser().feed(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n") == [[b"GET", b"k"]]


def test_pipelined_commands_come_out_in_order(Parser):
    data = b"".join(encode_command("SET", f"k{i}", f"v{i}") for i in range(100))
    cmds = Parser().feed(data)
    assert cmds == [[b"SET", f"k{i}".encode(), f"v{i}".encode()] for i in range(100)]


def test_partial_input_byte_by_byte(Parser):
    data = encode_command("SET", "key", b"\r\n\x00binary$*") + b"PING\r\n" + encode_command("GET", "key")
    parser = Parser()
    assert feed_bytewise(parser, data) == [[b"SET", b"key", b"\r\n\x00binary$*"], [b"PING"],
                                           [b"GET", b"key"]]
    assert parser.buffered == 0 and parser.error is None


def test_random_split_points_give_the_same_commands(Parser):
    rng = random.Random(7)
    cmds = [[b"SET", bytes(rng.randrange(256) for _ in range(rng.randrange(50))), b"x" * rng.randrange(300)]
            for _ in range(50)]
    data = b"".join(encode_command(*c) for c in cmds)
    for _ in range(20):
        parser, out, pos = Parser(), [], 0
        while pos < len(data):
            step = rng.randrange(1, 40)
            out += parser.feed(data[pos:pos + step])
            pos += step
        assert out == cmds


def test_empty_bulk_and_empty_arrays(Parser):
    parser = Parser()
    assert parser.feed(b"*0\r\n*-1\r\n*2\r\n$4\r\nECHO\r\n$0\r\n\r\n") == [[b"ECHO", b""]]


def test_inline_commands(Parser):
    parser = Parser()
    assert parser.feed(b"PING\r\nset a b\n\r\n   \r\nGET a\r\n") == [[b"PING"], [b"set", b"a", b"b"],
                                                                    [b"GET", b"a"]]


def test_inline_quotes_and_escapes():
    assert split_inline(b'set "a b\\x41\\n" \'it\\\'s\' c') == [b"set", b"a bA\n", b"it's", b"c"]
    with pytest.raises(ProtocolError):
        split_inline(b'set "unterminated')


@pytest.mark.parametrize("bad", [
    b"*x\r\n",                      # non-numeric array length
    b"*2\r\n:1\r\n",                # not a bulk inside the array
    b"*1\r\n$-5\r\n",               # negative bulk length
    b"*1\r\n$1x\r\nab\r\n",         # junk in bulk length
    b"*1\r\n$+3\r\nabc\r\n",        # Redis is strict: no sign
    b"*" + b"9" * 40 + b"\r\n",     # absurd header
])
def test_malformed_input_is_a_protocol_error(Parser, bad):
    parser = Parser()
    good = encode_command("PING")
    assert parser.feed(good + bad + good) == [[b"PING"]]
    assert parser.error is not None
    assert parser.feed(good) == []  # dead after an error


def test_bulk_terminator_checked_by_python_parser_skipped_like_redis_by_hiredis():
    """The Python parser rejects a bulk not followed by CRLF; hiredis (and Redis itself,
    processMultibulkBuffer) skip those two bytes unchecked. Either way the stream position
    is the bulk length + 2, so nothing is misread after it."""
    good, bad = encode_command("PING"), b"*1\r\n$3\r\nabcXY"
    parser = RespParser()
    assert parser.feed(good + bad + good) == [[b"PING"]] and parser.error is not None
    fast = FastRespParser()
    assert fast.feed(good + bad + good) == [[b"PING"], [b"abc"], [b"PING"]] and fast.error is None


def test_limits(Parser):
    limits = RespLimits(max_bulk_bytes=10, max_array_len=3, max_inline_bytes=16, max_command_bytes=60)
    p = Parser(limits)
    p.feed(b"*1\r\n$11\r\n")
    assert "bulk length 11" in str(p.error)
    p = Parser(limits)
    p.feed(b"*4\r\n")
    assert "multibulk length 4" in str(p.error)
    p = Parser(limits)
    p.feed(b"x" * 17)
    assert "inline" in str(p.error)
    p = Parser(limits)
    p.feed(b"PING " + b"y" * 20 + b"\r\n")
    assert "inline" in str(p.error)
    p = Parser(limits)
    p.feed(b"*3\r\n" + b"$10\r\n" + b"a" * 10 + b"\r\n" + b"$10\r\n" + b"a" * 10 + b"\r\n" + b"$10\r\n")
    assert "command over the limit" in str(p.error)
    assert Parser(limits).feed(b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$10\r\n0123456789\r\n") == [
        [b"a", b"b", b"0123456789"]]


def test_limits_from_config():
    limits = RespLimits.from_config(LimitsConfig(max_frame_bytes=2 * 1024 * 1024))
    assert limits.max_bulk_bytes == 2 * 1024 * 1024


def test_large_bulk_in_chunks_is_not_rescanned(Parser):
    value = b"v" * 1_000_000
    data = encode_command("SET", "k", value)
    parser, out = Parser(), []
    for i in range(0, len(data), 4096):
        out += parser.feed(data[i:i + 4096])
    assert out == [[b"SET", b"k", value]]


def test_random_garbage_never_raises(Parser):
    rng = random.Random(1)
    for _ in range(300):
        parser = Parser(RespLimits(max_bulk_bytes=1000, max_inline_bytes=200))
        junk = bytes(rng.choice(b"*$:\r\n-+0123456789abc ") for _ in range(rng.randrange(200)))
        for i in range(0, len(junk), 7):
            for cmd in parser.feed(junk[i:i + 7]):
                assert isinstance(cmd, list) and cmd and all(isinstance(a, bytes) for a in cmd)


def test_encoders():
    assert resp.simple("OK") == b"+OK\r\n"
    assert resp.error("ERR bad\r\nthing") == b"-ERR bad  thing\r\n"
    assert resp.integer(-3) == b":-3\r\n"
    assert resp.bulk(b"ab") == b"$2\r\nab\r\n" and resp.bulk(None) == b"$-1\r\n"
    assert resp.bulk_array([b"a", None]) == b"*2\r\n$1\r\na\r\n$-1\r\n"
    assert resp.array(None) == b"*-1\r\n"
    assert resp.encode([1, "x", None, [b"y"], resp.RespError("ERR e")]) == (
        b"*5\r\n:1\r\n$1\r\nx\r\n$-1\r\n*1\r\n$1\r\ny\r\n-ERR e\r\n")
    assert resp.encode({"a": 1}) == b"*2\r\n$1\r\na\r\n:1\r\n"
    assert resp.encode_map({"a": 1}, 3) == b"%1\r\n$1\r\na\r\n:1\r\n"


def test_encoder_output_parses_back(Parser):
    cmd = [b"MSET", b"k\r\n", b"", b"\x00" * 3]
    assert Parser().feed(resp.bulk_array(cmd)) == [cmd]
