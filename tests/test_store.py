"""Saving into folders, the manifest's record of the files, and failed writes (``core.folders``, ``core.store``).

The stages and the pipeline save through these; ``test_integrity.py`` checks them on real models.
"""

from __future__ import annotations

import errno
import hashlib
import json
from pathlib import Path

import pytest

from llmimg.core.folders import StorageError, current_umask, file_record, json_says, save_into, writing
from llmimg.core.loading import check_config
from llmimg.core.store import (MANIFEST, CheckpointError, Manifest, cache_key, cached, read_manifest, save_model,
                               upstream_folder, write_manifest)
from llmimg.core.training import StageConfig, TrainConfig, cadence


def toy_write(text: str):
    """A save that writes a weights file, a config in a subfolder, and the marker last."""
    def write(folder: Path) -> None:
        (folder / "weights.bin").write_text(text)
        (folder / "sub").mkdir()
        (folder / "sub" / "config.json").write_text(json.dumps({"v": text}))
        (folder / "marker.json").write_text('{"kind": "toy"}')
    return write


def TOY(folder: Path) -> bool:  # noqa: N802 -- the toy model's test of a folder it may write into
    return json_says(folder / "marker.json", "kind", "toy")


def tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- saving never removes what it did not write ------------------------------------------------
def test_saving_into_a_new_folder_and_over_a_saved_model_keeps_the_users_files(tmp_path):
    target = tmp_path / "model"
    save_into(target, toy_write("one"), markers=("marker.json",), what="toy model", holds=TOY)
    assert tree(target) == {"marker.json": '{"kind": "toy"}', "sub/config.json": '{"v": "one"}', "weights.bin": "one"}
    assert target.stat().st_mode & 0o777 == 0o777 & ~current_umask()  # not the 0700 of a temporary folder
    (target / "notes.txt").write_text("mine")
    (target / "runs").mkdir()
    (target / "runs" / "log.txt").write_text("mine too")
    save_into(target, toy_write("two"), markers=("marker.json",), what="toy model", holds=TOY)
    assert tree(target) == {"marker.json": '{"kind": "toy"}', "notes.txt": "mine", "runs/log.txt": "mine too",
                            "sub/config.json": '{"v": "two"}', "weights.bin": "two"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no staging folder left


def test_a_folder_holding_something_else_is_refused_with_nothing_written(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "important.txt").write_text("notes")
    with pytest.raises(ValueError, match="'.*mine' is not empty and holds no saved toy model.*nothing was written"):
        save_into(mine, toy_write("one"), markers=("marker.json",), what="toy model", holds=TOY)
    assert tree(mine) == {"important.txt": "notes"}
    (mine / "marker.json").write_text('{"kind": "another model"}')  # the marker's name alone is not enough
    with pytest.raises(ValueError, match="holds no saved toy model"):
        save_into(mine, toy_write("one"), markers=("marker.json",), what="toy model", holds=TOY)
    assert tree(mine) == {"important.txt": "notes", "marker.json": '{"kind": "another model"}'}
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        save_into(tmp_path / "file", toy_write("one"), markers=("marker.json",), what="toy model", holds=TOY)


def test_a_failed_save_leaves_the_old_model_and_the_users_files_as_they_were(tmp_path):
    target = tmp_path / "model"
    save_into(target, toy_write("one"), markers=("marker.json",), what="toy model", holds=TOY)
    (target / "notes.txt").write_text("mine")
    before = tree(target)

    def failing(folder: Path) -> None:
        (folder / "weights.bin").write_text("half")
        raise RuntimeError("crash while saving")
    with pytest.raises(RuntimeError, match="crash"):
        save_into(target, failing, markers=("marker.json",), what="toy model", holds=TOY)
    assert tree(target) == before
    with pytest.raises(RuntimeError, match="crash"):
        save_into(tmp_path / "new", failing, markers=("marker.json",), what="toy model", holds=TOY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # the new folder is gone again


# -- a write the system refuses is one line ---------------------------------------------------------
@pytest.mark.parametrize("err, reason", [
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on the device"),
    (OSError(errno.EFBIG, "File too large"), "a file grew past the size limit (ulimit -f)"),
    (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
    (Exception("File too large (os error 27)"), "a file grew past the size limit (ulimit -f)"),  # as tokenizers says
])
def test_a_refused_write_names_the_folder_why_and_what_to_do(tmp_path, err, reason):
    with pytest.raises(StorageError) as caught:
        with writing(tmp_path / "model", "the toy model"):
            raise err
    message = str(caught.value)
    assert message.startswith(f"cannot write the toy model into '{tmp_path / 'model'}': {reason}; ")
    assert "\n" not in message and caught.value.reason == reason and caught.value.remedy in message
    with pytest.raises(ValueError, match="not a write"):  # anything else passes unchanged
        with writing(tmp_path, "the toy model"):
            raise ValueError("not a write")


def test_a_full_disk_while_saving_weights_is_one_storage_error(tmp_path, monkeypatch):
    """safetensors reports a full disk as a SafetensorError with the OS error in its text."""
    import safetensors.torch
    import torch
    from safetensors import SafetensorError

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
    monkeypatch.setattr(safetensors.torch, "save_file", full)
    from llmimg.core.store import save_tensors

    with pytest.raises(StorageError, match=r"^cannot write the toy model into '.*new': no space left on the device; "
                                           "free some space or lift the file-size limit$"):
        save_model(tmp_path / "new", lambda out: save_tensors({"w": torch.zeros(3)}, out / "w.safetensors"),
                   Manifest("toy", 1, {}), "toy model")
    assert not (tmp_path / "new").exists()  # nothing half written


def test_a_cache_that_cannot_be_written_names_the_cache_and_how_to_move_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMIMG_CACHE_DIR", str(tmp_path))

    def build(out, work):
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(StorageError) as caught:
        cached(cache_key("toy", 1, {"a": 1}), build, profile="smoke")
    message = str(caught.value)
    assert f"into the model cache '{tmp_path / 'smoke'}' (set by $LLMIMG_CACHE_DIR)" in message
    assert "no space left on the device" in message and "set $LLMIMG_CACHE_DIR to another folder" in message
    assert not [p for p in (tmp_path / "smoke").iterdir() if p.suffix != ".lock"]


def test_a_file_outside_the_cache_that_cannot_be_read_is_not_blamed_on_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMIMG_CACHE_DIR", str(tmp_path / "cache"))
    data = tmp_path / "data.bin"

    def build(out, work):
        raise PermissionError(errno.EACCES, "Permission denied", str(data))
    with pytest.raises(PermissionError, match="data.bin"):
        cached(cache_key("toy", 1, {"a": 1}), build, profile="smoke")


# -- the manifest records every file the save wrote, and loading checks it ---------------------------------
def test_the_manifest_records_size_and_sha256_of_every_file_written(tmp_path):
    folder = save_model(tmp_path / "m", toy_write("one"), Manifest("toy", 1, {"a": 1}), "toy model")
    files = read_manifest(folder, "toy").files
    assert set(files) == {"weights.bin", "sub/config.json", "marker.json"}  # not the manifest itself
    assert files["weights.bin"] == {"size": 3, "sha256": hashlib.sha256(b"one").hexdigest()}
    assert json.loads((folder / MANIFEST).read_text())["schema"] == 3


def test_a_value_changed_in_the_manifest_is_a_checkpoint_error(tmp_path):
    """A flipped digit in a value (guidance 3.0 read as 2.0) would change every image: the checksum catches it."""
    folder = save_model(tmp_path / "m", toy_write("one"), Manifest("toy", 1, {"guidance_scale": 3.0}), "toy model")
    text = (folder / MANIFEST).read_text()
    assert read_manifest(folder, "toy").config == {"guidance_scale": 3.0}
    (folder / MANIFEST).write_text(text.replace('"guidance_scale": 3.0', '"guidance_scale": 2.0'))
    with pytest.raises(CheckpointError, match="'m' was changed after it was saved .*; retrain it"):
        read_manifest(folder, "toy", "retrain it")
    data = json.loads(text)
    del data["files"]  # schema 3 always records its files: without them nothing would be verified
    (folder / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="'files' is missing"):
        read_manifest(folder, "toy")


def test_a_manifest_saved_before_its_checksum_still_loads_with_its_files_checked(tmp_path):
    """Schema 2 (saved before the manifest checked itself): the files are verified, the values cannot be."""
    folder = save_model(tmp_path / "m", toy_write("one"), Manifest("toy", 1, {"a": 1}), "toy model")
    data = json.loads((folder / MANIFEST).read_text())
    del data["checksum"]
    (folder / MANIFEST).write_text(json.dumps({**data, "schema": 2}))
    assert read_manifest(folder, "toy").config == {"a": 1}
    (folder / "weights.bin").write_text("two")
    with pytest.raises(CheckpointError, match="is damaged"):
        read_manifest(folder, "toy")


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "weights.bin").write_text("two"),  # the same size
     r"weights.bin is not the file that was saved \(its SHA-256 differs\)"),
    (lambda f: (f / "weights.bin").write_text("three"), "weights.bin has 5 bytes, not the 3 that were saved"),
    (lambda f: (f / "sub" / "config.json").unlink(), "sub/config.json is missing"),
])
def test_a_file_changed_since_it_was_saved_is_a_checkpoint_error(tmp_path, damage, message):
    folder = save_model(tmp_path / "m", toy_write("one"), Manifest("toy", 1, {}), "toy model")
    (folder / "notes.txt").write_text("the user's own file is not in the record")
    read_manifest(folder, "toy")
    damage(folder)
    with pytest.raises(CheckpointError, match=f"'m' is damaged: {message}; retrain it"):
        read_manifest(folder, "toy", "retrain it")


