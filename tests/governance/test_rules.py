"""Policy rules: a table of (message, rules) -> decision, how rules combine, what a decision may
reveal, robustness on broken messages, malformed policy files, and ``securemail policy check``."""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from email.message import EmailMessage, MIMEPart
from pathlib import Path
from typing import Any

import pytest

from securemail import MessageBuilder
from securemail.errors import InputError, PolicyFileError, RuleBlockedError
from securemail.governance.rules import Decision, RuleMatch, RuleSet

CARD = "4111 1111 1111 1111"
IBAN = "DE89 3704 0044 0532 0130 00"

POLICY = r"""
# The policy most cases below are evaluated against.
internal_domains = ["example.com", "*.example.com"]

[scan]
max_part_bytes = 65536

[default]
sign = true

[[rules]]
name = "internal-exempt"
description = "Mail that stays inside needs nothing more"
match = { external = false }
stop = true

[[rules]]
name = "cards-block"
match.content = { detectors = ["payment_card"] }
action = { block = true, reason = "Card numbers may not be emailed; use the payment portal." }

[[rules]]
name = "iban-encrypt"
match.content = { detectors = ["iban"] }
action = { encrypt = "any", on_unreachable = "split" }

[[rules]]
name = "partner-smime"
match.domains = ["partner.org", "*.partner.org"]
action = { encrypt = "smime", min_tls = "required-verify" }

[[rules]]
name = "board"
match.recipients = ["board-*@*"]
action = { encrypt = "pgp", sign = true }

[[rules]]
name = "confidential-header"
match.headers = [{ name = "Sensitivity", value = "Company-Confidential" }]
action = { encrypt = "any", min_tls = "required" }

[[rules]]
name = "spreadsheets"
[rules.match.attachments]
name = ["*.xlsx", "*.csv"]
min_size = 10
[rules.action]
sign = true
min_tls = "required"

[[rules]]
name = "codename"
[rules.match.content]
keywords = ["Project Falcon", "merger"]
min_matches = 2
[rules.action]
password = true
password_hint = "the password comes by SMS"

[[rules]]
name = "ssn"
match.external = true
match.content = { detectors = ["us_ssn"], regex = ['(?i)\bstrictly confidential\b'] }
action = { encrypt = "smime" }
"""

COMBINED = """
[[rules]]
name = "two-kinds"
match.content = { detectors = ["iban", "payment_card"], min_matches = 2 }
action = { encrypt = "smime" }

[[rules]]
name = "everything"
action = { min_tls = "opportunistic" }

[[rules]]
name = "stopper"
match.headers = [{ name = "X-Stop" }]
stop = true
action = { sign = true }

[[rules]]
name = "after-stop"
match.headers = [{ name = "X-Stop", regex = "^y" }]
action = { block = true, reason = "never reached when stopped" }
"""

RULESETS = {"policy": RuleSet.from_toml(POLICY), "combined": RuleSet.from_toml(COMBINED)}


def message(
    *to: str,
    cc: tuple[str, ...] = (),
    bcc: tuple[str, ...] = (),
    subject: str = "Hello",
    text: str | None = "Hi",
    html: str | None = None,
    attach: tuple[tuple[bytes, str, str | None], ...] = (),
    headers: tuple[tuple[str, str], ...] = (),
) -> EmailMessage:
    builder = MessageBuilder().from_addr("alice@example.com").subject(subject)
    if to:
        builder = builder.to(*to)
    if cc:
        builder = builder.cc(*cc)
    if bcc:
        builder = builder.bcc(*bcc)
    if text is not None:
        builder = builder.text(text)
    if html is not None:
        builder = builder.html(html)
    for data, filename, content_type in attach:
        builder = builder.attach(data, filename=filename, content_type=content_type)
    for name, value in headers:
        builder = builder.header(name, value)
    return builder.build()


def raw(body: str, *, headers: str = "Content-Type: text/plain; charset=utf-8\r\n") -> bytes:
    envelope = (
        "From: alice@example.com\r\nTo: dave@other.net\r\nSubject: hi\r\nMIME-Version: 1.0\r\n"
    )
    return (envelope + headers + "\r\n" + body).encode("latin-1")


