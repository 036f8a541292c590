"""The ``llmimg`` command line.

    llmimg --version
    llmimg reproduce [--profile P] [--only NB ... | --changed-since REV] [--write-back]
                     [--check | --check-only] [--write-reference]
    llmimg data preview --n N --seed S [--split SPLIT] [--caption prompt|description] -o FILE.png
    llmimg generate "PROMPT" [--steps N] [--guidance G] [--scheduler NAME] [--no-llm] [--seed S]
                    [--batch B] [--profile P | --pipeline DIR] -o FILE.png [--json]
    llmimg bench [--profile P] [--quality-n N] [--no-pipeline] [--no-compile] [--json]
    llmimg train {clip,llm,generator,distilled} [--steps N] [--profile P] [--force]
    llmimg eval {clip,llm,generator,pipeline} [--profile P] [--n N] [--json]
    llmimg experiment generator-recipes [--profile P] [--only NAME ...] [--steps N] [--json]
    llmimg experiment seed-spread [--profile P] [--seeds S ...] [--json]

Errors a user can cause (bad arguments, a failing notebook, an unwritable file) end
with a one-line message and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, Sequence

from llmimg.atomic import atomic_write
from llmimg.config import PROFILE_ENV, PROFILES

if TYPE_CHECKING:
    from llmimg.pipeline import ShapesPipeline

STAGES = ("clip", "llm", "generator")
JOINT_REGIMES = ("separate", "sequential", "joint", "cycle", "reward")  # llmimg.joint.REGIMES (a test checks)


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


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like the CLI's other errors (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _add_profile(command: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup, what: str) -> None:
    command.add_argument("--profile", choices=PROFILES, default=None,
                         help=f"{what} (default: ${PROFILE_ENV}, else 'default')")


class _Schedulers:
    """The sampler names as argparse ``choices``, looked up on first use.

    They live in :mod:`llmimg.generator`, which takes seconds to import (torch); every
    command builds the whole parser, and ``llmimg --version`` should not wait for that.
    """

    def __contains__(self, name: object) -> bool:
        from llmimg.generator import SCHEDULERS

        return name in SCHEDULERS

    def __iter__(self):
        from llmimg.generator import SCHEDULERS

        return iter(SCHEDULERS)


def _add_generate(commands: argparse._SubParsersAction) -> None:
    # Defaults of None stand for the pipeline's DEFAULT_STEPS and DEFAULT_SCHEDULER (read when the command runs,
    # for the same reason as _Schedulers); the help repeats their values and a test checks it stays true.
    gen = commands.add_parser(
        "generate", help="draw a prompt with the whole pipeline (CLIP, LLM, UNet) into PNG files",
        description="Draw a prompt: the LLM writes a full description of it and the UNet draws that "
        "description (with --no-llm, the prompt itself). Writes FILE.png, or FILE-1.png ... FILE-B.png with "
        "--batch B; image k is drawn with the seed S+k-1 alone, so it is the same whatever the batch size. "
        "Prints each description and how long every stage took.")
    gen.add_argument("prompt", help="what to draw, in ShapesWorld's words (e.g. 'a red circle')")
    gen.add_argument("--steps", type=_positive(1000), default=None, metavar="N",
                     help="denoising steps, 1-1000 (default: 10, the pipeline's DEFAULT_STEPS)")
    gen.add_argument("--guidance", type=_non_negative, default=None, metavar="G",
                     help="classifier-free guidance scale, >= 0, on above 1 (default: the model's)")
    gen.add_argument("--scheduler", choices=_Schedulers(), default=None, metavar="NAME",
                     help="sampler: %(choices)s (default: dpm++, the pipeline's DEFAULT_SCHEDULER)")
    gen.add_argument("--no-llm", action="store_true", help="draw the prompt itself, without the LLM's description")
    gen.add_argument("--seed", type=_seed, default=0, metavar="S", help="seed of the first image (default 0)")
    gen.add_argument("--batch", type=_positive(256), default=1, metavar="B",
                     help="number of images, 1-256 (default 1); more than 1 writes FILE-1.png ... FILE-B.png")
    source = gen.add_mutually_exclusive_group()
    _add_profile(source, "which trained models (missing stages are trained first)")
    source.add_argument("--pipeline", type=Path, metavar="DIR",
                        help="a folder written by ShapesPipeline.save_pretrained, instead of a profile's models")
    gen.add_argument("-o", "--output", required=True, type=Path, metavar="FILE.png",
                     help="PNG file to write (see --batch)")
    gen.add_argument("--json", action="store_true", help="print one JSON object")
    gen.add_argument("--no-progress", action="store_true", help="no progress bars while training missing stages")


def build_parser() -> argparse.ArgumentParser:
    from llmimg import __version__

    parser = _Parser(prog="llmimg", description="LLM-guided text-to-image generation, from the math to joint training.")
    parser.add_argument("--version", action="version", version=f"llmimg {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    rep = commands.add_parser("reproduce", help="run every notebook, write figures and a report",
                              description="Run every notebook of notebooks/ in order on a fresh kernel; "
                              "write executed notebooks and build/report.html, figures to figures/.")
    _add_profile(rep, "scale of every experiment")
    which = rep.add_mutually_exclusive_group()
    which.add_argument("--only", nargs="+", metavar="NB", help="run only these notebooks (e.g. 02 or 01_math)")
    which.add_argument("--changed-since", metavar="REV",
                       help="run only the notebooks a change since git revision REV touches (all of them when "
                            "the library or the dependencies changed)")
    checking = rep.add_mutually_exclusive_group()
    checking.add_argument("--check", action="store_true",
                          help="after the run, compare the numbers it recorded (build/results.json) with "
                               "data/reference/<profile>.json; exit 1 naming what drifted")
    checking.add_argument("--check-only", action="store_true",
                          help="compare the last run's recorded numbers with the reference without running anything")
    rep.add_argument("--write-reference", action="store_true",
                     help="write data/reference/<profile>.json from this run's numbers (tolerances from their "
                          "standard errors and the recorded seed spread)")
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

    _add_generate(commands)

    train = commands.add_parser("train", help="train a stage (or load it if the cache has it)",
                                description="Train a stage for a profile and keep it in the model cache; the "
                                "stages it needs are trained first. A cached stage is not retrained unless --force.")
    train.add_argument("stage", choices=(*STAGES, "distilled", "joint"))
    train.add_argument("--steps", type=int, choices=(1, 2, 4), default=1,
                       help="distilled: the student's sampling steps (default 1)")
    train.add_argument("--regime", choices=JOINT_REGIMES, default=None,
                       help="joint: the training regime (required for joint; see notebook 07)")
    train.add_argument("--lam", type=_non_negative, default=None,
                       help="joint: λ, the weight of the LLM's loss in the joint and cycle regimes (default 1)")
    _add_profile(train, "model size and training length")
    train.add_argument("--force", action="store_true", help="retrain even if the cache has this stage")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")

    evaluate = commands.add_parser("eval", help="evaluate a trained stage (training it first if needed)",
                                   description="Evaluate a stage on held-out ShapesWorld data; with --json print "
                                   "one JSON object (keys: see the README).")
    evaluate.add_argument("stage", choices=(*STAGES, "pipeline", "joint"))
    _add_profile(evaluate, "which trained stage")
    evaluate.add_argument("--n", type=_positive(100_000), default=None,
                          help="held-out examples to evaluate on (default: the profile's)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bars")

    experiment = commands.add_parser("experiment", help="run a recorded experiment (recipe search, seed spread)",
                                     description="generator-recipes: train each generator recipe (the default with "
                                     "a few fields changed) and record its ShapesEval learning curve in "
                                     "lib/llmimg/experiments/generator-recipes-<profile>.json; notebook 05 shows it. "
                                     "seed-spread: retrain each stage at other seeds and record its headline numbers.")
    experiment.add_argument("name", choices=("generator-recipes", "seed-spread"),
                            help="generator-recipes: the generator recipe search; seed-spread: each stage retrained "
                                 "at --seeds and evaluated (recorded in lib/llmimg/experiments/seed-spread-<profile>"
                                 ".json; the reference tolerances use it)")
    _add_profile(experiment, "model size and training length")
    experiment.add_argument("--only", nargs="+", metavar="RECIPE", help="run only these recipes (quote names "
                            "with spaces; default: all)")
    experiment.add_argument("--seeds", nargs="+", type=_seed, default=[0, 1, 2], metavar="S",
                            help="seed-spread: training seeds (default 0 1 2; 0 is the profile's own model)")
    experiment.add_argument("--steps", type=_positive(1_000_000), default=None,
                            help="optimiser steps for every recipe (default: the profile's)")
    experiment.add_argument("--json", action="store_true", help="print the whole record as one JSON object")
    experiment.add_argument("--no-progress", action="store_true", help="no progress bars")

    bench = commands.add_parser("bench", help="measure speeds: data loading, the pipeline's stages, fast vs "
                                "1000-step DDPM at equal quality")
    _add_profile(bench, "the pipeline to measure")
    bench.add_argument("--n", type=_positive(1_000_000), default=2000, help="data samples per timed pass")
    bench.add_argument("--repeats", type=_positive(100), default=5, help="timed passes (median reported)")
    bench.add_argument("--quality-n", type=_positive(100_000), default=None,
                       help="prompts drawn by both the fast setting and the 1000-step baseline (default: 4 smoke, "
                            "64 default, 256 full); the techniques draw at least as many (128 at default)")
    bench.add_argument("--no-pipeline", action="store_true", help="measure data loading only (seconds, not minutes)")
    bench.add_argument("--no-compile", action="store_true", help="leave torch.compile out of the techniques")
    bench.add_argument("--no-progress", action="store_true", help="no progress bars if a stage must be trained")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _write_png(image, path: Path) -> None:
    if path.suffix.lower() != ".png":
        raise ValueError(f"the output file must end in .png, got {path.name!r}")
    try:
        with atomic_write(path) as f:
            image.save(f, format="PNG")
    except OSError as err:  # name the user's file, not the temporary one beside it
        raise OSError(f"cannot write {str(path)!r}: {err.strerror or err}") from err


def _check_writable(folder: Path) -> None:
    """Raise if no file can be created in ``folder``, by creating one: permissions alone miss read-only mounts."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ValueError(f"cannot write into the folder {str(folder)!r} of the output file: "
                         f"{err.strerror or err}") from None


