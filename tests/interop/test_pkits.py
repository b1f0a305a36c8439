"""NIST PKITS (Public Key Interoperability Test Suite 1.0.1) through :func:`validate_path`.

The shared corpus has every PKITS path as a signed S/MIME message whose SignedData carries the
whole path and the CRLs (``pyca-cryptography-vectors/pkits-smime``, see its PROVENANCE.md).
``SignedValid*`` must validate and ``SignedInvalid*`` must not, with PKITS's default inputs
(user-initial-policy-set anyPolicy, nothing inhibited, no explicit policy required) and
revocation checking required, which PKITS assumes. The other messages are policy tests whose
verdict depends on the initial policy settings; they are compared with OpenSSL below.

The harness parses the messages and calls ``validate_path`` directly, so that each verdict
is the path validator's; :func:`test_verify_recipe_gives_the_pkits_verdict` then runs every
message through the public ``securemail.smime.verify`` as an application would.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from conftest import find_interop_dir
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ObjectIdentifier

from securemail import wire
from securemail.errors import (
    CertificateRevokedError,
    SecureMailError,
    UntrustedCertificateError,
)
from securemail.policy import DEFAULT, RevocationCheck
from securemail.smime import mime, signed, validation
from securemail.smime.validation import ANY_POLICY, validate_path

# PKITS 4.4.14/15 have negative serial numbers, which cryptography warns about when they are read.
pytestmark = pytest.mark.filterwarnings("ignore:Parsed a serial number")

# PKITS certificates are valid from 2010 to 2030; some CRLs and certificates are deliberately not.
PKITS_TIME = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)

_CA_LEAF = (
    "the end-entity certificate is a CA certificate (cA=TRUE), which RFC 5280 path validation "
    "allows; securemail refuses it for S/MIME (see the securemail.smime.validation docstring) "
    "-- test_ca_leaf_cases_follow_rfc5280 shows this is the only reason"
)

KNOWN_DIFFERENT = {
    "SignedValidpathLenConstraintTest8": _CA_LEAF,
    "SignedValidpathLenConstraintTest14": _CA_LEAF,
    "SignedValidonlyContainsCACertsCRLTest13": _CA_LEAF,
    "SignedValidDSAParameterInheritanceTest5": (
        "the end entity's DSA key inherits its parameters from the CA's; cryptography cannot "
        "load such a key, so load_signed_data drops the certificate (OpenSSL fails it too)"
    ),
}
"""Verdicts that differ from PKITS on purpose or for a reason outside path validation.
Each is asserted to give the *other* verdict, so that a change is noticed."""

# Invalid because a certificate is listed on a CRL: refused whenever CRLs are checked at all.
REVOKED = {
    "SignedInvalidBasicSelfIssuedCRLSigningKeyTest7",
    "SignedInvalidBasicSelfIssuedNewWithOldTest5",
    "SignedInvalidBasicSelfIssuedOldWithNewTest2",
    "SignedInvalidIDPwithindirectCRLTest23",
    "SignedInvalidLongSerialNumberTest18",
    "SignedInvalidNegativeSerialNumberTest15",
    "SignedInvalidRevokedCATest2",
    "SignedInvalidRevokedEETest3",
    "SignedInvalidSeparateCertificateandCRLKeysTest20",
    "SignedInvalidcRLIssuerTest31",
    "SignedInvalidcRLIssuerTest32",
    "SignedInvalidcRLIssuerTest34",
    "SignedInvaliddeltaCRLTest3",
    "SignedInvaliddeltaCRLTest4",
    "SignedInvaliddeltaCRLTest6",
    "SignedInvaliddeltaCRLTest9",
    "SignedInvaliddistributionPointTest2",
    "SignedInvaliddistributionPointTest6",
    "SignedInvalidonlySomeReasonsTest15",
    "SignedInvalidonlySomeReasonsTest16",
    "SignedInvalidonlySomeReasonsTest20",
    "SignedInvalidonlySomeReasonsTest21",
}

# Invalid because no usable CRL covers a certificate: refused only when coverage is required.
NOT_COVERED = {
    "SignedMissingCRLTest1",
    "SignedInvalidBadCRLIssuerNameTest5",
    "SignedInvalidBadCRLSignatureTest4",
    "SignedInvalidIDPwithindirectCRLTest26",
    "SignedInvalidOldCRLnextUpdateTest11",
    "SignedInvalidSeparateCertificateandCRLKeysTest21",
    "SignedInvalidUnknownCRLEntryExtensionTest8",
    "SignedInvalidUnknownCRLExtensionTest10",
    "SignedInvalidUnknownCRLExtensionTest9",
    "SignedInvalidWrongCRLTest6",
    "SignedInvalidcRLIssuerTest27",
    "SignedInvalidcRLIssuerTest35",
    "SignedInvaliddeltaCRLIndicatorNoBaseTest1",
    "SignedInvaliddeltaCRLTest10",
    "SignedInvaliddistributionPointTest3",
    "SignedInvaliddistributionPointTest8",
    "SignedInvaliddistributionPointTest9",
    "SignedInvalidkeyUsageCriticalcRLSignFalseTest4",
    "SignedInvalidkeyUsageNotCriticalcRLSignFalseTest5",
    "SignedInvalidonlyContainsAttributeCertsTest14",
    "SignedInvalidonlyContainsCACertsCRLTest12",
    "SignedInvalidonlySomeReasonsTest17",
    "SignedInvalidpre2000CRLnextUpdateTest12",
}

# Valid only because CRLs are processed right: scoping, indirect CRLs, deltas, separate keys.
REVOCATION_VALID = {
    "SignedValidBasicSelfIssuedCRLSigningKeyTest6",
    "SignedValidIDPwithindirectCRLTest22",
    "SignedValidIDPwithindirectCRLTest24",
    "SignedValidIDPwithindirectCRLTest25",
    "SignedValidNoissuingDistributionPointTest10",
    "SignedValidSeparateCertificateandCRLKeysTest19",
    "SignedValidTwoCRLsTest7",
    "SignedValidcRLIssuerTest28",
    "SignedValidcRLIssuerTest29",
    "SignedValidcRLIssuerTest30",
    "SignedValidcRLIssuerTest33",
    "SignedValiddeltaCRLTest2",
    "SignedValiddeltaCRLTest5",
    "SignedValiddeltaCRLTest7",
    "SignedValiddeltaCRLTest8",
    "SignedValiddistributionPointTest1",
    "SignedValiddistributionPointTest4",
    "SignedValiddistributionPointTest5",
    "SignedValiddistributionPointTest7",
    "SignedValidonlySomeReasonsTest18",
    "SignedValidonlySomeReasonsTest19",
}

# The end entity is a CA certificate in these (valid and invalid for other reasons).
CA_LEAF_CASES = {
    "SignedValidpathLenConstraintTest8": True,
    "SignedValidpathLenConstraintTest14": True,
    "SignedValidonlyContainsCACertsCRLTest13": True,
    "SignedInvalidonlyContainsUserCertsCRLTest11": False,
    "SignedInvalidSelfIssuedinhibitAnyPolicyTest10": False,
}


def _corpus() -> Path | None:
    found = find_interop_dir()
    return found / "pyca-cryptography-vectors" if found else None


def _names(*, verdict_tests: bool) -> list[str]:
    corpus = _corpus()
    if corpus is None:
        return ["<interop corpus missing>"]  # the interop_dir fixture then fails, loudly
    names = sorted(path.stem for path in (corpus / "pkits-smime").glob("Signed*.eml"))
    decided = ("SignedValid", "SignedInvalid")
    return [
        n for n in names if n.startswith(decided) == verdict_tests and n != "SignedMissingCRLTest1"
    ]


@dataclass(frozen=True)
class Message:
    """What a PKITS message gives the validator: the signer and what the SignedData carries."""

    signer: x509.Certificate | None
    signature_error: SecureMailError | None
    certificates: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...]


@cache
def load(name: str) -> Message:
    corpus = _corpus()
    assert corpus is not None
    data = wire.canonicalize((corpus / "pkits-smime" / f"{name}.eml").read_bytes())
    detached, der = mime._signed_layer(wire.entity(data))
    parsed = signed.load_signed_data(der)
    _, (first, *_) = signed.check_signed_data(parsed, detached_content=detached, allow_weak=True)
    return Message(first.certificate, first.error, parsed.certificates, parsed.crls)


@cache
def trust_anchor() -> x509.Certificate:
    corpus = _corpus()
    assert corpus is not None
    der = (corpus / "pkits-trust-anchor" / "TrustAnchorRootCertificate.crt").read_bytes()
    return x509.load_der_x509_certificate(der)


def verdict(
    name: str, revocation: RevocationCheck = RevocationCheck.REQUIRED, **kwargs: object
) -> SecureMailError | validation.ValidatedPath:
    """The validated path, or the error that refused it (signature errors included)."""
    message = load(name)
    if message.signature_error is not None or message.signer is None:
        return message.signature_error or UntrustedCertificateError("?", "no signer")
    try:
        return validate_path(
            message.signer,
            trust_anchors=[trust_anchor()],
            intermediates=message.certificates,
            crls=message.crls,
            at=PKITS_TIME,
            allow_weak=True,  # PKITS uses SHA-1 with DSA and 1024-bit DSA keys
            revocation=revocation,
            **kwargs,  # type: ignore[arg-type]
        )
    except SecureMailError as exc:
        return exc


def _lift_smime_ca_leaf_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validate as plain RFC 5280 does: a CA certificate may be the end entity."""
    check_leaf = validation._check_leaf

    def rfc5280_leaf(
        leaf: x509.Certificate,
        extensions: x509.Extensions,
        purpose: validation.KeyPurpose,
        directly_trusted: bool,
    ) -> None:
        check_leaf(leaf, extensions, purpose, directly_trusted=True)

    monkeypatch.setattr(validation, "_check_leaf", rfc5280_leaf)