EXTERNAL = "dave@other.net"
INTERNAL = "bob@example.com"
PARTNER = "carol@partner.org"
NESTED_CARD = (
    b"From: x@other.net\r\nTo: y@other.net\r\nSubject: fwd\r\n\r\ncard " + CARD.encode() + b"\r\n"
)
BLOCK = {"block": True}
SIGN = {"sign": True}


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    rules: str
    build: Callable[[], EmailMessage | bytes]
    expected: dict[str, Any]
    recipients: tuple[str, ...] | None = None


def outcome(decision: Decision) -> dict[str, Any]:
    return {
        "encrypt": decision.encrypt,
        "sign": decision.sign,
        "min_tls": decision.min_tls,
        "block": decision.block,
        "password": decision.password,
        "on_unreachable": decision.on_unreachable,
        "rules": [match.rule for match in decision.matched],
        "default": decision.default_applied,
        "stopped_by": decision.stopped_by,
    }


def expect(**fields: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "encrypt": None,
        "sign": False,
        "min_tls": None,
        "block": False,
        "password": False,
        "on_unreachable": "refuse",
        "rules": [],
        "default": False,
        "stopped_by": None,
    }
    return {**defaults, **fields}


CASES = [
    Case(
        "internal-only-is-exempt-and-stops",
        "policy",
        lambda: message(INTERNAL),
        expect(rules=["internal-exempt"], stopped_by="internal-exempt"),
    ),
    Case(
        "internal-subdomain-is-internal",
        "policy",
        lambda: message("ops@eu.example.com", INTERNAL, text=CARD),
        expect(rules=["internal-exempt"], stopped_by="internal-exempt"),
    ),
    Case(
        "external-plain-gets-the-default",
        "policy",
        lambda: message(EXTERNAL),
        expect(sign=True, default=True),
    ),
    Case(
        "one-external-among-internal-is-external",
        "policy",
        lambda: message(INTERNAL, cc=(EXTERNAL,)),
        expect(sign=True, default=True),
    ),
    Case(
        "card-in-text-blocks",
        "policy",
        lambda: message(EXTERNAL, text=f"my card is {CARD}, thanks"),
        expect(**BLOCK, rules=["cards-block"]),
    ),
    Case(
        "card-in-html-only-blocks",
        "policy",
        lambda: message(EXTERNAL, text=None, html=f"<p>card <b>{CARD}</b></p>"),
        expect(**BLOCK, rules=["cards-block"]),
    ),
    Case(
        "card-in-subject-blocks",
        "policy",
        lambda: message(EXTERNAL, subject=f"card {CARD}"),
        expect(**BLOCK, rules=["cards-block"]),
    ),
    Case(
        "card-in-csv-attachment-blocks-and-spreadsheet-rule",
        "policy",
        lambda: message(EXTERNAL, attach=((f"id,card\n1,{CARD}\n".encode(), "cards.csv", None),)),
        expect(**BLOCK, sign=True, min_tls="required", rules=["cards-block", "spreadsheets"]),
    ),
    Case(
        "card-in-binary-attachment-is-not-scanned",
        "policy",
        lambda: message(EXTERNAL, attach=((CARD.encode(), "scan.pdf", "application/pdf"),)),
        expect(sign=True, default=True),
    ),
    Case(
        "card-in-octet-stream-named-txt-is-scanned",
        "policy",
        lambda: message(
            EXTERNAL, attach=((CARD.encode(), "notes.txt", "application/octet-stream"),)
        ),
        expect(**BLOCK, rules=["cards-block"]),
    ),
    Case(
        "card-in-forwarded-message-blocks",
        "policy",
        lambda: message(EXTERNAL, attach=((NESTED_CARD, "fwd.eml", "text/plain"),)),
        expect(**BLOCK, rules=["cards-block"]),
    ),
    Case(
        "iban-encrypts-any-and-splits",
        "policy",
        lambda: message(EXTERNAL, text=f"IBAN {IBAN}"),
        expect(encrypt="any", on_unreachable="split", rules=["iban-encrypt"]),
    ),
    Case(
        "iban-to-partner-smime-wins-and-refuse-wins",
        "policy",
        lambda: message(PARTNER, text=f"IBAN {IBAN}"),
        expect(
            encrypt="smime",
            min_tls="required-verify",
            rules=["iban-encrypt", "partner-smime"],
        ),
    ),
    Case(
        "partner-subdomain-in-cc",
        "policy",
        lambda: message(EXTERNAL, cc=("x@eu.partner.org",)),
        expect(encrypt="smime", min_tls="required-verify", rules=["partner-smime"]),
    ),
    Case(
        "partner-in-bcc-only",
        "policy",
        lambda: message(INTERNAL, bcc=("carol@PARTNER.org",)),
        expect(encrypt="smime", min_tls="required-verify", rules=["partner-smime"]),
    ),
    Case(
        "envelope-recipients-replace-the-headers",
        "policy",
        lambda: message(INTERNAL),
        expect(encrypt="smime", min_tls="required-verify", rules=["partner-smime"]),
        recipients=(PARTNER,),
    ),
    Case(
        "board-glob-asks-for-pgp-and-signature",
        "policy",
        lambda: message("board-2026@other.net"),
        expect(encrypt="pgp", sign=True, rules=["board"]),
    ),
    Case(
        "board-and-partner-conflict-keeps-the-earlier-format",
        "policy",
        lambda: message("board-x@partner.org"),
        expect(
            encrypt="smime", sign=True, min_tls="required-verify", rules=["partner-smime", "board"]
        ),
    ),
    Case(
        "sensitivity-header",
        "policy",
        lambda: message(EXTERNAL, headers=(("Sensitivity", "Company-Confidential"),)),
        expect(encrypt="any", min_tls="required", rules=["confidential-header"]),
    ),
    Case(
        "sensitivity-header-any-case",
        "policy",
        lambda: message(EXTERNAL, headers=(("SENSITIVITY", "company-confidential"),)),
        expect(encrypt="any", min_tls="required", rules=["confidential-header"]),
    ),
    Case(
        "sensitivity-other-value",
        "policy",
        lambda: message(EXTERNAL, headers=(("Sensitivity", "Personal"),)),
        expect(sign=True, default=True),
    ),
    Case(
        "large-enough-spreadsheet",
        "policy",
        lambda: message(EXTERNAL, attach=((b"x" * 100, "Q3.XLSX", None),)),
        expect(sign=True, min_tls="required", rules=["spreadsheets"]),
    ),
    Case(
        "tiny-spreadsheet-is-under-min-size",
        "policy",
        lambda: message(EXTERNAL, attach=((b"x" * 5, "q3.xlsx", None),)),
        expect(sign=True, default=True),
    ),
    Case(
        "two-keywords-ask-for-a-password",
        "policy",
        lambda: message(EXTERNAL, text="About PROJECT FALCON:\nthe merger is on."),
        expect(password=True, rules=["codename"]),
    ),
    Case(
        "one-keyword-is-not-enough",
        "policy",
        lambda: message(EXTERNAL, text="About Project Falcon."),
        expect(sign=True, default=True),
    ),
    Case(
        "keywords-count-only-whole-words",
        "policy",
        lambda: message(EXTERNAL, text="mergers and premerger talks; project falconry"),
        expect(sign=True, default=True),
    ),
    Case(
        "keyword-in-text-and-html-alternative-counts-once",
        "policy",
        lambda: message(EXTERNAL, text="the merger", html="<p>the merger</p>"),
        expect(sign=True, default=True),
    ),
    Case(
        "ssn-external",
        "policy",
        lambda: message(EXTERNAL, text="SSN 536-22-1234"),
        expect(encrypt="smime", rules=["ssn"]),
    ),
    Case(
        "ssn-rule-regex",
        "policy",
        lambda: message(EXTERNAL, text="This is Strictly Confidential."),
        expect(encrypt="smime", rules=["ssn"]),
    ),
    Case(
        "highest-min-tls-wins",
        "policy",
        lambda: message(
            PARTNER,
            headers=(("Sensitivity", "Company-Confidential"),),
            attach=((b"a,b\n" * 10, "t.csv", None),),
        ),
        expect(
            encrypt="smime",
            sign=True,
            min_tls="required-verify",
            rules=["partner-smime", "confidential-header", "spreadsheets"],
        ),
    ),
    Case(
        "block-beats-encrypt",
        "policy",
        lambda: message(PARTNER, text=f"{CARD} / {IBAN}"),
        expect(
            **BLOCK,
            encrypt="smime",
            min_tls="required-verify",
            rules=["cards-block", "iban-encrypt", "partner-smime"],
        ),
    ),
    Case(
        "raw-bytes-undecodable-and-unknown-charset",
        "policy",
        lambda: raw(
            "\xff\xfe caf\xe9 " + CARD, headers="Content-Type: text/plain; charset=x-bogus\r\n"
        ),
        expect(**BLOCK, rules=["cards-block"]),
    ),
    Case(
        "raw-bytes-non-text-codec-charset",
        "policy",
        lambda: raw(CARD, headers="Content-Type: text/plain; charset=base64\r\n"),
        expect(**BLOCK, rules=["cards-block"]),
    ),
    Case(
        "raw-bytes-unterminated-multipart",
        "policy",
        lambda: raw(
            f"--b\r\nContent-Type: text/html\r\n\r\n<p>{CARD}\r\n--b\r\nContent-Type: te",
            headers='Content-Type: multipart/mixed; boundary="b"\r\n',
        ),
        expect(**BLOCK, rules=["cards-block"]),
    ),
    Case(
        "raw-bytes-broken-base64",
        "policy",
        lambda: raw(
            base64.b64encode(f"iban {IBAN}".encode()).decode() + "!!*~\r\n%%",
            headers="Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n",
        ),
        expect(encrypt="any", on_unreachable="split", rules=["iban-encrypt"]),
    ),
    Case(
        "raw-bytes-quoted-printable",
        "policy",
        lambda: raw(
            "card 4111=20=\r\n1111 1111 1111 =E9\r\n",
            headers="Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n",
        ),
        expect(**BLOCK, rules=["cards-block"]),
    ),
    Case(
        "raw-bytes-without-recipients",
        "policy",
        lambda: b"From: alice@example.com\r\nSubject: x\r\n\r\nhello\r\n",
        expect(sign=True, default=True),
    ),
    Case(
        "card-past-the-scan-limit-is-not-seen",
        "policy",
        lambda: message(EXTERNAL, text="x" * 70_000 + " " + CARD),
        expect(sign=True, default=True),
    ),
    Case(
        "card-plus-iban-reach-min-matches",
        "combined",
        lambda: message(EXTERNAL, text=f"{CARD} {IBAN}"),
        expect(encrypt="smime", min_tls="opportunistic", rules=["two-kinds", "everything"]),
    ),
    Case(
        "two-cards-reach-min-matches",
        "combined",
        lambda: message(EXTERNAL, text=f"{CARD} and 5500000000000004"),
        expect(encrypt="smime", min_tls="opportunistic", rules=["two-kinds", "everything"]),
    ),
    Case(
        "one-card-does-not",
        "combined",
        lambda: message(EXTERNAL, text=CARD),
        expect(min_tls="opportunistic", rules=["everything"]),
    ),
    Case(
        "stop-ends-evaluation",
        "combined",
        lambda: message(EXTERNAL, headers=(("X-Stop", "yes"),)),
        expect(
            sign=True,
            min_tls="opportunistic",
            rules=["everything", "stopper"],
            stopped_by="stopper",
        ),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_decision_table(case: Case) -> None:
    decision = RULESETS[case.rules].evaluate(case.build(), recipients=case.recipients)
    assert outcome(decision) == case.expected


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 30
    assert len({case.id for case in CASES}) == len(CASES)


# --- combining -------------------------------------------------------------------------------


def test_conflicting_formats_are_noted() -> None:
    decision = RULESETS["policy"].evaluate(message("board-x@partner.org"))
    assert decision.notes == (
        "rule 'board' asks for pgp but rule 'partner-smime' asked for smime first; smime is kept",
    )


def test_order_does_not_matter_without_stop() -> None:
    """Strictest-wins: reversing the rules gives the same requirements."""
    rules = [block.strip() for block in POLICY.split("[[rules]]")[1:]]
    head = POLICY.split("[[rules]]", maxsplit=1)[0]
    without_stop = [rule for rule in rules if "stop = true" not in rule]
    forward = RuleSet.from_toml(head + "".join(f"[[rules]]\n{r}\n\n" for r in without_stop))
    backward = RuleSet.from_toml(head + "".join(f"[[rules]]\n{r}\n\n" for r in without_stop[::-1]))
    for case in CASES:
        if case.rules != "policy" or "conflict" in case.id:
            continue
        built = case.build()
        a = outcome(forward.evaluate(built, recipients=case.recipients))
        b = outcome(backward.evaluate(built, recipients=case.recipients))
        assert sorted(a.pop("rules")) == sorted(b.pop("rules")), case.id
        assert a == b, case.id


def test_a_rule_without_match_matches_everything_and_default_is_then_unused() -> None:
    rules = RuleSet.from_toml('[default]\nsign = true\n[[rules]]\nname = "all"\n')
    decision = rules.evaluate(message(EXTERNAL))
    assert decision.matched == (RuleMatch("all", ("matches every message",)),)
    assert not decision.default_applied
    assert not decision.sign


def test_refuse_from_a_rule_without_on_unreachable_beats_split() -> None:
    rules = RuleSet.from_toml(
        '[[rules]]\nname = "a"\naction = { encrypt = "any", on_unreachable = "split" }\n'
        '[[rules]]\nname = "b"\naction = { password = true }\n'
    )
    decision = rules.evaluate(message(EXTERNAL))
    assert decision.on_unreachable == "refuse"
    assert decision.requires_encryption


def test_external_false_needs_recipients() -> None:
    rules = RuleSet.from_toml('internal_domains = ["example.com"]\n[[rules]]\nname = "inside"\n'
                              "match.external = false\n")  # fmt: skip
    assert rules.evaluate(message(INTERNAL)).matched
    assert not rules.evaluate(message(INTERNAL), recipients=[]).matched


def test_header_regex_and_encoded_words() -> None:
    rules = RuleSet.from_toml(
        '[[rules]]\nname = "h"\nmatch.headers = [{ name = "X-Class", regex = "(?i)^geheim" }]\n'
        'action = { encrypt = "any" }\n'
    )
    encoded = (
        b"From: a@example.com\r\nTo: b@other.net\r\nX-Class: =?utf-8?q?GEHEIM_=C3=BC?=\r\n\r\nx"
    )
    decision = rules.evaluate(encoded)
    assert decision.matched == (RuleMatch("h", ("header X-Class matches match.headers[0]",)),)
    assert not rules.evaluate(message(EXTERNAL, headers=(("X-Class", "offen"),))).matched


def test_eight_bit_bodies_are_read_in_their_declared_charset() -> None:
    rules = RuleSet.from_toml(
        '[[rules]]\nname = "k"\nmatch.content = { keywords = ["Geschäftsgeheimnis"] }\n'
    )
    for charset in ("latin-1", "utf-8"):
        body = "Ein Geschäftsgeheimnis.".encode(charset)
        data = raw("", headers=f"Content-Type: text/plain; charset={charset}\r\n")
        assert rules.evaluate(data + body).matched, charset


def test_the_scan_limit_bounds_each_part() -> None:
    text = "x" * 1500 + f" {CARD}"
    attachment = ((text.encode(), "big.txt", None),)
    small = RuleSet.from_toml(
        '[scan]\nmax_part_bytes = 1024\n[[rules]]\nname = "c"\n'
        'match.content = { detectors = ["payment_card"] }\n'
    )
    large = RuleSet.from_toml(
        '[[rules]]\nname = "c"\nmatch.content = { detectors = ["payment_card"] }\n'
    )
    assert not small.evaluate(message(EXTERNAL, text=None, attach=attachment)).matched
    assert large.evaluate(message(EXTERNAL, text=None, attach=attachment)).matched


def test_a_huge_attachment_is_not_decoded_whole() -> None:
    """48 MiB of base64 text: evaluation decodes only the configured prefix of it (peak memory
    stays far below the attachment's size) and still tells its exact size."""
    huge = MIMEPart()
    huge["Content-Type"] = "text/plain"
    huge["Content-Transfer-Encoding"] = "base64"
    huge["Content-Disposition"] = 'attachment; filename="huge.txt"'
    huge.set_payload(("QUFB" * 19 + "\n") * 2**20)  # 76 characters a line, 57 bytes
    built = message(EXTERNAL, text=CARD)
    built.make_mixed()
    built.attach(huge)
    rules = RuleSet.from_toml(
        "[scan]\nmax_part_bytes = 1048576\n"
        '[[rules]]\nname = "k"\nmatch.content = { keywords = ["absent"] }\n'
        '[[rules]]\nname = "size"\nmatch.attachments = { min_size = 59768832 }\n'
    )
    tracemalloc.start()
    try:
        decision = rules.evaluate(built)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [m.rule for m in decision.matched] == ["size"]  # 2**20 lines of 57 bytes, exactly
    assert peak < 12 * 1024 * 1024, peak


# --- what a decision reveals -----------------------------------------------------------------


def test_decisions_never_contain_the_matched_text_subject_or_filenames() -> None:
    built = message(
        PARTNER,
        subject="Layoffs list",
        text=f"card {CARD}, iban {IBAN}, SSN 536-22-1234, the merger of project falcon",
        attach=((b"a,b\n" * 10, "layoffs-2026.csv", None),),
    )
    decision = RULESETS["policy"].evaluate(built)
    public = decision.explain() + json.dumps(decision.to_audit()) + repr(decision)
    for secret in ("4111", "DE89", "536-22", "falcon", "merger", "Layoffs", "layoffs-2026"):
        assert secret.lower() not in public.lower(), secret
    assert "content: detector payment_card matched 1 time" in decision.explain()


def test_to_audit_has_rule_names_and_actions_only() -> None:
    decision = RULESETS["policy"].evaluate(message(PARTNER, text=f"IBAN {IBAN}"))
    assert decision.to_audit() == {
        "rules": ["iban-encrypt", "partner-smime"],
        "default_applied": False,
        "stopped_by": None,
        "encrypt": "smime",
        "password": False,
        "on_unreachable": "refuse",
        "sign": False,
        "min_tls": "required-verify",
        "block": False,
        "block_rule": None,
        "block_reason": None,
    }
    assert PARTNER not in json.dumps(decision.to_audit())


def test_explain() -> None:
    decision = RULESETS["policy"].evaluate(message(EXTERNAL, text=f"My card: {CARD}"))
    assert decision.explain() == (
        "block: yes, by rule 'cards-block': Card numbers may not be emailed; use the payment "
        "portal.\n"
        "matched rules:\n"
        "  cards-block: content: detector payment_card matched 1 time"
    )
    nothing = RuleSet.from_toml("").evaluate(message(EXTERNAL))
    assert nothing.explain() == "no protection required\nno rule matched"


def test_decision_is_frozen_and_raises_when_blocked() -> None:
    decision = RULESETS["policy"].evaluate(message(EXTERNAL, text=CARD))
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.block = False  # type: ignore[misc]
    with pytest.raises(RuleBlockedError) as raised:
        decision.raise_if_blocked()
    assert raised.value.rule == "cards-block"
    assert CARD not in str(raised.value)
    RULESETS["policy"].evaluate(message(EXTERNAL)).raise_if_blocked()  # not blocked: no error


def test_evaluate_refuses_other_types() -> None:
    with pytest.raises(InputError):
        RULESETS["policy"].evaluate("From: a@b\r\n\r\nx")  # type: ignore[arg-type]


# --- malformed policy files ------------------------------------------------------------------

MALFORMED = [
    ("toml-syntax", 'internal_domains = ["a.com"]\n\n[[rules]\nname = "x"\n', 3, "", "TOML syntax"),
    (
        "unterminated-string",
        '[[rules]]\nname = "x\n',
        2,
        "rules.name",
        "TOML syntax",
    ),
    (
        "unknown-field",
        '[[rules]]\nname = "a"\n[rules.match]\ndomain = ["x.org"]\n',
        4,
        "rules[0].match.domain",
        "unknown field 'domain'; expected one of: recipients, domains, external",
    ),
    (
        "unknown-top-level-field",
        'internal_domain = ["a.com"]\n',
        1,
        "internal_domain",
        "unknown field 'internal_domain'; expected one of: internal_domains, scan, default",
    ),
    (
        "wrong-type",
        '[[rules]]\nname = "a"\n\n[[rules]]\nname = "b"\naction = { sign = "yes" }\n',
        6,
        "rules[1].action.sign",
        "Input should be a valid boolean",
    ),
    (
        "string-instead-of-list",
        'internal_domains = "example.com"\n',
        1,
        "internal_domains",
        "Input should be a valid list",
    ),
    (
        "bad-regex",
        '[[rules]]\nname = "a"\n[rules.match.content]\nregex = [\n  "ok",\n  "(unclosed",\n]\n',
        6,
        "rules[0].match.content.regex[1]",
        "regular expression does not compile: missing ), unterminated subpattern",
    ),
    (
        "unknown-detector",
        '[[rules]]\nname = "a"\nmatch.content = { detectors = ["visa"] }\n',
        3,
        "rules[0].match.content.detectors[0]",
        "unknown detector 'visa'; known: iban, payment_card, us_ssn",
    ),
    (
        "bad-literal",
        '[[rules]]\nname = "a"\n[rules.action]\nencrypt = "openpgp"\n',
        4,
        "rules[0].action.encrypt",
        "Input should be 'smime', 'pgp' or 'any'",
    ),
    (
        "bad-tls",
        '[default]\nmin_tls = "implicit"\n',
        2,
        "default.min_tls",
        "Input should be 'opportunistic', 'required' or 'required-verify'",
    ),
    (
        "block-without-reason",
        '[[rules]]\nname = "a"\n\n[rules.action]\nblock = true\n',
        4,
        "rules[0].action",
        "block = true needs a reason",
    ),
    (
        "on-unreachable-without-encryption",
        '[[rules]]\nname = "a"\naction.sign = true\naction.on_unreachable = "split"\n',
        3,
        "rules[0].action",
        "on_unreachable needs encrypt or password",
    ),
    (
        "password-with-pgp",
        '[[rules]]\nname = "a"\naction = { password = true, encrypt = "pgp" }\n',
        3,
        "rules[0].action",
        "password encryption is S/MIME",
    ),
    (
        "missing-name",
        '[[rules]]\nname = "a"\n\n[[rules]]\ndescription = "no name"\n',
        4,
        "rules[1].name",
        "required field missing",
    ),
    (
        "duplicate-name",
        '[[rules]]\nname = "a"\n[[rules]]\n  name = "a"\n',
        4,
        "rules[1].name",
        "another rule is already named 'a'",
    ),
    (
        "domain-in-recipients",
        '[[rules]]\nname = "a"\nmatch = { recipients = ["partner.org"] }\n',
        3,
        "rules[0].match.recipients[0]",
        "an address or glob with an @",
    ),
    (
        "empty-content",
        '[[rules]]\nname = "a"\nmatch = { content = { min_matches = 2 } }\n',
        3,
        "rules[0].match.content",
        "content needs at least one of regex, detectors, keywords",
    ),
    (
        "zero-min-matches",
        '[[rules]]\nname = "a"\n[rules.match.content]\nkeywords = ["x"]\nmin_matches = 0\n',
        5,
        "rules[0].match.content.min_matches",
        "Input should be greater than or equal to 1",
    ),
    (
        "header-value-and-regex",
        '[[rules]]\nname = "a"\nmatch.headers = [\n  { name = "A" },\n'
        '  { name = "B", value = "x", regex = "y" },\n]\n',
        5,
        "rules[0].match.headers[1]",
        "give value or regex, not both",
    ),
    (
        "quoted-keys-and-array-of-inline-tables",
        '[[rules]]\n"name" = "a"\n[[rules]]\nname = "b"\n[rules."match"]\nexternal = 1\n',
        6,
        "rules[1].match.external",
        "Input should be a valid boolean",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "field", "reason"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_policy_names_file_line_and_field(
    text: str, line: int, field: str, reason: str
) -> None:
    with pytest.raises(PolicyFileError) as raised:
        RuleSet.from_toml(text, source="rules.toml")
    error = raised.value
    assert (error.path, error.line, error.field) == ("rules.toml", line, field)
    assert error.reason.startswith(reason), error.reason
    assert str(error).startswith(f"policy rules.toml, line {line}: ")
    assert isinstance(error, InputError)


def test_several_problems_report_the_first_and_count_the_rest() -> None:
    text = '[[rules]]\nname = "a"\nmatch = { domains = ["a@b"], external = 2 }\nstopp = true\n'
    with pytest.raises(PolicyFileError) as raised:
        RuleSet.from_toml(text)
    assert raised.value.line == 3
    assert raised.value.reason.endswith("(and 2 more problems)")


def test_load_reads_files_and_names_them(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(POLICY, encoding="utf-8")
    assert RuleSet.load(path) == RuleSet.from_toml(POLICY, source=str(path))
    path.write_bytes(b'[[rules]]\nname = "caf\xe9"\n')
    with pytest.raises(PolicyFileError, match="not UTF-8"):
        RuleSet.load(path)
    with pytest.raises(PolicyFileError, match="cannot read it") as raised:
        RuleSet.load(tmp_path / "missing.toml")
    assert raised.value.path == str(tmp_path / "missing.toml")


# --- the command line ------------------------------------------------------------------------


def securemail(*args: str, cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "securemail", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_cli_policy_check(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text(POLICY, encoding="utf-8")
    (tmp_path / "m.eml").write_bytes(message(EXTERNAL, text=f"card {CARD}").as_bytes())
    done = securemail("policy", "check", "--policy", "policy.toml", "-i", "m.eml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().startswith("block: yes, by rule 'cards-block'")
    assert CARD.encode() not in done.stdout
    assert done.stderr == b""


def test_cli_policy_check_stdin_recipients_and_json(tmp_path: Path) -> None:
    (tmp_path / "policy.toml").write_text(POLICY, encoding="utf-8")
    done = securemail(
        "policy", "check", "--policy", "policy.toml", "--recipient", PARTNER, "--json",
        cwd=tmp_path, stdin=message(INTERNAL).as_bytes(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["rules"] == ["partner-smime"]


def test_cli_malformed_policy_is_one_line_exit_1(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('[[rules]]\nname = "a"\nmatch.domian = ["x"]\n')
    (tmp_path / "m.eml").write_bytes(message(EXTERNAL).as_bytes())
    done = securemail("policy", "check", "--policy", "bad.toml", "-i", "m.eml", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == b""
    assert done.stderr.decode() == (
        "securemail: error: policy bad.toml, line 3: rules[0].match.domian: unknown field "
        "'domian'; expected one of: recipients, domains, external, headers, attachments, "
        "content\n"
    )


def test_cli_policy_check_needs_a_policy(tmp_path: Path) -> None:
    done = securemail("policy", "check", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count(b"\n") == 1
