"""Shared plumbing of the command-line tools: config arguments, logging, error exits.

Tools stay thin: ``build_parser()`` adds :func:`add_config_arguments`, ``main()`` calls
:func:`config_from_args` and :func:`setup_logging`, and wraps its body in
:func:`run_tool` so that a :class:`UserError` (bad input) becomes a one-line message on
stderr and exit code 2 instead of a traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable

from detect.config import Config, builtin_config_dir, load_config, save_config
from sppcore.errors import UserError

__all__ = [
    "UserError",
    "add_config_arguments",
    "config_from_args",
    "setup_logging",
    "run_tool",
    "save_resolved_config",
    "DEFAULT_CONFIG",
    "BUILTIN_FIVE_SCALES",
]

# The built-in default's five test scales: the paper's {480, 576, 688, 864, 1200} times
# 480 / 688 (its one scale, 480, plays the paper's 688), rounded to multiples of 16
BUILTIN_FIVE_SCALES = (336, 400, 480, 608, 832)

# The built-in default experiment (generated dataset, compact trunk).
DEFAULT_CONFIG = os.path.join(builtin_config_dir(), "default.yaml")


def add_config_arguments(parser: argparse.ArgumentParser, default_config: str | None = None) -> None:
    parser.add_argument(
        "--config",
        default=default_config,
        help="YAML experiment config (default: %(default)s)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        nargs="+",
        action="extend",
        default=[],
        help="override config entries, e.g. --set svm.C=0.01 features.scales=[480,688]",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def save_resolved_config(cfg: Config, directory: str) -> str:
    path = os.path.join(directory, "config.yaml")
    save_config(cfg, path)
    return path


class _TqdmHandler(logging.StreamHandler):
    """Log through ``tqdm.write`` so that progress bars stay intact."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def setup_logging(verbose: bool = False) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def run_tool(body: Callable[[], int]) -> int:
    """Run a tool's body; bad input exits 2 with one line on stderr, Ctrl-C exits 130."""
    prog = os.path.basename(sys.argv[0]) or "sppdet"
    try:
        return int(body() or 0)
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished stages are cached, run again to resume", file=sys.stderr)
        return 130
