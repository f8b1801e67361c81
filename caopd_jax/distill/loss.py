"""The distillation loss of one (micro-)batch: divergence + lambda * calibration, for student and teacher.

Both models run the same graphdef on their own sequences: the student on its prompt + completion,
the teacher (its own params, under stop_gradient) on the privileged teacher prompt + the same
completion. Completion token t of a row is predicted at column P - 1 + t of that side (P = its
prompt width), so both sides are sliced to the C completion positions before the LM head. Per
completion token, the configured token statistics (kernels/registry.py) give log-probs,
entropy and KLs; then

  divergence   sampled_token: the sampled-token estimator of grad KL(p_s || p_t) (the default): REINFORCE
               with importance weights p_s / q on the tokens the student sampled, plus the exact term of
               the vocabulary the sampler could not draw (top-k / top-p), and the exact KL on the
               tokens it did not sample (the CaOPD confidence line); losses/divergences.py;
               forward_kl / reverse_kl: full-vocabulary KL(p_t || p_s) / KL(p_s || p_t);
               jsd: the generalised JSD with `alpha` (materialises [rows, C, V] logits of both models)
               per-sequence mean over loss tokens from `skip_first` on, then mean over sequences;
  calibration  -log p_s of the rewritten confidence-value tokens (`confidence_mask`), same means;
  loss         divergence + calibration_weight * calibration (the term is not traced at weight 0,
               which is the paper's CaOPD exactly).

Gradient accumulation must give the full batch's loss: `micro_batch_loss` divides each
sequence's mean by the number of present sequences of the FULL batch (`normalizers`), so the
micro-batch losses and gradients simply add up.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from caopd_jax.distill.settings import LossSettings
from caopd_jax.kernels import registry
from caopd_jax.losses import divergences
from caopd_jax.models import transformer
from caopd_jax.models.config import ModelConfig


class LossBatch(NamedTuple):
  """Device arrays of B rows. student_tokens / student_mask [B, Ps + C]; teacher_tokens / teacher_mask
  [B, Pt + C]; completion int32 [B, C] (the last C columns of both sides); loss_mask, confidence_mask float32 [B, C];
  sampled bool [B, C]: the token is the student's own sample; sample_logprob float32 [B, C]: its log-prob under the
  sampler's distribution; sample_threshold float32 [B, C]: the sampler's support as a raw logit (-inf: all of it).
  Each row's real tokens are one run (left-padded prompt, right-padded completion): the models use that
  (`hidden_states(..., contiguous=True)`)."""
  student_tokens: jax.Array
  student_mask: jax.Array
  teacher_tokens: jax.Array
  teacher_mask: jax.Array
  completion: jax.Array
  loss_mask: jax.Array
  confidence_mask: jax.Array
  sampled: jax.Array
  sample_logprob: jax.Array
  sample_threshold: jax.Array


# The dtype of each LossBatch field as the step receives it (the trainer, the compile check and the benchmarks).
BATCH_DTYPES = LossBatch(student_tokens=jnp.int32, student_mask=jnp.bool_, teacher_tokens=jnp.int32,
                         teacher_mask=jnp.bool_, completion=jnp.int32, loss_mask=jnp.float32,
                         confidence_mask=jnp.float32, sampled=jnp.bool_, sample_logprob=jnp.float32,
                         sample_threshold=jnp.float32)


def normalizers(batch: LossBatch, settings: LossSettings) -> jax.Array:
  """float32 [2]: how many sequences have a divergence token / a confidence-value token (at least 1 each)."""
  _, div_present = divergences.sequence_means(batch.loss_mask, batch.loss_mask, settings.skip_first)
  _, cal_present = divergences.sequence_means(batch.confidence_mask, batch.confidence_mask)
  counts = jnp.stack([jnp.sum(div_present), jnp.sum(cal_present)]).astype(jnp.float32)
  return jnp.maximum(counts, 1.0)


def _completion_hidden(config: ModelConfig, params, tokens, mask, completion_length: int, *, unroll: bool = False,
                       remat: str = "none"):
  """Hidden states [B, C, D] at the columns that predict the C completion tokens."""
  prompt_width = tokens.shape[1] - completion_length
  h = transformer.hidden_states(config, params, tokens, mask, contiguous=True, remat=remat,  # prompt + completion
                                unroll=unroll)
  return h[:, prompt_width - 1:prompt_width - 1 + completion_length]


def _jsd(h_s, w_s, h_t, w_t, settings: LossSettings):
  logp = lambda h, w: jax.nn.log_softmax(  # noqa: E731
      jnp.einsum("bcd,dv->bcv", h, w, preferred_element_type=jnp.float32) / settings.temperature, axis=-1)
  return divergences.generalized_jsd(logp(h_s, w_s), logp(h_t, w_t), settings.alpha)


def micro_batch_loss(student, teacher, batch: LossBatch, norm: jax.Array, config: ModelConfig,
                     settings: LossSettings) -> tuple[jax.Array, dict]:
  """(this micro-batch's share of the full-batch loss, sums for metrics); differentiable in `student`.

  norm: `normalizers` of the full batch. The metric sums (over present sequences: divergence,
  calibration; over loss tokens: entropy, sampled-token KL estimate, token count) are divided by
  their totals by the caller.
  """
  c = batch.completion.shape[1]
  h_s = _completion_hidden(config, student, batch.student_tokens, batch.student_mask, c,
                           unroll=settings.unroll_layers, remat=settings.remat)
  h_t = jax.lax.stop_gradient(_completion_hidden(config, teacher, batch.teacher_tokens, batch.teacher_mask, c,
                                                 unroll=settings.unroll_layers))
  w_s = transformer.unembedding(config, student)
  w_t = jax.lax.stop_gradient(transformer.unembedding(config, teacher))
  d = h_s.shape[-1]
  sampled_token = settings.divergence == "sampled_token"
  tail = {"threshold": batch.sample_threshold.reshape(-1)} if sampled_token and settings.sampler_tail else {}
  stats_fn = registry.token_stats_function(settings.token_stats, vocab_chunk=settings.vocab_chunk,
                                           needs_threshold=bool(tail), platform=settings.platform,
                                           vmem_limit=settings.vmem_limit)
  stats = stats_fn(h_s.reshape(-1, d), w_s, batch.completion.reshape(-1), h_t.reshape(-1, d), w_t,
                   temperature=settings.temperature, with_kl=settings.divergence != "jsd", **tail)
  stats = jax.tree.map(lambda x: x.reshape(batch.completion.shape), stats)
  weights = jnp.ones_like(stats.logprob)
  if sampled_token:
    per_token, weights = divergences.sampled_token_reverse_kl(
        stats.logprob, stats.teacher_logprob, stats.kl_st, batch.sampled, batch.sample_logprob,
        is_cap=settings.is_cap, tail_kl=stats.tail_kl, tail_mass=stats.tail_mass)
  elif settings.divergence == "forward_kl":
    per_token = stats.kl_ts
  elif settings.divergence == "reverse_kl":
    per_token = stats.kl_st
  else:
    per_token = _jsd(h_s, w_s, h_t, w_t, settings)
  div_means, _ = divergences.sequence_means(per_token, batch.loss_mask, settings.skip_first)
  loss = jnp.sum(div_means) / norm[0]
  cal_means, _ = divergences.sequence_means(-stats.logprob, batch.confidence_mask)
  if settings.calibration_weight:
    loss = loss + settings.calibration_weight * jnp.sum(cal_means) / norm[1]
  tokens = batch.loss_mask.astype(bool)
  token_sum = lambda x: jnp.sum(jnp.where(tokens, jax.lax.stop_gradient(x), 0.0))  # noqa: E731
  sums = {"divergence": jax.lax.stop_gradient(jnp.sum(div_means)) / norm[0],
          "calibration_ce": jax.lax.stop_gradient(jnp.sum(cal_means)) / norm[1],
          "entropy": token_sum(stats.entropy),
          "kl_estimate": token_sum(stats.logprob - stats.teacher_logprob),
          "is_weight": jnp.sum(jnp.where(tokens & batch.sampled, weights, 0.0)),
          "sampled_tokens": jnp.sum(tokens & batch.sampled).astype(jnp.float32),
          "loss_tokens": jnp.sum(tokens).astype(jnp.float32)}
  return loss, sums
