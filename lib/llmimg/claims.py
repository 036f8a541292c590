"""The experiments of notebook 06: do the pipeline's claims hold on ShapesWorld?

* **Caption upsampling** (claim 1): generators trained on short prompts or on full
  descriptions, each drawn from raw prompts and from LLM-upsampled ones,
  scored by ShapesEval on the held-out compositional split (:func:`upsampling_experiment`).
* **Speed** (claim 2): ShapesEval against denoising steps and against wall time, with
  the LLM stage (LLM + description generator) and without it (prompt generator on raw
  prompts) (:func:`speed_experiment`, :func:`time_to_quality`).
* **Knowledge transfer** (claim 3): one generator conditioned on the trained LLM's
  hidden states (frozen), one whose text encoder of the same shape is learned from
  scratch with it, scored along training (:func:`transfer_curve`).

Every model here is trained through the profile's cache, so the notebook trains once.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from llmimg import generator as gen_stage
from llmimg import llm as llm_stage
from llmimg.checkpoints import cached
from llmimg.config import Profile, get_profile
from llmimg.data import ShapesWorld
from llmimg.evaluation import clip_score, cmmd, shapes_eval, standard_error
from llmimg.text import check_prompt, encode
from llmimg.training import fit

# What each generator of the caption-upsampling experiment was trained on: the share of short prompts.
# (A third, an 80/20 mix, behaved like the description generator; at 1,200 steps a generator is 20
# minutes of a 2-core CPU, so the experiment keeps the two that answer the question.)
TRAINING_TEXTS: dict[str, float] = {"prompts": 1.0, "descriptions": 0.0}
ATTRIBUTES = ("shape", "colour", "size", "position")


# -- the generators of the caption-upsampling experiment ----------------------------
def text_variant(kind: str, profile: str | Profile | None = None) -> gen_stage.GeneratorConfig:
    """The profile's generator config trained on ``kind`` texts (a key of :data:`TRAINING_TEXTS`)."""
    if kind not in TRAINING_TEXTS:
        raise ValueError(f"unknown training texts {kind!r}; choose one of {', '.join(TRAINING_TEXTS)}")
    config = gen_stage.default_config(profile)
    if kind == "descriptions":
        return config  # the pipeline's own generator, learning curve included
    return replace(config, prompt_rate=TRAINING_TEXTS[kind], curve_every=0)


def variant_generator(kind: str, profile: str | Profile | None = None, *,
                      progress: bool = True) -> gen_stage.ShapesGenerator:
    """The generator trained on ``kind`` texts, from the cache (``descriptions`` is the pipeline's own)."""
    return gen_stage.get(profile, config=text_variant(kind, profile), progress=progress)


def eval_samples(n: int, split: str = "heldout", seed: int = 0, max_objects: int = 2) -> list[Any]:
    """``n`` ShapesWorld samples to prompt with (the held-out split: colour–shape pairs never trained on)."""
    return list(ShapesWorld(seed=seed, max_objects=max_objects).samples(n, split))


def score(generator: gen_stage.ShapesGenerator, texts: Sequence[str], prompts: Sequence[str],
          real_embeddings: torch.Tensor, *, num_inference_steps: int, seed: int = 0,
          scheduler: str = "dpm++") -> dict[str, float]:
    """Draw ``texts`` and score the images against ``prompts``: ShapesEval, CLIPScore and CMMD to real images.

    ``n`` is the number of prompts and ``all_correct_se`` the standard error of ``all_correct``.
    """
    images = generator.generate(list(texts), num_inference_steps=num_inference_steps, seed=seed,
                                scheduler=scheduler, check=False)
    judged = shapes_eval(images, list(prompts))
    clip = generator.text_encoder
    emb = clip.encode_image(images)
    return {"n": len(prompts), "all_correct": judged.all_correct,
            "all_correct_se": standard_error(judged.all_correct, len(prompts)),
            **{a: judged.per_attribute.get(a, float("nan")) for a in ATTRIBUTES},
            "count": judged.count_accuracy, "clip_score": clip_score(emb, clip.encode_text(list(prompts))),
            "cmmd": cmmd(emb, real_embeddings)}


