"""Settings for Axisor Realtime, read from the environment (12-factor).

Two modes: ``AXISOR_ENV=development`` (the default: SQLite file, in-memory channel layer, a
throw-away secret key) and ``AXISOR_ENV=production``, where every required setting must be given
or the process refuses to start with a message naming what is missing.
"""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

import dj_database_url
from corsheaders.defaults import default_headers
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def env_bool(name: str, default: bool) -> bool:
    value = env(name)
    if value is None:
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {value!r}")


def env_int(name: str, default: int) -> int:
    value = env(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from None


def env_float(name: str, default: float) -> float:
    value = env(name)
    if value is None:
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}") from None


def env_date_list(name: str) -> list[date]:
    """Comma-separated ISO dates (YYYY-MM-DD)."""
    try:
        return [date.fromisoformat(d.strip()) for d in (env(name) or "").split(",") if d.strip()]
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be dates as YYYY-MM-DD, comma-separated, got {env(name)!r}") from None


AXISOR_ENV = env("AXISOR_ENV", "development")
if AXISOR_ENV not in {"development", "production"}:
    raise ImproperlyConfigured(f"AXISOR_ENV must be 'development' or 'production', got {AXISOR_ENV!r}")
PRODUCTION = AXISOR_ENV == "production"

if PRODUCTION:
    missing = [n for n in ("SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL") if not env(n)]
    if not env("REDIS_URL") and not env("REDIS_SENTINELS"):
        missing.append("REDIS_URL (or REDIS_SENTINELS)")
    if missing:
        raise ImproperlyConfigured("AXISOR_ENV=production needs these environment variables: " + ", ".join(missing))

SECRET_KEY = env("SECRET_KEY") or "dev-insecure-axisor-key-change-me-" + "x" * 32
DEBUG = env_bool("DEBUG", not PRODUCTION)
ALLOWED_HOSTS = [
    h.strip() for h in (env("ALLOWED_HOSTS") or "localhost,127.0.0.1,[::1],testserver").split(",") if h.strip()
]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in (env("CSRF_TRUSTED_ORIGINS") or "").split(",") if o.strip()]

# --- Transport security (docs/topics/deployment.md#tls-and-the-proxy) -------------------------
# In production the server sits behind a TLS proxy (deploy/nginx.conf) that overwrites
# X-Forwarded-Proto: a request it received over HTTPS is secure to Django, anything else is
# redirected to HTTPS, HSTS tells browsers to use nothing else, and cookies are never sent in clear.
# The health and metrics endpoints answer over plain HTTP too: load balancers and Prometheus reach
# each process directly, inside the network, without the proxy.
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("SECURE_PROXY_SSL_HEADER", PRODUCTION) else None
)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
SECURE_REDIRECT_EXEMPT = [r"^(healthz|readyz|metrics)$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", PRODUCTION)
# Preloading is a promise browsers ship and that is slow to undo: the operator opts in.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", PRODUCTION)
# check --deploy's W021 (no HSTS preload) is the one warning left by that choice.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]

# Content-Security-Policy (django-csp), in every mode: scripts, styles, images, fonts and
# connections (including the panel's WebSocket: 'self' covers ws:/wss: to this host) only from
# this origin; no plugins, no framing, forms post only here. The panel, the Django admin and the
# API docs (Swagger UI from drf-spectacular-sidecar) run under it with no inline script or style.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],  # Swagger UI's and the admin's icons are data: URIs
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
        **({"report-uri": [env("CSP_REPORT_URI")]} if env("CSP_REPORT_URI") else {}),
    }
}

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    # Refresh tokens are recorded and can be blacklisted (rotation, logout, revocation).
    "rest_framework_simplejwt.token_blacklist",
    # Failed panel and admin sign-ins are counted per username and address, with a cool-off.
    "axes",
    "drf_spectacular",
    # CORS for the REST API, for a browser app served from another origin (CORS_ALLOWED_ORIGINS).
    "corsheaders",
    # Swagger UI's files, served from this origin (/api/docs works offline and under the CSP).
    "drf_spectacular_sidecar",
    "channels",
    # Background jobs: Django's task framework (django.tasks from Django 6; this is its backport)
    # with its database backend, so a job is a row written in the same transaction as its cause.
    "django_tasks",
    "django_tasks_db",
    "accounts",
    "ledger",
    "broadcast",
    "market",
    "system",
    "orders",
    "notifications",
    "panel",
    "jobs",
    "devtools",
    "margin",
]

