"""``securemail send`` against real servers on loopback, run as a user runs it: a process.

The command's contract: the per-recipient outcome on stdout, exit 0 only if every
recipient was accepted (75 when some were only deferred, 1 when any was refused), and one
line on stderr for anything that stops it, never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

import securemail
from securemail import wire
from securemail.demo import throwaway_identity
from securemail.transport.dkim import DKIMSigner
from securemail.transport.local import LocalSMTPServer

from .conftest import PASSWORD, PKI, USER, FakeSMTP, RealServer, server_context

TIMEOUT = 120


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "securemail", "send", *args],
        input=stdin.decode("latin-1") if stdin is not None else None,
        capture_output=True,
        text=True,
        encoding="latin-1",
        timeout=TIMEOUT,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture
def ca_file(pki: PKI, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    path.write_text(pki.ca_pem)
    return str(path)


@pytest.fixture
def encrypted(tmp_path: Path) -> Path:
    """An S/MIME-encrypted message on disk, as `securemail encrypt` would leave it."""
    ca = throwaway_identity("CA")
    bob = throwaway_identity("Bob", email="bob@example.org", issuer=ca)
    message = (
        securemail.MessageBuilder()
        .from_addr("alice@example.com")
        .to("bob@example.org")
        .cc("carol@example.org")
        .subject("figures")
        .text("attached")
        .build()
    )
    path = tmp_path / "encrypted.eml"
    path.write_bytes(securemail.encrypt(message, [bob]).data)
    return path


def test_sends_with_verified_starttls(
    real_server: Callable[..., RealServer], ca_file: str, encrypted: Path
) -> None:
    server = real_server()
    done = run("--smtp", f"127.0.0.1:{server.port}", "--ca", ca_file, "-i", str(encrypted))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "delivered bob@example.org 250 2.0.0 Ok: queued as REAL1",
        "delivered carol@example.org 250 2.0.0 Ok: queued as REAL1",
    ]
    (received,) = server.messages
    assert received.content == encrypted.read_bytes()
    assert received.rcpt_tos == ["bob@example.org", "carol@example.org"]
    assert server.verbs()[:3] == ["EHLO", "STARTTLS", "EHLO"]


def test_envelope_from_the_options_and_auth_over_tls(
    real_server: Callable[..., RealServer], ca_file: str, encrypted: Path, tmp_path: Path
) -> None:
    server = real_server()
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    done = run(
        "--smtp", f"127.0.0.1:{server.port}", "--ca", ca_file, "-i", str(encrypted),
        "--user", USER, "--password-file", str(secret),
        "--from", "bounces@example.com", "--to", "dave@example.net",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert server.logins == [(USER, PASSWORD)]
    (received,) = server.messages
    assert (received.mail_from, received.rcpt_tos) == ("bounces@example.com", ["dave@example.net"])
    assert PASSWORD not in done.stdout + done.stderr


def test_untrusted_server_stops_before_mail(
    real_server: Callable[..., RealServer], encrypted: Path
) -> None:
    """Without --ca the system store is used, which does not know the test CA."""
    server = real_server()
    done = run("--smtp", f"127.0.0.1:{server.port}", "-i", str(encrypted))
    assert done.returncode == 1
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("securemail: error: ") and "certificate" in line
    assert "MAIL" not in server.verbs() and server.messages == []


def test_require_protection_refuses_plain_mail(
    real_server: Callable[..., RealServer], ca_file: str
) -> None:
    server = real_server()
    plain = wire.to_bytes(
        securemail.MessageBuilder().from_addr("a@example.com").to("b@example.org").text("x").build()
    )
    done = run(
        "--smtp", f"127.0.0.1:{server.port}", "--ca", ca_file, "--require-protection",
        stdin=plain,
    )  # fmt: skip
    assert done.returncode == 1
    assert "not encrypted" in done.stderr
    assert server.verbs() == []  # refused before connecting


def test_partial_outcomes_set_the_exit_status(
    fake_server: Callable[..., FakeSMTP], pki: PKI, ca_file: str, encrypted: Path
) -> None:
    deferred = fake_server(
        tls=server_context(pki.good), rcpt_replies={"carol@example.org": "450 4.2.1 try later"}
    )
    done = run("--smtp", f"127.0.0.1:{deferred.port}", "--ca", ca_file, "-i", str(encrypted))
    assert done.returncode == 75
    assert "deferred  carol@example.org 450 4.2.1 try later" in done.stdout.splitlines()
    refused = fake_server(
        tls=server_context(pki.good),
        rcpt_replies={
            "bob@example.org": "550 5.1.1 no such user",
            "carol@example.org": "450 4.2.1 try later",
        },
    )
    done = run("--smtp", f"127.0.0.1:{refused.port}", "--ca", ca_file, "-i", str(encrypted))
    assert done.returncode == 1
    assert "failed    bob@example.org 550 5.1.1 no such user" in done.stdout.splitlines()


def test_dkim_signature_verifies(
    real_server: Callable[..., RealServer], ca_file: str, encrypted: Path, tmp_path: Path
) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    key_path = tmp_path / "dkim.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = real_server()
    done = run(
        "--smtp", f"127.0.0.1:{server.port}", "--ca", ca_file, "-i", str(encrypted),
        "--dkim-key", str(key_path), "--dkim-selector", "s1", "--dkim-domain", "example.com",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (received,) = server.messages
    assert received.content.startswith(b"DKIM-Signature:")
    assert received.content.endswith(encrypted.read_bytes())
    signer = DKIMSigner.from_key(key, selector="s1", domain="example.com")
    zone = {f"{signer.dns_name}.".encode(): signer.dns_record.encode()}
    assert dkim.verify(received.content, dnsfunc=lambda name, timeout=5: zone.get(name, b""))
    tampered = received.content.replace(b"Subject: ...", b"Subject: ,..")
    assert tampered != received.content
    assert not dkim.verify(tampered, dnsfunc=lambda name, timeout=5: zone.get(name, b""))


@pytest.mark.parametrize("dkim_signed", [False, True], ids=["plain", "dkim"])
def test_large_message_from_stdin_is_streamed(
    real_server: Callable[..., RealServer], ca_file: str, tmp_path: Path, dkim_signed: bool
) -> None:
    """Over the CLI's in-memory threshold: read from stdin in chunks (and, to be DKIM
    signed, spooled first), arriving byte for byte."""
    big = wire.to_bytes(
        securemail.MessageBuilder()
        .from_addr("a@example.com")
        .to("b@example.org")
        .text("big")
        .attach(os.urandom(6 * 1024 * 1024), filename="big.bin")
        .build()
    )
    options = []
    if dkim_signed:
        key_path = tmp_path / "dkim.pem"
        key_path.write_bytes(
            ed25519.Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        options = [
            "--dkim-key",
            str(key_path),
            "--dkim-selector",
            "s",
            "--dkim-domain",
            "a.example",
        ]
    server = real_server()
    done = run("--smtp", f"127.0.0.1:{server.port}", "--ca", ca_file, *options, stdin=big)
    assert done.returncode == 0, done.stderr
    (received,) = server.messages
    assert received.content.endswith(big)
    assert received.content.startswith(b"DKIM-Signature:") == dkim_signed


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--smtp", "no-port"], "--smtp takes HOST:PORT"),
        (["--smtp", "h:1", "--user", "u"], "--user needs --password-file"),
        (["--smtp", "h:1", "--dkim-key", "k.pem"], "DKIM signing needs"),
    ],
)
def test_usage_errors(args: list[str], message: str) -> None:
    done = run(*args, stdin=b"")
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.splitlines()) == 1


def test_local_server_config_verifies_its_own_certificate() -> None:
    """The demo's server: a real STARTTLS server whose certificate the client verifies
    (the settings it hands out do not switch anything off)."""
    message = (
        securemail.MessageBuilder().from_addr("a@example.com").to("b@example.org").text("x").build()
    )
    with LocalSMTPServer() as server:
        config = server.config()
        assert config.tls == "required-verify" and config.verifies_certificate
        result = securemail.transport.send(message, config)
        assert result.ok and len(server.messages) == 1
        assert server.messages[0].data == wire.to_bytes(message)
        with pytest.raises(securemail.errors.TLSRequiredError):
            securemail.transport.send(message, server.config(ca_data=None))


GOVERNED_RULES = """
internal_domains = ["example.com"]

