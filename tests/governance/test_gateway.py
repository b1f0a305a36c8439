"""The governed send (securemail.send with policy=) against a real STARTTLS server on
loopback: rules decide, keys come from the directory, copies are protected per recipient
group, refusals send nothing, and the audit log and the archive record what happened."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from asn1crypto import cms
from pgp.keys import KeySet, shared_keyset
from pki import issue

import securemail
from securemail import pgp, wire
from securemail.compose import MessageBuilder
from securemail.demo import throwaway_identity
from securemail.errors import (
    DecryptionError,
    EncryptionRequiredError,
    IndexKeyError,
    NotARecipientError,
    PolicyRequirementError,
    RecipientUnreachableError,
    RuleBlockedError,
)
from securemail.governance import audit
from securemail.governance.archive import Archive
from securemail.governance.audit import AuditLog
from securemail.governance.directory import Directory, Reason
from securemail.governance.gateway import GovernedResult, PasswordRequest
from securemail.governance.rules import RuleSet
from securemail.keys import Identity, Recipient
from securemail.transport import SMTPTransport
from securemail.transport.local import LocalSMTPServer

CARD = "4111 1111 1111 1111"

RULES = """
internal_domains = ["example.com"]

[[rules]]
name = "cards-leave-encrypted"
match = { external = true, content = { detectors = ["payment_card"] } }
action = { encrypt = "any" }

[[rules]]
name = "no-secrets"
match = { content = { keywords = ["TOP-SECRET-PROJECT"] } }
action = { block = true, reason = "never by mail" }
"""


@pytest.fixture(scope="module")
def keyset(tmp_path_factory: pytest.TempPathFactory) -> KeySet:
    return shared_keyset("gpg", lambda: tmp_path_factory.mktemp("gateway-pgp"))


@pytest.fixture(scope="module")
def ca() -> Identity:
    return throwaway_identity("Gateway CA")


@pytest.fixture(scope="module")
def alice(ca: Identity) -> Identity:
    return throwaway_identity("Alice", email="alice@example.com", issuer=ca)


@pytest.fixture(scope="module")
def erin(ca: Identity) -> Identity:
    """External, reachable by S/MIME."""
    return throwaway_identity("Erin", email="erin@partner.example", issuer=ca)


@pytest.fixture(scope="module")
def escrow(ca: Identity) -> Identity:
    return throwaway_identity("Archive", email="archive@example.com", issuer=ca)


@pytest.fixture
def directory(erin: Identity, keyset: KeySet) -> Iterator[Directory]:
    with Directory.open() as keys:
        keys.add_certificate(erin.certificate)
        keys.import_bytes(keyset.bob.public)  # bob@example.org: external, OpenPGP only
        yield keys


@pytest.fixture
def server() -> Iterator[LocalSMTPServer]:
    with LocalSMTPServer() as running:
        yield running


def message(*to: str, text: str = f"Card {CARD}, expires 12/30.", bcc: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    builder = MessageBuilder().from_addr("alice@example.com").to(*to).subject("Invoice 42")
    for address in bcc:
        builder = builder.bcc(address)
    return builder.text(text).build()


def recipients_of(data: bytes) -> int:
    """How many recipient infos the S/MIME message's CMS carries."""
    parsed = wire.parse(data)
    der = parsed.get_payload(decode=True)
    assert isinstance(der, bytes)
    info = cms.ContentInfo.load(der)
    return len(info["content"]["recipient_infos"])