def _reproduce(args: argparse.Namespace) -> int:
    from llmimg import results, seeds
    from llmimg.config import project_root
    from llmimg.reproduce import changed_notebooks, discover_notebooks, reproduce

    root = project_root()
    if root is None and (args.changed_since or args.check or args.check_only or args.write_reference):
        raise RuntimeError("--changed-since, --check, --check-only and --write-reference need a source checkout "
                           "(a git clone installed with pip install -e .)")
    only = args.only
    if args.changed_since:
        only = changed_notebooks(root, args.changed_since)
        if only == []:
            print(f"no notebook is touched by the changes since {args.changed_since}: nothing to run")
            return 0
        print(f"notebooks touched by the changes since {args.changed_since}: "
              + ("all (the library or the dependencies changed)" if only is None else ", ".join(only)))
    if not args.check_only:
        runs = reproduce(args.profile, only=only, write_back=args.write_back, progress=not args.no_progress)
        total = sum(r.seconds for r in runs)
        print(f"ran {len(runs)} notebook(s) in {total:.0f} s: executed notebooks and report.html in build/, "
              f"{sum(len(r.figures) for r in runs)} figure(s) in figures/")
    if args.write_reference:
        spread = seeds.load(args.profile)
        ref = results.write_reference(root, args.profile, (spread or {}).get("numbers"))
        print(f"wrote data/reference/{ref['profile']}.json: {len(ref['numbers'])} numbers"
              + (f"; without a measured spread, not checked: {', '.join(ref['unchecked'])}" if ref["unchecked"] else ""))
    if args.check or args.check_only:
        stems = None if only is None else [p.stem for p in discover_notebooks(root / "notebooks", only)]
        rows = results.check(root, args.profile, notebooks=stems)
        print(results.format_table(rows))
        return 0 if all(r.ok for r in rows) else 1
    return 0


