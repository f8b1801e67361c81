"""CaOPD target replacement (CAOPD.md section 4 step 3): the `Confidence:` value becomes P_acc.

Text level, for the teacher side and for checks:
  strip_confidence(text)            everything from the first `Confidence:` key on removed, trailing space trimmed
  with_confidence(body, target)     body + "\\nConfidence: " + target
  patch_demonstration(demo, target) the LAST `Confidence:` line of a demonstration says target (one is appended
                                    to a demonstration that has none)
  confidence_note(target)           the note for the teacher prompt

Token level, for the student completions (`rewrite_completion`, `rewrite_batch`).
Token-boundary policy: the body is NOT re-encoded. It is the longest prefix of
the SAMPLED ids whose decoded text is a prefix of strip_confidence(decoded
completion): the cut falls at the last whole token before the `Confidence:` key
(and before trailing whitespace). A token that straddles the key, or that joins
the last body character with following whitespace (".\\n"), is dropped with
what it carries. So the body stays an exact prefix of what the student sampled
and only the new line is tokenizer output: "\\nConfidence: {target}" encoded as
it follows a non-space character, then EOS. If that exceeds `max_tokens`, the
body is cut to fit (possibly mid-character); the confidence line never is.
"""

from typing import NamedTuple, Sequence

import numpy as np

from caopd_jax.calibration.confidence import CONFIDENCE_KEY, confidence_start, parse_confidence
from caopd_jax.calibration.empirical import rollout_stats
from caopd_jax.errors import CaopdError
from caopd_jax.tokenizers.base import Tokenizer

DEFAULT_NOTE = ("Note: the empirical confidence for this question is {confidence}, the fraction of attempts that "
                "were correct. You must output exactly this value in the Confidence field: Confidence: {confidence}")
_ANCHOR = "."  # encoded before the confidence line so that it is tokenized as it follows a body


# --- text level
def strip_confidence(text: str) -> str:
  """`text` without everything from its first `Confidence:` key (case-insensitive) on, trailing whitespace trimmed."""
  return text[:confidence_start(text)].rstrip()


def with_confidence(body: str, target: str) -> str:
  """`body` followed by the line "Confidence: {target}"."""
  return f"{body}\nConfidence: {target}"


def patch_demonstration(demo: str, target: str) -> str:
  """`demo` with its LAST `Confidence:` line (key to end of line) replaced by "Confidence: {target}".

  A demonstration without one gets the line appended after its trailing whitespace is trimmed.
  """
  matches = list(CONFIDENCE_KEY.finditer(demo))
  if not matches:
    return with_confidence(demo.rstrip(), target)
  start = matches[-1].start()
  end = demo.find("\n", start)
  return demo[:start] + f"Confidence: {target}" + (demo[end:] if end >= 0 else "")


def confidence_note(target: str, template: str = DEFAULT_NOTE) -> str:
  """The teacher-prompt note: `template` with every "{confidence}" replaced by `target`."""
  if "{confidence}" not in template:
    raise CaopdError(f"the confidence note template {template!r:.200} has no {{confidence}} placeholder; "
                     "add one where the empirical confidence should appear")
  return template.replace("{confidence}", target)


# --- token level
class RewrittenCompletion(NamedTuple):
  """ids: the revised completion; loss_mask: 1 per id (all are trained); truncated_body: the body was cut to fit."""
  ids: list[int]
  loss_mask: list[int]
  truncated_body: bool


def confidence_line_ids(tokenizer: Tokenizer, target: str) -> list[int]:
  """Ids of "\\nConfidence: {target}" as tokenized after a non-space character (no EOS)."""
  line = with_confidence("", target)
  anchor = tokenizer.encode(_ANCHOR)
  joined = tokenizer.encode(_ANCHOR + line)
  return joined[len(anchor):] if joined[:len(anchor)] == anchor else tokenizer.encode(line)


def value_token_count(tokenizer: Tokenizer, line_ids: list[int], target: str) -> int:
  """How many trailing ids of the confidence line spell the value: the fewest whose text contains `target`."""
  return next(n for n in range(1, len(line_ids) + 1) if target in tokenizer.decode(line_ids[-n:]))


def _until_stop(ids: Sequence[int], stop_ids: set[int]) -> list[int]:
  ids = [int(i) for i in ids]
  return next((ids[:n] for n, i in enumerate(ids) if i in stop_ids), ids)


def _body_length(tokenizer: Tokenizer, ids: list[int], body: str) -> int:
  """Largest n such that decode(ids[:n]) is a prefix of `body` (module docstring).

  Binary search on the test "decode(ids[:n]) without trailing U+FFFD is a prefix of body", which
  holds up to the cut and fails after it (a token ending inside a UTF-8 character decodes to U+FFFD
  until the character completes, so the full test could fail inside the body), then a step back to
  the last n whose full decode is a prefix.
  """
  decoded = lambda n: tokenizer.decode(ids[:n])  # noqa: E731
  low, high = 0, len(ids) + 1  # the test holds at low and fails at high
  while high - low > 1:
    mid = (low + high) // 2
    if body.startswith(decoded(mid).rstrip("\ufffd")):
      low = mid
    else:
      high = mid
  while low > 0 and not body.startswith(decoded(low)):
    low -= 1
  return low


