"""``securemail demo``: the whole flow on throwaway keys, so a new user sees it work.

Makes a certification authority and two users in memory, composes a message with an
attachment, signs and encrypts it, sends it through a real SMTP server on loopback
(STARTTLS required, its certificate verified against a throwaway CA), takes the message as
the server received it, then decrypts and verifies it as the recipient would, printing each
step. Then the governed path: rules that require encryption of card numbers sent outside,
a key directory, an audit log and an encrypted archive; one send is encrypted by rule, one
is refused for lack of a key, the audit chain is verified and the archived copy read back
with the archive key. Nothing leaves the machine; nothing is written to disk unless
``keep`` names a directory, which then holds the keys, the messages, the rules, the audit
log and the archive.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from . import wire
from .compose import Message, MessageBuilder
from .errors import EncryptionRequiredError
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


DEMO_RULES = """\
# The demo's rules: card numbers (Luhn-checked) leave the company only encrypted.
internal_domains = ["example.com"]

[[rules]]
name = "cards-leave-encrypted"
description = "payment card numbers to an external domain: encrypt, or do not send"
match = { external = true, content = { detectors = ["payment_card"] } }
action = { encrypt = "any", on_unreachable = "refuse" }
"""

LAST_LINE = (
    "demo complete: compose -> sign -> encrypt -> send -> receive -> decrypt -> verify; "
    "rules -> directory -> audit -> archive"
)


def run_demo(print_line: Callable[[str], None] = print, keep: Path | None = None) -> int:
    """Run the demo, printing each step; 0 when every step did what it should. ``keep``: a
    directory (created if needed) to leave the keys, messages, rules, audit log and archive
    in; without it nothing is written to disk."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        return _run(print_line, keep)
    with tempfile.TemporaryDirectory(prefix="securemail-demo-") as scratch:
        return _run(print_line, Path(scratch))


def _run(say: Callable[[str], None], where: Path) -> int:
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
    _save(where, ca=ca, alice=alice, bob=bob, sent=protected.data)
    if _governed(say, where, ca=ca, alice=alice, bob=bob) != 0:
        return 1
    say(LAST_LINE)
    return 0


def _save(where: Path, *, ca: Identity, alice: Identity, bob: Identity, sent: bytes) -> None:
    for name, identity in (("ca", ca), ("alice", alice), ("bob", bob)):
        (where / f"{name}.pem").write_bytes(
            identity.certificate.public_bytes(serialization.Encoding.PEM)
        )
        key = where / f"{name}.key"
        key.touch(mode=0o600)
        key.write_bytes(
            identity.private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    (where / "sent-to-bob.eml").write_bytes(sent)


def _governed(
    say: Callable[[str], None], where: Path, *, ca: Identity, alice: Identity, bob: Identity
) -> int:
    """Steps 9 to 13: the same mail, decided by rules instead of by the caller."""
    from .governance import audit
    from .governance.archive import Archive
    from .governance.audit import AuditLog
    from .governance.directory import Directory
    from .governance.gateway import send as governed_send
    from .governance.rules import RuleSet

    (where / "policy.toml").write_text(DEMO_RULES, encoding="utf-8")
    rules = RuleSet.load(where / "policy.toml")
    escrow = throwaway_identity("Archive (escrow)", email="archive@example.com", issuer=ca)
    (where / "archive-escrow.pem").write_bytes(
        escrow.certificate.public_bytes(serialization.Encoding.PEM)
    )
    (where / "archive-escrow.key").touch(mode=0o600)
    (where / "archive-escrow.key").write_bytes(
        escrow.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    card = "4111 1111 1111 1111"

    def invoice(to: str) -> Message:
        return (
            MessageBuilder()
            .from_addr("Alice <alice@example.com>")
            .to(to)
            .subject("Invoice 42")
            .text(f"Please charge card {card}, expiry 12/30.\n")
            .build()
        )

    with (
        Directory.open(where / "keys.sqlite") as directory,
        AuditLog.open(where / "audit.jsonl") as log,
        Archive.create(
            where / "archive.sqlite",
            recipient=Recipient.from_certificate(escrow.certificate),
            retention=dt.timedelta(days=3650),
        ) as archive,
        LocalSMTPServer() as server,
    ):
        directory.import_path(where / "bob.pem")
        (where / "archive-index.key").write_text(archive.index_key.hex() + "\n")
        say(
            "9. rules: card numbers to an external domain are encrypted or not sent; "
            "key directory holds Bob's certificate; audit log and escrow archive opened"
        )
        result = governed_send(
            invoice("bob@example.org"),
            server.config(),
            policy=rules,
            directory=directory,
            signer=alice,
            audit=log,
            archive=archive,
        )
        received = server.messages[-1].data
        (where / "governed-to-bob.eml").write_bytes(received)
        in_clear = card.encode() in received
        say(
            f"10. invoice to bob@example.org: rule {result.decision.matched[0].rule!r} matched; "
            f"sent {result.protection_for('bob@example.org')}-encrypted, "
            f"{'card number VISIBLE on the wire' if in_clear else 'card number not on the wire'}"
        )
        if not result.ok or in_clear:
            return 1
        try:
            governed_send(
                invoice("carol@partner.example"),
                server.config(),
                policy=rules,
                directory=directory,
                audit=log,
                archive=archive,
            )
        except EncryptionRequiredError as refused:
            say(f"11. invoice to carol@partner.example refused, nothing sent: {refused}")
        else:
            say("11. FAILED: the invoice to Carol (no key) was sent")
            return 1
        if len(server.messages) != 1:
            return 1
        (entry,) = archive.find(to="bob@example.org")
        original = archive.get(entry.id, escrow)
    checked = audit.verify(where / "audit.jsonl")
    say(
        f"12. audit log: {'intact' if checked.ok else 'BROKEN'}, {checked.events} events, "
        f"head {checked.head[:16]}..."
    )
    restored = wire.parse(original)
    kept = card.encode() in original
    say(
        f"13. archived copy of {entry.message_id} read with the escrow key: Subject "
        f"{restored['Subject']!s}, card number {'present' if kept else 'MISSING'}"
    )
    return 0 if checked.ok and card.encode() in original else 1
