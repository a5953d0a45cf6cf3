"""TopicTrie against the MQTT 3.1.1 matching rules, and against amqtt's own matcher as an oracle."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest
from amqtt.broker import Broker
from hypothesis import given, settings
from hypothesis import strategies as st

from chatmq.broker.routing import SubscriptionIndex
from chatmq.broker.topictrie import TopicTrie, filter_matches, valid_filter

pytestmark = pytest.mark.timeout(60)

_amqtt = SimpleNamespace(logger=logging.getLogger("oracle"))


def amqtt_matches(topic: str, topic_filter: str) -> bool:
    return Broker._matches(_amqtt, topic, topic_filter)  # type: ignore[arg-type]


def matching(filters: list[str], topic: str) -> set[str]:
    trie: TopicTrie[str] = TopicTrie()
    for topic_filter in filters:
        trie.insert(topic_filter, topic_filter)
    found = list(trie.match(topic))
    assert len(found) == len(set(found)), f"a filter matched twice: {found}"
    return set(found)


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("a/b", "a/b", True),
        ("a/b", "a/b/c", False),
        ("a/+", "a/b", True),
        ("a/+", "a", False),
        ("a/+", "a/", True),  # '+' matches an empty level
        ("a/+", "a/b/c", False),
        ("+/+", "/x", True),
        ("+", "/x", False),
        ("a/#", "a", True),  # '#' includes the parent level
        ("a/#", "a/b/c", True),
        ("a/#", "ab", False),
        ("#", "a/b", True),
        ("#", "/", True),
        ("+/b/#", "x/b", True),
        ("+/b/#", "x/c/b", False),
        ("a/+/c", "a//c", True),
        ("#", "$SYS/x", False),  # [MQTT-4.7.2-1]
        ("+/x", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("$SYS/+", "$SYS/x", True),
        ("$SYS/x", "$SYS/x", True),
        ("a/$b", "a/$b", True),
        ("+/$b", "a/$b", True),  # only a leading '$' is special
        ("chat/c1/msg", "chat/c2/msg", False),
    ],
)
def test_rules(topic_filter: str, topic: str, expected: bool) -> None:
    assert (matching([topic_filter], topic) == {topic_filter}) is expected
    assert filter_matches(topic, topic_filter) is expected
    assert amqtt_matches(topic, topic_filter) is expected  # the rules agree with the oracle


def test_all_matching_filters_are_found_once() -> None:
    filters = ["a/b/c", "a/+/c", "a/#", "+/+/+", "#", "a/b/#", "a/b/+", "+/b/c", "a/b", "x/#"]
    assert matching(filters, "a/b/c") == {"a/b/c", "a/+/c", "a/#", "+/+/+", "#", "a/b/#", "a/b/+", "+/b/c"}
    assert matching(filters, "a/b") == {"a/#", "#", "a/b/#", "a/b"}


def test_topic_with_wildcards_matches_nothing() -> None:
    assert matching(["a/+", "#", "a/#"], "a/+") == set()


def test_remove_prunes_and_keeps_siblings() -> None:
    trie: TopicTrie[str] = TopicTrie()
    for topic_filter in ("a/+/c", "a/+", "a/#", "a/b"):
        trie.insert(topic_filter, topic_filter)
    assert trie.remove("a/+/c") == "a/+/c"
    assert trie.remove("a/+/c") is None
    assert set(trie.match("a/x")) == {"a/+", "a/#"}
    assert trie.remove("a/+") == "a/+"
    assert trie.remove("a/#") == "a/#"
    assert trie._root.children == {}  # every wildcard branch pruned
    assert list(trie.match("a/b")) == ["a/b"]
    assert len(trie) == 1


def test_valid_filter() -> None:
    for good in ("a", "#", "+", "a/#", "+/+/#", "/", "a//b", "$SYS/#"):
        assert valid_filter(good), good
    for bad in ("", "a#", "a/#/b", "a+/b", "a/b+", "##", "a/++"):
        assert not valid_filter(bad), bad


def test_index_routes_one_delivery_per_client_at_max_qos() -> None:
    index = SubscriptionIndex()
    alice = SimpleNamespace(client_id="alice")
    bob = SimpleNamespace(client_id="bob")
    index.add("chat/#", alice, 0)  # type: ignore[arg-type]
    index.add("chat/+/msg", alice, 1)  # type: ignore[arg-type]
    index.add("chat/c1/msg", alice, 0)  # type: ignore[arg-type]
    index.add("chat/c1/msg", bob, 0)  # type: ignore[arg-type]
    routed = {session.client_id: qos for session, qos in index.route("chat/c1/msg")}
    assert routed == {"alice": 1, "bob": 0}
    assert index.remove_client("alice") and index.filters() == ["chat/c1/msg"]
    assert [s.client_id for s, _ in index.route("chat/c1/msg")] == ["bob"]
    assert not index.remove("chat/c1/msg", "alice")
    assert index.remove("chat/c1/msg", "bob") and len(index) == 0


# ---- properties: the trie finds exactly the filters amqtt's linear matcher accepts ----------

_level = st.sampled_from(["a", "b", "", "$x", "c1"])
_topic = st.lists(_level, min_size=1, max_size=5).map("/".join)


@st.composite
def _filter(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.sampled_from(["a", "b", "", "+", "$x", "c1"]), min_size=1, max_size=5))
    if draw(st.booleans()):
        levels.append("#")
    return "/".join(levels)


@settings(max_examples=400, deadline=None)
@given(filters=st.lists(_filter(), max_size=25, unique=True), topic=_topic)
def test_trie_agrees_with_amqtt(filters: list[str], topic: str) -> None:
    expected = {f for f in filters if amqtt_matches(topic, f)}
    assert matching(filters, topic) == expected
    assert {f for f in filters if filter_matches(topic, f)} == expected


@settings(max_examples=200, deadline=None)
@given(
    filters=st.lists(_filter(), min_size=1, max_size=25, unique=True),
    removed=st.data(),
    topic=_topic,
)
def test_removal_agrees_with_a_rebuilt_trie(filters: list[str], removed: st.DataObject, topic: str) -> None:
    trie: TopicTrie[str] = TopicTrie()
    for topic_filter in filters:
        trie.insert(topic_filter, topic_filter)
    gone = removed.draw(st.lists(st.sampled_from(filters), unique=True))
    for topic_filter in gone:
        assert trie.remove(topic_filter) == topic_filter
    kept = [f for f in filters if f not in gone]
    assert set(trie.match(topic)) == matching(kept, topic)
    assert sorted(trie.filters()) == sorted(kept)


def test_routing_cost_does_not_grow_with_unrelated_filters() -> None:
    """The scaling wall: 20,000 other conversations' filters must not slow one route.
    A linear matcher is thousands of times slower here; the bound leaves room for a busy machine."""

    def cost(index: SubscriptionIndex) -> float:
        best = float("inf")
        for _ in range(5):
            began = time.perf_counter()
            for _ in range(2_000):
                index.route("chat/bench/msg")
            best = min(best, time.perf_counter() - began)
        return best

    member = SimpleNamespace(client_id="member")
    idle = SimpleNamespace(client_id="idle")
    index = SubscriptionIndex()
    index.add("chat/bench/msg", member, 1)  # type: ignore[arg-type]
    index.add("chat/bench/typing/+", member, 0)  # type: ignore[arg-type]
    small = cost(index)
    for i in range(10_000):
        index.add(f"chat/c{i}/msg", idle, 1)  # type: ignore[arg-type]
        index.add(f"chat/c{i}/typing/+", idle, 0)  # type: ignore[arg-type]
    large = cost(index)
    assert [s.client_id for s, _ in index.route("chat/bench/msg")] == ["member"]
    assert large < small * 3, f"{large / small:.1f}x slower with 20,000 unrelated filters"
