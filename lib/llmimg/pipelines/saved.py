"""The checks a saved :class:`~llmimg.pipelines.shapes.ShapesPipeline` folder goes through before it draws.

diffusers loads a pipeline folder component by component, and fills any key a
component's config leaves out with its own default: a ``scheduler_config.json`` of
``{}`` loads, and samples with a noise schedule the model never saw. So the folder's
``model_index.json`` is checked for its shape first (:func:`check_index`), and once the
components are loaded, every component's config file as written is checked against
the stage configs the pipeline was trained with, the tokenizer against the course's,
and the weights for numbers that are not finite (:func:`check_components`). Any
difference is a :class:`~llmimg.core.store.CheckpointError` naming the folder, the file
and the key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmimg.core.loading import check_config, check_finite
from llmimg.core.store import CheckpointError
from llmimg.core.text import check_tokenizer
from llmimg.stages import clip as clip_stage
from llmimg.stages import generator as gen_stage
from llmimg.stages import llm as llm_stage

STAGE_CONFIGS = {"clip": clip_stage.ClipConfig, "llm": llm_stage.LLMConfig, "generator": gen_stage.GeneratorConfig}
COMPONENTS = ("clip", "tokenizer", "llm", "prefix_mapper", "unet", "scheduler")  # a pipeline's, in model_index.json
# What any of the samplers keeps of the training scheduler's config (each one's from_config carries these over).
SCHEDULE_KEYS = ("num_train_timesteps", "beta_schedule", "prediction_type", "timestep_spacing")


def check_index(path: Path, fix: str) -> dict[str, Any]:
    """``model_index.json`` of the pipeline folder ``path``, checked: each component named, each stage config whole."""
    where = f"model_index.json in {path.name!r}"
    try:
        index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{where} cannot be read ({err}); {fix}") from None
    if not isinstance(index, dict):
        raise CheckpointError(f"{where} is not a JSON object; {fix}")
    for name in COMPONENTS:
        entry = index.get(name)
        if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(e, str) for e in entry)):
            raise CheckpointError(f"{where} does not name the component {name!r} as [library, class]; {fix}")
    configs = index.get("stage_configs")
    if not isinstance(configs, dict):
        raise CheckpointError(f"{where} has no stage_configs, the configs the stages were trained with; {fix}")
    for stage, kind in STAGE_CONFIGS.items():
        try:
            kind.from_dict(configs.get(stage))
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{where}: the {stage} config is damaged ({err}); {fix}") from None
    return index


def check_components(pipe: Any, path: Path, fix: str) -> None:
    """Check each loaded component of the ShapesPipeline ``pipe`` (from ``path``) against its stage configs.

    See the module's text; ``fix`` says how to make the folder again.
    """
    views = pipe._stages()
    text, llm_config, gen_config = views.text_encoder, views.writer.config, views.image_generator.config
    check_config(path, "clip/config.json", {"model_cfg": clip_stage.model_config(text.config.model_name)}, fix)
    check_config(path, "llm/config.json", llm_stage.gpt2_config(llm_config, text), fix)
    check_config(path, "prefix_mapper/config.json", llm_stage.mapper_config(llm_config, text), fix)
    check_config(path, "unet/config.json",
                 {"_class_name": "UNet2DConditionModel", **gen_stage.unet_config(gen_config, text.width)}, fix)
    schedule = gen_stage.scheduler_config(gen_config)
    check_config(path, "scheduler/scheduler_config.json", {k: schedule[k] for k in SCHEDULE_KEYS}, fix)
    problem = check_tokenizer(pipe.tokenizer)
    if problem:
        raise CheckpointError(f"the tokenizer in {path.name!r} is damaged: {problem}; {fix}")
    for module in (pipe.clip, pipe.llm, pipe.prefix_mapper, pipe.unet):
        check_finite(module, path, fix)


__all__ = ["COMPONENTS", "SCHEDULE_KEYS", "STAGE_CONFIGS", "check_components", "check_index"]
