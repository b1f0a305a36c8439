"""Certificate path validation: generated PKIs for each rule, then real S/MIME material."""

from __future__ import annotations

import datetime as dt
import email
import ipaddress
import re
from pathlib import Path

import pki
import pytest
from asn1crypto import cms
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from pki import NOW, Issued, issue, issue_crl, make_pki

from securemail.errors import (
    CertificateError,
    CertificateExpiredError,
    CertificateNotYetValidError,
    CertificateRevokedError,
    CertificateUsageError,
    InputError,
    UntrustedCertificateError,
)
from securemail.policy import RevocationCheck
from securemail.smime.revocation import ALL_REASONS
from securemail.smime.validation import (
    ANY_POLICY,
    KeyPurpose,
    ValidatedPath,
    email_addresses,
    matches_email,
    validate_path,
)

DAY = dt.timedelta(days=1)
# Deliberately weak digests: the tests check that certificates signed with them are refused.
SHA1 = hashes.SHA1()  # noqa: S303
MD5 = hashes.MD5()  # noqa: S303
SIGN, ENCRYPT = KeyPurpose.SIGN, KeyPurpose.ENCRYPT


@pytest.fixture(scope="module")
def p() -> pki.PKI:
    return make_pki()


def chain(leaf: Issued, *cas: Issued, **kwargs: object) -> ValidatedPath:
    """Validate ``leaf`` with the last of ``cas`` as anchor and the others as intermediates."""
    return validate_path(
        leaf.cert,
        trust_anchors=[cas[-1].cert],
        intermediates=[ca.cert for ca in cas[:-1]],
        **kwargs,  # type: ignore[arg-type]
    )


def ku(**bits: bool) -> x509.KeyUsage:
    """A keyUsage with just the named bits set."""
    names = [
        "digital_signature",
        "content_commitment",
        "key_encipherment",
        "data_encipherment",
        "key_agreement",
        "key_cert_sign",
        "crl_sign",
        "encipher_only",
        "decipher_only",
    ]
    return x509.KeyUsage(**{name: bits.get(name, False) for name in names})


# --- good paths ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "purpose"),
    [
        ("rsa", SIGN),
        ("rsa", ENCRYPT),
        ("rsa3072", SIGN),
        ("p256", SIGN),
        ("p256", ENCRYPT),
        ("p384", SIGN),
        ("p384", ENCRYPT),
        ("ed25519", SIGN),
        ("x25519", ENCRYPT),
    ],
)
def test_good_chain(p: pki.PKI, user: str, purpose: KeyPurpose) -> None:
    leaf = p.users[user]
    path = chain(leaf, p.intermediate, p.root, purpose=purpose)
    assert path.certificates == (leaf.cert, p.intermediate.cert, p.root.cert)
    assert path.leaf == leaf.cert
    assert path.anchor == p.root.cert
    assert path.revocation_checked is False


@pytest.mark.parametrize("leaf_type", ["ed25519", "p256", "rsa2048"])
def test_ed25519_ca(leaf_type: pki.KeyType) -> None:
    root = issue(common_name="Ed Root", purpose="ca", key_type="ed25519")
    inter = issue(common_name="Ed Inter", purpose="ca", key_type="ed25519", issuer=root)
    leaf = issue(common_name="L", email="l@example.com", key_type=leaf_type, issuer=inter)
    assert chain(leaf, inter, root).anchor == root.cert


def test_rsa_pss_signed_chain() -> None:
    pss = padding.PSS(padding.MGF1(hashes.SHA256()), 32)
    root = issue(common_name="PSS Root", purpose="ca", rsa_padding=pss)
    leaf = issue(common_name="L", issuer=root, rsa_padding=pss)
    assert leaf.cert.signature_algorithm_oid.dotted_string == "1.2.840.113549.1.1.10"
    assert len(chain(leaf, root).certificates) == 2


def test_intermediates_order_and_extras_do_not_matter(p: pki.PKI) -> None:
    other = issue(common_name="Unrelated CA", purpose="ca", key_type="p256")
    leaf = p.users["p256"].cert
    path = validate_path(
        leaf,
        trust_anchors=[other.cert, p.root.cert],
        intermediates=[p.users["rsa"].cert, other.cert, p.intermediate.cert, leaf],
    )
    assert path.certificates == (leaf, p.intermediate.cert, p.root.cert)


def test_directly_trusted_leaf(p: pki.PKI) -> None:
    leaf = p.users["rsa"].cert
    path = validate_path(leaf, trust_anchors=[p.root.cert, leaf])
    assert path.certificates == (leaf,)
    assert path.leaf == path.anchor == leaf


def test_self_signed_leaf_not_trusted(p: pki.PKI) -> None:
    own = issue(common_name="Selfie", email="me@example.com")
    with pytest.raises(UntrustedCertificateError, match="self-signed"):
        validate_path(own.cert, trust_anchors=[p.root.cert])


def test_without_key_identifiers() -> None:
    # Neither SKI nor AKI (like NSS's test certificates): names and signatures are enough.
    root = issue(common_name="R", purpose="ca", key_identifiers=False)
    inter = issue(common_name="I", purpose="ca", issuer=root, key_identifiers=False)
    leaf = issue(common_name="L", issuer=inter, key_identifiers=False)
    assert len(chain(leaf, inter, root).certificates) == 3


def test_non_critical_basic_constraints_accepted() -> None:
    root = issue(
        common_name="NSS-like Root",
        purpose="ca",
        basic_constraints=x509.BasicConstraints(ca=True, path_length=None),
        basic_constraints_critical=False,
    )
    leaf = issue(common_name="L", issuer=root)
    assert chain(leaf, root).anchor == root.cert


# --- no path -------------------------------------------------------------------------------------


def test_missing_intermediate(p: pki.PKI) -> None:
    with pytest.raises(UntrustedCertificateError) as info:
        validate_path(p.users["rsa"].cert, trust_anchors=[p.root.cert])
    assert info.value.subject == "CN=Alice"
    assert "no chain to the given trust anchors" in info.value.reason
    assert "'CN=securemail Test Intermediate' not found" in info.value.reason


def test_wrong_anchor(p: pki.PKI) -> None:
    other = issue(common_name="Other Root", purpose="ca", key_type="p256")
    with pytest.raises(UntrustedCertificateError, match=r"'CN=securemail Test Root'.* not found"):
        chain(p.users["rsa"], p.intermediate, other)


def test_no_anchors(p: pki.PKI) -> None:
    with pytest.raises(UntrustedCertificateError, match="no trust anchors"):
        validate_path(p.users["rsa"].cert, trust_anchors=[])


def test_signature_does_not_verify() -> None:
    real = issue(common_name="Same Name CA", purpose="ca", key_type="p256")
    impostor = issue(common_name="Same Name CA", purpose="ca", key_type="p256")
    leaf = issue(common_name="L", issuer=impostor)
    with pytest.raises(UntrustedCertificateError, match="does not verify with the key of"):
        chain(leaf, real)


@pytest.mark.parametrize("right_first", [True, False])
def test_same_dn_cas_with_different_keys(right_first: bool) -> None:
    right = issue(common_name="Twin CA", purpose="ca", key_type="p256")
    wrong = issue(common_name="Twin CA", purpose="ca", key_type="p256")
    leaf = issue(common_name="L", issuer=right, key_identifiers=False)  # no AKI hint
    anchors = [right.cert, wrong.cert] if right_first else [wrong.cert, right.cert]
    assert validate_path(leaf.cert, trust_anchors=anchors).anchor == right.cert


