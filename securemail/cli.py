"""The ``securemail`` command: thin argument parsing over the recipes.

Input and output are whole RFC 5322 messages (``-i``/``-o``, default stdin/stdout), so
commands compose in pipes: ``securemail sign ... | securemail encrypt ...`` signs then
encrypts. Every failure prints one line to stderr and exits non-zero; there are no
tracebacks (set ``SECUREMAIL_DEBUG=1`` to see one when reporting a bug).
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NoReturn, TypeVar

from . import wire
from .cliio import STREAM_THRESHOLD, Input, Output, open_input
from .compose import MessageBuilder
from .errors import InputError, SecureMailError
from .keys import Identity, Recipient, load_certificates, load_identity
from .pgp.gpg import GnuPG
from .policy import DEFAULT, ContentCipher, DigestAlgorithm, KeyTransport, Policy, SignatureMode
from .results import VerifyResult
from .stream import smime as stream_smime
from .stream.base import Sink, Source
from .stream.message import PrefixedSource

if TYPE_CHECKING:  # the transport (pydantic) is imported only by `send`
    from .governance.directory import Directory
    from .transport.config import SMTPConfig
    from .transport.dkim import DKIMSigner
    from .transport.smtp import Sendable
from .stream.mime import StreamedAttachment, copy_into, write_message

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL: some recipients deferred, none refused
EXIT_INTERNAL = 70


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line too."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"securemail: {message} (see securemail --help)\n")


def _whole(message: Input) -> bytes:
    """The whole input in memory (for what is not streamed)."""
    if message.rest is None:
        return message.prefix
    collected = io.BytesIO(message.prefix)
    collected.seek(0, io.SEEK_END)
    copy_into(collected, message.rest)
    return collected.getvalue()


def _write_output(path: str | None, data: bytes) -> None:
    if path is None or path == "-":
        out: BinaryIO = sys.stdout.buffer
        out.write(data)
        out.flush()
        return
    Path(path).write_bytes(data)


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text") from None


def _note(text: str) -> None:
    print(f"securemail: {text}", file=sys.stderr)


def _password(args: argparse.Namespace) -> bytes | None:
    if getattr(args, "password_file", None):
        data = Path(args.password_file).read_bytes()
        return data.rstrip(b"\r\n")
    return None


def _identity(args: argparse.Namespace) -> Identity:
    return load_identity(args.key, args.cert, password=_password(args), chain=args.chain)


def _message_password(args: argparse.Namespace) -> bytes | None:
    """The RFC 3211 message password: the first line of --pwri-password-file (distinct from
    --password-file, which unlocks a key)."""
    path = getattr(args, "pwri_password_file", None)
    if not path and not getattr(args, "key", None) and not getattr(args, "pgp", False):
        # S/MIME with no private key to unlock: --password-file can only mean the message's
        # password (``encrypt --smime --password-file F``, ``decrypt --password-file F``).
        path = getattr(args, "password_file", None)
    if not path:
        return None
    line = _file_line(path)
    if not line:
        raise InputError(f"{path}: the first line is empty; it must hold the message password")
    return line


# --- commands -------------------------------------------------------------------------------------


def _cmd_compose(args: argparse.Namespace) -> int:
    builder = MessageBuilder().from_addr(args.from_addr).to(*args.to)
    if args.cc:
        builder = builder.cc(*args.cc)
    if args.subject is not None:
        builder = builder.subject(args.subject)
    if args.text is not None:
        builder = builder.text(args.text)
    elif args.text_file:
        builder = builder.text(_read_text(args.text_file))
    if args.html_file:
        builder = builder.html(_read_text(args.html_file))
    large = []
    for path in args.attach or ():
        if Path(path).is_file() and Path(path).stat().st_size > STREAM_THRESHOLD:
            large.append(StreamedAttachment(path))  # read in chunks while writing
        else:
            builder = builder.attach(Path(path))
    if large and args.text is None and not args.text_file and not args.html_file:
        builder = builder.text("")
    message = builder.build()
    if not large:
        _write_output(args.output, wire.to_bytes(message))
        return EXIT_OK
    with Output(args.output) as out:
        write_message(out, message, large)
    return EXIT_OK


def _policy(args: argparse.Namespace) -> Policy:
    changes: dict[str, object] = {}
    if getattr(args, "cipher", None):
        changes["content_cipher"] = ContentCipher(args.cipher)
    if getattr(args, "key_transport", None):
        changes["key_transport"] = KeyTransport(args.key_transport)
    if getattr(args, "opaque", False):
        changes["signature_mode"] = SignatureMode.OPAQUE
    if getattr(args, "digest", None):
        changes["digest"] = DigestAlgorithm(args.digest)
    if getattr(args, "chain", None):
        changes["include_chain"] = True
    if getattr(args, "allow_weak", False):
        changes["allow_weak_algorithms"] = True
    if getattr(args, "require_authenticated", False):
        changes["require_authenticated_encryption"] = True
    return DEFAULT.clone(**changes)


class _UsageError(Exception):
    """A combination of options that argparse cannot express; exit 2 like its errors."""


def _need(args: argparse.Namespace, option: str, what: str) -> None:
    if not getattr(args, option.lstrip("-").replace("-", "_"), None):
        raise _UsageError(f"{option} is required {what}")


_T = TypeVar("_T")


def _streamed(
    message: Input, output: str | None, verb: str, run: Callable[[Source, Sink], _T]
) -> _T:
    """``run`` on the message's source (with a progress bar on a terminal) and the output."""
    source, progress = message.source(verb)
    with Output(output) as out:
        result = run(source, out)
    progress.close()
    return result


