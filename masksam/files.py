"""Writing a file whole or not at all: a temporary file in the target's folder, then a rename over the target."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from masksam.errors import MaskSamError


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
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
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
