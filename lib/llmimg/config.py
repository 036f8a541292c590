"""Run-time configuration shared by every notebook and command.

Three things live here:

* **profiles** scale every experiment: ``smoke`` (seconds, what CI runs), ``default``
  (a laptop CPU reproduces everything in well under half an hour) and ``full`` (a GPU).
  The profile comes from an explicit argument, else the ``LLMIMG_PROFILE`` environment
  variable, else ``default``.
* **device choice**: CUDA, then Apple MPS, then CPU, overridable with an argument or
  ``LLMIMG_DEVICE``.
* **seeding** and the **cache folder** where trained models are kept per profile.
"""

from __future__ import annotations

import os
import platform
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: `llmimg --version` should not wait for it
    import torch

PROFILES: tuple[str, ...] = ("smoke", "default", "full")
PROFILE_ENV = "LLMIMG_PROFILE"
DEVICE_ENV = "LLMIMG_DEVICE"
CACHE_ENV = "LLMIMG_CACHE_DIR"
DEVICES: tuple[str, ...] = ("cpu", "cuda", "mps")

T = TypeVar("T")


@dataclass(frozen=True)
class Profile:
    """One named scale of the whole suite.

    Code that has a size to choose asks the profile for it, so that one switch
    scales every notebook::

        steps = profile.pick(smoke=20, default=2_000, full=20_000)
    """

    name: str

    def pick(self, *, smoke: T, default: T, full: T) -> T:
        """Return the value given for this profile."""
        return {"smoke": smoke, "default": default, "full": full}[self.name]

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


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch (every device) and return a fresh NumPy generator.

    Library code never relies on global random state (it takes seeds or generators);
    this is for notebook code that calls torch or NumPy directly.
    """
    import torch

    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def project_root() -> Path | None:
    """The root of the source checkout this package runs from, or ``None`` if installed elsewhere."""
    root = Path(__file__).resolve().parents[2]
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "llmimg"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


def cache_dir(profile: str | Profile | None = None, *, create: bool = True) -> Path:
    """Folder for trained models of one profile (``<cache>/<profile>``).

    The cache is ``$LLMIMG_CACHE_DIR`` if set, else ``data/cache`` in a source
    checkout (ignored by git), else ``~/.cache/llmimg`` (e.g. on Colab).
    """
    base = os.environ.get(CACHE_ENV)
    if base:
        root = Path(base).expanduser()
    elif (checkout := project_root()) is not None:
        root = checkout / "data" / "cache"
    else:
        root = Path.home() / ".cache" / "llmimg"
    path = root / get_profile(profile).name
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


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
