"""`masksam params`: tunable and frozen parameters of a MaskSAM model, per component (paper Tab. 5)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def params(
    backbone: str = typer.Option("lite_medsam", "--backbone", "-b", help="vit_b, vit_l, vit_h, lite_medsam or tiny."),
    preset: str = typer.Option("acdc", "--preset", "-p", help="acdc, synapse, amos or tiny."),
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", help="Official weights file of the backbone; it is loaded strictly first."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Count tunable and frozen parameters per component of MaskSAM built on BACKBONE with PRESET."""
    from masksam.model.config import preset_config
    from masksam.model.masksam import build_masksam
    from masksam.model.parameters import count_parameters

    config = preset_config(preset, backbone=backbone)
    report = count_parameters(build_masksam(config, checkpoint))
    if as_json:
        print(json.dumps({"backbone": backbone, "preset": preset, **report.to_dict()}))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"MaskSAM parameters: backbone {backbone}, preset {preset}")
    for column in ("component", "tunable", "frozen", "total"):
        table.add_column(column, justify="left" if column == "component" else "right")
    rows = [(name, c.tunable, c.frozen, c.total) for name, c in report.components.items()]
    rows.append(("all", report.tunable, report.frozen, report.total))
    for name, tunable, frozen, total in rows:
        table.add_row(name, f"{tunable / 1e6:.2f}M", f"{frozen / 1e6:.2f}M", f"{total / 1e6:.2f}M")
    Console().print(table)