# --- the verdicts --------------------------------------------------------------------------


@pytest.mark.parametrize("name", _names(verdict_tests=True))
def test_pkits_verdict(interop_dir: Path, name: str) -> None:
    result = verdict(name)
    pkits_valid = name.startswith("SignedValid")
    expected = not pkits_valid if name in KNOWN_DIFFERENT else pkits_valid
    if expected:
        assert isinstance(result, validation.ValidatedPath), f"{name}: {result}"
        assert result.revocation_checked
    else:
        assert isinstance(result, SecureMailError), f"{name} validated"


@pytest.mark.parametrize("name", _names(verdict_tests=True))
def test_verify_recipe_gives_the_pkits_verdict(interop_dir: Path, name: str) -> None:
    """End to end: the message, the embedded CRLs, revocation REQUIRED by the policy."""
    policy = DEFAULT.clone(
        allow_weak_algorithms=True,  # PKITS signs with SHA-256 but some paths use SHA-1
        require_signer_matches_from=False,  # PKITS messages carry no From address
        revocation=RevocationCheck.REQUIRED,
    )
    data = (interop_dir / "pyca-cryptography-vectors/pkits-smime" / f"{name}.eml").read_bytes()
    result = mime.verify(data, trust=[trust_anchor()], policy=policy, at=PKITS_TIME)
    pkits_valid = name.startswith("SignedValid")
    expected = not pkits_valid if name in KNOWN_DIFFERENT else pkits_valid
    assert result.verified == expected, f"{name}: {result.status.value}: {result.reason}"


