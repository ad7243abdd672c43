"""Atomic file writes: the one place that decides how vsp-assert puts a file on disk.

Baselines, reports, label files and SAE weights are written through these helpers: the content goes to a
temporary file in the same folder, is flushed to disk, and replaces the target with one ``os.replace``. A
writer killed mid-way leaves the old file intact (and at worst a stray ``.tmp`` file, never a truncated target);
a write that fails with an exception removes its temporary file.

Permissions are those of an ordinary ``open(path, "w")``, not those of :func:`tempfile.mkstemp` (which would make
every file 0600):

- **A new file** gets ``0o666 & ~umask``. The temporary file is created with ``os.open(..., 0o666)``, so the
  kernel applies the process umask (and a folder's default ACL, where there is one) itself; the umask is never
  read or changed here, so there is no window in which another thread sees a temporarily altered umask.
- **Rewriting an existing file** keeps that file's permission bits (``0o644``, ``0o664``, ``0o755`` …), copied
  to the temporary file before the swap. Set-user-ID, set-group-ID and sticky bits are not carried over.
  Owner and group are those of the writing process (changing them would need privileges).
- **A symlink** at the target path is followed: the content replaces the file the link points to (created if the
  link dangles), the temporary file is made next to that file so the swap stays on one file system, and the link
  itself is left as it is, as with ``Path.write_text``. A symlinked baseline stays a symlink.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

_PERMISSION_BITS = 0o777
_NEW_FILE_MODE = 0o666  # reduced by the kernel with the umask, as for open(path, "w")
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    """A new, empty, exclusively created file next to ``name`` in ``folder``: (open descriptor, its path)."""
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, _CREATE_FLAGS, _NEW_FILE_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary file name for {name!r} in {folder}")


def _existing_mode(target: Path) -> int | None:
    """Permission bits of the regular file at ``target`` (``None`` when there is none to keep)."""
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return None
    return stat.S_IMODE(st.st_mode) & _PERMISSION_BITS if stat.S_ISREG(st.st_mode) else None


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Replace the content of ``path`` with ``data`` in one step; returns ``path`` (as given, not resolved)."""
    given = Path(path)
    target = Path(os.path.realpath(given)) if given.is_symlink() else given
    target.parent.mkdir(parents=True, exist_ok=True)
    keep_mode = _existing_mode(target)
    fd, tmp = _create_temp(target.parent, target.name)
    try:
        with os.fdopen(fd, "wb") as handle:
            if keep_mode is not None:
                if hasattr(os, "fchmod"):
                    os.fchmod(handle.fileno(), keep_mode)
                else:  # pragma: no cover - Windows before Python 3.13
                    os.chmod(tmp, keep_mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return given


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write_bytes` of ``text`` encoded as UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"))
