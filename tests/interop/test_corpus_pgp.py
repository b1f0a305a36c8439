"""OpenPGP messages and files made by other implementations, read in place.

Every PGP/MIME and inline-PGP message of the shared corpus (Thunderbird/RNP, the Autocrypt
vectors and spec examples, Delta Chat's real-world and MTA-mangled mail, notmuch, MimeKit, and
the mixed PGP/S-MIME nestings of Thunderbird's S/MIME set) states the outcome we expect from
:func:`securemail.pgp.read`, layer by layer (outermost first), and why. OpenPGP data that is not
a message (GnuPG's sample messages, RFC 9580 Appendix A, RNP's file encryption, the payload of
Autocrypt Setup Messages, key files gpg 2.2 cannot read) is checked at the engine level. Both
tables are rendered into ``docs/interop.md`` (``python tests/interop/test_corpus_pgp.py``
rewrites them, and :func:`test_interop_doc_is_current` keeps the two in step).

Expectations come from what each producer meant (its PROVENANCE.md, the upstream tests), not
from what securemail happens to answer: an expected failure is asserted as precisely as a
success. Each key set is imported once into one engine per module.
"""

from __future__ import annotations

import base64
import binascii
import collections
import dataclasses
import datetime as dt
import email
import email.policy
import re
from collections.abc import Iterator
from email.message import EmailMessage, Message
from pathlib import Path

import pytest

from securemail import wire
from securemail.errors import SecureMailError, WrongPasswordError
from securemail.pgp import GnuPG, read
from securemail.pgp.gpg import Decrypted, KeyInfo, Verdict, Verification
from securemail.policy import DEFAULT
from securemail.results import DecryptResult, ReadResult

# --- keys, per corpus folder ---------------------------------------------------------------------

TB = "thunderbird-openpgp"
TB_KEYS = f"{TB}/keys"
TB_ALICE = f"{TB_KEYS}/alice@openpgp.example-0xf231550c4f47e38e"
TB_BOB = f"{TB_KEYS}/bob@openpgp.example-0xfbfcc82a015e7330"
TB_CAROL = f"{TB_KEYS}/carol@example.com-0x3099ff1238852b9f"
AC = "autocrypt-spec-examples"
DC = "deltachat"
GS = "gnupg/openpgp-samplemsgs"
RFC = "rfc9580-appendix-a"


@dataclasses.dataclass(frozen=True)
class KeySet:
    about: str
    keys: tuple[str, ...] = ()
    """Key files (public or secret, armored or binary), relative to the corpus."""
    passphrase: str | None = None
    """Given to every operation (it unlocks whichever protected secret key is needed)."""
    agent_keys: tuple[str, ...] = ()
    """GnuPG-agent secret keys (``private-keys-v1.d`` S-expressions, armored or not), put into
    the engine's home before its public keys are imported, as gnupg/PROVENANCE.md describes."""
    autocrypt: tuple[str, ...] = ()
    """Messages whose ``Autocrypt:`` header key is imported, as a client that saw them would."""

    @property
    def material(self) -> tuple[tuple[str, ...], ...]:
        """What goes into the engine (key sets that differ only by passphrase share one)."""
        return (self.keys, self.agent_keys, self.autocrypt)


_TB_READER = (
    f"{TB_ALICE}-secret.asc",
    f"{TB_BOB}-pub.asc",
    f"{TB_CAROL}-pub.asc",
)
_TB_ALICE_PP = (f"{TB_ALICE}-secret-with-pp.asc", f"{TB_BOB}-pub.asc", f"{TB_CAROL}-pub.asc")

KEYSETS: dict[str, KeySet] = {
    "none": KeySet("no keys"),
    "tb": KeySet(
        "Thunderbird's Alice (secret); Bob, Carol, Benny Hashwell (public); carol@pgp.icu "
        "(secret, revoked)",
        (
            *_TB_READER,
            f"{TB_KEYS}/carol@pgp.icu-0xEF2FD01608AFD744-revoked-secret.asc",
            f"{TB_KEYS}/benny-hashwell-0xc55ccd9c5ab482b2-pub.asc",
        ),
    ),
    "tb-bob": KeySet(
        "Thunderbird's Bob (secret), Alice (public)",
        (f"{TB_BOB}-secret.asc", f"{TB_ALICE}-pub.asc"),
    ),
    "tb-bob-pp": KeySet(
        "Bob's protected secret key, passphrase `bob-passphrase`; Alice (public)",
        (f"{TB_BOB}-secret-with-pp.asc", f"{TB_ALICE}-pub.asc"),
        passphrase="bob-passphrase",
    ),
    "tb-alice-pp": KeySet(
        "Alice's protected secret key, passphrase `alice-passphrase`; Bob, Carol (public)",
        _TB_ALICE_PP,
        passphrase="alice-passphrase",
    ),
    "tb-alice-pp-wrong": KeySet(
        "Alice's protected secret key with a wrong passphrase", _TB_ALICE_PP, passphrase="wrong"
    ),
    "tb-alice-pp-none": KeySet("Alice's protected secret key, no passphrase given", _TB_ALICE_PP),
    "tb-carol": KeySet(
        "Carol's protected secret key, passphrase `x`; Bob (public)",
        (f"{TB_CAROL}-secret.asc", f"{TB_BOB}-pub.asc"),
        passphrase="x",
    ),
    "aph": KeySet(
        "autocrypt-protected-headers: Bob (secret), Alice (public)",
        (
            "autocrypt-protected-headers/keys/bob@openpgp.example.sec.asc",
            "autocrypt-protected-headers/keys/alice@openpgp.example.pub.asc",
        ),
    ),
    "ac-alice": KeySet(
        "Autocrypt spec: Alice (secret; expired 2021-01-21)",
        (f"{AC}/alice@autocrypt.example.sec.asc",),
    ),
    "ac-bob": KeySet(
        "Autocrypt spec: Bob (secret), Alice and Carol (public); all expired 2021-01-21",
        (
            f"{AC}/bob@autocrypt.example.sec.asc",
            f"{AC}/alice@autocrypt.example.pub.asc",
            f"{AC}/carol@autocrypt.example.pub.asc",
        ),
    ),
    "ac-carol": KeySet(
        "Autocrypt spec: Carol (secret), Alice (public); expired 2021-01-21",
        (f"{AC}/carol@autocrypt.example.sec.asc", f"{AC}/alice@autocrypt.example.pub.asc"),
    ),
    "dc": KeySet(
        "Delta Chat's alice@example.org and bob@example.net (secret)",
        (f"{DC}/keys/alice-secret.asc", f"{DC}/keys/bob-secret.asc"),
    ),
    "dc-tb-alice": KeySet(
        "Delta Chat's Bob (secret) and the key in the Autocrypt header of "
        "`thunderbird_with_autocrypt_unencrypted.eml` (Alice's Thunderbird key, 25F0072459E47AE2)",
        (f"{DC}/keys/bob-secret.asc",),
        autocrypt=(f"{DC}/messages/thunderbird_with_autocrypt_unencrypted.eml",),
    ),
    "notmuch": KeySet("notmuch's test key (secret)", ("notmuch/openpgp/openpgp4-secret-key.asc",)),
    "gnupg": KeySet(
        "GnuPG's sample keys patrice (Ed25519/Cv25519) and steve (RSA): public keys imported, "
        "agent-format secret keys installed in `private-keys-v1.d`",
        (
            "gnupg/openpgp-samplekeys/ed25519-cv25519-sample-1.asc",
            "gnupg/openpgp-samplekeys/rsa-rsa-sample-1.asc",
        ),
        agent_keys=tuple(
            f"gnupg/openpgp-privkeys/{name}"
            for name in (
                "1E28F20E41B54C2D1234D896096495FF57E08D18.asc",
                "EB33B687EB8581AB64D04852A54453E85F3DF62D.asc",
                "C6A6390E9388CDBAD71EAEA698233FE5E04F001E.asc",
                "D69102E0F5AC6B6DB8E4D16DA8E18CF46D88CAE3.asc",
            )
        ),
    ),
}


# --- the message table ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    path: str
    keys: str
    expect: str
    note: str = ""
    text: str = ""
    """A phrase of the plaintext: in what was read, and never in an error."""
    weak: bool = False
    """Accept SHA-1 signatures (Policy.allow_weak_algorithms) for this old message."""
    attached: int = 0
    """Read the n-th attached message/rfc822 (1-based) on its own instead of the message."""


