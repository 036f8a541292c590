"""The full-size dry run: the pretrained world's real architectures, random weights, measured.

Builds each model the pretrained pipeline downloads from its published configuration
(:mod:`~llmimg.pipelines.pretrained.architectures`) and measures, per stage and in all:
parameters (exact), weight memory in float32 and float16, peak memory, and the median
time per call, each stage called as :class:`~llmimg.pipelines.pretrained.PretrainedPipeline`
calls it. Random weights compute as fast as trained ones; only the words and pictures are
noise. ::

    from llmimg.pipelines.pretrained.dry_run import dry_run, format_table

    result = dry_run(steps=(1, 2, 4), repeats=3)   # minutes on a CPU, ~7 GB of memory
    print(format_table(result))

What each stage does per call:

* ``clip``: the re-ranking of 4 candidates against the prompt (5 texts, ``PretrainedCLIP.rank``)
  and one ``size``² image encoded for its CLIPScore;
* ``llm``: ``DescriptionWriter.write``: 4 candidates of exactly 60 new tokens, sampled as one
  batch with the KV cache, from the instruction prompt in Qwen's chat template;
* ``generator``: one ``size``² image at 1, 2 and 4 Euler steps, guidance 0 (sd-turbo's
  setting): the text encoder, the denoising loop and the VAE decoding.

Peak memory: with ``isolate=True`` (the default at full size) each stage runs in a fresh Python process,
and so does the whole pipeline (all three models resident, one end-to-end call); the peak
is that process's peak resident set (``ru_maxrss``) and ``baseline_rss_bytes`` its value
after the libraries were imported, before any model was built. On CUDA the float16 peak of
``torch.cuda.max_memory_allocated`` is reported too. ``isolate=False`` (the default with
``shrink``) runs everything in this process: its peaks are then this process's high-water
marks so far.
"""

from __future__ import annotations

import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from llmimg.pipelines.pretrained import architectures as arch

STEPS = (1, 2, 4)
GiB = 1024 ** 3
T4_USABLE_BYTES = 15 * GiB  # a T4 has 16 GB; about 15 GiB of it is left to tensors (nvidia-smi shows 15360 MiB)
PROMPT = "a red cube on a blue sphere"
# Four candidate descriptions of about the length the LLM writes (CLIP pads every text to 77 tokens anyway).
DESCRIPTIONS = [f"a glossy red cube resting on top of a large matte blue sphere in a sunlit studio, soft shadows, "
                f"shallow depth of field, photograph, variant {k}" for k in range(4)]
_MEMORY_NOTE = ("peak_rss_bytes: peak resident set of a fresh process that built the stage's models and ran the "
                "warm-up and timed calls (the whole pipeline: all models and one end-to-end call); "
                "baseline_rss_bytes: the same process after importing the libraries, before building anything")


def _rss_peak() -> int:
    """This process's peak resident set so far, in bytes (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _check(steps: Sequence[int], size: int, repeats: int, candidates: int, new_tokens: int) -> None:
    """Bad settings raise one-line ValueErrors before anything is built."""
    if not steps or any(isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 50 for s in steps):
        raise ValueError(f"steps must be whole numbers from 1 to 50, got {list(steps)}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 32 or size > 2048 or size % 32:
        raise ValueError(f"size must be a multiple of 32 from 32 to 2048 pixels, got {size!r}")
    limits = (("repeats", repeats, 100), ("candidates", candidates, 16), ("new_tokens", new_tokens, 512))
    for name, value, top in limits:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
            raise ValueError(f"{name} must be a whole number from 1 to {top}, got {value!r}")


class _Settings:
    """What one measurement needs, as JSON for a child process."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def json(self) -> str:
        return json.dumps(self.__dict__)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Milliseconds one call of ``fn`` takes, the device's queued work included."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) * 1000.0


