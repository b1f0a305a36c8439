"""What an SMTP transport connects to, and how hard it insists on TLS.

A configuration is checked when it is made, not when the first message goes out: a typo in a
setting name, a port out of range or a CA file that does not exist fails here, with the name
of the setting, as a :class:`~securemail.errors.TransportConfigError` (pydantic's own
``ValidationError`` never reaches the caller, and no value is echoed, since one may be a
password).

TLS modes (``tls``):

``"required-verify"`` (the default)
    STARTTLS is mandatory and the server's certificate must chain to a trusted CA and carry
    the server's name (``server_hostname``, else ``host``); TLS 1.2 or newer. Any failure
    ends the session before AUTH and before MAIL FROM.
``"implicit"``
    TLS from the first byte (SMTPS, port 465), verified exactly like ``"required-verify"``.
    There is no unverified variant: to use a private or self-signed server certificate,
    trust it with ``ca_file`` or ``ca_data``.
``"required"``
    STARTTLS is mandatory but the certificate is not checked: protects against passive
    eavesdropping only.
``"opportunistic"``
    STARTTLS when the server offers it (certificate not checked), plaintext otherwise, as
    MTAs relay between each other. A STARTTLS that the server refuses leaves the session in
    plaintext; a handshake that fails after the server agreed ends it.

``ca_file``/``ca_data`` *replace* the system trust store (they pin a private CA); they are
refused with the modes that do not verify, where they would suggest a check that never
happens.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from ..errors import TransportConfigError

__all__ = ["Deadlines", "SMTPConfig", "TLSMode"]

TLSMode = Literal["opportunistic", "required", "required-verify", "implicit"]

_VERIFYING: frozenset[str] = frozenset({"required-verify", "implicit"})
_HOSTNAME = re.compile(r"[A-Za-z0-9.:\[\]_-]+")


def _problems(exc: ValidationError) -> tuple[str, ...]:
    problems: list[str] = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        nested = error.get("ctx", {}).get("error")
        if isinstance(nested, TransportConfigError):  # from a nested model such as Deadlines
            problems.extend(f"{where}.{problem}" for problem in nested.problems)
            continue
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return tuple(problems)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    if not TYPE_CHECKING:
        # Hidden from type checkers so that they keep the typed keyword signature pydantic
        # declares for each model; at run time, validation errors become securemail's own.
        def __init__(self, **data: Any) -> None:
            try:
                super().__init__(**data)
            except ValidationError as exc:
                raise TransportConfigError(_problems(exc)) from None


class Deadlines(_Model):
    """Seconds the client waits for each step, measured for the whole step (a server that
    drip-feeds its reply one byte at a time does not restart the clock).

    The defaults are RFC 5321 section 4.5.3.2's minimum client timeouts; ``command`` covers
    the commands the RFC gives no value for (EHLO, STARTTLS and the TLS handshake, AUTH,
    RSET), and ``quit`` is short because nothing depends on the answer.
    """

    greeting: float = Field(default=300.0, gt=0)
    """Connecting (and the TLS handshake, for implicit TLS) and the 220 greeting."""
    command: float = Field(default=300.0, gt=0)
    mail: float = Field(default=300.0, gt=0)
    rcpt: float = Field(default=300.0, gt=0)
    data_init: float = Field(default=120.0, gt=0)
    """The DATA command, until the 354 go-ahead."""
    data_block: float = Field(default=180.0, gt=0)
    """Each block of message data handed to the network."""
    data_done: float = Field(default=600.0, gt=0)
    """The reply to the final dot: the server may be scanning or delivering meanwhile."""
    quit: float = Field(default=10.0, gt=0)


def _default_port(tls: object) -> int:
    return 465 if tls == "implicit" else 587


class SMTPConfig(_Model):
    """Where and how to send. Immutable; :meth:`clone` makes a validated copy with changes."""

    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=0, ge=1, le=65535)
    """Left out (or 0), the mode's standard port: 465 for ``"implicit"``, 587 otherwise."""
    tls: TLSMode = "required-verify"
    server_hostname: str | None = None
    """The name the certificate must carry (and SNI), when it is not ``host`` (for example
    when ``host`` is an IP address)."""
    ca_file: Path | None = None
    """PEM bundle of CAs to trust instead of the system store."""
    ca_data: str | bytes | None = None
    """The same as text (PEM) or bytes (DER)."""
    username: str | None = None
    password: SecretStr | None = None
    allow_auth_without_tls: bool = False
    """Send AUTH over an unencrypted connection (only ever sensible on loopback)."""
    local_hostname: str | None = None
    """The name given in EHLO; the machine's FQDN when unset."""
    deadlines: Deadlines = Deadlines()
    require_protection: bool = False
    """Refuse any message that is not S/MIME or PGP/MIME encrypted (checked before
    connecting)."""

    @model_validator(mode="before")
    @classmethod
    def _port_for_mode(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("port"):
            return {**data, "port": _default_port(data.get("tls", "required-verify"))}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> SMTPConfig:
        for name in ("host", "server_hostname", "local_hostname"):
            value = getattr(self, name)
            if value is not None and not _HOSTNAME.fullmatch(value):
                raise ValueError(f"{name} must be a host name or address literal")
        if (self.ca_file is not None or self.ca_data is not None) and self.tls not in _VERIFYING:
            raise ValueError(
                f"ca_file/ca_data are only used to verify certificates, which tls={self.tls!r} "
                "does not do; use tls='required-verify' or 'implicit'"
            )
        if self.ca_file is not None and not self.ca_file.is_file():
            raise ValueError(f"ca_file {str(self.ca_file)!r} is not a readable file")
        if self.ca_file is not None or self.ca_data is not None:
            try:
                ssl.create_default_context(
                    cafile=str(self.ca_file) if self.ca_file is not None else None,
                    cadata=self.ca_data,
                )
            except (ssl.SSLError, ValueError, OSError):
                raise ValueError(
                    "ca_file/ca_data hold no usable CA certificate (PEM text or DER bytes)"
                ) from None
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password must be given together")
        if self.username is not None and any(c in self.username for c in "\r\n\0"):
            raise ValueError("username must not contain CR, LF or NUL")
        return self

    def clone(self, **changes: Any) -> SMTPConfig:
        """A validated copy with ``changes``. A port that was the old mode's standard one
        follows a change of ``tls``."""
        values = self.model_dump() | changes
        if "tls" in changes and "port" not in changes and self.port == _default_port(self.tls):
            del values["port"]
        return SMTPConfig(**values)

    @property
    def verifies_certificate(self) -> bool:
        return self.tls in _VERIFYING

    @property
    def tls_name(self) -> str:
        """The name the server's certificate is checked against."""
        return self.server_hostname or self.host