# The innermost middleware is sync-only, so Django runs the whole stack synchronously on the
# request's thread. Under ASGI the built-in middleware otherwise runs "async" and hops from the
# event loop to a thread and back for each process_request / process_response: a dozen trips
# through an event loop that is also serving every socket, per request (a third of the server's
# CPU at 100 order placements/s).
MIDDLEWARE = [
    "core.metrics.RequestTimingMiddleware",
    # Health and metrics probes name a process's own address as their Host (core/middleware.py).
    "core.middleware.ProbesAnswerAnyHost",
    # Before anything that may answer: a preflight and every answer carry the CORS headers.
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Turns a sign-in refused by axes into its lockout page (429); sync and async capable, so it
    # runs synchronously above the sync-only innermost middleware.
    "axes.middleware.AxesMiddleware",
    # The panel's and the admin's sign-in forms share the per-address rate of POST /api/auth/token.
    "accounts.throttles.SignInFormThrottle",
    "core.middleware.RefuseNulCharacters",
]

# CORS (django-cors-headers): a browser app on another origin (https://app.example.com calling
# https://api.example.com) may call the REST API when its origin is listed here. Off by default.
# Only /api/: the panel and the admin sign in with a session cookie and stay same-origin. The API
# authenticates with a bearer token, never a cookie, so credentials are not allowed. The same
# origins may open the sockets (gateway/origin.py).
CORS_ALLOWED_ORIGINS = [o.strip().rstrip("/") for o in (env("CORS_ALLOWED_ORIGINS") or "").split(",") if o.strip()]
CORS_URLS_REGEX = r"^/api/"
CORS_ALLOW_CREDENTIALS = False
CORS_ALLOW_HEADERS = (*default_headers, "idempotency-key")
CORS_EXPOSE_HEADERS = ["Retry-After"]
CORS_PREFLIGHT_MAX_AGE = 600

ROOT_URLCONF = "axisor.urls"
ASGI_APPLICATION = "axisor.asgi.application"
AUTH_USER_MODEL = "accounts.User"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = env("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'var' / 'db.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_health_checks=True)}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A connection pool per process (psycopg_pool), not persistent connections: under ASGI each
    # request may run on a thread of its own, and a persistent connection per such thread piles
    # up until PostgreSQL refuses clients (Django's docs: disable persistent connections with
    # ASGI, use the backend's pool). Connections are checked as they leave the pool; a caller
    # that waits longer than DB_POOL_TIMEOUT gets a 503.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env_int("DB_POOL_MIN", 2),
        "max_size": env_int("DB_POOL_MAX", 10),
        "timeout": env_float("DB_POOL_TIMEOUT", 10.0),
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    Path(DATABASES["default"]["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # The embedded default serves the run command's requests, sockets, venue, feed and worker
    # threads from one file. SQLite's default (DEFERRED) transactions take the write lock only at
    # their first write, and a reader that must then upgrade fails at once with "database is
    # locked" whatever the timeout. IMMEDIATE takes the lock at BEGIN, so writers queue for it
    # (up to the busy timeout) instead; WAL lets readers go on while one writer writes, and
    # synchronous=NORMAL is WAL's recommended durability (a power cut may lose the last
    # transactions, never corrupt the file).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer --------------------------------------------------------------------------
# RedisPubSubChannelLayer, not RedisChannelLayer: see docs/topics/deployment.md, "Why the pub/sub
# channel layer"; ours re-subscribes after losing Redis (core/internals.py).
# One Redis configuration for every Redis user (the layer, presence, leases, limits, the cache,
# probes: core/redis_clients.py builds all their clients): REDIS_URL (one server), or
# REDIS_SENTINELS + REDIS_SENTINEL_MASTER (a master Redis Sentinel watches and fails over).
REDIS_URL = env("REDIS_URL")
REDIS_SENTINELS: list[tuple[str, int]] = []
for _address in (env("REDIS_SENTINELS") or "").split(","):
    if _address.strip():
        _host, _, _port = _address.strip().rpartition(":")
        if not _host or not _port.isdigit():
            raise ImproperlyConfigured(f"REDIS_SENTINELS must be host:port,..., got {env('REDIS_SENTINELS')!r}")
        REDIS_SENTINELS.append((_host.strip("[]"), int(_port)))
REDIS_SENTINEL_MASTER = env("REDIS_SENTINEL_MASTER")
REDIS_PASSWORD = env("REDIS_PASSWORD")  # the master's (and replicas') password, with Sentinel
REDIS_SENTINEL_PASSWORD = env("REDIS_SENTINEL_PASSWORD")
if REDIS_SENTINELS and REDIS_URL:
    raise ImproperlyConfigured("set REDIS_URL (one Redis) or REDIS_SENTINELS (Sentinel), not both")
if bool(REDIS_SENTINELS) != bool(REDIS_SENTINEL_MASTER):
    raise ImproperlyConfigured("REDIS_SENTINELS and REDIS_SENTINEL_MASTER go together")
REDIS_ENABLED = bool(REDIS_URL or REDIS_SENTINELS)
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 5.0)
REDIS_CONNECT_TIMEOUT = env_float("REDIS_CONNECT_TIMEOUT", 3.0)
CHANNEL_LAYER_PREFIX = env("CHANNEL_LAYER_PREFIX", "axisor")
# Several Redis servers for the layer alone (redis://...,redis://...): channels-redis spreads its
# channels and groups over them by consistent hashing; everything else stays on the Redis above.
CHANNEL_LAYER_HOSTS = [url.strip() for url in (env("CHANNEL_LAYER_HOSTS") or "").split(",") if url.strip()]
if CHANNEL_LAYER_HOSTS and not REDIS_ENABLED:
    raise ImproperlyConfigured("CHANNEL_LAYER_HOSTS shards the layer only: set REDIS_URL or REDIS_SENTINELS too")
# A process that cannot reach a layer server for this long tells the sockets in that server's
# rooms to reconnect (4013), so they resume where the layer reaches them (core/internals.py).
CHANNEL_LAYER_GRACE_SECONDS = env_float("CHANNEL_LAYER_GRACE_SECONDS", 10.0)
# The embedded default's layer (no Redis: one process). Its hub holds one membership per room for
# the process's life and reads one channel that carries every room's messages; channels' defaults
# would drop every membership a day old (the process goes deaf), drop the hub from every room when
# one message waits a minute, and drop what a burst puts beyond 100 waiting messages.
IN_MEMORY_LAYER = {"group_expiry": 100 * 365 * 86400, "expiry": 100 * 365 * 86400, "capacity": 100_000}
if REDIS_ENABLED:
    # Its hosts (and their timeouts) come from core.redis_clients.layer_hosts().
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "core.internals.ResilientPubSubChannelLayer", "CONFIG": {"prefix": CHANNEL_LAYER_PREFIX}}
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": IN_MEMORY_LAYER}}

# --- Cache ---------------------------------------------------------------------------------
# What several server processes must count together (the REST throttles of accounts/throttles.py)
# lives in Redis when there is one; the embedded default (no Redis) has one process and counts
# in its memory.
CACHE_KEY_PREFIX = env("CACHE_KEY_PREFIX", CHANNEL_LAYER_PREFIX)
if REDIS_ENABLED:
    # Django's RedisCache on the client of core/redis_clients.py (one server or Sentinel).
    CACHES = {"default": {"BACKEND": "core.cache.RedisCache", "KEY_PREFIX": CACHE_KEY_PREFIX}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "KEY_PREFIX": CACHE_KEY_PREFIX}}

