"""Settings for every chatmq process, read from CHATMQ_* environment variables and CLI overrides.

One object is built at start-up and passed down (Flask's config-object habit): no module reads
the environment on its own.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from chatmq.core.protocol import DEFAULT_FANOUT_READ_THRESHOLD, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_PACKET_BYTES

SERVICE_USER = "@bridge"  # '@' is outside the user-id alphabet, so no device can claim it
ADMIN_USER = "@admin"  # the operator identity of the admin channel (chatmq.control)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CHATMQ_", extra="ignore")

    data_dir: Path = Field(default=Path("data"), description="where embedded state lives")
    store_url: str | None = Field(default=None, description="sqlite:///path or mongodb://...")
    # MongoDB history reads (history pages, unread counts) may go to secondaries; everything that
    # decides something reads the primary and writes stay journaled majority (docs/mongodb-sharding.md).
    # Added to a mongodb:// store URL as readPreference / maxStalenessSeconds.
    mongo_history_read_preference: str | None = Field(
        default=None,
        pattern="^(primary|primaryPreferred|secondary|secondaryPreferred|nearest)$",
        description="where MongoDB history reads go (default primary)",
    )
    mongo_history_max_staleness_s: int | None = Field(
        default=None, ge=90, description="skip secondaries lagging more than this (MongoDB's minimum is 90)"
    )
    redis_url: str = "redis://127.0.0.1:6379/0"

    host: str = Field(default="127.0.0.1", description="address the servers listen on")
    mqtt_port: int = 1883
    ws_port: int = 8083
    http_port: int = 8080
    # Where the bridge and API find the broker (they work with any MQTT 3.1.1 broker).
    broker_host: str = "127.0.0.1"
    broker_port: int | None = None  # defaults to mqtt_port

    secret_key: str | None = Field(default=None, description="token signing key (else data_dir/secret.key)")
    token_ttl_s: int = 24 * 3600
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    heartbeat_interval_s: float = 30.0
    presence_ttl_factor: float = 2.5  # a device is offline after this many missed heartbeats
    membership_refresh_s: float = 0.5
    # The API answers a membership change once every live broker applied it (chatmq.core.membershipsync),
    # waiting at most this long for a broker that does not report.
    membership_apply_timeout_s: float = Field(default=2.0, ge=0, description="how long the API waits for brokers")
    # Broker limits and persistent MQTT sessions (kept in Redis so they survive a restart).
    max_packet_bytes: int = Field(default=DEFAULT_MAX_PACKET_BYTES, description="largest MQTT packet the broker takes")
    session_queue_limit: int = Field(default=1000, ge=1, description="queued messages kept per offline device session")
    session_queue_bytes: int = Field(default=4 * 1024 * 1024, ge=1, description="queued bytes per device session")
    # The bridge's session has no message limit: what it has not stored waits for it. Past this many
    # bytes (a bridge outage of ~30 min at 1,000 msg/s of 300 bytes) new sends get no PUBACK.
    service_queue_bytes: int = Field(default=512 * 1024 * 1024, ge=1, description="queued bytes for the bridge")
    session_expiry_s: int = Field(default=7 * 24 * 3600, description="offline persistent sessions expire after")
    # What one account may make the servers hold: sessions on each broker (live connections plus
    # persistent sessions kept offline; a new client id beyond it gets CONNACK 5) and devices in
    # presence (a heartbeat of a new device id beyond it is dropped). 0 = no limit.
    sessions_per_user: int = Field(default=32, ge=0, description="sessions one user may hold per broker; 0 = off")
    presence_devices_per_user: int = Field(default=32, ge=0, description="devices per user in presence; 0 = off")
    allow_anonymous: bool = Field(default=False, description="plain MQTT 3.1.1 outside the chat namespaces")
    # Rate limits (0 = off), counted in Redis across all processes.
    login_failures_per_user: int = Field(default=10, ge=0, description="failed logins per user per window")
    login_failures_per_address: int = Field(default=100, ge=0, description="failed logins per address per window")
    login_window_s: int = Field(default=60, ge=1)
    connections_per_address: int = Field(default=0, ge=0, description="CONNECTs per address per window; 0 = off")
    # A password that matched is remembered this long (chatmq.core.credcache): reconnects skip argon2.
    password_cache_s: float = Field(default=300.0, ge=0, description="verified-password cache TTL; 0 = off")
    messages_per_s: float = Field(default=20.0, ge=0, description="steady send rate per user; 0 = off")
    messages_burst: int = Field(default=300, ge=1, description="sends a user may make at once above the rate")
    # Typing indicators, checked by each broker in its own memory (they never reach Redis or the bridge).
    typing_per_s: float = Field(default=2.0, ge=0, description="typing indicators relayed per user per second; 0 = off")
    typing_burst: int = Field(default=10, ge=1, description="typing indicators a user may send at once above the rate")
    # Edits of a message are refused once it is older than this (0 = a message can always be edited).
    edit_window_s: int = Field(default=0, ge=0, description="seconds after sending a message may be edited; 0 = always")
    # History pages over MQTT (user/{user}/history/request) cost the bridge a store read each.
    history_requests_per_s: float = Field(default=10.0, ge=0, description="MQTT history requests per user; 0 = off")
    history_requests_burst: int = Field(default=50, ge=1, description="MQTT history requests a user may make at once")
    # TLS listeners (0 = off): MQTT over TLS and WebSocket over TLS, beside the plain ones.
    mqtt_tls_port: int = Field(default=0, ge=0, description="MQTT over TLS port (8883 is usual); 0 = off")
    ws_tls_port: int = Field(default=0, ge=0, description="MQTT over secure WebSocket port; 0 = off")
    tls_certfile: Path | None = Field(default=None, description="PEM certificate chain for the TLS listeners")
    tls_keyfile: Path | None = Field(default=None, description="PEM private key for the TLS listeners")
    # The WebSocket listener's permessage-deflate (RFC 7692): bytes saved against broker CPU, measured
    # in docs/benchmarks.md ("WebSocket compression").
    ws_permessage_deflate: bool = Field(default=False, description="offer permessage-deflate on the WebSocket listener")
    # The web app (web/, served by the API under /app/): where its build is, and the broker URL
    # browsers connect to when it is not ws://<the page's host>:<ws_port>/mqtt (e.g. behind a proxy).
    web_dir: Path | None = Field(default=None, description="the built web app (default: web/dist of this checkout)")
    ws_public_url: str | None = Field(default=None, description="the WebSocket URL browsers use, e.g. wss://host/mqtt")
    # Conversations with more members than this get compact QoS 0 notices instead of full messages.
    fanout_read_threshold: int = Field(default=DEFAULT_FANOUT_READ_THRESHOLD, ge=1)
    api_workers: int = 2
    # A request head must arrive within this (an idle connection, new or kept alive, is closed after
    # as long); a body gets as long again plus 1 s per 50 kB it declares (chatmq/api/front.py).
    http_read_timeout_s: float = Field(default=10.0, gt=0, le=300, description="HTTP request read timeout")
    # Each bridge process needs its own persistent MQTT session; a second bridge gets another id.
    bridge_client_id: str = Field(default="chatmq-bridge", description="the bridge's MQTT client id")
    # Several bridge workers (chatmq/bridge/partitions.py): each handles the conversations of the partitions
    # whose lease it holds. Unset = the single bridge, which handles everything.
    bridge_worker_id: str | None = Field(default=None, description="worker id among several bridges; auto = host-pid")
    bridge_partitions: int = Field(default=64, ge=1, le=4096, description="partitions (the same for every worker)")
    bridge_lease_s: float = Field(default=5.0, ge=0.5, le=300, description="partition lease and worker liveness TTL")
    # The writer's group-commit window: after the first send of a batch it waits this long for more
    # before the commit. 0 = a lone send is written at once; 1 ms cut the server's CPU per message at
    # a steady 1,000 msg/s by 12-18% for up to 1 ms more ack latency (docs/benchmarks.md).
    bridge_commit_delay_ms: float = Field(
        default=0.0, ge=0, le=50, description="the bridge writer's group-commit window (0 = none)"
    )
    # Brokers that cannot check chatmq tokens (Mosquitto with dynamic security) log the bridge in
    # with this password instead; `chatmq mosquitto-sync` gives the @bridge client the same one.
    service_password: str | None = Field(default=None, description="the bridge's broker password, else a token")
    # The dynamic-security admin of a Mosquitto that chatmq keeps in step (chatmq/adapters/mosquitto).
    mosquitto_url: str | None = Field(default=None, description="mqtt://ADMIN:PASSWORD@HOST:PORT of Mosquitto")
    # EMQX's HTTP auth hooks (/v1/emqx/authn, /v1/emqx/authz) exist only with this shared secret.
    emqx_hook_secret: str | None = Field(default=None, description="X-Chatmq-Hook-Secret EMQX must send")
    # RabbitMQ's HTTP auth backend (/v1/rabbitmq/{user,vhost,resource,topic}) exists only with this
    # secret, which RabbitMQ sends as the password of HTTP Basic auth (chatmq.adapters.rabbitmq.config).
    rabbitmq_hook_secret: str | None = Field(default=None, description="Basic auth password RabbitMQ must send")
    rabbitmq_vhost: str = Field(default="/", description="the vhost of RabbitMQ's MQTT plugin (mqtt.vhost)")
    rabbitmq_exchange: str = Field(default="amq.topic", description="RabbitMQ's MQTT exchange (mqtt.exchange)")
    # How long a client id stays claimed for its user after its last login on RabbitMQ (chatmq.core.clientids):
    # well above RabbitMQ's mqtt.subscription_ttl (24 h), so no one takes over a queue still holding messages.
    rabbitmq_client_id_ttl_s: int = Field(default=30 * 24 * 3600, ge=2 * 24 * 3600,
                                          description="a client id's claim lasts this long after its last login")
    # New conversation ids with a '.' (chatmq.core.ids.dotted_conversation_id): RabbitMQ's MQTT plugin
    # cannot keep them apart from other topics. Unset: refused when RabbitMQ is configured (a hook
    # secret or a management URL), allowed otherwise; false keeps a deployment movable to RabbitMQ.
    conversation_ids_with_dots: bool | None = Field(
        default=None, description="allow '.' in new conversation ids (default: not when RabbitMQ is configured)")
    # The session guard (chatmq rabbitmq-guard) unbinds through RabbitMQ's management HTTP API what
    # RabbitMQ granted before a change and chatmq's rules deny now (chatmq.adapters.rabbitmq.sessions).
    rabbitmq_management_url: str | None = Field(default=None, description="http://USER:PASSWORD@HOST:15672 of "
                                                "RabbitMQ's management API (an administrator of its own)")
    # External identity (chatmq.core.identity): the app's identity provider's JWTs accepted as the MQTT
    # password and HTTP bearer token, verified with the keys of a JWKS URL or one public key.
    idp_jwks_url: str | None = Field(default=None, description="the identity provider's JWKS URL")
    idp_public_key: str | None = Field(default=None, description="PEM public key (text or file path), instead of JWKS")
    idp_issuer: str | None = Field(default=None, description="the iss tokens must carry")
    idp_audience: str | None = Field(default=None, description="the aud tokens must carry")
    idp_algorithms: str = Field(default="RS256,ES256,EdDSA", description="accepted signature algorithms")
    idp_user_claim: str = Field(default="sub", min_length=1, description="the claim holding the chatmq user id")
    idp_name_claim: str = Field(default="name", description="display name of users created on first login")
    idp_sync_names: bool = Field(default=False, description="on every login, take the display name from the "
                                 "name claim when it differs (the identity provider owns names)")
    idp_create_users: bool = Field(default=False, description="create unknown users on their first login")
    idp_leeway_s: float = Field(default=30.0, ge=0, le=600, description="clock skew allowed on exp/nbf/iat")
    idp_jwks_refresh_s: float = Field(default=300.0, ge=1, description="how often the JWKS is re-read")
    idp_jwks_min_refetch_s: float = Field(default=10.0, ge=0, description="least time between JWKS reads "
                                          "for unknown key ids (rotations are picked up on first use)")
    idp_jwks_timeout_s: float = Field(default=5.0, gt=0, le=60, description="JWKS request timeout")
    # Offline push and webhooks (the notifier, chatmq notifier; docs/operations.md).
    push_gateway_url: str | None = Field(default=None, description="where push notifications are POSTed; unset = off")
    push_preview: bool = Field(default=True, description="message text in notifications (devices may opt out)")
    push_collapse_s: float = Field(default=30.0, ge=0, description="at most one notification per device and "
                                   "conversation this often; later messages collapse into the next")
    delivery_timeout_s: float = Field(default=10.0, gt=0, description="one gateway or webhook HTTP attempt")
    delivery_retry_base_s: float = Field(default=1.0, gt=0, description="first retry delay, doubling after")
    delivery_retry_cap_s: float = Field(default=600.0, gt=0, description="longest delay between two attempts")
    delivery_max_attempts: int = Field(default=12, ge=1, description="attempts before a delivery is dead-lettered")
    delivery_log_days: float = Field(default=7.0, gt=0, description="delivered and cancelled deliveries kept this long")
    notifier_concurrency: int = Field(default=16, ge=1, le=512, description="HTTP attempts in flight at once")
    notifier_lease_s: float = Field(default=5.0, ge=0.5, le=300, description="how long a dead notifier's lease "
                                    "blocks a standby")
    # Retention (chatmq retention; docs/data-lifecycle.md): a conversation's own policy wins.
    retention_days: int = Field(default=0, ge=0, le=36_500, description="keep history this many days by default "
                                "(0 = forever); older entries are purged")
    retention_interval_s: float = Field(default=3600.0, ge=1, description="time between two retention passes")
    http_send_timeout_s: float = Field(default=10.0, gt=0, le=60, description="POST .../messages waits this long "
                                       "for the bridge's ack, then answers 503 (resend with the same client_msg_id)")
    log_level: str = "INFO"
    # Prometheus /metrics, /healthz and /readyz of the broker and the bridge; 0 = off.
    broker_metrics_port: int = Field(default=0, description="broker metrics and health port (0 = off)")
    bridge_metrics_port: int = Field(default=0, description="bridge metrics and health port (0 = off)")
    notifier_metrics_port: int = Field(default=0, description="notifier metrics and health port (0 = off)")
    log_levels: str = Field(default="", description="per-component levels, e.g. broker=DEBUG,bridge=WARNING")
    log_format: str = Field(default="text", pattern="^(text|json)$", description="text or json log lines")
    # Media uploads (POST /v1/media): size cap and the types accepted, as sniffed from the content.
    media_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1, description="largest upload accepted")
    media_types: str = Field(
        default=(
            "image/png,image/jpeg,image/gif,image/webp,application/pdf,text/plain,"
            "video/mp4,video/webm,audio/ogg,audio/mpeg,audio/mp4"
        ),
        description="comma-separated content types accepted for upload",
    )

    @property
    def media_allowed_types(self) -> frozenset[str]:
        return frozenset(t.strip().lower() for t in self.media_types.split(",") if t.strip())

    @property
    def resolved_store_url(self) -> str:
        url = self.store_url or f"sqlite:///{(self.data_dir / 'chatmq.db').resolve()}"
        options = {
            "readPreference": self.mongo_history_read_preference,
            "maxStalenessSeconds": self.mongo_history_max_staleness_s,
        }
        return with_url_options(url, {k: str(v) for k, v in options.items() if v is not None})

    @property
    def resolved_broker_port(self) -> int:
        return self.broker_port or self.mqtt_port

    @property
    def dotted_conversation_ids(self) -> bool:
        """Whether a new conversation id may contain '.' (``conversation_ids_with_dots``)."""
        if self.conversation_ids_with_dots is not None:
            return self.conversation_ids_with_dots
        return self.rabbitmq_hook_secret is None and self.rabbitmq_management_url is None

    @property
    def presence_ttl_s(self) -> float:
        return self.heartbeat_interval_s * self.presence_ttl_factor

    def load_secret(self) -> str:
        """The token signing key: CHATMQ_SECRET_KEY, else a key file created once in the data dir.

        Every process of one deployment must see the same key, so compose sets the variable;
        embedded runs share the data dir instead.
        """
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret.key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(48))
            try:  # link() fails if another process won the race: then its key is the key
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return path.read_text().strip()


def with_url_options(url: str, options: dict[str, str]) -> str:
    """``url`` with query options added (MongoDB URLs only); an option the URL already sets to a
    different value is a configuration conflict, refused by name rather than silently overridden."""
    if not options:
        return url
    if not url.startswith(("mongodb://", "mongodb+srv://")):
        raise ValueError(f"{', '.join(options)} only apply to a mongodb:// store URL")
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    lowered = {k.lower(): k for k in query}
    for key, value in options.items():
        present = lowered.get(key.lower())
        if present is not None and query[present] != value:
            raise ValueError(f"store URL sets {present}={query[present]} but the settings ask for {key}={value}")
        query[present or key] = value
    return urlunsplit(parts._replace(query=urlencode(query)))