def _median_ms(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    return statistics.median(_timed(fn, device) for _ in range(repeats))


def _weights(params: int) -> dict[str, int]:
    return {"params": params, "weights_fp32_bytes": 4 * params, "weights_fp16_bytes": 2 * params}


def _clip(s: _Settings, device: torch.device, dtype: torch.dtype) -> Any:
    import open_clip

    from llmimg.pipelines.pretrained.models import PretrainedCLIP

    model = arch.build_clip(s.shrink, s.seed).to(dtype)
    preprocess = open_clip.image_transform(arch.clip_image_size(s.shrink), is_train=False)
    return PretrainedCLIP(model, open_clip.get_tokenizer(arch.CLIP_MODEL), preprocess, device)


def _writer(s: _Settings, device: torch.device, dtype: torch.dtype) -> Any:
    from llmimg.pipelines.pretrained.models import DescriptionWriter
    from llmimg.pipelines.pretrained.tiny import _llm_tokenizer

    tokenizer = _llm_tokenizer(chat=True)  # Qwen's own cannot be fetched: byte-level, one token per byte
    model = arch.build_llm(s.shrink, s.seed, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id).to(dtype)
    # Random weights could end a candidate at any token: every call writes exactly new_tokens tokens.
    model.generation_config.min_new_tokens = s.new_tokens
    return DescriptionWriter(model, tokenizer, device)


def _generator(s: _Settings, device: torch.device, dtype: torch.dtype) -> Any:
    sd = arch.build_generator(s.shrink, s.seed).to(device, dtype)
    # sample_size only sets the image size a call draws by default (no weight depends on it); PretrainedPipeline
    # draws that default size.
    sd.unet.register_to_config(sample_size=s.size // sd.vae_scale_factor)
    return sd


def _image(size: int, seed: int) -> Any:
    """A noise picture of ``size``², standing for the generated image CLIP scores."""
    from PIL import Image

    from llmimg.core.seeding import numpy_rng

    return Image.fromarray(numpy_rng(seed, "eval").integers(0, 256, (size, size, 3), dtype="uint8"))


def _measure_clip(s: _Settings, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    clip = _clip(s, device, dtype)
    image = _image(s.size, s.seed)

    candidates = [[DESCRIPTIONS[k % len(DESCRIPTIONS)] for k in range(s.candidates)]]

    def call() -> None:
        clip.rank([PROMPT], candidates)
        clip.encode_images([image])

    call()  # warm-up
    return {"model": f"open_clip {arch.CLIP_MODEL}", **_weights(arch.parameters(clip.model)),
            "what": f"re-rank {s.candidates} candidates against the prompt ({s.candidates + 1} texts) and encode "
                    f"one {s.size}x{s.size} image",
            "ms_per_call": _median_ms(call, device, s.repeats)}


def _measure_llm(s: _Settings, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    writer = _writer(s, device, dtype)
    passes: list[int] = []
    hook = writer.model.register_forward_hook(lambda *_: passes.append(1))

    def call() -> None:
        passes.clear()
        writer.write([PROMPT], s.candidates, seeds=[s.seed], max_new_tokens=s.new_tokens)
        if len(passes) != s.new_tokens:  # one forward pass per new token: the length really was forced
            raise RuntimeError(f"the LLM made {len(passes)} forward passes for {s.new_tokens} new tokens")

    call()  # warm-up
    ms = _median_ms(call, device, s.repeats)
    hook.remove()
    prompt_tokens = len(writer.tokenizer(writer.request(PROMPT), add_special_tokens=False)["input_ids"])
    return {"model": "Qwen2ForCausalLM, Qwen2.5-0.5B-Instruct's dimensions", **_weights(arch.parameters(writer.model)),
            "what": f"{s.candidates} candidates x {s.new_tokens} new tokens, one batch, KV cache",
            "prompt_tokens": prompt_tokens, "new_tokens": s.new_tokens, "rows": s.candidates,
            "ms_per_call": ms, "ms_per_new_token": ms / s.new_tokens}


def _measure_generator(s: _Settings, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    from llmimg.core.seeding import torch_generator
    from llmimg.pipelines.pretrained.models import PretrainedConfig
    from llmimg.pipelines.pretrained.pipeline import PretrainedPipeline

    sd = _generator(s, device, dtype)
    # Drawing the prompt itself (upsample=False), the pipeline needs neither CLIP nor the LLM.
    pipe = PretrainedPipeline(None, None, sd, PretrainedConfig(guidance_scale=0.0))  # type: ignore[arg-type]

    def call(steps: int) -> dict[str, float]:
        out = pipe(DESCRIPTIONS[0], num_inference_steps=steps, guidance_scale=0.0, upsample=False,
                   generator=torch_generator(s.seed, "noise"))
        return out.timings

    call(s.steps[0])  # warm-up
    ms, parts = {}, {}
    for steps in s.steps:
        runs = [call(steps) for _ in range(s.repeats)]
        ms[str(steps)] = statistics.median(r["total"] for r in runs)
        parts[str(steps)] = {name: statistics.median(r[key] for r in runs) for name, key in
                             (("text_encoder", "clip_encode"), ("denoise", "denoise"), ("vae_decode", "postprocess"))}
    components = {name: _weights(arch.parameters(getattr(sd, name))) for name in arch.GENERATOR_PARTS}
    return {"model": "StableDiffusionPipeline, SD-Turbo's UNet, VAE and OpenCLIP-H text encoder",
            **_weights(sum(c["params"] for c in components.values())), "components": components,
            "what": f"one {s.size}x{s.size} image, Euler (trailing), guidance 0: text encoder, denoising, VAE decode",
            "ms_per_call": ms, "stage_ms": parts}


def _measure_all(s: _Settings, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """All three models resident and one end-to-end call at the most steps: the whole pipeline's peak memory."""
    from llmimg.core.seeding import torch_generator
    from llmimg.pipelines.pretrained.models import PretrainedConfig
    from llmimg.pipelines.pretrained.pipeline import PretrainedPipeline

    config = PretrainedConfig(num_candidates=s.candidates, max_new_tokens=s.new_tokens, guidance_scale=0.0)
    pipe = PretrainedPipeline(_clip(s, device, dtype), _writer(s, device, dtype), _generator(s, device, dtype), config)
    params = sum(arch.parameters(m) for m in (pipe.clip.model, pipe.writer.model, pipe.image_generator.unet,
                                               pipe.image_generator.vae, pipe.image_generator.text_encoder))
    steps = max(s.steps)
    out = pipe(PROMPT, num_inference_steps=steps, generator=torch_generator(s.seed, "noise"))
    return {**_weights(params), "rerank": config.rerank, "end_to_end_ms": {str(steps): out.timings["total"]},
            "end_to_end_stage_ms": {str(steps): {k: v for k, v in out.timings.items() if k != "total"}}}


def _import_libraries() -> None:
    """Import every module a measurement runs, so that the baseline memory includes the code."""
    import diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion  # noqa: F401
    import open_clip  # noqa: F401
    import transformers.models.clip.modeling_clip  # noqa: F401
    import transformers.models.qwen2.modeling_qwen2  # noqa: F401
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel  # noqa: F401

    import llmimg.pipelines.pretrained.pipeline  # noqa: F401


_MEASURES = {"clip": _measure_clip, "llm": _measure_llm, "generator": _measure_generator, "all": _measure_all}


def measure(stage: str, settings: _Settings) -> dict[str, Any]:
    """Build ``stage``'s models (``"all"``: the whole pipeline) in this process and measure them."""
    from llmimg.core.store import quiet_libraries
    from llmimg.pipelines.pretrained.models import resolve_precision

    device, dtype = resolve_precision(settings.device, settings.dtype)
    _import_libraries()  # before the baseline: the code the stage runs is not its memory
    baseline = _rss_peak()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    with quiet_libraries(), torch.inference_mode():
        result = _MEASURES[stage](settings, device, dtype)
    result.update(seconds=round(time.perf_counter() - t0, 1), baseline_rss_bytes=baseline, peak_rss_bytes=_rss_peak(),
                  peak_cuda_bytes=torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
                  reserved_cuda_bytes=torch.cuda.max_memory_reserved(device) if device.type == "cuda" else None,
                  threads=torch.get_num_threads())
    return result


def _child(settings_json: str, out_path: str) -> None:
    """The entry of a measuring child process: measure one stage, write the result as JSON to ``out_path``."""
    spec = json.loads(settings_json)
    result = measure(spec.pop("stage"), _Settings(**spec))
    Path(out_path).write_text(json.dumps(result))


def _in_child(stage: str, settings: _Settings) -> dict[str, Any]:
    """:func:`measure` in a fresh Python process, so that its peak memory is this stage's alone."""
    with tempfile.TemporaryDirectory(prefix="llmimg-dry-run-") as folder:
        out = Path(folder) / "result.json"
        spec = json.dumps({"stage": stage, **settings.__dict__})
        code = "import sys; from llmimg.pipelines.pretrained.dry_run import _child; _child(sys.argv[1], sys.argv[2])"
        done = subprocess.run([sys.executable, "-c", code, spec, str(out)], capture_output=True, text=True)
        if done.returncode != 0 or not out.exists():
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            raise RuntimeError(f"the dry run of the {stage} stage failed in its process: "
                               f"{lines[-1] if lines else f'exit status {done.returncode}'}")
        return json.loads(out.read_text())


def t4_fit(total: dict[str, Any], measured_dtype: str) -> dict[str, Any]:
    """Whether the whole pipeline fits a T4 (15 GiB usable) in float16, from the ``total`` measurement.

    On CUDA the need is the measured float16 peak of ``max_memory_allocated`` (weights
    included). On the CPU it is the float16 weights plus the activations measured there:
    the whole pipeline's peak resident set less the libraries' baseline and the weights as
    held (activations at ``measured_dtype``'s size, about twice float16's: an upper bound).
    """
    if total.get("peak_cuda_bytes") is not None and measured_dtype == "float16":
        need, basis = total["peak_cuda_bytes"], ("measured: torch.cuda.max_memory_allocated in float16 with all "
                                                 "models resident and one end-to-end call; the CUDA context "
                                                 "(a few hundred MB) comes on top")
        activations = need - total["weights_fp16_bytes"]
    else:
        size = torch.finfo(getattr(torch, measured_dtype)).bits // 8
        activations = max(total["peak_rss_bytes"] - total["baseline_rss_bytes"] - size * total["params"], 0)
        need = total["weights_fp16_bytes"] + activations
        basis = (f"estimated from the {measured_dtype} CPU run: float16 weights plus the activation memory measured "
                 f"there (peak resident set less the libraries' baseline and the weights), which at "
                 f"{measured_dtype} overstates float16's; the CUDA context (a few hundred MB) comes on top")
    return {"usable_bytes": T4_USABLE_BYTES, "weights_fp16_bytes": total["weights_fp16_bytes"],
            "activations_bytes": activations, "needed_bytes": need, "margin_bytes": T4_USABLE_BYTES - need,
            "margin_fraction": round((T4_USABLE_BYTES - need) / T4_USABLE_BYTES, 3), "fits": need <= T4_USABLE_BYTES,
            "basis": basis}


def dry_run(*, steps: Sequence[int] = STEPS, size: int | None = None, device: str | torch.device | None = None,
            dtype: str | torch.dtype | None = None, repeats: int = 3, candidates: int = 4, new_tokens: int = 60,
            seed: int = 0, shrink: bool = False, isolate: bool | None = None,
            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build the real architectures with random weights, measure them and return the record (see the module).

    ``size``: image side in pixels (default 512; 32 when ``shrink``); ``device``/``dtype``:
    as :func:`~llmimg.pipelines.pretrained.load` takes them (float16 on CUDA, float32 on the
    CPU by default); ``repeats``: timed calls per setting after one warm-up (the median is
    reported); ``shrink``: the same code on tiny dimensions (seconds, for tests);
    ``isolate``: each stage in a fresh process (honest peak memory; see the module), by
    default unless ``shrink``;
    ``progress``: called with a line before each stage.
    """
    from llmimg.core.config import describe_environment
    from llmimg.pipelines.pretrained.models import resolve_precision

    size = (32 if shrink else 512) if size is None else size
    isolate = not shrink if isolate is None else isolate
    steps = sorted(set(steps))
    _check(steps, size, repeats, candidates, new_tokens)
    device_, dtype_ = resolve_precision(device, dtype)
    dtype_name = str(dtype_).removeprefix("torch.")
    settings = _Settings(steps=steps, size=size, device=str(device_), dtype=dtype_name, repeats=repeats,
                         candidates=candidates, new_tokens=new_tokens, seed=seed, shrink=shrink)
    run = _in_child if isolate else measure
    load_start = [round(x, 2) for x in os.getloadavg()]  # timings on a shared machine mean little when it is busy
    stages = {}
    for stage in (*arch.STAGES, "all"):
        if progress:
            progress(f"dry run: {'the whole pipeline' if stage == 'all' else stage} ...")
        stages[stage] = run(stage, settings)
    total = stages.pop("all")
    total["ms_per_call"] = {str(k): stages["clip"]["ms_per_call"] + stages["llm"]["ms_per_call"]
                            + stages["generator"]["ms_per_call"][str(k)] for k in steps}
    env = describe_environment()
    what = ("the pretrained pipeline's real architectures built from their published configurations with random "
            "weights (no download), measured" + (" (shrunk: tiny dimensions, a test run)" if shrink else ""))
    return {"what": what,
            "date": datetime.date.today().isoformat(), "device": str(device_), "gpu": env["gpu"] if device_.type ==
            "cuda" else None, "dtype": dtype_name, "torch": torch.__version__, "threads": stages["clip"]["threads"],
            "python": env["python"], "platform": env["platform"], "packages": env["packages"],
            "cpu_count": os.cpu_count(), "load_average": {"start": load_start,
                                                          "end": [round(x, 2) for x in os.getloadavg()]},
            "settings": {**settings.__dict__, "isolated": isolate},
            "memory_method": _MEMORY_NOTE if isolate else "in one process: peaks are its high-water marks so far",
            "ms_method": f"median of {repeats} calls after one warm-up; total ms_per_call: the stages' medians added",
            "stages": stages, "total": total, "t4_fit": t4_fit(total, dtype_name)}


def format_table(result: dict[str, Any]) -> str:
    """The record as a readable table: one row per stage and the total, then the T4 fit."""
    steps = [str(s) for s in result["settings"]["steps"]]
    rows = [(name, r) for name, r in result["stages"].items()] + [("total", result["total"])]
    gpu = any(r.get("peak_cuda_bytes") is not None for _, r in rows)
    head = (f"{'stage':<10}{'params':>14}{'fp32 GB':>9}{'fp16 GB':>9}{'peak RSS GB':>13}"
            + (f"{'peak CUDA GB':>14}" if gpu else "") + "  ms per call" + (f" (steps {', '.join(steps)})"))
    lines = [f"dry run on {result['device']}" + (f" ({result['gpu']})" if result.get("gpu") else "")
             + f", {result['dtype']}, {result['threads']} threads, torch {result['torch']}, {result['date']}",
             f"{result['settings']['size']}x{result['settings']['size']} images, {result['ms_method']}", head]
    for name, r in rows:
        ms = r["ms_per_call"]
        times = "  ".join(f"{ms[s]:,.0f}" for s in steps) if isinstance(ms, dict) else f"{ms:,.0f}"
        lines.append(f"{name:<10}{r['params']:>14,}{r['weights_fp32_bytes'] / 1e9:>9.2f}"
                     f"{r['weights_fp16_bytes'] / 1e9:>9.2f}{r['peak_rss_bytes'] / 1e9:>13.2f}"
                     + (f"{(r['peak_cuda_bytes'] or 0) / 1e9:>14.2f}" if gpu else "") + f"  {times}")
    fit = result["t4_fit"]
    lines.append(f"T4 (15 GiB usable): needs {fit['needed_bytes'] / GiB:.2f} GiB "
                 f"({fit['weights_fp16_bytes'] / GiB:.2f} float16 weights + {fit['activations_bytes'] / GiB:.2f} "
                 f"activations): {'fits' if fit['fits'] else 'does NOT fit'}, margin {fit['margin_bytes'] / GiB:.2f} "
                 f"GiB ({fit['margin_fraction']:.0%}); {fit['basis']}")
    return "\n".join(lines)


def write_record(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write the record as indented JSON, atomically."""
    from llmimg.core.folders import atomic_write

    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    return path


def record_path(device: str = "cpu") -> Path:
    """Where ``llmimg pretrained dry-run --record`` keeps the run on ``device`` (the experiment records folder)."""
    from llmimg.core.config import experiments_dir

    return experiments_dir() / f"pretrained-dry-run-{device}.json"


def load_record(device: str = "cpu") -> dict[str, Any]:
    """The recorded dry run on ``device``; a missing or unreadable record is a one-line error naming the remedy."""
    path = record_path(device)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise FileNotFoundError(f"no readable dry-run record at {path.name!r} ({type(err).__name__}); make it with "
                                f"'llmimg pretrained dry-run --device {device} --record'") from None


__all__ = ["STEPS", "T4_USABLE_BYTES", "dry_run", "format_table", "load_record", "measure", "record_path", "t4_fit",
           "write_record"]
