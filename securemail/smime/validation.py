"""X.509 certificate path validation for S/MIME: RFC 5280 section 6 plus RFC 8550.

Why not ``cryptography.x509.verification``: that verifier implements the CA/Browser Forum web
PKI profile and refuses real S/MIME material -- Ed25519 CAs (the RFC 9216 sample PKI), CAs whose
basicConstraints is not marked critical (Mozilla NSS's test CA, accepted by every mail client)
and certificates without an authorityKeyIdentifier. certvalidator would need oscrypto, which we
do not use. So this module builds and checks paths itself on top of ``cryptography``'s
primitives, and is measured against NIST PKITS (``tests/interop/test_pkits.py``).

What :func:`validate_path` checks, for every certificate from the leaf up to a trust anchor:

* chaining by name, compared as RFC 5280 7.1 says (RFC 4518: case folding, insignificant
  whitespace, PrintableString and UTF8String alike), and by signature (the anchor's own
  signature is not checked: an anchor is trusted because the caller says so);
* validity at the given time, the anchor included;
* CA rights of every issuer: basicConstraints cA=TRUE (critical or not), pathLenConstraint,
  keyUsage keyCertSign; a version 1 certificate may issue only as a trust anchor;
* extendedKeyUsage, where present on any certificate, allows emailProtection or anyExtendedKeyUsage
  (RFC 8550 4.4.4 for the leaf; OpenSSL, NSS and Windows apply it to CAs too);
* the leaf's keyUsage allows the purpose (signing, or key transport/agreement for encryption);
* certificate policies: the RFC 5280 6.1 valid_policy_tree, with policy mappings,
  requireExplicitPolicy, inhibitPolicyMapping and inhibitAnyPolicy; the caller's
  ``initial_policies`` default to anyPolicy (every policy acceptable);
* name constraints (RFC 5280 4.2.1.10) on rfc822Name, directoryName, dNSName, URI (host part)
  and iPAddress; other name forms are refused whenever a certificate below the CA carries a name
  of that form (fail closed);
* no unknown critical extension;
* no weak cryptography unless ``allow_weak``: MD5/SHA-1/DSA signatures, RSA keys under 2048
  bits, DSA keys, elliptic curves under 256 bits;
* revocation from the CRLs the caller passes (:mod:`securemail.smime.revocation`, RFC 5280 6.3).

Deliberately **not** done: fetching CRLs or asking OCSP responders (callers pass CRLs, e.g. those
embedded in a SignedData); internationalized mailbox names (SmtpUTF8Mailbox) under name
constraints (refused); DSA parameter inheritance (``cryptography`` cannot load such keys).

One deliberate difference from RFC 5280: a CA certificate (basicConstraints cA=TRUE) is not
accepted as the *leaf* of an S/MIME path unless it is itself a trust anchor. RFC 5280 path
validation does not look at the leaf's cA bit and NIST PKITS expects such paths to validate
(pathLenConstraint tests 8 and 14, onlyContainsCACerts test 13), but S/MIME keeps CA and
end-entity keys apart: RFC 8550 4.4.1 has end-entity certificates say they are not issuers, the
CA/Browser Forum S/MIME Baseline Requirements forbid cA=TRUE in subscriber certificates, and NSS
(Thunderbird) refuses a CA certificate as an email signer or recipient.
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import unicodedata
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import (
    dsa,
    ec,
    ed448,
    ed25519,
    padding,
    rsa,
    x448,
    x25519,
)
from cryptography.x509.oid import (
    CertificatePoliciesOID,
    ExtendedKeyUsageOID,
    ExtensionOID,
    NameOID,
    ObjectIdentifier,
    SignatureAlgorithmOID,
)

from securemail.errors import (
    CertificateError,
    CertificateExpiredError,
    CertificateNotYetValidError,
    CertificateUsageError,
    InputError,
    MalformedASN1Error,
    UntrustedCertificateError,
)
from securemail.policy import RevocationCheck

__all__ = [
    "ANY_POLICY",
    "KeyPurpose",
    "ValidatedPath",
    "email_addresses",
    "matches_email",
    "validate_path",
]

ANY_POLICY = CertificatePoliciesOID.ANY_POLICY
"""The anyPolicy OID (2.5.29.32.0): as ``initial_policies``, every policy is acceptable."""

# Upper bound on candidate issuers tried while building one path. Intermediates usually come
# from the message being verified, so an attacker can send many certificates that share a name
# and sign each other; without a bound, depth-first search over them is exponential.
_MAX_CANDIDATES = 1000

# Upper bound on the nodes of one level of the valid_policy_tree. Policy mappings can make the
# tree grow exponentially with the path length (CVE-2023-0464 in OpenSSL); real paths need a few.
_MAX_POLICY_NODES = 1000

_EMAIL_EKUS = frozenset(
    {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
)

# Critical extensions we act on. The CRL pointers are used when revocation is checked and cannot
# change anything when it is not.
_UNDERSTOOD = frozenset(
    {
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.ISSUER_ALTERNATIVE_NAME,
        ExtensionOID.NAME_CONSTRAINTS,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.CERTIFICATE_POLICIES,
        ExtensionOID.POLICY_MAPPINGS,
        ExtensionOID.POLICY_CONSTRAINTS,
        ExtensionOID.INHIBIT_ANY_POLICY,
        ExtensionOID.CRL_DISTRIBUTION_POINTS,
        ExtensionOID.FRESHEST_CRL,
    }
)

# Signature algorithms by key type. Verified by hand rather than with
# Certificate.verify_directly_issued_by, which compares issuer names byte for byte (RFC 5280 7.1
# wants them compared after string preparation) and refuses MD5 and SHA-1 (which
# allow_weak=True accepts, and which without it should be refused as "SHA-1", not "no chain").
_RSA_PKCS1_SIGNATURES = frozenset(
    {
        SignatureAlgorithmOID.RSA_WITH_MD5,
        SignatureAlgorithmOID.RSA_WITH_SHA1,
        ObjectIdentifier("1.3.14.3.2.29"),  # sha1WithRSASignature (OIW), seen on old roots
        SignatureAlgorithmOID.RSA_WITH_SHA224,
        SignatureAlgorithmOID.RSA_WITH_SHA256,
        SignatureAlgorithmOID.RSA_WITH_SHA384,
        SignatureAlgorithmOID.RSA_WITH_SHA512,
        SignatureAlgorithmOID.RSA_WITH_SHA3_224,
        SignatureAlgorithmOID.RSA_WITH_SHA3_256,
        SignatureAlgorithmOID.RSA_WITH_SHA3_384,
        SignatureAlgorithmOID.RSA_WITH_SHA3_512,
    }
)
_ECDSA_SIGNATURES = frozenset(
    {
        SignatureAlgorithmOID.ECDSA_WITH_SHA1,
        SignatureAlgorithmOID.ECDSA_WITH_SHA224,
        SignatureAlgorithmOID.ECDSA_WITH_SHA256,
        SignatureAlgorithmOID.ECDSA_WITH_SHA384,
        SignatureAlgorithmOID.ECDSA_WITH_SHA512,
        SignatureAlgorithmOID.ECDSA_WITH_SHA3_224,
        SignatureAlgorithmOID.ECDSA_WITH_SHA3_256,
        SignatureAlgorithmOID.ECDSA_WITH_SHA3_384,
        SignatureAlgorithmOID.ECDSA_WITH_SHA3_512,
    }
)
_DSA_SIGNATURES = frozenset(
    {
        SignatureAlgorithmOID.DSA_WITH_SHA1,
        SignatureAlgorithmOID.DSA_WITH_SHA224,
        SignatureAlgorithmOID.DSA_WITH_SHA256,
        SignatureAlgorithmOID.DSA_WITH_SHA384,
        SignatureAlgorithmOID.DSA_WITH_SHA512,
    }
)

_SMTP_UTF8_MAILBOX = ObjectIdentifier("1.3.6.1.5.5.7.8.9")  # RFC 9598

_Ext = TypeVar("_Ext", bound=x509.ExtensionType)
Signed = x509.Certificate | x509.CertificateRevocationList
NameKey = tuple[frozenset[tuple[str, str | bytes]], ...]


class KeyPurpose(enum.StrEnum):
    """What the leaf certificate's key is going to be used for."""

    SIGN = "sign"
    ENCRYPT = "encrypt"


