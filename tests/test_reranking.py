"""Re-ranking the pretrained pipeline's candidates (``none``, ``text``, ``image``) and the experiment comparing them.

The choice itself is tested on constructed cases whose best image is known; the pipeline
and :func:`llmimg.research.reranking.compare_reranking` run on the tiny random models
(their rates are near 0: what is tested is the code path, the pairing and the record).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from llmimg.core import seeding
from llmimg.core.data import Scene, ShapeObject, render
from llmimg.core.evaluation import score_image
from llmimg.pipelines import pretrained
from llmimg.pipelines.pretrained import PretrainedConfig, pick_best, rank_images
from llmimg.research import reranking

PROMPTS = ["a red circle", "a small blue square"]


def seeded(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def drawn(shape: str, colour: str, size: str = "large", position: str = "center") -> np.ndarray:
    return render(Scene((ShapeObject(position, shape, colour, size),)))


def judge_scores(images, texts) -> torch.Tensor:
    """A verifier that knows the answer: 1 when the ShapesEval judge finds the image follows the text."""
    return torch.tensor([float(score_image(np.asarray(im), t).all_correct) for im, t in zip(images, texts)])


@pytest.fixture(scope="module")
def pipe(tmp_path_factory) -> pretrained.PretrainedPipeline:
    return pretrained.tiny_pipeline(tmp_path_factory.mktemp("tiny"))


# -- the choice, on constructed cases ---------------------------------------------------
def test_pick_best_keeps_the_highest_score_and_the_earliest_of_a_tie():
    assert pick_best(torch.tensor([[0.1, 0.7, 0.3], [0.5, 0.2, 0.5], [0.0, 0.0, 0.0]])) == [1, 0, 0]
    with pytest.raises(ValueError, match="NaN"):
        pick_best(torch.tensor([[0.1, float("nan")]]))
    with pytest.raises(ValueError, match=r"\(prompts, candidates\)"):
        pick_best(torch.tensor([0.1, 0.2]))


def test_reranking_by_image_scores_picks_the_image_that_shows_the_prompt():
    # Prompt 0's right image is its second candidate, prompt 1's its third; the others show something else.
    images = [drawn("square", "blue"), drawn("circle", "red"), drawn("triangle", "green"),
              drawn("circle", "red"), drawn("square", "blue", "large"), drawn("square", "blue", "small")]
    chosen, scores = rank_images(PROMPTS, images, judge_scores)
    assert chosen == [1, 2]
    assert scores.tolist() == [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    # Each image is scored against its own prompt: with the prompts swapped, "a small blue square" finds no
    # small blue square among the first three (a tie: the first is kept) and "a red circle" its first candidate.
    chosen, _ = rank_images(PROMPTS[::-1], images, judge_scores)
    assert chosen == [0, 0]


def test_rank_images_refuses_what_does_not_pair_up():
    with pytest.raises(ValueError, match="same number of candidate images"):
        rank_images(PROMPTS, [drawn("circle", "red")] * 3, judge_scores)
    with pytest.raises(ValueError, match="one score per image"):
        rank_images(PROMPTS, [drawn("circle", "red")] * 4, lambda images, texts: torch.zeros(2))


# -- the pipeline -----------------------------------------------------------------------
def test_image_reranking_keeps_the_candidate_the_scorer_likes_best(pipe, monkeypatch):
    # A stub verifier that likes bright images: the kept image must be the brightest candidate drawn.
    def brightness(images, texts):
        assert list(texts) == [p for p in PROMPTS for _ in range(3)]  # scored against the typed prompt
        return torch.tensor([float(np.asarray(im, dtype=np.float64).mean()) for im in images])

    monkeypatch.setattr(pipe, "score_images", brightness)
    out = pipe(PROMPTS, generator=seeded(1, 2), rerank="image", num_candidates=3)
    every = pipe.draw_candidates(PROMPTS, 3, generator=seeded(1, 2))
    assert [len(row) for row in every.images] == [3, 3]
    up = out.upsampled
    assert up.rerank == "image" and up.similarities is None and up.scores.shape == (2, 3)
    for k in range(2):
        light = [float(np.asarray(im, dtype=np.float64).mean()) for im in every.images[k]]
        brightest = int(np.argmax(light))
        assert up.chosen[k] == brightest and up.scores[k].tolist() == pytest.approx(light)
        assert out.descriptions[k] == up.candidates[k][brightest]
        np.testing.assert_array_equal(np.asarray(out.images[k]), np.asarray(every.images[k][brightest]))
    monkeypatch.undo()
    np_out = pipe.draw_candidates(PROMPTS, 3, generator=seeded(1, 2), output_type="np")
    assert np_out.images.shape == (2, 3, 32, 32, 3)


def test_every_candidate_starts_from_its_prompts_noise(pipe):
    """Best-of-n is paired: the kept image is what the prompt's noise gives its description without re-ranking."""
    out = pipe(PROMPTS, generator=seeded(3, 4), rerank="image", num_candidates=3, output_type="np")
    again = pipe(out.descriptions, upsample=False, generator=seeded(3, 4), output_type="np")
    np.testing.assert_allclose(out.images, again.images, atol=1e-5)
    # One generator for the batch gives the same noise as the default mode's call does.
    one = pipe(PROMPTS, generator=torch.Generator().manual_seed(9), rerank="image", num_candidates=2,
               output_type="np")
    same = pipe(one.descriptions, upsample=False, generator=torch.Generator().manual_seed(9), output_type="np")
    np.testing.assert_allclose(one.images, same.images, atol=1e-5)
    assert all(v > 0 for k, v in one.timings.items() if k != "total")  # every stage ran and counted


