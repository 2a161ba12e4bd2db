"""Membership: record merging, failure detection with agreement, and whole clusters.

Single-node tests feed hand-made messages to one Membership; cluster tests run N of them
on ringkv.testing.sim_router (virtual time, seeded loss and delay): no sockets, no sleeps.
"""

from __future__ import annotations

import ast
import math
import random

import msgpack
import pytest

from ringkv import membership as mb
from ringkv.compiled import source_path
from ringkv import membership_record as mr
from ringkv.errors import ConfigError, ProtocolError
from ringkv.membership_record import encode_entry
from ringkv.membership import (DOWN, JOINING, LEAVING, NORMAL, REMOVED, Member, Membership,
                               MembershipConfig, Send, StateChanged)
from ringkv.testing.sim_router import membership_cluster, start_member

CFG = MembershipConfig()
T0 = 1000.0


def node(node_id="a", port=1, config=None, **kw):
    info = Member(node_id, port=port, state=NORMAL, generation=1, **kw)
    return Membership(info, random.Random(node_id), config)


def entry(node_id, hb=1, gen=1, state=NORMAL, age=0.0, down=False, port=9):
    return encode_entry(Member(node_id, port=port, state=state, generation=gen,
                                   heartbeat=hb), age, down)


def gossip(sender, *entries, hb=1):
    return {"from": entry(sender, hb=hb, port=ord(sender[0])), "members": list(entries)}


def sends(effects, kind=None):
    return [e for e in effects if isinstance(e, Send) and kind in (None, e.kind)]


def all_see(nodes, target, state, among=None):
    ids = among or [i for i in nodes if i != target]
    return all(nodes[i].state_of(target) == state for i in ids)


# ----- config, records, wire ---------------------------------------------------------

def test_config_validation_names_the_field():
    with pytest.raises(ConfigError, match="fanout"):
        MembershipConfig(fanout=0).validate()
    with pytest.raises(ConfigError, match="suspect_after_s"):
        MembershipConfig(suspect_after_s=1.0).validate()
    assert MembershipConfig().validate() == MembershipConfig()


def test_version_orders_generation_then_removed_then_heartbeat():
    old_life = Member("x", generation=1, heartbeat=900)
    removed = Member("x", generation=1, heartbeat=5, state=REMOVED)
    new_life = Member("x", generation=2, heartbeat=1)
    assert old_life.version() < removed.version() < new_life.version()


def test_member_maps_to_ring_node_info():
    info = Member("x", host="h", port=1, http_port=2, dc="d", rack="r", tokens=(5,)).node_info()
    assert (info.node_id, info.tokens, info.dc, info.rack, info.host, info.port,
            info.http_port) == ("x", (5,), "d", "r", "h", 1, 2)


def test_every_body_survives_msgpack():
    a = node("a", tokens=(2**64 - 1, 0))
    a.on_message("gossip", gossip("b", entry("c", age=7.5)), T0)
    effects = a.tick(T0 + 10) + a.on_message("probe_req", {"from": entry("b"), "target": "c"}, T0)
    assert sends(effects)
    for e in sends(effects):
        assert msgpack.unpackb(msgpack.packb(e.body), raw=False) == e.body


@pytest.mark.parametrize("kind,body", [
    ("bogus", {"from": None}),
    ("gossip", {"from": {"id": "b"}}),
    ("gossip", {"from": None, "members": None}),
    ("gossip", "not a map"),
    ("probe_req", {"from": None, "target": 3}),
])
def test_malformed_messages_raise_protocol_error(kind, body):
    if isinstance(body, dict) and body.get("from") is None:
        body = {**body, "from": entry("b")}
    with pytest.raises(ProtocolError):
        node().on_message(kind, body, T0)


def test_a_malformed_message_changes_nothing():
    a = node()
    with pytest.raises(ProtocolError):
        a.on_message("gossip", gossip("b", entry("c"), {**entry("d"), "tokens": ["x"]}), T0)
    assert [m.node_id for m in a.members()] == ["a"]
    with pytest.raises(ProtocolError):
        a.on_message("ping", {"from": entry("b"), "origin": 7}, T0)


