"""`python -m caopd_jax.eval` and `python -m caopd_jax.eval.compare` end to end, and their errors.

A random character-level model on the arithmetic task and on a small multiple-choice JSONL set (it never
states a confidence: format adherence 0, metrics still defined), and the real SmolLM2-135M-Instruct GGUF on
the paper's science eval set. The inference.json we write is in the CaOPD reference's record format: `--score`
re-scores it to the same metrics, and (with $CAOPD_REFERENCE_REPO, see test_eval_protocols.py) the
reference's own eval script reads it.
"""

import json
import os
import subprocess
import sys

import jax
import matplotlib.image
import pytest

from caopd_jax import models, weights
from caopd_jax.data.sources import load_examples
from caopd_jax.distill.prompts import PromptConfig
from caopd_jax.errors import CaopdError, InputNotFoundError
from caopd_jax.eval.__main__ import _decoding, _parser
from caopd_jax.eval.__main__ import main as eval_main
from caopd_jax.eval.compare import main as compare_main
from caopd_jax.eval.core import longest_prompt
from caopd_jax.eval.protocols import PROTOCOLS
from caopd_jax.tokenizers.characters import character_tokenizer
from test_eval_protocols import REFERENCE_ENV, assert_reference_values_equal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = {"accuracy", "answer_parse_rate", "brier_score", "ece", "spr", "overconfidence_gap", "mean_confidence",
        "confidence_format_adherence", "n_samples", "n_bins", "bin_stats", "valid_confidence_only", "auroc",
        "reliability", "protocol", "confidence_notes", "decoding"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
  path = tmp_path_factory.mktemp("eval") / "tiny"
  tokenizer = character_tokenizer()
  config = models.ModelConfig(family="llama", vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
                              num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16, tie_embeddings=True,
                              max_position_embeddings=2048, eos_token_ids=(tokenizer.eos_id,))
  weights.save(str(path), config, models.init(config, jax.random.key(0)), tokenizer=tokenizer)
  return str(path)


def _read(folder):
  return json.loads((folder / "inference.json").read_text()), json.loads((folder / "metrics.json").read_text())


def test_arithmetic_with_samples_writes_the_three_files(tiny_model, tmp_path, capsys):
  out = tmp_path / "a"
  assert eval_main(["--model", tiny_model, "--dataset", "arithmetic", "--output", str(out), "--num_samples", "3",
                    "--limit", "5", "--max_new_tokens", "12", "--no_progress", "--protocol", "strict"]) == 0
  records, summary = _read(out)
  assert len(records) == 15 and [r["sample"] for r in records[:3]] == [0, 1, 2]
  assert {"response", "golden_answer", "parsed_answer", "confidence", "correct", "id", "prompt"} <= set(records[0])
  assert all(isinstance(r["golden_answer"], int) for r in records)
  assert KEYS <= set(summary) and summary["n_samples"] == 15
  assert summary["protocol"] == "strict"  # strict samples at temperature 1.0 by default
  assert summary["decoding"] == {"temperature": 1.0, "max_new_tokens": 12, "num_samples": 3}
  assert summary["confidence_format_adherence"] == 0.0 and summary["mean_confidence"] == 0.0
  assert summary["question_level"]["n_questions"] == 5
  assert matplotlib.image.imread(str(out / "reliability.png")).shape[0] > 100
  assert "| tiny |" in capsys.readouterr().out
  # --score on the folder's own inference.json, under the same protocol: the same metrics (K = 3 is recognised)
  assert eval_main(["--score", str(out / "inference.json"), "--dataset", "arithmetic", "--protocol", "strict",
                    "--output", str(tmp_path / "rescored")]) == 0
  rescored_records, rescored = _read(tmp_path / "rescored")
  assert rescored_records == records and rescored["scored_file"] == str(out / "inference.json")
  assert {k: v for k, v in rescored.items() if k not in ("decoding", "scored_file")} == {
      k: v for k, v in summary.items() if k != "decoding"}
  assert "| a | " in capsys.readouterr().out  # a file named inference.json is named after its folder


def test_science_format_inference_file(tiny_model, tmp_path):
  """An mcq set: golden_answer is the reference's [{"Answer": letter}]; the default protocol is paper, greedy."""
  data = tmp_path / "mcq.jsonl"
  data.write_text("".join(json.dumps({"question": f"Pick {letter}.", "answer": letter, "verifier": "mcq"}) + "\n"
                          for letter in "BDA"))
  out = tmp_path / "m"
  assert eval_main(["--model", tiny_model, "--dataset", str(data), "--output", str(out), "--max_new_tokens", "6",
                    "--no_progress"]) == 0
  records, summary = _read(out)
  assert [r["golden_answer"] for r in records] == [[{"Answer": "B"}], [{"Answer": "D"}], [{"Answer": "A"}]]
  assert summary["protocol"] == "paper" and summary["decoding"] == {"temperature": 0.0, "max_new_tokens": 6,
                                                                     "num_samples": 1}
  assert eval_main(["--score", str(out / "inference.json"), "--dataset", "science", "--output",
                    str(tmp_path / "rescored")]) == 0
  assert _read(tmp_path / "rescored")[1]["ece"] == summary["ece"]
  if os.environ.get(REFERENCE_ENV):  # the reference's script reads our file and agrees
    reference = tmp_path / "reference.json"
    script = os.path.join(os.environ[REFERENCE_ENV], "eval", "run_eval_chemistry.py")
    subprocess.run([sys.executable, script, "--input", str(out / "inference.json"), "--output", str(reference)],
                   check=True, capture_output=True)
    assert_reference_values_equal(json.loads(reference.read_text()), summary)


@pytest.mark.parametrize("argv, expected", [
    (["--protocol", "paper"], (0.0, 2048)), (["--protocol", "paper", "--dataset", "tooluse"], (0.0, 1024)),
    (["--protocol", "paper", "--dataset", "arithmetic"], (0.0, 1024)), (["--protocol", "strict"], (1.0, 1024)),
    (["--temperature", "0.7", "--num_samples", "4"], (0.7, 2048)), (["--protocol", "strict", "--greedy"], (0.0, 1024)),
    (["--max_new_tokens", "300"], (0.0, 300)),
])
def test_decoding_defaults_per_protocol(argv, expected):
  """paper: greedy, 2048 new tokens on science and 1024 elsewhere; strict: temperature 1.0, 1024; flags override."""
  args = _parser().parse_args(["--model", "m", "--dataset", "science", "--output", "o", *argv])
  assert _decoding(args, PROTOCOLS[args.protocol], args.dataset, 4096) == expected


def test_the_default_new_tokens_fit_the_models_context(tmp_path, capsys):
  """A model with a 1,000-token context (the demo's has 1,024, the paper protocol's default is 1,024 new tokens):
  as documented, eval runs without --max_new_tokens and takes what the context leaves after the longest prompt."""
  tokenizer = character_tokenizer()
  config = models.ModelConfig(family="llama", vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64,
                              num_layers=1, num_heads=2, num_kv_heads=1, head_dim=16, tie_embeddings=True,
                              max_position_embeddings=1000, eos_token_ids=(tokenizer.eos_id,))
  weights.save(str(tmp_path / "short"), config, models.init(config, jax.random.key(0)), tokenizer=tokenizer)
  out = tmp_path / "out"
  assert eval_main(["--model", str(tmp_path / "short"), "--dataset", "arithmetic", "--output", str(out), "--greedy",
                    "--limit", "2", "--no_progress"]) == 0
  new_tokens = _read(out)[1]["decoding"]["max_new_tokens"]
  examples = load_examples("arithmetic", "eval", num_examples=500, seed=0, difficulty=[1, 2])[:2]
  assert new_tokens == 1000 - longest_prompt(tokenizer, examples, PromptConfig()) and 0 < new_tokens < 1000
  assert f"max_new_tokens: {new_tokens}, what the model's context leaves" in capsys.readouterr().out


def test_prompts_from_a_training_config_file(tiny_model, tmp_path):
  """--prompts takes a config's wording: smollm2_arith.py's few-shot turns appear in every prompt."""
  out = tmp_path / "p"
  assert eval_main(["--model", tiny_model, "--dataset", "arithmetic", "--output", str(out), "--greedy", "--limit", "2",
                    "--max_new_tokens", "4", "--no_progress", "--prompts",
                    os.path.join(ROOT, "configs", "smollm2_arith.py")]) == 0
  records, _ = _read(out)
  assert all("What is 3 + 4?" in r["prompt"] and "Confidence: 0.90" in r["prompt"] for r in records)
  assert all(r["prompt"].index("Confidence: 0.70") < r["prompt"].rindex("What is") for r in records)


def test_compare_prints_one_row_per_folder(tiny_model, tmp_path, capsys):
  for name in ("x", "y"):
    eval_main(["--model", tiny_model, "--dataset", "arithmetic", "--output", str(tmp_path / name), "--greedy",
               "--limit", "3", "--max_new_tokens", "8", "--no_progress"])
  capsys.readouterr()
  assert compare_main([str(tmp_path / "x"), str(tmp_path / "y"), "--names", "base,CaOPD",
                       "--output", str(tmp_path / "c.png")]) == 0
  rows = [line.split("|")[1].strip() for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
  assert rows == ["model", "base", "CaOPD"] and (tmp_path / "c.png").exists()
  with pytest.raises(CaopdError, match="2 distinct names"):
    compare_main([str(tmp_path / "x"), str(tmp_path / "y"), "--names", "a"])
  with pytest.raises(InputNotFoundError, match="no metrics.json"):
    compare_main([str(tmp_path)])


@pytest.mark.parametrize("change, message", [
    (["--dataset", "sciense"], "unknown dataset 'sciense'"),
    (["--model", "{tmp}/empty"], "a training run with no complete checkpoint yet"),
    (["--model", "{tmp}/SmolLM2.gguf"], "does not exist"),
    (["--num_samples", "2", "--greedy"], r"greedy decoding \(--greedy\) gives one completion"),
    (["--num_samples", "2"], r"greedy decoding \(the paper protocol's default\) gives one completion per example; "
                             "give --temperature T"),
    (["--greedy", "--temperature", "0.5"], "give --greedy or --temperature, not both"),
])
def test_bad_input(tiny_model, tmp_path, change, message):
  (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
  (tmp_path / "empty" / "model_config.json").write_text(open(f"{tiny_model}/model_config.json").read())
  args = {"--model": tiny_model, "--dataset": "arithmetic", "--output": str(tmp_path / "out")}
  extra = []
  for flag, value in zip(change[::2], change[1::2] if len(change) > 1 else []):
    if flag in args:
      args[flag] = value.format(tmp=tmp_path)
  if change[0] not in args:
    extra = change
  argv = [part for pair in args.items() for part in pair] + extra
  with pytest.raises(CaopdError, match=message):
    eval_main(argv)
  assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_smollm2_on_the_science_eval_set(smollm2_gguf, paper_data, tmp_path, monkeypatch):
  monkeypatch.setenv("CAOPD_DATA_DIR", paper_data)
  out = tmp_path / "science"
  assert eval_main(["--model", smollm2_gguf, "--dataset", "science", "--output", str(out), "--greedy",
                    "--limit", "4", "--max_new_tokens", "48", "--no_progress"]) == 0
  records, summary = _read(out)
  assert len(records) == 4 and all(r["golden_answer"][0]["Answer"] in "ABCD" for r in records)
  assert records[0]["prompt"].startswith("<|im_start|>system") and "Confidence" in records[0]["prompt"]
  assert KEYS <= set(summary) and 0.0 <= summary["accuracy"] <= 1.0


def test_training_curves_cli(tmp_path, capsys):
  """python -m caopd_jax.eval.curves on two hand-written run logs: the PNG, and the gaps of the first and last tenth."""
  from caopd_jax.eval.curves import main as curves_main
  for name, conf in (("opd", [0.5] * 10 + [0.9] * 10), ("caopd", [0.5] * 20)):
    run = tmp_path / name
    run.mkdir()
    rows = [{"step": i + 1, "rollout/accuracy": 0.5, "rollout/mean_confidence": c} for i, c in enumerate(conf)]
    rows[3]["rollout/mean_confidence"] = None          # a step where no rollout stated a confidence
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  out = tmp_path / "curves.png"
  assert curves_main([str(tmp_path / "opd"), str(tmp_path / "caopd"), "--names", "OPD,CaOPD", "--output",
                      str(out)]) == 0
  printed = capsys.readouterr().out
  assert "| OPD | 20 | +0.000 | +0.400 |" in printed and "| CaOPD | 20 | +0.000 | +0.000 |" in printed
  assert matplotlib.image.imread(str(out)).shape[1] > 500
  with pytest.raises(CaopdError, match="no logged steps"):
    curves_main([str(tmp_path)])
  with pytest.raises(CaopdError, match="--smooth must be at least 1"):
    curves_main([str(tmp_path / "opd"), "--smooth", "0", "--output", str(out)])