@pytest.mark.parametrize("right_first", [True, False])
def test_same_dn_intermediates_with_different_keys(right_first: bool) -> None:
    root = issue(common_name="Root", purpose="ca", key_type="p256")
    right = issue(common_name="Twin Inter", purpose="ca", key_type="p256", issuer=root)
    wrong = issue(common_name="Twin Inter", purpose="ca", key_type="p256", issuer=root)
    leaf = issue(common_name="L", issuer=right)
    inters = [right.cert, wrong.cert] if right_first else [wrong.cert, right.cert]
    path = validate_path(leaf.cert, trust_anchors=[root.cert], intermediates=inters)
    assert path.certificates[1] == right.cert


def test_loop_in_intermediates_terminates() -> None:
    b_root = issue(common_name="B", purpose="ca", key_type="p256")
    a = issue(common_name="A", purpose="ca", key_type="p256", issuer=b_root)
    b = issue(common_name="B", purpose="ca", issuer=a, key=b_root.key)  # A and B certify each other
    leaf = issue(common_name="L", issuer=b)
    anchor = issue(common_name="Unrelated", purpose="ca", key_type="p256")
    with pytest.raises(UntrustedCertificateError, match="no chain"):
        validate_path(
            leaf.cert, trust_anchors=[anchor.cert], intermediates=[a.cert, b.cert, b_root.cert]
        )


def test_search_is_bounded() -> None:
    # Twelve CAs with one name, each certified by every other: exponentially many paths.
    roots = [issue(common_name="Mesh", purpose="ca", key_type="p256") for _ in range(12)]
    mesh = [
        issue(common_name="Mesh", purpose="ca", issuer=signer, key=subject.key).cert
        for subject in roots
        for signer in roots
        if signer is not subject
    ]
    leaf = issue(common_name="L", issuer=roots[0])
    anchor = issue(common_name="Unrelated", purpose="ca", key_type="p256")
    with pytest.raises(UntrustedCertificateError, match="gave up"):
        validate_path(leaf.cert, trust_anchors=[anchor.cert], intermediates=mesh)


def test_max_depth(p: pki.PKI) -> None:
    with pytest.raises(UntrustedCertificateError, match="max_depth=2"):
        chain(p.users["rsa"], p.intermediate, p.root, max_depth=2)
    assert chain(p.users["rsa"], p.intermediate, p.root, max_depth=3)
    with pytest.raises(InputError):
        chain(p.users["rsa"], p.intermediate, p.root, max_depth=0)


# --- validity ------------------------------------------------------------------------------------


def test_expired_leaf(p: pki.PKI) -> None:
    leaf = issue(
        common_name="Old", issuer=p.intermediate, not_before=NOW - 30 * DAY, not_after=NOW - DAY
    )
    with pytest.raises(CertificateExpiredError) as info:
        chain(leaf, p.intermediate, p.root)
    assert info.value.subject == "CN=Old"


def test_expired_intermediate() -> None:
    root = issue(common_name="Root", purpose="ca")
    inter = issue(
        common_name="Old Inter",
        purpose="ca",
        issuer=root,
        not_after=NOW - DAY,
        not_before=NOW - 9 * DAY,
    )
    leaf = issue(common_name="L", issuer=inter)
    with pytest.raises(CertificateExpiredError) as info:
        chain(leaf, inter, root)
    assert info.value.subject == "CN=Old Inter"
    assert "in the path of 'CN=L'" in info.value.reason


def test_expired_anchor() -> None:
    root = issue(
        common_name="Old Root", purpose="ca", not_before=NOW - 9 * DAY, not_after=NOW - DAY
    )
    leaf = issue(common_name="L", issuer=root)
    with pytest.raises(CertificateExpiredError) as info:
        chain(leaf, root)
    assert info.value.subject == "CN=Old Root"


def test_not_yet_valid(p: pki.PKI) -> None:
    leaf = issue(common_name="Future", issuer=p.intermediate, not_before=NOW + DAY)
    with pytest.raises(CertificateNotYetValidError) as info:
        chain(leaf, p.intermediate, p.root)
    assert info.value.subject == "CN=Future"


def test_validation_time_in_the_past() -> None:
    then = NOW - 100 * DAY
    root = issue(common_name="Root", purpose="ca", not_before=then - DAY, not_after=then + 10 * DAY)
    leaf = issue(common_name="L", issuer=root, not_before=then - DAY, not_after=then + DAY)
    with pytest.raises(CertificateExpiredError):
        chain(leaf, root)
    assert chain(leaf, root, at=then).leaf == leaf.cert
    # A naive datetime is UTC; an aware one in another zone is converted.
    assert chain(leaf, root, at=then.replace(tzinfo=None)).leaf == leaf.cert
    tokyo = dt.timezone(dt.timedelta(hours=9))
    assert chain(leaf, root, at=then.astimezone(tokyo)).leaf == leaf.cert
    with pytest.raises(CertificateNotYetValidError):
        chain(leaf, root, at=then - 2 * DAY)


def test_most_specific_error_wins() -> None:
    # Two anchors share the name; the one with the right key expired, the other cannot verify.
    expired = issue(common_name="Twin", purpose="ca", not_before=NOW - 9 * DAY, not_after=NOW - DAY)
    other = issue(common_name="Twin", purpose="ca")
    leaf = issue(common_name="L", issuer=expired)
    for anchors in ([expired.cert, other.cert], [other.cert, expired.cert]):
        with pytest.raises(CertificateExpiredError):
            validate_path(leaf.cert, trust_anchors=anchors)


# --- CA rights -----------------------------------------------------------------------------------


def test_ca_with_ca_false(p: pki.PKI) -> None:
    not_ca = issue(
        common_name="Not A CA",
        purpose="ca",
        issuer=p.root,
        basic_constraints=x509.BasicConstraints(ca=False, path_length=None),
    )
    leaf = issue(common_name="L", issuer=not_ca)
    with pytest.raises(CertificateUsageError, match="cA=FALSE") as info:
        chain(leaf, not_ca, p.root)
    assert info.value.subject == "CN=Not A CA"


def test_ca_without_basic_constraints(p: pki.PKI) -> None:
    bare = issue(common_name="Bare", purpose="ca", issuer=p.root, basic_constraints=None)
    leaf = issue(common_name="L", issuer=bare)
    with pytest.raises(CertificateUsageError, match="no basicConstraints"):
        chain(leaf, bare, p.root)


def test_end_entity_used_as_issuer(p: pki.PKI) -> None:
    alice = p.users["rsa"]
    leaf = issue(common_name="L", issuer=alice)
    with pytest.raises(CertificateUsageError) as info:
        chain(leaf, alice, p.intermediate, p.root)
    assert info.value.subject == "CN=Alice"


def test_v1_intermediate_refused_v1_anchor_accepted() -> None:
    root = issue(common_name="V1 Root", purpose="ca", version=1)
    assert root.cert.version is x509.Version.v1
    inter = issue(common_name="V1 Inter", purpose="ca", issuer=root, version=1)
    leaf = issue(common_name="L", issuer=inter)
    with pytest.raises(CertificateUsageError, match="version 1") as info:
        chain(leaf, inter, root)
    assert info.value.subject == "CN=V1 Inter"
    direct = issue(common_name="L2", issuer=root)
    assert chain(direct, root).anchor == root.cert


@pytest.mark.parametrize(("path_length", "ok"), [(0, False), (1, True), (None, True)])
def test_path_length(path_length: int | None, ok: bool) -> None:
    root = issue(common_name="Root", purpose="ca", path_length=path_length)
    inter = issue(common_name="Inter", purpose="ca", issuer=root)
    leaf = issue(common_name="L", issuer=inter)
    assert chain(issue(common_name="Direct", issuer=root), root)  # a leaf never counts
    if ok:
        assert chain(leaf, inter, root)
    else:
        with pytest.raises(CertificateUsageError, match="pathLenConstraint") as info:
            chain(leaf, inter, root)
        assert info.value.subject == "CN=Root"


