"""ShapesEval: GenEval-style scores of how well images follow the prompts they came from.

Each image is read by the :mod:`~llmimg.core.evaluation.judge` and compared with its
prompt, object by object. A prompt states every object's shape and, sometimes, its
colour, size and position; only what it states is scored:

* detected objects are matched to prompt objects by the one-to-one assignment that
  gets the most stated attributes right (ties: the one with more fully right objects);
* each stated attribute of each prompt object is right or wrong; a prompt object left
  without a partner gets all its stated attributes wrong;
* ``count_correct``: as many objects detected as the prompt has;
* ``all_correct``: the count is right and every stated attribute is right, which is
  the same as :func:`~llmimg.core.data.prompt_matches` on the detected scene.

Over a set of images, ``all_correct`` and ``count_accuracy`` are rates over images and
``per_attribute`` the accuracy over every stated instance of each attribute; an
attribute no prompt stated is left out of ``per_attribute`` (never NaN), so the dict
holds only numbers that were measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from llmimg.core.data.captions import ParseError, PartialObject, describe, format_prompt, parse_prompt
from llmimg.core.data.shapes_world import ShapesWorld
from llmimg.core.data.world import Scene, ShapeObject
from llmimg.core.evaluation.judge import JudgedImage, judge, judge_images

ATTRIBUTE_NAMES: tuple[str, ...] = ("shape", "colour", "size", "position")

Prompt = str | Scene | Sequence[PartialObject | ShapeObject]


@dataclass(frozen=True)
class ObjectMatch:
    """One prompt object, the detected object matched to it (or None) and which stated attributes are right."""

    prompt_object: PartialObject
    detected: ShapeObject | None
    correct: dict[str, bool]  # only the attributes the prompt states


@dataclass(frozen=True)
class ImageScore:
    """How one image follows its prompt: the matching, the count and every stated attribute."""

    prompt: str
    prompt_objects: tuple[PartialObject, ...]
    detected: tuple[ShapeObject, ...]
    matches: tuple[ObjectMatch, ...]
    extra: tuple[ShapeObject, ...]  # detected objects no prompt object was matched to

    @property
    def n_prompt(self) -> int:
        return len(self.prompt_objects)

    @property
    def n_detected(self) -> int:
        return len(self.detected)

    @property
    def count_correct(self) -> bool:
        """Whether the image holds exactly as many objects as the prompt asks for."""
        return self.n_detected == self.n_prompt

    @property
    def attribute_counts(self) -> dict[str, tuple[int, int]]:
        """Per attribute: (right, stated) over the prompt's objects; unstated attributes absent."""
        counts: dict[str, tuple[int, int]] = {}
        for match in self.matches:
            for name, ok in match.correct.items():
                right, stated = counts.get(name, (0, 0))
                counts[name] = (right + ok, stated + 1)
        return {name: counts[name] for name in ATTRIBUTE_NAMES if name in counts}

    @property
    def all_correct(self) -> bool:
        """The GenEval criterion: the right count and every stated attribute right."""
        return self.count_correct and all(all(m.correct.values()) for m in self.matches)


