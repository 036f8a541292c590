"""The commands that train and evaluate models: ``train``, ``eval`` and ``experiment``."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from pathlib import Path

from llmimg.cli.parser import JOINT_REGIMES, JOINT_RL_REGIMES


def _stage(name: str):
    """The module that trains and loads ``name``: a stage, the pipeline, the distillation or the offline writer."""
    import importlib

    return importlib.import_module({"clip": "llmimg.stages.clip", "llm": "llmimg.stages.llm",
                                    "generator": "llmimg.stages.generator", "pipeline": "llmimg.pipelines.shapes",
                                    "distilled": "llmimg.speed.distillation",
                                    "writer": "llmimg.pipelines.pretrained.offline.writer"}[name])


def _shown(path: Path, where: str = " in the model cache") -> str:
    """A path as a user can find it: relative to the working folder when inside it, else its last two parts."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return f"{path.parent.name}/{path.name}{where}"


def train_command(args: argparse.Namespace) -> int:
    import time

    t0 = time.perf_counter()
    if args.world != "shapes":
        _check_world_stage("train", args.stage)
    if args.stage == "joint":
        return _train_joint_rl(args) if args.world == "geneval" else _train_joint(args)
    if (args.regime, args.lam, args.seed) != (None, None, 0):
        raise SystemExit("llmimg train: --regime, --lam and --seed are for 'llmimg train joint' only")
    options = {"steps": args.steps} if args.stage == "distilled" else {}
    if args.world != "shapes":
        options["world"] = args.world
    model = _stage(args.stage).get(args.profile, force=args.force, progress=not args.no_progress, **options)
    manifest = model.manifest
    world = "" if args.world == "shapes" else f", {args.world} world"
    print(f"{args.stage} ({model.path.parent.name} profile{world}) ready in {time.perf_counter() - t0:.0f} s: "
          f"{_shown(model.path)}")
    metrics, source = manifest.metrics, ""
    if not metrics and manifest.curve:  # the generator: the last point of its learning curve
        metrics = manifest.curve[-1]
        source = f" (on {metrics['n']} one-object val descriptions)"
    if metrics:
        print(f"held-out metrics{source}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()
                                                         if isinstance(v, float) and k != "train_seconds"))
    return 0


def _train_joint(args: argparse.Namespace) -> int:
    """``llmimg train joint``: one regime, trained and scored; under ``accelerate launch`` on every process."""
    from accelerate import PartialState

    from llmimg.research import joint

    if args.regime is None:
        raise SystemExit(f"llmimg train joint: choose a regime with --regime ({', '.join(JOINT_REGIMES)})")
    if args.regime not in JOINT_REGIMES:
        raise SystemExit(f"llmimg train joint: {args.regime} is a regime of the GenEval-shaped world; add "
                         "--world geneval")
    if args.seed:
        raise SystemExit("llmimg train joint: --seed is for the GenEval-shaped world's regimes (--world geneval)")
    state = PartialState()
    if state.num_processes > 1:
        return _train_joint_distributed(args, state)
    result = joint.run(args.regime, args.profile, lam=args.lam, progress=not args.no_progress, force=args.force)
    m = result.metrics
    print(f"joint training, {args.regime} regime ({result.path.parent.name} profile): {result.config.train.steps} "
          f"optimiser steps of {result.config.train.batch_size} in {result.train_seconds:.0f} s: {_shown(result.path)}")
    print(", ".join(f"{k} {m[k]:.3f} ± {m[k + '_se']:.3f}" for k in joint.METRICS) + f" (n = {m['n']})")
    return 0


