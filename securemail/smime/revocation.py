"""Certificate revocation from CRLs during path validation: RFC 5280 section 6.3, a sound subset.

:func:`securemail.smime.validation.validate_path` hands every path that passed its other checks
to a :class:`RevocationChecker`, which decides for each certificate but the trust anchor:

* **revoked** -- an entry for it (issuer and serial number) is on a usable CRL in scope for it,
  or on a delta CRL that applies to one, and is not a ``removeFromCRL`` entry: refused with
  :class:`~securemail.errors.CertificateRevokedError`;
* **unrevoked** -- usable CRLs in scope for it cover every reason code between them;
* **not covered** otherwise: accepted under ``RevocationCheck.IF_AVAILABLE``, refused under
  ``REQUIRED`` with an :class:`~securemail.errors.UntrustedCertificateError` that says why the
  CRLs at hand did not do.

A CRL is *usable* when it is current at the validation time (thisUpdate <= at <= nextUpdate,
nextUpdate optional), has no critical CRL or entry extension we do not process, is not signed
with weak cryptography (unless ``allow_weak``), and its signature verifies with the key of a
certificate that has the CRL issuer's name, keyUsage cRLSign (if it has keyUsage), and a valid
path -- revocation included -- to the same trust anchor (6.3.3 (f)). That signer is the
certificate's issuer when it is in the path, else another certificate found among those given
(separate CRL-signing keys, self-issued CRL-signing certificates, indirect CRL issuers).

A CRL is *in scope* for a certificate as RFC 5280 6.3.3 (b) says, per distribution point of the
certificate and then for a default one named after the certificate's issuer: the CRL issuer is
the certificate's issuer, or one of the point's cRLIssuer names when the CRL is indirect; the
issuingDistributionPoint's name, onlyContainsUserCerts/CACerts/AttributeCerts and onlySomeReasons
are honoured. Entries of indirect CRLs are attributed through certificateIssuer extensions.
Delta CRLs (5.2.4) are applied to a complete CRL with the same issuer, scope and signer when
the complete CRL's number is at least the delta's base and below the delta's own number; a delta
CRL alone never covers anything.

Stricter than RFC 5280 on purpose: every usable CRL in scope is searched for the certificate,
not just enough of them to cover all reasons, so an older current CRL that lists it still
counts. Not done: fetching CRLs (callers pass them), OCSP, and CRLs for attribute certificates.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import CRLEntryExtensionOID, ExtensionOID, ObjectIdentifier

from securemail.errors import (
    CertificateError,
    CertificateRevokedError,
    UntrustedCertificateError,
)
from securemail.smime.validation import (
    NameKey,
    name_key,
    same_name,
    signature_problem,
    weak_signature,
)

__all__ = ["ALL_REASONS", "RevocationChecker"]

ALL_REASONS = frozenset(
    {
        x509.ReasonFlags.key_compromise,
        x509.ReasonFlags.ca_compromise,
        x509.ReasonFlags.affiliation_changed,
        x509.ReasonFlags.superseded,
        x509.ReasonFlags.cessation_of_operation,
        x509.ReasonFlags.certificate_hold,
        x509.ReasonFlags.privilege_withdrawn,
        x509.ReasonFlags.aa_compromise,
    }
)
"""The reasons a set of CRLs must cover between them (RFC 5280 6.3.2 "all-reasons")."""

# CRL and CRL entry extensions we process (or that cannot change a verdict); a CRL with another
# critical one must not be used at all (RFC 5280 5.2 and 5.3).
_CRL_EXTENSIONS = frozenset(
    {
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.ISSUER_ALTERNATIVE_NAME,
        ExtensionOID.CRL_NUMBER,
        ExtensionOID.DELTA_CRL_INDICATOR,
        ExtensionOID.ISSUING_DISTRIBUTION_POINT,
        ExtensionOID.FRESHEST_CRL,
        ExtensionOID.AUTHORITY_INFORMATION_ACCESS,
    }
)
_ENTRY_EXTENSIONS = frozenset(
    {
        CRLEntryExtensionOID.CRL_REASON,
        CRLEntryExtensionOID.INVALIDITY_DATE,
        CRLEntryExtensionOID.CERTIFICATE_ISSUER,
        ObjectIdentifier("2.5.29.23"),  # holdInstructionCode: informational
    }
)

# Upper bounds on CRL signer paths validated for one validate_path call, in all and nested (a
# signer whose CRL signer needs a path of its own, ...): each is a full path validation, and
# the CRLs come from the message being verified.
_MAX_SIGNER_PATHS = 64
_MAX_SIGNER_NESTING = 4

_Ext = TypeVar("_Ext", bound=x509.ExtensionType)
CRL = x509.CertificateRevocationList
SignerPath = Callable[[x509.Certificate, x509.Certificate], tuple[x509.Certificate, ...]]
"""Validates a CRL signer's certificate up to the given trust anchor, or raises."""


