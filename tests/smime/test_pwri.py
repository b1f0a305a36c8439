"""Password recipients (CMS PasswordRecipientInfo, RFC 5652 6.2.4 / RFC 3211 / RFC 8018).

Round trips at the wrap, CMS, message, streaming and command-line levels; interoperability
both ways with ``openssl cms -pwri_password``; and every refusal: wrong password, damaged
encrypted key, algorithms we do not implement, iteration counts outside the policy.
Iteration counts are kept low (the policy minimum allows it) except where the default is
what is tested: PBKDF2 is slow on purpose.
"""

from __future__ import annotations

import io
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pki
import pytest
from asn1crypto import algos, cms, core
from cryptography.hazmat.primitives import hashes

import securemail
from securemail import wire
from securemail.errors import (
    DecryptionError,
    InputError,
    NoPasswordRecipientError,
    NotARecipientError,
    PasswordIterationsError,
    RecipientError,
    UnsupportedAlgorithmError,
    WrongMessagePasswordError,
)
from securemail.policy import COMPATIBLE, DEFAULT, STRICT, ContentCipher, Policy
from securemail.smime import PasswordRecipient, _asn1, decrypt, encrypt, read
from securemail.smime import password as pw
from securemail.smime.enveloped import (
    EnvelopeRecipient,
    decrypt_envelope,
    decrypt_envelope_with_password,
    encrypt_envelope,
)
from securemail.stream import smime as stream_smime

PASSWORD = "Tr0ub4dor & 3 ünïcode"
FAST = 4096  # iterations: above every policy minimum but STRICT's, and quick
CONTENT = b"Content-Type: text/plain\r\n\r\nattack at dawn\r\n"
CIPHERS = list(ContentCipher)


@pytest.fixture(scope="module")
def p() -> pki.PKI:
    return pki.shared_pki()


def seal(cipher: ContentCipher, *recipients: EnvelopeRecipient | PasswordRecipient) -> bytes:
    return encrypt_envelope(CONTENT, recipients, cipher)


def pwri_of(der: bytes, index: int = 0) -> cms.PasswordRecipientInfo:
    infos = [i for i in cms.ContentInfo.load(der)["content"]["recipient_infos"]]
    chosen = [i.chosen for i in infos if i.name == "pwri"]
    return chosen[index]


def edit_pwri(der: bytes, change: Callable[[cms.PasswordRecipientInfo], None]) -> bytes:
    def edit(info: cms.ContentInfo) -> None:
        for recipient in info["content"]["recipient_infos"]:
            if recipient.name == "pwri":
                change(recipient.chosen)

    return pki.edit_cms(der, edit)


