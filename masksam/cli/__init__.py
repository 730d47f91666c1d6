"""The `masksam` command: one sub-command per step of the workflow (see README)."""

from __future__ import annotations

import sys

import typer

from masksam.cli import (
    demo_command,
    evaluate_command,
    forward_command,
    params_command,
    plan_command,
    predict_command,
    show_command,
    train_command,
    weights_command,
)
from masksam.errors import MaskSamError
from masksam.memory import keep_freed_memory

app = typer.Typer(
    name="masksam",
    help="Fully automatic 3D medical image segmentation with a frozen SAM adapted by MaskSAM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("forward")(forward_command.forward)
app.command("params")(params_command.params)
app.command("weights")(weights_command.weights)
app.command("plan")(plan_command.plan)
app.command("train")(train_command.train)
app.command("predict")(predict_command.predict)
app.command("evaluate")(evaluate_command.evaluate)
app.command("show")(show_command.show)
app.command("demo")(demo_command.demo)


def main() -> None:
    """Entry point of the console script: our own errors become one line on stderr and exit code 1."""
    keep_freed_memory()
    try:
        app(standalone_mode=False)
    except MaskSamError as error:
        print(f"masksam: error: {error}", file=sys.stderr)
        sys.exit(1)
    except (typer.Exit, SystemExit) as stop:
        code = getattr(stop, "exit_code", getattr(stop, "code", 0))
        sys.exit(code or 0)
    except Exception as error:  # click usage errors and aborts carry their own exit codes
        import click

        if isinstance(error, click.ClickException):
            error.show()
            sys.exit(error.exit_code)
        if isinstance(error, click.exceptions.Abort):
            sys.exit(130)
        raise