@dataclass(frozen=True)
class ValidatedPath:
    """A certificate path that passed :func:`validate_path`, leaf first, trust anchor last.

    ``revocation_checked`` is True only when every certificate but the anchor was shown
    unrevoked by a current CRL; with ``RevocationCheck.IF_AVAILABLE`` a certificate no CRL
    covers is accepted and leaves it False. ``policies`` is the user-constrained policy set of
    RFC 5280 6.1.5 (g): the ``initial_policies`` this path is valid for (anyPolicy when it is
    valid for every policy; empty when no policy is valid, which ``require_explicit_policy``
    refuses).
    """

    certificates: tuple[x509.Certificate, ...]
    revocation_checked: bool = False
    policies: frozenset[ObjectIdentifier] = frozenset({ANY_POLICY})

    @property
    def leaf(self) -> x509.Certificate:
        return self.certificates[0]

    @property
    def anchor(self) -> x509.Certificate:
        return self.certificates[-1]


def validate_path(
    leaf: x509.Certificate,
    *,
    trust_anchors: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate] = (),
    at: dt.datetime | None = None,
    purpose: KeyPurpose = KeyPurpose.SIGN,
    allow_weak: bool = False,
    max_depth: int = 8,
    crls: Sequence[x509.CertificateRevocationList] = (),
    revocation: RevocationCheck = RevocationCheck.IF_AVAILABLE,
    initial_policies: Collection[ObjectIdentifier] = (ANY_POLICY,),
    require_explicit_policy: bool = False,
) -> ValidatedPath:
    """Find a path from ``leaf`` to one of ``trust_anchors`` that is valid for ``purpose``.

    Every candidate path is tried (several CAs may share a name and differ in key); the first
    that passes every check is returned. ``at`` defaults to now; a naive datetime is taken as
    UTC. ``max_depth`` bounds the path length in certificates, leaf and anchor included. A leaf
    that is itself a trust anchor is a path of length one.

    ``crls`` are checked as ``revocation`` says (see :class:`~securemail.policy.RevocationCheck`):
    a certificate listed on a CRL that is current at ``at``, correctly signed and in scope raises
    :class:`~securemail.errors.CertificateRevokedError`; with ``REQUIRED``, a certificate no such
    CRL covers raises :class:`~securemail.errors.UntrustedCertificateError`. The anchor's own
    revocation is never checked. ``initial_policies`` and ``require_explicit_policy`` are RFC
    5280's user-initial-policy-set and initial-explicit-policy.

    Raises :class:`~securemail.errors.UntrustedCertificateError` when no path exists (the reason
    names the missing issuer or the signature that does not verify); when paths exist but all
    fail, the error of the first one -- expired, not yet valid, usage, revoked, weak crypto --
    which is more useful than "untrusted".
    """
    if max_depth < 1:
        raise InputError(f"max_depth must be at least 1, not {max_depth}")
    anchors = tuple(trust_anchors)
    if not anchors:
        raise UntrustedCertificateError(_subject(leaf), "no trust anchors were given")
    policies = frozenset(initial_policies)
    if not policies:
        raise InputError("initial_policies must name at least one policy (or anyPolicy)")
    validator = _Validator(
        anchors=anchors,
        intermediates=tuple(intermediates),
        at=_as_utc(at),
        allow_weak=allow_weak,
        max_depth=max_depth,
        crls=tuple(crls),
        revocation=RevocationCheck(revocation),
    )
    return validator.validate(
        leaf, purpose, initial_policies=policies, require_explicit=require_explicit_policy
    )