def openssl(openssl_bin: str, *args: str, stdin: bytes = b"") -> bytes:
    result = subprocess.run(
        [openssl_bin, "cms", *args], input=stdin, capture_output=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


# --- the RFC 3211 key wrap ----------------------------------------------------------------------


@pytest.mark.parametrize(("size", "wrapped_size"), [(16, 32), (24, 32), (32, 48)])
def test_wrap_round_trip_and_size(size: int, wrapped_size: int) -> None:
    """Length byte + 3 check bytes + key, padded to whole blocks, at least two (RFC 3211
    2.3.1): the sizes OpenSSL writes for AES-128 and AES-256 content keys."""
    kek, iv, cek = os.urandom(32), os.urandom(16), os.urandom(size)
    wrapped = pw.wrap_key(kek, iv, cek)
    assert len(wrapped) == wrapped_size
    assert pw.unwrap_key(kek, iv, wrapped) == cek
    assert pw.wrap_key(kek, iv, cek) != wrapped  # random padding


def test_unwrap_with_the_wrong_kek_fails_the_check_bytes() -> None:
    kek, iv, cek = os.urandom(32), os.urandom(16), os.urandom(32)
    wrapped = pw.wrap_key(kek, iv, cek)
    assert pw.unwrap_key(os.urandom(32), iv, wrapped) is None
    assert pw.unwrap_key(kek, os.urandom(16), wrapped) is None


@pytest.mark.parametrize("block", [0, 1, 2])
def test_any_damaged_block_fails_the_check_bytes(block: int) -> None:
    """The second CBC pass makes the first inner block depend on every wrapped block."""
    kek, iv, cek = os.urandom(32), os.urandom(16), os.urandom(32)
    wrapped = pw.wrap_key(kek, iv, cek)
    assert pw.unwrap_key(kek, iv, pki.flip(wrapped, 16 * block + 5, 0x01)) is None


@pytest.mark.parametrize("size", [0, 16, 31, 33])
def test_unwrap_refuses_impossible_sizes(size: int) -> None:
    with pytest.raises(DecryptionError):
        pw.unwrap_key(os.urandom(32), os.urandom(16), os.urandom(size))


# --- PasswordRecipient ----------------------------------------------------------------------------


def test_password_recipient_never_shows_the_password() -> None:
    recipient = PasswordRecipient(PASSWORD, iterations=FAST)
    assert recipient.password == PASSWORD.encode("utf-8")
    assert "Tr0ub4dor" not in repr(recipient) and "Tr0ub4dor" not in str(recipient)
    assert recipient.iterations == FAST
    assert PasswordRecipient(b"x").iterations == pw.DEFAULT_ITERATIONS == 600_000
    assert recipient.name == "(password)"


@pytest.mark.parametrize(
    "kwargs", [{"password": ""}, {"password": b""}, {"iterations": 0}, {"iterations": True}]
)
def test_password_recipient_refuses_bad_values(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"password": "secret", "iterations": FAST, **kwargs}
    with pytest.raises(InputError):
        PasswordRecipient(args.pop("password"), **args)  # type: ignore[arg-type]


def test_policy_bounds_are_validated() -> None:
    assert (DEFAULT.min_pbkdf2_iterations, DEFAULT.max_pbkdf2_iterations) == (2048, 5_000_000)
    assert STRICT.min_pbkdf2_iterations == 600_000
    assert COMPATIBLE.min_pbkdf2_iterations == 1000
    with pytest.raises(InputError):
        DEFAULT.clone(min_pbkdf2_iterations=10, max_pbkdf2_iterations=5)
    with pytest.raises(InputError):
        DEFAULT.clone(min_pbkdf2_iterations=0)


# --- the CMS structure ----------------------------------------------------------------------------


@pytest.mark.parametrize("cipher", CIPHERS)
def test_structure_and_round_trip(cipher: ContentCipher) -> None:
    der = seal(cipher, PasswordRecipient(PASSWORD, iterations=FAST))
    info = cms.ContentInfo.load(der)
    # RFC 5652 6.1: EnvelopedData with a pwri is v3; RFC 5083: AuthEnvelopedData is v0.
    assert info["content"]["version"].native == ("v0" if cipher.authenticated else "v3")
    pwri = pwri_of(der)
    assert pwri["version"].native == "v0"
    kdf = pwri["key_derivation_algorithm"]
    assert kdf["algorithm"].dotted == _asn1.OID_PBKDF2
    params = kdf["parameters"]
    assert len(params["salt"].chosen.native) == 16
    assert params["iteration_count"].native == FAST
    assert params["prf"]["algorithm"].native == "sha256"
    assert params["prf"]["parameters"].dump() == b"\x05\x00"  # NULL
    wrap = pwri["key_encryption_algorithm"]
    assert wrap["algorithm"].dotted == _asn1.OID_PWRI_KEK
    kek = algos.EncryptionAlgorithm.load(wrap["parameters"].dump())
    assert kek["algorithm"].dotted == _asn1.OID_AES256_CBC
    assert len(kek["parameters"].native) == 16
    opened = decrypt_envelope_with_password(der, PASSWORD)
    assert opened.content == CONTENT
    assert opened.content_cipher == cipher.value
    assert opened.authenticated is cipher.authenticated
    assert opened.recipient_certificate is None


def test_several_passwords_each_open_it() -> None:
    der = seal(
        ContentCipher.AES_256_GCM,
        PasswordRecipient("first", iterations=FAST),
        PasswordRecipient("second", iterations=FAST),
    )
    assert decrypt_envelope_with_password(der, "first").content == CONTENT
    assert decrypt_envelope_with_password(der, b"second").content == CONTENT
    with pytest.raises(WrongMessagePasswordError):
        decrypt_envelope_with_password(der, "third")


@pytest.mark.parametrize("cipher", CIPHERS)
def test_certificate_and_password_recipients_mixed(p: pki.PKI, cipher: ContentCipher) -> None:
    user = p.users["p256"]
    der = seal(cipher, EnvelopeRecipient(user.cert), PasswordRecipient(PASSWORD, iterations=FAST))
    info = cms.ContentInfo.load(der)
    assert info["content"]["version"].native == ("v0" if cipher.authenticated else "v3")
    assert decrypt_envelope(der, user.key, user.cert).content == CONTENT  # type: ignore[arg-type]
    assert decrypt_envelope_with_password(der, PASSWORD).content == CONTENT


def test_wrong_password_is_a_typed_error_without_the_password() -> None:
    der = seal(ContentCipher.AES_256_CBC, PasswordRecipient(PASSWORD, iterations=FAST))
    with pytest.raises(WrongMessagePasswordError) as caught:
        decrypt_envelope_with_password(der, "not " + PASSWORD)
    assert isinstance(caught.value, DecryptionError)
    assert "Tr0ub4dor" not in str(caught.value)


def test_no_password_recipient(p: pki.PKI) -> None:
    der = seal(ContentCipher.AES_256_GCM, EnvelopeRecipient(p.users["rsa"].cert))
    with pytest.raises(NoPasswordRecipientError) as caught:
        decrypt_envelope_with_password(der, PASSWORD)
    assert isinstance(caught.value, NotARecipientError)


def test_damaged_encrypted_key_looks_like_a_wrong_password() -> None:
    """Inherent to RFC 3211: the check bytes cannot tell the two apart."""
    der = seal(ContentCipher.AES_256_CBC, PasswordRecipient(PASSWORD, iterations=FAST))
    key = pwri_of(der)["encrypted_key"].native

    def garble(info: cms.PasswordRecipientInfo) -> None:
        info["encrypted_key"] = pki.flip(key, 20, 0x10)

    with pytest.raises(WrongMessagePasswordError):
        decrypt_envelope_with_password(edit_pwri(der, garble), PASSWORD)


@pytest.mark.parametrize("cut", [1, 17, 33])
def test_truncated_encrypted_key_is_a_decryption_error(cut: int) -> None:
    der = seal(ContentCipher.AES_256_GCM, PasswordRecipient(PASSWORD, iterations=FAST))
    key = pwri_of(der)["encrypted_key"].native

    def truncate(info: cms.PasswordRecipientInfo) -> None:
        info["encrypted_key"] = key[:-cut]

    with pytest.raises(DecryptionError) as caught:
        decrypt_envelope_with_password(edit_pwri(der, truncate), PASSWORD)
    assert not isinstance(caught.value, WrongMessagePasswordError)


def test_a_pwri_that_does_not_parse_is_a_decryption_error() -> None:
    der = seal(ContentCipher.AES_256_GCM, PasswordRecipient(PASSWORD, iterations=FAST))

    def break_kek(info: cms.PasswordRecipientInfo) -> None:
        info["key_encryption_algorithm"]["parameters"] = core.OctetString(b"\x00" * 4)

    with pytest.raises(DecryptionError) as caught:
        decrypt_envelope_with_password(edit_pwri(der, break_kek), PASSWORD)
    assert type(caught.value) is DecryptionError


def _set_prf(name: str) -> Callable[[cms.PasswordRecipientInfo], None]:
    def change(info: cms.PasswordRecipientInfo) -> None:
        params = info["key_derivation_algorithm"]["parameters"]
        params["prf"] = algos.HmacAlgorithm({"algorithm": name, "parameters": core.Null()})

    return change


def _set_kek_cipher(oid: str) -> Callable[[cms.PasswordRecipientInfo], None]:
    def change(info: cms.PasswordRecipientInfo) -> None:
        iv = core.OctetString(os.urandom(8 if oid == _asn1.OID_DES_EDE3_CBC else 16))
        info["key_encryption_algorithm"]["parameters"] = algos.EncryptionAlgorithm(
            {"algorithm": oid, "parameters": iv}
        )

    return change


def _set_wrap(oid: str) -> Callable[[cms.PasswordRecipientInfo], None]:
    def change(info: cms.PasswordRecipientInfo) -> None:
        info["key_encryption_algorithm"] = {"algorithm": oid}

    return change


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (_set_prf("sha3_256"), "PBKDF2 with HMAC-sha3_256"),
        (_set_kek_cipher(_asn1.OID_DES_EDE3_CBC), _asn1.OID_DES_EDE3_CBC),
        (_set_kek_cipher(_asn1.OID_AES256_GCM), _asn1.OID_AES256_GCM),
        (_set_wrap(_asn1.OID_AES256_WRAP), _asn1.OID_AES256_WRAP),
    ],
    ids=["prf-sha3", "kek-3des", "kek-gcm", "aes-key-wrap"],
)
def test_unsupported_algorithms_are_named(
    change: Callable[[cms.PasswordRecipientInfo], None], named: str
) -> None:
    der = seal(ContentCipher.AES_256_GCM, PasswordRecipient(PASSWORD, iterations=FAST))
    with pytest.raises(UnsupportedAlgorithmError) as caught:
        decrypt_envelope_with_password(edit_pwri(der, change), PASSWORD)
    assert caught.value.algorithm == named


