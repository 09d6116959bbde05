"""Settings, read from environment variables with defaults that work out of the box.

Every variable is listed in `.env.example`. With nothing set you get SQLite, the in-memory
channel layer and emails printed to the console: check out the code and it runs.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def envbool(name: str, default: str) -> bool:
    return os.environ.get(name, default).strip().lower() in ("1", "true", "yes", "on")


def envint(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()  # empty, as in a copied .env.example: the default
    return int(value) if value else default


def envfloat(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def _private_var_dir() -> Path:
    """`var/` (secret key, SQLite database, kernel homes) is for the app's user alone."""
    path = BASE_DIR / "var"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


VAR_DIR = _private_var_dir()


def _secret_key() -> str:
    """Use SECRET_KEY, else a random key kept in `var/secret_key` so sessions survive restarts."""
    if key := os.environ.get("SECRET_KEY"):
        return key
    path = VAR_DIR / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(50))
    path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
# Former keys, space-separated, while rotating: they still read sessions, signatures and the
# tokens kept encrypted (notebooks/crypto.py); new ones use SECRET_KEY.
SECRET_KEY_FALLBACKS = os.environ.get("SECRET_KEY_FALLBACKS", "").split()
DEBUG = envbool("DEBUG", "false")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")
# Where emails link to when no request gives the host and port (`manage.py serve` and `stack` set
# it from theirs); links in emails sent while answering a request use the request's own.
SITE_URL = os.environ.get("SITE_URL", "http://127.0.0.1:8000")
# The product's name, in page titles, the top bar, e-mails and the command line.
SITE_NAME = os.environ.get("SITE_NAME", "Confer Notebooks")
# `manage.py stack` starts a process that exited again after this many seconds, doubled with
# each exit within its window (0.5 s, 1 s, 2 s, 4 s, then it gives up).
STACK_RESTART_DELAY = envfloat("STACK_RESTART_DELAY", 0.5)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "allauth",
    "allauth.account",
    "accounts",
    "notebooks",
    "audit",
    "collab",
    "kernels",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "notebooks.views.common.NeedsLoginMiddleware",
    "config.timezones.ViewerTimeZoneMiddleware",
]

# Behind https (a TLS-terminating nginx or load balancer): SECURE=true gives Secure cookies, HSTS
# and the redirect to https, and trusts X-Forwarded-Proto, which only the proxy can set (the
# workers listen on loopback). `manage.py check --deploy` is clean with SECURE=true, DEBUG=false
# and a SECRET_KEY of 50+ characters.
SECURE = envbool("SECURE", "false")
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", str(SECURE))
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 31536000 if SECURE else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", str(SECURE))
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", str(SECURE))
if SECURE:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_REFERRER_POLICY = os.environ.get("REFERRER_POLICY", "same-origin")
X_FRAME_OPTIONS = "DENY"  # the sharing page allows its own origin (the editor frames it)
# Scripts only from this site's files (no inline script or handler anywhere); styles inline too
# (CodeMirror writes its own, avatars have a colour); images of outputs are data: URIs.
CONTENT_SECURITY_POLICY = os.environ.get(
    "CONTENT_SECURITY_POLICY",
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "font-src 'self' data:; connect-src 'self'; frame-src 'self'; frame-ancestors 'self'; "
    "object-src 'none'; base-uri 'self'; form-action 'self'",
)

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"

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
                "config.context_processors.site",
            ],
        },
    },
]