def test_corpus_and_lists_are_complete(interop_dir: Path) -> None:
    names = set(_names(verdict_tests=True))
    assert len(names) == 202
    assert set(KNOWN_DIFFERENT) <= names
    assert (REVOKED | REVOCATION_VALID | set(CA_LEAF_CASES)) <= names
    assert NOT_COVERED - {"SignedMissingCRLTest1"} <= names
    assert len(KNOWN_DIFFERENT) == 4  # 198 of 202 as PKITS says; keep this list short


def test_ca_leaf_cases_follow_rfc5280(interop_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the S/MIME rule against CA leaves, these give PKITS's verdict -- and the invalid
    ones for PKITS's reason (CRL scope, inhibitAnyPolicy), not the rule's."""
    for name in CA_LEAF_CASES:
        assert isinstance(verdict(name), SecureMailError)
    _lift_smime_ca_leaf_rule(monkeypatch)
    for name, valid in CA_LEAF_CASES.items():
        result = verdict(name)
        assert isinstance(result, validation.ValidatedPath) == valid, f"{name}: {result}"
        assert "CA certificate" not in str(result)


# --- revocation modes ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REVOKED))
def test_revoked_whenever_crls_are_checked(interop_dir: Path, name: str) -> None:
    for mode in (RevocationCheck.REQUIRED, RevocationCheck.IF_AVAILABLE):
        result = verdict(name, mode)
        assert isinstance(result, CertificateRevokedError), f"{name} ({mode}): {result}"
        assert "revoked on" in result.reason
    assert isinstance(verdict(name, RevocationCheck.OFF), validation.ValidatedPath)


@pytest.mark.parametrize("name", sorted(NOT_COVERED))
def test_not_covered_refused_only_when_required(interop_dir: Path, name: str) -> None:
    result = verdict(name)
    assert isinstance(result, UntrustedCertificateError), f"{name}: {result}"
    assert "no current CRL from" in result.reason
    accepted = verdict(name, RevocationCheck.IF_AVAILABLE)
    assert isinstance(accepted, validation.ValidatedPath), f"{name}: {accepted}"
    assert not accepted.revocation_checked


@pytest.mark.parametrize("name", sorted(REVOCATION_VALID))
def test_valid_with_crls_in_every_mode(interop_dir: Path, name: str) -> None:
    for mode in RevocationCheck:
        result = verdict(name, mode)
        assert isinstance(result, validation.ValidatedPath), f"{name} ({mode}): {result}"
        assert result.revocation_checked == (mode is not RevocationCheck.OFF)


# --- policy tests, compared with OpenSSL ------------------------------------------------------

_TEST_POLICY = "2.16.840.1.101.3.2.1.48."
POLICY_SETTINGS = {
    "default": ((ANY_POLICY,), False),
    "explicit": ((ANY_POLICY,), True),
    "policy1": ((ObjectIdentifier(_TEST_POLICY + "1"),), True),
    "policy2": ((ObjectIdentifier(_TEST_POLICY + "2"),), True),
    "policy1+2": (
        (ObjectIdentifier(_TEST_POLICY + "1"), ObjectIdentifier(_TEST_POLICY + "2")),
        True,
    ),
    "policy6": ((ObjectIdentifier(_TEST_POLICY + "6"),), True),
}


@pytest.mark.parametrize("name", _names(verdict_tests=False))
def test_policy_tests_agree_with_openssl(
    interop_dir: Path,
    openssl_bin: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    """PKITS 4.8-4.12 without a fixed verdict, under six initial policy settings: the
    valid_policy_tree gives OpenSSL's answer (``-policy_check``; ``-purpose any``, hence no
    S/MIME rule against CA leaves here either)."""
    _lift_smime_ca_leaf_rule(monkeypatch)
    anchor = tmp_path / "anchor.pem"
    anchor.write_bytes(trust_anchor().public_bytes(serialization.Encoding.PEM))
    message = interop_dir / "pyca-cryptography-vectors" / "pkits-smime" / f"{name}.eml"
    for setting, (policies, explicit) in POLICY_SETTINGS.items():
        command = [
            openssl_bin, "cms", "-verify", "-in", str(message), "-out", "/dev/null",
            "-CAfile", str(anchor), "-purpose", "any", "-policy_check",
            "-attime", str(int(PKITS_TIME.timestamp())),
        ]  # fmt: skip
        for policy in policies:
            command += ["-policy", policy.dotted_string]
        if explicit:
            command.append("-explicit_policy")
        openssl = subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)
        ours = verdict(
            name,
            RevocationCheck.OFF,  # openssl is not given -crl_check here
            initial_policies=policies,
            require_explicit_policy=explicit,
        )
        assert isinstance(ours, validation.ValidatedPath) == (openssl.returncode == 0), (
            f"{name} with {setting}: ours {ours}; openssl {openssl.stderr.strip()[-200:]}"
        )
