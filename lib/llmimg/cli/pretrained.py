"""The commands about the pretrained world's models: ``pretrained dry-run`` and ``pretrained offline``."""

from __future__ import annotations

import argparse
import json
import sys


def dry_run_command(args: argparse.Namespace) -> int:
    """``llmimg pretrained dry-run``: measure the real architectures (random weights); a table, or JSON."""
    from llmimg.pipelines.pretrained.dry_run import dry_run, format_table, record_path, write_record

    result = dry_run(steps=args.steps, size=args.size, device=args.device, dtype=args.dtype, repeats=args.repeats,
                     shrink=args.shrink, progress=lambda line: print(line, file=sys.stderr, flush=True))
    if args.record:
        path = write_record(result, record_path(result["device"].split(":")[0]))
        print(f"recorded in {path.parent.name}/{path.name}", file=sys.stderr)
    print(json.dumps(result) if args.json else format_table(result))
    return 0


def offline_command(args: argparse.Namespace) -> int:
    """``llmimg pretrained offline``: the offline mode's three models, saved as hub-format folders under DIR."""
    from llmimg.pipelines.pretrained.offline import trained_components

    config = trained_components(args.output_dir, args.profile, force=args.force)
    for slot, folder in (("CLIP", config.clip_model), ("writer", config.llm), ("generator", config.generator)):
        print(f"{slot:<10} {folder}")
    return 0


def pretrained_command(args: argparse.Namespace) -> int:
    """``llmimg pretrained ACTION``."""
    return {"dry-run": dry_run_command, "offline": offline_command}[args.pretrained_command](args)
