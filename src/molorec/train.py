"""LoRA supervised fine-tuning of the general adapter and the domain adapters.

Read top to bottom: settings, encoding, the step plan, the loss, checkpoints, the loop.

Two things make it fast on a 152k-token vocabulary: the language-model head runs only at
answer positions (the prompt's logits would be most of the memory and time, and the loss
never reads them), and each optimizer step's examples are grouped by length before they
are cut into micro-batches, which keeps padding small. On a CPU, LoRA's input dropout
draws only the positions it drops (molorec.dropout), and LoRA's scaling and add run inside
its B product (molorec.fused_lora).

Data parallelism: every process knows the whole step plan (it is a pure function of the
seed), runs its share of the step's micro-batches, and the LoRA gradients are summed
across processes once per step. The loss is normalised by the step's global number of
answer tokens, so N processes compute exactly what one process computes on the same
global batch.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from molorec.data.examples import stable_hash
from molorec.model import sort_target_modules
from molorec.runlog import use_threads
from molorec.settings import TrainSettings

log = logging.getLogger("molorec.train")


# --- encoding ---------------------------------------------------------------------------


@dataclass
class Encoded:
    """Token ids of prompt + answer; the answer (loss) starts at ``n_prompt``."""

    input_ids: list[int]
    n_prompt: int


def encode(tokenizer, conversations: list[list[dict]], max_length: int) -> tuple[list, int]:
    """Chat-template every conversation; the assistant turn, up to and including the
    end-of-turn token, is the answer. Returns the encodings and how many prompts were cut
    (from the left, keeping the candidates and the question next to the answer)."""
    prompts, answers = [], []
    for messages in conversations:
        prompt = tokenizer.apply_chat_template(
            messages[:-1], tokenize=False, add_generation_prompt=True
        )
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        if not full.startswith(prompt):
            raise ValueError("chat template: the conversation does not extend its prompt")
        prompts.append(prompt)
        answers.append(full[len(prompt) :])
    eos = tokenizer.eos_token_id
    prompt_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answers, add_special_tokens=False)["input_ids"]
    out, cut = [], 0
    for p, a in zip(prompt_ids, answer_ids, strict=True):
        if eos in a:  # train up to the end-of-turn token, not the newline after it
            a = a[: a.index(eos) + 1]
        room = max_length - len(a)
        if len(p) > room:
            p, cut = p[len(p) - max(room, 1) :], cut + 1
        out.append(Encoded(p + a, len(p)))
    return out, cut


def training_rows(instructions: pl.DataFrame, max_rows: int = 0) -> pl.DataFrame:
    """What an adapter trains on: every example not held out (molorec.data.examples): for a
    domain its train examples and the validation examples with a warm target, outside the
    selection users; the pooled general set has no held-out rows left.

    ``max_rows`` > 0 keeps that many, those with the smallest hash of their key (bottom-k, as
    the data stage samples train positions): a subset fixed by the data, not by the seed, so
    replicates train on the same rows, kept in their original order.
    """
    rows = instructions.filter(~pl.col("held_out"))
    if max_rows <= 0 or rows.height <= max_rows:
        return rows
    # blake2b, not polars' hash: polars does not promise the same hash across versions.
    keys = [
        stable_hash(*key) for key in rows.select("domain", "user", "split", "position").iter_rows()
    ]
    take = pl.Series(keys, dtype=pl.UInt64).arg_sort().head(max_rows).sort()
    return rows[take]


# --- the step plan ----------------------------------------------------------------------


def epoch_plan(
    lengths: list[int], s: TrainSettings, epoch: int, world: int
) -> list[list[list[int]]]:
    """Optimizer steps of one epoch, each a list of micro-batches of example indices.

    The order is a function of (seed, epoch) only. Within a step the examples are sorted
    by length before being cut into micro-batches (less padding); micro-batch j of a step
    runs on process j % world.
    """
    order = np.random.default_rng([s.seed, epoch]).permutation(len(lengths))
    global_batch = s.per_device_batch * s.grad_accum * world
    steps = []
    for lo in range(0, len(order), global_batch):
        chunk = sorted(order[lo : lo + global_batch].tolist(), key=lambda i: (-lengths[i], i))
        steps.append(
            [chunk[j : j + s.per_device_batch] for j in range(0, len(chunk), s.per_device_batch)]
        )
    return steps


def total_steps(n_examples: int, s: TrainSettings, world: int) -> tuple[int, int]:
    per_epoch = math.ceil(n_examples / (s.per_device_batch * s.grad_accum * world))
    total = math.ceil(per_epoch * s.epochs)
    return per_epoch, min(total, s.max_steps) if s.max_steps > 0 else total


def collate(batch: list[Encoded], pad_id: int, device) -> dict[str, torch.Tensor]:
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    answer = torch.zeros((len(batch), width), dtype=torch.bool)
    for row, e in enumerate(batch):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        attention[row, :n] = 1
        answer[row, e.n_prompt : n] = True
    return {
        "input_ids": ids.to(device),
        "attention_mask": attention.to(device),
        "answer": answer.to(device),
    }


# --- the loss ---------------------------------------------------------------------------


def answer_loss(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over answer tokens, with logits computed only there.

    Position t predicts token t+1, so the logits kept are those one step to the left of the
    answer tokens. The model's own forward drops the other positions before its LM head
    (``logits_to_keep`` as a boolean mask): no attribute of the model is reached into, so
    any causal LM works, whatever it names its body and head (Qwen2 ``model``/``lm_head``,
    GPT-2 ``transformer``, BioGPT ``biogpt``/``output_projection``), and whatever its forward
    does to the logits after the head (soft-capping, scaling) is kept.
    """
    scored = batch["answer"][:, 1:]
    keep = torch.cat([scored, torch.zeros_like(scored[:, :1])], dim=1)
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        logits_to_keep=keep,
        use_cache=False,
    ).logits.float()
    targets = batch["input_ids"][:, 1:][scored]
    return F.cross_entropy(logits, targets, reduction="sum"), int(scored.sum())


