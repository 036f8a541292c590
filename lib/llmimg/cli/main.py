"""The ``llmimg`` command line.

    llmimg --version
    llmimg reproduce [--profile P] [--only NB ... | --changed-since REV] [--write-back]
                     [--check | --check-only] [--write-reference]
    llmimg data preview --n N --seed S [--split SPLIT] [--caption prompt|description] -o FILE.png
    llmimg generate "PROMPT" [--steps N] [--guidance G] [--scheduler NAME] [--no-llm] [--seed S]
                    [--batch B] [--profile P | --pipeline DIR] -o FILE.png [--json]
    llmimg bench [--profile P] [--quality-n N] [--no-pipeline] [--no-compile] [--json]
    llmimg train {clip,llm,generator,distilled,joint} [--steps N] [--regime R] [--lam L] [--profile P] [--force]
    llmimg eval {clip,llm,generator,pipeline,joint} [--profile P] [--n N] [--json]
    llmimg experiment generator-recipes [--profile P] [--only NAME ...] [--steps N] [--json]
    llmimg experiment seed-spread [--profile P] [--seeds S ...] [--json]

Errors a user can cause (bad arguments, a failing notebook, an unwritable file) end
with a one-line message and a non-zero exit status, never a traceback. ``parser`` holds
the arguments, ``commands`` and ``models`` the handlers; ``accelerate launch -m llmimg
train joint ...`` runs joint training on several processes.
"""


from __future__ import annotations

import sys
from typing import Sequence

from llmimg.cli.parser import build_parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``llmimg`` console script; returns the exit status."""
    from llmimg.cli import commands, models

    args = build_parser().parse_args(argv)
    handler = {"reproduce": commands.reproduce_command, "data": commands.preview_command,
               "generate": commands.generate_command, "bench": commands.bench_command,
               "train": models.train_command, "eval": models.eval_command,
               "experiment": models.experiment_command}[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("llmimg: interrupted", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError) as err:  # NotebookFailed and CheckpointError are RuntimeErrors
        print(f"llmimg: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