CALLALOO = "Sundays are nothing without callaloo."
_E = f"{TB}/eml"
_BOB_TO_ALICE = "signed-by-0xfbfcc82a015e7330-encrypted-to-0xf231550c4f47e38e"
_CAROL_TO_ALICE = "signed-by-0x3099ff1238852b9f-encrypted-to-0xf231550c4f47e38e"
_BOB_SIGNED = "signed-by-0xfbfcc82a015e7330-to-0xf231550c4f47e38e-unencrypted"
_CAROL_SIGNED = "signed-by-0x3099ff1238852b9f-to-0xf231550c4f47e38e-unencrypted"
_DEC = "decrypted openpgp-aes256-mdc"
_DEC_VERIFIED = f"{_DEC} > signature verified"
_UNKNOWN_SIGNER = "signature not-checked SignatureError"
_EXPIRY_WRAP = (
    "the key's 100-year expiry (2122) wraps past 2106 in gpg 2.2's 32-bit time: gpg reports "
    "it expired (EXPKEYSIG), so does securemail"
)

THUNDERBIRD: list[Case] = [
    Case(
        f"{_E}/alice-broken-exchange.eml",
        "tb",
        _DEC,
        "Exchange turned PGP/MIME into multipart/mixed (empty text, pgp-encrypted and "
        "encrypted.asc attachments); Thunderbird repairs it",
        "Test message",
    ),
    Case(
        f"{_E}/alice-signed.eml",
        "tb",
        "signature verified",
        "inline clearsigned, SHA-512",
        "can we meet tomorrow?",
    ),
    Case(
        f"{_E}/alice-utf.eml",
        "tb",
        "signature verified",
        "inline clearsigned UTF-8 (£) with trailing spaces",
        "Month, Services",
    ),
    Case(
        f"{_E}/bob-enc-html-nbsp.eml",
        "tb",
        "error EmbeddedCiphertextError",
        "armored message inside HTML markup: Thunderbird strips the HTML and decrypts; "
        "securemail reads no PGP out of HTML, but must not call the message unprotected",
        "My real name is not Bob.",
    ),
    Case(
        f"{_E}/bob-enc-inline-nbsp-qp.eml",
        "tb",
        "decrypted openpgp-aes128-mdc",
        "inline PGP; the armor's blank line holds a quoted-printable no-break space",
        "My real name is not Bob.",
    ),
    Case(
        f"{_E}/bob-to-alice-signed-damaged-signature.eml",
        "tb",
        "signature failed SignatureInvalidError",
        "last two characters of the signature swapped (armor CRC error): Thunderbird shows a "
        "bad signature",
        CALLALOO,
    ),
    Case(
        f"{_E}/dual-signed-uncommon-content-type.eml",
        "tb",
        "signature not-checked NotSignedError > signature failed SignatureInvalidError",
        "S/MIME signature (not checked here) around PGP/MIME; the PGP signature by Bob's key "
        "does not match its hand-edited part (gpg agrees)",
        "signed with both an S/MIME certificate and an OpenPGP key",
    ),
    Case(
        f"{_E}/enc-to-carol@pgp.icu-revoked.eml",
        "tb",
        f"{_DEC} > {_UNKNOWN_SIGNER}",
        "encrypted to a key revoked since: old mail still decrypts (as in Thunderbird); the "
        "signer's key is not shipped",
        "billie-jean",
    ),
    Case(
        f"{_E}/encrypted-and-signed-alice-to-bob-nonascii.eml",
        "tb-bob",
        _DEC_VERIFIED,
        "non-ASCII subject and body; saved from Thunderbird's mbox with a `From - ` first line",
        "Detta är krypterat!",
    ),
    Case(
        f"{_E}/encrypted-to-alice-as-hidden-recipient.eml",
        "tb",
        _DEC,
        "hidden recipient (key ID 0): every secret key is tried",
        "hidden recipient encryption",
    ),
    Case(f"{_E}/eve-duplicate.eml", "tb", "no protection", "two keys for Eve attached"),
    Case(
        f"{_E}/forwarded-eml-signed-by-alice.eml",
        "tb",
        "no protection",
        "a signed message forwarded as an attachment does not sign the forwarding message",
    ),
    Case(
        f"{_E}/forwarded-eml-signed-by-alice.eml",
        "tb",
        "signature verified",
        "the attached message, read on its own",
        attached=1,
    ),
    Case(f"{_E}/fwd-signed.eml", "tb", "no protection", "signed message attached"),
    Case(
        f"{_E}/fwd-signed.eml",
        "tb",
        _UNKNOWN_SIGNER,
        "the attachment: From Alice, but signed by key 697AFB1B3722BC04, not shipped",
        attached=1,
    ),
    Case(
        f"{_E}/fwd-unsigned-encrypted.eml",
        "tb",
        "no protection",
        "an encrypted message attached: not this message's content, not decrypted with it",
    ),
    Case(
        f"{_E}/fwd-unsigned-encrypted.eml",
        "tb",
        _DEC,
        "the attachment, read on its own",
        CALLALOO,
        attached=1,
    ),
    Case(
        f"{_E}/inline-signed-latin1.eml",
        "tb",
        _UNKNOWN_SIGNER,
        "inline clearsigned, windows-1252; signer 0x0E27928F241B4D20 not shipped upstream",
    ),
    Case(f"{_E}/inline-signed-utf8.eml", "tb", _UNKNOWN_SIGNER, "same, UTF-8"),
    Case(
        f"{_E}/inner-smime-sig-in-pgp-encrypted.eml",
        "tb",
        _DEC,
        "the (fake) S/MIME signature inside is securemail.smime's to check, not PGP's",
        CALLALOO,
    ),
    Case(
        f"{_E}/multiple-signatures.eml",
        "tb",
        "no protection",
        "mailing-list digest; the signed messages are attachments",
    ),
    Case(
        f"{_E}/multiple-signatures.eml",
        "tb",
        _UNKNOWN_SIGNER,
        "first digest entry: PGP/MIME signed by person1, key not shipped",
        attached=1,
    ),
    Case(
        f"{_E}/multiple-signatures.eml",
        "tb",
        "signature not-checked NotSignedError",
        "third digest entry: S/MIME signed (securemail.smime's to check)",
        attached=3,
    ),
    Case(
        f"{_E}/openpgp__stripped_sig.eml",
        "tb",
        "error MalformedMessageError",
        "multipart/signed whose signature part was stripped (RFC 1847 needs two parts)",
    ),
    Case(
        f"{_E}/outer-pgp-sig-inner-pgp-enc-sig.eml",
        "tb",
        f"signature failed SignatureInvalidError > {_DEC_VERIFIED}",
        "hand-made: Carol's outer signature covers other bytes; the signed, encrypted message "
        "inside is intact",
        CALLALOO,
    ),
    Case(
        f"{_E}/outer-pgp-sig-inner-pgp-enc-with-mixed.eml",
        "tb",
        "error EmbeddedCiphertextError",
        "under the outer signature, an encrypted part next to unencrypted text: refused (EFAIL)",
        CALLALOO,
    ),
    Case(
        f"{_E}/outer-pgp-sig-inner-pgp-enc.eml",
        "tb",
        f"signature failed SignatureInvalidError > {_DEC}",
        "hand-made: outer signature does not match",
        CALLALOO,
    ),
    Case(
        f"{_E}/outer-smime-bad-sig-inner-pgp-enc-sig-with-mixed.eml",
        "tb",
        "error EmbeddedCiphertextError",
        "S/MIME signature around text plus an encrypted part: refused (EFAIL)",
        CALLALOO,
    ),
    Case(
        f"{_E}/outer-smime-bad-sig-inner-pgp-enc-sig.eml",
        "tb",
        f"signature not-checked NotSignedError > {_DEC_VERIFIED}",
        "S/MIME signature (not checked here) around intact PGP/MIME: Thunderbird decrypts it",
        CALLALOO,
    ),
    Case(
        f"{_E}/outer-smime-bad-sig-inner-pgp-enc.eml",
        "tb",
        f"signature not-checked NotSignedError > {_DEC}",
        "same, unsigned inside",
        CALLALOO,
    ),
    Case(
        f"{_E}/partial-encrypt-for-alice-html.eml",
        "tb",
        "error EmbeddedCiphertextError",
        "an armored message as one text/html part between 'prefix' and 'suffix' parts",
        "lucky melody",
    ),
    Case(
        f"{_E}/partial-encrypt-for-alice-plaintext.eml",
        "tb",
        "error EmbeddedCiphertextError",
        "'prefix', an armored message, 'suffix' in one text/plain: refused (Thunderbird "
        "decrypts and warns)",
        "lucky melody",
    ),
    Case(
        f"{_E}/partial-encrypt-for-carol-html.eml",
        "tb",
        "error EmbeddedCiphertextError",
        "same as the Alice one, to Carol",
    ),
    Case(
        f"{_E}/partial-encrypt-for-carol-plaintext.eml",
        "tb",
        "error EmbeddedCiphertextError",
        "same as the Alice one, to Carol",
    ),
    Case(f"{_E}/{_CAROL_TO_ALICE}-with-key.eml", "tb", _DEC_VERIFIED, "Carol's key attached"),
    Case(f"{_E}/{_CAROL_TO_ALICE}.eml", "tb", _DEC_VERIFIED, "Carol to Alice", CALLALOO),
    Case(
        f"{_E}/{_CAROL_TO_ALICE}.eml",
        "tb-carol",
        _DEC_VERIFIED,
        "opened with Carol's protected key",
        CALLALOO,
    ),
    Case(f"{_E}/{_CAROL_SIGNED}-with-key.eml", "tb", "signature verified", "", CALLALOO),
    Case(f"{_E}/{_CAROL_SIGNED}.eml", "tb", "signature verified", "", CALLALOO),
    Case(
        f"{_E}/{_BOB_TO_ALICE}-multi-from.eml",
        "tb",
        _DEC_VERIFIED,
        "Eve added a first From field; the protected From (Bob, who signed) replaces both, so "
        "what is read is Bob's message (Thunderbird, using the outer From, shows a mismatch)",
        CALLALOO,
    ),
    Case(f"{_E}/{_BOB_TO_ALICE}-with-key.eml", "tb", _DEC_VERIFIED, "Bob's key attached"),
    Case(f"{_E}/{_BOB_TO_ALICE}.eml", "tb", _DEC_VERIFIED, "Bob to Alice (and himself)", CALLALOO),
    Case(
        f"{_E}/{_BOB_TO_ALICE}.eml",
        "tb-alice-pp",
        _DEC_VERIFIED,
        "opened with Alice's protected key",
        CALLALOO,
    ),
    Case(
        f"{_E}/{_BOB_TO_ALICE}.eml",
        "tb-alice-pp-wrong",
        "error WrongPasswordError",
        "wrong passphrase",
        CALLALOO,
    ),
    Case(
        f"{_E}/{_BOB_TO_ALICE}.eml",
        "tb-alice-pp-none",
        "error WrongPasswordError",
        "no passphrase",
        CALLALOO,
    ),
    Case(
        f"{_E}/{_BOB_TO_ALICE}.eml",
        "tb-bob-pp",
        _DEC_VERIFIED,
        "opened with Bob's protected key (Bob encrypts to himself too)",
        CALLALOO,
    ),
    Case(
        f"{_E}/{_BOB_SIGNED}-in-mixed.eml",
        "tb",
        "signature partial PartialSignatureError",
        "Bob's valid signature next to an unsigned text part: never 'verified'",
        CALLALOO,
    ),
    Case(f"{_E}/{_BOB_SIGNED}-with-key.eml", "tb", "signature verified", "", CALLALOO),
    Case(f"{_E}/{_BOB_SIGNED}.eml", "tb", "signature verified", "", CALLALOO),
    Case(
        f"{_E}/signed-encrypted-autocrypt-gossip.eml",
        "tb",
        _DEC_VERIFIED,
        "signed and encrypted in one OpenPGP message (RFC 3156 6.2); Autocrypt-Gossip inside",
    ),
    Case(
        f"{_E}/signed-inline-indented.eml",
        "tb",
        "signature verified",
        "inline clearsigned text with leading whitespace",
        "indent test",
    ),
    Case(
        f"{_E}/signed-mismatch-email-date.eml",
        "tb",
        "signature verified",
        "Date header a year before the signature: Date is not signed; the signing time is "
        "reported for the caller to compare (Thunderbird flags it)",
        CALLALOO,
    ),
    Case(
        f"{_E}/signed-with-mailman-footer.eml",
        "tb",
        "signature failed SignatureInvalidError",
        "a list footer changed the signed part",
        CALLALOO,
    ),
    Case(
        f"{_E}/sigspoof-git-commit.eml",
        "tb",
        "error DecryptionError",
        "the 'ciphertext' is a clearsigned git commit (Benny's key imported): neither decrypted "
        "nor signed",
        "dispense of your services",
    ),
    Case(
        f"{_E}/unob-signed-by-0x3099ff1238852b9f-to-0xf231550c4f47e38e.eml",
        "tb",
        "no protection",
        "'unobtrusive signature' (Sig: header field draft) is not supported: read as unsigned",
    ),
    Case(f"{_E}/unrelated-and-fake-keys-attached.eml", "tb", "no protection", "keys attached"),
    *[
        Case(f"{_E}/unsigned-encrypted-to-0xf231550c4f47e38e-from-{who}{key}.eml", "tb", _DEC)
        for who in ("0x3099ff1238852b9f", "0xfbfcc82a015e7330")
        for key in ("-with-key", "")
    ],
    Case(
        f"{_E}/unsigned-unencrypted-0x3099ff1238852b9f-autocrypt.eml",
        "tb",
        "no protection",
        "Autocrypt header only",
    ),
    Case(f"{_E}/unsigned-unencrypted-from-bob-to-alice.eml", "tb", "no protection"),
    Case(
        f"{_E}/unsigned-unencrypted-key-0x1f10171bfb881b1c-attached.eml",
        "tb",
        "no protection",
        "key attached",
    ),
    Case(
        "thunderbird-smime/smime-manual/outer-pgp-sig-inner-smime-enc.eml",
        "tb",
        "signature failed SignatureInvalidError",
        "hand-made: Carol's outer PGP signature does not match; the S/MIME part inside is "
        "securemail.smime's",
    ),
    Case(
        "thunderbird-smime/smime-manual/outer-pgp-sig-inner-smime-enc-sig.eml",
        "tb",
        "signature failed SignatureInvalidError",
        "same",
    ),
]