def test_a_pwri_without_key_derivation_is_unsupported() -> None:
    """RFC 3211 2.2 allows the KEK to come from elsewhere; there is then nothing to derive."""
    der = seal(ContentCipher.AES_256_GCM, PasswordRecipient(PASSWORD, iterations=FAST))

    def drop_kdf(info: cms.ContentInfo) -> None:
        old = info["content"]["recipient_infos"][0].chosen
        bare = cms.PasswordRecipientInfo(
            {
                "version": "v0",
                "key_encryption_algorithm": old["key_encryption_algorithm"],
                "encrypted_key": old["encrypted_key"],
            }
        )
        info["content"]["recipient_infos"] = [cms.RecipientInfo(name="pwri", value=bare)]

    with pytest.raises(UnsupportedAlgorithmError) as caught:
        decrypt_envelope_with_password(pki.edit_cms(der, drop_kdf), PASSWORD)
    assert caught.value.algorithm == "a password recipient without key derivation"


@pytest.mark.parametrize("prf", ["sha1", "sha512"])
def test_other_prfs_are_read(prf: str) -> None:
    """HMAC-SHA1 is RFC 8018's default and what OpenSSL writes; re-derive the KEK with
    ``prf`` so the message stays valid."""
    cek = os.urandom(32)
    iv = os.urandom(16)
    salt = os.urandom(16)
    hash_algorithm = {"sha1": hashes.SHA1(), "sha512": hashes.SHA512()}[prf]  # noqa: S303 (RFC 8018 default PRF)
    kek = pw.derive_kek(PASSWORD.encode(), salt, FAST, hash_algorithm, 32)
    der = seal(ContentCipher.AES_256_GCM, PasswordRecipient(PASSWORD, iterations=FAST))

    # Rewrap another content key in the pwri, derived with ``prf``.
    def rewrap(info: cms.PasswordRecipientInfo) -> None:
        params = info["key_derivation_algorithm"]["parameters"]
        params["salt"] = algos.Pbkdf2Salt(name="specified", value=salt)
        params["prf"] = algos.HmacAlgorithm({"algorithm": prf, "parameters": core.Null()})
        info["key_encryption_algorithm"]["parameters"] = algos.EncryptionAlgorithm(
            {"algorithm": _asn1.OID_AES256_CBC, "parameters": core.OctetString(iv)}
        )
        info["encrypted_key"] = pw.wrap_key(kek, iv, cek)

    changed = edit_pwri(der, rewrap)
    # The content was encrypted under another key, so the content check fails; what matters
    # is that the password opened the key (no WrongMessagePasswordError, no Unsupported).
    with pytest.raises(DecryptionError) as caught:
        decrypt_envelope_with_password(changed, PASSWORD)
    assert type(caught.value) is DecryptionError
    with pytest.raises(WrongMessagePasswordError):
        decrypt_envelope_with_password(changed, "wrong")