def test_bad_entry_field_types_raise_protocol_error():
    bad = {**entry("c"), "hb": "7"}
    with pytest.raises(ProtocolError, match="hb"):
        node().on_message("gossip", gossip("b", bad), T0)
    with pytest.raises(ProtocolError):
        node().on_message("gossip", gossip("b", {**entry("c"), "state": DOWN}), T0)


# ----- merging -----------------------------------------------------------------------

def test_newer_record_wins_older_is_ignored():
    a = node()
    a.on_message("gossip", gossip("b", entry("c", hb=5, port=50)), T0)
    a.on_message("gossip", gossip("b", entry("c", hb=3, port=30)), T0)
    assert a.member("c").heartbeat == 5 and a.member("c").port == 50
    a.on_message("gossip", gossip("b", entry("c", hb=1, gen=2, port=60)), T0)
    assert (a.member("c").generation, a.member("c").port) == (2, 60)


def test_merge_order_does_not_matter():
    items = [entry("c", hb=h, gen=g, state=s) for h, g, s in
             [(3, 1, NORMAL), (9, 1, LEAVING), (4, 1, REMOVED), (1, 2, JOINING), (2, 2, NORMAL)]]
    finals = set()
    for seed in range(20):
        a = node()
        order = items[:]
        random.Random(seed).shuffle(order)
        for e in order:
            a.on_message("gossip", gossip("b", e), T0)
        finals.add(a.member("c"))
    assert len(finals) == 1 and finals.pop().version() == (2, 0, 2)


def test_discovery_emits_state_changed_and_lists_are_sorted():
    a = node()
    effects = a.on_message("gossip", gossip("b", entry("d"), entry("c", state=JOINING)), T0)
    assert StateChanged("c", "", JOINING) in effects and StateChanged("b", "", NORMAL) in effects
    assert [m.node_id for m in a.members()] == ["a", "b", "c", "d"]
    assert [m.node_id for m in a.ring_members()] == ["a", "b", "c", "d"]


def test_gossip_is_answered_with_our_list_minus_the_sender():
    a = node()
    a.on_message("gossip", gossip("c"), T0)
    (ack,) = sends(a.on_message("gossip", gossip("b"), T0), "gossip_ack")
    assert ack.node_id == "b" and ack.port == ord("b")
    assert ack.body["from"]["id"] == "a"
    assert [e["id"] for e in ack.body["members"]] == ["c"]


def compact(node_id, **kw):
    return {k: v for k, v in entry(node_id, **kw).items()
            if k in ("id", "gen", "hb", "state", "age", "down")}


def test_digests_are_compact_and_missing_records_travel_in_full():
    a = node("a", tokens=(1, 2, 3))
    a.on_message("gossip", gossip("c"), T0)
    (push,) = sends(a.tick(T0 + 1), "gossip")
    assert "tokens" in push.body["from"]
    assert [sorted(e) for e in push.body["members"]] == [sorted(compact("c"))]
    # b knows d, which a lacks, and lacks c, which a has: b's ack sends d and wants c.
    b = node("b", port=ord("b"))
    b.on_message("gossip", gossip("d"), T0)
    (ack,) = sends(b.on_message("gossip", push.body, T0 + 1), "gossip_ack")
    assert ack.body["want"] == ["c"] and b.member("c") is None
    assert [e["id"] for e in ack.body["full"]] == ["d"] and "tokens" in ack.body["full"][0]
    (third,) = sends(a.on_message("gossip_ack", ack.body, T0 + 1.1))
    assert third.kind == "gossip_full" and third.node_id == "b"
    assert a.member("d") is not None
    b.on_message("gossip_full", third.body, T0 + 1.2)
    assert b.member("c").port == ord("c")


