"""llmimg: a notebook suite and library for LLM-guided text-to-image generation.

The library's modules follow the data's path through the pipeline: ``data``
(ShapesWorld), then the text, CLIP, LLM and generator stages, the pipeline, joint
training, evaluation and profiling; ``pretrained`` runs the same pipeline on real
pretrained models (Colab). ``config`` holds profiles, devices, seeding and the model
cache; ``theory`` the toy problems of the math notebook; ``exercises`` the
``check_...`` helpers that tell a learner whether an answer is right.
"""

from importlib.metadata import PackageNotFoundError, version

from llmimg.config import Profile, cache_dir, describe_environment, get_device, get_profile, seed_everything

try:
    __version__ = version("llmimg")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

REPO_URL = "https://github.com/llmimg/llmimg"

__all__ = [
    "Profile",
    "REPO_URL",
    "__version__",
    "cache_dir",
    "describe_environment",
    "get_device",
    "get_profile",
    "seed_everything",
]
