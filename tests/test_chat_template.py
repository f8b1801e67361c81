"""Chat templates: our Jinja rendering against transformers' apply_chat_template, and template errors."""

import datetime

import pytest

from caopd_jax.errors import CaopdError
from caopd_jax.tokenizers.chat_template import render_chat_template

CONVERSATIONS = [
    [{"role": "user", "content": "What is 12 + 35?"}],
    [{"role": "system", "content": "You are a careful chemistry tutor."},
     {"role": "user", "content": "Which of these is a noble gas? A) N2 B) Ar"}],
    [{"role": "user", "content": "Write a haiku about gradient descent."},
     {"role": "assistant", "content": "Down the loss we roll,\nsteps shrinking toward the valley,\nminima at last."},
     {"role": "user", "content": "Now one about JAX, with the word jit."}],
    [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hi 👋 — ça va?"},
     {"role": "assistant", "content": "Oui, ça va !"}, {"role": "user", "content": "  spaces\tand\nnewlines  "}],
    [{"role": "user", "content": ""}],
]

# A template exercising what transformers' environment provides: tojson (no HTML escaping, indent),
# namespace, loop controls, raise_exception, {% generation %}, bos/eos tokens and extra variables.
RICH_TEMPLATE = """{{ bos_token }}{% set ns = namespace(n=0) %}
{%- if tools %}Tools: {{ tools | tojson(indent=2) }}
{% endif %}
{%- for m in messages %}
  {%- if m['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('bad role ' + m['role']) }}{% endif %}
  {%- if m['role'] == 'assistant' %}{% generation %}A: {{ m['content'] }}{{ eos_token }}{% endgeneration %}
  {%- else %}{{ m['role'] | upper }}: {{ m['content'] | trim }}
{% endif %}
  {%- set ns.n = ns.n + 1 %}
  {%- if ns.n > 3 %}{% break %}{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}A:{% if enable_thinking is defined and not enable_thinking %} <think></think>{% endif %}
{%- endif %}"""




@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_smollm2_template_matches_transformers(ours_smollm2, hf_smollm2, add_generation_prompt):
  for messages in CONVERSATIONS:
    expected = hf_smollm2.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert ours_smollm2.apply_chat_template(messages, add_generation_prompt=add_generation_prompt) == expected
    assert ours_smollm2.encode(expected) == hf_smollm2.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=add_generation_prompt, return_dict=False)


def test_smollm2_template_default_system_message(ours_smollm2):
  text = ours_smollm2.apply_chat_template([{"role": "user", "content": "hi"}])
  assert text == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                  "<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("extra", [{}, {"tools": [{"name": "add", "description": "<a & b>", "parameters": {"x": 1}}]},
                                   {"enable_thinking": False}])
def test_rich_template_matches_transformers(hf_smollm2, extra):
  for messages in CONVERSATIONS:
    for add_generation_prompt in (True, False):
      expected = hf_smollm2.apply_chat_template(messages, chat_template=RICH_TEMPLATE, tokenize=False,
                                                add_generation_prompt=add_generation_prompt, **extra)
      ours = render_chat_template(RICH_TEMPLATE, messages, bos_token=hf_smollm2.bos_token,
                                  eos_token=hf_smollm2.eos_token, add_generation_prompt=add_generation_prompt, **extra)
      assert ours == expected
  if "tools" in extra:
    assert '"description": "<a & b>"' in ours  # tojson does not escape HTML


def test_strftime_now():
  text = render_chat_template("{{ strftime_now('%Y') }}", [])
  assert text in {str(datetime.date.today().year), str(datetime.date.today().year + 1)}


def test_template_syntax_error():
  with pytest.raises(CaopdError, match=r"Jinja syntax error at line 2: .*fix the template") as e:
    render_chat_template("ok\n{% for m in messages %}{{ m }", [{"role": "user", "content": "x"}])
  assert "chat_template" in str(e.value)


def test_raise_exception_in_template():
  template = ("{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversations must start with user') }}"
              "{% endif %}")
  with pytest.raises(CaopdError, match="failed to render: Conversations must start with user"):
    render_chat_template(template, [{"role": "assistant", "content": "x"}])


def test_type_error_in_template():
  with pytest.raises(CaopdError, match="failed to render .*TypeError"):
    render_chat_template("{{ messages[0]['content'] + 1 }}", [{"role": "user", "content": "x"}])


def test_messages_must_be_dicts():
  with pytest.raises(CaopdError, match="list of dicts"):
    render_chat_template("{{ messages }}", ["hello"])


@pytest.mark.parametrize("template", ["{{ ''.__class__.__mro__ }}", "{% set x = [] %}{{ x.append(1) }}"])
def test_sandbox_blocks_unsafe_templates(template):
  with pytest.raises(CaopdError, match="sandbox refused an unsafe operation .*unsafe"):
    render_chat_template(template, [{"role": "user", "content": "x"}])


def test_messages_are_not_modified():
  messages = [{"role": "user", "content": "x"}]
  render_chat_template("{% for m in messages %}{{ m['content'] }}{% endfor %}", messages)
  assert messages == [{"role": "user", "content": "x"}]