def _pgp_engine(args: argparse.Namespace) -> GnuPG | None:
    """The GnuPG home named by --gnupg-home, or None for a private one per operation."""
    return GnuPG(args.gnupg_home) if args.gnupg_home else None


def _cmd_encrypt(args: argparse.Namespace) -> int:
    message = open_input(args.input)
    if args.pgp:
        from .pgp import encrypt as pgp_encrypt

        if args.pwri_password_file:
            raise _UsageError("--pwri-password-file is for S/MIME only")
        if not (args.recipient_key or args.recipient or args.gnupg_home):
            raise _UsageError("--recipient-key (or --gnupg-home) is required with --pgp")
        keys = [*(args.recipient_key or ()), *(args.secret_key or ())]
        signing = bool(args.secret_key or args.signer)
        if message.streaming:
            from .stream import pgp as stream_pgp

            _streamed(
                message,
                args.output,
                "encrypting",
                lambda source, out: stream_pgp.encrypt_stream(
                    source,
                    out,
                    args.recipient or (),
                    keys=keys,
                    signer=args.signer,
                    sign=signing,
                    passphrase=_password(args),
                    gnupg=_pgp_engine(args),
                    policy=_policy(args),
                    prefix=message.prefix,
                ),
            )
            return EXIT_OK
        protected = pgp_encrypt(
            _whole(message),
            args.recipient or (),
            keys=keys,
            signer=args.signer,
            sign=signing,
            passphrase=_password(args),
            gnupg=_pgp_engine(args),
            policy=_policy(args),
        )
    else:
        from .smime import PasswordRecipient, encrypt

        secret = _message_password(args)
        if secret is None:
            _need(args, "--recipient-cert", "for S/MIME encryption (or --pwri-password-file)")
        recipients: list[Recipient | PasswordRecipient] = [
            Recipient.load(path) for path in args.recipient_cert or ()
        ]
        if secret is not None:
            recipients.append(PasswordRecipient(secret))
        signer_id = _identity(args) if args.key else None
        trust = [c for path in args.trust for c in load_certificates(path)] if args.trust else None
        if message.streaming:
            _streamed(
                message,
                args.output,
                "encrypting",
                lambda source, out: stream_smime.encrypt_stream(
                    source,
                    out,
                    recipients,
                    signer=signer_id,
                    policy=_policy(args),
                    trust=trust,
                    prefix=message.prefix,
                ),
            )
            return EXIT_OK
        protected = encrypt(
            message.prefix, recipients, signer=signer_id, policy=_policy(args), trust=trust
        )
    _write_output(args.output, protected.as_bytes())
    return EXIT_OK


