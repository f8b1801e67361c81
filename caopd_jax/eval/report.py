"""What an evaluation leaves in its output folder, and the side-by-side table of several evaluations.

    DIR/inference.json   one record per completion: a list in the CaOPD reference's inference format
                         (`response`, `golden_answer`: eval/protocols.py), which its eval/run_eval_*.py scripts
                         read, plus our fields (id, prompt, sample, parsed_answer, correct, confidence, ...)
    DIR/metrics.json     eval/scoring.summarise: the protocol, metrics.summary (the reference's keys + auroc,
                         reliability), confidence_notes, decoding (None when scored from a file), question_level
    DIR/reliability.png  reliability diagram and confidence histogram
"""

import json
import os

from caopd_jax import plots
from caopd_jax.errors import InputNotFoundError
from caopd_jax.eval.intervals import over_seeds
from caopd_jax.files import write_json

INFERENCE_FILE, METRICS_FILE, DIAGRAM_FILE = "inference.json", "metrics.json", "reliability.png"
COLUMNS = (("accuracy", "accuracy"), ("ECE", "ece"), ("Brier", "brier_score"), ("overconf. gap", "overconfidence_gap"),
           ("SPR", "spr"), ("AUROC", "auroc"), ("mean conf.", "mean_confidence"),
           ("format", "confidence_format_adherence"))


def write_report(folder: str, name: str, records: list[dict], summary: dict) -> None:
  """Writes the three files of one evaluation into `folder` (created if needed)."""
  os.makedirs(folder, exist_ok=True)
  write_json(os.path.join(folder, INFERENCE_FILE), records, indent=1)
  write_json(os.path.join(folder, METRICS_FILE), summary, indent=1)
  plots.reliability_diagram({name: summary}, os.path.join(folder, DIAGRAM_FILE))


def read_metrics(folder: str) -> dict:
  """The metrics.json of an evaluation folder."""
  path = os.path.join(folder, METRICS_FILE)
  if not os.path.isfile(path):
    raise InputNotFoundError(f"{folder}: no {METRICS_FILE}; give folders written by `python -m caopd_jax.eval`")
  with open(path) as f:
    return json.load(f)


def format_failures(results: dict[str, dict], least: float = 0.9) -> list[str]:
  """One line per name whose share of completions stating a confidence is below `least`: its calibration metrics
  count each missing confidence as 0 (metrics.summary)."""
  lines = []
  for name, summary in results.items():
    share = summary.get("confidence_format_adherence")
    if share is not None and share < least:
      lines.append(f"note: {name} states no confidence in {1 - share:.0%} of its completions (format {share:.3f}); "
                   "they count as confidence 0 in all its confidence metrics")
  return lines


def metrics_table(results: dict[str, dict]) -> str:
  """A Markdown table: one row per name, the COLUMNS of each metrics summary and the protocol that scored it;
  under it, after a blank line each, the `format_failures` notes."""
  lines = ["| model | " + " | ".join(label for label, _ in COLUMNS) + " | protocol |",
           "|---" * (len(COLUMNS) + 2) + "|"]
  for name, summary in results.items():
    cells = ["n/a" if summary.get(key) is None else f"{summary[key]:.3f}" for _, key in COLUMNS]
    lines.append(f"| {name} | " + " | ".join(cells) + f" | {summary.get('protocol', 'n/a')} |")
  return "\n\n".join(["\n".join(lines), *format_failures(results)])


def seeds_table(groups: dict[str, list[dict]]) -> str:
  """A Markdown table: one row per name, each COLUMNS metric as the mean over that name's summaries (its seeds)
  +- the half width of the 95% t-interval over them (none with one seed)."""
  lines = ["| model | seeds | " + " | ".join(label for label, _ in COLUMNS) + " |", "|---" * (len(COLUMNS) + 2) + "|"]
  for name, summaries in groups.items():
    cells = []
    for _, key in COLUMNS:
      values = [s[key] for s in summaries if s.get(key) is not None]
      if not values:
        cells.append("n/a")
        continue
      mean, half = over_seeds(values)
      cells.append(f"{mean:.3f}" if half is None else f"{mean:.3f} ± {half:.3f}")
    lines.append(f"| {name} | {len(summaries)} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def pooled(summaries: list[dict]) -> dict:
  """The summaries of one model's seeds as one, for a reliability diagram: bins pooled (counts added, mean
  confidence and accuracy count-weighted), ECE and accuracy the means over the seeds."""
  bins = []
  for parts in zip(*(s["bin_stats"] for s in summaries)):
    count = sum(b["count"] for b in parts)
    means = {key: sum(b[key] * b["count"] for b in parts if b["count"]) / count if count else None
             for key in ("mean_conf", "accuracy")}
    bins.append(dict(parts[0], count=count, **means))
  return {"bin_stats": bins, "ece": over_seeds([s["ece"] for s in summaries])[0],
          "accuracy": over_seeds([s["accuracy"] for s in summaries])[0]}
