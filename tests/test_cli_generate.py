"""``llmimg generate``, called in-process through ``main`` on the session's smoke models."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from llmimg.cli import main
from llmimg.pipelines.shapes import DEFAULT_SCHEDULER, DEFAULT_STEPS, STAGES

SMOKE = ["--profile", "smoke", "--steps", "2"]


def run(*args: str) -> int:
    """``main`` as the console script runs it: argparse's exit becomes the status too."""
    try:
        return main(["generate", *args])
    except SystemExit as exit:
        return exit.code


def is_32px_png(path) -> bool:
    with Image.open(path) as image:
        return image.format == "PNG" and image.size == (32, 32) and image.mode == "RGB"


@pytest.fixture
def workdir(smoke_pipeline, tmp_path, monkeypatch):
    """An empty working folder, with the smoke models trained in the session cache ($LLMIMG_CACHE_DIR)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_one_image(workdir, capsys):
    assert run("a red circle", *SMOKE, "-o", "pic.png") == 0
    assert is_32px_png(workdir / "pic.png") and [p.name for p in workdir.iterdir()] == ["pic.png"]
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("wrote pic.png: '") and "(the LLM's description" in out[0]
    assert out[1] == "settings: 2 dpm++ steps, guidance 3, seed 0"
    assert out[2].startswith("timings (ms): clip_encode ") and all(s in out[2] for s in STAGES)


def test_a_batch_writes_numbered_files_and_image_k_does_not_depend_on_the_batch(workdir, capsys):
    assert run("a red circle", *SMOKE, "--batch", "3", "--seed", "5", "-o", "pic.png") == 0
    files = sorted(p.name for p in workdir.iterdir())
    assert files == ["pic-1.png", "pic-2.png", "pic-3.png"] and all(is_32px_png(workdir / f) for f in files)
    assert len([line for line in capsys.readouterr().out.splitlines() if line.startswith("wrote ")]) == 3
    assert run("a red circle", *SMOKE, "--seed", "6", "-o", "alone.png") == 0  # image 2 of the batch, by itself
    assert (workdir / "alone.png").read_bytes() == (workdir / "pic-2.png").read_bytes()


def test_json_is_one_object_with_the_documented_keys(workdir, capsys):
    assert run("a blue square", "--profile", "smoke", "--batch", "2", "-o", "pic.png", "--json") == 0
    data = json.loads(capsys.readouterr().out)  # stdout is exactly one JSON object
    assert set(data) == {"prompt", "descriptions", "files", "timings_ms", "steps", "guidance_scale", "scheduler",
                         "upsample", "seed", "faithful"}
    assert len(data["faithful"]) == 2 and all(isinstance(f, bool) for f in data["faithful"])
    assert data["files"] == ["pic-1.png", "pic-2.png"]  # as the user gave them, not absolute
    assert data["prompt"] == "a blue square" and len(data["descriptions"]) == 2 and data["upsample"] is True
    assert (data["steps"], data["scheduler"], data["seed"]) == (DEFAULT_STEPS, DEFAULT_SCHEDULER, 0)
    assert data["guidance_scale"] == 3.0  # the smoke generator's default
    assert set(data["timings_ms"]) == {*STAGES, "total"} and all(v >= 0 for v in data["timings_ms"].values())


def test_no_llm_draws_the_prompt(workdir, capsys):
    args = ["  a red circle! ", *SMOKE, "--no-llm", "--scheduler", "ddim", "--guidance", "0", "-o", "pic.png"]
    assert run(*args, "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["descriptions"] == ["a red circle"] and data["upsample"] is False
    assert data["timings_ms"]["llm_generate"] == 0 and data["scheduler"] == "ddim" and data["guidance_scale"] == 0
    assert is_32px_png(workdir / "pic.png")


def test_a_saved_pipeline_draws_what_the_profile_draws(workdir, saved, capsys):
    assert run("a red circle", *SMOKE, "-o", "profile.png") == 0
    assert run("a red circle", "--pipeline", str(saved), "--steps", "2", "-o", "saved.png") == 0
    assert (workdir / "profile.png").read_bytes() == (workdir / "saved.png").read_bytes()
    assert "Loading pipeline components" not in capsys.readouterr().err


def test_help_states_the_pipeline_defaults(capsys):
    assert run("--help") == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"default: {DEFAULT_STEPS}, the pipeline's DEFAULT_STEPS" in help_text
    assert f"default: {DEFAULT_SCHEDULER}, the pipeline's DEFAULT_SCHEDULER" in help_text
    assert "FILE-1.png ... FILE-B.png" in help_text


def test_building_the_parser_loads_no_model_library():
    # The sampler names are looked up only when --scheduler is given: other commands should not wait for torch.
    code = ("import sys; from llmimg.cli.parser import build_parser; build_parser().parse_args(['generate', 'x', '-o', "
            "'x.png']); print('torch' in sys.modules, 'diffusers' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["False", "False"], result.stderr


@pytest.mark.parametrize("args, message", [
    (["", *SMOKE], "llmimg: error: the prompt is empty"),
    (["   ", *SMOKE], "llmimg: error: the prompt is empty"),
    (["a red circel", *SMOKE], "llmimg: error: unknown word 'circel'"),
    ([" ".join(["red"] * 40), *SMOKE], "llmimg: error: the prompt has 42 tokens"),
    (["un cercle rouge é", *SMOKE], "llmimg: error: unknown words 'un', 'cercle', 'rouge', 'é'"),
    (["a red circle\udcff", *SMOKE], "llmimg: error: the prompt is not valid text: at position 12 it has the "
     "byte 0xff"),
    (["a red circle", *SMOKE, "--no-llm", "--batch", "2", "--guidance", "1"], None),  # control: this one works
])
def test_bad_prompts_are_one_line_errors_and_write_nothing(workdir, capsys, args, message):
    status = run(*args, "-o", "pic.png")
    err = capsys.readouterr().err
    if message is None:
        assert status == 0 and len(list(workdir.iterdir())) == 2
        return
    assert status == 1 and "Traceback" not in err
    assert err.startswith(message) and err.count("\n") == 1  # exactly one line
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "argument --steps: must be between 1 and 1000, got 0"),
    (["--steps", "two"], "argument --steps: expected a whole number"),
    (["--guidance", "-1"], "argument --guidance: must be a non-negative number, got -1"),
    (["--guidance", "nan"], "argument --guidance: must be a non-negative number"),
    (["--guidance", "inf"], "argument --guidance: must be a non-negative number"),
    (["--batch", "0"], "argument --batch: must be between 1 and 256, got 0"),
    (["--seed", "-1"], "argument --seed: must be non-negative"),
    (["--scheduler", "nope"], "argument --scheduler: invalid choice: 'nope' (choose from 'ddpm', 'ddim'"),
    (["--profile", "huge"], "argument --profile: invalid choice: 'huge'"),
    (["--pipeline", "somewhere"], "argument --pipeline: not allowed with argument --profile"),
])
def test_bad_options_are_one_line_usage_errors(workdir, capsys, args, message):
    assert run("a red circle", *SMOKE, *args, "-o", "pic.png") == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(f"llmimg generate: error: {message}")
    assert err.rstrip().endswith("(see 'llmimg generate --help')")
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("output, message", [
    ("pic.jpg", "llmimg: error: the output file must end in .png, got 'pic.jpg'"),
    ("pic", "llmimg: error: the output file must end in .png, got 'pic'"),
    ("nowhere/pic.png", "llmimg: error: the folder 'nowhere' of the output file does not exist"),
    ("folder.png", "llmimg: error: 'folder.png' is a folder, not a PNG file"),
])
def test_bad_output_files_are_refused_before_loading_anything(workdir, capsys, monkeypatch, output, message):
    from llmimg.pipelines import shapes as pipeline

    def must_not_load(*args, **kwargs):
        raise AssertionError("the output file should be checked before the models are loaded")

    monkeypatch.setattr(pipeline, "get", must_not_load)
    (workdir / "folder.png").mkdir()
    assert run("a red circle", *SMOKE, "-o", output) == 1
    assert capsys.readouterr().err == message + "\n"
    assert [p.name for p in workdir.iterdir()] == ["folder.png"] and not any((workdir / "folder.png").iterdir())


def test_an_unwritable_output_folder_is_refused_before_loading_anything(workdir, capsys, monkeypatch):
    from llmimg.pipelines import shapes as pipeline

    monkeypatch.setattr(pipeline, "get", lambda *a, **k: pytest.fail("the models should not be loaded"))
    folder = workdir / "locked"
    folder.mkdir()
    real = __import__("tempfile").TemporaryFile

    def refuse(*args, dir=None, **kwargs):  # what a read-only mount does; root ignores permission bits
        if dir == folder:
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)
    monkeypatch.setattr("tempfile.TemporaryFile", refuse)
    assert run("a red circle", *SMOKE, "-o", str(folder / "pic.png")) == 1
    assert capsys.readouterr().err == (f"llmimg: error: cannot write into the folder {str(folder)!r} of the output "
                                       "file: Permission denied\n")


def test_bytes_that_are_not_utf8_on_the_command_line_are_a_one_line_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "llmimg", "generate", b"a red circle\xff", "-o", "pic.png"],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 1 and result.stderr == (
        "llmimg: error: the prompt is not valid text: at position 12 it has the byte 0xff, which is not UTF-8 text\n")
    assert list(tmp_path.iterdir()) == []


def test_missing_pipeline_folder(workdir, capsys):
    assert run("a red circle", "--pipeline", "gone", "-o", "pic.png") == 1
    err = capsys.readouterr().err
    assert err.startswith("llmimg: error: the pipeline folder 'gone' does not exist") and err.count("\n") == 1
    assert list(workdir.iterdir()) == []


def test_damaged_pipeline_folder(workdir, saved, capsys):
    import shutil

    damaged = shutil.copytree(saved, workdir.parent / "damaged")
    weights = damaged / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert run("a red circle", "--pipeline", str(damaged), "-o", "pic.png") == 1
    err = capsys.readouterr().err
    assert err.startswith("llmimg: error: 'damaged' is damaged: unet/diffusion_pytorch_model.safetensors has 100 "
                          "bytes") and err.count("\n") == 1
    assert "Traceback" not in err and list(workdir.iterdir()) == []


def test_a_full_disk_midway_through_a_batch_leaves_no_image(workdir, capsys, monkeypatch):
    """All or none: the second of three images cannot be written, so the first is not left behind either."""
    import errno

    real, calls = Image.Image.save, []

    def save(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, fp, *args, **kwargs)
    monkeypatch.setattr(Image.Image, "save", save)
    (workdir / "pic-3.png").write_bytes(b"an image of the user's from before")
    assert run("a red circle", *SMOKE, "--batch", "3", "-o", "pic.png") == 1
    err = capsys.readouterr().err
    assert err == (f"llmimg: error: cannot write the images into {str(workdir)!r}: no space left on the device; "
                   "free some space or lift the file-size limit\n")
    assert [p.name for p in workdir.iterdir()] == ["pic-3.png"]  # no new file, and the old one as it was
    assert (workdir / "pic-3.png").read_bytes() == b"an image of the user's from before"


def test_a_huge_unknown_word_is_quoted_briefly(workdir, capsys):
    assert run("a " + "x" * 1_000_000 + " circle", *SMOKE, "-o", "pic.png") == 1
    err = capsys.readouterr().err
    assert err.startswith("llmimg: error: unknown word 'xxxx") and err.count("\n") == 1 and len(err) < 1000


def test_a_prompt_no_draw_kept_is_said_so(workdir, capsys, monkeypatch):
    from llmimg.stages.llm import ShapesLLM

    monkeypatch.setattr(ShapesLLM, "generate",
                        lambda self, z, task, **k: ["a large blue square in the center"] * len(z))
    assert run("a red circle", *SMOKE, "-o", "pic.png") == 0
    out = capsys.readouterr().out.splitlines()[0]
    assert out == ("wrote pic.png: 'a large blue square in the center' (the LLM's description; no draw of the LLM "
                   "kept everything the prompt states: this is its last draw)")
