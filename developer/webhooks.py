"""Standard Webhooks signing, URL safety and the one HTTP client for outbound deliveries.

    headers = sign(secret, message_id, timestamp, body)   # webhook-id / -timestamp / -signature
    check_url_is_public(url)                               # ApplicationError for private targets
    result = post(url, headers, body)                      # never raises for HTTP or network errors

The signature is `v1,<base64 HMAC-SHA256>` over `"<id>.<timestamp>.<body>"`, keyed with the
bytes behind the `whsec_` prefix (https://www.standardwebhooks.com/).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from django.conf import settings

from studio.errors import ApplicationError

SECRET_PREFIX = "whsec_"  # noqa: S105  (the Standard Webhooks marker, not a secret)
USER_AGENT = "CharacterLoRAStudio-Webhooks/1"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{digest}",
    }


# --- Where we may send --------------------------------------------------------------------


def check_url_is_public(url: str) -> None:
    """Refuse URLs we must not call: other schemes, and hosts on loopback or private networks.

    Checked at registration and again before every attempt, since DNS answers change.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad_url("Use an http:// or https:// URL with a host name.")
    if settings.WEBHOOKS_ALLOW_PRIVATE_URLS:
        return
    for address in _resolve(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)):
        if not address.is_global or address.is_multicast:
            raise _bad_url(
                f"{parts.hostname} points to a private, loopback or link-local address ({address}); "
                "webhooks can only go to public addresses."
            )


def _resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as error:
        raise _bad_url(f"The host {host} cannot be found.") from error
    addresses = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        addresses.append(address)
    return addresses


def _bad_url(message: str) -> ApplicationError:
    return ApplicationError(message, code="webhook_url_not_allowed", fields={"url": [message]})


# --- Sending ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostResult:
    ok: bool
    status_code: int | None
    error: str


_session = requests.Session()


def timeouts() -> tuple[float, float]:
    """The POST's (connect, read) timeouts."""
    return min(5.0, settings.WEBHOOK_TIMEOUT_SECONDS), settings.WEBHOOK_TIMEOUT_SECONDS


def post(url: str, headers: dict[str, str], body: bytes) -> PostResult:
    """One POST with a timeout and no redirects (a redirect could lead to a private address)."""
    all_headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}
    try:
        # Streamed and closed unread: only the status matters, so an endpoint that drips its body slowly
        # cannot hold the attempt past its lease (the read timeout bounds each read, not the whole body).
        response = _session.post(
            url,
            data=body,
            headers=all_headers,
            timeout=timeouts(),
            allow_redirects=False,
            stream=True,
        )
        response.close()
    except requests.RequestException as error:
        return PostResult(ok=False, status_code=None, error=f"{type(error).__name__}: {error}"[:500])
    if 200 <= response.status_code < 300:
        return PostResult(ok=True, status_code=response.status_code, error="")
    return PostResult(
        ok=False, status_code=response.status_code, error=f"The endpoint answered {response.status_code}."
    )