def email_addresses(cert: x509.Certificate) -> tuple[str, ...]:
    """The certificate's email addresses: rfc822Name SANs, then the legacy subject emailAddress
    attribute (still the only place some CAs, e.g. NSS's, put it).

    The domain part is lowercased (domains are case-insensitive); the local part is kept as
    written. Duplicates are dropped, order is kept.
    """
    seen: dict[str, None] = {}
    for value in _raw_emails(cert):
        local, at_sign, domain = value.strip().rpartition("@")
        seen.setdefault(f"{local}@{domain.lower()}" if at_sign else value.strip(), None)
    return tuple(seen)


def matches_email(cert: x509.Certificate, address: str) -> bool:
    """Whether ``address`` (a bare addr-spec, ``user@example.com``) is one of the certificate's
    email addresses.

    Both parts compare case-insensitively. RFC 5321 makes the local part case-sensitive, but
    every S/MIME client (Thunderbird, Outlook, Apple Mail, OpenSSL's ``-checkemail``) compares
    it case-insensitively, CAs do not issue certificates that differ only in case, and being
    stricter would just reject ``Alice@`` vs ``alice@`` mismatches that users cannot fix.
    """
    wanted = address.strip().casefold()
    if "@" not in wanted:
        return False
    return any(candidate.casefold() == wanted for candidate in email_addresses(cert))


# --- one validation: paths, checks, revocation -------------------------------------------------


class _Validator:
    """What one :func:`validate_path` call knows. Also validates the paths of CRL signers for
    :mod:`securemail.smime.revocation`, which RFC 5280 6.3.3 (f) requires to end at the same
    trust anchor as the path whose revocation they vouch for."""

    def __init__(
        self,
        *,
        anchors: tuple[x509.Certificate, ...],
        intermediates: tuple[x509.Certificate, ...],
        at: dt.datetime,
        allow_weak: bool,
        max_depth: int,
        crls: tuple[x509.CertificateRevocationList, ...],
        revocation: RevocationCheck,
    ) -> None:
        from securemail.smime.revocation import RevocationChecker  # it imports this module

        self._anchors = anchors
        self._intermediates = intermediates
        self._at = at
        self._allow_weak = allow_weak
        self._max_depth = max_depth
        self._revocation = (
            None
            if revocation is RevocationCheck.OFF
            else RevocationChecker(
                crls,
                at=at,
                required=revocation is RevocationCheck.REQUIRED,
                allow_weak=allow_weak,
                certificates=(*anchors, *intermediates),
                signer_path=self._crl_signer_path,
            )
        )

    def validate(
        self,
        leaf: x509.Certificate,
        purpose: KeyPurpose | None,
        *,
        initial_policies: frozenset[ObjectIdentifier],
        require_explicit: bool,
        anchors: tuple[x509.Certificate, ...] | None = None,
    ) -> ValidatedPath:
        """``purpose=None`` validates a CRL signer: keyUsage cRLSign instead of a leaf purpose."""
        builder = _PathBuilder(anchors or self._anchors, self._intermediates, self._max_depth)
        first_error: CertificateError | None = None
        for path in builder.paths(leaf):
            try:
                _check_path(path, self._at, purpose, self._allow_weak)
                policies = _process_policies(path, initial_policies, require_explicit)
                covered = self._revocation.check(path) if self._revocation else False
            except CertificateError as exc:
                first_error = first_error or exc
                continue
            return ValidatedPath(certificates=path, revocation_checked=covered, policies=policies)
        raise first_error or builder.failure(leaf)

    def _crl_signer_path(
        self, signer: x509.Certificate, anchor: x509.Certificate
    ) -> tuple[x509.Certificate, ...]:
        path = self.validate(
            signer,
            None,
            initial_policies=frozenset({ANY_POLICY}),
            require_explicit=False,
            anchors=(anchor,),
        )
        return path.certificates


# --- path building ---------------------------------------------------------------------------


class _PathBuilder:
    """Depth-first search over candidate issuers; yields complete paths (leaf .. anchor) whose
    signatures verify, and remembers the most telling reason when a branch dies."""

    def __init__(
        self,
        anchors: tuple[x509.Certificate, ...],
        intermediates: tuple[x509.Certificate, ...],
        max_depth: int,
    ) -> None:
        self._anchors = frozenset(anchors)
        self._max_depth = max_depth
        self._by_subject: dict[NameKey, list[x509.Certificate]] = {}
        for cert in (*anchors, *intermediates):  # anchors first: shortest paths come first
            bucket = self._by_subject.setdefault(name_key(cert.subject), [])
            if cert not in bucket:
                bucket.append(cert)
        self._signatures: dict[tuple[x509.Certificate, x509.Certificate], str | None] = {}
        self._tried = 0
        self._failure: tuple[int, int, str] = (-1, 0, "")

    def paths(self, leaf: x509.Certificate) -> Iterator[tuple[x509.Certificate, ...]]:
        yield from self._extend([leaf], frozenset({_identity(leaf)}))

    def failure(self, leaf: x509.Certificate) -> UntrustedCertificateError:
        return UntrustedCertificateError(
            _subject(leaf), f"no chain to the given trust anchors; {self._failure[2]}"
        )

    def _extend(
        self, path: list[x509.Certificate], seen: frozenset[tuple[NameKey, bytes]]
    ) -> Iterator[tuple[x509.Certificate, ...]]:
        cert = path[-1]
        if cert in self._anchors:
            yield tuple(path)
            return
        if len(path) >= self._max_depth:
            self._note(1, path, f"a path longer than max_depth={self._max_depth} would be needed")
            return
        found = False
        for issuer in self._candidates(cert):
            identity = _identity(issuer)
            if identity in seen:  # same name and key already in the path: a loop
                continue
            found = True
            self._tried += 1
            if self._tried > _MAX_CANDIDATES:
                raise UntrustedCertificateError(
                    _subject(path[0]),
                    f"gave up building a path after {_MAX_CANDIDATES} candidate issuers "
                    "(too many certificates with the same names)",
                )
            problem = self._signature_problem(cert, issuer)
            if problem is not None:
                self._note(2, path, problem)
                continue
            yield from self._extend([*path, issuer], seen | {identity})
        if not found:
            if _self_issued(cert):
                reason = f"{_subject(cert)!r} is self-signed and is not one of the trust anchors"
            else:
                needed = "" if len(path) == 1 else f" (issuer of {_subject(cert)!r})"
                reason = (
                    f"issuer {cert.issuer.rfc4514_string()!r}{needed} not found; pass it in "
                    "intermediates or trust_anchors"
                )
            self._note(0, path, reason)

    def _candidates(self, cert: x509.Certificate) -> list[x509.Certificate]:
        """Certificates named as ``cert``'s issuer. Key identifiers only order them (matching
        first, mismatching last): they are hints, and the signature decides."""
        wanted = _authority_key_id(cert)

        def rank(candidate: x509.Certificate) -> int:
            have = _subject_key_id(candidate)
            if wanted is None or have is None:
                return 1
            return 0 if have == wanted else 2

        return sorted(self._by_subject.get(name_key(cert.issuer), ()), key=rank)

    def _signature_problem(self, cert: x509.Certificate, issuer: x509.Certificate) -> str | None:
        key = (cert, issuer)
        if key not in self._signatures:
            self._signatures[key] = signature_problem(cert, issuer)
        return self._signatures[key]

    def _note(self, rank: int, path: list[x509.Certificate], reason: str) -> None:
        """Keep the most telling failure: a bad signature beats a too-long path beats a missing
        issuer; among equals, the one that got furthest; among those, the first."""
        if (rank, len(path)) > self._failure[:2]:
            self._failure = (rank, len(path), reason)


