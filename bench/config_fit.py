"""Every shipped config compiled for its named target (`target` in configs/): a markdown table of the memory plan,
per-device memory of the training step and the sampler, FLOPs, the MFU ceiling and compile times
(caopd_jax.train.aot's report). TPU targets need libtpu (.venv-tpu, BUILD.md); GPU targets run where that many
GPUs are (elsewhere their rows say so). Compile-time figures, not measurements on the target.

    JAX_PLATFORMS=cpu .venv-tpu/bin/python bench/config_fit.py [--only paper] [--output table.md]
    python bench/config_fit.py --only smollm2_arith          # on a GPU host, for the gpu:1 target
"""

import argparse
import sys
import time

from caopd_jax import models
from caopd_jax.config_files import load_file
from caopd_jax.errors import CaopdError
from caopd_jax.files import write_lines
from caopd_jax.train import aot

# (config file argument, the model preset whose shapes stand in for its weights)
SHIPPED = [("configs/smollm2_arith.py", "smollm2-135m")] + [
    (f"configs/paper.py:{model},{dataset}", model) for model in ("qwen3-8b", "qwen2.5-7b-instruct", "olmo3-7b-instruct")
    for dataset in ("science", "tooluse")]


def row(name: str, preset: str) -> str:
  config = load_file(name)
  config.model.path = config.model.path or "unused"
  started = time.perf_counter()
  try:
    devices = aot.target_devices(config.target, 1, [])
  except CaopdError as e:               # e.g. a gpu:N target on a machine with fewer GPUs
    return f"| `{name}` | {config.target} | not checked here: {str(e)[:120]} | | | | | |"
  try:
    report = aot.compile_report(config, models.preset(preset), devices, say=lambda text: None)
  except CaopdError as e:               # no memory setting fits (memory_plan) or the step does not
    return f"| `{name}` | {config.target} | DOES NOT FIT: {str(e)[:200]} | | | | | |"
  gib = lambda n: f"{n / 2**30:.2f}"  # noqa: E731
  flops = report["flops"]
  seconds = flops["executed"] / report["peak_flops"] if report["peak_flops"] else None
  sampler = max(report["sampler"]["prefill"]["total"], report["sampler"]["decode"]["total"])
  return (f"| `{name}` | {config.target} ({report['devices']} x {report['chip']}) | remat={report['remat']}, "
          f"micro-batch {report['micro_batch_size']} | {gib(report['step']['total'])} / {gib(sampler)} of "
          f"{gib(report['budget'])} | {flops['model'] / 1e15:.2f} | "
          + (f"{seconds:.2f} s, {flops['model'] / flops['executed']:.0%}" if seconds else "n/a")
          + f" | {report['compile_s']['step']} / {report['compile_s']['sampler']} | "
          f"{time.perf_counter() - started:.0f} |")


HEADER = ["| config | target | memory plan (auto) | step / sampler GiB per device, of usable | model PFLOP per step "
          "| step at peak, MFU ceiling | compile s (step / sampler) | check s (all compiles) |",
          "|---|---|---|---|---|---|---|---|"]


def _shown(line: str) -> str:
  print(line, flush=True)            # a row as soon as it is known: the paper's rows take minutes each
  return line


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--only", default="", help="check only the configs whose name contains this")
  parser.add_argument("--output", default="", help="also write the table to this markdown file")
  args = parser.parse_args(argv)
  print("\n".join(HEADER), flush=True)
  lines = HEADER + [_shown(row(name, preset)) for name, preset in SHIPPED if args.only in name]
  if args.output:
    write_lines(args.output, lines)
  return 0


if __name__ == "__main__":
  sys.exit(main())
