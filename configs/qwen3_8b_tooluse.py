"""CaOPD on the paper's tooluse data with Qwen3-8B, the reference recipe (caopd_jax.train.config.paper_config).

    python -m caopd_jax.train --config=configs/qwen3_8b_tooluse.py --config.model.path=/path/to/Qwen3-8B

model.path: a Hugging Face folder (or GGUF / caopd-jax checkpoint) of Qwen3-8B; the training split is
read from the data root (data.data_dir, else $CAOPD_DATA_DIR, else ./data): tooluse_train/ or the
reference's tooluse_data/train_data/, a save_to_disk folder as it ships. One epoch (train.steps=-1).
Set --config.distill.teacher_mode=correct_solution for the SDPO-style teacher, --config.distill.calibrate=False
for the plain OPD baseline.
"""

from caopd_jax.train.config import paper_config


def get_config():
  return paper_config("/models/Qwen3-8B", "tooluse")
