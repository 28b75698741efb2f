"""Training benchmark: our trainer against plain transformers.Trainer + peft, same run.

Both sides train the same model -- the tiny Qwen2 model (real Qwen vocabulary, 151,936
rows), or the real smollm2-135m with --model smollm2-135m -- with LoRA
(r 16, alpha 32, dropout 0.05, all linear layers; lr 2e-4 cosine, warmup 5%; fp32, or
bf16 weights and autocast on both sides with --precision bf16) on the
same Beauty sample instructions, the same examples in the same batches, for the same
number of optimizer steps with batch 4 and no gradient accumulation:

- ours: ``molorec.train.train`` (LM head only at answer positions; on a CPU, molorec's
  blocked attention);
- ours-sdpa: the same with transformers' SDPA attention (MOLOREC_ATTENTION=sdpa): ours
  before blocked attention, the "before" of the GEMM share;
- baseline: ``transformers.Trainer`` on ``peft.get_peft_model``, labels -100 on the
  prompt, ``DataCollatorForSeq2Seq``, the model's own forward (logits at every position, SDPA)
  and its standard loss. It is fed ours' step plan in order (sequential sampler), so each
  step sees the same four examples; the token ids come from the same ``encode``.

Each side runs in a fresh process, so peak RSS is its own. Printed per side: tokens/s of the
training loop (sum of per-step times, data collation and optimizer step included); of the
whole job (model load, tokenisation, training, saving the adapter; timed the same way on
both sides, library imports excluded); peak RSS; the mean loss per answer token at step 1
-- LoRA B starts at zero, so the two step-1 losses must agree up to float rounding; and the
1-minute load average as the side ends.

The headline is each side's model FLOP/s (tokens/s x the FLOPs per token that
``molorec.flops`` counts from the model's config: 4N + 6R + attention + the LM head at answer
positions) as a share of this machine's own ``torch.matmul`` rate at the model's projection
shapes, in bf16 and fp32, measured in the same run before the two sides.

Figures only, and wall-clock ones: other processes
on the cores slow both sides, ours (many small ops) proportionally more. A load well above
--threads means the figures of that side are not clean; the script warns when the machine
is already busy before it starts.

    python benchmarks/bench_train.py [--examples 64] [--steps 12] [--threads N]
                                     [--model smollm2-135m] [--precision bf16]
                                     [--cache /tmp/molorec-bench-train]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

BATCH = 4
SIDES = ("ours", "ours-sdpa", "baseline")
SDPA_SIDES = ("ours-sdpa", "baseline")
LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "lr": 2e-4, "warmup_ratio": 0.05, "seed": 42}
DOMAIN = "beauty"


# --- setup (parent process) -------------------------------------------------------------


def prepare(cache: Path, n_examples: int, name: str = "tiny-qwen2") -> tuple[Path, Path]:
    """The model (built once) and a parquet of exactly ``n_examples`` training rows of
    the Beauty sample, made with the library as the pipeline makes them."""
    import polars as pl

    from molorec.sample.prepare import base_model, data_stage, sample_spec
    from molorec.train import training_rows

    model = base_model(cache, name)
    out = cache / "data"
    stage = data_stage(
        sample_spec(DOMAIN),
        out,
        DOMAIN,
        max_malformed_fraction=0.01,  # the sample's one bad meta line (config.yaml)
        domain_train_samples=max(n_examples, 150),
    )
    rows = training_rows(pl.read_parquet(stage.paths["instructions"]))
    if rows.height < n_examples:
        raise SystemExit(f"the sample has {rows.height} training rows, fewer than {n_examples}")
    subset = out / f"train-{n_examples}.parquet"
    rows.head(n_examples).write_parquet(subset)
    return model, subset


# --- shared by both children ------------------------------------------------------------


def settings(steps: int, precision: str):
    from molorec.train import TrainSettings

    return TrainSettings(
        lora_r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules="all-linear",
        lr=LORA["lr"],
        warmup_ratio=LORA["warmup_ratio"],
        max_steps=steps,
        per_device_batch=BATCH,
        grad_accum=1,
        seed=LORA["seed"],
        precision=precision,
        save_every=0,
    )


def step_plan(encoded: list, steps: int) -> list[list[int]]:
    """The example indices of each optimizer step, exactly as ours orders them."""
    from molorec.train import epoch_plan, total_steps

    s = settings(steps, "fp32")  # the plan does not depend on the precision
    lengths = [len(e.input_ids) for e in encoded]
    per_epoch, n_steps = total_steps(len(encoded), s, 1)
    plan = []
    for step in range(n_steps):
        epoch, offset = divmod(step, per_epoch)
        plan.append([i for mb in epoch_plan(lengths, s, epoch, 1)[offset] for i in mb])
    return plan


def token_counts(encoded: list, plan: list[list[int]]) -> dict:
    """Non-padding input tokens and answer tokens processed over all steps, and the mean
    number of positions a token attends to (causal, padding not counted)."""
    from molorec.flops import causal_context

    steps = [[encoded[i] for i in step] for step in plan]
    return {
        "step_tokens": [sum(len(e.input_ids) for e in step) for step in steps],
        "answer_tokens": sum(len(e.input_ids) - e.n_prompt for step in steps for e in step),
        "context": causal_context([len(e.input_ids) for step in steps for e in step]),
    }


def preimport() -> None:
    """Import, before either side starts its clock, the libraries both use (ours imports
    them lazily inside train(), which would otherwise count seconds of imports)."""
    import peft  # noqa: F401
    import tqdm  # noqa: F401
    from transformers import (  # noqa: F401
        AutoModelForCausalLM,
        AutoTokenizer,
        get_cosine_schedule_with_warmup,
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- ours (child) -----------------------------------------------------------------------


def run_ours(model_dir: Path, data: Path, steps: int, work: Path, precision: str) -> dict:
    import csv

    import polars as pl
    import torch

    from molorec.model import load_base
    from molorec.train import encode, train

    s = settings(steps, precision)
    shutil.rmtree(work, ignore_errors=True)  # no stale checkpoint to resume from
    preimport()
    t = time.perf_counter()
    out, _ = train(str(model_dir), [str(data)], "domain", work / "adapter", work / "ckpt", s, False)
    total_s = time.perf_counter() - t

    with open(out / "train_log.csv") as fh:
        log = list(csv.DictReader(fh))
    # Outside the timed part: the same encoding train() made, to count the tokens it saw.
    _, tokenizer = load_base(str(model_dir))
    rows = pl.read_parquet(data)["messages"].to_list()
    encoded, _ = encode(tokenizer, rows, s.max_length)
    plan = step_plan(encoded, steps)
    counts = token_counts(encoded, plan)
    # train_log's tokens_per_s is the step's non-padding tokens over the step's wall time.
    loop_s = sum(
        n / float(row["tokens_per_s"]) for n, row in zip(counts["step_tokens"], log, strict=True)
    )
    return {
        "side": "ours",
        "steps": len(log),
        "loop_s": loop_s,
        "total_s": total_s,
        "load": os.getloadavg()[0],
        "loss_step1": float(log[0]["loss"]),
        "loss_last": float(log[-1]["loss"]),
        "threads": torch.get_num_threads(),
        "peak_rss_mb": peak_rss_mb(),
        "first_batch": plan[0],
        **counts,
    }


# --- baseline (child) -------------------------------------------------------------------


def run_baseline(model_dir: Path, data: Path, steps: int, work: Path, precision: str) -> dict:
    import polars as pl
    import torch
    from peft import get_peft_model
    from transformers import (
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from molorec.model import load_base, model_dtype
    from molorec.train import encode, lora_config

    class StepTimes(TrainerCallback):
        """Wall time of each optimizer step, from the end of the previous one (so the
        batch fetch and collation, which Trainer does before on_step_begin, count)."""

        def __init__(self):
            self.times: list[float] = []
            self.last = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.times.append(now - self.last)
            self.last = now

    class LossTrainer(Trainer):
        """Trainer that keeps each micro-batch's loss (detached; read after training)."""

        losses: list

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss = result[0] if return_outputs else result
            self.losses.append(loss.detach())
            return result

    s = settings(steps, precision)
    shutil.rmtree(work, ignore_errors=True)
    preimport()
    t = time.perf_counter()
    model, tokenizer = load_base(str(model_dir), dtype=model_dtype(precision, cuda=False))
    tokenizer.padding_side = "right"  # as ours pads
    torch.manual_seed(s.seed)
    model = get_peft_model(model, lora_config(s))  # the very LoRA setup of ours
    rows = pl.read_parquet(data)["messages"].to_list()
    encoded, _ = encode(tokenizer, rows, s.max_length)
    plan = step_plan(encoded, steps)
    dataset = [
        {
            "input_ids": encoded[i].input_ids,
            "labels": [-100] * encoded[i].n_prompt + encoded[i].input_ids[encoded[i].n_prompt :],
        }
        for step in plan
        for i in step
    ]
    args = TrainingArguments(
        output_dir=str(work / "trainer"),
        per_device_train_batch_size=s.per_device_batch,
        gradient_accumulation_steps=s.grad_accum,
        max_steps=steps,
        learning_rate=s.lr,
        weight_decay=s.weight_decay,
        lr_scheduler_type="cosine",
        warmup_steps=s.warmup_ratio,  # transformers 5: a float < 1 is a ratio (ceil, as ours)
        max_grad_norm=0.0,  # ours does not clip; same optimizer math on both sides
        train_sampling_strategy="sequential",  # the dataset is already in ours' step order
        logging_strategy="no",
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),  # where ours trains
        bf16=precision == "bf16",  # autocast, as ours
        remove_unused_columns=False,
        seed=s.seed,
    )
    timer = StepTimes()
    trainer = LossTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
        callbacks=[timer],
    )
    trainer.losses = []
    trainer.train()
    model.save_pretrained(work / "adapter")
    tokenizer.save_pretrained(work / "adapter")
    total_s = time.perf_counter() - t

    return {
        "side": "baseline",
        "steps": trainer.state.global_step,
        "loop_s": sum(timer.times),
        "total_s": total_s,
        "load": os.getloadavg()[0],
        "loss_step1": float(trainer.losses[0]),
        "loss_last": float(trainer.losses[-1]),
        "threads": torch.get_num_threads(),
        "peak_rss_mb": peak_rss_mb(),
        "first_batch": plan[0],
        **token_counts(encoded, plan),
    }


