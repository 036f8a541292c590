"""ShapesEval: the judge against ground truth, the scoring logic, and the embedding distances."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from llmimg.core.data import (
    COLOURS,
    POSITIONS,
    SHAPES,
    SIZES,
    ParseError,
    PartialObject,
    Scene,
    ShapeObject,
    ShapesDataset,
    ShapesWorld,
    parse_prompt,
    prompt_matches,
    render,
)
from llmimg.core.evaluation import (
    JudgedImage,
    ShapesEvalResult,
    clip_score,
    cmmd,
    frechet_distance,
    judge,
    judge_accuracy_on_real,
    judge_images,
    score_image,
    shapes_eval,
)

torch.set_num_threads(1)

WORLD = ShapesWorld(seed=0)
SINGLES = [Scene((ShapeObject(p, shape, colour, size),))
           for shape in SHAPES for colour in COLOURS for size in SIZES for p in POSITIONS]


def _accuracy(scenes: list[Scene], images: np.ndarray) -> float:
    return float(np.mean([j.scene == s for j, s in zip(judge_images(images), scenes)]))


# -- the judge on ground truth ------------------------------------------------------
def test_judge_exact_on_2100_scenes_of_all_splits() -> None:
    # Measured: 1.0 on every split (2100/2100), and on 300 scenes of up to 9 objects.
    for split in ("train", "val", "heldout"):
        scenes = [WORLD.scene(i, split) for i in range(700)]
        assert _accuracy(scenes, np.stack([render(s) for s in scenes])) == 1.0, split
    crowded = ShapesWorld(seed=5, max_objects=9)
    scenes = [crowded.scene(i, "val") for i in range(300)]
    assert max(len(s) for s in scenes) >= 7
    assert _accuracy(scenes, np.stack([render(s) for s in scenes])) == 1.0


@pytest.mark.parametrize("image_size", [32, 16, 48])
def test_judge_exact_on_every_single_object(image_size: int) -> None:
    # All 6 shapes × 8 colours × 2 sizes × 9 cells: no pair is ambiguous, even at 16 px.
    assert len(SINGLES) == 864
    images = np.stack([render(s, image_size) for s in SINGLES])
    judged = judge_images(images)
    assert [j.scene for j in judged] == SINGLES
    # Clean renders match their template almost perfectly and clearly beat the runner-up.
    assert max(j.detections[0].distance for j in judged) < 1e-3
    assert min(j.detections[0].margin for j in judged) > 0.03
    assert all(j.detections[0].shift == (0, 0) for j in judged)


def test_judge_image_size_48_on_scenes() -> None:
    world = ShapesWorld(seed=2, max_objects=4, image_size=48)
    samples = list(world.samples(200, "val"))
    assert samples[0].image.shape == (48, 48, 3)
    assert _accuracy([s.scene for s in samples], np.stack([s.image for s in samples])) == 1.0


@pytest.mark.parametrize("std, threshold", [(10, 0.99), (25, 0.95)])
def test_judge_mostly_right_under_pixel_noise(std: float, threshold: float) -> None:
    # Measured all-correct on these 600 scenes: 1.0 at std 10/255 and at 25/255
    # (on 3000 scenes: 1.0 up to 30/255, ~0.99 at 40/255, ~0.88 at 60/255).
    rng = np.random.default_rng(123)
    scenes = [WORLD.scene(i, split) for split in ("train", "heldout") for i in range(300)]
    images = np.stack([render(s) for s in scenes]).astype(np.float64)
    noisy = np.clip(images + rng.normal(0.0, std, images.shape), 0, 255).round().astype(np.uint8)
    assert _accuracy(scenes, noisy) >= threshold


def test_judge_empty_and_noise_only_images() -> None:
    empty = judge(np.zeros((32, 32, 3), dtype=np.uint8))
    assert empty.count == 0 and empty.scene is None and empty.objects == ()
    noise = np.random.default_rng(0).normal(0, 10 / 255, (20, 32, 32, 3)).clip(0, 1)
    assert [j.count for j in judge_images(noise)] == [0] * 20


def test_judge_accepts_float_tensors_channels_first() -> None:
    dataset = ShapesDataset(WORLD, split="val", length=50)
    batch = torch.stack([dataset[i]["image"] for i in range(50)])  # (50, 3, 32, 32) in [0, 1]
    scenes = [WORLD.scene(i, "val") for i in range(50)]
    assert judge(batch[0]).scene == scenes[0]  # one 3×H×W tensor
    assert [j.scene for j in judge_images(batch)] == scenes  # a (N, 3, H, W) batch
    assert [j.scene for j in judge_images(list(batch))] == scenes  # a list of tensors
    as_float = render(scenes[1]).astype(np.float32) / 255  # float (H, W, 3) numpy
    assert judge(as_float).scene == scenes[1]


def test_judge_tolerates_a_one_pixel_misplacement() -> None:
    scene = Scene((ShapeObject("center", "triangle", "purple", "large"),
                   ShapeObject("top left", "cross", "yellow", "small")))
    image = render(scene)
    moved = np.zeros_like(image)
    moved[12:22, 10:21] = image[11:21, 11:22]  # the centre object, one pixel down and one left
    moved[:11, :11] = image[:11, :11]
    judged = judge(moved)
    assert judged.scene == scene
    assert judged.detections[1].shift == (1, -1) and judged.detections[0].shift == (0, 0)


def test_judge_rejects_bad_images() -> None:
    with pytest.raises(ValueError, match="shape"):
        judge(np.zeros((32, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match="3 colour channels"):
        judge(np.zeros((32, 32, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="at least 16"):
        judge(np.zeros((12, 12, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="square"):
        judge(np.zeros((32, 40, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        judge(np.full((32, 32, 3), 200.0))  # 0–255 floats
    with pytest.raises(ValueError, match="batch"):
        judge(np.zeros((2, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="same size"):
        judge_images([np.zeros((32, 32, 3), np.uint8), np.zeros((48, 48, 3), np.uint8)])
    with pytest.raises(ValueError, match="no images"):
        judge_images([])


# -- scoring ------------------------------------------------------------------------
RED_CIRCLE = ShapeObject("top left", "circle", "red", "large")
BLUE_SQUARE = ShapeObject("center", "square", "blue", "small")
BOTH = render(Scene((RED_CIRCLE, BLUE_SQUARE)))
FULL = "a large red circle in the top left and a small blue square in the center"


def test_score_of_a_faithful_image() -> None:
    score = score_image(BOTH, FULL)
    assert score.all_correct and score.count_correct
    assert score.attribute_counts == {"shape": (2, 2), "colour": (2, 2), "size": (2, 2), "position": (2, 2)}


def test_wrong_colour_lowers_only_colour_accuracy() -> None:
    result = shapes_eval([BOTH], ["a large green circle in the top left and a small blue square in the center"])
    assert result.per_attribute == {"shape": 1.0, "colour": 0.5, "size": 1.0, "position": 1.0}
    assert result.count_accuracy == 1.0 and result.all_correct == 0.0


def test_missing_object_makes_count_and_its_attributes_wrong() -> None:
    only_circle = render(Scene((RED_CIRCLE,)))
    score = score_image(only_circle, "a red circle and a small blue square in the center")
    assert not score.count_correct and not score.all_correct
    assert score.attribute_counts == {"shape": (1, 2), "colour": (1, 2), "size": (0, 1), "position": (0, 1)}
    assert score.matches[1].detected is None


def test_extra_object_makes_only_count_wrong() -> None:
    score = score_image(BOTH, "a red circle")
    assert not score.count_correct and not score.all_correct
    assert score.attribute_counts == {"shape": (1, 1), "colour": (1, 1)}
    assert score.extra == (BLUE_SQUARE,)


def test_unstated_attributes_are_not_scored() -> None:
    result = shapes_eval(np.stack([BOTH, BOTH]), ["a circle and a square", "a square and a triangle"])
    assert set(result.per_attribute) == {"shape"}
    assert result.per_attribute["shape"] == 3 / 4
    assert result.all_correct == 0.5


def test_prompt_order_does_not_matter() -> None:
    score = score_image(BOTH, "a blue square in the center and a large circle")
    assert score.all_correct
    assert [m.detected for m in score.matches] == [BLUE_SQUARE, RED_CIRCLE]


def test_prompt_as_scene_or_partial_objects() -> None:
    assert score_image(BOTH, Scene((RED_CIRCLE, BLUE_SQUARE))).all_correct
    assert score_image(judge(BOTH), [PartialObject("square", colour="blue")]).count_correct is False
    swapped = Scene((ShapeObject("top left", "circle", "blue", "large"),
                     ShapeObject("center", "square", "red", "small")))
    score = score_image(BOTH, swapped)
    assert score.attribute_counts["colour"] == (0, 2) and score.attribute_counts["shape"] == (2, 2)


def _brute_force_best(partials: tuple[PartialObject, ...], scene: Scene) -> int:
    """Most stated attributes right over every injective matching, by enumeration."""
    def right(p: PartialObject, o: ShapeObject) -> int:
        return sum(getattr(p, a) == getattr(o, a) for a in ("shape", "colour", "size", "position")
                   if getattr(p, a) is not None)
    best = 0
    objs = list(scene.objects)
    k = min(len(partials), len(objs))
    for ps in itertools.permutations(range(len(partials)), k):
        for os_ in itertools.permutations(range(len(objs)), k):
            best = max(best, sum(right(partials[i], objs[j]) for i, j in zip(ps, os_)))
    return best


def test_matching_is_optimal_and_agrees_with_prompt_matches() -> None:
    world = ShapesWorld(seed=7, max_objects=4, prompt_keep=0.6)
    samples = list(world.samples(150, "train"))
    rng = np.random.default_rng(0)
    agree = n_true = 0
    for k, s in enumerate(samples):
        # Half the time the prompt of another scene, so there are many partial matches.
        scene = s.scene if k % 2 == 0 else samples[int(rng.integers(len(samples)))].scene
        score = score_image(scene, s.prompt)
        partials = parse_prompt(s.prompt)
        assert sum(r for r, _ in score.attribute_counts.values()) == _brute_force_best(partials, scene)
        agree += score.all_correct == prompt_matches(partials, scene)
        n_true += score.all_correct
    assert agree == len(samples)
    assert 0 < n_true < len(samples)


def test_judge_accuracy_on_real_and_result_views() -> None:
    result = judge_accuracy_on_real(WORLD, 100, split="heldout")
    assert isinstance(result, ShapesEvalResult) and result.n_images == 100
    assert result.all_correct == 1.0 and result.count_accuracy == 1.0
    assert result.per_attribute == {"shape": 1.0, "colour": 1.0, "size": 1.0, "position": 1.0}
    d = result.as_dict()
    assert d["n_images"] == 100 and all(type(v) is float for v in d["per_attribute"].values())
    frame = result.to_frame()
    assert len(frame) == 100 and frame["all_correct"].all()
    n_objects = sum(len(WORLD.scene(i, "heldout")) for i in range(100))
    assert frame["shape_stated"].sum() == n_objects


def test_shapes_eval_accepts_judged_images() -> None:
    judged = judge_images(np.stack([BOTH, BOTH]))
    assert all(isinstance(j, JudgedImage) for j in judged)
    assert shapes_eval(judged, [FULL, "a circle"]).all_correct == 0.5


def test_shapes_eval_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="2 images but 1 prompts"):
        shapes_eval(np.stack([BOTH, BOTH]), [FULL])
    with pytest.raises(ValueError, match="at least one"):
        shapes_eval([], [])
    with pytest.raises(ParseError, match="a purple elephant"):
        shapes_eval([BOTH], ["a purple elephant"])
    with pytest.raises(ParseError, match="blob"):
        score_image(BOTH, "a red blob")
    with pytest.raises(ValueError):
        shapes_eval(np.zeros((1, 32, 32), dtype=np.uint8), [FULL])
    with pytest.raises(TypeError):
        shapes_eval([BOTH], FULL)


# -- distances ----------------------------------------------------------------------
def test_clip_score_known_values() -> None:
    e = np.eye(4)
    assert clip_score(e, 3 * e) == pytest.approx(100.0)  # identical directions
    assert clip_score(e, np.roll(e, 1, axis=0)) == pytest.approx(0.0)  # orthogonal
    assert clip_score(e, -e) == 0.0  # opposite: clipped to 0, not -100
    img = np.array([[1.0, 0.0], [1.0, 0.0]])
    txt = np.array([[0.5, np.sqrt(3) / 2], [-0.5, np.sqrt(3) / 2]])  # cos 0.5 and cos -0.5
    assert clip_score(torch.tensor(img), torch.tensor(txt)) == pytest.approx(25.0)
    assert clip_score(img, txt, weight=2.5) == pytest.approx(0.625)
    with pytest.raises(ValueError, match="pair up"):
        clip_score(np.ones((3, 4)), np.ones((2, 4)))


def _whitened(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Samples whose sample mean is exactly 0 and sample covariance exactly the identity."""
    z = rng.normal(size=(n, d))
    z -= z.mean(axis=0)
    return z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T


