"""The campaign grid language: zip, per-backend axes, explicit experiments, ``_extends``
merge rules, provenance, lazy expansion and run order."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from lem.coordinator.planning.campaign import plan_campaign, plan_schedule
from lem.coordinator.planning.config_loader import ConfigError
from lem.coordinator.planning.grid import LazyExperiments
from lem.coordinator.planning.ordering import LazyPermutation, schedule
from lem.protocol.config import affects_load_key

TINY = "  model: {source: builtin, name: lem-tiny}\n"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_zip_groups_step_together_and_multiply_with_the_grid(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "name: z\nexperiment:\n" + TINY
                 + "grid: {batch_size: [1, 2]}\n"
                 + "zip: [{input_tokens: [16, 64], output_tokens: [8, 32]}]\n")  # fmt: skip
    plan = plan_campaign(path)
    pairs = sorted(
        (e.config.batch_size, e.config.input_tokens, e.config.output_tokens)
        for e in plan.experiments
    )
    assert pairs == [(1, 16, 8), (1, 64, 32), (2, 16, 8), (2, 64, 32)]
    assert plan.experiments[0].provenance["input_tokens"] == "zip.0"
    assert plan.experiments[0].provenance["batch_size"] == "grid.batch_size"


def test_zip_length_mismatch_names_the_group(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "name: z\nexperiment:\n" + TINY
                 + "zip: [{input_tokens: [16, 64], output_tokens: [8]}]\n")  # fmt: skip
    with pytest.raises(ConfigError) as info:
        plan_campaign(path)
    assert str(info.value) == (
        f"{path}: zip.0: lists must have equal lengths: input_tokens has 2, output_tokens has 1"
    )


def test_an_axis_value_of_the_wrong_type_fails_at_planning(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "name: z\nexperiment:\n" + TINY
                 + "grid: {batch_size: [1, 2], output_tokens: [4, many]}\n")  # fmt: skip
    with pytest.raises(ConfigError, match=r"grid.output_tokens: value 'many': expected 'int'"):
        plan_campaign(path)


def test_a_field_in_two_axes_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "name: z\nexperiment:\n" + TINY
                 + "grid: {model: [{source: builtin, name: lem-tiny}]}\n"
                 + "zip: [{model.dtype: [float32]}]\n")  # fmt: skip
    with pytest.raises(ConfigError, match=r"zip.0: 'model' is already set by grid.model"):
        plan_campaign(path)


def test_per_backend_axes_apply_to_that_backend_only(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "name: b\nexperiment:\n" + TINY
                 + "grid: {batch_size: [1, 2]}\n"
                 + "backends: {pytorch: {grid: {pytorch.cache_implementation: "
                 + "[dynamic, static]}}}\n")  # fmt: skip
    plan = plan_campaign(path)
    caches = sorted((e.config.batch_size, e.config.pytorch.cache_implementation)
                    for e in plan.experiments)  # fmt: skip
    assert caches == [(1, "dynamic"), (1, "static"), (2, "dynamic"), (2, "static")]
    source = plan.experiments[1].provenance["pytorch.cache_implementation"]
    assert source == "backends.pytorch.grid.pytorch.cache_implementation"


def test_an_unknown_backend_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "name: b\nexperiment:\n" + TINY
                 + "backends: {tgi: {grid: {batch_size: [1]}}}\n")  # fmt: skip
    known = r"\(known: pytorch, vllm, tensorrt, openai\)"
    with pytest.raises(ConfigError, match=r"backends.tgi: unknown backend " + known):
        plan_campaign(path)


def test_explicit_experiments_merge_deeply_over_the_base(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "name: e\nexperiment:\n" + TINY + "  num_prompts: 4\n"
                 + "experiments:\n  - {name: a}\n  - {name: b, model: {dtype: float32}}\n"
                 + "grid: {batch_size: [1, 2]}\n")  # fmt: skip
    plan = plan_campaign(path)
    names = [e.name for e in plan.experiments]
    assert names == ["a[batch_size=1]", "a[batch_size=2]", "b[batch_size=1]", "b[batch_size=2]"]
    b = plan.experiments[2]
    assert (b.config.model.name, b.config.model.dtype, b.config.num_prompts) == (
        "lem-tiny", "float32", 4)  # fmt: skip
    assert b.provenance["model.dtype"] == "experiments[1]"
    assert b.provenance["model.name"] == str(path)
    assert plan.experiments[0].config.model.dtype == "auto"


def test_explicit_experiments_without_a_grid(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "name: e\nexperiment:\n" + TINY
                 + "experiments: [{batch_size: 2}, {batch_size: 0}]\n")  # fmt: skip
    with pytest.raises(ConfigError) as info:
        plan_campaign(path)
    assert str(info.value) == f"{path}: experiments[1].batch_size: must be >= 1, got 0"


def test_extends_merge_rules(tmp_path: Path) -> None:
    write(tmp_path, "common/base.yaml", "experiment:\n  num_prompts: 3\n"
          + "  model: {source: builtin, name: lem-tiny, dtype: float16, seed: 7}\n"
          + "grid: {batch_size: [1, 2, 3], output_tokens: [4, 8]}\ncycles: 5\n")  # fmt: skip
    write(tmp_path, "common/site.yaml", "experiment: {num_prompts: 6}\n")
    path = write(tmp_path, "c.yaml", "_extends: [common/base.yaml, common/site.yaml]\n"
                 + "name: m\nexperiment: {model: {dtype: float32}}\n"
                 + "grid: {batch_size: [4]}\ncycles: 2\n")  # fmt: skip
    plan = plan_campaign(path)
    assert plan.cycles == 2  # scalars: the including file wins
    assert len(plan.experiments) == 2  # grid merged; its batch_size list replaced, not joined
    first = plan.experiments[0]
    assert first.config.batch_size == 4
    model = first.config.model
    assert (model.name, model.dtype, model.seed) == ("lem-tiny", "float32", 7)  # deep merge
    assert first.config.num_prompts == 6  # a later extended file wins over an earlier one
    assert first.provenance["model.seed"] == "common/base.yaml"
    assert first.provenance["num_prompts"] == "common/site.yaml"
    assert first.provenance["model.dtype"] == str(path)


def test_extended_file_errors_name_that_file(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", "experiment: {output_tokens: 0}\n")
    path = write(tmp_path, "c.yaml", "_extends: base.yaml\nname: m\nexperiment:\n" + TINY)
    with pytest.raises(ConfigError) as info:
        plan_campaign(path)
    assert str(info.value) == f"{base.resolve()}: experiment.output_tokens: must be >= 1, got 0"


def test_a_bad_point_beyond_the_spot_checks_fails_when_produced(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "name: z\nexperiment:\n" + TINY
                 + "grid:\n  output_tokens: [32, 4]\n"
                 + "  prompts.output_length:\n"
                 + "    [null, {distribution: uniform, min_tokens: 8}]\n")  # fmt: skip
    plan = plan_campaign(path)  # every axis value is fine in some point
    assert [e.config.output_tokens for e in plan.experiments[:3]] == [32, 32, 4]
    with pytest.raises(ConfigError, match=r"grid.prompts.output_length: value .*must be <= "):
        plan.experiments[3]


def test_lazy_plan_agrees_with_the_eager_product(tmp_path: Path) -> None:
    grid: dict[str, list[object]] = {
        "batch_size": [1, 2, 3],
        "model.dtype": ["float32", "bfloat16"],
        "output_tokens": [4, 8],
        "model.seed": [0, 1],
    }
    lines = "".join(f"  {k}: {v}\n" for k, v in grid.items())
    path = write(tmp_path, "c.yaml", "name: l\nexperiment:\n" + TINY + "grid:\n" + lines)
    plan = plan_campaign(path)
    eager = {tuple(point) for point in itertools.product(*grid.values())}
    assert len(plan.experiments) == len(eager) == 24

    def key(i: int) -> tuple[object, ...]:
        c = plan.experiments[i].config
        return (c.batch_size, c.model.dtype, c.output_tokens, c.model.seed)

    assert {key(i) for i in range(24)} == eager
    assert [e.position for e in plan.experiments] == list(range(24))
    assert plan.experiments[-1].position == 23 and len(plan.experiments[2:5]) == 3
    with pytest.raises(IndexError):
        plan.experiments[24]
    # The load-key axes (model.*) vary slowest: each model is loaded once.
    keys = [e.load_key for e in plan.experiments]
    changes = sum(a != b for a, b in itertools.pairwise(keys))
    assert changes == len(set(keys)) - 1 == 3


def test_affects_load_key() -> None:
    assert affects_load_key("model.dtype") and affects_load_key("pytorch")
    assert affects_load_key("pytorch.attn_implementation") and affects_load_key("device")
    assert not affects_load_key("pytorch.cache_implementation")
    assert not affects_load_key("batch_size") and not affects_load_key("modelx")


@pytest.mark.parametrize("count", [0, 1, 2, 3, 7, 64, 1000])
def test_lazy_permutation_is_a_bijection(count: int) -> None:
    permutation = LazyPermutation(count, seed=11)
    assert sorted(permutation[i] for i in range(count)) == list(range(count))


def test_orders() -> None:
    assert list(schedule(2, 2, "grouped")) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert list(schedule(2, 2, "interleaved")) == [(0, 0), (1, 0), (0, 1), (1, 1)]
    shuffled = list(schedule(50, 3, "shuffled", seed=1))
    assert sorted(shuffled) == sorted(schedule(50, 3, "grouped"))
    assert [c for _, c in shuffled] == sorted(c for _, c in shuffled)  # cycle by cycle
    assert shuffled == list(schedule(50, 3, "shuffled", seed=1))
    assert shuffled != list(schedule(50, 3, "shuffled", seed=2))
    first_cycle = [p for p, c in shuffled if c == 0]
    assert first_cycle != list(range(50))
    assert first_cycle != [p for p, c in shuffled if c == 1]


def test_plan_schedule_follows_the_campaign_order(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "name: o\nexperiment:\n" + TINY
                 + "grid: {batch_size: [1, 2, 3]}\ncycles: 2\n"
                 + "order: shuffled\nseed: 5\n")  # fmt: skip
    plan = plan_campaign(path)
    assert (plan.order, plan.seed) == ("shuffled", 5)
    assert list(plan_schedule(plan)) == list(schedule(3, 2, "shuffled", 5))


def test_a_single_experiment_file_has_provenance_too(tmp_path: Path) -> None:
    from lem.coordinator.planning.campaign import single_experiment_plan
    from lem.coordinator.planning.config_loader import load_experiment

    path = write(tmp_path, "e.yaml", "model: {source: builtin, name: lem-tiny}\nbatch_size: 2\n")
    plan = single_experiment_plan(path, load_experiment(path), cycles=1)
    [experiment] = plan.experiments
    provenance = experiment.provenance
    assert provenance["batch_size"] == provenance["model.name"] == str(path)
    assert provenance["output_tokens"] == "default" and provenance["name"] == "generated"


def test_covering_takes_every_combination_of_the_fields_in_few_experiments(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, "c.yaml", "name: cover\nexperiment:\n" + TINY
                 + "grid: {batch_size: [1, 2, 3, 4, 5], gpu_count: [1, 2]}\n"
                 + "zip: [{device: [cpu, cuda], num_prompts: [8, 16]}]\n"
                 + "experiments: [{name: a}, {name: b, gpu_count: 4}]\n")  # fmt: skip
    plan = plan_campaign(path)
    experiments = plan.experiments
    assert isinstance(experiments, LazyExperiments)
    every = {(e.config.device, e.config.gpu_count) for e in experiments}
    covering = list(experiments.covering(("device", "gpu_count")))
    assert {(e.config.device, e.config.gpu_count) for e in covering} == every
    assert len(covering) == 2 * (2 * 2) < len(experiments) == 2 * 5 * 2 * 2
    assert all(e.config.batch_size == 1 for e in covering)  # other axes at their first step
