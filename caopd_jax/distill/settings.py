"""The algorithm's settings, and their one translation from a training config (train/config.py).

  DistillSettings  host side: CaOPD on or off, the teacher's privileged context and its policies, the token
                   budgets and the prompt wording (batch.py, prompt_fit.py, prompts.py)
  LossSettings     device side: static options of the compiled loss (loss.py, step.py)
  from_config      both, from a config's `distill`, `prompts`, `rollout` and `train` groups

The allowed values of every choice are defined here once (config validation and the settings' own checks use
them); the token-statistics implementations are kernels.registry's.
"""

import dataclasses
from typing import NamedTuple

from caopd_jax.distill.prompts import PromptConfig

TEACHER_MODES = ("demo", "correct_solution")
NO_CORRECT_POLICIES = ("demo", "skip")
OVERLONG_POLICIES = ("truncate", "drop")
DIVERGENCES = ("sampled_token", "forward_kl", "reverse_kl", "jsd")
REMAT = ("none", "layers", "dots")


@dataclasses.dataclass(frozen=True)
class DistillSettings:
  """calibrate: CaOPD's rewrite on (False = the plain SDFT/OPD baseline). teacher_mode: "demo" or
  "correct_solution"; no_correct_policy: "demo" or "skip" (correct_solution mode only); overlong_prompts:
  "truncate" or "drop" (prompt_fit.py)."""
  calibrate: bool = True
  teacher_mode: str = "demo"
  no_correct_policy: str = "demo"
  max_prompt_tokens: int = 1024
  max_completion_tokens: int = 1024
  prompts: PromptConfig = PromptConfig()
  overlong_prompts: str = "truncate"

  @property
  def teacher_budget(self) -> int:
    """Longest teacher prompt: max_prompt_tokens, plus max_completion_tokens for a correct_solution teacher
    (its privileged text is a rollout)."""
    return self.max_prompt_tokens + (self.max_completion_tokens if self.teacher_mode == "correct_solution" else 0)

  def __post_init__(self):
    for name, choices in (("teacher_mode", TEACHER_MODES), ("no_correct_policy", NO_CORRECT_POLICIES),
                          ("overlong_prompts", OVERLONG_POLICIES)):
      if getattr(self, name) not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")


class LossSettings(NamedTuple):
  """Static loss options (part of the compiled program); see configs' `distill` group."""
  divergence: str = "sampled_token"
  alpha: float = 0.5
  skip_first: int = 3
  calibration_weight: float = 0.0
  temperature: float = 1.0
  token_stats: str = "xla_chunked"
  vocab_chunk: int = 4096
  remat: str = "none"
  unroll_layers: bool = False   # the layers one after another, not a lax.scan (train.unroll_layers)
  is_cap: float = 2.0           # sampled_token: importance-weight truncation (TIS); 0 = none
  sampler_tail: bool = False    # sampled_token: the rollouts' sampler cut the support (top-k, top-p or greedy)
  platform: str = ""            # the devices' platform (cpu, gpu, tpu; "" = JAX's backend): picks the kernels
  vmem_limit: int = 0           # TPU scoped VMEM for the kernels (hardware.Chip; 0 = the smallest default)


def sampler_cuts_support(rollout) -> bool:
  """The rollouts' sampling distribution (a config's `rollout` group) leaves out tokens the student could emit:
  top-k, top-p or greedy."""
  return rollout.top_k > 0 or rollout.top_p < 1 or rollout.temperature == 0


def from_config(config) -> tuple[DistillSettings, LossSettings]:
  """(DistillSettings, LossSettings) of a training config."""
  d = config.distill
  distill = DistillSettings(calibrate=d.calibrate, teacher_mode=d.teacher_mode, no_correct_policy=d.no_correct_policy,
                            max_prompt_tokens=d.max_prompt_tokens, max_completion_tokens=d.max_completion_tokens,
                            prompts=PromptConfig(**config.prompts.to_dict()), overlong_prompts=d.overlong_prompts)
  loss = LossSettings(divergence=d.divergence, alpha=d.alpha, skip_first=d.skip_first_tokens,
                      calibration_weight=d.calibration_weight, temperature=d.temperature,
                      token_stats=d.token_stats, vocab_chunk=d.vocab_chunk, remat=config.train.remat,
                      unroll_layers=config.train.unroll_layers, is_cap=d.is_cap,
                      sampler_tail=sampler_cuts_support(config.rollout))
  return distill, loss