def test_path_length_on_intermediate() -> None:
    root = issue(common_name="Root", purpose="ca")
    inter = issue(common_name="Inter", purpose="ca", issuer=root, path_length=0)
    sub = issue(common_name="Sub", purpose="ca", issuer=inter)
    leaf = issue(common_name="L", issuer=sub)
    with pytest.raises(CertificateUsageError, match="pathLenConstraint"):
        chain(leaf, sub, inter, root)


def test_ca_key_usage_without_key_cert_sign(p: pki.PKI) -> None:
    inter = issue(
        common_name="No CertSign",
        purpose="ca",
        issuer=p.root,
        key_usage=ku(digital_signature=True, crl_sign=True),
    )
    leaf = issue(common_name="L", issuer=inter)
    with pytest.raises(CertificateUsageError, match="keyCertSign"):
        chain(leaf, inter, p.root)


def test_ca_certificate_as_leaf(p: pki.PKI) -> None:
    ca_leaf = issue(common_name="CA Leaf", purpose="ca", issuer=p.root, key_usage=None)
    with pytest.raises(CertificateUsageError, match="cA=TRUE"):
        chain(ca_leaf, p.root)
    assert validate_path(ca_leaf.cert, trust_anchors=[ca_leaf.cert]).leaf == ca_leaf.cert


# --- leaf usage ----------------------------------------------------------------------------------


def test_sign_needs_digital_signature(p: pki.PKI) -> None:
    enc_only = issue(common_name="Enc", issuer=p.intermediate, purpose="encrypt")
    with pytest.raises(CertificateUsageError, match="digitalSignature"):
        chain(enc_only, p.intermediate, p.root, purpose=SIGN)
    assert chain(enc_only, p.intermediate, p.root, purpose=ENCRYPT)
    non_repudiation = issue(
        common_name="NR", issuer=p.intermediate, key_usage=ku(content_commitment=True)
    )
    assert chain(non_repudiation, p.intermediate, p.root, purpose=SIGN)


def test_rsa_encrypt_needs_key_encipherment(p: pki.PKI) -> None:
    sign_only = issue(common_name="Sig", issuer=p.intermediate, purpose="sign")
    with pytest.raises(CertificateUsageError, match="keyEncipherment"):
        chain(sign_only, p.intermediate, p.root, purpose=ENCRYPT)
    agreement = issue(common_name="KA", issuer=p.intermediate, key_usage=ku(key_agreement=True))
    with pytest.raises(CertificateUsageError, match="keyEncipherment"):
        chain(agreement, p.intermediate, p.root, purpose=ENCRYPT)


def test_ec_encrypt_needs_key_agreement(p: pki.PKI) -> None:
    transport = issue(
        common_name="EC",
        key_type="p256",
        issuer=p.intermediate,
        key_usage=ku(key_encipherment=True),
    )
    with pytest.raises(CertificateUsageError, match="keyAgreement"):
        chain(transport, p.intermediate, p.root, purpose=ENCRYPT)


def test_key_type_must_fit_purpose(p: pki.PKI) -> None:
    with pytest.raises(CertificateUsageError, match="Ed25519 key cannot be used for encryption"):
        chain(p.users["ed25519"], p.intermediate, p.root, purpose=ENCRYPT)
    with pytest.raises(CertificateUsageError, match="key agreement"):
        chain(p.users["x25519"], p.intermediate, p.root, purpose=SIGN)


def test_no_key_usage_allows_both(p: pki.PKI) -> None:
    leaf = issue(common_name="Any", issuer=p.intermediate, key_usage=None)
    assert chain(leaf, p.intermediate, p.root, purpose=SIGN)
    assert chain(leaf, p.intermediate, p.root, purpose=ENCRYPT)


@pytest.mark.parametrize(
    ("eku", "ok"),
    [
        ([ExtendedKeyUsageOID.SERVER_AUTH], False),
        ([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH], False),
        ([ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE], True),
        ([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.EMAIL_PROTECTION], True),
        (None, True),
    ],
)
def test_extended_key_usage(p: pki.PKI, eku: list[x509.ObjectIdentifier] | None, ok: bool) -> None:
    leaf = issue(common_name="L", issuer=p.intermediate, eku=eku)
    if ok:
        assert chain(leaf, p.intermediate, p.root)
    else:
        with pytest.raises(CertificateUsageError, match="emailProtection"):
            chain(leaf, p.intermediate, p.root)


def test_extended_key_usage_on_intermediate(p: pki.PKI) -> None:
    tls_ca = issue(
        common_name="TLS CA",
        purpose="ca",
        issuer=p.root,
        extra_extensions=[(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)],
    )
    leaf = issue(common_name="L", issuer=tls_ca)
    with pytest.raises(CertificateUsageError, match="extendedKeyUsage") as info:
        chain(leaf, tls_ca, p.root)
    assert info.value.subject == "CN=TLS CA"


def test_unknown_critical_extension(p: pki.PKI) -> None:
    oid = x509.ObjectIdentifier("1.3.6.1.4.1.55555.1")
    odd = x509.UnrecognizedExtension(oid, b"\x05\x00")
    leaf = issue(common_name="L", issuer=p.intermediate, extra_extensions=[(odd, True)])
    with pytest.raises(CertificateUsageError, match=re.escape("1.3.6.1.4.1.55555.1")):
        chain(leaf, p.intermediate, p.root)
    inter = issue(common_name="I", purpose="ca", issuer=p.root, extra_extensions=[(odd, True)])
    with pytest.raises(CertificateUsageError, match="unknown critical extension") as info:
        chain(issue(common_name="L2", issuer=inter), inter, p.root)
    assert info.value.subject == "CN=I"
    harmless = issue(common_name="L3", issuer=p.intermediate, extra_extensions=[(odd, False)])
    assert chain(harmless, p.intermediate, p.root)


def test_critical_policies_accepted_explicit_policy_refused(p: pki.PKI) -> None:
    policies = x509.CertificatePolicies(
        [x509.PolicyInformation(x509.ObjectIdentifier("2.16.840.1.101.3.2.1.48.1"), None)]
    )
    leaf = issue(common_name="L", issuer=p.intermediate, extra_extensions=[(policies, True)])
    assert chain(leaf, p.intermediate, p.root)
    strict = issue(
        common_name="Strict",
        purpose="ca",
        issuer=p.root,
        extra_extensions=[(x509.PolicyConstraints(0, None), True)],
    )
    with pytest.raises(CertificateUsageError, match="requires an explicit certificate policy"):
        chain(issue(common_name="L2", issuer=strict), strict, p.root)


# --- name constraints ----------------------------------------------------------------------------


def constrained_ca(
    root: Issued,
    permitted: list[x509.GeneralName] | None = None,
    excluded: list[x509.GeneralName] | None = None,
) -> Issued:
    constraints = x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=excluded)
    return issue(
        common_name="Constrained CA",
        purpose="ca",
        issuer=root,
        extra_extensions=[(constraints, True)],
    )