def _train_joint_rl(args: argparse.Namespace) -> int:
    """``llmimg train joint --world geneval``: one regime and seed from the competent pipeline, trained and scored;
    under ``accelerate launch`` on every process (the main one scores it and prints JSON)."""
    from accelerate import PartialState

    from llmimg.research.joint import rl

    if args.regime not in JOINT_RL_REGIMES:
        raise SystemExit(f"llmimg train joint --world geneval: choose a regime with --regime "
                         f"({', '.join(JOINT_RL_REGIMES)})")
    if args.lam is not None:
        raise SystemExit("llmimg train joint: --lam is for today's world's joint and cycle regimes "
                         "(without --world geneval)")
    state = PartialState()
    if state.num_processes > 1:
        # A stage trained by one process while the others wait for it would hang them: the start must be cached.
        if not rl.start_is_cached(args.profile):
            raise SystemExit("llmimg train joint: train the GenEval-shaped world's pipeline on one process first "
                             "(llmimg train generator --world geneval), then launch on several")
        llm, generator = rl.start(args.profile, progress=False)
        config = rl.default_config(args.profile, args.regime, args.seed)
        result = rl.train(config, llm, generator, progress=not args.no_progress)
        if state.is_main_process:
            metrics = rl.evaluate(result.model.writer(), result.model.image_generator(), rl.eval_size(args.profile))
            print(json.dumps({args.regime: {"seed": args.seed, "val": metrics["val"]["overall"],
                                            "heldout": metrics["heldout"]["overall"], "train_seconds": result.seconds,
                                            "optimizer_steps": config.train.steps,
                                            "processes": state.num_processes}}))
        return 0
    result = rl.run(args.regime, args.profile, args.seed, progress=not args.no_progress, force=args.force)
    m, c = result.metrics, result.config
    rows = (f"{c.train.batch_size} rows of data" if args.regime in rl.SUPERVISED
            else f"{c.prompts_per_step} prompts x {c.group_size}")
    print(f"joint training, {args.regime} regime, seed {args.seed} ({result.path.parent.name} profile, GenEval-shaped "
          f"world): {c.train.steps} optimiser steps of {rows} in {result.train_seconds:.0f} s: {_shown(result.path)}")
    for split in ("val", "heldout"):
        o = m[split]["overall"]
        print(f"{split} overall {o['rate']:.3f} ± {o['se']:.3f} ({o['n_prompts']} prompts, {o['n_images']} images)")
    print(f"stricter judge {m['strict']['rate']:.3f}, CMMD to real renders {m['cmmd']:.4f}, first-draw faithfulness "
          f"{m['faithfulness']['rate']:.3f}, open-attribute TV {m['planner_tv']['open_attribute_tv']:.3f}")
    return 0


def _train_joint_distributed(args: argparse.Namespace, state) -> int:
    """One regime on several processes (``accelerate launch -m llmimg train joint ...``); the main one scores it."""
    from llmimg.core.config import get_profile
    from llmimg.research import joint

    config = joint.default_config(args.profile, args.regime, **({} if args.lam is None else {"lam": args.lam}))
    # Every stage fit() trains joins the processes' DDP group: a starting model missing from the cache
    # would be trained by one process while the others wait for it, forever.
    if not joint.start_is_cached(args.profile):
        raise SystemExit(f"llmimg train joint: train the starting models on one process first "
                         f"(llmimg train joint --regime {args.regime} --profile {get_profile(args.profile).name}), "
                         "then launch on several")
    begin = joint.start(args.profile, progress=False)
    result = joint.train(config, begin, progress=not args.no_progress)
    if state.is_main_process:
        llm, image_generator = joint.stages(result.model)
        print(json.dumps({args.regime: {**joint.evaluate(llm, image_generator, joint.eval_size(args.profile)),
                                        "train_seconds": result.seconds, "optimizer_steps": config.train.steps,
                                        "processes": state.num_processes}}))
    return 0


def eval_command(args: argparse.Namespace) -> int:
    from llmimg.core.config import get_profile

    if args.samples is not None and (args.stage, args.world) != ("pipeline", "geneval"):
        raise SystemExit("llmimg eval: --samples draws the protocol's prompts: use it with 'pipeline --world geneval'")
    if args.world != "shapes":
        _check_world_stage("eval", args.stage)
        if args.stage == "pipeline":
            return _eval_protocol(args)
        if args.stage == "joint":
            return _eval_joint_rl(args)
    if args.stage == "joint":
        from llmimg.research import joint

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
    n = args.n or get_profile(args.profile).size(f"{args.stage}.eval_n")
    minimum = getattr(stage, "MIN_EVAL_N", 1)
    if n < minimum:  # refused before anything is trained
        raise ValueError(f"llmimg eval {args.stage}: --n must be at least {minimum}, got {n}")
    model = stage.get(args.profile, progress=not args.no_progress, world=args.world)
    metrics = {"stage": args.stage, "profile": get_profile(args.profile).name, "world": args.world,
               **stage.evaluate(model, n=n)}
    if args.json:
        print(json.dumps(metrics))
    else:
        for key, value in metrics.items():
            print(f"{key:>32}: {value:.4f}" if isinstance(value, float) else f"{key:>32}: {value}")
    return 0