def test_compact_entry_of_a_new_generation_waits_for_the_full_record():
    a = node()
    a.on_message("gossip", gossip("b", entry("c", hb=9, port=5)), T0)
    (ack,) = sends(a.on_message("gossip", gossip("b", compact("c", gen=2, hb=1)), T0))
    assert ack.body["want"] == ["c"] and a.member("c").generation == 1
    a.on_message("gossip", gossip("b", compact("c", hb=12)), T0)
    assert a.member("c").heartbeat == 12 and a.member("c").port == 5  # static fields kept


def test_tick_bumps_heartbeat_and_gossips_to_fanout_peers_and_unknown_seeds():
    a = node()
    a.add_seed("10.0.0.9", 7400)
    a.add_seed("10.0.0.9", 7400)
    a.on_message("gossip", gossip("b", *[entry(c) for c in "cdef"]), T0)
    effects = a.tick(T0 + 1)
    assert a.self_member.heartbeat == 1
    out = sends(effects, "gossip")
    assert len([s for s in out if s.node_id]) == CFG.fanout
    assert [(s.host, s.port) for s in out if s.node_id is None] == [("10.0.0.9", 7400)]


def test_a_seed_is_no_longer_contacted_by_address_once_known():
    a = node()
    a.add_seed("127.0.0.1", 9)
    a.on_message("gossip", gossip("b", entry("c", port=9)), T0)
    assert all(s.node_id is not None for s in sends(a.tick(T0 + 1)))


def test_message_from_ourselves_is_ignored():
    a = node()
    assert a.on_message("gossip", {"from": entry("a", port=1), "members": [entry("z")]}, T0) == []
    assert a.member("z") is None


def test_newer_record_of_ourselves_is_absorbed():
    a = node()
    a.on_message("gossip", gossip("b", entry("a", hb=40, gen=1)), T0)
    assert a.self_member.version() > (1, 0, 40)
    effects = a.on_message("gossip", gossip("b", entry("a", hb=1, gen=1, state=REMOVED)), T0)
    assert StateChanged("a", NORMAL, REMOVED) in effects and a.self_member.state == REMOVED


def test_set_state_rejects_down_and_bumps_heartbeat():
    a = node()
    with pytest.raises(ValueError):
        a.set_state(DOWN)
    assert a.set_state(LEAVING) == [StateChanged("a", NORMAL, LEAVING)]
    assert a.self_member.heartbeat == 1 and a.state_of("a") == LEAVING


# ----- failure detection on one node ---------------------------------------------------

def silent_peer(config=None, peers="bc"):
    """Node a that heard from each of ``peers`` once at T0."""
    a = node(config=config)
    for p in peers:
        a.on_message("gossip", gossip(p), T0)
    return a


def test_stale_peer_is_suspected_and_probed_but_not_down_alone():
    a = silent_peer()
    a.on_message("gossip", gossip("c", hb=1), T0 + 4.9)
    assert sends(a.tick(T0 + 4.9)) and not a.suspected("b")
    effects = a.tick(T0 + 5.0)
    assert a.suspected("b") and a.alive("b")
    assert [s.node_id for s in sends(effects, "ping")] == ["b"]  # c was heard at 4.9
    assert [(s.node_id, s.body["target"]) for s in sends(effects, "probe_req")] == [("c", "b")]
    assert not sends(a.tick(T0 + 5.5), "ping")  # probes are paced by probe_interval_s
    assert sends(a.tick(T0 + 6.0), "ping")


def test_a_two_node_cluster_never_declares_down_without_a_second_opinion():
    a = silent_peer(peers="b")
    for t in range(1, 60):
        a.tick(T0 + t)
    assert a.state_of("b") == NORMAL and a.suspected("b")
    lone = silent_peer(MembershipConfig(min_agreeing=1), peers="b")
    assert StateChanged("b", NORMAL, DOWN) in lone.tick(T0 + 5)


def test_stale_probe_ack_confirms_and_declares_down():
    a = silent_peer()
    a.on_message("gossip", gossip("c", hb=2), T0 + 5)
    a.tick(T0 + 5)
    effects = a.on_message("probe_ack", {"from": entry("c", hb=3), "target": "b",
                                          "entry": entry("b", age=5.1)}, T0 + 5.1)
    assert StateChanged("b", NORMAL, DOWN) in effects and not a.alive("b")
    assert [m.node_id for m in a.live_members()] == ["a", "c"]
    assert "b" in [m.node_id for m in a.ring_members()]  # a down node keeps its tokens


