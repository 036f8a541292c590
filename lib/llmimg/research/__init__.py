"""The notebooks' experiments, each module named by the question it answers:

* ``upsampling``: does an LLM that expands prompts improve prompt following? (notebook 06, claim 1)
* ``llm_speed``: does the LLM stage make generation faster? Quality at equal time, and time to
  a target fixed before the run (notebook 06, claim 2)
* ``transfer``: do a language model's states train a generator faster than CLIP's text states
  or a text encoder learned from scratch? Three training seeds (notebook 06, claim 3)
* ``joint``: does training the LLM and the generator together beat training them apart?
  (notebook 07, claim 4)
* ``recipes``: which generator recipe learns fastest? (notebook 05)
* ``noise_error``: is the first sampling step what breaks the recipe that predicts the noise?
  (notebook 05)
* ``geneval_recipes``: which generator recipe draws the GenEval-shaped world's prompts best?
* ``seed_spread``: how far do the headline numbers move with the training seed?
* ``reranking``: what should the pretrained pipeline's verifier compare: a candidate's text or
  its image with the prompt? (notebook 09)

Records of long runs go to :func:`llmimg.core.config.experiments_dir`, never into the package.
"""
