"""The identity provider's tokens: what chatmq.core.identity accepts and refuses, and how its JWKS
cache behaves through rotations and outages (a real JWKS server on loopback)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import jwt
import pytest

from chatmq.core.auth import issue_token
from chatmq.core.config import Settings
from chatmq.core.identity import ExternalIdentityConfig, ExternalTokens, JwksKeys, StaticKey, external_tokens
from tests.identity.idp import AUDIENCE, ISSUER, JwksServer, SigningKey

pytestmark = pytest.mark.timeout(30)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return SigningKey("RS256")


@pytest.fixture
def server(rsa_key: SigningKey) -> Iterator[JwksServer]:
    running = JwksServer([rsa_key]).start()
    yield running
    running.stop()


def verifier(url: str, clock: Clock | None = None, **config: object) -> ExternalTokens:
    settings = ExternalIdentityConfig(issuer=ISSUER, audience=AUDIENCE, jwks_url=url, **config)  # type: ignore[arg-type]
    keys = JwksKeys(url, refresh_s=300, min_refetch_s=10, timeout_s=2, clock=clock or Clock())
    return ExternalTokens(settings, keys)


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "EdDSA"])
def test_each_algorithm_from_jwks_and_from_a_public_key(algorithm: str) -> None:
    key = SigningKey(algorithm)
    server = JwksServer([key]).start()
    try:
        token = key.token("alice", extra={"name": "Alice Liddell"})
        claims = verifier(server.url).claims(token)
        assert claims is not None and claims["sub"] == "alice" and claims["ext"] is True
        assert claims["name"] == "Alice Liddell" and claims["ims"] == claims["iat"] * 1000 and claims["jti"]
    finally:
        server.stop()
    static = ExternalTokens(ExternalIdentityConfig(issuer=ISSUER, audience=AUDIENCE, public_key_pem=key.public_pem),
                            StaticKey(key.public_pem))
    assert static.claims(key.token("bob", kid=None)) is not None  # one configured key: no kid needed
    assert static.claims(SigningKey(algorithm).token("bob")) is None  # another key of the same kind


@pytest.mark.parametrize(
    ("case", "make"),
    [
        ("expired", lambda k: k.token(ttl_s=-60)),
        ("wrong audience", lambda k: k.token(audience="another-app")),
        ("wrong issuer", lambda k: k.token(issuer="https://evil.example")),
        ("not yet valid", lambda k: k.token(extra={"nbf": int(time.time()) + 3600})),
        ("issued in the future", lambda k: k.token(now=time.time() + 3600)),
        ("no expiry", lambda k: k.token(extra={"exp": None})),
        ("no audience", lambda k: k.token(extra={"aud": None})),
        ("user id not a chatmq id", lambda k: k.token(sub="alice/../bob")),
        ("user id missing", lambda k: k.token(extra={"sub": None})),
        ("tampered payload", lambda k: _tamper(k.token())),
    ],
)
def test_bad_tokens_are_refused(server: JwksServer, rsa_key: SigningKey, case: str, make: object) -> None:
    assert verifier(server.url).claims(make(rsa_key)) is None, case  # type: ignore[operator]


def _tamper(token: str) -> str:
    header, _payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["sub"] = "mallory"
    forged = jwt.utils.base64url_encode(jwt.api_jws.json.dumps(claims).encode()).decode()
    return ".".join((header, forged, signature))


def test_clock_skew_within_the_leeway_is_allowed(server: JwksServer, rsa_key: SigningKey) -> None:
    assert verifier(server.url).claims(rsa_key.token(ttl_s=-5)) is not None  # 30 s leeway by default
    assert verifier(server.url, leeway_s=0).claims(rsa_key.token(ttl_s=-5)) is None


def test_algorithm_confusion_is_refused(server: JwksServer, rsa_key: SigningKey) -> None:
    tokens = verifier(server.url)
    # The public key as an HMAC secret: an HS256 token is never the identity provider's.
    forged = jwt.encode({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60},
                        "public-key-text-used-as-an-hmac-secret-here", algorithm="HS256", headers={"kid": rsa_key.kid})
    assert not tokens.handles(forged) and tokens.claims(forged) is None
    unsigned = jwt.encode({"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": int(time.time()) + 60},
                          None, algorithm="none", headers={"kid": rsa_key.kid})
    assert not tokens.handles(unsigned) and tokens.claims(unsigned) is None
    # A token claiming ES256 under the RSA key's kid.
    other = SigningKey("ES256", kid=rsa_key.kid)
    assert tokens.claims(other.token()) is None
    # chatmq's own tokens are never handled here
    assert not tokens.handles(issue_token("s" * 40, "alice", 60).token)


def test_user_claim_is_configurable(server: JwksServer, rsa_key: SigningKey) -> None:
    tokens = verifier(server.url, user_claim="preferred_username")
    claims = tokens.claims(rsa_key.token("opaque-idp-id|123", extra={"preferred_username": "alice"}))
    assert claims is not None and claims["sub"] == "alice"
    assert tokens.claims(rsa_key.token("alice")) is None  # no such claim


def test_rotated_key_is_picked_up_on_first_use(server: JwksServer, rsa_key: SigningKey) -> None:
    clock = Clock()
    tokens = verifier(server.url, clock)
    assert tokens.claims(rsa_key.token()) is not None
    assert server.fetches == 1
    rotated = SigningKey("ES256")
    server.keys = [rsa_key, rotated]
    clock.now += 11  # past min_refetch_s, well inside refresh_s
    assert tokens.claims(rotated.token()) is not None  # an unknown kid: the set is read again at once
    assert server.fetches == 2
    server.keys = [rotated]  # the old key retired at the provider
    clock.now += 301
    assert tokens.claims(rsa_key.token()) is None  # the periodic refresh drops it
    assert tokens.claims(rotated.token()) is not None


def test_unknown_kids_cost_the_provider_one_fetch_per_interval(server: JwksServer, rsa_key: SigningKey) -> None:
    clock = Clock()
    tokens = verifier(server.url, clock)
    assert tokens.claims(rsa_key.token()) is not None
    stranger = SigningKey("RS256")
    for _ in range(50):
        assert tokens.claims(stranger.token()) is None
    assert server.fetches == 1  # within min_refetch_s of the first fetch: not asked again
    clock.now += 10
    assert tokens.claims(stranger.token()) is None
    assert server.fetches == 2


def test_unreachable_jwks_keeps_known_keys_working(server: JwksServer, rsa_key: SigningKey,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    tokens = verifier(server.url, clock)
    assert tokens.claims(rsa_key.token()) is not None
    server.down = True
    clock.now += 400  # the cached set is stale: a refresh is tried, fails, the known key stays
    assert tokens.claims(rsa_key.token()) is not None
    assert tokens.claims(SigningKey("RS256").token()) is None  # an unknown kid cannot be checked
    server.stop()  # not even listening now
    clock.now += 400
    assert tokens.claims(rsa_key.token()) is not None
    assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1  # logged once per outage


def test_jwks_never_reached_refuses_everything(rsa_key: SigningKey) -> None:
    server = JwksServer([rsa_key]).start()
    url = server.url
    server.stop()
    assert verifier(url).claims(rsa_key.token()) is None


def test_settings_build_the_verifier_or_say_what_is_missing(rsa_key: SigningKey, tmp_path: object) -> None:
    assert external_tokens(Settings()) is None
    with pytest.raises(ValueError, match="CHATMQ_IDP_ISSUER"):
        external_tokens(Settings(idp_jwks_url="http://127.0.0.1:1/jwks"))
    with pytest.raises(ValueError, match="algorithms"):
        external_tokens(Settings(idp_jwks_url="http://x/jwks", idp_issuer=ISSUER, idp_audience=AUDIENCE,
                                 idp_algorithms="RS256,HS256"))
    pem_file = tmp_path / "idp.pem"  # type: ignore[operator]
    pem_file.write_text(rsa_key.public_pem)
    for value in (rsa_key.public_pem, str(pem_file)):
        tokens = external_tokens(Settings(idp_public_key=value, idp_issuer=ISSUER, idp_audience=AUDIENCE))
        assert tokens is not None and tokens.claims(rsa_key.token()) is not None


@pytest.mark.parametrize("sync", [False, True], ids=["first-login-only", "synced"])
def test_display_names_follow_the_name_claim_when_synced(rsa_key: SigningKey, tmp_path: object, sync: bool) -> None:
    from chatmq.core.auth import Authenticator
    from chatmq.core.store.sqlite import SQLiteStore

    store = SQLiteStore(str(tmp_path / "chatmq.db"))  # type: ignore[operator]
    try:
        config = ExternalIdentityConfig(issuer=ISSUER, audience=AUDIENCE, public_key_pem=rsa_key.public_pem,
                                        create_users=True, sync_names=sync)
        auth = Authenticator(store, "s" * 32, external=ExternalTokens(config, StaticKey(rsa_key.public_pem)))

        def login(name: str | None) -> str | None:
            assert auth.authenticate("hana", rsa_key.token("hana", extra={"name": name})) is not None
            user = store.get_user("hana")
            assert user is not None
            return user.display_name

        assert login("Hana") == "Hana"  # created on first login, named from the claim
        assert login("Hana Berg") == ("Hana Berg" if sync else "Hana")
        assert login(None) == ("Hana Berg" if sync else "Hana"), "a token without the claim leaves the name"
        assert login("  ") == ("Hana Berg" if sync else "Hana"), "nor does an unusable one"
        store.set_disabled("hana", True)
        assert auth.authenticate("hana", rsa_key.token("hana", extra={"name": "Someone"})) is None
        assert store.get_user("hana").display_name == ("Hana Berg" if sync else "Hana")  # type: ignore[union-attr]
        assert external_tokens(Settings(idp_public_key=rsa_key.public_pem, idp_issuer=ISSUER, idp_audience=AUDIENCE,
                                        idp_sync_names=sync)).sync_names is sync  # type: ignore[union-attr]
    finally:
        store.close()
