"""Interop with the openssl command line (``openssl cms`` and ``openssl smime``), both ways.

* What securemail encrypts, ``openssl cms -decrypt`` opens to exactly the MIME entity that
  went in; what openssl encrypts, securemail decrypts.
* What securemail signs, ``openssl cms -verify -purpose smimesign`` verifies against the
  test root; what openssl signs, ``securemail.smime.verify`` reports as VERIFIED, and as
  FAILED once one byte of the signed content changes.

openssl 3.0 limits, checked by the tests so that a change shows up:

* no X25519 key agreement in CMS: it cannot encrypt to an X25519 certificate ("operation
  not supported for this keytype") nor decrypt RFC 8418 (HKDF) key agreement;
* it cannot verify Ed25519 CMS signatures, so securemail's Ed25519 signatures are checked
  against securemail's own verifier only (``test_ed25519_signature_checked_by_us_only``);
* ``-certfile`` on ``cms -verify`` only supplies signer certificates; it is not used to build
  the chain, so an intermediate that is not in the message must be in ``-CAfile``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from asn1crypto import cms
from pki import PKI, Issued, make_pki

from securemail import smime
from securemail.keys import Identity, Recipient
from securemail.policy import (
    COMPATIBLE,
    DEFAULT,
    ContentCipher,
    DigestAlgorithm,
    KeyTransport,
    Policy,
    SignatureMode,
    SignaturePadding,
)
from securemail.results import SignatureStatus
from securemail.smime.enveloped import decrypt_envelope
from securemail.smime.signed import signing_digest

from .tools import (
    TEXT,
    OpenSSL,
    Workspace,
    base64_lines,
    body_der,
    canonical_entity,
    content_param,
    content_type,
    crlf,
    expect_failure,
    identity,
    make_message,
    plain_text,
    tamper,
)

SENDER = {"rsa": "alice@example.com", "p256": "carol@example.com", "p384": "dave@example.com"}
PLAIN = DEFAULT.clone(header_protection=False)
"""Header protection off: the encrypted entity is just the message's MIME body."""

# What openssl -print calls the algorithms securemail chooses.
CIPHER_NAME = {
    ContentCipher.AES_128_GCM: "aes-128-gcm",
    ContentCipher.AES_256_GCM: "aes-256-gcm",
    ContentCipher.AES_128_CBC: "aes-128-cbc",
    ContentCipher.AES_256_CBC: "aes-256-cbc",
}
TRANSPORT_NAME = {KeyTransport.RSA_OAEP: "rsaesOaep", KeyTransport.RSA_PKCS1V15: "rsaEncryption"}


@dataclasses.dataclass(frozen=True)
class Setup:
    pki: PKI
    openssl: OpenSSL
    work: Workspace

    def user(self, name: str) -> Issued:
        return self.pki.users[name]

    def identity(self, name: str) -> Identity:
        return identity(self.user(name), self.pki.intermediate)