# --- iteration bounds -----------------------------------------------------------------------------


def test_too_few_iterations_are_refused_by_the_reader() -> None:
    der = seal(ContentCipher.AES_256_GCM, PasswordRecipient(PASSWORD, iterations=1000))
    with pytest.raises(PasswordIterationsError) as caught:
        decrypt_envelope_with_password(der, PASSWORD)
    error = caught.value
    assert (error.iterations, error.minimum, error.maximum) == (1000, 2048, 5_000_000)
    assert "min_pbkdf2_iterations" in str(error)
    assert decrypt_envelope_with_password(der, PASSWORD, min_iterations=1000).content == CONTENT


def test_too_many_iterations_are_refused_before_any_derivation() -> None:
    der = seal(ContentCipher.AES_256_GCM, PasswordRecipient(PASSWORD, iterations=FAST))
    with pytest.raises(PasswordIterationsError) as caught:
        decrypt_envelope_with_password(der, PASSWORD, max_iterations=FAST - 1)
    assert "max_pbkdf2_iterations" in str(caught.value)


def test_the_bound_covers_all_password_recipients_together() -> None:
    der = seal(
        ContentCipher.AES_256_GCM,
        PasswordRecipient("a", iterations=FAST),
        PasswordRecipient("b", iterations=FAST),
    )
    with pytest.raises(PasswordIterationsError) as caught:
        decrypt_envelope_with_password(der, "b", max_iterations=2 * FAST - 1)
    assert caught.value.iterations == 2 * FAST
    assert decrypt_envelope_with_password(der, "b", max_iterations=2 * FAST).content == CONTENT


