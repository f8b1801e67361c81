"""The PyTorch baseline, in the shape of the CaOPD reference trainer: an HF transformers model, full-vocabulary KL on
completion positions, teacher forward without grad, fused AdamW; HF `generate` for rollouts. Random weights; needs a
CUDA GPU with torch and transformers. Extended from ../shared/bench/torch_reference.py (same step, same shapes)
with the vocabulary as a flag, micro-batches and a whole-iteration mode.

    python bench/torch_reference.py --model qwen3-0.6b --batch 8 --prompt 512 --teacher-prompt 768 --completion 512
    python bench/torch_reference.py --model qwen3-0.6b --vocab-size 49152 --iteration --prompts 4 --samples 8 \\
        --prompt 256 --teacher-prompt 384 --completion 1024 --lengths lognormal:300:0.6 --micro-batch 8

Step mode prints step time, student tokens/s, MFU (6N per student token + 2N per teacher token, against
--peak-tflops), peak memory and HF `generate` tokens/s for each --gen-batch. `--iteration` times what one CaOPD
iteration costs this pipeline, as bench/iteration.py does ours: `generate` K samples for each of --prompts prompts
(random tokens) at T=1, each row ending at a length drawn from --lengths (bench/lengths.py, the same draws as ours;
a logits processor forces end-of-sequence there), then the optimizer steps over those rows (--batch rows a step,
micro-batches of --micro-batch, padded to the longest completion, as HF batches are).
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList, Qwen3Config

from lengths import draw

SHAPES = {  # Qwen3 family shapes (tied embeddings for <=4B)
    "qwen3-0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "qwen3-1.7b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "qwen3-4b": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "qwen3-8b": dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128, tie_word_embeddings=False),
}
EOS = 1   # a token id that random prompts never contain (they are drawn from 2..V-1)


def build(name, vocab_size):
    """A random-weight model in bf16 on the GPU, initialised there (an 8B model's init on the CPU takes minutes)."""
    cfg = Qwen3Config(vocab_size=vocab_size, max_position_embeddings=8192, eos_token_id=EOS, **SHAPES[name])
    cfg._attn_implementation = "sdpa"
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg)
    return model.to(dtype=torch.bfloat16)


def step(student, teacher, opt, micro_batches, completion):
    """One optimizer step over micro_batches [(ids [b, P + C], teacher_ids [b, TP + C])]: KL(teacher || student)
    per completion position (the reference's default, alpha=0), gradients summed over the micro-batches."""
    for ids, teacher_ids in micro_batches:
        s = student(input_ids=ids).logits[:, -completion - 1:-1, :].float()
        with torch.no_grad():
            t = teacher(input_ids=teacher_ids).logits[:, -completion - 1:-1, :].float()
        kl = F.kl_div(F.log_softmax(s, -1), F.log_softmax(t, -1), reduction="none", log_target=True).sum(-1)
        (kl.mean() / len(micro_batches)).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


class ForcedLengths(LogitsProcessor):
    """Row r emits EOS as its lengths[r]-th token and never before."""

    def __init__(self, lengths, prompt_length):
        self.lengths, self.prompt_length = lengths, prompt_length

    def __call__(self, input_ids, scores):
        t = input_ids.shape[1] - self.prompt_length   # tokens generated so far
        scores[:, EOS] = float("-inf")
        end = self.lengths == t + 1
        scores[end] = float("-inf")
        scores[end, EOS] = 0.0
        return scores


def random_rows(a, V, rows, completion):
    ids = torch.randint(2, V, (rows, a.prompt + completion), device="cuda")
    teacher_ids = torch.cat([torch.randint(2, V, (rows, a.teacher_prompt), device="cuda"), ids[:, a.prompt:]], 1)
    return ids, teacher_ids


def split(ids, teacher_ids, size):
    return list(zip(ids.split(size), teacher_ids.split(size)))


