"""The key directory: "how can I reach alice@example.com securely?"

It keeps the S/MIME certificates and OpenPGP public keys of correspondents -- imported from
files and folders, harvested from verified signed messages, fetched from a Web Key Directory
-- and answers a lookup with the keys that can be encrypted to *now* (or at ``at``) and, for
every other candidate, why it is refused.

Why it is built this way:

* **Judged at lookup, not at import.** Certificates expire, CRLs arrive later, trust anchors
  change. The store keeps material as it came; :meth:`Directory.lookup` decides each time, so
  an answer is never stale. A refused key is reported, never silently dropped and never
  chosen.
* **Announcements travel with the certificate.** The SMIMECapabilities a sender announced in
  a signed message say whether it reads AES-GCM and RSA-OAEP; the encryptor chooses from them
  (:func:`securemail.smime.mime.choose_algorithms`), so they are stored with the signer's
  certificate and handed back in its :class:`~securemail.keys.Recipient`. A newer
  announcement replaces an older one; an older message read late does not.
* **Public material only.** A PKCS#12 file or an OpenPGP secret key bundle gives up its
  certificate or public key; the private parts are never written anywhere.
* **Addresses as mail delivers them.** The local part is compared as written (RFC 5321: it
  may be case-sensitive), the domain without case. An address that differs only in the case
  of its local part is reported as a mismatch, so the user sees why a key was not used.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x448, x25519
from cryptography.x509.oid import ExtendedKeyUsageOID

from ..errors import (
    CertificateError,
    CertificateExpiredError,
    CertificateNotYetValidError,
    CertificateRevokedError,
    CertificateUsageError,
    InputError,
    KeyLoadError,
    RecipientUnreachableError,
    SecureMailError,
    UntrustedCertificateError,
)
from ..keys import Recipient, _Named, load_certificates, load_pkcs12, read_source
from ..pgp.gpg import GnuPG, KeyInfo, SubkeyInfo, UserID
from ..results import VerifyResult
from ..smime.capabilities import Capabilities
from ..smime.revocation import RevocationChecker
from ..smime.validation import (
    KeyPurpose,
    email_addresses,
    same_name,
    signature_problem,
    validate_path,
)
from .keystore import KeyKind, KeyStore, SQLiteKeyStore, StoredKey
from .wkd import WKDClient

__all__ = [
    "Directory",
    "ImportReport",
    "KeyFormat",
    "PGPKey",
    "Reachability",
    "Reason",
    "Rejection",
    "describe",
    "normalize_address",
]

_EMAIL_EKUS = frozenset(
    {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
)
_PGP_ARMOR = (b"-----BEGIN PGP PUBLIC KEY BLOCK-----", b"-----BEGIN PGP PRIVATE KEY BLOCK-----")
_PKCS12_SUFFIXES = frozenset({".p12", ".pfx"})


class KeyFormat(enum.StrEnum):
    SMIME = "smime"
    PGP = "pgp"


class Reason(enum.StrEnum):
    """Why a candidate key is refused."""

    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    REVOKED = "revoked"
    WRONG_USAGE = "wrong-usage"
    """S/MIME: keyUsage or extendedKeyUsage forbid encryption; OpenPGP: no encryption subkey."""
    ADDRESS_MISMATCH = "address-mismatch"
    UNTRUSTED = "untrusted"
    """No valid chain to the directory's trust anchors."""
    INVALID = "invalid"
    """The stored material cannot be used at all (unsupported key, no valid self-signature)."""


@dataclasses.dataclass(frozen=True)
class Rejection:
    """A candidate key that was not chosen: which one (``key``: certificate subject and
    SHA-256 fingerprint, or OpenPGP fingerprint), the ``reason`` and a sentence saying it."""

    format: KeyFormat
    key: str
    reason: Reason
    detail: str

    def __str__(self) -> str:
        kind = "S/MIME certificate" if self.format is KeyFormat.SMIME else "OpenPGP key"
        return f"{kind} {self.key}: {self.detail}"


@dataclasses.dataclass(frozen=True)
class PGPKey:
    """A usable OpenPGP public key: encrypt to it with :mod:`securemail.pgp`
    (``recipients=[key.public_key]``)."""

    fingerprint: str
    public_key: bytes
    """The ASCII-armored certificate."""
    addresses: tuple[str, ...]
    expires: dt.datetime | None = None


