"""Keys generated once into a file in local mode (pseudonym key, model signing key): one implementation of
"create it atomically with mode 0600 if missing, then read it back"."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def read_or_create_key(path: Path) -> tuple[str, bool]:
    """``(key, created)``: the key in ``path``, generated (64 hex characters) when the file does not exist.

    ``O_EXCL`` makes two processes racing on a first run agree on one key; an empty file is an error (a
    truncated key would silently change every pseudonym or signature), and a file others can read is
    tightened back to 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    created = False
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
        created = True
    value = path.read_text().strip()
    if not value:
        raise ValueError(f"key file {path} is empty; delete it to generate a new key")
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o600)
    return value, created
