"""The CaOPD paper's recipe (caopd_jax.train.config.paper_config) for one of its models on one of its tasks.

    python -m caopd_jax.train --config=configs/paper.py:qwen3-8b,science --config.model.path=/path/to/Qwen3-8B
    python -m caopd_jax.train --config=configs/paper.py:olmo3-7b-instruct,tooluse --config.model.path=...

The argument after the colon is MODEL,DATASET: MODEL one of MODELS (the paper's: it names the run folder,
runs/DATASET-MODEL), DATASET science or tooluse (default qwen3-8b,science). model.path: a Hugging Face folder (or
GGUF / caopd-jax checkpoint) of that model. The training split is read from the data root (data.data_dir, else
$CAOPD_DATA_DIR, else ./data): DATASET_train/ or the reference's DATASET_data/train_data/, a save_to_disk folder as
it ships. One epoch (train.steps=-1). Set --config.distill.teacher_mode=correct_solution for the SDPO-style teacher,
--config.distill.calibrate=False for the plain OPD baseline. Sized for a v5p-64 (target v5p:4x4x2, mesh auto): check it
fits with `python -m caopd_jax.train.aot --config=configs/paper.py:qwen3-8b,science --model=qwen3-8b` (BUILD.md);
for 8 GPUs of one host, --config.target=gpu:8.
"""

from caopd_jax.errors import CaopdError
from caopd_jax.train.config import paper_config

MODELS = ("qwen3-8b", "qwen2.5-7b-instruct", "olmo3-7b-instruct")   # the paper's (docs/CAOPD.md section 9)
DATASETS = ("science", "tooluse")


def get_config(arg: str = "qwen3-8b,science"):
  model, _, dataset = arg.partition(",")
  if model not in MODELS or dataset not in DATASETS:
    raise CaopdError(f"configs/paper.py:{arg}: expected MODEL,DATASET with MODEL one of {', '.join(MODELS)} and "
                     f"DATASET one of {', '.join(DATASETS)}, e.g. configs/paper.py:qwen3-8b,science")
  return paper_config(model, dataset)
