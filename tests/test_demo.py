"""``securemail demo``: the whole flow on throwaway keys, as a new user first runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from securemail.demo import run_demo

STEPS = (
    "1. keys:",
    "2. composed:",
    "3. signed",
    "4. sent over SMTP",
    "5. the server received",
    "6. Bob decrypts:",
    "7. Bob verifies:",
    "8. ",
    "9. rules:",
    "10. invoice to bob@example.org:",
    "11. invoice to carol@partner.example refused, nothing sent:",
    "12. audit log: intact,",
    "13. archived copy of",
)
LAST = (
    "demo complete: compose -> sign -> encrypt -> send -> receive -> decrypt -> verify; "
    "rules -> directory -> audit -> archive"
)
LAUNCHERS = {
    "console-script": [str(Path(sys.executable).parent / "securemail")],
    "python-m": [sys.executable, "-m", "securemail"],
}


def check_steps(lines: list[str]) -> None:
    assert len(lines) == len(STEPS) + 1, lines
    for line, step in zip(lines, STEPS, strict=False):
        assert line.startswith(step), line
    assert "STARTTLS (certificate and host name verified" in lines[3]
    assert lines[3].endswith("bob@example.org delivered")
    assert "aes-256-gcm, authenticated" in lines[5]
    assert "verified, signer alice@example.com" in lines[6]
    assert lines[7].endswith(" intact")
    assert "sent smime-encrypted, card number not on the wire" in lines[9]
    assert "carol@partner.example" in lines[10] and "cards-leave-encrypted" in lines[10]
    assert lines[12].endswith("card number present")
    assert lines[-1] == LAST


@pytest.mark.parametrize("launcher", LAUNCHERS.values(), ids=LAUNCHERS.keys())
def test_demo_command(launcher: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        [*launcher, "demo"], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    check_steps(result.stdout.splitlines())
    assert list(tmp_path.iterdir()) == []  # nothing is written to disk


def test_run_demo_in_process() -> None:
    lines: list[str] = []
    assert run_demo(print_line=lines.append) == 0
    check_steps(lines)
    assert "outer Subject is ..." in lines[2]  # the real Subject travels encrypted
    assert "restored Subject: Q3 figures (confidential)" in lines[7]


def test_demo_keep_leaves_its_files(tmp_path: Path) -> None:
    """``demo --keep DIR``: the keys, the messages, the rules, the audit log and the archive
    stay, and they work with the command line afterwards."""
    kept = tmp_path / "kept"
    launcher = LAUNCHERS["python-m"]
    result = subprocess.run(
        [*launcher, "demo", "--keep", str(kept)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    names = {p.name for p in kept.iterdir()}
    assert {"policy.toml", "audit.jsonl", "archive.sqlite", "keys.sqlite", "bob.key"} <= names
    assert {"sent-to-bob.eml", "governed-to-bob.eml", "archive-escrow.key"} <= names
    audit = subprocess.run(
        [*launcher, "audit", "verify", str(kept / "audit.jsonl")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert audit.returncode == 0 and "intact" in audit.stdout, audit.stderr
    decrypted = subprocess.run(
        [
            *launcher, "decrypt", "--key", str(kept / "bob.key"), "--cert", str(kept / "bob.pem"),
            "-i", str(kept / "governed-to-bob.eml"),
        ],
        capture_output=True,
        check=False,
    )  # fmt: skip
    assert decrypted.returncode == 0, decrypted.stderr
    assert b"4111 1111 1111 1111" in decrypted.stdout
