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
)
LAST = "demo complete: compose -> sign -> encrypt -> send -> receive -> decrypt -> verify"
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