def _preview(args: argparse.Namespace) -> int:
    from llmimg.data import ShapesWorld
    from llmimg.viz import sample_grid

    samples = list(ShapesWorld(seed=args.seed).samples(args.n, args.split))
    _write_png(sample_grid(samples, cols=args.cols, caption=args.caption), args.output)
    print(f"wrote {args.n} {args.split} samples (seed {args.seed}) to {args.output}")
    return 0


def _output_files(output: Path, batch: int) -> list[Path]:
    """The PNG files ``generate`` writes; checked before anything is loaded, so a typo costs no generation."""
    if output.suffix.lower() != ".png":
        raise ValueError(f"the output file must end in .png, got {output.name!r}")
    if not output.parent.is_dir():
        raise ValueError(f"the folder {str(output.parent)!r} of the output file does not exist")
    _check_writable(output.parent)
    files = [output] if batch == 1 else [output.with_name(f"{output.stem}-{k}{output.suffix}")
                                         for k in range(1, batch + 1)]
    for file in files:
        if file.is_dir():
            raise ValueError(f"{str(file)!r} is a folder, not a PNG file")
    return files


def _load_pipeline(args: argparse.Namespace) -> ShapesPipeline:
    """The saved pipeline of ``--pipeline``, else the profile's (its missing stages trained first)."""
    from llmimg import pipeline

    if args.pipeline is None:
        return pipeline.get(args.profile, progress=not args.no_progress)
    return pipeline.ShapesPipeline.from_pretrained(args.pipeline)


