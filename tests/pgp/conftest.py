"""Fixtures shared by the OpenPGP tests: the generated key set (slow to make, so once)."""

from __future__ import annotations

import pytest

from pgp.keys import KeySet, shared_keyset


@pytest.fixture(scope="session")
def keyset(gpg_bin: str, tmp_path_factory: pytest.TempPathFactory) -> KeySet:
    return shared_keyset(gpg_bin, lambda: tmp_path_factory.mktemp("pgp-keys"))
