"""Run-time configuration shared by every notebook and command.

Four things live here, and nowhere else:

* **profiles** scale every experiment: ``smoke`` (seconds, what CI runs), ``default``
  (a laptop CPU reproduces everything) and ``full`` (a GPU). The profile comes from an
  explicit argument, else ``$LLMIMG_PROFILE``, else ``default``.
* **the sizes table** :data:`SIZES`: every size the library chooses by profile (model
  widths, training steps, batch sizes, how many examples an evaluation scores), one
  row per size and one column per profile, so the three profiles can be compared at a
  glance. ``profile.size("clip.steps")`` reads it.
* **device choice**: CUDA, then Apple MPS, then CPU, overridable with an argument or
  ``$LLMIMG_DEVICE``.
* **folders and environment variables**: the model cache (``$LLMIMG_CACHE_DIR``), the
  experiment records (``$LLMIMG_EXPERIMENTS_DIR``), the notebook a run is executing
  (``$LLMIMG_NOTEBOOK``), whether the command line shows tracebacks
  (``$LLMIMG_TRACEBACK``); this is the one module that reads the environment.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # torch is imported where it is used: `llmimg --version` should not wait for it
    import torch

REPO_URL = "https://github.com/llmimg/llmimg"
PROFILES: tuple[str, ...] = ("smoke", "default", "full")
PROFILE_ENV = "LLMIMG_PROFILE"
DEVICE_ENV = "LLMIMG_DEVICE"
CACHE_ENV = "LLMIMG_CACHE_DIR"
EXPERIMENTS_ENV = "LLMIMG_EXPERIMENTS_DIR"
NOTEBOOK_ENV = "LLMIMG_NOTEBOOK"  # set by `llmimg reproduce` to the stem of the notebook it runs
TRACEBACK_ENV = "LLMIMG_TRACEBACK"  # 1: the command line prints the traceback of an unexpected error
DEVICES: tuple[str, ...] = ("cpu", "cuda", "mps")

T = TypeVar("T")

# Every size the library picks by profile: name -> (smoke, default, full).
# smoke checks that the code runs in seconds; default trains everything on a 2-core CPU;
# full is for a GPU. Notebooks pick their own display sizes with Profile.pick.
SIZES: dict[str, tuple[Any, Any, Any]] = {
    # stage 1, CLIP
    "clip.model": ("shapes-clip-tiny", "shapes-clip-small", "shapes-clip-base"),
    "clip.steps": (30, 1200, 20_000),
    "clip.batch_size": (32, 128, 256),
    "clip.lr": (2e-3, 1e-3, 5e-4),
    "clip.warmup_steps": (5, 100, 500),
    "clip.n_train": (512, 20_000, 200_000),
    "clip.eval_n": (200, 1000, 2000),
    # stage 2, the LLM
    "llm.n_embd": (32, 128, 256),
    "llm.n_layer": (1, 4, 6),
    "llm.n_head": (2, 4, 8),
    "llm.mapper_hidden": (64, 256, 512),
    "llm.steps": (30, 3000, 20_000),
    "llm.batch_size": (32, 64, 256),
    "llm.lr": (3e-3, 1e-3, 5e-4),
    "llm.warmup_steps": (5, 100, 500),
    "llm.n_train": (512, 20_000, 200_000),
    "llm.eval_n": (50, 500, 1000),
    # stage 3, the image generator
    "generator.block_out_channels": ((32, 32), (96, 192), (128, 256, 256)),
    "generator.down_block_types": (("DownBlock2D", "CrossAttnDownBlock2D"),
                                   ("DownBlock2D", "CrossAttnDownBlock2D"),
                                   ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")),
    "generator.up_block_types": (("CrossAttnUpBlock2D", "UpBlock2D"),
                                 ("CrossAttnUpBlock2D", "UpBlock2D"),
                                 ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")),
    "generator.mid_block_type": (None, "UNetMidBlock2DCrossAttn", "UNetMidBlock2DCrossAttn"),
    "generator.layers_per_block": (1, 1, 2),
    "generator.attention_heads": (2, 4, 8),
    "generator.norm_num_groups": (8, 32, 32),
    "generator.unshuffle": (4, 4, 2),
    "generator.n_train": (256, 10_000, 100_000),
    "generator.steps": (20, 1200, 30_000),
    # The GenEval-shaped world's scenes of up to 4 objects need twice the steps at default: the recipe search
    # (`llmimg experiment geneval-recipes`) measured counting 0.72 -> 0.89 on val, paired.
    "generator.geneval_steps": (20, 2400, 30_000),
    "generator.batch_size": (16, 64, 256),
    "generator.lr": (1e-3, 2e-3, 3e-4),
    "generator.warmup_steps": (5, 50, 500),
    "generator.log_every": (5, 10, 50),
    "generator.checkpoint_every": (200, 200, 1000),
    "generator.curve_every": (10, 300, 3000),  # ShapesEval along training (the learning curve of notebook 05)
    "generator.curve_n": (8, 100, 200),
    "generator.eval_n": (16, 500, 1000),
    "pipeline.eval_n": (16, 500, 1000),
    "pipeline.protocol_n": (2, 100, 100),  # prompts per category of each protocol set (issue 26); 100 is all
    # the speed lab
    "distilled.steps": (4, 200, 500),
    "distilled.batch_size": (8, 64, 64),
    "bench.quality_n": (4, 64, 256),
    "bench.techniques_n": (4, 128, 512),
    # notebook research
    "recipes.two_object_n": (8, 300, 500),
    "transfer.steps": (8, 600, 6000),
    "transfer.eval_n": (8, 100, 100),
    "joint.steps": (6, 300, 3000),
    "joint.batch_size": (8, 32, 128),
    "joint.warmup_steps": (1, 20, 100),
    "joint.log_every": (1, 10, 50),
    "joint.checkpoint_every": (100, 100, 500),
    "joint.start_eval_n": (8, 100, 200),
    "joint.eval_n": (16, 256, 1000),
    # Reinforcement learning from the GenEval-shaped world's competent pipeline (llmimg.research.joint.rl, issue 27):
    # optimiser steps, rows per step (prompts x group), the group, the chain and its trained steps, the eval size.
    "joint_rl.steps": (2, 30, 300),
    "joint_rl.batch_size": (4, 32, 64),
    "joint_rl.warmup_steps": (0, 3, 20),
    "joint_rl.group_size": (2, 8, 8),
    "joint_rl.sampling_steps": (3, 10, 10),
    "joint_rl.trained_steps": (2, 4, 9),
    "joint_rl.eval_per_category": (1, 50, 100),
    "reranking.n_prompts": (4, 300, 1000),  # prompts drawn by every re-ranking mode (notebook 09)
    "reranking.n_candidates": (2, 4, 4),  # the LLM's candidates per prompt, as the pretrained pipeline writes
}


@dataclass(frozen=True)
class Profile:
    """One named scale of the whole suite.

    Library code reads its sizes from :data:`SIZES` (``profile.size("clip.steps")``);
    a notebook that has a size of its own to choose asks :meth:`pick`::

        n_show = profile.pick(smoke=4, default=16, full=16)
    """

    name: str

    def pick(self, *, smoke: T, default: T, full: T) -> T:
        """Return the value given for this profile."""
        return {"smoke": smoke, "default": default, "full": full}[self.name]

    def size(self, name: str) -> Any:
        """This profile's column of the row ``name`` of :data:`SIZES`."""
        if name not in SIZES:
            raise KeyError(f"no size named {name!r}; the sizes are: {', '.join(SIZES)}")
        return SIZES[name][PROFILES.index(self.name)]

    def __str__(self) -> str:
        return self.name