def _cmd_decrypt(args: argparse.Namespace) -> int:
    message = open_input(args.input)
    if args.pgp:
        from .pgp import decrypt as pgp_decrypt

        if args.pwri_password_file:
            raise _UsageError("--pwri-password-file is for S/MIME only")
        if not (args.secret_key or args.gnupg_home):
            raise _UsageError("--secret-key (or --gnupg-home) is required with --pgp")
        if message.streaming:
            from .stream import pgp as stream_pgp

            streamed = _streamed(
                message,
                args.output,
                "decrypting",
                lambda source, out: stream_pgp.decrypt_stream(
                    source,
                    out,
                    keys=[*(args.secret_key or ()), *(args.signer_key or ())],
                    passphrase=_password(args),
                    gnupg=_pgp_engine(args),
                    policy=_policy(args),
                    prefix=message.prefix,
                ),
            )
            _report_signature(streamed.signature)
            return EXIT_OK
        result = pgp_decrypt(
            _whole(message),
            keys=[*(args.secret_key or ()), *(args.signer_key or ())],
            passphrase=_password(args),
            gnupg=_pgp_engine(args),
            policy=_policy(args),
        )
    else:
        from .smime import decrypt

        secret = _message_password(args)
        if secret is None:
            _need(args, "--key", "for S/MIME decryption (or --pwri-password-file)")
        identity = _identity(args) if args.key else None
        if message.streaming:
            streamed = _streamed(
                message,
                args.output,
                "decrypting",
                lambda source, out: stream_smime.decrypt_stream(
                    source,
                    out,
                    identity,
                    password=secret,
                    policy=_policy(args),
                    prefix=message.prefix,
                ),
            )
            if not streamed.authenticated:
                _warn_unauthenticated(streamed.content_cipher)
            return EXIT_OK
        result = decrypt(message.prefix, identity, password=secret, policy=_policy(args))
    _write_output(args.output, result.data)
    _report_signature(result.signature)
    if not result.authenticated:
        _warn_unauthenticated(result.content_cipher)
    return EXIT_OK


def _report_signature(signature: VerifyResult | None) -> None:
    """A signature made with the encryption (OpenPGP's combined form) has no layer of its
    own left in the output for ``verify`` to check: it is reported here."""
    if signature is None:
        return
    if signature.verified:
        _note(f"verified: signed by {signature.signer} (key {signature.fingerprint})")
    else:
        _note(f"signature NOT verified ({signature.status.value}): {signature.reason}")


def _warn_unauthenticated(cipher: str) -> None:
    _note(
        f"warning: {cipher} has no integrity protection; "
        "trust the content only if a signature inside verifies"
    )


def _cmd_sign(args: argparse.Namespace) -> int:
    message = open_input(args.input)
    if args.pgp:
        from .pgp import sign as pgp_sign

        if not (args.secret_key or args.gnupg_home):
            raise _UsageError("--secret-key (or --gnupg-home) is required with --pgp")
        if message.streaming:
            from .stream import pgp as stream_pgp

            _streamed(
                message,
                args.output,
                "signing",
                lambda source, out: stream_pgp.sign_stream(
                    source,
                    out,
                    args.signer,
                    keys=args.secret_key or (),
                    passphrase=_password(args),
                    gnupg=_pgp_engine(args),
                    policy=_policy(args),
                    prefix=message.prefix,
                ),
            )
            return EXIT_OK
        protected = pgp_sign(
            _whole(message),
            args.signer,
            keys=args.secret_key or (),
            passphrase=_password(args),
            gnupg=_pgp_engine(args),
            policy=_policy(args),
        )
    else:
        from .smime import sign

        _need(args, "--key", "for S/MIME signing")
        if message.streaming:
            if args.opaque:
                raise _UsageError("large messages are signed detached; --opaque needs it in memory")
            _streamed(
                message,
                args.output,
                "signing",
                lambda source, out: stream_smime.sign_stream(
                    source, out, _identity(args), policy=_policy(args), prefix=message.prefix
                ),
            )
            return EXIT_OK
        protected = sign(message.prefix, _identity(args), policy=_policy(args))
    _write_output(args.output, protected.as_bytes())
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    message = _whole(open_input(args.input))
    if args.pgp:
        from .pgp import verify as pgp_verify

        if not (args.key or args.gnupg_home):
            raise _UsageError("--key (or --gnupg-home) is required with --pgp")
        result = pgp_verify(
            message, keys=args.key or (), gnupg=_pgp_engine(args), policy=_policy(args)
        )
        who = f"key {result.fingerprint}"
    else:
        from .smime import verify

        _need(args, "--trust", "for S/MIME verification")
        trust = [c for path in args.trust for c in load_certificates(path)]
        extra = [c for path in args.cert or () for c in load_certificates(path)]
        result = verify(message, trust=trust, policy=_policy(args), certificates=extra)
        who = result.certificate.subject.rfc4514_string() if result.certificate else ""
    if result.verified:
        # Only verified content goes on: `verify | next-step` must never pass on a
        # message whose signature failed.
        assert result.data is not None
        _write_output(args.output, result.data)
        _note(f"verified: signed by {result.signer} ({who})")
        return EXIT_OK
    _note(f"NOT verified ({result.status.value}): {result.reason}")
    return EXIT_FAILED


