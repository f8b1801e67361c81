"""The training config: every field with its default and meaning, and its validation.

A config file is a Python file whose `get_config()` returns `default_config()` with changes:

    from caopd_jax.train.config import default_config
    def get_config():
      config = default_config()
      config.model.path = "/models/Qwen3-8B"
      return config

The returned ConfigDict is locked: assigning a key that does not exist fails with a close-match
suggestion, and a value of the wrong type fails. `validate` then checks choices and the
relations between fields (batch sizes, budgets) before anything is loaded or compiled.
Defaults are the CaOPD reference's (docs/CAOPD.md section 9) unless a comment says otherwise.
"""

import dataclasses
import inspect
import math

import ml_collections

from caopd_jax.distill.settings import (DIVERGENCES, NO_CORRECT_POLICIES, OVERLONG_POLICIES, REMAT, TEACHER_MODES,
                                       sampler_cuts_support)
from caopd_jax.distill.prompts import PromptConfig
from caopd_jax.distill.rounding import ROUNDING
from caopd_jax import config_files
from caopd_jax.errors import CaopdError
from caopd_jax.kernels.registry import NAMES as TOKEN_STATS
from caopd_jax.sharding.mesh import AXES, parse_mesh
from caopd_jax.sharding.rollout_layout import ROLLOUT_LAYOUTS
from caopd_jax.sharding.rules import DEFAULT_RULES

DTYPES = ("float32", "bfloat16")


def field_notes() -> dict:
  """{dotted field: its documentation} from default_config's comments (config_files.field_notes), for --help."""
  return config_files.field_notes(inspect.getsource(default_config))