class RevocationChecker:
    """Revocation status from a fixed set of CRLs at a fixed time, for the paths of one
    :func:`~securemail.smime.validation.validate_path` call.

    ``certificates`` are where CRL signers are looked for (anchors and intermediates);
    ``signer_path`` validates one of them, revocation included, which may come back here
    (a loop is cut: a certificate whose status is being determined is not covered by it).
    """

    def __init__(
        self,
        crls: Sequence[CRL],
        *,
        at: dt.datetime,
        required: bool,
        allow_weak: bool,
        certificates: Sequence[x509.Certificate],
        signer_path: SignerPath,
    ) -> None:
        self._at = at
        self._required = required
        self._allow_weak = allow_weak
        self._signer_path = signer_path
        self._complete: dict[NameKey, list[CRL]] = {}
        self._deltas: dict[NameKey, list[CRL]] = {}
        self._unparsable = 0
        for crl in crls:
            try:
                delta = _crl_extension(crl, x509.DeltaCRLIndicator) is not None
                key = name_key(crl.issuer)
            except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
                self._unparsable += 1
                continue
            bucket = (self._deltas if delta else self._complete).setdefault(key, [])
            if crl not in bucket:
                bucket.append(crl)
        for bucket in self._complete.values():
            bucket.sort(key=lambda crl: crl.last_update_utc, reverse=True)  # newest first
        self._by_subject: dict[NameKey, list[x509.Certificate]] = {}
        for cert in certificates:
            self._by_subject.setdefault(name_key(cert.subject), []).append(cert)
        self._problems: dict[int, str | None] = {}  # id(crl) -> why it is unusable
        self._signatures: dict[tuple[int, x509.Certificate], str | None] = {}
        self._valid_signers: set[tuple[x509.Certificate, x509.Certificate]] = set()
        self._signer_paths = 0
        self._nesting = 0
        self._unrevoked: set[tuple[x509.Certificate, x509.Certificate]] = set()
        self._active: set[tuple[x509.Certificate, x509.Certificate]] = set()

    def check(self, path: tuple[x509.Certificate, ...]) -> bool:
        """Check every certificate of ``path`` (leaf first) but the anchor, from the top down.

        True when all were shown unrevoked; False when some were not covered (and that is
        acceptable). Raises CertificateRevokedError, or UntrustedCertificateError for a
        certificate not covered when coverage is required.
        """
        covered = True
        for index in range(len(path) - 2, -1, -1):
            cert = path[index]
            gap = self._status(path, index)
            if gap is None:
                continue
            covered = False
            if self._required:
                raise UntrustedCertificateError(
                    _subject(cert),
                    _in_path_of(
                        cert,
                        path[0],
                        f"no current CRL from {cert.issuer.rfc4514_string()!r} covers "
                        f"{_subject(cert)!r} ({gap}); pass a current CRL from its issuer in "
                        "crls, or accept certificates no CRL covers with "
                        "RevocationCheck.IF_AVAILABLE",
                    ),
                )
        return covered

    # --- one certificate -------------------------------------------------------------------

    def _status(self, path: tuple[x509.Certificate, ...], index: int) -> str | None:
        """None when ``path[index]`` is shown unrevoked, else why it is not covered."""
        key = (path[index], path[-1])
        if key in self._unrevoked:
            return None
        if key in self._active:
            return "the only CRLs for it are vouched for by a signer whose status depends on it"
        self._active.add(key)
        try:
            gap = self._determine(path, index)
        finally:
            self._active.discard(key)
        if gap is None:
            self._unrevoked.add(key)
        return gap

    def _determine(self, path: tuple[x509.Certificate, ...], index: int) -> str | None:
        cert = path[index]
        covered: frozenset[x509.ReasonFlags] = frozenset()
        notes: dict[str, None] = {}
        seen: set[int] = set()
        for point in _distribution_points(cert):
            for crl in self._crls_for(point, cert):
                reasons = _scope(crl, point, cert)
                if isinstance(reasons, str):
                    notes.setdefault(f"{_crl_name(crl)}: {reasons}", None)
                    continue
                if id(crl) in seen and reasons <= covered:
                    continue  # already searched, and this point adds no reasons
                vouches = _names_itself(point, cert)
                problem = self._problem(crl) or self._signer_problem(crl, path, index, vouches)
                if problem is not None:
                    notes.setdefault(f"{_crl_name(crl)}: {problem}", None)
                    continue
                if id(crl) not in seen:
                    seen.add(id(crl))
                    self._search(crl, path, index)
                covered |= reasons
        if covered >= ALL_REASONS:
            return None
        if not notes and not seen:
            return "no CRL from its issuer was given" + (
                f"; {self._unparsable} given CRL(s) could not be parsed" if self._unparsable else ""
            )
        if covered:
            missing = ", ".join(sorted(reason.value for reason in ALL_REASONS - covered))
            notes.setdefault(f"the usable CRLs do not cover the reasons {missing}", None)
        return "; ".join(notes)

    def _crls_for(self, point: x509.DistributionPoint, cert: x509.Certificate) -> Iterator[CRL]:
        """Complete CRLs whose issuer could be in scope: a cRLIssuer of the point, else the
        certificate's issuer."""
        if point.crl_issuer:
            issuers = [
                name.value for name in point.crl_issuer if isinstance(name, x509.DirectoryName)
            ]
        else:
            issuers = [cert.issuer]
        for issuer in issuers:
            yield from self._complete.get(name_key(issuer), ())

    def _search(self, crl: CRL, path: tuple[x509.Certificate, ...], index: int) -> None:
        """RFC 5280 6.3.3 (i)-(k): the delta CRL first, then the complete one."""
        cert = path[index]
        delta = self._delta_for(crl, path, index)
        entry = _entry(delta, cert) if delta is not None else None
        source = delta
        if entry is None:
            entry, source = _entry(crl, cert), crl
        if entry is None or source is None:
            return
        reason = _reason(entry)
        if reason is x509.ReasonFlags.remove_from_crl:
            return
        raise CertificateRevokedError(
            _subject(cert),
            _in_path_of(
                cert,
                path[0],
                f"revoked on {entry.revocation_date_utc:%Y-%m-%d} (reason: {reason.value}) "
                f"according to {_crl_name(source)}",
            ),
            revocation_reason=reason.value,
        )

    # --- CRLs ----------------------------------------------------------------------------------

    def _problem(self, crl: CRL) -> str | None:
        """Why ``crl`` cannot be used at all (cached), or None."""
        key = id(crl)
        if key not in self._problems:
            self._problems[key] = _crl_problem(crl, self._at, self._allow_weak)
        return self._problems[key]

    def _signer_problem(
        self,
        crl: CRL,
        path: tuple[x509.Certificate, ...],
        index: int,
        vouches_for_itself: bool = False,
    ) -> str | None:
        """None when a certificate fit to sign ``crl`` verifies it (RFC 5280 6.3.3 (f)-(g)),
        else why none does. Certificates above ``path[index]`` in its path are valid already;
        others need a path of their own. ``path[index]`` itself may sign only when its issuer
        named it as the CRL issuer for its own status (an indirect CRL issuer, PKITS 4.14.30)."""
        cert, anchor = path[index], path[-1]
        wanted = name_key(crl.issuer)
        in_path = [c for c in path[index + 1 :] if name_key(c.subject) == wanted]
        candidates = dict.fromkeys([*in_path, *self._by_subject.get(wanted, ())])
        if vouches_for_itself:
            candidates[cert] = None
        else:
            candidates.pop(cert, None)
        problems: list[str] = []
        for candidate in candidates:
            problem = self._signature(crl, candidate)
            if problem is None:
                problem = _crl_sign_problem(candidate)
            if problem is None and candidate not in in_path and candidate != cert:
                problem = self._signer_trust_problem(candidate, anchor)
            if problem is None:
                return None
            problems.append(problem)
        if not problems:
            return f"no certificate of its issuer {crl.issuer.rfc4514_string()!r} was given"
        return "; ".join(problems)

    def _signature(self, crl: CRL, signer: x509.Certificate) -> str | None:
        key = (id(crl), signer)
        if key not in self._signatures:
            self._signatures[key] = signature_problem(crl, signer)
        return self._signatures[key]

    def _signer_trust_problem(
        self, signer: x509.Certificate, anchor: x509.Certificate
    ) -> str | None:
        if (signer, anchor) in self._valid_signers:
            return None
        if self._signer_paths >= _MAX_SIGNER_PATHS or self._nesting >= _MAX_SIGNER_NESTING:
            return f"its signer {_subject(signer)!r} was not validated (too many CRL signers)"
        self._signer_paths += 1
        self._nesting += 1
        try:
            self._signer_path(signer, anchor)
        except CertificateError as exc:
            return f"its signer {_subject(signer)!r} is not valid: {exc.reason}"
        finally:
            self._nesting -= 1
        self._valid_signers.add((signer, anchor))
        return None

    def _delta_for(
        self, complete: CRL, path: tuple[x509.Certificate, ...], index: int
    ) -> CRL | None:
        """The newest usable delta CRL that updates ``complete`` (RFC 5280 5.2.4, 6.3.3 (c))."""
        number = _crl_extension(complete, x509.CRLNumber)
        if number is None:
            return None
        scope = _crl_extension(complete, x509.IssuingDistributionPoint)
        authority = _crl_extension(complete, x509.AuthorityKeyIdentifier)
        best: tuple[int, CRL] | None = None
        for delta in self._deltas.get(name_key(complete.issuer), ()):
            indicator = _crl_extension(delta, x509.DeltaCRLIndicator)
            own = _crl_extension(delta, x509.CRLNumber)
            if indicator is None or own is None:
                continue
            if not indicator.crl_number <= number.crl_number < own.crl_number:
                continue
            if _crl_extension(delta, x509.IssuingDistributionPoint) != scope:
                continue
            delta_authority = _crl_extension(delta, x509.AuthorityKeyIdentifier)
            if (
                authority is not None
                and delta_authority is not None
                and authority.key_identifier != delta_authority.key_identifier
            ):
                continue
            if self._problem(delta) is not None or self._signer_problem(delta, path, index):
                continue
            if best is None or own.crl_number > best[0]:
                best = (own.crl_number, delta)
        return best[1] if best is not None else None


