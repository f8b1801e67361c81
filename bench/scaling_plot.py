"""Weak-scaling plot of `bench/train_step.py` / `bench/rollout_throughput.py` results on one host.

    python bench/scaling_plot.py bench/scaling_h200x4_2026-11-28.jsonl --output bench/scaling.png

Input: JSON lines, one per run: training steps as `train_step.py` prints them (model, mesh, devices,
student_tokens_per_s, mfu; a row with "error" is a run that did not fit) and rollout rows with
"part": "rollout" (model, mesh, devices, tokens_per_s). Left: tokens/s per GPU against GPUs, each
series relative to its smallest GPU count (the efficiency is written at each point); right: MFU.
"""

import argparse
import collections
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def series(rows: list[dict]) -> dict:
  """{label: [(devices, tokens/s per device, mfu or None), ...] sorted by devices}; failed runs are skipped."""
  out = collections.defaultdict(list)
  for r in rows:
    if "error" in r:
      continue
    layout = "tensor" if "tensor" in r["mesh"] else "fsdp" if "fsdp" in r["mesh"] else "data"
    if r.get("part") == "rollout":
      out[f"{r['model']} rollouts ({layout})"].append((r["devices"], r["tokens_per_s"] / r["devices"], None))
    else:
      label = f"{r['model']} step ({'fsdp x tensor' if layout == 'tensor' else 'fsdp'})"  # one device: fsdp
      out[label].append((r["devices"], r["student_tokens_per_s"] / r["devices"], r["mfu"]))
  for label in [k for k in out if "fsdp x tensor" in k]:  # tensor layouts start from the fsdp run's smallest size
    base = out.get(label.replace("fsdp x tensor", "fsdp"), [])
    out[label] = base[:1] + out[label]
  return {k: sorted(v) for k, v in out.items()}


def plot(rows: list[dict], output: str, title: str) -> dict:
  """Draws the figure; returns {label: [(devices, efficiency)]} (per-device throughput / the first point's)."""
  fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
  efficiencies = {}
  for label, points in series(rows).items():
    devices = [p[0] for p in points]
    per_device = [p[1] for p in points]
    eff = [v / per_device[0] for v in per_device]
    efficiencies[label] = list(zip(devices, [round(e, 3) for e in eff]))
    line, = left.plot(devices, eff, marker="o", label=f"{label}: {per_device[0]:,.0f} tok/s per GPU at {devices[0]}")
    for d, e in zip(devices[1:], eff[1:]):
      left.annotate(f"{100 * e:.0f}%", (d, e), textcoords="offset points", xytext=(4, 4), color=line.get_color())
    if points[0][2] is not None:
      right.plot(devices, [100 * p[2] for p in points], marker="o", color=line.get_color(), label=label)
  left.axhline(0.85, color="grey", ls="--", lw=1, label="85% goal")
  left.set(xlabel="GPUs", ylabel="tokens/s per GPU, relative to the first point", title="weak scaling",
           ylim=(0.5, 1.15))
  right.set(xlabel="GPUs", ylabel="MFU (%)", title="model FLOPs utilisation (792 TFLOP/s per GPU)", ylim=(0, 70))
  for ax in (left, right):
    ax.set_xticks(sorted({p[0] for pts in series(rows).values() for p in pts}))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(output, dpi=110)
  return efficiencies


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("results", help="JSON lines (see above)")
  p.add_argument("--output", default="scaling.png")
  p.add_argument("--title", default="CaOPD training step and rollouts on one host")
  args = p.parse_args()
  with open(args.results) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  for label, points in plot(rows, args.output, args.title).items():
    print(f"{label}: " + ", ".join(f"{d} GPUs {100 * e:.0f}%" for d, e in points))
  print(f"plot: {args.output}")


if __name__ == "__main__":
  main()
