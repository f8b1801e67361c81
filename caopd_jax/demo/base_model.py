"""The demo's base model: a small character-level transformer taught the arithmetic task by SFT.

CaOPD starts from an instruction-following model that (a) answers in the asked format with a
`Confidence:` line and (b) as a teacher, makes use of privileged context in its prompt. A model
this small has neither, so the demo first teaches both with supervised fine-tuning on the
training problems, a fraction `teacher_fraction` of the sequences in the teacher format:

  student format  student prompt -> the worked answer, then "Confidence: c" with c drawn uniformly
                  from 0.00..1.00: the base model states confidences that carry no information
  teacher format  teacher prompt with a demonstration whose confidence is c (the demonstration's
                  own 1.00, or a random c with the CaOPD note) -> the demonstration, copied

So the base model's stated confidence is noise, and its teacher role repeats whatever confidence
the privileged context holds: the setting in which the paper finds that OPD teaches "1.00" and
CaOPD teaches P_acc. Nothing here looks at the OPD/CaOPD runs that follow.
"""

import random

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from caopd_jax import models, weights
from caopd_jax.calibration.confidence import format_confidence
from caopd_jax.calibration.rewrite import patch_demonstration
from caopd_jax.data.example import Example
from caopd_jax.distill.prompts import PromptConfig, render, student_messages, teacher_messages
from caopd_jax.tokenizers.base import Tokenizer
from caopd_jax.tokenizers.characters import character_tokenizer
from caopd_jax.train.optim import make_optimizer


def sft_pair(example: Example, rng: random.Random, tokenizer: Tokenizer, prompts: PromptConfig,
             teacher_fraction: float) -> tuple[str, str]:
  """(prompt text, completion text) of one SFT sequence; the format is drawn by `rng` (module docstring)."""
  confidence = format_confidence(rng.randint(0, 100) / 100)
  if rng.random() >= teacher_fraction:
    return render(tokenizer, student_messages(example, prompts)), patch_demonstration(example.demonstration,
                                                                                      confidence)
  target = None if rng.random() < 0.5 else confidence
  demonstration = patch_demonstration(example.demonstration, target or "1.00")
  return render(tokenizer, teacher_messages(example, "demo", target=target, config=prompts)), demonstration


def sft_batch(pairs: list[tuple[str, str]], tokenizer: Tokenizer, length: int) -> tuple[np.ndarray, ...]:
  """(tokens int32 [B, length], attention mask bool, loss mask float32 on completion ids + EOS), right-padded."""
  tokens = np.full((len(pairs), length), tokenizer.pad_id, np.int32)
  mask, loss = np.zeros(tokens.shape, bool), np.zeros(tokens.shape, np.float32)
  for i, (prompt, completion) in enumerate(pairs):
    p, c = tokenizer.encode(prompt), tokenizer.encode(completion) + [tokenizer.eos_id]
    row = (p + c)[:length]
    tokens[i, :len(row)], mask[i, :len(row)] = row, True
    loss[i, len(p):len(row)] = 1.0
  return tokens, mask, loss


def model_config(tokenizer: Tokenizer, layers: int, hidden: int, heads: int) -> models.ModelConfig:
  """A Llama-style config for the character vocabulary (tied embeddings, 2 KV heads)."""
  return models.ModelConfig(family="llama", vocab_size=tokenizer.vocab_size, hidden_size=hidden,
                            intermediate_size=hidden * 8 // 3, num_layers=layers, num_heads=heads,
                            num_kv_heads=max(1, heads // 2), head_dim=hidden // heads, tie_embeddings=True,
                            max_position_embeddings=1024, eos_token_ids=(tokenizer.eos_id,))


def make_sft_step(config: models.ModelConfig, optimizer: optax.GradientTransformation):
  """Jitted (params, opt_state, tokens, mask, loss_mask) -> (params, opt_state, mean token cross-entropy)."""
  def loss_fn(params, tokens, mask, loss_mask):
    logits = models.logits(config, params, tokens, mask)[:, :-1]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
    weights = loss_mask[:, 1:]
    return jnp.sum(ce * weights) / jnp.maximum(jnp.sum(weights), 1.0)

  @jax.jit
  def step(params, opt_state, tokens, mask, loss_mask):
    loss, grads = jax.value_and_grad(loss_fn)(params, tokens, mask, loss_mask)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
  return step


def train_base_model(path: str, examples: list[Example], prompts: PromptConfig, *, steps: int, batch_size: int,
                     lr: float, layers: int, hidden: int, heads: int, teacher_fraction: float, seed: int,
                     progress: bool = True) -> float:
  """Trains the base model on `examples` and saves it (with its tokenizer) as an Orbax checkpoint at `path`.

  Returns the mean cross-entropy of the last 10% of steps (nats per completion token).
  """
  tokenizer = character_tokenizer()
  config = model_config(tokenizer, layers, hidden, heads)
  params = models.init(config, jax.random.key(seed))
  optimizer = make_optimizer(lr, steps, warmup_fraction=0.05, weight_decay=0.01)
  opt_state, step = optimizer.init(params), make_sft_step(config, optimizer)
  rng = random.Random(seed)
  pairs = [sft_pair(ex, rng, tokenizer, prompts, teacher_fraction) for ex in examples]
  length = max(len(tokenizer.encode(p + c)) + 1 for p, c in pairs)
  order, losses = np.random.default_rng(seed), []
  for _ in tqdm(range(steps), desc="base model (SFT)", unit="step", disable=not progress, leave=False):
    chosen = order.choice(len(pairs), batch_size, replace=False)
    batch = sft_batch([pairs[i] for i in chosen], tokenizer, length)
    params, opt_state, loss = step(params, opt_state, *map(jnp.asarray, batch))
    losses.append(float(loss))
  weights.save(path, config, params, tokenizer=tokenizer, overwrite=True)
  return float(np.mean(losses[-max(1, steps // 10):]))