def upsampling_experiment(llm: llm_stage.ShapesLLM, generators: dict[str, gen_stage.ShapesGenerator],
                          samples: Sequence[Any], *, num_inference_steps: int = 10, seed: int = 0):
    """Every generator drawn from the raw prompts and from the LLM's descriptions of them: a pandas table.

    The LLM writes one description per prompt (sampled, seeded) and every generator
    draws the same ones, from the same noise. Scores are always against the prompt.
    """
    import pandas as pd

    prompts = [s.prompt for s in samples]
    written = llm.upsample(prompts, seed=seed)
    real = llm.clip.encode_image(np.stack([s.image for s in samples]))
    rows = []
    for trained_on, gen in generators.items():
        for given, texts in (("raw prompt", prompts), ("LLM description", written)):
            rows.append({"trained on": trained_on, "drawn from": given,
                         **score(gen, texts, prompts, real, num_inference_steps=num_inference_steps, seed=seed)})
    return pd.DataFrame(rows)


# -- speed ------------------------------------------------------------------------------
def speed_experiment(llm: llm_stage.ShapesLLM, settings: dict[str, tuple[gen_stage.ShapesGenerator, bool]],
                     samples: Sequence[Any], steps: Sequence[int] = (1, 2, 4, 8, 16, 32), *, seed: int = 0):
    """ShapesEval and wall time per image of each setting at each number of denoising steps: a pandas table.

    ``settings`` maps a name to ``(generator, use_llm)``; with ``use_llm`` the LLM's
    upsampling runs (and is timed) before the generator draws its descriptions. Time
    is the whole batch's wall time, LLM included, divided by the number of prompts.
    """
    import pandas as pd

    prompts = [s.prompt for s in samples]
    real = llm.clip.encode_image(np.stack([s.image for s in samples]))
    rows = []
    for name, (gen, use_llm) in settings.items():
        for n_steps in steps:
            t0 = time.perf_counter()
            texts = llm.upsample(prompts, seed=seed) if use_llm else prompts
            images = gen.generate(texts, num_inference_steps=n_steps, seed=seed, check=False)
            ms = (time.perf_counter() - t0) * 1000 / len(prompts)
            judged = shapes_eval(images, prompts)
            emb = gen.text_encoder.encode_image(images)
            rows.append({"setting": name, "steps": n_steps, "ms_per_image": ms, "n": len(prompts),
                         "all_correct": judged.all_correct,
                         "all_correct_se": standard_error(judged.all_correct, len(prompts)), "cmmd": cmmd(emb, real)})
    return pd.DataFrame(rows)


def compare(name_a: str, a: float, name_b: str, b: float, n_a: int, n_b: int | None = None) -> str:
    """One sentence comparing two rates measured on ``n_a`` and ``n_b`` independent trials, with the verdict.

    The difference is called real when it is at least two standard errors of the
    difference, sqrt(se_a² + se_b²), and noise otherwise; the sentence says which.
    """
    se = float(np.hypot(standard_error(a, n_a), standard_error(b, n_b or n_a)))
    diff = a - b
    if se == 0.0:
        verdict = "no difference" if diff == 0 else "a real difference (no sampling noise at these rates)"
    elif abs(diff) >= 2 * se:
        verdict = f"a real difference ({abs(diff) / se:.1f} standard errors)"
    else:
        verdict = f"within the noise ({abs(diff) / se:.1f} standard errors)"
    return (f"{name_a} {a:.3f} vs {name_b} {b:.3f}: {100 * diff:+.1f} points "
            f"(standard error {100 * se:.1f}): {verdict}")


