"""Memory settings chosen by the program: `train.remat=auto` and `train.micro_batch_size=0` (auto).

    config, plan = resolve(config, model_config, devices, run_dir)    # before setup.build
    print(plan.summary())

The choice is the first remat of `remat_order` that fits (on GPUs dots, then layers: keeping only the matmul outputs
gave the fastest step as well as less memory; elsewhere the least recomputation: none, then dots, then layers) and,
with it, the largest micro-batch (a divisor of train.batch_size, a multiple of the mesh's batch shards where one is)
whose training step fits: per-device bytes from XLA's memory analysis of the step compiled for the mesh
(setup.compile_step, at the widest prompt rungs: the most memory a run's step needs), within the device's memory
(hardware.Chip) less HEADROOM. Memory grows with the micro-batch, so for each remat the largest micro-batch is tried
first, then the smallest, then a bisection between them. A config that fits no setting stops here, before any work,
naming the bytes needed and available and what to change.
The decision is cached in the run folder (memory_plan.json, keyed by everything it depends on), so a resumed run
does not compile the candidates again. Fields set explicitly (not auto) are taken as they are, unchecked.
"""

import dataclasses
import hashlib
import json
import os
import re

import jax

from caopd_jax import hardware, run_folder
from caopd_jax.errors import CaopdError
from caopd_jax.files import write_json
from caopd_jax.hardware import GIB

REMAT_ORDER = ("none", "dots", "layers")       # least recomputation first
# On an H200 (bench/RESULTS.md, 2026-12-02) keeping only the matmul outputs ("dots") gave a faster step than keeping
# everything ("none"): 0.131 vs 0.145 s at Qwen3-0.6B, 0.277 vs 0.298 s at 1.7B, with 40-50% of its memory (XLA
# recomputes the elementwise work inside the backward's fusions instead of writing and reading it back), so GPUs
# try it first; "none" could only fit where "dots" does.
GPU_REMAT_ORDER = ("dots", "layers")
HEADROOM = 0.10                                 # of the device's memory, left for the runtime and fragmentation


@dataclasses.dataclass
class MemoryPlan:
  """remat, micro_batch_size: the settings; device_bytes: per-device bytes of their step (0: not compiled, the
  config's own settings); budget: the device's memory less HEADROOM; chip: hardware.Chip name; tried: every
  candidate compiled, [remat, micro_batch, bytes, refused]: refused when the compiler would not compile it for
  lack of memory (bytes: what its message said the step needs at least, 0 when it named none)."""
  remat: str
  micro_batch_size: int
  device_bytes: int = 0
  budget: int = 0
  chip: str = ""
  tried: list = dataclasses.field(default_factory=list)

  def summary(self) -> str:
    if not self.device_bytes:
      return f"memory: train.remat={self.remat}, train.micro_batch_size={self.micro_batch_size} (as configured)"
    over = [f"{r}/{m}" for r, m, b, refused in self.tried if refused or b > self.budget]
    return (f"memory: train.remat={self.remat}, train.micro_batch_size={self.micro_batch_size} (auto): "
            f"{self.device_bytes / GIB:.2f} GiB per device of {self.budget / GIB:.2f} GiB usable on {self.chip} "
            f"({len(self.tried)} compile(s)" + (f"; over: {', '.join(over)})" if over else ")"))


def with_memory(config, remat: str, micro_batch_size: int):
  """A copy of `config` with these memory settings."""
  resolved = config.copy_and_resolve_references()
  resolved.train.remat, resolved.train.micro_batch_size = remat, micro_batch_size
  return resolved


class Refused(int):
  """The compiler's out-of-memory refusal of a step, as the bytes it said the step needs at least (its temporaries;
  0 where the message names none)."""


