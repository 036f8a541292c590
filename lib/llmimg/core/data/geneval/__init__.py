"""The GenEval-shaped ShapesWorld (issue 26): counts, relations and scenes of up to four objects, opt-in.

GenEval (Ghosh et al., 2023) scores text-to-image models on six categories of prompts:
single object, two objects, counting, colours, position (the relation between two
objects) and colour attribution; "overall" is their mean. This world asks ShapesWorld's
version of each, with exact ground truth, and today's absolute cell as a seventh
category reported beside them. After ShapeWorld (Kuhnle & Copestake, 2017), its
``heldout`` split tests compositions never seen in training: colour-shape pairs, counts
of a shape, relations of a shape.

* :mod:`.grammar`: the prompt language (:func:`parse_geneval_prompt`,
  :func:`format_geneval_prompt`, :func:`prompt_category`);
* :mod:`.layout`: relations on the grid, the planner's checker (:func:`check_layout`) and
  the oracle planner (:func:`plan_layout`);
* :mod:`.world`: :class:`GenEvalWorld`, the samples.

Nothing of today's world changes: :class:`~llmimg.core.data.ShapesWorld`, its data and
its tokenizer are as they were; this world is used only where it is asked for.
"""

from llmimg.core.data.geneval.grammar import (CATEGORIES, CELL_CATEGORY, CONVERSE, GENEVAL_CATEGORIES, MAX_OBJECTS,
                                              NUMBER_WORDS, NUMBERS, PLURALS, RELATION_PHRASES, RELATIONS, Group,
                                              PromptScene, Relation, format_geneval_prompt, parse_geneval_prompt,
                                              prompt_category)
from llmimg.core.data.geneval.layout import (CONSTRAINTS, LayoutFailure, cell_of, check_description, check_layout,
                                             in_prompt_order, placements, plan_layout, relation_holds)
from llmimg.core.data.geneval.world import (HELDOUT_COUNTS, HELDOUT_RELATIONS, GenEvalSample, GenEvalWorld,
                                            relation_is_heldout)

__all__ = ["CATEGORIES", "CELL_CATEGORY", "CONSTRAINTS", "CONVERSE", "GENEVAL_CATEGORIES", "GenEvalSample",
           "GenEvalWorld", "Group", "HELDOUT_COUNTS", "HELDOUT_RELATIONS", "LayoutFailure", "MAX_OBJECTS",
           "NUMBERS", "NUMBER_WORDS", "PLURALS", "PromptScene", "RELATIONS", "RELATION_PHRASES", "Relation",
           "cell_of", "check_description", "check_layout", "format_geneval_prompt", "in_prompt_order",
           "parse_geneval_prompt", "placements", "plan_layout", "prompt_category", "relation_holds",
           "relation_is_heldout"]
