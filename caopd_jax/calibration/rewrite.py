"""CaOPD target replacement (docs/CAOPD.md section 4 step 3): the `Confidence:` value becomes P_acc.

Text level, for the teacher side and for checks:
  strip_confidence(text)            everything from the first `Confidence:` key on removed, trailing space trimmed
  with_confidence(body, target)     body + "\\nConfidence: " + target
  patch_demonstration(demo, target) the LAST `Confidence:` line of a demonstration says target (one is appended
                                    to a demonstration that has none)
  confidence_note(target)           the note for the teacher prompt

Token level, for the student completions (`rewrite_completion`, `rewrite_batch`). With
  body = strip_confidence(decode(sampled ids up to the first stop id))   (text level: from the first key on removed)
  want = with_confidence(body, target)
the revised completion is ids with decode(ids) == want, then EOS. Token-boundary policy: keep the sampled ids up to
the last one that lies wholly inside the body (the most leading ids whose text is a prefix of the body) and encode
the rest of `want` after them: the body characters of a token that straddles the body's end (Qwen's, Llama 3's and
OLMo's `>\\n`, `}\\n`, whose `>` / `}` must stay) and the confidence line. The splice is checked by decoding it:
  splice    decode == want: the sampled ids kept, the rest encoded (plainly, or after an anchor whose ids are then
            dropped, for tokenizers that put a dummy-prefix space before text encoded on its own: SentencePiece);
  reencode  else the body re-encoded whole (the reference's way) and spliced the same way, if that is exact;
  inexact   else the tokenizer cannot spell `want` (decode(encode(want)) != want, e.g. Qwen's NFC normalizer
            composing an "e" + U+0301 in the re-encoded part): the first splice, whose text then equals `want`
            after the tokenizer's own round trip; no character is dropped.
`sampled` counts the leading ids that are the student's own samples at their sampled positions (the kept ids;
for reencode, the re-encoded body's common prefix with the sample); every later id (the rest, the confidence
line, EOS) is tokenizer output. If the result exceeds `max_tokens`, the body is cut: fewer sampled ids are kept
(ending on a character boundary) and only the confidence line is encoded after them; the line is never cut.
Cost per completion: one decode per binary-search step (log2 of its length), one per checked splice.
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
  """ids: the revised completion, EOS last; loss_mask: 1 per id (all are trained); truncated_body: the body was cut
  to fit; sampled: how many leading ids are the student's own sampled ids, unchanged at their sampled positions
  (all later ids are tokenizer output); path: "splice", "reencode" or "inexact" (module docstring)."""
  ids: list[int]
  loss_mask: list[int]
  truncated_body: bool
  sampled: int
  path: str


def confidence_line_ids(tokenizer: Tokenizer, target: str) -> list[int]:
  """Ids of "\\nConfidence: {target}" as tokenized after a non-space character (no EOS)."""
  line = with_confidence("", target)
  anchor = tokenizer.encode(_ANCHOR)
  joined = tokenizer.encode(_ANCHOR + line)
  return joined[len(anchor):] if joined[:len(anchor)] == anchor else tokenizer.encode(line)


def value_token_count(tokenizer: Tokenizer, line_ids: list[int], target: str) -> int:
  """How many trailing ids of `line_ids` (a confidence line, or a completion ending with one) spell the value:
  the fewest whose text contains `target`."""
  return next(n for n in range(1, len(line_ids) + 1) if target in tokenizer.decode(line_ids[-n:]))


def _until_stop(ids: Sequence[int], stop_ids: set[int]) -> list[int]:
  ids = [int(i) for i in ids]
  return next((ids[:n] for n, i in enumerate(ids) if i in stop_ids), ids)


def _inside(tokenizer: Tokenizer, ids: list[int], body: str) -> int:
  """The most leading ids, of all of `ids`, whose decoded text is a prefix of `body`.

  Binary search on the test "decode(ids[:n]) without trailing U+FFFD is a prefix of body", which
  holds up to the body's end and fails after it (a token ending inside a UTF-8 character decodes to U+FFFD
  until the character completes, so the full test could fail inside the body), then a step back to
  the last n whose full decode is a prefix.
  """
  decoded = lambda n: tokenizer.decode(ids[:n])  # noqa: E731
  if body.startswith(decoded(len(ids))):
    return len(ids)
  low, high = 0, len(ids)  # the test holds at low and fails at high
  while high - low > 1:
    mid = (low + high) // 2
    if body.startswith(decoded(mid).rstrip("\ufffd")):
      low = mid
    else:
      high = mid
  while low > 0 and not body.startswith(decoded(low)):
    low -= 1
  return low


def _tail(tokenizer: Tokenizer, ids: list[int], k: int, head_text: str, rest: str, exact: bool) -> list[int] | None:
  """Ids spelling `rest` after ids[:k] (text `head_text`): the first candidate that decodes exactly (the first
  when not `exact`): `rest` encoded alone, or after an anchor whose ids are dropped (for SentencePiece's dummy
  prefix), or ids[k:] themselves (a sample whose own line is right, or the reference's encoding of it all)."""
  candidates = [tokenizer.encode(rest)]
  for anchor in (_ANCHOR, "\n"):
    anchor_ids, joined = tokenizer.encode(anchor), tokenizer.encode(anchor + rest)
    if joined[:len(anchor_ids)] == anchor_ids:
      candidates.append(joined[len(anchor_ids):])
  candidates.append(ids[k:])
  return next((tail for tail in candidates if tokenizer.decode(ids[:k] + tail) == head_text + rest),
              None if exact else candidates[0])


def _splice(tokenizer: Tokenizer, ids: list[int], body: str, line: str, budget: int, line_ids: list[int],
            exact: bool) -> tuple[list[int], int, bool] | None:
  """(ids[:k] + tail, k, body cut) with at most `budget` ids; None when no tail is exact (module docstring)."""
  k = _inside(tokenizer, ids, body)
  head_text = tokenizer.decode(ids[:k])
  tail = _tail(tokenizer, ids, k, head_text, body[len(head_text):] + line, exact)
  cut = False
  while tail is not None and k + len(tail) > budget:  # cut the body; only the confidence line follows it
    if k == 0:
      raise CaopdError(f"the completion budget of {budget + 1} tokens cannot hold the confidence line "
                       f"({len(tail)} tokens and EOS); raise the maximum completion length")
    k = _inside(tokenizer, ids[:max(0, min(k - 1, budget - len(line_ids)))], body)
    head_text = tokenizer.decode(ids[:k])
    tail, cut = _tail(tokenizer, ids[:k], k, head_text, line, exact), True  # ids[:k]: no own ids after a cut
  return None if tail is None else (ids[:k] + tail, k, cut)


def _common_prefix(a: list[int], b: list[int]) -> int:
  return next((n for n, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def rewrite_completion(tokenizer: Tokenizer, completion_ids: Sequence[int], target: str, max_tokens: int,
                       eos_id: int, line_ids: list[int] | None = None) -> RewrittenCompletion:
  """The CaOPD completion: decode(ids[:-1]) == strip_confidence(decoded sample) + "\\nConfidence: {target}", then
  `eos_id` (module docstring: token-boundary policy, paths, the exception for tokenizers that cannot spell it).

  Args:
    completion_ids: sampled ids; everything from the first of `tokenizer.stop_ids` or `eos_id` on is dropped.
    target: the two-decimal confidence string, e.g. "0.63".
    max_tokens: the completion budget; the result has at most this many ids.
    line_ids: confidence_line_ids(tokenizer, target), when the caller has it already.
  """
  ids = _until_stop(completion_ids, set(tokenizer.stop_ids) | {eos_id})
  line_ids = confidence_line_ids(tokenizer, target) if line_ids is None else line_ids
  if len(line_ids) + 1 > max_tokens:
    raise CaopdError(f"the completion budget max_tokens={max_tokens} cannot hold the confidence line "
                     f"({len(line_ids) + 1} tokens with EOS); raise the maximum completion length")
  body, line = strip_confidence(tokenizer.decode(ids)), with_confidence("", target)
  splice = lambda source, exact: _splice(tokenizer, source, body, line, max_tokens - 1, line_ids, exact)  # noqa: E731
  out, path = splice(ids, True), "splice"
  if out is None:
    out, path = splice(tokenizer.encode(body + line), True), "reencode"
  if out is None:
    out, path = splice(ids, False), "inexact"
  out_ids, kept, cut = out
  sampled = _common_prefix(out_ids[:kept], ids) if path == "reencode" else kept
  return RewrittenCompletion(out_ids + [eos_id], [1] * (len(out_ids) + 1), cut, sampled, path)


class RewrittenBatch(NamedTuple):
  """Training completions of P prompts x K rollouts, row p*K + k for rollout k of prompt p.

  ids int32 [P*K, max_tokens] (pad_id after each row's end); loss_mask int32 [P*K, max_tokens]
  (1 on every completion token, confidence line and EOS included); confidence_mask int32 [P*K, max_tokens]
  (1 on the ids that spell the rewritten confidence value, e.g. "0.62"; all 0 when disabled);
  sampled_mask bool [P*K, max_tokens]: True exactly on the student's own sampled ids, unchanged at their
  positions (RewrittenCompletion.sampled; False on encoded ids, the confidence line, EOS and padding; when
  disabled, True on every real position); lengths int32 [P*K];
  edited bool [P*K]: ids differ from the sampled ones (no sampling-time importance correction there);
  truncated_body bool [P*K]; stats: rollout_stats of the ORIGINAL rollouts, per prompt;
  paths: {path: rows} of the rewrite paths taken (empty when disabled); failures: {row: "Error: message"} of the
  rows whose rewrite raised (kept as sampled, cut to max_tokens; the caller leaves their prompt out).
  """
  ids: np.ndarray
  loss_mask: np.ndarray
  confidence_mask: np.ndarray
  sampled_mask: np.ndarray
  lengths: np.ndarray
  edited: np.ndarray
  truncated_body: np.ndarray
  stats: dict
  paths: dict
  failures: dict


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
  rows, truncated, values, kept, paths, failures = [], [], [], [], {}, {}
  for target, prompt_rows in zip(stats["target"], sampled):
    for row in prompt_rows:
      if enabled:
        try:
          out = rewrite_completion(tokenizer, row, target, max_tokens, eos_id, line_ids[target])
          value = value_token_count(tokenizer, out.ids[:-1], target)
        except Exception as error:  # noqa: BLE001  (one degenerate rollout must not stop the run: its prompt is
          failures[len(rows)] = f"{type(error).__name__}: {error}"   # left out by the caller, and counted)
          out, value = RewrittenCompletion(row[:max_tokens], [1] * len(row[:max_tokens]), False,
                                           len(row[:max_tokens]), "failed"), 0
        row, cut, count = out.ids, out.truncated_body, out.sampled
        values.append(value)
        paths[out.path] = paths.get(out.path, 0) + 1
      elif len(row) > max_tokens:
        raise CaopdError(f"a sampled completion has {len(row)} tokens, more than max_tokens={max_tokens}; "
                         "sample at most max_tokens new tokens")
      else:
        cut, count = False, len(row)
        values.append(0)
      rows.append(row)
      truncated.append(cut)
      kept.append(count)
  ids = np.full((len(rows), max_tokens), pad_id, dtype=np.int32)
  out_lengths = np.array([len(r) for r in rows], dtype=np.int32)
  for i, row in enumerate(rows):
    ids[i, :len(row)] = row
  columns = np.arange(max_tokens)
  loss_mask = (columns < out_lengths[:, None]).astype(np.int32)
  value_end = out_lengths[:, None] - 1  # the value ends just before EOS
  confidence_mask = ((columns < value_end) & (columns >= value_end - np.array(values)[:, None])).astype(np.int32)
  sampled_mask = columns < np.array(kept)[:, None]
  edited = np.array([row != original for row, original in zip(rows, (r for rs in sampled for r in rs))], dtype=bool)
  return RewrittenBatch(ids, loss_mask, confidence_mask, sampled_mask, out_lengths, edited,
                        np.array(truncated, dtype=bool), stats, paths, failures)
