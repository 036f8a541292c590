"""The commands that run notebooks, draw images and measure speed: ``reproduce``, ``data preview``,
``data eval-sets``, ``generate`` and ``bench``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmimg.pipelines.shapes import ShapesPipeline


def write_pngs(images: list, files: list[Path]) -> None:
    """Write each image to its PNG file, all or none: every file is written beside its place first, then moved in.

    A full disk or an unwritable folder midway leaves none of the new files (and the
    files they would have replaced as they were): one :class:`StorageError` line.
    """
    import os
    import tempfile

    from llmimg.core.folders import current_umask, writing

    written: list[tuple[str, Path]] = []
    try:
        with writing(files[0].parent.resolve(), f"the image{'s' if len(files) > 1 else ''}"):
            for image, path in zip(images, files):
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
                written.append((tmp, path))
                with os.fdopen(fd, "wb") as f:
                    image.save(f, format="PNG")
                    f.flush()
                    os.fsync(f.fileno())
            mode = 0o666 & ~current_umask()  # mkstemp makes 0600 files; keep the usual permissions
            for tmp, path in written:
                os.chmod(tmp, mode)
                os.replace(tmp, path)
    finally:
        for tmp, _ in written:
            Path(tmp).unlink(missing_ok=True)


def _check_writable(folder: Path) -> None:
    """Raise if no file can be created in ``folder``, by creating one: permissions alone miss read-only mounts."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ValueError(f"cannot write into the folder {str(folder)!r} of the output file: "
                         f"{err.strerror or err}") from None


def reproduce_command(args: argparse.Namespace) -> int:
    from llmimg.core.config import project_root
    from llmimg.course import reference
    from llmimg.course.reproduce import changed_notebooks, discover_notebooks, reproduce
    from llmimg.research import clip_binding, seed_spread

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
        # The CLIP's seed spread is also measured by its binding experiment; seed-spread's own numbers come first.
        recorded = (seed_spread.load(args.profile) or {}).get("numbers", {})
        spread = {**clip_binding.seed_numbers(args.profile), **recorded}
        ref = reference.write_reference(root, args.profile, spread)
        print(f"wrote data/reference/{ref['profile']}.json: {len(ref['numbers'])} numbers"
              + (f"; without a measured spread, not checked: {', '.join(ref['unchecked'])}" if ref["unchecked"] else ""))
    if args.check or args.check_only:
        stems = None if only is None else [p.stem for p in discover_notebooks(root / "notebooks", only)]
        rows = reference.check(root, args.profile, notebooks=stems)
        print(reference.format_table(rows))
        return 0 if all(r.ok for r in rows) else 1
    return 0


def data_command(args: argparse.Namespace) -> int:
    """``llmimg data ACTION``: hand over to the action's command."""
    return eval_sets_command(args) if args.data_command == "eval-sets" else preview_command(args)


def eval_sets_command(args: argparse.Namespace) -> int:
    """``llmimg data eval-sets``: write the protocol's prompt sets, or (--check) compare them with a regeneration."""
    from llmimg.core.evaluation.protocol import EVAL_SPLITS, eval_set_path, make_eval_set, write_eval_sets

    if not args.check:
        for path in write_eval_sets(args.output_dir):
            print(f"wrote {path}")
        return 0
    differ = []
    for split in EVAL_SPLITS:
        path = eval_set_path(split, args.output_dir)
        if not path.is_file() or path.read_text(encoding="utf-8") != make_eval_set(split).to_json():
            differ.append(f"{path} {'is missing' if not path.is_file() else 'differs from the regeneration'}")
    for line in differ:
        print(line)
    if not differ:
        print(f"the prompt sets ({', '.join(EVAL_SPLITS)}) equal their regeneration")
    return 1 if differ else 0


def preview_command(args: argparse.Namespace) -> int:
    from llmimg.core.data import ShapesWorld
    from llmimg.core.viz import sample_grid

    files = output_files(args.output, 1)  # as generate: the folder must exist and be writable
    samples = list(ShapesWorld(seed=args.seed).samples(args.n, args.split))
    write_pngs([sample_grid(samples, cols=args.cols, caption=args.caption)], files)
    print(f"wrote {args.n} {args.split} samples (seed {args.seed}) to {args.output}")
    return 0


def output_files(output: Path, batch: int) -> list[Path]:
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
    from llmimg.pipelines import shapes

    if args.pipeline is None:
        return shapes.get(args.profile, progress=not args.no_progress)
    return shapes.ShapesPipeline.from_pretrained(args.pipeline)


