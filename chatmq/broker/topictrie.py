"""MQTT 3.1.1 topic matching as an index: finding the filters that match a topic costs
O(topic depth + matching filters), not O(all filters).

Stock amqtt tests every published topic against every subscribed filter, so one idle client
holding 10,000 conversation filters slows every relay by two orders of magnitude. Here a filter
without wildcards lives in a plain dict (one lookup) and a filter with ``+`` or ``#`` lives in a
trie keyed by level, which a topic walks level by level.

Rules (MQTT 3.1.1 section 4.7): ``+`` matches exactly one level (possibly empty), ``#`` matches any
number of levels including the parent level (``a/#`` matches ``a``), and a topic starting with
``$`` is never matched by a filter whose first level is ``+`` or ``#``. Filter validity (``#`` last
and alone in its level, ``+`` alone in its level) is the caller's check: see ``valid_filter``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

V = TypeVar("V")

WILDCARDS = ("+", "#")


def has_wildcard(topic_filter: str) -> bool:
    return "+" in topic_filter or "#" in topic_filter


def valid_filter(topic_filter: str) -> bool:
    """[MQTT-4.7.1-2] ``#`` only as the whole last level; [MQTT-4.7.1-3] ``+`` only as a whole level."""
    if not topic_filter:
        return False
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != last):
            return False
        if "+" in level and level != "+":
            return False
    return True


def filter_matches(topic: str, topic_filter: str) -> bool:
    """One topic against one filter, for the rare places that hold a single filter (retained lookups)."""
    if topic.startswith("$") and topic_filter.startswith(WILDCARDS):
        return False
    if not has_wildcard(topic_filter):
        return topic == topic_filter
    levels = topic.split("/")
    parts = topic_filter.split("/")
    for index, part in enumerate(parts):
        if part == "#":
            return True
        if index >= len(levels) or (part != "+" and part != levels[index]):
            return False
    return len(parts) == len(levels)


class _Node(Generic[V]):
    __slots__ = ("children", "value")

    def __init__(self) -> None:
        self.children: dict[str, _Node[V]] = {}
        self.value: V | None = None


class TopicTrie(Generic[V]):
    """Maps topic filters to one value each and finds the values of every filter matching a topic.

    The value is opaque (the router stores each filter's subscriber table there). Wildcard-free
    filters never enter the trie: they are the ``_exact`` dict.
    """

    def __init__(self) -> None:
        self._exact: dict[str, V] = {}
        self._root: _Node[V] = _Node()
        self._wild: dict[str, V] = {}

    def __len__(self) -> int:
        return len(self._exact) + len(self._wild)

    def __contains__(self, topic_filter: object) -> bool:
        return topic_filter in self._exact or topic_filter in self._wild

    def get(self, topic_filter: str) -> V | None:
        found = self._exact.get(topic_filter)
        return found if found is not None else self._wild.get(topic_filter)

    def filters(self) -> list[str]:
        """A snapshot: callers may await while iterating it and the trie may change meanwhile."""
        return [*self._exact, *self._wild]

    def insert(self, topic_filter: str, value: V) -> None:
        if not has_wildcard(topic_filter):
            self._exact[topic_filter] = value
            return
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        node.value = value
        self._wild[topic_filter] = value

    def remove(self, topic_filter: str) -> V | None:
        """Remove a filter and prune the branch it leaves empty; returns its value, if it was there."""
        if not has_wildcard(topic_filter):
            return self._exact.pop(topic_filter, None)
        value = self._wild.pop(topic_filter, None)
        if value is None:
            return None
        path: list[tuple[_Node[V], str]] = []
        node = self._root
        for level in topic_filter.split("/"):
            path.append((node, level))
            node = node.children[level]
        node.value = None
        for parent, level in reversed(path):
            child = parent.children[level]
            if child.value is not None or child.children:
                break
            del parent.children[level]
        return value

    def clear(self) -> None:
        self._exact.clear()
        self._wild.clear()
        self._root = _Node()

    def match(self, topic: str) -> Iterator[V]:
        """Values of every filter matching ``topic``, each once (a filter is one trie path).

        A topic containing ``+`` or ``#`` is not a valid topic name [MQTT-3.3.2-2] and matches nothing.
        """
        if has_wildcard(topic):
            return
        exact = self._exact.get(topic)
        if exact is not None:
            yield exact
        if not self._wild:
            return
        levels = topic.split("/")
        depth = len(levels)
        dollar = topic.startswith("$")
        stack: list[tuple[_Node[V], int]] = [(self._root, 0)]
        while stack:
            node, index = stack.pop()
            children = node.children
            if not children:
                continue
            if not (dollar and index == 0):
                multi = children.get("#")
                if multi is not None and multi.value is not None:
                    yield multi.value  # '#' also matches the parent level: a/# matches a
            if index == depth:
                continue
            child = children.get(levels[index])
            if child is not None:
                if index + 1 == depth:
                    if child.value is not None:
                        yield child.value
                    if "#" in child.children:
                        stack.append((child, depth))
                else:
                    stack.append((child, index + 1))
            if not (dollar and index == 0):
                single = children.get("+")
                if single is not None:
                    if index + 1 == depth:
                        if single.value is not None:
                            yield single.value
                        if "#" in single.children:
                            stack.append((single, depth))
                    else:
                        stack.append((single, index + 1))