def test_a_weak_pwri_is_skipped_when_another_qualifies() -> None:
    der = seal(
        ContentCipher.AES_256_GCM,
        PasswordRecipient("a", iterations=1000),
        PasswordRecipient("b", iterations=FAST),
    )
    assert decrypt_envelope_with_password(der, "b").content == CONTENT
    with pytest.raises(WrongMessagePasswordError):
        decrypt_envelope_with_password(der, "a")  # its pwri is not tried under DEFAULT


def test_encrypting_checks_the_policy_bounds(p: pki.PKI) -> None:
    weak = PasswordRecipient(PASSWORD, iterations=1000)
    with pytest.raises(RecipientError) as caught:
        encrypt(pki.message(), [weak])
    assert caught.value.recipient == "(password)"
    assert "Tr0ub4dor" not in str(caught.value)
    with pytest.raises(RecipientError):
        encrypt(pki.message(), [PasswordRecipient(PASSWORD, iterations=FAST)], policy=STRICT)
    encrypt(pki.message(), [weak], policy=COMPATIBLE)


# --- the recipes ----------------------------------------------------------------------------------


def test_recipe_with_only_a_password_uses_the_default_iterations() -> None:
    protected = securemail.encrypt(pki.message(), [securemail.PasswordRecipient(PASSWORD)])
    der = pki.smime_der(protected.data)
    assert pwri_of(der)["key_derivation_algorithm"]["parameters"]["iteration_count"].native == (
        600_000
    )
    assert cms.ContentInfo.load(der)["content_type"].native == "enveloped_data"  # unknown: CBC
    result = securemail.decrypt(protected.data, password=PASSWORD)
    assert b"The numbers are in." in result.data
    assert result.recipient == "(password)"
    assert result.content_cipher == "aes-256-cbc" and not result.authenticated
    assert result.message["Subject"] == "Quarterly report"  # protected headers restored


def test_recipe_follows_the_policy_cipher() -> None:
    protected = encrypt(
        pki.message(),
        [PasswordRecipient(PASSWORD, iterations=FAST)],
        policy=DEFAULT.clone(content_cipher=ContentCipher.AES_128_GCM),
    )
    result = decrypt(protected.data, password=PASSWORD)
    assert result.content_cipher == "aes-128-gcm" and result.authenticated


