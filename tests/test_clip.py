"""Stage 1: the tiny open_clip CLIP, its pooling, saving and loading, and a short training run."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import open_clip
import pytest
import torch

from llmimg.stages import clip as C
from llmimg.core.store import CheckpointError
from llmimg.core.data import ShapesWorld
from llmimg.core.text import EOS_ID, UnknownWordsError


@pytest.mark.parametrize("name", ["shapes-clip-tiny", "shapes-clip-small", "shapes-clip-base"])
def test_shipped_configs_pool_at_our_eos(name):
    text = C.model_config(name)["text_cfg"]
    assert text["pool_type"] == "eos" and text["eos_id"] == EOS_ID
    assert text["vocab_size"] >= 31 and text["context_length"] == 32


def test_unknown_config_name():
    with pytest.raises(ValueError, match="unknown CLIP config 'nope'.*shapes-clip-small"):
        C.model_config("nope")


def test_shapes_and_unit_length(smoke_clip):
    samples = list(ShapesWorld(seed=1).samples(5, "val"))
    img = smoke_clip.encode_image(np.stack([s.image for s in samples]))
    txt = smoke_clip.encode_text([s.description for s in samples])
    assert img.shape == txt.shape == (5, smoke_clip.embed_dim)
    assert torch.allclose(img.norm(dim=-1), torch.ones(5)) and torch.allclose(txt.norm(dim=-1), torch.ones(5))
    # uint8 HWC arrays and [0, 1] float CHW tensors are the same images
    as_float = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(smoke_clip.encode_image(as_float), img, atol=1e-6)
    states, mask = smoke_clip.token_states(["a red circle", ""])
    assert states.shape == (2, 32, smoke_clip.width) and mask.sum(1).tolist() == [5, 2]


def test_text_embedding_pools_at_eos(smoke_clip):
    """Independent computation: the final-layer state at <eos>, projected; pads after <eos> change nothing."""
    ids = smoke_clip.tokens(["a large red circle in the top left"])
    eos = int((ids[0] == EOS_ID).nonzero()[0])
    m = smoke_clip.model
    with torch.no_grad():
        x = m.token_embedding(ids) + m.positional_embedding
        x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask))
        expected = x[0, eos] @ m.text_projection
        got = m.encode_text(ids)[0]
        noisy = ids.clone()
        noisy[0, eos + 1:] = 5  # any tokens after <eos>: the causal mask hides them from <eos>
        assert torch.allclose(got, expected, atol=1e-5)
        assert torch.allclose(m.encode_text(noisy)[0], got, atol=1e-5)


def test_prompts_are_checked(smoke_clip):
    with pytest.raises(UnknownWordsError, match="'blorb'"):
        smoke_clip.encode_text(["a blorb"])


def test_preprocess_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="expected images"):
        C.preprocess(torch.zeros(2, 4, 32, 32))


def test_save_load_round_trip_through_ours_and_open_clip(smoke_clip, tmp_path):
    smoke_clip.save_pretrained(tmp_path / "clip")
    texts = ["a small blue square in the center", "a cross"]
    images = np.stack([s.image for s in ShapesWorld(seed=2).samples(3, "val")])
    ours = C.ShapesCLIP.from_pretrained(tmp_path / "clip")
    assert torch.allclose(ours.encode_text(texts), smoke_clip.encode_text(texts), atol=1e-6)
    assert torch.allclose(ours.encode_image(images), smoke_clip.encode_image(images), atol=1e-6)
    model = open_clip.create_model(f"local-dir:{tmp_path / 'clip'}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tmp_path / 'clip'}")
    with torch.no_grad():
        std = model.encode_text(tokenizer(texts), normalize=True)
    assert torch.allclose(std, smoke_clip.encode_text(texts), atol=1e-6)


def test_missing_and_damaged_checkpoints(smoke_clip, tmp_path, saved_before_records):
    with pytest.raises(CheckpointError, match="does not exist.*llmimg train clip --force"):
        C.ShapesCLIP.from_pretrained(tmp_path / "nothing")
    path = smoke_clip.save_pretrained(tmp_path / "clip")
    weights = path / "open_clip_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"'clip' is damaged: open_clip_model.safetensors has 100 bytes.*"
                                              "llmimg train clip --force"):
        C.ShapesCLIP.from_pretrained(path)  # the manifest's record of the file
    saved_before_records(path)
    with pytest.raises(CheckpointError, match="not a loadable CLIP"):  # without a record, the loader finds it
        C.ShapesCLIP.from_pretrained(path)
    weights.unlink()
    with pytest.raises(CheckpointError, match="open_clip_model.safetensors missing"):
        C.ShapesCLIP.from_pretrained(path)


def test_cache_returns_the_trained_model_without_retraining(smoke_clip, monkeypatch):
    monkeypatch.setattr(C, "train", lambda *a, **k: pytest.fail("retrained a cached CLIP"))
    again = C.get("smoke", progress=False)
    assert again.path == smoke_clip.path
    assert smoke_clip.path.name.startswith("clip-")


def test_short_training_run_lowers_the_loss(smoke_clip):
    history = smoke_clip.history
    assert len(history) >= 3
    assert history[-1]["loss"] < history[0]["loss"] - 0.05


def test_metrics_are_in_range(smoke_clip):
    scores = C.evaluate(smoke_clip, n=100)
    for key in ("text_to_image_top1", "image_to_text_top1", "zero_shot_accuracy", "binding_accuracy"):
        assert 0.0 <= scores[key] <= 1.0
    assert set(scores["zero_shot_per_attribute"]) == {"shape", "colour", "size", "position"}
    with pytest.raises(ValueError, match="at least the number of candidates"):
        C.retrieval(smoke_clip, n=50)


def test_hard_negatives_change_only_the_binding():
    rng = np.random.default_rng(0)
    for sample in ShapesWorld(seed=4).samples(300):
        scene, negative = sample.scene, C.hard_negative(sample.scene, rng)
        assert negative != scene
        assert [o.position for o in negative] == [o.position for o in scene]
        if len(scene) == 2 and len({(o.shape, o.colour, o.size) for o in scene}) == 2:
            for name in ("shape", "colour", "size"):  # the same words, bound differently
                assert sorted(getattr(o, name) for o in negative) == sorted(getattr(o, name) for o in scene)
        else:
            changed = sum(getattr(a, n) != getattr(b, n) for a, b in zip(scene, negative)
                          for n in ("shape", "colour", "size"))
            assert changed == 1


def test_training_loss_is_clip_loss_plus_weighted_binding_loss(smoke_clip):
    bank = C.ClipBank(8, smoke_clip.tokenizer, split="val")
    b = bank.batch(0, 8, prompt_rate=0.25)
    model = smoke_clip.model
    with torch.no_grad():
        u, v, scale = model(b["image"], b["text"])[:3]
        v_neg = model.encode_text(b["negative"], normalize=True)
        contrastive = open_clip.ClipLoss()(u, v, scale)
        binding = C.binding_loss(u, v, v_neg, scale, b["is_description"])
        assert C.training_loss(model, b, 0.0).item() == pytest.approx(contrastive.item(), rel=1e-5)
        assert C.training_loss(model, b, 0.5).item() == pytest.approx((contrastive + 0.5 * binding).item(), rel=1e-5)


def test_binding_loss_prefers_the_true_description():
    img = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    scale = torch.tensor(10.0)
    loss_right = C.binding_loss(img, img, -img, scale, torch.ones(4, dtype=torch.bool))
    loss_wrong = C.binding_loss(img, -img, img, scale, torch.ones(4, dtype=torch.bool))
    assert loss_right.item() == pytest.approx(np.log1p(np.exp(-20.0)), abs=1e-6)
    assert loss_wrong.item() == pytest.approx(20.0, abs=1e-4)
    assert C.binding_loss(img, img, -img, scale, torch.zeros(4, dtype=torch.bool)).item() == 0.0


# -- metrics on constructed cases ------------------------------------------------------------
def rate(right: int, n: int):
    """``right / n`` up to float32 rounding (the metrics average in float32); one item more or less is 1/n off."""
    return pytest.approx(right / n, abs=1e-6)


class TableClip:
    """A CLIP stand-in that returns the embeddings it was given, row ``i`` for item ``i``, and records its inputs."""

    config = SimpleNamespace(world="shapes")  # the metrics draw samples of the world a CLIP was trained on

    def __init__(self, texts: torch.Tensor, images: torch.Tensor) -> None:
        self.text_rows, self.image_rows = texts, images
        self.texts, self.images = [], []

    def encode_text(self, texts, check=True, normalize=True):
        self.texts.extend(texts)
        assert len(texts) == len(self.text_rows)
        return self.text_rows

    def encode_image(self, images, normalize=True):
        self.images.extend(images)
        assert len(images) == len(self.image_rows)
        return self.image_rows


class AttributeClip:
    """A CLIP stand-in that reads exactly (the parser for texts, the judge for images) and embeds what it read.

    A scene is the unit-length sum of one-hot vectors, one per stated attribute of each
    object: ``(attribute, value)`` (a bag of words: it cannot tell which object has which
    colour) or, with ``binds``, ``(position, attribute, value)`` (each value bound to its
    object). ``sees`` changes each object the judge reads before it is embedded, to make
    a CLIP that is wrong in a known way.
    """

    config = SimpleNamespace(world="shapes")

    def __init__(self, binds: bool = False, sees=lambda obj: obj) -> None:
        from llmimg.core.data import ATTRIBUTES, POSITIONS

        self.binds, self.sees = binds, sees
        keys = [(name, value) for name, values in ATTRIBUTES.items() for value in values]
        if binds:
            keys = [(where, *key) for where in POSITIONS for key in keys]
        self.index = {key: i for i, key in enumerate(keys)}

    def _embed(self, objects) -> torch.Tensor:
        v = torch.zeros(len(self.index))
        for obj in objects:
            for name in ("shape", "colour", "size", "position"):
                if getattr(obj, name) is not None:
                    key = (name, getattr(obj, name))
                    v[self.index[(obj.position, *key) if self.binds else key]] += 1
        return v / v.norm()

    def encode_text(self, texts, check=True, normalize=True):
        from llmimg.core.data import parse_prompt

        return torch.stack([self._embed(parse_prompt(t)) for t in texts])

    def encode_image(self, images, normalize=True):
        from llmimg.core.evaluation import judge_images

        return torch.stack([self._embed([self.sees(o) for o in j.objects]) for j in judge_images(images)])


def test_retrieval_scores_a_constructed_similarity_matrix():
    """Texts are one-hot; image j's embedding is column j of the similarity matrix S, so text · image = S.

    Block 1 (candidates 0, 1): text 1 is closest to image 0 (wrong), but both images are
    closest to their own text. Block 2 is the identity, and text 2 is far closer to
    image 1 of the *other* block, which must not count. So text→image is 3/4 and
    image→text 4/4; the fifth sample does not fill a block of 2 and is left out.
    """
    S = torch.tensor([[1.0, 0.5, 0.0, 0.0],
                      [0.9, 0.8, 0.0, 0.0],
                      [0.0, 5.0, 1.0, 0.0],
                      [0.0, 0.0, 0.0, 1.0]])
    fake = TableClip(torch.eye(4), S.T.contiguous())
    scores = C.retrieval(fake, n=5, candidates=2)
    assert scores == {"text_to_image_top1": 0.75, "image_to_text_top1": 1.0}
    # it embedded the first 4 val samples, text k the description of image k, all different
    samples = list(ShapesWorld(seed=0).samples(4, "val"))
    assert fake.texts == [s.description for s in samples] and len(set(fake.texts)) == 4
    assert all(np.array_equal(a, s.image) for a, s in zip(fake.images, samples))


def test_retrieval_and_binding_of_a_clip_that_reads_exactly_are_perfect():
    exact = AttributeClip(binds=True)  # a scene's embedding names every object's every attribute
    for split in ("val", "heldout"):
        assert C.retrieval(exact, n=40, candidates=20, split=split) == {"text_to_image_top1": 1.0,
                                                                         "image_to_text_top1": 1.0}
    assert C.binding_accuracy(exact, n=60) == 1.0


def test_a_hard_gallery_holds_each_scene_beside_its_hard_negative():
    """Each group is half samples, half their hard negatives (rendered and described), in that order."""
    from llmimg.core import seeding
    from llmimg.core.data import describe, render

    fake = TableClip(torch.eye(4), torch.eye(4))
    assert C.retrieval(fake, n=5, candidates=4, hard_negatives=True) == {"text_to_image_top1": 1.0,
                                                                          "image_to_text_top1": 1.0}
    samples = list(ShapesWorld(seed=0).samples(2, "val"))
    rng = seeding.numpy_rng(0, "eval")
    negatives = [C.hard_negative(s.scene, rng) for s in samples]
    assert fake.texts == [s.description for s in samples] + [describe(n) for n in negatives]
    assert all(np.array_equal(a, b) for a, b in zip(fake.images, [s.image for s in samples]
                                                     + [render(n) for n in negatives]))
    with pytest.raises(ValueError, match="even"):
        C.retrieval(fake, n=6, candidates=3, hard_negatives=True)


def test_the_hard_gallery_separates_a_bag_of_words_from_a_reader_that_binds():
    """The usual gallery scores both near 1; beside its hard negative a bag of words ties on every swap."""
    bag, exact = AttributeClip(binds=False), AttributeClip(binds=True)
    assert C.retrieval(exact, n=40, candidates=20, hard_negatives=True)["text_to_image_top1"] == 1.0
    assert C.retrieval(bag, n=40, candidates=20)["text_to_image_top1"] >= 0.9
    assert C.retrieval(bag, n=40, candidates=20, hard_negatives=True)["text_to_image_top1"] <= 0.8


def test_binding_outcomes_are_per_image_and_their_mean_is_the_accuracy():
    outcomes = C.binding_outcomes(AttributeClip(binds=False), n=30)
    assert outcomes.shape == (30,) and outcomes.dtype == bool
    assert C.binding_accuracy(AttributeClip(binds=False), n=30) == pytest.approx(outcomes.mean())


def test_binding_accuracy_of_a_bag_of_words_is_the_share_of_negatives_that_change_the_words():
    """A bag of words ties a description with its hard negative when two objects swap a value (a tie is
    not a win), and beats it when one object's value changes: a single object, or two alike but for
    their position. So its binding accuracy is exactly the share of such scenes."""
    n = 60
    scenes = [s.scene for s in ShapesWorld(seed=0).samples(n, "val")]
    alike = sum(len(s) == 1 or len({(o.shape, o.colour, o.size) for o in s}) == 1 for s in scenes)
    assert 0 < alike < n
    assert C.binding_accuracy(AttributeClip(binds=False), n=n) == rate(alike, n)


def test_zero_shot_of_an_exact_reader_is_perfect_and_of_a_red_blind_one_misses_exactly_the_red():
    from dataclasses import replace

    n = 60
    assert C.zero_shot(AttributeClip(), n=n) == {"shape": 1.0, "colour": 1.0, "size": 1.0, "position": 1.0}
    objects = [s.scene.objects[0] for s in ShapesWorld(seed=0, max_objects=1).samples(n, "val")]
    red = sum(o.colour == "red" for o in objects)
    assert 0 < red < n
    red_blind = AttributeClip(sees=lambda o: replace(o, colour="orange") if o.colour == "red" else o)
    assert C.zero_shot(red_blind, n=n) == {"shape": 1.0, "colour": rate(n - red, n), "size": 1.0,
                                             "position": 1.0}