# --- Auth, JWT ------------------------------------------------------------------------------
_validators = "django.contrib.auth.password_validation."
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": _validators + "UserAttributeSimilarityValidator"},
    {"NAME": _validators + "MinimumLengthValidator", "OPTIONS": {"min_length": env_int("PASSWORD_MIN_LENGTH", 10)}},
    {"NAME": _validators + "CommonPasswordValidator"},
    {"NAME": _validators + "NumericPasswordValidator"},
]

# Axes (panel and admin sign-ins; the REST token endpoint is throttled instead, see
# AXISOR_AUTH_THROTTLES): after AXES_FAILURE_LIMIT failures of one username from one address, that
# pair is refused (429, even with the right password, before it is checked) for AXES_COOLOFF_SECONDS.
# Keyed on the pair, so an attacker elsewhere cannot lock a real user out; attempts during a lockout
# do not extend it, so every lockout ends; a successful sign-in clears the count.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(seconds=env_float("AXES_COOLOFF_SECONDS", 15 * 60))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_LOCKOUT_CALLABLE = "accounts.lockout.lockout_response"
AXES_WHITELIST_CALLABLE = "accounts.lockout.is_api_request"
AXES_CLIENT_IP_CALLABLE = "accounts.throttles.client_address"
AXES_VERBOSE = False

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=env_int("JWT_ACCESS_SECONDS", 15 * 60)),
    "REFRESH_TOKEN_LIFETIME": timedelta(seconds=env_int("JWT_REFRESH_SECONDS", 24 * 3600)),
    "ALGORITHM": "HS256",
    "SIGNING_KEY": env("JWT_SIGNING_KEY") or SECRET_KEY,
    "AUDIENCE": env("JWT_AUDIENCE"),
    "ISSUER": env("JWT_ISSUER"),
    "LEEWAY": 0,
    "UPDATE_LAST_LOGIN": False,
    "CHECK_USER_IS_ACTIVE": True,
    # A password change (or a deactivation) makes every earlier token invalid: by the tokens'
    # credentials claim (accounts/tokens.py), not simplejwt's password-hash claim, which a sign-in
    # that re-hashes the password (the hasher's parameters changed) broke for every other device.
    "CHECK_REVOKE_TOKEN": False,
    "AUTH_TOKEN_CLASSES": ("accounts.tokens.AccessToken",),
    "TOKEN_OBTAIN_SERIALIZER": "accounts.apis.TokenObtainInput",
    "AUTH_HEADER_TYPES": ("Bearer",),
    # A refresh token is single-use: /api/auth/token/refresh answers a new one and blacklists the
    # old; /api/auth/logout blacklists it; a password change or deactivation blacklists them all.
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
}

