"""The set-up the benchmarks and studies share: a base model built once into a cache, and
one domain's data stage (ingest -> examples -> instructions) run with the library as the
pipeline runs it, on the bundled sample or on any raw dumps."""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from molorec.data import examples, ingest
from molorec.data.instructions import DEFAULT_PROMPT, write_instructions
from molorec.io.formats import FORMATS
from molorec.schema import defaults
from molorec.settings import SEED, example_settings

# The repository (benchmarks and studies run from a clone: the sample is not packaged).
REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "resources" / "sample"


def sample_spec(domain: str = "beauty") -> dict:
    """The domains.<domain> entry of the repository's config.yaml (a bundled sample
    domain), its paths made absolute."""
    spec = dict(yaml.safe_load((REPO / "config.yaml").read_text())["domains"][domain])
    for key in FORMATS[spec["format"]].keys:
        spec[key] = str(REPO / spec[key])
    return spec


def base_model(cache: Path, name: str = "tiny-qwen2") -> Path:
    """A base model the pipeline builds (tiny-qwen2, smollm2-135m), built once into cache."""
    from molorec.model import build_base

    model = Path(cache) / name
    if not (model / ".complete").exists():
        shutil.rmtree(model, ignore_errors=True)
        model.parent.mkdir(parents=True, exist_ok=True)
        build_base(name, model)
        (model / ".complete").touch()
    return model


@dataclass
class DataStage:
    """One domain's data stage: its files, the seconds per step, and what each step said."""

    paths: dict[str, Path]
    seconds: dict[str, float] = field(default_factory=dict)
    quality: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    instructions: int = 0


def data_stage(
    spec: dict,
    out: Path,
    domain: str,
    role: str = "target",
    seed: int = SEED,
    workers: int = 1,
    **settings,
) -> DataStage:
    """Ingest, examples and instructions of one domain under ``out``, as config.yaml's
    defaults say, with ``settings`` (data keys: kcore, max_malformed_fraction,
    domain_train_samples, ...) over them; ``workers``: the jobs' processes."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = defaults("data") | settings
    names = ("interactions", "items", "examples")
    paths = {k: out / f"{k}.parquet" for k in names}
    paths |= {
        "quality": out / "quality.json",
        "summary": out / "examples.json",
        "instructions": out / "instructions.parquet",
    }
    stage = DataStage(paths)
    t = time.perf_counter()
    stage.quality = ingest.run(domain, spec, data, paths, workers)
    stage.seconds["ingest_s"] = time.perf_counter() - t
    t = time.perf_counter()
    config = {"seed": seed, "data": data, "domains": {domain: {"role": role}}}
    settings_of = example_settings(config, domain)
    stage.summary = examples.run(
        paths["interactions"], paths["items"], settings_of, paths, workers=workers
    )
    stage.seconds["examples_s"] = time.perf_counter() - t
    t = time.perf_counter()
    stage.instructions = write_instructions(
        paths["examples"], paths["items"], paths["instructions"], domain, DEFAULT_PROMPT, data
    )
    stage.seconds["instructions_s"] = time.perf_counter() - t
    return stage


def pipeline_workdir(workdir: Path, config: dict, fresh: bool = True) -> list[str]:
    """A working folder with ``config`` as its config.yaml and the repository's resources
    linked in (its relative paths resolve there); returns the snakemake command."""
    workdir = Path(workdir)
    if fresh:
        shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "resources").exists():
        (workdir / "resources").symlink_to(REPO / "resources")
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "all"]
    return cmd + ["--directory", str(workdir)]