# --- parent -----------------------------------------------------------------------------


def machine_rates(model: Path, threads: int) -> tuple:
    """The model's shapes and this machine's bf16 and fp32 GEMM rates at them (a
    micro-batch's worth of rows: BATCH examples of about 350 tokens)."""
    import torch
    from transformers import AutoConfig

    from molorec.flops import Shapes, gemm_rates

    torch.set_num_threads(threads)
    shapes = Shapes.of(AutoConfig.from_pretrained(model))
    device = "cuda" if torch.cuda.is_available() else "cpu"  # where train() runs
    rates = gemm_rates(shapes, rows=BATCH * 350, device=device)
    print(
        f"torch.matmul ({device}) at the model's projection shapes: "
        + ", ".join(f"{k} {v / 1e9:,.0f} GFLOP/s" for k, v in rates.items()),
        flush=True,
    )
    return shapes, rates


def child(side: str, model: Path, data: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--child", side, str(model), str(data)]
    cmd += ["--steps", str(args.steps), "--threads", str(args.threads), "--cache", str(args.cache)]
    cmd += ["--precision", args.precision]
    # The baseline, and ours before blocked attention, run transformers' own SDPA.
    env = os.environ | ({"MOLOREC_ATTENTION": "sdpa"} if side in SDPA_SIDES else {})
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{side}: the child process failed ({proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def model_flops(r: dict, shapes) -> float:
    """A side's model FLOP/s: its tokens/s times the FLOPs of a LoRA training token."""
    from molorec.flops import train_flops

    tokens = sum(r["step_tokens"])
    per_token = train_flops(shapes, LORA["r"], r["context"], r["answer_tokens"] / tokens)
    return tokens / r["loop_s"] * per_token


def report(r: dict, shapes, rates: dict) -> str:
    tokens = sum(r["step_tokens"])
    achieved = model_flops(r, shapes)
    share = " | ".join(f"{achieved / rate:.1%} of {k} GEMM" for k, rate in rates.items())
    return (
        f"[{r['side']:>9}] {r['steps']} steps, {tokens:,} tokens "
        f"({r['answer_tokens'] / tokens:.1%} answer) | loop {r['loop_s']:.1f} s "
        f"= {tokens / r['loop_s']:,.0f} tokens/s | whole job {r['total_s']:.1f} s "
        f"= {tokens / r['total_s']:,.0f} tokens/s | peak RSS {r['peak_rss_mb'] / 1024:.2f} GB | "
        f"loss/answer token step 1 {r['loss_step1']:.5f}, step {r['steps']} "
        f"{r['loss_last']:.5f} | {r['threads']} threads, load {r['load']:.1f} at the end\n"
        f"{'':12}model FLOPs {achieved / 1e9:,.0f} GFLOP/s = {share}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=64)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/molorec-bench-train"))
    ap.add_argument("--model", default="tiny-qwen2", help="tiny-qwen2 | smollm2-135m")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.examples % BATCH:
        ap.error(f"--examples must be a multiple of the batch size {BATCH}")

    if args.child:
        import torch

        torch.set_num_threads(args.threads)
        side, model, data = args.child[0], Path(args.child[1]), Path(args.child[2])
        run = run_ours if side.startswith("ours") else run_baseline
        work = args.cache / f"run-{side}"
        print(json.dumps(run(model, data, args.steps, work, args.precision)))
        return

    if (load := os.getloadavg()[0]) > 0.5:
        print(f"warning: load average {load:.1f} before starting; figures will be noisy")
    t = time.perf_counter()
    model, data = prepare(args.cache, args.examples, args.model)
    print(
        f"{args.model} + {args.examples} Beauty sample examples ready in "
        f"{time.perf_counter() - t:.1f} s; batch {BATCH}, {args.steps} steps, "
        f"{args.threads} threads, {args.precision}",
        flush=True,
    )
    shapes, rates = machine_rates(model, args.threads)
    results = {}
    for side in SIDES:
        results[side] = child(side, model, data, args) | {"side": side}
        print(report(results[side], shapes, rates), flush=True)
    ours, base, before = results["ours"], results["baseline"], results["ours-sdpa"]
    print(
        f"ours / ours with SDPA attention (before): "
        f"{before['loop_s'] / ours['loop_s']:.2f}x tokens/s; "
        + " | ".join(
            f"{k} GEMM share {model_flops(before, shapes) / r:.1%} -> "
            f"{model_flops(ours, shapes) / r:.1%}"
            for k, r in rates.items()
        )
        + f"; step-1 loss {before['loss_step1']:.5f} -> {ours['loss_step1']:.5f}",
        flush=True,
    )
    if ours["first_batch"] != base["first_batch"] or ours["step_tokens"] != base["step_tokens"]:
        print("warning: the two sides did not see the same batches", flush=True)
    tokens = sum(ours["step_tokens"])
    print(
        f"ours / baseline: {base['loop_s'] / ours['loop_s']:.1f}x tokens/s (training loop), "
        f"{base['total_s'] / ours['total_s']:.1f}x (whole job), "
        f"peak RSS {ours['peak_rss_mb'] / base['peak_rss_mb']:.2f}x; "
        f"step-1 loss difference {abs(ours['loss_step1'] - base['loss_step1']):.2e} "
        f"({tokens:,} tokens per side)",
        flush=True,
    )


if __name__ == "__main__":
    main()