# --- signatures (certificates and CRLs) ------------------------------------------------------


def signature_problem(signed: Signed, issuer: x509.Certificate) -> str | None:
    """None when ``issuer``'s key verifies the signature on ``signed`` (a certificate or a CRL),
    else why not. Shared with :mod:`securemail.smime.revocation`."""
    try:
        verify_signature(signed, issuer.public_key())
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # ValueError/TypeError: key type and algorithm differ, or an algorithm nobody verifies.
        detail = f" ({exc})" if str(exc) else ""
        what = repr(_subject(signed)) if isinstance(signed, x509.Certificate) else "the CRL"
        return (
            f"the signature on {what} does not verify with the key of {_subject(issuer)!r}{detail}"
        )
    return None


def verify_signature(signed: Signed, key: object) -> None:
    """Verify the signature on a certificate or CRL with ``key``, for every algorithm the
    signature's AlgorithmIdentifier and the key's type agree on -- MD5 and SHA-1 included
    (whether those are acceptable is decided by the caller). Issuer names are not compared:
    path building does that, with RFC 5280 name matching.

    Raises InvalidSignature, or TypeError/ValueError/UnsupportedAlgorithm when key and
    algorithm do not fit.
    """
    if isinstance(signed, x509.Certificate):
        data = signed.tbs_certificate_bytes
    else:
        data = signed.tbs_certlist_bytes
    oid, signature = signed.signature_algorithm_oid, signed.signature
    if isinstance(key, ed25519.Ed25519PublicKey) and oid == SignatureAlgorithmOID.ED25519:
        key.verify(signature, data)
        return
    if isinstance(key, ed448.Ed448PublicKey) and oid == SignatureAlgorithmOID.ED448:
        key.verify(signature, data)
        return
    digest = signed.signature_hash_algorithm
    if digest is None:
        raise TypeError("the signature algorithm does not fit the issuer's key")
    if isinstance(key, rsa.RSAPublicKey) and oid in _RSA_PKCS1_SIGNATURES:
        key.verify(signature, data, padding.PKCS1v15(), digest)
    elif isinstance(key, rsa.RSAPublicKey) and oid == SignatureAlgorithmOID.RSASSA_PSS:
        pss = signed.signature_algorithm_parameters
        if not isinstance(pss, padding.PSS):
            raise TypeError("malformed RSASSA-PSS parameters")
        key.verify(signature, data, pss, digest)
    elif isinstance(key, ec.EllipticCurvePublicKey) and oid in _ECDSA_SIGNATURES:
        key.verify(signature, data, ec.ECDSA(digest))
    elif isinstance(key, dsa.DSAPublicKey) and oid in _DSA_SIGNATURES:
        key.verify(signature, data, digest)
    else:
        raise TypeError("the signature algorithm does not fit the issuer's key")


def weak_signature(signed: Signed) -> str | None:
    """Why the signature algorithm of a certificate or CRL is too weak, or None."""
    if signed.signature_algorithm_oid in _DSA_SIGNATURES:
        return "its signature uses DSA, which is too weak"
    try:
        digest = signed.signature_hash_algorithm
    except UnsupportedAlgorithm:  # MD2, MD4, ...: nothing verifies those, the check fails
        return None
    if isinstance(digest, hashes.MD5 | hashes.SHA1):
        weak = "MD5" if isinstance(digest, hashes.MD5) else "SHA-1"
        return f"its signature uses {weak}, which is too weak"
    return None


# --- checks on a complete path ----------------------------------------------------------------


def _check_path(
    path: tuple[x509.Certificate, ...],
    at: dt.datetime,
    purpose: KeyPurpose | None,
    allow_weak: bool,
) -> None:
    leaf = path[0]
    for cert in path:
        _check_validity(cert, leaf, at)
    for index, cert in enumerate(path):
        extensions = _extensions(cert, leaf)
        _check_critical(cert, leaf, extensions)
        eku = _get(extensions, x509.ExtendedKeyUsage)
        crl_signer = index == 0 and purpose is None  # EKUs name no purpose for CRL signing
        if eku is not None and not crl_signer and not _EMAIL_EKUS.intersection(eku):
            raise CertificateUsageError(
                _subject(cert),
                _in_path_of(
                    cert,
                    leaf,
                    "its extendedKeyUsage has neither emailProtection nor anyExtendedKeyUsage "
                    f"({', '.join(oid.dotted_string for oid in eku)})",
                ),
            )
        if not allow_weak:
            _check_strength(cert, leaf, signature_counts=index < len(path) - 1)
        if index > 0:
            _check_issuer(path, index, extensions)
    _check_name_constraints(path)
    extensions = _extensions(leaf, leaf)
    if purpose is None:
        _check_crl_signer(leaf, extensions)
    else:
        _check_leaf(leaf, extensions, purpose, directly_trusted=len(path) == 1)


