"""The pretrained world: the seeds' pipeline on real models, for Colab or any GPU with internet.

The pipeline of the tiny world (prompt → CLIP → LLM description → image generator) on
pretrained models, called the same way as :class:`~llmimg.pipelines.shapes.ShapesPipeline`:

* CLIP: open_clip ``ViT-B-32`` (``openai`` weights by default, or a ``laion2b_*`` tag);
* LLM: ``Qwen/Qwen2.5-0.5B-Instruct`` by default; any causal LM (``gpt2``: prompted with
  a few-shot text, having no chat template) or seq2seq LM (``t5-base``) can replace it;
* generator: ``stabilityai/sd-turbo`` (1–4 steps, no guidance) or an SD 1.5-class model.

::

    from llmimg.pipelines import pretrained

    pipe = pretrained.load()                                    # downloads ~4 GB once (float16 on a GPU)
    pipe = pretrained.load(pretrained.PretrainedConfig.preset(llm="gpt2", generator="sd-1.5"))
    pipe = pretrained.tiny_pipeline("tiny-models")              # offline: tiny random models, noise images
    out = pipe("a red cube on a blue sphere", generator=torch.Generator().manual_seed(0))
    out.images, out.descriptions, out.timings                   # timings in ms: clip_encode, llm_generate, ...
    out.upsampled.candidates, out.upsampled.scores              # what the LLM wrote, what CLIP chose by
    pipe("a red cube", rerank="image")                          # best-of-n: draw every candidate, keep the best image
    pipe.clip.score(out.images, ["a red cube on a blue sphere"])  # CLIPScore

:mod:`~llmimg.pipelines.pretrained.models` loads each model from a hub id or a local folder and
turns a failed download into one :class:`PretrainedUnavailableError` line;
:mod:`~llmimg.pipelines.pretrained.pipeline` is the pipeline; :mod:`~llmimg.pipelines.pretrained.rerank` how it
chooses among the LLM's candidates; :mod:`~llmimg.pipelines.pretrained.tiny`
builds the tiny offline stand-ins that the tests and the offline notebook use.
"""

from llmimg.pipelines.pretrained.models import (GENERATORS, LLMS, REVISIONS, DescriptionWriter, PretrainedCLIP,
                                      PretrainedConfig, PretrainedUnavailableError, load_clip, load_generator,
                                      load_writer, resolve_precision, revision_of)
from llmimg.pipelines.pretrained.pipeline import CandidateImages, PretrainedOutput, PretrainedPipeline, Upsampled, load
from llmimg.pipelines.pretrained.rerank import RERANK_MODES, pick_best, rank_images
from llmimg.pipelines.pretrained.tiny import tiny_components, tiny_pipeline, tiny_writer

__all__ = ["GENERATORS", "LLMS", "RERANK_MODES", "REVISIONS", "CandidateImages", "DescriptionWriter", "PretrainedCLIP",
           "PretrainedConfig", "PretrainedOutput", "PretrainedPipeline", "PretrainedUnavailableError", "Upsampled",
           "load", "load_clip", "load_generator", "load_writer", "pick_best", "rank_images", "resolve_precision",
           "revision_of", "tiny_components", "tiny_pipeline", "tiny_writer"]
