"""Shared fixtures: where the interop corpus lives, and required external tools.

Interop material and tools are *required*: when they are missing the tests fail with a
message saying what to install or where to put the corpus, instead of skipping and looking
green. Set ``SECUREMAIL_INTEROP_DIR`` to point at the corpus if it is not at
``../shared/interop`` relative to the checkout.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def find_interop_dir() -> Path | None:
    env = os.environ.get("SECUREMAIL_INTEROP_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(ROOT.parent / "shared" / "interop")
    for candidate in candidates:
        if (candidate / "README.md").is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def interop_dir() -> Path:
    found = find_interop_dir()
    if found is None:
        pytest.fail(
            "INTEROP CORPUS MISSING: expected ../shared/interop next to the checkout or "
            "$SECUREMAIL_INTEROP_DIR; interop tests cannot run without it",
            pytrace=False,
        )
    return found


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"REQUIRED TOOL MISSING: {name} is not on PATH (Debian: apt-get install "
            f"{ {'gpgsm': 'gpgsm', 'gpg': 'gnupg', 'openssl': 'openssl'}.get(name, name) })",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def openssl_bin() -> str:
    return require_tool("openssl")


@pytest.fixture(scope="session")
def gpgsm_bin() -> str:
    return require_tool("gpgsm")


@pytest.fixture(scope="session")
def gpg_bin() -> str:
    return require_tool("gpg")
