"""The LoRA trainer on the tiny Qwen2 model with the real Qwen tokenizer."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import polars as pl
import pytest
import torch
from chat_data import TITLES, conversation, instructions
from safetensors.torch import load_file

from molorec.model import load_base
from molorec.train import (
    TrainSettings,
    answer_loss,
    collate,
    encode,
    epoch_plan,
    full_logits_loss,
    train,
)


def settings(**kw) -> TrainSettings:
    base = dict(
        lr=1e-2,
        per_device_batch=4,
        grad_accum=1,
        max_steps=6,
        warmup_ratio=0.0,
        save_every=0,
        epochs=100,
        lora_dropout=0.0,
        precision="fp32",  # auto would be bf16 on a CPU with native bf16: exact checks here
    )
    base.update(kw)
    return TrainSettings(**base)


def read_log(path):
    with open(path) as fh:
        return list(csv.DictReader(fh))


def train_domain(tiny, tmp_path, n_examples: int, **kw):
    """A domain adapter trained on ``n_examples`` chat examples: (output folder, model)."""
    data = instructions(tmp_path / "d.parquet", n_examples)
    return train(
        tiny, [data], "domain", tmp_path / "ad", tmp_path / "ck", settings(**kw), progress=False
    )


# --- encoding and the loss ---------------------------------------------------------------


def test_answer_is_the_assistant_turn_up_to_end_of_turn(tokenizer):
    msgs = conversation(0, "Halo 3: ODST||LEGO City Fire Station")
    (enc,), cut = encode(tokenizer, [msgs], max_length=1200)
    assert cut == 0
    answer = tokenizer.decode(enc.input_ids[enc.n_prompt :])
    assert answer == "Halo 3: ODST||LEGO City Fire Station" + tokenizer.eos_token
    prompt = tokenizer.decode(enc.input_ids[: enc.n_prompt])
    assert prompt.endswith("<|im_start|>assistant\n")


def test_long_prompts_are_cut_from_the_left(tokenizer):
    msgs = conversation(0, "Halo 3: ODST")
    (enc,), cut = encode(tokenizer, [msgs], max_length=40)
    assert cut == 1 and len(enc.input_ids) == 40
    assert tokenizer.decode(enc.input_ids[enc.n_prompt :]) == "Halo 3: ODST" + tokenizer.eos_token


def test_answer_loss_equals_full_logits_loss_and_scores_only_answers(tiny, tokenizer):
    model, _ = load_base(tiny)
    convs = [conversation(i, "||".join(TITLES[i : i + 3])) for i in range(3)]
    batch = collate(encode(tokenizer, convs, 1200)[0], tokenizer.pad_token_id, "cpu")
    ours, n = answer_loss(model, batch)
    reference = full_logits_loss(model, batch)
    assert n == int(batch["answer"][:, 1:].sum())
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-4)
    # Prompt tokens are never labels: the label mask (batch["answer"]; the ignore index
    # -100 wherever it is False) is False at every token of the prompt as inference encodes
    # it, and at padding; it is True at exactly the answer's tokens and the end of turn.
    labels = batch["input_ids"].masked_fill(~batch["answer"], -100)
    for row, messages in enumerate(convs):
        prompt = tokenizer.apply_chat_template(
            messages[:-1], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        answer = tokenizer(messages[-1]["content"] + tokenizer.eos_token)["input_ids"]
        width = len(prompt) + len(answer)
        assert batch["input_ids"][row, : len(prompt)].tolist() == prompt
        assert (labels[row, : len(prompt)] == -100).all()
        assert labels[row, len(prompt) : width].tolist() == answer
        assert (labels[row, width:] == -100).all()
    # Changing an answer token changes the loss.
    changed = dict(batch)
    ids = batch["input_ids"].clone()
    first_answer = int(batch["answer"][0].nonzero()[0])
    ids[0, first_answer + 1] = (ids[0, first_answer + 1] + 1) % 1000
    changed["input_ids"] = ids
    assert not torch.isclose(answer_loss(model, changed)[0], ours)


def test_epoch_plan_is_seeded_grouped_and_complete():
    lengths = [5, 50, 7, 48, 6, 49, 8, 47, 9]
    s = settings(per_device_batch=2, grad_accum=2, seed=3)
    plan = epoch_plan(lengths, s, epoch=0, world=1)
    flat = [i for step in plan for mb in step for i in mb]
    assert sorted(flat) == list(range(len(lengths)))
    assert plan == epoch_plan(lengths, s, epoch=0, world=1)
    assert plan != epoch_plan(lengths, s, epoch=1, world=1)
    for step in plan:  # longest first within a step: micro-batches of similar length
        sizes = [lengths[i] for mb in step for i in mb]
        assert sizes == sorted(sizes, reverse=True)


# --- training --------------------------------------------------------------------------


def test_loss_falls_and_log_is_written(tiny, tmp_path):
    out, _ = train_domain(tiny, tmp_path, 24, max_steps=24, lr=1e-2)
    rows = read_log(out / "train_log.csv")
    assert list(rows[0]) == ["step", "epoch", "loss", "lr", "tokens_per_s", "peak_mem_mb", "tokens"]
    losses = [float(r["loss"]) for r in rows]
    assert len(losses) == 24
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 1.0
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json"):
        assert (out / name).is_file()
    # all-linear, expanded: written in one order whatever the process's hash seed
    modules = json.loads((out / "adapter_config.json").read_text())["target_modules"]
    assert len(modules) > 2 and modules == sorted(modules)


def test_memorises_answers_and_reloads_with_peft(tiny, tmp_path):
    from peft import PeftModel

    out, model = train_domain(tiny, tmp_path, 4, max_steps=150)
    model.eval()
    base, tok = load_base(tiny)
    reloaded = PeftModel.from_pretrained(base, out).eval()
    for i in range(4):
        msgs = conversation(i, TITLES[i])
        enc = tok.apply_chat_template(
            msgs[:-1], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.no_grad():
            live = model(**enc).logits
            again = reloaded(**enc).logits
        torch.testing.assert_close(again, live, rtol=0, atol=1e-5)
        generated = reloaded.generate(**enc, max_new_tokens=24, do_sample=False)
        text = tok.decode(generated[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        assert text == TITLES[i]


def test_an_adapter_trains_on_what_is_not_held_out(tiny, tmp_path):
    val = pl.read_parquet(instructions(tmp_path / "b.parquet", 4, split="val"))
    rows = pl.concat(
        [
            pl.read_parquet(instructions(tmp_path / "a.parquet", 4, split="train")),
            # A cold target, a selection user's example, two trained-on validation examples.
            val.with_columns(held_out=pl.Series([True, True, False, False])),
            pl.read_parquet(instructions(tmp_path / "c.parquet", 4, split="test")),
        ]
    )
    from molorec.train import training_rows

    picked = training_rows(rows)
    assert picked["split"].value_counts().sort("split").rows() == [("train", 4), ("val", 2)]
    assert not picked["held_out"].any()


def test_max_rows_trains_on_a_subset_fixed_by_the_data(tmp_path):
    """train.max_rows (the data-scarce regime): that many of the trainable rows, chosen by
    their key, not by their order in the file and not by the seed, so every replicate and
    every shuffle of the data trains on the same rows; held-out rows never enter."""
    from molorec.train import training_rows

    rows = pl.concat(
        [
            pl.read_parquet(instructions(tmp_path / "a.parquet", 40, split="train")),
            pl.read_parquet(instructions(tmp_path / "b.parquet", 10, split="test")),
        ]
    )
    picked = training_rows(rows, max_rows=12)
    assert picked.height == 12 and not picked["held_out"].any()
    shuffled = training_rows(rows.sample(fraction=1.0, shuffle=True, seed=3), max_rows=12)
    assert sorted(shuffled["user"]) == sorted(picked["user"])
    assert picked["user"].to_list() != [f"U{i}" for i in range(12)]  # not the first rows
    trained = rows.filter(~pl.col("held_out"))
    assert training_rows(rows, max_rows=0).equals(trained)
    assert training_rows(rows, max_rows=40).equals(trained)
    # Kept in the file's order: the step plan's shuffle is the seed's, not the subset's.
    order = {u: i for i, u in enumerate(trained["user"])}
    assert [order[u] for u in picked["user"]] == sorted(order[u] for u in picked["user"])


# --- resume and data parallelism ----------------------------------------------------------


def cli(tiny, data, out, ckpt, s: TrainSettings, launcher=(sys.executable,)):
    return [
        *launcher,
        "-m",
        "molorec.train",
        "--base",
        tiny,
        "--data",
        data,
        "--kind",
        "domain",
        "--out",
        str(out),
        "--checkpoints",
        str(ckpt),
        "--settings",
        json.dumps(s.__dict__),
        "--threads",
        "1",
        "--no-progress",
    ]


def max_diff(a, b) -> float:
    x, y = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert x.keys() == y.keys()
    return max((x[k] - y[k]).abs().max().item() for k in x)


def test_killed_run_resumes_and_matches_uninterrupted(tiny, tmp_path):
    data = instructions(tmp_path / "d.parquet", 40)
    # Dropout on: the restored RNG state must reproduce the same masks after resuming.
    s = settings(per_device_batch=2, max_steps=12, save_every=3, lora_dropout=0.05, lr=5e-3)
    ckpt = tmp_path / "ck"
    proc = subprocess.Popen(
        cli(tiny, data, tmp_path / "killed", ckpt, s),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while not (ckpt / "step-0000006").is_dir() and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (ckpt / "step-0000006").is_dir()
    assert not (tmp_path / "killed" / "adapter_model.safetensors").exists()

    resumed = subprocess.run(
        cli(tiny, data, tmp_path / "killed", ckpt, s), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr
    straight = subprocess.run(
        cli(tiny, data, tmp_path / "straight", tmp_path / "ck2", s), capture_output=True, text=True
    )
    assert straight.returncode == 0, straight.stderr[-2000:]
    assert max_diff(tmp_path / "killed", tmp_path / "straight") < 1e-5
    log = read_log(tmp_path / "killed" / "train_log.csv")
    assert [int(r["step"]) for r in log] == list(range(1, 13))
    # Only the last two checkpoints are kept.
    assert sorted(p.name for p in ckpt.iterdir()) == ["step-0000006", "step-0000009"]


def test_two_processes_equal_one_on_the_same_global_batch(tiny, tmp_path):
    data = instructions(tmp_path / "d.parquet", 16)
    one = settings(per_device_batch=2, grad_accum=2, max_steps=3, lr=5e-3)
    two = settings(per_device_batch=2, grad_accum=1, max_steps=3, lr=5e-3)
    launcher = (
        "accelerate",
        "launch",
        "--multi_gpu",
        "--num_machines",
        "1",
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "29533",
    )
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    dp = subprocess.run(
        cli(tiny, data, tmp_path / "two", tmp_path / "ck2", two, launcher),
        capture_output=True,
        text=True,
        env=env,
    )
    assert dp.returncode == 0, dp.stderr[-3000:]
    assert dp.stderr.count("2 process(es)") == 2
    sp = subprocess.run(
        cli(tiny, data, tmp_path / "one", tmp_path / "ck1", one), capture_output=True, text=True
    )
    assert sp.returncode == 0, sp.stderr[-2000:]
    assert max_diff(tmp_path / "two", tmp_path / "one") < 1e-6
    losses = [
        [float(r["loss"]) for r in read_log(tmp_path / d / "train_log.csv")] for d in ("one", "two")
    ]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)


def test_bf16_precision_trains_an_fp32_adapter_on_a_cpu(tiny, tmp_path):
    """model.precision bf16 on a CPU: bf16 base weights and autocast; the LoRA weights (what
    the optimizer updates and the adapter file holds) stay float32, and the loss falls."""
    out, model = train_domain(tiny, tmp_path, 24, max_steps=12, lr=1e-2, precision="bf16")
    base_dtypes = {p.dtype for n, p in model.named_parameters() if "lora_" not in n}
    assert base_dtypes == {torch.bfloat16}
    saved = load_file(out / "adapter_model.safetensors")
    assert saved and {t.dtype for t in saved.values()} == {torch.float32}
    losses = [float(r["loss"]) for r in read_log(out / "train_log.csv")]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
