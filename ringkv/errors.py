"""The one error hierarchy of ringkv.

Every error a user or operator can see is one of these. Lower layers raise their own
member of the tree; each boundary (storage -> node, node -> wire, wire -> client)
translates rather than leaking library exceptions. ``retriable`` tells the client's
retry logic whether sending the same request again may succeed.

    RingkvError                      (retriable=False unless noted)
    ├── TooLarge(what, size, limit)          key, value or frame over its configured limit
    ├── InvalidRequest(message)              malformed or nonsensical request from a client
    │   └── ProtocolError(message)           bytes on the wire that do not parse as a frame
    ├── Corruption(path, offset, detail)     a checksum or format check failed on disk
    ├── Unavailable(required, alive)         retriable: too few live replicas; nothing written
    ├── Timeout(required, received)          retriable: too few replies in time; outcome unknown
    ├── Overloaded(detail)                   retriable: a bounded queue is full; back off
    ├── Closed(detail)                       the engine, node or connection is shut down
    ├── StorageFull(path, free_bytes, min_free_bytes)  the data directory is nearly full; nothing written
    ├── AuthenticationFailed(detail)         the secret handshake or the TLS handshake failed
    └── ConfigError(field, message)          invalid configuration, found at start-up

Errors cross the wire as ``{"code": <class name>, "message": str, "fields": {...}}`` and
are rebuilt on the other side with :func:`from_wire`, so a client catches the same type
the node raised.
"""

from __future__ import annotations

from typing import Any


class RingkvError(Exception):
    """Base of every ringkv error."""

    retriable: bool = False

    def fields(self) -> dict[str, Any]:
        """The structured fields of this error, as sent on the wire."""
        return {}

    def to_wire(self) -> dict[str, Any]:
        """Encode as a plain dict (msgpack/JSON friendly)."""
        return {"code": type(self).__name__, "message": str(self), "fields": self.fields()}


class TooLarge(RingkvError):
    """A key, value or frame is larger than its configured limit."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"{what} is {size} bytes, over the limit of {limit} bytes")
        self.what, self.size, self.limit = what, size, limit

    def fields(self) -> dict[str, Any]:
        return {"what": self.what, "size": self.size, "limit": self.limit}


class InvalidRequest(RingkvError):
    """A request that is well framed but makes no sense (bad level, bad context, ...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def fields(self) -> dict[str, Any]:
        return {"message": self.message}


class ProtocolError(InvalidRequest):
    """Bytes on the wire that do not form a valid frame or message."""


class Corruption(RingkvError):
    """A checksum or format check failed while reading a file."""

    def __init__(self, path: str, offset: int, detail: str = "checksum mismatch") -> None:
        super().__init__(f"corruption in {path} at offset {offset}: {detail}")
        self.path, self.offset, self.detail = str(path), offset, detail

    def fields(self) -> dict[str, Any]:
        return {"path": self.path, "offset": self.offset, "detail": self.detail}


class Unavailable(RingkvError):
    """Fewer replicas are alive than the consistency level requires; nothing was written."""

    retriable = True

    def __init__(self, required: int, alive: int, detail: str = "") -> None:
        extra = f" ({detail})" if detail else ""
        super().__init__(f"unavailable: {required} replicas required, {alive} alive{extra}")
        self.required, self.alive, self.detail = required, alive, detail

    def fields(self) -> dict[str, Any]:
        return {"required": self.required, "alive": self.alive, "detail": self.detail}


class Timeout(RingkvError):
    """Too few replicas answered in time. A write may or may not have been applied."""

    retriable = True

    def __init__(self, required: int, received: int, detail: str = "") -> None:
        extra = f" ({detail})" if detail else ""
        super().__init__(f"timeout: {required} replies required, {received} received{extra}")
        self.required, self.received, self.detail = required, received, detail

    def fields(self) -> dict[str, Any]:
        return {"required": self.required, "received": self.received, "detail": self.detail}


class Overloaded(RingkvError):
    """A bounded queue or buffer is full; the caller should back off and retry."""

    retriable = True

    def __init__(self, detail: str) -> None:
        super().__init__(f"overloaded: {detail}")
        self.detail = detail

    def fields(self) -> dict[str, Any]:
        return {"detail": self.detail}


class Closed(RingkvError):
    """The engine, node or connection has been shut down."""

    def __init__(self, detail: str = "closed") -> None:
        super().__init__(detail)
        self.detail = detail

    def fields(self) -> dict[str, Any]:
        return {"detail": self.detail}


class StorageFull(RingkvError):
    """A node refused a write because its data directory has less free space than
    ``storage.min_free_bytes``: nothing was written. Reads still work, and writes resume on
    their own once space is freed (no restart). Not retriable at once: free space first."""

    def __init__(self, path: str, free_bytes: int, min_free_bytes: int, detail: str = "") -> None:
        super().__init__(
            f"storage full: {path} has {_mib(free_bytes)} free; " + (detail or (
                f"writes need storage.min_free_bytes = {_mib(min_free_bytes)}, so nothing was "
                "written (free space there, or grow the disk: writes resume by themselves)")))
        self.path, self.free_bytes, self.min_free_bytes = path, free_bytes, min_free_bytes
        self.detail = detail

    def fields(self) -> dict[str, Any]:
        return {"path": self.path, "free_bytes": self.free_bytes,
                "min_free_bytes": self.min_free_bytes, "detail": self.detail}


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class AuthenticationFailed(RingkvError):
    """A connection did not prove it knows the cluster secret (or the peer did not), or
    its TLS handshake failed (an untrusted certificate, a peer without TLS): no request on
    it is served. Not retriable: the same secret or certificate fails the same way."""

    def __init__(self, detail: str = "authentication failed") -> None:
        super().__init__(detail)
        self.detail = detail

    def fields(self) -> dict[str, Any]:
        return {"detail": self.detail}


class ConfigError(RingkvError):
    """A configuration value is invalid."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"config {field}: {message}")
        self.field, self.message = field, message

    def fields(self) -> dict[str, Any]:
        return {"field": self.field, "message": self.message}


_BY_CODE: dict[str, type[RingkvError]] = {
    cls.__name__: cls
    for cls in (TooLarge, InvalidRequest, ProtocolError, Corruption, Unavailable, Timeout,
                Overloaded, Closed, StorageFull, AuthenticationFailed, ConfigError)
}


def from_wire(payload: dict[str, Any]) -> RingkvError:
    """Rebuild an error sent with :meth:`RingkvError.to_wire`; unknown codes become RingkvError."""
    cls = _BY_CODE.get(str(payload.get("code")))
    fields = payload.get("fields") or {}
    if cls is not None:
        try:
            return cls(**fields)
        except TypeError:
            pass
    return RingkvError(str(payload.get("message", "remote error")))
