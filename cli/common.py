"""What every command shares: the group class that maps lymph errors to exit statuses and prints
warnings as one line, and the one --device and --precision options."""

from __future__ import annotations

import warnings

import click


def one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int,
    line: str | None = None,
) -> str:
    """A warning as a user reads it: one line, no source file or code line (tracebacks are for
    bugs; a warning is lymph telling the user something about their data or settings)."""
    return f"warning: {message}\n"


class LymphGroup(click.Group):
    """One exit convention for every command, never a traceback for a lymph error (a bug still
    shows one):

    - a bad setting (``ConfigError``, raised by a config's ``__post_init__``) is a usage error:
      ``Error: <message>`` and exit status 2, as click gives for a bad option;
    - every other lymph error (bad slide, store, checkpoint, output) is ``Error: <message>`` and
      exit status 1;
    - a warning prints as ``warning: <message>``, one line (`one_line_warning`).
    """

    def invoke(self, ctx: click.Context) -> object:
        from lymph.data.errors import ConfigError, LymphError

        warnings.formatwarning = one_line_warning
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from exc
        except LymphError as exc:
            raise click.ClickException(str(exc)) from exc


# The one --device option of train, eval patches, study and predict.
device_option = click.option(
    "--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto",
    show_default=True, help="auto: CUDA, then MPS, then CPU.",
)
# The one --precision option of train, eval patches, study and predict (model/precision.py).
precision_option = click.option(
    "--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto",
    show_default=True, help="auto: bf16 autocast on CUDA and on CPUs with AMX-BF16 (measured "
    "faster there), fp32 elsewhere; the one used is recorded in the outputs.",
)


def echo_files(files: dict[str, object]) -> None:
    """One `name: path` line per file a command wrote."""
    for name, path in files.items():
        click.echo(f"{name}: {path}")
