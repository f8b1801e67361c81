"""Where the GPU time of a profiled region goes: a JAX profiler trace summed by kernel kind.

    python bench/trace_summary.py TRACE_DIR [--steps 2] [--top 15]

TRACE_DIR is the folder given to `jax.profiler.trace` (or one below it); its newest `*.trace.json.gz`
is read. Only kernels on the GPU's streams count (the `/device:GPU:N` processes, threads named
"Stream ..."); XLA's derived "XLA Ops" / "XLA Modules" lines would count the same time twice. Kernels
are sorted into kinds by name (KINDS, first match wins); times are per step when --steps is given.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re

KINDS = [  # (kind, pattern over the lower-cased kernel name)
    ("token stats (Pallas)", r"forward_kernel|dlogits_kernel|atomic_kernel|grad_[hw]_kernel|pallas"),
    ("attention (cuDNN)", r"cudnn|fmha|flash|sdpa"),
    ("decode attention (Pallas)", r"mha_forward"),
    ("matmul (cuBLAS / CUTLASS)", r"gemm|cublas|cutlass|nvjet|xmma|wgmma|matmul"),
    ("collectives (NCCL)", r"nccl"),
    ("copies / memset", r"memcpy|memset"),
    ("other fusions (elementwise, reductions)", r"."),
]


def _newest_trace(path: str) -> str:
  found = glob.glob(os.path.join(path, "**", "*.trace.json.gz"), recursive=True)
  if not found:
    raise SystemExit(f"trace_summary: no *.trace.json.gz under {path}")
  return max(found, key=os.path.getmtime)


def kind_of(kernel: str) -> str:
  name = kernel.lower()
  return next(kind for kind, pattern in KINDS if re.search(pattern, name))


def gpu_kernels(trace: dict) -> list[tuple[str, float]]:
  """(kernel name, duration in µs) of every event on a GPU stream of a Chrome-format trace."""
  processes, threads = {}, {}
  for e in trace["traceEvents"]:
    if e.get("ph") == "M" and e.get("name") == "process_name":
      processes[e["pid"]] = e["args"]["name"]
    elif e.get("ph") == "M" and e.get("name") == "thread_name":
      threads[(e["pid"], e["tid"])] = e["args"]["name"]
  gpu = {pid for pid, name in processes.items() if name.startswith("/device:GPU")}
  return [(e["name"], float(e.get("dur", 0.0))) for e in trace["traceEvents"]
          if e.get("ph") == "X" and e.get("pid") in gpu
          and threads.get((e["pid"], e.get("tid")), "").startswith("Stream")]


def summarize(path: str, steps: int = 1, top: int = 15) -> dict:
  """{'file', 'devices', 'kinds': {kind: ms per step}, 'top': [[kernel, kind, ms per step, launches]],
  'total_ms'}: GPU kernel time summed over every GPU in the trace, divided by `steps`."""
  file = path if path.endswith(".gz") else _newest_trace(path)
  with gzip.open(file) as f:
    trace = json.load(f)
  kernels = gpu_kernels(trace)
  if not kernels:
    names = sorted({e["args"]["name"] for e in trace["traceEvents"] if e.get("ph") == "M" and "args" in e
                    and e.get("name") in ("process_name", "thread_name")})
    print(f"trace_summary: no GPU stream kernels in {file}; processes and threads: {names[:20]}")
  by_kind, by_name, launches = collections.Counter(), collections.Counter(), collections.Counter()
  for name, us in kernels:
    by_kind[kind_of(name)] += us / 1e3 / steps
    by_name[name] += us / 1e3 / steps
    launches[name] += 1
  devices = sorted({name for name in (e["args"]["name"] for e in trace["traceEvents"]
                                      if e.get("ph") == "M" and e.get("name") == "process_name")
                    if name.startswith("/device:GPU")})
  return {"file": file, "devices": len(devices), "total_ms": round(sum(by_kind.values()), 3),
          "kinds": {k: round(v, 3) for k, v in by_kind.most_common()},
          "top": [[name, kind_of(name), round(ms, 3), launches[name] // steps] for name, ms in by_name.most_common(top)]}


def table(summary: dict) -> str:
  total = summary["total_ms"] or 1.0
  lines = [f"GPU kernel time per step, summed over {summary['devices']} GPU(s): {summary['total_ms']:.1f} ms",
           "| kind | ms | share |", "| --- | ---: | ---: |"]
  lines += [f"| {k} | {ms:.1f} | {100 * ms / total:.0f}% |" for k, ms in summary["kinds"].items()]
  lines += ["", "| kernel | kind | ms | launches |", "| --- | --- | ---: | ---: |"]
  lines += [f"| `{name[:90]}` | {kind} | {ms:.2f} | {n} |" for name, kind, ms, n in summary["top"]]
  return "\n".join(lines)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("trace_dir")
  p.add_argument("--steps", type=int, default=1, help="steps inside the traced region (times are divided by it)")
  p.add_argument("--top", type=int, default=15)
  args = p.parse_args()
  print(table(summarize(args.trace_dir, args.steps, args.top)))


if __name__ == "__main__":
  main()
