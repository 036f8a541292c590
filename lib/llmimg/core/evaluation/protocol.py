"""The evaluation protocol of the GenEval-shaped world: fixed prompt sets, fixed noise seeds, per-category scores.

GenEval (Ghosh et al., 2023) scores a model on a fixed list of prompts in six categories,
four images per prompt, and reports each category's rate and "overall", the mean of the
six. This protocol does the same on ShapesWorld, with today's absolute cell as a seventh
category reported beside (never inside) the overall:

* :func:`make_eval_set` draws, per split (``val``, and ``heldout`` for the held-out
  compositions), :data:`PROMPTS_PER_CATEGORY` prompts of each category and gives each
  :data:`IMAGES_PER_PROMPT` fixed noise seeds. The sets are committed as
  ``data/eval/<split>.json`` (``llmimg data eval-sets`` writes them; a test checks the
  committed files equal a regeneration), and :func:`load_eval_set` reads them.
* :func:`judge_protocol` judges images drawn for a set, against the prompts as typed;
  :func:`score_protocol` turns per-image 0/1 results into per-category and overall rates,
  each with ``n`` and a standard error. A prompt's four images share the prompt, so the
  standard error is taken over prompts (the spread of per-prompt means), not images.
* Two settings drawn on the same set (same prompts, same seeds) pair up image by image:
  :func:`paired_arrays` gives the two aligned 0/1 arrays a paired test takes.

Bump :data:`VERSION` whenever the sets change; scores name the version they were made on.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmimg.core.data.geneval import CATEGORIES, GENEVAL_CATEGORIES, GenEvalWorld, format_geneval_prompt
from llmimg.core.evaluation.geneval_judge import prompts_followed
from llmimg.core.evaluation.statistics import PairedDifference, paired_difference, standard_error
from llmimg.core.seeding import numpy_rng

PROTOCOL = "shapes-geneval"
VERSION = 1
PROTOCOL_SEED = 26  # the world seed the prompt sets are drawn with (issue 26); training uses its own
PROMPTS_PER_CATEGORY = 100
IMAGES_PER_PROMPT = 4
EVAL_SPLITS: tuple[str, ...] = ("val", "heldout")
# Prompt k of category c of split s is drawn from stream ("protocol", s·1e6 + c·1e4 + k); its image j has the
# noise seed SEED_BASE[s] + IMAGES_PER_PROMPT·(item number in the file) + j.
_SPLIT_CODE = {"val": 0, "heldout": 1}
SEED_BASE = {"val": 0, "heldout": 1_000_000}


@dataclass(frozen=True)
class EvalItem:
    """One prompt of a prompt set: its id, category, text as typed, and the noise seed of each of its images."""

    id: str
    category: str
    prompt: str
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class EvalSet:
    """A versioned prompt set of the protocol: what to draw (prompt, seed) and how to group it (category)."""

    split: str
    version: int
    images_per_prompt: int
    items: tuple[EvalItem, ...]

    def __len__(self) -> int:
        return len(self.items)

    @property
    def n_images(self) -> int:
        return len(self.items) * self.images_per_prompt

    def image_prompts(self) -> list[str]:
        """The prompt of every image to draw, item by item, seed by seed (the order :func:`judge_protocol` reads)."""
        return [item.prompt for item in self.items for _ in item.seeds]

    def image_seeds(self) -> list[int]:
        """The noise seed of every image to draw, in the order of :meth:`image_prompts`."""
        return [seed for item in self.items for seed in item.seeds]

    def to_json(self) -> str:
        """The set as committed: a header, then one item per line (readable diffs)."""
        header = {"protocol": PROTOCOL, "version": self.version, "split": self.split,
                  "categories": list(CATEGORIES), "overall_of": list(GENEVAL_CATEGORIES),
                  "images_per_prompt": self.images_per_prompt, "n_items": len(self.items)}
        lines = [json.dumps({"id": i.id, "category": i.category, "prompt": i.prompt, "seeds": list(i.seeds)})
                 for i in self.items]
        head = json.dumps(header, indent=2)[:-2]  # drop the closing brace to append the items
        return head + ',\n  "items": [\n    ' + ",\n    ".join(lines) + "\n  ]\n}\n"

    @classmethod
    def from_json(cls, text: str, where: str = "the prompt set") -> EvalSet:
        """Read a set written by :meth:`to_json`; a clear ``ValueError`` if it is not one of this protocol's version."""
        try:
            data = json.loads(text)
            if data.get("protocol") != PROTOCOL:
                raise ValueError(f"it is not a {PROTOCOL} prompt set")
            if data.get("version") != VERSION:
                raise ValueError(f"it is version {data.get('version')}, this library reads version {VERSION}; "
                                 "regenerate it with 'llmimg data eval-sets'")
            k = int(data["images_per_prompt"])
            items = tuple(EvalItem(str(i["id"]), str(i["category"]), str(i["prompt"]),
                                   tuple(int(s) for s in i["seeds"])) for i in data["items"])
            for item in items:
                if item.category not in CATEGORIES or len(item.seeds) != k:
                    raise ValueError(f"item {item.id!r} has category {item.category!r} and {len(item.seeds)} seeds")
            return cls(str(data["split"]), int(data["version"]), k, items)
        except (KeyError, TypeError, json.JSONDecodeError, ValueError) as err:
            raise ValueError(f"{where} cannot be read: {err}") from None


