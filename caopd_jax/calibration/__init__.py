"""Calibration on the host: verifiers, confidence parsing/formatting, empirical confidence, CaOPD rewrites."""

from caopd_jax.calibration.confidence import (CONFIDENCE_KEY, confidence_start, format_confidence, format_fraction,
                                              parse_confidence)
from caopd_jax.calibration.empirical import empirical_confidence, rollout_stats
from caopd_jax.calibration.rewrite import (DEFAULT_NOTE, RewrittenBatch, RewrittenCompletion, confidence_line_ids,
                                           confidence_note, patch_demonstration, rewrite_batch, rewrite_completion,
                                           strip_confidence, with_confidence)
from caopd_jax.calibration.verifiers import (VERIFIERS, first_json_object, get_verifier, parse_integer_answer,
                                             parse_mcq_answer, parse_tool_call, verify_arithmetic, verify_mcq,
                                             verify_tooluse)

__all__ = ["CONFIDENCE_KEY", "DEFAULT_NOTE", "RewrittenBatch", "RewrittenCompletion", "VERIFIERS",
           "confidence_line_ids", "confidence_note", "confidence_start", "empirical_confidence",
           "first_json_object", "format_confidence", "format_fraction", "get_verifier", "parse_confidence",
           "parse_integer_answer", "parse_mcq_answer", "parse_tool_call", "patch_demonstration", "rewrite_batch",
           "rewrite_completion", "rollout_stats", "strip_confidence", "verify_arithmetic", "verify_mcq",
           "verify_tooluse", "with_confidence"]