def test_a_manifest_saved_before_the_record_still_loads(tmp_path):
    """Schema 1, as every cache folder trained before this release has it: nothing to verify."""
    old = {"schema": 1, "stage": "toy", "format": 1, "config": {"a": 1}, "upstream": {}, "history": [],
           "seconds": 2.5, "curve": [], "metrics": {}, "extra": {}}
    (tmp_path / MANIFEST).write_text(json.dumps(old))
    manifest = read_manifest(tmp_path, "toy")
    assert manifest.files == {} and manifest.config == {"a": 1} and manifest.seconds == 2.5


@pytest.mark.parametrize("change, message", [
    ({"hiztory": []}, "fields no manifest has: 'hiztory'"),  # a flipped byte in a key
    ({"config": None}, "'config' is missing or is not a dict"),
    ({"format": True}, "'format' is missing or is not a int"),
    ({"files": {"../../etc/passwd": {"size": 1, "sha256": "0" * 64}}}, "not a file inside the folder"),
    ({"files": {"w.bin": {"size": 1}}}, "not a size and a SHA-256"),
    ({"schema": 9}, "is not an llmimg manifest"),
])
def test_a_manifest_of_the_wrong_shape_is_a_checkpoint_error(tmp_path, change, message):
    data = json.loads(Manifest("toy", 1, {}).to_json())
    (tmp_path / MANIFEST).write_text(json.dumps({**data, **change}))
    with pytest.raises(CheckpointError, match=message):
        read_manifest(tmp_path, "toy", "retrain it")


