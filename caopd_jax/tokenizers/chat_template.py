"""Rendering Hugging Face chat templates (Jinja2) into prompt text.

The environment matches the one `transformers` uses for `apply_chat_template`,
so a template renders to the same text here as there: a sandboxed, immutable
Jinja2 environment with `trim_blocks` and `lstrip_blocks`, the `loopcontrols`
extension, a `tojson` filter that does not escape HTML, and the
`raise_exception(message)` and `strftime_now(format)` globals. The template sees
`messages`, `add_generation_prompt`, `tools`, `documents`, the special token
strings (`bos_token`, `eos_token`, ...) and any extra keyword arguments.
"""

import datetime
import functools
import json

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from caopd_jax.errors import CaopdError


class _GenerationTag(jinja2.ext.Extension):
  """`{% generation %}...{% endgeneration %}` (marks assistant text for training masks): renders its body."""

  tags = {"generation"}

  def parse(self, parser):
    lineno = next(parser.stream).lineno
    body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
    return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

  def _render_body(self, caller):
    return caller()


def _raise_exception(message):
  raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
  return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt):
  return datetime.datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=16)
def compile_template(template: str) -> jinja2.Template:
  """The compiled template; a syntax error becomes a CaopdError naming the line."""
  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                      extensions=[jinja2.ext.loopcontrols, _GenerationTag])
  env.filters["tojson"] = _tojson
  env.globals["raise_exception"] = _raise_exception
  env.globals["strftime_now"] = _strftime_now
  try:
    return env.from_string(template)
  except jinja2.TemplateSyntaxError as e:
    raise CaopdError(f"the chat template has a Jinja syntax error at line {e.lineno}: {e.message}; "
                     "fix the template (tokenizer_config.json 'chat_template' or chat_template.jinja)") from e


def render_chat_template(template: str, messages: list[dict], bos_token: str | None = None,
                         eos_token: str | None = None, add_generation_prompt: bool = True, **extra) -> str:
  """The prompt text for `messages` (dicts with at least 'role' and 'content').

  `extra` is passed to the template as variables (e.g. `tools=[...]`,
  `enable_thinking=False`, `unk_token`, `pad_token`) and overrides the defaults.
  """
  if not isinstance(messages, (list, tuple)) or not all(isinstance(m, dict) for m in messages):
    raise CaopdError(f"chat messages must be a list of dicts like {{'role': 'user', 'content': '...'}}, "
                     f"got {messages!r:.200}")
  compiled = compile_template(template)
  variables = {"messages": [dict(m) for m in messages], "add_generation_prompt": add_generation_prompt,
               "tools": None, "documents": None, "bos_token": bos_token, "eos_token": eos_token, **extra}
  try:
    return compiled.render(**variables)
  except jinja2.exceptions.SecurityError as e:
    raise CaopdError(f"the chat template failed to render: the sandbox refused an unsafe operation "
                     f"({str(e).rstrip('.')}); use a template that does not reach into Python objects") from e
  except jinja2.TemplateError as e:
    raise CaopdError(f"the chat template failed to render: {str(e).rstrip('.')}; check the messages "
                     "(roles, order, content) against what this model's template accepts") from e
  except (TypeError, ValueError, KeyError, AttributeError) as e:
    raise CaopdError(f"the chat template failed to render ({type(e).__name__}: {str(e).rstrip('.')}); check the "
                     "messages (roles, order, content types) against what this model's template accepts") from e
