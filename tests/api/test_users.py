"""Profiles over HTTP: /v1/me to read and change your own, /v1/users for the people you chat with,
and avatars readable by exactly those who may see the profile."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from chatmq.core.store import Store
from tests.api.helpers import assert_error, bearer
from tests.api.test_media import upload
from tests.media import samples

pytestmark = pytest.mark.timeout(30)

# the store fixture: alice+bob+dave share c1, alice+carol share c2; erin is in no conversation


def test_me_reads_and_changes_the_profile(client: FlaskClient, store: Store) -> None:
    me = client.get("/v1/me", headers=bearer("alice")).get_json()
    assert me == {"id": "alice", "display_name": None, "avatar": None, "avatar_url": None}
    changed = client.patch("/v1/me", json={"display_name": "  Alice Liddell "}, headers=bearer("alice"))
    assert changed.status_code == 200 and changed.get_json()["display_name"] == "Alice Liddell"
    stored = store.get_user("alice")
    assert stored is not None and stored.display_name == "Alice Liddell"
    assert client.patch("/v1/me", json={}, headers=bearer("alice")).get_json()["display_name"] == "Alice Liddell"
    cleared = client.patch("/v1/me", json={"display_name": None}, headers=bearer("alice")).get_json()
    assert cleared["display_name"] is None


@pytest.mark.parametrize(
    "body",
    [{"display_name": "x" * 101}, {"display_name": "bell\x07"}, {"display_name": 5}, {"nick": "a"},
     {"avatar": "../../etc/passwd"}],
)
def test_bad_profile_changes_are_refused(client: FlaskClient, store: Store, body: dict[str, object]) -> None:
    assert_error(client.patch("/v1/me", json=body, headers=bearer("alice")), 400, "bad_request")
    assert store.get_user("alice").display_name is None  # type: ignore[union-attr]


def test_avatar_is_an_image_of_your_own_and_visible_to_who_sees_you(client: FlaskClient) -> None:
    picture = upload(client, "alice", samples.PNG, "me.png", "image/png").get_json()["media_id"]
    document = upload(client, "alice", samples.PDF, "cv.pdf", "application/pdf").get_json()["media_id"]
    bobs = upload(client, "bob", samples.PNG, "bob.png", "image/png").get_json()["media_id"]
    assert_error(client.patch("/v1/me", json={"avatar": document}, headers=bearer("alice")), 400, "bad_request")
    assert_error(client.patch("/v1/me", json={"avatar": bobs}, headers=bearer("alice")), 400, "bad_request")
    assert client.get(f"/v1/media/{picture}", headers=bearer("bob")).status_code == 403  # not yet an avatar

    me = client.patch("/v1/me", json={"avatar": picture}, headers=bearer("alice")).get_json()
    assert me["avatar"] == picture and me["avatar_url"] == f"/v1/media/{picture}"
    assert client.get(me["avatar_url"], headers=bearer("bob")).data == samples.PNG  # shares c1
    assert client.get(me["avatar_url"], headers=bearer("carol")).status_code == 200  # shares c2
    assert_error(client.get(me["avatar_url"], headers=bearer("erin")), 403, "forbidden")  # shares nothing

    client.patch("/v1/me", json={"avatar": None}, headers=bearer("alice"))
    assert client.get(f"/v1/media/{picture}", headers=bearer("bob")).status_code == 403  # no longer


def test_profiles_of_people_you_share_a_conversation_with(client: FlaskClient, store: Store) -> None:
    store.set_profile("bob", "Bob B.", None)
    store.set_profile("erin", "Erin", None)
    one = client.get("/v1/users/bob", headers=bearer("alice"))
    assert one.status_code == 200 and one.get_json()["display_name"] == "Bob B."
    assert_error(client.get("/v1/users/erin", headers=bearer("alice")), 404, "not_found")  # no shared conv
    assert_error(client.get("/v1/users/nobody", headers=bearer("alice")), 404, "not_found")
    assert client.get("/v1/users/erin", headers=bearer("erin")).get_json()["display_name"] == "Erin"

    many = client.get("/v1/users?id=carol&id=bob&id=erin&id=ghost&id=a/b", headers=bearer("alice")).get_json()
    assert [u["id"] for u in many["users"]] == ["bob", "carol"]
    too_many = "&".join(f"id=u{n}" for n in range(101))
    assert_error(client.get(f"/v1/users?{too_many}", headers=bearer("alice")), 400, "bad_request")
    assert_error(client.get("/v1/users/bob"), 401, "unauthorized")
