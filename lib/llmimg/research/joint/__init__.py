"""Joint training of the LLM and the generator (notebook 07, claim 4).

**Notebook 07's experiment** lives in :mod:`.rl`: reinforcement learning with the exact
reward from the GenEval-shaped world's competent pipeline (separate training, generator-only,
rewriter-only and joint RL, three seeds each, paired), built on :mod:`.policy` (a stochastic
denoising step's likelihood, group-relative advantages, the KL terms), and beside them the
differentiable ``joint`` and ``cycle`` regimes from the same start (:mod:`.coupled`: the
generator's gradient reaches the LLM straight through its tokens); :mod:`.experiment` gathers
the record, :mod:`.recipes` is the recorded recipe search. ``llmimg train joint --world
geneval`` and ``llmimg eval joint --world geneval`` run it.

**Today's world's differentiable couplings**, below, are the course's earlier version (``llmimg
train joint --regime R``): five regimes at equal compute, from a generator that reads the LLM's
GPT-2 states.

**Where every regime starts.** From the same trained models: the LLM of stage 2, and a
generator whose UNet reads the LLM's GPT-2 hidden states of the description, trained
with the LLM frozen by the pipeline generator's recipe (:func:`start`). Each regime
then fine-tunes for the same number of optimiser steps on batches of the same size:
**equal compute means equal steps and batch**; the seconds
each regime took are reported beside, since a joint step does more work than a
generator step. Fine-tuning trained stages, as TextCraftor and T2I-R1 fine-tune
pretrained models, is what fits a 2-core CPU (five regimes from scratch would take
hours) and asks the question sharply: given the same models and the same extra budget,
does coupling them help? Every regime conditions the generator on GPT-2 states of the
same shape, so the coupling is the only difference.

**The regimes** (:data:`REGIMES`):

* ``separate``: two models that share nothing. The generator (UNet and its own copy of
  the GPT-2 body) learns L_diff; the LLM learns L_LM. Their summed loss has independent
  parameters, so this *is* training them apart.
* ``sequential``: the LLM frozen (trained first), the UNet learns L_diff on its states
  (MetaQuery, BLIP3-o).
* ``joint``: the generator reads the LLM's own GPT-2 body; one loss
  L_diff(I | h_L(D)) + λ · L_LM, gradients into both.
* ``cycle``: ``joint`` plus μ · L_cycle: the LLM captions the generator's clean-image
  estimate x̂₀ (through the frozen CLIP image tower) and must write D again; gradients
  reach the UNet through x̂₀ (ITIT, CycleReward).
* ``reward``: the LLM's upsampling policy learns with REINFORCE and a batch-mean
  baseline; the reward is ShapesEval's all-correct of the image the frozen generator
  draws from the sampled description, judged against the prompt (RePrompt, T2I-R1, DDPO).
  λ · L_LM anchors the policy to the data, as a KL term to the starting model does there.

L_LM is the LLM's own training loss on the batch's scenes: each row is captioning,
-log q(D | CLIP(I)), the P(D | I) term of the joint likelihood, or upsampling,
-log q(D | CLIP(p), p), which keeps the LLM an upsampler.

Under ``accelerate launch`` the same code trains on several processes
(``accelerate launch -m llmimg train joint --regime joint --profile default``).
"""

from llmimg.research.joint.config import (FORMAT, METRICS, REGIMES, STAGE, START_STAGE, TRAINS, WEIGHTS,
                                          JointConfig, check_regime, default_config)
from llmimg.research.joint.data import JointData
from llmimg.research.joint.model import JointModel, gradient_norms, image_rewards, stages
from llmimg.research.joint.run import RegimeRun, compare_all, eval_size, evaluate, load, run, table, train, verdict
from llmimg.research.joint.start import Start, start, start_config, start_is_cached, start_key

__all__ = ["FORMAT", "METRICS", "REGIMES", "STAGE", "START_STAGE", "TRAINS", "WEIGHTS", "JointConfig", "JointData",
           "JointModel", "RegimeRun", "Start", "check_regime", "compare_all", "default_config", "eval_size", "evaluate",
           "gradient_norms", "image_rewards", "load", "run", "stages", "start", "start_config", "start_is_cached",
           "start_key", "table", "train", "verdict"]