def default_config() -> ml_collections.ConfigDict:
  """All fields of a training run, documented; locked."""
  c = ml_collections.ConfigDict()
  c.seed = 42                       # seeds the data order, the rollouts and nothing else (params come from model.path)
  # "1" (one device), "auto" (all devices: FSDP; data across processes), "data:2,fsdp:4,tensor:1" (sizes multiply
  # to the device count), or a preset name of caopd_jax/sharding/mesh.py PRESETS
  c.mesh = "1"                      # device mesh (see above)
  # the hardware the config is sized for, which `python -m caopd_jax.train.aot` checks it fits: a TPU slice as
  # JAX names its topologies ("v5p:4x4x2" is a v5p-64), "gpu:N" (N GPUs of one host), "cpu", or "" (unstated)
  c.target = ""                     # (see above)
  c.sharding = ml_collections.ConfigDict()
  c.sharding.rules = ""             # changes to sharding/rules.py DEFAULT_RULES, e.g. "vocab=,embed=fsdp+tensor"

  c.model = ml_collections.ConfigDict()
  c.model.path = ""                 # starting weights: HF folder, .gguf file, or caopd-jax Orbax checkpoint/run
  c.model.step = -1                 # step of an Orbax run folder to start from; -1 = latest
  c.model.dtype = "float32"         # student params and compute: float32 or bfloat16
  c.model.teacher_dtype = "float32"  # EMA teacher params' storage; its forward runs in model.dtype

  c.data = ml_collections.ConfigDict()
  c.data.name = "arithmetic"        # arithmetic | science | tooluse | a save_to_disk folder | a .jsonl file
  c.data.split = "train"            # split of a named dataset
  c.data.data_dir = ""              # root of the named datasets; "" = $CAOPD_DATA_DIR, else ./data
  c.data.num_examples = 2000        # arithmetic only: how many problems
  c.data.difficulty = (1, 2)        # arithmetic only: levels to mix (caopd_jax/data/arithmetic.py)
  c.data.num_epochs = 0             # passes over the data; 0 = repeat until train.steps

  c.prompts = ml_collections.ConfigDict(dataclasses.asdict(PromptConfig()))  # prompt wording (distill/prompts.py)

  c.rollout = ml_collections.ConfigDict()
  c.rollout.prompts_per_step = 4    # prompts sampled per rollout batch (x num_samples sequences)
  c.rollout.num_samples = 8         # K rollouts per prompt; P_acc = correct / K
  c.rollout.temperature = 1.0       # sampling temperature of the rollouts (0 = greedy)
  c.rollout.top_k = 0               # 0 = off
  c.rollout.top_p = 1.0             # 1.0 = off
  c.rollout.decode_chunk = 64       # decode steps per compiled call (progress, early exit, batch shrinking)
  # where rollouts decode when the mesh splits the weights (fsdp, tensor): "replicated" reshards a copy of the
  # weights onto every device (no weight gathers per decode step; rows split), "train" decodes on the training
  # layout, "auto" replicates when a copy takes at most 1/4 of an accelerator's memory (sharding/rollout_layout.py)
  c.rollout.layout = "auto"         # auto | replicated | train (see above)

  c.distill = ml_collections.ConfigDict()
  c.distill.calibrate = True        # CaOPD's confidence rewrite; False = plain OPD / SDFT baseline
  c.distill.teacher_mode = "demo"   # demo (a demonstration) | correct_solution (a verified rollout)
  c.distill.no_correct_policy = "demo"  # correct_solution with no correct rollout: demo | skip
  c.distill.max_prompt_tokens = 1024    # budget of student and demo teacher prompts (see overlong_prompts)
  # prompts over it: "truncate" cuts the start of the question (system message, instructions and privileged text
  # stay whole; the reference left-truncates tokens) | "drop" leaves the example out (distill/prompt_fit.py)
  c.distill.overlong_prompts = "truncate"  # truncate | drop (see above)
  c.distill.max_completion_tokens = 1024  # sampling budget and rewrite budget
  c.distill.divergence = "sampled_token"  # sampled_token | forward_kl | reverse_kl | jsd (see losses/divergences.py)
  c.distill.is_cap = 2.0            # sampled_token: truncate importance weights p_s / q at this (TIS); 0 = none
  c.distill.alpha = 0.5             # jsd only: mixture weight of the teacher, in (0, 1)
  c.distill.skip_first_tokens = 3   # completion tokens excluded from the divergence
  c.distill.calibration_weight = 0.0  # lambda: weight of the student's CE on the confidence-value tokens
  c.distill.temperature = 1.0       # softmax temperature of both models in the loss
  # auto (pallas on GPUs, else xla_chunked) | xla_chunked | naive ([tokens, vocab] logits) | pallas
  # (kernels/registry.py, kernels/README.md)
  c.distill.token_stats = "auto"    # the loss head's token statistics (see above)
  c.distill.vocab_chunk = 4096      # vocabulary columns per chunk of xla_chunked (pallas uses its own tiles)
  # teacher <- a * student + (1 - a) * teacher after every step; 0 = a frozen teacher (the initial weights), which
  # kept SmolLM2's format and accuracy where 0.01 lost them (RESULTS.md, "The accuracy loss: controlled runs")
  c.distill.teacher_ema = 0.01      # the EMA rate a (see above)

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 2e-5                 # peak learning rate
  c.optim.warmup_fraction = 0.1     # linear warmup over this fraction of train.steps, then cosine to 0
  c.optim.weight_decay = 0.0        # AdamW decoupled weight decay
  c.optim.clip_norm = 1.0           # global gradient-norm clip
  c.optim.b1 = 0.9                  # Adam's first-moment decay rate
  c.optim.b2 = 0.999                # Adam's second-moment decay rate
  c.optim.eps = 1e-8                # Adam's epsilon
  c.optim.mu_dtype = "float32"      # Adam's first moment: float32 | bfloat16 (2 bytes/param less; the second moment
                                    # is stored in the params' dtype)

  c.train = ml_collections.ConfigDict()
  c.train.steps = 100               # optimizer steps; -1 = data.num_epochs passes (at least one) over the usable data
  c.train.batch_size = 32           # sequences per optimizer step; divides prompts_per_step * num_samples
  # sequences per forward/backward (gradient accumulation), a divisor of batch_size; 0 = auto: the largest that fits
  c.train.micro_batch_size = 0      # the devices' memory with the least recomputation (train/memory_plan.py)
  # auto (on GPUs dots, the fastest step measured, else the least recomputation that fits: train/memory_plan.py)
  # | none | dots (keep matmul outputs) | layers (recompute each layer in the backward: least memory)
  c.train.remat = "auto"            # (see above)
  # the training forward runs the layers one after another on static slices of the stacked weights instead of a
  # lax.scan: no per-layer weight copies (one H200: Qwen3-0.6B's step 3-4% faster, peak memory 2% more; Qwen3-1.7B's
  # no faster, 6% more) for 3-4x the compile time; under FSDP more memory (v5e:2x2: temporaries +46%, bench/RESULTS.md)
  c.train.unroll_layers = False     # (see above)
  # bfloat16 params / teacher (model.dtype, model.teacher_dtype): "stochastic" rounds each update so that steps
  # below half a bf16 spacing (lr 2e-5 on a 0.02 weight) add up as in float32 (distill/rounding.py) | "nearest"
  c.train.update_rounding = "stochastic"  # stochastic | nearest (see above; float32 params: no difference)
  # prompt widths are padded up to one of this many evenly spaced widths (up to each side's budget), so the step
  # compiles at most this number squared times (student x teacher width) and the sampler this many times
  c.train.prompt_buckets = 4        # width rungs per side (see above)
  c.train.output_dir = "runs/caopd"  # checkpoints, logs and the config; an existing run there is resumed
  c.train.allow_other_files = False  # let output_dir hold files a run did not write (refused by default)

  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every = 50           # save every N optimizer steps (and at the end, and on SIGTERM/SIGINT)
  c.checkpoint.keep = 3             # keep the last N checkpoints
  c.checkpoint.async_save = True    # write in the background while training continues

  c.eval = ml_collections.ConfigDict()
  c.eval.every = 0                  # greedy evaluation on held-out data every N steps (0 = off), logged as eval/*
  c.eval.split = "eval"             # split of data.name to evaluate on (arithmetic: its held-out eval split)
  c.eval.limit = 100                # examples per evaluation

  c.log = ml_collections.ConfigDict()
  c.log.tensorboard = True          # tensorboardX event files under output_dir/tensorboard
  c.log.progress = True             # console progress bar
  # every N optimizer steps (0 = off), log.samples of the iteration's rollouts with their verdict, target and stated
  # confidence to RUN/samples.jsonl, TensorBoard text and the console (train/samples.py)
  c.log.samples_every = 25          # (see above)
  c.log.samples = 2                 # rollouts per sampling (see samples_every)
  c.lock()
  return c


