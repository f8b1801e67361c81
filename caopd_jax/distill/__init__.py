"""CaOPD, the algorithm, one iteration in file order:

  settings.py      what the algorithm is set to do (DistillSettings, LossSettings), from a training config
  prompts.py       the student prompt, and the teacher's with its privileged context (a demonstration or a
                   verified rollout) and, under CaOPD, the patched confidence and the note
  prompt_fit.py    the prompt budgets: overlong prompts truncated or dropped, the data report
  (rollout)        K samples per prompt from the student: caopd_jax.rollout.sample
  batch.py         verify each rollout, P_acc = share correct, rewrite the completions' Confidence: line
                   (calibration/rewrite.py), build the teacher prompts, pad: one DistillBatch
  global_batch.py  the same batch when several processes each build their share of it
  padding.py       left padding and the prompt-width rungs of the step
  loss.py          per completion token: the divergence (the sampled-token estimator, KLs or JSD) and the
                   calibration term, for student and EMA teacher, from the token statistics
  step.py          the jitted step: gradient accumulation, AdamW, the EMA teacher update
The text-level rules it uses (verifiers, confidence parsing and formatting, P_acc, rewrites) are
caopd_jax.calibration; the trainer around it is caopd_jax.train.
"""
