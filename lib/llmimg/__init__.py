"""llmimg: a notebook course and library for LLM-guided text-to-image generation.

The library is layered, and its folders show the layers; imports point one way
(``tests/test_layers.py`` checks it)::

    core       the foundations: config (profiles and the sizes table), seeding, the model store,
               the training loop, text, ShapesWorld data, evaluation, plots
    stages     clip, llm, generator: the three trained models, each with the same public face
    pipelines  the tiny world's ShapesPipeline and the pretrained world's pipeline
    speed      the speed lab: profiling, speed techniques, distillation, the benchmark
    research   the notebooks' experiments, each named by its question
    course     the course machinery: notebook runner, reference numbers, exercises, theory, demo

``research`` and ``course`` do not import each other. The command line (``llmimg.cli``)
sits on top. ``pip install llmimg`` gives everything but ``course``, whose Jupyter tools
come with the ``course`` extra.
"""

from llmimg.core.config import (REPO_URL, Profile, cache_dir, describe_environment, get_device, get_profile,
                                package_version)
from llmimg.core.seeding import seed_everything

__version__ = package_version()

__all__ = ["Profile", "REPO_URL", "__version__", "cache_dir", "describe_environment", "get_device", "get_profile",
           "seed_everything"]
