"""X.509 certificate path validation for S/MIME: a careful subset of RFC 5280 plus RFC 8550.

Why not ``cryptography.x509.verification``: that verifier implements the CA/Browser Forum web
PKI profile and refuses real S/MIME material -- Ed25519 CAs (the RFC 9216 sample PKI), CAs whose
basicConstraints is not marked critical (Mozilla NSS's test CA, accepted by every mail client)
and certificates without an authorityKeyIdentifier. certvalidator would need oscrypto, which we
do not use. So this module builds and checks paths itself on top of ``cryptography``'s
primitives.

What :func:`validate_path` checks, for every certificate from the leaf up to a trust anchor:

* the signature of each certificate by the next one (the anchor's own signature is not checked:
  an anchor is trusted because the caller says so, not because it signed itself);
* validity at the given time, the anchor included;
* CA rights of every issuer: basicConstraints cA=TRUE (critical or not), pathLenConstraint,
  keyUsage keyCertSign; a version 1 certificate may issue only as a trust anchor;
* extendedKeyUsage, where present on any certificate, allows emailProtection or anyExtendedKeyUsage
  (RFC 8550 4.4.4 for the leaf; OpenSSL, NSS and Windows apply it to CAs too);
* the leaf's keyUsage allows the purpose (signing, or key transport/agreement for encryption);
* rfc822Name and directoryName name constraints (RFC 5280 4.2.1.10); other name forms are refused
  whenever a certificate below the CA carries a name of that form (fail closed);
* no unknown critical extension;
* no weak cryptography unless ``allow_weak``: MD5/SHA-1/DSA signatures, RSA keys under 2048
  bits, DSA keys, elliptic curves under 256 bits.

Deliberately **not** checked: revocation (no CRL, no OCSP -- a revoked certificate validates;
:attr:`ValidatedPath.revocation_checked` says so), certificate policies (no policy tree: a path
is refused only when a CA demands explicit policies, which we cannot evaluate), and
internationalized mailbox names (SmtpUTF8Mailbox) under name constraints (refused).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

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

__all__ = ["KeyPurpose", "ValidatedPath", "email_addresses", "matches_email", "validate_path"]

# Upper bound on candidate issuers tried while building one path. Intermediates usually come
# from the message being verified, so an attacker can send many certificates that share a name
# and sign each other; without a bound, depth-first search over them is exponential.
_MAX_CANDIDATES = 1000

_EMAIL_EKUS = frozenset(
    {ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE}
)

# Critical extensions we act on, or whose meaning cannot change the outcome for our inputs
# (initial policy anyPolicy, no explicit policy required): RFC 5280 6.1 then accepts every path
# whatever certificatePolicies and inhibitAnyPolicy say. policyConstraints is handled apart.
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
        ExtensionOID.INHIBIT_ANY_POLICY,
    }
)

# Legacy signature algorithms that Certificate.verify_directly_issued_by no longer verifies;
# we verify them by hand so that allow_weak=True can accept them (and so that, without it, the
# refusal says "SHA-1" instead of "no chain").
_LEGACY_RSA = frozenset(
    {
        SignatureAlgorithmOID.RSA_WITH_MD5,
        SignatureAlgorithmOID.RSA_WITH_SHA1,
        ObjectIdentifier("1.3.14.3.2.29"),  # sha1WithRSASignature (OIW), seen on old roots
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


class KeyPurpose(enum.StrEnum):
    """What the leaf certificate's key is going to be used for."""

    SIGN = "sign"
    ENCRYPT = "encrypt"