@pytest.mark.parametrize(
    ("tree", "address", "ok"),
    [
        ("example.com", "alice@example.com", True),
        ("example.com", "alice@EXAMPLE.com", True),
        ("example.com", "alice@mail.example.com", False),
        ("example.com", "alice@other.org", False),
        (".example.com", "alice@mail.example.com", True),
        (".example.com", "alice@example.com", False),
        (".example.com", "alice@badexample.com", False),
        ("alice@example.com", "alice@example.com", True),
        ("alice@example.com", "bob@example.com", False),
    ],
)
def test_rfc822_permitted(p: pki.PKI, tree: str, address: str, ok: bool) -> None:
    ca = constrained_ca(p.root, permitted=[x509.RFC822Name(tree)])
    leaf = issue(common_name="L", email=address, issuer=ca)
    if ok:
        assert chain(leaf, ca, p.root)
    else:
        with pytest.raises(CertificateUsageError, match="outside the permitted subtrees"):
            chain(leaf, ca, p.root)


@pytest.mark.parametrize(
    ("address", "ok"),
    [("x@evil.example", False), ("x@mail.evil.example", False), ("x@good.example", True)],
)
def test_rfc822_excluded(p: pki.PKI, address: str, ok: bool) -> None:
    ca = constrained_ca(
        p.root, excluded=[x509.RFC822Name("evil.example"), x509.RFC822Name(".evil.example")]
    )
    leaf = issue(common_name="L", email=address, issuer=ca)
    if ok:
        assert chain(leaf, ca, p.root)
    else:
        with pytest.raises(CertificateUsageError, match="excluded subtree"):
            chain(leaf, ca, p.root)


def test_rfc822_constraints_cover_legacy_subject_email(p: pki.PKI) -> None:
    ca = constrained_ca(p.root, permitted=[x509.RFC822Name("example.com")])
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Mallory"),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, "mallory@other.org"),
        ]
    )
    leaf = issue(common_name="Mallory", subject=subject, issuer=ca)  # no SAN at all
    with pytest.raises(CertificateUsageError, match=re.escape("mallory@other.org")):
        chain(leaf, ca, p.root)


def test_name_constraints_on_anchor_and_in_the_middle() -> None:
    root = issue(
        common_name="Root",
        purpose="ca",
        extra_extensions=[(x509.NameConstraints([x509.RFC822Name(".example.com")], None), True)],
    )
    inter = issue(common_name="Inter", purpose="ca", issuer=root)
    good = issue(common_name="G", email="g@a.example.com", issuer=inter)
    bad = issue(common_name="B", email="b@example.org", issuer=inter)
    assert chain(good, inter, root)
    with pytest.raises(CertificateUsageError, match="'CN=Root'"):
        chain(bad, inter, root)


def test_directory_name_constraints(p: pki.PKI) -> None:
    org = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Org")])
    ca = constrained_ca(p.root, permitted=[x509.DirectoryName(org)])

    def subject(org_name: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, org_name),
                x509.NameAttribute(NameOID.COMMON_NAME, "L"),
            ]
        )

    inside = issue(common_name="L", subject=subject("example  ORG"), issuer=ca)
    outside = issue(common_name="L", subject=subject("Other Org"), issuer=ca)
    assert chain(inside, ca, p.root)
    with pytest.raises(CertificateUsageError, match="outside the permitted subtrees"):
        chain(outside, ca, p.root)


@pytest.mark.parametrize(
    ("tree", "host", "ok"),
    [
        ("example.com", "example.com", True),
        ("example.com", "Mail.EXAMPLE.com", True),
        ("example.com", "badexample.com", False),
        ("example.com", "example.org", False),
        (".example.com", "example.com", False),
        (".example.com", "a.b.example.com", True),
    ],
)
def test_dns_name_constraints(p: pki.PKI, tree: str, host: str, ok: bool) -> None:
    san = x509.SubjectAlternativeName([x509.DNSName(host)])
    for permitted in (True, False):
        subtrees = [x509.DNSName(tree)]
        if permitted:
            ca = constrained_ca(p.root, permitted=subtrees)
        else:
            ca = constrained_ca(p.root, excluded=subtrees)
        leaf = issue(common_name="H", issuer=ca, extra_extensions=[(san, False)])
        if ok == permitted:
            assert chain(leaf, ca, p.root)
        else:
            with pytest.raises(CertificateUsageError, match=re.escape(f"DNS name {host!r}")):
                chain(leaf, ca, p.root)
    # No dNSName in the leaf: dNSName constraints do not apply (RFC 5280 4.2.1.10).
    ca = constrained_ca(p.root, permitted=[x509.DNSName(tree)])
    assert chain(issue(common_name="L", email="l@other.org", issuer=ca), ca, p.root)


@pytest.mark.parametrize(
    ("uri", "ok"),
    [
        ("https://www.example.com/index.html", True),
        ("ftp://a.b.example.com:21/x", True),
        ("https://example.com/", False),  # ".example.com" means hosts below it only
        ("https://www.example.org/", False),
        ("urn:isbn:0451450523", False),  # no host: cannot be checked, fails closed
    ],
)
def test_uri_name_constraints(p: pki.PKI, uri: str, ok: bool) -> None:
    ca = constrained_ca(p.root, permitted=[x509.UniformResourceIdentifier(".example.com")])
    san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)])
    leaf = issue(common_name="U", issuer=ca, extra_extensions=[(san, False)])
    if ok:
        assert chain(leaf, ca, p.root)
    else:
        with pytest.raises(CertificateUsageError, match="outside the permitted subtrees"):
            chain(leaf, ca, p.root)


@pytest.mark.parametrize(("address", "ok"), [("10.1.2.3", True), ("192.168.0.1", False)])
def test_ip_address_name_constraints(p: pki.PKI, address: str, ok: bool) -> None:
    ca = constrained_ca(p.root, permitted=[x509.IPAddress(ipaddress.ip_network("10.0.0.0/8"))])
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))])
    leaf = issue(common_name="I", issuer=ca, extra_extensions=[(san, False)])
    if ok:
        assert chain(leaf, ca, p.root)
    else:
        with pytest.raises(CertificateUsageError, match="outside the permitted subtrees"):
            chain(leaf, ca, p.root)


def test_unimplemented_name_form_fails_closed(p: pki.PKI) -> None:
    oid = x509.ObjectIdentifier("1.3.6.1.4.1.55555.7")
    ca = constrained_ca(p.root, permitted=[x509.RegisteredID(oid)])
    # No registeredID in the leaf: the constraint does not apply (RFC 5280 4.2.1.10).
    assert chain(issue(common_name="L", email="l@example.com", issuer=ca), ca, p.root)
    odd = issue(
        common_name="R",
        issuer=ca,
        extra_extensions=[(x509.SubjectAlternativeName([x509.RegisteredID(oid)]), False)],
    )
    with pytest.raises(CertificateUsageError, match="RegisteredID that securemail cannot check"):
        chain(odd, ca, p.root)


# --- weak crypto ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("digest", "label"), [(SHA1, "SHA-1"), (MD5, "MD5")])
def test_weak_signature_on_leaf(p: pki.PKI, digest: hashes.HashAlgorithm, label: str) -> None:
    root = issue(common_name="RSA Root", purpose="ca")
    leaf = issue(common_name="Old Alg", issuer=root, signature_hash=digest)
    with pytest.raises(UntrustedCertificateError, match=f"signature uses {label}") as info:
        chain(leaf, root)
    assert info.value.subject == "CN=Old Alg"
    assert chain(leaf, root, allow_weak=True).leaf == leaf.cert


def test_sha1_ecdsa_intermediate(p: pki.PKI) -> None:
    inter = issue(common_name="SHA1 Inter", purpose="ca", issuer=p.root, signature_hash=SHA1)
    leaf = issue(common_name="L", issuer=inter)
    with pytest.raises(UntrustedCertificateError, match="SHA-1") as info:
        chain(leaf, inter, p.root)
    assert info.value.subject == "CN=SHA1 Inter"
    assert chain(leaf, inter, p.root, allow_weak=True)