def _smtp_config(args: argparse.Namespace) -> SMTPConfig:
    from pydantic import SecretStr

    from .transport.config import SMTPConfig

    host, colon, port = args.smtp.rpartition(":")
    if not colon or not host or not port.isdigit():
        raise _UsageError("--smtp takes HOST:PORT, e.g. smtp.example.com:587")
    if args.user and not args.password_file:
        raise _UsageError("--user needs --password-file")
    password = _password(args)
    return SMTPConfig(
        host=host,
        port=int(port),
        tls=args.tls,
        ca_file=args.ca,
        username=args.user,
        password=SecretStr(password.decode("utf-8")) if password is not None else None,
        require_protection=args.require_protection,
    )


def _dkim_signer(args: argparse.Namespace) -> DKIMSigner | None:
    from .transport.dkim import DKIMSigner

    given = [args.dkim_key, args.dkim_selector, args.dkim_domain]
    if not any(given):
        return None
    if not all(given):
        raise _UsageError("DKIM signing needs --dkim-key, --dkim-selector and --dkim-domain")
    return DKIMSigner.load(
        Path(args.dkim_key), selector=args.dkim_selector, domain=args.dkim_domain
    )


def _outgoing(args: argparse.Namespace, dkim: DKIMSigner | None, stack: ExitStack) -> Sendable:
    """The message to send: in memory when small; else streamed from its file (read once
    more for the DKIM body hash) or from stdin (spooled to an anonymous file first when it
    is to be DKIM-signed, as the signature goes before the message)."""
    message = open_input(args.input)
    if not message.streaming:
        return dkim.sign(message.prefix) if dkim is not None else message.prefix
    assert message.rest is not None
    if dkim is None:
        source, progress = message.source("sending")
        stack.callback(progress.close)
        return PrefixedSource(message.prefix, source)
    spool = stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115 (closed by the stack)
    spool.write(message.prefix)
    copy_into(spool, message.rest)
    spool.seek(0)
    field = dkim.sign_stream(iter(lambda: spool.read(1 << 20), b""))
    spool.seek(0)
    return PrefixedSource(field, spool)


def _cmd_send(args: argparse.Namespace) -> int:
    from .transport import SMTPTransport

    config = _smtp_config(args)
    dkim = _dkim_signer(args)
    if args.policy:
        return _send_governed(args, config, dkim)
    governed_only = [
        option
        for option, value in (
            ("--directory", args.directory),
            ("--audit-log", args.audit_log),
            ("--archive", args.archive),
            ("--signer-key", args.signer_key),
            ("--pwri-password-file", args.pwri_password_file),
        )
        if value
    ]
    if governed_only:
        raise _UsageError(f"{governed_only[0]} is for a send governed by rules: add --policy")
    with ExitStack() as stack:
        outgoing = _outgoing(args, dkim, stack)
        with SMTPTransport(config) as transport:
            result = transport.send(outgoing, mail_from=args.from_addr, recipients=args.to)
    for recipient in result.recipients:
        print(f"{recipient.status.value:<9} {recipient.address} {recipient.code} {recipient.reply}")
    if result.ok:
        return EXIT_OK
    return EXIT_TEMPFAIL if not result.failed else EXIT_FAILED