def _check_world_stage(command: str, stage: str) -> None:
    if stage not in ("clip", "llm", "generator", "pipeline", "joint"):
        raise SystemExit(f"llmimg {command}: --world is for clip, llm, generator, pipeline and joint; {stage} is "
                         "trained on today's world only")


def _eval_joint_rl(args: argparse.Namespace) -> int:
    """``llmimg eval joint --world geneval``: every regime at every seed against the start and each other, paired."""
    from llmimg.research.joint import experiment

    if args.n is not None:
        raise SystemExit("llmimg eval joint: --n is fixed by the profile (every regime is scored on the same "
                         "prompts when it is trained)")
    out = experiment.record(args.profile, progress=not args.no_progress)
    if args.json:
        print(json.dumps(out))
        return 0
    start = out["start"]
    print(f"start: val {start['val']['overall']['rate']:.3f}, heldout {start['heldout']['overall']['rate']:.3f}")
    for regime, entry in out["summary"].items():
        parts = []
        for split in ("val", "heldout"):
            d = entry[split]["vs_start"]["overall"]
            parts.append(f"{split} {entry[split]['seed_mean']['mean']:.3f} ({d['difference']:+.3f} ± {d['se']:.3f} "
                         "vs start)")
        print(f"{regime:>13}: " + ", ".join(parts))
    for name, v in out["verdicts"].items():
        d = v["heldout"]["overall"]
        print(f"{name} (heldout overall): {d['difference']:+.3f} ± {d['se']:.3f}, {d['verdict']}")
    return 0


def _eval_protocol(args: argparse.Namespace) -> int:
    """``llmimg eval pipeline --world geneval``: the protocol's val and heldout prompt sets, LLM on and off, paired,
    and the generator trained on prompts (the fair arm without an LLM)."""
    from llmimg.cli.commands import output_files, write_pngs
    from llmimg.core.config import get_profile
    from llmimg.pipelines import protocol

    samples = output_files(args.samples, 1) if args.samples is not None else None  # checked before any training
    progress = not args.no_progress
    llm, gen, baseline = protocol.stages(args.profile, progress=progress)
    clip = llm.clip
    pipe, prompt_pipe = protocol.as_pipelines(llm, gen, baseline)
    n = args.n or get_profile(args.profile).size("pipeline.protocol_n")
    # Each stage's training time and the metrics its manifest keeps (the generator's: its curve's last point).
    stages = {name: {"train_seconds": m.seconds, "metrics": m.metrics or (m.curve[-1] if m.curve else {})}
              for name, m in (("clip", clip.manifest), ("llm", llm.manifest), ("generator", gen.manifest),
                              (protocol.PROMPT_TRAINED, baseline.manifest))}
    result = {"stage": "pipeline", "profile": get_profile(args.profile).name, "world": args.world, "stages": stages,
              **{split: protocol.evaluate_protocol(pipe, split, n_per_category=n, prompt_trained=prompt_pipe,
                                                   progress=progress)
                 for split in ("val", "heldout")}}
    if samples is not None:
        write_pngs([_figure_image(protocol.sample_figure(
            {"LLM on": (pipe, True), "no LLM: generator trained on prompts": (prompt_pipe, False)}))], samples)
    if args.json:
        print(json.dumps(result))
        return 0
    for split in ("val", "heldout"):
        r = result[split]
        print(f"{split} prompts ({r['n_prompts']} prompts × {r['images_per_prompt']} images):")
        print(f"  {'category':>14}  {'LLM on':>13}  {'LLM off':>13}  {'prompt-trained':>14}  paired verdicts")
        for category in ("overall", *r["llm_on"]["categories"]):
            cells = [r[k]["overall"] if category == "overall" else r[k]["categories"][category]
                     for k in ("llm_on", "llm_off", protocol.PROMPT_TRAINED)]
            print(f"  {category:>14}  " + "  ".join(f"{c['rate']:.3f} ± {c['se']:.3f}" for c in cells)
                  + f"   {r['paired'][category]['verdict']}; {r['paired_prompt_trained'][category]['verdict']}")
        f = r["planner_faithful"]["all"]
        print(f"  planner faithful (with its checker): {f['rate']:.3f} ± {f['se']:.3f} (n = {f['n']})")
    return 0