def test_forged_sha1_signature_is_not_accepted_even_when_weak_allowed() -> None:
    root = issue(common_name="Root", purpose="ca")
    impostor = issue(common_name="Root", purpose="ca")
    leaf = issue(common_name="L", issuer=impostor, signature_hash=SHA1)
    with pytest.raises(UntrustedCertificateError, match="does not verify"):
        chain(leaf, root, allow_weak=True)


def test_sha1_self_signature_of_anchor_does_not_matter() -> None:
    root = issue(common_name="Old Root", purpose="ca", signature_hash=SHA1)
    leaf = issue(common_name="L", issuer=root)
    assert chain(leaf, root).anchor == root.cert


def test_rsa_1024(p: pki.PKI) -> None:
    leaf = issue(common_name="Small", issuer=p.intermediate, key_type="rsa1024")
    with pytest.raises(UntrustedCertificateError, match="1024 bits"):
        chain(leaf, p.intermediate, p.root)
    assert chain(leaf, p.intermediate, p.root, allow_weak=True)
    small_ca = issue(common_name="Small CA", purpose="ca", key_type="rsa1024")
    with pytest.raises(UntrustedCertificateError, match="1024 bits") as info:
        chain(issue(common_name="L", issuer=small_ca), small_ca)
    assert info.value.subject == "CN=Small CA"


def test_dsa(p: pki.PKI) -> None:
    leaf = issue(common_name="DSA", issuer=p.intermediate, key_type="dsa2048", purpose="sign")
    with pytest.raises(UntrustedCertificateError, match="DSA"):
        chain(leaf, p.intermediate, p.root)
    assert chain(leaf, p.intermediate, p.root, allow_weak=True)
    dsa_ca = issue(common_name="DSA CA", purpose="ca", key_type="dsa2048")
    with pytest.raises(UntrustedCertificateError, match="signature uses DSA"):
        chain(issue(common_name="L", issuer=dsa_ca), dsa_ca)


# --- name matching (RFC 5280 7.1) -----------------------------------------------------------


def dn(*rdns: tuple[x509.ObjectIdentifier, str, _ASN1Type]) -> x509.Name:
    return x509.Name([x509.NameAttribute(oid, value, _type=kind) for oid, value, kind in rdns])


UTF8, PRINTABLE = _ASN1Type.UTF8String, _ASN1Type.PrintableString
ORG = (NameOID.ORGANIZATION_NAME, "Example Org", PRINTABLE)


@pytest.mark.parametrize(
    "written",
    [
        dn(ORG, (NameOID.COMMON_NAME, "Example CA", UTF8)),  # rollover to UTF8String
        dn(ORG, (NameOID.COMMON_NAME, "EXAMPLE ca", PRINTABLE)),  # case
        dn(ORG, (NameOID.COMMON_NAME, "  Example    CA ", PRINTABLE)),  # insignificant spaces
        dn(
            (NameOID.ORGANIZATION_NAME, "example org", UTF8),
            (NameOID.COMMON_NAME, "example ca", UTF8),
        ),
    ],
)
def test_issuer_names_match_after_string_preparation(p: pki.PKI, written: x509.Name) -> None:
    subject = dn(ORG, (NameOID.COMMON_NAME, "Example CA", PRINTABLE))
    ca = issue(common_name="Example CA", subject=subject, purpose="ca", issuer=p.root)
    leaf = issue(common_name="L", issuer=ca, issuer_name=written)
    assert leaf.cert.issuer.public_bytes() != ca.cert.subject.public_bytes()  # spelled otherwise
    assert chain(leaf, ca, p.root).certificates[1] == ca.cert
    # The CRL issuer name is matched the same way.
    crl = issue_crl(ca, [leaf.cert], issuer_name=written)
    with pytest.raises(CertificateRevokedError):
        chain(leaf, ca, p.root, crls=[crl])


def test_rdn_order_matters(p: pki.PKI) -> None:
    subject = dn(ORG, (NameOID.COMMON_NAME, "Example CA", PRINTABLE))
    ca = issue(common_name="Example CA", subject=subject, purpose="ca", issuer=p.root)
    swapped = dn((NameOID.COMMON_NAME, "Example CA", PRINTABLE), ORG)
    leaf = issue(common_name="L", issuer=ca, issuer_name=swapped)
    with pytest.raises(UntrustedCertificateError, match="not found"):
        chain(leaf, ca, p.root)


# --- certificate policies (RFC 5280 6.1) ---------------------------------------------------

P1, P2, P3 = (x509.ObjectIdentifier(f"2.16.840.1.101.3.2.1.48.{n}") for n in (1, 2, 3))


def policies(*oids: x509.ObjectIdentifier) -> tuple[x509.ExtensionType, bool]:
    return x509.CertificatePolicies([x509.PolicyInformation(oid, None) for oid in oids]), False


def policy_mappings(
    *pairs: tuple[x509.ObjectIdentifier, x509.ObjectIdentifier],
) -> tuple[x509.ExtensionType, bool]:
    der = asn1_x509.PolicyMappings(
        [
            {"issuer_domain_policy": a.dotted_string, "subject_domain_policy": b.dotted_string}
            for a, b in pairs
        ]
    ).dump()
    return x509.UnrecognizedExtension(ExtensionOID.POLICY_MAPPINGS, der), True


def policy_chain(
    *,
    root: list[tuple[x509.ExtensionType, bool]],
    inter: list[tuple[x509.ExtensionType, bool]],
    leaf: list[tuple[x509.ExtensionType, bool]],
) -> tuple[Issued, Issued, Issued]:
    r = issue(common_name="Policy Root", purpose="ca", key_type="p256", extra_extensions=root)
    i = issue(
        common_name="Policy Inter", purpose="ca", key_type="p256", issuer=r, extra_extensions=inter
    )
    return issue(common_name="L", issuer=i, key_type="p256", extra_extensions=leaf), i, r


def test_policies_of_a_path() -> None:
    leaf, inter, root = policy_chain(
        root=[policies(P1, P2)], inter=[policies(P1)], leaf=[policies(P1)]
    )
    assert chain(leaf, inter, root).policies == {P1}
    assert chain(leaf, inter, root, initial_policies=[P1, P3]).policies == {P1}
    assert chain(leaf, inter, root, initial_policies=[P2]).policies == frozenset()
    with pytest.raises(CertificateUsageError, match="none of its policies is among the initial"):
        chain(leaf, inter, root, initial_policies=[P2], require_explicit_policy=True)
    with pytest.raises(InputError):
        chain(leaf, inter, root, initial_policies=[])


def test_no_policies_is_fine_unless_explicit_policy_is_required(p: pki.PKI) -> None:
    assert chain(p.users["rsa"], p.intermediate, p.root).policies == frozenset()
    with pytest.raises(CertificateUsageError, match=r"the caller.*has no certificatePolicies"):
        chain(p.users["rsa"], p.intermediate, p.root, require_explicit_policy=True)


def test_any_policy_and_inhibit_any_policy() -> None:
    any_policy = [policies(ANY_POLICY)]
    leaf, inter, root = policy_chain(root=[], inter=any_policy, leaf=[policies(P1)])
    path = chain(leaf, inter, root, initial_policies=[P1], require_explicit_policy=True)
    assert path.policies == {P1}
    inhibited = [
        *any_policy,
        (x509.InhibitAnyPolicy(0), True),
        (x509.PolicyConstraints(require_explicit_policy=0, inhibit_policy_mapping=None), True),
    ]
    leaf, inter, root = policy_chain(root=[], inter=inhibited, leaf=any_policy)
    with pytest.raises(CertificateUsageError, match="'CN=Policy Inter' requires an explicit"):
        chain(leaf, inter, root)
    # The anchor's own extensions play no part (RFC 5280 6.1: an anchor is a name and a key).
    leaf, inter, root = policy_chain(root=inhibited, inter=any_policy, leaf=any_policy)
    assert chain(leaf, inter, root).policies == {ANY_POLICY}