def _generate(args: argparse.Namespace) -> int:
    """``llmimg generate``: check the arguments, load the pipeline, draw every image, then write them all."""
    from llmimg.text import check_unicode

    check_unicode(args.prompt)  # the words are checked by the pipeline's own tokenizer, once it is loaded
    files = _output_files(args.output, args.batch)
    if args.seed + args.batch - 1 >= 2**63:  # torch.Generator's range
        raise ValueError(f"--seed plus --batch must stay below 2**63, got seeds up to {args.seed + args.batch - 1}")
    import torch

    from llmimg.pipeline import DEFAULT_SCHEDULER, DEFAULT_STEPS, STAGES

    steps, scheduler = args.steps or DEFAULT_STEPS, args.scheduler or DEFAULT_SCHEDULER
    pipe = _load_pipeline(args)
    pipe.use_scheduler(scheduler)
    images, descriptions, timings = [], [], dict.fromkeys((*STAGES, "total"), 0.0)
    # One call per image: the LLM samples a batch from one random stream, so a batched call would make
    # image k's description depend on the batch size. Alone, image k depends only on its seed.
    for k in range(args.batch):
        out = pipe(args.prompt, num_inference_steps=steps, guidance_scale=args.guidance,
                   generator=torch.Generator().manual_seed(args.seed + k), upsample=not args.no_llm)
        images += out.images
        descriptions += out.descriptions
        timings = {key: timings[key] + out.timings[key] for key in timings}
    for image, file in zip(images, files):  # only now: a failed generation writes nothing
        _write_png(image, file)
    guidance = args.guidance if args.guidance is not None else pipe.config.stage_configs["generator"]["guidance_scale"]
    result = {"prompt": args.prompt, "descriptions": descriptions, "files": [str(f) for f in files],
              "timings_ms": {key: round(value, 3) for key, value in timings.items()}, "steps": steps,
              "guidance_scale": guidance, "scheduler": scheduler, "upsample": not args.no_llm,
              "seed": args.seed}
    if args.json:
        print(json.dumps(result))
    else:
        _print_generated(result)
    return 0


def _print_generated(result: dict) -> None:
    """What ``generate`` did, in a few lines: each file with the text it shows, then the settings and stage timings."""
    source = "the LLM's description" if result["upsample"] else "the prompt, no LLM"
    for file, text in zip(result["files"], result["descriptions"]):
        print(f"wrote {file}: {text!r} ({source})")
    print(f"settings: {result['steps']} {result['scheduler']} steps, guidance {result['guidance_scale']:g}, "
          f"seed {result['seed']}")
    ms = result["timings_ms"]
    stages = ", ".join(f"{key} {value:.1f}" for key, value in ms.items() if key != "total")
    print(f"timings (ms): {stages}; total {ms['total']:.1f}")


