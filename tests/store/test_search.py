"""The Store contract for full-text search, run against every backend (the ``store`` fixture,
including the MongoDB store whose every query is checked against the shard keys): words as
chatmq.core.search defines them, newest first with cursor paging, membership read at query time, and
an index that follows edits and deletions in the write that makes them."""

from __future__ import annotations

import pytest

from chatmq.core.protocol import EntryKind
from chatmq.core.search import SearchQuery, SearchQueryError, parse_query
from chatmq.core.store.base import NewMessage, Store
from tests.store.helpers import TS, msg, seed
from tests.store.test_entries import delete, edit, one, react, seq_of

pytestmark = pytest.mark.timeout(30)


def said(conv: str, sender: str, cmid: str, body: str, ts: int) -> NewMessage:
    return NewMessage(conv=conv, sender=sender, client_msg_id=cmid, body=body, ts=ts)


def find(store: Store, user: str, q: str, **kw: object) -> list[tuple[str, int, str]]:
    page = store.search(user, SearchQuery(parse_query(q), **kw))  # type: ignore[arg-type]
    return [(v.message.conv, v.message.seq, v.message.body) for v in page.messages]


def every_page(store: Store, user: str, q: str, limit: int) -> list[list[tuple[str, int]]]:
    pages, cursor = [], None
    while True:
        page = store.search(user, SearchQuery(parse_query(q), before=cursor, limit=limit))
        pages.append([(v.message.conv, v.message.seq) for v in page.messages])
        if page.next is None:
            return pages
        cursor = page.next


def test_finds_messages_with_every_word_in_any_order_case_and_accents_aside(store: Store) -> None:
    seed(store)
    store.append([
        said("general", "alice", "a", "Lunch at the Café?", TS),
        said("general", "bob", "b", "cafe lunch tomorrow", TS + 1),
        said("general", "alice", "c", "lunchbox", TS + 2),
        said("general", "bob", "d", "dinner", TS + 3),
    ])  # fmt: skip
    assert [b for _, _, b in find(store, "alice", "lunch")] == ["cafe lunch tomorrow", "Lunch at the Café?"]
    assert [s for _, s, _ in find(store, "bob", "CAFÉ   lunch")] == [2, 1]
    assert find(store, "bob", "lunch dinner") == []  # every word, not any
    assert find(store, "bob", "lunc") == []  # whole words, not substrings
    assert [s for _, s, _ in find(store, "bob", "lunchbox")] == [3]


def test_newest_first_across_conversations_with_cursor_paging(store: Store) -> None:
    seed(store, ("general", "random"))
    store.append([said("general" if i % 3 else "random", "alice", f"m{i}", f"ping number {i}", TS + i * 10)
                  for i in range(23)])  # fmt: skip
    store.append([said("random", "bob", "same-ts-1", "ping tie", TS + 500),
                  said("general", "bob", "same-ts-2", "ping tie", TS + 500)])  # fmt: skip
    whole = store.search("alice", SearchQuery(("ping",), limit=100))
    timestamps = [v.message.ts for v in whole.messages]
    assert len(timestamps) == 25 and timestamps == sorted(timestamps, reverse=True)
    assert whole.next is None
    pages = every_page(store, "alice", "ping", 4)
    assert [len(p) for p in pages] == [4, 4, 4, 4, 4, 4, 1]
    assert [hit for p in pages for hit in p] == [(v.message.conv, v.message.seq) for v in whole.messages]


def test_within_one_conversation_and_from_one_sender(store: Store) -> None:
    seed(store, ("general", "random"))
    store.append([said("general", "alice", "a", "release notes", TS),
                  said("general", "bob", "b", "release day", TS + 1),
                  said("random", "alice", "c", "release party", TS + 2)])  # fmt: skip
    assert [b for _, _, b in find(store, "bob", "release", conv="general")] == ["release day", "release notes"]
    assert [b for _, _, b in find(store, "bob", "release", sender="alice")] == ["release party", "release notes"]
    assert [b for _, _, b in find(store, "bob", "release", conv="general", sender="alice")] == ["release notes"]
    assert find(store, "bob", "release", conv="nope") == []
    assert find(store, "bob", "release", sender="carol") == []