@pytest.fixture(scope="module")
def setup(openssl_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    pki = make_pki()
    work = Workspace(tmp_path_factory.mktemp("openssl"))
    work.certificates("root.pem", pki.root.cert)
    work.certificates("intermediate.pem", pki.intermediate.cert)
    work.certificates("root+intermediate.pem", pki.root.cert, pki.intermediate.cert)
    for name, issued in pki.users.items():
        work.identity(name, issued)
    return Setup(pki=pki, openssl=OpenSSL(openssl_bin, work), work=work)


def _decrypt_with_openssl(setup: Setup, recipient: str, *args: str) -> bytes:
    return setup.openssl(
        "cms", "-decrypt", "-recip", f"{recipient}.pem", "-inkey", f"{recipient}.key", *args
    )


# --- securemail encrypts, openssl decrypts ----------------------------------------------------


@pytest.mark.parametrize("transport", list(KeyTransport))
@pytest.mark.parametrize("cipher", list(ContentCipher))
def test_openssl_decrypts_ours_rsa(
    setup: Setup, cipher: ContentCipher, transport: KeyTransport
) -> None:
    message = make_message("carol@example.com", "alice@example.com")
    policy = PLAIN.clone(content_cipher=cipher, key_transport=transport)
    protected = smime.encrypt(message, [setup.user("rsa").cert], policy=policy)
    path = setup.work.write("rsa.eml", protected.data)

    structure = setup.openssl.cms_print("-in", path)
    assert CIPHER_NAME[cipher] in structure
    for other in KeyTransport:
        assert (TRANSPORT_NAME[other] in structure) == (other is transport)
    decrypted = _decrypt_with_openssl(setup, "rsa", "-in", str(path))
    assert decrypted == canonical_entity(message, policy, encrypting=True)


@pytest.mark.parametrize("curve", ["p256", "p384"])
@pytest.mark.parametrize("cipher", list(ContentCipher))
def test_openssl_decrypts_ours_ec(setup: Setup, cipher: ContentCipher, curve: str) -> None:
    message = make_message("alice@example.com", SENDER[curve])
    policy = PLAIN.clone(content_cipher=cipher)
    protected = smime.encrypt(message, [setup.user(curve).cert], policy=policy)
    path = setup.work.write("ec.eml", protected.data)

    structure = setup.openssl.cms_print("-in", path)
    assert CIPHER_NAME[cipher] in structure
    # ephemeral-static ECDH, X9.63 KDF with the hash that matches the curve (RFC 5753 7.1.4)
    kdf_hash = {"p256": "sha256", "p384": "sha384"}[curve]
    assert f"dhSinglePass-stdDH-{kdf_hash}kdf-scheme" in structure
    decrypted = _decrypt_with_openssl(setup, curve, "-in", str(path))
    assert decrypted == canonical_entity(message, policy, encrypting=True)


@pytest.mark.parametrize("cipher", [ContentCipher.AES_256_GCM, ContentCipher.AES_256_CBC])
def test_openssl_decrypts_ours_three_recipients(setup: Setup, cipher: ContentCipher) -> None:
    names = ["rsa3072", "p256", "p384"]
    message = make_message("alice@example.com", "bob@example.com", SENDER["p256"], SENDER["p384"])
    policy = PLAIN.clone(content_cipher=cipher, key_transport=KeyTransport.RSA_OAEP)
    protected = smime.encrypt(message, [setup.user(n).cert for n in names], policy=policy)
    path = setup.work.write("three.eml", protected.data)
    expected = canonical_entity(message, policy, encrypting=True)
    for name in names:
        assert _decrypt_with_openssl(setup, name, "-in", str(path)) == expected, name


@pytest.mark.parametrize("cipher", [ContentCipher.AES_128_GCM, ContentCipher.AES_128_CBC])
def test_openssl_decrypts_ours_as_der(setup: Setup, cipher: ContentCipher) -> None:
    message = make_message("carol@example.com", "alice@example.com")
    policy = PLAIN.clone(content_cipher=cipher)
    protected = smime.encrypt(message, [setup.user("rsa").cert], policy=policy)
    path = setup.work.write("ours.der", body_der(protected.data))
    decrypted = _decrypt_with_openssl(setup, "rsa", "-inform", "DER", "-in", str(path))
    assert decrypted == canonical_entity(message, policy, encrypting=True)


def test_openssl_decrypts_ours_with_header_protection(setup: Setup) -> None:
    message = make_message("carol@example.com", "alice@example.com", subject="Secret plans")
    protected = smime.encrypt(message, [setup.user("rsa").cert])  # DEFAULT policy
    path = setup.work.write("hp.eml", protected.data)
    assert b"Secret plans" not in protected.data

    decrypted = _decrypt_with_openssl(setup, "rsa", "-in", str(path))
    assert decrypted == canonical_entity(message, DEFAULT, encrypting=True)
    assert b"Subject: Secret plans\r\n" in decrypted.partition(b"\r\n\r\n")[0]


def test_openssl_has_no_x25519_key_agreement(setup: Setup) -> None:
    """openssl 3.0 limit: no X25519 key agreement in CMS, neither the RFC 8418 HKDF scheme
    securemail writes nor anything of its own. If this starts to fail, add X25519 cases
    both ways."""
    message = make_message("alice@example.com", "frank@example.com")
    protected = smime.encrypt(message, [setup.user("x25519").cert], policy=PLAIN)
    path = setup.work.write("x25519.eml", protected.data)
    assert "1.2.840.113549.1.9.16.3.19" in setup.openssl.cms_print("-in", path)  # hkdf-sha256
    outcome = setup.openssl.run(
        "cms", "-decrypt", "-recip", "x25519.pem", "-inkey", "x25519.key", "-in", str(path)
    )
    expect_failure(outcome, "Error decrypting CMS")

    setup.work.write("entity.txt", b"Content-Type: text/plain\r\n\r\nhello\r\n")
    outcome = setup.openssl.run(
        "cms", "-encrypt", "-aes-256-gcm", "-in", "entity.txt", "-recip", "x25519.pem"
    )
    expect_failure(outcome, "operation not supported for this keytype")


# --- openssl encrypts, securemail decrypts ----------------------------------------------------

RSA_PKCS1 = ("-recip", "rsa.pem")
RSA_OAEP = ("-recip", "rsa.pem", "-keyopt", "rsa_padding_mode:oaep")
RSA_OAEP_SHA256 = (*RSA_OAEP, "-keyopt", "rsa_oaep_md:sha256")

OPENSSL_ENCRYPTS = {
    # id: (openssl arguments, recipients, content cipher securemail reports)
    "aes128cbc-rsa": (("-aes-128-cbc", *RSA_PKCS1), ["rsa"], "aes-128-cbc"),
    "aes256cbc-rsa": (("-aes-256-cbc", *RSA_PKCS1), ["rsa"], "aes-256-cbc"),
    "aes256gcm-rsa": (("-aes-256-gcm", *RSA_PKCS1), ["rsa"], "aes-256-gcm"),
    "aes128gcm-rsa": (("-aes-128-gcm", *RSA_PKCS1), ["rsa"], "aes-128-gcm"),
    "aes256cbc-oaep": (("-aes-256-cbc", *RSA_OAEP), ["rsa"], "aes-256-cbc"),
    "aes256gcm-oaep-sha256": (("-aes-256-gcm", *RSA_OAEP_SHA256), ["rsa"], "aes-256-gcm"),
    # openssl's default KDF for ECDH is X9.63 with SHA-1 (dhSinglePass-stdDH-sha1kdf-scheme)
    "aes256cbc-p256": (("-aes-256-cbc", "-recip", "p256.pem"), ["p256"], "aes-256-cbc"),
    "aes128gcm-p384": (("-aes-128-gcm", "-recip", "p384.pem"), ["p384"], "aes-128-gcm"),
    "aes256gcm-p256-sha256kdf": (
        ("-aes-256-gcm", "-recip", "p256.pem", "-keyopt", "ecdh_kdf_md:sha256"),
        ["p256"],
        "aes-256-gcm",
    ),
    "aes256gcm-several": (
        ("-aes-256-gcm", *RSA_OAEP, "-recip", "rsa3072.pem", "-recip", "p256.pem"),
        ["rsa", "rsa3072", "p256"],
        "aes-256-gcm",
    ),
    "aes256cbc-several": (
        ("-aes-256-cbc", *RSA_PKCS1, "-recip", "p384.pem", "-recip", "rsa3072.pem"),
        ["rsa", "p384", "rsa3072"],
        "aes-256-cbc",
    ),
}
STREAM = {"plain": (), "stream": ("-stream",)}


@pytest.mark.parametrize("stream", list(STREAM))
@pytest.mark.parametrize("case", list(OPENSSL_ENCRYPTS))
def test_we_decrypt_openssl_smime(setup: Setup, case: str, stream: str) -> None:
    args, recipients, cipher = OPENSSL_ENCRYPTS[case]
    entity = canonical_entity(
        make_message("alice@example.com", "bob@example.com"), PLAIN, encrypting=True
    )
    setup.work.write("entity.txt", entity)
    output = setup.openssl(
        "cms", "-encrypt", "-binary", "-in", "entity.txt", *STREAM[stream], *args
    )
    assert content_type(crlf(output)) == "application/pkcs7-mime"
    if stream == "stream":
        assert _is_indefinite_length(body_der(crlf(output)))

    for name in recipients:
        result = smime.decrypt(output, setup.identity(name))
        assert result.content_cipher == cipher, name
        assert result.authenticated == cipher.endswith("gcm"), name
        assert result.data.endswith(entity.partition(b"\r\n\r\n")[2]), name
        assert plain_text(result.data) == TEXT, name


@pytest.mark.parametrize("stream", list(STREAM))
@pytest.mark.parametrize(
    "case", ["aes128cbc-rsa", "aes256gcm-oaep-sha256", "aes256cbc-p256", "aes256gcm-several"]
)
def test_we_decrypt_openssl_der(setup: Setup, case: str, stream: str) -> None:
    args, recipients, cipher = OPENSSL_ENCRYPTS[case]
    entity = canonical_entity(
        make_message("alice@example.com", "bob@example.com"), PLAIN, encrypting=True
    )
    setup.work.write("entity.txt", entity)
    der = setup.openssl(
        "cms", "-encrypt", "-binary", "-outform", "DER", "-in", "entity.txt", *STREAM[stream], *args
    )
    assert _is_indefinite_length(der) == (stream == "stream")
    for name in recipients:
        user = setup.user(name)
        opened = decrypt_envelope(der, user.key, user.cert)  # type: ignore[arg-type]
        assert opened.content == entity, name
        assert opened.content_cipher == cipher, name


@pytest.mark.parametrize(
    ("cipher_args", "cipher"),
    [((), "des-ede3-cbc"), (("-aes128",), "aes-128-cbc"), (("-aes256",), "aes-256-cbc")],
    ids=["default", "aes128", "aes256"],
)
def test_we_decrypt_openssl_smime_command(
    setup: Setup, cipher_args: tuple[str, ...], cipher: str
) -> None:
    """``openssl smime -encrypt`` (PKCS#7, the older command): its default cipher is still
    3DES, a legacy cipher that securemail reads (and never writes)."""
    entity = canonical_entity(
        make_message("alice@example.com", "bob@example.com"), PLAIN, encrypting=True
    )
    setup.work.write("entity.txt", entity)
    output = setup.openssl(
        "smime", "-encrypt", "-binary", "-in", "entity.txt", *cipher_args, "rsa.pem"
    )
    result = smime.decrypt(output, setup.identity("rsa"))
    assert result.content_cipher == cipher
    assert not result.authenticated
    assert result.data.endswith(entity.partition(b"\r\n\r\n")[2])


def _is_indefinite_length(der: bytes) -> bool:
    """The outer ContentInfo uses BER indefinite length (what ``-stream`` writes)."""
    assert der[0] == 0x30
    return der[1] == 0x80


# --- securemail signs, openssl verifies -------------------------------------------------------

SIGNERS = {
    # id: (user, RSA padding)
    "rsa-pkcs1v15": ("rsa", SignaturePadding.PKCS1V15),
    "rsa-pss": ("rsa", SignaturePadding.PSS),
    "ecdsa-p256": ("p256", SignaturePadding.PKCS1V15),
    "ecdsa-p384": ("p384", SignaturePadding.PKCS1V15),
}


def _openssl_verify(setup: Setup, path: Path, *args: str) -> bytes:
    return setup.openssl(
        "cms", "-verify", "-purpose", "smimesign", "-CAfile", "root.pem", "-in", str(path), *args
    )


@pytest.mark.parametrize("mode", list(SignatureMode))
@pytest.mark.parametrize("digest", list(DigestAlgorithm))
@pytest.mark.parametrize("signer", list(SIGNERS))
def test_openssl_verifies_ours(
    setup: Setup, signer: str, digest: DigestAlgorithm, mode: SignatureMode
) -> None:
    user, padding = SIGNERS[signer]
    message = make_message(SENDER[user], "bob@example.com")
    policy = DEFAULT.clone(
        digest=digest, rsa_padding=padding, signature_mode=mode, include_chain=True
    )
    identity = setup.identity(user)
    protected = smime.sign(message, identity, policy=policy)
    path = setup.work.write("signed.eml", protected.data)
    # An EC key is never signed with a hash weaker than its curve (P-384 -> SHA-384).
    used = signing_digest(identity.certificate, digest)
    assert used == (max(digest, DigestAlgorithm.SHA384) if user == "p384" else digest)

    structure = setup.openssl.cms_print("-in", str(path))
    assert used.value in structure
    if padding is SignaturePadding.PSS:
        assert "rsassaPss" in structure
    content = _openssl_verify(setup, path)
    assert content == canonical_entity(message, policy, encrypting=False)
    if mode is SignatureMode.DETACHED:
        assert content_param(protected.data, "micalg") == used.micalg


@pytest.mark.parametrize("mode", list(SignatureMode))
def test_openssl_verifies_ours_without_chain(setup: Setup, mode: SignatureMode) -> None:
    message = make_message("alice@example.com", "bob@example.com")
    policy = DEFAULT.clone(signature_mode=mode, include_chain=False)
    protected = smime.sign(message, setup.identity("rsa"), policy=policy)
    path = setup.work.write("nochain.eml", protected.data)

    # The intermediate really is absent: with only the root, the chain cannot be built.
    outcome = setup.openssl.run(
        "cms", "-verify", "-purpose", "smimesign", "-CAfile", "root.pem", "-in", str(path)
    )
    expect_failure(outcome, "unable to get local issuer certificate")
    # openssl 3.0 uses -certfile only to find the signer, not to build the chain, so the
    # intermediate has to be in the -CAfile bundle as well.
    content = setup.openssl(
        "cms", "-verify", "-purpose", "smimesign", "-CAfile", "root+intermediate.pem",
        "-certfile", "intermediate.pem", "-in", str(path),
    )  # fmt: skip
    assert content == canonical_entity(message, policy, encrypting=False)


@pytest.mark.parametrize("policy", [DEFAULT, COMPATIBLE], ids=["default", "compatible"])
def test_openssl_decrypts_then_verifies_our_signed_and_encrypted(
    setup: Setup, policy: Policy
) -> None:
    message = make_message("alice@example.com", "bob@example.com")
    policy = policy.clone(include_chain=True)
    recipient = Recipient.from_certificate(setup.user("rsa3072").cert, capabilities=smime.MODERN)
    protected = smime.encrypt(message, [recipient], signer=setup.identity("rsa"), policy=policy)
    path = setup.work.write("signed+encrypted.eml", protected.data)

    inner = _decrypt_with_openssl(setup, "rsa3072", "-in", str(path))
    assert content_type(inner) == "multipart/signed"
    inner_path = setup.work.write("inner.eml", inner)
    content = _openssl_verify(setup, inner_path)
    assert content == canonical_entity(message, policy, encrypting=True)
    # The sender can read its own copy (encrypt-to-self).
    assert _decrypt_with_openssl(setup, "rsa", "-in", str(path)) == inner


def test_ed25519_signature_checked_by_us_only(setup: Setup) -> None:
    """openssl 3.0 cannot verify Ed25519 CMS signatures (a documented limitation), so
    this checks securemail's Ed25519 signature with securemail's own verifier only."""
    message = make_message("erin@example.com", "bob@example.com")
    protected = smime.sign(
        message, setup.identity("ed25519"), policy=DEFAULT.clone(include_chain=True)
    )
    result = smime.verify(protected.data, trust=[setup.pki.root.cert])
    assert result.status is SignatureStatus.VERIFIED, result.reason
    assert result.signature_algorithm == "ed25519"


# --- openssl signs, securemail verifies -------------------------------------------------------

CERTFILE = ("-certfile", "intermediate.pem")
OPENSSL_SIGNS = {
    # id: (command, signer user, extra arguments, digest securemail reports)
    "cms-detached-rsa-sha256": ("cms", "rsa", ("-md", "sha256"), "sha256"),
    "cms-detached-rsa-sha384": ("cms", "rsa", ("-md", "sha384"), "sha384"),
    "cms-detached-rsa-sha512": ("cms", "rsa", ("-md", "sha512"), "sha512"),
    "cms-detached-rsa-pss-sha256": (
        "cms", "rsa", ("-md", "sha256", "-keyopt", "rsa_padding_mode:pss"), "sha256",
    ),
    "cms-detached-rsa-pss-sha512": (
        "cms", "rsa", ("-md", "sha512", "-keyopt", "rsa_padding_mode:pss"), "sha512",
    ),
    "cms-detached-p256-sha256": ("cms", "p256", ("-md", "sha256"), "sha256"),
    "cms-detached-p256-sha512": ("cms", "p256", ("-md", "sha512"), "sha512"),
    "cms-detached-p384-sha384": ("cms", "p384", ("-md", "sha384"), "sha384"),
    "cms-opaque-rsa-sha256": ("cms", "rsa", ("-nodetach", "-md", "sha256"), "sha256"),
    "cms-opaque-rsa-pss-sha384": (
        "cms", "rsa", ("-nodetach", "-md", "sha384", "-keyopt", "rsa_padding_mode:pss"), "sha384",
    ),
    "cms-opaque-p256-sha256": ("cms", "p256", ("-nodetach", "-md", "sha256"), "sha256"),
    "cms-opaque-p384-sha384": ("cms", "p384", ("-nodetach", "-md", "sha384"), "sha384"),
    "smime-detached-rsa-sha256": ("smime", "rsa", ("-md", "sha256"), "sha256"),
    "smime-detached-p384-sha512": ("smime", "p384", ("-md", "sha512"), "sha512"),
    "smime-opaque-rsa-sha384": ("smime", "rsa", ("-nodetach", "-md", "sha384"), "sha384"),
    "smime-opaque-p256-sha256": ("smime", "p256", ("-nodetach", "-md", "sha256"), "sha256"),
}  # fmt: skip


def _openssl_signed(setup: Setup, case: str, *, certfile: bool = True) -> tuple[bytes, bytes]:
    """(message openssl signed, with From/To/Subject; the entity it signed)."""
    command, user, args, _ = OPENSSL_SIGNS[case]
    message = make_message(SENDER[user], "bob@example.com")
    entity = canonical_entity(message, PLAIN, encrypting=False)
    setup.work.write("entity.txt", entity)
    output = setup.openssl(
        command, "-sign", "-binary", "-in", "entity.txt",
        "-signer", f"{user}.pem", "-inkey", f"{user}.key", *args,
        *(CERTFILE if certfile else ()),
        "-from", SENDER[user], "-to", "bob@example.com", "-subject", "Signed by openssl",
    )  # fmt: skip
    return output, entity


@pytest.mark.parametrize("case", list(OPENSSL_SIGNS))
def test_we_verify_openssl_signed(setup: Setup, case: str) -> None:
    _, user, args, digest = OPENSSL_SIGNS[case]
    signed, entity = _openssl_signed(setup, case)
    expected_type = "application/pkcs7-mime" if "-nodetach" in args else "multipart/signed"
    assert content_type(crlf(signed)) in (
        expected_type,
        "application/x-pkcs7-mime",
    )

    result = smime.verify(signed, trust=[setup.pki.root.cert])
    assert result.status is SignatureStatus.VERIFIED, result.reason
    assert result.signer == SENDER[user]
    assert result.digest_algorithm == digest
    assert result.data is not None
    assert plain_text(result.data) == TEXT
    assert result.data.endswith(entity.partition(b"\r\n\r\n")[2])


def test_we_verify_openssl_signed_given_the_intermediate(setup: Setup) -> None:
    """openssl puts only the signer's certificate in the message (no -certfile): the
    intermediate comes from the caller."""
    signed, _ = _openssl_signed(setup, "cms-detached-rsa-sha256", certfile=False)
    alone = smime.verify(signed, trust=[setup.pki.root.cert])
    assert alone.status is SignatureStatus.FAILED
    result = smime.verify(
        signed, trust=[setup.pki.root.cert], certificates=[setup.pki.intermediate.cert]
    )
    assert result.status is SignatureStatus.VERIFIED, result.reason


@pytest.mark.parametrize(
    "case", ["cms-detached-rsa-sha256", "smime-detached-p384-sha512", "cms-detached-rsa-pss-sha256"]
)
def test_we_reject_tampered_openssl_detached(setup: Setup, case: str) -> None:
    signed, _ = _openssl_signed(setup, case)
    assert smime.verify(signed, trust=[setup.pki.root.cert]).verified
    forged = tamper(signed, b"Quarterly figures", b"Quarterly fugures")
    result = smime.verify(forged, trust=[setup.pki.root.cert])
    assert result.status is SignatureStatus.FAILED
    assert "digest" in result.reason


@pytest.mark.parametrize("case", ["cms-opaque-rsa-sha256", "smime-opaque-p256-sha256"])
def test_we_reject_tampered_openssl_opaque(setup: Setup, case: str) -> None:
    signed, _ = _openssl_signed(setup, case)
    canonical = crlf(signed)
    header = canonical.partition(b"\r\n\r\n")[0]
    der = body_der(canonical)
    info = cms.ContentInfo.load(der)
    content = info["content"]["encap_content_info"]["content"].native
    assert smime.verify(signed, trust=[setup.pki.root.cert]).verified
    forged_der = tamper(der, content[:40], content[:39] + bytes([content[39] ^ 1]))
    forged = header + b"\r\n\r\n" + base64_lines(forged_der)
    result = smime.verify(forged, trust=[setup.pki.root.cert])
    assert result.status is SignatureStatus.FAILED
    assert "digest" in result.reason