def _figure_image(fig):
    """A matplotlib figure as a PIL image (closed afterwards)."""
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    fig.canvas.draw()
    image = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    plt.close(fig)
    return image


def _report(args: argparse.Namespace, record: dict, path: Path, lines: Iterable[str], note: str = "") -> int:
    """What every ``llmimg experiment`` prints: with --json the whole record as one JSON object, else where it was
    recorded (and ``note``) and one line per result."""
    if args.json:
        print(json.dumps(record))
        return 0
    print(f"recorded in {_shown(path, where='')}" + (f" ({note})" if note else ""))
    for line in lines:
        print(f"  {line}")
    return 0


def experiment_command(args: argparse.Namespace) -> int:
    """``llmimg experiment NAME``: run the named experiment (the parser admits only known names) and report it."""
    handlers = {"reranking": _reranking, "geneval-recipes": _geneval_recipes, "clip-binding": _clip_binding,
                "transfer": _transfer, "seed-spread": _seed_spread, "generator-recipes": _generator_recipes,
                "decoding": _decoding, "joint-rl-recipes": _joint_rl_recipes}
    return handlers[args.name](args)


def _joint_rl_recipes(args: argparse.Namespace) -> int:
    from llmimg.research.joint import recipes

    record = recipes.run(args.profile, args.only, progress=not args.no_progress)
    lines = [f"start: val {record['start']['val']['rate']:.3f}, heldout {record['start']['heldout']['rate']:.3f}"]
    for name, r in record["recipes"].items():
        d = r["vs_start"]["heldout"]
        lines.append(f"{name:>32}: val {r['val']['rate']:.3f}, heldout {r['heldout']['rate']:.3f} "
                     f"({100 * d['diff']:+.1f} ± {100 * d['se']:.1f} points vs start), {r['train_seconds']:.0f} s")
    return _report(args, record, recipes.results_path(args.profile), lines)


def _decoding(args: argparse.Namespace) -> int:
    from llmimg.research import decoding

    record = decoding.run(args.profile, progress=not args.no_progress)
    batch, single, forced = record["batch"], record["single"], record["forced"]
    lines = [f"forced tokens: {forced['forced']} of {forced['tokens']} ({forced['fraction']:.3f}) in "
             f"{forced['n_descriptions']} val descriptions"]
    for mode, row in record["follows"].items():
        lines.append(f"{mode:>12}: follows the prompt {row['follows_prompt']:.3f} ± {row['follows_prompt_se']:.3f} "
                     f"(n = {row['n']}); batch of {batch['size']}: {batch[mode]['ms_median']:.1f} ms "
                     f"({batch[mode]['ms_min']:.1f}-{batch[mode]['ms_max']:.1f}), {batch[mode]['passes']} passes; "
                     f"one prompt: {single['median_ms'][mode]:.1f} ms")
    tv = record["tv"]
    lines.append(f"open attributes, TV to the oracle: constrained {tv['tv_a']:.3f}, checker {tv['tv_b']:.3f}, "
                 f"difference {tv['diff']:+.3f} ± {tv['se']:.3f} ({tv['verdict']})")
    planner = record["planner"]
    for mode in ("checker", "jump_forward"):
        row, timed = planner[mode], planner["batch"][mode]
        tv_row = row["open_attribute_tv"]
        lines.append(f"planner, {mode}: follows the prompt {row['follows_prompt']:.3f} ± "
                     f"{row['follows_prompt_se']:.3f} (n = {row['n']}), open-attribute TV "
                     f"{tv_row['open_attribute_tv']:.3f} ± {tv_row['open_attribute_tv_se']:.3f}; "
                     f"batch of {planner['batch']['size']}: {timed['ms_median']:.1f} ms, {timed['passes']} passes")
    return _report(args, record, decoding.results_path(args.profile), lines, f"{record['minutes']} min")