_PH = "autocrypt-protected-headers/vectors"
BARCORP = "I just signed the contract with BarCorp"

AUTOCRYPT: list[Case] = [
    Case(
        f"{_PH}/pgpmime-enc+legacy-disp.eml",
        "aph",
        _DEC,
        "PGPy; protected headers restored, legacy display part removed",
        BARCORP,
    ),
    Case(
        f"{_PH}/pgpmime-layered+legacy-disp.eml",
        "aph",
        _DEC_VERIFIED,
        "encrypted(multipart/signed)",
        BARCORP,
    ),
    Case(f"{_PH}/pgpmime-layered.eml", "aph", _DEC_VERIFIED, "", BARCORP),
    Case(
        f"{_PH}/pgpmime-sign+enc+legacy-disp.eml",
        "aph",
        _DEC_VERIFIED,
        "signed and encrypted in one OpenPGP message",
        BARCORP,
    ),
    Case(f"{_PH}/pgpmime-sign+enc.eml", "aph", _DEC_VERIFIED, "", BARCORP),
    Case(
        f"{_PH}/pgpmime-signed.eml",
        "aph",
        "signature verified",
        "protected headers in the signed part",
        "we need to cancel this contract",
    ),
    Case(
        f"{_PH}/unfortunately-complex.eml",
        "aph",
        _DEC_VERIFIED,
        "nested multiparts with a legacy display part",
        BARCORP,
    ),
    Case(
        f"{AC}/example-draft.eml",
        "ac-alice",
        _DEC,
        "encrypted draft; Alice's key has expired, which does not stop decryption",
        "store it as a draft",
    ),
    Case(
        f"{AC}/example-gossip.eml",
        "ac-bob",
        f"{_DEC} > signature failed SignatureError",
        "Alice's key expired 2021-01-21, after she signed (2019): judged today, as S/MIME "
        "certificates are",
        "introduce the two of you",
    ),
    Case(
        f"{AC}/example-gossip.eml",
        "ac-carol",
        f"{_DEC} > signature failed SignatureError",
        "the same, read by Carol",
        "introduce the two of you",
    ),
    Case(
        f"{AC}/example-setup-message.eml",
        "none",
        "no protection",
        "Autocrypt Setup Message: opened with the setup code at the engine level (below)",
    ),
    Case(f"{AC}/example-simple-autocrypt.eml", "none", "no protection", "Autocrypt header only"),
]

_DM = f"{DC}/messages"
HELLO_TB = "Hello from Thunderbird!"