def test_frechet_distance_closed_forms() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8))
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    # Diagonal covariances: the formula is elementwise, |mx - my|² + Σ (sx - sy)².
    mx, my = rng.normal(size=5), rng.normal(size=5)
    sx, sy = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    a, b = _whitened(rng, 300, 5) * sx + mx, _whitened(rng, 400, 5) * sy + my
    expected = ((mx - my) ** 2).sum() + ((sx - sy) ** 2).sum()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(torch.tensor(b), torch.tensor(a)) == pytest.approx(expected, rel=1e-9)
    # Non-commuting 2×2 covariances: for 2×2 M, (Tr √M)² = Tr M + 2 √det M.
    ca, cb = np.array([[2.0, 0.8], [0.8, 1.0]]), np.array([[1.0, -0.3], [-0.3, 0.5]])
    a = _whitened(rng, 300, 2) @ np.linalg.cholesky(ca).T
    b = _whitened(rng, 300, 2) @ np.linalg.cholesky(cb).T + np.array([1.0, 2.0])
    m = ca @ cb
    expected = 5.0 + np.trace(ca) + np.trace(cb) - 2 * np.sqrt(np.trace(m) + 2 * np.sqrt(np.linalg.det(m)))
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def _mmd_loop(x: np.ndarray, y: np.ndarray, sigma: float, unbiased: bool) -> float:
    """MMD² by explicit sums over pairs, as in Gretton et al. 2012."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    k = lambda a, b: np.exp(-np.sum((a - b) ** 2) / (2 * sigma**2))  # noqa: E731
    def within(s: np.ndarray) -> float:
        pairs = [(i, j) for i in range(len(s)) for j in range(len(s)) if i != j or not unbiased]
        return sum(k(s[i], s[j]) for i, j in pairs) / len(pairs)
    across = sum(k(a, b) for a in x for b in y) / (len(x) * len(y))
    return within(x) + within(y) - 2 * across


def test_cmmd_matches_explicit_sums_and_known_values() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(7, 4)), rng.normal(size=(9, 4)) + 0.5
    for unbiased in (False, True):
        assert cmmd(x, y, sigma=1.0, scale=1.0, unbiased=unbiased) == pytest.approx(
            _mmd_loop(x, y, 1.0, unbiased), rel=1e-10)
    assert cmmd(x, x) == pytest.approx(0.0, abs=1e-9)  # the reference's biased estimator
    assert cmmd(x, 5 * x) == pytest.approx(0.0, abs=1e-9)  # embeddings are normalised first
    # With σ = 10 and unit vectors the kernel is ≈ 1 - |a - b|²/200, and (biased sums)
    # E|x - x'|² + E|y - y'|² - 2 E|x - y|² = -2 |mean(x̂) - mean(ŷ)|², so CMMD ≈ 10 |Δ|².
    a, b = rng.normal(size=(50, 16)) + 1.0, rng.normal(size=(60, 16))
    ua = a / np.linalg.norm(a, axis=1, keepdims=True)
    ub = b / np.linalg.norm(b, axis=1, keepdims=True)
    assert cmmd(torch.tensor(a), torch.tensor(b)) == pytest.approx(10 * ((ua.mean(0) - ub.mean(0)) ** 2).sum(),
                                                                     rel=0.03)


def test_cmmd_grows_with_a_mean_shift_and_is_unbiased_near_zero() -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(size=(200, 32))
    values = [cmmd(base, rng.normal(size=(200, 32)) + shift * np.eye(32)[0], unbiased=True)
              for shift in (0.0, 0.5, 1.0, 2.0, 4.0)]
    assert values == sorted(values) and values[-1] > 100 * abs(values[0])
    # Same distribution: the unbiased estimate averages to about 0, the biased one is positive.
    same = [cmmd(rng.normal(size=(50, 32)), rng.normal(size=(50, 32)), unbiased=True) for _ in range(20)]
    biased = [cmmd(rng.normal(size=(50, 32)), rng.normal(size=(50, 32))) for _ in range(20)]
    assert abs(np.mean(same)) < 0.1 * np.mean(biased)


def test_distances_validate_their_input() -> None:
    ok = np.ones((5, 3)) + np.eye(5, 3)
    with pytest.raises(ValueError, match="2-D"):
        frechet_distance(np.ones(5), ok)
    with pytest.raises(ValueError, match="at least 2"):
        cmmd(ok[:1], ok)
    with pytest.raises(ValueError, match="same embedding dimension"):
        frechet_distance(ok, np.ones((5, 4)))
    with pytest.raises(ValueError, match="NaN"):
        cmmd(np.full((3, 3), np.nan), ok)
    with pytest.raises(ValueError, match="zero vector"):
        cmmd(np.zeros((3, 3)), ok)
    with pytest.raises(ValueError, match="sigma"):
        cmmd(ok, ok, sigma=0.0)


def test_standard_error_of_a_rate():
    from llmimg.core.evaluation import standard_error

    assert standard_error(0.5, 100) == pytest.approx(0.05)
    assert standard_error(0.9, 400) == pytest.approx(0.015)
    assert standard_error(0.0, 10) == standard_error(1.0, 10) == 0.0
    # against the spread of simulated rates
    rng = np.random.default_rng(0)
    rates = rng.binomial(200, 0.3, size=20_000) / 200
    assert rates.std() == pytest.approx(standard_error(0.3, 200), rel=0.03)
    with pytest.raises(ValueError, match="n must be positive"):
        standard_error(0.5, 0)
    with pytest.raises(ValueError, match="rate lies in"):
        standard_error(1.5, 10)
