"""One call that does it all: decide by rule, protect per recipient, send, audit, archive.

::

    result = securemail.send(
        message,
        config,
        policy=RuleSet.load("policy.toml"),
        directory=Directory.open("keys.sqlite"),
        signer=alice,
        audit=AuditLog.open("audit.jsonl"),
        archive=Archive.open("archive.sqlite", index_key=key),
    )

The order is what makes it fail closed:

1. The rules decide (:meth:`RuleSet.evaluate <securemail.governance.rules.RuleSet.evaluate>`)
   and the decision is audited before anything else happens.
2. A block, a transport weaker than the rules' ``min_tls``, a required signature without a
   signer, a required password without a callback, or (``on_unreachable = "refuse"``) any
   recipient without a usable key stops the message: nothing is archived or sent, the
   refusal is audited, and the error names the recipients and the rule. With ``"split"``
   those recipients are refused and reported, the others are served.
3. The message is protected per group: one copy for the To/Cc recipients of each format
   (S/MIME where the recipient has a usable certificate, else OpenPGP, under ``encrypt =
   "any"``), and one copy for each Bcc recipient, so that no recipient learns of a Bcc
   recipient from the recipient infos. Keys come from the directory only: expired, revoked,
   wrong-usage keys are never chosen (:mod:`securemail.governance.directory`).
4. The original message is archived (encrypted to the archive key) *before* the first copy
   is sent: no mail leaves that the archive does not hold.
5. Each copy is sent, and each transaction audited with its TLS session and per-recipient
   outcome.

The message must be unprotected when it comes in (the rules read its content); what the
transport sends are the protected copies.
"""

from __future__ import annotations

import copy
import dataclasses
import email.utils
import logging
from collections.abc import Callable, Iterable, Sequence
from email.message import EmailMessage
from typing import TYPE_CHECKING, Literal, NoReturn, overload

from .. import wire
from ..compose import Message, envelope_recipients, envelope_sender
from ..errors import (
    EncryptionRequiredError,
    InputError,
    PolicyRequirementError,
    RecipientUnreachableError,
    RuleBlockedError,
    SecureMailError,
)
from ..keys import Identity, Recipient
from ..policy import DEFAULT, Policy
from ..results import ProtectedMessage
from ..smime.password import PasswordRecipient

if TYPE_CHECKING:
    from ..smime.enveloped import EnvelopeRecipient
    from ..transport.config import SMTPConfig
    from ..transport.dkim import DKIMSigner
    from ..transport.results import SendResult
    from ..transport.smtp import Sendable, SMTPTransport
    from .archive import Archive
    from .audit import AuditLog
    from .directory import Directory, Reachability
    from .rules import Decision, RuleSet

__all__ = ["Delivery", "GovernedResult", "PasswordRequest", "send"]

_log = logging.getLogger(__name__)

_TLS_RANK = {"opportunistic": 0, "required": 1, "required-verify": 2, "implicit": 2}
"""How much each transport mode guarantees (implicit TLS verifies like required-verify)."""

Protection = Literal["smime", "pgp", "password", "signed", "none"]


