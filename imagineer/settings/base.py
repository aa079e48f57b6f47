"""Imagineer settings, read from the environment (see README "Configuration")."""

from __future__ import annotations

from pathlib import Path

from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

from .env import (
    SQLITE_OPTIONS,
    check_redis_url,
    env_bool,
    env_choice,
    env_dict,
    env_float,
    env_int,
    env_list,
    env_path,
    env_str,
    load_or_create_secret_key,
    parse_database_url,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent

DEBUG = env_bool("DEBUG", False)

# Everything the app writes locally lives under one folder.
DATA_DIR = env_path("IMAGINEER_DATA_DIR", BASE_DIR / "var")
MEDIA_ROOT = env_path("IMAGINEER_MEDIA_ROOT", DATA_DIR / "media")
MODELS_DIR = env_path("IMAGINEER_MODELS_DIR", DATA_DIR / "models")
LOG_DIR = env_path("IMAGINEER_LOG_DIR", DATA_DIR / "logs")
WORK_DIR = env_path("IMAGINEER_WORK_DIR", DATA_DIR / "work")
# Job artifacts (STORAGES["artifacts"]) when they are on local disk: never served as media.
ARTIFACTS_ROOT = env_path("IMAGINEER_ARTIFACTS_ROOT", DATA_DIR / "artifacts")
# This machine's cache of what it pulled from storage (base models, LoRAs), by content hash, bounded in size.
ARTIFACT_CACHE_DIR = env_path("IMAGINEER_CACHE_DIR", DATA_DIR / "cache")
ARTIFACT_CACHE_MAX_BYTES = env_int("IMAGINEER_CACHE_MAX_GB", 50, minimum=1) * 1024**3
# Downloads of LoRAs, checkpoints, samples and logs: "stream" them through the web (works everywhere), or
# "redirect" to a presigned URL valid for five minutes (S3 only; the browser must reach the S3 endpoint).
ARTIFACT_DOWNLOADS = env_choice("IMAGINEER_ARTIFACT_DOWNLOADS", "stream", {"stream", "redirect"})
# How often a running job (a crawl, a training run) uploads its growing log, so the web shows it during the job.
ARTIFACT_LOG_UPLOAD_SECONDS = env_float("IMAGINEER_LOG_UPLOAD_SECONDS", 15.0, minimum=1.0)
STATIC_ROOT = env_path("IMAGINEER_STATIC_ROOT", DATA_DIR / "static")

SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off (generate one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(50))'`)."
        )
    # One development key for every process (web workers, RQ workers) and every restart, kept in the
    # data dir: a key per process would sign a session in one gunicorn worker that the next one rejects.
    SECRET_KEY = load_or_create_secret_key(DATA_DIR / "secret_key")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
if DEBUG:
    ALLOWED_HOSTS += ["testserver"]
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
for _origin in CSRF_TRUSTED_ORIGINS:
    if not _origin.startswith(("http://", "https://")):
        raise ImproperlyConfigured(f"CSRF_TRUSTED_ORIGINS entry {_origin!r} must start with http:// or https://.")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "template_partials",
    "django_rq",
    "ninja",
    "csp",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.google",
    "imagineer",
    "gallery",
    "labeling",
    "scraping",
    "training",
]

MIDDLEWARE = [
    "imagineer.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

ROOT_URLCONF = "imagineer.urls"
WSGI_APPLICATION = "imagineer.wsgi.application"

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
                "imagineer.context_processors.site",
            ],
        },
    },
]

