"""The standard benchmark set for one model shape, each part in its own process, as one table.

    python bench/run.py --model qwen3-0.6b                        # one GPU
    python bench/run.py --model qwen3-8b --mesh=fsdp:2 --batch 16 --prompt 1024 --completion 1024 --micro_batches 8
    python bench/run.py --model qwen3-0.6b --parts step --token_stats pallas xla_chunked

Parts: `step` (bench/train_step.py: one CaOPD training step, teacher included, per token-stats
backend), `rollout` (bench/rollout_throughput.py: K=8 sampling at batch 64 and 256 on --rollout_mesh),
`kernel` (kernels/token_stats_bench.py time: the loss head alone at the model's hidden size). Raw JSON
lines go to --output (default bench/last_run.jsonl).
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _run(args: list) -> list[dict]:
  """JSON objects printed by a bench script (one per line, or its --output file)."""
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [os.path.dirname(HERE),
                                                                   os.environ.get("PYTHONPATH")])))
  out = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env)
  if out.returncode:
    return [{"error": f"{' '.join(args[:2])}: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}"}]
  return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--model", default="qwen3-0.6b")
  p.add_argument("--mesh", default="1")
  p.add_argument("--rollout_mesh", default=None, help="the rollout part's mesh (default: --mesh), e.g. data:4")
  p.add_argument("--parts", nargs="+", default=["step", "rollout", "kernel"], choices=["step", "rollout", "kernel"])
  p.add_argument("--token_stats", nargs="+", default=["pallas", "xla_chunked"])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--prompt", type=int, default=512)
  p.add_argument("--completion", type=int, default=512)
  p.add_argument("--micro_batches", type=int, default=1)
  p.add_argument("--remat", default="none", choices=["none", "layers", "dots"])
  p.add_argument("--output", default=os.path.join(HERE, "last_run.jsonl"))
  args = p.parse_args()
  rows = []
  if "step" in args.parts:
    for backend in args.token_stats:
      rows += _run([os.path.join(HERE, "train_step.py"), "--model", args.model, "--mesh", args.mesh, "--token_stats",
                    backend, "--batch", str(args.batch), "--prompt", str(args.prompt), "--teacher_prompt",
                    str(args.prompt + 256), "--completion", str(args.completion), "--micro_batches",
                    str(args.micro_batches), "--remat", args.remat])
  if "rollout" in args.parts:
    out = os.path.join(HERE, ".rollout.json")
    _run([os.path.join(HERE, "rollout_throughput.py"), "--model", args.model, "--mesh", args.rollout_mesh or args.mesh,
          "--samples_per_prompt", "8", "--output", out])
    if os.path.exists(out):
      result = json.load(open(out))
      rows += [dict(part="rollout", mesh=result["mesh"], **r) for r in result["runs"]]
      os.remove(out)
  if "kernel" in args.parts:
    from caopd_jax import models
    rows += [dict(part="kernel", **r) for r in _run([os.path.join(HERE, "..", "kernels", "token_stats_bench.py"), "time", "--rows", "8192",
                                                     "--dims", str(models.preset(args.model).hidden_size)])
             if "impl" in r or "error" in r]
  with open(args.output, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  print("| part | what | time | throughput | MFU / TFLOP/s | peak GiB |\n|---|---|---:|---:|---:|---:|")
  for r in rows:
    if "error" in r:
      print(f"| error | {r['error']} | | | | |")
    elif "token_stats" in r:
      print(f"| step | {r['model']} {r['mesh']} {r['token_stats']} | {r['step_s']:.3f} s | "
            f"{r['student_tokens_per_s']:,} tok/s | {100 * r['mfu']:.1f}% | {r['peak_gib_per_device']} |")
    elif r.get("part") == "rollout":
      print(f"| rollout | {r['mesh']} batch {r['batch']}, K={r['samples_per_prompt']} | {r['seconds']:.2f} s | "
            f"{r['tokens_per_s']:,.0f} tok/s | {100 * r['fraction_of_roofline']:.0f}% of roofline | |")
    else:
      print(f"| kernel | {r['impl']} N {r['n']} D {r['d']} | {r.get('fwd_bwd_ms', '-')} ms | | "
            f"{r.get('fwd_bwd_tflops', '-')} | {r.get('fwd_bwd_peak_gib', '-')} |")


if __name__ == "__main__":
  main()
