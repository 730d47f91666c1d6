"""Writing a file whole or not at all: a temporary file in the target's folder, then a rename over the target.

The temporary files and folders are created with the permissions ``open()`` and ``mkdir()`` give (0o666 and
0o777 less the umask, and any default ACL of the folder), not ``tempfile``'s private 0o600/0o700: renamed
into place, they must look like any other file the user writes (a shared model folder stays readable).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from masksam.errors import MaskSamError

# Random names tried before giving up (8 hex digits each: a clash is a sign of something else).
_NAME_ATTEMPTS = 100


def default_file_mode() -> int:
    """0o666 less the process's umask: the mode ``open()`` gives a new file (for a file made another way)."""
    return 0o666 & ~_umask()


def _umask() -> int:
    # Linux reports the umask without changing it. os.umask can only read it by setting another, which a
    # thread creating a file at that moment would get: set the strict 0o077 meanwhile, never a looser mask.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def create_temporary_file(path: str | Path, *, suffix: str = ".tmp") -> tuple[int, str]:
    """Creates an empty file ``.NAME.XXXXXXXX{suffix}`` beside ``path``, open for reading and writing.

    Like ``tempfile.mkstemp`` (exclusive creation, no symlink followed), but with the mode a plain ``open()``
    would give ``path``, so the file keeps the umask's permissions when it is renamed over ``path``.

    Args:
        path: The file the temporary one will replace (its folder must exist).
        suffix: The temporary file's ending.

    Returns:
        (open file descriptor, path of the temporary file); the caller closes the one and renames or removes
        the other.

    Raises:
        OSError: The folder is not writable (or ``_NAME_ATTEMPTS`` random names were all taken).
    """
    path = Path(path)
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(_NAME_ATTEMPTS):
        candidate = str(path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            return os.open(candidate, flags, 0o666), candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temporary name for {path.name} after {_NAME_ATTEMPTS} tries")


def create_temporary_folder(path: str | Path) -> Path:
    """Creates an empty folder ``.NAME.XXXXXXXX`` beside ``path`` with the mode ``mkdir()`` gives.

    Raises:
        OSError: The parent folder is not writable (or no random name was free).
    """
    path = Path(path)
    for _ in range(_NAME_ATTEMPTS):
        candidate = path.parent / f".{path.name}.{secrets.token_hex(4)}"
        try:
            candidate.mkdir(0o777)
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temporary name for {path.name} after {_NAME_ATTEMPTS} tries")


def replace_atomically(path: str | Path, write: Callable[[str], None], *, suffix: str = ".tmp") -> Path:
    """Calls ``write(temporary_path)`` in ``path``'s folder, then renames the result over ``path``.

    Args:
        path: The file to write (its folder is created).
        write: Writes the whole content to the path it is given.
        suffix: The temporary file's ending (writers that pick the format by ending need the real one).

    Returns:
        ``path``.

    Raises:
        MaskSamError: The file could not be written (full disk, permissions); a previous file is unchanged and
            no temporary file is left.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = create_temporary_file(path, suffix=suffix)
        os.close(fd)
        write(tmp)
        os.replace(tmp, path)
    except OSError as error:
        raise MaskSamError(
            f"{path}: could not write ({error.strerror or error}); check space and permissions"
        ) from error
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
    return path
