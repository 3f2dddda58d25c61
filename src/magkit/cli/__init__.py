"""The ``magkit`` command line. Thin: parse, call the library, print with rich.

This module holds what every command shares: the typer :data:`app`, the console objects, the shared options,
the error wrapper :func:`friendly` and the input and output-path checks. Each command group lives in its own
module (:mod:`.data`, :mod:`.fit`, :mod:`.explain`, :mod:`.demo`, :mod:`.condense`, :mod:`.bench`,
:mod:`.search`), which
registers its commands on :data:`app` when imported at the end of this file.

torch and the library are imported inside the commands so that ``magkit --help`` answers at once. Every
output path is checked before any work (:data:`OUTPUT_OPTIONS`), and every user mistake ends in one line
on stderr with exit code 2.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    name="magkit",
    help="Learning on multimodal attributed graphs: datasets, baselines, GraphMNL and SR-GM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
bench_app = typer.Typer(help="Run benchmark suites and render their tables.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

# piped or captured output is not cut at 80 columns (tables and paths stay on one line); $COLUMNS still wins
_PIPE_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 160
console = Console(width=_PIPE_WIDTH)
err_console = Console(stderr=True, width=_PIPE_WIDTH)

RootOpt = Annotated[Path | None, typer.Option("--root", help="Data folder to search first (else $MAGKIT_DATA, ./data, ../shared/data).")]
SplitOpt = Annotated[str | None, typer.Option("--split", help="Split spec: magb | rate:0.05 | kshot:20 | random:0.6/0.2 (default: the dataset's own).")]


# command function -> {parameter: (option as typed, is a folder)}: checked by `friendly` before the command runs
OUTPUT_OPTIONS: dict[str, dict[str, tuple[str, bool]]] = {
    "data_generate": {"out": ("--out", True)},
    "encode": {"out": ("--out", True)},
    "fit_cmd": {"out": ("--out", True)},
    "predict_cmd": {"out": ("--out", False)},
    "explain_cmd": {"out": ("--out", True)},
    "demo": {"out": ("--out", True)},
    "bench_run": {"out": ("--out", True)},
    "condense_cmd": {"out": ("--out", False), "checkpoint": ("--checkpoint", False)},
    "evaluate_cmd": {"json_out": ("--json", False)},
    "sweep_cmd": {"out": ("--out", True)},
    "report_cmd": {"out": ("--out", True)},
    "search_cmd": {"out": ("--out", True)},
}


def check_outputs(command: str, values: dict) -> None:
    """One-line ConfigError for an output path of ``command`` that cannot be written (see
    :func:`magkit.eval.results.check_writable`)."""
    for name, (option, folder) in OUTPUT_OPTIONS.get(command, {}).items():
        if values.get(name) is not None:
            from ..eval.results import check_writable

            check_writable(values[name], option, folder=folder)
    root = values.get("root")
    if root is not None and not Path(root).expanduser().is_dir():
        from ..exceptions import ConfigError

        raise ConfigError(f"--root: {str(root)!r} is not a folder; allowed: an existing data folder "
                          "(or leave it out: $MAGKIT_DATA, ./data, ../shared/data are searched)")


def friendly(fn):
    """Turn magkit's own errors into one red line and exit code 2 (no traceback); check the command's output
    paths first."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from ..exceptions import MagkitError

        try:
            check_outputs(fn.__name__, kwargs)
            return fn(*args, **kwargs)
        except MagkitError as exc:
            from rich.markup import escape  # messages hold brackets: pip install -e ".[ray]"

            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


def check_split(split: str | None) -> None:
    """A split spec checked before any dataset is loaded: its form and its values (a label rate in (0, 0.6],
    k >= 1, random fractions summing below 1), by drawing it on ten toy labels."""
    if split is None:
        return
    import torch

    from ..data.splits import kshot_split, label_rate_split, parse_split, ratio_split

    kind, a, b = parse_split(split)
    y = torch.arange(10) % 2
    if kind == "random":
        ratio_split(10, a, b)
    elif kind == "rate":
        label_rate_split(y, a)
    elif kind == "kshot":
        kshot_split(y, int(a))


def check_device(device: str) -> None:
    """A ``--device`` value checked before any work: auto, cpu, cuda or cuda:N."""
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        from ..exceptions import ConfigError

        raise ConfigError(f"--device: {device!r}; allowed: auto, cpu, cuda")


@contextmanager
def distributed_run(enabled: bool, device: str) -> Iterator[bool]:
    """Join the process group started by torchrun for the body (``enabled``), then meet at a barrier and
    leave it (on error too, without the barrier). Yields ``quiet``: True on ranks other than 0, which print
    and write nothing (their log level is raised to WARNING)."""
    if not enabled:
        yield False
        return
    from .. import distributed as dist

    info = dist.init_from_env(device=device)
    quiet = info.rank != 0
    if quiet:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        yield quiet
        dist.barrier()
    finally:
        dist.cleanup()


def _print_version(value: bool) -> None:
    if value:
        from .. import __version__

        console.print(f"magkit {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log library progress to stderr.")] = False,
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="Print the version and exit.")] = False,
):
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def main() -> None:
    """The ``magkit`` console script (and ``python -m magkit`` / ``python -m magkit.cli``)."""
    app()


# the command modules register their commands on `app`; the import order is the order of `magkit --help`
from . import data, fit, explain, demo, condense, bench, search  # noqa: E402, F401, I001

__all__ = ["app", "main"]
