"""The key directory: import, harvest, lookup with reasons, WKD over real local HTTPS, the CLI.

Certificates come from :mod:`pki` and OpenPGP keys from gpg (:mod:`pgp.keys`), made at test
time. WKD is served by ``http.server`` over TLS with a trustme CA on loopback; only *where* the
client connects is redirected, the certificate is still checked against the requested name.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import http.server
import os
import shlex
import socket
import ssl
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from asn1crypto import cms
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from pgp.keys import KeySet, dearmor, shared_keyset
from pki import NOW, Issued, issue, message, smime_der, to_pkcs12

import securemail
from securemail.errors import (
    KeyDirectoryError,
    KeyLoadError,
    RecipientError,
    RecipientUnreachableError,
    WKDError,
)
from securemail.governance.directory import (
    Directory,
    KeyFormat,
    Reason,
    normalize_address,
)
from securemail.governance.keystore import KeyKind, SQLiteKeyStore
from securemail.governance.wkd import WKDClient, wkd_hash, wkd_urls
from securemail.keys import Identity
from securemail.smime import _asn1
from securemail.smime.capabilities import ANNOUNCED, Capabilities

ALICE = "alice@example.com"
LEGACY = Capabilities(algorithms=(_asn1.OID_AES256_CBC, _asn1.OID_RSA_ENCRYPTION))


# --- material ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> Issued:
    return issue(common_name="Directory Test CA", purpose="ca", key_type="p256")


@pytest.fixture(scope="module")
def alice(ca: Issued) -> Issued:
    return issue(common_name="Alice", email=ALICE, issuer=ca)


@pytest.fixture(scope="session")
def keyset(tmp_path_factory: pytest.TempPathFactory) -> KeySet:
    return shared_keyset("gpg", lambda: tmp_path_factory.mktemp("directory-pgp"))


def pem(*items: Issued | x509.Certificate | x509.CertificateRevocationList) -> bytes:
    out = b""
    for item in items:
        material = item.cert if isinstance(item, Issued) else item
        out += material.public_bytes(serialization.Encoding.PEM)
    return out


def crl_revoking(ca: Issued, *revoked: Issued) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(NOW - dt.timedelta(hours=1))
        .next_update(NOW + dt.timedelta(days=7))
    )
    for item in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(item.cert.serial_number)
            .revocation_date(NOW - dt.timedelta(hours=2))
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
            .build()
        )
    return builder.sign(ca.key, hashes.SHA256())  # type: ignore[arg-type]


# --- S/MIME lookups ---------------------------------------------------------------------------


def test_only_usable_certificates_are_chosen_and_every_other_one_says_why(
    ca: Issued, alice: Issued
) -> None:
    day = dt.timedelta(days=1)
    expired = issue(
        common_name="Alice old", email=ALICE, issuer=ca, not_before=NOW - 400 * day,
        not_after=NOW - 30 * day,
    )  # fmt: skip
    future = issue(
        common_name="Alice next", email=ALICE, issuer=ca, not_before=NOW + 10 * day,
        not_after=NOW + 400 * day,
    )  # fmt: skip
    sign_only = issue(common_name="Alice signing", email=ALICE, issuer=ca, purpose="sign")
    web_only = issue(
        common_name="Alice web", email=ALICE, issuer=ca, eku=(ExtendedKeyUsageOID.CLIENT_AUTH,)
    )
    ed25519 = issue(common_name="Alice ed", email=ALICE, issuer=ca, key_type="ed25519")
    revoked = issue(common_name="Alice lost", email=ALICE, issuer=ca)
    with Directory.open() as directory:
        bundle = pem(ca, alice, expired, future, sign_only, web_only, ed25519, revoked)
        bundle += pem(crl_revoking(ca, revoked))
        report = directory.import_bytes(bundle, source="bundle.pem")
        assert len(report.stored) == 9  # the CA, seven certificates, the CRL
        found = directory.lookup(ALICE)

    assert found.reachable
    assert [r.certificate for r in found.smime] == [alice.cert]
    by_subject = {r.key.split("'")[1]: r.reason for r in found.reasons}
    assert by_subject == {
        "CN=Alice old": Reason.EXPIRED,
        "CN=Alice next": Reason.NOT_YET_VALID,
        "CN=Alice signing": Reason.WRONG_USAGE,
        "CN=Alice web": Reason.WRONG_USAGE,
        "CN=Alice ed": Reason.WRONG_USAGE,
        "CN=Alice lost": Reason.REVOKED,
    }
    details = {r.key.split("'")[1]: r.detail for r in found.reasons}
    assert "keyEncipherment" in details["CN=Alice signing"]
    assert "emailProtection" in details["CN=Alice web"]
    assert "keyCompromise" in details["CN=Alice lost"]
    explained = found.explain()
    assert "refused revoked" in explained and "CN=Alice old" in explained


def test_validity_is_judged_at_the_time_asked(ca: Issued) -> None:
    later = issue(
        common_name="Later",
        email=ALICE,
        issuer=ca,
        not_before=NOW + dt.timedelta(days=10),
        not_after=NOW + dt.timedelta(days=100),
    )
    with Directory.open() as directory:
        directory.add_certificate(later.cert)
        assert directory.lookup(ALICE).reasons[0].reason is Reason.NOT_YET_VALID
        assert directory.lookup(ALICE, at=NOW + dt.timedelta(days=20)).reachable
        gone = directory.lookup(ALICE, at=NOW + dt.timedelta(days=200))
        assert [r.reason for r in gone.reasons] == [Reason.EXPIRED]


def test_revocation_needs_the_crl_and_its_issuer(ca: Issued) -> None:
    revoked = issue(common_name="Revoked", email=ALICE, issuer=ca)
    with Directory.open() as directory:
        directory.add_certificate(revoked.cert)
        directory.add_crl(crl_revoking(ca, revoked))
        # The CRL cannot be checked without its issuer's certificate: not applied.
        assert directory.lookup(ALICE).reachable
        directory.add_certificate(ca.cert)
        found = directory.lookup(ALICE)
    assert not found.reachable
    assert [r.reason for r in found.reasons] == [Reason.REVOKED]


def test_a_crl_from_another_ca_does_not_revoke(ca: Issued) -> None:
    user = issue(common_name="Kept", email=ALICE, issuer=ca)
    other = issue(common_name="Directory Test CA", purpose="ca", key_type="p256")  # same name
    forged = crl_revoking(other, user)
    with Directory.open() as directory:
        directory.import_bytes(pem(ca, user, forged))
        assert directory.lookup(ALICE).reachable


def test_trust_anchors_require_a_chain(ca: Issued, alice: Issued) -> None:
    stranger_ca = issue(common_name="Stranger CA", purpose="ca", key_type="p256")
    revoked = issue(common_name="Alice lost", email=ALICE, issuer=ca)
    with Directory.open(trust=[stranger_ca.cert]) as directory:
        directory.import_bytes(pem(alice))
        found = directory.lookup(ALICE)
        assert [r.reason for r in found.reasons] == [Reason.UNTRUSTED]
    with Directory.open(trust=[ca.cert]) as directory:
        directory.import_bytes(pem(alice, revoked, crl_revoking(ca, revoked)))
        found = directory.lookup(ALICE)
    assert [r.certificate for r in found.smime] == [alice.cert]
    assert [r.reason for r in found.reasons] == [Reason.REVOKED]


def test_address_local_part_as_written_domain_without_case(ca: Issued) -> None:
    cert = issue(common_name="Mixed", email="Alice.Smith@Example.COM", issuer=ca)
    with Directory.open() as directory:
        directory.add_certificate(cert.cert)
        assert directory.lookup("Alice.Smith@example.com").reachable
        assert directory.lookup("<Alice.Smith@EXAMPLE.com>").reachable
        near = directory.lookup("alice.smith@example.com")
        assert directory.lookup("bob@example.com").reasons == ()
    assert not near.reachable
    assert [r.reason for r in near.reasons] == [Reason.ADDRESS_MISMATCH]
    assert "Alice.Smith@example.com" in near.reasons[0].detail
    assert normalize_address(" Bob@Example.Org ") == "Bob@example.org"
    with pytest.raises(securemail.errors.InputError):
        normalize_address("no-at-sign")


def test_require_raises_a_typed_error_naming_the_recipient_and_why(ca: Issued) -> None:
    expired = issue(
        common_name="Expired",
        email=ALICE,
        issuer=ca,
        not_before=NOW - dt.timedelta(days=100),
        not_after=NOW - dt.timedelta(days=1),
    )
    with Directory.open() as directory:
        with pytest.raises(RecipientUnreachableError) as nothing:
            directory.require("nobody@example.com")
        directory.add_certificate(expired.cert)
        with pytest.raises(RecipientUnreachableError) as caught:
            directory.require(ALICE)
        with pytest.raises(RecipientUnreachableError) as pgp_only:
            directory.require(ALICE, format="pgp")
    assert nothing.value.reasons == ()
    assert "holds no key for this address" in str(nothing.value)
    error = caught.value
    assert isinstance(error, RecipientError)
    assert error.recipient == ALICE
    assert [r.reason for r in error.reasons] == [Reason.EXPIRED]  # type: ignore[attr-defined]
    assert str(error).startswith(f"cannot encrypt to {ALICE}: no usable key")
    assert "CN=Expired" in str(error) and "expired on" in str(error)
    assert pgp_only.value.format == "pgp" and pgp_only.value.reasons == ()


# --- harvesting what a sender announced ---------------------------------------------------------


def _cms_algorithms(data: bytes) -> tuple[str, str]:
    info = cms.ContentInfo.load(smime_der(data))
    envelope = info["content"]
    transport = envelope["recipient_infos"][0].chosen["key_encryption_algorithm"]["algorithm"]
    return info["content_type"].native, transport.native


def test_capabilities_harvested_from_a_signed_message_change_the_cipher(
    ca: Issued, alice: Issued
) -> None:
    sender = Identity.create(alice.key, alice.cert, chain=[ca.cert])  # type: ignore[arg-type]
    note = message(sender=ALICE, to=["bob@example.org"])
    with Directory.open() as directory:
        directory.import_bytes(pem(alice))
        before = directory.require(ALICE, KeyFormat.SMIME).smime
        assert before[0].capabilities is None
        assert _cms_algorithms(securemail.encrypt(note, before).as_bytes()) == (
            "enveloped_data",
            "rsaes_pkcs1v15",
        )

        unverified = securemail.verify(securemail.sign(note, sender).as_bytes(), trust=[])
        assert not unverified.verified
        assert directory.harvest(unverified) is None

        verified = securemail.verify(securemail.sign(note, sender).as_bytes(), trust=[ca.cert])
        assert verified.verified and verified.capabilities == ANNOUNCED
        stored = directory.harvest(verified)
        assert stored is not None and stored.announced == verified.signing_time
        after = directory.require(ALICE).smime
        assert after[0].capabilities == ANNOUNCED
        assert _cms_algorithms(securemail.encrypt(note, after).as_bytes()) == (
            "authenticated_enveloped_data",
            "rsaes_oaep",
        )

        # An older announcement read late does not replace a newer one...
        assert verified.signing_time is not None
        older = dataclasses.replace(
            verified, capabilities=LEGACY, signing_time=verified.signing_time - dt.timedelta(1)
        )
        directory.harvest(older)
        assert directory.lookup(ALICE).smime[0].capabilities == ANNOUNCED
        # ...a newer one does.
        newer = dataclasses.replace(
            verified, capabilities=LEGACY, signing_time=verified.signing_time + dt.timedelta(1)
        )
        directory.harvest(newer)
        latest = directory.lookup(ALICE).smime
    assert latest[0].capabilities == LEGACY
    assert _cms_algorithms(securemail.encrypt(note, latest).as_bytes())[0] == "enveloped_data"


# --- importing --------------------------------------------------------------------------------


def test_pkcs12_gives_up_its_certificates_and_never_its_private_key(
    tmp_path: Path, ca: Issued, alice: Issued
) -> None:
    p12 = tmp_path / "alice.p12"
    p12.write_bytes(to_pkcs12(alice, b"s3cret", chain=[ca.cert]))
    db = tmp_path / "keys.sqlite"
    with Directory.open(db) as directory:
        with pytest.raises(securemail.errors.WrongPasswordError):
            directory.import_path(p12)
        report = directory.import_path(p12, password="s3cret")
        assert sorted(k.kind for k in report.stored) == [KeyKind.ISSUER, KeyKind.SMIME]
    with Directory.open(db) as reopened:  # persisted
        assert [r.certificate for r in reopened.lookup(ALICE).smime] == [alice.cert]
    stored = db.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("keys.sqlite-*"))
    key = alice.key
    pkcs8 = key.private_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    private_exponent = key.private_numbers().d  # type: ignore[attr-defined]
    assert pkcs8 not in stored
    assert private_exponent.to_bytes(256, "big") not in stored
    assert alice.cert.public_bytes(serialization.Encoding.DER) in stored


def test_armored_openpgp_bundle_public_parts_only(keyset: KeySet, tmp_path: Path) -> None:
    bundle = b"\n".join(
        k.public for k in (keyset.alice, keyset.expired, keyset.revoked, keyset.sign_only)
    )
    bundle += b"\n" + keyset.bob.secret
    db = tmp_path / "keys.sqlite"
    with Directory.open(db) as directory:
        report = directory.import_bytes(bundle, source="bundle.asc")
        assert {k.fingerprint for k in report.stored} == {
            keyset.alice.fingerprint,
            keyset.expired.fingerprint,
            keyset.revoked.fingerprint,
            keyset.sign_only.fingerprint,
            keyset.bob.fingerprint,
        }
        alice = directory.lookup(keyset.alice.email)
        assert [k.fingerprint for k in alice.pgp] == [keyset.alice.fingerprint]
        assert b"-----BEGIN PGP PUBLIC KEY BLOCK-----" in alice.pgp[0].public_key
        assert directory.lookup(keyset.bob.email).reachable
        reasons = {
            who: [r.reason for r in directory.lookup(k.email).reasons]
            for who, k in (
                ("expired", keyset.expired),
                ("revoked", keyset.revoked),
                ("sign-only", keyset.sign_only),
            )
        }
        early = directory.lookup(keyset.alice.email, at=dt.datetime(2001, 1, 1, tzinfo=dt.UTC))
    assert reasons == {
        "expired": [Reason.EXPIRED],
        "revoked": [Reason.REVOKED],
        "sign-only": [Reason.WRONG_USAGE],
    }
    assert [r.reason for r in early.reasons] == [Reason.NOT_YET_VALID]
    stored = db.read_bytes()
    assert b"PRIVATE KEY BLOCK" not in stored
    assert dearmor(keyset.bob.secret)[:200] not in stored


def test_folder_import_is_recursive_and_skips_what_is_not_key_material(
    tmp_path: Path, keyset: KeySet, ca: Issued, alice: Issued
) -> None:
    folder = tmp_path / "keys"
    (folder / "smime" / "deep").mkdir(parents=True)
    (folder / "pgp").mkdir()
    (folder / "smime" / "deep" / "alice.der").write_bytes(
        alice.cert.public_bytes(serialization.Encoding.DER)
    )
    (folder / "smime" / "ca.pem").write_bytes(pem(ca))
    (folder / "pgp" / "carol.asc").write_bytes(keyset.carol.public)
    (folder / "pgp" / "carol.gpg").write_bytes(dearmor(keyset.carol.public))
    (folder / "README.txt").write_text("these are our correspondents' keys\n")
    with Directory.open() as directory:
        report = directory.import_path(folder)
        assert directory.lookup(ALICE).reachable
        assert directory.lookup(keyset.carol.email).pgp[0].fingerprint == keyset.carol.fingerprint
        kinds = sorted(k.kind.value for k in directory.entries())
        with pytest.raises(KeyLoadError):
            directory.import_path(folder / "README.txt")
    assert kinds == ["issuer", "pgp", "smime"]
    assert [Path(name).name for name, _ in report.skipped] == ["README.txt"]


def test_storage_refuses_what_is_not_a_key_directory(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite"
    import sqlite3

    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE something (x)")
    with pytest.raises(KeyDirectoryError, match="not a key directory"):
        SQLiteKeyStore(other)
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database at all" * 100)
    with pytest.raises(KeyDirectoryError):
        Directory.open(garbage)
    newer = tmp_path / "newer.sqlite"
    SQLiteKeyStore(newer).close()
    with sqlite3.connect(newer) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(KeyDirectoryError, match="schema version 99"):
        Directory.open(newer)


# --- WKD ----------------------------------------------------------------------------------------


def test_wkd_hash_matches_the_draft_example() -> None:
    # draft-koch-openpgp-webkey-service, section 3.1
    assert wkd_hash("Joe.Doe") == "iy9q119eutrkn8s1mk4r39qejnbu3n5q"
    advanced, direct = wkd_urls("Joe.Doe@Example.ORG")
    assert advanced == (
        "https://openpgpkey.example.org/.well-known/openpgpkey/example.org/hu/"
        "iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe"
    )
    assert direct == (
        "https://example.org/.well-known/openpgpkey/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe"
    )


@dataclasses.dataclass
class WKDServer:
    port: int
    ca: trustme.CA
    keys: dict[str, bytes]  # path (without query) -> key
    requests: list[tuple[str, str]]  # (Host header, path with query)

    def client(self, *, advanced: bool = True, ca: trustme.CA | None = None) -> WKDClient:
        context = ssl.create_default_context()
        (ca or self.ca).configure_trust(context)

        def connect(host: str, port: int) -> tuple[str, int]:
            assert port == 443
            if host.startswith("openpgpkey.") and not advanced:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return "127.0.0.1", self.port

        return WKDClient(context=context, connect=connect, timeout=5)


@pytest.fixture
def wkd() -> Iterator[WKDServer]:
    ca = trustme.CA()
    cert = ca.issue_cert("openpgpkey.example.org", "example.org")
    state = WKDServer(0, ca, {}, [])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append((self.headers["Host"], self.path))
            body = state.keys.get(urllib.parse.urlsplit(self.path).path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _paths(address: str) -> tuple[str, str]:
    return tuple(urllib.parse.urlsplit(u).path for u in wkd_urls(address))  # type: ignore[return-value]


def test_wkd_advanced_method(wkd: WKDServer, keyset: KeySet) -> None:
    address = keyset.alice.email
    wkd.keys[_paths(address)[0]] = dearmor(keyset.alice.public)
    with Directory.open() as directory:
        found = directory.fetch_wkd(address, client=wkd.client())
        assert [k.fingerprint for k in found.pgp] == [keyset.alice.fingerprint]
        stored = list(directory.entries(KeyKind.PGP))
        assert directory.lookup(address).reachable  # kept
    assert stored[0].source.startswith("WKD https://openpgpkey.example.org/")
    assert wkd.requests[0][0] == "openpgpkey.example.org"
    assert wkd.requests[0][1].endswith("?l=alice")


def test_wkd_direct_method_when_the_openpgpkey_host_does_not_exist(
    wkd: WKDServer, keyset: KeySet
) -> None:
    address = keyset.bob.email
    wkd.keys[_paths(address)[1]] = dearmor(keyset.bob.public)
    with Directory.open() as directory:
        found = directory.fetch_wkd(address, client=wkd.client(advanced=False))
        missing = directory.fetch_wkd("nobody@example.org", client=wkd.client(advanced=False))
    assert [k.fingerprint for k in found.pgp] == [keyset.bob.fingerprint]
    assert [host for host, _ in wkd.requests] == ["example.org", "example.org"]
    assert not missing.reachable and missing.reasons == ()


def test_wkd_key_without_the_address_is_rejected_and_not_stored(
    wkd: WKDServer, keyset: KeySet
) -> None:
    address = keyset.alice.email
    wkd.keys[_paths(address)[0]] = dearmor(keyset.carol.public)  # Carol's key at Alice's name
    with Directory.open() as directory:
        found = directory.fetch_wkd(address, client=wkd.client())
        stored = list(directory.entries())
    assert not found.reachable
    assert [(r.key, r.reason) for r in found.reasons] == [
        (keyset.carol.fingerprint, Reason.ADDRESS_MISMATCH)
    ]
    assert stored == []


def test_wkd_refuses_a_server_certificate_it_cannot_verify(wkd: WKDServer, keyset: KeySet) -> None:
    wkd.keys[_paths(keyset.alice.email)[0]] = dearmor(keyset.alice.public)
    with Directory.open() as directory:
        with pytest.raises(WKDError) as caught:
            directory.fetch_wkd(keyset.alice.email, client=wkd.client(ca=trustme.CA()))
        assert list(directory.entries()) == []
    assert caught.value.kind == "certificate"
    assert caught.value.url.startswith("https://openpgpkey.example.org/")
    assert wkd.requests == []  # nothing was asked over the unverified connection


def test_wkd_checks_the_name_requested_not_the_one_connected_to(wkd: WKDServer) -> None:
    # The hook sends example.net to the server whose certificate names example.org only.
    with pytest.raises(WKDError) as caught:
        wkd.client().fetch("someone@example.net")
    assert caught.value.kind == "certificate"


def test_wkd_size_limit(wkd: WKDServer) -> None:
    wkd.keys[_paths("big@example.org")[0]] = b"\x99" * 5000
    client = dataclasses.replace(wkd.client(), max_size=4096)
    with pytest.raises(WKDError) as caught:
        client.fetch("big@example.org")
    assert caught.value.kind == "too-large"


# --- the command line ---------------------------------------------------------------------------


def run_cli(
    command: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "SECUREMAIL_DIRECTORY"}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "securemail", *shlex.split(command)],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_import_list_show(tmp_path: Path, keyset: KeySet, ca: Issued, alice: Issued) -> None:
    expired = issue(
        common_name="Old Alice",
        email="old@example.com",
        issuer=ca,
        not_before=NOW - dt.timedelta(days=100),
        not_after=NOW - dt.timedelta(days=1),
    )
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "alice.pem").write_bytes(pem(alice))
    (tmp_path / "certs" / "old.pem").write_bytes(pem(expired))
    (tmp_path / "dave.asc").write_bytes(keyset.dave.public)

    done = run_cli("keys import certs dave.asc --directory keys.db", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("stored") == 3

    done = run_cli("keys list", tmp_path, {"SECUREMAIL_DIRECTORY": "keys.db"})
    assert done.returncode == 0, done.stderr
    assert ALICE in done.stdout and keyset.dave.fingerprint in done.stdout

    done = run_cli(f"keys show {ALICE} --directory keys.db", tmp_path)
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.startswith(f"{ALICE}: reachable") and "CN=Alice" in done.stdout

    done = run_cli("keys show old@example.com --directory keys.db", tmp_path)
    assert done.returncode == 1
    assert "NOT reachable" in done.stdout and "refused expired" in done.stdout

    stranger = issue(common_name="Stranger CA", purpose="ca", key_type="p256")
    (tmp_path / "stranger.pem").write_bytes(pem(stranger))
    done = run_cli(f"keys show {ALICE} --directory keys.db --trust stranger.pem", tmp_path)
    assert done.returncode == 1 and "refused untrusted" in done.stdout

    done = run_cli(f"keys show {keyset.dave.email} --directory keys.db", tmp_path)
    assert done.returncode == 0 and keyset.dave.fingerprint in done.stdout


def test_cli_needs_a_directory_and_reports_errors_in_one_line(tmp_path: Path) -> None:
    done = run_cli(f"keys show {ALICE}", tmp_path)
    assert done.returncode == 2
    assert "SECUREMAIL_DIRECTORY" in done.stderr and len(done.stderr.splitlines()) == 1
    (tmp_path / "notes.txt").write_text("hello\n")
    done = run_cli("keys import notes.txt --directory keys.db", tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith("securemail: error: cannot load key material from notes.txt")
    assert len(done.stderr.splitlines()) == 1
