"""Settings for the Character LoRA Studio, read from the environment.

With nothing configured the studio runs on its embedded default: SQLite under `var/`, a
file-system Celery broker (no server, still a real worker process), media under `var/media/`
and the local RunPod stand-in. Each service switches to production by its own variable:
`DATABASE_URL`, `REDIS_URL`, `AWS_STORAGE_BUCKET_NAME`, `RUNPOD_API_KEY`. `.env.example`
documents every variable.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

from studio.storage import s3_media_storage

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("STUDIO_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env")


# --- Core ---------------------------------------------------------------------------------

DEBUG = env.bool("DJANGO_DEBUG", default=True)
# Production is served over https behind a TLS-terminating proxy. `make demo` runs with DEBUG off on plain
# http on loopback, so it turns this off: no https redirect, no Secure-only cookies, no HSTS.
HTTPS = env.bool("DJANGO_HTTPS", default=True)

if DEBUG:
    # A fixed key is fine only for the embedded default; production must bring its own.
    SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="insecure-development-key-" + "x" * 40)
    ALLOWED_HOSTS = env.list(
        "DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"]
    )
else:
    for required in ("DJANGO_SECRET_KEY", "DJANGO_ALLOWED_HOSTS"):
        if not env.str(required, default=""):
            raise ImproperlyConfigured(f"{required} must be set when DJANGO_DEBUG=false.")
    SECRET_KEY = env.str("DJANGO_SECRET_KEY")
    ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS")

# The address the outside world (RunPod, the GPU worker, e-mail links) reaches this site at.
PUBLIC_BASE_URL = env.str("STUDIO_PUBLIC_URL", default="http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI served from our own static files, no CDN
    "studio",
    "characters",
    "training",
    "developer",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "studio.append_slash.CommonMiddleware",  # Django's, with a POST to a URL without its slash kept a POST
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "studio.middleware.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "studio.urls"
WSGI_APPLICATION = "studio.wsgi.application"
AUTH_USER_MODEL = "studio.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]


# --- Database -----------------------------------------------------------------------------

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'studio.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    # The embedded default has several processes (web, Celery, beat) writing at once: WAL lets
    # readers go on during a write, and IMMEDIATE transactions queue writers instead of failing.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
# Persistent connections; health checks drop ones the server closed behind our back.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Lets several test runs share one Postgres server without dropping each other's database.
if env.str("TEST_DATABASE_NAME", default=""):
    DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME")}


# --- Cache --------------------------------------------------------------------------------

REDIS_URL = env.str("REDIS_URL", default="")
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}


# --- Storage ------------------------------------------------------------------------------

MEDIA_ROOT = env.str("MEDIA_ROOT", default=str(VAR_DIR / "media"))
MEDIA_URL = "/media/"
STATIC_ROOT = env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles"))
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]

AWS_STORAGE_BUCKET_NAME = env.str("AWS_STORAGE_BUCKET_NAME", default="")
if AWS_STORAGE_BUCKET_NAME:
    MEDIA_STORAGE = s3_media_storage(
        bucket_name=AWS_STORAGE_BUCKET_NAME,
        access_key=env.str("AWS_ACCESS_KEY_ID", default=None),
        secret_key=env.str("AWS_SECRET_ACCESS_KEY", default=None),
        endpoint_url=env.str("AWS_S3_ENDPOINT_URL", default=None),  # R2, MinIO, SeaweedFS
        region_name=env.str("AWS_S3_REGION_NAME", default=None),
        addressing_style=env.str("AWS_S3_ADDRESSING_STYLE", default="path"),
    )
else:
    MEDIA_STORAGE = {"BACKEND": "django.core.files.storage.FileSystemStorage"}

# WhiteNoise serves static files in every mode. Production serves the copy `collectstatic` made (hashed
# names, compressed); STATIC_IN_PLACE serves them from their source folders with no collect step, as with
# DEBUG on and in `make demo` (compressing every file takes minutes on a small machine).
STATIC_IN_PLACE = env.bool("STATIC_IN_PLACE", default=DEBUG)
if STATIC_IN_PLACE and not DEBUG:
    WHITENOISE_USE_FINDERS = True  # with DEBUG on, WhiteNoise already does (and runserver serves them)
STORAGES = {
    "default": MEDIA_STORAGE,
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if STATIC_IN_PLACE
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# Signed transfer URLs for the worker when media is on local files (S3 presigns instead).
TRANSFER_MAX_UPLOAD_BYTES = env.int("TRANSFER_MAX_UPLOAD_BYTES", default=4 * 1024**3)

# Uploaded photos above 1 MB stream to temporary files, so a batch of large photos never sits
# in a web process's memory; a batch may hold as many files as a character may keep.
FILE_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = 200


# --- Celery -------------------------------------------------------------------------------

if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {
        # Far above any countdown we schedule, so an unacked task is never delivered twice early.
        "visibility_timeout": 3600,
    }
else:
    # The embedded default: a broker that needs no server, used by a real worker process. kombu's own
    # file-system transport lets a consumer read a message while it is being written (a worker then stops
    # on "Unrecoverable error"); studio/filesystem_broker.py writes and claims every file atomically.
    _queue_dir = VAR_DIR / "celery" / "queue"
    _processed_dir = VAR_DIR / "celery" / "processed"
    for _folder in (_queue_dir, _processed_dir):
        _folder.mkdir(parents=True, exist_ok=True)  # the file-system transport needs them to exist
    CELERY_BROKER_URL = "filesystem://"
    CELERY_BROKER_TRANSPORT = "studio.filesystem_broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        # On the queue's file system: a consumer claims a message by renaming it here.
        "processed_folder": str(_processed_dir),
        # Broadcast (worker control) messages; kombu's default is a folder in the working directory.
        "control_folder": str(VAR_DIR / "celery" / "control"),
        "store_processed": False,
    }
# JSON only: no pickled objects from the queue, and tasks take ids, never model instances.
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
# Run state lives in the database; nobody reads task results.
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
# Acknowledge after the task ran, so a killed worker's task is redelivered (tasks are idempotent).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# One task at a time per process: tasks are short, fairness matters more than throughput.
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# No task may hang a worker: every external call has its own shorter timeout.
CELERY_TASK_SOFT_TIME_LIMIT = 120
CELERY_TASK_TIME_LIMIT = 150
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celery" / "beat-schedule")
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# Lets test runs that share one Redis keep their tasks apart (each consumes only its own queue).
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="celery")
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_BEAT_SCHEDULE: dict[str, dict[str, object]] = {
    # The safety net under webhooks and worker callbacks: RunPod delivers a webhook at most 3 times in
    # ~20 s and keeps results 30 minutes, so silent runs must be polled. Each run has its own backoff
    # (next_poll_at); the beat only sets how soon a due run is noticed.
    "sweep-training-runs": {
        "task": "training.tasks.sweep_training_runs",
        "schedule": env.float("TRAINING_SWEEP_INTERVAL_SECONDS", default=15.0),
    },
    # RunPod lowers an endpoint idle for 7 days to max workers 0 and leaves it there: the endpoint check
    # reads /health and max workers, tells staff, and raises it when RUNPOD_RESTORE_MAX_WORKERS allows.
    # Pods of pod mode: a starting pod is marked running once RunPod and its UI say so; a pod idle past its
    # idle time (TRAINING_POD_IDLE_STOP_MINUTES) is stopped.
    "check-pods": {
        "task": "training.tasks.check_pods",
        "schedule": env.float("TRAINING_POD_CHECK_SECONDS", default=60.0),
    },
    "check-runpod-endpoint": {
        "task": "training.tasks.check_runpod_endpoint",
        "schedule": env.float("RUNPOD_ENDPOINT_CHECK_SECONDS", default=300.0),
    },
    # The safety net under webhook delivery tasks, which a broker outage, a Redis restart or a killed
    # worker can lose: pending deliveries long past their next attempt are queued again.
    "sweep-webhook-deliveries": {
        "task": "developer.tasks.sweep_webhook_deliveries",
        "schedule": env.float("WEBHOOK_SWEEP_INTERVAL_SECONDS", default=60.0),
    },
    # The safety net under the face analysis queued after each upload or delete: characters whose
    # dataset report is missing or older than their photos are queued again.
    "sweep-dataset-reports": {
        "task": "characters.tasks.sweep_dataset_reports",
        "schedule": env.float("CHARACTERS_REPORT_SWEEP_SECONDS", default=300.0),
    },
}


# --- RunPod -------------------------------------------------------------------------------

# Unset key = the local RunPod stand-in (`make demo` starts it on this address).
RUNPOD_API_KEY = env.str("RUNPOD_API_KEY", default="local-runpod-key")
RUNPOD_ENDPOINT_ID = env.str("RUNPOD_ENDPOINT_ID", default="local")
RUNPOD_API_BASE = env.str(
    "RUNPOD_API_BASE",
    default="https://api.runpod.ai/v2"
    if env.str("RUNPOD_API_KEY", default="")
    else "http://127.0.0.1:8765/v2",
).rstrip("/")
RUNPOD_TIMEOUT_SECONDS = env.float("RUNPOD_TIMEOUT_SECONDS", default=10.0)
# RunPod's REST v2 management API (v1 is retired); the local stand-in serves its subset beside the job API.
RUNPOD_REST_API_BASE = env.str(
    "RUNPOD_REST_API_BASE",
    default="https://api.runpod.io/v2"
    if env.str("RUNPOD_API_KEY", default="")
    else "http://127.0.0.1:8765/v2",
).rstrip("/")
# The GPU pools the endpoint may place a run on, in order of preference (ids of training/gpu_pools.py).
# One setting for all: runpod_provision sends them as the endpoint's gpu.pools, pricing estimates at the
# dearest GPU among them, and a run's time limit must fit the slowest.
RUNPOD_GPU_POOLS: list[str] = env.list("RUNPOD_GPU_POOLS", default=["AMPERE_80", "ADA_24"])

# What `manage.py runpod_provision` makes on RunPod (docs/TRAINING.md, "Provisioning"). Names find the
# resources again: the endpoint is RUNPOD_PROVISION_NAME, its template "<name>-worker", its volume
# "<name>-cache".
RUNPOD_PROVISION_NAME = env.str("RUNPOD_PROVISION_NAME", default="lora-training")
RUNPOD_WORKER_IMAGE = env.str("RUNPOD_WORKER_IMAGE", default="")
RUNPOD_WORKER_DISK_GB = env.int("RUNPOD_WORKER_DISK_GB", default=50)
# Worker environment: plain values here; secrets by name only, their values read from the environment of
# the provisioning command (never its command line), e.g. HF_TOKEN='{{ RUNPOD_SECRET_hf_token }}' to point
# at a RunPod secret instead of sending the value.
RUNPOD_WORKER_ENV: dict[str, str] = env.dict("RUNPOD_WORKER_ENV", default={})
RUNPOD_WORKER_SECRET_ENV: list[str] = env.list("RUNPOD_WORKER_SECRET_ENV", default=["HF_TOKEN"])
# A network volume for the weights cache pins the endpoint to its data centre; none when the data centre is
# empty (RunPod's cached models are the other way, docs/TRAINING.md).
RUNPOD_NETWORK_VOLUME_DATA_CENTER = env.str("RUNPOD_NETWORK_VOLUME_DATA_CENTER", default="")
RUNPOD_NETWORK_VOLUME_GB = env.int("RUNPOD_NETWORK_VOLUME_GB", default=100)
RUNPOD_WORKERS_MIN = env.int("RUNPOD_WORKERS_MIN", default=0)
RUNPOD_WORKERS_MAX = env.int("RUNPOD_WORKERS_MAX", default=3)
# Seconds a worker stays (billed) after a job. RunPod refuses it with REQUEST_COUNT scaling on a queue
# endpoint, so it is sent only with QUEUE_DELAY.
RUNPOD_IDLE_TIMEOUT_SECONDS = env.int("RUNPOD_IDLE_TIMEOUT_SECONDS", default=5)
# QUEUE_DELAY (seconds a job may wait before a worker is added) or REQUEST_COUNT (jobs per worker).
RUNPOD_SCALER_TYPE = env.str("RUNPOD_SCALER_TYPE", default="QUEUE_DELAY")
RUNPOD_SCALER_VALUE = env.float("RUNPOD_SCALER_VALUE", default=4.0)
RUNPOD_FLASHBOOT = env.str("RUNPOD_FLASHBOOT", default="FLASHBOOT")
# Workers only on hosts whose CUDA the worker image can use: its torch wheels are CUDA 13.0 builds, which
# need CUDA 13.0 or newer (an NVIDIA driver >= 580; runpod_worker/Dockerfile). Sent as the endpoint's
# gpu.minCudaVersion; empty sends no constraint.
RUNPOD_MIN_CUDA_VERSION = env.str("RUNPOD_MIN_CUDA_VERSION", default="13.0")
# After 7 days without requests RunPod sets the endpoint's max workers to 0 and leaves it there. Beat's
# endpoint check always tells staff (dashboard, log); with this on it also raises max workers back to
# RUNPOD_WORKERS_MAX itself when jobs wait. Off by default: it changes the endpoint, so the API key then
# needs write access, and staff may have lowered it on purpose.
RUNPOD_RESTORE_MAX_WORKERS = env.bool("RUNPOD_RESTORE_MAX_WORKERS", default=False)


# --- Email --------------------------------------------------------------------------------

EMAIL_BACKEND = (
    "django.core.mail.backends.smtp.EmailBackend"
    if env.str("EMAIL_HOST", default="")
    else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_HOST = env.str("EMAIL_HOST", default="")
EMAIL_PORT = env.int("EMAIL_PORT", default=587)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=True)
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="studio@localhost")


# --- REST API -----------------------------------------------------------------------------

REST_FRAMEWORK = {
    # Bearer tokens first: their WWW-Authenticate header makes anonymous requests a 401, not a 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "developer.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PARSER_CLASSES": [
        "studio.api_parsers.JSONParser",  # a deeply nested body is a 400, not a RecursionError
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "studio.api.StudioAutoSchema",
    "EXCEPTION_HANDLER": "studio.api_errors.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        # Starting a run spends GPU money; a runaway client loop should hit this, not the budget.
        "training_run_start": env.str("API_RUN_START_RATE", default="30/hour"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Character LoRA Studio API",
    "DESCRIPTION": "Characters, reference images and Flux LoRA training runs. See docs/API.md.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "ENUM_NAME_OVERRIDES": {
        "TrainingRunStatusEnum": "training.models.TrainingRun.Status",
        "WebhookDeliveryStatusEnum": "developer.models.WebhookDelivery.Status",
    },
}
# Idempotency-Key values are remembered this long (the same window Stripe uses).
API_IDEMPOTENCY_KEY_TTL = timedelta(hours=24)

# Outbound webhooks: bounded attempts with growing pauses, and short timeouts per attempt.
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=10.0)
# The pauses before each attempt after the first: six attempts over about 2.5 hours.
WEBHOOK_RETRY_DELAYS_SECONDS: list[int] = env.list(
    "WEBHOOK_RETRY_DELAYS_SECONDS", cast=int, default=[10, 60, 300, 1800, 7200]
)
# How often beat looks for deliveries whose task was lost, and how many one pass may queue. A pending
# delivery is taken as lost once it has been due for a whole interval: a task merely queued runs well
# within that, and should it still run, it and the sweep's copy claim one attempt between them.
WEBHOOK_SWEEP_INTERVAL_SECONDS = env.float("WEBHOOK_SWEEP_INTERVAL_SECONDS", default=60.0)
WEBHOOK_SWEEP_BATCH_SIZE = env.int("WEBHOOK_SWEEP_BATCH_SIZE", default=100)
# Endpoints on loopback, private or link-local addresses are refused (they would let anyone
# probe our own network); a development setup receiving on localhost turns this on.
WEBHOOKS_ALLOW_PRIVATE_URLS = env.bool("WEBHOOKS_ALLOW_PRIVATE_URLS", default=False)


# --- Security -----------------------------------------------------------------------------

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the upload page's script reads it to send the token
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Scripts, frames, forms and connections only to this site. Inline style attributes stay allowed (the
# admin and some pages use them; they cannot run code); images may be data:/blob: previews.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
if not DEBUG and HTTPS:
    # Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int(
        "DJANGO_SECURE_HSTS_SECONDS", default=int(timedelta(days=365).total_seconds())
    )
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
# A refused form (an expired page, cookies blocked) gets the studio's page saying what to do.
CSRF_FAILURE_VIEW = "studio.error_views.csrf_failure"
SILENCED_SYSTEM_CHECKS: list[str] = []


# --- Logging ------------------------------------------------------------------------------

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "server": {
            "()": "django.utils.log.ServerFormatter",
            "format": "[{server_time}] {message}",
            "style": "{",
        },
    },
    # Run tokens and signed links travel in URLs; access and request logs must not keep them.
    "filters": {"redact_secrets": {"()": "studio.log_redaction.RedactSecretsFilter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact_secrets"]},
        "server": {"class": "logging.StreamHandler", "formatter": "server", "filters": ["redact_secrets"]},
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.server": {
            "handlers": ["server"],
            "level": "INFO",
            "filters": ["redact_secrets"],
            "propagate": False,
        },
        "django.request": {"filters": ["redact_secrets"]},
        "botocore": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
        # The file-system broker has no host, and kombu warns about that on every connection.
        "kombu.connection": {"level": "ERROR"},
    },
}


# --- Characters: identity -----------------------------------------------------------------

# Faces are judged at the largest resolution the presets train at (training/presets.py: 512-1024).
CHARACTERS_TRAINING_RESOLUTION = env.int("CHARACTERS_TRAINING_RESOLUTION", default=1024)
# A main face narrower than this at that resolution is flagged "too small": the VAE sees it as a 12x12
# latent patch, too little for a likeness (docs/IDENTITY.md).
CHARACTERS_MIN_FACE_PIXELS = env.int("CHARACTERS_MIN_FACE_PIXELS", default=100)
# Training a person is refused when more than this share of the analysed photos shows no face
# ("most photos"); 1.0 never refuses. A character marked "not a person" is never refused.
CHARACTERS_NO_FACE_REFUSAL_SHARE = env.float("CHARACTERS_NO_FACE_REFUSAL_SHARE", default=0.5)
# One analysis task works this long (about 0.2-0.3 s a photo), then queues the next slice, far inside
# CELERY_TASK_SOFT_TIME_LIMIT.
CHARACTERS_ANALYSIS_SLICE_SECONDS = env.float("CHARACTERS_ANALYSIS_SLICE_SECONDS", default=60.0)
CHARACTERS_REPORT_SWEEP_BATCH = env.int("CHARACTERS_REPORT_SWEEP_BATCH", default=50)


# --- Training -----------------------------------------------------------------------------

TRAINING_MIN_IMAGES = env.int("TRAINING_MIN_IMAGES", default=10)
TRAINING_MAX_IMAGES = 200

# RunPod's serverless price per second of every GPU is in training/gpu_pools.py (with its source and
# date); this overrides or adds GPUs, e.g. TRAINING_GPU_PRICES_USD_PER_SECOND="RTX 4090=0.00034". Names are
# matched word by word against the GPU name the worker reports; a GPU without a price is billed at the
# endpoint's GPU (TRAINING_GPU_TYPE).
TRAINING_GPU_PRICES_USD_PER_SECOND: dict[str, str] = env.dict(
    "TRAINING_GPU_PRICES_USD_PER_SECOND", default={}
)
# Seconds per Flux LoRA step at 512-1024 px for cost estimates (ai-toolkit.md: ~1.9-2.1 s/step on
# 24 GB cards; the others are extrapolated until measured on our endpoint).
TRAINING_SECONDS_PER_STEP: dict[str, str] = env.dict(
    "TRAINING_SECONDS_PER_STEP",
    default={"RTX 4090": "2.0", "L40S": "1.5", "A100 80GB": "1.1", "H100": "0.8"},
)
# The GPU estimates assume and unpriced GPUs bill at; empty = the dearest GPU of RUNPOD_GPU_POOLS.
TRAINING_GPU_TYPE = env.str("TRAINING_GPU_TYPE", default="")
# Model load, quantisation and latent caching happen before the first step and are billed too.
TRAINING_OVERHEAD_SECONDS = env.int("TRAINING_OVERHEAD_SECONDS", default=600)
# RunPod bills a worker from its start to its stop (docs serverless/pricing.mdx): the container's start-up
# before it takes the job and the idle timeout after it (RUNPOD_IDLE_TIMEOUT_SECONDS) are billed but not in
# a job's executionTime. The budget counts this estimate of the start-up for every run that reached a GPU;
# measure it on the endpoint (RunPod's console shows worker start times) and override.
TRAINING_COLD_START_SECONDS = env.int("TRAINING_COLD_START_SECONDS", default=30)
# The most one run may take on RunPod (its GPU time billed at most this long): each job's executionTimeout
# is its steps on the slowest GPU of RUNPOD_GPU_POOLS plus the start-up above, times the margin below, and a
# run that needs more than this is refused at start (training/time_limits.py). RunPod allows 5 s - 7 days.
TRAINING_EXECUTION_TIMEOUT_SECONDS = env.int("TRAINING_EXECUTION_TIMEOUT_SECONDS", default=3 * 3600)
# Room in a run's time limit for steps slower than TRAINING_SECONDS_PER_STEP says (a busy host, samples).
TRAINING_TIME_LIMIT_MARGIN = env.float("TRAINING_TIME_LIMIT_MARGIN", default=1.25)
# TTL covers queue time plus execution; RunPod deletes the job (running or not) when it passes.
TRAINING_JOB_TTL_SECONDS = env.int("TRAINING_JOB_TTL_SECONDS", default=12 * 3600)
# How often beat sweeps active runs, and how many runs one pass may poll.
TRAINING_SWEEP_INTERVAL_SECONDS = env.float("TRAINING_SWEEP_INTERVAL_SECONDS", default=15.0)
TRAINING_SWEEP_BATCH_SIZE = env.int("TRAINING_SWEEP_BATCH_SIZE", default=100)
# A `/run` whose answer was lost may still have created a job; its worker claims the run when it starts.
# Only after this long without a claim is the run submitted again (and a late claim is then refused).
TRAINING_SUBMIT_UNCERTAIN_GRACE_SECONDS = env.int("TRAINING_SUBMIT_UNCERTAIN_GRACE_SECONDS", default=600)
# Calls to /run that may each have made a job (unanswered ones): bounds the GPU jobs one run can start.
TRAINING_SUBMIT_MAX_ATTEMPTS = env.int("TRAINING_SUBMIT_MAX_ATTEMPTS", default=5)
# A run RunPod would not take (no connection, 429s) stays pending and is sent when RunPod answers again,
# for this long after it was started; then it fails, nothing billed, saying to retry.
TRAINING_SUBMIT_GIVE_UP_SECONDS = env.int("TRAINING_SUBMIT_GIVE_UP_SECONDS", default=3600)
# A pending run is looked at again this long after it was created or last swept: a lost submission task
# (a Redis restart, a killed worker) is queued again then.
TRAINING_PENDING_RECHECK_SECONDS = env.float("TRAINING_PENDING_RECHECK_SECONDS", default=60.0)
# Once the worker reports its last step or the upload, the run is polled this often until RunPod has
# the result: a dropped webhook then delays completion by at most this plus one sweep interval.
TRAINING_FINISHING_POLL_SECONDS = env.float("TRAINING_FINISHING_POLL_SECONDS", default=5.0)
# A second "started" for the same job while its worker called back this recently is a duplicate
# hand-out (runpod-python#402), told to stop; after it, a restart after a lost worker is let through.
TRAINING_WORKER_LEASE_SECONDS = env.int("TRAINING_WORKER_LEASE_SECONDS", default=45)
# Workers that send a delivery id (one per handler invocation) call back at least every 10 s while they
# run. A "started" from another delivery of the run's job while the holder called back this recently is
# told to wait; once the holder has been silent this long it is taken as lost and the claim moves.
TRAINING_WORKER_LIVENESS_SECONDS = env.float("TRAINING_WORKER_LIVENESS_SECONDS", default=30.0)
# A cancelled run's reporting worker hears "stop" at its next callback (at most its 10 s heartbeat) and
# uploads what it made before it ends; RunPod is asked to cancel the job only if it still runs this much
# later (a checkpoint and its optimizer state are hundreds of MB to upload).
TRAINING_CANCEL_GRACE_SECONDS = env.int("TRAINING_CANCEL_GRACE_SECONDS", default=120)
# Checkpoints kept per completed run besides its final LoRA and the one its owner chose: the oldest others
# are pruned (files deleted). Each is the LoRA's size (about 172 MB at rank 16); 5 keeps every checkpoint
# of the balanced preset (1500 steps, one per 250). See docs/TRAINING.md for the storage cost.
TRAINING_CHECKPOINTS_KEPT = env.int("TRAINING_CHECKPOINTS_KEPT", default=5)
# How long the download links of a resume (the checkpoint and its optimizer state) stay valid: the worker
# fetches them as soon as it is told to resume.
TRAINING_RESUME_LINK_SECONDS = env.int("TRAINING_RESUME_LINK_SECONDS", default=3600)

# ---- Pod mode: runs on a persistent pod's AI Toolkit UI (docs/TRAINING.md, "Pod mode")
# The UI has no webhooks: a pod run's job is read this often (status, step, new samples and checkpoints).
TRAINING_POD_POLL_SECONDS = env.float("TRAINING_POD_POLL_SECONDS", default=10.0)
# The sweep leases a pod run to its poll for this long, the longest a poll may take (it downloads each new
# checkpoint, hundreds of MB through RunPod's proxy); the poll schedules the next one when it is done.
TRAINING_POD_POLL_LEASE_SECONDS = env.float("TRAINING_POD_POLL_LEASE_SECONDS", default=600.0)
# A job the UI shows `running` whose step and stage (`info`) have not moved for this long is taken as stuck
# (its trainer died without the UI seeing it exit): it is marked stopped and queued again, up to
# TRAINING_POD_MAX_RESTARTS. Long enough for a first run's download of the base model (tens of GB).
TRAINING_POD_STALL_SECONDS = env.float("TRAINING_POD_STALL_SECONDS", default=1800.0)
# Times a pod run's job is made again (the pod restarted and forgot it) or restarted (stuck) before the run
# fails.
TRAINING_POD_MAX_RESTARTS = env.int("TRAINING_POD_MAX_RESTARTS", default=2)
# Each UI call's timeout; file transfers (a LoRA is hundreds of MB through RunPod's proxy) have their own.
TRAINING_POD_TIMEOUT_SECONDS = env.float("TRAINING_POD_TIMEOUT_SECONDS", default=30.0)
TRAINING_POD_TRANSFER_TIMEOUT_SECONDS = env.float("TRAINING_POD_TRANSFER_TIMEOUT_SECONDS", default=600.0)
# The worker's GPU preset the pod's config is built with ("24gb" fits every pod; "80gb" for A100/H100 pods).
TRAINING_POD_GPU_PRESET = env.str("TRAINING_POD_GPU_PRESET", default="24gb")
# How long a pod run may wait for its pod to take it (a stopped pod RunPod cannot start yet, a UI not
# answering: then it fails `submit_failed`) and, once its job is on the pod, for the job to start (runs ahead
# of it in the UI's queue: then `timed_out`). RunPod's limits for these (TRAINING_SUBMIT_GIVE_UP_SECONDS,
# TRAINING_JOB_TTL_SECONDS) are serverless only.
TRAINING_POD_QUEUE_TIMEOUT_SECONDS = env.int("TRAINING_POD_QUEUE_TIMEOUT_SECONDS", default=24 * 3600)
# A pod with no run for this long is stopped (a pod's own idle_stop_minutes overrides it); fractions allowed.
TRAINING_POD_IDLE_STOP_MINUTES = env.float("TRAINING_POD_IDLE_STOP_MINUTES", default=30.0)
