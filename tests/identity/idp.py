"""A small identity provider for the tests: its own keys, a JWKS server on loopback, and tokens.

The JWKS server is a real HTTP server (the verifier fetches it with PyJWKClient over a socket); a
test can rotate keys, take the server down (503) and count the fetches.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

ISSUER = "https://idp.example.test"
AUDIENCE = "chatmq-tests"


class SigningKey:
    def __init__(self, algorithm: str, kid: str | None = None) -> None:
        self.algorithm = algorithm
        self.kid = kid or f"{algorithm.lower()}-{uuid.uuid4().hex[:8]}"
        if algorithm == "RS256":
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif algorithm == "ES256":
            self.private = ec.generate_private_key(ec.SECP256R1())
        elif algorithm == "EdDSA":
            self.private = ed25519.Ed25519PrivateKey.generate()
        else:
            raise ValueError(algorithm)

    @property
    def public_pem(self) -> str:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def jwk(self) -> dict[str, Any]:
        jwk = jwt.get_algorithm_by_name(self.algorithm).to_jwk(self.private.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def token(self, sub: str = "alice", *, ttl_s: int = 300, issuer: str = ISSUER, audience: str = AUDIENCE,
              kid: str | None = "", extra: dict[str, Any] | None = None, now: float | None = None) -> str:
        issued = int(now if now is not None else time.time())
        claims: dict[str, Any] = {"sub": sub, "iss": issuer, "aud": audience, "iat": issued, "exp": issued + ttl_s,
                                  "jti": uuid.uuid4().hex}
        claims.update(extra or {})
        claims = {k: v for k, v in claims.items() if v is not None}
        headers = {} if kid is None else {"kid": kid or self.kid}
        return jwt.encode(claims, self.private, algorithm=self.algorithm, headers=headers)


class JwksServer:
    """Serves ``/.well-known/jwks.json`` from ``keys``; ``down`` answers 503 instead."""

    def __init__(self, keys: list[SigningKey]) -> None:
        self.keys = list(keys)
        self.down = False
        self.fetches = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.fetches += 1
                if server.down or self.path != "/.well-known/jwks.json":
                    self.send_response(503 if server.down else 404)
                    self.end_headers()
                    return
                body = json.dumps({"keys": [key.jwk() for key in server.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="jwks", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/.well-known/jwks.json"

    def start(self) -> JwksServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def idp_env(jwks_url: str, **extra: str) -> dict[str, str]:
    """The settings a chatmq process needs to accept this provider's tokens."""
    return {"CHATMQ_IDP_JWKS_URL": jwks_url, "CHATMQ_IDP_ISSUER": ISSUER, "CHATMQ_IDP_AUDIENCE": AUDIENCE, **extra}
