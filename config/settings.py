"""Settings, read from the environment.

One file for every environment. Production sets DATABASE_URL, REDIS_URL,
SECRET_KEY and ALLOWED_HOSTS; where DATABASE_URL or REDIS_URL is unset the project
starts its own embedded PostgreSQL and Redis (config/embedded.py). A malformed
value stops start-up with a message naming the variable.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config import embedded
from config.env import env_bool, env_choice, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DEBUG", False)

_secret = env_str("SECRET_KEY")
if not _secret:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set: set it to a long random string "
            "(python -c 'import secrets; print(secrets.token_urlsafe(50))'), "
            "or set DEBUG=true for local development."
        )
    _secret = "dev-only-insecure-secret-key-never-used-in-production-0123456789"
SECRET_KEY: str = _secret

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "crm",
    "policies",
    "scripting",
    "campaigns",
    "agents",
    "selfservice",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "crm.middleware.UserTimeZoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

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

# --- Database ---------------------------------------------------------------

# The embedded servers are for development, tests and benchmarks. With DEBUG off
# they start only when asked for by name, so a production deployment that lost
# its DATABASE_URL fails at start-up instead of writing to an empty local database.
EMBEDDED_SERVERS = env_bool("CRM_EMBEDDED_SERVERS", DEBUG)


def _server_url(name: str, what: str, example: str) -> str | None:
    value = env_str(name)
    if value or EMBEDDED_SERVERS:
        return value
    raise ImproperlyConfigured(
        f"{name} is not set and DEBUG is off: set {name} to your {what} (e.g. {example}), "
        f"or set CRM_EMBEDDED_SERVERS=true to start the embedded one under .local/ "
        f"(development and tests only)."
    )


_database_url = (
    _server_url("DATABASE_URL", "PostgreSQL", "postgresql://crm:secret@db.internal:5432/crm")
    or embedded.postgres_url()
)
try:
    _db = dj_database_url.parse(_database_url, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0, minimum=0))
except ValueError as exc:
    raise ImproperlyConfigured(f"DATABASE_URL is not a valid database URL: {exc}") from None
if _db.get("ENGINE") != "django.db.backends.postgresql":
    raise ImproperlyConfigured(
        f"DATABASE_URL must be a postgresql:// URL; PostgreSQL is the only supported "
        f"database (got engine {_db.get('ENGINE')!r})."
    )
_db.setdefault("OPTIONS", {})
_pool_size = env_int("DATABASE_POOL_MAX_SIZE", 0, minimum=0)
if _pool_size:
    # Django's psycopg pool; CONN_MAX_AGE must then stay 0.
    _db["CONN_MAX_AGE"] = 0
    _db["OPTIONS"]["pool"] = {"min_size": 1, "max_size": _pool_size, "timeout": 10}
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: Celery broker and the Channels layer ----------------------------

REDIS_URL: str = _server_url("REDIS_URL", "Redis", "redis://cache.internal:6379/0") or embedded.redis_url()
if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured(f"REDIS_URL={REDIS_URL!r} must start with redis://, rediss:// or unix://.")


def _kombu_url(url: str) -> str:
    # kombu spells a Unix-socket Redis as redis+socket://
    return "redis+socket://" + url.removeprefix("unix://") if url.startswith("unix://") else url


CELERY_BROKER_URL = _kombu_url(REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 4
# A safety net, not a budget: a pool process whose resident memory exceeds this (KiB,
# read after each task) is replaced by a fresh fork once that task is done; nothing
# is lost or run twice. A pool process holds ~95 MB at the end of an ingest run, most
# of it shared with the worker's parent; one over twice that has leaked or met an
# outsized task. 0: never replaced for its memory. CELERY_WORKER_MAX_TASKS_PER_CHILD
# (0: never) replaces each after that many tasks, for a leak too slow to show.
CELERY_WORKER_MAX_MEMORY_PER_CHILD = env_int("CELERY_WORKER_MAX_MEMORY_PER_CHILD", 200_000, minimum=0) or None
CELERY_WORKER_MAX_TASKS_PER_CHILD = env_int("CELERY_WORKER_MAX_TASKS_PER_CHILD", 0, minimum=0) or None
# A worker process keeps its database connection from one task to the next (Celery's
# Django integration would close it after each task, and close a psycopg pool with
# it: every task then paid for a new PostgreSQL backend, more PostgreSQL CPU than
# the task's own statements when tasks are small). Before each task a connection
# that broke, or is older than CELERY_WORKER_DB_CONN_MAX_AGE seconds, is dropped and
# the task opens a fresh one (config/celery.py); Celery itself still closes all of
# them every CELERY_DB_REUSE_MAX tasks.
CELERY_WORKER_DB_CONN_MAX_AGE = env_int("CELERY_WORKER_DB_CONN_MAX_AGE", 600, minimum=1)
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000, minimum=1)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
# The queue every task goes to unless routed elsewhere, and the one a worker
# consumes by default: a bench sets one of its own, so its worker runs exactly as
# production's does (every task) without taking another environment's messages.
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_TASK_DEFAULT_QUEUE", "celery")
# With acks_late, a message not acknowledged within this time is delivered again:
# it must be longer than the longest task (a touchpoint apply run stops after
# CRM_INGEST_TASK_BUDGET_SECONDS), and it bounds how long a message held by a
# lost worker waits (the beat sweep usually re-enqueues sooner).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 600, minimum=60)
}
CELERY_BEAT_SCHEDULE = {
    "expire-offers": {
        "task": "policies.tasks.offers_expire",
        "schedule": 300.0,
    },
    "purge-expired-api-tokens": {
        "task": "crm.tasks.api_tokens_purge_expired",
        "schedule": 3600.0,
    },
    # Months are made three ahead, so a missed day costs nothing; daily keeps the
    # horizon there. Retention (dropping old months) is an operator's command.
    "create-access-log-partitions": {
        "task": "crm.tasks.access_log_partitions_ensure",
        "schedule": 86_400.0,
    },
    # Calls that rang as long as their queue allows move on (the only ring timer: a
    # message per call cost the arrival a broker round trip); waiting calls a lock skipped.
    "sweep-calls": {
        "task": "agents.tasks.calls_sweep",
        "schedule": 2.0,
    },
    # Callbacks falling due pop up on their agent's desk; overdue ones escalate.
    "callbacks-due": {
        "task": "agents.tasks.callbacks_due",
        "schedule": 60.0,
    },
    # A desk that stopped beating (browser closed) ends its agent's availability.
    "agents-gone-quiet": {
        "task": "agents.tasks.agents_gone_quiet",
        "schedule": 20.0,
    },
    # The outbox's safety net: events whose dispatch message was lost go again.
    "dispatch-events-left-behind": {
        "task": "crm.tasks.business_events_sweep",
        "schedule": 30.0,
    },
    # A lost apply message (broker restart, worker killed before it acked) delays
    # touchpoint results by at most this plus a minute; it never loses them.
    "sweep-touchpoint-results": {
        "task": "crm.tasks.touchpoint_results_sweep",
        "schedule": 30.0,
    },
    # Signatures of signed touchpoint requests, kept only while a replay could pass the clock check.
    "prune-touchpoint-signatures": {
        "task": "crm.tasks.touchpoint_signatures_prune",
        "schedule": 300.0,
    },
    # Applied and rejected inbox results past CRM_TOUCHPOINT_RETENTION_DAYS, in small chunks.
    "purge-touchpoint-results": {
        "task": "crm.tasks.touchpoint_results_purge",
        "schedule": 3600.0,
    },
    # A file import whose message was lost, or whose worker died, is taken up again.
    "sweep-file-imports": {
        "task": "crm.tasks.file_imports_sweep",
        "schedule": 60.0,
    },
}

# --- Touchpoint sync (crm.services.touchpoints) --------------------------------
# The Celery queue the apply task goes to (empty: Celery's default queue).
CRM_INGEST_QUEUE = env_str("CRM_INGEST_QUEUE", "")
# The longest backoff of a result left pending by an error before it is retried (a
# lost worker's results need none: its claim, a row lock, ends with its connection).
CRM_INGEST_LEASE_SECONDS = env_int("CRM_INGEST_LEASE_SECONDS", 120, minimum=5)
# Claims of one result (each a worker that failed or was lost) before it is dead-lettered.
CRM_INGEST_MAX_ATTEMPTS = env_int("CRM_INGEST_MAX_ATTEMPTS", 5, minimum=1)
# One apply task keeps claiming batches for this long, then leaves the rest to the next.
CRM_INGEST_TASK_BUDGET_SECONDS = env_int("CRM_INGEST_TASK_BUDGET_SECONDS", 30, minimum=1)
CRM_INGEST_BATCH_SIZE = env_int("CRM_INGEST_BATCH_SIZE", 1000, minimum=1)
# The beat sweep re-enqueues an apply run when a free pending result is older than this.
CRM_INGEST_SWEEP_AFTER_SECONDS = env_int("CRM_INGEST_SWEEP_AFTER_SECONDS", 60, minimum=1)
# Applied and rejected results stay this long after their batch completed (its progress
# GET answers all that time), then the hourly purge deletes them.
CRM_TOUCHPOINT_RETENTION_DAYS = env_int("CRM_TOUCHPOINT_RETENTION_DAYS", 30, minimum=1)

# Who reacts to business events (crm.listeners): dotted paths, checked at start-up.
# Real-time ones run on commit in the recording process; deferred ones in a worker.
# The policy engine decides on commit, in the process that recorded the event (an
# offer reaches the screen without waiting for a worker), and again in the worker,
# which finds the event already claimed unless the first pass never ran.
CRM_EVENT_LISTENERS: dict[str, list[str]] = {
    "realtime": ["policies.engine.decide_on_commit"],
    "deferred": ["policies.engine.decide_events"],
}
POLICIES_DECIDE_ON_COMMIT = env_bool("POLICIES_DECIDE_ON_COMMIT", True)
# A transaction that recorded more events than this leaves them all to the worker.
POLICIES_DECIDE_ON_COMMIT_MAX_EVENTS = env_int("POLICIES_DECIDE_ON_COMMIT_MAX_EVENTS", 20, minimum=0)
# The offer.presented events a decision records are decided by the same pass, right
# after its commit, with the facts it read brought up to date (no second read); at most
# this many per pass, the rest by the worker. 0: the worker decides them all.
POLICIES_FOLLOW_MAX_EVENTS = env_int("POLICIES_FOLLOW_MAX_EVENTS", 20, minimum=0)
# Policies react to what a customer just did: an older event (a replayed history,
# an import of last year's transactions) is recorded and decides nothing.
POLICIES_EVENT_MAX_AGE_HOURS = env_int("POLICIES_EVENT_MAX_AGE_HOURS", 24, minimum=1)
# Demo data of the apps built on crm, run by seed_demo (crm imports no other app).
CRM_DEMO_SEEDERS: list[str] = ["policies.demo.seed", "scripting.demo.seed"]
# The agent's current call as scripting sees it (scripting does not import agents).
SCRIPTING_CALL_FACTS = "agents.selectors.script_call_facts"
# The queues a script can be assigned to, as (code, name) pairs; unset: any code is taken.
SCRIPTING_QUEUES = "agents.selectors.script_queues"
# A change to a policy or an offer is announced over Redis pub/sub on commit and heard
# by every process at once; while a process is not subscribed (Redis down) it asks this
# often. The oldest an index may get whatever was heard (an announcement lost with a
# process that died between its commit and its publish).
POLICIES_INDEX_CHECK_SECONDS = 1.0
POLICIES_INDEX_MAX_AGE_SECONDS = env_int("POLICIES_INDEX_MAX_AGE_SECONDS", 60, minimum=1)
# history.count / days_since see this far back, at most this many events.
POLICIES_HISTORY_DAYS = env_int("POLICIES_HISTORY_DAYS", 90, minimum=1)
POLICIES_HISTORY_LIMIT = env_int("POLICIES_HISTORY_LIMIT", 2000, minimum=1)
# The contact rules read presentations this far back: at least the longest offer
# period or cooling-off (offers allow 365 days).
POLICIES_RULES_LOOKBACK_DAYS = 365
# Arbitration keeps the best N offers per channel and event, and never more than a
# channel's daily limit per customer.
POLICIES_TOP_N_PER_CHANNEL = env_int("POLICIES_TOP_N_PER_CHANNEL", 2, minimum=1)
POLICIES_CHANNEL_DAILY_LIMITS: dict[str, int] = {
    "agent_screen": env_int("POLICIES_AGENT_SCREEN_DAILY_LIMIT", 4, minimum=0),
    "self_service": env_int("POLICIES_SELF_SERVICE_DAILY_LIMIT", 4, minimum=0),
    "email": env_int("POLICIES_EMAIL_DAILY_LIMIT", 1, minimum=0),
    "outbound_call": env_int("POLICIES_OUTBOUND_CALL_DAILY_LIMIT", 1, minimum=0),
}
CRM_EVENT_DISPATCH_MAX_ATTEMPTS = env_int("CRM_EVENT_DISPATCH_MAX_ATTEMPTS", 5, minimum=1)
# A web process hands the events its requests recorded to the worker together,
# this often (milliseconds; 0: one task per transaction, at its commit). The rows
# are the outbox: a process that dies first leaves them to the sweep below.
CRM_EVENT_DISPATCH_BATCH_SECONDS = env_int("CRM_EVENT_DISPATCH_BATCH_MS", 50, minimum=0) / 1000
# How long an event may wait for its dispatch message before the sweep sends it again.
CRM_EVENT_SWEEP_AFTER_SECONDS = env_int("CRM_EVENT_SWEEP_AFTER_SECONDS", 30, minimum=1)
# --- Legacy file imports (crm.services.imports) ----------------------------------
# Where uploaded CSV files are kept until their import is done (workers read them
# from here, so on several hosts this must be a shared volume).
CRM_IMPORT_DIR = Path(env_str("CRM_IMPORT_DIR", "") or BASE_DIR / ".local" / "imports")
# A running import whose worker has not written progress for this long is taken
# over by the next task or the sweep, resuming after its last stored chunk.
CRM_IMPORT_STALE_SECONDS = env_int("CRM_IMPORT_STALE_SECONDS", 120, minimum=10)

# Shared by every web process: the token endpoint's throttle counts attempts per
# client across processes, not per process.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "crm",
        "TIMEOUT": 300,
    }
}

_CHANNEL_HOST = {
    "address": REDIS_URL,
    # Each Redis command of the layer takes a pooled connection, and redis-py's
    # asyncio pool refuses (MaxConnectionsError) instead of waiting once its 100
    # are in use: 200 desks joining or leaving a group at once on one web process
    # reached it, and each refused consumer dropped its socket.
    "max_connections": env_int("CHANNELS_REDIS_MAX_CONNECTIONS", 1000, minimum=10),
    # redis-py 8 gives every read a 5 s socket timeout, the very time channels-redis
    # blocks in BZPOPMIN for an idle socket: Redis's empty answer at 5 s lost the race
    # now and then, the read raised TimeoutError and the consumer (and its socket)
    # died. Reads wait longer than the blocking pop, still not for ever.
    "socket_timeout": 30,
}
# "pubsub" (Redis PUBLISH: one round trip per message instead of three, no queue
# to expire: under 50 calls/s it lost no pop where "core" lost one in six) or
# "core" (lists per channel, with capacity and expiry). Frames only tell, the rows
# are the truth, so a frame lost is caught up from the rows.
CHANNEL_LAYER = env_choice("CHANNEL_LAYER", "pubsub", ("core", "pubsub"))
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [_CHANNEL_HOST], "capacity": 1000, "expiry": 30},
    }
    if CHANNEL_LAYER == "core"
    else {"BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer", "CONFIG": {"hosts": [_CHANNEL_HOST]}}
}

# --- Auth -------------------------------------------------------------------

AUTH_USER_MODEL = "crm.User"
AUTHENTICATION_BACKENDS = ["crm.backends.RoleBackend"]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Staff and self-service API tokens always expire (staff like a session);
# integration tokens live until revoked, rotated or their source system is deactivated.
CRM_STAFF_TOKEN_TTL_HOURS = env_int("CRM_STAFF_TOKEN_TTL_HOURS", 12, minimum=1)
CRM_CUSTOMER_TOKEN_TTL_HOURS = env_int("CRM_CUSTOMER_TOKEN_TTL_HOURS", 24 * 30, minimum=1)

# How many proxies in front of the application append to X-Forwarded-For (load
# balancer, CDN). Only the address the nearest of them saw is trusted: with 0 the
# header is ignored, since anyone can send one (crm.services.logins.client_address).
NUM_PROXIES = env_int("NUM_PROXIES", 0, minimum=0)

# Failed password log-ins (API token, staff page, admin) are counted in the shared
# cache per account and per client address; reaching a limit within the window
# refuses password log-in for that account or address, even the right password,
# for the lock-out time. An office whose staff share one public address behind
# NAT may need a higher address limit.
CRM_LOGIN_ACCOUNT_FAILURES = env_int("CRM_LOGIN_ACCOUNT_FAILURES", 5, minimum=1)
CRM_LOGIN_ADDRESS_FAILURES = env_int("CRM_LOGIN_ADDRESS_FAILURES", 20, minimum=1)
CRM_LOGIN_FAILURE_WINDOW_MINUTES = env_int("CRM_LOGIN_FAILURE_WINDOW_MINUTES", 15, minimum=1)
CRM_LOGIN_LOCKOUT_MINUTES = env_int("CRM_LOGIN_LOCKOUT_MINUTES", 15, minimum=1)

# --- Internationalisation ---------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# Region used to read phone numbers dialled without a country code.
CRM_DEFAULT_PHONE_REGION = env_str("CRM_DEFAULT_PHONE_REGION", "US") or "US"

# --- Static files -------------------------------------------------------------

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / ".local" / "staticfiles"
# Production serves hashed, compressed files built by `collectstatic`; development
# and the test suite serve straight from the app folders.
_STATIC_MANIFEST = env_bool("STATICFILES_MANIFEST", not DEBUG)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if _STATIC_MANIFEST
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = not _STATIC_MANIFEST

# --- REST API ---------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "crm.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "crm.api.schema.CrmAutoSchema",
    # JSON in and out: integrators generate clients from the schema, and a form
    # body would be a second, less precise way to send the same record.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "crm.api.pagination.PageNumberPagination",
    "PAGE_SIZE": 25,
    "EXCEPTION_HANDLER": "crm.api.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.ScopedRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "token": env_str("CRM_TOKEN_THROTTLE", "20/min"),
        # Per integration user: batches of up to 1,000 results each.
        "touchpoints": env_str("CRM_TOUCHPOINT_THROTTLE", "6000/min"),
    },
    # Throttles key on the address NUM_PROXIES trusts, never on a header the client wrote.
    "NUM_PROXIES": NUM_PROXIES,
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Contact Center CRM API",
    "DESCRIPTION": (
        "The customer record: customers, households, accounts, products and the "
        "contact history, for integrations (a token per source system), agents and "
        "customers helping themselves (a token that sees only their own record)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "CustomerKindEnum": "crm.models.choices.CustomerKind",
        "TierEnum": "crm.models.choices.Tier",
        "PreferredChannelEnum": "crm.models.choices.PreferredChannel",
        "PhoneKindEnum": "crm.models.choices.PhoneKind",
        "EmailKindEnum": "crm.models.choices.EmailKind",
        "AddressKindEnum": "crm.models.choices.AddressKind",
        "HouseholdRoleEnum": "crm.models.choices.HouseholdRole",
        "CustomerStatusEnum": "crm.models.choices.CustomerStatus",
        "AccountStatusEnum": "crm.models.choices.AccountStatus",
    },
}

# --- Security -----------------------------------------------------------------
# Secure by default whenever DEBUG is off; a TLS-terminating proxy sets
# X-Forwarded-Proto, which SECURE_PROXY_SSL_HEADER trusts.

SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 12 * 3600, minimum=60)
# Sessions are read from the shared Redis cache, written through to the database:
# every page, re-read and socket of the desk read one, and a SQL statement per
# request was the largest part of the session's cost. Logging out deletes it from
# both at once, for every process; a deactivated user or a changed password still
# ends it on the next request (the user row is read each time, not cached). Not
# signed cookies: a copied cookie would outlive its logout until it expired.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
X_FRAME_OPTIONS = "DENY"

# --- Logging ----------------------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {
        "handlers": ["console"],
        "level": env_choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
    },
}