def test_fresh_probe_ack_clears_suspicion():
    a = silent_peer()
    a.tick(T0 + 5)
    assert a.suspected("b")
    effects = a.on_message("probe_ack", {"from": entry("c", port=ord("c")), "target": "b",
                                          "entry": entry("b", hb=2, age=0.5)}, T0 + 5.1)
    assert not a.suspected("b") and not sends(effects)
    assert a.tick(T0 + 6) and a.state_of("b") == NORMAL


def test_down_flag_in_gossip_counts_only_while_we_suspect_too():
    a = silent_peer()
    a.on_message("gossip", gossip("c", entry("b", down=True)), T0 + 1)
    assert a.state_of("b") == NORMAL  # c's opinion alone: no agreement
    assert a.tick(T0 + 5.9) and a.state_of("b") == NORMAL  # b heard of at T0+1: not stale
    effects = a.tick(T0 + 6)
    assert StateChanged("b", NORMAL, DOWN) in effects


def test_stale_news_relayed_late_does_not_revive_a_down_node():
    a = silent_peer()
    a.on_message("gossip", gossip("c", entry("b", age=6.0, down=True)), T0 + 6)
    a.tick(T0 + 6)
    assert a.state_of("b") == DOWN
    # c had one heartbeat more than us, but it is 5.5 s old: not evidence of life now.
    a.on_message("gossip", gossip("c", entry("b", hb=2, age=5.5)), T0 + 6.5)
    assert a.state_of("b") == DOWN and a.member("b").heartbeat == 2
    effects = a.on_message("gossip", gossip("b", hb=3), T0 + 7)
    assert StateChanged("b", DOWN, NORMAL) in effects and a.alive("b")


def test_failed_send_probes_indirectly_but_does_not_suspect():
    a = silent_peer(peers="bcd")
    effects = a.on_unreachable("b", T0 + 1)
    assert {s.node_id for s in sends(effects, "probe_req")} == {"c", "d"}
    assert not sends(effects, "ping") and a.alive("b") and not a.suspected("b")
    assert a.on_unreachable("b", T0 + 1.5) == []  # rate limited
    assert a.on_unreachable(None, T0 + 1.5) == [] and a.on_unreachable("zz", T0) == []


def test_probe_req_is_answered_and_relayed_as_a_ping():
    c = node("c")
    c.on_message("gossip", gossip("b"), T0)
    effects = c.on_message("probe_req", {"from": entry("a"), "target": "b"}, T0 + 3)
    (ack,) = sends(effects, "probe_ack")
    assert ack.node_id == "a" and ack.body["entry"]["age"] == pytest.approx(3.0)
    (ping,) = sends(effects, "ping")
    assert ping.node_id == "b" and ping.body["origin"] == "a"
    # b answers c's ping; c forwards the fresh news to a.
    b = node("b", port=ord("b"))
    b.tick(T0)  # b's own heartbeat is now 1, the one c knows
    (pong,) = sends(b.on_message("ping", ping.body, T0 + 3.1))
    assert pong.kind == "ping_ack" and pong.node_id == "c"
    (fwd,) = sends(c.on_message("ping_ack", pong.body, T0 + 3.2))
    assert fwd.kind == "probe_ack" and fwd.node_id == "a" and fwd.body["entry"]["age"] == 0.0


def test_removed_nodes_are_not_probed_gossiped_or_in_the_ring():
    a = silent_peer()
    assert a.remove_node("b") == [StateChanged("b", NORMAL, REMOVED)]
    assert a.remove_node("b") == []
    effects = []
    for t in range(1, 30):
        effects += a.tick(T0 + t)
    assert all(s.node_id != "b" for s in sends(effects))
    assert [m.node_id for m in a.ring_members()] == ["a", "c"] and a.state_of("b") == REMOVED


# ----- clusters on the simulated network -----------------------------------------------

