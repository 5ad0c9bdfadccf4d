"""Writing into folders that others may write to as well (a shared output folder).

Whoever can write there could plant a link where the pipeline writes next: at a part's name, at
its temporary name, or in place of a partition folder, so that a run overwrites or deletes what
the link leads to (a ~/.bashrc, an authorized_keys). Every local write of rows of people goes
through here.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from pathlib import Path

from audience_profiles.errors import NotRetryable


class OutsideFolderError(NotRetryable):
    """A path under a folder leads, through a link, out of it."""


def inside(path: Path, root: Path) -> Path:
    """``path``, once it leads to a place inside ``root`` (links followed, the last part of
    ``path`` need not exist); :class:`OutsideFolderError` naming it otherwise."""
    if not path.resolve().is_relative_to(root.resolve()):
        raise OutsideFolderError(
            f"{path}: leads outside {root} (a link in its way); refused, as a link planted in a "
            "shared folder would have a run write or delete where it leads: remove the link"
        )
    return path


def replace_file(target: Path, content: Path | bytes) -> None:
    """Write ``target`` as a new file (``content``: a file to copy, or bytes), then rename it
    into place: readers see the old file or the new one, never half, and nothing is written
    through a link at ``target`` or at its temporary name (the rename replaces a link itself).

    The temporary name is this writer's own (hidden, random, created with ``O_EXCL``): with one
    fixed name, two writers of one file (the report's index.html, from runs side by side) removed
    or renamed each other's temporary file, and one failed or put a half-written file in place.
    A write that fails names ``target`` in its error: from a full disk it was ``[Errno 28] No
    space left on device`` and no more.
    """
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as out:
            if isinstance(content, bytes):
                out.write(content)
            else:
                with open(content, "rb") as source:
                    shutil.copyfileobj(source, out, 1 << 20)
        tmp.replace(target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(target)) from exc
        raise


_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def safe_name(name: str) -> str:
    """``name`` as part of a file name: as it is when that is safe (letters, digits, ``_ . -``);
    otherwise made safe, with a hash of it so that two names stay apart. A destination named
    ``crm/eu`` put its delivery checkpoint under a folder that does not exist: every attempt
    failed on it after sending, and the next one sent everything again."""
    if not _UNSAFE_NAME.search(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{_UNSAFE_NAME.sub('_', name)[:80]}-{digest}"