DELTACHAT: list[Case] = [
    Case(
        f"{_DM}/AutocryptSetupMessage.eml",
        "dc",
        "no protection",
        "Delta Chat's Autocrypt Setup Message (engine level below)",
    ),
    Case(
        f"{_DM}/encrypted_with_received_headers.eml",
        "dc",
        "decrypted openpgp-aes128-mdc > signature verified",
        "Delta Chat: the protected part (v1) repeats only Subject; From stays outside, and its "
        "owner signed",
        "hi back",
    ),
    Case(
        f"{_DM}/google-workspace-mixed-up.eml",
        "dc",
        _DEC_VERIFIED,
        "Google Workspace put an empty footer part ('-- ' and blank lines) before the "
        "PGP/MIME part; repaired, as Delta Chat does: nothing of substance sits beside it",
        HELLO_TB,
    ),
    Case(
        f"{_DM}/k-9-autocrypt-setup-message.eml",
        "dc",
        "no protection",
        "K-9's Autocrypt Setup Message (engine level below)",
    ),
    Case(
        f"{_DM}/mailinglist_with_mimepart_footer_signed.eml",
        "dc",
        "signature failed SignatureInvalidError",
        "list footer after the signed part; the signature was anonymised upstream into bytes "
        "that are no OpenPGP signature",
        "content text",
    ),
    Case(
        f"{_DM}/mixed-up-long.eml",
        "dc",
        f"{_DEC} > {_UNKNOWN_SIGNER}",
        "Thunderbird draft: `From - ` first line and Exchange-style mixed-up structure; signed "
        "by Alice's Thunderbird key (not in these keys)",
        "Blob directory management",
    ),
    Case(
        f"{_DM}/protonmail-mixed-up.eml",
        "dc",
        "error EmbeddedCiphertextError",
        "ProtonMail Bridge's mixed-up structure puts an 'Empty Message' text part next to "
        "the ciphertext; ciphertext beside text of any substance is refused (EFAIL)",
    ),
    Case(
        f"{_DM}/protonmail-repaired.eml",
        "dc",
        "error DecryptionError",
        "Thunderbird's repair of the above: proper PGP/MIME around the placeholder",
    ),
    Case(
        f"{_DM}/rfc1847_encapsulation.eml",
        "dc",
        _DEC_VERIFIED,
        "RFC 1847 encapsulation: encrypted(multipart/signed)",
        HELLO_TB,
    ),
    Case(
        f"{_DM}/schleuder.eml",
        "dc",
        "signature failed SignatureInvalidError",
        "Schleuder list mail; its signature was redacted upstream ('REDACTED')",
        "hello,",
    ),
    Case(
        f"{_DM}/thunderbird_encrypted_signed.eml",
        "dc",
        f"{_DEC} > {_UNKNOWN_SIGNER}",
        "`From - ` first line; signed by Alice's Thunderbird key, not in these keys",
    ),
    Case(
        f"{_DM}/thunderbird_encrypted_signed.eml",
        "dc-tb-alice",
        f"{_DEC} > signature failed SignatureError",
        f"with the signer's key from an Autocrypt header: {_EXPIRY_WRAP}",
    ),
    Case(
        f"{_DM}/thunderbird_encrypted_signed_with_pubkey.eml",
        "dc",
        f"{_DEC} > {_UNKNOWN_SIGNER}",
        "the signer's key is attached inside; keys are never taken from a message",
    ),
    Case(f"{_DM}/thunderbird_encrypted_unsigned.eml", "dc", _DEC, "", "Hi!"),
    Case(
        f"{_DM}/thunderbird_encrypted_unsigned_with_unencrypted_subject.eml",
        "dc",
        _DEC,
        "`From - ` first line; the Subject exists only outside",
        "Hi!",
    ),
    Case(
        f"{_DM}/thunderbird_signed_unencrypted.eml",
        "dc",
        _UNKNOWN_SIGNER,
        "`From - ` first line; signer's key not in these keys",
    ),
    Case(
        f"{_DM}/thunderbird_signed_unencrypted.eml",
        "dc-tb-alice",
        "signature failed SignatureError",
        _EXPIRY_WRAP,
    ),
    Case(
        f"{_DM}/thunderbird_with_autocrypt.eml",
        "dc",
        _DEC_VERIFIED,
        "`From - ` first line; signed by Delta Chat's Alice",
        "This is encrypted, signed, and has an Autocrypt Header",
    ),
    Case(
        f"{_DM}/thunderbird_with_autocrypt_unencrypted.eml",
        "dc",
        _UNKNOWN_SIGNER,
        "`From - ` first line; the signer's key is in the Autocrypt header, which is not "
        "imported by reading",
    ),
]

_NC = "notmuch/corpora-crypto"
_NP = "notmuch/corpora-protected-headers"
SEKRIT = "This is the sekrit message"

NOTMUCH: list[Case] = [
    Case(f"{_NC}/basic-encrypted.eml", "notmuch", _DEC, "", "abcd1234!"),
    Case(
        f"{_NC}/encrypted-rfc822-attachment",
        "notmuch",
        _DEC,
        "a message attached inside the encryption",
    ),
    Case(f"{_NC}/encrypted-signed.eml", "notmuch", _DEC_VERIFIED, "", "Eddystone Light"),
    Case(
        f"{_NC}/simple-encrypted",
        "notmuch",
        "error NoSecretKeyError",
        "encrypted to an older notmuch key (3B7AA7F014E69B5A) that is not shipped",
    ),
    Case(
        f"{_NP}/double-wrapped-with-phony-protected-header.eml",
        "notmuch",
        "error DecryptionError",
        "the outer layer decrypts to PGP/MIME whose armor is deliberately broken (CRC error)",
        "this should not show up as a protected header",
    ),
    Case(
        f"{_NP}/encrypted-message-with-forwarded-attachment.eml",
        "notmuch",
        _DEC,
        "the protected Subject is restored; the forwarded message's headers are not used",
        "Check out this forwarded message",
    ),
    Case(
        f"{_NP}/encrypted-signed-not-masked.eml",
        "notmuch",
        _DEC_VERIFIED,
        "protected part (v1) repeats only Subject, outer Subject not masked",
        "Rhinoceros likes donuts",
    ),
    Case(
        f"{_NP}/encrypted-signed.eml",
        "notmuch",
        _DEC_VERIFIED,
        "protected part (v1) repeats only Subject",
        "Rhinoceros likes donuts",
    ),
    Case(
        f"{_NP}/misplaced-protected-header.eml",
        "notmuch",
        _DEC,
        "protected-headers on a sub-part, not the root: ignored",
        "wrongly-placed",
    ),
    Case(
        f"{_NP}/nested-rfc822-message.eml",
        "notmuch",
        _DEC,
        "message/rfc822 wrapper (draft-melnikov header signing): not unwrapped",
        "I think this works",
    ),
    Case(f"{_NP}/no-protected-header-attribute.eml", "notmuch", _DEC, "", SEKRIT),
    Case(
        f"{_NP}/phony-protected-header-bad-encryption.eml",
        "notmuch",
        "error DecryptionError",
        "the armored data is no OpenPGP message; the Subject on the octet-stream part is phony",
        "this should not show up as a protected header",
    ),
    Case(f"{_NP}/protected-header.eml", "notmuch", _DEC, "protected Subject", SEKRIT),
    Case(
        f"{_NP}/protected-with-legacy-display.eml",
        "notmuch",
        _DEC_VERIFIED,
        "legacy display part removed",
        "Moooooo",
    ),
    Case(
        f"{_NP}/signed-protected-header.eml",
        "notmuch",
        "signature verified",
        "signed part (v1) repeats only Subject",
        "Here is the signed message body.",
    ),
    Case(
        f"{_NP}/simple-signed-mail.eml",
        "notmuch",
        "signature verified",
        "",
        "Here is the signed message body.",
    ),
    Case(f"{_NP}/subjectless-protected-header.eml", "notmuch", _DEC, "no outer Subject", SEKRIT),
    Case(
        f"{_NP}/wrapped-protected-header.eml",
        "notmuch",
        "error EmbeddedCiphertextError",
        "a mailing list put the PGP/MIME part next to a footer: refused (EFAIL)",
        SEKRIT,
    ),
]

OTHERS: list[Case] = [
    Case(
        "mimekit/gnupg-announce-2.1.20-pgpmime-signed.eml",
        "none",
        _UNKNOWN_SIGNER,
        "GnuPG 2.1.20 announcement through Mailman (footer part); Werner Koch's DSA key is "
        "not shipped",
        "is pleased to announce the availability of a new release",
    ),
    Case(
        f"{GS}/mail-test-1.eml",
        "none",
        "no protection",
        "plaintext input mail for gpg-mail-tube",
    ),
    Case(f"{GS}/mail-test-2.eml", "none", "no protection", "same"),
]