def get_profile(profile: str | Profile | None = None) -> Profile:
    """Resolve the profile: the argument, else ``$LLMIMG_PROFILE``, else ``default``.

    Notebooks pass their ``PROFILE`` parameter (``None`` unless papermill injected one).
    """
    if isinstance(profile, Profile):
        return profile
    source = "argument"
    if profile is None:
        profile, source = os.environ.get(PROFILE_ENV) or "default", f"${PROFILE_ENV}"
    name = str(profile).strip().lower()
    if name not in PROFILES:
        raise ValueError(
            f"unknown profile {profile!r} (from {source}); choose one of {', '.join(PROFILES)}"
        )
    return Profile(name)


def get_device(device: str | torch.device | None = None) -> torch.device:
    """Pick the device to compute on: the argument, else ``$LLMIMG_DEVICE``, else the best available.

    "Best" is CUDA, then Apple's MPS, then the CPU. Asking for a device that is not
    available is an error rather than a silent fallback, so a run never reports CPU
    timings as GPU ones.
    """
    import torch

    if isinstance(device, torch.device):
        return device
    source = "argument"
    if device is None and os.environ.get(DEVICE_ENV):
        device, source = os.environ[DEVICE_ENV], f"${DEVICE_ENV}"
    if device is None or str(device).strip().lower() == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    name = str(device).strip().lower()
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise ValueError(
            f"unknown device {device!r} (from {source}); choose auto, {', '.join(DEVICES)}"
        )
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} (from {source}) asked for, but CUDA is not available")
    if kind == "mps" and not _mps_available():
        raise RuntimeError(f"device {device!r} (from {source}) asked for, but MPS is not available")
    return torch.device(name)


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def project_root() -> Path | None:
    """The root of the source checkout this package runs from, or ``None`` if installed elsewhere."""
    root = Path(__file__).resolve().parents[3]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "llmimg"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


