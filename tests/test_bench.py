"""``securemail bench`` runs end to end at a tiny size: every case, securemail's side and
the peer's, exits cleanly (each run is checked), and the report holds every case. This
checks that the benchmark works, not how fast anything is: speed is measured by running
the benchmark itself (docs/performance.md), never in a test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXPECTED = [
    "S/MIME encrypt AES-256-GCM",
    "S/MIME encrypt GCM, binary inside",
    "S/MIME encrypt GCM, openssl given the MIME message",
    "S/MIME encrypt AES-256-CBC",
    "S/MIME decrypt AES-256-GCM",
    "S/MIME decrypt GCM, binary inside",
    "S/MIME sign (detached)",
    "PGP/MIME encrypt",
    "PGP/MIME encrypt, binary inside",
    "PGP/MIME decrypt",
    "PGP/MIME decrypt, binary inside",
]


@pytest.mark.parametrize("sink", ["null", "file"])
def test_bench_runs_every_case_against_its_peer(
    tmp_path: Path, openssl_bin: str, gpg_bin: str, sink: str
) -> None:
    report = tmp_path / "bench.json"
    command = [sys.executable, "-m", "securemail.bench", "--size", "200K", "--repeat", "2"]
    command += ["--dir", str(tmp_path), "--json", str(report), "--sink", sink]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads(report.read_text())
    assert document["sink"] == ("/dev/null" if sink == "null" else f"files in {tmp_path}")
    results = document["results"]
    assert [r["case"] for r in results] == EXPECTED
    for row in results:
        assert row["securemail_mib_s"] > 0 and row["peer_mib_s"] > 0, row
        assert (
            row["ratio"] == round(row["securemail_mib_s"] / row["peer_mib_s"], 2)
            or abs(row["ratio"] - row["securemail_mib_s"] / row["peer_mib_s"]) < 0.02
        ), row
        assert 0 < row["securemail_peak_rss_mib"] < 200, row
    assert "S/MIME decrypt GCM, binary inside" in done.stdout
    # Nothing is left behind in the working directory but the report; /dev/null is intact.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json"]
    assert Path(os.devnull).is_char_device()


@pytest.mark.parametrize(
    ("arguments", "message", "status"),
    [
        (["--size", "abc"], "'abc' is not a size", 2),
        (["--size", "0"], "'0' is not a size", 2),
        (["--repeat", "0"], "'0' is not a whole number", 2),
        (["--dir", "/nonexistent/bench", "--size", "1K"], "cannot work in --dir", 1),
    ],
)
def test_bad_arguments_give_one_line(arguments: list[str], message: str, status: int) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "securemail", "bench", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == status
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