# Database: PostgreSQL through DATABASE_URL, else an SQLite file in the data dir.
DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {"default": parse_database_url(DATABASE_URL)}
else:
    # SQLite cannot create its folder; a fresh checkout has no var/ yet.
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "imagineer.sqlite3",
            "OPTIONS": dict(SQLITE_OPTIONS),  # WAL, IMMEDIATE transactions: see env.py
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Redis and the RQ queues.
REDIS_URL = check_redis_url(env_str("REDIS_URL", "redis://127.0.0.1:6379/0"))
# Prepended to every queue name and cache key, so two installations (or a test run beside a running server)
# can share one Redis database without touching each other's queues. Empty for a normal installation.
REDIS_PREFIX = env_str("IMAGINEER_REDIS_PREFIX", "")
JOB_QUEUES = ("default", "scrape", "label", "train", "generate")
_QUEUE_TIMEOUTS = {"default": 3600, "scrape": 6 * 3600, "label": 6 * 3600, "train": 7 * 24 * 3600, "generate": 3600}
# RQ_QUEUES is keyed by the real (prefixed) queue name; code asks for a queue through imagineer.jobs.get_queue.
RQ_QUEUES = {
    REDIS_PREFIX + name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": _QUEUE_TIMEOUTS[name]} for name in JOB_QUEUES
}
# Django's cache (allauth's login rate limits, anything else cached) is shared by every web process and
# machine through Redis. When Redis cannot be reached the backend logs a warning and falls back to a
# per-process memory cache instead of failing the request (imagineer/cache.py).
CACHES = {
    "default": {
        "BACKEND": "imagineer.cache.FallbackRedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": REDIS_PREFIX + "cache",
        "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 2},
    }
}
RQ_SHOW_ADMIN_LINK = True
# A running job writes a heartbeat this often; a row whose heartbeat is older
# than JOB_STALE_AFTER is reaped by `manage.py reap_jobs` and by every worker.
JOB_HEARTBEAT_SECONDS = env_int("IMAGINEER_JOB_HEARTBEAT_SECONDS", 10, minimum=1)
JOB_STALE_AFTER = env_int("IMAGINEER_JOB_STALE_AFTER", 120, minimum=5)
JOB_CANCEL_GRACE = env_int("IMAGINEER_JOB_CANCEL_GRACE", 60, minimum=1)
JOB_REAP_INTERVAL = env_int("IMAGINEER_JOB_REAP_INTERVAL", 60, minimum=5)

# Files: local disk by default, any S3-compatible store when a bucket is named.
S3_BUCKET = env_str("IMAGINEER_S3_BUCKET")
S3_ENDPOINT_URL = env_str("IMAGINEER_S3_ENDPOINT_URL")
if S3_BUCKET:
    _default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": S3_ENDPOINT_URL or None,
            "access_key": env_str("IMAGINEER_S3_ACCESS_KEY") or None,
            "secret_key": env_str("IMAGINEER_S3_SECRET_KEY") or None,
            "region_name": env_str("IMAGINEER_S3_REGION") or None,
            "default_acl": "private",
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }
else:
    _default_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": MEDIA_ROOT, "file_permissions_mode": 0o640, "directory_permissions_mode": 0o750},
    }
# What jobs write for other machines to read (scrape logs; training outputs next), under keys such as
# "scrapes/<id>/log.txt": the media bucket under "artifacts/", or ARTIFACTS_ROOT on one machine. A key is
# written again as the job goes on (a log uploaded while it grows), so saving overwrites in place.
if S3_BUCKET:
    _artifacts_storage = {
        "BACKEND": _default_storage["BACKEND"],
        "OPTIONS": {**_default_storage["OPTIONS"], "location": "artifacts", "file_overwrite": True},
    }
else:
    _artifacts_storage = {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": ARTIFACTS_ROOT, "allow_overwrite": True,
                    "file_permissions_mode": 0o640, "directory_permissions_mode": 0o750},
    }
STATIC_MANIFEST = env_bool("IMAGINEER_STATIC_MANIFEST", not DEBUG)
STORAGES = {
    "default": _default_storage,
    "artifacts": _artifacts_storage,
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if STATIC_MANIFEST
        else "django.contrib.staticfiles.storage.StaticFilesStorage",
    },
}
MEDIA_URL = "/media/"
STATIC_URL = "/static/"
STATICFILES_DIRS = [
    BASE_DIR / "static",
    # htmx comes from the npm registry (package.json), installed by scripts/setup.sh.
    ("vendor/htmx", BASE_DIR / "node_modules" / "htmx.org" / "dist"),
]
WHITENOISE_USE_FINDERS = DEBUG
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FIELDS = 5000