def _user_folder() -> Path:
    """``~/.cache/llmimg``: where an installed package (e.g. on Colab) keeps what it writes."""
    return Path.home() / ".cache" / "llmimg"


def _folder_env(name: str) -> Path | None:
    """The folder the environment variable ``name`` names, made absolute once and for all.

    A relative value is taken from the working folder where it is first read and
    written back absolute, so a notebook kernel or a launched process that starts
    elsewhere (``llmimg reproduce`` runs notebooks in ``notebooks/``) finds the same folder.
    """
    value = os.environ.get(name)
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = path.resolve()
        os.environ[name] = str(path)
    return path


def pin_folders() -> None:
    """Make a relative ``$LLMIMG_CACHE_DIR`` or ``$LLMIMG_EXPERIMENTS_DIR`` absolute, from the working folder now.

    The command line calls this first thing, so everything it starts reads the folders
    the user meant, whatever its own working folder.
    """
    for name in (CACHE_ENV, EXPERIMENTS_ENV):
        _folder_env(name)


def cache_dir(profile: str | Profile | None = None, *, create: bool = True) -> Path:
    """Folder for trained models of one profile (``<cache>/<profile>``).

    The cache is ``$LLMIMG_CACHE_DIR`` if set, else ``data/cache`` in a source
    checkout (ignored by git), else ``~/.cache/llmimg``. A relative
    ``$LLMIMG_CACHE_DIR`` is taken from the working folder where it was first read
    (:func:`pin_folders`).
    """
    root = _folder_env(CACHE_ENV)
    if root is None:
        checkout = project_root()
        root = checkout / "data" / "cache" if checkout is not None else _user_folder()
    path = root / get_profile(profile).name
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def cache_origin() -> str:
    """Where the model cache's location comes from, in words, for messages about it."""
    if os.environ.get(CACHE_ENV):
        return f"set by ${CACHE_ENV}"
    where = "the checkout's data/cache" if project_root() is not None else "~/.cache/llmimg"
    return f"{where}; ${CACHE_ENV} moves it"


def experiments_dir() -> Path:
    """Where experiment records live (``llmimg experiment ...`` writes them; notebooks read them).

    ``$LLMIMG_EXPERIMENTS_DIR`` if set, else ``data/experiments`` in a source checkout (the
    committed records), else ``~/.cache/llmimg/experiments``. Never inside the package.
    """
    base = _folder_env(EXPERIMENTS_ENV)
    if base is not None:
        return base
    checkout = project_root()
    return checkout / "data" / "experiments" if checkout is not None else _user_folder() / "experiments"


def show_tracebacks() -> bool:
    """Whether the command line should print the traceback of an unexpected error (``$LLMIMG_TRACEBACK=1``)."""
    return os.environ.get(TRACEBACK_ENV, "") not in ("", "0")


def current_notebook() -> str | None:
    """The stem of the notebook ``llmimg reproduce`` is running (``$LLMIMG_NOTEBOOK``), if any."""
    return os.environ.get(NOTEBOOK_ENV) or None


def show_progress(progress: bool = True) -> bool:
    """Whether to draw a progress bar asked for with ``progress``: never inside a notebook ``llmimg reproduce``
    runs, whose outputs are committed (a bar there is noise for the reader, and nobody watches it)."""
    return progress and current_notebook() is None


def package_version() -> str:
    """The installed llmimg's version (``0.0.0+unknown`` for a source tree that was not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llmimg")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def describe_environment(profile: str | Profile | None = None) -> dict[str, Any]:
    """Versions, device and profile: what a bug report or a results table should state."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    packages = {}
    for name in ("llmimg", "torch", "transformers", "diffusers", "open_clip_torch",
                 "accelerate", "tokenizers", "numpy"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = "not installed"
    device = get_device()
    return {
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpu_threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        "profile": get_profile(profile).name,
        "packages": packages,
    }