def test_policy_mapping() -> None:
    leaf, inter, root = policy_chain(
        root=[], inter=[policies(P1), policy_mappings((P1, P2))], leaf=[policies(P2)]
    )
    # The path is valid for P1 in the anchor's policy domain: P2 is its equivalent below.
    path = chain(leaf, inter, root, initial_policies=[P1], require_explicit_policy=True)
    assert path.policies == {P1}
    with pytest.raises(CertificateUsageError, match="requires an explicit certificate policy"):
        chain(leaf, inter, root, initial_policies=[P2], require_explicit_policy=True)
    inhibit = (x509.PolicyConstraints(require_explicit_policy=0, inhibit_policy_mapping=0), True)
    root = issue(common_name="Policy Root", purpose="ca", key_type="p256")
    top_extensions = [policies(P1), inhibit]
    top = issue(common_name="Top", purpose="ca", issuer=root, extra_extensions=top_extensions)
    mapper_extensions = [policies(P1), policy_mappings((P1, P2))]
    mapper = issue(
        common_name="Mapper", purpose="ca", issuer=top, extra_extensions=mapper_extensions
    )
    leaf = issue(common_name="L", issuer=mapper, key_type="p256", extra_extensions=[policies(P2)])
    with pytest.raises(CertificateUsageError, match="policy mapping is inhibited"):
        chain(leaf, mapper, top, root)


def test_mapping_any_policy_is_refused() -> None:
    leaf, inter, root = policy_chain(
        root=[policies(ANY_POLICY)],
        inter=[policies(P1), policy_mappings((ANY_POLICY, P1))],
        leaf=[policies(P1)],
    )
    with pytest.raises(CertificateUsageError, match="anyPolicy"):
        chain(leaf, inter, root)


# --- revocation (RFC 5280 6.3) -------------------------------------------------------------

REQUIRED, IF_AVAILABLE, OFF = (
    RevocationCheck.REQUIRED,
    RevocationCheck.IF_AVAILABLE,
    RevocationCheck.OFF,
)


def crls_for(p: pki.PKI, *revoked: x509.Certificate) -> list[x509.CertificateRevocationList]:
    """Current CRLs from the root and the intermediate, listing ``revoked`` where they belong."""
    return [
        issue_crl(p.root, [c for c in revoked if c.issuer == p.root.cert.subject]),
        issue_crl(p.intermediate, [c for c in revoked if c.issuer == p.intermediate.cert.subject]),
    ]


@pytest.mark.parametrize("mode", [IF_AVAILABLE, REQUIRED])
def test_crls_show_the_path_unrevoked(p: pki.PKI, mode: RevocationCheck) -> None:
    path = chain(p.users["p256"], p.intermediate, p.root, crls=crls_for(p), revocation=mode)
    assert path.revocation_checked


@pytest.mark.parametrize("mode", [IF_AVAILABLE, REQUIRED])
def test_revoked_leaf(p: pki.PKI, mode: RevocationCheck) -> None:
    leaf = p.users["rsa"]
    with pytest.raises(CertificateRevokedError) as info:
        chain(leaf, p.intermediate, p.root, crls=crls_for(p, leaf.cert), revocation=mode)
    assert info.value.subject == "CN=Alice"
    assert info.value.revocation_reason == "keyCompromise"
    assert "according to the CRL from 'CN=securemail Test Intermediate'" in info.value.reason
    assert isinstance(info.value, CertificateError)
    path = chain(leaf, p.intermediate, p.root, crls=crls_for(p, leaf.cert), revocation=OFF)
    assert not path.revocation_checked


def test_revoked_intermediate(p: pki.PKI) -> None:
    with pytest.raises(CertificateRevokedError) as info:
        chain(p.users["rsa"], p.intermediate, p.root, crls=crls_for(p, p.intermediate.cert))
    assert info.value.subject == "CN=securemail Test Intermediate"
    assert "in the path of 'CN=Alice'" in info.value.reason


def test_required_needs_a_crl_for_every_certificate(p: pki.PKI) -> None:
    leaf = p.users["rsa"]
    with pytest.raises(UntrustedCertificateError) as info:
        chain(leaf, p.intermediate, p.root, revocation=REQUIRED)
    assert info.value.subject == "CN=securemail Test Intermediate"  # checked from the top
    assert "no current CRL from 'CN=securemail Test Root' covers" in info.value.reason
    root_only = [issue_crl(p.root)]
    with pytest.raises(UntrustedCertificateError, match="no CRL from its issuer was given") as info:
        chain(leaf, p.intermediate, p.root, crls=root_only, revocation=REQUIRED)
    assert info.value.subject == "CN=Alice"
    assert "RevocationCheck.IF_AVAILABLE" in info.value.reason
    assert not chain(leaf, p.intermediate, p.root, crls=root_only).revocation_checked
    # A directly trusted leaf has nothing to check.
    assert validate_path(
        leaf.cert, trust_anchors=[leaf.cert], revocation=REQUIRED
    ).revocation_checked


@pytest.mark.parametrize(
    ("last_update", "next_update", "why", "then"),
    [
        (NOW - 10 * DAY, NOW - DAY, "out of date", NOW - DAY),
        (NOW + DAY, NOW + 8 * DAY, "issued after the validation time", NOW + 2 * DAY),
    ],
)
def test_crl_must_be_current(
    p: pki.PKI, last_update: dt.datetime, next_update: dt.datetime, why: str, then: dt.datetime
) -> None:
    leaf = p.users["rsa"]
    crls = [
        issue_crl(p.root, last_update=last_update, next_update=next_update),
        issue_crl(p.intermediate, [leaf.cert], last_update=last_update, next_update=next_update),
    ]
    with pytest.raises(UntrustedCertificateError, match=why):
        chain(leaf, p.intermediate, p.root, crls=crls, revocation=REQUIRED)
    assert chain(leaf, p.intermediate, p.root, crls=crls)  # a CRL not current is not used
    with pytest.raises(CertificateRevokedError):  # ... but it is at a time when it is current
        chain(leaf, p.intermediate, p.root, crls=crls, at=then)


def test_crl_signed_by_another_key_is_not_used(p: pki.PKI) -> None:
    leaf = p.users["rsa"]
    impostor = issue(common_name="securemail Test Intermediate", purpose="ca", key_type="p256")
    crls = [issue_crl(p.root), issue_crl(impostor, [leaf.cert])]
    assert chain(leaf, p.intermediate, p.root, crls=crls)
    with pytest.raises(UntrustedCertificateError, match="signature on the CRL does not verify"):
        chain(leaf, p.intermediate, p.root, crls=crls, revocation=REQUIRED)


def test_crl_issuer_needs_crl_sign(p: pki.PKI) -> None:
    ca = issue(
        common_name="No CRLSign", purpose="ca", issuer=p.root, key_usage=ku(key_cert_sign=True)
    )
    leaf = issue(common_name="L", issuer=ca)
    crls = [issue_crl(p.root), issue_crl(ca, [leaf.cert])]
    assert chain(leaf, ca, p.root, crls=crls)
    with pytest.raises(UntrustedCertificateError, match="keyUsage without cRLSign"):
        chain(leaf, ca, p.root, crls=crls, revocation=REQUIRED)