def _check_validity(cert: x509.Certificate, leaf: x509.Certificate, at: dt.datetime) -> None:
    checked = f"validation time {at:%Y-%m-%d %H:%M:%S} UTC"
    if at < cert.not_valid_before_utc:
        raise CertificateNotYetValidError(
            _subject(cert),
            _in_path_of(
                cert,
                leaf,
                f"not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC ({checked})",
            ),
        )
    if at > cert.not_valid_after_utc:
        raise CertificateExpiredError(
            _subject(cert),
            _in_path_of(
                cert,
                leaf,
                f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC ({checked})",
            ),
        )


def _check_critical(
    cert: x509.Certificate, leaf: x509.Certificate, extensions: x509.Extensions
) -> None:
    for ext in extensions:
        if ext.critical and ext.oid not in _UNDERSTOOD:
            raise CertificateUsageError(
                _subject(cert),
                _in_path_of(
                    cert, leaf, f"it has an unknown critical extension ({ext.oid.dotted_string})"
                ),
            )


def _check_strength(cert: x509.Certificate, leaf: x509.Certificate, signature_counts: bool) -> None:
    """Refuse weak signatures and keys. The anchor's own signature does not count: nobody relies
    on it. Its key does, since it signs the next certificate."""
    reason = weak_signature(cert) if signature_counts else None
    reason = reason or _weak_key(cert)
    if reason is not None:
        raise UntrustedCertificateError(
            _subject(cert), _in_path_of(cert, leaf, f"{reason}; allow_weak=True accepts it")
        )


def _weak_key(cert: x509.Certificate) -> str | None:
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return None  # nothing can be verified with it; the leaf check names it
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        return f"its RSA key has {key.key_size} bits, which is too weak (minimum 2048)"
    if isinstance(key, dsa.DSAPublicKey):
        return "its key is DSA, which is too weak"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.key_size < 256:
        return f"its elliptic curve {key.curve.name} is too weak (minimum 256 bits)"
    return None


def _check_issuer(
    path: tuple[x509.Certificate, ...], index: int, extensions: x509.Extensions
) -> None:
    """CA rights of ``path[index]``. Its basicConstraints need not be critical (RFC 5280 says
    MUST, but NSS's test CA and others are not, and every client accepts them). A trust anchor
    without basicConstraints is accepted as given; one that has them is held to them."""
    cert, leaf = path[index], path[0]
    is_anchor = index == len(path) - 1

    def refuse(reason: str) -> CertificateUsageError:
        return CertificateUsageError(_subject(cert), _in_path_of(cert, leaf, reason))

    if cert.version is x509.Version.v1:
        if is_anchor:
            return
        raise refuse("a version 1 certificate may act as an issuer only when it is a trust anchor")
    constraints = _get(extensions, x509.BasicConstraints)
    if constraints is None and not is_anchor:
        raise refuse("it issues certificates but has no basicConstraints extension (cA=TRUE)")
    if constraints is not None and not constraints.ca:
        raise refuse("it issues certificates but its basicConstraints say cA=FALSE")
    if constraints is not None and constraints.path_length is not None:
        below = sum(1 for c in path[1:index] if not _self_issued(c))
        if below > constraints.path_length:
            raise refuse(
                f"its pathLenConstraint of {constraints.path_length} allows that many CA "
                f"certificates below it, but the path has {below}"
            )
    usage = _get(extensions, x509.KeyUsage)
    if usage is not None and not usage.key_cert_sign:
        raise refuse("it issues certificates but its keyUsage lacks keyCertSign")


def _check_leaf(
    leaf: x509.Certificate,
    extensions: x509.Extensions,
    purpose: KeyPurpose,
    directly_trusted: bool,
) -> None:
    subject = _subject(leaf)
    constraints = _get(extensions, x509.BasicConstraints)
    if constraints is not None and constraints.ca and not directly_trusted:
        raise CertificateUsageError(
            subject,
            "it is a CA certificate (cA=TRUE); a CA certificate is accepted for email only "
            "when it is itself a trust anchor",
        )
    try:
        key = leaf.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise CertificateUsageError(subject, f"its public key is not supported ({exc})") from exc
    usage = _get(extensions, x509.KeyUsage)
    if purpose is KeyPurpose.SIGN:
        if isinstance(key, x25519.X25519PublicKey | x448.X448PublicKey):
            raise CertificateUsageError(subject, "its key can only do key agreement, not sign")
        if usage is not None and not (usage.digital_signature or usage.content_commitment):
            raise CertificateUsageError(
                subject, "its keyUsage has neither digitalSignature nor nonRepudiation"
            )
        return
    if isinstance(key, rsa.RSAPublicKey):
        allowed, needed = usage is None or usage.key_encipherment, "keyEncipherment"
    elif isinstance(key, ec.EllipticCurvePublicKey | x25519.X25519PublicKey | x448.X448PublicKey):
        allowed, needed = usage is None or usage.key_agreement, "keyAgreement"
    else:
        raise CertificateUsageError(
            subject, f"its {_key_kind(key)} key cannot be used for encryption"
        )
    if not allowed:
        raise CertificateUsageError(
            subject, f"its keyUsage lacks {needed}, needed to encrypt to this key"
        )


def _check_crl_signer(signer: x509.Certificate, extensions: x509.Extensions) -> None:
    """RFC 5280 6.3.3 (f): a CRL issuer's keyUsage, if present, must allow cRLSign."""
    usage = _get(extensions, x509.KeyUsage)
    if usage is not None and not usage.crl_sign:
        raise CertificateUsageError(
            _subject(signer), "it signs CRLs but its keyUsage lacks cRLSign"
        )