CASES: list[Case] = [*THUNDERBIRD, *AUTOCRYPT, *DELTACHAT, *NOTMUCH, *OTHERS]


# --- the engine table: OpenPGP data that is not a message ------------------------------------


@dataclasses.dataclass(frozen=True)
class FileCase:
    path: str
    op: str
    """``decrypt``, ``password`` (decrypt_symmetric), ``verify`` (inline or cleartext, or
    detached over ``data``), or ``import`` (into a fresh home)."""
    keys: str
    expect: str
    note: str = ""
    text: str = ""
    password: str | None = None
    data: str | bytes | None = None
    """For a detached signature: the signed file (corpus path) or the bytes themselves."""
    same_as: str = ""
    """The plaintext must equal this corpus file."""
    not_reason: str = ""
    """Words the error must not say (a wrong diagnosis)."""


PATRICE = "patrice.lumumba@example.net"
STEVE = "steve.biko@example.net"
_TWO = "signature failed SignatureError"
_TWO_NOTE = "two good signatures (patrice, steve): exactly one is accepted"
_SIGNED_DATA = f"{GS}/signed-data-1.txt"


def _gnupg_samples() -> list[FileCase]:
    plain = {
        "enc-1-key-1.asc": ("Wisconsin Dells", "to patrice (Cv25519)"),
        "enc-1-key-1.gpg": ("minds his own business", "binary"),
        "enc-1-key-2.asc": ("-advice", "to steve (RSA)"),
        "enc-1-key-2.gpg": ("Finagle's Second Law", "binary"),
        "enc-2-keys-1.asc": ("Dentist, n.", "to both"),
        "enc-2-keys-1.gpg": ("lived long enough", ""),
        "enc-2-keys-2.asc": ("homage that force pays", ""),
        "enc-2-keys-2.gpg": ("Abstainer, n.", ""),
        "enc-2-keys-hh-1.asc": ("travel agent for guilt trips", "both recipients hidden"),
        "enc-2-keys-hr-1.asc": ("belaboring", "first recipient hidden"),
        "enc-2-keys-rh-1.asc": ("never being alone", "second recipient hidden"),
        "encz0-1-key-1.asc": ("wake up", "uncompressed"),
        "encz0-1-key-2.asc": ("How do I get HOME?", "uncompressed"),
    }
    cases = [
        FileCase(f"{GS}/{name}", "decrypt", "gnupg", "decrypted aes256-mdc", note, text)
        for name, (text, note) in plain.items()
    ]
    signed_encrypted = {
        "encsig-2-keys-1.asc": (PATRICE, "Larry Wall"),
        "encsig-2-keys-1.gpg": (PATRICE, "air conditioners"),
        "encsig-2-keys-2.asc": (PATRICE, "Money is how we keep score"),
        "encsig-2-keys-2.gpg": (PATRICE, "changed for the better"),
        "encsig-2-keys-3.asc": (STEVE, "lesser of two evils"),
        "encsig-2-keys-3.gpg": (STEVE, "used to be"),
        "encsig-2-keys-4.asc": (STEVE, "smarter than dogs"),
        "encsig-2-keys-4.gpg": (STEVE, "bad breath"),
    }
    cases += [
        FileCase(
            f"{GS}/{name}",
            "decrypt",
            "gnupg",
            f"decrypted aes256-mdc > signature good {signer}",
            "signed and encrypted to both",
            text,
        )
        for name, (signer, text) in signed_encrypted.items()
    ]
    cases += [
        FileCase(
            f"{GS}/encsig-2-2-keys-{n}.{ext}",
            "decrypt",
            "gnupg",
            f"decrypted aes256-mdc > {_TWO}",
            _TWO_NOTE,
        )
        for n in (3, 4)
        for ext in ("asc", "gpg")
    ]
    cases += [
        FileCase(
            f"{GS}/enc-sym-{mode}-{n}.asc",
            "password",
            "gnupg",
            f"decrypted {cipher}-{integrity}",
            note,
            "Hello, world!",
            password="password",
        )
        for mode, integrity, note in (
            ("cfb", "mdc", "password-encrypted, SEIPD v1"),
            ("ocb", "aead", "LibrePGP v5 SKESK + OCB packet (tag 20); gpg 2.2 reads it"),
        )
        for n, cipher in ((1, "aes128"), (2, "aes256"))
    ]
    cases.append(
        FileCase(
            f"{GS}/enc-sym-cfb-1.asc",
            "decrypt",
            "gnupg",
            "error DecryptionError",
            "a password-encrypted message is refused on the key path: a key passphrase is "
            "never tried as a message password",
        )
    )
    inline = {
        "signed-1-key-1.asc": (STEVE, "Hawkeye"),
        "signed-1-key-1.gpg": (STEVE, "Fastest Defeat In Chess"),
        "signed-1-key-2.asc": (PATRICE, "Two men looked out"),
        "signed-1-key-2.gpg": (PATRICE, "Rebellion lay in his way"),
        "signedz0-1-key-1.gpg": (STEVE, "clever prophet"),
        "signedz0-1-key-2.gpg": (PATRICE, "disguised as temptation"),
        "clearsig-1-key-1.asc": (STEVE, "scrupulously honest"),
    }
    cases += [
        FileCase(f"{GS}/{name}", "verify", "gnupg", f"signature good {signer}", "", text)
        for name, (signer, text) in inline.items()
    ]
    cases += [
        FileCase(f"{GS}/{name}", "verify", "gnupg", _TWO, _TWO_NOTE)
        for name in (
            "signed-2-keys-1.asc",
            "signed-2-keys-1.gpg",
            "signed-2-keys-2.asc",
            "signed-2-keys-2.gpg",
            "signedz0-2-keys-1.gpg",
            "signedz0-2-keys-2.gpg",
            "clearsig-2-keys-1.asc",
            "clearsig-2-keys-2.asc",
        )
    ]
    for n, signer in ((1, PATRICE), (2, STEVE)):
        for ext in ("asc", "sig"):
            cases.append(
                FileCase(
                    f"{GS}/sig-1-key-{n}.{ext}",
                    "verify",
                    "gnupg",
                    f"signature good {signer}",
                    "detached, over signed-data-1.txt",
                    data=_SIGNED_DATA,
                )
            )
            cases.append(
                FileCase(
                    f"{GS}/sig-2-keys-{n}.{ext}",
                    "verify",
                    "gnupg",
                    _TWO,
                    _TWO_NOTE,
                    data=_SIGNED_DATA,
                )
            )
    cases += [
        FileCase(
            f"{GS}/issue2419.asc",
            "decrypt",
            "gnupg",
            "error DecryptionError",
            "malformed packet (GnuPG regression test)",
        ),
        FileCase(
            f"{GS}/revoke-2D727CC768697734.asc",
            "import",
            "none",
            "error KeyLoadError",
            "revocation certificate for a key that is not in the home",
        ),
        FileCase(
            "gnupg/openpgp-samplekeys/v5-sample-1-pub.asc",
            "import",
            "none",
            "error KeyLoadError",
            "LibrePGP v5 key: gpg 2.2 cannot read it",
        ),
        FileCase(
            "gnupg/openpgp-samplekeys/v5-sample-1-sec.asc",
            "import",
            "none",
            "error KeyLoadError",
            "the same, secret",
        ),
    ]
    return cases


_V6 = "gpg 2.2 stops at 'unknown version 6' and reports only NODATA"
_ARGON2 = (
    "v4 SKESK with the Argon2 S2K: gpg 2.2 does not know it ('unknown S2K mode 4'); refused, "
    "nothing released"
)

