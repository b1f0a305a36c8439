"""``securemail bench``: throughput and peak memory against the peer tools, in one run.

Every measurement is a separate process (securemail's included), timed by wall clock and
measured for peak RSS with ``wait4``. Peers and securemail run alternately on the same
input, several times; the median throughput and the largest peak RSS are reported with the
ratio securemail/peer. Throughput is always attachment bytes per second, whatever the
operation writes, so a faster number means the same file protected sooner.

The working directory should be a RAM disk (``/dev/shm``) unless the disk itself is what
is to be measured: on a slow disk every tool only waits for it.
"""

from __future__ import annotations

import argparse
import compileall
import dataclasses
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import TypedDict

__all__ = ["Case", "Measurement", "main", "run_benchmark"]

MiB = 1024 * 1024
_RAM_DISK = "/dev/shm"  # noqa: S108 (a RAM disk, so that tools are measured, not the disk)


@dataclasses.dataclass(frozen=True)
class Measurement:
    seconds: float
    peak_rss: int
    """Bytes."""


@dataclasses.dataclass(frozen=True)
class Case:
    """One operation, done by securemail and by its peer tool on the same input."""

    name: str
    peer_name: str
    ours: list[str]
    peer: list[str]
    target: str
    """What the issue asks of the ratio, for the report."""
    prepare: Callable[[], None] | None = None
    """Run once, untimed, before the repetitions (makes the message a decrypt case reads,
    when outputs are discarded)."""
    peer_input: Callable[[], None] | None = None
    """Run once, untimed, before the repetitions when the peer runs: makes an input only
    the peer reads."""
    scratch: tuple[Path, ...] = ()
    """Outputs no later case reads: deleted after each run, so that a RAM disk holds the
    input, the messages the decrypt cases read and one output at a time (at 1 GiB the
    outputs of every case together fill a 24 GiB machine next to ``openssl cms -decrypt``,
    which holds about three times its input)."""
    owned: tuple[Path, ...] = ()
    """Directories the case made outside the working directory, removed at the end."""
    consumed: tuple[Path, ...] = ()
    """Inputs no later case reads (a message a decrypt case reads): deleted after the
    case's runs in each repetition (the encrypt case writes it again in the next)."""


def _gnu_time() -> str | None:
    """GNU time, if installed: it forks a fresh process for the command, so the peak RSS
    it reports is the command's own."""
    path = shutil.which("time")
    if path is None:
        return None
    probe = subprocess.run([path, "-f", "%M", "true"], capture_output=True, text=True, check=False)
    return path if probe.returncode == 0 and probe.stderr.strip().isdigit() else None


_TIME = _gnu_time()


def _run(command: Sequence[str], env: dict[str, str] | None = None) -> Measurement:
    """Wall time and peak RSS of ``command``.

    The peak RSS comes from GNU time when it is installed. ``wait4`` alone would report
    at least this process's own RSS: a child started with vfork/exec inherits the peak of
    the memory it was spawned from, which would hide a small tool's real figure.
    """
    with tempfile.NamedTemporaryFile("r", prefix="rss-") as rss:
        full = [_TIME, "-f", "%M", "-o", rss.name, *command] if _TIME else list(command)
        start = time.perf_counter()
        process = subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        stderr = process.stderr.read() if process.stderr else b""
        if process.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command[:4])}... failed ({process.returncode}): {stderr[-500:]!r}"
            )
        peak_kib = int(rss.read().split()[-1]) if _TIME else usage.ru_maxrss
    return Measurement(seconds=seconds, peak_rss=peak_kib * 1024)


