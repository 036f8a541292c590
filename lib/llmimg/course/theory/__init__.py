"""Toy problems and closed forms behind notebook 01 (the math of the pipeline).

Each module is small and self-contained, one per section of the notebook:

* :mod:`~llmimg.course.theory.pipeline`: the pipeline as a composition of conditional
  distributions, on a tiny discrete toy (prompt → z → description → image).
* :mod:`~llmimg.course.theory.likelihood`: factorisations of a joint, a "joint objective" that
  is not a distribution, and why an unnormalised density is not a generator's likelihood.
* :mod:`~llmimg.course.theory.contrastive`: InfoNCE / CLIP loss and the mutual-information bound.
* :mod:`~llmimg.course.theory.language`: the autoregressive likelihood of a bigram language model.
* :mod:`~llmimg.course.theory.diffusion`: the DDPM forward process, posterior and ELBO weights.
* :mod:`~llmimg.course.theory.guidance`: classifier-free guidance on a 2-D Gaussian mixture with
  exact scores.
* :mod:`~llmimg.course.theory.joint`: a marginal-likelihood loss whose gradients reach both a toy
  "LLM" and a toy generator.

Everything here is exact or cheap enough to run on a CPU in seconds; the notebook checks
each closed form numerically.
"""

from llmimg.course.theory import contrastive, diffusion, guidance, joint, language, likelihood, pipeline

__all__ = ["contrastive", "diffusion", "guidance", "joint", "language", "likelihood", "pipeline"]