@pytest.mark.parametrize("n", [4, 16, 64])
def test_cluster_converges_in_log_n_rounds(n):
    router, nodes = membership_cluster(n, seed=n)
    start = router.now
    assert router.run_for(60, lambda: all(len(m.live_members()) == n for m in nodes.values()))
    rounds = (router.now - start) / router.interval
    assert rounds <= 2 * math.log2(n) + 2, rounds


def test_killed_node_is_declared_down_by_everyone_in_bounded_time():
    router, nodes = membership_cluster(8, seed=3)
    router.run_for(20)
    router.stop("n05")
    start = router.now
    assert router.run_for(30, lambda: all_see(nodes, "n05", DOWN,
                                              among=[i for i in router.running()]))
    assert router.now - start <= CFG.suspect_after_s + 4 * CFG.gossip_interval_s


def test_one_bad_link_does_not_mark_a_healthy_node_down():
    router, nodes = membership_cluster(6, seed=4)
    router.run_for(20)
    router.block("n01", "n02")
    router.run_for(300)
    downs = [(t, e) for t, e in router.events if isinstance(e, StateChanged) and e.new == DOWN]
    assert downs == []
    assert router.stats.refused > 0  # the link really was cut


def test_partitioned_node_is_down_then_up_again_after_healing():
    router, nodes = membership_cluster(6, seed=5)
    router.run_for(20)
    others = [i for i in nodes if i != "n03"]
    router.partition(["n03"], others)
    assert router.run_for(30, lambda: all_see(nodes, "n03", DOWN))
    router.heal()
    assert router.run_for(30, lambda: all_see(nodes, "n03", NORMAL))
    # and n03, which saw everyone go down, sees them back too
    assert all(nodes["n03"].state_of(i) == NORMAL for i in others)


def test_paused_node_resumes_without_accusing_anyone():
    """SIGSTOP then SIGCONT: the node's view is 20 s stale, but nobody else agrees."""
    router, nodes = membership_cluster(6, seed=9)
    router.run_for(20)
    router.stop("n04")  # the same object comes back below, with its stale state
    assert router.run_for(30, lambda: all_see(nodes, "n04", DOWN, among=router.running()))
    resumed_at = router.now
    router.add("n04", "127.0.0.1", 7004, nodes["n04"])
    assert router.run_for(10, lambda: all_see(nodes, "n04", NORMAL))
    router.run_for(30)
    downs = [e for t, e in router.events
             if t > resumed_at and isinstance(e, StateChanged) and e.new == DOWN]
    assert downs == [] and nodes["n04"].counters["declared_down"] == 0


def test_restarted_node_with_new_generation_overrides_stale_state():
    router, nodes = membership_cluster(6, seed=6)
    router.run_for(20)
    old_hb = nodes["n02"].self_member.heartbeat
    router.stop("n02")
    assert router.run_for(30, lambda: all_see(nodes, "n02", DOWN, among=router.running()))
    nodes["n02"] = start_member(router, 2, seed=6, generation=2, state=JOINING)
    nodes["n02"].add_seed("127.0.0.1", 7000)
    assert router.run_for(30, lambda: all_see(nodes, "n02", JOINING))
    for m in nodes.values():
        assert m.member("n02").generation == 2 and m.member("n02").heartbeat < old_hb
    assert router.run_for(10, lambda: len(nodes["n02"].live_members()) == 6)


def test_leaving_then_removed_propagate_and_leave_the_ring():
    router, nodes = membership_cluster(8, seed=7)
    router.run_for(20)
    nodes["n04"].set_state(LEAVING)
    assert router.run_for(10, lambda: all_see(nodes, "n04", LEAVING))
    nodes["n04"].set_state(REMOVED)
    assert router.run_for(10, lambda: all_see(nodes, "n04", REMOVED))
    router.stop("n04")
    router.run_for(60)
    assert all_see(nodes, "n04", REMOVED)  # not down: a removed node is not watched
    assert all(len(m.ring_members()) == 7 for i, m in nodes.items() if i != "n04")


