"""A character-level tokenizer: one id per printable ASCII character, for small models trained here.

The CPU demo trains its own base model, for which a 49k-token BPE vocabulary would make the
output layer most of the compute. This vocabulary has the ChatML special tokens, newline, tab
and the 95 printable ASCII characters; any other character encodes as <unk>. It is an ordinary
`HFTokenizer` (a `tokenizers` BPE model with no merges), so `save()` writes a tokenizer.json
that `load_tokenizer` and transformers read back to the same ids.
"""

import string

import tokenizers
from tokenizers import decoders, models

from caopd_jax.tokenizers.base import HFTokenizer

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>")
CHARACTERS = "\n\t" + "".join(c for c in string.printable if c.isprintable())
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def character_tokenizer() -> HFTokenizer:
  """The character vocabulary (ids 0-3 special, then CHARACTERS) with a ChatML chat template; EOS = <|im_end|>."""
  vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + tuple(CHARACTERS))}
  backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
  backend.add_special_tokens(list(SPECIAL_TOKENS))
  backend.decoder = decoders.Fuse()
  return HFTokenizer(backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<unk>",
                     chat_template=CHATML_TEMPLATE)