# REST throttles on the credential endpoints (accounts/throttles.py), counted in the cache before
# any password is hashed: "<requests>/<period>", the period s, m, h or d, optionally with a count
# ("5/30s"). Each request must pass both its address and its username (or user) limits.
AXISOR_AUTH_THROTTLES = {
    "login_address": env("THROTTLE_LOGIN_ADDRESS") or "60/m",
    "login_username": env("THROTTLE_LOGIN_USERNAME") or "10/m",
    "refresh_address": env("THROTTLE_REFRESH_ADDRESS") or "120/m",
    "refresh_user": env("THROTTLE_REFRESH_USER") or "30/m",
    "sessions_address": env("THROTTLE_SESSIONS_ADDRESS") or "120/m",
    "sessions_user": env("THROTTLE_SESSIONS_USER") or "30/m",
}
# Proxies in front of the server that append to X-Forwarded-For (deploy/nginx.conf: one). The
# client address the throttles and axes key on is the one the nearest of them saw; 0 trusts no
# header and uses the peer's address.
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 1 if PRODUCTION else 0)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.JWTAuthentication",  # simplejwt's, its user read compiled once
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON in and out. The parser answers JSON nested too deep with 400 (core/api.py); the form
    # parsers are DRF's defaults. No browsable HTML renderer: the API is documented at /api/docs,
    # and the HTML view of our list endpoints (no queryset attribute) was a 500 for any browser.
    "DEFAULT_PARSER_CLASSES": [
        "core.api.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "core.api.exception_handler",
    # ?limit=&offset= pages of PAGE_SIZE, never more than API_MAX_PAGE_SIZE rows (core/api.py).
    "DEFAULT_PAGINATION_CLASS": "core.api.Page",
    "PAGE_SIZE": 50,
    "NUM_PROXIES": TRUSTED_PROXY_COUNT,
}
API_MAX_PAGE_SIZE = env_int("API_MAX_PAGE_SIZE", 500)

SPECTACULAR_SETTINGS = {
    "TITLE": "Axisor Realtime API",
    "DESCRIPTION": "REST side of the Axisor real-time event server. WebSocket protocols: see README.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the drf-spectacular-sidecar package, never a CDN; no online validator badge.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    # Two choice sets share a field name with another: name them (check --deploy warns otherwise).
    "ENUM_NAME_OVERRIDES": {
        "NoticeKindEnum": "system.models.NoticeKind.values",
        "NotificationTypeEnum": "notifications.models.NotificationType.values",
    },
}

