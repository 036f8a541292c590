"""The differentiable couplings from the competent pipeline: ``joint`` and ``cycle`` (notebook 07, issue 27).

The competent generator reads CLIP's text states of the description's *tokens*, so no
gradient reaches the LLM that wrote them: a token is a choice, not a number. The
coupled regimes open that path with a **straight-through** estimator. At every token of
the description the LLM reads (teacher-forced), its next-token distribution p is there;
the generator reads the one-hot of the data's token plus ``p - stopgrad(p)``: in the
forward pass exactly the tokens it was trained on (the start is unchanged), in the
backward pass the diffusion loss's gradient on the token's embedding, ⟨∂L/∂e, E_v⟩ for
each word v, reaches p and through it the LLM. The generator thus tells the LLM which
words would have made its image easier to draw: the gradient of
L_diff(I | D) + L_LM(D), the joint likelihood's two terms, with respect to both models.

* ``joint``: L_diff + L_LM on the same rows as ``separate`` (half captioning, half
  upsampling; the generator reads the description, the prompt or nothing, as it was
  trained), with the straight-through path on every row where it reads the description;
* ``cycle``: ``joint`` plus μ · L_cycle: the LLM captions the generator's clean-image
  estimate x̂₀ through the frozen CLIP image tower and must write D again, on the rows
  whose timestep is below :data:`CYCLE_MAX_T` of the schedule (where x̂₀ is still an
  image); gradients reach the UNet through x̂₀ (ITIT, CycleReward).

Both keep :class:`~llmimg.research.joint.rl.PipelinePolicy`'s per-model optimisers
(learning rates and gradient clipping of their own), so the generator's gradient does
not set the LLM's step size.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from llmimg.core.text import BOS_ID, EOS_ID, PAD_ID, encode
from llmimg.stages import clip as clip_stage
from llmimg.stages import generator as gen_stage
from llmimg.stages import llm as llm_stage

CYCLE_MAX_T = 0.5  # the cycle's rows: timesteps below half the schedule


def phrase_index(source: list[int], target: list[int], joiner: int) -> list[int] | None:
    """Where each token of ``target`` sits in ``source``, when the two name the same objects in another order.

    Both are ``<bos> phrase and phrase ... <eos>`` token ids (padding allowed at the end);
    the LLM writes objects in the prompt's order, the generator reads them in reading
    order. Returns ``index`` with ``target[j] == source[index[j]]`` for every token up to
    ``<eos>``, or None when the phrases differ.
    """
    def phrases(ids: list[int]) -> list[list[int]] | None:
        if not ids or ids[0] != BOS_ID or EOS_ID not in ids:
            return None
        out, current = [], []
        for position, token in enumerate(ids[1:ids.index(EOS_ID)], start=1):
            if token == joiner:
                out.append(current)
                current = []
            else:
                current.append(position)
        out.append(current)
        return out if all(out) else None  # an empty phrase is no description

    src, dst = phrases(source), phrases(target)
    if src is None or dst is None or len(src) != len(dst):
        return None
    free, index = list(range(len(src))), [0]
    for k, phrase in enumerate(dst):
        words = [target[p] for p in phrase]
        match = next((i for i in free if [source[p] for p in src[i]] == words), None)
        if match is None:
            return None
        free.remove(match)
        index += src[match]
        if k < len(dst) - 1:
            index.append(src[k][-1] + 1)  # the k-th "and" of the source (its position after the k-th phrase)
    return [*index, source.index(EOS_ID)]


def straight_through(input_ids: torch.Tensor, logits: torch.Tensor, attention_mask: torch.Tensor,
                     gain: float = 1.0) -> torch.Tensor:
    """One-hot rows (B, L, vocab) of ``input_ids`` whose gradient reaches the next-token ``logits`` (B, L - 1, vocab).

    The value is exactly ``one_hot(input_ids)``; the gradient with respect to a token's
    row reaches the distribution p = softmax(logits) that predicted it, times ``gain``.
    ``<bos>`` and the padding stay constant.
    """
    onehot = F.one_hot(input_ids, logits.shape[-1]).to(logits.dtype)
    p = logits.softmax(-1) * attention_mask[:, 1:, None].to(logits.dtype)
    return onehot + gain * F.pad(p - p.detach(), (0, 0, 1, 0))


def soft_token_states(clip: clip_stage.ShapesCLIP, input_ids: torch.Tensor, onehots: torch.Tensor,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's per-token text states of ``input_ids`` (what ``token_states`` gives), reading ``onehots`` @ E instead.

    The text tower is open_clip's own: a hook replaces its token embedding's output by
    ``onehots @ E``, equal to it in value when the rows are one-hot, differentiable in them.
    """
    embedding = clip.model.token_embedding
    # The rows are over the LLM's vocabulary: the tokenizer's words, which CLIP's table starts with (it may be longer).
    embeds = onehots.to(embedding.weight.dtype) @ embedding.weight[:onehots.shape[-1]]
    handle = embedding.register_forward_hook(lambda module, args, out: embeds)
    try:
        out = clip.model.forward_intermediates(text=input_ids, text_indices=1, normalize_intermediates=True,
                                               intermediates_only=True)
    finally:
        handle.remove()
    return out["text_intermediates"][-1], (input_ids != PAD_ID).long()