RFC9580: list[FileCase] = [
    FileCase(
        f"{RFC}/A.1-v4-ed25519legacy-public-key.asc",
        "import",
        "none",
        "error KeyLoadError",
        "a bare key packet without user ID or self-signature: gpg does not import it",
    ),
    FileCase(
        f"{RFC}/A.2-v4-ed25519legacy-signature.asc",
        "verify",
        "none",
        "signature not-checked SignatureError",
        "over the 7 bytes 'OpenPGP'; A.1's key cannot be imported, so the signer is unknown",
        data=b"OpenPGP",
    ),
    FileCase(f"{RFC}/A.3-v6-certificate.asc", "import", "none", "error KeyLoadError", "v6 key"),
    FileCase(f"{RFC}/A.4-v6-secret-key.asc", "import", "none", "error KeyLoadError", "v6 key"),
    FileCase(
        f"{RFC}/A.5-v6-secret-key-locked.asc",
        "import",
        "none",
        "error KeyLoadError",
        "v6 key locked with Argon2 and AEAD",
    ),
    FileCase(
        f"{RFC}/A.6-cleartext-signed.asc",
        "verify",
        "none",
        "signature not-checked NotSignedError",
        f"v6 cleartext signature: {_V6}",
    ),
    FileCase(
        f"{RFC}/A.7-inline-signed.asc",
        "verify",
        "none",
        "signature not-checked NotSignedError",
        f"v6 one-pass signature: {_V6}",
    ),
    FileCase(
        f"{RFC}/A.8-x25519-aead-ocb-encrypted.asc",
        "decrypt",
        "none",
        "error DecryptionError",
        f"v6 PKESK (X25519) + SEIPD v2 (A.4's key cannot be imported): {_V6}",
        "Hello, world!",
    ),
    *[
        FileCase(
            f"{RFC}/A.{n}-skesk-v6-aead-{mode}-password.asc",
            "password",
            "none",
            "error DecryptionError",
            f"v6 SKESK + SEIPD v2 ({mode.upper()}): {_V6}",
            "Hello, world!",
            password="password",
            not_reason="not password-encrypted",
        )
        for n, mode in ((9, "eax"), (10, "ocb"), (11, "gcm"))
    ],
    *[
        FileCase(
            f"{RFC}/A.12.{n}-skesk-v4-argon2-aes{bits}.asc",
            "password",
            "none",
            expect,
            _ARGON2,
            "Hello, world!",
            password="password",
        )
        # gpg fails differently per file: "no valid data" (NODATA) for one, a bad MDC from
        # the wrongly derived key for the others. Either way a typed error, nothing released.
        for n, bits, expect in (
            (1, 128, "error DecryptionError"),
            (2, 192, "error IntegrityError"),
            (3, 256, "error IntegrityError"),
        )
    ],
]

_TBK = TB_KEYS
FILES: list[FileCase] = [
    *_gnupg_samples(),
    *RFC9580,
    *[
        FileCase(
            f"{TB}/rnp-unit/bluebird50.jpg.{ext}",
            "decrypt",
            "tb-bob",
            "decrypted aes128-mdc",
            f"RNP file encryption to Bob ({kind})",
            same_as=f"{TB}/rnp-unit/bluebird50.jpg",
        )
        for ext, kind in (("gpg", "binary"), ("asc", "armored"))
    ],
    FileCase(
        f"{AC}/example-setup-message.eml",
        "password",
        "none",
        "decrypted aes128-mdc",
        "Autocrypt Setup Message, setup code from the spec's generator",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----",
        password="1742-0185-6197-1303-7016-8412-3581-4441-0597",
    ),
    FileCase(
        f"{_DM}/k-9-autocrypt-setup-message.eml",
        "password",
        "none",
        "decrypted aes256-mdc",
        "K-9's Autocrypt Setup Message, code from Delta Chat's test",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----",
        password="0655-9868-8252-5455-4232-5158-1237-5333-2638",
    ),
    FileCase(
        f"{_DM}/AutocryptSetupMessage.eml",
        "password",
        "none",
        "error WrongPasswordError",
        "its setup code was not published: a wrong code is refused",
        "-----BEGIN PGP PRIVATE KEY BLOCK-----",
        password="6200-0000-0000-0000-0000-0000-0000-0000-0000",
    ),
    *[
        FileCase(f"{_TBK}/{name}", "import", "none", "error KeyLoadError", note)
        for name, note in (
            ("alice-v5-pub.asc", "LibrePGP v5 key: gpg 2.2 cannot read it"),
            ("alice-v5-sec.asc", "the same, secret"),
            ("pgp-v6-pub.asc", "RFC 9580 v6 key (= A.3)"),
            ("pgp-v6-sec.asc", "RFC 9580 v6 key (= A.4)"),
        )
    ],
    FileCase(
        f"{_TBK}/eddie@openpgp.example-0x15e9357d2c2395c0-secret.asc",
        "import",
        "none",
        "imported secret expired",
        "Eddie's key expired 2016-12-31; no message in the corpus uses it",
    ),
    FileCase(
        f"{_TBK}/carol@pgp.icu-0xEF2FD01608AFD744-revoked-secret.asc",
        "import",
        "none",
        "imported secret revoked",
        "still opens mail encrypted to it before (see enc-to-carol@pgp.icu-revoked.eml)",
    ),
]

NOT_READ: dict[str, str] = {
    f"{TB}/rnp-unit/plaintext-with-key-and-windows-1252-encoded-eml-attachment.eml": (
        "RNP unit-test plaintext (not OpenPGP-protected); copied from JavaScript source, its "
        'boundary parameters carry literal backslashes (boundary=\\"...\\")'
    ),
    f"{TB}/rnp-unit/plaintext-with-windows-1252-encoded-eml-attachment.eml": "the same",
    f"{AC}/example-gossip-cleartext.eml": "the producer's cleartext of example-gossip.eml, "
    "compared with what is read (test_autocrypt_examples_decrypt_to_their_cleartext)",
    f"{AC}/example-draft-cleartext.eml": "the same for example-draft.eml",
}


# --- engines -------------------------------------------------------------------------------------


class Engines:
    """One GnuPG engine per key material, created on first use, closed with the module."""

    def __init__(self, gpg: str, corpus: Path) -> None:
        self.gpg = gpg
        self.corpus = corpus
        self._engines: dict[tuple[tuple[str, ...], ...], GnuPG] = {}

    def get(self, name: str) -> GnuPG:
        keyset = KEYSETS[name]
        engine = self._engines.get(keyset.material)
        if engine is None:
            engine = GnuPG(gpg=self.gpg)
            self._engines[keyset.material] = engine
            if keyset.agent_keys:
                install_agent_keys(engine, [self.corpus / p for p in keyset.agent_keys])
            for path in keyset.keys:
                engine.import_keys(self.corpus / path)
            for path in keyset.autocrypt:
                engine.import_keys(autocrypt_key((self.corpus / path).read_bytes()))
        return engine

    def scratch(self) -> GnuPG:
        return GnuPG(gpg=self.gpg)

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()


@pytest.fixture(scope="module")
def engines(gpg_bin: str, interop_dir: Path) -> Iterator[Engines]:
    pool = Engines(gpg_bin, interop_dir)
    yield pool
    pool.close()


def dearmor(data: bytes) -> bytes:
    """The content of an ASCII-armored block (what ``gpg --dearmor`` writes)."""
    lines = data.replace(b"\r\n", b"\n").split(b"\n")
    start = lines.index(b"") + 1  # the armor headers end at the first empty line
    body = [
        line
        for line in lines[start:]
        if line and not line.startswith((b"-----", b"=")) and b":" not in line
    ]
    return binascii.a2b_base64(b"".join(body))


def install_agent_keys(engine: GnuPG, paths: list[Path]) -> None:
    """Put GnuPG-agent secret keys (named by keygrip) into the engine's private home."""
    folder = engine.home / "private-keys-v1.d"
    folder.mkdir(mode=0o700, exist_ok=True)
    for path in paths:
        data = path.read_bytes()
        if data.startswith(b"-----BEGIN"):
            data = dearmor(data)
        target = folder / f"{path.name.split('.')[0]}.key"
        target.write_bytes(data)
        target.chmod(0o600)


def autocrypt_key(message: bytes) -> bytes:
    """The key in a message's Autocrypt header (Autocrypt Level 1, 2.1)."""
    header = str(email.message_from_bytes(message, policy=email.policy.compat32)["Autocrypt"])
    keydata = re.search(r"keydata=([A-Za-z0-9+/=\s]+)", header)
    assert keydata is not None
    return base64.b64decode("".join(keydata.group(1).split()))


# --- running a case ------------------------------------------------------------------------------


def trace_of(result: ReadResult) -> str:
    parts = []
    for layer in result.layers:
        if isinstance(layer, DecryptResult):
            parts.append(f"decrypted {layer.content_cipher}")
        else:
            error = f" {type(layer.error).__name__}" if layer.error is not None else ""
            parts.append(f"signature {layer.status.value}{error}")
    return " > ".join(parts) or "no protection"