def test_recipe_mixed_recipients_either_way(p: pki.PKI) -> None:
    bob = pki.identity(p.users["rsa3072"])
    carol = pki.identity(p.users["p256"])
    protected = encrypt(
        pki.message(), [bob.certificate, PasswordRecipient(PASSWORD, iterations=FAST)]
    )
    assert decrypt(protected.data, bob).recipient == bob.name
    assert decrypt(protected.data, password=PASSWORD).recipient == "(password)"
    # Both given: the certificate when the message names it, else the password.
    assert decrypt(protected.data, bob, password="ignored").recipient == bob.name
    assert decrypt(protected.data, carol, password=PASSWORD).recipient == "(password)"
    with pytest.raises(NotARecipientError):
        decrypt(protected.data, carol)
    with pytest.raises(WrongMessagePasswordError):
        decrypt(protected.data, carol, password="wrong")


def test_recipe_needs_an_identity_or_a_password() -> None:
    protected = encrypt(pki.message(), [PasswordRecipient(PASSWORD, iterations=FAST)])
    with pytest.raises(InputError):
        decrypt(protected.data)


def test_recipe_policy_bounds_apply_when_reading() -> None:
    protected = encrypt(pki.message(), [PasswordRecipient(PASSWORD, iterations=FAST)])
    with pytest.raises(PasswordIterationsError):
        decrypt(
            protected.data, password=PASSWORD, policy=DEFAULT.clone(min_pbkdf2_iterations=FAST + 1)
        )
    with pytest.raises(PasswordIterationsError):
        decrypt(protected.data, password=PASSWORD, policy=Policy(max_pbkdf2_iterations=FAST - 1))


def test_read_opens_a_password_layer(p: pki.PKI) -> None:
    alice = pki.identity(p.users["rsa"], p.intermediate)
    protected = encrypt(pki.message(), [PasswordRecipient(PASSWORD, iterations=FAST)], signer=alice)
    known = {"trust": [p.root.cert], "certificates": [p.intermediate.cert]}
    result = read(protected.data, password=PASSWORD, **known)  # type: ignore[arg-type]
    assert result.verified
    # encrypt-to-self: the signer reads it with its certificate
    assert read(protected.data, identity=alice, **known).verified  # type: ignore[arg-type]


# --- interoperability with OpenSSL ---------------------------------------------------------------


@pytest.mark.parametrize("cipher", CIPHERS)
def test_openssl_decrypts_ours(openssl_bin: str, cipher: ContentCipher) -> None:
    protected = encrypt(
        pki.message(),
        [PasswordRecipient(PASSWORD, iterations=FAST)],
        policy=DEFAULT.clone(content_cipher=cipher),
    )
    out = openssl(openssl_bin, "-decrypt", "-pwri_password", PASSWORD, stdin=protected.data)
    assert b"The numbers are in." in out
    assert b"Subject: Quarterly report" in out  # the protected header, inside


@pytest.mark.parametrize("flag", ["-aes-256-cbc", "-aes-128-cbc"])
def test_we_decrypt_openssls(openssl_bin: str, flag: str) -> None:
    """OpenSSL 3.0 writes PBKDF2 with HMAC-SHA1 (the default, by omission), 2048 iterations,
    and the content cipher as the KEK cipher. (It refuses -aes-*-gcm with -pwri_password, so
    AuthEnvelopedData is tested in the other direction only.)"""
    entity = b"Content-Type: text/plain\r\n\r\nfrom openssl\r\n"
    data = openssl(openssl_bin, "-encrypt", flag, "-pwri_password", PASSWORD, stdin=entity)
    result = decrypt(data, password=PASSWORD)
    assert b"from openssl" in result.data
    assert result.content_cipher == flag[1:]
    assert not result.authenticated
    params = pwri_of(pki.smime_der(data.replace(b"\n", b"\r\n")))["key_derivation_algorithm"][
        "parameters"
    ]
    assert params["prf"]["algorithm"].native == "sha1"
    assert params["iteration_count"].native == 2048
    with pytest.raises(WrongMessagePasswordError):
        decrypt(data, password="wrong")
    with pytest.raises(PasswordIterationsError):
        decrypt(
            data, password=PASSWORD, policy=STRICT.clone(require_authenticated_encryption=False)
        )