def test_removenode_of_a_dead_node_propagates_and_sticks():
    router, nodes = membership_cluster(6, seed=8)
    router.run_for(20)
    router.stop("n01")
    assert router.run_for(30, lambda: all_see(nodes, "n01", DOWN, among=router.running()))
    nodes["n00"].remove_node("n01")
    assert router.run_for(10, lambda: all_see(nodes, "n01", REMOVED, among=router.running()))


def test_same_seed_same_history():
    def history(seed):
        router, nodes = membership_cluster(6, seed=seed, loss=0.2)
        router.run_for(15)
        router.stop("n02")
        router.run_for(20)
        return router.events, router.stats
    assert history(11) == history(11)
    assert history(11) != history(12)


@pytest.mark.parametrize("module", [mb, mr])
def test_membership_modules_are_pure(module):
    tree = ast.parse(source_path(module.__name__).read_text())
    banned = {"asyncio", "socket", "time", "os", "threading", "random", "subprocess"}
    for item in ast.walk(tree):
        if isinstance(item, ast.Import):
            assert not {a.name.split(".")[0] for a in item.names} & banned
        elif isinstance(item, ast.ImportFrom):
            assert (item.module or "").split(".")[0] not in banned


# ----- another process with our node id (D38) ------------------------------------------

def test_a_record_of_our_id_at_another_address_is_reported_once():
    a = node("a", port=1)
    other = encode_entry(Member("a", port=77, state=NORMAL, generation=5, heartbeat=3), 0.0, False)
    effects = a.on_message("gossip", gossip("b", other), T0)
    assert [e for e in effects if isinstance(e, mb.IdentityClaimed)] == [mb.IdentityClaimed("127.0.0.1", 77)]
    # still absorbed (our address stays), so the cluster goes on routing our id to us
    assert a.self_member.generation == 5 and a.self_member.port == 1
    again = a.on_message("gossip", gossip("c", other), T0 + 1)
    assert not [e for e in again if isinstance(e, mb.IdentityClaimed)]


def test_our_own_address_and_compact_records_claim_nothing():
    a = node("a", port=1)
    ours = encode_entry(Member("a", port=1, state=NORMAL, generation=1, heartbeat=9), 0.0, False)
    compact = encode_entry(Member("a", port=0, state=NORMAL, generation=1, heartbeat=10), 0.0,
                           False, full=False)
    effects = a.on_message("gossip", gossip("b", ours, compact), T0)
    assert not [e for e in effects if isinstance(e, mb.IdentityClaimed)]


def test_a_sender_with_our_id_at_another_address_is_reported():
    a = node("a", port=1)
    body = {"from": encode_entry(Member("a", port=55, state=NORMAL, generation=2), 0.0, False),
            "members": []}
    assert a.on_message("gossip", body, T0) == [mb.IdentityClaimed("127.0.0.1", 55)]
    echo = {"from": encode_entry(Member("a", port=1, state=NORMAL, generation=1), 0.0, False),
            "members": []}
    assert a.on_message("gossip", echo, T0) == []  # our own message come back


def test_a_sender_whose_id_we_hold_at_another_address_is_shown_that_record():
    """Gossip leaves a node's own record out of what goes to that node: two processes with
    one id that talk only to third nodes would never see each other without this."""
    c = node("c", port=3)
    c.on_message("gossip", gossip("b", entry("a", port=7, gen=1)), T0)
    copy = {"from": encode_entry(Member("a", port=8, state=NORMAL, generation=2), 0.0, False),
            "members": []}
    shown = [e for e in sends(c.on_message("gossip", copy, T0 + 1), "gossip_full")
             if e.port == 8 and e.body["members"]]
    assert [m["port"] for m in shown[0].body["members"]] == [7]
    a_copy = Membership(Member("a", port=8, state=NORMAL, generation=2), random.Random(1))
    effects = a_copy.on_message("gossip_full", shown[0].body, T0 + 1)
    assert [e for e in effects if isinstance(e, mb.IdentityClaimed)] == [mb.IdentityClaimed("127.0.0.1", 7)]
