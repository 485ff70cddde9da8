"""The ``cartoonx`` command: a thin face over the Python API.

Each subcommand lives in ``amortized/commands/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``; heavy imports (Lightning, webdataset) happen inside ``run``, so ``explain``
never loads Lightning. Errors we raise for bad input or configuration (:class:`rde.errors.InputError` and
its subclasses, ``FileNotFoundError``) become one line on stderr and exit code 2; anything else, a plain
``ValueError`` from deep inside torch included, is a bug and keeps its traceback. An error that carries an
``exit_code`` (a full disk: :class:`rde.io.OutputWriteError`) exits with it. ``--debug`` (before or after the
subcommand) shows the traceback for every error. Warnings (a tiny image, a glyph the font lacks) are one line each.
A command module may define ``interrupted_hint(args) -> str``, printed after Ctrl-C (how to resume).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from typing import Sequence

COMMANDS = {
    "explain": "explain images with CartoonX / Pixel RDE and write figures",
    "generate": "generate exact CartoonX mask targets into WebDataset shards",
    "shards": "inspect, verify and preview a shard directory",
    "train": "train the amortized mask initializer (LightningCLI)",
    "compare": "compare initializations by loss curves and steps-to-reach",
    "export": "write the plain initializer file of a training checkpoint (its start policy kept or changed)",
}


def _command_module(name: str):
    return importlib.import_module(f"amortized.commands.{name}")


def version() -> str:
    """The installed package's version (``rde.__version__`` in a checkout that is not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("fastcartoonx")
    except PackageNotFoundError:
        import rde

        return rde.__version__


class _VersionAction(argparse.Action):
    """``--version``: looked up only when asked (finding it may import torch)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"cartoonx {version()}")
        parser.exit()


def build_parser(commands: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cartoonx", description="Fast CartoonX explanations for image classifiers.")
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    parser.add_argument("--debug", action="store_true", help="show the traceback of any error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    for name in commands or COMMANDS:
        try:
            module = _command_module(name)
        except ModuleNotFoundError:
            continue
        p = sub.add_parser(name, help=COMMANDS[name], description=(module.__doc__ or COMMANDS[name]).strip())
        module.add_arguments(p)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of any error")
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Parse only the chosen subcommand's arguments so that unrelated modules are not imported.
    chosen = [a for a in argv[:2] if a in COMMANDS][:1]
    parser = build_parser(chosen or None)
    if not [a for a in argv if a != "--debug"]:  # `cartoonx` alone: what it can do, not an argparse complaint
        parser.print_help(sys.stderr)
        return 2
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "_accepts_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if rest:
        args.extra = rest
    previous = warnings.showwarning
    warnings.showwarning = lambda message, *_, **__: _say(f"cartoonx {args.command}: warning: {message}")
    try:
        return int(args._run(args) or 0)
    except Exception as e:
        if args.debug or not _is_user_error(e):
            raise  # a bug: keep the traceback
        print(f"cartoonx {args.command}: error: {e}", file=sys.stderr)
        return int(getattr(e, "exit_code", 2))
    except KeyboardInterrupt:
        hint = getattr(_command_module(args.command), "interrupted_hint", None)
        print(f"cartoonx {args.command}: interrupted" + (f"; {hint(args)}" if hint else ""), file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous


def _say(line: str) -> None:
    """One line on stderr, above any progress bar (not through it)."""
    from tqdm.auto import tqdm

    tqdm.write(line, file=sys.stderr)


def _is_user_error(error: Exception) -> bool:
    """Bad input or configuration (:class:`rde.errors.InputError`, a missing file): one line, exit code 2."""
    from rde.errors import InputError  # here, not at the top: building the parser imports no torch

    return isinstance(error, (InputError, FileNotFoundError))


if __name__ == "__main__":
    sys.exit(main())