def attached_message(data: bytes, n: int) -> bytes:
    """The n-th (1-based) message/rfc822 part below ``data``, as its own message."""
    found = [
        e
        for e in wire.walk(wire.entity(wire.canonicalize(data)))
        if e.content_type == "message/rfc822"
    ]
    return wire.decode_body(found[n - 1])


def run_case(
    case: Case, corpus: Path, engines: Engines
) -> tuple[str, ReadResult | None, SecureMailError | None]:
    data = (corpus / case.path).read_bytes()
    if case.attached:
        data = attached_message(data, case.attached)
    try:
        result = read(
            data,
            gnupg=engines.get(case.keys),
            passphrase=KEYSETS[case.keys].passphrase,
            policy=DEFAULT.clone(allow_weak_algorithms=case.weak),
        )
    except SecureMailError as exc:
        return f"error {type(exc).__name__}", None, exc
    return trace_of(result), result, None


def readable_text(message: Message) -> bytes:
    """Every decoded leaf body (text, attachments, attached messages' parts)."""
    return b"\n".join(
        payload
        for part in message.walk()
        if isinstance(payload := part.get_payload(decode=True), bytes)
    )


def assert_nothing_released(error: SecureMailError, text: str) -> None:
    if text:
        said = str(error) + repr(vars(error))
        assert text not in said, f"the error carries plaintext: {said!r}"


def _case_id(case: Case) -> str:
    name = case.path + (f"#{case.attached}" if case.attached else "")
    return name + (f"~{case.keys}" if _SHARED[name] > 1 else "")


