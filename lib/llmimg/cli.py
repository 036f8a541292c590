"""The ``llmimg`` command line.

    llmimg --version
    llmimg reproduce [--profile P] [--only NB ...] [--write-back]
    llmimg data preview --n N --seed S [--split SPLIT] [--caption prompt|description] -o FILE.png
    llmimg bench [--json]
    llmimg train {clip,llm,generator} [--profile P] [--force]
    llmimg eval {clip,llm,generator} [--profile P] [--n N] [--json]

Errors a user can cause (bad arguments, a failing notebook, an unwritable file) end
with a one-line message and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from llmimg.atomic import atomic_write
from llmimg.config import PROFILE_ENV, PROFILES

STAGES = ("clip", "llm", "generator")


def _positive(limit: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not 1 <= value <= limit:
            raise argparse.ArgumentTypeError(f"must be between 1 and {limit}, got {value}")
        return value
    return parse


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be non-negative, got {value}")
    return value


def _add_profile(command: argparse.ArgumentParser, what: str) -> None:
    command.add_argument("--profile", choices=PROFILES, default=None,
                         help=f"{what} (default: ${PROFILE_ENV}, else 'default')")


def build_parser() -> argparse.ArgumentParser:
    from llmimg import __version__

    parser = argparse.ArgumentParser(prog="llmimg", description="LLM-guided text-to-image generation, "
                                     "from the math to joint training.")
    parser.add_argument("--version", action="version", version=f"llmimg {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    rep = commands.add_parser("reproduce", help="run every notebook, write figures and a report",
                              description="Run every notebook of notebooks/ in order on a fresh kernel; "
                              "write executed notebooks and build/report.html, figures to figures/.")
    _add_profile(rep, "scale of every experiment")
    rep.add_argument("--only", nargs="+", metavar="NB", help="run only these notebooks (e.g. 02 or 01_math)")
    rep.add_argument("--write-back", action="store_true",
                     help="write the outputs back into notebooks/ (to commit them)")
    rep.add_argument("--no-progress", action="store_true", help="no progress bar")

    data = commands.add_parser("data", help="ShapesWorld data tools")
    data_cmds = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    preview = data_cmds.add_parser("preview", help="save a grid of samples with their captions as PNG")
    preview.add_argument("--n", type=_positive(256), default=16, help="number of samples (1-256, default 16)")
    preview.add_argument("--seed", type=_seed, default=0, help="data seed (default 0)")
    preview.add_argument("--split", choices=("train", "val", "heldout"), default="train")
    preview.add_argument("--caption", choices=("prompt", "description"), default="prompt")
    preview.add_argument("--cols", type=_positive(64), default=4, help="samples per row (default 4)")
    preview.add_argument("-o", "--output", required=True, type=Path, help="PNG file to write")

    train = commands.add_parser("train", help="train a stage (or load it if the cache has it)",
                                description="Train a stage for a profile and keep it in the model cache; the "
                                "stages it needs are trained first. A cached stage is not retrained unless --force.")
    train.add_argument("stage", choices=STAGES)
    _add_profile(train, "model size and training length")
    train.add_argument("--force", action="store_true", help="retrain even if the cache has this stage")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")

    evaluate = commands.add_parser("eval", help="evaluate a trained stage (training it first if needed)",
                                   description="Evaluate a stage on held-out ShapesWorld data; with --json print "
                                   "one JSON object (keys: see the README).")
    evaluate.add_argument("stage", choices=STAGES)
    _add_profile(evaluate, "which trained stage")
    evaluate.add_argument("--n", type=_positive(100_000), default=None,
                          help="held-out examples to evaluate on (default: the profile's)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bars")

    bench = commands.add_parser("bench", help="measure speeds (ShapesWorld data loading)")
    bench.add_argument("--n", type=_positive(1_000_000), default=2000, help="samples per timed pass")
    bench.add_argument("--repeats", type=_positive(100), default=5, help="timed passes (median reported)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _write_png(image, path: Path) -> None:
    if path.suffix.lower() != ".png":
        raise ValueError(f"the output file must end in .png, got {path.name!r}")
    with atomic_write(path) as f:
        image.save(f, format="PNG")


def _reproduce(args: argparse.Namespace) -> int:
    from llmimg.reproduce import reproduce

    runs = reproduce(args.profile, only=args.only, write_back=args.write_back, progress=not args.no_progress)
    total = sum(r.seconds for r in runs)
    print(f"ran {len(runs)} notebook(s) in {total:.0f} s: executed notebooks and report.html in build/, "
          f"{sum(len(r.figures) for r in runs)} figure(s) in figures/")
    return 0


def _preview(args: argparse.Namespace) -> int:
    from llmimg.data import ShapesWorld
    from llmimg.viz import sample_grid

    samples = list(ShapesWorld(seed=args.seed).samples(args.n, args.split))
    _write_png(sample_grid(samples, cols=args.cols, caption=args.caption), args.output)
    print(f"wrote {args.n} {args.split} samples (seed {args.seed}) to {args.output}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from llmimg.data.stats import measure_throughput

    data = measure_throughput(n=args.n, repeats=args.repeats, threads=1)
    result = {"data_images_per_s": round(data["images_per_s"], 1),
              "data_images_per_s_min": round(data["images_per_s_min"], 1),
              "data_images_per_s_max": round(data["images_per_s_max"], 1),
              "data_threads": data["threads"]}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"ShapesWorld data loading, 1 thread: {result['data_images_per_s']:.0f} images/s median "
              f"(min {result['data_images_per_s_min']:.0f}, max {result['data_images_per_s_max']:.0f}, "
              f"{args.repeats} passes of {args.n})")
    return 0


def _stage(name: str):
    import importlib

    return importlib.import_module(f"llmimg.{name}")


def _shown(path: Path) -> str:
    """A cache folder as a user can find it: relative to the working folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return f"{path.parent.name}/{path.name} in the model cache"


def _train(args: argparse.Namespace) -> int:
    import time

    from llmimg.checkpoints import read_manifest

    t0 = time.perf_counter()
    model = _stage(args.stage).get(args.profile, force=args.force, progress=not args.no_progress)
    metrics = read_manifest(model.path).get("metrics", {})
    print(f"{args.stage} ({model.path.parent.name} profile) ready in {time.perf_counter() - t0:.0f} s: "
          f"{_shown(model.path)}")
    if metrics:
        print("held-out metrics: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()
                                               if isinstance(v, float)))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from llmimg.config import get_profile

    stage = _stage(args.stage)
    model = stage.get(args.profile, progress=not args.no_progress)
    n = args.n or get_profile(args.profile).pick(smoke=100, default=1000, full=2000)
    metrics = {"stage": args.stage, "profile": get_profile(args.profile).name, **stage.evaluate(model, n=n)}
    if args.json:
        print(json.dumps(metrics))
    else:
        for key, value in metrics.items():
            print(f"{key:>32}: {value:.4f}" if isinstance(value, float) else f"{key:>32}: {value}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``llmimg`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    handler = {"reproduce": _reproduce, "data": _preview, "bench": _bench, "train": _train,
               "eval": _eval}[args.command]
    try:
        return handler(args)
    except KeyboardInterrupt:
        print("llmimg: interrupted", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError) as err:  # NotebookFailed is a RuntimeError
        print(f"llmimg: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
