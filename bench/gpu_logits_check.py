"""One-time GPU check: bf16 (and f32) logits on the accelerator vs float32 logits on the CPU.

Models: the real SmolLM2-135M-Instruct (from a GGUF, --gguf) and a random
Qwen3-0.6B-shaped model (`preset("qwen3-0.6b")`, `init` with a fixed key in
float32 on the CPU; the accelerator gets the same weights, cast to bf16).

Inputs are fixed token-id arrays (no tokenizer needed): a deterministic NumPy RNG
over the vocab, batch 4 x 64, row 3 left-padded by 16 tokens with its attention_mask.

Per model and compared run (reference: CPU float32), over real (unpadded) positions:
  max |diff|, max |diff| / max |ref|, top-1 agreement, mean KL(cpu_f32 || run) per token.

Compared runs: gpu_bf16; gpu_f32 at matmul precision 'highest' (scoped with
`jax.default_matmul_precision`, so the bf16 runs are untouched); gpu_f32 at the
default precision (TF32 may be used there); cpu_bf16 (with --cpu_bf16 or --cpu_only).
--cpu_only skips the accelerator (a quick check of the script itself).

    PYTHONPATH=. python bench/gpu_logits_check.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf --output results.json
"""

import argparse
import json
import platform
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np

from caopd_jax import models, weights

BATCH, SEQ, PAD_ROW, PAD_LEN = 4, 64, 3, 16
_logits = jax.jit(models.logits, static_argnums=0)