# Accounts.
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "home"
ACCOUNT_LOGOUT_REDIRECT_URL = "home"
ACCOUNT_LOGIN_METHODS = {"email", "username"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_EMAIL_VERIFICATION = env_choice("IMAGINEER_EMAIL_VERIFICATION", "none", {"none", "optional", "mandatory"})
ACCOUNT_ALLOW_REGISTRATION = env_bool("IMAGINEER_ALLOW_SIGNUP", True)
ACCOUNT_ADAPTER = "imagineer.accounts.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "imagineer.accounts.SocialAccountAdapter"
GOOGLE_CLIENT_ID = env_str("GOOGLE_CLIENT_ID")
GOOGLE_CLIENT_SECRET = env_str("GOOGLE_CLIENT_SECRET")
GOOGLE_LOGIN_ENABLED = bool(GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET)
SOCIALACCOUNT_PROVIDERS = {
    "google": {
        "SCOPE": ["profile", "email"],
        "AUTH_PARAMS": {"access_type": "online"},
        "OAUTH_PKCE_ENABLED": True,
        **(
            {"APPS": [{"client_id": GOOGLE_CLIENT_ID, "secret": GOOGLE_CLIENT_SECRET, "key": ""}]}
            if GOOGLE_LOGIN_ENABLED
            else {}
        ),
    }
}
SOCIALACCOUNT_ONLY = False
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.console.EmailBackend" if DEBUG else "django.core.mail.backends.smtp.EmailBackend",
)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65535)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "imagineer@localhost")

# Security. Production (DEBUG off) gets the strict set; `manage.py check --deploy` passes.
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("IMAGINEER_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^livez$"]
    # Only for plain-HTTP deployments on a private network (and the system tests): keep it on otherwise.
    SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("IMAGINEER_SECURE_COOKIES", True)
    SECURE_HSTS_SECONDS = env_int("IMAGINEER_HSTS_SECONDS", 31536000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
if env_bool("IMAGINEER_BEHIND_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = True

_img_src = [SELF, "data:", "blob:"]
if S3_BUCKET and S3_ENDPOINT_URL:
    _img_src.append(S3_ENDPOINT_URL.rstrip("/"))
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": _img_src,
        "font-src": [SELF],
        "connect-src": [SELF],
        "media-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF, "https://accounts.google.com"] if GOOGLE_LOGIN_ENABLED else [SELF],
        "frame-ancestors": [NONE],
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# Logging: readable lines by default, JSON lines with IMAGINEER_LOG_FORMAT=json.
LOG_FORMAT = env_choice("IMAGINEER_LOG_FORMAT", "text", {"text", "json"})
LOG_LEVEL = env_choice("IMAGINEER_LOG_LEVEL", "info", {"debug", "info", "warning", "error"}).upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "imagineer.logging.RequestIdFilter"}},
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_id"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "rq.worker": {"level": LOG_LEVEL},
    },
}

# API
NINJA_PAGINATION_PER_PAGE = 50
API_TOKEN_PREFIX = "imgr_"  # noqa: S105 - a visible prefix, not a secret

# Site
SITE_NAME = env_str("IMAGINEER_SITE_NAME", "Imagineer")

# Gallery
GALLERY_MAX_UPLOAD_BYTES = env_int("IMAGINEER_MAX_UPLOAD_BYTES", 50 * 1024 * 1024, minimum=1024)
GALLERY_MAX_IMAGE_PIXELS = env_int("IMAGINEER_MAX_IMAGE_PIXELS", 100_000_000, minimum=1)
# All frames of an animation together: each checked frame is decoded at full size inside the request.
GALLERY_MAX_TOTAL_FRAME_PIXELS = env_int("IMAGINEER_MAX_TOTAL_FRAME_PIXELS", 2 * GALLERY_MAX_IMAGE_PIXELS, minimum=1)
GALLERY_NEAR_DUPLICATE_DISTANCE = env_int("IMAGINEER_NEAR_DUPLICATE_DISTANCE", 6, minimum=0, maximum=64)
# Semantic search: a CLIP model folder (transformers save_pretrained); empty turns semantic search off.
GALLERY_CLIP_MODEL = env_str("IMAGINEER_CLIP_MODEL", "")
# Vector search: "auto" (pgvector, else sqlite-vec, else exact), or force "exact".
GALLERY_VECTOR_BACKEND = env_choice("IMAGINEER_VECTOR_BACKEND", "auto", {"auto", "exact"})
GALLERY_TRASH_DAYS = env_int("IMAGINEER_TRASH_DAYS", 30, minimum=0)
GALLERY_THUMB_SIZE = 300
GALLERY_PREVIEW_SIZE = 1280
GALLERY_PAGE_SIZE = env_int("IMAGINEER_GALLERY_PAGE_SIZE", 60, minimum=1, maximum=500)