@dataclass(frozen=True)
class ValidatedPath:
    """A certificate path that passed :func:`validate_path`, leaf first, trust anchor last.

    Revocation was **not** checked (no CRL or OCSP in this release): ``revocation_checked`` is
    False so that callers and reports can say so instead of implying a full check.
    """

    certificates: tuple[x509.Certificate, ...]
    revocation_checked: bool = False

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
) -> ValidatedPath:
    """Find a path from ``leaf`` to one of ``trust_anchors`` that is valid for ``purpose``.

    Every candidate path is tried (several CAs may share a name and differ in key); the first
    that passes every check is returned. ``at`` defaults to now; a naive datetime is taken as
    UTC. ``max_depth`` bounds the path length in certificates, leaf and anchor included. A leaf
    that is itself a trust anchor is a path of length one.

    Raises :class:`~securemail.errors.UntrustedCertificateError` when no path exists (the reason
    names the missing issuer or the signature that does not verify); when paths exist but all
    fail, the error of the first one -- expired, not yet valid, usage, weak crypto -- which is
    more useful than "untrusted".
    """
    if max_depth < 1:
        raise InputError(f"max_depth must be at least 1, not {max_depth}")
    anchors = tuple(trust_anchors)
    if not anchors:
        raise UntrustedCertificateError(_subject(leaf), "no trust anchors were given")
    when = _as_utc(at)
    builder = _PathBuilder(anchors, tuple(intermediates), max_depth)
    first_error: CertificateError | None = None
    for path in builder.paths(leaf):
        try:
            _check_path(path, when, purpose, allow_weak)
        except CertificateError as exc:
            first_error = first_error or exc
            continue
        return ValidatedPath(certificates=path)
    raise first_error or builder.failure(leaf)


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
        self._by_subject: dict[x509.Name, list[x509.Certificate]] = {}
        for cert in (*anchors, *intermediates):  # anchors first: shortest paths come first
            bucket = self._by_subject.setdefault(cert.subject, [])
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
        self, path: list[x509.Certificate], seen: frozenset[tuple[bytes, bytes]]
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

        return sorted(self._by_subject.get(cert.issuer, ()), key=rank)

    def _signature_problem(self, cert: x509.Certificate, issuer: x509.Certificate) -> str | None:
        key = (cert, issuer)
        if key not in self._signatures:
            self._signatures[key] = _signature_problem(cert, issuer)
        return self._signatures[key]

    def _note(self, rank: int, path: list[x509.Certificate], reason: str) -> None:
        """Keep the most telling failure: a bad signature beats a too-long path beats a missing
        issuer; among equals, the one that got furthest; among those, the first."""
        if (rank, len(path)) > self._failure[:2]:
            self._failure = (rank, len(path), reason)


def _signature_problem(cert: x509.Certificate, issuer: x509.Certificate) -> str | None:
    """None when ``issuer``'s key verifies ``cert``'s signature, else why not."""
    try:
        if _weak_hash(cert) is not None:
            _verify_legacy(cert, issuer)
        else:
            cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm) as exc:
        # ValueError/TypeError: key type and algorithm differ, or an algorithm nobody verifies.
        detail = f" ({exc})" if str(exc) else ""
        return (
            f"the signature on {_subject(cert)!r} does not verify with the key of "
            f"{_subject(issuer)!r}{detail}"
        )
    return None


def _verify_legacy(cert: x509.Certificate, issuer: x509.Certificate) -> None:
    """Verify an MD5 or SHA-1 signature by hand (verify_directly_issued_by refuses them)."""
    digest = cert.signature_hash_algorithm
    if digest is None:  # not reached: _weak_hash found MD5 or SHA-1
        raise TypeError("no digest algorithm")
    key = issuer.public_key()
    oid = cert.signature_algorithm_oid
    params = cert.signature_algorithm_parameters
    data, signature = cert.tbs_certificate_bytes, cert.signature
    if isinstance(key, rsa.RSAPublicKey) and oid in _LEGACY_RSA:
        key.verify(signature, data, padding.PKCS1v15(), digest)
    elif isinstance(key, rsa.RSAPublicKey) and isinstance(params, padding.PSS):
        key.verify(signature, data, params, digest)
    elif (
        isinstance(key, ec.EllipticCurvePublicKey) and oid == SignatureAlgorithmOID.ECDSA_WITH_SHA1
    ):
        key.verify(signature, data, ec.ECDSA(digest))
    elif isinstance(key, dsa.DSAPublicKey) and oid == SignatureAlgorithmOID.DSA_WITH_SHA1:
        key.verify(signature, data, digest)
    else:
        raise TypeError("the signature algorithm does not fit the issuer's key")


# --- checks on a complete path ----------------------------------------------------------------


def _check_path(
    path: tuple[x509.Certificate, ...], at: dt.datetime, purpose: KeyPurpose, allow_weak: bool
) -> None:
    leaf = path[0]
    for cert in path:
        _check_validity(cert, leaf, at)
    for index, cert in enumerate(path):
        extensions = _extensions(cert, leaf)
        _check_critical(cert, leaf, extensions)
        eku = _get(extensions, x509.ExtendedKeyUsage)
        if eku is not None and not _EMAIL_EKUS.intersection(eku):
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
    _check_leaf(leaf, _extensions(leaf, leaf), purpose, directly_trusted=len(path) == 1)


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
        if not ext.critical or ext.oid in _UNDERSTOOD:
            continue
        value = ext.value
        if isinstance(value, x509.PolicyConstraints) and value.require_explicit_policy is None:
            continue  # inhibitPolicyMapping alone cannot make a path fail without policy checks
        what = (
            "policyConstraints requiring explicit certificate policies, which securemail "
            "does not evaluate"
            if isinstance(value, x509.PolicyConstraints)
            else "an unknown critical extension"
        )
        raise CertificateUsageError(
            _subject(cert), _in_path_of(cert, leaf, f"it has {what} ({ext.oid.dotted_string})")
        )