# Database: SQLite (WAL, immediate transactions) unless DATABASE_URL is set.
if os.environ.get("DATABASE_URL"):
    DATABASES = {
        # Health checks: a kept connection the database dropped while it sat idle (a restart,
        # a proxy cutting it) is found out before a query fails on it. Each thread has its own
        # connection (the edit path's, the shared one), and an idle one was found out only by
        # the first join after the database came back, which failed with 4503.
        "default": dj_database_url.parse(
            os.environ["DATABASE_URL"], conn_max_age=envint("DB_CONN_MAX_AGE", 60), conn_health_checks=True
        )
    }
    # A database that stops answering (a partition, a host gone: no reset ever comes back) must
    # not hold a worker's database thread until the system's TCP gives up, about 15 minutes: a
    # connection attempt gives up after DB_CONNECT_TIMEOUT, an idle connection is probed with
    # keepalives, and one whose sent data goes unacknowledged for DB_TCP_USER_TIMEOUT is closed.
    # What the URL sets (`?connect_timeout=...`) wins.
    DATABASES["default"]["OPTIONS"] = {
        "connect_timeout": envint("DB_CONNECT_TIMEOUT", 5),
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 5,
        "keepalives_count": 3,
        "tcp_user_timeout": envint("DB_TCP_USER_TIMEOUT", 30) * 1000,  # ms
        **DATABASES["default"].get("OPTIONS", {}),
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("SQLITE_PATH", str(BASE_DIR / "var" / "db.sqlite3")),
            # Keep the connection: reopening it around every batch write costs ~15 ms.
            "CONN_MAX_AGE": None,
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
            # Tests use a file too, not Django's default shared-cache in-memory database: there,
            # concurrent writers fail at once with "database table is locked" instead of waiting
            # on the busy timeout as they do on a real database file.
            "TEST": {"NAME": os.path.join(tempfile.gettempdir(), f"collab-test-{os.getpid()}.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Channel layer: in-memory (one process) unless REDIS_URL is set.
if os.environ.get("REDIS_URL"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # redis-py's 5 s socket timeout equals channels-redis' 5 s BZPOPMIN: an idle
                # reader would time out, log and pause. Give the socket longer than the pop.
                "hosts": [{"address": os.environ["REDIS_URL"], "socket_timeout": 30}],
                # One channel per worker carries every room's traffic: give it room.
                "capacity": envint("CHANNEL_CAPACITY", 5000),
                "expiry": 30,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
# The cache holds rate-limit counters (access requests, invitations, link guesses, allauth's
# logins): with REDIS_URL every worker counts in the same place, and a restart resets nothing.
if os.environ.get("REDIS_URL"):
    CACHES = {
        "default": {
            "BACKEND": "config.cache.SharedCache",  # this worker's memory while Redis is down
            "LOCATION": os.environ["REDIS_URL"],
            "KEY_PREFIX": "cache",
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

# django-allauth: email is the login; verification "mandatory", "optional" or "none".
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = os.environ.get("ACCOUNT_EMAIL_VERIFICATION", "mandatory")
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_LOGOUT_ON_GET = False
ACCOUNT_CONFIRM_EMAIL_ON_GET = True
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"
ACCOUNT_FORMS = {"signup": "accounts.forms.SignupForm"}
if envbool("DISABLE_RATE_LIMITS", "false"):
    ACCOUNT_RATE_LIMITS = False
LOGIN_REDIRECT_URL = "/notebooks/"
LOGIN_URL = "/accounts/login/"

# Email: console by default (config/mail.py); EMAIL_URL=smtp://user:pass@host:port (smtps:// for
# TLS) or EMAIL_BACKEND=file with EMAIL_FILE_PATH for a folder of .log files.
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", f"{SITE_NAME} <noreply@localhost>")
_email_url = os.environ.get("EMAIL_URL", "")
if _email_url:
    from urllib.parse import unquote, urlsplit

    _parts = urlsplit(_email_url)
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_HOST = _parts.hostname or "localhost"
    EMAIL_PORT = _parts.port or 25
    EMAIL_HOST_USER = unquote(_parts.username or "")
    EMAIL_HOST_PASSWORD = unquote(_parts.password or "")
    EMAIL_USE_SSL = _parts.scheme == "smtps"
    EMAIL_USE_TLS = _parts.scheme == "smtp+tls"
else:  # console: the message in EMAIL_FILE_PATH, its links' tokens hidden on the console
    EMAIL_FILE_PATH = os.environ.get("EMAIL_FILE_PATH", str(BASE_DIR / "var" / "emails"))
    EMAIL_BACKEND = {
        "file": "django.core.mail.backends.filebased.EmailBackend",
    }.get(os.environ.get("EMAIL_BACKEND", "console"), "config.mail.PrivateConsoleBackend")

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "var" / "staticfiles"))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns about a missing one
STATICFILES_DIRS = [BASE_DIR / "static"]
WHITENOISE_USE_FINDERS = True
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # hashed + brotli/gzip names after collectstatic (far-future cache); plain names before it
    "staticfiles": {"BACKEND": "config.storage.StaticStorage"},
}

# Uploads: .ipynb files are read in memory up to the limit and refused above it.
NOTEBOOK_MAX_UPLOAD_BYTES = envint("NOTEBOOK_MAX_UPLOAD_BYTES", 50 * 1024 * 1024)
NOTEBOOK_MAX_CELLS = envint("NOTEBOOK_MAX_CELLS", 10_000)  # an import's cost grows with its cells
NOTEBOOK_MAX_JSON_DEPTH = envint("NOTEBOOK_MAX_JSON_DEPTH", 100)
# Imports (uploads, replacements) one worker runs at once; more are answered 503 "try again".
NOTEBOOK_MAX_CONCURRENT_IMPORTS = envint("NOTEBOOK_MAX_CONCURRENT_IMPORTS", 1)
# Bytes of .ipynb one person may import an hour (counted over all workers with Redis).
NOTEBOOK_IMPORT_BYTES_PER_HOUR = envint("NOTEBOOK_IMPORT_BYTES_PER_HOUR", 10 * NOTEBOOK_MAX_UPLOAD_BYTES)
DATA_UPLOAD_MAX_MEMORY_SIZE = NOTEBOOK_MAX_UPLOAD_BYTES + 1024 * 1024
# Any request body, refused with 413 from its headers before it is buffered (config.body_limit);
# several files uploaded at once share it. The proxy (deploy/nginx.conf) has the same limit.
REQUEST_MAX_BODY_BYTES = envint("REQUEST_MAX_BODY_BYTES", NOTEBOOK_MAX_UPLOAD_BYTES + 1024 * 1024)
# Seconds to keep reading (and dropping) a refused body, so the client reads the 413.
REQUEST_BODY_LINGER = envfloat("REQUEST_BODY_LINGER", 5.0)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = 200
NOTEBOOK_TRASH_DAYS = envint("NOTEBOOK_TRASH_DAYS", 30)
AUDIT_RETENTION_DAYS = envint("AUDIT_RETENTION_DAYS", 365)  # `manage.py purge_audit`; 0 keeps forever
# The activity page shows this many events per page; exports read the log in chunks of this many rows.
AUDIT_PAGE_SIZE = envint("AUDIT_PAGE_SIZE", 50)
AUDIT_EXPORT_CHUNK = envint("AUDIT_EXPORT_CHUNK", 2000)

# The Jupyter Server (or Kernel Gateway) that runs kernels; `serve` starts a local one when unset.
JUPYTER_SERVER_URL = os.environ.get("JUPYTER_SERVER_URL", "")
JUPYTER_SERVER_TOKEN = os.environ.get("JUPYTER_SERVER_TOKEN", "")
# Hosts people may register their own kernel servers on (comma-separated; "*.example.com" matches
# its subdomains; "*" any host, "" none). Even then only public addresses (kernels.netguard):
# loopback, private, link-local, metadata... are refused unless KERNEL_SERVER_ALLOW_HOSTS names
# the host (same patterns, no "*"), e.g. "127.0.0.1,gateway.internal". The default server above
# is always allowed. A kernel server's REST reply may be up to KERNEL_SERVER_MAX_REPLY_BYTES.
KERNEL_SERVER_HOSTS = [
    h.strip().lower() for h in os.environ.get("KERNEL_SERVER_HOSTS", "*").split(",") if h.strip()
]
KERNEL_SERVER_ALLOW_HOSTS = [h.lower() for h in envlist("KERNEL_SERVER_ALLOW_HOSTS", "")]
KERNEL_SERVER_MAX_REPLY_BYTES = envint("KERNEL_SERVER_MAX_REPLY_BYTES", 1 << 20)
# Kernels (kernels/), in seconds: an idle kernel is shut down; an unanswered input() is
# interrupted; the worker driving a notebook's kernel renews its lease (kernels.cluster) every
# KERNEL_LEASE_RENEW and loses it KERNEL_LEASE_TTL after the last renewal; a request forwarded
# to the driving worker fails after KERNEL_FORWARD_TIMEOUT.
KERNEL_IDLE_SHUTDOWN = envfloat("KERNEL_IDLE_SHUTDOWN", 3600.0)
# Tab completion and Shift-Tab help: longest code sent with a request; seconds to wait for the kernel
KERNEL_ASSIST_MAX_CHARS = envint("KERNEL_ASSIST_MAX_CHARS", 100_000)
KERNEL_ASSIST_TIMEOUT = envfloat("KERNEL_ASSIST_TIMEOUT", 15.0)
# ... and what a reply may carry: completions, characters per completion, characters of help.
KERNEL_ASSIST_MAX_MATCHES = envint("KERNEL_ASSIST_MAX_MATCHES", 200)
KERNEL_ASSIST_MAX_MATCH_CHARS = envint("KERNEL_ASSIST_MAX_MATCH_CHARS", 200)
KERNEL_ASSIST_MAX_HELP_CHARS = envint("KERNEL_ASSIST_MAX_HELP_CHARS", 20_000)
# Seconds the editor waits for the server to acknowledge a change before it reconnects ("Not saved")
EDITOR_SAVE_ACK_TIMEOUT = envfloat("EDITOR_SAVE_ACK_TIMEOUT", 5.0)
KERNEL_INPUT_TIMEOUT = envfloat("KERNEL_INPUT_TIMEOUT", 300.0)
KERNEL_LEASE_TTL = envfloat("KERNEL_LEASE_TTL", 15.0)
KERNEL_LEASE_RENEW = envfloat("KERNEL_LEASE_RENEW", 5.0)
KERNEL_FORWARD_TIMEOUT = envfloat("KERNEL_FORWARD_TIMEOUT", 10.0)
# The kernel bridge (kernels/), in seconds: kernel outputs are written into the notebook at most
# every KERNEL_FLUSH_INTERVAL; a run's "queued"/"running" marks wait up to KERNEL_MARK_WRITE_DELAY
# to share a write with its first output; a shutdown waits KERNEL_SHUTDOWN_GRACE for the bridge's
# own tasks before cancelling them.
KERNEL_FLUSH_INTERVAL = envfloat("KERNEL_FLUSH_INTERVAL", 0.05)
KERNEL_MARK_WRITE_DELAY = envfloat("KERNEL_MARK_WRITE_DELAY", 0.03)
KERNEL_SHUTDOWN_GRACE = envfloat("KERNEL_SHUTDOWN_GRACE", 10.0)
# What a kernel may write into one cell (bytes): one output (its head and tail are kept), all of
# a cell's outputs (the oldest are cut, with a marker saying how much).
KERNEL_MAX_OUTPUT_BYTES = envint("KERNEL_MAX_OUTPUT_BYTES", 1_000_000)
KERNEL_MAX_CELL_BYTES = envint("KERNEL_MAX_CELL_BYTES", 5_000_000)
# One kernel request: cells in one run, characters in one input() answer; seconds to wait for a
# kernel server to list its kernelspecs (the kernel settings page).
KERNEL_MAX_CELLS_PER_RUN = envint("KERNEL_MAX_CELLS_PER_RUN", 1000)
KERNEL_MAX_INPUT_CHARS = envint("KERNEL_MAX_INPUT_CHARS", 100_000)
KERNEL_SPEC_TIMEOUT = envfloat("KERNEL_SPEC_TIMEOUT", 5.0)
# The kernel websocket: seconds to open it; a new connection holds shell requests until iopub
# answers a kernel_info probe, repeated after KERNEL_PROBE_INTERVAL (doubling up to
# KERNEL_PROBE_MAX_INTERVAL: a busy kernel answers only after its run) and given up after
# KERNEL_PROBE_GIVE_UP; a frame over KERNEL_MAX_FRAME_BYTES is not read: the connection closes
# and reopens, and the running cell says the output was not kept. The local server's kernels send
# at most 32 MiB per message (kernels.sandbox; its JSON escapes may grow it); a server without
# such a limit may send anything, and a worker reading a frame holds about three times its size.
KERNEL_CONNECT_TIMEOUT = envfloat("KERNEL_CONNECT_TIMEOUT", 30.0)
KERNEL_PROBE_INTERVAL = envfloat("KERNEL_PROBE_INTERVAL", 0.2)
KERNEL_PROBE_MAX_INTERVAL = envfloat("KERNEL_PROBE_MAX_INTERVAL", 2.0)
KERNEL_PROBE_GIVE_UP = envfloat("KERNEL_PROBE_GIVE_UP", 30.0)
KERNEL_MAX_FRAME_BYTES = envint("KERNEL_MAX_FRAME_BYTES", 48 * 1024 * 1024)
# The local Jupyter Server's kernel sandbox (kernels.sandbox): each notebook's kernel as its own
# uid, no network, no view of the app, these limits (0 = none). "off" runs kernels unconfined.
KERNEL_SANDBOX = os.environ.get("KERNEL_SANDBOX", "bwrap").strip().lower()
KERNEL_MEMORY_MB = envint("KERNEL_MEMORY_MB", 2048)
KERNEL_CPU_SECONDS = envint("KERNEL_CPU_SECONDS", 3600)
KERNEL_MAX_PROCESSES = envint("KERNEL_MAX_PROCESSES", 100)
KERNEL_MAX_FILE_MB = envint("KERNEL_MAX_FILE_MB", 1024)
# A kernel's private /tmp is a tmpfs (memory) of this size; writing past it fails with ENOSPC.
KERNEL_TMP_MB = envint("KERNEL_TMP_MB", 512)
# The disk a notebook's home may hold (0 = no quota; kernels.diskuse): the server counts a running
# kernel's home every KERNEL_HOME_QUOTA_INTERVAL s and stops a kernel over the quota whose home
# grew since the last count (a kernel may still start over it, to delete files). A home goes over
# by at most what its kernel writes in one interval plus one count. A count reads at most
# KERNEL_HOME_MAX_FILES entries; a home with more counts as over the quota.
KERNEL_HOME_QUOTA_MB = envint("KERNEL_HOME_QUOTA_MB", 2048)
KERNEL_HOME_QUOTA_INTERVAL = envfloat("KERNEL_HOME_QUOTA_INTERVAL", 2.0)
KERNEL_HOME_MAX_FILES = envint("KERNEL_HOME_MAX_FILES", 1_000_000)
KERNEL_NETWORK = envbool("KERNEL_NETWORK", "false")
KERNEL_HOMES_DIR = os.environ.get("KERNEL_HOMES_DIR", str(VAR_DIR / "kernel-homes"))

# Real-time engine (collab/). Delays in seconds, sizes in bytes.
COLLAB = {
    "PERSIST_BATCH_WINDOW": envfloat("COLLAB_PERSIST_BATCH_WINDOW", 0.003),
    "PERSIST_RETRY_FOR": envfloat("COLLAB_PERSIST_RETRY_FOR", 20.0),
    "ROOM_UNLOAD_DELAY": envfloat("COLLAB_ROOM_UNLOAD_DELAY", 30.0),
    "GAP_REPAIR_DELAY": envfloat("COLLAB_GAP_REPAIR_DELAY", 0.2),
    "RESYNC_INTERVAL": envfloat("COLLAB_RESYNC_INTERVAL", 2.0),
    "RESYNC_ACTIVE_FOR": envfloat("COLLAB_RESYNC_ACTIVE_FOR", 10.0),
    # A room with sockets and no edits asks the database this often (and once just after it
    # loads): a lost fan-out message of the last edit, or one published before the room joined
    # its group, reaches its sockets then.
    "RESYNC_IDLE_INTERVAL": envfloat("COLLAB_RESYNC_IDLE_INTERVAL", 30.0),
    # Presence messages waiting for the channel layer at once, per worker; more are dropped
    # (each client sends its state again within 15 s).
    "AWARENESS_PUBLISH_BACKLOG": envint("COLLAB_AWARENESS_PUBLISH_BACKLOG", 1000),
    # Rooms of other workers hear this worker's edits and presence through Redis pub/sub
    # (collab/pubsub.py); without it, through the channel layer (one process).
    "FANOUT_REDIS_URL": os.environ.get("REDIS_URL", ""),
    # A batch of updates larger than this is not carried by the fan-out message: the other
    # workers read it from the database. Redis cuts off a subscriber that falls 32 MB behind,
    # and a few large pastes in a row would otherwise cut every worker's fan-out.
    "FANOUT_INLINE_BYTES": envint("COLLAB_FANOUT_INLINE_BYTES", 64 * 1024),
    # Every room's group is joined again this often: a channel layer forgets a member after
    # its `group_expiry` (a day). Redis pub/sub forgets nobody.
    "FANOUT_REJOIN_INTERVAL": envfloat("COLLAB_FANOUT_REJOIN_INTERVAL", 3600.0),
    "ACCESS_RECHECK_INTERVAL": envfloat("COLLAB_ACCESS_RECHECK_INTERVAL", 15.0),
    "COMPACT_AFTER_UPDATES": envint("COLLAB_COMPACT_AFTER_UPDATES", 500),
    "KEEP_RECENT_UPDATES": envint("COLLAB_KEEP_RECENT_UPDATES", 100),
    "MAX_MESSAGE_BYTES": envint("COLLAB_MAX_MESSAGE_BYTES", 16 * 1024 * 1024),
    "MAX_DOCUMENT_BYTES": envint("COLLAB_MAX_DOCUMENT_BYTES", 64 * 1024 * 1024),
    # Separate pieces (Yjs blocks: items and deletions Yjs could not merge, about 200 bytes of
    # memory each however few bytes they took to send) a document may hold; a client update that
    # adds more is refused (4413). Typing on from one's own last character adds none; a notebook
    # of 10,000 cells holds about 100,000.
    "MAX_DOCUMENT_PIECES": envint("COLLAB_MAX_DOCUMENT_PIECES", 500_000),
    # Separate ranges one client update may delete (4413 beyond; an update repeating the
    # document's deletions, as a sync step 2 does, counts only those it deletes anew): ranges
    # splitting a paste held a worker's event loop 0.12 s for 10,000, 0.5 s for 20,000 and over
    # a second for 100,000 (bench/delete_ranges.py). Deleting all 800 cells of a notebook three
    # people wrote, put right and ran takes about 8,000; clearing outputs, one or two per cell.
    "MAX_DELETE_RANGES_PER_UPDATE": envint("COLLAB_MAX_DELETE_RANGES_PER_UPDATE", 10_000),
    "MAX_SOCKETS_PER_ROOM": envint("COLLAB_MAX_SOCKETS_PER_ROOM", 500),
    # Of those, what all who came through a share link share (each anonymous visit is a new
    # guest): the owner and grantees always keep the rest.
    "MAX_GUEST_SOCKETS_PER_ROOM": envint("COLLAB_MAX_GUEST_SOCKETS_PER_ROOM", 300),
    # One person's sockets on one worker, all rooms together (tabs, devices, reconnects).
    "MAX_SOCKETS_PER_PERSON": envint("COLLAB_MAX_SOCKETS_PER_PERSON", 20),
    # Seconds a person may not join on a worker after their editor sent changes out of order
    # (or deleting what nobody has written yet): the room reloaded for everyone.
    "KEEP_OUT_AFTER_RELOAD": envfloat("COLLAB_KEEP_OUT_AFTER_RELOAD", 60.0),
    "MAX_AWARENESS_BYTES": envint("COLLAB_MAX_AWARENESS_BYTES", 16 * 1024),
    # Client ids one socket may newly write under (its own; after being offline, its earlier tabs'):
    # each is claimed in the database (`notebooks.claims`).
    "MAX_WRITERS_PER_SOCKET": envint("COLLAB_MAX_WRITERS_PER_SOCKET", 16),
    # Client ids without items in the document one person may hold in one notebook (each page
    # load is a new one, claimed at its presence): past it the oldest not in use is released; a
    # new one while all are in use closes its socket with 4429 (`notebooks.claims`).
    "MAX_IDLE_CLAIMS_PER_PERSON": envint("COLLAB_MAX_IDLE_CLAIMS_PER_PERSON", 64),
    # Seconds after which such an id, not claimed again since nor in use, is released.
    "IDLE_CLAIM_KEEP": envfloat("COLLAB_IDLE_CLAIM_KEEP", 86400.0),
    "AWARENESS_MIN_INTERVAL": envfloat("COLLAB_AWARENESS_MIN_INTERVAL", 0.05),
    "MAX_SEND_BUFFER": envint("COLLAB_MAX_SEND_BUFFER", 32 * 1024 * 1024),
    "SLOW_CLOSE_GRACE": envfloat("COLLAB_SLOW_CLOSE_GRACE", 2.0),
    # With this many updates waiting, a room writes at once instead of waiting the batch window.
    "PERSIST_BIG_BATCH": envint("COLLAB_PERSIST_BIG_BATCH", 64),
    # How long a relay waits for the channel layer to take a batch for the other workers before
    # serving its own sockets anyway (a Redis that neither answers nor refuses).
    "PUBLISH_FIRST_WAIT": envfloat("COLLAB_PUBLISH_FIRST_WAIT", 0.02),
    # Batches of a room that may wait for a channel layer that hangs; later ones are left to
    # the other workers' gap repair from the database.
    "PUBLISH_BACKLOG": envint("COLLAB_PUBLISH_BACKLOG", 1000),
    # Access changes, replacements and kernel states that may wait, per worker, for a channel
    # layer that hangs (`Fanout.publish_in_order`); later ones are dropped: the other workers'
    # rooms re-check access every ACCESS_RECHECK_INTERVAL.
    "ORDERED_PUBLISH_BACKLOG": envint("COLLAB_ORDERED_PUBLISH_BACKLOG", 1000),
    # After a fan-out of document updates that took at least FANOUT_GATHER_MIN seconds (a room
    # with hundreds of sockets), the room's next updates gather for as long as it took, at least
    # FANOUT_GATHER_FLOOR and at most FANOUT_GATHER_MAX, and go out as one frame. The floor is for
    # more workers than cores: each worker's share of a lecture's sockets is then short to serve,
    # and "as long as it took" alone let 4 workers on 2 cores fill the machine with frames (twice
    # as many as 2 workers sent, p99 over 100 ms; bench/README.md).
    "FANOUT_GATHER_MIN": envfloat("COLLAB_FANOUT_GATHER_MIN", 0.002),
    "FANOUT_GATHER_FLOOR": envfloat("COLLAB_FANOUT_GATHER_FLOOR", 0.025),
    "FANOUT_GATHER_MAX": envfloat("COLLAB_FANOUT_GATHER_MAX", 0.04),
    # Rows per INSERT statement of the update log (SQLite allows 32,766 parameters per statement).
    "PERSIST_INSERT_ROWS": envint("COLLAB_PERSIST_INSERT_ROWS", 500),
}

# /healthz bounds each check; /metrics answers only "Authorization: Bearer METRICS_TOKEN".
HEALTH_TIMEOUT = envfloat("HEALTH_TIMEOUT", 2.0)
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")

# LOG_FORMAT=json: JSON lines without share tokens, cookies or passwords (config.logformat).
LOG_FORMAT = os.environ.get("LOG_FORMAT", "text").strip().lower()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "config.logformat.JsonLinesFormatter"}},
    "filters": {
        "redact": {"()": "config.logformat.RedactSecrets"},
        "refusals": {"()": "config.logformat.QuietRefusals"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "filters": ["refusals", "redact"],
            **({"formatter": "json"} if LOG_FORMAT == "json" else {}),
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "WARNING")},
}
