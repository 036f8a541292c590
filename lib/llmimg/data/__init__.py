"""ShapesWorld: the tiny world's data set of coloured shapes with captions.

``ShapesWorld(seed)`` samples scenes deterministically by ``(seed, split, index)``;
``render`` draws them anti-aliased; ``describe`` / ``sample_prompt`` write the two
caption levels and ``parse_description`` / ``parse_prompt`` read them back;
``ShapesDataset`` serves them to torch. See notebook 02 for a tour.
"""

from llmimg.data.captions import (
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
    reading_order,
    sample_prompt,
)
from llmimg.data.dataset import ShapesDataset, scene_labels
from llmimg.data.render import object_centre, render, render_masks
from llmimg.data.world import (
    ATTRIBUTES,
    COLOUR_NAMES,
    COLOURS,
    HELDOUT_PAIRS,
    POSITIONS,
    SHAPES,
    SIZES,
    SPLITS,
    Sample,
    Scene,
    ShapeObject,
    ShapesWorld,
)

__all__ = [
    "ATTRIBUTES", "COLOURS", "COLOUR_NAMES", "HELDOUT_PAIRS", "POSITIONS", "SHAPES", "SIZES", "SPLITS",
    "ParseError", "PartialObject", "Sample", "Scene", "ShapeObject", "ShapesDataset", "ShapesWorld",
    "complete_prompt", "describe", "describe_in_prompt_order", "faithful", "format_prompt", "object_centre",
    "parse_description", "parse_prompt", "prompt_matches", "reading_order", "render",
    "render_masks", "sample_prompt", "scene_labels",
]