def refusal(error: Exception) -> Refused | None:
  """The Refused bytes of the compiler's out-of-memory error (TPU: "RESOURCE_EXHAUSTED: ... HLO temporaries (201.32G)
  exceeds available HBM (95.74G)"); None for any other error."""
  text = str(error)
  if "RESOURCE_EXHAUSTED" not in text and re.search(r"exceeds? (the )?available", text) is None:
    return None
  size = re.search(r"\(([0-9.]+)([KMGT])\) exceeds", text)
  return Refused(float(size.group(1)) * 1024 ** "KMGT".index(size.group(2)) * 1024 if size else 0)


def _describe(used: int, refused: bool) -> str:
  """A measurement for people: bytes, or the compiler's refusal (with the bytes it named, if any)."""
  if refused:
    return "refused by the compiler" + (f": needs more than {used / GIB:.2f} GiB" if used else "")
  return f"{used / GIB:.2f} GiB"


def footprint(compiled) -> dict:
  """Per-device bytes of a compiled program: arguments, temporaries, and the total it holds at its peak (outputs
  aliased to donated arguments counted once)."""
  m = compiled.memory_analysis()
  total = m.argument_size_in_bytes + m.temp_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
  return {"arguments": int(m.argument_size_in_bytes), "temporaries": int(m.temp_size_in_bytes), "total": int(total)}


def step_bytes(config, model_config, devices) -> int:
  """Per-device bytes (arguments + temporaries + outputs not aliased to arguments) of the training step of `config`
  compiled for `devices`; Refused when the compiler refuses it for lack of memory."""
  from caopd_jax.train import setup
  program = setup.build(config, model_config, 1, devices)
  try:
    compiled = setup.compile_step(program, config)
  except Exception as e:  # noqa: BLE001  (only the out-of-memory refusal is an answer; the rest re-raised)
    refused = refusal(e)
    if refused is None:
      raise
    return refused
  return footprint(compiled)["total"]


def _cache_key(config, model_config, devices) -> str:
  keep = {k: v for k, v in config.to_dict().items() if k not in ("checkpoint", "log", "eval", "seed")}
  keep["train"] = {k: v for k, v in keep["train"].items() if k not in ("steps", "output_dir", "allow_other_files")}
  keep["model"] = {k: v for k, v in keep["model"].items() if k != "path"}      # model_config holds what it gives
  keep["data"] = {k: v for k, v in keep["data"].items() if k != "data_dir"}
  facts = [keep, dataclasses.asdict(model_config), len(devices), jax.process_count(), devices[0].platform,
           getattr(devices[0], "device_kind", ""), hardware.chip_of(devices[0]).hbm_bytes, jax.__version__]
  return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def micro_batch_sizes(config, devices) -> list[int]:
  """Candidate micro-batches, largest first: the divisors of train.batch_size that the mesh's batch axes (data x
  fsdp) divide, so that no device idles or repeats another's rows (all divisors when none is such)."""
  from caopd_jax.sharding.mesh import parse_mesh
  spec = parse_mesh(config.mesh, len(devices))     # as setup.build's mesh
  divisors = [d for d in range(config.train.batch_size, 0, -1) if config.train.batch_size % d == 0]
  return [d for d in divisors if d % (spec.data * spec.fsdp) == 0] or divisors