def test_an_upstream_folder_outside_the_cache_is_refused(tmp_path):
    for name in ("../elsewhere", "/etc", "..", "a/b"):
        with pytest.raises(CheckpointError, match="not a folder name"):
            upstream_folder(tmp_path / "llm-0", Manifest("llm", 1, {}, upstream={"clip": name}), "clip")
    assert upstream_folder(tmp_path / "llm-0", Manifest("llm", 1, {}, upstream={"clip": "clip-1"}),
                           "clip") == tmp_path / "clip-1"


def test_file_record_is_size_and_sha256(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    assert file_record(tmp_path / "f") == {"size": 3, "sha256": hashlib.sha256(b"abc").hexdigest()}


# -- configs are read as written, never completed with defaults -----------------------------------------
def test_check_config_refuses_missing_and_different_keys(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"a": 1, "b": [1, 2], "n": {"x": 1}}))
    assert check_config(tmp_path, "c.json", {"a": 1, "b": (1, 2), "n": {"x": 1}}, "fix it")["a"] == 1
    cases = [({"z": 1}, "c.json in '.*' does not state 'z'; fix it"),
             ({"a": 2}, "c.json in '.*' says a = 1, but the model was trained with 2; fix it"),
             ({"n": {"x": 1, "y": 2}}, "does not state 'n.y'"),
             ({"n": {}}, "has 'n.x', which the model was not built with")]
    for expected, message in cases:
        with pytest.raises(CheckpointError, match=message):
            check_config(tmp_path, "c.json", expected, "fix it")
    for text, message in (("null", "is not a JSON object"), ("{", "cannot be read"), ("{}", "does not state 'a'")):
        (tmp_path / "c.json").write_text(text)
        with pytest.raises(CheckpointError, match=message):
            check_config(tmp_path, "c.json", {"a": 1}, "fix it")