def generator_inputs(model: Any, b: dict[str, Any], logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The generator's text states and mask for batch ``b``, coupled to the LLM's ``logits`` where it reads D.

    Row k is coupled when the generator reads the description of the scene the LLM's row
    k writes (not the empty text, not the prompt). Returns the states, their mask and how
    many rows are coupled.
    """
    g, tokenizer = model.start_generator, model.start_llm.tokenizer
    enc = encode(tokenizer, b["texts"], check=False)
    ids = enc["input_ids"].to(logits.device)
    source = straight_through(b["input_ids"], logits, b["attention_mask"], model.config.coupling)
    onehots = F.one_hot(ids, logits.shape[-1]).to(logits.dtype)
    joiner = tokenizer.convert_tokens_to_ids("and")
    coupled = 0
    for k, text in enumerate(b["texts"]):
        index = phrase_index(b["input_ids"][k].tolist(), ids[k].tolist(), joiner) if text else None
        if index is not None:
            onehots[k, :len(index)] = source[k, index]
            coupled += 1
    states, mask = soft_token_states(g.text_encoder, ids, onehots)
    length = int(mask.sum(1).max())  # the longest text: padding is masked anyway (as the generator's batches do)
    return states[:, :length], mask[:, :length], coupled


def loss(model: Any, b: dict[str, Any]) -> torch.Tensor:
    """``joint`` (L_diff + L_LM, coupled straight through) or ``cycle`` (plus μ · L_cycle) on batch ``b``."""
    g, config = model.start_generator, model.start_generator.config
    context = b.get("context")
    context = None if context is None else context.to(b["z"].device)
    logits = model.lm.token_logits(b["z"], b["task"], b["input_ids"], b["attention_mask"], context)
    labels = b["input_ids"][:, 1:].masked_fill(b["attention_mask"][:, 1:] == 0, -100)
    lm = F.cross_entropy(logits.transpose(1, 2).float(), labels, ignore_index=-100)
    states, mask, coupled = generator_inputs(model, b, logits)
    noisy = g.scheduler.add_noise(b["latents"], b["noise"], b["timesteps"])
    pred = gen_stage.unet_output(model.unet, noisy, b["timesteps"], states, mask)
    diffusion = gen_stage.diffusion_loss(config, g.scheduler, pred, b)
    total, parts = diffusion + lm, {"diffusion": diffusion, "lm": lm}
    if model.config.regime == "cycle":
        abar = g.scheduler.alphas_cumprod.to(pred.device)[b["timesteps"]].view(-1, 1, 1, 1)
        parts["cycle"] = cycle(model, b, gen_stage.clean_estimate(config.prediction_type, noisy, pred, abar))
        total = total + model.config.cycle_weight * parts["cycle"]
    model.parts = {**{k: float(v.detach()) for k, v in parts.items()}, "coupled_rows": float(coupled)}
    return total


def cycle(model: Any, b: dict[str, Any], x0: torch.Tensor) -> torch.Tensor:
    """-log q(D | CLIP(x̂₀)): the LLM captions the UNet's clean-image estimate and must write D, on low-noise rows."""
    g, llm = model.start_generator, model.start_llm
    return caption_cycle(model.lm, llm.clip.model, llm.tokenizer, llm.config.read_context, b, x0,
                         CYCLE_MAX_T * g.config.num_train_timesteps, g.config.unshuffle)


def caption_cycle(lm: Any, clip_model: Any, tokenizer: Any, read_context: bool, b: dict[str, Any], x0: torch.Tensor,
                  max_timestep: float, unshuffle: int) -> torch.Tensor:
    """The cycle loss of both worlds' ``cycle`` regimes: ``lm`` captions x̂₀ through the frozen CLIP image tower.

    The rows are those whose timestep is below ``max_timestep`` and whose text is not
    empty; with none, a zero that keeps the graph.
    """
    rows = [k for k, (t, text) in enumerate(zip(b["timesteps"].tolist(), b["texts"])) if t < max_timestep and text]
    if not rows:
        return x0.sum() * 0.0
    pixels = clip_stage.preprocess(gen_stage.to_images(x0[rows], unshuffle))
    z = clip_model.encode_image(pixels, normalize=True)
    context = None
    if read_context:
        patches = clip_model.forward_intermediates(image=pixels, image_indices=1, intermediates_only=True,
                                                   normalize_intermediates=True, image_output_fmt="NLC")
        context = llm_stage.Context(patches=patches["image_intermediates"][-1])
    enc = encode(tokenizer, [b["texts"][k] for k in rows], check=False)
    return lm(z, llm_stage.task_ids("caption", len(rows), z.device), enc["input_ids"].to(z.device),
              enc["attention_mask"].to(z.device), context)


__all__ = ["CYCLE_MAX_T", "caption_cycle", "cycle", "generator_inputs", "loss", "phrase_index", "soft_token_states",
           "straight_through"]