# --- scope (RFC 5280 6.3.3 (b)-(d)) ------------------------------------------------------------


def _distribution_points(cert: x509.Certificate) -> list[x509.DistributionPoint]:
    """The certificate's CRL distribution points, then the default point RFC 5280 6.3.3 falls
    back to: named after the certificate's issuer, all reasons, no cRLIssuer."""
    points = list(_extension(cert, x509.CRLDistributionPoints) or ())
    default = x509.DistributionPoint(
        full_name=[x509.DirectoryName(cert.issuer)],
        relative_name=None,
        reasons=None,
        crl_issuer=None,
    )
    return [*points, default]


def _scope(
    crl: CRL, point: x509.DistributionPoint, cert: x509.Certificate
) -> frozenset[x509.ReasonFlags] | str:
    """The reasons ``crl`` covers for ``cert`` through ``point``, or why it does not apply."""
    idp = _crl_extension(crl, x509.IssuingDistributionPoint)
    indirect = idp is not None and idp.indirect_crl
    if point.crl_issuer:
        if not any(
            isinstance(name, x509.DirectoryName) and same_name(name.value, crl.issuer)
            for name in point.crl_issuer
        ):
            return "it is not from the distribution point's cRLIssuer"
        if not indirect:
            return "the certificate names it as cRLIssuer, but it is not an indirect CRL"
    elif not same_name(crl.issuer, cert.issuer):
        return "it is not from the certificate's issuer"
    reasons = ALL_REASONS
    if idp is not None:
        idp_names = _point_names(idp.full_name, idp.relative_name, crl.issuer)
        if idp_names is not None:
            base = _first_directory_name(point.crl_issuer) or cert.issuer
            wanted = _point_names(point.full_name, point.relative_name, base)
            if wanted is None:
                wanted = list(point.crl_issuer or ())
            if not any(_same_general_name(a, b) for a in idp_names for b in wanted):
                return "its issuingDistributionPoint is not one of the certificate's"
        is_ca = _is_ca(cert)
        if idp.only_contains_user_certs and is_ca:
            return "it only covers end-entity certificates"
        if idp.only_contains_ca_certs and not is_ca:
            return "it only covers CA certificates"
        if idp.only_contains_attribute_certs:
            return "it only covers attribute certificates"
        if idp.only_some_reasons:
            reasons = reasons & idp.only_some_reasons
    if point.reasons:
        reasons = reasons & point.reasons
    return reasons