def full_logits_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Reference: the usual way, logits at every position, masked labels (tests only)."""
    labels = batch["input_ids"].masked_fill(~batch["answer"], -100)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), reduction="sum"
    )


# --- checkpoints ------------------------------------------------------------------------


@dataclass
class Checkpoints:
    """Resumable state every ``save_every`` steps: adapter, optimizer, scheduler, RNG and
    the step reached (the data position follows from it). Written under a temporary name
    and renamed, so a kill mid-write never leaves a checkpoint that looks complete."""

    root: Path
    fingerprint: str
    rank: int = 0
    keep: int = 2
    log_rows: list = field(default_factory=list)

    def latest(self) -> Path | None:
        if not self.root.is_dir():
            return None
        done = sorted(p for p in self.root.glob("step-*") if not p.name.endswith(".partial"))
        for path in reversed(done):
            state = json.loads((path / "state.json").read_text())
            if state["fingerprint"] == self.fingerprint:
                return path
        return None

    def save(self, step, model, optimizer, scheduler, world: int) -> None:
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        final = self.root / f"step-{step:07d}"
        tmp = final.with_name(final.name + ".partial")
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        barrier(world)
        torch.save(_rng_state(), tmp / f"rng-{self.rank}.pt")
        if self.rank == 0:
            adapter = {
                k: v.detach().cpu().contiguous()
                for k, v in get_peft_model_state_dict(model).items()
            }
            save_file(adapter, tmp / "adapter.safetensors")
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
            torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
            state = {"step": step, "fingerprint": self.fingerprint, "log": self.log_rows}
            (tmp / "state.json").write_text(json.dumps(state))
        barrier(world)
        if self.rank == 0:
            os.replace(tmp, final)
            for old in sorted(self.root.glob("step-*[0-9]"))[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        barrier(world)

    def load(self, path: Path, model, optimizer, scheduler) -> int:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(model, load_file(path / "adapter.safetensors"))
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
        scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
        _set_rng_state(torch.load(path / f"rng-{self.rank}.pt", weights_only=False))
        state = json.loads((path / "state.json").read_text())
        self.log_rows = state["log"]
        return state["step"]


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


def fingerprint(settings: TrainSettings, base: str, data_files: list[str], world: int) -> str:
    h = hashlib.sha256(json.dumps([asdict(settings), str(base), world], sort_keys=True).encode())
    for path in data_files:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


# --- the loop ---------------------------------------------------------------------------


def lora_config(s: TrainSettings):
    from peft import LoraConfig

    return LoraConfig(
        r=s.lora_r,
        lora_alpha=s.lora_alpha,
        lora_dropout=s.lora_dropout,
        target_modules=s.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )


def peak_memory_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train(
    base: str,
    data_files: list[str],
    kind: str,
    out_dir: str | Path,
    checkpoint_dir: str | Path,
    settings: TrainSettings,
    progress: bool = True,
):
    """Train one LoRA adapter and write it (PEFT format), the tokenizer and train_log.csv.

    Returns the output folder and the trained model (PeftModel)."""
    from peft import get_peft_model
    from peft.helpers import disable_input_dtype_casting
    from tqdm import tqdm
    from transformers import get_cosine_schedule_with_warmup

    from molorec.dropout import use_sparse_dropout
    from molorec.fused_lora import use_fused_lora
    from molorec.model import load_base, model_dtype

    rank, world, device = init_processes()
    s = settings
    dtype = model_dtype(s.precision, device.type == "cuda")
    bf16 = dtype == torch.bfloat16  # LoRA weights stay float32 (peft upcasts): autocast
    model, tokenizer = load_base(base, dtype=dtype)
    model.to(device)
    if s.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    torch.manual_seed(s.seed)  # the LoRA A matrices' initialisation
    model = get_peft_model(model, lora_config(s))
    if device.type == "cpu":
        use_sparse_dropout(model)  # torch's CPU dropout draws a number per element
        use_fused_lora(model)  # LoRA's scaling and add inside its B product
    model.train()

    rows = training_rows(pl.concat([pl.read_parquet(p) for p in data_files]), s.max_rows)
    if rows.is_empty():
        raise ValueError(f"{', '.join(map(str, data_files))}: no training rows (all held out)")
    examples, cut = encode(tokenizer, rows["messages"].to_list(), s.max_length)
    if cut:
        log.warning("%d of %d prompts cut to max_length=%d", cut, len(examples), s.max_length)
    lengths = [len(e.input_ids) for e in examples]
    per_epoch, n_steps = total_steps(len(examples), s, world)

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(
        optimizer, math.ceil(s.warmup_ratio * n_steps), n_steps
    )

    ckpt = Checkpoints(
        Path(checkpoint_dir), fingerprint(s, base, data_files, world), rank, s.keep_checkpoints
    )
    step = 0
    if (resume := ckpt.latest()) is not None:
        step = ckpt.load(resume, model, optimizer, scheduler)
        log.info("resumed from %s (step %d of %d)", resume, step, n_steps)

    log.info(
        "%d examples, %d steps (%d per epoch), %d process(es)",
        len(examples),
        n_steps,
        per_epoch,
        world,
    )
    bar = tqdm(
        total=n_steps,
        initial=step,
        disable=not progress or rank != 0,
        desc=f"train {kind}",
        mininterval=0.1 if os.isatty(2) else 30,  # a log file gets a line every 30 s
    )
    plan, plan_epoch = None, -1
    # Under autocast the LoRA matmuls read bf16: peft's cast of their input to float32
    # would be a copy there and back.
    with disable_input_dtype_casting(model, active=bf16):
        while step < n_steps:
            epoch, offset = divmod(step, per_epoch)
            if epoch != plan_epoch:
                plan, plan_epoch = epoch_plan(lengths, s, epoch, world), epoch
            micro = plan[offset]
            global_tokens = sum(
                len(examples[i].input_ids) - max(examples[i].n_prompt, 1)
                for mb in micro
                for i in mb
            )
            t0 = time.perf_counter()
            loss_sum, seen = 0.0, 0
            for mb in micro[rank::world]:
                batch = collate([examples[i] for i in mb], tokenizer.pad_token_id, device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    loss, _ = answer_loss(model, batch)
                (loss / global_tokens).backward()
                loss_sum += loss.item()
                seen += int(batch["attention_mask"].sum())
            stats = torch.tensor([loss_sum, seen], dtype=torch.float64)
            if world > 1:
                for p in params:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    torch.distributed.all_reduce(p.grad)
                torch.distributed.all_reduce(stats)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            elapsed = time.perf_counter() - t0
            row = {
                "step": step,
                "epoch": round(step / per_epoch, 4),
                "loss": float(stats[0]) / global_tokens,
                "lr": scheduler.get_last_lr()[0],
                "tokens_per_s": float(stats[1]) / elapsed,
                "peak_mem_mb": round(peak_memory_mb(device), 1),
                "tokens": int(stats[1]) + (ckpt.log_rows[-1]["tokens"] if ckpt.log_rows else 0),
            }
            ckpt.log_rows.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            if s.save_every > 0 and step % s.save_every == 0 and step < n_steps:
                ckpt.save(step, model, optimizer, scheduler, world)
    bar.close()

    out = Path(out_dir)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        sort_target_modules(model)
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        write_log(ckpt.log_rows, out / "train_log.csv")
    barrier(world)
    return out, model


def write_log(rows: list[dict], path: Path) -> None:
    fields = ["step", "epoch", "loss", "lr", "tokens_per_s", "peak_mem_mb", "tokens"]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def init_processes() -> tuple[int, int, torch.device]:
    """Rank, world size and device; one process unless started by accelerate/torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    rank = torch.distributed.get_rank() if world > 1 else 0
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    return rank, world, torch.device("cpu")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m molorec.train", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--base", required=True, help="HF model id or local folder")
    ap.add_argument("--data", required=True, nargs="+", help="instructions.parquet file(s)")
    ap.add_argument("--kind", required=True, choices=["general", "domain"])
    ap.add_argument("--out", required=True)
    ap.add_argument("--checkpoints", required=True)
    ap.add_argument("--settings", default="{}", help="JSON of TrainSettings fields")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    use_threads(args.threads)
    settings = TrainSettings.from_dict(json.loads(args.settings))
    train(
        args.base, args.data, args.kind, args.out, args.checkpoints, settings, not args.no_progress
    )
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
