"""peft's merge methods as exported adapters (molorec.merges): the folder written is the
adapter peft merged, reloaded as any PEFT adapter is."""

from __future__ import annotations

import json

import pytest
import torch
from chat_data import conversation
from test_fusion import logits_of, random_adapter

from molorec.merges import METHODS, PRUNING, merge_adapters
from molorec.model import load_base


@pytest.fixture(scope="module")
def same_rank_pair(tiny, tmp_path_factory):
    """Two random adapters of one rank (linear and the pruning methods need equal ranks)."""
    root = tmp_path_factory.mktemp("merge-adapters")
    return [random_adapter(tiny, root / "a", 4, 8, 1), random_adapter(tiny, root / "b", 4, 8, 2)]


def peft_merged(tiny, adapters, method, weights, density, seed):
    """The merged adapter as peft holds it in memory, active on a fresh base model."""
    from peft import PeftModel

    model, _ = load_base(tiny)
    peft_model = PeftModel.from_pretrained(model, adapters[0], adapter_name="a")
    peft_model.load_adapter(adapters[1], adapter_name="b")
    torch.manual_seed(seed)
    peft_model.add_weighted_adapter(
        ["a", "b"], weights, "m", combination_type=method, density=density
    )
    peft_model.set_adapter("m")
    return peft_model.eval()


@pytest.mark.parametrize("method", ["linear", "cat", "ties", "dare_linear", "magnitude_prune_svd"])
def test_an_exported_merge_is_the_adapter_peft_merged(
    tiny, tokenizer, same_rank_pair, method, tmp_path
):
    from peft import PeftModel

    density = 0.5 if method in PRUNING else None
    weights = [0.7, 0.3]
    folder = merge_adapters(tiny, same_rank_pair, method, weights, tmp_path / method, density, 3)
    reloaded = PeftModel.from_pretrained(load_base(tiny)[0], folder).eval()
    reference = peft_merged(tiny, same_rank_pair, method, weights, density, 3)
    messages = conversation(0, "")[:-1]
    merged = logits_of(reloaded, tokenizer, messages)
    torch.testing.assert_close(merged, logits_of(reference, tokenizer, messages))
    plain = logits_of(load_base(tiny)[0], tokenizer, messages)
    assert not torch.allclose(merged, plain)  # the merge changed the model
    info = json.loads((tmp_path / method / "merge_info.json").read_text())
    assert info["method"] == method and info["weights"] == weights


def test_a_random_merge_repeats_with_its_seed_and_differs_without(tiny, same_rank_pair, tmp_path):
    files = {}
    for name, seed in (("first", 3), ("again", 3), ("other", 4)):
        merge_adapters(tiny, same_rank_pair, "dare_linear", [0.5, 0.5], tmp_path / name, 0.5, seed)
        files[name] = (tmp_path / name / "adapter/adapter_model.safetensors").read_bytes()
    assert files["first"] == files["again"] and files["first"] != files["other"]


def test_a_merge_names_what_it_cannot_do(tiny, same_rank_pair, tmp_path):
    with pytest.raises(ValueError, match="expected one of"):
        merge_adapters(tiny, same_rank_pair, "average", [0.5, 0.5], tmp_path)
    with pytest.raises(ValueError, match="density"):
        merge_adapters(tiny, same_rank_pair, "ties", [0.5, 0.5], tmp_path)
    assert set(PRUNING) < set(METHODS)


def test_a_grid_from_one_load_equals_a_merge_per_point(tiny, same_rank_pair, tmp_path):
    """merge_points merges every point of a grid on one loaded model: each point's files
    are those of a merge of its own (no state carried from one point to the next)."""
    from molorec.merges import merge_points

    points = {
        tmp_path / "grid/w0.5_0.5_d0.5": {"weights": [0.5, 0.5], "density": 0.5},
        tmp_path / "grid/w1_1_d0.3": {"weights": [1, 1], "density": 0.3},
    }
    merge_points(tiny, same_rank_pair, "dare_ties", points, seed=3)
    for folder, point in points.items():
        alone = tmp_path / "alone" / folder.name
        merge_adapters(
            tiny, same_rank_pair, "dare_ties", point["weights"], alone, point["density"], 3
        )
        for name in ("adapter/adapter_model.safetensors", "adapter/adapter_config.json"):
            assert (folder / name).read_bytes() == (alone / name).read_bytes(), name


def test_the_schema_offers_exactly_peft_s_methods():
    from molorec.schema import load_schema

    schema = load_schema()["properties"]["merges"]["properties"]["methods"]
    assert schema["items"]["enum"] == list(METHODS)