def test_card_to_external_recipients_goes_encrypted_per_format(
    server: LocalSMTPServer,
    directory: Directory,
    alice: Identity,
    erin: Identity,
    keyset: KeySet,
    escrow: Identity,
    tmp_path: Path,
) -> None:
    rules = RuleSet.from_toml(RULES)
    with (
        AuditLog.open(tmp_path / "audit.jsonl") as log,
        Archive.create(
            tmp_path / "archive.sqlite",
            recipient=Recipient.from_certificate(escrow.certificate),
            retention=dt.timedelta(days=3650),
        ) as archive,
    ):
        result = securemail.send(
            message("erin@partner.example", "bob@example.org"),
            server.config(),
            policy=rules,
            directory=directory,
            signer=alice,
            audit=log,
            archive=archive,
        )
        assert isinstance(result, GovernedResult)
        assert result.ok
        assert result.protection_for("erin@partner.example") == "smime"
        assert result.protection_for("bob@example.org") == "pgp"
        assert [m.rule for m in result.decision.matched] == ["cards-leave-encrypted"]

        by_rcpt = {m.recipients: m for m in server.messages}
        assert set(by_rcpt) == {("erin@partner.example",), ("bob@example.org",)}
        for received in server.messages:
            assert CARD.encode() not in received.data
            assert b"Invoice 42" not in received.data  # protected header: "..." outside
        smime_copy = by_rcpt[("erin@partner.example",)].data
        opened = securemail.decrypt(smime_copy, erin)
        assert CARD.encode() in opened.data
        pgp_copy = by_rcpt[("bob@example.org",)].data
        assert CARD.encode() in pgp.decrypt(pgp_copy, keys=[keyset.bob.secret]).data

        # The archive holds the original, readable with the archive key only.
        assert result.archive_id is not None
        (entry,) = archive.find(to="BOB@example.org")
        assert entry.id == result.archive_id
        assert CARD.encode() in archive.get(entry.id, escrow)
        with pytest.raises((DecryptionError, NotARecipientError)):
            archive.get(entry.id, erin)

    checked = audit.verify(tmp_path / "audit.jsonl")
    assert checked.ok
    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events[1:]]
    assert kinds[0] == "decision" and "archive" in kinds
    assert kinds.count("protection") == 2 and kinds.count("delivery") == 2
    text = (tmp_path / "audit.jsonl").read_text()
    assert CARD not in text and "Invoice 42" not in text
    delivery = next(e for e in events if e["event"] == "delivery")
    assert delivery["tls"]["verified"] is True


def test_missing_key_refuses_and_sends_nothing(
    server: LocalSMTPServer, directory: Directory, alice: Identity, tmp_path: Path
) -> None:
    with (
        AuditLog.open(tmp_path / "audit.jsonl") as log,
        pytest.raises(EncryptionRequiredError) as caught,
    ):
        securemail.send(
            message("erin@partner.example", "nokey@elsewhere.example"),
            server.config(),
            policy=RuleSet.from_toml(RULES),
            directory=directory,
            audit=log,
        )
    assert caught.value.recipients == ("nokey@elsewhere.example",)
    assert "nokey@elsewhere.example" in str(caught.value)
    assert "cards-leave-encrypted" in str(caught.value)
    assert server.messages == []  # nothing left, not even for the reachable recipient
    kinds = [
        json.loads(line)["event"] for line in (tmp_path / "audit.jsonl").read_text().splitlines()
    ]
    assert kinds[-1] == "refusal" and "delivery" not in kinds


def test_split_sends_to_the_reachable_and_reports_the_rest(
    server: LocalSMTPServer, directory: Directory
) -> None:
    rules = RuleSet.from_toml(
        RULES.replace('encrypt = "any" }', 'encrypt = "any", on_unreachable = "split" }')
    )
    result = securemail.send(
        message("erin@partner.example", "nokey@elsewhere.example"),
        server.config(),
        policy=rules,
        directory=directory,
    )
    assert not result.ok
    assert result.delivered == ("erin@partner.example",)
    assert [address for address, _ in result.refused] == ["nokey@elsewhere.example"]
    assert [m.recipients for m in server.messages] == [("erin@partner.example",)]


def test_expired_certificate_is_never_chosen(server: LocalSMTPServer) -> None:
    now = dt.datetime.now(dt.UTC)
    stale = issue(
        common_name="Stale",
        email="stale@partner.example",
        not_before=now - dt.timedelta(days=400),
        not_after=now - dt.timedelta(days=1),
    )
    with Directory.open() as keys:
        keys.add_certificate(stale.cert)
        with pytest.raises(EncryptionRequiredError) as caught:
            securemail.send(
                message("stale@partner.example"),
                server.config(),
                policy=RuleSet.from_toml(RULES),
                directory=keys,
            )
    (unreachable,) = caught.value.unreachable
    assert isinstance(unreachable, RecipientUnreachableError)
    assert [r.reason for r in unreachable.reasons] == [Reason.EXPIRED]
    assert server.messages == []


def test_block_rule_stops_the_message(server: LocalSMTPServer, directory: Directory) -> None:
    with pytest.raises(RuleBlockedError, match="never by mail"):
        securemail.send(
            message("colleague@example.com", text="About TOP-SECRET-PROJECT."),
            server.config(),
            policy=RuleSet.from_toml(RULES),
            directory=directory,
        )
    assert server.messages == []