def test_unknown_critical_crl_extensions_make_it_unusable(p: pki.PKI) -> None:
    odd = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.2"), b"\x05\x00")
    leaf = p.users["rsa"]
    entry = pki.Revocation(leaf.cert.serial_number, extensions=[(odd, True)])
    for crl, why in [
        (
            issue_crl(p.intermediate, [leaf.cert], extensions=[(odd, True)]),
            "unknown critical extension",
        ),
        (issue_crl(p.intermediate, [entry]), "entry for serial number"),
    ]:
        with pytest.raises(UntrustedCertificateError, match=why):
            chain(leaf, p.intermediate, p.root, crls=[issue_crl(p.root), crl], revocation=REQUIRED)
    harmless = issue_crl(p.intermediate, [leaf.cert], extensions=[(odd, False)])
    with pytest.raises(CertificateRevokedError):
        chain(leaf, p.intermediate, p.root, crls=[harmless])


def test_every_current_crl_is_searched(p: pki.PKI) -> None:
    leaf = p.users["rsa"]
    newer_without_it = issue_crl(p.intermediate, number=2)
    older_with_it = issue_crl(p.intermediate, [leaf.cert], last_update=NOW - 2 * DAY)
    with pytest.raises(CertificateRevokedError):
        chain(leaf, p.intermediate, p.root, crls=[newer_without_it, older_with_it])


def test_separate_crl_signing_key() -> None:
    root = issue(common_name="Root", purpose="ca", key_type="p256")
    ca = issue(
        common_name="Split CA",
        purpose="ca",
        key_type="p256",
        issuer=root,
        key_usage=ku(key_cert_sign=True),
    )
    signer = issue(
        common_name="Split CA",
        purpose="ca",
        key_type="p256",
        issuer=root,
        key_usage=ku(crl_sign=True),
    )
    leaf = issue(common_name="L", issuer=ca)
    root_crl = issue_crl(root)
    for revoked, error in [([leaf.cert], CertificateRevokedError), ([], None)]:
        crls = [root_crl, issue_crl(signer, revoked)]
        kwargs = {"trust_anchors": [root.cert], "crls": crls, "revocation": REQUIRED}
        if error is None:
            assert validate_path(leaf.cert, intermediates=[ca.cert, signer.cert], **kwargs)
        else:
            with pytest.raises(error):
                validate_path(leaf.cert, intermediates=[ca.cert, signer.cert], **kwargs)
        # Without the CRL signer's certificate, only the CA's key is tried.
        with pytest.raises(UntrustedCertificateError, match="does not verify with the key of"):
            validate_path(leaf.cert, intermediates=[ca.cert], **kwargs)
    # The CRL signer's own certificate is revoked: its CRLs prove nothing.
    crls = [issue_crl(root, [signer.cert]), issue_crl(signer, [leaf.cert])]
    with pytest.raises(UntrustedCertificateError, match="its signer 'CN=Split CA' is not valid"):
        validate_path(
            leaf.cert,
            trust_anchors=[root.cert],
            intermediates=[ca.cert, signer.cert],
            crls=crls,
            revocation=REQUIRED,
        )
    assert validate_path(
        leaf.cert, trust_anchors=[root.cert], intermediates=[ca.cert, signer.cert], crls=crls
    )


def test_delta_crls(p: pki.PKI) -> None:
    leaf, other = p.users["rsa"], p.users["p256"]
    hold = pki.Revocation(leaf.cert.serial_number, reason=x509.ReasonFlags.certificate_hold)
    complete = issue_crl(p.intermediate, [hold], number=10)

    def delta(
        *entries: pki.Revocation, base: int = 10, number: int = 11
    ) -> x509.CertificateRevocationList:
        return issue_crl(
            p.intermediate,
            list(entries),
            number=number,
            extensions=[(x509.DeltaCRLIndicator(base), True)],
        )

    released = delta(
        pki.Revocation(leaf.cert.serial_number, reason=x509.ReasonFlags.remove_from_crl)
    )
    crls = [issue_crl(p.root), complete, released]
    assert chain(leaf, p.intermediate, p.root, crls=crls, revocation=REQUIRED).revocation_checked
    with pytest.raises(CertificateRevokedError) as info:  # the hold stands without the delta
        chain(leaf, p.intermediate, p.root, crls=crls[:2])
    assert info.value.revocation_reason == "certificateHold"
    news = delta(pki.Revocation(other.cert.serial_number))
    with pytest.raises(CertificateRevokedError, match="delta CRL"):
        chain(other, p.intermediate, p.root, crls=[issue_crl(p.root), complete, news])
    # A delta whose base is newer than the complete CRL does not apply; alone it covers nothing.
    unrelated = delta(pki.Revocation(other.cert.serial_number), base=11, number=12)
    assert chain(other, p.intermediate, p.root, crls=[issue_crl(p.root), complete, unrelated])
    with pytest.raises(UntrustedCertificateError, match="no CRL from its issuer"):
        chain(other, p.intermediate, p.root, crls=[issue_crl(p.root), news], revocation=REQUIRED)


def idp(**fields: object) -> tuple[x509.ExtensionType, bool]:
    values: dict[str, object] = {
        "full_name": None,
        "relative_name": None,
        "only_contains_user_certs": False,
        "only_contains_ca_certs": False,
        "only_some_reasons": None,
        "indirect_crl": False,
        "only_contains_attribute_certs": False,
    }
    values.update(fields)
    return x509.IssuingDistributionPoint(**values), True  # type: ignore[arg-type]


def test_crl_scope_by_certificate_kind(p: pki.PKI) -> None:
    leaf = p.users["rsa"]
    ca_only = issue_crl(p.intermediate, [leaf.cert], extensions=[idp(only_contains_ca_certs=True)])
    with pytest.raises(UntrustedCertificateError, match="only covers CA certificates"):
        chain(leaf, p.intermediate, p.root, crls=[issue_crl(p.root), ca_only], revocation=REQUIRED)
    users_only = issue_crl(
        p.root, [p.intermediate.cert], extensions=[idp(only_contains_user_certs=True)]
    )
    with pytest.raises(UntrustedCertificateError, match="only covers end-entity certificates"):
        chain(leaf, p.intermediate, p.root, crls=[users_only], revocation=REQUIRED)


def test_crl_scope_by_reasons(p: pki.PKI) -> None:
    leaf = p.users["rsa"]
    some = frozenset({x509.ReasonFlags.key_compromise, x509.ReasonFlags.ca_compromise})
    rest = ALL_REASONS - some
    first = issue_crl(p.intermediate, extensions=[idp(only_some_reasons=some)])
    second = issue_crl(p.intermediate, extensions=[idp(only_some_reasons=rest)])
    with pytest.raises(UntrustedCertificateError, match="do not cover the reasons"):
        chain(leaf, p.intermediate, p.root, crls=[issue_crl(p.root), first], revocation=REQUIRED)
    assert chain(
        leaf, p.intermediate, p.root, crls=[issue_crl(p.root), first, second], revocation=REQUIRED
    )


def test_distribution_point_names(p: pki.PKI) -> None:
    url = "http://crl.example/inter.crl"
    point = x509.DistributionPoint([x509.UniformResourceIdentifier(url)], None, None, None)
    leaf = issue(
        common_name="DP",
        issuer=p.intermediate,
        extra_extensions=[(x509.CRLDistributionPoints([point]), False)],
    )
    right = issue_crl(
        p.intermediate,
        [leaf.cert],
        extensions=[idp(full_name=[x509.UniformResourceIdentifier(url)])],
    )
    other = x509.UniformResourceIdentifier("http://crl.example/other.crl")
    wrong = issue_crl(p.intermediate, [leaf.cert], extensions=[idp(full_name=[other])])
    with pytest.raises(CertificateRevokedError):
        chain(leaf, p.intermediate, p.root, crls=[issue_crl(p.root), right])
    with pytest.raises(UntrustedCertificateError, match="issuingDistributionPoint is not one of"):
        chain(leaf, p.intermediate, p.root, crls=[issue_crl(p.root), wrong], revocation=REQUIRED)
    # A full CRL (no issuingDistributionPoint) covers every certificate of its issuer.
    full = issue_crl(p.intermediate, [leaf.cert])
    with pytest.raises(CertificateRevokedError):
        chain(leaf, p.intermediate, p.root, crls=[issue_crl(p.root), full])