# --- Realtime gateway -----------------------------------------------------------------------
AXISOR_WS = {
    "AUTH_TIMEOUT_SECONDS": env_float("WS_AUTH_TIMEOUT_SECONDS", 10.0),
    "MAX_MESSAGE_BYTES": env_int("WS_MAX_MESSAGE_BYTES", 64 * 1024),
    # Token bucket for inbound client messages: sustained rate and burst size.
    "RATE_PER_SECOND": env_float("WS_RATE_PER_SECOND", 20.0),
    "RATE_BURST": env_int("WS_RATE_BURST", 40),
    # This many refused messages within about this many seconds close the socket (4008).
    "RATE_ABUSE_CLOSE_AFTER": env_int("WS_RATE_ABUSE_CLOSE_AFTER", 100),
    "RATE_ABUSE_WINDOW_SECONDS": env_float("WS_RATE_ABUSE_WINDOW_SECONDS", 10.0),
    # A user's messages over all their sockets in one process: CAP_WS_MESSAGES_PER_SECOND_<TIER> a
    # second, in bursts of this many seconds' worth (gateway.inbound_limits.UserBudgets).
    "USER_BURST_SECONDS": env_float("WS_USER_BURST_SECONDS", 5.0),
    # Slow readers: hold room events back while this many bytes wait unsent in the socket (market
    # data conflates meanwhile); close 4009 after this long held back with events that may not be
    # dropped, or when this many of them wait.
    "SLOW_BYTES": env_int("WS_SLOW_BYTES", 1 << 20),
    "SLOW_SECONDS": env_float("WS_SLOW_SECONDS", 10.0),
    "MAX_WAITING": env_int("WS_MAX_WAITING", 1000),
    # ... and at most this much of their text (characters): a replay of large events (notification
    # data of 15 KB each) piled 1,000 of them up behind one slow socket.
    "MAX_WAITING_BYTES": env_int("WS_MAX_WAITING_BYTES", 2 << 20),
    # A socket's slot under CAP_WS_SOCKETS_<TIER> is a lease its process renews (gateway/limits.py):
    # a dead process's sockets stop counting after this.
    "LEASE_SECONDS": env_float("WS_LEASE_SECONDS", 30.0),
}
# daphne: drop a connection that has not sent a whole HTTP request (or WebSocket handshake) after
# this many idle seconds (Twisted's default is 60; see core/internals.py).
HTTP_IDLE_TIMEOUT_SECONDS = env_float("HTTP_IDLE_TIMEOUT_SECONDS", 30.0)
# daphne: drop a connection whose request head (request line and headers, or WebSocket handshake) is
# not whole this many seconds after its first byte, however it trickles in (core/internals.py).
HTTP_HEADER_TIMEOUT_SECONDS = env_float("HTTP_HEADER_TIMEOUT_SECONDS", 10.0)
# Connections a daphne process works on at once; more are accepted and read as places free
# (core.internals.Admission; docs/reference/settings.md)
CONNECTS_IN_PROGRESS = env_int("CONNECTS_IN_PROGRESS", 100)
if CONNECTS_IN_PROGRESS < 0:
    raise ImproperlyConfigured(f"CONNECTS_IN_PROGRESS must be 0 (no limit) or more, got {CONNECTS_IN_PROGRESS}")
# daphne: the listen backlog of every endpoint that does not name its own (Twisted's is 50, which a
# reconnect storm overflows; the kernel caps it at net.core.somaxconn, 4096 by default since Linux
# 5.4; see core/internals.py).
LISTEN_BACKLOG = env_int("LISTEN_BACKLOG", 4096)
if LISTEN_BACKLOG < 1:
    raise ImproperlyConfigured(f"LISTEN_BACKLOG must be at least 1, got {LISTEN_BACKLOG}")
# The largest request body, in bytes (Django's setting, here for the whole body: the API takes no file
# uploads). A larger one is refused with 413 `request_too_large` before it is read: by daphne (core/
# internals.py), the ASGI and WSGI entry points (core/middleware.py) and nginx (client_max_body_size).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 2_621_440)  # 2.5 MiB, Django's default
# daphne: after refusing a body, what the client still sends is read and thrown away for this long
# before the connection closes, so that the client reads the 413 rather than a reset (nginx's
# lingering close).
HTTP_LINGER_SECONDS = env_float("HTTP_LINGER_SECONDS", 5.0)
# daphne: stop reading a socket while this many of its messages wait for its consumer (flood
# backpressure; reading resumes below a quarter of it; see core/internals.py).
WS_INBOUND_QUEUE_HIGH = env_int("WS_INBOUND_QUEUE_HIGH", 64)
# The server process's garbage collector (core.collector.tune_gc): what start-up built is frozen out
# of every collection, and collections run at these generation thresholds. CPython's default
# (2000, 10, 10) makes a process holding thousands of sockets re-scan all of them every few
# hundred messages: at 5,000 sockets a broadcast's median delivery took ~0.9 s, ~0.25 s with these.
GC_THRESHOLDS = tuple(int(x) for x in (env("GC_THRESHOLDS") or "100000,50,1000").split(","))
# A REST worker (gunicorn) collects once its response is out, when this many objects wait, so that
# a request normally waits on no collection (core.collector.collect_between_requests; one that
# allocates past the thresholds on its own still does); 0: only at the thresholds above, inside
# whichever request reaches them (~110 ms for that request).
GC_BETWEEN_REQUESTS = env_int("GC_BETWEEN_REQUESTS", 3000)
AXISOR_ORDERS = {
    "SESSION_SECONDS": env_int("ORDERS_SESSION_SECONDS", 24 * 3600),
    # Modifications per order (409 limit_exceeded beyond): each is kept in the order's history.
    "MAX_MODIFICATIONS": env_int("ORDERS_MAX_MODIFICATIONS", 100),
    # Heartbeat well inside the seed clients' 30 s read timeout; idle close after 90 s of silence.
    "HEARTBEAT_SECONDS": env_float("ORDERS_HEARTBEAT_SECONDS", 10.0),
    "IDLE_TIMEOUT_SECONDS": env_float("ORDERS_IDLE_TIMEOUT_SECONDS", 90.0),
    # A connection's slot is a lease in Redis; a dead process's slots free themselves after this.
    "LEASE_SECONDS": env_float("ORDERS_LEASE_SECONDS", 30.0),
    # tier: (max concurrent connections, connection attempts per minute or None for unlimited)
    "TIER_LIMITS": {"basic": (1, 10), "premium": (3, 30), "enterprise": (10, None)},
}


