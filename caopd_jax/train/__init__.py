"""Training: `python -m caopd_jax.train --config=configs/NAME.py`.

  config      every field of a run (ml-collections), documented and validated
  loss        divergence + lambda * calibration for one micro-batch, student and teacher
  step        the jitted step: gradient accumulation, optax update, EMA teacher
  optim       AdamW with warmup + cosine and clipping; the EMA update
  checkpoint  the run folder and its Orbax checkpoints (exact resume)
  logger      metrics.jsonl, tensorboardX, the progress bar
  signals     SIGTERM / SIGINT -> save and stop
  loop        rollouts -> verify / rewrite -> steps, around all of the above
"""
