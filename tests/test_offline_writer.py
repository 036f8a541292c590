"""The offline mode's trained writer: a Qwen2 chat model trained on ShapesWorld, loaded through the hub loader."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from llmimg.core.data import ATTRIBUTES, ShapesWorld, describe_in_prompt_order
from llmimg.core.store import MANIFEST, CheckpointError
from llmimg.pipelines.pretrained import models
from llmimg.pipelines.pretrained.offline import writer
from llmimg.pipelines.pretrained.tiny import CHAT_TEMPLATE


@pytest.fixture(scope="module")
def trained(smoke_cache):
    torch.set_num_threads(1)
    return writer.get("smoke", progress=False)


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory):
    return writer.save_writer(tmp_path_factory.mktemp("offline") / "writer", "smoke", progress=False)


@pytest.fixture(scope="module")
def loaded(saved):
    return models.load_writer(str(saved), device="cpu")


def test_the_saved_folder_loads_through_the_hub_loader_as_a_chat_model(saved, loaded):
    from transformers import AutoModelForCausalLM, Qwen2ForCausalLM

    assert isinstance(loaded.model, Qwen2ForCausalLM)
    assert type(AutoModelForCausalLM.from_pretrained(saved)) is Qwen2ForCausalLM
    assert loaded.kind == "chat" and loaded.tokenizer.chat_template == CHAT_TEMPLATE
    assert loaded.tokenizer.eos_token == "<|im_end|>" == loaded.tokenizer.convert_ids_to_tokens(
        loaded.model.generation_config.eos_token_id)
    assert json.loads((saved / MANIFEST).read_text())["stage"] == writer.STAGE


def test_what_it_learns_from_is_what_the_description_writer_sends():
    tok = writer.build_tokenizer()
    config = writer.WriterConfig(n_train=16)
    bank = writer.WriterBank(config, tok)
    sender = models.DescriptionWriter(writer.build(config, tok), tok, torch.device("cpu"))
    for row, sample in enumerate(ShapesWorld(seed=config.seed).samples(16, "train")):
        ids = torch.cat([bank.prefix, bank.ids[row][bank.mask[row] == 1]]).tolist()
        request = tok(sender.request(sample.prompt))["input_ids"]
        assert ids[:len(request)] == request
        labels = torch.cat([torch.full_like(bank.prefix, writer.IGNORE), bank.labels[row]])
        learnt = torch.cat([bank.prefix, bank.ids[row]])[labels != writer.IGNORE]
        assert tok.decode(learnt) == describe_in_prompt_order(sample.scene, sample.prompt) + "<|im_end|>"
        assert (labels[:len(request)] == writer.IGNORE).all()


def test_the_shared_prefix_gives_the_whole_sequences_loss_and_gradients():
    tok = writer.build_tokenizer()
    config = writer.default_config("smoke")
    bank = writer.WriterBank(config, tok)
    model = writer.build(config, tok).train()
    b = bank.batch(0, 4)
    assert len(b["prefix"]) > 40  # the instruction, shared by every request
    shared = writer.sequence_loss(model, b)
    rows, p = len(b["input_ids"]), len(b["prefix"])
    whole = model(input_ids=torch.cat([b["prefix"].expand(rows, -1), b["input_ids"]], 1),
                  attention_mask=torch.cat([torch.ones(rows, p, dtype=torch.long), b["attention_mask"]], 1),
                  labels=torch.cat([torch.full((rows, p), writer.IGNORE), b["labels"]], 1)).loss
    torch.testing.assert_close(shared, whole)
    params = list(model.parameters())
    for a, w in zip(torch.autograd.grad(shared, params), torch.autograd.grad(whole, params)):
        torch.testing.assert_close(a, w, atol=1e-6, rtol=1e-4)


def test_a_description_comes_back_from_the_tokenizer_unchanged_in_few_tokens():
    tok = writer.build_tokenizer()
    for sample in ShapesWorld(seed=1).samples(50, "val"):
        ids = tok(sample.description + "<|im_end|>")["input_ids"]
        assert len(ids) == len(sample.description.split()) + 1  # one token a word
        assert models._first_line(tok.decode(ids, skip_special_tokens=True)) == sample.description
    assert tok.decode(tok("Any text, ünïcode too!")["input_ids"]) == "Any text, ünïcode too!"


def test_training_lowered_the_loss_and_it_writes_whole_words(trained, loaded):
    history = trained.manifest.history
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    prompts = ["a red circle", "a square and a blue triangle in the top left"]
    texts = loaded.write(prompts, 3, seeds=[1, 2])
    known = {"a", "an", "and", "in", "the", *(w for values in ATTRIBUTES.values() for v in values for w in v.split())}
    for text in (t for candidates in texts for t in candidates):
        assert text and text == " ".join(text.split())
        assert set(text.split()) <= known, text
    assert texts == loaded.write(prompts, 3, seeds=[1, 2])


def test_the_manifest_holds_the_course_upsampling_metrics(trained):
    metrics = trained.manifest.metrics
    assert metrics["n"] == writer.eval_n("smoke")
    for key in ("valid_rate", "faithfulness", "faithfulness_one_object", "faithfulness_two_objects"):
        assert 0.0 <= metrics[key] <= 1.0 and f"{key}_se" in metrics
    assert metrics["faithfulness"] <= metrics["valid_rate"]
    assert metrics["valid_rate"] >= 0.5  # even the smoke writer mostly writes descriptions that parse
    assert metrics["temperature"] == models.PretrainedConfig.temperature


def test_a_folder_holding_something_else_is_refused_with_nothing_written(trained, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty and holds no saved writer"):
        writer.save_writer(tmp_path, "smoke", progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_saving_again_replaces_the_writer_and_keeps_the_users_files(saved, tmp_path):
    folder = shutil.copytree(saved, tmp_path / "writer")
    (folder / "notes.txt").write_text("mine")
    (folder / "model.safetensors").write_bytes(b"stale")
    writer.save_writer(folder, "smoke", progress=False)
    assert (folder / "notes.txt").read_text() == "mine"
    assert writer.check(folder).manifest.metrics == writer.check(saved).manifest.metrics
    models.load_writer(str(folder), device="cpu")


def test_a_damaged_cached_writer_is_refused_in_one_line_naming_the_retrain_command(trained, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    copy = shutil.copytree(trained.path, cache / "smoke" / trained.path.name)
    monkeypatch.setenv("LLMIMG_CACHE_DIR", str(cache))
    assert writer.get("smoke", progress=False).path == copy  # the copy is the one read: nothing retrains
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64] + bytes(64))
    for call in (lambda: writer.get("smoke", progress=False),
                 lambda: writer.save_writer(tmp_path / "out", "smoke", progress=False)):
        with pytest.raises(CheckpointError) as caught:
            call()
        message = str(caught.value)
        assert "\n" not in message and writer.RETRAIN in message and "model.safetensors" in message
    assert not (tmp_path / "out").exists()
