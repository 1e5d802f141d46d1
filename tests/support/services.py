"""Pick the real services the test run will use, and say which.

Run by `make test` before pytest: `eval "$(python -m tests.support.services)"`. It prints shell
`export` lines on stdout and a plain report on stderr. Postgres and Redis come from
`DATABASE_URL` / `REDIS_URL` (or this machine's usual addresses); one that cannot be reached is
reported and left out, so the suite runs on the embedded default instead. With `CI=true` a
missing service is an error: CI must test against the real thing.
"""

from __future__ import annotations

import os
import shlex
import sys

import psycopg
import redis

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def postgres_error(url: str) -> str | None:
    try:
        with psycopg.connect(url.replace("postgres://", "postgresql://", 1), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]
    return None


def redis_error(url: str) -> str | None:
    try:
        redis.Redis.from_url(url, socket_timeout=3, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        return str(exc)
    return None


def main() -> int:
    in_ci = os.environ.get("CI", "").lower() == "true"
    chosen: dict[str, str] = {}
    missing: list[str] = []
    for variable, default, probe, label in (
        ("DATABASE_URL", DEFAULT_DATABASE_URL, postgres_error, "Postgres"),
        ("REDIS_URL", DEFAULT_REDIS_URL, redis_error, "Redis"),
    ):
        url = os.environ.get(variable) or default
        error = probe(url)
        if error is None:
            chosen[variable] = url
            print(f"test services: {label} at {url}", file=sys.stderr)
        else:
            missing.append(f"{label} at {url}: {error}")
            print(
                f"test services: {label} at {url} cannot be reached ({error}); "
                "using the embedded default instead",
                file=sys.stderr,
            )
    print("test services: S3 is a SeaweedFS server that the test run starts itself", file=sys.stderr)
    if missing and in_ci:
        print("CI=true and a real service is missing: " + "; ".join(missing), file=sys.stderr)
        return 1
    for variable, url in chosen.items():
        print(f"export {variable}={shlex.quote(url)}")
    for variable in ("DATABASE_URL", "REDIS_URL"):
        if variable not in chosen:
            print(f"unset {variable}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