def _seed_spread(args: argparse.Namespace) -> int:
    from llmimg.research import seed_spread

    record = seed_spread.run(args.profile, args.seeds, progress=not args.no_progress)
    lines = [f"{name:>40}: " + "  ".join(f"{v:.4f}" for v in values) for name, values in record["numbers"].items()]
    return _report(args, record, seed_spread.results_path(args.profile), lines, f"{record['minutes']} min")


def _generator_recipes(args: argparse.Namespace) -> int:
    from llmimg.research import recipes

    record = recipes.run(args.profile, args.only, steps=args.steps, progress=not args.no_progress)
    lines = []
    for name, r in record["recipes"].items():
        last, two = (r["curve"][-1] if r["curve"] else {}), r.get("two_objects", {})
        lines.append(f"{name:>24}: {r['steps']} steps in {r['train_seconds'] or float('nan'):.0f} s, all-correct "
                     f"{last.get('all_correct', float('nan')):.3f} on {last.get('n', 0)} one-object and "
                     f"{two.get('all_correct', float('nan')):.3f} on {two.get('n', 0)} two-object val descriptions")
    return _report(args, record, recipes.results_path(args.profile), lines)


def _geneval_recipes(args: argparse.Namespace) -> int:
    from llmimg.research import geneval_recipes

    record = geneval_recipes.run(args.profile, progress=not args.no_progress)
    lines = []
    for name, r in record["recipes"].items():
        on = r["val"]["llm_on"]
        lines.append(f"{name:>36}: overall {on['overall']['rate']:.3f} ± {on['overall']['se']:.3f}, counting "
                     f"{on['categories']['counting']['rate']:.3f} ± {on['categories']['counting']['se']:.3f} "
                     "(LLM on)")
    lines += [f"{category}: {rows[category]['sentence']}" for rows in record["paired"].values()
              for category in ("overall", "counting")]
    return _report(args, record, geneval_recipes.results_path(args.profile), lines)


def _clip_binding(args: argparse.Namespace) -> int:
    from llmimg.research import clip_binding

    record = clip_binding.run(args.profile, args.seeds, progress=not args.no_progress)
    lines = [f"{arm:>24}: " + ", ".join(f"{m} {v['mean']:.3f} (seed sd {v['seed_sd']:.3f})" for m, v in metrics.items())
             for arm, metrics in record["summary"].items()]
    lines += [f"seed {row['seed']}, binding on val: {100 * row['diff']:+.1f} points (paired se "
              f"{100 * row['se']:.1f}): {row['verdict']}" for row in record["paired"]]
    return _report(args, record, clip_binding.results_path(args.profile), lines, f"n = {record['n']} per measure")


def _transfer(args: argparse.Namespace) -> int:
    from llmimg.research import transfer

    record = transfer.run(args.profile, args.seeds, progress=not args.no_progress)
    lines = [f"{kind:>15}, step {record['steps'][-1]}: " + ", ".join(
        f"{m} {v['mean']:.3f} (seed sd {v['seed_sd']:.3f})" for m, v in metrics.items())
        for kind, metrics in record["summary"].items()]
    lines += [f"seed {row['seed']}, step {row['step']}, {row['a']} - {row['b']}: {100 * row['diff']:+.1f} points of "
              f"mean attribute accuracy (paired se {100 * row['se']:.1f}): {row['verdict']}"
              for row in record["paired"] if row["step"] == record["steps"][-1]]
    return _report(args, record, transfer.results_path(args.profile), lines, f"n = {record['n']} images per point")


def _reranking(args: argparse.Namespace) -> int:
    from llmimg.research import reranking

    record = reranking.run(args.profile, world=args.world, n_prompts=args.prompts, n_candidates=args.candidates,
                           progress=not args.no_progress)
    lines = [f"{name:>7}: all-correct {row['all_correct']:.3f} ± {row['all_correct_se']:.3f} on {row['n']} "
             f"prompts  ({reranking.ROWS[name]})" for name, row in record["rows"].items()]
    lines += [line["sentence"] for line in record["paired"].values()]
    return _report(args, record, reranking.results_path(args.profile, args.world), lines,
                   f"{record['minutes']} min, {args.world} world")
