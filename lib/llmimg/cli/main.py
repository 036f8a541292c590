"""The ``llmimg`` command line.

    llmimg --version
    llmimg reproduce [--profile P] [--only NB ... | --changed-since REV] [--write-back]
                     [--check | --check-only] [--write-reference]
    llmimg data preview --n N --seed S [--split SPLIT] [--caption prompt|description] -o FILE.png
    llmimg data eval-sets [-o DIR] [--check]
    llmimg generate "PROMPT" [--steps N] [--guidance G] [--scheduler NAME] [--no-llm] [--seed S]
                    [--batch B] [--profile P | --pipeline DIR] -o FILE.png [--json]
    llmimg bench [--profile P] [--quality-n N] [--no-pipeline] [--no-compile] [--json]
    llmimg train {clip,llm,generator,distilled,joint,writer} [--steps N] [--regime R] [--lam L] [--profile P] [--force]
    llmimg eval {clip,llm,generator,pipeline,joint} [--profile P] [--n N] [--json]
    llmimg experiment generator-recipes [--profile P] [--only NAME ...] [--steps N] [--json]
    llmimg experiment seed-spread [--profile P] [--seeds S ...] [--json]
    llmimg experiment reranking [--profile P] [--world trained|tiny] [--prompts N] [--candidates K] [--json]
    llmimg pretrained dry-run [--steps N ...] [--size PX] [--device cpu|cuda] [--dtype D] [--repeats N]
                              [--record] [--json]
    llmimg pretrained offline -o DIR [--profile P] [--force]

Every failure ends with a one-line message and exit status 1 (130 for Ctrl-C), never a
traceback: :func:`llmimg.cli.errors.error_line` is the one place that words it, naming
the file or folder and what to do (``LLMIMG_TRACEBACK=1`` shows the traceback of an
unexpected one). ``parser`` holds the arguments, ``commands`` and ``models`` the
handlers; ``accelerate launch -m llmimg train joint ...`` runs joint training on several
processes.
"""


from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Sequence

from llmimg.cli.parser import build_parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``llmimg`` console script; returns the exit status."""
    from llmimg.cli import commands, models, pretrained
    from llmimg.cli.errors import error_line
    from llmimg.core import config

    args = build_parser().parse_args(argv)
    config.pin_folders()  # a relative $LLMIMG_CACHE_DIR means this folder, for every notebook and process started
    handler = {"reproduce": commands.reproduce_command, "data": commands.data_command,
               "generate": commands.generate_command, "bench": commands.bench_command,
               "train": models.train_command, "eval": models.eval_command,
               "experiment": models.experiment_command, "pretrained": pretrained.pretrained_command}[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("llmimg: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # every failure is one line; see llmimg.cli.errors
        line, unexpected = error_line(err, _cache_of(args))
        if unexpected and config.show_tracebacks():
            traceback.print_exc()
        print(f"llmimg: error: {line}", file=sys.stderr)
        return 1


def _cache_of(args) -> Path | None:
    """The model cache the command works with, named in messages about it (None: it uses none)."""
    from llmimg.core.config import cache_dir

    uses_cache = args.command in ("train", "eval", "bench", "experiment") or (
        args.command == "generate" and args.pipeline is None)
    try:
        return cache_dir(getattr(args, "profile", None), create=False) if uses_cache else None
    except ValueError:  # an unknown $LLMIMG_PROFILE: the error being reported says so already
        return None


if __name__ == "__main__":
    sys.exit(main())
