"""config.yaml validation: every mistake stops the run with the domain, key and path."""

from __future__ import annotations

import copy
import json

import pytest
from conftest import run_workflow

from molorec.config import ConfigError, check_config


@pytest.fixture
def config(tmp_path):
    for name in ("r.json.gz", "m.json.gz"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "mooc" / "entities").mkdir(parents=True)
    for name in ("user.json", "course.json"):
        (tmp_path / "mooc" / "entities" / name).write_text("")
    return {
        "seed": 1,
        "domains": {
            "beauty": {
                "role": "target",
                "format": "amazon2014",
                "reviews": "r.json.gz",
                "meta": "m.json.gz",
            },
            "courses": {"role": "target", "format": "mooccube", "path": "mooc"},
            "games": {
                "role": "general",
                "format": "amazon2018",
                "reviews": "r.json.gz",
                "meta": "m.json.gz",
            },
        },
    }


def test_valid_config_gets_defaults(config, tmp_path):
    checked = check_config(copy.deepcopy(config), base_dir=tmp_path)
    assert checked["data"]["n_candidates"] == 30
    assert checked["data"]["kcore"] == 5
    assert checked["domains"]["beauty"]["on_truncated"] == "error"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda c: c["domains"]["beauty"].update(fromat="amazon2014"),
            r"domains\.beauty.*'fromat'",
        ),
        (
            lambda c: c["domains"]["beauty"].update(format="amazon2015"),
            r"domains\.beauty\.format.*'amazon2015'",
        ),
        (
            lambda c: c["domains"].update({"Beauty-2": c["domains"]["beauty"]}),
            r"domain name 'Beauty-2'",
        ),
        (
            lambda c: c["domains"].update({"general": c["domains"]["games"]}),
            r"domain name 'general'",
        ),
        (
            lambda c: c["domains"]["beauty"].update(reviews="missing.json.gz"),
            r"domains\.beauty\.reviews.*missing\.json\.gz",
        ),
        (
            lambda c: c["domains"]["courses"].update(path="nowhere"),
            r"domains\.courses\.path.*nowhere",
        ),
        (lambda c: c["domains"]["beauty"].pop("meta"), r"domains\.beauty.*'meta' is a required"),
        (
            lambda c: c["domains"]["beauty"].update(on_truncated="maybe"),
            r"domains\.beauty\.on_truncated",
        ),
        (lambda c: c.update(data={"n_candidates": 3, "answer_size": 5}), r"data\.answer_size"),
        (lambda c: c.update(data={"kcore": -1}), r"data\.kcore"),
        (lambda c: c.update(extra=1), r"'extra' was unexpected"),
        (lambda c: c.update(prompt={"user": "{histroy}"}), r"prompt for domain .*\{histroy\}"),
    ],
)
def test_config_errors_name_what_is_wrong(config, tmp_path, mutate, message):
    mutate(config)
    with pytest.raises(ConfigError, match=message):
        check_config(config, base_dir=tmp_path)


def test_snakemake_stops_before_any_job_on_a_bad_config(config, tmp_path):
    config["domains"]["beauty"]["reviews"] = "gone/reviews_Beauty_5.json.gz"
    proc = run_workflow(tmp_path, config)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "domains.beauty.reviews: input not found: gone/reviews_Beauty_5.json.gz" in out
    assert not (tmp_path / "results").exists()


def shared_adapter(root, base="results/models/smollm2-135m", peft_type="LORA", weights=True):
    """An adapter folder as PEFT writes it (contents of the weights file don't matter here)."""
    root.mkdir(parents=True, exist_ok=True)
    config = {"peft_type": peft_type, "base_model_name_or_path": base, "r": 4}
    (root / "adapter_config.json").write_text(json.dumps(config))
    if weights:
        (root / "adapter_model.safetensors").write_bytes(b"")
    return root


def target_only(config):
    del config["domains"]["games"]
    return config


def test_a_shared_general_adapter_passes_the_check(config, tmp_path):
    shared_adapter(tmp_path / "shared", base="/models/Qwen2-7B-Instruct/")
    config = target_only(config) | {"general_adapter": "shared"}
    config["model"] = {"base": "Qwen/Qwen2-7B-Instruct"}
    checked = check_config(config, base_dir=tmp_path)
    assert checked["general_adapter"] == "shared"
    assert {spec["role"] for spec in checked["domains"].values()} == {"target"}


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: None, r"general_adapter: .*shared: not a folder"),
        (lambda root: root.mkdir(), r"no adapter_config.json, so not a PEFT adapter folder"),
        (lambda root: shared_adapter(root, peft_type="IA3"), r"peft_type is 'IA3', not LORA"),
        (lambda root: shared_adapter(root, weights=False), r"no adapter_model.safetensors"),
        (
            lambda root: shared_adapter(root, base="meta-llama/Llama-3-8B"),
            r"trained on base model 'meta-llama/Llama-3-8B', but model.base is 'smollm2-135m'",
        ),
    ],
)
def test_a_shared_general_adapter_is_checked(config, tmp_path, make, message):
    make(tmp_path / "shared")
    config = target_only(config) | {"general_adapter": "shared"}
    with pytest.raises(ConfigError, match=message):
        check_config(config, base_dir=tmp_path)


def test_a_shared_general_adapter_excludes_general_domains(config, tmp_path):
    shared_adapter(tmp_path / "shared")
    config["general_adapter"] = "shared"
    with pytest.raises(ConfigError, match=r"general domains \['games'\] would not be used"):
        check_config(config, base_dir=tmp_path)


def test_model_precision_reaches_training_unless_train_sets_its_own(monkeypatch):
    import molorec.model
    from molorec.model import uses_bf16
    from molorec.settings import train_settings

    config = {"seed": 1, "model": {"precision": "bf16"}, "train": {"precision": "auto"}}
    assert train_settings(config, "domain")["precision"] == "bf16"
    config["train"]["domain"] = {"precision": "fp32"}
    assert train_settings(config, "domain")["precision"] == "fp32"
    assert train_settings(config, "general")["precision"] == "bf16"
    # auto: bf16 on a GPU, and on a CPU only where it computes bf16 natively.
    for native, auto_on_cpu in ((False, False), (True, True)):
        monkeypatch.setattr(molorec.model, "native_cpu_bf16", lambda n=native: n)
        table = [uses_bf16(p, cuda) for p in ("auto", "fp32", "bf16") for cuda in (False, True)]
        assert table == [auto_on_cpu, True, False, False, True, True]
    with pytest.raises(ValueError, match="precision 'fp16'"):
        uses_bf16("fp16", False)
    import torch

    from molorec.model import model_dtype

    assert model_dtype("auto", True) == model_dtype("bf16", False) == torch.bfloat16
    assert model_dtype("fp32", True) == torch.float32
    monkeypatch.setattr(molorec.model, "native_cpu_bf16", lambda: False)
    assert model_dtype("auto", False) == torch.float32
    monkeypatch.setattr(molorec.model, "native_cpu_bf16", lambda: True)
    assert model_dtype("auto", False) == torch.bfloat16