def make_eval_set(split: str, n_per_category: int = PROMPTS_PER_CATEGORY,
                  images_per_prompt: int = IMAGES_PER_PROMPT, seed: int = PROTOCOL_SEED) -> EvalSet:
    """Draw the prompt set of ``split`` (``val`` or ``heldout``): the function behind the committed files."""
    if split not in EVAL_SPLITS:
        raise ValueError(f"the protocol has prompt sets for {', '.join(EVAL_SPLITS)}, not {split!r}")
    if not 1 <= n_per_category < 10_000 or not 1 <= images_per_prompt <= 1_000:
        raise ValueError("n_per_category must be 1-9999 and images_per_prompt 1-1000")
    world = GenEvalWorld(seed=seed)
    items = []
    for c, category in enumerate(CATEGORIES):
        for k in range(n_per_category):
            rng = numpy_rng(seed, "protocol", 1_000_000 * _SPLIT_CODE[split] + 10_000 * c + k)
            prompt = format_geneval_prompt(world.prompt(category, rng, split))
            first = SEED_BASE[split] + images_per_prompt * len(items)
            items.append(EvalItem(f"{split}-{category}-{k:03d}", category, prompt,
                                  tuple(range(first, first + images_per_prompt))))
    return EvalSet(split, VERSION, images_per_prompt, tuple(items))


def eval_set_path(split: str, folder: str | Path | None = None) -> Path:
    """``<folder>/<split>.json``; the folder defaults to the checkout's ``data/eval``."""
    if folder is None:
        from llmimg.core.config import project_root

        root = project_root()
        if root is None:
            raise ValueError("no source checkout here, so no data/eval folder: pass a folder")
        folder = root / "data" / "eval"
    return Path(folder) / f"{split}.json"


def write_eval_sets(folder: str | Path | None = None) -> list[Path]:
    """Write every split's prompt set into ``folder`` (default: the checkout's ``data/eval``), each file atomically."""
    from llmimg.core.store import atomic_write

    paths = []
    for split in EVAL_SPLITS:
        path = eval_set_path(split, folder)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, "w", encoding="utf-8") as f:
            f.write(make_eval_set(split).to_json())
        paths.append(path)
    return paths


def load_eval_set(split: str, folder: str | Path | None = None) -> EvalSet:
    """The committed prompt set of ``split``; outside a checkout (an installed package) it is regenerated, identical.

    Raises ``ValueError`` naming the file when it is missing, of another version, or damaged.
    """
    if split not in EVAL_SPLITS:
        raise ValueError(f"the protocol has prompt sets for {', '.join(EVAL_SPLITS)}, not {split!r}")
    from llmimg.core.config import project_root

    if folder is None and project_root() is None:
        return make_eval_set(split)
    path = eval_set_path(split, folder)
    if not path.is_file():
        raise ValueError(f"{str(path)!r} is missing; write it with 'llmimg data eval-sets'")
    loaded = EvalSet.from_json(path.read_text(encoding="utf-8"), where=repr(str(path)))
    if loaded.split != split:
        raise ValueError(f"{str(path)!r} holds the {loaded.split!r} prompt set, not {split!r}")
    return loaded


# -- scoring ------------------------------------------------------------------------
@dataclass(frozen=True)
class Rate:
    """A rate over images with its standard error; ``n_images`` images of ``n_prompts`` prompts."""

    rate: float
    se: float
    n_images: int
    n_prompts: int

    def as_dict(self) -> dict[str, Any]:
        return {"rate": self.rate, "se": self.se, "n_images": self.n_images, "n_prompts": self.n_prompts}


def _rate(correct: np.ndarray) -> Rate:
    """Rate of a (prompts, images) 0/1 array; standard error of the mean over prompts of per-prompt means."""
    per_prompt = correct.mean(axis=1)
    n = len(per_prompt)
    rate = float(per_prompt.mean())
    # Fewer than two prompts give no spread between prompts: fall back to the binomial error over images.
    se = float(per_prompt.std(ddof=1) / math.sqrt(n)) if n > 1 else standard_error(rate, correct.size)
    return Rate(rate, se, int(correct.size), n)


@dataclass(frozen=True)
class ProtocolScore:
    """Scores of one setting on one prompt set: per category, overall (mean of GenEval's six), the 0/1s behind them."""

    split: str
    version: int
    item_ids: tuple[str, ...]
    categories: tuple[str, ...]  # per item
    correct: np.ndarray  # (items, images per prompt) bool
    per_category: dict[str, Rate]
    overall: Rate

    def per_image(self, category: str | None = None) -> np.ndarray:
        """Every image's 0/1 result (of ``category``, or all), item by item, seed by seed: a paired test's input."""
        if category is None:
            return self.correct.reshape(-1).copy()
        if category not in CATEGORIES:
            raise ValueError(f"unknown category {category!r}; choose one of {', '.join(CATEGORIES)}")
        rows = np.array([c == category for c in self.categories], dtype=bool)
        return self.correct[rows].reshape(-1).copy()

    def as_dict(self) -> dict[str, Any]:
        """Plain values for JSON; ``overall`` and each of ``categories`` hold rate, se, n_images and n_prompts."""
        return {"protocol": PROTOCOL, "version": self.version, "split": self.split,
                "overall": self.overall.as_dict(), "overall_of": list(GENEVAL_CATEGORIES),
                "categories": {c: r.as_dict() for c, r in self.per_category.items()}}


