"""What defines a trained image generator: the UNet's shape, the noise schedule, the data and the training."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmimg.core.config import Profile, get_profile
from llmimg.core.training import StageConfig, TrainConfig, cadence

STAGE = "generator"
FORMAT = 2  # bump when a change to this stage's code changes what a trained generator is
RETRAIN = "llmimg train generator --force"
IMAGE_SIZE = 32


@dataclass(frozen=True)
class GeneratorConfig(StageConfig):
    """Everything that defines a trained generator: the UNet's shape, the noise schedule, the data and training.

    ``attention_heads`` is the number of attention heads per transformer block (diffusers
    calls this argument ``attention_head_dim`` for historical reasons, and uses it as the
    number of heads). ``unshuffle`` is the space-to-depth factor (1 = plain pixels).
    ``snr_gamma`` turns on Min-SNR-γ loss weighting (None = the plain epsilon MSE).
    ``guidance_scale`` is the default of :meth:`ShapesGenerator.generate` for this model.
    The training data are ``n_train`` ShapesWorld ``train`` samples (``max_objects``
    objects at most) of seed ``data_seed``, rendered once into a bank; each training
    text is the sample's full description, or with probability ``prompt_rate`` its
    short prompt (the caption-upsampling experiment of notebook 06 varies this).
    """

    block_out_channels: tuple[int, ...] = (96, 192)
    down_block_types: tuple[str, ...] = ("DownBlock2D", "CrossAttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "UpBlock2D")
    mid_block_type: str | None = "UNetMidBlock2DCrossAttn"
    layers_per_block: int = 1
    attention_heads: int = 4
    norm_num_groups: int = 32
    unshuffle: int = 4
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    timestep_spacing: str = "trailing"
    prediction_type: str = "sample"
    cond_dropout: float = 0.1
    pooled_condition: bool = True  # also add the text's <eos> state to the timestep embedding (see pooled_text)
    coordinates: bool = True  # give the UNet two extra input channels holding each pixel's (y, x) (see unet_output)
    resnet_time_scale_shift: str = "default"  # "scale_shift": the time/text embedding scales and shifts (FiLM)
    snr_gamma: float | None = 5.0
    guidance_scale: float = 3.0
    data_seed: int = 0
    n_train: int = 10_000
    max_objects: int = 2
    prompt_rate: float = 0.0  # share of training texts that are the short prompt instead of the full description
    # The GenEval-shaped world only: how often the bank draws each category's scenes (None: as the world does).
    category_weights: tuple[float, ...] | None = field(default=None, metadata={"omit_default": True})
    # lr 2e-3, not 1e-3: in the recipe search (notebook 05) it learns one object in fewer steps and draws two
    # objects far better at 1,200 steps (all-correct 0.90 against 0.66 on 300 two-object val scenes).
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=1200, batch_size=64, lr=2e-3))
    curve_every: int = cadence(0)  # score ShapesEval every this many training steps (0: never): the learning curve
    curve_n: int = cadence(100)  # one-object val descriptions per point of that curve

    def __post_init__(self) -> None:
        for name in ("block_out_channels", "down_block_types", "up_block_types", "category_weights"):  # JSON: lists
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", TrainConfig(**self.train))
        n = len(self.block_out_channels)
        if not (len(self.down_block_types) == len(self.up_block_types) == n):
            raise ValueError(f"block_out_channels, down_block_types and up_block_types need the same length, got "
                             f"{n}, {len(self.down_block_types)}, {len(self.up_block_types)}")
        if self.unshuffle < 1 or IMAGE_SIZE % self.unshuffle:
            raise ValueError(f"unshuffle must divide the image size {IMAGE_SIZE}, got {self.unshuffle}")
        if (IMAGE_SIZE // self.unshuffle) % 2 ** (n - 1):
            raise ValueError(f"a {IMAGE_SIZE // self.unshuffle}-pixel latent cannot be halved {n - 1} times; "
                             "use fewer blocks or a smaller unshuffle factor")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(f"every block_out_channels entry must be a multiple of norm_num_groups="
                             f"{self.norm_num_groups}, got {self.block_out_channels}")
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"prediction_type must be epsilon, v_prediction or sample, got {self.prediction_type!r}")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ValueError(f"cond_dropout is a probability below 1, got {self.cond_dropout}")
        if self.guidance_scale < 0:
            raise ValueError(f"guidance_scale must be non-negative, got {self.guidance_scale}")
        if not 0.0 <= self.prompt_rate <= 1.0:
            raise ValueError(f"prompt_rate is a probability, got {self.prompt_rate}")
        if self.n_train <= 0:
            raise ValueError(f"n_train must be positive, got {self.n_train}")
        if self.curve_every < 0 or self.curve_n <= 0:
            raise ValueError(f"curve_every must be non-negative and curve_n positive, got {self.curve_every}, "
                             f"{self.curve_n}")

    @property
    def latent_size(self) -> int:
        return IMAGE_SIZE // self.unshuffle

    @property
    def latent_channels(self) -> int:
        return 3 * self.unshuffle**2


# The GenEval-shaped world's bank draws counting scenes three times as often as the world does (issue 26): its
# generator failed mostly by drawing the wrong number of objects, and at the world's own rates only 1 scene in
# 21 holds four objects. Order: single_object, two_object, counting, colors, position, color_attr, cell.
GENEVAL_CATEGORY_WEIGHTS: tuple[float, ...] = (1.0, 1.0, 3.0, 1.0, 1.0, 1.0, 1.0)


def default_config(profile: str | Profile | None = None, world: str = "shapes") -> GeneratorConfig:
    """The generator configuration of a profile (its sizes come from :data:`llmimg.core.config.SIZES`).

    * ``smoke``: a tiny UNet trained for 20 steps: checks that the code runs, in seconds.
    * ``default``: the recipe that draws what it is told after 1,200 steps (about 11 minutes on
      a 2-core CPU), scored every 300 steps along the way (notebook 05 plots that curve).
    * ``full``: a wider UNet trained longer, for a GPU.

    For the GenEval-shaped ``world`` the bank draws its categories with
    :data:`GENEVAL_CATEGORY_WEIGHTS` and training takes ``generator.geneval_steps`` (2,400 at
    ``default``: 17 minutes on the recipe search's 2-core CPU, 42 on a slower one); everything
    else is the same recipe.
    """
    p = get_profile(profile)

    def size(name: str):
        return p.size(f"generator.{name}")

    return GeneratorConfig(
        block_out_channels=size("block_out_channels"), down_block_types=size("down_block_types"),
        up_block_types=size("up_block_types"), mid_block_type=size("mid_block_type"),
        layers_per_block=size("layers_per_block"), attention_heads=size("attention_heads"),
        norm_num_groups=size("norm_num_groups"), unshuffle=size("unshuffle"), n_train=size("n_train"),
        category_weights=GENEVAL_CATEGORY_WEIGHTS if world == "geneval" else None,
        curve_every=size("curve_every"), curve_n=size("curve_n"),
        train=TrainConfig(steps=size("geneval_steps" if world == "geneval" else "steps"),
                          batch_size=size("batch_size"), lr=size("lr"),
                          warmup_steps=size("warmup_steps"), log_every=size("log_every"),
                          checkpoint_every=size("checkpoint_every")))


__all__ = ["FORMAT", "GENEVAL_CATEGORY_WEIGHTS", "GeneratorConfig", "IMAGE_SIZE", "RETRAIN", "STAGE", "default_config"]
