"""Interop with gpgsm (GnuPG's S/MIME tool, 2.2 on Debian bookworm), both ways.

Each test module gets a throwaway GnuPG home that trusts only the test root (trustlist.txt,
flag ``S``), with CRL and policy checks and dirmngr off. The agent is killed at the end.

What gpgsm 2.2.40 lacks, each asserted below so that a change in gpgsm shows up:

* **AuthEnvelopedData / AES-GCM**: it cannot decrypt it ("error getting IV: Buffer too
  short") and will not write it (``--cipher-algo AES256-GCM``: "selected cipher algorithm is
  invalid"; given the GCM OID instead it writes a tagless EnvelopedData that nobody, gpgsm
  included, can open);
* **RSA-OAEP**: it cannot decrypt an OAEP key transport ("error getting encrypted session
  key", then "No secret key");
* **ECDH**: it refuses to encrypt to EC certificates ("Wrong key usage"); and it crashes
  importing an EC private key from PKCS#12 ("signal Segmentation fault caught"), so neither
  its EC decryption nor its ECDSA signing can be tested here;
* **Ed25519** signatures are not verified;
* **ECDSA with a digest shorter than the curve** (P-384 with SHA-256), in signatures and in
  certificates, is an error: "a 256 bit hash is not valid for a 384 bit ECC key". The PKI
  here therefore has its P-384 root sign with SHA-384, and securemail never signs with a
  hash weaker than the curve (asking for SHA-256 with a P-384 key gives SHA-384);
* **PKCS#12 with PBES2** (what current tools write) cannot be imported; only PBES1
  SHA-1/3DES can.

What works both ways: EnvelopedData with AES-128/192/256-CBC (and 3DES) and RSA PKCS#1 v1.5
key transport, alongside EC recipient infos it skips; RSA PKCS#1 v1.5 and RSA-PSS and ECDSA
(P-256; P-384 with SHA-384/512) signatures, detached and opaque, SHA-256/384/512.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
from asn1crypto import cms
from cryptography.hazmat.primitives import hashes
from pki import PKI, Issued, make_pki, to_pkcs12

from securemail import smime
from securemail.errors import DecryptionError
from securemail.keys import Identity
from securemail.policy import (
    COMPATIBLE,
    DEFAULT,
    ContentCipher,
    DigestAlgorithm,
    KeyTransport,
    SignatureMode,
    SignaturePadding,
)
from securemail.results import SignatureStatus
from securemail.smime.enveloped import decrypt_envelope

from .tools import (
    TEXT,
    Gpgsm,
    Outcome,
    body_der,
    canonical_entity,
    content_type,
    dearmor,
    expect_failure,
    expect_ok,
    identity,
    make_message,
    multipart_signed,
    pkcs7_mime,
    pkcs7_mime_base64,
    plain_text,
    split_multipart_signed,
    tamper,
)

SENDER = {
    "rsa": "alice@example.com",
    "rsa3072": "bob@example.com",
    "p256": "carol@example.com",
    "p384": "dave@example.com",
    "ed25519": "erin@example.com",
}
PLAIN = DEFAULT.clone(header_protection=False)
"""Header protection off: the encrypted entity is just the message's MIME body."""
CBC = [ContentCipher.AES_128_CBC, ContentCipher.AES_256_CBC]
GCM = [ContentCipher.AES_128_GCM, ContentCipher.AES_256_GCM]
HAS_KEY = ("rsa", "rsa3072")
"""Users whose private keys gpgsm holds (RSA only: see the module docstring)."""


@dataclasses.dataclass(frozen=True)
class Setup:
    pki: PKI
    gpgsm: Gpgsm

    def user(self, name: str) -> Issued:
        return self.pki.users[name]

    def identity(self, name: str) -> Identity:
        return identity(self.user(name), self.pki.intermediate)