def test_indirect_crl(p: pki.PKI) -> None:
    service = issue(
        common_name="Revocation Service", purpose="ca", issuer=p.root, key_usage=ku(crl_sign=True)
    )
    point = x509.DistributionPoint(None, None, None, [x509.DirectoryName(service.cert.subject)])
    dps = (x509.CRLDistributionPoints([point]), False)
    leaf = issue(common_name="Indirect", issuer=p.intermediate, extra_extensions=[dps])
    same_serial_elsewhere = pki.Revocation(leaf.cert.serial_number)  # the service's own serial
    for_leaf = pki.Revocation(
        leaf.cert.serial_number,
        extensions=[
            (x509.CertificateIssuer([x509.DirectoryName(p.intermediate.cert.subject)]), True)
        ],
    )
    chain_kwargs = {
        "trust_anchors": [p.root.cert],
        "intermediates": [p.intermediate.cert, service.cert],
    }
    indirect = [idp(indirect_crl=True)]
    crls = [issue_crl(p.root), issue_crl(service, [same_serial_elsewhere], extensions=indirect)]
    assert validate_path(
        leaf.cert, crls=crls, revocation=REQUIRED, **chain_kwargs
    ).revocation_checked
    crls = [
        issue_crl(p.root),
        issue_crl(service, [same_serial_elsewhere, for_leaf], extensions=indirect),
    ]
    with pytest.raises(CertificateRevokedError, match="'CN=Revocation Service'"):
        validate_path(leaf.cert, crls=crls, **chain_kwargs)
    not_indirect = [issue_crl(p.root), issue_crl(service, [same_serial_elsewhere])]
    with pytest.raises(UntrustedCertificateError, match="not an indirect CRL"):
        validate_path(leaf.cert, crls=not_indirect, revocation=REQUIRED, **chain_kwargs)


# --- email addresses -----------------------------------------------------------------------------


def test_email_addresses_and_matching(p: pki.PKI) -> None:
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "Alice"),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, "Alice@Example.COM"),
            x509.NameAttribute(NameOID.EMAIL_ADDRESS, "legacy@example.org"),
        ]
    )
    cert = issue(
        common_name="Alice",
        subject=subject,
        email="Alice@EXAMPLE.com",
        issuer=p.intermediate,
    ).cert
    assert email_addresses(cert) == ("Alice@example.com", "legacy@example.org")
    assert matches_email(cert, "alice@example.com")
    assert matches_email(cert, " ALICE@example.COM ")
    assert matches_email(cert, "legacy@EXAMPLE.org")
    assert not matches_email(cert, "alice@example.org")
    assert not matches_email(cert, "Alice")
    assert email_addresses(issue(common_name="Nobody").cert) == ()


# --- real material -------------------------------------------------------------------------------


def load_pem(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


RFC9216_LEAVES = [
    f"{who}@smime.example.{kind}.pem"
    for who in ("alice", "bob", "carlos", "dana")
    for kind in ("sig", "enc")
]


@pytest.mark.parametrize("name", RFC9216_LEAVES)
def test_rfc9216(interop_dir: Path, name: str) -> None:
    certs = interop_dir / "rfc9216" / "certs"
    rsa_ca = load_pem(certs / "Sample_LAMPS_RSA_Certification_Authority.selfsigned.pem")
    ed_ca = load_pem(certs / "Sample_LAMPS_Ed25519_Certification_Authority.selfsigned.pem")
    leaf = load_pem(certs / name)
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    purpose = SIGN if usage.digital_signature else ENCRYPT
    path = validate_path(leaf, trust_anchors=[rsa_ca, ed_ca], purpose=purpose)
    assert path.anchor == (ed_ca if name.startswith(("carlos", "dana")) else rsa_ca)
    assert email_addresses(leaf) == (f"{name.partition('@')[0]}@smime.example",)
    other = ENCRYPT if purpose is SIGN else SIGN
    with pytest.raises(CertificateUsageError):
        validate_path(leaf, trust_anchors=[rsa_ca, ed_ca], purpose=other)


def test_rfc9216_cross_certification(interop_dir: Path) -> None:
    certs = interop_dir / "rfc9216" / "certs"
    rsa_ca = load_pem(certs / "Sample_LAMPS_RSA_Certification_Authority.selfsigned.pem")
    ed_cross = load_pem(certs / "Sample_LAMPS_Ed25519_Certification_Authority.crosssigned.pem")
    ed_self = load_pem(certs / "Sample_LAMPS_Ed25519_Certification_Authority.selfsigned.pem")
    rsa_cross = load_pem(certs / "Sample_LAMPS_RSA_Certification_Authority.crosssigned.pem")
    dana = load_pem(certs / "dana@smime.example.sig.pem")
    path = validate_path(dana, trust_anchors=[rsa_ca], intermediates=[ed_self, rsa_cross, ed_cross])
    assert path.certificates == (dana, ed_cross, rsa_ca)


def test_hiraoka(interop_dir: Path) -> None:
    certs = interop_dir / "hiraoka-smime-mail-samples" / "certs"
    ca = load_pem(certs / "ca_smime.crt")
    for n in (1, 2):
        leaf = load_pem(certs / f"smime-{n}.crt")
        for purpose in (SIGN, ENCRYPT):
            assert validate_path(leaf, trust_anchors=[ca], purpose=purpose).anchor == ca
        assert email_addresses(leaf) == (f"smime{n}@hmailserver.test",)


# NSS regenerates this set every five years; the current leaves expire on 2031-01-26.
NSS_TIME = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


@pytest.mark.filterwarnings("ignore:PKCS#12 bundle could not be parsed as DER")
def test_thunderbird_alice(interop_dir: Path) -> None:
    smime = interop_dir / "thunderbird-smime" / "smime"
    test_ca = load_pem(smime / "TestCA.pem")
    _, alice, _ = pkcs12.load_key_and_certificates((smime / "Alice.p12").read_bytes(), b"nss")
    assert alice is not None
    assert len(alice.extensions) == 0  # no extensions at all: v3 without any
    for purpose in (SIGN, ENCRYPT):
        path = validate_path(alice, trust_anchors=[test_ca], at=NSS_TIME, purpose=purpose)
        assert path.certificates == (alice, test_ca)
    assert email_addresses(alice) == ("Alice@example.com",)
    assert matches_email(alice, "alice@example.com")


def test_thunderbird_same_dn_other_key(interop_dir: Path) -> None:
    tb = interop_dir / "thunderbird-smime"
    test_ca = load_pem(tb / "smime" / "TestCA.pem")
    message = email.message_from_bytes(
        (tb / "browser-smime" / "alice.html.sig.SHA256.opaque.eml").read_bytes()
    )
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    signed = cms.ContentInfo.load(payload)["content"]
    certs = [x509.load_der_x509_certificate(c.chosen.dump()) for c in signed["certificates"]]
    (alice,) = [c for c in certs if "CN=Alice" in c.subject.rfc4514_string()]
    assert alice.issuer == test_ca.subject
    with pytest.raises(UntrustedCertificateError, match="does not verify"):
        validate_path(alice, trust_anchors=[test_ca], intermediates=certs, at=NSS_TIME)
