"""Stage 1: the tiny open_clip CLIP, its pooling, saving and loading, and a short training run."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch

from llmimg import clip as C
from llmimg.checkpoints import CheckpointError
from llmimg.data import ShapesWorld
from llmimg.text import EOS_ID, UnknownWordsError


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
    smoke_clip.save(tmp_path / "clip")
    texts = ["a small blue square in the center", "a cross"]
    images = np.stack([s.image for s in ShapesWorld(seed=2).samples(3, "val")])
    ours = C.load(tmp_path / "clip")
    assert torch.allclose(ours.encode_text(texts), smoke_clip.encode_text(texts), atol=1e-6)
    assert torch.allclose(ours.encode_image(images), smoke_clip.encode_image(images), atol=1e-6)
    model = open_clip.create_model(f"local-dir:{tmp_path / 'clip'}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{tmp_path / 'clip'}")
    with torch.no_grad():
        std = model.encode_text(tokenizer(texts), normalize=True)
    assert torch.allclose(std, smoke_clip.encode_text(texts), atol=1e-6)


def test_missing_and_damaged_checkpoints(smoke_clip, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist.*llmimg train clip --force"):
        C.load(tmp_path / "nothing")
    path = smoke_clip.save(tmp_path / "clip")
    weights = path / "open_clip_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a loadable CLIP"):
        C.load(path)
    weights.unlink()
    with pytest.raises(CheckpointError, match="open_clip_model.safetensors missing"):
        C.load(path)


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


def test_binding_loss_prefers_the_true_description():
    img = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    scale = torch.tensor(10.0)
    loss_right = C.binding_loss(img, img, -img, scale, torch.ones(4, dtype=torch.bool))
    loss_wrong = C.binding_loss(img, -img, img, scale, torch.ones(4, dtype=torch.bool))
    assert loss_right.item() == pytest.approx(np.log1p(np.exp(-20.0)), abs=1e-6)
    assert loss_wrong.item() == pytest.approx(20.0, abs=1e-4)
    assert C.binding_loss(img, img, -img, scale, torch.zeros(4, dtype=torch.bool)).item() == 0.0