[[rules]]
name = "cards-leave-encrypted"
match = { external = true, content = { detectors = ["payment_card"] } }
action = { encrypt = "smime" }
"""


def test_send_governed_by_rules(tmp_path: Path) -> None:
    """``send --policy``: the unprotected message goes in, the rules make it encrypted with
    the key from the directory, and the audit log records it; a recipient without a key
    stops the message for everyone, with one line naming the rule and the recipient."""
    ca = throwaway_identity("CA")
    bob = throwaway_identity("Bob", email="bob@example.org", issuer=ca)
    (tmp_path / "bob.pem").write_bytes(bob.certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "policy.toml").write_text(GOVERNED_RULES)
    keys = str(tmp_path / "keys.sqlite")
    imported = subprocess.run(
        [sys.executable, "-m", "securemail", "keys", "import", str(tmp_path / "bob.pem"),
         "--directory", keys],
        capture_output=True, text=True, check=False, timeout=TIMEOUT,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr

    def invoice(*to: str) -> Path:
        path = tmp_path / "invoice.eml"
        built = (
            securemail.MessageBuilder()
            .from_addr("alice@example.com")
            .to(*to)
            .subject("Invoice")
            .text("Card 4111-1111-1111-1111 please.")
            .build()
        )
        path.write_bytes(wire.to_bytes(built))
        return path

    with LocalSMTPServer() as server:
        ca_path = tmp_path / "server-ca.pem"
        ca_path.write_bytes(server.ca_pem)
        common = [
            "--smtp", f"127.0.0.1:{server.port}", "--ca", str(ca_path), "--policy",
            str(tmp_path / "policy.toml"), "--directory", keys, "--audit-log",
            str(tmp_path / "audit.jsonl"),
        ]  # fmt: skip
        done = run(*common, "-i", str(invoice("bob@example.org")))
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("delivered bob@example.org 250 smime ")
        (received,) = server.messages
        assert b"4111" not in received.data
        assert b"4111-1111-1111-1111" in securemail.decrypt(received.data, bob).data

        refused = run(*common, "-i", str(invoice("bob@example.org", "eve@elsewhere.example")))
        assert refused.returncode == 1
        assert refused.stdout == ""
        (line,) = refused.stderr.splitlines()
        assert "cards-leave-encrypted" in line and "eve@elsewhere.example" in line
        assert len(server.messages) == 1  # not even Bob got this one
    verified = subprocess.run(
        [sys.executable, "-m", "securemail", "audit", "verify", str(tmp_path / "audit.jsonl")],
        capture_output=True, text=True, check=False, timeout=TIMEOUT,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr
