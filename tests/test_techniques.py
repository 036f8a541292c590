"""Speed techniques (llmimg.speed.techniques): each switch changes what it says, gives the same images where it should,
and leaves the pipeline as it found it."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import pytest
import torch

from llmimg.speed import techniques as T
from llmimg.core.data import ShapesWorld


@pytest.fixture(scope="module")
def prompts():
    return [s.prompt for s in ShapesWorld(seed=4).samples(3, "val")]


def draw(pipe, prompts, **call):
    gens = [torch.Generator().manual_seed(k) for k in range(len(prompts))]
    call.setdefault("upsample", False)
    return pipe(prompts, num_inference_steps=3, generator=gens, output_type="pt", **call).images


def unet_rows(pipe, fn):
    rows = []
    hook = pipe.unet.conv_in.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    try:
        fn()
    finally:
        hook.remove()
    return rows


@pytest.mark.parametrize("switch", [T.two_pass_guidance, T.plain_attention, T.channels_last,
                                    lambda p: T.threads(1), T.cached_text_states,
                                    lambda p: T.compiled(p, backend="eager")],
                         ids=["two_pass", "plain_attention", "channels_last", "one_thread", "cached_text_states",
                              "compiled"])
def test_exact_switches_give_the_same_images_and_leave_the_pipeline_as_it_was(smoke_pipeline, prompts, switch):
    pipe = smoke_pipeline
    before = (pipe.unet, dict(pipe.unet.attn_processors), torch.get_num_threads(), pipe.sampling)
    reference = draw(pipe, prompts, guidance_scale=3.0)
    with switch(pipe):
        switched = draw(pipe, prompts, guidance_scale=3.0)
    torch.testing.assert_close(switched, reference, atol=1e-4, rtol=0)
    assert (pipe.unet, dict(pipe.unet.attn_processors), torch.get_num_threads(), pipe.sampling) == before
    assert pipe.unet.conv_in.weight.is_contiguous()
    assert "forward" not in vars(pipe.unet)  # no switch replaces a method of a component


def text_encodings(pipe, fn) -> int:
    """How many times CLIP's text tower ran during ``fn()``."""
    calls = []
    hook = pipe.clip.model.token_embedding.register_forward_hook(lambda *args: calls.append(1))
    try:
        fn()
    finally:
        hook.remove()
    return len(calls)


def test_cached_text_states_encodes_each_text_once(smoke_pipeline, prompts):
    pipe = smoke_pipeline
    # Without the cache a call encodes the prompts (the LLM's prefix), the descriptions and the unconditional text.
    assert text_encodings(pipe, lambda: draw(pipe, prompts, upsample=True)) == 3
    assert text_encodings(pipe, lambda: draw(pipe, prompts)) == 2  # no LLM: the prompts are the descriptions
    with T.cached_text_states(pipe):
        assert text_encodings(pipe, lambda: draw(pipe, prompts)) == 2  # the first call fills the cache
        assert text_encodings(pipe, lambda: draw(pipe, prompts)) == 0  # then nothing is encoded again
        assert text_encodings(pipe, lambda: draw(pipe, prompts[:1] + ["a cross"])) == 1  # only the new text
    assert pipe.sampling.text_state_cache is None


def test_two_pass_guidance_really_calls_the_unet_twice_per_step(smoke_pipeline, prompts):
    batched = unet_rows(smoke_pipeline, lambda: draw(smoke_pipeline, prompts, guidance_scale=3.0))
    with T.two_pass_guidance(smoke_pipeline):
        two = unet_rows(smoke_pipeline, lambda: draw(smoke_pipeline, prompts, guidance_scale=3.0))
    assert batched == [6, 6, 6] and two == [3] * 6


def test_guidance_on_part_of_the_steps_halves_the_later_calls(smoke_pipeline, prompts):
    rows = unet_rows(smoke_pipeline, lambda: draw(smoke_pipeline, prompts, guidance_scale=3.0, guidance_end=0.5))
    assert rows == [6, 6, 3]  # ceil(0.5 · 3) = 2 guided steps
    torch.testing.assert_close(draw(smoke_pipeline, prompts, guidance_scale=3.0, guidance_end=0.0),
                               draw(smoke_pipeline, prompts, guidance_scale=1.0))
    with pytest.raises(ValueError, match="guidance_end"):
        draw(smoke_pipeline, prompts, guidance_end=1.5)


def test_bf16_autocast_draws_nearly_the_same_images(smoke_pipeline, prompts):
    reference = draw(smoke_pipeline, prompts)
    with T.bf16(smoke_pipeline):
        approx = draw(smoke_pipeline, prompts)
    assert (approx - reference).abs().mean() < 0.05


def test_the_scheduler_switch_restores_the_sampler(smoke_pipeline):
    before = type(smoke_pipeline.scheduler).__name__
    with T.scheduler(smoke_pipeline, "ddim"):
        assert type(smoke_pipeline.scheduler).__name__ == "DDIMScheduler"
    assert type(smoke_pipeline.scheduler).__name__ == before


def test_measure_reports_time_and_quality_with_its_standard_error(smoke_pipeline, prompts):
    row = T.measure(smoke_pipeline, T.Technique("ddim_2", "DDIM at 2 steps", {"num_inference_steps": 2},
                                                lambda p: T.scheduler(p, "ddim")), prompts, batch_size=2)
    assert row["name"] == "ddim_2" and row["n"] == 3 and row["ms_per_image"] > 0
    assert 0 <= row["all_correct"] <= 1 and row["all_correct_se"] >= 0
    with pytest.raises(ValueError, match="at least one prompt"):
        T.measure(smoke_pipeline, T.Technique("x", "x"), [])


def test_the_one_standard_error_reading_is_still_reported_beside_the_paired_rule():
    ref = {"all_correct": 0.90, "all_correct_se": 0.03}
    assert T.equal_quality({"all_correct": 0.87, "all_correct_se": 0.03}, ref)  # 0.03 below, se of diff 0.042
    assert not T.equal_quality({"all_correct": 0.80, "all_correct_se": 0.03}, ref)
    perfect = {"all_correct": 1.0, "all_correct_se": 0.0, "n": 64}
    assert T.quality_se(perfect) == pytest.approx((1 / 64 * 63 / 64 / 64) ** 0.5)  # one trial's doubt
    assert T.equal_quality({"all_correct": 63 / 64, "all_correct_se": 0.0155, "n": 64}, perfect)


def scored(correct, what="x"):
    """A measure row with the per-image scores ``correct``."""
    rate = sum(correct) / len(correct)
    return {"name": what, "what": what, "correct": list(correct), "all_correct": rate, "n": len(correct),
            "all_correct_se": (rate * (1 - rate) / len(correct)) ** 0.5}


def fake_measure(correct_by_what):
    """A stand-in for measure: the per-image scores of each setting from ``correct_by_what`` (keyed by ``what``)."""
    def fake(pipe, technique, prompts, **kw):
        return scored(correct_by_what.get(technique.what, [1] * 60 + [0] * 4), technique.what) | {
            "name": technique.name}
    return fake


def fake_trials(ms_by_what, wobble=(1.0, 1.02, 0.99, 1.01, 1.0)):
    """A stand-in for time_trials: each setting's milliseconds from ``ms_by_what``, wobbling alike in every trial."""
    def fake(pipe, techniques, prompts, trials=5, seed=0):
        return {t.name: [ms_by_what[t.what] * w for w in wobble[:trials]] for t in techniques}
    return fake


def test_time_trials_interleaves_the_rounds_after_an_untimed_one(smoke_pipeline, prompts):
    order = []

    def counting(name):
        @contextmanager
        def switch(pipe):
            order.append(name)
            yield
        return switch
    techniques = [T.Technique("a", "a", {"num_inference_steps": 1}, counting("a")),
                  T.Technique("b", "b", {"num_inference_steps": 1}, counting("b"))]
    ms = T.time_trials(smoke_pipeline, techniques, prompts[:2], trials=2)
    assert order == ["a", "b"] * 3  # one untimed round, then two timed ones, a and b alternating
    assert set(ms) == {"a", "b"} and all(len(v) == 2 and min(v) > 0 for v in ms.values())
    with pytest.raises(ValueError, match="at least 1"):
        T.time_trials(smoke_pipeline, techniques, prompts, trials=0)


def test_the_stack_keeps_a_switch_only_when_its_gain_exceeds_the_noise_of_the_exact_switches(monkeypatch):
    def switch(p):
        return nullcontext()
    techniques = [T.Technique("default", "default"), T.Technique("few", "few", {"num_inference_steps": 2}),
                  T.Technique("a", "a", switch=switch), T.Technique("b", "b", switch=switch),
                  T.Technique("c", "c", switch=switch, exact=True), T.Technique("w", "w", {"constrained": True})]
    # a, b and w help alone; on top of few, a helps, b slows it down and w gains 4 %, less than the noise.
    ms = {"default": 40.0, "few": 10.0, "a": 30.0, "b": 20.0, "c": 40.0, "w": 32.0, "few + w": 9.6,
          "few + b": 12.0, "few + a": 8.0, "few + a + w": 7.7, "few + a + c": 8.0, "few + a + w + c": 7.7}
    monkeypatch.setattr(T, "measure", fake_measure({}))
    trials = fake_trials(ms)

    def noisy_c(pipe, techniques, prompts, trials=5, seed=0):  # the exact switch c wanders by 10 % across trials
        out = fake_trials(ms)(pipe, techniques, prompts, trials, seed)
        if "c" in out:
            out["c"] = [40.0, 44.0, 40.0, 40.0, 40.0]
        return out
    monkeypatch.setattr(T, "time_trials", noisy_c)
    reference = scored([1] * 61 + [0] * 3, "baseline")
    out = T.compare(None, techniques, ["p"], reference)
    assert 0.05 < out["noise"] < 0.1  # c ran at 0.93 to 1.01 times the default's speed
    # Every stackable setting of the default's quality is tried, the fastest on the default first; c changes nothing.
    assert [(r["what"], r["kept"]) for r in out["stack_trials"]] == [("few + b", False), ("few + a", True),
                                                                      ("few + a + w", False), ("few + a + c", False)]
    assert out["fastest"]["name"] == "stack" and out["fastest"]["what"] == "few + a" and out["meets_reference"]
    assert out["fastest_technique"].call == {"num_inference_steps": 2}
    assert out["fastest"]["ms_per_image"] == 8.0 and out["fastest"]["ms_min"] < out["fastest"]["ms_max"]
    assert out["fastest"]["speedup"] == pytest.approx(40.0 / 8.0)  # against the default, not the stack before
    monkeypatch.setattr(T, "time_trials", trials)  # without the noisy exact switch, the 4 % gain counts
    out = T.compare(None, techniques, ["p"], reference)
    assert out["noise"] < 0.04 and out["fastest"]["what"] == "few + a + w"
    assert out["techniques"]["stack"].call == {"num_inference_steps": 2, "constrained": True}
    assert all(r["keeps_target"] for r in out["stack_trials"])


def test_the_fastest_for_one_user_is_timed_at_batch_1_among_the_settings_of_equal_quality(smoke_pipeline, prompts):
    techniques = {"two": T.Technique("two", "two", {"num_inference_steps": 2}),
                  "one": T.Technique("one", "one", {"num_inference_steps": 1}),
                  "worse": T.Technique("worse", "worse", {"num_inference_steps": 1})}
    rows = [{"name": n, "what": n, "all_correct": 0.5, "keeps_target": n != "worse"} for n in techniques]
    kept_trial = {"name": "stack_trial_1", "what": "one", "all_correct": 0.5, "keeps_target": True}  # = row "one"
    out = T.fastest_for_one(smoke_pipeline, {"rows": rows, "stack_trials": [kept_trial], "techniques": techniques},
                            prompts[0], repeats=1)
    # The one that lost quality is not a candidate, and a setting both a row and a stack trial is timed once.
    assert sorted(r["name"] for r in out) == ["one", "two"]
    assert out[0]["end_to_end_ms"] <= out[1]["end_to_end_ms"]
    assert out[0]["stage_latency_ms"]["total"] == out[0]["end_to_end_ms"]


def test_quality_is_kept_by_the_paired_rule_and_a_setting_below_it_is_not_the_fastest(monkeypatch):
    techniques = [T.Technique("default", "default"), T.Technique("few", "few", {"num_inference_steps": 2})]
    reference = scored([1] * 64, "baseline")
    # few loses 5 of the baseline's 64 images and gains none: 5/64 below, 4.4 paired standard errors.
    monkeypatch.setattr(T, "measure", fake_measure({"default": [1] * 64, "few": [1] * 59 + [0] * 5}))
    monkeypatch.setattr(T, "time_trials", fake_trials({"default": 40.0, "few": 10.0}))
    out = T.compare(None, techniques, ["p"], reference)
    few = out["rows"][1]
    assert few["paired_difference"] == pytest.approx(-5 / 64) and not few["keeps_quality"]
    assert out["fastest"]["name"] == "default" and out["meets_reference"]
    # Nothing keeps a reference every setting falls short of: then held to the default's quality.
    monkeypatch.setattr(T, "measure", fake_measure({"default": [0] * 10 + [1] * 54, "few": [0] * 10 + [1] * 54}))
    out = T.compare(None, techniques, ["p"], reference)
    assert not out["meets_reference"] and out["fastest"]["name"] == "few"


def test_the_kv_cache_comparison_writes_the_same_tokens_and_really_recomputes_without(smoke_pipeline, prompts):
    out = T.kv_cache(smoke_pipeline, prompts, n_new=6, repeats=1)
    assert out["same_tokens"]
    # With the cache: the prefix once, then one position per new token; without: the growing sequence each time.
    prefix = out["positions_fed_with"] - 5
    assert out["positions_fed_without"] == sum(prefix + k for k in range(6))
    assert out["ms_with"] > 0 and out["ms_without"] > 0


def test_the_sampler_curve_has_one_point_per_sampler_and_step_count(smoke_pipeline, prompts):
    rows = T.sampler_curve(smoke_pipeline, prompts, schedulers=("ddim", "euler"), steps=(1, 2))
    assert [(r["scheduler"], r["steps"]) for r in rows] == [("ddim", 1), ("ddim", 2), ("euler", 1), ("euler", 2)]
    assert all(r["unet_rows_per_image"] == 2 * r["steps"] for r in rows)  # guided: two rows per step


def test_deep_cache_skips_the_deep_blocks_on_cached_steps_and_rebuilds_the_outer_ring_exactly(smoke_pipeline, prompts):
    from llmimg.stages.generator import DeepCache, unet_output

    pipe = smoke_pipeline
    deep = []
    hook = pipe.unet.down_blocks[-1].register_forward_pre_hook(lambda m, args, kwargs: deep.append(1), with_kwargs=True)
    try:
        with T.deep_cache(pipe, interval=1):
            every_step = draw(pipe, prompts)
        torch.testing.assert_close(every_step, draw(pipe, prompts))
        deep.clear()
        with T.deep_cache(pipe, interval=2):
            assert pipe.sampling.deep_cache_interval == 2
            draw(pipe, prompts)
        assert len(deep) == 2  # 3 steps: full, cached, full
    finally:
        hook.remove()
    assert pipe.sampling.deep_cache_interval == 1
    # On a cached step at the same input as the full step before it, the outer ring alone must give
    # exactly what the whole UNet gives.
    x = torch.randn(2, pipe.unet.config.in_channels - 2, 8, 8)  # the coordinate channels are added inside
    states, mask = pipe.image_generator.text_states(["a red circle", "a blue square"], check=False)
    cache = DeepCache(pipe.unet, 2)
    with torch.no_grad():
        full = cache(0, x, torch.tensor(500), states, mask, "cond")
        cached = cache(1, x, torch.tensor(500), states, mask, "cond")
        torch.testing.assert_close(full, unet_output(pipe.unet, x, torch.tensor(500), states, mask))
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="interval"):
        with T.deep_cache(pipe, interval=0):
            pass