def _send_governed(args: argparse.Namespace, config: SMTPConfig, dkim: DKIMSigner | None) -> int:
    """``send --policy``: the rules decide, the directory supplies keys, copies are
    protected per recipient, and the audit log and the archive record it."""
    from .governance.archive import Archive
    from .governance.audit import AuditLog
    from .governance.gateway import PasswordRequest, send
    from .governance.rules import RuleSet

    if args.from_addr or args.to:
        raise _UsageError("with --policy the envelope comes from the message: drop --from/--to")
    if args.archive and not args.index_key_file:
        raise _UsageError("--archive needs --index-key-file (the archive's index key)")
    rules = RuleSet.load(args.policy)
    message = wire.parse(_whole(open_input(args.input)))
    signer = None
    if args.signer_key:
        signer = load_identity(
            args.signer_key,
            args.signer_cert,
            password=_file_line(args.signer_password_file) if args.signer_password_file else None,
        )
    password = _message_password(args)

    def hand_out(request: PasswordRequest) -> bytes:
        if password is None:  # the rules asked for one and no file was given
            raise _UsageError("the rules require password encryption: give --pwri-password-file")
        _note(f"hand the message password to {', '.join(request.recipients)} out of band")
        return password

    with ExitStack() as stack:
        directory = stack.enter_context(_key_directory(args)) if _has_directory(args) else None
        audit = stack.enter_context(AuditLog.open(args.audit_log)) if args.audit_log else None
        archive = None
        if args.archive:
            key = _archive_index_key(args.index_key_file)
            archive = stack.enter_context(Archive.open(args.archive, index_key=key))
        result = send(
            message,
            config,
            policy=rules,
            directory=directory,
            signer=signer,
            audit=audit,
            archive=archive,
            password_callback=hand_out,
            dkim=dkim,
        )
    for delivery in result.deliveries:
        for recipient in delivery.result.recipients:
            print(
                f"{recipient.status.value:<9} {recipient.address} {recipient.code} "
                f"{delivery.protection} {recipient.reply}"
            )
    for address, reason in result.refused:
        print(f"refused   {address} - {reason}")
    if result.ok:
        return EXIT_OK
    failed = result.refused or any(d.result.failed for d in result.deliveries)
    return EXIT_FAILED if failed else EXIT_TEMPFAIL


def _has_directory(args: argparse.Namespace) -> bool:
    return bool(args.directory or os.environ.get("SECUREMAIL_DIRECTORY"))


def _file_line(path: str) -> bytes:
    return Path(path).read_bytes().split(b"\n", 1)[0].rstrip(b"\r")


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(print_line=print, keep=Path(args.keep) if args.keep else None)


# --- policy rules (securemail.governance.rules) ---


def _cmd_policy_check(args: argparse.Namespace) -> int:
    import json

    from .governance.rules import RuleSet

    rules = RuleSet.load(args.policy)  # a malformed policy fails before any input is read
    decision = rules.evaluate(_whole(open_input(args.input)), recipients=args.recipient)
    print(json.dumps(decision.to_audit()) if args.json else decision.explain())
    return EXIT_OK


# --- archive (securemail.governance.archive) ---


def _archive_when(value: str | None, option: str) -> dt.datetime | None:
    """An ISO 8601 date or date-time; without a zone it is UTC."""
    if value is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise _UsageError(f"{option} wants an ISO 8601 date such as 2025-01-31") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _archive_index_key(path: str) -> bytes:
    text = Path(path).read_text(encoding="ascii", errors="replace")
    try:
        key = bytes.fromhex("".join(text.split()))
    except ValueError:
        key = b""
    if len(key) != 32:
        raise InputError(f"{path}: an index key file holds 64 hexadecimal digits")
    return key


def _cmd_archive_list(args: argparse.Namespace) -> int:
    from .governance.archive import Archive

    by_address = args.to is not None or args.from_addr is not None
    if by_address and not (args.key or args.index_key_file):
        raise _UsageError("--to and --from need the index key: give --key or --index-key-file")
    since = _archive_when(args.since, "--since")
    until = _archive_when(args.until, "--until")
    with Archive.open(
        args.archive,
        identity=_identity(args) if args.key else None,
        index_key=_archive_index_key(args.index_key_file) if args.index_key_file else None,
    ) as archive:
        entries = archive.find(to=args.to, sender=args.from_addr, since=since, until=until)
    for entry in entries:
        date = entry.date.isoformat(timespec="seconds")
        print(f"{entry.id}\t{date}\t{entry.size}\t{entry.message_id or '-'}")
    return EXIT_OK


def _cmd_archive_get(args: argparse.Namespace) -> int:
    from .governance.archive import Archive

    identity = _identity(args)
    with Archive.open(args.archive) as archive:
        data = archive.get(args.message_id, identity)
    _write_output(args.output, data)
    return EXIT_OK


# --- the key directory (securemail.governance.directory) ---


def _key_directory(args: argparse.Namespace) -> Directory:
    from .governance.directory import Directory

    path = args.directory or os.environ.get("SECUREMAIL_DIRECTORY")
    if not path:
        raise _UsageError("--directory is required (or set SECUREMAIL_DIRECTORY)")
    trust = [c for name in getattr(args, "trust", None) or () for c in load_certificates(name)]
    return Directory.open(path, trust=trust or None)