def test_internal_mail_without_cards_goes_as_it_is(
    server: LocalSMTPServer, directory: Directory
) -> None:
    result = securemail.send(
        message("colleague@example.com", text="Lunch?"),
        server.config(),
        policy=RuleSet.from_toml(RULES),
        directory=directory,
    )
    assert result.ok and result.protection_for("colleague@example.com") == "none"
    assert b"Lunch?" in server.messages[0].data


def test_min_tls_is_enforced_before_connecting(directory: Directory) -> None:
    rules = RuleSet.from_toml(
        RULES + '\n[[rules]]\nname = "tls"\naction = { min_tls = "required-verify" }\n'
    )
    with LocalSMTPServer() as running:
        with pytest.raises(PolicyRequirementError) as caught:
            securemail.send(
                message("colleague@example.com", text="Lunch?"),
                running.config(tls="opportunistic", ca_data=None),
                policy=rules,
                directory=directory,
            )
        assert caught.value.requirement == "min_tls"
        assert running.messages == []
        with SMTPTransport(running.config()) as transport:  # verified: allowed
            assert securemail.send(
                message("colleague@example.com", text="Lunch?"),
                transport=transport,
                policy=rules,
                directory=directory,
            ).ok


def test_bcc_recipients_get_copies_of_their_own(
    server: LocalSMTPServer, ca: Identity, erin: Identity
) -> None:
    frank = throwaway_identity("Frank", email="frank@partner.example", issuer=ca)
    with Directory.open() as keys:
        keys.add_certificate(erin.certificate)
        keys.add_certificate(frank.certificate)
        result = securemail.send(
            message("erin@partner.example", bcc=("frank@partner.example",)),
            server.config(),
            policy=RuleSet.from_toml(RULES),
            directory=keys,
        )
    assert result.ok
    by_rcpt = {m.recipients: m.data for m in server.messages}
    assert set(by_rcpt) == {("erin@partner.example",), ("frank@partner.example",)}
    assert recipients_of(by_rcpt[("erin@partner.example",)]) == 1  # Frank not named in it
    assert CARD.encode() in securemail.decrypt(by_rcpt[("frank@partner.example",)], frank).data
    with pytest.raises(NotARecipientError):
        securemail.decrypt(by_rcpt[("erin@partner.example",)], frank)


def test_password_rule_hands_the_password_out_of_band(
    server: LocalSMTPServer, directory: Directory, erin: Identity
) -> None:
    rules = RuleSet.from_toml(
        RULES.replace(
            'action = { encrypt = "any" }',
            'action = { password = true, password_hint = "by phone" }',
        )
    )
    asked: list[PasswordRequest] = []

    def password(request: PasswordRequest) -> str:
        asked.append(request)
        return "correct horse battery staple"

    result = securemail.send(
        message("erin@partner.example", "nokey@elsewhere.example"),
        server.config(),
        policy=rules,
        directory=directory,
        password_callback=password,
    )
    assert result.ok
    assert [r.hint for r in asked] == ["by phone"]
    assert set(asked[0].recipients) == {"erin@partner.example", "nokey@elsewhere.example"}
    (received,) = server.messages  # one copy: Erin's certificate and the password open it
    opened = securemail.decrypt(received.data, password="correct horse battery staple")
    assert CARD.encode() in opened.data
    assert CARD.encode() in securemail.decrypt(received.data, erin).data


def test_password_rule_without_a_callback_refuses(
    server: LocalSMTPServer, directory: Directory
) -> None:
    rules = RuleSet.from_toml(
        RULES.replace('action = { encrypt = "any" }', "action = { password = true }")
    )
    with pytest.raises(PolicyRequirementError) as caught:
        securemail.send(
            message("erin@partner.example"), server.config(), policy=rules, directory=directory
        )
    assert caught.value.requirement == "password"
    assert server.messages == []


def test_archive_failure_stops_the_message(
    server: LocalSMTPServer, directory: Directory, escrow: Identity, tmp_path: Path
) -> None:
    """No mail leaves that the archive does not hold: an archive that cannot store (opened
    without its index key) refuses the message, and the refusal is audited."""
    Archive.create(
        tmp_path / "archive.sqlite",
        recipient=Recipient.from_certificate(escrow.certificate),
        retention=None,
    ).close()
    with (
        Archive.open(tmp_path / "archive.sqlite") as archive,
        AuditLog.open(tmp_path / "audit.jsonl") as log,
        pytest.raises(IndexKeyError),
    ):
        securemail.send(
            message("erin@partner.example"),
            server.config(),
            policy=RuleSet.from_toml(RULES),
            directory=directory,
            audit=log,
            archive=archive,
        )
    assert server.messages == []
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["event"] == "refusal"