def _bench(args: argparse.Namespace) -> int:
    from llmimg.data.stats import measure_throughput

    data = measure_throughput(n=args.n, repeats=args.repeats, threads=1)
    result = {"data_images_per_s": round(data["images_per_s"], 1),
              "data_images_per_s_min": round(data["images_per_s_min"], 1),
              "data_images_per_s_max": round(data["images_per_s_max"], 1),
              "data_threads": data["threads"]}
    if not args.no_pipeline:
        from llmimg.profiling import bench_pipeline

        result.update(bench_pipeline(args.profile, n_quality=args.quality_n, repeats=args.repeats,
                                     progress=not args.no_progress, compile_unet=not args.no_compile))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"ShapesWorld data loading, 1 thread: {result['data_images_per_s']:.0f} images/s median "
          f"(min {result['data_images_per_s_min']:.0f}, max {result['data_images_per_s_max']:.0f}, "
          f"{args.repeats} passes of {args.n})")
    if not args.no_pipeline:
        _print_pipeline_bench(result)
    return 0


def _print_pipeline_bench(r: dict) -> None:
    """The pipeline benchmark in a few lines: latency by stage, throughput, the speed-up and its quality."""
    print(f"pipeline ({r['profile']}, {r['device']}, {r['threads']} threads), {r['fast_setting']}:")
    for batch, ms in r["stage_latency_ms"].items():
        stages = ", ".join(f"{k} {v:.1f}" for k, v in ms.items() if k != "total")
        print(f"  {batch.replace('_', ' ')}: {ms['total']:.1f} ms median ({stages})")
    print(f"  {r['images_per_s']:.1f} images/s at batch 32; peak memory {r['peak_rss_mb']:.0f} MiB")
    print(f"  vs {r['baseline_setting']} on the same {r['quality_prompts']} prompts: {r['speedup_vs_baseline']:.1f}x "
          f"faster ({r['quality_images_per_s']:.2f} vs {r['baseline_images_per_s']:.3f} images/s); ShapesEval "
          f"all-correct {r['all_correct']:.3f} vs {r['baseline_all_correct']:.3f}")
    stages = ", ".join(f"{k} {v / 1e6:.1f}" for k, v in r["flops_per_image_by_stage"].items())
    print(f"  {r['flops_per_image'] / 1e6:.1f} MFLOP per image ({stages}); peak matmul "
          f"{r['peak_matmul_gflops']:.1f} GFLOP/s; MFU: sampling step {r['mfu_sample']:.1%} "
          f"(batch {r['sample_step']['batch_size']}), training step {r['mfu_train']:.1%} "
          f"(batch {r['train_step']['batch_size']})")
    print(f"  techniques on {r['technique_prompts']} prompts (speed-up vs the default, ShapesEval all-correct ± se):")
    for name, t in r["techniques"].items():
        print(f"    {name:<24} {t['speedup']:5.2f}x  {t['all_correct']:.3f} ± {t['all_correct_se']:.3f}  "
              f"({t['what']})")
    f = r["fastest_setting"]
    if not f["meets_baseline_quality"]:
        print("  no setting kept the baseline's quality, not even the default; below, the fastest at the default's")
    print(f"  fastest at equal quality: {f['name']} ({f['what']}): {f['speedup_vs_baseline']:.0f}x the baseline, "
          f"{f['end_to_end_ms_batch_1']:.1f} ms at batch 1, {f['images_per_s']:.1f} images/s at batch 32, "
          f"all-correct {f['all_correct']:.3f} ± {f['all_correct_se']:.3f}")


def _stage(name: str):
    import importlib

    return importlib.import_module(f"llmimg.{name}")


