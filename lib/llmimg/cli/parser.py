"""The ``llmimg`` command line's arguments: one parser, whose errors are one line."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import NoReturn

from llmimg.core.config import PROFILE_ENV, PROFILES, package_version

STAGES = ("clip", "llm", "generator")
JOINT_REGIMES = ("separate", "sequential", "joint", "cycle", "reward")  # llmimg.research.joint.REGIMES (a test checks)
# llmimg.research.joint.rl.REGIMES: reinforcement learning from the GenEval-shaped world's pipeline (a test checks)
JOINT_RL_REGIMES = ("separate", "generator_rl", "rewriter_rl", "joint_rl", "joint", "cycle")


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


def _add_world(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--world", choices=("shapes", "geneval"), default="shapes",
                        help="clip, llm, generator and pipeline: today's ShapesWorld (default) or the GenEval-shaped "
                             "world of counts and relations; the LLM and generator follow their CLIP's world")


def _add_profile(command: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup, what: str) -> None:
    command.add_argument("--profile", choices=PROFILES, default=None,
                         help=f"{what} (default: ${PROFILE_ENV}, else 'default')")


class _Schedulers:
    """The sampler names as argparse ``choices``, looked up on first use.

    They live in :mod:`llmimg.stages.generator.unet`, which takes seconds to import (torch); every
    command builds the whole parser, and ``llmimg --version`` should not wait for that.
    """

    def __contains__(self, name: object) -> bool:
        from llmimg.stages.generator.unet import SCHEDULERS

        return name in SCHEDULERS

    def __iter__(self):
        from llmimg.stages.generator.unet import SCHEDULERS

        return iter(SCHEDULERS)


def _add_generate(commands: argparse._SubParsersAction) -> None:
    # Defaults of None stand for the pipeline's DEFAULT_STEPS and DEFAULT_SCHEDULER (read when the command runs,
    # for the same reason as _Schedulers); the help repeats their values and a test checks it stays true.
    gen = commands.add_parser(
        "generate", help="draw a prompt with the whole pipeline (CLIP, LLM, UNet) into PNG files",
        description="Draw a prompt: the LLM writes a full description of it and the UNet draws that "
        "description (with --no-llm, the prompt itself). Writes FILE.png, or FILE-1.png ... FILE-B.png with "
        "--batch B; image k is drawn with the seed S+k-1 alone (its noise and its description), so it is the "
        "same whatever the batch size. "
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


def _add_pretrained(commands: argparse._SubParsersAction) -> None:
    pre = commands.add_parser("pretrained", help="the pretrained world's models (Colab): measure their real sizes "
                              "offline")
    actions = pre.add_subparsers(dest="pretrained_command", metavar="ACTION", required=True)
    dry = actions.add_parser(
        "dry-run", help="build the real architectures with random weights and measure memory and time",
        description="Build each model the pretrained pipeline downloads (open_clip ViT-B-32, Qwen2.5-0.5B-Instruct's "
        "dimensions, SD-Turbo's UNet, VAE and text encoder) from its published configuration with random weights, "
        "no download, and measure per stage and in all: parameters, weight memory in float32 and float16, peak "
        "memory (each stage in a fresh process) and the median time per call, at 1-4 denoising steps. Reports "
        "whether the whole pipeline fits a T4 (15 GiB usable) in float16. Full size on a CPU: about 10 minutes "
        "and 7 GB of memory.")
    dry.add_argument("--steps", nargs="+", type=_positive(50), default=[1, 2, 4], metavar="N",
                     help="denoising step counts to time, 1-50 each (default: 1 2 4)")
    dry.add_argument("--size", type=_positive(2048), default=None, metavar="PX",
                     help="image side in pixels, a multiple of 32 (default 512, sd-turbo's)")
    dry.add_argument("--device", choices=("cpu", "cuda"), default=None,
                     help="where to compute (default: CUDA if available, else the CPU)")
    dry.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                     help="weights' dtype (default: float16 on CUDA, float32 on the CPU; float16 needs CUDA)")
    dry.add_argument("--repeats", type=_positive(100), default=3, metavar="N",
                     help="timed calls per setting after one warm-up; the median is reported (default 3)")
    dry.add_argument("--record", action="store_true",
                     help="also write the result to data/experiments/pretrained-dry-run-<device>.json")
    dry.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    dry.add_argument("--shrink", action="store_true", help=argparse.SUPPRESS)  # tiny dimensions: the tests' run
    off = actions.add_parser(
        "offline", help="train the offline mode's models and save them as hub-format folders",
        description="The offline mode of notebook 09: the pretrained pipeline's three models trained on ShapesWorld "
        "(the course's CLIP, a Qwen2 chat writer, a small Stable Diffusion pipeline), taken from the model cache "
        "(trained first when missing, or again with --force) and saved under DIR as clip/, llm/ and generator/, "
        "which llmimg.pipelines.pretrained.load reads as it reads hub models.")
    off.add_argument("-o", "--output-dir", type=Path, required=True, metavar="DIR",
                     help="folder to save into (new, empty, or holding these models from before)")
    off.add_argument("--profile", choices=PROFILES, default=None, help="model sizes (default: $LLMIMG_PROFILE, "
                     "else default)")
    off.add_argument("--force", action="store_true", help="retrain the writer and the generator")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="llmimg", description="LLM-guided text-to-image generation, from the math to joint training.")
    parser.add_argument("--version", action="version", version=f"llmimg {package_version()}")
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
    sets = data_cmds.add_parser("eval-sets", help="write the evaluation protocol's prompt sets (data/eval/*.json)",
                                description="Regenerate the GenEval-shaped world's fixed prompt sets, one file per "
                                "split (val.json, heldout.json), from the function that defines them; with --check, "
                                "write nothing and exit 1 if the files there differ from the regeneration.")
    sets.add_argument("-o", "--output-dir", type=Path, default=None, metavar="DIR",
                      help="folder of the files (default: the checkout's data/eval)")
    sets.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on any difference")

    _add_generate(commands)

    train = commands.add_parser("train", help="train a stage (or load it if the cache has it)",
                                description="Train a stage for a profile and keep it in the model cache; the "
                                "stages it needs are trained first. A cached stage is not retrained unless --force.")
    train.add_argument("stage", choices=(*STAGES, "distilled", "joint", "writer"))
    train.add_argument("--steps", type=int, choices=(1, 2, 4), default=1,
                       help="distilled: the student's sampling steps (default 1)")
    train.add_argument("--regime", choices=tuple(dict.fromkeys(JOINT_REGIMES + JOINT_RL_REGIMES)), default=None,
                       help="joint: the training regime (required for joint; see notebook 07): "
                            f"{', '.join(JOINT_REGIMES)} on today's world; {', '.join(JOINT_RL_REGIMES)} "
                            "with --world geneval")
    train.add_argument("--seed", type=_seed, default=0, help="joint --world geneval: the training seed (default 0)")
    train.add_argument("--lam", type=_non_negative, default=None,
                       help="joint on today's world: λ, the weight of the LLM's loss in its joint and cycle "
                            "regimes (default 1)")
    _add_profile(train, "model size and training length")
    _add_world(train)
    train.add_argument("--force", action="store_true", help="retrain even if the cache has this stage")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")

    evaluate = commands.add_parser("eval", help="evaluate a trained stage (training it first if needed)",
                                   description="Evaluate a stage on held-out ShapesWorld data; with --json print "
                                   "one JSON object (keys: see the README).")
    evaluate.add_argument("stage", choices=(*STAGES, "pipeline", "joint"))
    _add_profile(evaluate, "which trained stage")
    _add_world(evaluate)
    evaluate.add_argument("--n", type=_positive(100_000), default=None,
                          help="held-out examples to evaluate on (default: the profile's); the pipeline of the "
                               "geneval world: prompts per category of each prompt set (default: all 100)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--samples", type=Path, default=None, metavar="FILE.png",
                          help="the pipeline of the geneval world: also save a figure of the first val prompt of "
                               "each category, drawn with the LLM and by the generator trained on prompts, each "
                               "image judged")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bars")

    experiment = commands.add_parser("experiment", help="run a recorded experiment (recipe search, seed spread, "
                                     "re-ranking)",
                                     description="generator-recipes: train each generator recipe (the default with "
                                     "a few fields changed) and record its ShapesEval learning curve in "
                                     "data/experiments/generator-recipes-<profile>.json; notebook 05 shows it. "
                                     "seed-spread: retrain each stage at other seeds and record its headline numbers. "
                                     "reranking: the pretrained pipeline's re-ranking modes judged by ShapesEval "
                                     "(data/experiments/reranking-<profile>.json; notebook 09 shows it).")
    experiment.add_argument("name", choices=("generator-recipes", "geneval-recipes", "clip-binding", "transfer",
                                             "seed-spread", "reranking", "decoding", "joint-rl-recipes"),
                            help="generator-recipes: the generator recipe search; clip-binding: the GenEval-shaped "
                                 "world's CLIP with and without hard negatives at --seeds "
                                 "(data/experiments/clip-binding-<profile>.json; notebook 03 shows it); "
                                 "transfer: generators conditioned on the trained LLM's states, the CLIP's and a "
                                 "GPT-2 learned from scratch, at --seeds (data/experiments/transfer-<profile>.json; "
                                 "notebook 06 shows it); geneval-recipes: the GenEval-shaped "
                                 "world's generator recipes on the protocol's val prompts, paired with its default "
                                 "(data/experiments/geneval-generator-recipes-<profile>.json); "
                                 "seed-spread: each stage retrained "
                                 "at --seeds and evaluated (recorded in data/experiments/seed-spread-<profile>"
                                 ".json; the reference tolerances use it); reranking: no re-ranking, the text's "
                                 "and the image's CLIP similarity to the prompt, and the prompt alone, on the same "
                                 "prompts and noise; decoding: the LLM writing with its checker, constrained one "
                                 "token a pass, and constrained with jump-forward, timed side by side "
                                 "(data/experiments/decoding-<profile>.json); joint-rl-recipes: reinforcement-"
                                 "learning recipes from the GenEval-shaped world's pipeline, each paired with the "
                                 "start (data/experiments/joint-rl-recipes-<profile>.json; notebook 07)")
    _add_profile(experiment, "model size and training length")
    experiment.add_argument("--only", nargs="+", metavar="RECIPE", help="run only these recipes (quote names "
                            "with spaces; default: all)")
    experiment.add_argument("--seeds", nargs="+", type=_seed, default=[0, 1, 2], metavar="S",
                            help="seed-spread, clip-binding and transfer: training seeds (default 0 1 2; 0 is the "
                                 "profile's own model)")
    experiment.add_argument("--steps", type=_positive(1_000_000), default=None,
                            help="optimiser steps for every recipe (default: the profile's)")
    experiment.add_argument("--world", choices=("trained", "tiny"), default="trained",
                            help="reranking: the pretrained pipeline on models trained on ShapesWorld (default), or "
                                 "on tiny random ones (the code path only; recorded apart: reranking-<profile>-tiny)")
    experiment.add_argument("--prompts", type=_positive(100_000), default=None,
                            help="reranking: ShapesWorld prompts to draw (default: the profile's)")
    experiment.add_argument("--candidates", type=_positive(64), default=None,
                            help="reranking: the LLM's candidates per prompt, at least 2 (default: the profile's)")
    experiment.add_argument("--json", action="store_true", help="print the whole record as one JSON object")
    experiment.add_argument("--no-progress", action="store_true", help="no progress bars")

    _add_pretrained(commands)

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


__all__ = ["JOINT_REGIMES", "JOINT_RL_REGIMES", "STAGES", "build_parser"]
