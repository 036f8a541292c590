"""ShapesWorld: the tiny world's data set of coloured shapes with captions.

``ShapesWorld(seed)`` samples scenes deterministically by ``(seed, split, index)``
(:mod:`~llmimg.core.seeding`'s rule);
``render`` draws them anti-aliased; ``describe`` / ``sample_prompt`` write the two
caption levels and ``parse_description`` / ``parse_prompt`` read them back;
``ShapesDataset`` serves them to torch. See notebook 02 for a tour.
"""

from llmimg.core.data.captions import (
    ParseError,
    PartialObject,
    complete_prompt,
    describe,
    describe_in_prompt_order,
    faithful,
    format_prompt,
    parse_description,
    parse_prompt,
    prompt_matches,
    read_prompt,
    reading_order,
    sample_prompt,
)
from llmimg.core.data.dataset import ShapesDataset, scene_labels
from llmimg.core.data.render import object_centre, render, render_masks
from llmimg.core.data.shapes_world import Sample, ShapesWorld
from llmimg.core.data.world import (
    ATTRIBUTES,
    COLOUR_NAMES,
    COLOURS,
    HELDOUT_PAIRS,
    POSITIONS,
    SHAPES,
    SIZES,
    SPLITS,
    Scene,
    ShapeObject,
)

__all__ = ["ATTRIBUTES", "COLOURS", "COLOUR_NAMES", "HELDOUT_PAIRS", "POSITIONS", "SHAPES", "SIZES", "SPLITS",
           "ParseError", "PartialObject", "Sample", "Scene", "ShapeObject", "ShapesDataset", "ShapesWorld",
           "complete_prompt", "describe", "describe_in_prompt_order", "faithful", "format_prompt", "object_centre",
           "parse_description", "parse_prompt", "prompt_matches", "read_prompt", "reading_order", "render",
           "render_masks", "sample_prompt", "scene_labels"]