def rewrite_completion(tokenizer: Tokenizer, completion_ids: Sequence[int], target: str, max_tokens: int,
                       eos_id: int, line_ids: list[int] | None = None) -> RewrittenCompletion:
  """The CaOPD completion: sampled body ids, then "\\nConfidence: {target}" and `eos_id` (module docstring).

  Args:
    completion_ids: sampled ids; everything from the first of `tokenizer.stop_ids` or `eos_id` on is dropped.
    target: the two-decimal confidence string, e.g. "0.63".
    max_tokens: the completion budget; the result has at most this many ids.
    line_ids: confidence_line_ids(tokenizer, target), when the caller has it already.
  """
  ids = _until_stop(completion_ids, set(tokenizer.stop_ids) | {eos_id})
  text = tokenizer.decode(ids)
  body = strip_confidence(text)
  n = len(ids) if body == text else _body_length(tokenizer, ids, body)
  tail = (confidence_line_ids(tokenizer, target) if line_ids is None else line_ids) + [eos_id]
  budget = max_tokens - len(tail)
  if budget < 0:
    raise CaopdError(f"the completion budget max_tokens={max_tokens} cannot hold the confidence line "
                     f"({len(tail)} tokens with EOS); raise the maximum completion length")
  out = ids[:min(n, budget)] + tail
  return RewrittenCompletion(out, [1] * len(out), n > budget)


class RewrittenBatch(NamedTuple):
  """Training completions of P prompts x K rollouts, row p*K + k for rollout k of prompt p.

  ids int32 [P*K, max_tokens] (pad_id after each row's end); loss_mask int32 [P*K, max_tokens]
  (1 on every completion token, confidence line and EOS included); confidence_mask int32 [P*K, max_tokens]
  (1 on the ids that spell the rewritten confidence value, e.g. "0.62"; all 0 when disabled); lengths int32 [P*K];
  edited bool [P*K]: ids differ from the sampled ones (no sampling-time importance correction there);
  truncated_body bool [P*K]; stats: rollout_stats of the ORIGINAL rollouts, per prompt.
  """
  ids: np.ndarray
  loss_mask: np.ndarray
  confidence_mask: np.ndarray
  lengths: np.ndarray
  edited: np.ndarray
  truncated_body: np.ndarray
  stats: dict


def rewrite_batch(tokenizer: Tokenizer, tokens: np.ndarray, lengths: np.ndarray, correct: np.ndarray, *,
                  max_tokens: int, eos_id: int, enabled: bool = True, pad_id: int = 0) -> RewrittenBatch:
  """CaOPD step 3a for a batch; `enabled=False` returns the sampled completions unchanged (plain OPD).

  Args:
    tokens: int [P, K, N] sampled completions (rollout.Rollouts.tokens); lengths: int [P, K] real tokens each.
    correct: bool [P, K], the verifier's verdicts; P_acc = correct.mean(1) sets each prompt's target.
    max_tokens: the completion budget (>= N when disabled, as nothing is cut then).
  """
  tokens, lengths = np.asarray(tokens), np.asarray(lengths)
  sampled = [[tokens[p, j, :lengths[p, j]].tolist() for j in range(tokens.shape[1])] for p in range(tokens.shape[0])]
  stop_ids = set(tokenizer.stop_ids) | {eos_id}
  stated = np.array([[parse_confidence(tokenizer.decode(_until_stop(row, stop_ids))) for row in rows]
                     for rows in sampled], dtype=np.float64)  # None -> NaN
  stats = rollout_stats(correct, stated)
  line_ids = {target: confidence_line_ids(tokenizer, target) for target in set(stats["target"])}
  value_counts = {target: value_token_count(tokenizer, ids, target) for target, ids in line_ids.items()}
  rows, truncated, values = [], [], []
  for target, prompt_rows in zip(stats["target"], sampled):
    for row in prompt_rows:
      values.append(value_counts[target] if enabled else 0)
      cut = False
      if enabled:
        row, _, cut = rewrite_completion(tokenizer, row, target, max_tokens, eos_id, line_ids[target])
      elif len(row) > max_tokens:
        raise CaopdError(f"a sampled completion has {len(row)} tokens, more than max_tokens={max_tokens}; "
                         "sample at most max_tokens new tokens")
      rows.append(row)
      truncated.append(cut)
  ids = np.full((len(rows), max_tokens), pad_id, dtype=np.int32)
  out_lengths = np.array([len(r) for r in rows], dtype=np.int32)
  for i, row in enumerate(rows):
    ids[i, :len(row)] = row
  columns = np.arange(max_tokens)
  loss_mask = (columns < out_lengths[:, None]).astype(np.int32)
  value_end = out_lengths[:, None] - 1  # the value ends just before EOS
  confidence_mask = ((columns < value_end) & (columns >= value_end - np.array(values)[:, None])).astype(np.int32)
  edited = np.array([row != original for row, original in zip(rows, sum(sampled, []))], dtype=bool)
  return RewrittenBatch(ids, loss_mask, confidence_mask, out_lengths, edited, np.array(truncated, dtype=bool), stats)