@dataclasses.dataclass(frozen=True)
class Reachability:
    """The answer to a lookup: usable keys per format, and every refused candidate."""

    address: str
    at: dt.datetime
    smime: tuple[Recipient, ...] = ()
    """Usable certificates, newest first, with what their owner announced it reads."""
    pgp: tuple[PGPKey, ...] = ()
    reasons: tuple[Rejection, ...] = ()

    @property
    def reachable(self) -> bool:
        return bool(self.smime or self.pgp)

    def explain(self) -> str:
        """A few lines for people: what can be used, and why the rest cannot."""
        state = "reachable" if self.reachable else "NOT reachable"
        lines = [f"{self.address}: {state} (at {self.at:%Y-%m-%d %H:%M} UTC)"]
        for recipient in self.smime:
            cert = recipient.certificate
            caps = recipient.capabilities
            reads = "no algorithms announced (the conservative AES-CBC profile is used)"
            if caps is not None:
                modern = [
                    name
                    for name, known in (
                        ("AES-GCM", caps.reads_authenveloped),
                        ("RSA-OAEP", caps.reads_oaep),
                    )
                    if known
                ]
                reads = "reads " + (", ".join(modern) if modern else "legacy algorithms only")
            lines.append(
                f"  S/MIME  {_cert_name(cert)}, valid until {cert.not_valid_after_utc:%Y-%m-%d}; "
                f"{reads}"
            )
        for key in self.pgp:
            until = f"expires {key.expires:%Y-%m-%d}" if key.expires else "does not expire"
            lines.append(f"  OpenPGP {key.fingerprint}, {until}")
        lines.extend(
            f"  refused {rejection.reason.value}: {rejection}" for rejection in self.reasons
        )
        if not (self.reachable or self.reasons):
            lines.append("  no certificate or OpenPGP key for this address")
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class ImportReport:
    """What an import stored, and the files (or certificates) it passed over, with why."""

    stored: tuple[StoredKey, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    """(file or certificate, reason) pairs."""

    def __add__(self, other: ImportReport) -> ImportReport:
        return ImportReport(self.stored + other.stored, self.skipped + other.skipped)


def normalize_address(address: str) -> str:
    """``local@domain`` with the local part as written and the domain lowercased; accepts
    ``<local@domain>``. Raises :class:`~securemail.errors.InputError` for anything else."""
    text = address.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    local, at_sign, domain = text.rpartition("@")
    if not at_sign or not local or not domain or any(c.isspace() for c in text):
        raise InputError(f"{address!r} is not an email address (local@domain)")
    return f"{local}@{domain.lower()}"


def _utc(at: dt.datetime | None) -> dt.datetime:
    if at is None:
        return dt.datetime.now(dt.UTC)
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)


def _sha256(data: bytes) -> str:
    digest = hashes.Hash(hashes.SHA256())
    digest.update(data)
    return digest.finalize().hex()


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _cert_name(cert: x509.Certificate) -> str:
    return f"{cert.subject.rfc4514_string()!r} (SHA-256 {_sha256(_der(cert))[:16]})"


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


