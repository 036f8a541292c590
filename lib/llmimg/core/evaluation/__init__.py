"""Evaluation: does an image show what its prompt asked for, and how far apart are two sets?

* :func:`judge` / :func:`judge_images` read the objects back out of a ShapesWorld image
  with no learned weights (template matching against the renderer's own sprites);
  exact on rendered ground truth.
* :func:`shapes_eval` / :func:`score_image` score images against their prompts,
  GenEval-style: all-correct rate, count accuracy and per-attribute accuracy over the
  attributes each prompt states. :func:`judge_accuracy_on_real` gives the judge's
  ceiling on real images.
* :func:`standard_error` and :func:`rate_with_se` give every rate its error bar;
  :func:`compare_rates` says whether two rates of independent trials differ by the course's
  rule (two standard errors of the difference), and :func:`paired_difference` does so for two
  settings scored on the same items (paired standard error, exact McNemar test).
* :func:`clip_score`, :func:`cmmd` and :func:`frechet_distance` compute CLIP-space
  metrics from embeddings.
"""

from llmimg.core.evaluation.distances import clip_score, cmmd, frechet_distance
from llmimg.core.evaluation.judge import Detection, JudgedImage, as_image_batch, judge, judge_images
from llmimg.core.evaluation.shapes_eval import (
    ATTRIBUTE_NAMES,
    ImageScore,
    ObjectMatch,
    ShapesEvalResult,
    judge_accuracy_on_real,
    score_image,
    shapes_eval,
)
from llmimg.core.evaluation.statistics import (PairedDifference, Rate, beyond_noise, compare_rates, mcnemar_p,
                                               paired_difference, rate_with_se, standard_error)

__all__ = ["ATTRIBUTE_NAMES", "Detection", "ImageScore", "JudgedImage", "ObjectMatch", "PairedDifference", "Rate",
           "ShapesEvalResult", "as_image_batch", "beyond_noise", "clip_score", "cmmd", "compare_rates",
           "frechet_distance", "judge", "judge_accuracy_on_real", "judge_images", "mcnemar_p", "paired_difference",
           "rate_with_se", "score_image", "shapes_eval", "standard_error"]