# --- certificate policies (RFC 5280 6.1.2 - 6.1.5) -------------------------------------------


@dataclass(eq=False)
class _PolicyNode:
    """A node of the valid_policy_tree; qualifiers are not kept (nobody asks for them)."""

    policy: ObjectIdentifier
    expected: frozenset[ObjectIdentifier]
    parent: _PolicyNode | None


_PolicyTree = list[list[_PolicyNode]]  # nodes by depth; None stands for the NULL tree


def _process_policies(
    path: tuple[x509.Certificate, ...],
    initial: frozenset[ObjectIdentifier],
    require_explicit: bool,
) -> frozenset[ObjectIdentifier]:
    """Run RFC 5280's policy processing over ``path`` (leaf first, as everywhere here) and
    return the user-constrained policy set; raise when explicit policy is required and none is
    valid, or when a policy mapping involves anyPolicy."""
    leaf = path[0]
    certs = list(reversed(path[:-1]))  # certificate 1 (issued by the anchor) .. n (the leaf)
    n = len(certs)
    if n == 0:
        return initial
    explicit = 0 if require_explicit else n + 1
    inhibit_any = n + 1
    mapping = n + 1
    tree: _PolicyTree | None = [[_PolicyNode(ANY_POLICY, frozenset({ANY_POLICY}), None)]]
    demanded_by = "the caller (require_explicit_policy)"
    lost: tuple[x509.Certificate, str] = (leaf, "")  # where the tree became NULL, and why

    def refuse(cert: x509.Certificate, reason: str) -> CertificateUsageError:
        return CertificateUsageError(_subject(cert), _in_path_of(cert, leaf, reason))

    def no_explicit_policy() -> CertificateUsageError:
        cert, why = lost
        return refuse(cert, f"{demanded_by} requires an explicit certificate policy, but {why}")

    for i, cert in enumerate(certs, start=1):
        extensions = _extensions(cert, leaf)
        policies = _get(extensions, x509.CertificatePolicies)
        self_issued = _self_issued(cert)
        if tree is not None:
            allow_any = inhibit_any > 0 or (i < n and self_issued)
            tree = None if policies is None else _add_policy_level(tree, policies, allow_any)
            if tree is None:
                lost = (cert, "it has no certificatePolicies extension")
                if policies is not None:
                    lost = (cert, "none of its certificate policies is valid for the path")
            elif len(tree[-1]) > _MAX_POLICY_NODES:
                raise refuse(cert, "its certificate policies make the policy tree too large")
        if explicit == 0 and tree is None:
            raise no_explicit_policy()
        if i == n:
            break
        mappings = _policy_mappings(cert, leaf, extensions)
        if any(ANY_POLICY in pair for pair in mappings):
            raise refuse(cert, "its policyMappings map from or to anyPolicy (RFC 5280 6.1.4 (a))")
        if mappings and tree is not None:
            tree = _map_policies(tree, mappings, allowed=mapping > 0)
            if tree is None:
                lost = (cert, "policy mapping is inhibited and it maps every remaining policy")
        if not self_issued:
            explicit, mapping = max(explicit - 1, 0), max(mapping - 1, 0)
            inhibit_any = max(inhibit_any - 1, 0)
        constraints = _get(extensions, x509.PolicyConstraints)
        if constraints is not None:
            required = constraints.require_explicit_policy
            if required is not None and required < explicit:
                explicit, demanded_by = required, repr(_subject(cert))
            if constraints.inhibit_policy_mapping is not None:
                mapping = min(mapping, constraints.inhibit_policy_mapping)
        inhibit = _get(extensions, x509.InhibitAnyPolicy)
        if inhibit is not None:
            inhibit_any = min(inhibit_any, inhibit.skip_certs)
    explicit = max(explicit - 1, 0)
    constraints = _get(_extensions(leaf, leaf), x509.PolicyConstraints)
    if constraints is not None and constraints.require_explicit_policy == 0:
        explicit, demanded_by = 0, repr(_subject(leaf))
    result = _user_constrained(tree, initial)
    if explicit == 0 and not result:
        if tree is not None:
            wanted = ", ".join(sorted(p.dotted_string for p in initial))
            lost = (leaf, f"none of its policies is among the initial policies ({wanted})")
        raise no_explicit_policy()
    return result


def _add_policy_level(
    tree: _PolicyTree, policies: x509.CertificatePolicies, allow_any: bool
) -> _PolicyTree | None:
    """RFC 5280 6.1.3 (d): one level of children for the certificate's policies, then prune."""
    parents = tree[-1]
    level: list[_PolicyNode] = []
    has_any = False
    for info in policies:
        oid = info.policy_identifier
        if oid == ANY_POLICY:
            has_any = True
            continue
        matched = [p for p in parents if oid in p.expected]
        for parent in matched or [p for p in parents if p.policy == ANY_POLICY]:
            level.append(_PolicyNode(oid, frozenset({oid}), parent))
    if has_any and allow_any:
        for parent in parents:
            present = {node.policy for node in level if node.parent is parent}
            for oid in sorted(parent.expected - present, key=lambda o: o.dotted_string):
                level.append(_PolicyNode(oid, frozenset({oid}), parent))
    return _prune([*tree, level])


def _map_policies(
    tree: _PolicyTree, mappings: list[tuple[ObjectIdentifier, ObjectIdentifier]], allowed: bool
) -> _PolicyTree | None:
    """RFC 5280 6.1.4 (b): apply policyMappings to the deepest level of the tree."""
    equivalents: dict[ObjectIdentifier, set[ObjectIdentifier]] = {}
    for issuer_policy, subject_policy in mappings:
        equivalents.setdefault(issuer_policy, set()).add(subject_policy)
    level = tree[-1]
    if not allowed:
        return _prune([*tree[:-1], [node for node in level if node.policy not in equivalents]])
    any_node = next((node for node in level if node.policy == ANY_POLICY), None)
    for issuer_policy, subject_policies in equivalents.items():
        nodes = [node for node in level if node.policy == issuer_policy]
        for node in nodes:
            node.expected = frozenset(subject_policies)
        if not nodes and any_node is not None:
            level.append(_PolicyNode(issuer_policy, frozenset(subject_policies), any_node.parent))
    return tree


