"""Distillation losses: per-token softmax statistics (streamed over the vocabulary) and divergences."""

from caopd_jax.losses.divergences import (forward_kl, generalized_jsd, masked_mean, reverse_kl,
                                          sampled_token_reverse_kl, streaming_forward_kl,
                                          streaming_reverse_kl)
from caopd_jax.losses.token_stats import MASKED_LOGIT, TokenStats, prepare_inputs, token_stats, token_stats_naive

__all__ = ["MASKED_LOGIT", "TokenStats", "prepare_inputs", "forward_kl", "generalized_jsd", "masked_mean", "reverse_kl",
           "sampled_token_reverse_kl", "streaming_forward_kl", "streaming_reverse_kl",
           "token_stats", "token_stats_naive"]