def tier_caps(name: str, basic: int, premium: int, enterprise: int) -> dict[str, int]:
    """One cap per account tier, each from ``{name}_BASIC``, ``_PREMIUM``, ``_ENTERPRISE``."""
    defaults = {"basic": basic, "premium": premium, "enterprise": enterprise}
    return {tier: env_int(f"{name}_{tier.upper()}", value) for tier, value in defaults.items()}


# What one account may multiply, per tier (docs/reference/settings.md#caps-per-account-tier); 0 is
# no cap. /ws sockets use the leases of gateway/limits.py, like /ws/orders connections.
AXISOR_CAPS = {
    "WS_SOCKETS": tier_caps("CAP_WS_SOCKETS", 10, 30, 100),  # open /ws sockets, all processes
    # inbound messages a second over all of a user's sockets (both protocols) in one server process
    "WS_MESSAGES_PER_SECOND": tier_caps("CAP_WS_MESSAGES_PER_SECOND", 40, 100, 200),
    "PRICE_ALERTS": tier_caps("CAP_PRICE_ALERTS", 10, 50, 200),  # active (untriggered) price alerts
    "ORDER_SESSIONS": tier_caps("CAP_ORDER_SESSIONS", 5, 10, 30),  # live (unexpired, unrevoked) sessions
    "ORDERS_PER_MINUTE": tier_caps("CAP_ORDERS_PER_MINUTE", 120, 600, 3000),  # order placements, modifications
    "WORKING_ORDERS": tier_caps("CAP_WORKING_ORDERS", 200, 1000, 5000),  # live orders held at once
    # An order's leverage, below the instrument's own cap (the lower of the two holds). Basic at
    # 20x, as exchanges start new accounts (Binance's futures: 20x until the user asks for more);
    # the seed's example orders use 10x, the demo's premium alice 20x and 25x.
    "LEVERAGE": tier_caps("CAP_LEVERAGE", 20, 50, 100),
    # Events replayed by resume (/ws `resume`, /ws/orders ?since=) per user per minute: at least
    # twice EVENTS_RETENTION_PER_USER, so one full catch-up always fits.
    "RESUME_EVENTS_PER_MINUTE": tier_caps("CAP_RESUME_EVENTS_PER_MINUTE", 20_000, 50_000, 100_000),
}
AXISOR_PRESENCE = {
    # Each server process renews its own lease and its connections' in Redis; a process that dies
    # drops off the dashboard, and its connections out of every count, within this many seconds.
    "LEASE_SECONDS": env_float("PRESENCE_LEASE_SECONDS", 30.0),
    # How often each process publishes its stats (connections, rooms, fan-out) to admin:staff.
    "STATS_SECONDS": env_float("PRESENCE_STATS_SECONDS", 1.0),
}
AXISOR_EVENTS = {
    # The event log keeps each user's events for resume: at most this many days, and at most this
    # many events behind the user's latest.
    "RETENTION_DAYS": env_float("EVENTS_RETENTION_DAYS", 7.0),
    "RETENTION_EVENTS": env_int("EVENTS_RETENTION_PER_USER", 10_000),
}
AXISOR_MARKET = {
    # Conflation: at most this many market_data_update per second per symbol, and
    # historical_data_update per second per symbol and timeframe.
    "UPDATES_PER_SECOND": env_float("MARKET_UPDATES_PER_SECOND", 4.0),
    "HISTORY_PER_SECOND": env_float("MARKET_HISTORY_PER_SECOND", 1.0),
    "TICK_RETENTION_HOURS": env_float("MARKET_TICK_RETENTION_HOURS", 24.0),
    # A tick older than this is refused (400): a feed catching up on an outage reaches back this
    # far; before, any time was taken, year 1 included, and charted.
    "BACKFILL_DAYS": env_float("MARKET_BACKFILL_DAYS", 7.0),
    # The simulated feed (AXISOR_SIMULATE=all): one tick per instrument every this many seconds.
    "FEED_INTERVAL_SECONDS": env_float("MARKET_FEED_INTERVAL_SECONDS", 0.5),
    # Exchange sessions (market/sessions.py): NSE trades 09:15-15:30 India time on weekdays. Off
    # (MARKET_SESSIONS=0), every exchange trades around the clock; the test suite turns them off.
    "SESSIONS": env("MARKET_SESSIONS", "1") not in ("0", "false", "off"),
}
# The simulated feed's random-walk seed: unset, a different walk every start; set, the same walk every
# start from the same prices (a repeatable demo; tests/newcomer relies on it).
MARKET_FEED_SEED: int | None = env_int("MARKET_FEED_SEED", 0) if env("MARKET_FEED_SEED") else None
# Exchange holidays (market/sessions.py), per exchange: (month, day) closed every year, and dates.
# NSE closes every year on Republic Day, Independence Day, Gandhi Jayanti and Christmas; the festival
# holidays move each year and come from the exchange's circular: MARKET_HOLIDAYS_NSE (YYYY-MM-DD,...).
AXISOR_HOLIDAYS = {
    "NSE": (
        frozenset({(1, 26), (8, 15), (10, 2), (12, 25)}),
        frozenset(env_date_list("MARKET_HOLIDAYS_NSE")),
    )
}
# Money and pre-trade checks (margin/account.py): a market order reserves margin at the last price
# plus this fraction, for the slippage of its fill.
AXISOR_RISK = {
    "MARKET_ORDER_BUFFER": env_float("RISK_MARKET_ORDER_BUFFER", 0.01),
    # Refused before an order is recorded (400): a limit price further than this fraction from the
    # last traded price, and an order whose notional (quantity × price) is above this.
    "PRICE_BAND": env_float("RISK_PRICE_BAND", 0.10),
    "MAX_ORDER_NOTIONAL": env_float("RISK_MAX_ORDER_NOTIONAL", 100_000_000),
    # A fill of a MARKET or SL-M order reported from outside the paper venue (the executions API)
    # further than this fraction from the last traded price is refused (400): such an order has no
    # limit to bound its price. The same 10 % as PRICE_BAND: no limit order could be placed there.
    "FILL_BAND": env_float("RISK_FILL_BAND", 0.10),
    # The mark price liquidation and the Margin Guard are judged at: the last trade, moving at most
    # this fraction per tick (one bad print cannot liquidate anyone).
    "MARK_BAND": env_float("RISK_MARK_BAND", 0.05),
    # Fees, a fraction of each fill's notional, booked as ledger entries (kind "fee"): the trading fee
    # on every fill (Binance's futures taker fee is 0.05 %), and a liquidation's fee, taken only out of
    # what the liquidated position's margin has left. The pre-trade check holds the opening fee too.
    "FEE_RATE": env_float("RISK_FEE_RATE", 0.0005),
    "LIQUIDATION_FEE_RATE": env_float("RISK_LIQUIDATION_FEE_RATE", 0.005),
}