_SHARED = collections.Counter(c.path + (f"#{c.attached}" if c.attached else "") for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_corpus_message(case: Case, interop_dir: Path, engines: Engines) -> None:
    trace, result, error = run_case(case, interop_dir, engines)
    assert trace == case.expect
    if error is not None:
        assert_nothing_released(error, case.text)
        return
    assert result is not None
    # Integrity protection is mandatory for OpenPGP: every decryption was authenticated.
    assert all(layer.authenticated for layer in result.decryptions)
    if case.text:
        assert case.text.encode() in readable_text(result.message)


def engine_trace(outcome: Decrypted | Verification | tuple[KeyInfo, ...]) -> str:
    if isinstance(outcome, Decrypted):
        trace = f"decrypted {outcome.cipher}-{outcome.integrity}"
        if outcome.signature is not None:
            trace += " > " + engine_trace(outcome.signature)
        return trace
    if isinstance(outcome, Verification):
        if outcome.verdict is Verdict.GOOD:
            return f"signature good {(outcome.emails or (outcome.fingerprint,))[0]}"
        return f"signature {outcome.verdict.value} {type(outcome.error).__name__}"
    (key, *_) = outcome
    flags = [
        flag
        for flag, on in (
            ("secret", key.has_secret),
            ("expired", key.expired),
            ("revoked", key.revoked),
        )
        if on
    ]
    return " ".join(["imported", *flags])


def setup_payload(message: bytes) -> bytes:
    """The armored, password-encrypted key of an Autocrypt Setup Message (Autocrypt 4.4)."""
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    for part in parsed.walk():
        if part.get_content_type() == "application/autocrypt-setup":
            body = part.get_payload(decode=True)
            assert isinstance(body, bytes)
            found = re.search(
                rb"-----BEGIN PGP MESSAGE-----.*?-----END PGP MESSAGE-----", body, re.S
            )
            assert found is not None
            return found.group(0)
    raise AssertionError("no application/autocrypt-setup part")


def run_file(
    case: FileCase, corpus: Path, engines: Engines
) -> tuple[str, bytes | None, SecureMailError | None]:
    raw = (corpus / case.path).read_bytes()
    try:
        if case.op == "import":
            with engines.scratch() as scratch:
                return engine_trace(scratch.import_keys(corpus / case.path)), None, None
        engine = engines.get(case.keys)
        outcome: Decrypted | Verification
        if case.op == "decrypt":
            outcome = engine.decrypt(raw)
        elif case.op == "password":
            assert case.password is not None
            payload = setup_payload(raw) if case.path.endswith(".eml") else raw
            outcome = engine.decrypt_symmetric(payload, case.password)
        elif case.data is None:
            outcome = engine.verify_inline(raw)
        else:
            data = case.data if isinstance(case.data, bytes) else (corpus / case.data).read_bytes()
            outcome = engine.verify_detached(data, raw)
    except SecureMailError as exc:
        return f"error {type(exc).__name__}", None, exc
    return engine_trace(outcome), outcome.data, None


def _file_id(case: FileCase) -> str:
    return f"{case.path}:{case.op}" + (f"~{case.keys}" if case.keys != "none" else "")


@pytest.mark.parametrize("case", FILES, ids=_file_id)
def test_corpus_openpgp_file(case: FileCase, interop_dir: Path, engines: Engines) -> None:
    trace, output, error = run_file(case, interop_dir, engines)
    assert trace == case.expect
    if error is not None:
        assert_nothing_released(error, case.text)
        if case.not_reason:
            assert case.not_reason not in str(error)
        return
    if case.text:
        assert output is not None and case.text.encode() in output
    if case.same_as:
        assert output == (interop_dir / case.same_as).read_bytes()


def test_every_corpus_openpgp_file_is_covered(interop_dir: Path) -> None:
    """A new file in the corpus must get an expectation here (or a reason why it has none)."""
    covered = (
        {c.path for c in CASES}
        | {f.path for f in FILES}
        | {f.same_as for f in FILES if f.same_as}
        | {f.data for f in FILES if isinstance(f.data, str)}
        | set(NOT_READ)
    )
    found = {
        str(path.relative_to(interop_dir))
        for pattern in (
            f"{TB}/eml/*",
            f"{TB}/rnp-unit/*",
            f"{_PH}/pgpmime-*.eml",
            f"{_PH}/unfortunately-complex.eml",
            f"{AC}/*.eml",
            f"{_DM}/*",
            "notmuch/corpora-crypto/*",
            "notmuch/corpora-protected-headers/*",
            f"{GS}/*",
            f"{RFC}/*.asc",
            "mimekit/*pgp*",
            "thunderbird-smime/smime-manual/outer-pgp-*",
        )
        for path in interop_dir.glob(pattern)
    }
    assert found - covered == set()
    assert covered - found - {f.path for f in FILES if f.op == "import"} == set()


# --- specific checks on what was read ------------------------------------------------------------

PH_VECTORS = [
    "pgpmime-enc+legacy-disp",
    "pgpmime-layered",
    "pgpmime-layered+legacy-disp",
    "pgpmime-sign+enc",
    "pgpmime-sign+enc+legacy-disp",
    "pgpmime-signed",
    "unfortunately-complex",
]


def _texts(message: Message) -> list[str]:
    return [
        payload.decode().strip()
        for part in message.walk()
        if part.get_content_type() == "text/plain"
        and isinstance(payload := part.get_payload(decode=True), bytes)
    ]


@pytest.mark.parametrize("name", PH_VECTORS)
def test_protected_headers_match_the_vectors(
    name: str, interop_dir: Path, engines: Engines
) -> None:
    """What is read carries the protected headers of the vector's decrypted form (``.inner``)
    and its text, without the legacy display part; outside, the Subject was obscured."""
    folder = interop_dir / _PH
    sent = (folder / f"{name}.eml").read_bytes()
    result = read(sent, gnupg=engines.get("aph"))
    inner = folder / f"{name}.inner"
    expected: Message = wire.parse(inner.read_bytes() if inner.exists() else sent)
    if expected.get_content_type() == "multipart/signed":
        first = expected.get_payload(0)
        assert isinstance(first, Message)
        expected = first
    got = result.message
    if inner.exists():
        assert str(wire.parse(sent)["Subject"]) == "..."
    for field in ("From", "To", "Subject", "Date", "Message-ID"):
        assert str(got[field]) == str(expected[field]), field
    legacy = [t for t in _texts(expected) if t.startswith("Subject:")]
    assert _texts(got) == [t for t in _texts(expected) if t not in legacy]


RESTORED = [
    ("notmuch", f"{_NP}/protected-header.eml", {"Subject": "This is a protected header"}),
    (
        "notmuch",
        f"{_NP}/subjectless-protected-header.eml",
        {"Subject": "This is a protected header"},
    ),
    (
        "notmuch",
        f"{_NP}/encrypted-message-with-forwarded-attachment.eml",
        {"Subject": "This is the cryptographic envelope subject"},
    ),
    ("notmuch", f"{_NP}/signed-protected-header.eml", {"Subject": "This is a signed message"}),
    ("notmuch", f"{_NP}/misplaced-protected-header.eml", {"Subject": "Subject Unavailable"}),
    ("notmuch", f"{_NP}/no-protected-header-attribute.eml", {"Subject": "Subject Unavailable"}),
    (
        "dc",
        f"{_DM}/encrypted_with_received_headers.eml",
        {"Subject": "Re: Message from alice@example.org", "From": "bob@example.net"},
    ),
    (
        "dc",
        f"{_DM}/thunderbird_encrypted_unsigned_with_unencrypted_subject.eml",
        {"Subject": "Hello!", "From": "Alice <alice@example.org>"},
    ),
]


@pytest.mark.parametrize(("keys", "path", "fields"), RESTORED, ids=[p for _, p, _ in RESTORED])
def test_protected_headers_restored(
    keys: str, path: str, fields: dict[str, str], interop_dir: Path, engines: Engines
) -> None:
    """Protected fields win; a field the protected part does not repeat keeps its outer value
    (the older protected-headers="v1" form protects only some fields); a protected-headers
    marker anywhere but on the root part is ignored. [partial-protected-headers]"""
    sent = (interop_dir / path).read_bytes()
    result = read(sent, gnupg=engines.get(keys))
    outer = email.message_from_bytes(sent, policy=email.policy.default)
    got = result.message
    expected = {
        "From": str(outer["From"]),
        "To": str(outer["To"]),
        "Message-ID": str(outer["Message-ID"]),
        **fields,
    }
    assert {f: str(got[f]) for f in expected} == expected


def test_one_from_in_the_multi_from_spoof(interop_dir: Path, engines: Engines) -> None:
    """Eve's inserted From field does not survive: the message read has the one protected
    From, which is the signer's."""
    path = interop_dir / _E / f"{_BOB_TO_ALICE}-multi-from.eml"
    result = read(path.read_bytes(), gnupg=engines.get("tb"))
    assert result.verified
    assert result.message.get_all("From") == ["Bob Babbage <bob@openpgp.example>"]


def test_thunderbird_gossip_survives(interop_dir: Path, engines: Engines) -> None:
    """Gossip inside a protected-headers part stays with the message read."""
    path = interop_dir / _E / "signed-encrypted-autocrypt-gossip.eml"
    result = read(path.read_bytes(), gnupg=engines.get("tb"))
    gossip = result.message.get_all("Autocrypt-Gossip") or []
    assert sorted(re.sub(r";.*", "", str(g), flags=re.S) for g in gossip) == [
        "addr=alice@openpgp.example",
        "addr=carol@example.com",
    ]


@pytest.mark.parametrize(
    ("name", "keys"), [("example-gossip", "ac-bob"), ("example-draft", "ac-alice")]
)
def test_autocrypt_examples_decrypt_to_their_cleartext(
    name: str, keys: str, interop_dir: Path, engines: Engines
) -> None:
    """The decrypted part is the spec's cleartext: its Autocrypt-Gossip header fields (which
    a client needs to learn the other recipients' keys) and its body. [autocrypt-gossip]"""
    folder = interop_dir / AC
    result = read((folder / f"{name}.eml").read_bytes(), gnupg=engines.get(keys))
    cleartext = wire.parse((folder / f"{name}-cleartext.eml").read_bytes())
    got = result.message
    assert got.get_payload(decode=True) == cleartext.get_payload(decode=True)
    want = sorted("".join(str(v).split()) for v in cleartext.get_all("Autocrypt-Gossip") or [])
    have = sorted("".join(str(v).split()) for v in got.get_all("Autocrypt-Gossip") or [])
    assert want and have == want


@pytest.mark.parametrize(
    ("path", "code", "fingerprint"),
    [
        (
            f"{AC}/example-setup-message.eml",
            "1742-0185-6197-1303-7016-8412-3581-4441-0597",
            "EB85BB5FA33A75E15E944E63F231550C4F47E38E",
        ),
        (
            f"{_DM}/k-9-autocrypt-setup-message.eml",
            "0655-9868-8252-5455-4232-5158-1237-5333-2638",
            "",
        ),
    ],
    ids=["autocrypt-spec", "k-9"],
)
def test_autocrypt_setup_message_holds_a_secret_key(
    path: str, code: str, fingerprint: str, interop_dir: Path, engines: Engines
) -> None:
    """The setup code's first digits are announced (Passphrase-Begin), and what it opens is
    the sender's secret key, as the spec's cleartext has it."""
    payload = setup_payload((interop_dir / path).read_bytes())
    begin = re.search(rb"Passphrase-Begin: (\d+)", payload)
    assert begin is not None and code.startswith(begin.group(1).decode())
    opened = engines.get("none").decrypt_symmetric(payload, code)
    if path.startswith(AC):
        assert (
            opened.data == (interop_dir / AC / "example-setup-message-cleartext.key").read_bytes()
        )
    with engines.scratch() as scratch:
        (key,) = scratch.import_keys(opened.data)
    assert key.has_secret
    assert not fingerprint or key.fingerprint == fingerprint


def test_signing_time_is_reported_not_judged(interop_dir: Path, engines: Engines) -> None:
    """The Date header is not signed: a Date a year before the signature does not fail it,
    and the signing time and the Date are there for the caller to compare."""
    path = interop_dir / _E / "signed-mismatch-email-date.eml"
    result = read(path.read_bytes(), gnupg=engines.get("tb"))
    (signature,) = result.signatures
    assert signature.verified and signature.signing_time is not None
    date = result.message["Date"]
    assert (signature.signing_time.year, date.datetime.date()) == (2020, dt.date(2019, 10, 14))


def test_wrong_passphrase_names_only_the_locked_key(interop_dir: Path, engines: Engines) -> None:
    """The message is encrypted to Alice and Bob; only Alice's (protected) secret key is here,
    so only she can be the key whose passphrase was wrong. [passphrase-names]"""
    path = interop_dir / _E / f"{_BOB_TO_ALICE}.eml"
    with pytest.raises(WrongPasswordError) as caught:
        read(path.read_bytes(), gnupg=engines.get("tb-alice-pp-wrong"), passphrase="wrong")
    # (Bob's public key is in the home too: the message is also encrypted to him.)
    assert "alice@openpgp.example" in str(caught.value)
    assert "bob@openpgp.example" not in str(caught.value)


# --- docs/interop.md -----------------------------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "interop.md"
BEGIN, END = "<!-- BEGIN pgp-corpus (generated) -->", "<!-- END pgp-corpus -->"


def _note(note: str, *flags: str) -> str:
    parts = [*flags, *([note] if note else [])]
    return "; ".join(parts).replace("|", "\\|")


def render_tables() -> str:
    rows = ["**Key sets**", "", "| keys | what the engine holds |", "|---|---|"]
    rows += [f"| {name} | {keyset.about} |" for name, keyset in KEYSETS.items()]
    rows += [
        "",
        "**Messages**, read with `securemail.pgp.read()`",
        "",
        "| message | keys | outcome (outermost layer first) | note |",
        "|---|---|---|---|",
    ]
    for case in CASES:
        where = f"`{case.path}`" + (f" (attachment {case.attached})" if case.attached else "")
        flags = ["SHA-1 allowed"] if case.weak else []
        rows.append(f"| {where} | {case.keys} | {case.expect} | {_note(case.note, *flags)} |")
    rows += [
        "",
        "**OpenPGP data that is not a message**, at the engine level (`securemail.pgp.GnuPG`)",
        "",
        "| file | operation | keys | outcome | note |",
        "|---|---|---|---|---|",
    ]
    for f in FILES:
        op = {
            "decrypt": "decrypt",
            "password": "decrypt_symmetric",
            "import": "import_keys",
            "verify": "verify_inline" if f.data is None else "verify_detached",
        }[f.op]
        rows.append(f"| `{f.path}` | {op} | {f.keys} | {f.expect} | {_note(f.note)} |")
    rows += ["", "**Not read**", ""]
    rows += [f"- `{path}`: {why}" for path, why in NOT_READ.items()]
    return "\n".join(rows)


def test_interop_doc_is_current() -> None:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(re.escape(BEGIN) + r"\n(.*?)\n" + re.escape(END), text, re.S)
    assert match is not None, f"{DOC} lacks the generated PGP corpus tables"
    assert match.group(1) == render_tables(), "run: python tests/interop/test_corpus_pgp.py"


if __name__ == "__main__":
    text = DOC.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    DOC.write_text(text[:start] + "\n" + render_tables() + "\n" + text[end:], encoding="utf-8")
    print(f"updated {DOC}")