@dataclass(frozen=True)
class ShapesEvalResult:
    """ShapesEval over a set of images: the rates and the per-image records behind them.

    ``per_attribute`` maps each attribute that some prompt stated to its accuracy over
    all stated instances; attributes never stated are left out.
    """

    records: tuple[ImageScore, ...] = field(repr=False)

    @property
    def n_images(self) -> int:
        return len(self.records)

    @property
    def all_correct(self) -> float:
        """Fraction of images that follow their prompt completely."""
        return float(np.mean([r.all_correct for r in self.records]))

    @property
    def count_accuracy(self) -> float:
        """Fraction of images with the prompt's number of objects."""
        return float(np.mean([r.count_correct for r in self.records]))

    @property
    def attribute_counts(self) -> dict[str, tuple[int, int]]:
        """Per attribute: (right, stated) summed over all images."""
        totals: dict[str, list[int]] = {}
        for record in self.records:
            for name, (right, stated) in record.attribute_counts.items():
                t = totals.setdefault(name, [0, 0])
                t[0] += right
                t[1] += stated
        return {name: (totals[name][0], totals[name][1]) for name in ATTRIBUTE_NAMES if name in totals}

    @property
    def per_attribute(self) -> dict[str, float]:
        """Accuracy of each stated attribute over all its stated instances."""
        return {name: right / stated for name, (right, stated) in self.attribute_counts.items()}

    def as_dict(self) -> dict[str, Any]:
        """The headline numbers as plain Python values, ready for JSON."""
        return {
            "n_images": self.n_images,
            "all_correct": self.all_correct,
            "count_accuracy": self.count_accuracy,
            "per_attribute": {k: float(v) for k, v in self.per_attribute.items()},
        }

    def to_frame(self) -> Any:
        """One row per image: prompt, what was detected, count and per-attribute (right, stated)."""
        import pandas as pd

        rows = []
        for r in self.records:
            row: dict[str, Any] = {
                "prompt": r.prompt,
                "detected": describe(Scene(r.detected)) if r.detected else "",
                "n_prompt": r.n_prompt,
                "n_detected": r.n_detected,
                "count_correct": r.count_correct,
                "all_correct": r.all_correct,
            }
            counts = r.attribute_counts
            for name in ATTRIBUTE_NAMES:
                right, stated = counts.get(name, (0, 0))
                row[f"{name}_right"] = right
                row[f"{name}_stated"] = stated
            rows.append(row)
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        attrs = ", ".join(f"{k}={v:.3f}" for k, v in self.per_attribute.items())
        return (f"ShapesEvalResult(n_images={self.n_images}, all_correct={self.all_correct:.3f}, "
                f"count_accuracy={self.count_accuracy:.3f}, per_attribute={{{attrs}}})")


# -- prompts ------------------------------------------------------------------------
def _partials(prompt: Prompt) -> tuple[PartialObject, ...]:
    """The prompt's objects; a Scene or ShapeObjects state every attribute."""
    if isinstance(prompt, str):
        try:
            return parse_prompt(prompt)
        except ParseError as err:
            raise ParseError(f"cannot parse the prompt {prompt!r}: {err}") from err
    objects = tuple(prompt)
    if not objects:
        raise ValueError("the prompt has no objects")
    out = []
    for obj in objects:
        if isinstance(obj, PartialObject):
            out.append(obj)
        elif isinstance(obj, ShapeObject):
            out.append(PartialObject(obj.shape, obj.colour, obj.size, obj.position))
        else:
            raise TypeError(f"a prompt is a string, a Scene or a sequence of PartialObject; got an item of type "
                            f"{type(obj).__name__}")
    return tuple(out)


# -- matching -----------------------------------------------------------------------
def _correct(p: PartialObject, d: ShapeObject) -> dict[str, bool]:
    return {name: getattr(p, name) == getattr(d, name) for name in ATTRIBUTE_NAMES if getattr(p, name) is not None}


def _assign(weights: np.ndarray) -> list[int | None]:
    """Best one-to-one assignment of rows (prompt objects) to columns (detections), or None.

    Exact, by dynamic programming over the subsets of columns (at most 9 detections),
    maximising the total weight; a row may stay unassigned with weight 0.
    """
    m, n = weights.shape
    if n > 16:
        raise ValueError(f"cannot match more than 16 detected objects, got {n}")
    size = 1 << n
    neg = -math.inf
    best = np.full((m + 1, size), neg)
    best[0, 0] = 0.0
    choice = np.full((m + 1, size), -1, dtype=np.int64)
    for i in range(m):
        for mask in np.flatnonzero(best[i] > neg):
            base = best[i, mask]
            if base > best[i + 1, mask]:  # row i stays unassigned
                best[i + 1, mask], choice[i + 1, mask] = base, -1
            for j in range(n):
                bit = 1 << j
                if not mask & bit:
                    value = base + weights[i, j]
                    if value > best[i + 1, mask | bit]:
                        best[i + 1, mask | bit], choice[i + 1, mask | bit] = value, j
    mask = int(np.argmax(best[m]))
    out: list[int | None] = [None] * m
    for i in range(m, 0, -1):
        j = int(choice[i, mask])
        if j >= 0:
            out[i - 1] = j
            mask ^= 1 << j
    return out