def _make_input(path: Path, size: int) -> None:
    """Incompressible data, written in chunks (never held whole in memory)."""
    block = os.urandom(4 * MiB)
    with path.open("wb") as out:
        remaining = size
        while remaining:
            piece = block[: min(remaining, len(block))]
            out.write(piece)
            remaining -= len(piece)
            block = hashlib.sha512(block[:64]).digest() * (len(block) // 64)


def _worker(argv: Sequence[str]) -> int:
    """One securemail operation, in its own process so that its memory is its own."""
    from .compose import MessageBuilder
    from .keys import Recipient, load_certificate, load_identity
    from .policy import DEFAULT
    from .smime import MODERN
    from .stream import smime as stream_smime
    from .stream.mime import StreamedAttachment
    from .stream.threads import BackgroundSink, read_ahead

    def bench_message(source: str, to: str) -> tuple[EmailMessage, StreamedAttachment]:
        """The message every case sends: a line of text, and the file attached."""
        message = (
            MessageBuilder()
            .from_addr("alice@example.com")
            .to(to)
            .subject("benchmark")
            .text("The file is attached.")
            .build()
        )
        return message, StreamedAttachment(source, content_type="application/octet-stream")

    operation, *paths = argv
    binary = operation.endswith("-binary")
    operation = operation.removesuffix("-binary")
    policy = DEFAULT.clone(max_stream_size=1 << 45, binary_attachments=binary)
    if operation in ("smime-encrypt-gcm", "smime-encrypt-cbc", "smime-sign"):
        source, output, cert, key = paths
        message, attachment = bench_message(source, "bob@example.com")
        # The encrypting stack writes from a worker thread of its own (its base64 layer):
        # a writer thread more would only take turns at the GIL from it.
        with open(output, "wb", buffering=0) as out:
            if operation == "smime-sign":
                identity = load_identity(key, cert)
                stream_smime.sign(out, message, identity, attachments=[attachment], policy=policy)
            else:
                # Only the certificate, as openssl reads only it: loading (and checking) the
                # private key would add 40 ms that the peer does not pay.
                gcm = operation.endswith("gcm")
                recipient = Recipient(load_certificate(cert), capabilities=MODERN if gcm else None)
                stream_smime.encrypt(
                    out, message, [recipient], attachments=[attachment], policy=policy
                )
        return 0
    if operation == "compose":
        from .stream.mime import write_message

        source, output = paths
        message, attachment = bench_message(source, "bob@example.com")
        with open(output, "wb") as composed:
            write_message(composed, message, [attachment])
        return 0
    if operation == "smime-decrypt":
        source, output, cert, key = paths
        identity = load_identity(key, cert)
        with (
            open(source, "rb", buffering=0) as raw_in,
            open(output, "wb", buffering=0) as raw_out,
            BackgroundSink(raw_out) as sink,
        ):
            stream_smime.decrypt_stream(
                read_ahead(raw_in),
                sink,
                identity,
                policy=policy,
                spool_dir=str(Path(source).parent),
            )
        return 0
    if operation == "pgp-encrypt":
        from .pgp.gpg import GnuPG
        from .stream import pgp as stream_pgp

        source, output, home, address = paths
        message, attachment = bench_message(source, address)
        with (
            GnuPG(home) as engine,
            open(output, "wb", buffering=0) as raw,
            BackgroundSink(raw) as sink,
        ):
            stream_pgp.encrypt(sink, message, attachments=[attachment], gnupg=engine, policy=policy)
        return 0
    if operation == "pgp-decrypt":
        from .pgp.gpg import GnuPG
        from .stream import pgp as stream_pgp

        source, output, home = paths
        with (
            GnuPG(home) as engine,
            open(source, "rb", buffering=0) as raw_in,
            open(output, "wb", buffering=0) as raw_out,
            BackgroundSink(raw_out) as sink,
        ):
            stream_pgp.decrypt_stream(
                read_ahead(raw_in),
                sink,
                gnupg=engine,
                policy=policy,
                spool_dir=str(Path(source).parent),
            )
        return 0
    raise SystemExit(f"unknown benchmark operation {operation}")


def _smime_cases(work: Path, data: Path, discard: bool = False) -> list[Case]:
    """S/MIME: securemail's streaming writer/reader against ``openssl cms``."""
    key, cert = work / "bench.key", work / "bench.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
            "-out", str(cert), "-subj", "/CN=Bench/emailAddress=bob@example.com", "-days", "2",
            "-addext", "keyUsage=digitalSignature,keyEncipherment",
            "-addext", "extendedKeyUsage=emailProtection",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    me = [sys.executable, "-m", "securemail.bench", "--worker"]
    ours_gcm, peer_gcm = work / "ours-gcm.eml", work / "openssl-gcm.eml"
    ours_bin = work / "ours-gcm-binary.eml"
    ours_cbc, peer_cbc = work / "ours-cbc.eml", work / "openssl-cbc.eml"
    composed = work / "composed.eml"  # what our default (7-bit) encryption encrypts
    openssl_encrypt = ["openssl", "cms", "-encrypt", "-stream", "-binary", "-in", str(data)]
    keys = [str(cert), str(key)]
    out, kept, made = _outputs(discard)
    openssl_sign = ["openssl", "cms", "-sign", "-stream", "-binary", "-in", str(data)]
    openssl_sign += ["-signer", str(cert), "-inkey", str(key)]

    def openssl_decrypt(message: Path, output: str) -> list[str]:
        return [
            "openssl", "cms", "-decrypt", "-binary", "-in", str(message), "-recip", str(cert),
            "-inkey", str(key), "-out", output,
        ]  # fmt: skip

    return [
        Case(
            "S/MIME encrypt AES-256-GCM",
            "openssl cms -encrypt -stream -aes-256-gcm",
            [*me, "smime-encrypt-gcm", str(data), out(ours_gcm), *keys],
            [*openssl_encrypt, "-aes-256-gcm", "-out", out(peer_gcm), str(cert)],
            ">= 10x",
            scratch=kept(peer_gcm),
        ),
        Case(
            "S/MIME encrypt GCM, binary inside",
            "openssl cms -encrypt -stream -aes-256-gcm",
            [*me, "smime-encrypt-gcm-binary", str(data), out(ours_bin), *keys],
            [*openssl_encrypt, "-aes-256-gcm", "-out", out(peer_gcm), str(cert)],
            ">= 10x",
            scratch=kept(peer_gcm),
        ),
        Case(
            "S/MIME encrypt GCM, openssl given the MIME message",
            "openssl cms -encrypt -stream -aes-256-gcm (text mode) on the composed message",
            [*me, "smime-encrypt-gcm", str(data), out(ours_gcm), *keys],
            [
                "openssl",
                "cms",
                "-encrypt",
                "-stream",
                "-in",
                str(composed),
                "-aes-256-gcm",
                "-out",
                out(peer_gcm),
                str(cert),
            ],
            "(informative: the same job for both)",
            peer_input=lambda: _prepare([*me, "compose", str(data), str(composed)]),
            scratch=kept(peer_gcm),
        ),
        Case(
            "S/MIME encrypt AES-256-CBC",
            "openssl cms -encrypt -stream -aes-256-cbc",
            [*me, "smime-encrypt-cbc", str(data), out(ours_cbc), *keys],
            [*openssl_encrypt, "-aes-256-cbc", "-out", out(peer_cbc), str(cert)],
            "(informative)",
            scratch=kept(ours_cbc, peer_cbc),
        ),
        Case(
            "S/MIME decrypt AES-256-GCM",
            "openssl cms -decrypt",
            [*me, "smime-decrypt", str(ours_gcm), out(work / "ours-gcm.out"), *keys],
            openssl_decrypt(ours_gcm, out(work / "openssl-gcm.out")),
            ">= 5x",
            scratch=kept(work / "ours-gcm.out", work / "openssl-gcm.out"),
            **made([*me, "smime-encrypt-gcm", str(data), str(ours_gcm), *keys], ours_gcm),
        ),
        Case(
            "S/MIME decrypt GCM, binary inside",
            "openssl cms -decrypt",
            [*me, "smime-decrypt", str(ours_bin), out(work / "ours-bin.out"), *keys],
            openssl_decrypt(ours_bin, out(work / "openssl-bin.out")),
            ">= 5x",
            scratch=kept(work / "ours-bin.out", work / "openssl-bin.out"),
            **made([*me, "smime-encrypt-gcm-binary", str(data), str(ours_bin), *keys], ours_bin),
        ),
        Case(
            "S/MIME sign (detached)",
            "openssl cms -sign -stream",
            [*me, "smime-sign", str(data), out(work / "ours-signed.eml"), *keys],
            [*openssl_sign, "-out", out(work / "openssl-signed.eml")],
            ">= half of our encrypt throughput",
            scratch=kept(work / "ours-signed.eml", work / "openssl-signed.eml"),
        ),
    ]


_PGP_RECIPIENT = "bob@example.com"


def _pgp_cases(work: Path, data: Path, discard: bool = False) -> list[Case]:
    """PGP/MIME: securemail's native OpenPGP writer/reader against the gpg binary, both
    using one GnuPG home with a Curve25519 key (what gpg 2.2 makes by default)."""
    # The home's sockets need a short path (108 bytes at most, with the socket's name), so
    # it lives in the system's temporary directory, not under ``--dir``.
    home = Path(tempfile.mkdtemp(prefix="smb-gpg-"))
    gpg = ["gpg", "--homedir", str(home), "--batch", "--yes", "--trust-model", "always"]
    generated = subprocess.run(
        [*gpg, "--passphrase", "", "--quick-gen-key", _PGP_RECIPIENT, "future-default",
         "default", "2d"],
        capture_output=True,
        check=False,
    )  # fmt: skip
    if generated.returncode != 0:
        _stop_agent(home)
        shutil.rmtree(home, ignore_errors=True)
        raise RuntimeError(f"gpg could not make the benchmark key: {generated.stderr[-300:]!r}")
    me = [sys.executable, "-m", "securemail.bench", "--worker"]
    ours, ours_bin, peer = work / "ours-pgp.eml", work / "ours-pgp-binary.eml", work / "gpg.asc"
    out, kept, made = _outputs(discard)
    gpg_encrypt = [*gpg, "-z", "0", "--armor", "-r", _PGP_RECIPIENT, "-o", out(peer)]
    encrypt = [*me, "pgp-encrypt", str(data)]
    encrypt_binary = [*me, "pgp-encrypt-binary", str(data)]
    return [
        Case(
            "PGP/MIME encrypt",
            "gpg -z 0 --armor --encrypt",
            [*encrypt, out(ours), str(home), _PGP_RECIPIENT],
            [*gpg_encrypt, "--encrypt", str(data)],
            ">= 4x",
            scratch=kept(peer),
            owned=(home,),
        ),
        Case(
            "PGP/MIME encrypt, binary inside",
            "gpg -z 0 --armor --encrypt",
            [*encrypt_binary, out(ours_bin), str(home), _PGP_RECIPIENT],
            [*gpg_encrypt, "--encrypt", str(data)],
            ">= 4x",
            scratch=kept(peer),
        ),
        Case(
            "PGP/MIME decrypt",
            "gpg --decrypt",
            [*me, "pgp-decrypt", str(ours), out(work / "ours-pgp.out"), str(home)],
            # gpg finds the armored message inside the MIME message: the same input file.
            [*gpg, "-o", out(work / "gpg.out"), "--decrypt", str(ours)],
            ">= 1x",
            scratch=kept(work / "ours-pgp.out", work / "gpg.out"),
            **made([*encrypt, str(ours), str(home), _PGP_RECIPIENT], ours),
        ),
        Case(
            "PGP/MIME decrypt, binary inside",
            "gpg --decrypt",
            [*me, "pgp-decrypt", str(ours_bin), out(work / "ours-pgp.out"), str(home)],
            [*gpg, "-o", out(work / "gpg.out"), "--decrypt", str(ours_bin)],
            ">= 1x",
            scratch=kept(work / "ours-pgp.out", work / "gpg.out"),
            **made([*encrypt_binary, str(ours_bin), str(home), _PGP_RECIPIENT], ours_bin),
        ),
    ]


def _all_cases(work: Path, data: Path, discard: bool = False) -> list[Case]:
    return [*_smime_cases(work, data, discard), *_pgp_cases(work, data, discard)]


class _Made(TypedDict, total=False):
    prepare: Callable[[], None]
    consumed: tuple[Path, ...]


def _outputs(
    discard: bool,
) -> tuple[
    Callable[[Path], str],
    Callable[..., tuple[Path, ...]],
    Callable[[list[str], Path], _Made],
]:
    """How a set of cases treats outputs. Kept (``--sink file``): each tool writes its file
    on the working directory's disk, deleted after the run, and a decrypt case reads the
    message its encrypt case wrote (deleted after it, written again in the next
    repetition). Discarded (``--sink null``, the default): every tool writes to
    /dev/null, and the messages the decrypt cases read are made once beforehand, untimed.

    Returns ``out`` (the output argument for a path), ``kept`` (the paths to delete after a
    run) and ``made`` (a decrypt case's ``prepare``/``consumed`` for its input message)."""

    def out(path: Path) -> str:
        return os.devnull if discard else str(path)

    def kept(*paths: Path) -> tuple[Path, ...]:
        return () if discard else paths  # never /dev/null: it is not ours to delete

    def made(command: list[str], message: Path) -> _Made:
        if discard:
            return {"prepare": lambda: _prepare(command)}
        return {"consumed": (message,)}

    return out, kept, made


def _prepare(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"preparing a message failed: {done.stderr[-500:]!r}")


@dataclasses.dataclass(frozen=True)
class Result:
    case: str
    peer: str
    size: int
    ours: list[Measurement]
    peers: list[Measurement]
    target: str

    def rate(self, runs: list[Measurement]) -> float:
        return self.size / statistics.median(m.seconds for m in runs) / MiB

    @property
    def ours_rate(self) -> float:
        return self.rate(self.ours)

    @property
    def peer_rate(self) -> float | None:
        return self.rate(self.peers) if self.peers else None

    def as_dict(self) -> dict[str, object]:
        peer = self.peer_rate
        return {
            "case": self.case,
            "peer": self.peer,
            "size_bytes": self.size,
            "securemail_mib_s": round(self.ours_rate, 1),
            "peer_mib_s": None if peer is None else round(peer, 1),
            "ratio": None if peer is None else round(self.ours_rate / peer, 2),
            "securemail_peak_rss_mib": round(max(m.peak_rss for m in self.ours) / MiB, 1),
            "peer_peak_rss_mib": (
                round(max(m.peak_rss for m in self.peers) / MiB, 1) if self.peers else None
            ),
            "securemail_seconds": [round(m.seconds, 3) for m in self.ours],
            "peer_seconds": [round(m.seconds, 3) for m in self.peers],
            "target": self.target,
        }


def run_benchmark(
    size: int,
    work: Path,
    repeat: int,
    cases: Callable[[Path, Path, bool], list[Case]],
    *,
    peers: bool = True,
    discard: bool = True,
) -> list[Result]:
    """Run every case ``repeat`` times; without ``peers`` only securemail's side (for the
    memory runs at sizes where a peer that is not streaming would need more RAM than the
    machine has: ``openssl cms -decrypt`` holds about three times its input). With
    ``discard`` every tool writes to /dev/null (see :func:`_outputs` for why)."""
    # Bytecode compiled once, as an installed package has it: otherwise, where writing it is
    # switched off (PYTHONDONTWRITEBYTECODE), every securemail run would compile its sources.
    compileall.compile_dir(Path(__file__).parent, quiet=2)
    data = work / "attachment.bin"
    _make_input(data, size)
    chosen = cases(work, data, discard)
    try:
        for case in chosen:
            if case.prepare is not None:
                case.prepare()
            if peers and case.peer_input is not None:
                case.peer_input()
        return _measure(chosen, size, repeat, peers=peers)
    finally:
        for case in chosen:
            for directory in case.owned:
                _stop_agent(directory)
                shutil.rmtree(directory, ignore_errors=True)


def _stop_agent(home: Path) -> None:
    gpgconf = shutil.which("gpgconf")
    if gpgconf is not None:
        subprocess.run(
            [gpgconf, "--homedir", str(home), "--kill", "all"], capture_output=True, check=False
        )


def _measure(chosen: list[Case], size: int, repeat: int, *, peers: bool) -> list[Result]:
    runs: dict[str, tuple[list[Measurement], list[Measurement]]] = {
        c.name: ([], []) for c in chosen
    }
    for _ in range(repeat):
        for case in chosen:
            # Alternate peer and securemail, so a slow moment of the machine hits both.
            if peers:
                runs[case.name][1].append(_run(case.peer))
                _remove(case.scratch)
            runs[case.name][0].append(_run(case.ours))
            _remove(case.scratch)
            _remove(case.consumed)
    return [
        Result(c.name, c.peer_name, size, runs[c.name][0], runs[c.name][1], c.target)
        for c in chosen
    ]


def _remove(paths: Sequence[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _machine() -> dict[str, object]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import cryptography
    from cryptography.hazmat.backends.openssl import backend

    openssl = subprocess.run(
        ["openssl", "version"], capture_output=True, text=True, check=False
    ).stdout
    gpg = ""
    if shutil.which("gpg"):  # (an S/MIME-only run needs no gpg)
        version = subprocess.run(["gpg", "--version"], capture_output=True, text=True, check=False)
        gpg = version.stdout
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "openssl": openssl.strip(),
        # securemail's own cipher calls go through the OpenSSL that cryptography bundles
        "cryptography": f"{cryptography.__version__} ({backend.openssl_version_text()})",
        "gpg": gpg.splitlines()[0] if gpg else "",
        "platform": platform.platform(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _report(results: list[Result]) -> str:
    lines = [
        f"{'operation':<30} {'securemail':>12} {'peer':>12} {'ratio':>7} "
        f"{'RSS ours':>9} {'RSS peer':>9}  target / peer",
    ]
    for r in results:
        d = {k: "-" if v is None else v for k, v in r.as_dict().items()}
        lines.append(
            f"{r.case:<30} {d['securemail_mib_s']:>8} MiB/s {d['peer_mib_s']:>6} MiB/s "
            f"{d['ratio']:>6}x {d['securemail_peak_rss_mib']:>5} MiB "
            f"{d['peer_peak_rss_mib']:>5} MiB  {r.target} vs {r.peer}"
        )
    return "\n".join(lines)


def _chart(results: list[Result], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    labels = [r.case for r in results]
    positions = range(len(results))
    figure, axis = plt.subplots(figsize=(10, 0.8 + 0.7 * len(results)))
    axis.barh([p + 0.2 for p in positions], [r.ours_rate for r in results], 0.4, label="securemail")
    axis.barh(
        [p - 0.2 for p in positions], [r.peer_rate or 0 for r in results], 0.4, label="peer tool"
    )
    axis.set_yticks(list(positions), labels)
    axis.set_xlabel("attachment throughput, MiB/s (higher is better)")
    for p, r in zip(positions, results, strict=True):
        if r.peer_rate:
            axis.text(r.ours_rate, p + 0.2, f" {r.ours_rate / r.peer_rate:.1f}x", va="center")
    axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return True


def _parse_size(text: str) -> int:
    """A size such as ``4096``, ``256K``, ``1.5M`` or ``1G`` (binary units), above zero."""
    units = {"K": 1024, "M": MiB, "G": 1024 * MiB}
    try:
        if text and text[-1].upper() in units:
            size = int(float(text[:-1]) * units[text[-1].upper()])
        else:
            size = int(text)
    except ValueError:
        size = 0
    if size <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 4096, 256M or 1G")
    return size


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


_CASES: dict[str, Callable[[Path, Path, bool], list[Case]]] = {
    "all": _all_cases,
    "smime": _smime_cases,
    "pgp": _pgp_cases,
}


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["--worker"]:
        return _worker(args_list[1:])
    from .cli import _Parser  # usage errors as one line, like every other command

    parser = _Parser(prog="securemail bench")
    parser.add_argument(
        "--size", type=_parse_size, default="1G", help="attachment size (e.g. 256M, 1G)"
    )
    parser.add_argument("--repeat", type=_positive, default=3)
    parser.add_argument("--dir", default=_RAM_DISK if Path(_RAM_DISK).is_dir() else None)
    parser.add_argument("--only", choices=sorted(_CASES), default="all", help="which formats")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--png", type=Path, help="write a chart here (needs matplotlib)")
    parser.add_argument(
        "--no-peers", action="store_true", help="securemail only (memory runs at large sizes)"
    )
    parser.add_argument(
        "--sink",
        choices=("null", "file"),
        default="null",
        help="where every tool writes: /dev/null (the default: the tools are measured) or "
        "files in --dir (the machine's page allocation too)",
    )
    args = parser.parse_args(args_list)
    size: int = args.size
    try:
        work = Path(tempfile.mkdtemp(prefix="securemail-bench-", dir=args.dir))
    except OSError as exc:
        print(f"securemail bench: cannot work in --dir {args.dir}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        results = run_benchmark(
            size,
            work,
            args.repeat,
            _CASES[args.only],
            peers=not args.no_peers,
            discard=args.sink == "null",
        )
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        print(f"securemail bench: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(_report(results))
    document = {
        "machine": _machine(),
        "size_bytes": size,
        "sink": "/dev/null" if args.sink == "null" else f"files in {args.dir}",
        "results": [r.as_dict() for r in results],
    }
    if args.json:
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    if args.png and not _chart(results, args.png):
        print("no chart: install matplotlib (pip install 'securemail[bench]')", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
