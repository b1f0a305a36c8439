"""Attachment throughput and peak memory: securemail against ``openssl cms`` and ``gpg``.

The same input, the tools alternating, several repetitions, the median; the figures in
docs/performance.md come from::

    python benchmarks/attachments.py --size 1G --repeat 3 \\
        --json benchmarks/results-1g.json --png docs/performance.png
    python benchmarks/attachments.py --size 1G --repeat 3 --sink file \\
        --json benchmarks/results-1g-files.json
    python benchmarks/attachments.py --size 4G --repeat 1 --no-peers --dir /var/tmp \\
        --json benchmarks/results-4g-rss.json

(every tool writes to /dev/null unless ``--sink file``; the third: peak RSS at 4 GiB,
securemail only, since ``openssl cms -decrypt`` would need about 14 GiB of RAM there).
Everything is in :mod:`securemail.bench`, also reachable as ``securemail bench``; this
script only pins the invocation next to its results.
"""

from __future__ import annotations

import sys

from securemail.bench import main

if __name__ == "__main__":
    sys.exit(main())
