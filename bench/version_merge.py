"""The storage engine's merge of two encoded version sets: the shortcut against the full join.

A replica merges every copy it receives into the key's memtable entry with
``versions.merge_bytes``. The usual copy is the key's next write, minted by a coordinator
that had read the replica's version, so it supersedes what the replica holds, and
``merge_bytes`` answers from the flat arrays (docs/decisions.md D31). This script times,
in one process and one run, per call:

- ``merge_bytes`` on that usual case (the shortcut),
- the full join it replaces, ``encode(join(decode(older), decode(newer)))``,
- ``merge_bytes`` on two concurrent writes (siblings: no shortcut applies, so the full
  join runs, after the shortcut's checks),
- a replica's check of the set it receives: ``decode`` (what replicas ran before
  2026-12-08) and ``check`` (what they run since: the same checks, no set built),
- ``encode`` of the coordinator's new set with ``msgpack.packb`` and with a reused
  ``msgpack.Packer`` (what a node passes),

for a key written at three replicas in turn (a 3-entry vv) and 100-byte values, and prints
the ratios. Which build runs (compiled or source) is printed first.

    python bench/version_merge.py
    python bench/version_merge.py --calls 500000
"""

from __future__ import annotations

import argparse
import json
import time

import msgpack

from ringkv import compiled
from ringkv import versions as v


def per_call_us(fn, calls: int, repeat: int = 5) -> float:
    """Best of ``repeat`` timings of ``calls`` calls, in microseconds per call."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, time.perf_counter() - t0)
    return best / calls * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=100_000, help="calls per timing (5 timings)")
    a = ap.parse_args()
    states = [v.EMPTY]
    for i in range(5):  # a key written by n1, n2, n3, n1, n2, each from the one before
        last = states[-1]
        states.append(v.update(last, last.vv, f"n{i % 3 + 1}", b"x" * 100, float(i)))
    vs = states[-1]  # vv {n1: 2, n2: 2, n3: 1}, one sibling (n2, 2)
    stored = v.encode(vs)
    # the next write, minted at n3 from the stored version (as Node._mint does for a
    # write without a context: the context is the local vv)
    nxt = v.encode(v.update(vs, vs.vv, "n3", b"y" * 100, 9.0))
    # a write minted at n1 from the version before the last: concurrent with it
    older = states[-2]
    concurrent = v.encode(v.update(older, older.vv, "n1", b"z" * 100, 9.0))
    for other in (nxt, concurrent):
        assert v.merge_bytes(stored, other) == v.encode(v.join(v.decode(stored), v.decode(other)))
    assert v.merge_bytes(stored, nxt) == nxt
    assert len(v.decode(v.merge_bytes(stored, concurrent)).siblings) == 2

    def full() -> bytes:
        return v.encode(v.join(v.decode(stored), v.decode(nxt)))

    build = compiled.status().get("ringkv.versions", "?")
    out = {
        "build": build,
        "shortcut_us": per_call_us(lambda: v.merge_bytes(stored, nxt), a.calls),
        "full_join_us": per_call_us(full, a.calls),
        "siblings_us": per_call_us(lambda: v.merge_bytes(stored, concurrent), a.calls),
    }
    new_vs = v.decode(nxt)
    out["decode_us"] = per_call_us(lambda: v.decode(nxt), a.calls)
    if hasattr(v, "check"):  # absent in builds before 2026-12-08
        out["check_us"] = per_call_us(lambda: v.check(nxt), a.calls)
    out["encode_us"] = per_call_us(lambda: v.encode(new_vs), a.calls)
    try:
        pack = msgpack.Packer().pack
        v.encode(new_vs, pack)
    except TypeError:  # builds before 2026-12-08: no pack argument
        pass
    else:
        out["encode_packer_us"] = per_call_us(lambda: v.encode(new_vs, pack), a.calls)
    print(f"ringkv.versions: {build}")
    print(f"merge_bytes, next write of the key (shortcut): {out['shortcut_us']:6.2f} us")
    print(f"encode(join(decode, decode)), the same merge: {out['full_join_us']:6.2f} us"
          f"  ({out['full_join_us'] / out['shortcut_us']:.2f}x the shortcut)")
    print(f"merge_bytes, concurrent writes (full join):   {out['siblings_us']:6.2f} us"
          f"  ({out['siblings_us'] / out['full_join_us']:.2f}x the bare full join)")
    print(f"decode, a replica's check before 2026-12-08:  {out['decode_us']:6.2f} us")
    if "check_us" in out:
        print(f"check, a replica's check since:              {out['check_us']:6.2f} us"
              f"  ({out['check_us'] / out['decode_us']:.2f}x decode)")
    print(f"encode of the next write's set (packb):       {out['encode_us']:6.2f} us")
    if "encode_packer_us" in out:
        print(f"encode with a reused Packer (the node's):     {out['encode_packer_us']:6.2f} us"
              f"  ({out['encode_packer_us'] / out['encode_us']:.2f}x packb)")
    print(json.dumps({k: round(x, 3) if isinstance(x, float) else x for k, x in out.items()}))


if __name__ == "__main__":
    main()
