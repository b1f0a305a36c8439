"""OpenPGP Web Key Directory lookups (draft-koch-openpgp-webkey-service), client side.

A WKD serves a domain's OpenPGP keys over HTTPS at a URL derived from the address, so the
domain's TLS certificate is what vouches for the key: the lookup is only as good as that
verification, and it is never weakened here. What a caller (or a test) may change is *where*
to connect for a host name (``connect``), never which name the certificate must carry.

Only the key bytes are fetched here; :meth:`securemail.governance.directory.Directory.fetch_wkd`
checks that the key carries the address before anything is stored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import socket
import ssl
import string
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InputError, WKDError

__all__ = ["DEFAULT_MAX_SIZE", "DEFAULT_TIMEOUT", "Connector", "WKDClient", "wkd_hash", "wkd_urls"]

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_SIZE = 256 * 1024
"""Real keys are a few kilobytes; a larger answer is refused rather than read."""

Connector = Callable[[str, int], tuple[str, int]]
"""Maps the (host, port) of a URL to the (host, port) to connect to."""

_ZBASE32 = "ybndrfg8ejkmcpqxot1uwisza345h769"
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _zbase32(data: bytes) -> str:
    bits = int.from_bytes(data, "big")
    count = (len(data) * 8 + 4) // 5
    bits <<= count * 5 - len(data) * 8
    return "".join(_ZBASE32[(bits >> (5 * i)) & 31] for i in reversed(range(count)))


def _split(address: str) -> tuple[str, str]:
    local, at_sign, domain = address.strip().rpartition("@")
    if not at_sign or not local or not domain:
        raise InputError(f"{address!r} is not an email address (local@domain)")
    return local, domain.lower()


def wkd_hash(local_part: str) -> str:
    """The z-base-32 SHA-1 of the local part with ASCII letters lowercased (the draft's
    "hu" name)."""
    digest = hashlib.sha1(local_part.translate(_ASCII_LOWER).encode("utf-8"), usedforsecurity=False)
    return _zbase32(digest.digest())


def wkd_urls(address: str) -> tuple[str, str]:
    """(the advanced method's URL, the direct method's URL) for ``address``."""
    local, domain = _split(address)
    query = "?l=" + urllib.parse.quote(local, safe="")
    hashed = wkd_hash(local)
    return (
        f"https://openpgpkey.{domain}/.well-known/openpgpkey/{domain}/hu/{hashed}{query}",
        f"https://{domain}/.well-known/openpgpkey/hu/{hashed}{query}",
    )


@dataclasses.dataclass(frozen=True)
class WKDClient:
    """How WKD lookups are made: the TLS trust (``context``, or ``cafile``, or the system's),
    the per-request ``timeout`` in seconds, the largest answer accepted (``max_size`` bytes),
    and ``connect``, a hook that says where to connect for a host (for tests and split
    DNS). Proxies are not used."""

    context: ssl.SSLContext | None = None
    cafile: str | Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_size: int = DEFAULT_MAX_SIZE
    connect: Connector | None = None

    def __post_init__(self) -> None:
        if self.context is not None and self.cafile is not None:
            raise InputError("give a WKD client either an SSL context or a CA file, not both")
        if self.timeout <= 0 or self.max_size <= 0:
            raise InputError("the WKD timeout and size limit must be positive")
        if self.context is not None and (
            self.context.verify_mode != ssl.CERT_REQUIRED or not self.context.check_hostname
        ):
            raise InputError("the SSL context for WKD must verify certificates and host names")

    def fetch(self, address: str) -> tuple[str, bytes] | None:
        """(URL, key bytes) from the advanced method, or from the direct method when the
        ``openpgpkey.`` host does not exist; None when the domain serves no key for it.

        Raises :class:`~securemail.errors.WKDError` when the server cannot be reached, its
        certificate fails verification, or it answers with an error or too much data.
        """
        advanced, direct = wkd_urls(address)
        try:
            return self._get(address, advanced)
        except _NoSuchHost:
            pass
        try:
            return self._get(address, direct)
        except _NoSuchHost as exc:
            raise WKDError(address, direct, "network", f"no such host ({exc})") from None

    def _opener(self) -> urllib.request.OpenerDirector:
        context = self.context
        if context is None:
            cafile = None if self.cafile is None else str(self.cafile)
            context = ssl.create_default_context(cafile=cafile)
        opener = urllib.request.OpenerDirector()
        # Only HTTPS: a redirect to http:// (or any other scheme) finds no handler and fails.
        for handler in (
            _HTTPSHandler(context, self.connect),
            urllib.request.HTTPRedirectHandler(),
            urllib.request.HTTPDefaultErrorHandler(),
            urllib.request.HTTPErrorProcessor(),
        ):
            opener.add_handler(handler)
        return opener

    def _get(self, address: str, url: str) -> tuple[str, bytes] | None:
        request = urllib.request.Request(url, headers={"User-Agent": "securemail-wkd"})  # noqa: S310
        try:
            with self._opener().open(request, timeout=self.timeout) as response:
                data: bytes = response.read(self.max_size + 1)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise WKDError(address, url, "http", f"status {exc.code}") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, socket.gaierror):
                raise _NoSuchHost(str(reason)) from None
            if isinstance(reason, ssl.SSLCertVerificationError):
                detail = reason.verify_message or str(reason)
                raise WKDError(address, url, "certificate", detail) from None
            raise WKDError(address, url, "network", str(reason)) from None
        except ssl.SSLCertVerificationError as exc:
            raise WKDError(address, url, "certificate", exc.verify_message or str(exc)) from None
        except (OSError, http.client.HTTPException) as exc:
            raise WKDError(address, url, "network", str(exc) or type(exc).__name__) from None
        if len(data) > self.max_size:
            raise WKDError(address, url, "too-large", f"more than {self.max_size} bytes")
        if not data:
            return None
        return url, data


class _NoSuchHost(Exception):
    """The host name does not resolve: the advanced method's cue to fall back."""


class _Connection(http.client.HTTPSConnection):
    """HTTPS to wherever ``connect`` says, with the certificate checked against the host
    name of the URL."""

    def __init__(
        self,
        host: str,
        *,
        tls: ssl.SSLContext,
        connector: Connector | None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(host, timeout=timeout, context=tls, **kwargs)
        self._tls = tls
        self._connector = connector

    def connect(self) -> None:
        target = (self.host, self.port)
        if self._connector is not None:
            target = self._connector(self.host, self.port)
        sock = socket.create_connection(target, self.timeout)
        try:
            self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, context: ssl.SSLContext, connector: Connector | None) -> None:
        super().__init__(context=context)
        self._tls = context
        self._connector = connector

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connection, req)

    def _connection(self, host: str, **kwargs: Any) -> _Connection:
        kwargs.pop("context", None)
        return _Connection(host, tls=self._tls, connector=self._connector, **kwargs)
