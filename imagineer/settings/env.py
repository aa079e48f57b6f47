"""Small, strict readers for settings that come from the environment.

Every reader raises ImproperlyConfigured naming the variable and the bad value,
so a typo in a deployment fails at start-up with a message a person can act on.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name}={raw!r} is not a boolean; use one of 1/0, true/false, yes/no, on/off."
    )


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum of {minimum}.")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={value} is above the maximum of {maximum}.")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum of {minimum}.")
    return value


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Entries are split on commas that are not escaped: "\," is a literal comma inside a value.
_UNESCAPED_COMMA = re.compile(r"(?<!\\),")


def env_dict(name: str) -> dict[str, str]:
    """KEY=VALUE pairs separated by commas ("A=1,B=x=y"); "\\," puts a comma in a value (NO_PROXY=a\\,b).

    Keys must be environment variable names and may appear once; values may be empty or contain "=".
    """
    raw = os.environ.get(name, "")
    result: dict[str, str] = {}
    for entry in _UNESCAPED_COMMA.split(raw):
        entry = entry.strip()
        if not entry:
            continue
        key, sep, value = entry.partition("=")
        key = key.strip()
        if not sep or not _ENV_NAME.fullmatch(key):
            raise ImproperlyConfigured(
                f"{name}: the entry {entry!r} is not KEY=VALUE with KEY a variable name "
                "(entries are separated by commas; write \\, for a comma inside a value)."
            )
        if key in result:
            raise ImproperlyConfigured(f"{name}: {key} is given twice.")
        result[key] = value.strip().replace("\\,", ",")
    return result


def env_choice(name: str, default: str, choices: set[str]) -> str:
    value = env_str(name, default).lower()
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} is not one of: {', '.join(sorted(choices))}.")
    return value


def env_path(name: str, default: Path) -> Path:
    raw = env_str(name)
    return Path(raw).expanduser().resolve() if raw else default.resolve()


# Every SQLite database (the default file or a sqlite:/// DATABASE_URL) is shared by the web and the worker
# processes: WAL lets them read while one writes; IMMEDIATE takes the write lock when a transaction begins, so
# two processes that read and then write (claiming a queued job) wait for each other instead of one failing at
# once with "database is locked"; the timeout is how long they wait.
SQLITE_OPTIONS = {
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    "transaction_mode": "IMMEDIATE",
    "timeout": 30,
}


def parse_database_url(url: str) -> dict:
    """Turn postgres://user:pass@host:port/name?opt=v (or sqlite:///path) into a DATABASES entry."""
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme in {"postgres", "postgresql", "pgsql"}:
        name = unquote(parsed.path.lstrip("/"))
        if not name:
            raise ImproperlyConfigured(f"DATABASE_URL={url!r} names no database (postgres://user@host:5432/NAME).")
        try:
            port = parsed.port
        except ValueError:
            raise ImproperlyConfigured(f"DATABASE_URL={url!r} has a port that is not a number.") from None
        options = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": name,
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(port or ""),
            "OPTIONS": options,
            "CONN_MAX_AGE": 60,
            "CONN_HEALTH_CHECKS": True,
        }
    if scheme == "sqlite":
        path = unquote(parsed.path)
        if path.startswith("//"):
            path = path[1:]
        if not path or path == "/":
            raise ImproperlyConfigured(f"DATABASE_URL={url!r} names no SQLite file (sqlite:////abs/path.sqlite3).")
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": path, "OPTIONS": dict(SQLITE_OPTIONS)}
    raise ImproperlyConfigured(
        f"DATABASE_URL={url!r} has an unsupported scheme {scheme!r}; use postgres:// or sqlite:///."
    )


def check_redis_url(url: str) -> str:
    parsed = urlparse(url)
    if parsed.scheme not in {"redis", "rediss", "unix"}:
        raise ImproperlyConfigured(f"REDIS_URL={url!r} must start with redis://, rediss:// or unix://.")
    try:
        _ = parsed.port  # urlparse validates the port lazily
    except ValueError:
        raise ImproperlyConfigured(f"REDIS_URL={url!r} has a port that is not a number.") from None
    return url


def load_or_create_secret_key(path: Path) -> str:
    """The development SECRET_KEY kept in `path` (mode 0600), made once and shared by every process.

    Several processes may start at once (gunicorn workers, RQ workers): the key is written to a private temp
    file and hard-linked into place, so exactly one key wins and every process reads that one.
    """
    import secrets
    import tempfile

    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if key:
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".secret_key-", dir=path.parent)  # created with mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write("dev-" + secrets.token_urlsafe(50) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race: use its key
    finally:
        os.unlink(tmp)
    key = path.read_text().strip()
    if not key:
        raise ImproperlyConfigured(f"The development secret key file {path} is empty; delete it to make a new one.")
    return key