def _choice(config, path: str, value, choices) -> None:
  if value not in choices:
    raise CaopdError(f"config.{path} = {value!r} is not one of {list(choices)}")


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises CaopdError naming the field for a value out of range or fields that do not fit together."""
  _choice(config, "model.dtype", config.model.dtype, DTYPES)
  _choice(config, "model.teacher_dtype", config.model.teacher_dtype, DTYPES)
  _choice(config, "optim.mu_dtype", config.optim.mu_dtype, DTYPES)
  _choice(config, "train.update_rounding", config.train.update_rounding, ROUNDING)
  _choice(config, "rollout.layout", config.rollout.layout, ROLLOUT_LAYOUTS)
  _choice(config, "distill.divergence", config.distill.divergence, DIVERGENCES)
  _choice(config, "distill.token_stats", config.distill.token_stats, TOKEN_STATS)
  _choice(config, "train.remat", config.train.remat, ("auto",) + REMAT)
  _choice(config, "distill.teacher_mode", config.distill.teacher_mode, TEACHER_MODES)
  _choice(config, "distill.no_correct_policy", config.distill.no_correct_policy, NO_CORRECT_POLICIES)
  _choice(config, "distill.overlong_prompts", config.distill.overlong_prompts, OVERLONG_POLICIES)
  parse_mesh(config.mesh)
  rules_from_config(config)
  try:
    PromptConfig(**config.prompts.to_dict())
  except ValueError as e:
    raise CaopdError(f"config.prompts: {e}") from None
  if not config.model.path:
    raise CaopdError("config.model.path is empty: set it to the starting weights (HF folder, .gguf or checkpoint)")
  positive = {"rollout.prompts_per_step": config.rollout.prompts_per_step, "rollout.num_samples":
              config.rollout.num_samples, "train.prompt_buckets": config.train.prompt_buckets, "train.batch_size":
              config.train.batch_size,
              "checkpoint.every": config.checkpoint.every, "checkpoint.keep": config.checkpoint.keep,
              "distill.max_prompt_tokens": config.distill.max_prompt_tokens,
              "distill.max_completion_tokens": config.distill.max_completion_tokens,
              "distill.vocab_chunk": config.distill.vocab_chunk, "optim.lr": config.optim.lr,
              "distill.temperature": config.distill.temperature}
  positive["rollout.decode_chunk"] = config.rollout.decode_chunk
  for name, value in positive.items():
    if not value > 0:   # NaN too
      raise CaopdError(f"config.{name} must be > 0, got {value}")
  for name, value in flat_items(config.to_dict()):
    if isinstance(value, float) and not math.isfinite(value):
      raise CaopdError(f"config.{name} = {value} is not a finite number")
  if not 0 <= config.seed < 2**32:
    raise CaopdError(f"config.seed must be in [0, 2**32), got {config.seed}")
  if config.train.steps <= 0 and config.train.steps != -1:
    raise CaopdError(f"config.train.steps must be > 0, or -1 (size the run from the data), got {config.train.steps}")
  if config.distill.is_cap < 0:
    raise CaopdError(f"config.distill.is_cap must be >= 0 (0 = no truncation), got {config.distill.is_cap}")
  if (config.distill.divergence == "sampled_token" and config.distill.token_stats == "pallas"
      and sampler_cuts_support(config.rollout)):
    raise CaopdError("config.distill.token_stats=pallas has no term for the tokens the sampler cannot draw, which "
                     "distill.divergence=sampled_token needs with rollout.top_k > 0, top_p < 1 or temperature 0; use "
                     "distill.token_stats=xla_chunked, divergence=reverse_kl (exact), or sample without those filters")
  rows = config.rollout.prompts_per_step * config.rollout.num_samples
  if rows % config.train.batch_size:
    raise CaopdError(f"config.train.batch_size={config.train.batch_size} must divide rollout.prompts_per_step x "
                     f"rollout.num_samples = {config.rollout.prompts_per_step} x {config.rollout.num_samples} = {rows}")
  if config.train.micro_batch_size < 0 or (config.train.micro_batch_size
                                           and config.train.batch_size % config.train.micro_batch_size):
    raise CaopdError(f"config.train.micro_batch_size={config.train.micro_batch_size} must divide "
                     f"train.batch_size={config.train.batch_size} (or be 0: auto)")
  if not 0 <= config.distill.teacher_ema <= 1:
    raise CaopdError(f"config.distill.teacher_ema must be in [0, 1] (0: a frozen teacher), "
                     f"got {config.distill.teacher_ema}")
  if config.distill.divergence == "jsd" and not 0 < config.distill.alpha < 1:
    raise CaopdError(f"config.distill.alpha must be in (0, 1) for jsd, got {config.distill.alpha} "
                     "(alpha 0 and 1 are divergence=forward_kl and reverse_kl)")
  if not 0 <= config.distill.skip_first_tokens < config.distill.max_completion_tokens:
    raise CaopdError(f"config.distill.skip_first_tokens={config.distill.skip_first_tokens} must be in "
                     f"[0, max_completion_tokens={config.distill.max_completion_tokens})")
  if config.distill.calibration_weight < 0:
    raise CaopdError(f"config.distill.calibration_weight must be >= 0, got {config.distill.calibration_weight}")
  if config.distill.calibration_weight > 0 and not config.distill.calibrate:
    raise CaopdError("config.distill.calibration_weight > 0 needs distill.calibrate=True (the calibration term's "
                     "target is the rewritten confidence)")
  if not 0 <= config.optim.warmup_fraction < 1:
    raise CaopdError(f"config.optim.warmup_fraction must be in [0, 1), got {config.optim.warmup_fraction}")
  if not 0 < config.rollout.top_p <= 1 or config.rollout.top_k < 0 or config.rollout.temperature < 0:
    raise CaopdError("config.rollout needs 0 < top_p <= 1, top_k >= 0 and temperature >= 0")
  if config.log.samples_every < 0 or config.log.samples < 0:
    raise CaopdError(f"config.log needs samples_every >= 0 and samples >= 0, got {config.log.samples_every}, "
                     f"{config.log.samples}")
  if config.eval.every < 0 or config.eval.limit < 1:
    raise CaopdError(f"config.eval needs every >= 0 and limit >= 1, got {config.eval.every}, {config.eval.limit}")
  if config.data.num_epochs < 0:
    raise CaopdError(f"config.data.num_epochs must be >= 0 (0 = repeat), got {config.data.num_epochs}")


def flat_items(tree: dict, prefix: str = ""):
  """(dotted name, value) of every leaf of a (config) dict, e.g. ("optim.lr", 2e-5)."""
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from flat_items(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", value


def rules_from_config(config) -> tuple:
  """DEFAULT_RULES with the changes of config.sharding.rules ("name=axis+axis,name=,...")."""
  rules = dict(DEFAULT_RULES)
  for entry in filter(None, (e.strip() for e in config.sharding.rules.split(","))):
    name, eq, axes = entry.partition("=")
    axes = tuple(a.strip() for a in axes.split("+") if a.strip())
    if not eq or name.strip() not in rules or any(a not in AXES for a in axes):
      raise CaopdError(f"config.sharding.rules entry {entry!r}: expected NAME=AXIS[+AXIS] with NAME one of "
                       f"{', '.join(rules)} and axes from {', '.join(AXES)} (empty: replicated)")
    rules[name.strip()] = axes
  return tuple(rules.items())


def paper_config(model_name: str, dataset: str, steps: int = -1) -> ml_collections.ConfigDict:
  """The CaOPD reference's recipe (docs/CAOPD.md section 9) for a 7-8B model on `dataset` (science or tooluse).

  bf16 student, K=8 rollouts of 4 prompts = 32 sequences per optimizer step, lr 2e-5, 1024-token
  prompts and completions, first 3 completion tokens skipped, teacher EMA 0.01; one epoch: `steps` -1 sizes the
  run (and its warmup + cosine schedule) from the usable training prompts, one optimizer step per 4 of them.
  model.path is left empty (the weights are wherever the user keeps them); `model_name` names the run folder,
  runs/<dataset>-<model_name>.
  """
  c = default_config()
  c.target, c.mesh = "v5p:4x4x2", "auto"   # a v5p-64: 32 chips, FSDP over all (python -m caopd_jax.train.aot)
  c.model.dtype = "bfloat16"
  c.data.name, c.data.split, c.data.num_epochs = dataset, "train", 1
  c.distill.divergence = "forward_kl"  # the reference trainer's default alpha = 0
  c.train.steps = steps
  c.train.output_dir = f"runs/{dataset}-{model_name}"
  c.checkpoint.every = 50
  return c