class Directory:
    """Certificates and OpenPGP keys by address, judged at lookup.

    ``trust`` (CA certificates) makes every S/MIME candidate need a valid chain to one of
    them, checked with :func:`~securemail.smime.validation.validate_path` (revocation from
    the directory's CRLs included); without it, certificates are taken as the user imported
    them and checked for validity, usage and the directory's CRLs only. ``gpg`` names the
    GnuPG binary used to read OpenPGP keys (lookups never run it).
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        trust: Sequence[x509.Certificate] | None = None,
        gpg: str | None = None,
    ) -> None:
        self._store = store
        self._trust = None if trust is None else tuple(trust)
        self._gpg = gpg

    @classmethod
    def open(
        cls,
        path: str | Path | None = None,
        *,
        trust: Sequence[x509.Certificate] | None = None,
        gpg: str | None = None,
    ) -> Directory:
        """The directory in the SQLite file ``path`` (created if missing); ``None`` keeps it
        in memory for the life of the object."""
        return cls(SQLiteKeyStore(":memory:" if path is None else path), trust=trust, gpg=gpg)

    @property
    def store(self) -> KeyStore:
        return self._store

    def close(self) -> None:
        close = getattr(self._store, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> Directory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- putting material in ------------------------------------------------------------------

    def import_path(self, *paths: str | Path, password: bytes | str | None = None) -> ImportReport:
        """Import files and folders (recursively). A named file that holds no key material
        raises :class:`~securemail.errors.KeyLoadError`; in a folder such files are skipped
        and listed in the report. ``password`` opens PKCS#12 files."""
        report = ImportReport()
        for given in paths:
            path = Path(given)
            if path.is_dir():
                for file in sorted(p for p in path.rglob("*") if p.is_file()):
                    try:
                        report += self.import_file(file, password=password)
                    except KeyLoadError as exc:
                        report += ImportReport(skipped=((str(file), exc.reason),))
            else:
                report += self.import_file(path, password=password)
        return report

    def import_file(self, path: str | Path, *, password: bytes | str | None = None) -> ImportReport:
        data, name = read_source(Path(path))
        pkcs12 = Path(path).suffix.lower() in _PKCS12_SUFFIXES
        return self.import_bytes(data, source=name, password=password, pkcs12=pkcs12)

    def import_bytes(
        self,
        data: bytes,
        *,
        source: str = "<bytes>",
        password: bytes | str | None = None,
        pkcs12: bool = False,
    ) -> ImportReport:
        """Import certificates (PEM, DER, PKCS#7, bundles), CRLs, a PKCS#12 file (its
        certificates only) or OpenPGP keys (armored or binary; public parts only)."""
        if any(marker in data for marker in _PGP_ARMOR):
            return self._import_pgp(data, source)
        if b"-----BEGIN PKCS12-----" in data or pkcs12:
            return self._import_pkcs12(data, source, password)
        if b"-----BEGIN " in data:
            return self._import_pem(data, source)
        if data[:1] == b"\x30":
            return self._import_der(data, source, password)
        if data[:1] and data[0] & 0x80:
            return self._import_pgp(data, source)
        raise KeyLoadError(source, "no certificate, CRL, PKCS#12 or OpenPGP key")

    def add_certificate(
        self,
        certificate: x509.Certificate,
        *,
        source: str = "<certificate>",
        capabilities: Capabilities | None = None,
        announced: dt.datetime | None = None,
    ) -> StoredKey:
        """Store a certificate: a CA certificate as an issuer (for chains and CRLs), any
        other as a recipient under its email addresses. ``capabilities`` announced at
        ``announced`` replace stored ones only when they are newer."""
        der = _der(certificate)
        fingerprint = _sha256(der)
        if _is_ca(certificate):
            key = StoredKey(KeyKind.ISSUER, fingerprint, der, source=source)
            if self._store.get(KeyKind.ISSUER, fingerprint) is None:
                self._store.put(key)
            return key
        old = self._store.get(KeyKind.SMIME, fingerprint)
        caps = None if capabilities is None else capabilities.algorithms
        when = None if capabilities is None else _utc(announced)
        if old is not None:
            newer = caps is not None and (
                old.announced is None or when is None or when >= old.announced
            )
            if not newer:
                caps, when = old.capabilities, old.announced
            if (caps, when) == (old.capabilities, old.announced):
                return old
        key = StoredKey(
            KeyKind.SMIME,
            fingerprint,
            der,
            addresses=email_addresses(certificate),
            source=source if old is None else old.source,
            added=dt.datetime.now(dt.UTC) if old is None else old.added,
            capabilities=caps,
            announced=when,
        )
        self._store.put(key)
        return key

    def add_crl(self, crl: x509.CertificateRevocationList, *, source: str = "<crl>") -> StoredKey:
        der = crl.public_bytes(serialization.Encoding.DER)
        key = StoredKey(KeyKind.CRL, _sha256(der), der, source=source)
        self._store.put(key)
        return key

    def harvest(self, result: VerifyResult) -> StoredKey | None:
        """Keep the signer's certificate of a *verified* S/MIME message, with the
        SMIMECapabilities it announced (dated by its signing time). Returns None, storing
        nothing, for a result that is not verified or not S/MIME: an unverified signature
        says nothing about who holds the key."""
        if not result.verified or result.certificate is None:
            return None
        for cert in result.chain:
            if _is_ca(cert):
                self.add_certificate(cert, source="message")
        return self.add_certificate(
            result.certificate,
            source="message",
            capabilities=result.capabilities,
            announced=result.signing_time,
        )

    def fetch_wkd(self, address: str, *, client: WKDClient | None = None) -> Reachability:
        """Look ``address`` up in its domain's Web Key Directory, store the keys served that
        carry the address, and return :meth:`lookup`'s answer, with the served keys that do
        not carry it among the reasons (they are not stored)."""
        wanted = normalize_address(address)
        fetched = (client or WKDClient()).fetch(wanted)
        if fetched is None:
            return self.lookup(wanted)
        url, data = fetched
        extra: list[Rejection] = []
        with GnuPG(gpg=self._gpg) as gpg:
            for info in gpg.import_keys(data):
                if wanted in {normalize_address(u.email) for u in info.user_ids if u.email}:
                    self._store_pgp(gpg, info, f"WKD {url}")
                else:
                    extra.append(
                        Rejection(
                            KeyFormat.PGP,
                            info.fingerprint,
                            Reason.ADDRESS_MISMATCH,
                            f"served by WKD for {wanted} but has no user ID with this address "
                            f"(it has {', '.join(info.emails) or 'none'}); not stored",
                        )
                    )
        found = self.lookup(wanted)
        return dataclasses.replace(found, reasons=found.reasons + tuple(extra))

    def remove(self, kind: KeyKind, fingerprint: str) -> bool:
        return self._store.delete(kind, fingerprint)

    def entries(self, kind: KeyKind | None = None) -> Iterator[StoredKey]:
        return self._store.iterate(kind)

    # --- asking ---------------------------------------------------------------------------------

    def lookup(self, address: str, *, at: dt.datetime | None = None) -> Reachability:
        """The usable keys for ``address`` at ``at`` (default now), and why every other
        candidate is refused."""
        wanted = normalize_address(address)
        when = _utc(at)
        smime: list[Recipient] = []
        pgp: list[PGPKey] = []
        reasons: list[Rejection] = []
        context = _Context(self._store, self._trust, when)
        for stored in self._store.by_address(wanted):
            if stored.kind is KeyKind.SMIME:
                judged = _judge_smime(stored, wanted, context)
                if isinstance(judged, Recipient):
                    smime.append(judged)
                else:
                    reasons.append(judged)
            elif stored.kind is KeyKind.PGP:
                verdict = _judge_pgp(stored, wanted, when)
                if isinstance(verdict, PGPKey):
                    pgp.append(verdict)
                else:
                    reasons.append(verdict)
        smime.sort(key=lambda r: r.certificate.not_valid_before_utc, reverse=True)
        return Reachability(wanted, when, tuple(smime), tuple(pgp), tuple(reasons))

    def require(
        self, address: str, format: KeyFormat | str | None = None, *, at: dt.datetime | None = None
    ) -> Reachability:
        """:meth:`lookup`, raising :class:`~securemail.errors.RecipientUnreachableError`
        (naming the address and every reason) when no key of ``format`` (either, if None)
        is usable."""
        found = self.lookup(address, at=at)
        kind = None if format is None else KeyFormat(format)
        usable = {
            None: found.reachable,
            KeyFormat.SMIME: bool(found.smime),
            KeyFormat.PGP: bool(found.pgp),
        }[kind]
        if usable:
            return found
        reasons = tuple(r for r in found.reasons if kind is None or r.format is kind)
        raise RecipientUnreachableError(
            found.address, reasons, None if kind is None else kind.value
        )

    # --- importing, by kind ------------------------------------------------------------------

    def _import_certificates(self, certs: Sequence[x509.Certificate], source: str) -> ImportReport:
        stored: list[StoredKey] = []
        skipped: list[tuple[str, str]] = []
        for cert in certs:
            if not _is_ca(cert) and not email_addresses(cert):
                skipped.append((_cert_name(cert), "has no email address and is not a CA"))
                continue
            stored.append(self.add_certificate(cert, source=source))
        return ImportReport(tuple(stored), tuple(skipped))

    def _import_pem(self, data: bytes, source: str) -> ImportReport:
        report = ImportReport()
        found = False
        if b"CERTIFICATE-----" in data or b"-----BEGIN PKCS7-----" in data:
            report += self._import_certificates(load_certificates(_named(data, source)), source)
            found = True
        crl_blocks = _pem_blocks(data, b"X509 CRL")
        for block in crl_blocks:
            try:
                crl = x509.load_pem_x509_crl(block)
            except ValueError:
                raise KeyLoadError(source, "holds a CRL that cannot be read") from None
            report += ImportReport(stored=(self.add_crl(crl, source=source),))
            found = True
        if not found:
            raise KeyLoadError(source, "no certificate, CRL or OpenPGP key in this PEM file")
        return report

    def _import_der(self, data: bytes, source: str, password: bytes | str | None) -> ImportReport:
        try:
            certs = load_certificates(_named(data, source))
        except KeyLoadError:
            pass
        else:
            return self._import_certificates(certs, source)
        try:
            crl = x509.load_der_x509_crl(data)
        except ValueError:
            return self._import_pkcs12(data, source, password)
        return ImportReport(stored=(self.add_crl(crl, source=source),))

    def _import_pkcs12(
        self, data: bytes, source: str, password: bytes | str | None
    ) -> ImportReport:
        identity = load_pkcs12(_named(data, source), password)
        # Only the certificates are kept; the private key goes out of scope here.
        return self._import_certificates((identity.certificate, *identity.chain), source)

    def _import_pgp(self, data: bytes, source: str) -> ImportReport:
        stored: list[StoredKey] = []
        with GnuPG(gpg=self._gpg) as gpg:
            imported = gpg.import_keys(data)
            for info in imported:
                old = self._store.get(KeyKind.PGP, info.fingerprint)
                if old is not None:
                    gpg.import_keys(old.data)  # merge: new signatures, subkeys, revocations
            current = {k.fingerprint: k for k in gpg.list_keys()}
            for info in imported:
                stored.append(self._store_pgp(gpg, current[info.fingerprint], source))
        return ImportReport(tuple(stored))

    def _store_pgp(self, gpg: GnuPG, info: KeyInfo, source: str) -> StoredKey:
        addresses: dict[str, None] = {}
        for uid in info.user_ids:
            if uid.email:
                try:
                    addresses.setdefault(normalize_address(uid.email), None)
                except InputError:
                    continue
        old = self._store.get(KeyKind.PGP, info.fingerprint)
        key = StoredKey(
            KeyKind.PGP,
            info.fingerprint,
            gpg.export_certificate(info.fingerprint),
            addresses=tuple(addresses),
            source=source,
            added=dt.datetime.now(dt.UTC) if old is None else old.added,
            details=_key_to_json(info),
        )
        self._store.put(key)
        return key