def timed_steps(a, out):
    """Step mode: --steps timed steps (after 2 warm-ups) of --batch rows, then `generate` throughput."""
    student, teacher, opt = models(a)
    ids, teacher_ids = random_rows(a, a.vocab_size, a.batch, a.completion)
    micro = split(ids, teacher_ids, a.micro_batch or a.batch)
    for _ in range(2):
        step(student, teacher, opt, micro, a.completion)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step(student, teacher, opt, micro, a.completion)
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / a.steps
    n = sum(x.numel() for x in student.parameters())
    B, P, TP, C = a.batch, a.prompt, a.teacher_prompt, a.completion
    flops = 6 * n * B * (P + C) + 2 * n * B * (TP + C)
    out.update(params=n, step_s=dt, student_tokens_per_s=B * (P + C) / dt, mfu=flops / dt / (a.peak_tflops * 1e12),
               peak_gib=torch.cuda.max_memory_allocated() / 2**30)
    del opt, teacher
    student.eval()
    for gb in a.gen_batch:
        torch.cuda.empty_cache()
        prompt = torch.randint(2, a.vocab_size, (gb, a.gen_prompt), device="cuda")
        with torch.no_grad():
            student.generate(prompt, max_new_tokens=8, min_new_tokens=8, do_sample=True, pad_token_id=0)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            student.generate(prompt, max_new_tokens=a.gen_new, min_new_tokens=a.gen_new,
                             do_sample=True, temperature=1.0, top_k=0, pad_token_id=0)
            torch.cuda.synchronize()
        out[f"generate_tokens_per_s_batch{gb}"] = gb * a.gen_new / (time.perf_counter() - t0)


def iterations(a, out):
    """Iteration mode: --iterations iterations of generate + steps; the first (warm-up) reported apart."""
    student, teacher, opt = models(a)
    rows = a.prompts * a.samples
    runs = []
    for i in range(a.iterations):
        lengths = torch.as_tensor(draw(a.lengths, (a.prompts, a.samples), a.completion, seed=i).reshape(-1),
                                  device="cuda")
        prompt = torch.randint(2, a.vocab_size, (a.prompts, a.prompt), device="cuda")
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        student.eval()
        with torch.no_grad():
            generated = student.generate(prompt, max_new_tokens=a.completion, do_sample=True, temperature=1.0, top_k=0,
                                         num_return_sequences=a.samples, pad_token_id=0, eos_token_id=EOS,
                                         logits_processor=LogitsProcessorList([ForcedLengths(lengths, a.prompt)]))
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        student.train()
        completion = generated.shape[1] - a.prompt
        teacher_ids = torch.cat([torch.randint(2, a.vocab_size, (rows, a.teacher_prompt), device="cuda"),
                                 generated[:, a.prompt:]], 1)
        for start in range(0, rows, a.batch):
            batch = slice(start, start + a.batch)
            step(student, teacher, opt, split(generated[batch], teacher_ids[batch], a.micro_batch or a.batch),
                 completion)
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        runs.append(dict(rollout_s=t1 - t0, update_s=t2 - t1, iteration_s=t2 - t0, completion_width=completion,
                         mean_completion_tokens=float(lengths.float().mean()),
                         rollout_tokens_per_s=float(lengths.sum()) / (t1 - t0)))
        print(json.dumps(runs[-1]), flush=True)
    rest = runs[1:] or runs
    out.update(iterations=runs, steady={k: sum(r[k] for r in rest) / len(rest) for k in runs[0]},
               peak_gib=torch.cuda.max_memory_allocated() / 2**30)


def models(a):
    """Student, teacher (the student's copy) and fused AdamW; peak memory counts from here (the float32 init apart)."""
    student = build(a.model, a.vocab_size)
    torch.cuda.empty_cache()
    teacher = build(a.model, a.vocab_size)
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False).eval()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return student, teacher, torch.optim.AdamW(student.parameters(), lr=1e-5, fused=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="qwen3-0.6b", choices=sorted(SHAPES))
    p.add_argument("--vocab-size", type=int, default=151936)
    p.add_argument("--batch", type=int, default=8, help="rows per optimizer step")
    p.add_argument("--micro-batch", type=int, default=0, help="rows per forward/backward (0: the whole step)")
    p.add_argument("--prompt", type=int, default=512)
    p.add_argument("--teacher-prompt", type=int, default=768)
    p.add_argument("--completion", type=int, default=512, help="completion tokens (iteration mode: the budget)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--gen-batch", type=int, nargs="*", default=[64, 256])
    p.add_argument("--gen-prompt", type=int, default=128)
    p.add_argument("--gen-new", type=int, default=256)
    p.add_argument("--iteration", action="store_true", help="time whole iterations (generate + steps) instead")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--lengths", default="lognormal:300:0.6", help="full or lognormal:MEDIAN:SIGMA")
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--peak-tflops", type=float, default=792.0)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    out = {"model": a.model, "vocab_size": a.vocab_size, "args": vars(a), "device": torch.cuda.get_device_name(),
           "torch": torch.__version__}
    (iterations if a.iteration else timed_steps)(a, out)
    print(json.dumps(out, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