# Scraping. Non-public addresses are always refused; this setting (tests only) lets loopback through.
SCRAPE_ALLOW_PRIVATE = env_bool("IMAGINEER_SCRAPE_ALLOW_PRIVATE", False)
SCRAPE_MAX_RESPONSE_BYTES = env_int("IMAGINEER_SCRAPE_MAX_RESPONSE_BYTES", 50 * 1024 * 1024, minimum=1024)
# Tests only: {host: address} answers for the crawler; honoured only when SCRAPE_ALLOW_PRIVATE is on.
SCRAPE_TEST_HOST_OVERRIDES = None
SCRAPE_USER_AGENT = env_str("IMAGINEER_SCRAPE_USER_AGENT", "ImagineerBot/0.1 (+self-hosted dataset builder)")

# Labeling
LABEL_CONTAINER_IMAGE = env_str("IMAGINEER_LABEL_IMAGE", "localhost/imagineer-claude-labeler:latest")
# "sha256:<hex>": the labeler image's id or a repo digest; checked before every batch, a mismatch refuses
# to run (IMAGINEER_LABEL_IMAGE may also carry the pin itself: name@sha256:<hex>).
LABEL_CONTAINER_IMAGE_DIGEST = env_str("IMAGINEER_LABEL_IMAGE_DIGEST", "")
LABEL_CLAUDE_CREDENTIALS = env_str("IMAGINEER_CLAUDE_CREDENTIALS", str(Path.home() / ".claude"))
LABEL_CONTAINER_TIMEOUT = env_int("IMAGINEER_LABEL_TIMEOUT", 600, minimum=1)
LABEL_CONTAINER_MEMORY = env_str("IMAGINEER_LABEL_MEMORY", "1g")
LABEL_CONTAINER_CPUS = env_float("IMAGINEER_LABEL_CPUS", 1.0, minimum=0.1)
# Empty: the engine's default network (the real Claude CLI must reach the API); "none" cuts it off.
LABEL_CONTAINER_NETWORK = env_str("IMAGINEER_LABEL_NETWORK", "")
LABEL_CONTAINER_PIDS = env_int("IMAGINEER_LABEL_PIDS", 256, minimum=16)
# Extra environment for the labeler container ("HTTPS_PROXY=http://proxy:3128,NO_PROXY=a\,b"); the
# backend's own variables (credentials, HOME) win over these.
LABEL_CONTAINER_ENV = env_dict("IMAGINEER_LABEL_ENV")
LABEL_BATCH_SIZE = env_int("IMAGINEER_LABEL_BATCH_SIZE", 8, minimum=1, maximum=100)
LABEL_DEFAULT_BACKEND = env_choice("IMAGINEER_LABEL_BACKEND", "local",
                                   {"local", "tagger", "captioner", "claude-docker", "anthropic"})
# Offline labelers (README, "Offline labelers"): folders on each labeling worker; the admin's
# "Labeler settings" override them. `manage.py fetch_label_models` downloads the repos below into them.
LABEL_TAGGER_DIR = env_path("IMAGINEER_TAGGER_DIR", MODELS_DIR / "labelers" / "wd-tagger")
LABEL_TAGGER_REPO = env_str("IMAGINEER_TAGGER_REPO", "SmilingWolf/wd-swinv2-tagger-v3")
LABEL_TAGGER_GENERAL_THRESHOLD = env_float("IMAGINEER_TAGGER_GENERAL_THRESHOLD", 0.35, minimum=0.0)
LABEL_TAGGER_CHARACTER_THRESHOLD = env_float("IMAGINEER_TAGGER_CHARACTER_THRESHOLD", 0.85, minimum=0.0)
LABEL_TAGGER_BLACKLIST = env_str("IMAGINEER_TAGGER_BLACKLIST", "")  # comma-separated tags never kept
LABEL_CAPTIONER_DIR = env_path("IMAGINEER_CAPTIONER_DIR", MODELS_DIR / "labelers" / "captioner")
LABEL_CAPTIONER_REPO = env_str("IMAGINEER_CAPTIONER_REPO", "Salesforce/blip-image-captioning-base")
LABEL_CAPTIONER_PROMPT = env_str("IMAGINEER_CAPTIONER_PROMPT", "")  # Florence-2: <MORE_DETAILED_CAPTION>
LABEL_CAPTIONER_MAX_TOKENS = env_int("IMAGINEER_CAPTIONER_MAX_TOKENS", 60, minimum=1, maximum=500)
ANTHROPIC_API_KEY = env_str("ANTHROPIC_API_KEY")
ANTHROPIC_BASE_URL = env_str("ANTHROPIC_BASE_URL")
ANTHROPIC_MODEL = env_str("IMAGINEER_ANTHROPIC_MODEL", "claude-sonnet-4-5")