AXISOR_MARGIN = {
    # position_status_update: at most this many per second per position (a tick sweep of a symbol
    # reads the open positions of its connected holders at most this often).
    "POSITION_UPDATES_PER_SECOND": env_float("MARGIN_POSITION_UPDATES_PER_SECOND", 2.0),
    # Hysteresis: a guard that fired re-arms once the distance recovers above threshold + this band
    # (or after the user's cooldown).
    "REARM_BAND": env_float("MARGIN_REARM_BAND", 0.1),
}
AXISOR_NOTIFICATIONS = {
    "MAX_ATTEMPTS": env_int("NOTIFY_MAX_ATTEMPTS", 5),
    "BACKOFF_BASE_SECONDS": env_float("NOTIFY_BACKOFF_BASE_SECONDS", 2.0),
    "BACKOFF_MAX_SECONDS": env_float("NOTIFY_BACKOFF_MAX_SECONDS", 300.0),
    # A worker holds a delivery this long per attempt (longer than any attempt can take); one that
    # died mid-attempt lets it go after this, and the delivery sweep hands it to another worker.
    "CLAIM_SECONDS": env_float("NOTIFY_CLAIM_SECONDS", 60.0),
    "SWEEP_SECONDS": env_float("NOTIFY_SWEEP_SECONDS", 10.0),
    # In-app deliveries are checked in jobs of this many.
    "BATCH": env_int("NOTIFY_BATCH", 100),
    # At most this many webhook deliveries of one user in flight at once, across all workers (one
    # while the endpoint's circuit breaker is half open). Together with the endpoint's circuit
    # breaker and the worker's OUTBOUND_THREADS, a user's slow or dead endpoint costs only its owner.
    "PER_USER_CONCURRENCY": env_int("NOTIFY_PER_USER_CONCURRENCY", 2),
    # A webhook attempt answered after more than this is slow: the user's attempts then go one at a
    # time until one answers faster. 0: half of OUTBOUND_TIMEOUT_SECONDS.
    "WEBHOOK_SLOW_SECONDS": env_float("NOTIFY_WEBHOOK_SLOW_SECONDS", 0.0),
    # Saves of a webhook URL per user ("<requests>/<period>", as AXISOR_AUTH_THROTTLES): each looks
    # the name up, and a new URL resets the endpoint's circuit breaker (notifications/throttles.py).
    "WEBHOOK_URL_RATE": env("NOTIFY_WEBHOOK_URL_RATE") or "20/h",
}
# Outbound HTTP on a user's behalf (webhooks), see core/outbound.py. ALLOW_HOSTS names private
# receivers ("host:port", "[::1]:8080") that skip the public-address rule: tests, on-premise.
AXISOR_OUTBOUND = {
    "HTTPS_ONLY": env_bool("OUTBOUND_HTTPS_ONLY", PRODUCTION),
    "ALLOW_HOSTS": frozenset(
        h.strip().lower() for h in (env("NOTIFY_WEBHOOK_ALLOW_HOSTS") or "").split(",") if h.strip()
    ),
    "PORTS": frozenset(int(p) for p in (env("OUTBOUND_ALLOWED_PORTS") or "443,80").split(",") if p.strip()),
    # Total per attempt: connect + TLS + send + read.
    "TIMEOUT_SECONDS": env_float("OUTBOUND_TIMEOUT_SECONDS", 10.0),
    "MAX_RESPONSE_BYTES": env_int("OUTBOUND_MAX_RESPONSE_BYTES", 65536),
}
# Background work (core/worker.py): `manage.py worker` processes, or, with AXISOR_BACKGROUND=1
# (the run command's default), the same worker inside the server process on threads of its own.
AXISOR_WORKER = {
    "THREADS": env_int("WORKER_THREADS", 4),  # jobs run at once per worker
    # Of those, at most this many on outbound jobs (webhook attempts); 0: half of them, at least one.
    "OUTBOUND_THREADS": env_int("WORKER_OUTBOUND_THREADS", 0),
    "POLL_SECONDS": env_float("WORKER_POLL_SECONDS", 0.5),  # an idle job thread looks this often
    # Single jobs (venue, feed, relay, sweep, retention): a dead holder's successor waits this long.
    "LEASE_SECONDS": env_float("WORKER_LEASE_SECONDS", 5.0),
}
AXISOR_BACKGROUND = env_bool("AXISOR_BACKGROUND", True)
AXISOR_SERVICE_KEY = env("AXISOR_SERVICE_KEY")
# /metrics (Prometheus) answers only with this bearer token; unset, the endpoint is off (404).
METRICS_TOKEN = env("METRICS_TOKEN")
AXISOR_SIMULATE = env("AXISOR_SIMULATE", "")
if AXISOR_SIMULATE not in {"", "venue", "all"}:
    raise ImproperlyConfigured(f"AXISOR_SIMULATE must be unset, 'venue' or 'all', got {AXISOR_SIMULATE!r}")

