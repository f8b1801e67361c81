"""Time per character of the rollout readers (verifiers, parsers, the paper protocol's rules) on degenerate text.

    python bench/verifier_speed.py [--sizes 10000,100000,1000000] [--output out.json]

For each degenerate pattern (unclosed tags, deep brackets, long digit runs, long confidence values) repeated to
each size, every reader of tests/test_verifier_totality.py reads the text; the table gives the slowest reader's
microseconds per character at each size (median of 3) and the ratio of the largest size's figure to the smallest's:
a linear reader keeps that ratio near 1 (a quadratic one multiplies it by the size ratio). CPU figures: absolute
values depend on the machine, the ratio does not.
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from test_verifier_totality import READERS  # noqa: E402  (the readers, defined once, with the tests)

PATTERNS = {
    "unclosed <answer>": lambda n: "<answer>" * (n // 8),
    "unclosed <confidence>": lambda n: "<confidence>" * (n // 12),
    "nested brackets": lambda n: "Action: t\nAction Input: {\"a\": " + "[" * (n // 2) + "]" * (n // 2) + "}",
    "digit run in <answer>": lambda n: "<answer>" + "9" * n + "</answer>",
    "confidence digits": lambda n: "Confidence: " + "9" * n,
    "open braces": lambda n: "Action: t\nAction Input: " + "{" * n,
}


def slowest_us_per_char(text: str) -> tuple[float, str]:
  """(microseconds per character of the slowest reader on `text`, its name), each reader timed 3 times."""
  worst = (0.0, "")
  for name, read, _ in READERS:
    times = []
    for _ in range(3):
      start = time.perf_counter()
      read(text)
      times.append(time.perf_counter() - start)
    worst = max(worst, (statistics.median(times) * 1e6 / len(text), name))
  return worst


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--sizes", default="10000,100000,1000000")
  p.add_argument("--output", default=None, help="also write the results as JSON to this file")
  args = p.parse_args()
  sizes = [int(s) for s in args.sizes.split(",")]
  rows = []
  print("| pattern | " + " | ".join(f"{n:,} chars: us/char (slowest reader)" for n in sizes) + " | ratio |")
  print("|---" * (len(sizes) + 2) + "|")
  for pattern, make in PATTERNS.items():
    figures = [slowest_us_per_char(make(n)) for n in sizes]
    ratio = figures[-1][0] / max(figures[0][0], 1e-9)
    rows.append({"pattern": pattern, "sizes": sizes, "us_per_char": [f[0] for f in figures],
                 "slowest": [f[1] for f in figures], "ratio": ratio})
    cells = " | ".join(f"{us:.3f} ({name})" for us, name in figures)
    print(f"| {pattern} | {cells} | {ratio:.2f} |", flush=True)
  if args.output:
    with open(args.output, "w") as f:
      json.dump(rows, f, indent=1)


if __name__ == "__main__":
  main()