def test_only_conversations_the_user_is_a_member_of_now(store: Store) -> None:
    seed(store, ("general", "random"))
    store.append([said("general", "alice", "a", "secret plan", TS), said("random", "alice", "b", "secret too", TS + 1)])
    assert find(store, "carol", "secret") == []
    assert find(store, "carol", "secret", conv="general") == []
    store.remove_member("general", "bob")
    assert [c for c, _, _ in find(store, "bob", "secret")] == ["random"]
    assert find(store, "bob", "secret", conv="general") == []
    store.add_member("general", "carol")  # a new member finds what was said before they joined
    assert [c for c, _, _ in find(store, "carol", "secret")] == ["general"]


def test_an_edit_is_found_by_its_new_words_only(store: Store) -> None:
    seed(store)
    seq = seq_of(one(store, said("general", "alice", "a", "meet at noon", TS)))
    one(store, edit("alice", "e1", seq, "meet at five"))
    assert find(store, "bob", "noon") == []
    (hit,) = store.search("bob", SearchQuery(("five",))).messages
    assert (hit.message.seq, hit.message.body, hit.edited is not None) == (seq, "meet at five", True)
    one(store, edit("alice", "e2", seq, "meet at six"))
    assert find(store, "bob", "five") == [] and [s for _, s, _ in find(store, "bob", "meet six")] == [seq]
    one(store, edit("alice", "e3", seq, "🙂"))  # no words left: not found by any
    assert find(store, "bob", "meet") == []
    one(store, edit("alice", "e4", seq, "meet again"))
    assert [s for _, s, _ in find(store, "bob", "again")] == [seq]


def test_a_deleted_message_leaves_the_index_with_its_edits(store: Store) -> None:
    seed(store)
    first = seq_of(one(store, said("general", "alice", "a", "draft contract", TS)))
    one(store, edit("alice", "e1", first, "final contract"))
    kept = seq_of(one(store, said("general", "bob", "b", "contract signed", TS + 1)))
    one(store, delete("alice", "d1", first))
    assert [s for _, s, _ in find(store, "alice", "contract")] == [kept]
    assert find(store, "alice", "draft") == [] and find(store, "alice", "final") == []
    one(store, delete("bob", "d2", kept))
    assert find(store, "alice", "contract") == []


def test_change_entries_are_not_results(store: Store) -> None:
    seed(store)
    seq = seq_of(one(store, said("general", "alice", "a", "hello there", TS)))
    one(store, edit("alice", "e1", seq, "hello again"))
    one(store, react("bob", "r1", seq, "hello"))  # a reaction's body is its emoji (here a word)
    hits = store.search("bob", SearchQuery(("hello",))).messages
    assert [(v.message.seq, v.message.kind) for v in hits] == [(seq, EntryKind.MESSAGE)]


def test_query_syntax_in_user_input_is_only_words(store: Store) -> None:
    seed(store)
    store.append([said("general", "alice", "a", "this OR that, near the end", TS),
                  said("general", "alice", "b", 'she said "stop" * twice', TS + 1)])  # fmt: skip
    for q in ['"', '" OR "', "NEAR(this that)", "this* OR", "-that", "words:this", "^this", "this AND NOT that",
              '"unbalanced', "a''b", "(((", "{words}: x"]:
        try:
            words = parse_query(q)
        except SearchQueryError:
            continue  # no words at all: refused before any store sees it
        store.search("alice", SearchQuery(words))  # never a syntax error from the index
    assert [s for _, s, _ in find(store, "alice", "or near")] == [1]
    assert [s for _, s, _ in find(store, "alice", '"stop"*')] == [2]
    assert find(store, "alice", "this NOT that") == []  # NOT is a word here, and no message has it


def test_a_cursor_this_store_did_not_make_is_refused(store: Store) -> None:
    seed(store)
    store.append([msg("general", "alice", "a", "x y")])
    for cursor in ("garbage", "W10", "WyJhIl0", "x" * 600):
        with pytest.raises(SearchQueryError):
            store.search("alice", SearchQuery(("x",), before=cursor))


def test_compacting_the_index_is_safe_on_every_store(store: Store) -> None:
    seed(store)
    seq = seq_of(one(store, said("general", "alice", "a", "compact me", TS)))
    one(store, delete("alice", "d", seq))
    store.compact_search_index()
    store.append([said("general", "alice", "b", "compact again", TS + 1)])
    assert [b for _, _, b in find(store, "bob", "compact")] == ["compact again"]