def choose(config, model_config, devices, measure=step_bytes, say=print) -> MemoryPlan:
  """The plan for `config` on `devices` (module docstring); `measure(config, model_config, devices)` gives a
  candidate's per-device bytes, or Refused (or None) where the compiler refuses it; `say` gets a line per candidate
  (compiles take minutes at 8B)."""
  chip = hardware.chip_of(devices[0])
  if not chip.hbm_bytes:
    raise CaopdError(f"the memory of a '{chip.name}' device is unknown (caopd_jax/hardware.py KNOWN), so "
                     "train.remat=auto / train.micro_batch_size=0 cannot be chosen: set both explicitly")
  plan = MemoryPlan("", 0, budget=int(chip.hbm_bytes * (1 - HEADROOM)), chip=chip.name)
  t = config.train
  sizes = micro_batch_sizes(config, devices) if t.micro_batch_size == 0 else [t.micro_batch_size]

  def fits(remat, size) -> bool:
    say(f"memory: compiling the step with train.remat={remat}, micro_batch_size={size} for {chip.name} ...")
    used = measure(with_memory(config, remat, size), model_config, devices)
    refused = used is None or isinstance(used, Refused)
    plan.tried.append([remat, size, int(used or 0), refused])
    fit = not refused and used <= plan.budget
    say(f"memory:   {_describe(used or 0, refused)} per device: {'fits' if fit else 'over'} "
        f"{plan.budget / GIB:.2f} GiB")
    return fit

  for remat in (remat_order(devices[0].platform) if t.remat == "auto" else (t.remat,)):
    if fits(remat, sizes[0]):
      best = 0
    elif len(sizes) > 1 and fits(remat, sizes[-1]):
      low, best = 0, len(sizes) - 1            # sizes[low] does not fit, sizes[best] does
      while best - low > 1:
        mid = (low + best) // 2
        low, best = (low, mid) if fits(remat, sizes[mid]) else (mid, best)
    else:
      continue
    plan.remat, plan.micro_batch_size = remat, sizes[best]
    plan.device_bytes = next(b for r, m, b, _ in plan.tried if (r, m) == (remat, sizes[best]))
    return plan
  raise CaopdError(_unfit_message(config, plan, chip))


def remat_order(platform: str) -> tuple[str, ...]:
  """The remat settings `train.remat=auto` tries on a JAX platform ("gpu", "tpu", "cpu"), in order."""
  return GPU_REMAT_ORDER if platform == "gpu" else REMAT_ORDER


def _unfit_message(config, plan: MemoryPlan, chip) -> str:
  remat, size, used, refused = plan.tried[-1]
  return (f"the training step does not fit the devices ({len(plan.tried)} setting(s) tried): the most frugal, "
          f"train.remat={remat} with train.micro_batch_size={size}, is {_describe(used, refused)} per device; "
          f"{chip.name} has {chip.hbm_bytes / GIB:.2f} GiB, {plan.budget / GIB:.2f} GiB usable ({HEADROOM:.0%} kept as "
          "headroom). "
          f"Use more devices (a larger mesh or slice: --mesh), shorter sequences (distill.max_prompt_tokens="
          f"{config.distill.max_prompt_tokens}, distill.max_completion_tokens={config.distill.max_completion_tokens}), "
          f"a smaller train.batch_size ({config.train.batch_size}), or model.teacher_dtype=bfloat16")


def resolve(config, model_config, devices, run_dir: str | None = None, measure=step_bytes, say=print,
            save: bool = True):
  """(config with concrete train.remat and train.micro_batch_size, its MemoryPlan): as configured when neither is
  auto; else chosen (choose), from `run_dir`'s cache when it holds a decision for the same key (every process reads
  it, so all build the same step; `save`: this process writes a new decision there)."""
  if config.train.remat != "auto" and config.train.micro_batch_size != 0:
    return config, MemoryPlan(config.train.remat, config.train.micro_batch_size)
  key = _cache_key(config, model_config, devices)
  path = os.path.join(run_dir, run_folder.MEMORY_PLAN) if run_dir else None
  cached = _read_cache(path, key)
  plan = cached or choose(config, model_config, devices, measure, say)
  if save and path and cached is None and os.path.isdir(run_dir):
    write_json(path, {"key": key, **dataclasses.asdict(plan)})
  return with_memory(config, plan.remat, plan.micro_batch_size), plan


def _read_cache(path: str | None, key: str) -> MemoryPlan | None:
  if not path or not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      saved = json.load(f)
    return MemoryPlan(**{k: v for k, v in saved.items() if k != "key"}) if saved.get("key") == key else None
  except (OSError, ValueError, TypeError):   # unreadable or from another version: decide again
    return None
