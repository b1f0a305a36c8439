"""``securemail demo``: the whole flow on throwaway keys, so a new user sees it work.

Makes a certification authority and two users in memory, composes a message with an
attachment, signs and encrypts it, sends it through a real SMTP server on loopback
(STARTTLS required, its certificate verified against a throwaway CA), takes the message as
the server received it, then decrypts and verifies it as the recipient would, printing each
step. Nothing is written to disk and nothing leaves the machine.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .compose import MessageBuilder
from .inbound import iter_attachments
from .keys import Identity, PrivateKey, Recipient
from .smime import MODERN, decrypt, encrypt, verify
from .transport import send
from .transport.local import LocalSMTPServer

__all__ = ["run_demo", "throwaway_identity"]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def throwaway_identity(
    common_name: str,
    *,
    email: str | None = None,
    issuer: Identity | None = None,
    key: PrivateKey | None = None,
    days: int = 7,
) -> Identity:
    """A short-lived certificate: a CA when ``email`` is None, else an S/MIME user."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    is_ca = email is None
    signing_key = issuer.private_key if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.certificate.subject if issuer else _name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=not is_ca,
                content_commitment=not is_ca,
                key_encipherment=not is_ca and isinstance(key, rsa.RSAPrivateKey),
                data_encipherment=False,
                key_agreement=not is_ca and isinstance(key, ec.EllipticCurvePrivateKey),
                key_cert_sign=is_ca,
                crl_sign=is_ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if email is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False
        ).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
    certificate = builder.sign(signing_key, hashes.SHA256())  # type: ignore[arg-type]
    chain = (issuer.certificate,) if issuer else ()
    return Identity.create(key, certificate, chain=chain)


def run_demo(print_line: Callable[[str], None] = print) -> int:
    say = print_line
    say("1. keys: a throwaway CA, Alice (RSA-2048) and Bob (EC P-256)")
    ca = throwaway_identity("securemail demo CA")
    alice = throwaway_identity(
        "Alice",
        email="alice@example.com",
        issuer=ca,
        key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )
    bob = throwaway_identity("Bob", email="bob@example.org", issuer=ca)

    report = b"id,amount\n1,100\n2,250\n" * 1000
    message = (
        MessageBuilder()
        .from_addr("Alice <alice@example.com>")
        .to("Bob <bob@example.org>")
        .subject("Q3 figures (confidential)")
        .text("Hi Bob,\n\nthe figures are attached.\n\nAlice\n")
        .attach(report, filename="q3-figures.csv", content_type="text/csv")
        .build()
    )
    say(f"2. composed: {message['Subject']!s} with a {len(report)} byte attachment")

    protected = encrypt(message, [Recipient(bob.certificate, capabilities=MODERN)], signer=alice)
    outer = protected.message
    say(
        f"3. signed by Alice, encrypted to Bob and Alice: {len(protected.data)} bytes, "
        f"{outer.get_content_type()}; outer Subject is {outer['Subject']!s}"
    )

    with LocalSMTPServer() as server:
        config = server.config()
        sent = send(protected, config)
        say(
            f"4. sent over SMTP to 127.0.0.1:{server.port} with STARTTLS (certificate and host "
            f"name verified, TLS {config.tls}): "
            + ", ".join(f"{r.address} {r.status.value}" for r in sent.recipients)
        )
        if not sent.ok or len(server.messages) != 1:
            say("   FAILED: the server did not accept the message for every recipient")
            return 1
        received = server.messages[0]
    say(f"5. the server received {len(received.data)} bytes for {', '.join(received.recipients)}")

    decrypted = decrypt(received.data, bob)
    say(
        f"6. Bob decrypts: {decrypted.content_cipher}, "
        f"{'authenticated' if decrypted.authenticated else 'NOT authenticated'}"
    )

    result = verify(decrypted.data, trust=[ca.certificate])
    say(f"7. Bob verifies: {result.status.value}, signer {result.signer}")
    if not result.verified or result.message is None:
        say(f"   FAILED: {result.reason}")
        return 1
    inner = result.message
    attachments = list(iter_attachments(inner))
    intact = len(attachments) == 1 and attachments[0].data == report
    say(
        f"8. restored Subject: {inner['Subject']!s}; attachment {attachments[0].filename} "
        f"sha256 {hashlib.sha256(attachments[0].data).hexdigest()[:16]}... "
        f"{'intact' if intact else 'DAMAGED'}"
    )
    if not intact or str(inner["Subject"]) != "Q3 figures (confidential)":
        return 1
    say("demo complete: compose -> sign -> encrypt -> send -> receive -> decrypt -> verify")
    return 0