def _point_names(
    full_name: Sequence[x509.GeneralName] | None,
    relative_name: x509.RelativeDistinguishedName | None,
    base: x509.Name,
) -> list[x509.GeneralName] | None:
    """A distribution point's names; a relative name is appended to ``base`` (the CRL issuer)."""
    if full_name:
        return list(full_name)
    if relative_name is not None:
        return [x509.DirectoryName(x509.Name([*base.rdns, relative_name]))]
    return None


def _names_itself(point: x509.DistributionPoint, cert: x509.Certificate) -> bool:
    """Whether the point names ``cert`` itself as the issuer of the CRL for its own status."""
    return any(
        isinstance(name, x509.DirectoryName) and same_name(name.value, cert.subject)
        for name in point.crl_issuer or ()
    )


def _first_directory_name(names: Sequence[x509.GeneralName] | None) -> x509.Name | None:
    return next((n.value for n in names or () if isinstance(n, x509.DirectoryName)), None)


def _same_general_name(a: x509.GeneralName, b: x509.GeneralName) -> bool:
    if isinstance(a, x509.DirectoryName) and isinstance(b, x509.DirectoryName):
        return same_name(a.value, b.value)
    return a == b


def _is_ca(cert: x509.Certificate) -> bool:
    constraints = _extension(cert, x509.BasicConstraints)
    return constraints is not None and constraints.ca