def make_inputs(vocab: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """Token ids int32 [B, T] and attention_mask bool [B, T]; row PAD_ROW left-padded (pad id 0)."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, vocab, size=(BATCH, SEQ), dtype=np.int32)
  mask = np.ones((BATCH, SEQ), bool)
  ids[PAD_ROW, :PAD_LEN] = 0
  mask[PAD_ROW, :PAD_LEN] = False
  return ids, mask


def run_logits(config, params, ids, mask, device, precision=None) -> tuple[np.ndarray, float]:
  """float32 logits as NumPy and the wall time of the first call (compile included)."""
  params, ids, mask = jax.device_put((params, ids, mask), device)
  start = time.perf_counter()
  if precision is None:
    out = _logits(config, params, ids, mask)
  else:
    with jax.default_matmul_precision(precision):
      out = _logits(config, params, ids, mask)
  out = np.asarray(jax.block_until_ready(out))
  return out, time.perf_counter() - start


def compare(ref: np.ndarray, test: np.ndarray, mask: np.ndarray) -> dict:
  """Metrics of `test` against `ref` ([B, T, V] float32) over positions where mask is True."""
  r, t = ref[mask].astype(np.float64), test[mask].astype(np.float64)  # [N, V]
  diff = np.abs(r - t).max()
  log_p = r - r.max(-1, keepdims=True)
  log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
  log_q = t - t.max(-1, keepdims=True)
  log_q -= np.log(np.exp(log_q).sum(-1, keepdims=True))
  kl = (np.exp(log_p) * (log_p - log_q)).sum(-1)
  return {"max_abs_diff": float(diff), "max_abs_ref": float(np.abs(r).max()),
          "rel_max_abs_diff": float(diff / np.abs(r).max()),
          "top1_agreement": float((r.argmax(-1) == t.argmax(-1)).mean()),
          "mean_kl": float(kl.mean()), "max_kl": float(kl.max()), "positions": int(mask.sum()),
          "finite": bool(np.isfinite(t).all())}


def check_model(name, config, params_f32, params_bf16, cpu, gpu, cpu_bf16) -> dict:
  """Runs every compared run of one model; params_* are callables giving params on `cpu`."""
  ids, mask = make_inputs(config.vocab_size)
  ref, t_ref = run_logits(config, params_f32(), ids, mask, cpu)
  runs = {}
  if gpu is not None:
    runs["gpu_bf16"] = run_logits(config, params_bf16(), ids, mask, gpu)
    runs["gpu_f32_highest"] = run_logits(config, params_f32(), ids, mask, gpu, "highest")
    runs["gpu_f32_default"] = run_logits(config, params_f32(), ids, mask, gpu)
  if cpu_bf16:
    runs["cpu_bf16"] = run_logits(config, params_bf16(), ids, mask, cpu)
  result = {"model": name, "cpu_f32_seconds": t_ref, "runs": {}}
  for run, (out, seconds) in runs.items():
    result["runs"][run] = {**compare(ref, out, mask), "seconds_incl_compile": seconds}
  return result


def environment(gpu) -> dict:
  env = {"jax": jax.__version__, "python": platform.python_version(), "host": platform.node(),
         "devices": [str(d) for d in jax.devices()], "gpu": None if gpu is None else gpu.device_kind}
  try:
    env["nvidia_smi"] = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
        capture_output=True, text=True, timeout=30).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    env["nvidia_smi"] = None
  return env


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--gguf", help="SmolLM2-135M-Instruct GGUF file (left out: SmolLM2 is skipped)")
  parser.add_argument("--output", required=True, help="JSON results path")
  parser.add_argument("--cpu_only", action="store_true", help="skip the accelerator; compare CPU bf16 vs CPU f32")
  parser.add_argument("--cpu_bf16", action="store_true", help="also compare CPU bf16 vs CPU f32")
  parser.add_argument("--skip_qwen", action="store_true", help="only SmolLM2")
  args = parser.parse_args()

  cpu = jax.devices("cpu")[0]
  gpu = None if args.cpu_only else jax.devices()[0]
  if gpu is not None and gpu.platform == "cpu":
    raise SystemExit("no accelerator found; use --cpu_only")
  env = environment(gpu)
  print(json.dumps(env, indent=1), flush=True)

  results = []
  if args.gguf:
    with jax.default_device(cpu):
      config, smol_f32 = weights.load(args.gguf, dtype=jnp.float32)
    if gpu is not None:  # bf16 through the loader itself, on the accelerator
      with jax.default_device(gpu):
        _, smol_bf16 = weights.load(args.gguf, dtype=jnp.bfloat16)
    else:
      smol_bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), smol_f32)
    results.append(check_model("smollm2-135m-instruct (gguf Q4_1)", config, lambda: smol_f32, lambda: smol_bf16,
                               cpu, gpu, args.cpu_only or args.cpu_bf16))
    del smol_f32, smol_bf16
  if not args.skip_qwen:
    qcfg = models.preset("qwen3-0.6b")
    with jax.default_device(cpu):
      q_f32 = models.init(qcfg, jax.random.key(0), jnp.float32)
    q_bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), q_f32)
    results.append(check_model("qwen3-0.6b shape, random init (key 0)", qcfg, lambda: q_f32, lambda: q_bf16,
                               cpu, gpu, args.cpu_only or args.cpu_bf16))

  header = f"{'model':38} {'run vs cpu_f32':16} {'max|diff|':>10} {'/max|ref|':>10} {'top1':>7} " \
           f"{'mean KL':>10} {'max KL':>10} {'s':>6}"
  print("\n" + header + "\n" + "-" * len(header))
  for res in results:
    for run, m in res["runs"].items():
      print(f"{res['model'][:38]:38} {run:16} {m['max_abs_diff']:10.4g} {m['rel_max_abs_diff']:10.3g} "
            f"{m['top1_agreement']:7.2%} {m['mean_kl']:10.3g} {m['max_kl']:10.3g} {m['seconds_incl_compile']:6.1f}")
  with open(args.output, "w") as f:
    json.dump({"environment": env, "batch": BATCH, "seq": SEQ, "pad_row": PAD_ROW, "pad_len": PAD_LEN,
               "results": results}, f, indent=1)
  print(f"\nwrote {args.output}")


if __name__ == "__main__":
  main()