def test_mixed_message_from_openssl_either_way(
    openssl_bin: str, p: pki.PKI, tmp_path: Path
) -> None:
    bob = p.users["rsa3072"]
    (tmp_path / "bob.pem").write_bytes(bob.cert_pem)
    entity = b"Content-Type: text/plain\r\n\r\nmixed\r\n"
    data = openssl(
        openssl_bin, "-encrypt", "-aes-256-cbc", "-pwri_password", PASSWORD,
        str(tmp_path / "bob.pem"), stdin=entity,
    )  # fmt: skip
    assert b"mixed" in decrypt(data, pki.identity(bob)).data
    assert b"mixed" in decrypt(data, password=PASSWORD).data


def test_openssl_decrypts_our_mixed_message_either_way(
    openssl_bin: str, p: pki.PKI, tmp_path: Path
) -> None:
    bob = p.users["rsa3072"]
    (tmp_path / "bob.pem").write_bytes(bob.cert_pem)
    (tmp_path / "bob.key").write_bytes(bob.key_pem)
    protected = encrypt(
        pki.message(),
        [bob.cert, PasswordRecipient(PASSWORD, iterations=FAST)],
        policy=DEFAULT.clone(content_cipher=ContentCipher.AES_256_GCM),
    )
    by_key = openssl(
        openssl_bin, "-decrypt", "-recip", str(tmp_path / "bob.pem"),
        "-inkey", str(tmp_path / "bob.key"), stdin=protected.data,
    )  # fmt: skip
    by_password = openssl(openssl_bin, "-decrypt", "-pwri_password", PASSWORD, stdin=protected.data)
    assert by_key == by_password
    assert b"The numbers are in." in by_key


# --- streaming ------------------------------------------------------------------------------------


def test_streaming_encrypt_and_decrypt_with_a_password(openssl_bin: str) -> None:
    """The streaming writer shares plan_envelope, so password recipients come with it."""
    source = io.BytesIO(b"From: a@example.com\r\nTo: b@example.com\r\nSubject: big\r\n\r\n")
    source.seek(0, io.SEEK_END)
    source.write(b"line of a large body\r\n" * 5000)
    source.seek(0)
    sink = io.BytesIO()
    stream_smime.encrypt_stream(source, sink, [PasswordRecipient(PASSWORD, iterations=FAST)])
    data = sink.getvalue()
    out = openssl(openssl_bin, "-decrypt", "-pwri_password", PASSWORD, stdin=data)
    assert out.count(b"line of a large body") == 5000
    plain = io.BytesIO()
    result = stream_smime.decrypt_stream(io.BytesIO(data), plain, password=PASSWORD)
    assert result.recipient == "(password)"
    assert plain.getvalue().count(b"line of a large body\r\n") == 5000
    with pytest.raises(WrongMessagePasswordError):
        stream_smime.decrypt_stream(io.BytesIO(data), io.BytesIO(), password="wrong")


def test_streaming_decrypt_of_openssls(openssl_bin: str, p: pki.PKI, tmp_path: Path) -> None:
    bob = p.users["p256"]
    (tmp_path / "bob.pem").write_bytes(bob.cert_pem)
    entity = b"Content-Type: text/plain\r\n\r\n" + b"streamed from openssl\r\n" * 1000
    data = openssl(
        openssl_bin, "-encrypt", "-stream", "-aes-128-cbc", "-pwri_password", PASSWORD,
        str(tmp_path / "bob.pem"), stdin=entity,
    )  # fmt: skip
    by_password, by_key = io.BytesIO(), io.BytesIO()
    stream_smime.decrypt_stream(io.BytesIO(data), by_password, password=PASSWORD)
    identity = pki.identity(bob)
    result = stream_smime.decrypt_stream(io.BytesIO(data), by_key, identity, password=PASSWORD)
    assert result.recipient == identity.name
    assert by_password.getvalue() == by_key.getvalue()
    assert by_key.getvalue().count(b"streamed from openssl") == 1000


# --- the command line -----------------------------------------------------------------------------


