"""S/MIME messages and CMS objects made by other implementations, read in place.

Every case states the outcome we expect, layer by layer (outermost first), and why; the
same table is rendered into ``docs/interop.md`` (``python tests/interop/test_corpus_smime.py``
rewrites it, and :func:`test_interop_doc_is_current` keeps the two in step). An expected
failure is asserted as precisely as a success: if a producer's message starts to pass, or
to fail differently, the test says so.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509

from securemail import wire
from securemail.errors import (
    DecryptionError,
    KeyLoadError,
    MalformedASN1Error,
    NotARecipientError,
    SecureMailError,
    SignatureInvalidError,
    UnsupportedAlgorithmError,
    WrongPasswordError,
)
from securemail.inbound import iter_attachments
from securemail.keys import (
    Identity,
    load_certificate,
    load_certificates,
    load_identity,
    load_pkcs12,
    load_private_key,
)
from securemail.policy import DEFAULT
from securemail.results import DecryptResult, ReadResult
from securemail.smime import enveloped, read, signed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from conftest import find_interop_dir

# --- keys and trust anchors, per corpus folder ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KeySet:
    identity: Callable[[Path], Identity | None]
    trust: Callable[[Path], list[x509.Certificate]]
    text: str
    """A phrase of the plaintext every readable message of the set contains."""


def _tb_trust(c: Path) -> list[x509.Certificate]:
    return list(load_certificates(c / "thunderbird-smime/smime/TestCA.pem"))


KEYSETS: dict[str, KeySet] = {
    "nss-bob": KeySet(
        lambda c: load_pkcs12(c / "thunderbird-smime/smime/Bob.p12", "nss"),
        _tb_trust,
        "This is a test message from Alice to Bob.",
    ),
    "nss-fran": KeySet(
        lambda c: load_pkcs12(c / "thunderbird-smime/smime-interop/Fran.p12", "nss"),
        lambda c: [],
        "This is a test message to Fran.",
    ),
    "nss-fran-ec": KeySet(
        lambda c: load_pkcs12(c / "thunderbird-smime/smime-interop/Fran-ec.p12", "nss"),
        lambda c: [],
        "This is a test message to Fran.",
    ),
    "hiraoka": KeySet(
        lambda c: load_identity(
            c / "hiraoka-smime-mail-samples/certs/smime-2.key",
            c / "hiraoka-smime-mail-samples/certs/smime-2.crt",
        ),
        lambda c: list(load_certificates(c / "hiraoka-smime-mail-samples/certs/ca_smime.crt")),
        "",
    ),
    "lamps-draft": KeySet(
        lambda c: load_pkcs12(c / "autocrypt-protected-headers/keys/bob.p12", "bob"),
        lambda c: list(load_certificates(c / "autocrypt-protected-headers/keys/sample-ca.pem")),
        "Alice Lovelace",
    ),
    "notmuch": KeySet(
        lambda c: load_pkcs12(c / "notmuch/smime/bob.p12"),
        lambda c: list(load_certificates(c / "notmuch/smime/ca.crt")),
        "",
    ),
    "rfc4134": KeySet(
        lambda c: Identity.create(
            load_private_key(c / "rfc4134/BobPrivRSAEncrypt.pri"),
            load_certificate(c / "rfc4134/BobRSASignByCarl.cer"),
        ),
        lambda c: [
            load_certificate(c / "rfc4134/CarlRSASelf.cer"),
            load_certificate(c / "rfc4134/CarlDSSSelf.cer"),
        ],
        "This is some sample content.",
    ),
    "openssl": KeySet(
        lambda c: load_identity(c / "openssl/smime-certs/smec3.pem"),
        lambda c: list(load_certificates(c / "openssl/certs/pkitsta.pem")),
        "Somewhat longer test content for OpenSSL CMS utility",
    ),
    "startcom": KeySet(
        lambda c: None,
        lambda c: list(load_certificates(c / "mimekit/StartComCertificationAuthority.crt")),
        "",
    ),
}


# --- the message table ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    path: str
    keys: str
    expect: str
    note: str = ""
    weak: bool = False
    """Accept SHA-1 and DSA (Policy.allow_weak_algorithms) for this old message."""
    at: dt.datetime | None = None


_NSS_BUG = "outer signature covers other bytes (NSS generator bug; OpenSSL and Thunderbird agree)"
_DAVE = "Dave's outer signature verifies; Alice's inner one is valid but the message is From Dave"


def _nss_cases() -> list[Case]:
    cases = []
    for digest in ("SHA1", "SHA256", "SHA384", "SHA512"):
        weak = digest == "SHA1"
        d = digest
        cases += [
            Case(f"smime/alice.dsig.{d}.multipart.eml", "nss-bob", "signature verified", weak=weak),
            Case(
                f"smime/alice.dsig.{d}.multipart.bad.eml",
                "nss-bob",
                "signature failed SignatureInvalidError",
                "body altered after signing",
                weak=weak,
            ),
            Case(
                f"smime/alice.dsig.{d}.multipart.mismatch-econtent.eml",
                "nss-bob",
                "signature failed SignatureInvalidError",
                "detached signature that also carries content",
                weak=weak,
            ),
            Case(
                f"smime/alice.dsig.{d}.multipart.env.eml",
                "nss-bob",
                "decrypted aes-128-cbc > signature verified",
                weak=weak,
            ),
            Case(
                f"smime/alice.env.dsig.{d}.multipart.eml",
                "nss-bob",
                "signature failed SignatureInvalidError > decrypted aes-128-cbc",
                _NSS_BUG,
                weak=weak,
            ),
            Case(
                f"smime/alice.env.dsig.{d}.multipart.dave.sig.{d}.opaque.eml",
                "nss-bob",
                "signature verified > signature failed SignatureInvalidError"
                " > decrypted aes-128-cbc",
                _NSS_BUG,
                weak=weak,
            ),
            Case(
                f"smime/alice.env.sig.{d}.opaque.eml",
                "nss-bob",
                "signature verified > decrypted aes-128-cbc",
                "encrypt, then sign",
                weak=weak,
            ),
            Case(
                f"smime/alice.env.sig.{d}.opaque.dave.sig.{d}.opaque.eml",
                "nss-bob",
                "signature verified > signature failed SignerMismatch > decrypted aes-128-cbc",
                _DAVE,
                weak=weak,
            ),
            Case(f"smime/alice.sig.{d}.opaque.eml", "nss-bob", "signature verified", weak=weak),
            Case(
                f"smime/alice.sig.{d}.opaque.env.eml",
                "nss-bob",
                "decrypted aes-128-cbc > signature verified",
                weak=weak,
            ),
            Case(
                f"smime/alice.html.sig.{d}.opaque.eml", "nss-bob", "signature verified", weak=weak
            ),
            Case(
                f"smime/alice.html.sig.{d}.opaque.env.eml",
                "nss-bob",
                "decrypted aes-128-cbc > signature verified",
                weak=weak,
            ),
        ]
        for inner in ("dsig", "sig"):
            for outer in ("dsig", "sig"):
                kind = {"dsig": "multipart", "sig": "opaque"}
                name = (
                    f"smime/alice.plain.{inner}.{d}.{kind[inner]}"
                    f".dave.{outer}.{d}.{kind[outer]}.eml"
                )
                cases.append(
                    Case(
                        name,
                        "nss-bob",
                        "signature verified > signature failed SignerMismatch",
                        _DAVE,
                        weak=weak,
                    )
                )
    return [dataclasses.replace(c, path=f"thunderbird-smime/{c.path}") for c in cases]


CASES: list[Case] = [
    *_nss_cases(),
    Case(
        "thunderbird-smime/smime/alice.sig.SHA1.opaque.eml",
        "nss-bob",
        "signature not-checked UnsupportedAlgorithmError",
        "SHA-1 refused by the default policy",
    ),
    Case("thunderbird-smime/smime/alice.env.eml", "nss-bob", "decrypted aes-128-cbc"),
    Case(
        "thunderbird-smime/smime/alice.future.dsig.SHA256.multipart.eml",
        "nss-bob",
        "signature verified",
        "Date 6 h after signingTime; not a signature failure",
    ),
    Case(
        "thunderbird-smime/browser-smime/alice.dsig.SHA256.multipart.in.mixed.eml",
        "nss-bob",
        "signature partial PartialSignatureError",
        "valid signature inside mailing-list multipart/mixed: never 'verified'",
    ),
    Case(
        "thunderbird-smime/browser-smime/alice.dsig.SHA256.multipart.in.mixed.with.header.eml",
        "nss-bob",
        "signature partial PartialSignatureError",
        "same, with a list header part",
    ),
    Case(
        "thunderbird-smime/browser-smime/alice.html.sig.SHA256.opaque.eml",
        "nss-bob",
        "signature failed UntrustedCertificateError",
        "signer issued by an older CA with the same name and another key",
    ),
    Case(
        "thunderbird-smime/browser-smime/multipart-alternative.eml",
        "nss-bob",
        "error EmbeddedCiphertextError",
        "EFAIL gadget: two encrypted parts in multipart/alternative are not decrypted",
    ),
    Case(
        "thunderbird-smime/browser-smime/nested-sigs.eml",
        "nss-bob",
        "signature failed SignatureInvalidError",
        "rendering test; its signatures are not valid",
    ),
    Case(
        "thunderbird-smime/smime-manual/alice.dsig.SHA256.multipart.env.dsig.eml",
        "nss-bob",
        "signature failed SignatureInvalidError > decrypted aes-128-cbc > signature verified",
        "hand-made: outer signature does not match",
    ),
    Case(
        "thunderbird-smime/smime-manual/alice.env.mixed.dsig.SHA256.multipart.eml",
        "nss-bob",
        "error EmbeddedCiphertextError",
        "ciphertext next to other parts under a signature: refused (EFAIL)",
    ),
    Case(
        "thunderbird-smime/smime-manual/outer-smime-bad-sig-inner-smime-enc.eml",
        "nss-bob",
        "signature failed SignatureInvalidError > decrypted aes-128-cbc",
        "hand-made: outer signature does not match",
    ),
    Case(
        "thunderbird-smime/smime-manual/outer-smime-bad-sig-inner-smime-enc-sig.eml",
        "nss-bob",
        "signature failed SignatureInvalidError > decrypted aes-128-cbc > signature verified",
        "hand-made: outer signature does not match",
    ),
    Case(
        "thunderbird-smime/smime-manual/outer-pgp-sig-inner-smime-enc.eml",
        "nss-bob",
        "error NotARecipientError",
        "PGP outer signature (not S/MIME) around a part encrypted to an older Bob key "
        "(OpenSSL cannot decrypt it either)",
    ),
    Case(
        "thunderbird-smime/smime-manual/outer-pgp-sig-inner-smime-enc-sig.eml",
        "nss-bob",
        "error NotARecipientError",
        "same",
    ),
    *[
        Case(f"thunderbird-smime/smime-interop/{name}", keys, f"decrypted {cipher}", note)
        for name, keys, cipher, note in [
            ("fran-oaep_ossl.env", "nss-fran", "des-ede3-cbc", "OpenSSL: RSA-OAEP (SHA-1)"),
            ("fran-oaep-label_ossl.env", "nss-fran", "aes-256-cbc", "OpenSSL: OAEP with a label"),
            ("fran-oaep-sha256hash_ossl.env", "nss-fran", "aes-128-cbc", "OAEP SHA-256/MGF1-SHA1"),
            (
                "fran-oaep-sha256hash-sha256mgf_ossl.env",
                "nss-fran",
                "aes-256-cbc",
                "OAEP SHA-256/MGF1-SHA256",
            ),
            (
                "fran-ec_ossl-aes128-sha256.env",
                "nss-fran-ec",
                "aes-128-cbc",
                "OpenSSL: ECDH P-384, X9.63 SHA-256 KDF",
            ),
            (
                "fran-ec_ossl-aes256-sha512.env",
                "nss-fran-ec",
                "aes-256-cbc",
                "OpenSSL: ECDH P-384, X9.63 SHA-512 KDF",
            ),
        ]
    ],
    *[
        Case(f"hiraoka-smime-mail-samples/{folder}/{producer}-{kind}.eml", "hiraoka", expect, note)
        for folder, producer, kind, expect, note in [
            ("received-at-smime2", "outlook2013", "encrypted", "decrypted aes-256-cbc", "Outlook"),
            ("received-at-smime2", "outlook2013", "plain", "no protection", ""),
            (
                "received-at-smime2",
                "outlook2013",
                "signed",
                "signature not-checked UnsupportedAlgorithmError",
                "Outlook signs with SHA-1: refused by default",
            ),
            (
                "received-at-smime2",
                "outlook2013",
                "signed-and-encrypted",
                "decrypted aes-256-cbc > signature not-checked UnsupportedAlgorithmError",
                "SHA-1 inside",
            ),
            ("received-at-smime2", "thunderbird128", "encrypted", "decrypted aes-128-cbc", ""),
            ("received-at-smime2", "thunderbird128", "plain", "no protection", ""),
            ("received-at-smime2", "thunderbird128", "signed", "signature verified", ""),
            (
                "received-at-smime2",
                "thunderbird128",
                "signed-and-encrypted",
                "decrypted aes-128-cbc > signature verified",
                "",
            ),
            ("sent-from-smime1", "thunderbird128", "encrypted", "decrypted aes-128-cbc", ""),
            ("sent-from-smime1", "thunderbird128", "plain", "no protection", ""),
            ("sent-from-smime1", "thunderbird128", "signed", "signature verified", ""),
            (
                "sent-from-smime1",
                "thunderbird128",
                "signed-and-encrypted",
                "decrypted aes-128-cbc > signature verified",
                "",
            ),
        ]
    ],
    Case(
        "hiraoka-smime-mail-samples/received-at-smime2/outlook2013-signed.eml",
        "hiraoka",
        "signature verified",
        "Outlook SHA-1 accepted with allow_weak_algorithms",
        weak=True,
    ),
    Case(
        "hiraoka-smime-mail-samples/received-at-smime2/outlook2013-signed-and-encrypted.eml",
        "hiraoka",
        "decrypted aes-256-cbc > signature verified",
        "with allow_weak_algorithms",
        weak=True,
    ),
    *[
        Case(f"autocrypt-protected-headers/vectors/{name}.eml", "lamps-draft", expect, note)
        for name, expect, note in [
            ("smime-enc+legacy-disp", "decrypted des-ede3-cbc", "protected headers restored"),
            ("smime-multipart-signed", "signature verified", "GnuTLS-signed"),
            ("smime-onepart-signed", "signature verified", "GnuTLS-signed, opaque"),
            ("smime-sign+enc", "decrypted des-ede3-cbc > signature verified", ""),
            ("smime-sign+enc+legacy-disp", "decrypted des-ede3-cbc > signature verified", ""),
        ]
    ],
    Case("notmuch/corpora-pkcs7/smime-onepart-signed.eml", "notmuch", "signature verified"),
    Case(
        "rfc4134/4.8.eml",
        "rfc4134",
        "signature not-checked UnsupportedAlgorithmError",
        "DSA with SHA-1: refused by default",
    ),
    Case(
        "rfc4134/4.8.eml",
        "rfc4134",
        "signature failed SignerMismatch",
        "valid DSA signature, but From aliceDss@examples.com is not the "
        "certificate's AliceDSS@example.com (a typo in the RFC)",
        weak=True,
    ),
    Case(
        "rfc4134/4.9.eml",
        "rfc4134",
        "signature failed SignerMismatch",
        "same, opaque",
        weak=True,
    ),
    Case(
        "rfc4134/5.3.eml",
        "rfc4134",
        "decrypted des-ede3-cbc",
        "content is not MIME; read as text/plain",
    ),
    Case(
        "openssl/cms-data/ciphertext_from_1_1_1.cms",
        "openssl",
        "decrypted des-ede3-cbc",
        "OpenSSL 1.1.1: two ECDH recipients, SHA-1 KDF, 3DES key wrap",
    ),
    Case(
        "openssl/smime-eml/pkcs7-empty-digest-set.eml",
        "openssl",
        "signature failed SignatureInvalidError",
        "empty digestAlgorithms SET",
    ),
    Case(
        "openssl/smime-eml/SignedInvalidMappingFromanyPolicyTest7.eml",
        "openssl",
        "signature failed CertificateUsageError",
        "PKITS: policy mapping from anyPolicy is invalid",
    ),
    Case(
        "mimekit/thunderbird24-signed-startcom.eml",
        "startcom",
        "signature verified",
        "Thunderbird 24 (2013), validated at 2014-01-01",
        weak=True,
        at=dt.datetime(2014, 1, 1, tzinfo=dt.UTC),
    ),
    Case(
        "mimekit/thunderbird24-signed-startcom.eml",
        "startcom",
        "signature failed CertificateExpiredError",
        "validated today: the StartCom certificates have expired",
        weak=True,
    ),
]


# --- running a case ------------------------------------------------------------------------------


def trace_of(result: ReadResult) -> str:
    parts = []
    for layer in result.layers:
        if isinstance(layer, DecryptResult):
            auth = " authenticated" if layer.authenticated else ""
            parts.append(f"decrypted {layer.content_cipher}{auth}")
        else:
            error = f" {type(layer.error).__name__}" if layer.error is not None else ""
            parts.append(f"signature {layer.status.value}{error}")
    return " > ".join(parts) or "no protection"


@functools.cache
def _keys(name: str) -> tuple[Identity | None, tuple[x509.Certificate, ...]]:
    corpus = find_interop_dir()
    assert corpus is not None
    keyset = KEYSETS[name]
    return keyset.identity(corpus), tuple(keyset.trust(corpus))


def run_case(case: Case, corpus: Path) -> tuple[str, ReadResult | None]:
    identity, trust = _keys(case.keys)
    policy = DEFAULT.clone(allow_weak_algorithms=case.weak)
    try:
        result = read(
            (corpus / case.path).read_bytes(),
            identity=identity,
            trust=trust,
            policy=policy,
            at=case.at,
        )
    except SecureMailError as exc:
        return f"error {type(exc).__name__}", None
    return trace_of(result), result


def _case_id(case: Case) -> str:
    return (
        case.path.split("/", 1)[1]
        + ("+weak" if case.weak else "")
        + ("@" + case.at.date().isoformat() if case.at else "")
    )


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_corpus_message(case: Case, interop_dir: Path) -> None:
    trace, result = run_case(case, interop_dir)
    assert trace == case.expect
    if result is None or "failed" in trace or "not-checked" in trace:
        return
    # What was opened is the sender's message: the known text is in it.
    text = KEYSETS[case.keys].text
    body = b"".join(
        part.get_payload(decode=True) or b""
        for part in result.message.walk()
        if part.get_content_maintype() == "text"
    )
    assert text.encode() in body


def test_every_corpus_smime_message_is_covered(interop_dir: Path) -> None:
    """A new file in the corpus must get an expectation here."""
    covered = {case.path for case in CASES}
    found = {
        str(path.relative_to(interop_dir))
        for pattern in (
            "thunderbird-smime/*/*.eml",
            "thunderbird-smime/smime-interop/*.env",
            "hiraoka-smime-mail-samples/*/*.eml",
            "autocrypt-protected-headers/vectors/smime-*.eml",
        )
        for path in interop_dir.glob(pattern)
    }
    assert found - covered == set()


# --- specific checks on what was read ------------------------------------------------------------


def test_hiraoka_attachments_survive(interop_dir: Path) -> None:
    case = Case(
        "hiraoka-smime-mail-samples/received-at-smime2/thunderbird128-signed-and-encrypted.eml",
        "hiraoka",
        "",
    )
    _, result = run_case(case, interop_dir)
    assert result is not None and result.verified
    names = sorted(a.filename for a in iter_attachments(result.message))
    assert [n.rsplit(".", 1)[-1] for n in names] == ["docx", "pdf"]
    pdf = next(a for a in iter_attachments(result.message) if a.filename.endswith(".pdf"))
    assert pdf.data.startswith(b"%PDF-")


@pytest.mark.parametrize("name", ["smime-enc+legacy-disp", "smime-sign+enc+legacy-disp"])
def test_protected_headers_match_the_vectors(interop_dir: Path, name: str) -> None:
    """The decrypted message carries the inner (protected) headers the vector expects, and
    the legacy display part is removed from what we hand back."""
    vectors = interop_dir / "autocrypt-protected-headers/vectors"
    _, result = run_case(Case(f"autocrypt-protected-headers/vectors/{name}.eml", "lamps-draft", ""),
                         interop_dir)  # fmt: skip
    assert result is not None
    inner_file = vectors / (f"{name}.inner.inner" if "sign" in name else f"{name}.inner")
    expected = wire.parse(inner_file.read_bytes())
    got = result.message
    outer = wire.parse((vectors / f"{name}.eml").read_bytes())
    assert str(outer["Subject"]) == "..."
    for field in ("From", "To", "Subject", "Date", "Message-ID"):
        assert str(got[field]) == str(expected[field]), field
    texts = [p for p in got.walk() if p.get_content_type() == "text/plain"]
    assert len(texts) == 1 and "Subject:" not in texts[0].get_content()
    expected_texts = [p for p in expected.walk() if p.get_content_type() == "text/plain"]
    assert texts[0].get_content().strip() == expected_texts[-1].get_content().strip()


# --- CMS objects (DER/PEM, not messages) ---------------------------------------------------------


def _pem_der(path: Path) -> bytes:
    lines = [line for line in path.read_bytes().splitlines() if not line.startswith(b"-----")]
    return base64.b64decode(b"".join(lines))


RFC4134_SIGNED = [
    ("4.1.bin", None, "DSA, SHA-1"),
    ("4.2.bin", None, "RSA, SHA-1"),
    ("4.3.bin", "ExContent.bin", "DSA, detached"),
    ("4.4.bin", None, "attributes, CRLs"),
    ("4.5.bin", None, "all RSA"),
    ("4.7.bin", None, "signer by subjectKeyIdentifier"),
    ("4.10.bin", None, "many attributes"),
]


@pytest.mark.parametrize(("name", "detached", "what"), RFC4134_SIGNED)
def test_rfc4134_signed_data(interop_dir: Path, name: str, detached: str | None, what: str) -> None:
    folder = interop_dir / "rfc4134"
    parsed = signed.load_signed_data((folder / name).read_bytes())
    content = (folder / detached).read_bytes() if detached else None
    body, checked = signed.check_signed_data(parsed, detached_content=content, allow_weak=True)
    assert body == (folder / "ExContent.bin").read_bytes()
    assert [c.error for c in checked] == [None] * len(checked)
    # The default policy refuses SHA-1 (and DSA) signatures.
    _, strict = signed.check_signed_data(parsed, detached_content=content)
    assert all(isinstance(c.error, UnsupportedAlgorithmError) for c in strict)


def test_rfc4134_multiple_signers_with_inherited_dsa_parameters(interop_dir: Path) -> None:
    """4.6: Diane's DSA key inherits its parameters from the CA certificate, which modern
    parsers (cryptography, OpenSSL 3) cannot load; her signature cannot be checked."""
    parsed = signed.load_signed_data((interop_dir / "rfc4134/4.6.bin").read_bytes())
    _, checked = signed.check_signed_data(parsed, allow_weak=True)
    errors = [None if c.error is None else type(c.error) for c in checked]
    assert errors == [None, SignatureInvalidError]


def test_rfc4134_certificates_only(interop_dir: Path) -> None:
    parsed = signed.load_signed_data((interop_dir / "rfc4134/4.11.bin").read_bytes())
    assert parsed.certificates and parsed.crls
    with pytest.raises(SignatureInvalidError, match="certificates-only"):
        signed.check_signed_data(parsed)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("5.1.bin", "des-ede3-cbc"), ("5.2.bin", UnsupportedAlgorithmError)],
    ids=["3des", "rc2-unsupported"],
)
def test_rfc4134_enveloped(interop_dir: Path, name: str, expected: object) -> None:
    identity, _ = _keys("rfc4134")
    assert identity is not None
    data = (interop_dir / "rfc4134" / name).read_bytes()
    if isinstance(expected, str):
        opened = enveloped.decrypt_envelope(data, identity.private_key, identity.certificate)
        assert (opened.content_cipher, opened.content) == (
            expected,
            b"This is some sample content.",
        )
    else:
        with pytest.raises(UnsupportedAlgorithmError, match=r"1\.2\.840\.113549\.3\.2"):
            enveloped.decrypt_envelope(data, identity.private_key, identity.certificate)


IRELAND = "draft-ireland-examples-cms"


@pytest.mark.parametrize(
    ("name", "who", "cipher", "authenticated"),
    [
        ("encryptedForBobRSAOaep", "bob", "aes-128-cbc", False),
        ("encryptedForBobAndDana", "bob", "aes-128-cbc", False),
        ("encryptedForBobAndDana", "dana", "aes-128-cbc", False),
        ("authEnvelopedForBobChaCha20Poly1305", "bob", "chacha20-poly1305", True),
        ("authEnvelopedForDanaX25519HKDF", "dana", "aes-128-gcm", True),
    ],
)
def test_ireland_enveloped(
    interop_dir: Path, name: str, who: str, cipher: str, authenticated: bool
) -> None:
    keys = interop_dir / IRELAND / "certs-and-keys"
    key = load_private_key(keys / f"lamps-{who}.decrypt.p8.pem")
    cert = load_certificate(keys / f"lamps-{who}.encrypt.crt")
    opened = enveloped.decrypt_envelope(
        (interop_dir / IRELAND / "binary-files" / f"{name}.p7m").read_bytes(), key, cert
    )
    assert opened.content == b"This is some sample content."
    assert (opened.content_cipher, opened.authenticated) == (cipher, authenticated)


def test_ireland_other_recipient_is_refused_before_any_key_operation(interop_dir: Path) -> None:
    keys = interop_dir / IRELAND / "certs-and-keys"
    data = (interop_dir / IRELAND / "binary-files/encryptedForBobRSAOaep.p7m").read_bytes()
    with pytest.raises(NotARecipientError):
        enveloped.decrypt_envelope(
            data,
            load_private_key(keys / "lamps-dana.decrypt.p8.pem"),
            load_certificate(keys / "lamps-dana.encrypt.crt"),
        )


@pytest.mark.parametrize(
    ("name", "signers", "algorithms"),
    [
        ("signedByAliceRSA", [], ["rsassa_pkcs1v15"]),
        ("signedByAliceRSAPSS", [], ["rsassa_pss"]),
        ("signedByCarlosEd25519", [], ["ed25519"]),
        ("signedByCarlosDetached", [], ["ed25519"]),
        ("signedByAliceAndCarlosNoCerts", ["alice", "carlos"], ["rsassa_pkcs1v15", "ed25519"]),
    ],
)
def test_ireland_signed(
    interop_dir: Path, name: str, signers: list[str], algorithms: list[str]
) -> None:
    from securemail.smime.validation import KeyPurpose, validate_path

    folder = interop_dir / IRELAND
    extra = [load_certificate(folder / f"certs-and-keys/lamps-{s}.crt") for s in signers]
    parsed = signed.load_signed_data((folder / "binary-files" / f"{name}.p7m").read_bytes())
    detached = (interop_dir / "rfc4134/ExContent.bin").read_bytes() if "Detached" in name else None
    content, checked = signed.check_signed_data(
        parsed, detached_content=detached, extra_certificates=extra
    )
    assert content == b"This is some sample content."
    assert sorted(c.signature_algorithm for c in checked) == sorted(algorithms)
    assert [c.error for c in checked] == [None] * len(checked)
    certs = interop_dir / "rfc9216/certs"
    anchors = [
        load_certificate(certs / f"Sample_LAMPS_{kind}_Certification_Authority.selfsigned.pem")
        for kind in ("RSA", "Ed25519")
    ]
    for result in checked:
        assert result.certificate is not None
        validate_path(result.certificate, trust_anchors=anchors, purpose=KeyPurpose.SIGN)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("no_ct_attr", "contentType signed attribute is missing"),
        ("no_md_attr", "messageDigest signed attribute is missing"),
        ("ct_multiple_attr", "content_type must occur exactly once"),
        ("bad_signtime_attr", "signed-only attribute appears among unsigned"),
    ],
)
def test_openssl_bad_signed_attributes(interop_dir: Path, name: str, reason: str) -> None:
    parsed = signed.load_signed_data((interop_dir / f"openssl/cms-data/{name}.cms").read_bytes())
    _, checked = signed.check_signed_data(parsed)
    assert len(checked) == 1
    assert isinstance(checked[0].error, SignatureInvalidError)
    assert reason in str(checked[0].error)


def test_openssl_md4_is_unsupported(interop_dir: Path) -> None:
    parsed = signed.load_signed_data(_pem_der(interop_dir / "openssl/cms-data/pkcs7-md4.pem"))
    _, checked = signed.check_signed_data(parsed, allow_weak=True)
    assert isinstance(checked[0].error, UnsupportedAlgorithmError)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("authenveloped_attrs.pem", b"Hello AuthEnvelopedData world\n"),
        ("bad_authenveloped_attrs.pem", None),
    ],
    ids=["good", "altered-auth-attribute"],
)
def test_openssl_auth_enveloped_with_kek(
    interop_dir: Path, name: str, expected: bytes | None
) -> None:
    """AES-GCM with authenticated attributes (the AAD): a changed attribute fails the tag."""
    data = _pem_der(interop_dir / "openssl/cms-data" / name)
    kek = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
    if expected is None:
        with pytest.raises(DecryptionError):
            enveloped.decrypt_envelope_with_kek(data, bytes.fromhex("C0FEE0"), kek)
        return
    opened = enveloped.decrypt_envelope_with_kek(data, bytes.fromhex("C0FEE0"), kek)
    assert (opened.content, opened.authenticated) == (expected, True)


PYCA = "pyca-cryptography-vectors"


@pytest.mark.parametrize(
    ("name", "content", "cipher"),
    [
        ("enveloped-rsa-oaep.pem", b"Hello, world!", "aes-128-cbc"),
        ("enveloped-triple-des.pem", b"Hello, World!\r\n", "des-ede3-cbc"),
    ],
)
def test_pyca_enveloped(interop_dir: Path, name: str, content: bytes, cipher: str) -> None:
    identity = load_identity(
        interop_dir / PYCA / "x509-custom-ca/rsa_key.pem",
        interop_dir / PYCA / "x509-custom-ca/rsa_ca.pem",
    )
    opened = enveloped.decrypt_envelope(
        _pem_der(interop_dir / PYCA / "pkcs7" / name), identity.private_key, identity.certificate
    )
    assert (opened.content, opened.content_cipher) == (content, cipher)


def test_pyca_enveloped_without_content_fails(interop_dir: Path) -> None:
    identity = load_identity(
        interop_dir / PYCA / "x509-custom-ca/rsa_key.pem",
        interop_dir / PYCA / "x509-custom-ca/rsa_ca.pem",
    )
    data = (interop_dir / PYCA / "pkcs7/enveloped-no-content.der").read_bytes()
    with pytest.raises(DecryptionError):
        enveloped.decrypt_envelope(data, identity.private_key, identity.certificate)


@pytest.mark.parametrize("name", ["amazon-roots.der", "amazon-roots.p7b", "isrg.pem"])
def test_pyca_certificate_bundles(interop_dir: Path, name: str) -> None:
    certificates = load_certificates(interop_dir / PYCA / "pkcs7" / name)
    assert certificates and all(c.subject for c in certificates)


def test_gnupg_mistyped_signed_data_oid_is_malformed(interop_dir: Path) -> None:
    data = (interop_dir / "gnupg/cms-samplemsgs/webde-buenemann-signed.cms").read_bytes()
    with pytest.raises(MalformedASN1Error):
        signed.load_signed_data(data)


# --- key files -----------------------------------------------------------------------------------

P12_OK = [
    ("thunderbird-smime/smime/Alice.p12", "nss", "Alice@example.com"),
    ("thunderbird-smime/smime/Alice-ec.p12", "nss", "Alice-ec@example.com"),
    ("thunderbird-smime/smime-interop/Fran.p12", "nss", "Fran@example.com"),
    ("hiraoka-smime-mail-samples/certs/smime-1-secret.pfx", "smime1", "smime1@hmailserver.test"),
    ("notmuch/smime/0xE0972A47.p12", None, "test_suite@notmuchmail.org"),
    ("notmuch/smime/bob.p12", None, "bob@smime.example"),
    ("autocrypt-protected-headers/keys/bob.p12", "bob", "bob@smime.example"),
    ("gnupg/cms-samplekeys/ov-user.p12", "start", "insecure@test.insecure"),
    ("gnupg/cms-samplekeys/opensc-test.p12", "password", "opensc-devel@opensc.org"),
    ("gnupg/cms-samplekeys/nistp256-openssl-self-signed.p12", "abc", "testcert@example.aa"),
    (
        "gnupg/cms-samplekeys/credential_private_encrypted_AES256.p12",
        "qeFGds84/Sf0eKkJwcp6",
        "test@example.com",
    ),
    (f"{PYCA}/pkcs12/name-unicode-pwd.p12", "password", "CN=cryptography CA,C=US"),
    (f"{PYCA}/pkcs12/name-1-no-pwd.p12", None, "CN=cryptography CA,C=US"),
    (f"{PYCA}/pkcs12/no-password.p12", None, "CN=cryptography CA,C=US"),
    (f"{PYCA}/pkcs12/cert-rc2-key-3des.p12", "cryptography", "CN=cryptography CA,C=US"),
]


@pytest.mark.parametrize(("path", "password", "name"), P12_OK, ids=[p for p, _, _ in P12_OK])
def test_pkcs12_from_other_producers(
    interop_dir: Path, path: str, password: str | None, name: str
) -> None:
    assert load_pkcs12(interop_dir / path, password).name == name


P12_REFUSED = [
    ("thunderbird-smime/smime/Bob.p12", "wrong", WrongPasswordError),
    (f"{PYCA}/pkcs12/java-truststore.p12", None, KeyLoadError),  # certificates only
    (f"{PYCA}/pkcs12/no-cert-key-aes256cbc.p12", "cryptography", KeyLoadError),
    (
        "gnupg/cms-samplekeys/t5793-test.pfx",
        "test",
        WrongPasswordError,
    ),  # MAC fails (as in OpenSSL)
]


@pytest.mark.parametrize(
    ("path", "password", "error"), P12_REFUSED, ids=[p for p, _, _ in P12_REFUSED]
)
def test_pkcs12_refused(
    interop_dir: Path, path: str, password: str | None, error: type[Exception]
) -> None:
    with pytest.raises(error) as caught:
        load_pkcs12(interop_dir / path, password)
    assert type(caught.value) is error


# --- docs/interop.md -----------------------------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "interop.md"
BEGIN, END = "<!-- BEGIN smime-corpus (generated) -->", "<!-- END smime-corpus -->"


def render_table() -> str:
    rows = [
        "| message | keys | outcome (outermost layer first) | note |",
        "|---|---|---|---|",
    ]
    for case in CASES:
        flags = []
        if case.weak:
            flags.append("weak algorithms allowed")
        if case.at:
            flags.append(f"at {case.at.date().isoformat()}")
        note = "; ".join([*flags, *([case.note] if case.note else [])])
        rows.append(f"| `{case.path}` | {case.keys} | {case.expect} | {note} |")
    return "\n".join(rows)


def test_interop_doc_is_current() -> None:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(re.escape(BEGIN) + r"\n(.*?)\n" + re.escape(END), text, re.S)
    assert match is not None, f"{DOC} lacks the generated S/MIME corpus table"
    assert match.group(1) == render_table(), "run: python tests/interop/test_corpus_smime.py"


if __name__ == "__main__":
    text = DOC.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + render_table() + "\n" + text[end:], encoding="utf-8")
    print(f"updated {DOC}")
