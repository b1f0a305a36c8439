"""Checks of the DNS records that make a domain's mail authenticate: SPF, DKIM and DMARC.

A DKIM signature is only as good as the key record verifiers find, and DMARC decides what a
receiver does when SPF and DKIM fail; a typo in any of them silently turns protection off.
:func:`check_domain` reads the three records through a *resolver*, a plain function from a
name to its TXT records, so the checks run the same against live DNS, a zone under test or a
dictionary. The reports are frozen values: a status, the record as published, and the
problems (the record does not work) and warnings (it works, but weaker than it could).

Not checked: the organizational-domain fallback of DMARC (it needs the Public Suffix List),
SPF macros (they need a sender), and whether the addresses SPF authorizes are the right ones.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import ipaddress
import re
from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from ..errors import DNSLookupError, ToolNotFoundError
from .dkim import DKIMPublicKey, check_dns_name

__all__ = [
    "DKIMKeyCheck",
    "DMARCCheck",
    "DomainReport",
    "RecordCheck",
    "RecordStatus",
    "Resolver",
    "SPFCheck",
    "check_dkim_key",
    "check_dmarc",
    "check_domain",
    "check_spf",
    "dns_resolver",
]

Resolver = Callable[[str], Sequence[str]]
"""The TXT records at a name (no trailing dot), one string per record with its
character-strings joined; empty when the name has none. A failed query raises
:class:`~securemail.errors.DNSLookupError`."""

SPF_LOOKUP_LIMIT = 10
"""RFC 7208 4.6.4: more DNS-querying terms than this make SPF evaluation a permerror."""


class RecordStatus(enum.StrEnum):
    """One verdict per record, so a program can branch without reading the problems."""

    VALID = "valid"
    MISSING = "missing"
    INVALID = "invalid"
    """Present but malformed, duplicated, or unusable; ``problems`` says why."""
    MISMATCH = "mismatch"
    """The DKIM key record is valid but holds a different key from the expected one."""
    LOOKUP_FAILED = "lookup-failed"


@dataclasses.dataclass(frozen=True)
class RecordCheck:
    """What one record looks like from outside: status, the text found, and why."""

    name: str
    """The DNS name that was queried."""
    status: RecordStatus
    record: str | None = None
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status is RecordStatus.VALID


@dataclasses.dataclass(frozen=True)
class SPFCheck(RecordCheck):
    lookups: int = 0
    """DNS-querying terms, nested includes and redirects counted (limit: 10)."""
    all_qualifier: str | None = None
    """``-``, ``~``, ``?`` or ``+`` of the final ``all``; None when there is none."""


@dataclasses.dataclass(frozen=True)
class DKIMKeyCheck(RecordCheck):
    key_type: str | None = None
    key_bits: int | None = None
    public_key: DKIMPublicKey | None = None
    key_matches: bool | None = None
    """Whether the published key is the expected one; None when none was given."""
    testing: bool = False
    revoked: bool = False


@dataclasses.dataclass(frozen=True)
class DMARCCheck(RecordCheck):
    policy: str | None = None
    subdomain_policy: str | None = None
    percent: int = 100


@dataclasses.dataclass(frozen=True)
class DomainReport:
    """The three records a receiver consults before it trusts mail from ``domain``."""

    domain: str
    selector: str
    spf: SPFCheck
    dkim: DKIMKeyCheck
    dmarc: DMARCCheck

    @property
    def ok(self) -> bool:
        """All three records are present and usable (warnings allowed)."""
        return self.spf.ok and self.dkim.ok and self.dmarc.ok

    @property
    def problems(self) -> tuple[str, ...]:
        return tuple(
            f"{kind}: {problem}"
            for kind, check in (("SPF", self.spf), ("DKIM", self.dkim), ("DMARC", self.dmarc))
            for problem in check.problems
        )


def check_domain(
    domain: str,
    selector: str,
    resolver: Resolver | None = None,
    *,
    public_key: DKIMPublicKey | None = None,
) -> DomainReport:
    """SPF at ``domain``, the DKIM key at ``selector._domainkey.domain`` (compared with
    ``public_key`` when given, e.g. ``signer.public_key``) and DMARC at ``_dmarc.domain``.

    Without a resolver, DNS is asked through dnspython (:func:`dns_resolver`).
    """
    check_dns_name(domain, "domain")
    check_dns_name(selector, "DKIM selector")
    resolve = resolver if resolver is not None else dns_resolver()
    return DomainReport(
        domain=domain,
        selector=selector,
        spf=check_spf(domain, resolve),
        dkim=check_dkim_key(domain, selector, resolve, public_key=public_key),
        dmarc=check_dmarc(domain, resolve),
    )


def _lookup(resolver: Resolver, name: str) -> list[str]:
    return [str(record) for record in resolver(name)]


def _status(problems: list[str], *, mismatch: bool = False) -> RecordStatus:
    if problems:
        return RecordStatus.INVALID
    return RecordStatus.MISMATCH if mismatch else RecordStatus.VALID


# --- SPF --------------------------------------------------------------------------------------

_SPF_VERSION = re.compile(r"v=spf1(?: |$)", re.IGNORECASE)
_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9_.-]*)=(.*)")
_MECHANISM = re.compile(r"([+\-~?]?)([A-Za-z0-9]+)(.*)")
_CIDR = re.compile(r"(?:/(\d{1,2}))?(?://(\d{1,3}))?")
_SPF_LOOKUP_TERMS = frozenset({"include", "a", "mx", "ptr", "exists"})


@dataclasses.dataclass
class _SPFWalk:
    """The state of one SPF evaluation as far as counting goes: lookups across nested
    records, and the records already entered (to stop include loops)."""

    resolver: Resolver
    lookups: int = 0
    failed: bool = False
    seen: set[str] = dataclasses.field(default_factory=set)


def check_spf(domain: str, resolver: Resolver) -> SPFCheck:
    """The SPF record of ``domain``: syntax, the 10-lookup limit (following ``include``
    and ``redirect``), and the final ``all``."""
    try:
        records = [r for r in _lookup(resolver, domain) if _SPF_VERSION.match(r)]
    except DNSLookupError as exc:
        return SPFCheck(domain, RecordStatus.LOOKUP_FAILED, problems=(exc.reason,))
    if not records:
        return SPFCheck(
            domain, RecordStatus.MISSING, problems=("no TXT record starting with v=spf1",)
        )
    if len(records) > 1:
        return SPFCheck(
            domain,
            RecordStatus.INVALID,
            record=records[0],
            problems=(f"{len(records)} SPF records; RFC 7208 4.5 makes that a permerror",),
        )
    record = records[0]
    walk = _SPFWalk(resolver, seen={domain.lower()})
    problems: list[str] = []
    warnings: list[str] = []
    all_qualifier = _walk_spf(record, walk, problems, warnings, top=True)
    if walk.lookups > SPF_LOOKUP_LIMIT:
        problems.append(
            f"{walk.lookups} DNS-querying terms; RFC 7208 4.6.4 allows {SPF_LOOKUP_LIMIT}"
        )
    status = RecordStatus.LOOKUP_FAILED if walk.failed else _status(problems)
    return SPFCheck(
        domain,
        status,
        record=record,
        problems=tuple(problems),
        warnings=tuple(warnings),
        lookups=walk.lookups,
        all_qualifier=all_qualifier,
    )


def _walk_spf(
    record: str, walk: _SPFWalk, problems: list[str], warnings: list[str], *, top: bool
) -> str | None:
    """Check one record's terms, descending into includes and a redirect; returns the
    qualifier of its ``all`` (or of the redirect target's)."""
    all_qualifier: str | None = None
    redirect: str | None = None
    modifiers: set[str] = set()
    for term in record.split(" ")[1:]:
        if not term:
            continue
        if all_qualifier is not None:
            if top:
                warnings.append(f"{term!r} follows 'all' and is never evaluated")
            continue
        modifier = _MODIFIER.fullmatch(term)
        if modifier is not None:
            name, value = modifier.group(1).lower(), modifier.group(2)
            if name in modifiers and name in ("redirect", "exp"):
                problems.append(f"{name}= appears twice")
            modifiers.add(name)
            if name == "redirect":
                redirect = value
            continue
        mechanism = _MECHANISM.fullmatch(term)
        if mechanism is None:
            problems.append(f"{term!r} is not an SPF term")
            continue
        qualifier, name, argument = mechanism.groups()
        qualifier, name = qualifier or "+", name.lower()
        if name == "all":
            if argument:
                problems.append(f"{term!r}: 'all' takes no argument")
            all_qualifier = qualifier
        elif name in ("ip4", "ip6"):
            _check_ip(name, argument, term, problems)
        elif name in _SPF_LOOKUP_TERMS:
            walk.lookups += 1
            target = _domain_spec(name, argument, term, problems)
            if name == "ptr":
                warnings.append("'ptr' is slow and deprecated (RFC 7208 5.5)")
            if name == "include" and target is not None:
                _descend(f"include:{target}", target, walk, problems, warnings)
        else:
            problems.append(f"{term!r}: unknown mechanism {name!r}")
    if redirect is not None:
        if all_qualifier is not None:
            if top:
                warnings.append("redirect= is ignored because the record has an 'all'")
        elif _plain_domain(redirect, f"redirect={redirect}", problems):
            walk.lookups += 1
            all_qualifier = _descend(f"redirect={redirect}", redirect, walk, problems, warnings)
    if top:
        if all_qualifier is None and redirect is None:
            warnings.append("no 'all': mail from other hosts gets a neutral result")
        elif all_qualifier == "+":
            warnings.append("'+all' authorizes every host on the Internet")
        elif all_qualifier == "?":
            warnings.append("'?all' makes mail from other hosts neutral, as if there were no SPF")
    return all_qualifier


def _descend(
    label: str, target: str, walk: _SPFWalk, problems: list[str], warnings: list[str]
) -> str | None:
    if "%" in target:
        warnings.append(f"{label}: macros are not expanded; lookups inside are not counted")
        return None
    key = target.lower().rstrip(".")
    if key in walk.seen:
        problems.append(f"{label}: the records include each other in a loop")
        return None
    if walk.lookups > SPF_LOOKUP_LIMIT:
        return None  # already over the limit: counting further adds nothing
    walk.seen.add(key)
    try:
        records = [r for r in _lookup(walk.resolver, key) if _SPF_VERSION.match(r)]
    except DNSLookupError as exc:
        walk.failed = True
        problems.append(f"{label}: {exc.reason}")
        return None
    if len(records) != 1:
        count = "no SPF record" if not records else f"{len(records)} SPF records"
        problems.append(f"{label}: {count} (permerror)")
        return None
    nested: list[str] = []
    result = _walk_spf(records[0], walk, nested, [], top=False)
    problems.extend(f"{label}: {problem}" for problem in nested)
    return result


def _domain_spec(name: str, argument: str, term: str, problems: list[str]) -> str | None:
    """The domain of a mechanism (``None`` for a/mx/ptr without one), its CIDR checked."""
    if not argument:
        if name in ("include", "exists"):
            problems.append(f"{term!r}: {name} needs a domain")
        return None
    if argument.startswith("/") and name in ("a", "mx"):
        _check_dual_cidr(argument, term, problems)
        return None
    if not argument.startswith(":") or len(argument) == 1:
        problems.append(f"{term!r} is malformed")
        return None
    target = argument[1:]
    if name in ("a", "mx") and "/" in target:
        target, cidr = target.split("/", 1)
        _check_dual_cidr("/" + cidr, term, problems)
    if not _plain_domain(target, term, problems):
        return None
    return target


def _plain_domain(target: str, term: str, problems: list[str]) -> bool:
    if "%" in target:
        return True  # a macro: expanded at evaluation time
    labels = target.rstrip(".").split(".")
    if len(labels) < 2 or not all(re.fullmatch(r"[A-Za-z0-9_-]{1,63}", part) for part in labels):
        problems.append(f"{term!r}: {target!r} is not a domain name")
        return False
    return True


def _check_dual_cidr(cidr: str, term: str, problems: list[str]) -> None:
    match = _CIDR.fullmatch(cidr)
    if match is None or int(match.group(1) or 0) > 32 or int(match.group(2) or 0) > 128:
        problems.append(f"{term!r}: bad CIDR length")


def _check_ip(name: str, argument: str, term: str, problems: list[str]) -> None:
    if not argument.startswith(":"):
        problems.append(f"{term!r}: {name} needs an address")
        return
    network: type[ipaddress.IPv4Network | ipaddress.IPv6Network] = (
        ipaddress.IPv4Network if name == "ip4" else ipaddress.IPv6Network
    )
    try:
        network(argument[1:], strict=False)
    except ValueError:
        problems.append(f"{term!r}: not an {'IPv4' if name == 'ip4' else 'IPv6'} address")


# --- tag lists (DKIM key records, DMARC) ------------------------------------------------------

_TAG = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def _tag_list(record: str) -> tuple[dict[str, str], list[str]]:
    """RFC 6376 3.2 tag=value list: the tags, and what is wrong with the syntax."""
    tags: dict[str, str] = {}
    problems: list[str] = []
    specs = record.split(";")
    if specs and not specs[-1].strip():
        specs.pop()  # a trailing semicolon is allowed
    for spec in specs:
        name, equals, value = spec.partition("=")
        name = name.strip(" \t\r\n")
        if not equals or not _TAG.fullmatch(name):
            problems.append(f"{spec.strip()[:40]!r} is not a tag=value pair")
            continue
        if name in tags:
            problems.append(f"tag {name}= appears twice")
            continue
        tags[name] = value.strip(" \t\r\n")
    return tags, problems


# --- DKIM key record --------------------------------------------------------------------------


def check_dkim_key(
    domain: str,
    selector: str,
    resolver: Resolver,
    *,
    public_key: DKIMPublicKey | None = None,
) -> DKIMKeyCheck:
    """The key record at ``selector._domainkey.domain`` (RFC 6376 3.6.1, RFC 8463)."""
    name = f"{selector}._domainkey.{domain}"
    try:
        records = _lookup(resolver, name)
    except DNSLookupError as exc:
        return DKIMKeyCheck(name, RecordStatus.LOOKUP_FAILED, problems=(exc.reason,))
    if not records:
        return DKIMKeyCheck(name, RecordStatus.MISSING, problems=("no TXT record",))
    if len(records) > 1:
        return DKIMKeyCheck(
            name,
            RecordStatus.INVALID,
            record=records[0],
            problems=(f"{len(records)} TXT records; verifiers may use either (RFC 6376 3.6.2.2)",),
        )
    record = records[0]
    tags, problems = _tag_list(record)
    warnings: list[str] = []
    if "v" in tags and (tags["v"] != "DKIM1" or next(iter(tags)) != "v"):
        problems.append("v= must be the first tag and read DKIM1")
    key_type = tags.get("k", "rsa")
    if key_type not in ("rsa", "ed25519"):
        problems.append(f"k={key_type[:20]} is not a key type verifiers know (rsa, ed25519)")
    if "h" in tags and "sha256" not in _colon_list(tags["h"]):
        problems.append("h= excludes sha256, the only hash securemail signs with")
    if "s" in tags and not {"*", "email"} & set(_colon_list(tags["s"])):
        problems.append("s= excludes email: verifiers ignore this key for mail")
    testing = "y" in _colon_list(tags.get("t", ""))
    if testing:
        warnings.append("t=y: testing mode, receivers may treat failed signatures as unsigned")
    revoked = False
    key: DKIMPublicKey | None = None
    bits: int | None = None
    if "p" not in tags:
        problems.append("no p= tag (the public key)")
    elif not re.sub(r"\s", "", tags["p"]):
        revoked = True
        problems.append("p= is empty: the key is revoked")
    elif key_type in ("rsa", "ed25519"):
        key, reason = _public_key(key_type, tags["p"])
        if key is None:
            problems.append(reason)
        elif isinstance(key, rsa.RSAPublicKey):
            bits = key.key_size
            if bits < 1024:
                problems.append(f"{bits}-bit RSA key: verifiers must reject it (RFC 8301)")
            elif bits < 2048:
                warnings.append(f"{bits}-bit RSA key: use 2048 bits or more")
        else:
            bits = 256
    matches: bool | None = None
    if public_key is not None and key is not None:
        matches = _spki(key) == _spki(public_key)
    status = _status(problems, mismatch=matches is False)
    if matches is False:
        problems.append("the published key is not the expected (signing) key")
    return DKIMKeyCheck(
        name,
        status,
        record=record,
        problems=tuple(problems),
        warnings=tuple(warnings),
        key_type=key_type,
        key_bits=bits,
        public_key=key,
        key_matches=matches,
        testing=testing,
        revoked=revoked,
    )


def _colon_list(value: str) -> list[str]:
    return [item.strip().lower() for item in value.split(":")]


def _public_key(key_type: str, value: str) -> tuple[DKIMPublicKey | None, str]:
    try:
        raw = base64.b64decode(re.sub(r"\s", "", value), validate=True)
    except (binascii.Error, ValueError):
        return None, "p= is not base64"
    if key_type == "ed25519":
        if len(raw) != 32:
            return None, "p= is not a 32-byte Ed25519 public key (RFC 8463 4.2)"
        return ed25519.Ed25519PublicKey.from_public_bytes(raw), ""
    try:
        key = serialization.load_der_public_key(raw)
    except ValueError:
        # RFC 6376 3.6.1 names RSAPublicKey; most publish SubjectPublicKeyInfo: accept both.
        pem = b"-----BEGIN RSA PUBLIC KEY-----\n" + base64.encodebytes(raw)
        try:
            key = serialization.load_pem_public_key(pem + b"-----END RSA PUBLIC KEY-----\n")
        except ValueError:
            return None, "p= is not an RSA public key"
    if not isinstance(key, rsa.RSAPublicKey):
        return None, "p= holds a key that is not RSA, but k= says rsa"
    return key, ""


def _spki(key: DKIMPublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --- DMARC ------------------------------------------------------------------------------------

_POLICIES = ("none", "quarantine", "reject")


def check_dmarc(domain: str, resolver: Resolver) -> DMARCCheck:
    """The DMARC record at ``_dmarc.domain`` (RFC 7489 6.3)."""
    name = f"_dmarc.{domain}"
    try:
        found = _lookup(resolver, name)
    except DNSLookupError as exc:
        return DMARCCheck(name, RecordStatus.LOOKUP_FAILED, problems=(exc.reason,))
    # RFC 7489 6.6.3: records that do not start with v=DMARC1 are not DMARC records.
    records = [r for r in found if re.match(r"v[ \t]*=[ \t]*DMARC1[ \t]*(;|$)", r)]
    if not records:
        return DMARCCheck(
            name,
            RecordStatus.MISSING,
            problems=("no TXT record starting with v=DMARC1",),
            warnings=(
                "receivers then use the organizational domain's record, "
                "which this check does not look up",
            ),
        )
    if len(records) > 1:
        return DMARCCheck(
            name,
            RecordStatus.INVALID,
            record=records[0],
            problems=(f"{len(records)} DMARC records: receivers apply none of them",),
        )
    record = records[0]
    tags, problems = _tag_list(record)
    warnings: list[str] = []
    policy = tags.get("p", "").lower() or None
    if policy is None:
        problems.append("no p= tag (the policy)")
    elif policy not in _POLICIES:
        problems.append(f"p={policy[:20]} is not none, quarantine or reject")
    elif policy == "none":
        warnings.append("p=none: monitoring only, failing mail is delivered as usual")
    subdomain_policy = tags.get("sp", "").lower() or None
    if subdomain_policy is not None and subdomain_policy not in _POLICIES:
        problems.append(f"sp={subdomain_policy[:20]} is not none, quarantine or reject")
    percent = 100
    if "pct" in tags:
        if re.fullmatch(r"\d{1,3}", tags["pct"]) and int(tags["pct"]) <= 100:
            percent = int(tags["pct"])
            if percent < 100:
                warnings.append(f"pct={percent}: the policy applies to part of the mail only")
        else:
            problems.append("pct= is not a number from 0 to 100")
    for tag in ("adkim", "aspf"):
        if tag in tags and tags[tag].lower() not in ("r", "s"):
            problems.append(f"{tag}= must be r or s")
    for tag in ("rua", "ruf"):
        for uri in tags.get(tag, "").split(","):
            if uri.strip() and not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", uri.strip()):
                problems.append(f"{tag}= holds {uri.strip()[:40]!r}, which is not a URI")
    return DMARCCheck(
        name,
        _status(problems),
        record=record,
        problems=tuple(problems),
        warnings=tuple(warnings),
        policy=policy,
        subdomain_policy=subdomain_policy,
        percent=percent,
    )


# --- live DNS ---------------------------------------------------------------------------------


def dns_resolver(
    nameservers: Sequence[str] | None = None, *, port: int = 53, timeout: float = 5.0
) -> Resolver:
    """A :data:`Resolver` that asks DNS through dnspython (``pip install dnspython``).

    ``nameservers`` defaults to the system's (``/etc/resolv.conf``).
    """
    try:
        import dns.exception
        import dns.resolver
    except ImportError:
        raise ToolNotFoundError(
            "dnspython", "install it (pip install dnspython) or pass a resolver function"
        ) from None
    resolver = dns.resolver.Resolver(configure=nameservers is None)
    if nameservers is not None:
        resolver.nameservers = list(nameservers)
    resolver.port = port
    resolver.lifetime = timeout

    def resolve(name: str) -> list[str]:
        try:
            answer = resolver.resolve(name.rstrip(".") + ".", "TXT")
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise DNSLookupError(name, type(exc).__name__) from None
        return [b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer]

    return resolve