def _check_strength(cert: x509.Certificate, leaf: x509.Certificate, signature_counts: bool) -> None:
    """Refuse weak signatures and keys. The anchor's own signature does not count: nobody relies
    on it. Its key does, since it signs the next certificate."""
    reason = _weak_signature(cert) if signature_counts else None
    reason = reason or _weak_key(cert)
    if reason is not None:
        raise UntrustedCertificateError(
            _subject(cert), _in_path_of(cert, leaf, f"{reason}; allow_weak=True accepts it")
        )


def _weak_signature(cert: x509.Certificate) -> str | None:
    if cert.signature_algorithm_oid in _DSA_SIGNATURES:
        return "its signature uses DSA, which is too weak"
    weak = _weak_hash(cert)
    return f"its signature uses {weak}, which is too weak" if weak else None


def _weak_hash(cert: x509.Certificate) -> str | None:
    try:
        digest = cert.signature_hash_algorithm
    except UnsupportedAlgorithm:  # MD2, MD4, ...: nothing verifies those, the path fails
        return None
    if isinstance(digest, hashes.MD5 | hashes.SHA1):
        return "MD5" if isinstance(digest, hashes.MD5) else "SHA-1"
    return None


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


def _apply_name_constraints(
    constraints: x509.NameConstraints, ca: x509.Certificate, cert: x509.Certificate
) -> None:
    permitted = list(constraints.permitted_subtrees or ())
    excluded = list(constraints.excluded_subtrees or ())
    subject = _subject(cert)

    def refuse(reason: str) -> CertificateUsageError:
        return CertificateUsageError(subject, f"{reason} (name constraints of {_subject(ca)!r})")

    san = _get(_extensions(cert, cert), x509.SubjectAlternativeName)
    others = [
        name for name in (san or ()) if not isinstance(name, x509.RFC822Name | x509.DirectoryName)
    ]
    for name in others:
        constrained = {type(name)}
        if isinstance(name, x509.OtherName) and name.type_id == _SMTP_UTF8_MAILBOX:
            constrained.add(x509.RFC822Name)  # RFC 9598 section 6
        if any(type(tree) in constrained for tree in (*permitted, *excluded)):
            raise refuse(f"it has a {type(name).__name__} that securemail cannot check")

    def mailbox_check(address: str) -> None:
        trees_in = [t.value for t in permitted if isinstance(t, x509.RFC822Name)]
        trees_out = [t.value for t in excluded if isinstance(t, x509.RFC822Name)]
        if not trees_in and not trees_out:
            return
        if trees_in and not any(_mailbox_within(address, tree) for tree in trees_in):
            raise refuse(f"email address {address!r} is outside the permitted subtrees")
        if any(_mailbox_within(address, tree) is not False for tree in trees_out):
            raise refuse(f"email address {address!r} is in an excluded subtree")

    def name_check(name: x509.Name) -> None:
        trees_in = [t.value for t in permitted if isinstance(t, x509.DirectoryName)]
        trees_out = [t.value for t in excluded if isinstance(t, x509.DirectoryName)]
        if trees_in and not any(_name_within(name, tree) for tree in trees_in):
            raise refuse(f"name {name.rfc4514_string()!r} is outside the permitted subtrees")
        if any(_name_within(name, tree) for tree in trees_out):
            raise refuse(f"name {name.rfc4514_string()!r} is in an excluded subtree")

    for address in _raw_emails(cert):
        mailbox_check(address)
    names = [n.value for n in (san or ()) if isinstance(n, x509.DirectoryName)]
    if len(cert.subject) > 0:
        names.insert(0, cert.subject)
    for name in names:
        name_check(name)


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
    """Whether ``tree``'s RDNs are a prefix of ``name``'s, comparing attribute values without
    case and with whitespace collapsed (the gist of RFC 5280 7.1's LDAP StringPrep)."""
    if len(tree.rdns) > len(name.rdns):
        return False
    return all(_rdn_key(a) == _rdn_key(b) for a, b in zip(name.rdns, tree.rdns, strict=False))


def _rdn_key(rdn: x509.RelativeDistinguishedName) -> list[tuple[str, str | bytes]]:
    return sorted(
        (
            attribute.oid.dotted_string,
            " ".join(attribute.value.split()).casefold()
            if isinstance(attribute.value, str)
            else attribute.value,
        )
        for attribute in rdn
    )


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
    return cert.subject == cert.issuer


def _identity(cert: x509.Certificate) -> tuple[bytes, bytes]:
    """Name and key: a path must not contain the same pair twice (RFC 4158 loop detection),
    even through different certificates such as a cross-certificate and a self-signed one."""
    try:
        key = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except (ValueError, UnsupportedAlgorithm):
        key = cert.public_bytes(serialization.Encoding.DER)
    return cert.subject.public_bytes(), key


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
