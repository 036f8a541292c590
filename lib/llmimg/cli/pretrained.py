"""The commands about the pretrained world's models: ``pretrained dry-run``."""

from __future__ import annotations

import argparse
import json
import sys


def dry_run_command(args: argparse.Namespace) -> int:
    """``llmimg pretrained dry-run``: measure the real architectures (random weights); a table, or JSON."""
    from llmimg.core.config import experiments_dir
    from llmimg.pipelines.pretrained.dry_run import dry_run, format_table, write_record

    result = dry_run(steps=args.steps, size=args.size, device=args.device, dtype=args.dtype, repeats=args.repeats,
                     shrink=args.shrink, progress=lambda line: print(line, file=sys.stderr, flush=True))
    if args.record:
        path = write_record(result, experiments_dir() / f"pretrained-dry-run-{result['device'].split(':')[0]}.json")
        print(f"recorded in {path.parent.name}/{path.name}", file=sys.stderr)
    print(json.dumps(result) if args.json else format_table(result))
    return 0