# --- entries ---------------------------------------------------------------------------------


def _entry(crl: CRL, cert: x509.Certificate) -> x509.RevokedCertificate | None:
    """The entry for ``cert`` (RFC 5280 5.3.3): same serial number, and in an indirect CRL the
    same issuer, taken from the last certificateIssuer extension seen (the CRL issuer before)."""
    idp = _crl_extension(crl, x509.IssuingDistributionPoint)
    serial = _serial(cert)
    if (idp is None or not idp.indirect_crl) and serial > 0:
        return crl.get_revoked_certificate_by_serial_number(serial)
    # Walked in order: indirect CRLs, and serial numbers the lookup refuses (zero, negative).
    issuer: x509.Name | None = crl.issuer
    for entry in crl:
        named = _entry_extension(entry, x509.CertificateIssuer)
        if named is not None:
            issuer = _first_directory_name(list(named))
        if _serial(entry) == serial and issuer is not None and same_name(issuer, cert.issuer):
            return entry
    return None


def _reason(entry: x509.RevokedCertificate) -> x509.ReasonFlags:
    reason = _entry_extension(entry, x509.CRLReason)
    return reason.reason if reason is not None else x509.ReasonFlags.unspecified


def _crl_problem(crl: CRL, at: dt.datetime, allow_weak: bool) -> str | None:
    """Why ``crl`` cannot be used at ``at`` whatever it is used for, or None."""
    if crl.last_update_utc > at:
        return f"it was issued after the validation time {at:%Y-%m-%d %H:%M:%S} UTC"
    next_update = crl.next_update_utc
    if next_update is not None and next_update < at:
        return f"it is out of date (nextUpdate {next_update:%Y-%m-%d %H:%M:%S} UTC)"
    try:
        extensions = crl.extensions
        idp = _crl_extension(crl, x509.IssuingDistributionPoint)
        for ext in extensions:
            if ext.critical and ext.oid not in _CRL_EXTENSIONS:
                return f"it has an unknown critical extension ({ext.oid.dotted_string})"
        for entry in crl:
            for entry_ext in entry.extensions:
                if entry_ext.critical and entry_ext.oid not in _ENTRY_EXTENSIONS:
                    return (
                        f"its entry for serial number {_serial(entry)} has an unknown "
                        f"critical extension ({entry_ext.oid.dotted_string})"
                    )
                if entry_ext.oid == CRLEntryExtensionOID.CERTIFICATE_ISSUER and not (
                    idp is not None and idp.indirect_crl
                ):
                    return "an entry names a certificate issuer, but it is not an indirect CRL"
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        return f"its extensions cannot be parsed ({exc})"
    weak = None if allow_weak else weak_signature(crl)
    if weak is not None:
        return f"{weak}; allow_weak=True accepts it"
    return None


