"""A regime's training batches: the generator's batch of a step and, on the same scenes, the LLM's rows."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from llmimg.core import seeding
from llmimg.research.joint.config import JointConfig
from llmimg.research.joint.model import Start
from llmimg.stages import generator as gen_stage
from llmimg.stages import llm as llm_stage


class JointData:
    """``batch(step)``: the generator's batch of the step and, on the same scenes, the LLM's rows.

    The LLM's examples come from an :class:`~llmimg.stages.llm.LLMBank` of the generator's own
    training scenes (same world seed, same order), so row i of both halves is one scene:
    its image, its description D and its prompt.
    """

    def __init__(self, config: JointConfig, start: Start) -> None:
        self.config = config
        self.generator_config = replace(start.generator_config, train=config.train)
        self.bank = gen_stage.make_bank(self.generator_config)
        self.generator_batch = gen_stage.make_batch_fn(self.generator_config, None, self.bank)
        self.llm_bank = None
        if config.regime != "sequential":
            c = start.llm.config
            self.llm_bank = llm_stage.LLMBank(len(self.bank), start.llm.clip, seed=self.generator_config.data_seed,
                                              read_context=c.read_context, prompt_order=c.prompt_order)

    def batch(self, step: int) -> dict[str, Any]:
        out = self.generator_batch(step)
        idx = out["index"]
        if self.llm_bank is not None:
            g = seeding.torch_generator(self.config.train.seed, "tasks", step)
            task = (torch.rand(len(idx), generator=g) < self.config.caption_rate).long()  # 1 = caption
            rows = self.llm_bank.rows(idx, task)
            if self.config.regime == "reward":
                return {"prompts": [self.bank.prompts[i] for i in idx.tolist()],
                        "seed": seeding.derive_seed(self.config.train.seed, "reward", step), **rows}
            out.update(rows)
        return out


__all__ = ["JointData"]