def _cmd_keys_import(args: argparse.Namespace) -> int:
    from .governance.directory import describe

    with _key_directory(args) as directory:
        report = directory.import_path(*args.paths, password=_password(args))
    for stored in report.stored:
        print(f"stored  {describe(stored)}")
    for name, reason in report.skipped:
        _note(f"skipped {name}: {reason}")
    return EXIT_OK


def _cmd_keys_list(args: argparse.Namespace) -> int:
    from .governance.directory import describe

    with _key_directory(args) as directory:
        for stored in directory.entries():
            print(describe(stored))
    return EXIT_OK


def _cmd_keys_show(args: argparse.Namespace) -> int:
    with _key_directory(args) as directory:
        found = directory.lookup(args.address)
    print(found.explain())
    return EXIT_OK if found.reachable else EXIT_FAILED


# --- parser ---------------------------------------------------------------------------------------


def _io(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-i", "--input", metavar="IN", help="input message (default: stdin)")
    parser.add_argument("-o", "--output", metavar="OUT", help="output (default: stdout)")


def _format(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--smime", action="store_true", help="S/MIME (the default)")
    group.add_argument("--pgp", action="store_true", help="PGP/MIME")


def _key_options(parser: argparse.ArgumentParser) -> None:
    smime = parser.add_argument_group("S/MIME keys")
    smime.add_argument("--key", metavar="KEY", help="private key (PEM) or PKCS#12 file")
    smime.add_argument("--cert", metavar="CERT", help="certificate (PEM/DER) for --key")
    smime.add_argument("--chain", metavar="PEM", help="intermediate certificates to include")
    parser.add_argument(
        "--password-file",
        "--passphrase-file",
        dest="password_file",
        metavar="F",
        help="password of an encrypted key (S/MIME) or passphrase of a secret key (PGP)",
    )


def _pwri_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    # Not --password-file: that one unlocks a private key; this one is the message's own
    # password (a CMS PasswordRecipientInfo, RFC 3211; openssl cms calls it -pwri_password).
    parser.add_argument("--pwri-password-file", metavar="F", help=help_text)


def _pgp_options(parser: argparse.ArgumentParser, *, secret: bool) -> None:
    pgp = parser.add_argument_group("PGP keys")
    if secret:
        pgp.add_argument(
            "--secret-key", action="append", metavar="ASC", help="OpenPGP secret key file"
        )
        pgp.add_argument("--signer", metavar="ADDR|FPR", help="which secret key signs")
    pgp.add_argument("--gnupg-home", metavar="DIR", help="use this GnuPG home instead of key files")


def _archive_parsers(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser("archive", help="list and read the encrypted archive of sent mail")
    commands = p.add_subparsers(dest="archive_command", required=True, parser_class=_Parser)
    p = commands.add_parser("list", help="archived messages (id, date, size, Message-ID)")
    p.add_argument("--archive", required=True, metavar="DB", help="the archive database")
    p.add_argument("--to", metavar="ADDR", help="sent to ADDR (To, Cc or Bcc)")
    p.add_argument("--from", dest="from_addr", metavar="ADDR", help="sent from ADDR")
    p.add_argument("--since", metavar="DATE", help="sent at or after DATE (ISO 8601, UTC)")
    p.add_argument("--until", metavar="DATE", help="sent before DATE (ISO 8601, UTC)")
    p.add_argument(
        "--index-key-file", metavar="F", help="the index key (hex), instead of the archive key"
    )
    _key_options(p)
    p.set_defaults(func=_cmd_archive_list)
    p = commands.add_parser("get", help="decrypt one archived message")
    p.add_argument("message_id", metavar="MESSAGE_ID", help="Message-ID or archive id")
    p.add_argument("--archive", required=True, metavar="DB", help="the archive database")
    _key_options(p)
    p.add_argument("-o", "--output", metavar="OUT", help="output (default: stdout)")
    p.set_defaults(func=_cmd_archive_get)


def _keys_parsers(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser("keys", help="the key directory: import, list, show how to reach someone")
    commands = p.add_subparsers(dest="keys_command", required=True, parser_class=_Parser)
    where = "the key directory database (default: $SECUREMAIL_DIRECTORY)"
    p = commands.add_parser("import", help="store certificates, CRLs and OpenPGP public keys")
    p.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (recursive)")
    p.add_argument("--directory", metavar="DB", help=where)
    p.add_argument("--password-file", metavar="F", help="password of PKCS#12 files")
    p.set_defaults(func=_cmd_keys_import)
    p = commands.add_parser("list", help="every stored record")
    p.add_argument("--directory", metavar="DB", help=where)
    p.set_defaults(func=_cmd_keys_list)
    p = commands.add_parser("show", help="how ADDR can be reached (exit 0 only if it can)")
    p.add_argument("address", metavar="ADDR")
    p.add_argument("--directory", metavar="DB", help=where)
    p.add_argument("--trust", action="append", metavar="CA_PEM", help="require chains to these")
    p.set_defaults(func=_cmd_keys_show)


def _policy_parsers(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser("policy", help="policy rules: what protection a message needs")
    commands = p.add_subparsers(dest="policy_command", required=True, parser_class=_Parser)
    p = commands.add_parser("check", help="print the decision of the rules for a message")
    p.add_argument("--policy", required=True, metavar="FILE", help="the policy file (TOML)")
    p.add_argument(
        "--recipient", action="append", metavar="ADDR", help="envelope recipient (not To/Cc/Bcc)"
    )
    p.add_argument("--json", action="store_true", help="the audit record (JSON), not the text")
    p.add_argument("-i", "--input", metavar="IN", help="the message (default: stdin)")
    p.set_defaults(func=_cmd_policy_check)


# --- the audit log (securemail.governance.audit) ---


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    from .governance.audit import verify as verify_log

    result = verify_log(args.log, expected_head=args.head).raise_for_status()
    print(f"{args.log}: intact, {result.events} events, head {result.head}")
    return EXIT_OK


def _audit_parsers(sub: argparse._SubParsersAction[_Parser]) -> None:
    p = sub.add_parser("audit", help="the tamper-evident audit log")
    commands = p.add_subparsers(dest="audit_command", required=True, parser_class=_Parser)
    p = commands.add_parser("verify", help="check the hash chain (exit 0 only if intact)")
    p.add_argument("log", metavar="LOG", help="the audit log file")
    p.add_argument("--head", metavar="HASH", help="a head hash recorded earlier: must be in LOG")
    p.set_defaults(func=_cmd_audit_verify)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="securemail", description="Message-level email encryption.")
    parser.add_argument("--version", action="version", version="securemail 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("compose", help="build a MIME message")
    p.add_argument("--from", dest="from_addr", required=True, metavar="ADDR")
    p.add_argument("--to", action="append", required=True, metavar="ADDR")
    p.add_argument("--cc", action="append", metavar="ADDR")
    p.add_argument("--subject", metavar="S")
    body = p.add_mutually_exclusive_group()
    body.add_argument("--text", metavar="T")
    body.add_argument("--text-file", metavar="F")
    p.add_argument("--html-file", metavar="F")
    p.add_argument("--attach", action="append", metavar="PATH")
    p.add_argument("-o", "--output", metavar="OUT", help="output (default: stdout)")
    p.set_defaults(func=_cmd_compose)

    p = sub.add_parser("encrypt", help="encrypt a message (sign first with --key/--secret-key)")
    _format(p)
    p.add_argument("--recipient-cert", action="append", metavar="PEM", help="S/MIME recipient")
    p.add_argument("--cipher", choices=[c.value for c in ContentCipher])
    p.add_argument("--key-transport", choices=[k.value for k in KeyTransport])
    p.add_argument("--trust", action="append", metavar="CA_PEM", help="require recipient chains")
    _pwri_option(p, "also let whoever knows the password in F (first line) read it (S/MIME)")
    p.add_argument("--recipient-key", action="append", metavar="ASC", help="PGP recipient key")
    p.add_argument(
        "--recipient", action="append", metavar="ADDR|FPR", help="PGP recipient in --gnupg-home"
    )
    _key_options(p)
    _pgp_options(p, secret=True)
    _io(p)
    p.set_defaults(func=_cmd_encrypt)

    p = sub.add_parser("decrypt", help="decrypt a message")
    _format(p)
    _key_options(p)
    _pgp_options(p, secret=True)
    p.add_argument(
        "--signer-key", action="append", metavar="ASC",
        help="PGP public key of a signer (for a signature made with the encryption)",
    )  # fmt: skip
    p.add_argument("--require-authenticated", action="store_true", help="refuse CBC content")
    _pwri_option(p, "decrypt with the message password in F (first line), S/MIME")
    _io(p)
    p.set_defaults(func=_cmd_decrypt)

    p = sub.add_parser("sign", help="sign a message")
    _format(p)
    _key_options(p)
    _pgp_options(p, secret=True)
    p.add_argument("--opaque", action="store_true", help="opaque signed-data instead of detached")
    p.add_argument("--digest", choices=[d.value for d in DigestAlgorithm])
    _io(p)
    p.set_defaults(func=_cmd_sign)

    p = sub.add_parser("verify", help="verify a signed message (exit 0 only if verified)")
    _format(p)
    p.add_argument("--trust", action="append", metavar="CA_PEM", help="S/MIME trust anchors")
    p.add_argument("--cert", action="append", metavar="PEM", help="extra certificates")
    p.add_argument("--key", action="append", metavar="ASC", help="PGP public key of a signer")
    p.add_argument("--allow-weak", action="store_true", help="accept SHA-1 signatures")
    _pgp_options(p, secret=False)
    _io(p)
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("send", help="send a message over SMTP (exit 0 only if all accepted)")
    p.add_argument("--smtp", required=True, metavar="HOST:PORT", help="server or relay")
    p.add_argument(
        "--tls",
        choices=["required-verify", "required", "opportunistic", "implicit"],
        default="required-verify",
        help="TLS policy (default: required-verify: STARTTLS, certificate and name checked)",
    )
    p.add_argument("--ca", metavar="PEM", help="trust these CA certificates, not the system's")
    p.add_argument("--user", metavar="USER", help="AUTH user name (sent only over TLS)")
    p.add_argument("--password-file", metavar="F", help="AUTH password (first line of the file)")
    p.add_argument("--from", dest="from_addr", metavar="ADDR", help="envelope sender")
    p.add_argument("--to", action="append", metavar="ADDR", help="envelope recipient")
    p.add_argument("--dkim-key", metavar="PEM", help="DKIM private key (RSA-2048+ or Ed25519)")
    p.add_argument("--dkim-selector", metavar="S")
    p.add_argument("--dkim-domain", metavar="D")
    p.add_argument(
        "--require-protection",
        action="store_true",
        help="refuse a message that is not S/MIME or PGP/MIME encrypted",
    )
    p.add_argument("-i", "--input", metavar="IN", help="message to send (default: stdin)")
    rules = p.add_argument_group(
        "governed by rules (the message is sent unprotected to this command, which protects it)"
    )
    rules.add_argument("--policy", metavar="FILE", help="the rules (TOML) that decide protection")
    rules.add_argument(
        "--directory", metavar="DB", help="key directory (default: $SECUREMAIL_DIRECTORY)"
    )
    rules.add_argument("--audit-log", metavar="FILE", help="append decisions and deliveries here")
    rules.add_argument("--archive", metavar="DB", help="archive the message here (encrypted)")
    rules.add_argument("--index-key-file", metavar="F", help="the archive's index key (hex)")
    rules.add_argument("--signer-key", metavar="PATH", help="S/MIME signer: PKCS#12 or PEM key")
    rules.add_argument("--signer-cert", metavar="PEM", help="its certificate, for a PEM key")
    rules.add_argument("--signer-password-file", metavar="F", help="unlocks --signer-key")
    rules.add_argument(
        "--pwri-password-file",
        metavar="F",
        help="message password (first line), for rules that ask for password encryption",
    )
    p.set_defaults(func=_cmd_send)

    _archive_parsers(sub)
    _keys_parsers(sub)
    _policy_parsers(sub)
    _audit_parsers(sub)

    sub.add_parser(
        "bench", help="throughput and memory against openssl and gpg (see securemail bench -h)"
    )
    p = sub.add_parser("demo", help="run the whole flow on throwaway keys")
    p.add_argument(
        "--keep",
        metavar="DIR",
        help="leave the keys, messages, rules, audit log and archive in DIR (default: none kept)",
    )
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["bench"]:
        from .bench import main as bench

        return bench(arguments[1:])
    args = build_parser().parse_args(arguments)
    command: Callable[[argparse.Namespace], int] = args.func
    try:
        return command(args)
    except _UsageError as exc:
        _note(f"{exc} (see securemail {args.command} --help)")
        return EXIT_USAGE
    except SecureMailError as exc:
        _note(f"error: {exc}")
        return EXIT_FAILED
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        _note(f"error: {exc.strerror or type(exc).__name__}{where}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("SECUREMAIL_DEBUG"):
            raise
        _note(f"internal error ({type(exc).__name__}); rerun with SECUREMAIL_DEBUG=1 and report it")
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