def generate_command(args: argparse.Namespace) -> int:
    """``llmimg generate``: check the arguments, load the pipeline, draw every image, then write them all."""
    from llmimg.core.seeding import torch_generator
    from llmimg.core.text import check_unicode, normalise_prompt, train_tokenizer
    from llmimg.pipelines.shapes import DEFAULT_SCHEDULER, DEFAULT_STEPS

    check_unicode(args.prompt)  # the words are checked by the pipeline's own tokenizer, once it is loaded
    if args.pipeline is None:  # the profile's pipeline may be trained first: a prompt it cannot take is refused now
        normalise_prompt(train_tokenizer(), args.prompt)
    files = output_files(args.output, args.batch)

    steps, scheduler = args.steps or DEFAULT_STEPS, args.scheduler or DEFAULT_SCHEDULER
    pipe = _load_pipeline(args)
    pipe.use_scheduler(scheduler)
    # One generator per image, image k's from the seed S+k-1 alone: its noise and its description are the
    # ones a single call with that seed gives, whatever the batch.
    generators = [torch_generator(args.seed + k, "noise") for k in range(args.batch)]
    out = pipe([args.prompt] * args.batch, num_inference_steps=steps, guidance_scale=args.guidance,
               generator=generators, upsample=not args.no_llm)
    write_pngs(out.images, files)  # only now, and all or none: a failed generation writes nothing
    guidance = args.guidance if args.guidance is not None else pipe.config.stage_configs["generator"]["guidance_scale"]
    result = {"prompt": args.prompt, "descriptions": out.descriptions, "files": [str(f) for f in files],
              "timings_ms": {key: round(value, 3) for key, value in out.timings.items()}, "steps": steps,
              "guidance_scale": guidance, "scheduler": scheduler, "upsample": not args.no_llm,
              "seed": args.seed, "faithful": out.faithful}
    if args.json:
        print(json.dumps(result))
    else:
        _print_generated(result)
    return 0


def _print_generated(result: dict) -> None:
    """What ``generate`` did, in a few lines: each file with the text it shows, then the settings and stage timings."""
    source = "the LLM's description" if result["upsample"] else "the prompt, no LLM"
    kept = result["faithful"] or [True] * len(result["files"])
    for file, text, faithful in zip(result["files"], result["descriptions"], kept):
        unkept = "" if faithful else "; no draw of the LLM kept everything the prompt states: this is its last draw"
        print(f"wrote {file}: {text!r} ({source}{unkept})")
    print(f"settings: {result['steps']} {result['scheduler']} steps, guidance {result['guidance_scale']:g}, "
          f"seed {result['seed']}")
    ms = result["timings_ms"]
    stages = ", ".join(f"{key} {value:.1f}" for key, value in ms.items() if key != "total")
    print(f"timings (ms): {stages}; total {ms['total']:.1f}")


def bench_command(args: argparse.Namespace) -> int:
    from llmimg.core.data.stats import measure_throughput

    data = measure_throughput(n=args.n, repeats=args.repeats, threads=1)
    result = {"data_images_per_s": round(data["images_per_s"], 1),
              "data_images_per_s_min": round(data["images_per_s_min"], 1),
              "data_images_per_s_max": round(data["images_per_s_max"], 1),
              "data_threads": data["threads"]}
    if not args.no_pipeline:
        from llmimg.speed.bench import bench_pipeline

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
    print(f"  techniques on {r['technique_prompts']} prompts (median speed-up vs the default over "
          f"{r['timing_trials']} interleaved trials, timing noise {r['timing_noise']:.0%}; ShapesEval all-correct; "
          f"paired difference from the baseline):")
    for name, t in r["techniques"].items():
        keeps = "keeps" if t["keeps_baseline_quality"] else "loses"
        print(f"    {name:<28} {t['speedup']:5.2f}x  {t['all_correct']:.3f}  {100 * t['paired_difference']:+5.1f} "
              f"± {100 * t['paired_se']:.1f} points ({keeps})  ({t['what']})")
    f = r["fastest_setting"]
    if not f["meets_baseline_quality"]:
        print("  no setting kept the baseline's quality, not even the default; below, the fastest at the default's")
    print(f"  fastest at equal quality: {f['name']} ({f['what']}): {f['speedup_vs_baseline']:.0f}x the baseline, "
          f"{f['end_to_end_ms_batch_1']:.1f} ms at batch 1, {f['images_per_s']:.1f} images/s at batch 32, "
          f"all-correct {f['all_correct']:.3f} ± {f['all_correct_se']:.3f}; the LLM takes {f['llm_share']:.0%}; "
          f"{f['fraction_of_limit']:.1%} of this machine's limit ({f['limit_images_per_s']:.0f} images/s)")
    one = r["fastest_for_one"]
    print(f"  fastest for one prompt at equal quality: {one['name']} ({one['what']}): "
          f"{one['end_to_end_ms_batch_1']:.1f} ms")
