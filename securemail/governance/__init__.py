"""Governance: deciding protection by rule rather than per message, and accounting for it.

- :mod:`.directory`: who can be reached securely, with which keys, and why not;
- :mod:`.rules`: declarative rules (TOML) that decide encrypt / sign / block per message;
- :mod:`.audit`: a hash-chained, append-only log of decisions and deliveries;
- :mod:`.archive`: sent mail stored encrypted to an archive key, found by blind index.

Each piece is usable alone; ``securemail.send(..., policy=, directory=)`` ties them together.
"""
