"""bench/ helpers: trace_summary.py on a hand-written Chrome trace (only GPU stream kernels count, sorted into
kinds), scaling_plot.py's weak-scaling efficiencies on hand-computed figures, and iteration.py's split of the
trainer's own timings."""

import gzip
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
from scaling_plot import plot  # noqa: E402
from trace_summary import kind_of, summarize, table  # noqa: E402


def _meta(pid, name, tid=None):
  if tid is None:
    return {"ph": "M", "pid": pid, "name": "process_name", "args": {"name": name}}
  return {"ph": "M", "pid": pid, "tid": tid, "name": "thread_name", "args": {"name": name}}


def _kernel(pid, tid, name, dur):
  return {"ph": "X", "pid": pid, "tid": tid, "ts": 0.0, "dur": dur, "name": name}


def test_summary_counts_gpu_stream_kernels_once_per_step_by_kind(tmp_path):
  events = [_meta(1, "/host:CPU"), _meta(1, "python", 10), _meta(2, "/device:GPU:0"), _meta(2, "Stream #13(Compute)", 7),
            _meta(2, "XLA Ops", 8), _meta(3, "/device:GPU:1"), _meta(3, "Stream #20(Compute)", 9),
            _kernel(1, 10, "PjitFunction(step)", 99_000.0),          # host: ignored
            _kernel(2, 8, "fusion.12", 5_000.0),                       # derived XLA Ops line: ignored
            _kernel(2, 7, "nvjet_tst_128x256_64x4_1x2_h_bz_coopB_TNN", 3_000.0),
            _kernel(2, 7, "nvjet_tst_128x256_64x4_1x2_h_bz_coopB_TNN", 1_000.0),
            _kernel(2, 7, "cudnn_generated_fort_native_sdpa_sm90_knob_7", 2_000.0),
            _kernel(2, 7, "forward_kernel", 1_500.0),
            _kernel(3, 9, "ncclDevKernel_AllGather_RING_LL", 400.0),
            _kernel(3, 9, "loop_add_fusion", 100.0)]
  folder = tmp_path / "plugins" / "profile" / "run"
  folder.mkdir(parents=True)
  with gzip.open(folder / "host.trace.json.gz", "wt") as f:
    json.dump({"traceEvents": events}, f)
  summary = summarize(str(tmp_path), steps=2)
  assert summary["devices"] == 2 and summary["total_ms"] == 4.0  # (3000 + 1000 + 2000 + 1500 + 400 + 100) µs / 2
  assert summary["kinds"] == {"matmul (cuBLAS / CUTLASS)": 2.0, "attention (cuDNN)": 1.0, "token stats (Pallas)": 0.75,
                              "collectives (NCCL)": 0.2, "other fusions (elementwise, reductions)": 0.05}
  assert summary["top"][0] == ["nvjet_tst_128x256_64x4_1x2_h_bz_coopB_TNN", "matmul (cuBLAS / CUTLASS)", 2.0, 1]
  assert "| matmul (cuBLAS / CUTLASS) | 2.0 | 50% |" in table(summary)


def test_kinds_of_the_pallas_backward_kernels_and_copies():
  assert kind_of("_dlogits_kernel") == kind_of("_grad_w_kernel") == "token stats (Pallas)"
  assert kind_of("Memcpy DtoD") == "copies / memset"
  assert kind_of("mha_forward") == "decode attention (Pallas)"   # the sampler's kernel (models/decode_attention.py)


def test_weak_scaling_efficiency_per_series_from_the_smallest_gpu_count(tmp_path):
  step = lambda mesh, devices, tps: {"model": "m", "mesh": mesh, "devices": devices,  # noqa: E731
                                     "student_tokens_per_s": tps, "mfu": 0.4}
  rows = [step("fsdp:2", 2, 1000), step("fsdp:4", 4, 1800), step("fsdp:2,tensor:2", 4, 2100),
          {"model": "m", "mesh": "1", "devices": 1, "error": "RESOURCE_EXHAUSTED"},
          {"part": "rollout", "model": "m", "mesh": "1", "devices": 1, "tokens_per_s": 500},
          {"part": "rollout", "model": "m", "mesh": "data:4", "devices": 4, "tokens_per_s": 1900}]
  output = tmp_path / "scaling.png"
  efficiencies = plot(rows, str(output), "test")
  assert efficiencies == {"m step (fsdp)": [(2, 1.0), (4, 0.9)], "m step (fsdp x tensor)": [(2, 1.0), (4, 1.05)],
                          "m rollouts (data)": [(1, 1.0), (4, 0.95)]}
  assert output.stat().st_size > 10_000


@pytest.mark.slow
def test_the_iteration_benchmark_splits_the_trainer_s_own_timings(tmp_path, monkeypatch):
  """bench/iteration.py on a random SmolLM2-shaped model at tiny budgets (CPU): two iterations of 2 prompts x 2
  samples, each taken as 2 steps of 2 sequences, through the trainer; an iteration is the sum of its rollout, host
  and update seconds; sampling tokens/s = the iteration's completion tokens over its rollout seconds; the first
  iteration (compiles) is reported apart. With a Qwen3-style tokenizer under Qwen3's vocabulary size and rollout
  lengths drawn from a log-normal (bench/lengths.py), each iteration's completions have exactly the drawn lengths."""
  from iteration import main as iteration_main
  from lengths import draw
  from tokenizer_families import build_family_tokenizer
  monkeypatch.chdir(tmp_path)
  tokenizer = build_family_tokenizer("qwen3", str(tmp_path / "qwen3_tokenizer"))
  iteration_main(["--model", "smollm2-135m", "--dtype", "float32", "--prompts", "2", "--samples", "2",
                  "--batch_size", "2", "--prompt_tokens", "1024", "--completion_tokens", "16", "--iterations", "2",
                  "--tokenizer", tokenizer, "--vocab_size", "151936", "--lengths", "lognormal:6:0.5",
                  "--output", "it.json"])
  out = json.loads((tmp_path / "it.json").read_text())
  rows = out["iterations"]
  assert [r["step"] for r in rows] == [2, 4] and out["vocab_size"] == 151936 and out["steps_per_iteration"] == 2
  drawn = [draw("lognormal:6:0.5", (2, 2), 16, seed=i) for i in range(2)]
  assert len({d.tobytes() for d in drawn}) == 2   # the iterations' lengths differ
  assert [r["mean_completion_tokens"] for r in rows] == pytest.approx([d.mean() for d in drawn])
  for r in rows:
    assert r["iteration_s"] == pytest.approx(r["rollout_s"] + r["host_s"] + r["update_s"])
    assert r["per_step_s"] == pytest.approx(r["iteration_s"] / 2)
    assert r["rollout_tokens_per_s"] == pytest.approx(4 * r["mean_completion_tokens"] / r["rollout_s"], rel=1e-6)
  assert out["first_iteration_s"] == rows[0]["iteration_s"] and out["steady"]["update_s"] == rows[1]["update_s"]
  with pytest.raises(SystemExit):   # a batch that does not divide the iteration's rows
    iteration_main(["--prompts", "3", "--samples", "2", "--batch_size", "4"])
