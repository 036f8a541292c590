"""A GPT-2 body's hidden states as the image generator's text encoder (the generator's ``TextEncoder`` protocol).

What notebooks 06 (knowledge transfer) and 07 (joint training) condition a generator on,
instead of CLIP's text tower. ``layers`` says which states the generator reads:

* ``"last"``: the body's last layer;
* ``"mean"``: the mean over all its layers, token embeddings included. A causal LM's last
  layer is shaped to predict the *next* token and keeps little of which shape a word
  named (a generator reading it drew the right shape 22 % of the time on one-object
  scenes, near chance); the mean keeps each token's identity (the embedding layer) and
  its context (the layers above).

Texts are encoded as ``<bos> words <eos>`` like everywhere else; the ``<eos>`` state,
which has read the whole text (GPT-2 is causal), is what the pooled condition uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from llmimg.core.text import check_prompt, encode

LAYERS = ("last", "mean")


def hidden_states(body: nn.Module, ids: torch.Tensor, mask: torch.Tensor, layers: str = "mean") -> torch.Tensor:
    """The states (B, L, width) a generator reads of token ids: ``layers`` of the GPT-2 body (module docstring)."""
    if layers == "last":
        return body(input_ids=ids, attention_mask=mask).last_hidden_state
    if layers == "mean":
        return torch.stack(body(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states).mean(0)
    raise ValueError(f"unknown layers {layers!r}; choose one of {', '.join(LAYERS)}")


class GPT2TextEncoder(nn.Module):
    """A GPT-2 body (``GPT2Model``) with the course's tokenizer, read as a text encoder."""

    stage = "llm"  # what the image generator's manifest calls its text encoder (``path``: the LLM's folder)

    def __init__(self, gpt2: nn.Module, tokenizer: Any, layers: str = "last", path: Path | None = None) -> None:
        super().__init__()
        if layers not in LAYERS:
            raise ValueError(f"unknown layers {layers!r}; choose one of {', '.join(LAYERS)}")
        self.gpt2, self.tokenizer, self.layers, self.path = gpt2, tokenizer, layers, path

    @property
    def width(self) -> int:
        return int(self.gpt2.config.n_embd)

    def states(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states (B, L, width) and mask of unchecked texts, with gradients when the body trains."""
        enc = encode(self.tokenizer, list(texts), check=False)
        device = next(self.gpt2.parameters()).device
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        return hidden_states(self.gpt2, ids, mask, self.layers), mask

    @torch.no_grad()
    def token_states(self, texts: list[str], check: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """What the image generator reads (the ``TextEncoder`` protocol): states and mask, prompts checked if asked."""
        if check:
            texts = [check_prompt(self.tokenizer, t) for t in texts]
        return self.states(texts)


__all__ = ["GPT2TextEncoder", "LAYERS", "hidden_states"]