def _shown(path: Path, where: str = " in the model cache") -> str:
    """A path as a user can find it: relative to the working folder when inside it, else its last two parts."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return f"{path.parent.name}/{path.name}{where}"


def _train(args: argparse.Namespace) -> int:
    import time

    from llmimg.checkpoints import read_manifest

    t0 = time.perf_counter()
    if args.stage == "joint":
        return _train_joint(args)
    if (args.regime, args.lam) != (None, None):
        raise SystemExit("llmimg train: --regime and --lam are for 'llmimg train joint' only")
    if args.stage == "distilled":
        model, _ = _stage("distillation").get(args.profile, steps=args.steps, force=args.force,
                                              progress=not args.no_progress)
    else:
        model = _stage(args.stage).get(args.profile, force=args.force, progress=not args.no_progress)
    manifest = read_manifest(model.path)
    print(f"{args.stage} ({model.path.parent.name} profile) ready in {time.perf_counter() - t0:.0f} s: "
          f"{_shown(model.path)}")
    metrics, source = manifest.get("metrics"), ""
    if not metrics and manifest.get("curve"):  # the generator: the last point of its learning curve
        metrics = manifest["curve"][-1]
        source = f" (on {metrics['n']} one-object val descriptions)"
    if metrics:
        print(f"held-out metrics{source}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()
                                                         if isinstance(v, float) and k != "train_seconds"))
    return 0


def _train_joint(args: argparse.Namespace) -> int:
    from llmimg import joint

    if args.regime is None:
        raise SystemExit(f"llmimg train joint: choose a regime with --regime ({', '.join(JOINT_REGIMES)})")
    result = joint.run(args.regime, args.profile, lam=args.lam, progress=not args.no_progress, force=args.force)
    m = result.metrics
    print(f"joint training, {args.regime} regime ({result.path.parent.name} profile): {result.config.train.steps} "
          f"optimiser steps of {result.config.train.batch_size} in {result.train_seconds:.0f} s: {_shown(result.path)}")
    print(", ".join(f"{k} {m[k]:.3f} ± {m[k + '_se']:.3f}" for k in joint.METRICS) + f" (n = {m['n']})")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from llmimg.config import get_profile

    if args.stage == "joint":
        from llmimg import joint

        if args.n is not None:
            raise SystemExit("llmimg eval joint: --n is fixed by the profile (every regime is scored on the same "
                             "scenes when it is trained)")
        runs = joint.compare_all(args.profile, progress=not args.no_progress)
        summary = {"stage": "joint", "profile": get_profile(args.profile).name,
                   "regimes": {name: r.summary() for name, r in runs.items()},
                   "verdict": joint.verdict(runs)}
        if args.json:
            print(json.dumps(summary))
        else:
            print(joint.table(runs).to_string(float_format=lambda v: f"{v:.3f}"))
            print(summary["verdict"])
        return 0

    stage = _stage(args.stage)
    model = stage.get(args.profile, progress=not args.no_progress)
    # The generator and the pipeline draw 2n and 4n images: fewer scenes (still n >= 500 at default).
    draws = args.stage in ("generator", "pipeline")
    sizes = {"smoke": 20, "default": 500, "full": 1000} if draws else {"smoke": 100, "default": 1000, "full": 2000}
    n = args.n or get_profile(args.profile).pick(**sizes)
    metrics = {"stage": args.stage, "profile": get_profile(args.profile).name, **stage.evaluate(model, n=n)}
    if args.json:
        print(json.dumps(metrics))
    else:
        for key, value in metrics.items():
            print(f"{key:>32}: {value:.4f}" if isinstance(value, float) else f"{key:>32}: {value}")
    return 0


def _experiment(args: argparse.Namespace) -> int:
    from llmimg import recipes, seeds

    if args.name == "seed-spread":
        record = seeds.run(args.profile, args.seeds, progress=not args.no_progress)
        if args.json:
            print(json.dumps(record))
            return 0
        print(f"recorded in {_shown(seeds.results_path(args.profile), where='')} ({record['minutes']} min)")
        for name, values in record["numbers"].items():
            print(f"  {name:>40}: " + "  ".join(f"{v:.4f}" for v in values))
        return 0

    record = recipes.run(args.profile, args.only, steps=args.steps, progress=not args.no_progress)
    if args.json:
        print(json.dumps(record))
        return 0
    print(f"recorded in {_shown(recipes.results_path(args.profile), where='')}")
    for name, r in record["recipes"].items():
        last, two = (r["curve"][-1] if r["curve"] else {}), r.get("two_objects", {})
        print(f"  {name:>24}: {r['steps']} steps in {r['train_seconds'] or float('nan'):.0f} s, all-correct "
              f"{last.get('all_correct', float('nan')):.3f} on {last.get('n', 0)} one-object and "
              f"{two.get('all_correct', float('nan')):.3f} on {two.get('n', 0)} two-object val descriptions")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``llmimg`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    handler = {"reproduce": _reproduce, "data": _preview, "generate": _generate, "bench": _bench,
               "train": _train, "eval": _eval, "experiment": _experiment}[args.command]
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