def _prune(tree: _PolicyTree) -> _PolicyTree | None:
    """Delete nodes above the deepest level that have no children; None when nothing is left."""
    for depth in range(len(tree) - 2, -1, -1):
        with_children = {id(node.parent) for node in tree[depth + 1]}
        tree[depth] = [node for node in tree[depth] if id(node) in with_children]
    return tree if tree[-1] else None


def _user_constrained(
    tree: _PolicyTree | None, initial: frozenset[ObjectIdentifier]
) -> frozenset[ObjectIdentifier]:
    """RFC 5280 6.1.5 (g), expressed in the anchor's policy domain: each leaf node stands for
    the first policy below anyPolicy on its branch (the one the user-initial-policy-set is
    compared with), or anyPolicy when the whole branch is anyPolicy."""
    if tree is None:
        return frozenset()
    valid: set[ObjectIdentifier] = set()
    for node in tree[-1]:
        branch: list[_PolicyNode] = []
        current: _PolicyNode | None = node
        while current is not None:
            branch.append(current)
            current = current.parent
        valid.add(next((n.policy for n in reversed(branch) if n.policy != ANY_POLICY), ANY_POLICY))
    if ANY_POLICY in initial:
        return frozenset(valid)
    if ANY_POLICY in valid:
        return initial
    return frozenset(valid & initial)


def _policy_mappings(
    cert: x509.Certificate, leaf: x509.Certificate, extensions: x509.Extensions
) -> list[tuple[ObjectIdentifier, ObjectIdentifier]]:
    """policyMappings (cryptography does not parse this extension, asn1crypto does)."""
    try:
        raw = extensions.get_extension_for_oid(ExtensionOID.POLICY_MAPPINGS).value
    except x509.ExtensionNotFound:
        return []
    try:
        assert isinstance(raw, x509.UnrecognizedExtension)
        parsed = asn1_x509.PolicyMappings.load(raw.value, strict=True)
        return [
            (
                ObjectIdentifier(pair["issuer_domain_policy"].dotted),
                ObjectIdentifier(pair["subject_domain_policy"].dotted),
            )
            for pair in parsed
        ]
    except (AssertionError, ValueError, TypeError) as exc:
        raise UntrustedCertificateError(
            _subject(cert), _in_path_of(cert, leaf, "its policyMappings cannot be parsed")
        ) from exc


# --- name constraints (RFC 5280 4.2.1.10) --------------------------------------------------


def _check_name_constraints(path: tuple[x509.Certificate, ...]) -> None:
    """Every CA's constraints apply to every certificate below it, except self-issued CA
    certificates (key rollover), as RFC 5280 6.1.3 (b) says. Checking each CA on its own gives
    the intersection of their subtrees that RFC 5280 6.1.4 (g) computes."""
    leaf = path[0]
    for index in range(1, len(path)):
        constraints = _get(_extensions(path[index], leaf), x509.NameConstraints)
        if constraints is None:
            continue
        for below in range(index):
            if below > 0 and _self_issued(path[below]):
                continue
            _apply_name_constraints(constraints, path[index], path[below])


def _dns_within(host: str, tree: str) -> bool | None:
    """A dNSName subtree ``example.com`` holds the host and every host below it; ``.example.com``
    (a common extension) only the hosts below it. None when ``host`` is empty."""
    host, tree = host.rstrip(".").casefold(), tree.rstrip(".").casefold()
    if not host:
        return None
    if not tree:
        return True
    if tree.startswith("."):
        return host.endswith(tree)
    return host == tree or host.endswith("." + tree)


def _uri_within(uri: str, tree: str) -> bool | None:
    """A URI subtree names a host (RFC 5280): ``host`` exactly, ``.domain`` any host below it.
    None when the URI has no host (``urn:``, ``mailto:``), which cannot be checked."""
    try:
        host = urlsplit(uri).hostname
    except ValueError:
        return None
    if not host:
        return None
    tree = tree.casefold()
    return host.endswith(tree) if tree.startswith(".") else host == tree


