"""Sans-IO framing: bytes in, messages out; no sockets."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ringkv.errors import ProtocolError, RingkvError, TooLarge, Unavailable, from_wire
from ringkv.net.frames import ERROR, HEADER, OK, REQUEST, FrameDecoder, FrameEncoder


def frame_of(obj: object) -> bytes:
    payload = msgpack.packb(obj, use_bin_type=True)
    return HEADER.pack(len(payload)) + payload


def test_request_roundtrip_keeps_bytes_and_str_apart():
    enc, dec = FrameEncoder(), FrameDecoder()
    data = enc.request(7, "put", {"key": b"k", "value": b"\x00\xff", "w": "QUORUM", "ttl": None})
    assert dec.feed(data) == [(REQUEST, 7, "put", {"key": b"k", "value": b"\x00\xff",
                                                   "w": "QUORUM", "ttl": None})]
    assert dec.buffered == 0


def test_ok_and_error_frames():
    enc, dec = FrameEncoder(), FrameDecoder()
    err = Unavailable(2, 1, "n3 down")
    out = dec.feed(enc.ok(1, {"context": b"c"}) + enc.error(2, err))
    assert out[0] == (OK, 1, "", {"context": b"c"})
    kind, rid, code, body = out[1]
    assert (kind, rid, code) == (ERROR, 2, "Unavailable")
    back = from_wire(body)
    assert isinstance(back, Unavailable) and (back.required, back.alive) == (2, 1)


def test_frames_split_at_every_byte():
    enc = FrameEncoder()
    stream = b"".join(enc.request(i, "get", {"key": b"k%d" % i}) for i in range(5))
    for cut in range(len(stream) + 1):
        dec = FrameDecoder()
        got = dec.feed(stream[:cut]) + dec.feed(stream[cut:])
        assert [m[1] for m in got] == list(range(5))


def test_header_over_limit_is_too_large_and_decoder_stays_failed():
    dec = FrameDecoder(max_frame_bytes=100)
    with pytest.raises(TooLarge) as info:
        dec.feed(HEADER.pack(101) + b"x")
    assert info.value.size == 101 and info.value.limit == 100
    with pytest.raises(TooLarge):
        dec.feed(FrameEncoder().request(1, "ping", {}))


def test_encoder_refuses_frame_over_limit():
    with pytest.raises(TooLarge):
        FrameEncoder(max_frame_bytes=64).request(1, "put", {"value": b"x" * 100})


def test_encoder_refuses_unencodable_body():
    with pytest.raises(ProtocolError):
        FrameEncoder().request(1, "put", {"value": object()})


@pytest.mark.parametrize("payload, rid", [
    (b"\xc1", 0),                                  # never-used msgpack byte
    (msgpack.packb([0, 1, "get"]), 0),             # 3 elements
    (msgpack.packb({"a": 1}), 0),                  # not an array
    (msgpack.packb([0, -1, "get", {}]), 0),        # negative request id
    (msgpack.packb([9, 5, "get", {}]), 5),         # unknown kind: the id is known
    (msgpack.packb([0, 6, b"get", {}]), 6),        # method as bytes
    (msgpack.packb([0, 8, "get", [1]]), 8),        # body not a map
])
def test_malformed_payloads_are_protocol_errors_tagged_with_request_id(payload, rid):
    dec = FrameDecoder()
    with pytest.raises(ProtocolError) as info:
        dec.feed(HEADER.pack(len(payload)) + payload)
    assert info.value.request_id == rid
    assert isinstance(info.value, RingkvError)


def test_messages_before_a_bad_frame_are_not_returned_once_it_fails():
    # A decoder fails as a whole: the connection is closed, earlier messages in the same
    # chunk are dropped with it (the peer gets the error instead).
    dec = FrameDecoder()
    with pytest.raises(ProtocolError):
        dec.feed(FrameEncoder().request(1, "ping", {}) + frame_of([0, 2, "x"]))


messages = st.lists(st.tuples(
    st.sampled_from([REQUEST, OK, ERROR]), st.integers(0, 2**64 - 1), st.text(max_size=8),
    st.dictionaries(st.text(max_size=4), st.one_of(st.binary(max_size=40), st.integers(-5, 5),
                                                   st.none(), st.text(max_size=5)), max_size=4)),
    max_size=8)


@settings(max_examples=150, deadline=None)
@given(messages, st.lists(st.integers(1, 50), max_size=30))
def test_any_chunking_yields_the_same_messages(msgs, cuts):
    enc = FrameEncoder()
    stream = b"".join(enc.encode(*m) for m in msgs)
    dec, got, pos = FrameDecoder(), [], 0
    for n in cuts:
        got += dec.feed(stream[pos:pos + n])
        pos += n
    got += dec.feed(stream[pos:])
    assert got == [tuple(m) for m in msgs]
    assert dec.buffered == 0
