"""The `masksam` command: one sub-command per step of the workflow (see README).

Exit codes, as a shell script expects them: 0 done; 1 an error of ours (one line naming the file and the fix);
2 a usage error (missing or unknown option, bad value, unknown command: one line naming it); 130 Ctrl-C (one
line saying what was kept and how to resume).
"""

from __future__ import annotations

import sys

import typer

# typer >= 0.26 runs its own copy of click; these are the exceptions its parser raises.
from typer._click.exceptions import ClickException, NoArgsIsHelpError

from masksam.cli import (
    demo_command,
    evaluate_command,
    forward_command,
    params_command,
    plan_command,
    postprocess_command,
    predict_command,
    show_command,
    train_command,
    weights_command,
)
from masksam.errors import Interrupted, MaskSamError
from masksam.memory import keep_freed_memory

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C

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
app.add_typer(postprocess_command.app, name="postprocess")
app.command("show")(show_command.show)
app.command("demo")(demo_command.demo)


def package_version() -> str:
    """The installed distribution's version (the source tree's ``__version__`` when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("masksam")
    except PackageNotFoundError:
        from masksam import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        print(f"masksam {package_version()}")
        raise typer.Exit()


@app.callback()
def _global_options(
    show_version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Options of `masksam` itself (before the command)."""


def parser_error_line(error: ClickException) -> str:
    """One line for an error of the parser: its message (naming the option, value or command) and where help is."""
    message = " ".join(error.format_message().split())
    message += "" if message.endswith(".") else "."
    context = getattr(error, "ctx", None)
    if context is not None:
        message += f" Try '{context.command_path} --help'."
    return f"masksam: error: {message}"


def main() -> None:
    """Entry point of the console script: every failure is one line on stderr and an exit code (see above)."""
    keep_freed_memory()
    try:
        code = app(standalone_mode=False)  # the exit code when a command or typer raised Exit, else None
    except Interrupted as interrupted:
        if str(interrupted):  # empty on the other ranks of a distributed run: rank 0 speaks for them
            print(f"masksam: interrupted: {interrupted}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except MaskSamError as error:
        print(f"masksam: error: {error}", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    except NoArgsIsHelpError as error:  # `masksam` alone: the help, as click does
        error.show()
        sys.exit(EXIT_USAGE)
    except ClickException as error:  # usage errors (UsageError, exit code 2) and the parser's other errors
        print(parser_error_line(error), file=sys.stderr)
        sys.exit(error.exit_code)
    except typer.Abort:  # end of input at a prompt
        print("masksam: aborted", file=sys.stderr)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:  # Ctrl-C outside typer's own handling (before or after the command ran)
        print("masksam: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    if code == EXIT_INTERRUPTED:  # Ctrl-C in a command without its own report (typer makes it Exit(130))
        print("masksam: interrupted", file=sys.stderr)
    sys.exit(code if isinstance(code, int) else 0)