@dataclasses.dataclass(frozen=True)
class PasswordRequest:
    """What a password callback is told: hand the password returned to ``recipients``
    out of band (phone, SMS, a portal), never by the same mail."""

    message_id: str
    recipients: tuple[str, ...]
    hint: str | None


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One protected copy and its mail transaction."""

    recipients: tuple[str, ...]
    protection: Protection
    result: SendResult


@dataclasses.dataclass(frozen=True)
class GovernedResult:
    """The outcome of :func:`send` with a policy: the decision, every copy sent, and the
    recipients refused (``on_unreachable = "split"``) with the reason."""

    message_id: str
    decision: Decision
    deliveries: tuple[Delivery, ...]
    refused: tuple[tuple[str, str], ...] = ()
    archive_id: str | None = None

    @property
    def ok(self) -> bool:
        """Every recipient got a copy: none refused, every transaction fully delivered."""
        return not self.refused and all(d.result.ok for d in self.deliveries)

    @property
    def delivered(self) -> tuple[str, ...]:
        return tuple(a for d in self.deliveries for a in d.result.delivered)

    def protection_for(self, address: str) -> Protection | None:
        """How the copy for ``address`` was protected (None: refused, or not a recipient)."""
        for delivery in self.deliveries:
            if address in delivery.recipients:
                return delivery.protection
        return None


@dataclasses.dataclass(frozen=True)
class _Group:
    recipients: tuple[str, ...]
    protection: Protection
    smime: tuple[Recipient, ...] = ()
    pgp: tuple[bytes, ...] = ()
    fingerprints: tuple[str, ...] = ()


@overload
def send(
    message: Sendable,
    config: SMTPConfig | None = None,
    *,
    policy: None = None,
    transport: SMTPTransport | None = None,
    mail_from: str | None = None,
    recipients: Iterable[str] | None = None,
) -> SendResult: ...


@overload
def send(
    message: EmailMessage,
    config: SMTPConfig | None = None,
    *,
    policy: RuleSet,
    transport: SMTPTransport | None = None,
    directory: Directory | None = None,
    signer: Identity | None = None,
    audit: AuditLog | None = None,
    archive: Archive | None = None,
    password_callback: Callable[[PasswordRequest], str | bytes] | None = None,
    crypto_policy: Policy = DEFAULT,
    dkim: DKIMSigner | None = None,
) -> GovernedResult: ...


def send(
    message: Sendable | EmailMessage,
    config: SMTPConfig | None = None,
    *,
    policy: RuleSet | None = None,
    transport: SMTPTransport | None = None,
    mail_from: str | None = None,
    recipients: Iterable[str] | None = None,
    directory: Directory | None = None,
    signer: Identity | None = None,
    audit: AuditLog | None = None,
    archive: Archive | None = None,
    password_callback: Callable[[PasswordRequest], str | bytes] | None = None,
    crypto_policy: Policy = DEFAULT,
    dkim: DKIMSigner | None = None,
) -> SendResult | GovernedResult:
    """Send ``message`` through ``transport`` (kept open) or over a new connection to
    ``config``.

    Without ``policy`` this is :meth:`SMTPTransport.send
    <securemail.transport.SMTPTransport.send>`. With a :class:`~securemail.governance.rules.RuleSet`
    the message (unprotected) goes the governed way described in the module documentation,
    and a :class:`GovernedResult` comes back; ``directory`` supplies the keys, ``signer``
    signs (S/MIME) when a rule asks for it, ``audit`` and ``archive`` record what happened,
    ``password_callback`` supplies the password when a rule asks for password encryption,
    ``crypto_policy`` is the :class:`~securemail.policy.Policy` for the protection, and
    ``dkim`` DKIM-signs each protected copy (the bytes that are sent).
    """
    from ..transport.smtp import SMTPTransport

    if transport is None and config is None:
        raise InputError("send needs an SMTPConfig or an open SMTPTransport")
    if dkim is not None and policy is None:
        raise InputError("dkim= is for a governed send; sign a plain message with DKIMSigner")
    if policy is None:
        if transport is not None:
            return transport.send(message, mail_from=mail_from, recipients=recipients)
        assert config is not None
        with SMTPTransport(config) as own:
            return own.send(message, mail_from=mail_from, recipients=recipients)
    if not isinstance(message, EmailMessage):
        raise InputError(
            "a governed send needs the unprotected message (an EmailMessage), which the "
            "rules read and which is then protected per recipient"
        )
    if mail_from is not None or recipients is not None:
        raise InputError("a governed send takes its envelope from the message")
    governed = _Governed(
        message,
        policy=policy,
        directory=directory,
        signer=signer,
        audit=audit,
        archive=archive,
        password_callback=password_callback,
        crypto_policy=crypto_policy,
        dkim=dkim,
    )
    if transport is not None:
        return governed.run(transport)
    assert config is not None
    governed.check_transport(config)  # before connecting
    with SMTPTransport(config) as own:
        return governed.run(own)


class _Governed:
    def __init__(
        self,
        message: EmailMessage,
        *,
        policy: RuleSet,
        directory: Directory | None,
        signer: Identity | None,
        audit: AuditLog | None,
        archive: Archive | None,
        password_callback: Callable[[PasswordRequest], str | bytes] | None,
        crypto_policy: Policy,
        dkim: DKIMSigner | None,
    ) -> None:
        self.message = _with_message_id(message)
        self.message_id = str(self.message["Message-ID"]).strip()
        self.sender = envelope_sender(self.message)
        self.recipients = envelope_recipients(self.message)
        self.bcc = _bcc(self.message)
        self.directory = directory
        self.signer = signer
        self.audit = audit
        self.archive = archive
        self.password_callback = password_callback
        self.crypto_policy = crypto_policy
        self.dkim = dkim
        self.decision = policy.evaluate(self.message)
        if audit is not None:
            audit.record_decision(self.message_id, self.sender, self.recipients, self.decision)

    # --- refusals -----------------------------------------------------------------------------

    def _refuse(self, error: SecureMailError, recipients: Sequence[str] | None = None) -> NoReturn:
        if self.audit is not None:
            self.audit.record_refusal(
                self.message_id,
                self.sender,
                self.recipients if recipients is None else recipients,
                error,
            )
        _log.info("message %s refused: %s", self.message_id, type(error).__name__)
        raise error

    def check_transport(self, config: SMTPConfig) -> None:
        wanted = self.decision.min_tls
        if wanted is not None and _TLS_RANK[config.tls] < _TLS_RANK[wanted]:
            self._refuse(
                PolicyRequirementError(
                    "min_tls",
                    f"the rules require TLS {wanted!r} and the transport is configured "
                    f"for {config.tls!r}",
                )
            )

    def _check_requirements(self) -> None:
        decision = self.decision
        if decision.block:
            self._refuse(RuleBlockedError(decision.block_rule or "?", decision.block_reason or ""))
        if decision.sign and self.signer is None:
            self._refuse(
                PolicyRequirementError("sign", "the rules require a signature; give a signer")
            )
        if decision.password and self.password_callback is None:
            self._refuse(
                PolicyRequirementError(
                    "password",
                    "the rules require password encryption; give a password_callback that "
                    "hands the password to the recipients out of band",
                )
            )

    # --- planning -----------------------------------------------------------------------------

    def _lookup(self, address: str) -> Reachability | None:
        return None if self.directory is None else self.directory.lookup(address)

    def _plan(self) -> tuple[list[_Group], list[RecipientUnreachableError]]:
        """Which recipients get which protection; the unreachable ones (when encryption is
        required and their key is missing) come back separately."""
        decision = self.decision
        wanted = decision.encrypt
        plan: dict[tuple[Protection, str | None], list[str]] = {}
        keys: dict[str, tuple[tuple[Recipient, ...], tuple[bytes, ...], tuple[str, ...]]] = {}
        unreachable: list[RecipientUnreachableError] = []
        for address in self.recipients:
            copy_of = address if address in self.bcc else None  # a Bcc gets a copy of its own
            if not decision.requires_encryption:
                plan.setdefault(("signed" if decision.sign else "none", None), []).append(address)
                continue
            found = self._lookup(address)
            smime = found.smime if found is not None else ()
            pgp = found.pgp if found is not None else ()
            protection: Protection | None = None
            if smime and (wanted in ("smime", "any") or (wanted is None and decision.password)):
                protection = "smime"  # (with a password too, the certificate opens it as well)
            elif wanted in ("pgp", "any") and pgp:
                protection = "pgp"
            elif decision.password and (wanted in (None, "smime", "any")):
                protection = "password"  # no key: the password opens it
            if protection is None:
                kind = None if wanted == "any" else wanted
                reasons = found.reasons if found is not None else ()
                if kind is not None:
                    reasons = tuple(r for r in reasons if r.format.value == kind)
                unreachable.append(RecipientUnreachableError(address, reasons, kind))
                continue
            if protection == "smime":
                keys[address] = (smime[:1], (), tuple(_cert_fingerprint(r) for r in smime[:1]))
            elif protection == "pgp":
                keys[address] = ((), (pgp[0].public_key,), (pgp[0].fingerprint,))
            if decision.password and protection == "smime":
                protection = "password"  # the certificate and the password both open it
            plan.setdefault((protection, copy_of), []).append(address)
        groups = []
        for (protection, _), members in plan.items():
            chosen = [keys[a] for a in members if a in keys]
            groups.append(
                _Group(
                    recipients=tuple(members),
                    protection=protection,
                    smime=tuple(r for k in chosen for r in k[0]),
                    pgp=tuple(p for k in chosen for p in k[1]),
                    fingerprints=tuple(f for k in chosen for f in k[2]),
                )
            )
        return groups, unreachable

    # --- protecting ---------------------------------------------------------------------------

    def _protect(self, group: _Group, password: bytes | None) -> ProtectedMessage:
        from .. import pgp, smime

        signer = self.signer if self.decision.sign else None
        if group.protection in ("none", "signed"):
            if signer is None:
                return ProtectedMessage(wire.to_bytes(self.message), self.sender, group.recipients)
            return smime.sign(self.message, signer, policy=self.crypto_policy)
        if group.protection == "pgp":
            return pgp.encrypt(self.message, keys=list(group.pgp), policy=self.crypto_policy)
        recipients: list[Recipient | PasswordRecipient] = list(group.smime)
        if group.protection == "password":
            assert password is not None
            recipients.append(PasswordRecipient(password))
        return smime.encrypt(self.message, recipients, signer=signer, policy=self.crypto_policy)

    def _algorithms(self, group: _Group) -> tuple[str, ...]:
        """What the audit log records of a copy's protection: the content cipher and the
        key transports, as :func:`securemail.smime.encrypt` chooses them."""
        from ..policy import ContentCipher
        from ..smime.mime import choose_algorithms

        if group.protection == "pgp":
            return ("openpgp-seipd-mdc",)
        if group.protection in ("none", "signed"):
            return ("signed",) if group.protection == "signed" else ()
        cipher, chosen = choose_algorithms(list(group.smime), self.crypto_policy)
        password = group.protection == "password"
        if password and self.crypto_policy.content_cipher is None:
            cipher = ContentCipher.AES_256_CBC  # the default profile with a password recipient
        transports = sorted({_key_algorithm(c) for c in chosen})
        return (str(cipher.value), *transports, *(["pwri-pbkdf2"] if password else []))

    # --- the run ------------------------------------------------------------------------------

    def run(self, transport: SMTPTransport) -> GovernedResult:
        self.check_transport(transport.config)
        self._check_requirements()
        groups, unreachable = self._plan()
        refused: list[tuple[str, str]] = []
        if unreachable:
            error = EncryptionRequiredError(tuple(unreachable), _rules(self.decision))
            if self.decision.on_unreachable == "refuse" or len(unreachable) == len(self.recipients):
                self._refuse(error)
            refused = [(e.recipient, str(e)) for e in unreachable]
            if self.audit is not None:
                self.audit.record_refusal(
                    self.message_id, self.sender, [a for a, _ in refused], error
                )
        password: bytes | None = None
        if any(g.protection == "password" for g in groups):
            assert self.password_callback is not None
            request = PasswordRequest(
                self.message_id,
                tuple(a for g in groups if g.protection == "password" for a in g.recipients),
                self.decision.password_hint,
            )
            given = self.password_callback(request)
            password = given.encode("utf-8") if isinstance(given, str) else bytes(given)
        try:  # nothing has left yet: a failure here is a refusal, and is audited as one
            protected = [(group, self._protect(group, password)) for group in groups]
            if self.dkim is not None:
                protected = [(group, self.dkim.sign(copy)) for group, copy in protected]
            archive_id = None
            if self.archive is not None:
                entry = self.archive.store(
                    wire.to_bytes(self.message), envelope_recipients=self.recipients
                )
                archive_id = entry.id
        except SecureMailError as error:
            self._refuse(error)
        if self.audit is not None and archive_id is not None:
            self.audit.record_archive(self.message_id, archive_id)
        deliveries = []
        for group, message in protected:
            if self.audit is not None and group.protection != "none":
                self.audit.record_protection(
                    self.message_id,
                    "pgp" if group.protection == "pgp" else "smime",
                    self._algorithms(group),
                    group.fingerprints,
                )
            result = transport.send(
                message, mail_from=self.sender, recipients=list(group.recipients)
            )
            if self.audit is not None:
                self.audit.record_delivery(self.message_id, result)
            deliveries.append(Delivery(group.recipients, group.protection, result))
        return GovernedResult(
            message_id=self.message_id,
            decision=self.decision,
            deliveries=tuple(deliveries),
            refused=tuple(refused),
            archive_id=archive_id,
        )


def _with_message_id(message: EmailMessage) -> EmailMessage:
    """The message with a Message-ID (the audit log and the archive are keyed by it)."""
    if message["Message-ID"]:
        return message
    stamped = copy.deepcopy(message)
    sender = envelope_sender(message)
    stamped["Message-ID"] = email.utils.make_msgid(domain=sender.rpartition("@")[2])
    return stamped


def _bcc(message: EmailMessage) -> frozenset[str]:
    bcc = set(message.bcc) if isinstance(message, Message) else set()
    for field in message.get_all("Bcc") or ():
        bcc.update(a for _, a in email.utils.getaddresses([str(field)]) if a)
    return frozenset(bcc)


def _cert_fingerprint(recipient: Recipient) -> str:
    from cryptography.hazmat.primitives import hashes

    return recipient.certificate.fingerprint(hashes.SHA256()).hex()


def _key_algorithm(recipient: EnvelopeRecipient) -> str:
    """How the content key reaches one recipient: RSA key transport, or key agreement."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key = recipient.certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return str(recipient.key_transport.value)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ecdh-{key.curve.name}"
    return "x25519"


def _rules(decision: Decision) -> tuple[str, ...]:
    return tuple(match.rule for match in decision.matched)
