"""The built-in synthetic arithmetic task: exact integer answers, no files needed.

Difficulty levels (operands drawn uniformly from the digit ranges; `-` puts the larger operand
first, so results are never negative; multiplication is written `*`):

  1  1-digit + or -            (0..9)
  2  2-digit + or -            (10..99)
  3  3-digit + or -            (100..999), or 2-digit * 2-digit (10..99); operator uniform in {+, -, *}
  4  3- or 4-digit * 3- or 4-digit (100..9999)

Each item carries a worked demonstration in the format the student is asked for, e.g.
"12 + 35 = 47\n<answer>47</answer>\nConfidence: 1.00"; the arithmetic verifier reads the last
`<answer>N</answer>` (fallback: the last integer).
"""

import operator
import random

from caopd_jax.data.example import Example
from caopd_jax.errors import CaopdError

LEVELS = (1, 2, 3, 4)
_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def _operands(rng: random.Random, level: int) -> tuple[int, str, int]:
  """(a, op, b) for one item of `level`."""
  if level == 1:
    lo, hi, op = 0, 9, rng.choice("+-")
  elif level == 2:
    lo, hi, op = 10, 99, rng.choice("+-")
  elif level == 3:
    op = rng.choice("+-*")
    lo, hi = (10, 99) if op == "*" else (100, 999)
  else:
    lo, hi, op = 100, 9999, "*"
  a, b = rng.randint(lo, hi), rng.randint(lo, hi)
  return (max(a, b), op, min(a, b)) if op == "-" else (a, op, b)


def arithmetic_task(num_examples: int, seed: int, difficulty: int | list[int] = 2) -> list[Example]:
  """`num_examples` arithmetic Examples, the same for the same (num_examples, seed, difficulty).

  Args:
    num_examples: int >= 0.
    seed: int, seeds a `random.Random`.
    difficulty: one level in LEVELS, or a list of levels to mix; item i has level
      difficulty[i % len(difficulty)] (an even mix, in order; shuffle downstream).
  Returns:
    list of Example with verifier "arithmetic", task "arithmetic", int answer, system None.
  """
  levels = [difficulty] if isinstance(difficulty, int) else list(difficulty)
  bad = [level for level in levels if level not in LEVELS]
  if not levels or bad:
    raise CaopdError(f"arithmetic difficulty {difficulty!r} is not valid; use one of {list(LEVELS)} or a "
                     f"non-empty list of them (see caopd_jax/data/arithmetic.py for what each level means)")
  if num_examples < 0:
    raise CaopdError(f"arithmetic num_examples must be >= 0, got {num_examples}")
  rng = random.Random(seed)
  examples = []
  for i in range(num_examples):
    a, op, b = _operands(rng, levels[i % len(levels)])
    result = _OPS[op](a, b)
    examples.append(Example(
        id=f"arithmetic-{seed}-{i}", question=f"What is {a} {op} {b}?", answer=result, verifier="arithmetic",
        task="arithmetic", demonstration=f"{a} {op} {b} = {result}\n<answer>{result}</answer>\nConfidence: 1.00"))
  return examples