def cli(cwd: Path, command: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "securemail", *shlex.split(command)],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def workdir(tmp_path: Path, p: pki.PKI) -> Path:
    bob = p.users["rsa3072"]
    (tmp_path / "bob.pem").write_bytes(bob.cert_pem)
    (tmp_path / "bob.key").write_bytes(bob.key_pem)
    # The first line is the password; the rest of the file is not.
    (tmp_path / "pw.txt").write_text(PASSWORD + "\r\nsecond line\n", encoding="utf-8")
    (tmp_path / "wrong.txt").write_text("wrong\n", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("\n", encoding="utf-8")
    (tmp_path / "msg.eml").write_bytes(wire.to_bytes(pki.message()))
    return tmp_path


def test_cli_password_only_round_trip(workdir: Path, openssl_bin: str) -> None:
    done = cli(workdir, "encrypt --smime --pwri-password-file pw.txt -i msg.eml -o enc.eml")
    assert done.returncode == 0, done.stderr
    data = (workdir / "enc.eml").read_bytes()
    assert b"The numbers" not in data
    assert b"The numbers are in." in decrypt(data, password=PASSWORD).data
    out = openssl(openssl_bin, "-decrypt", "-pwri_password", PASSWORD, stdin=data)
    assert b"The numbers are in." in out
    done = cli(workdir, "decrypt --smime --pwri-password-file pw.txt -i enc.eml")
    assert done.returncode == 0, done.stderr
    assert b"The numbers are in." in done.stdout
    assert b"no integrity protection" in done.stderr  # CBC: the usual warning


def test_cli_mixed_recipients(workdir: Path) -> None:
    done = cli(
        workdir,
        "encrypt --recipient-cert bob.pem --pwri-password-file pw.txt --cipher aes-256-gcm "
        "-i msg.eml -o enc.eml",
    )
    assert done.returncode == 0, done.stderr
    for how in ("--key bob.key --cert bob.pem", "--pwri-password-file pw.txt"):
        done = cli(workdir, f"decrypt {how} -i enc.eml")
        assert done.returncode == 0, done.stderr
        assert b"The numbers are in." in done.stdout
        assert done.stderr == b""


def test_cli_failures_are_one_line(workdir: Path) -> None:
    assert cli(workdir, "encrypt --pwri-password-file pw.txt -i msg.eml -o enc.eml").returncode == 0
    wrong = cli(workdir, "decrypt --pwri-password-file wrong.txt -i enc.eml")
    assert wrong.returncode == 1
    assert wrong.stderr.decode().count("\n") == 1 and b"wrong password" in wrong.stderr
    assert PASSWORD.encode() not in wrong.stderr
    empty = cli(workdir, "decrypt --pwri-password-file empty.txt -i enc.eml")
    assert empty.returncode == 1 and b"first line is empty" in empty.stderr
    neither = cli(workdir, "decrypt -i enc.eml")
    assert neither.returncode == 2 and b"--pwri-password-file" in neither.stderr
    pgp = cli(workdir, "encrypt --pgp --pwri-password-file pw.txt -i msg.eml")
    assert pgp.returncode == 2 and b"S/MIME only" in pgp.stderr


def test_cli_password_file_is_the_message_password_without_a_key(workdir: Path) -> None:
    """The issue's spelling, ``encrypt --smime --password-file F`` and ``decrypt
    --password-file F``: with no key to unlock, --password-file is the message password.
    With --key it still unlocks the key (and the message password is --pwri-password-file)."""
    done = cli(workdir, "encrypt --smime --password-file pw.txt -i msg.eml -o enc.eml")
    assert done.returncode == 0, done.stderr
    data = (workdir / "enc.eml").read_bytes()
    assert b"The numbers are in." in decrypt(data, password=PASSWORD).data
    done = cli(workdir, "decrypt --password-file pw.txt -i enc.eml")
    assert done.returncode == 0, done.stderr
    assert b"The numbers are in." in done.stdout
    wrong = cli(workdir, "decrypt --password-file wrong.txt -i enc.eml")
    assert wrong.returncode == 1 and b"wrong password" in wrong.stderr
    # With a key, --password-file unlocks it: bob.key is not encrypted, so it is ignored,
    # and the message (not encrypted to Bob) cannot be opened by his key.
    with_key = cli(
        workdir, "decrypt --key bob.key --cert bob.pem --password-file pw.txt -i enc.eml"
    )
    assert with_key.returncode == 1