def _crl_sign_problem(signer: x509.Certificate) -> str | None:
    try:
        usage = _extension(signer, x509.KeyUsage)
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType):
        return f"the extensions of its signer {_subject(signer)!r} cannot be parsed"
    if usage is not None and not usage.crl_sign:
        return f"its signer {_subject(signer)!r} has a keyUsage without cRLSign"
    return None


# --- small helpers -------------------------------------------------------------------------


def _extension(cert: x509.Certificate, kind: type[_Ext]) -> _Ext | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _crl_extension(crl: CRL, kind: type[_Ext]) -> _Ext | None:
    try:
        return crl.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _entry_extension(entry: x509.RevokedCertificate, kind: type[_Ext]) -> _Ext | None:
    try:
        return entry.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _serial(item: x509.Certificate | x509.RevokedCertificate) -> int:
    """The serial number, without the warning cryptography gives for a negative one (PKITS
    4.4.14/15 have them; the certificate was accepted, and warned about, when loaded)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return item.serial_number


def _crl_name(crl: CRL) -> str:
    delta = _crl_extension(crl, x509.DeltaCRLIndicator) is not None
    kind = "the delta CRL" if delta else "the CRL"
    issued = f"{crl.last_update_utc:%Y-%m-%d}"
    return f"{kind} from {crl.issuer.rfc4514_string()!r} issued {issued}"


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def _in_path_of(cert: x509.Certificate, leaf: x509.Certificate, reason: str) -> str:
    return reason if cert is leaf else f"{reason}; it is in the path of {_subject(leaf)!r}"