# Training and generation
ML_DEVICE = env_choice("IMAGINEER_DEVICE", "auto", {"auto", "cpu", "cuda", "mps"})
TRAIN_KEEP_CHECKPOINTS = env_int("IMAGINEER_KEEP_CHECKPOINTS", 3, minimum=1)
TRAIN_FAILED_RETENTION_DAYS = env_int("IMAGINEER_FAILED_RUN_RETENTION_DAYS", 7, minimum=0)
GENERATE_MAX_SIDE = env_int("IMAGINEER_GENERATE_MAX_SIDE", 2048, minimum=64)
GENERATE_MAX_STEPS = env_int("IMAGINEER_GENERATE_MAX_STEPS", 150, minimum=1)
GENERATE_MAX_COUNT = env_int("IMAGINEER_GENERATE_MAX_COUNT", 8, minimum=1)
# Compatible queued generations (same model, LoRAs, size, steps, sampler, CFG) share one denoising pass up to this
# many images; 1 turns batching off.
GENERATE_BATCH_MAX_IMAGES = env_int("IMAGINEER_GENERATE_BATCH_MAX_IMAGES", 8, minimum=1)
# POST /v1/images/generations answers when the images are made, as OpenAI's API does; past this many seconds
# it cancels the job and answers 504.
OPENAI_IMAGES_WAIT_SECONDS = env_int("IMAGINEER_OPENAI_IMAGES_WAIT_SECONDS", 600, minimum=1)
# Each waiting request holds a web thread; past this many at once in one web process the next gets a 429 with
# Retry-After (OpenAI clients retry it), so waiting clients never take every thread the pages need.
OPENAI_IMAGES_MAX_WAITING = env_int("IMAGINEER_OPENAI_IMAGES_MAX_WAITING", 2, minimum=1)
ML_PIPELINE_CACHE_SIZE = env_int("IMAGINEER_PIPELINE_CACHE_SIZE", 1, minimum=1, maximum=8)
GENERATE_MAX_QUEUED_PER_USER = env_int("IMAGINEER_GENERATE_MAX_QUEUED", 20, minimum=1)

# Per-user limits on queued plus running jobs (imagineer.quotas; GENERATE_MAX_QUEUED_PER_USER is the one for
# generations). Staff override them per user in the admin; staff accounts are limited too.
MAX_ACTIVE_TRAINING_PER_USER = env_int("IMAGINEER_MAX_ACTIVE_TRAINING", 2, minimum=0)
MAX_ACTIVE_LABELING_PER_USER = env_int("IMAGINEER_MAX_ACTIVE_LABELING", 4, minimum=0)
MAX_ACTIVE_SCRAPES_PER_USER = env_int("IMAGINEER_MAX_ACTIVE_SCRAPES", 3, minimum=0)
# What one request may cost. Generation: width × height × count per denoising step (memory, and how long a
# cancel waits), times steps for the whole request; training: batch × resolution² per step, times steps.
GENERATE_MAX_PIXELS_PER_STEP = env_int("IMAGINEER_GENERATE_MAX_PIXELS_PER_STEP", 4 * 1024 * 1024, minimum=64 * 64)
GENERATE_MAX_COST = env_int("IMAGINEER_GENERATE_MAX_COST", 75 * 4 * 1024 * 1024, minimum=64 * 64)
TRAIN_MAX_PIXELS_PER_STEP = env_int("IMAGINEER_TRAIN_MAX_PIXELS_PER_STEP", 16 * 1024 * 1024, minimum=16 * 16)
TRAIN_MAX_COST = env_int("IMAGINEER_TRAIN_MAX_COST", 10_000 * 4 * 1024 * 1024, minimum=16 * 16)

# Monitoring: errors from the web and the RQ workers go to Sentry (or a compatible server) when a DSN is set.
SENTRY_DSN = env_str("SENTRY_DSN")
if SENTRY_DSN:
    from imagineer.monitoring import init_sentry

    init_sentry(
        SENTRY_DSN,
        environment=env_str("SENTRY_ENVIRONMENT", "development" if DEBUG else "production"),
        traces_sample_rate=env_float("SENTRY_TRACES_SAMPLE_RATE", 0.0, minimum=0.0),
    )
