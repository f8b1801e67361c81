"""The README's main job in its CI budget (`--config.demo.fast=True`): every stage runs and reports.

The full demo (`bash launch/demo.sh`) is the same code with a larger budget; its figures are in the README.
"""

import json
import os
import re
import subprocess
import sys

import matplotlib.image
import numpy as np

from caopd_jax import metrics, weights
from caopd_jax.run_folder import read_metrics


def test_fast_demo_runs_every_stage(tmp_path):
  out = tmp_path / "demo"
  result = subprocess.run([sys.executable, "-m", "caopd_jax.demo", "--config.demo.fast=True",
                           f"--config.demo.output_dir={out}", "--config.log.progress=false"],
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr
  folder = tmp_path / "demo-fast"
  for stage in ("[1/4] base model", "[2/4] OPD", "[3/4] CaOPD", "[4/4] evaluating"):
    assert stage in result.stdout
  assert "demo.fast: every stage with a tiny budget, to check the plumbing; the metrics it prints mean nothing" in (
      result.stdout)
  table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
  assert [row.split("|")[1].strip() for row in table] == ["model", "base", "OPD", "CaOPD"] * 2  # greedy, sampled
  assert "ECE" in table[0] and "AUROC" in table[0]
  timing = re.search(r"wall time (\d+) min (\d+) s \(base model (\d+) s, OPD (\d+) s, CaOPD (\d+) s, evaluation (\d+) s;",
                     result.stdout)
  assert timing, result.stdout[-600:]
  minutes, secs, *stages = map(int, timing.groups())
  assert abs(60 * minutes + secs - sum(stages)) <= 4     # the stages add up to the total (each rounded)
  for name in ("opd", "caopd"):
    history = read_metrics(folder / name)
    assert [r["step"] for r in history] == [1, 2, 3]
    saved = json.loads((folder / name / "config.json").read_text())
    assert saved["distill"]["calibrate"] == (name == "caopd")
    config, _ = weights.load(str(folder / name))
    assert config.vocab_size == 101                   # the character-level base model's
  lost = []       # names of the evaluations that state a confidence in under 90%, greedy ones first
  for mode, name in [(mode, name) for mode in ("greedy", "sampled") for name in ("base", "OPD", "CaOPD")]:
    report = json.loads((folder / "eval" / f"{name}_{mode}.json").read_text())
    if report["metrics"]["confidence_format_adherence"] < 0.9:
      lost.append(name)
    records = report["records"]
    assert len(records) == 16 * (1 if mode == "greedy" else 2)
    confidence = np.array([np.nan if r["confidence"] is None else r["confidence"] for r in records])
    recomputed = metrics.summary(np.array([r["correct"] for r in records]), confidence)
    assert recomputed["ece"] == report["metrics"]["ece"] and recomputed["accuracy"] == report["metrics"]["accuracy"]
  notes = [line.split()[1] for line in result.stdout.splitlines() if line.startswith("note: ")]
  assert notes == lost, result.stdout      # the table's format failures are named under it, in its order
  for png in ("reliability_greedy.png", "reliability_sampled.png", "curves.png"):
    assert matplotlib.image.imread(str(folder / png)).shape[0] > 100
  assert "![reliability](reliability_sampled.png)" in (folder / "results.md").read_text()
  assert os.path.isdir(folder / "base")
