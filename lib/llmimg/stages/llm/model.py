"""The trainable part of stage 2: GPT-2 with ClipCap's prefix mapper, and what it reads.

ClipCap-style: a small MLP (the *prefix mapper*) turns one CLIP embedding into
``prefix_length`` vectors that GPT-2 reads before ``<bos>``; a learned task vector tells
the two tasks apart (upsampling a prompt from its CLIP *text* embedding, captioning an
image from its CLIP *image* embedding). Between the prefix and ``<bos>`` GPT-2 also reads
a :class:`Context`: the prompt's own tokens, or CLIP's image patch tokens projected by
the mapper. The prefix, the context and the description form one sequence
``[prefix] [context] <bos> description``; padding inside the context is masked and
positions count real tokens only (:func:`positions`), so padding never shifts a position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from llmimg.core.text import BOS_ID, CONTEXT_LENGTH, PAD_ID
from llmimg.stages.llm.config import TASKS


class PrefixMapper(ModelMixin, ConfigMixin):
    """ClipCap's mapping network: a CLIP embedding (plus a task vector) to GPT-2 prefix embeddings."""

    @register_to_config
    def __init__(self, clip_dim: int = 128, n_embd: int = 128, prefix_length: int = 4,
                 hidden_dim: int = 256, n_tasks: int = len(TASKS), patch_dim: int | None = None) -> None:
        super().__init__()
        self.task = nn.Embedding(n_tasks, clip_dim)
        self.mlp = nn.Sequential(nn.Linear(clip_dim, hidden_dim), nn.Tanh(),
                                 nn.Linear(hidden_dim, prefix_length * n_embd))
        # CLIP's image patch tokens (width patch_dim) to GPT-2's width; GPT-2's positions order them.
        self.patches = nn.Linear(patch_dim, n_embd) if patch_dim else None

    def project_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """GPT-2 input vectors (B, P, n_embd) of CLIP image patch tokens (B, P, patch_dim)."""
        if self.patches is None:
            raise ValueError("this prefix mapper was built without patch reading (patch_dim=None)")
        return self.patches(patches * patches.shape[-1] ** 0.5)  # unit-norm tokens up to N(0, 1) size

    def forward(self, z: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Prefix embeddings (B, prefix_length, n_embd) of unit CLIP embeddings ``z`` (B, clip_dim)."""
        # CLIP embeddings are unit vectors: scale them up to the task vectors' N(0, 1) size.
        h = self.mlp(z * z.shape[-1] ** 0.5 + self.task(task))
        return h.view(len(z), self.config.prefix_length, self.config.n_embd)


class ClipCapLM(nn.Module):
    """GPT-2 with its prefix mapper: the trainable part of stage 2."""

    def __init__(self, gpt2: nn.Module, mapper: PrefixMapper) -> None:
        super().__init__()
        self.gpt2, self.mapper = gpt2, mapper
        # GPT2LMHeadModel's class name names no loss of transformers' table, so its first loss would warn
        # "loss_type=None ... unrecognized" on stderr (notebook 07's output); its loss is the causal LM one.
        self.gpt2.loss_type = "ForCausalLM"

    def prefix_embeds(self, z: torch.Tensor, task: torch.Tensor, context: Context | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """What generation starts from: the prefix, the ``context`` (if any) and ``<bos>``, with their mask.

        Returns ``(embeds (B, T, n_embd), attention_mask (B, T))``; the mask is 0 at the
        context's padding.
        """
        prefix = self.mapper(z, task)
        parts, masks = [prefix], [torch.ones(prefix.shape[:2], dtype=torch.long, device=z.device)]
        if context is not None:
            embeds, mask = self.context_embeds(context)
            parts.append(embeds)
            masks.append(mask)
        bos = self.gpt2.get_input_embeddings()(torch.full((len(z), 1), BOS_ID, device=z.device))
        return torch.cat([*parts, bos], dim=1), torch.cat([*masks, masks[0][:, :1]], dim=1)

    def context_embeds(self, context: Context) -> tuple[torch.Tensor, torch.Tensor]:
        """GPT-2 input vectors of a :class:`Context` and their mask (B, C): prompt tokens or projected patches."""
        wte = self.gpt2.get_input_embeddings()
        rows = []
        if context.prompt_ids is not None:
            rows.append((wte(context.prompt_ids), (context.prompt_ids != PAD_ID).long()))
        if context.patches is not None:
            p = self.mapper.project_patches(context.patches)
            rows.append((p, torch.ones(p.shape[:2], dtype=torch.long, device=p.device)))
        if len(rows) == 1:
            return rows[0]
        # A mixed batch: each row reads its own kind, padded to the longer of the two.
        width = max(e.shape[1] for e, _ in rows)
        (pe, pm), (ie, im) = [(F.pad(e, (0, 0, 0, width - e.shape[1])), F.pad(m, (0, width - m.shape[1])))
                              for e, m in rows]
        is_image = context.is_image[:, None]
        return torch.where(is_image[..., None], ie, pe), torch.where(is_image, im, pm)

    def forward(self, z: torch.Tensor, task: torch.Tensor, input_ids: torch.Tensor,
                attention_mask: torch.Tensor, context: Context | None = None, per_row: bool = False) -> torch.Tensor:
        """Mean cross-entropy of the description tokens (``input_ids`` = ``<bos>`` description ``<eos>`` pads).

        With ``per_row`` it returns each row's summed negative log-likelihood (B,), -log q(D | prefix):
        what a policy gradient weighs (the reinforcement-learning regimes of notebook 07).
        """
        if per_row:
            labels = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, -100)
            logits = self.token_logits(z, task, input_ids, attention_mask, context)
            return F.cross_entropy(logits.transpose(1, 2).float(), labels, ignore_index=-100, reduction="none").sum(1)
        embeds, mask, start_length = self._inputs(z, task, input_ids, attention_mask, context)
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        labels[:, 0] = -100  # <bos> is given, not predicted
        labels = torch.cat([labels.new_full((len(labels), start_length), -100), labels], dim=1)
        return self.gpt2(inputs_embeds=embeds, attention_mask=mask, position_ids=positions(mask), labels=labels).loss

    def token_logits(self, z: torch.Tensor, task: torch.Tensor, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor, context: Context | None = None) -> torch.Tensor:
        """Next-token logits (B, L - 1, vocab) with ``input_ids`` given: row j predicts ``input_ids[:, j + 1]``.

        What a per-row likelihood sums, and what the coupled regimes of notebook 07 turn into
        the generator's input (:mod:`llmimg.research.joint.coupled`).
        """
        embeds, mask, start_length = self._inputs(z, task, input_ids, attention_mask, context)
        return self.gpt2(inputs_embeds=embeds, attention_mask=mask, position_ids=positions(mask)).logits[
            :, start_length:-1]

    def _inputs(self, z: torch.Tensor, task: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                context: Context | None) -> tuple[torch.Tensor, torch.Tensor, int]:
        """GPT-2's input vectors and mask (prefix, context, then ``input_ids``) and how many come before ``<bos>``."""
        start, start_mask = self.prefix_embeds(z, task, context)
        start, start_mask = start[:, :-1], start_mask[:, :-1]  # <bos> comes with input_ids
        embeds = torch.cat([start, self.gpt2.get_input_embeddings()(input_ids)], dim=1)
        return embeds, torch.cat([start_mask, attention_mask.long()], dim=1), start.shape[1]


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only (padding gets 0): what ``generate`` derives from the mask."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0).masked_fill(attention_mask == 0, 0)


@torch.no_grad()
def greedy_decode(lm: Any, z: torch.Tensor, tasks: torch.Tensor, context: Any = None, n_new: int = CONTEXT_LENGTH,
                  use_cache: bool = True) -> torch.Tensor:
    """Greedy token ids ``(B, n_new)`` of a :class:`ClipCapLM`, written token by token, with or without the KV cache.

    Without the cache every step feeds the whole sequence again (prefix and all tokens so
    far), which is what "no KV cache" costs; transformers' ``generate`` cannot show this,
    since it keeps the cache on when generating from ``inputs_embeds``. Both paths give the
    same tokens (notebook 04 writes this loop out; notebook 08 times it).
    """
    (x, mask), past, ids = lm.prefix_embeds(z, tasks, context), None, []
    for _ in range(n_new):
        out = lm.gpt2(inputs_embeds=x, attention_mask=mask, position_ids=positions(mask)[:, -x.shape[1]:],
                      past_key_values=past, use_cache=use_cache)
        next_id = out.logits[:, -1].argmax(-1)
        ids.append(next_id)
        new = lm.gpt2.get_input_embeddings()(next_id)[:, None]
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], 1)
        past, x = (out.past_key_values, new) if use_cache else (None, torch.cat([x, new], 1))
    return torch.stack(ids, 1)