def score_protocol(eval_set: EvalSet, correct: Any) -> ProtocolScore:
    """Per-category and overall rates of per-image 0/1 results, shape (items, images per prompt) or flat in set order.

    Overall is the mean of GenEval's six category rates; its standard error combines theirs
    (the categories' prompts are drawn independently). The seventh category, ``cell``, is
    reported beside it.
    """
    array = np.asarray(correct)
    if array.size != eval_set.n_images:
        raise ValueError(f"got {array.size} results for a prompt set of {eval_set.n_images} images "
                         f"({len(eval_set)} prompts × {eval_set.images_per_prompt})")
    if not np.isin(array, (0, 1)).all():
        raise ValueError("results must be 0/1 (or booleans), one per image")
    array = array.reshape(len(eval_set), eval_set.images_per_prompt).astype(bool)
    categories = tuple(item.category for item in eval_set.items)
    per_category = {}
    for category in CATEGORIES:
        rows = np.array([c == category for c in categories], dtype=bool)
        if rows.any():
            per_category[category] = _rate(array[rows])
    missing = [c for c in GENEVAL_CATEGORIES if c not in per_category]
    if missing:
        raise ValueError(f"the prompt set has no prompts of {', '.join(missing)}: no overall score")
    six = [per_category[c] for c in GENEVAL_CATEGORIES]
    overall = Rate(float(np.mean([r.rate for r in six])), math.sqrt(sum(r.se**2 for r in six)) / len(six),
                   sum(r.n_images for r in six), sum(r.n_prompts for r in six))
    return ProtocolScore(eval_set.split, eval_set.version, tuple(i.id for i in eval_set.items), categories, array,
                         per_category, overall)


def judge_protocol(eval_set: EvalSet, images: Any) -> ProtocolScore:
    """Judge images drawn for ``eval_set`` (in :meth:`EvalSet.image_prompts` order) against the prompts as typed."""
    return score_protocol(eval_set, prompts_followed(images, eval_set.image_prompts()))


def paired_arrays(a: ProtocolScore, b: ProtocolScore, category: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The two settings' 0/1 results image by image (of ``category``, or all), checked to be drawn on the same set."""
    if (a.split, a.version, a.item_ids, a.correct.shape) != (b.split, b.version, b.item_ids, b.correct.shape):
        raise ValueError("the two scores were not made on the same prompt set (split, version, prompts and seeds): "
                         "they cannot be paired")
    return a.per_image(category), b.per_image(category)


def compare_settings(a: ProtocolScore, b: ProtocolScore, category: str | None = None) -> PairedDifference:
    """Setting ``a`` against ``b``, drawn on the same prompts and seeds: the course's paired comparison.

    The unit is the prompt: a prompt's images share its difficulty, so the paired
    standard error is taken over the per-prompt differences of the two rates (each
    prompt's mean over its seeds). With one image per prompt these are 0/1 and the
    exact McNemar test comes with it. ``.verdict()`` applies the two-standard-error rule.
    """
    per_image_a, per_image_b = paired_arrays(a, b, category)
    k = a.correct.shape[1]
    return paired_difference(per_image_a.reshape(-1, k).mean(axis=1), per_image_b.reshape(-1, k).mean(axis=1))


def compare_overall(a: ProtocolScore, b: ProtocolScore) -> PairedDifference:
    """Setting ``a`` against ``b`` on "overall", GenEval's mean of the six category rates, paired.

    The difference of the two overalls is the mean of the six categories' paired
    differences (:func:`compare_settings`); its standard error combines theirs, as
    :func:`score_protocol` combines the rates' (the categories' prompts are drawn
    independently). ``n`` counts the six categories' prompts; there is no single McNemar
    test of a mean of six, so its counts and p are None.
    """
    six = [compare_settings(a, b, c) for c in GENEVAL_CATEGORIES]
    return PairedDifference(a.overall.rate, b.overall.rate, float(np.mean([d.diff for d in six])),
                            math.sqrt(sum(d.se**2 for d in six)) / len(six), sum(d.n for d in six))


__all__ = ["EVAL_SPLITS", "EvalItem", "EvalSet", "IMAGES_PER_PROMPT", "PROMPTS_PER_CATEGORY", "PROTOCOL",
           "PROTOCOL_SEED", "ProtocolScore", "Rate", "VERSION", "eval_set_path", "judge_protocol", "load_eval_set",
           "make_eval_set", "compare_overall", "compare_settings", "paired_arrays", "score_protocol", "write_eval_sets"]