def test_a_stage_config_is_read_strictly():
    from dataclasses import dataclass, field

    @dataclass(frozen=True)
    class Toy(StageConfig):
        width: int = 8
        rate: float = 0.5
        name: str | None = None
        sizes: tuple[int, ...] = (1, 2)
        train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=10, batch_size=2))
        every: int = cadence(5)

    full = Toy().as_dict()
    assert Toy.from_dict(full) == Toy(sizes=[1, 2])
    assert Toy.from_dict({k: v for k, v in full.items() if k != "every"}).every == 5  # cadence may be missing
    no_log = {**full, "train": {k: v for k, v in full["train"].items() if k != "log_every"}}
    assert Toy.from_dict(no_log).train.log_every == 10
    cases = [({k: v for k, v in full.items() if k != "width"}, "lacks 'width', which define"),
             ({**full, "train": {k: v for k, v in full["train"].items() if k != "lr"}}, "lacks 'train.lr'"),
             ({**full, "widht": 8}, "has no field 'widht'"),
             ({**full, "width": "8"}, "'width' is '8', not a int"),
             ({**full, "width": True}, "'width' is True"),
             ({**full, "rate": None}, "'rate' is None"),
             ({**full, "sizes": [1, "2"]}, "'sizes'"),
             ({**full, "train": None}, "the config train is not a mapping")]
    for data, message in cases:
        with pytest.raises(ValueError, match=message):
            Toy.from_dict(data)
    assert Toy.from_dict({**full, "rate": 1}).rate == 1  # an int is a float


def test_write_manifest_records_what_is_in_the_folder(tmp_path):
    (tmp_path / "a.txt").write_text("a")
    write_manifest(tmp_path, Manifest("toy", 1, {}))
    assert set(read_manifest(tmp_path).files) == {"a.txt"}


def test_a_stage_is_never_saved_over_another_stage(tmp_path):
    """A CLIP saved into the folder of an LLM would replace the LLM's manifest and weights: refused."""
    llm = save_model(tmp_path / "m", toy_write("llm"), Manifest("llm", 1, {}), "LLM")
    before = tree(llm)
    with pytest.raises(ValueError, match="holds no saved CLIP.*nothing was written"):
        save_model(llm, toy_write("clip"), Manifest("clip", 1, {}), "CLIP")
    assert tree(llm) == before
