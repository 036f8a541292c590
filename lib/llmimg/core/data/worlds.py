"""The two worlds the stages train on, behind one small interface: samples, prompts and the upsampler's checker.

* ``"shapes"``: today's ShapesWorld (:class:`~llmimg.core.data.ShapesWorld`), one or two
  objects, prompts that leave attributes open; every cached model of the course so far.
* ``"geneval"``: the GenEval-shaped world (:mod:`llmimg.core.data.geneval`, issue 26):
  counts, relations and up to four objects, where the LLM's job is to plan a layout.

The language of the GenEval-shaped world contains today's, and a model's tokenizer knows
which world it was trained on (:func:`llmimg.core.text.world_of`), so the LLM and the
generator follow the world of the CLIP they are built on; only the CLIP's configuration
names it. What differs between the worlds is here and nowhere else:

* :func:`world_samples`: a stage's training or evaluation samples (each with ``prompt``,
  ``description``, ``scene`` and ``image``);
* :func:`upsample_target`: the description the upsampler learns to write for a sample,
  its objects in the order the prompt names them;
* :func:`prompt_followed`: the upsampler's checker, whether a description keeps everything
  a prompt asks for (the relations and the count too, in the GenEval-shaped world);
* :func:`read_prompt_words`: a typed prompt's words read in the world's grammar and
  written back in it.
"""

from __future__ import annotations

from typing import Any

from llmimg.core.data.captions import (ParseError, _phrase, describe_in_prompt_order, faithful, format_prompt,
                                       parse_prompt, read_prompt)
from llmimg.core.data.geneval import (GenEvalWorld, check_description, format_geneval_prompt, in_prompt_order,
                                      parse_geneval_prompt)
from llmimg.core.data.shapes_world import ShapesWorld

WORLDS: tuple[str, ...] = ("shapes", "geneval")


def check_world(world: str) -> str:
    """``world`` if it names one of :data:`WORLDS`, else a ``ValueError`` listing them."""
    if world not in WORLDS:
        raise ValueError(f"unknown world {world!r}; choose one of {', '.join(WORLDS)}")
    return world


def world_samples(world: str, n: int, split: str = "train", *, seed: int = 0, max_objects: int = 2,
                  start: int = 0, category_weights: tuple[float, ...] | None = None) -> list[Any]:
    """Samples ``start`` … ``start + n - 1`` of ``split`` of ``world``.

    ``max_objects`` bounds today's world's scenes (1 or 2); the GenEval-shaped world draws
    its categories' scenes of 1 to 4 objects, weighted by ``category_weights`` (None:
    uniformly), and ignores it.
    """
    if check_world(world) == "geneval":
        return list(GenEvalWorld(seed=seed, category_weights=category_weights).samples(n, split, start))
    return list(ShapesWorld(seed=seed, max_objects=max_objects).samples(n, split, start))


def upsample_target(sample: Any) -> str:
    """The full description the upsampler learns for ``sample``: its objects in the order the prompt names them."""
    prompt_scene = getattr(sample, "prompt_scene", None)
    if prompt_scene is None:
        return describe_in_prompt_order(sample.scene, sample.prompt)
    return " and ".join(_phrase(obj) for obj in in_prompt_order(prompt_scene, sample.scene))


def prompt_followed(world: str, prompt: str, description: str) -> bool:
    """Whether ``description`` is a full description that keeps everything ``prompt`` asks for in ``world``.

    Today's world: every stated attribute of every object (:func:`~llmimg.core.data.faithful`).
    The GenEval-shaped world: the planner's checker
    (:func:`~llmimg.core.data.geneval.check_description`): the objects, their count,
    their stated attributes and cells, and every relation.
    """
    if check_world(world) == "geneval":
        try:
            return not check_description(prompt, description)
        except ParseError:
            return False
    return faithful(prompt, description)


def parse_world_prompt(world: str, prompt: str) -> Any:
    """``prompt`` read by the parser :func:`prompt_followed` uses in ``world``; raises ParseError if it cannot."""
    return parse_geneval_prompt(prompt) if check_world(world) == "geneval" else parse_prompt(prompt)


def read_prompt_words(world: str, words: list[str]) -> str:
    """A typed prompt's lower-case words written in ``world``'s grammar; raises ParseError if they do not read so.

    Today's world reads leniently (:func:`~llmimg.core.data.read_prompt`: a missing
    article, a cell without "in the"); the GenEval-shaped world reads its grammar as written.
    """
    if check_world(world) == "geneval":
        return format_geneval_prompt(parse_geneval_prompt(" ".join(words)))
    return format_prompt(read_prompt(words))


__all__ = ["WORLDS", "check_world", "parse_world_prompt", "prompt_followed", "read_prompt_words", "upsample_target",
           "world_samples"]
