"""ringkv status's view of the cluster: the security line an operator reads to find a node
left out of a rolling change of the cluster secret or TLS (ringkv.cluster_view)."""

from __future__ import annotations

from ringkv.cluster_view import ClusterView, pending_hints


def _reply(*node_ids: str) -> dict:
    return {"replication": {"dc1": 3},
            "nodes": [{"node_id": nid, "state": "normal", "host": "127.0.0.1", "port": 7400 + i,
                       "tokens": [1000 * (i + 1)], "dc": "dc1", "rack": "rack1"}
                      for i, nid in enumerate(node_ids)]}


def _status(secret: bool, tls: bool, load: int = 10, hints: dict | None = None) -> dict:
    return {"authenticated": secret, "tls": tls, "load": load,
            "hints": {"pending": hints or {}}}


def test_security_line_when_every_node_agrees():
    view = ClusterView("127.0.0.1:7400", _reply("n1", "n2"),
                       {"n1": _status(True, True), "n2": _status(True, True)})
    assert view.security_line() == "Security: cluster secret on; TLS on (all 2 nodes)"
    plain = ClusterView("127.0.0.1:7400", _reply("n1"), {"n1": _status(False, False)})
    assert plain.security_line() == "Security: cluster secret off; TLS off (the one node)"


def test_security_line_names_the_nodes_that_differ_and_counts_the_silent():
    view = ClusterView("127.0.0.1:7400", _reply("n1", "n2", "n3", "n4"),
                       {"n1": _status(True, False), "n2": _status(False, False),
                        "n3": _status(True, False), "n4": None})
    assert view.security_line() == ("Security: cluster secret on n1, n3 but off on n2; TLS off "
                                    "(the 3 of 4 nodes that answered)")
    nodes = {n["node_id"]: n for n in view.as_dict()["nodes"]}
    assert (nodes["n1"]["authenticated"], nodes["n2"]["authenticated"], nodes["n4"]["authenticated"]) \
        == (True, False, None)
    assert nodes["n4"]["load"] is None and nodes["n1"]["load"] == 10


def test_no_security_line_without_answers_and_hints_come_from_the_same_replies():
    silent = ClusterView("127.0.0.1:7400", _reply("n1"), {"n1": None})
    assert silent.security_line() is None
    view = ClusterView("127.0.0.1:7400", _reply("n1", "n2"),
                       {"n1": _status(False, False, hints={"n2": 4}), "n2": None})
    assert pending_hints(view) == {"n1": {"n2": 4}}


def _engine(free: int, full: bool = False) -> dict:
    return dict(_status(False, False), engine={"free_bytes": free, "storage_full": full,
                                               "min_free_bytes": 256 << 20})


def test_storage_line_names_the_nodes_that_refuse_writes():
    view = ClusterView("127.0.0.1:7400", _reply("n1", "n2", "n3"),
                       {"n1": _engine(80 << 30), "n2": _engine(5 << 30), "n3": _engine(12 << 20, True)})
    assert view.storage_line() == ("Storage: n3 refuses writes, disk nearly full (12.00 MiB free, "
                                   "under storage.min_free_bytes = 256.00 MiB)")
    nodes = {n["node_id"]: n for n in view.as_dict()["nodes"]}
    assert (nodes["n3"]["storage_full"], nodes["n1"]["storage_full"]) == (True, False)
    ok = ClusterView("127.0.0.1:7400", _reply("n1", "n2"),
                     {"n1": _engine(80 << 30), "n2": _engine(5 << 30)})
    assert ok.storage_line() == "Storage: every node accepts writes; least free space 5.00 GiB (n2)"
    silent = ClusterView("127.0.0.1:7400", _reply("n1"), {"n1": None})
    assert silent.storage_line() is None and silent.as_dict()["nodes"][0]["free_bytes"] is None


def test_storage_line_names_a_node_whose_flushes_fail():
    failing = dict(_engine(80 << 30), engine={"free_bytes": 80 << 30, "flush_failures": 3,
                                              "last_flush_error": "OSError: [Errno 24] Too many open files"})
    view = ClusterView("127.0.0.1:7400", _reply("n1", "n2"), {"n1": _engine(5 << 30), "n2": failing})
    assert view.storage_line() == ("Storage: n2 cannot flush (3 attempts, last: OSError: "
                                   "[Errno 24] Too many open files)")


def test_storage_line_names_a_node_whose_commit_log_waits_for_space():
    stalled = dict(_status(False, False), engine={"free_bytes": 4096, "storage_full": False,
                                                  "commitlog_stalled": True})
    view = ClusterView("127.0.0.1:7400", _reply("n1", "n2"), {"n1": _engine(5 << 30), "n2": stalled})
    assert view.storage_line() == ("Storage: n2 commit log waits for disk space (writes "
                                   "unacknowledged until it fits; 4.00 KiB free)")


def test_handover_line_names_the_nodes_still_writing_to_the_old_replicas():
    view = ClusterView("127.0.0.1:7400", _reply("n1", "n2", "n3"),
                       {"n1": dict(_status(False, False), handover_s=12.4),
                        "n2": dict(_status(False, False), handover_s=0.0),
                        "n3": dict(_status(False, False), handover_s=27.9)})
    assert view.handover_line() == ("Handover after a join: n1, n3 also write the moved ranges "
                                    "to their previous replicas (W + P), 28s more at most")
    quiet = ClusterView("127.0.0.1:7400", _reply("n1"), {"n1": _status(False, False)})
    assert quiet.handover_line() is None
