"""Docs are code: every ```python block in docs/*.md runs, and every link and command resolves.

Each page's blocks run in order in one namespace, in a fresh temporary working directory, so
a page reads top to bottom like a session. A block fenced as ```python no-run is shown but not
run (for what needs a network or a service). Shell blocks (```sh) are not run, but each
``securemail`` command in docs/cli.md must be accepted by the real argument parser.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import sys
import types
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from securemail import errors
from securemail.cli import build_parser
from securemail.demo import throwaway_identity
from securemail.policy import Policy

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
GUIDE_PAGES = {"index", "compose", "smime", "policy", "errors", "cli"}

_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


@dataclasses.dataclass(frozen=True)
class Block:
    info: str  # the fence's info string: "python", "python no-run", "sh", ...
    code: str
    line: int  # line number of the first line of code in the page


def blocks(text: str) -> list[Block]:
    return [
        Block(m[1].strip(), m[2], text.count("\n", 0, m.start(2)) + 1)
        for m in _FENCE.finditer(text)
    ]


def run_page(page: Path, text: str) -> None:
    """Run the page's python blocks in order, in one module namespace."""
    module = types.ModuleType(f"docs_{page.stem}")  # registered: dataclasses look it up
    sys.modules[module.__name__] = module
    try:
        for block in blocks(text):
            if block.info == "python":
                # Pad with newlines so a traceback shows the line number within the page.
                source = "\n" * (block.line - 1) + block.code
                code = compile(source, str(page.relative_to(ROOT)), "exec")
                exec(code, module.__dict__)  # noqa: S102
    finally:
        del sys.modules[module.__name__]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_python_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_page(page, page.read_text(encoding="utf-8"))


def test_every_page_exists_and_has_runnable_examples() -> None:
    assert {page.stem for page in PAGES} >= GUIDE_PAGES
    for name in GUIDE_PAGES:
        infos = [block.info for block in blocks((DOCS / f"{name}.md").read_text(encoding="utf-8"))]
        assert "python" in infos, f"{name}.md has no runnable example"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_no_python_block_is_skipped_by_mistake(page: Path) -> None:
    """A fence such as ```py or ```python3 would silently not run."""
    for block in blocks(page.read_text(encoding="utf-8")):
        if block.info.startswith("py"):
            assert block.info in ("python", "python no-run"), f"{page.name}:{block.line}"


def test_policy_page_describes_every_field() -> None:
    text = (DOCS / "policy.md").read_text(encoding="utf-8")
    for field in dataclasses.fields(Policy):
        assert f"| `{field.name}` |" in text, field.name


def test_errors_page_lists_every_error() -> None:
    text = (DOCS / "errors.md").read_text(encoding="utf-8")
    for name in errors.__all__:
        assert re.search(rf"\b{name}\b", text), name


def test_index_links_every_page() -> None:
    linked = set(_LINK.findall((DOCS / "index.md").read_text(encoding="utf-8")))
    assert {f"{page.name}" for page in PAGES if page.name != "index.md"} <= linked


@pytest.mark.parametrize("page", [*PAGES, ROOT / "README.md"], ids=lambda page: page.name)
def test_relative_links_resolve(page: Path) -> None:
    for target in _LINK.findall(page.read_text(encoding="utf-8")):
        if "://" in target or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        assert path.exists(), f"{page.name} links to missing {target}"


def shell_commands(text: str) -> list[list[str]]:
    """Each ``securemail ...`` command in the sh blocks, as words, without redirections."""
    found = []
    for block in blocks(text):
        if block.info != "sh":
            continue
        script = block.code.replace("\\\n", " ")
        for line in script.splitlines():
            for segment in line.split("#")[0].split("|"):
                words = shlex.split(segment)
                if words and words[0] == "securemail":
                    found.append(_without_redirections(words[1:]))
    return found


def _without_redirections(words: list[str]) -> list[str]:
    kept: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in (">", "<", "2>", ">>"):
            skip = True
        elif not word.startswith((">", "<", "2>")):
            kept.append(word)
    return kept


def test_cli_page_commands_parse() -> None:
    commands = shell_commands((DOCS / "cli.md").read_text(encoding="utf-8"))
    assert {words[0] for words in commands} >= {
        "compose",
        "encrypt",
        "decrypt",
        "sign",
        "verify",
        "demo",
    }
    parser = build_parser()
    for words in commands:
        try:
            parser.parse_args(words)
        except SystemExit as exc:  # pragma: no cover - the message says which command
            pytest.fail(f"docs/cli.md: `securemail {shlex.join(words)}` is refused ({exc})")


def test_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's example, given the files it names (alice.p12 with password "secret")."""
    monkeypatch.chdir(tmp_path)
    ca = throwaway_identity("CA")
    alice = throwaway_identity(
        "Alice",
        email="alice@example.com",
        issuer=ca,
        key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )
    bob = throwaway_identity("Bob", email="bob@example.org", issuer=ca)
    Path("alice.p12").write_bytes(
        pkcs12.serialize_key_and_certificates(
            b"alice",
            alice.private_key,  # type: ignore[arg-type]
            alice.certificate,
            None,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    Path("bob.pem").write_bytes(bob.certificate.public_bytes(serialization.Encoding.PEM))
    Path("q3.csv").write_text("id,amount\n1,100\n")
    run_page(ROOT / "README.md", (ROOT / "README.md").read_text(encoding="utf-8"))
    assert Path("out.eml").read_bytes().startswith(b"From: Alice <alice@example.com>\r\n")