def time_to_quality(table: Any, target: float) -> dict[str, float | None]:
    """For each setting of a :func:`speed_experiment` table, the least ms per image reaching ``target`` all-correct.

    ``None`` when a setting never reaches it at the steps tried.
    """
    out: dict[str, float | None] = {}
    for name, rows in table.groupby("setting", sort=False):
        ok = rows[rows["all_correct"] >= target]
        out[name] = float(ok["ms_per_image"].min()) if len(ok) else None
    return out


# -- knowledge transfer -----------------------------------------------------------------
class GPT2TextEncoder(nn.Module):
    """A GPT-2 body's last hidden states as the generator's text encoder (the ``TextEncoder`` protocol).

    Texts are encoded as ``<bos> words <eos>`` like everywhere else; the ``<eos>`` state,
    which has read the whole text (GPT-2 is causal), is what the pooled condition uses.
    """

    def __init__(self, gpt2: nn.Module, tokenizer: Any, path: Path | None = None) -> None:
        super().__init__()
        self.gpt2, self.tokenizer, self.path = gpt2, tokenizer, path

    @property
    def width(self) -> int:
        return int(self.gpt2.config.n_embd)

    def states(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states (B, L, width) and mask of unchecked texts, with gradients when the body trains."""
        enc = encode(self.tokenizer, list(texts), check=False)
        device = next(self.gpt2.parameters()).device
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        return self.hidden(ids, mask), mask

    def hidden(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The states the generator reads of token ids: here the body's last layer."""
        return self.gpt2(input_ids=ids, attention_mask=mask).last_hidden_state

    @torch.no_grad()
    def token_states(self, texts: list[str], check: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if check:
            texts = [check_prompt(self.tokenizer, t) for t in texts]
        return self.states(texts)


class _TextConditioned(nn.Module):
    """The UNet with its text encoder: one module for ``fit`` (a frozen encoder has no trainable parameters)."""

    def __init__(self, unet: nn.Module, text: GPT2TextEncoder, frozen: bool) -> None:
        super().__init__()
        self.unet, self.text, self.frozen = unet, text, frozen
        text.requires_grad_(not frozen)


TRANSFER_KINDS = ("pretrained LLM", "from scratch")


def transfer_encoder(kind: str, llm: llm_stage.ShapesLLM) -> GPT2TextEncoder:
    """The trained LLM's GPT-2 body (a copy), or a fresh GPT-2 body of the same shape without dropout."""
    from transformers import GPT2Config, GPT2Model

    if kind not in TRANSFER_KINDS:
        raise ValueError(f"unknown text encoder {kind!r}; choose one of {', '.join(TRANSFER_KINDS)}")
    body = llm.lm.gpt2.transformer
    if kind == "pretrained LLM":
        return GPT2TextEncoder(copy.deepcopy(body).eval(), llm.tokenizer, llm.path)
    cfg = GPT2Config(**{**body.config.to_dict(), "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0})
    return GPT2TextEncoder(GPT2Model(cfg), llm.tokenizer)


def transfer_config(profile: str | Profile | None = None) -> tuple[gen_stage.GeneratorConfig, tuple[int, ...]]:
    """The generator recipe of the transfer runs and the training steps at which they are scored."""
    profile = get_profile(profile)
    config = gen_stage.default_config(profile)
    steps = profile.pick(smoke=8, default=600, full=6000)
    return (replace(config, train=replace(config.train, steps=steps, checkpoint_every=max(steps, 1))),
            tuple(sorted({max(1, steps * k // 4) for k in range(1, 5)})))


def train_transfer(kind: str, llm: llm_stage.ShapesLLM, config: gen_stage.GeneratorConfig,
                   eval_steps: Sequence[int], *, n_eval: int = 100, num_inference_steps: int = 10,
                   progress: bool = True) -> tuple[list[dict[str, float]], gen_stage.ShapesGenerator]:
    """Train a generator on ``kind`` text states and score it at ``eval_steps``: the curve and the final generator.

    Both kinds start from the same UNet weights and see the same batches; only the text
    encoder differs. Scores are ShapesEval of ``n_eval`` one-object validation
    descriptions (DPM-Solver++, ``num_inference_steps``, the config's guidance).
    """
    torch.manual_seed(config.train.seed + 1)
    text = transfer_encoder(kind, llm)
    torch.manual_seed(config.train.seed)  # the same UNet for both kinds
    model = _TextConditioned(gen_stage.build_unet(config, text.width), text, frozen=kind == "pretrained LLM")
    scheduler = gen_stage.build_scheduler(config)
    base_loss = gen_stage.make_loss_fn(config, scheduler)

    def loss(m: nn.Module, b: dict[str, Any]) -> torch.Tensor:
        if m.frozen:
            m.text.eval()  # fit() puts every submodule in training mode; the frozen body stays as trained
            with torch.no_grad():
                states, mask = m.text.states(b["texts"])
        else:
            states, mask = m.text.states(b["texts"])
        return base_loss(m.unet, {**b, "states": states, "mask": mask})

    descriptions = [s.description for s in eval_samples(n_eval, "val", seed=config.data_seed, max_objects=1)]

    def evaluate(step: int, m: nn.Module) -> dict[str, float] | None:
        if step not in eval_steps:
            return None
        snapshot = copy.deepcopy(m).eval()  # ShapesGenerator freezes what it is given
        gen = gen_stage.ShapesGenerator(snapshot.unet, scheduler, snapshot.text, config)
        judged = shapes_eval(gen.generate(descriptions, num_inference_steps=num_inference_steps, check=False),
                             descriptions)
        attrs = judged.per_attribute
        return {"all_correct": judged.all_correct, "mean_attribute": float(np.mean(list(attrs.values()))), **attrs}

    batches = gen_stage.make_batch_fn(config, None, gen_stage.make_bank(config))
    result = fit(model, batches, loss, config.train, desc=f"generator on {kind}", progress=progress,
                 on_step=evaluate)
    final = gen_stage.ShapesGenerator(result.model.unet, scheduler, result.model.text, config)
    return result.evaluations, final


def transfer_curve(kind: str, profile: str | Profile | None = None, *, progress: bool = True,
                   n_eval: int = 100) -> list[dict[str, float]]:
    """The ShapesEval-against-training-steps curve of ``kind``, trained once and kept in the profile's cache.

    Each point also holds ``n`` (``n_eval`` one-object descriptions) and ``all_correct_se``.
    """
    profile = get_profile(profile)
    llm = llm_stage.get(profile, progress=progress)
    config, eval_steps = transfer_config(profile)
    key = {"kind": kind, "generator": config.as_dict(), "llm": llm.path.name if llm.path else None,
           "eval_steps": list(eval_steps), "n_eval": n_eval}

    def build(out: Path, work: Path) -> None:
        curve, gen = train_transfer(kind, llm, config, eval_steps, n_eval=n_eval, progress=progress)
        gen.unet.save_pretrained(out / "unet", safe_serialization=True)
        gen.text_encoder.gpt2.save_pretrained(out / "text_encoder")
        (out / "curve.json").write_text(json.dumps(curve, indent=1), encoding="utf-8")

    folder = cached("transfer", key, build, profile=profile)
    curve = json.loads((folder / "curve.json").read_text(encoding="utf-8"))
    return [{**p, "n": n_eval, "all_correct_se": standard_error(p["all_correct"], n_eval)} for p in curve]


__all__ = ["ATTRIBUTES", "TRAINING_TEXTS", "TRANSFER_KINDS", "GPT2TextEncoder", "compare", "eval_samples", "score",
           "speed_experiment", "text_variant", "time_to_quality", "train_transfer", "transfer_config",
           "transfer_curve", "transfer_encoder", "upsampling_experiment", "variant_generator"]