def test_text_and_no_reranking_record_what_they_chose(pipe):
    text = pipe(PROMPTS, generator=seeded(5, 6), rerank="text", num_candidates=3, output_type="np")
    up = text.upsampled
    assert up.rerank == "text" and torch.equal(up.scores, up.similarities)
    assert up.chosen == pick_best(up.similarities)
    assert text.descriptions == [cs[j] for cs, j in zip(up.candidates, up.chosen)]
    none = pipe(PROMPTS, generator=seeded(5, 6), rerank="none", num_candidates=3, output_type="np")
    assert none.upsampled.candidates == [[cs[0]] for cs in up.candidates]  # only the first is written
    assert none.descriptions == [cs[0] for cs in up.candidates] and none.upsampled.scores is None
    assert pipe(PROMPTS, generator=seeded(5, 6), upsample=False).upsampled is None
    assert pipe.config.rerank == "image"  # the default, as notebook 09's measurement supports
    assert pipe.upsample(PROMPTS, 3, seed=[1, 2]).rerank == "text"  # upsample alone draws no images


def test_bad_reranking_modes_are_refused_in_one_line(pipe):
    with pytest.raises(ValueError, match="unknown re-ranking 'best'; choose one of 'none', 'text', 'image'"):
        PretrainedConfig(rerank="best")
    with pytest.raises(ValueError, match="unknown re-ranking"):
        pipe(PROMPTS, rerank="clip")
    with pytest.raises(ValueError, match="call the pipeline"):
        pipe.upsample(PROMPTS, rerank="image")


# -- the experiment ---------------------------------------------------------------------
def test_each_row_reads_the_judges_verdict_on_the_candidate_it_kept():
    correct = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0], [0, 0, 1]])
    rows = reranking.kept(correct, np.array([1, 0, 0, 1]), text_chosen=[0, 0, 2, 1], image_chosen=[1, 0, 1, 2])
    assert {k: v.tolist() for k, v in rows.items()} == {
        "prompt": [1, 0, 0, 1], "none": [0, 1, 0, 0], "text": [0, 1, 0, 0], "image": [1, 1, 0, 1],
        "oracle": [1, 1, 0, 1]}
    with pytest.raises(ValueError, match="one entry per prompt"):
        reranking.kept(correct, np.array([1, 0]), [0] * 4, [0] * 4)


def test_compare_reranking_pairs_every_row_and_matches_the_pipelines_own_choices(pipe):
    result = reranking.compare_reranking(pipe, n_prompts=3, n_candidates=2, seed=4, batch_size=2)
    assert set(result["rows"]) == set(reranking.ROWS)
    for row in result["rows"].values():
        assert row["n"] == 3 and 0 <= row["all_correct"] <= 1
        assert row["all_correct_se"] == pytest.approx((row["all_correct"] * (1 - row["all_correct"]) / 3) ** 0.5)
    assert set(result["paired"]) == {f"{a} vs {b}" for a, b in reranking.COMPARISONS}
    for a, b in reranking.COMPARISONS:
        assert result["paired"][f"{a} vs {b}"]["verdict"] in ("within noise", f"{a} ahead", f"{b} ahead")
    assert all(len(v) == 3 for v in result["per_item"].values())
    json.dumps(result)  # a record, as it will be written
    # The modes' choices are the pipeline's own, prompt k drawn from (seed, "noise", k) whatever its batch.
    prompts = result["prompts"]
    for mode in ("text", "image"):
        out = pipe(prompts, generator=seeding.noise_generators(4, 3), rerank=mode, num_candidates=2)
        assert out.upsampled.chosen == result["chosen"][mode]
    with pytest.raises(ValueError, match="two candidates"):
        reranking.compare_reranking(pipe, n_prompts=3, n_candidates=1)


def test_the_command_line_records_the_comparison_apart_for_random_models(tmp_path):
    env = {**os.environ, "LLMIMG_CACHE_DIR": str(tmp_path / "cache"), "LLMIMG_EXPERIMENTS_DIR": str(tmp_path / "x"),
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "llmimg", "experiment", "reranking", "--profile", "smoke", "--world",
                             "tiny", "--prompts", "3", "--no-progress"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    record = json.loads((tmp_path / "x" / "reranking-smoke-tiny.json").read_text())
    assert record["world"] == "tiny" and "RANDOM" in record["what"] and record["profile"] == "smoke"
    assert record["n_prompts"] == 3 and record["n_candidates"] == 2  # the smoke profile's candidates
    assert not (tmp_path / "x" / "reranking-smoke.json").exists()
    assert "best-of-n" in result.stdout
    assert re.search(r"image \d\.\d{3} vs text \d\.\d{3} on 3 paired items", result.stdout)