def score_image(judged_or_image: JudgedImage | Scene | Any, prompt: Prompt) -> ImageScore:
    """Score one image against the prompt it was made from.

    ``judged_or_image`` is a :class:`JudgedImage`, an image the judge can read, or a
    :class:`Scene` (to score a scene directly, e.g. what an upsampler wrote). ``prompt``
    is a prompt or description string, a Scene (every attribute stated) or a sequence
    of :class:`~llmimg.core.data.PartialObject`.
    """
    partials = _partials(prompt)
    if isinstance(judged_or_image, JudgedImage):
        detected = judged_or_image.objects
    elif isinstance(judged_or_image, Scene):
        detected = judged_or_image.objects
    else:
        detected = judge(judged_or_image).objects
    return _score(partials, detected, prompt if isinstance(prompt, str) else format_prompt(partials))


def _score(partials: tuple[PartialObject, ...], detected: tuple[ShapeObject, ...], text: str) -> ImageScore:
    m = len(partials)
    correct = [[_correct(p, d) for d in detected] for p in partials]
    # Lexicographic objective: most right attributes, then most fully right objects.
    weights = np.array([[sum(c.values()) * (m + 1) + all(c.values()) for c in row] for row in correct],
                       dtype=np.float64).reshape(m, len(detected))
    assignment = _assign(weights)
    matches = []
    for i, (p, j) in enumerate(zip(partials, assignment)):
        if j is None:
            stated = {name: False for name in ATTRIBUTE_NAMES if getattr(p, name) is not None}
            matches.append(ObjectMatch(p, None, stated))
        else:
            matches.append(ObjectMatch(p, detected[j], correct[i][j]))
    used = {j for j in assignment if j is not None}
    extra = tuple(d for j, d in enumerate(detected) if j not in used)
    return ImageScore(text, partials, tuple(detected), tuple(matches), extra)


# -- sets of images -----------------------------------------------------------------
def _judged(images: Any) -> list[JudgedImage | Scene]:
    if isinstance(images, (list, tuple)) and images and all(isinstance(x, (JudgedImage, Scene)) for x in images):
        return list(images)
    return list(judge_images(images))


def shapes_eval(images: Any, prompts: Sequence[Prompt]) -> ShapesEvalResult:
    """ShapesEval of ``images`` against the ``prompts`` they were generated from, pairwise.

    ``images``: a batch (N, H, W, 3) / (N, 3, H, W) array or tensor, a list of images, or
    a list of :class:`JudgedImage` / :class:`Scene`. ``prompts``: one per image, each as
    :func:`score_image` accepts.
    """
    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of prompts, one per image, not a single string")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts given: ShapesEval needs at least one image and prompt")
    n_images = len(images)
    if n_images != len(prompts):
        raise ValueError(f"got {n_images} images but {len(prompts)} prompts; they must pair up one to one")
    parsed = []
    for k, prompt in enumerate(prompts):
        try:
            parsed.append(_partials(prompt))
        except ParseError as err:
            raise ParseError(f"prompt {k}: {err}") from err
    judged = _judged(images)
    records = tuple(
        _score(p, j.objects, prompt if isinstance(prompt, str) else format_prompt(p))
        for j, p, prompt in zip(judged, parsed, prompts)
    )
    return ShapesEvalResult(records)


def judge_accuracy_on_real(world: ShapesWorld, n: int, split: str = "val", start: int = 0) -> ShapesEvalResult:
    """ShapesEval of ``n`` rendered ground-truth images against their own full descriptions.

    The judge's ceiling: its ``all_correct`` is the rate at which it reads real images
    exactly (1.0 on clean renders), the number to show before scoring generated images.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    samples = list(world.samples(n, split, start=start))
    return shapes_eval(np.stack([s.image for s in samples]), [s.description for s in samples])