def _ip_within(address: object, tree: object) -> bool | None:
    if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return None  # a network in a SAN is malformed
    if not isinstance(tree, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return None
    return address.version == tree.version and address in tree


def _apply_name_constraints(
    constraints: x509.NameConstraints, ca: x509.Certificate, cert: x509.Certificate
) -> None:
    permitted = list(constraints.permitted_subtrees or ())
    excluded = list(constraints.excluded_subtrees or ())
    subject = _subject(cert)

    def refuse(reason: str) -> CertificateUsageError:
        return CertificateUsageError(subject, f"{reason} (name constraints of {_subject(ca)!r})")

    def check(
        kind: type[x509.GeneralName], shown: str, within: Callable[[Any], bool | None]
    ) -> None:
        """Constraints of ``kind`` only apply to names of that form. ``within`` answers None
        for a name it cannot evaluate, which fails both ways."""
        trees_in = [t.value for t in permitted if isinstance(t, kind)]
        trees_out = [t.value for t in excluded if isinstance(t, kind)]
        if trees_in and not any(within(tree) for tree in trees_in):
            raise refuse(f"{shown} is outside the permitted subtrees")
        if any(within(tree) is not False for tree in trees_out):
            raise refuse(f"{shown} is in an excluded subtree")

    san = _get(_extensions(cert, cert), x509.SubjectAlternativeName)
    for name in san or ():
        if isinstance(name, x509.DNSName):
            check(x509.DNSName, f"DNS name {name.value!r}", partial(_dns_within, name.value))
        elif isinstance(name, x509.UniformResourceIdentifier):
            shown = f"URI {name.value!r}"
            check(x509.UniformResourceIdentifier, shown, partial(_uri_within, name.value))
        elif isinstance(name, x509.IPAddress):
            check(x509.IPAddress, f"IP address {name.value}", partial(_ip_within, name.value))
        elif not isinstance(name, x509.RFC822Name | x509.DirectoryName):
            constrained = {type(name)}
            if isinstance(name, x509.OtherName) and name.type_id == _SMTP_UTF8_MAILBOX:
                constrained.add(x509.RFC822Name)  # RFC 9598 section 6
            if any(type(tree) in constrained for tree in (*permitted, *excluded)):
                raise refuse(f"it has a {type(name).__name__} that securemail cannot check")
    for address in _raw_emails(cert):
        shown = f"email address {address!r}"
        check(x509.RFC822Name, shown, partial(_mailbox_within, address))
    names = [n.value for n in (san or ()) if isinstance(n, x509.DirectoryName)]
    if len(cert.subject) > 0:
        names.insert(0, cert.subject)
    for dn in names:
        shown = f"name {dn.rfc4514_string()!r}"
        check(x509.DirectoryName, shown, partial(_name_within, dn))


def _mailbox_within(address: str, tree: str) -> bool | None:
    """Whether a mailbox lies in an rfc822Name subtree: a full mailbox matches itself, ``host``
    every mailbox at exactly that host, ``.domain`` every mailbox at a host below it. None when
    ``address`` is not a mailbox at all (callers treat that as failing both ways)."""
    local, at_sign, host = address.rpartition("@")
    if not at_sign or not local or not host:
        return None
    tree = tree.casefold()
    if "@" in tree:
        return address.casefold() == tree  # local part case-insensitive, see matches_email
    host = host.casefold()
    return host.endswith(tree) if tree.startswith(".") else host == tree


def _name_within(name: x509.Name, tree: x509.Name) -> bool:
    """Whether ``tree``'s RDNs are a prefix of ``name``'s, compared as RFC 5280 7.1 says."""
    if len(tree.rdns) > len(name.rdns):
        return False
    return name_key(name)[: len(tree.rdns)] == name_key(tree)


# --- names (RFC 5280 7.1, RFC 4518) ----------------------------------------------------------


@lru_cache(maxsize=4096)
def name_key(name: x509.Name) -> NameKey:
    """A comparison key for a distinguished name: RDNs in order, each an unordered set of
    (attribute type, value) with string values prepared as RFC 4518 says for caseIgnoreMatch --
    Unicode NFKC, case folded, leading and trailing spaces dropped and inner runs of white space
    made one space. PrintableString, UTF8String, BMPString etc. of the same text compare equal.
    Shared with :mod:`securemail.smime.revocation`."""
    return tuple(
        frozenset((attribute.oid.dotted_string, _prepare(attribute.value)) for attribute in rdn)
        for rdn in name.rdns
    )


def same_name(a: x509.Name, b: x509.Name) -> bool:
    """Whether two distinguished names match under RFC 5280 7.1."""
    return a == b or name_key(a) == name_key(b)


def _prepare(value: str | bytes) -> str | bytes:
    if isinstance(value, bytes):  # BIT STRING attributes (x500UniqueIdentifier) compare as is
        return value
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", value).casefold())
    return " ".join(folded.split())


# --- small helpers -------------------------------------------------------------------------


def _as_utc(at: dt.datetime | None) -> dt.datetime:
    if at is None:
        return dt.datetime.now(dt.UTC)
    if at.tzinfo is None:
        return at.replace(tzinfo=dt.UTC)
    return at.astimezone(dt.UTC)


def _key_kind(key: object) -> str:
    kinds = {
        ed25519.Ed25519PublicKey: "Ed25519",
        ed448.Ed448PublicKey: "Ed448",
        dsa.DSAPublicKey: "DSA",
    }
    return next((name for kind, name in kinds.items() if isinstance(key, kind)), "public")


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def _in_path_of(cert: x509.Certificate, leaf: x509.Certificate, reason: str) -> str:
    return reason if cert is leaf else f"{reason}; it is in the path of {_subject(leaf)!r}"


def _self_issued(cert: x509.Certificate) -> bool:
    return same_name(cert.subject, cert.issuer)


def _identity(cert: x509.Certificate) -> tuple[NameKey, bytes]:
    """Name and key: a path must not contain the same pair twice (RFC 4158 loop detection),
    even through different certificates such as a cross-certificate and a self-signed one."""
    try:
        key = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except (ValueError, UnsupportedAlgorithm):
        key = cert.public_bytes(serialization.Encoding.DER)
    return name_key(cert.subject), key


def _extensions(cert: x509.Certificate, leaf: x509.Certificate) -> x509.Extensions:
    try:
        return cert.extensions
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise UntrustedCertificateError(
            _subject(cert), _in_path_of(cert, leaf, f"its extensions cannot be parsed ({exc})")
        ) from exc


def _get(extensions: x509.Extensions, kind: type[_Ext]) -> _Ext | None:
    try:
        return extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _key_id(cert: x509.Certificate, kind: type[_Ext]) -> _Ext | None:
    try:
        return _get(cert.extensions, kind)
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        return None  # a hint only; the path check reports the broken extension


def _authority_key_id(cert: x509.Certificate) -> bytes | None:
    aki = _key_id(cert, x509.AuthorityKeyIdentifier)
    return aki.key_identifier if aki is not None else None


def _subject_key_id(cert: x509.Certificate) -> bytes | None:
    ski = _key_id(cert, x509.SubjectKeyIdentifier)
    return ski.digest if ski is not None else None


def _raw_emails(cert: x509.Certificate) -> list[str]:
    """rfc822Name SANs and subject emailAddress values as written in the certificate."""
    try:
        san = _get(cert.extensions, x509.SubjectAlternativeName)
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise MalformedASN1Error("certificate extensions", str(exc)) from exc
    found = list(san.get_values_for_type(x509.RFC822Name)) if san is not None else []
    for attribute in cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS):
        if isinstance(attribute.value, str):
            found.append(attribute.value)
    return found