@pytest.fixture(scope="module")
def setup(gpgsm_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    pki = make_pki(root_signature_hash=hashes.SHA384())
    gpgsm = Gpgsm.create(gpgsm_bin, tmp_path_factory.mktemp("gpgsm"), trusted_root=pki.root.cert)
    try:
        gpgsm.import_certificates(pki.intermediate.cert, *(u.cert for u in pki.users.values()))
        for name in HAS_KEY:
            gpgsm.import_identity(pki.users[name], pki.intermediate.cert)
            assert gpgsm.has_secret_key(SENDER[name])
        yield Setup(pki=pki, gpgsm=gpgsm)
    finally:
        gpgsm.kill_agent()


def _gpgsm_decrypt(setup: Setup, der: bytes) -> Outcome:
    path = setup.gpgsm.workspace.write("encrypted.p7m", der)
    return setup.gpgsm.run("--decrypt", path, passphrase=True)


def _gpgsm_verify_detached(setup: Setup, entity: bytes, signature: bytes) -> Outcome:
    sig = setup.gpgsm.workspace.write("signature.p7s", signature)
    data = setup.gpgsm.workspace.write("signed-part.txt", entity)
    return setup.gpgsm.run("--verify", sig, data)


def _assert_good_signature(setup: Setup, outcome: Outcome, signer: str) -> None:
    expect_ok(outcome)
    fingerprint = setup.user(signer).cert.fingerprint(hashes.SHA1()).hex().upper()  # noqa: S303
    assert outcome.status("GOODSIG"), outcome.describe()
    assert not outcome.status("BADSIG")
    assert [line.split()[1] for line in outcome.status("VALIDSIG")] == [fingerprint]
    assert outcome.status("TRUST_FULLY"), outcome.describe()  # chain to the trusted root


# --- securemail encrypts, gpgsm decrypts ------------------------------------------------------


@pytest.mark.parametrize("recipient", HAS_KEY)
@pytest.mark.parametrize("cipher", CBC)
def test_gpgsm_decrypts_ours(setup: Setup, cipher: ContentCipher, recipient: str) -> None:
    message = make_message("carol@example.com", SENDER[recipient])
    policy = PLAIN.clone(content_cipher=cipher, key_transport=KeyTransport.RSA_PKCS1V15)
    protected = smime.encrypt(message, [setup.user(recipient).cert], policy=policy)

    outcome = expect_ok(_gpgsm_decrypt(setup, body_der(protected.data)))
    assert outcome.stdout == canonical_entity(message, policy, encrypting=True)
    assert outcome.status("DECRYPTION_OKAY")


def test_gpgsm_decrypts_our_default_profile(setup: Setup) -> None:
    """DEFAULT policy, recipient capabilities unknown: securemail falls back to what every
    client reads (AES-256-CBC, RSA PKCS#1 v1.5), and gpgsm 2.2 does read it. Header
    protection on: the Subject is inside only."""
    message = make_message("carol@example.com", "alice@example.com", subject="Secret plans")
    protected = smime.encrypt(message, [setup.user("rsa").cert])
    assert b"Secret plans" not in protected.data

    outcome = expect_ok(_gpgsm_decrypt(setup, body_der(protected.data)))
    assert outcome.stdout == canonical_entity(message, DEFAULT, encrypting=True)
    assert b"Subject: Secret plans\r\n" in outcome.stdout.partition(b"\r\n\r\n")[0]


def test_gpgsm_decrypts_ours_among_ec_recipients(setup: Setup) -> None:
    """gpgsm skips the key agreement (ECDH) recipient infos it cannot use and decrypts with
    the RSA one."""
    message = make_message("carol@example.com", "alice@example.com", "dave@example.com")
    policy = COMPATIBLE.clone(header_protection=False)
    users = ["p256", "rsa", "p384", "rsa3072"]
    protected = smime.encrypt(message, [setup.user(n).cert for n in users], policy=policy)

    outcome = expect_ok(_gpgsm_decrypt(setup, body_der(protected.data)))
    assert outcome.stdout == canonical_entity(message, policy, encrypting=True)


@pytest.mark.parametrize("cipher", CBC)
def test_gpgsm_cannot_decrypt_oaep(setup: Setup, cipher: ContentCipher) -> None:
    """gpgsm 2.2 limit: no RSAES-OAEP key transport."""
    message = make_message("carol@example.com", "alice@example.com")
    policy = PLAIN.clone(content_cipher=cipher, key_transport=KeyTransport.RSA_OAEP)
    protected = smime.encrypt(message, [setup.user("rsa").cert], policy=policy)

    outcome = _gpgsm_decrypt(setup, body_der(protected.data))
    expect_failure(outcome, "error getting encrypted session key", "No secret key")
    assert not outcome.stdout


@pytest.mark.parametrize("transport", list(KeyTransport))
@pytest.mark.parametrize("cipher", GCM)
def test_gpgsm_cannot_decrypt_authenveloped(
    setup: Setup, cipher: ContentCipher, transport: KeyTransport
) -> None:
    """gpgsm 2.2 limit: no AuthEnvelopedData (AES-GCM), whatever the key transport."""
    message = make_message("carol@example.com", "alice@example.com")
    policy = PLAIN.clone(content_cipher=cipher, key_transport=transport)
    protected = smime.encrypt(message, [setup.user("rsa").cert], policy=policy)

    outcome = _gpgsm_decrypt(setup, body_der(protected.data))
    expect_failure(outcome, "error getting IV: Buffer too short")
    assert not outcome.stdout


# --- gpgsm encrypts, securemail decrypts ------------------------------------------------------

GPGSM_CIPHERS = {
    # --cipher-algo value (None: gpgsm's default): what securemail reports
    None: "aes-128-cbc",
    "AES": "aes-128-cbc",
    "AES192": "aes-192-cbc",
    "AES256": "aes-256-cbc",
    "3DES": "des-ede3-cbc",
}


def _gpgsm_encrypt(setup: Setup, entity: bytes, *args: str) -> bytes:
    path = setup.gpgsm.workspace.write("entity.txt", entity)
    return expect_ok(setup.gpgsm.run("--encrypt", *args, path)).stdout


@pytest.mark.parametrize("output", ["binary", "base64", "armor"])
@pytest.mark.parametrize("algo", list(GPGSM_CIPHERS), ids=lambda a: a or "default")
def test_we_decrypt_gpgsm(setup: Setup, algo: str | None, output: str) -> None:
    entity = canonical_entity(
        make_message("bob@example.com", "alice@example.com"), PLAIN, encrypting=True
    )
    args = [*(["--cipher-algo", algo] if algo else []), "-r", "alice@example.com"]
    if output != "binary":
        args.append(f"--{output}")
    produced = _gpgsm_encrypt(setup, entity, *args)

    if output == "base64":
        # The body of an S/MIME message, as a mail client would send it.
        message = pkcs7_mime_base64(
            produced,
            smime_type="enveloped-data",
            headers=[("From", "bob@example.com"), ("To", "alice@example.com")],
        )
        result = smime.decrypt(message, setup.identity("rsa"))
        assert result.content_cipher == GPGSM_CIPHERS[algo]
        assert not result.authenticated
        assert result.data.endswith(entity.partition(b"\r\n\r\n")[2])
        assert plain_text(result.data) == TEXT
        return
    der = dearmor(produced) if output == "armor" else produced
    assert der[:2] == b"\x30\x80"  # gpgsm writes BER, indefinite lengths
    user = setup.user("rsa")
    opened = decrypt_envelope(der, user.key, user.cert)  # type: ignore[arg-type]
    assert opened.content == entity
    assert opened.content_cipher == GPGSM_CIPHERS[algo]


def test_we_decrypt_gpgsm_several_recipients(setup: Setup) -> None:
    entity = canonical_entity(
        make_message("carol@example.com", "alice@example.com"), PLAIN, encrypting=True
    )
    der = _gpgsm_encrypt(
        setup, entity, "--cipher-algo", "AES256", "-r", "alice@example.com", "-r", "bob@example.com"
    )
    for name in HAS_KEY:
        user = setup.user(name)
        opened = decrypt_envelope(der, user.key, user.cert)  # type: ignore[arg-type]
        assert opened.content == entity, name


def test_gpgsm_cannot_encrypt_with_gcm(setup: Setup) -> None:
    """gpgsm 2.2 limit: it does not write AuthEnvelopedData."""
    path = setup.gpgsm.workspace.write("entity.txt", b"Content-Type: text/plain\r\n\r\nhi\r\n")
    outcome = setup.gpgsm.run(
        "--encrypt", "--cipher-algo", "AES256-GCM", "-r", "alice@example.com", path
    )
    expect_failure(outcome, "selected cipher algorithm is invalid")


def test_we_refuse_gpgsm_gcm_oid_in_enveloped_data(setup: Setup) -> None:
    """Given the AES-256-GCM *OID* as ``--cipher-algo``, gpgsm 2.2 writes EnvelopedData (not
    AuthEnvelopedData) naming GCM, with a bare IV and no tag: nobody can authenticate that,
    gpgsm itself included. securemail must refuse it, not decrypt it unauthenticated."""
    entity = b"Content-Type: text/plain\r\n\r\nhi\r\n"
    der = _gpgsm_encrypt(
        setup, entity, "--cipher-algo", "2.16.840.1.101.3.4.1.46", "-r", "alice@example.com"
    )
    info = cms.ContentInfo.load(der)
    assert info["content_type"].native == "enveloped_data"
    algorithm = info["content"]["encrypted_content_info"]["content_encryption_algorithm"]
    assert algorithm["algorithm"].dotted == "2.16.840.1.101.3.4.1.46"

    expect_failure(_gpgsm_decrypt(setup, der), "error getting authtag")
    user = setup.user("rsa")
    with pytest.raises(DecryptionError):
        decrypt_envelope(der, user.key, user.cert)  # type: ignore[arg-type]
    with pytest.raises(DecryptionError):
        smime.decrypt(pkcs7_mime(der, smime_type="enveloped-data"), setup.identity("rsa"))


@pytest.mark.parametrize("curve", ["p256", "p384"])
def test_gpgsm_cannot_encrypt_to_ec(setup: Setup, curve: str) -> None:
    """gpgsm 2.2 limit: no ECDH; an EC certificate (keyAgreement) is refused."""
    path = setup.gpgsm.workspace.write("entity.txt", b"Content-Type: text/plain\r\n\r\nhi\r\n")
    outcome = setup.gpgsm.run("--encrypt", "-r", SENDER[curve], path)
    expect_failure(outcome, "Wrong key usage")


def test_gpgsm_cannot_import_ec_keys(setup: Setup) -> None:
    """gpgsm 2.2 limit: importing an EC private key from PKCS#12 crashes it, so it can
    neither decrypt ECDH nor sign with ECDSA here."""
    outcome = setup.gpgsm.import_fresh_pkcs12(
        lambda: to_pkcs12(setup.user("p256"), Gpgsm.PASSPHRASE, legacy=True)
    )
    expect_failure(outcome, "Segmentation fault")
    assert not setup.gpgsm.has_secret_key("carol@example.com")


def test_gpgsm_cannot_import_pbes2_pkcs12(setup: Setup) -> None:
    """gpgsm 2.2 limit: PKCS#12 files protected with PBES2 (AES) are not read."""
    data = to_pkcs12(setup.user("rsa"), Gpgsm.PASSPHRASE)
    expect_failure(setup.gpgsm.import_pkcs12(data), "pkcs5PBES2-params")


# --- securemail signs, gpgsm verifies ---------------------------------------------------------

SIGNERS = {
    # id: (user, RSA padding)
    "rsa-pkcs1v15": ("rsa", SignaturePadding.PKCS1V15),
    "rsa-pss": ("rsa", SignaturePadding.PSS),
    "ecdsa-p256": ("p256", SignaturePadding.PKCS1V15),
    "ecdsa-p384": ("p384", SignaturePadding.PKCS1V15),
}


def _our_signature(
    setup: Setup, signer: str, digest: DigestAlgorithm, mode: SignatureMode
) -> tuple[bytes, bytes, bytes | None]:
    """(entity signed, signature or signed-data DER, detached content or None)."""
    user, padding = SIGNERS[signer]
    message = make_message(SENDER[user], "bob@example.com")
    policy = DEFAULT.clone(digest=digest, rsa_padding=padding, signature_mode=mode)
    protected = smime.sign(message, setup.identity(user), policy=policy)
    entity = canonical_entity(message, policy, encrypting=False)
    if mode is SignatureMode.DETACHED:
        part, signature = split_multipart_signed(protected.data)
        assert part == entity
        return entity, signature, part
    return entity, body_der(protected.data), None


@pytest.mark.parametrize("mode", list(SignatureMode))
@pytest.mark.parametrize("digest", list(DigestAlgorithm))
@pytest.mark.parametrize("signer", list(SIGNERS))
def test_gpgsm_verifies_ours(
    setup: Setup, signer: str, digest: DigestAlgorithm, mode: SignatureMode
) -> None:
    entity, der, detached = _our_signature(setup, signer, digest, mode)
    if detached is not None:
        outcome = _gpgsm_verify_detached(setup, detached, der)
    else:
        path = setup.gpgsm.workspace.write("opaque.p7m", der)
        outcome = setup.gpgsm.run("--verify", "--output", "-", path)
    _assert_good_signature(setup, outcome, SIGNERS[signer][0])
    if detached is None:
        assert outcome.stdout == entity


def test_gpgsm_rejects_our_tampered_signature(setup: Setup) -> None:
    _, der, detached = _our_signature(
        setup, "rsa-pkcs1v15", DigestAlgorithm.SHA256, SignatureMode.DETACHED
    )
    assert detached is not None
    _assert_good_signature(setup, _gpgsm_verify_detached(setup, detached, der), "rsa")
    forged = tamper(detached, b"Quarterly figures", b"Quarterly fugures")
    outcome = _gpgsm_verify_detached(setup, forged, der)
    assert outcome.status("BADSIG")
    assert not outcome.ok


def test_gpgsm_does_not_verify_ed25519(setup: Setup) -> None:
    """gpgsm 2.2 limit: no Ed25519 signatures. securemail's own check of the same
    signature passes."""
    message = make_message(SENDER["ed25519"], "bob@example.com")
    protected = smime.sign(
        message, setup.identity("ed25519"), policy=DEFAULT.clone(include_chain=True)
    )
    assert smime.verify(protected.data, trust=[setup.pki.root.cert]).verified
    part, signature = split_multipart_signed(protected.data)
    outcome = _gpgsm_verify_detached(setup, part, signature)
    # gpgsm 2.2 takes the key for DSA: "DSA requires the hash length to be a multiple of
    # 8 bits", "invalid signature: Internal error", and a BADSIG status for a good signature.
    expect_failure(outcome, "invalid signature")
    assert not outcome.status("GOODSIG")


@pytest.mark.parametrize("recipient", HAS_KEY)
def test_gpgsm_decrypts_then_verifies_our_signed_and_encrypted(
    setup: Setup, recipient: str
) -> None:
    message = make_message("alice@example.com", SENDER[recipient])
    policy = COMPATIBLE  # what gpgsm 2.2 reads: AES-256-CBC, RSA PKCS#1 v1.5
    signer = setup.identity("rsa")
    protected = smime.encrypt(message, [setup.user(recipient).cert], signer=signer, policy=policy)

    inner = expect_ok(_gpgsm_decrypt(setup, body_der(protected.data))).stdout
    assert content_type(inner) == "multipart/signed"
    part, signature = split_multipart_signed(inner)
    assert part == canonical_entity(message, policy, encrypting=True)
    _assert_good_signature(setup, _gpgsm_verify_detached(setup, part, signature), "rsa")


# --- gpgsm signs, securemail verifies ---------------------------------------------------------

GPGSM_DIGESTS = {"SHA256": "sha-256", "SHA384": "sha-384", "SHA512": "sha-512"}
HEADERS = [("From", SENDER["rsa"]), ("To", "bob@example.com"), ("Subject", "Signed by gpgsm")]


def _gpgsm_signed(setup: Setup, digest: str, *, detached: bool) -> tuple[bytes, bytes]:
    """(message signed by gpgsm as alice, wrapped in MIME with From/To/Subject; entity)."""
    entity = canonical_entity(
        make_message(SENDER["rsa"], "bob@example.com"), PLAIN, encrypting=False
    )
    path = setup.gpgsm.workspace.write("entity.txt", entity)
    command = "--detach-sign" if detached else "--sign"
    outcome = setup.gpgsm.run(
        "-u", SENDER["rsa"], "--digest-algo", digest, command, path, passphrase=True
    )
    der = expect_ok(outcome).stdout
    assert der[:2] == b"\x30\x80"  # BER, indefinite lengths
    if detached:
        message = multipart_signed(entity, der, micalg=GPGSM_DIGESTS[digest], headers=HEADERS)
    else:
        message = pkcs7_mime(der, smime_type="signed-data", headers=HEADERS)
    return message, entity


@pytest.mark.parametrize("detached", [True, False], ids=["detached", "opaque"])
@pytest.mark.parametrize("digest", list(GPGSM_DIGESTS))
def test_we_verify_gpgsm_signed(setup: Setup, digest: str, detached: bool) -> None:
    message, entity = _gpgsm_signed(setup, digest, detached=detached)
    result = smime.verify(message, trust=[setup.pki.root.cert])
    assert result.status is SignatureStatus.VERIFIED, result.reason
    assert result.signer == SENDER["rsa"]
    assert result.digest_algorithm == digest.lower()
    assert result.data is not None
    assert result.data.endswith(entity.partition(b"\r\n\r\n")[2])
    assert plain_text(result.data) == TEXT


@pytest.mark.parametrize("detached", [True, False], ids=["detached", "opaque"])
def test_we_reject_tampered_gpgsm_signed(setup: Setup, detached: bool) -> None:
    message, _ = _gpgsm_signed(setup, "SHA256", detached=detached)
    assert smime.verify(message, trust=[setup.pki.root.cert]).verified
    if detached:
        forged = tamper(message, b"Quarterly figures", b"Quarterly fugures")
    else:
        der = body_der(message)
        forged_der = tamper(der, b"Quarterly figures", b"Quarterly fugures")
        forged = pkcs7_mime(forged_der, smime_type="signed-data", headers=HEADERS)
    result = smime.verify(forged, trust=[setup.pki.root.cert])
    assert result.status is SignatureStatus.FAILED
    assert "digest" in result.reason