# --- judging candidates ---------------------------------------------------------------------


@dataclasses.dataclass
class _Context:
    """What one lookup judges S/MIME candidates with, loaded once."""

    store: KeyStore
    trust: tuple[x509.Certificate, ...] | None
    at: dt.datetime
    _issuers: list[x509.Certificate] | None = None
    _crls: list[x509.CertificateRevocationList] | None = None

    @property
    def issuers(self) -> list[x509.Certificate]:
        if self._issuers is None:
            found = [
                x509.load_der_x509_certificate(k.data) for k in self.store.iterate(KeyKind.ISSUER)
            ]
            self._issuers = [*(self.trust or ()), *found]
        return self._issuers

    @property
    def crls(self) -> list[x509.CertificateRevocationList]:
        if self._crls is None:
            self._crls = [x509.load_der_x509_crl(k.data) for k in self.store.iterate(KeyKind.CRL)]
        return self._crls


def _judge_smime(stored: StoredKey, wanted: str, context: _Context) -> Recipient | Rejection:
    try:
        cert = x509.load_der_x509_certificate(stored.data)
        name = _cert_name(cert)
    except ValueError:
        return Rejection(KeyFormat.SMIME, stored.fingerprint, Reason.INVALID, "cannot be read")

    def refuse(reason: Reason, detail: str) -> Rejection:
        return Rejection(KeyFormat.SMIME, name, reason, detail)

    addresses = email_addresses(cert)
    if wanted not in addresses:
        return refuse(
            Reason.ADDRESS_MISMATCH,
            f"carries {', '.join(addresses) or 'no address'}, not {wanted} (local parts are "
            "compared as written)",
        )
    at = context.at
    if cert.not_valid_before_utc > at:
        return refuse(
            Reason.NOT_YET_VALID, f"not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    if cert.not_valid_after_utc < at:
        return refuse(Reason.EXPIRED, f"expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    usage = _usage_problem(cert)
    if usage is not None:
        return refuse(Reason.WRONG_USAGE, usage)
    if context.trust is None:
        revoked = _revocation(cert, context)
        if revoked is not None:
            return refuse(Reason.REVOKED, revoked)
    else:
        try:
            validate_path(
                cert,
                trust_anchors=context.trust,
                intermediates=context.issuers,
                at=at,
                purpose=KeyPurpose.ENCRYPT,
                crls=context.crls,
            )
        except CertificateError as exc:
            return refuse(_REASONS.get(type(exc), Reason.UNTRUSTED), exc.reason)
        except SecureMailError as exc:
            return refuse(Reason.UNTRUSTED, str(exc))
    caps = None if stored.capabilities is None else Capabilities(stored.capabilities)
    return Recipient.from_certificate(cert, capabilities=caps)


_REASONS: dict[type[CertificateError], Reason] = {
    CertificateExpiredError: Reason.EXPIRED,
    CertificateNotYetValidError: Reason.NOT_YET_VALID,
    CertificateRevokedError: Reason.REVOKED,
    CertificateUsageError: Reason.WRONG_USAGE,
    UntrustedCertificateError: Reason.UNTRUSTED,
}


def _usage_problem(cert: x509.Certificate) -> str | None:
    """Why the certificate's key may not be encrypted to (RFC 8550 4.4.2, 4.4.4), or None."""
    try:
        key = cert.public_key()
        extensions = cert.extensions
    except ValueError as exc:
        return f"cannot be parsed ({exc})"
    try:
        usage: x509.KeyUsage | None = extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if isinstance(key, rsa.RSAPublicKey):
        if usage is not None and not usage.key_encipherment:
            return "its keyUsage lacks keyEncipherment, needed to encrypt to an RSA key"
    elif isinstance(key, ec.EllipticCurvePublicKey | x25519.X25519PublicKey | x448.X448PublicKey):
        if usage is not None and not usage.key_agreement:
            return "its keyUsage lacks keyAgreement, needed to encrypt to this key"
    else:
        kind = type(key).__name__.removeprefix("_").removesuffix("PublicKey")
        return f"its {kind} key can only sign, not be encrypted to"
    try:
        eku = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if not _EMAIL_EKUS & set(eku):
        return "its extendedKeyUsage does not include emailProtection"
    return None


def _revocation(cert: x509.Certificate, context: _Context) -> str | None:
    """Without trust anchors: is ``cert`` on a CRL signed by a stored issuer of it?"""
    crls = context.crls
    if not crls:
        return None
    issuers = [
        i
        for i in context.issuers
        if same_name(i.subject, cert.issuer) and signature_problem(cert, i) is None
    ]
    for issuer in issuers:
        checker = RevocationChecker(
            crls,
            at=context.at,
            required=False,
            allow_weak=False,
            certificates=context.issuers,
            signer_path=_no_separate_crl_signer,
        )
        try:
            checker.check((cert, issuer))
        except CertificateRevokedError as exc:
            return exc.reason
        except CertificateError:
            continue
    return None


def _no_separate_crl_signer(
    signer: x509.Certificate, anchor: x509.Certificate
) -> tuple[x509.Certificate, ...]:
    raise UntrustedCertificateError(
        signer.subject.rfc4514_string(),
        "a CRL signed by another key than the issuer's is used only with trust anchors",
    )


def _judge_pgp(stored: StoredKey, wanted: str, at: dt.datetime) -> PGPKey | Rejection:
    fingerprint = stored.fingerprint

    def refuse(reason: Reason, detail: str) -> Rejection:
        return Rejection(KeyFormat.PGP, fingerprint, reason, detail)

    try:
        info = _key_from_json(stored.details)
    except (ValueError, KeyError, TypeError):
        return refuse(Reason.INVALID, "its stored listing cannot be read; import it again")
    uids = [u for u in info.user_ids if u.email and _same_address(u.email, wanted)]
    if not uids:
        return refuse(
            Reason.ADDRESS_MISMATCH,
            f"has user IDs for {', '.join(info.emails) or 'no address'}, not {wanted} "
            "(local parts are compared as written)",
        )
    if all(u.revoked for u in uids):
        return refuse(Reason.REVOKED, f"its user ID with {wanted} is revoked")
    problem = _pgp_key_problem(info.primary, at, "the key")
    if problem is not None:
        return refuse(*problem)
    if info.primary.invalid:
        return refuse(Reason.INVALID, "it has no valid self-signature")
    capable = [k for k in info.keys if k.can_encrypt]
    if not capable:
        return refuse(Reason.WRONG_USAGE, "it has no encryption-capable (sub)key (sign-only)")
    problems = [_pgp_key_problem(k, at, f"subkey {k.key_id}") for k in capable]
    if all(p is not None for p in problems):
        first = next(p for p in problems if p is not None)
        details = "; ".join(p[1] for p in problems if p is not None)
        return refuse(first[0], f"no valid encryption subkey: {details}")
    return PGPKey(fingerprint, stored.data, info.emails, info.primary.expires)


def _pgp_key_problem(key: SubkeyInfo, at: dt.datetime, what: str) -> tuple[Reason, str] | None:
    if key.revoked:
        return Reason.REVOKED, f"{what} is revoked"
    if key.created > at:
        return Reason.NOT_YET_VALID, f"{what} is not valid before {key.created:%Y-%m-%d %H:%M} UTC"
    if key.expires is not None and key.expires <= at:
        return Reason.EXPIRED, f"{what} expired on {key.expires:%Y-%m-%d}"
    if key.invalid:
        return Reason.INVALID, f"{what} has no valid binding signature"
    return None


def _same_address(candidate: str, wanted: str) -> bool:
    try:
        return normalize_address(candidate) == wanted
    except InputError:
        return False


# --- helpers ----------------------------------------------------------------------------------


def _named(data: bytes, source: str) -> _Named:
    """Bytes for the loaders of :mod:`securemail.keys`, keeping the file's name in errors."""
    return _Named(data, source)


def _pem_blocks(data: bytes, label: bytes) -> list[bytes]:
    begin, end = b"-----BEGIN " + label + b"-----", b"-----END " + label + b"-----"
    blocks = []
    start = data.find(begin)
    while start != -1:
        stop = data.find(end, start)
        if stop == -1:
            break
        blocks.append(data[start : stop + len(end)] + b"\n")
        start = data.find(begin, stop)
    return blocks


def _key_to_json(info: KeyInfo) -> str:
    def key(k: SubkeyInfo) -> dict[str, object]:
        fields = dataclasses.asdict(k)
        fields["created"] = k.created.isoformat()
        fields["expires"] = None if k.expires is None else k.expires.isoformat()
        return fields

    return json.dumps(
        {
            "primary": key(info.primary),
            "subkeys": [key(k) for k in info.subkeys],
            "user_ids": [dataclasses.asdict(u) for u in info.user_ids],
        }
    )


def _key_from_json(text: str) -> KeyInfo:
    data = json.loads(text)

    def key(fields: dict[str, object]) -> SubkeyInfo:
        values = dict(fields)
        values["created"] = dt.datetime.fromisoformat(str(values["created"]))
        expires = values["expires"]
        values["expires"] = None if expires is None else dt.datetime.fromisoformat(str(expires))
        return SubkeyInfo(**values)  # type: ignore[arg-type]

    return KeyInfo(
        primary=key(data["primary"]),
        subkeys=tuple(key(k) for k in data["subkeys"]),
        user_ids=tuple(UserID(**u) for u in data["user_ids"]),
    )


def describe(stored: StoredKey) -> str:
    """One line about a stored record, for listings."""
    addresses = ", ".join(stored.addresses) or "-"
    if stored.kind in (KeyKind.SMIME, KeyKind.ISSUER):
        cert = x509.load_der_x509_certificate(stored.data)
        what = (
            f"{cert.subject.rfc4514_string()!r} valid {cert.not_valid_before_utc:%Y-%m-%d} "
            f"to {cert.not_valid_after_utc:%Y-%m-%d}"
        )
        if stored.capabilities is not None and stored.announced is not None:
            what += f", capabilities announced {stored.announced:%Y-%m-%d}"
    elif stored.kind is KeyKind.CRL:
        crl = x509.load_der_x509_crl(stored.data)
        what = f"from {crl.issuer.rfc4514_string()!r} issued {crl.last_update_utc:%Y-%m-%d}"
    else:
        try:
            info = _key_from_json(stored.details)
            expires = info.primary.expires
            what = f"{info.algorithm}, " + (
                f"expires {expires:%Y-%m-%d}" if expires else "does not expire"
            )
            if info.revoked:
                what += ", revoked"
        except (ValueError, KeyError, TypeError):
            what = "listing unreadable"
    return f"{stored.kind.value:<6} {stored.fingerprint} {addresses} {what} ({stored.source})"