@dataclass
class Context:
    """What GPT-2 reads between the prefix and ``<bos>``: a prompt's token ids, CLIP patch tokens, or both kinds.

    ``prompt_ids`` (B, L) are ``<bos> prompt <eos>`` padded with ``<pad>``; ``patches``
    (B, P, width) are CLIP's image patch tokens. When both are given (a training batch
    mixing the two tasks), ``is_image`` (B,) says which one each row reads.
    """

    prompt_ids: torch.Tensor | None = None
    patches: torch.Tensor | None = None
    is_image: torch.Tensor | None = None

    def _map(self, fn: Any) -> Context:
        return Context(*(None if t is None else fn(t) for t in (self.prompt_ids, self.patches, self.is_image)))

    def rows(self, index: list[int]) -> Context:
        """The context of the rows ``index`` only."""
        return self._map(lambda t: t[index])

    def to(self, device: torch.device) -> Context:
        return self._map(lambda t: t.to(device))


def trim_padding(ids: torch.Tensor) -> torch.Tensor:
    """Token ids ``(B, L)`` without the trailing columns that are ``<pad>`` in every row."""
    return ids[:, :int((ids != PAD_ID).sum(1).max())]


def task_ids(task: str, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The task token ids ``(n,)`` that tell the prefix mapper to upsample or to caption."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return torch.full((n,), TASKS.index(task), dtype=torch.long, device=device)


__all__ = ["ClipCapLM", "Context", "PrefixMapper", "greedy_decode", "positions", "task_ids", "trim_padding"]