# --- i18n, static ---------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"
# The built @axisor/realtime package (clients/js/dist, committed) is served at static/realtime/: the
# staff panel imports it as an ES module.
STATICFILES_DIRS = [BASE_DIR / "static", ("realtime", BASE_DIR / "clients" / "js" / "dist")]
STATIC_ROOT = BASE_DIR / "var" / "staticfiles"

EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "notifications@axisor.local")
# An SMTP server that stops answering must not hold a worker thread for ever.
EMAIL_TIMEOUT = env_float("EMAIL_TIMEOUT", 10.0)

# "outbound": jobs that wait on a server a user chose (webhooks), capped per worker (core/worker.py).
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default", "outbound"]}}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {
        "redact": {"()": "core.logfilters.RedactSecrets"},
        "outages_as_warnings": {"()": "core.logfilters.OutagesAsWarnings"},
        "abandoned_listeners": {"()": "core.logfilters.AbandonedDisconnectListeners"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        # Django's own default gives "django" a console handler of its own when DEBUG is on (and
        # mail_admins): with the root's, every error was written twice, once without a time.
        "django": {"level": "INFO", "handlers": []},
        "django.db.backends": {"level": "WARNING"},
        # A line per job started and finished: too many to read; failures still show.
        "django_tasks": {"level": "WARNING", "filters": ["outages_as_warnings"]},
        "django_tasks_db": {"level": "WARNING"},
        "asyncio": {"filters": ["abandoned_listeners"]},
        # Every sign-in at INFO (several lines each); failures and lockouts are warnings.
        "axes": {"level": "WARNING"},
    },
}
