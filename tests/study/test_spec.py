"""The study spec: both shipped YAML files, groups, TrainConfig mapping, overrides, one-line validation errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

import study.spec as spec_module
from resnet_core import ResnetCoreError
from study.spec import (Group, SpecError, StudySpec, changed_keys, check_resumable, load_spec, parse_override,
                        spec_from_dict)

SPECS = Path(spec_module.__file__).parent / "specs"
SMOKE = SPECS / "smoke.yaml"
PAPER = SPECS / "cifar10_depth.yaml"


def _error(*overrides: str, path: Path = SMOKE) -> str:
    with pytest.raises(SpecError) as error:
        load_spec(path, overrides)
    message = str(error.value)
    assert "\n" not in message, message
    return message


# ------------------------------------------------------------------------------------------- shipped specs
def test_paper_spec_is_the_default_and_matches_sec_4_2() -> None:
    spec = load_spec()
    assert spec == load_spec(PAPER)
    assert spec.name == "cifar10_depth" and spec.dataset.val_split == 5000
    assert (spec.train.iterations, spec.train.batch_size, spec.train.milestones) == (64_000, 128, (0.5, 0.75))
    assert (spec.train.eval_every, spec.train.final_seeds, spec.search.trials_per_group) == (2000, 3, 8)
    assert (spec.search.lr.low, spec.search.lr.high) == (0.01, 0.5)
    assert (spec.search.weight_decay.low, spec.search.weight_decay.high) == (1e-5, 1e-3)
    resources = spec.resources
    assert (resources.workers_per_trial, resources.cpus_per_worker, resources.gpus_per_worker) == (1, 1.0, 0.25)


def test_paper_spec_groups_are_five_resnets_times_two_shortcuts_plus_five_plain_nets() -> None:
    groups = load_spec(PAPER).study_groups()
    depths = (20, 32, 44, 56, 110)
    expected = [f"resnet{d}-{s}" for d in depths for s in "AB"] + [f"plain{d}" for d in depths]
    assert [group.key for group in groups] == expected
    assert len(groups) == 15
    assert Group("resnet110", "B", 110, True) in groups
    plain = [group for group in groups if not group.residual]
    assert [(g.shortcut, g.depth) for g in plain] == [(None, d) for d in depths]


def test_plain_nets_and_repeated_names_give_one_group_each() -> None:
    spec = load_spec(SMOKE, ["groups.archs=[plain20, resnet20, plain20]", "groups.shortcuts=[B, A, B]"])
    assert [group.key for group in spec.study_groups()] == ["plain20", "resnet20-B", "resnet20-A"]


def test_first_look_spec_trains_the_papers_recipe_on_fig6s_networks_without_a_search() -> None:
    spec = load_spec(SPECS / "cifar10_first_look.yaml")
    assert [group.key for group in spec.study_groups()] == ["plain20", "plain56", "resnet56-A"]
    assert not spec.search.searches and spec.search.fixed_point() == {"lr": 0.1, "weight_decay": 1e-4}
    assert spec.train.final_seeds >= 2  # the answer's intervals need two seeds per group
    config = spec.train_config(spec.study_groups()[2], spec.search.fixed_point(), seed=0)
    assert (config.lr, config.weight_decay, config.momentum, config.batch_size) == (0.1, 1e-4, 0.9, 128)  # Sec. 4.2
    assert spec.train.device == "cpu" and spec.resources.gpus_per_worker == 0


def test_smoke_spec_is_tiny_and_cpu_only() -> None:
    spec = load_spec(SMOKE)
    assert [group.key for group in spec.study_groups()] == ["resnet20-A", "plain20"]
    assert spec.search.initial_points == ({"lr": 5.0, "weight_decay": 1e-4},)
    assert (spec.search.lr.low, spec.search.lr.high) == (0.01, 8.0)
    assert (spec.train.iterations, spec.train.batch_size, spec.train.eval_every) == (150, 64, 50)
    assert (spec.search.grace_evals, spec.search.reduction_factor, spec.train.final_seeds) == (2, 2, 1)
    assert spec.train.device == "cpu" and spec.resources.gpus_per_worker == 0.0
    assert spec.resources.workers_per_trial * spec.resources.cpus_per_worker == pytest.approx(0.9)


# ------------------------------------------------------------------------------------------- train_config
def test_train_config_maps_fractions_to_iterations() -> None:
    spec = load_spec(PAPER)
    resnet, plain = spec.study_groups()[1], spec.study_groups()[-1]
    config = spec.train_config(resnet, lr=0.2, weight_decay=3e-4, seed=7)
    assert config.milestones == (32_000, 48_000) and config.iterations == 64_000
    assert (config.arch, config.shortcut, config.lr, config.weight_decay, config.seed) == ("resnet20", "B", 0.2, 3e-4, 7)
    assert (config.val_split, config.batch_size, config.momentum) == (5000, 128, 0.9)
    assert config.eval_every == config.checkpoint_every == 2000
    assert spec.train_config(plain, lr=0.1, weight_decay=1e-4, seed=0).shortcut is None


def test_train_config_val_split_override_retrains_on_the_full_set() -> None:
    spec = load_spec(SMOKE)
    group = spec.study_groups()[0]
    assert spec.train_config(group, lr=0.1, weight_decay=1e-4, seed=1, val_split=0).val_split == 0
    assert spec.train_config(group, lr=0.1, weight_decay=1e-4, seed=1).val_split == 5000


def test_execution_options_reach_every_trial() -> None:
    spec = load_spec(SMOKE, ["train.compile=reduce-overhead", "train.channels_last=false", "train.bf16=true"])
    config = spec.train_config(spec.study_groups()[0], lr=0.1, weight_decay=1e-4, seed=0)
    assert (config.compile, config.channels_last, config.bf16) == ("reduce-overhead", False, True)
    default = load_spec(SMOKE).train_config(spec.study_groups()[0], lr=0.1, weight_decay=1e-4, seed=0)
    assert (default.compile, default.channels_last, default.bf16) == ("none", None, False)


def test_milestones_are_rounded_and_deduplicated_and_eval_every_is_capped() -> None:
    spec = load_spec(SMOKE, ["train.iterations=10", "train.milestones=[0.5, 0.52]", "train.eval_every=50",
                             "search.grace_evals=1"])
    config = spec.train_config(spec.study_groups()[0], lr=0.1, weight_decay=1e-4, seed=0)
    assert config.milestones == (5,)
    assert config.eval_every == config.checkpoint_every == 10


# ------------------------------------------------------------------------------------------- overrides
def test_parse_override_reads_yaml_values() -> None:
    assert parse_override("search.trials_per_group=4") == (["search", "trials_per_group"], 4)
    assert parse_override("dataset.path=/tmp/a=b") == (["dataset", "path"], "/tmp/a=b")
    assert parse_override("train.milestones=[0.4, 0.8]") == (["train", "milestones"], [0.4, 0.8])
    assert parse_override("storage=") == (["storage"], None)


@pytest.mark.parametrize("text", ["search.trials_per_group", "=4", "search..lr=1"])
def test_parse_override_rejects_malformed_text(text: str) -> None:
    with pytest.raises(SpecError, match="key.path=value"):
        parse_override(text)


def test_overrides_apply_nested_and_create_missing_sections() -> None:
    spec = load_spec(SMOKE, [
        "search.trials_per_group=5", "search.lr={low: 0.05, high: 6.0}", "search.weight_decay.low=1e-6",
        "train.milestones=[0.4, 0.8]", "mlflow.experiment=renamed", "storage=s3://bucket/runs",
        "dataset.path=/somewhere/cifar", "search.initial_points=[]",
    ])
    assert spec.search.trials_per_group == 5
    assert (spec.search.lr.low, spec.search.lr.high) == (0.05, 6.0)
    assert spec.search.weight_decay.low == 1e-6  # YAML 1.1 reads 1e-6 as a string; accepted as a number
    assert spec.train.milestones == (0.4, 0.8) and spec.search.initial_points == ()
    assert spec.experiment_name() == "renamed" and spec.storage == "s3://bucket/runs"
    assert spec.dataset.path == "/somewhere/cifar"
    assert spec.train_config(spec.study_groups()[0], lr=0.1, weight_decay=1e-4, seed=0).milestones == (60, 120)


def test_override_of_an_unknown_key_fails_like_one_in_the_file(tmp_path: Path) -> None:
    message = _error("search.learning_rate=0.1")
    assert message.startswith("unknown key search.learning_rate") and "trials_per_group" in message
    file = tmp_path / "bad.yaml"
    file.write_text(SMOKE.read_text() + "\nextra: 1\n")
    assert _error(path=file).startswith("unknown key extra: valid keys at the top level are name, dataset")
    assert "not a mapping" in _error("name.first=1")


# ------------------------------------------------------------------------------------------- validation
BAD_INPUTS = [
    (["trainer.iterations=5"], "unknown key trainer"),
    (["train.foo.bar=1"], "unknown key train.foo"),
    (["search.trials_per_group=three"], "search.trials_per_group must be an integer"),
    (["train.iterations=true"], "train.iterations must be an integer"),
    (["train.bf16=1"], "train.bf16 must be true or false"),
    (["train.compile=fast"], "train.compile='fast' is unknown: use one of none, default, reduce-overhead"),
    (["search.lr=0.1"], "search.lr must be a mapping"),
    (["search.lr.high=.nan"], "search.lr.high must be a finite number"),
    (["groups.archs=[]"], "groups.archs is empty"),
    (["groups.archs=[resnet20, resnet21]"], "groups.archs[1]: unknown architecture 'resnet21': use one of resnet20"),
    (["groups.archs=[cifar_resnet]"], "groups.archs[0]: cifar_resnet has no fixed depth"),
    (["groups.shortcuts=[A, D]"], "groups.shortcuts[1]: unknown shortcut option 'D'"),
    (["search.lr.low=0"], "search.lr.low must be > 0"),
    (["search.lr.low=9.0"], "search.lr.low=9.0 >= search.lr.high=8.0: empty or inverted range"),
    (["search.weight_decay.high=1.0e-5"], "search.weight_decay.low=1e-05 >= search.weight_decay.high"),
    (["search.trials_per_group=-1"], "search.trials_per_group must be >= 0"),
    (["search.trials_per_group=0", "search.initial_points=[]"],
     "search.trials_per_group=0 (no search) trains one configuration in every group: give it as one "
     "search.initial_points entry"),
    (["search.trials_per_group=0", "train.final_seeds=0"],
     "search.trials_per_group=0 and train.final_seeds=0 train nothing: set train.final_seeds >= 1"),
    (["search.sampler=grid"], "search.sampler='grid' is unknown: use one of tpe, gp, random"),
    (["search.early_stopping=median"], "search.early_stopping='median' is unknown: use one of asha, none"),
    (["search.grace_evals=0"], "search.grace_evals must be >= 1"),
    (["search.grace_evals=7"], "search.grace_evals=7 exceeds the 3 evaluations"),
    (["search.reduction_factor=1"], "search.reduction_factor must be >= 2"),
    (["search.initial_points=[{lr: 0.1, momentum: 0.9}]"], "unknown key search.initial_points[0].momentum"),
    (["search.initial_points=[{lr: 0.1}]"], "search.initial_points[0].weight_decay is required"),
    (["search.initial_points=[{lr: 9.0, weight_decay: 1.0e-4}]"], "search.initial_points[0].lr=9.0 is outside"),
    (["search.trials_per_group=1", "search.initial_points=[{lr: 1, weight_decay: 1.0e-4}, "
      "{lr: 2, weight_decay: 1.0e-4}]"], "search.initial_points has 2 points but search.trials_per_group is 1"),
    (["train.milestones=[0.5, 1.0]"], "train.milestones[1]=1.0 is not a fraction in (0, 1)"),
    (["train.milestones=[0.75, 0.5]"], "train.milestones must be increasing"),
    (["train.milestones=[0.001]"], "train.milestones=[0.001] round to iteration 0"),
    (["train.iterations=0"], "train.iterations must be >= 1"),
    (["train.eval_every=0"], "train.eval_every must be >= 1"),
    (["train.final_seeds=-1"], "train.final_seeds must be >= 0"),
    (["train.batch_size=63"], "train.batch_size=63 is not divisible by resources.workers_per_trial=2"),
    (["resources.workers_per_trial=0"], "resources.workers_per_trial must be >= 1"),
    (["resources.cpus_per_worker=0"], "resources.cpus_per_worker must be > 0"),
    (["resources.gpus_per_worker=-0.5"], "resources.gpus_per_worker must be >= 0"),
    (["resources.gpus_per_worker=1.5"], "resources.gpus_per_worker=1.5: fractional GPUs only below one"),
    (["resources.max_concurrent_trials=-1"], "resources.max_concurrent_trials must be >= 0"),
    (["dataset.val_split=0"], "dataset.val_split=0 must be >= 1"),
    (["dataset.name=mnist"], "dataset.name='mnist' is unknown: use one of cifar10, cifar100"),
    (["name=my study"], "name='my study' is not usable as a directory"),
    (["name=../up"], "name='../up' is not usable"),
    (["name=.."], "name='..' is not usable"),
    (["train.device=tpu"], "train.device: unknown device 'tpu'"),
    (["train.momentum=1.0"], "train.momentum: momentum must be in [0, 1)"),
    (["train.normalization=zca"], "train.normalization: unknown normalization 'zca'"),
    (["train.seed=-1"], "train.seed: seed must be >= 0"),
    (["train.device=cuda"], "train.device=cuda but resources.gpus_per_worker=0 reserves no GPU"),
    (["train.checkpoint_minutes=-1"], "train.checkpoint_minutes=-1.0 must be >= 0"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_INPUTS, ids=[case[1][:40] for case in BAD_INPUTS])
def test_bad_input_fails_before_anything_starts_with_one_line(overrides: list[str], message: str) -> None:
    got = _error(*overrides)
    assert got.startswith(message) or message in got, got


def test_integer_gpu_counts_above_one_and_ints_for_floats_are_fine() -> None:
    spec = load_spec(SMOKE, ["resources.gpus_per_worker=2", "resources.cpus_per_worker=1"])
    assert spec.resources.gpus_per_worker == 2.0 and isinstance(spec.resources.cpus_per_worker, float)


def test_missing_name_and_missing_groups_are_named() -> None:
    with pytest.raises(SpecError, match=r"^name is required"):
        spec_from_dict({"groups": {"archs": ["resnet20"]}})
    with pytest.raises(SpecError, match=r"^groups.archs is required"):
        spec_from_dict({"name": "x"})


def test_non_cifar_architecture_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    real = spec_module.model_info

    def fake_model_info(name: str):  # an ImageNet model, as the registry may gain one
        if name == "resnet50":
            return dataclasses.replace(real("resnet20"), name="resnet50", family="imagenet")
        return real(name)

    monkeypatch.setattr(spec_module, "model_info", fake_model_info)
    message = _error("groups.archs=[resnet20, resnet50]")
    assert message.startswith("groups.archs=['resnet20', 'resnet50'] mixes CIFAR and ImageNet architectures")


def test_spec_error_is_a_resnet_core_error() -> None:
    assert issubclass(SpecError, ResnetCoreError)


# ------------------------------------------------------------------------------------------- files
def test_file_problems_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    assert f"spec file {missing} not found" in _error(path=missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    assert f"spec file {broken} is not valid YAML" in _error(path=broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- name\n")
    assert f"spec file {listing}: the top level must be a mapping" in _error(path=listing)
    assert "got NoneType" in _error(path=_write(tmp_path / "empty.yaml", ""))


def _write(file: Path, text: str) -> Path:
    file.write_text(text)
    return file


# ------------------------------------------------------------------------------------------- defaults
def test_tracking_experiment_and_storage_defaults(tmp_path: Path) -> None:
    spec = load_spec(SMOKE)
    root = tmp_path.resolve()
    assert spec.tracking_uri(tmp_path) == f"sqlite:///{root / 'mlflow.db'}"
    assert spec.experiment_name() == "smoke"
    assert spec.storage_path(tmp_path) == str(root / "ray_results")


def test_tracking_and_storage_paths_are_made_absolute_and_uris_kept(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    relative = load_spec(SMOKE, ["mlflow.tracking_uri=sqlite:///runs/m.db", "storage=results/ray"])
    assert relative.tracking_uri(tmp_path) == f"sqlite:///{root / 'runs' / 'm.db'}"
    assert relative.storage_path(tmp_path) == str(root / "results" / "ray")
    remote = load_spec(SMOKE, ["mlflow.tracking_uri=http://mlflow:5000", "storage=s3://bucket/ray"])
    assert remote.tracking_uri(tmp_path) == "http://mlflow:5000"
    assert remote.storage_path(tmp_path) == "s3://bucket/ray"
    absolute = load_spec(SMOKE, [f"storage={root / 'elsewhere'}"])
    assert absolute.storage_path(Path("ignored")) == str(root / "elsewhere")


def test_to_dict_is_plain_yaml_and_round_trips() -> None:
    spec = load_spec(PAPER)
    data = spec.to_dict()
    assert data["groups"]["shortcuts"] == ["A", "B"] and data["train"]["milestones"] == [0.5, 0.75]
    assert data["search"]["lr"] == {"low": 0.01, "high": 0.5}
    reloaded = spec_from_dict(yaml.safe_load(yaml.safe_dump(data)))
    assert isinstance(reloaded, StudySpec) and reloaded == spec


# ------------------------------------------------------------------------------------------- resuming
def test_resuming_with_changed_search_values_names_them_and_the_ways_out() -> None:
    started = load_spec(SMOKE)
    stored = yaml.safe_dump(started.to_dict())
    check_resumable(stored, started)  # the same spec resumes
    check_resumable(None, started)  # a new study
    faster = load_spec(SMOKE, ["train.device=auto", "resources.cpus_per_worker=0.4", "dataset.path=/elsewhere",
                               "train.checkpoint_minutes=1", "mlflow.experiment=other"])
    check_resumable(stored, faster)  # where data and records live, and how trials run, may change
    changed = load_spec(SMOKE, ["search.lr.high=6.0", "train.iterations=300"])
    assert [key for key, _, _ in changed_keys(started.to_dict(), changed)] == ["search.lr.high", "train.iterations"]
    with pytest.raises(SpecError) as error:
        check_resumable(stored, changed)
    message = str(error.value)
    assert "\n" not in message and "search.lr.high (8.0 -> 6.0)" in message
    assert "train.iterations (150 -> 300)" in message
    assert "--set name=" in message and "resume it with the spec it was started with" in message


def test_a_resumed_study_keeps_where_its_trials_train() -> None:
    started = load_spec(SMOKE, ["resources.workers_per_trial=1"])  # one worker: trains in the trial's own process
    assert started.resources.trains_in_trial_process
    stored = yaml.safe_dump(started.to_dict())
    check_resumable(stored, load_spec(SMOKE, ["resources.workers_per_trial=1", "resources.cpus_per_worker=0.5"]))
    for moved in (["resources.workers_per_trial=1", "resources.worker_group=always"], []):  # to a worker group
        with pytest.raises(SpecError) as error:
            check_resumable(stored, load_spec(SMOKE, moved))
        message = str(error.value)
        assert "\n" not in message and "their own process" in message
        assert "--set resources.workers_per_trial=1 --set resources.worker_group=auto" in message
    older = started.to_dict()  # stored before resources.worker_group existed: every trial had a worker group
    del older["resources"]["worker_group"]
    with pytest.raises(SpecError, match="--set resources.workers_per_trial=1 --set resources.worker_group=always"):
        check_resumable(yaml.safe_dump(older), started)
    check_resumable(yaml.safe_dump(older), load_spec(SMOKE, ["resources.workers_per_trial=1",
                                                              "resources.worker_group=always"]))


def test_worker_group_takes_auto_or_always() -> None:
    assert not load_spec(SMOKE).resources.trains_in_trial_process  # smoke.yaml: two workers per trial
    always = load_spec(SMOKE, ["resources.workers_per_trial=1", "resources.worker_group=always"])
    assert not always.resources.trains_in_trial_process
    with pytest.raises(SpecError, match=r"resources.worker_group='sometimes' is unknown: use one of auto, always"):
        load_spec(SMOKE, ["resources.worker_group=sometimes"])


# ------------------------------------------------------------------------------------------- any training field
def test_train_takes_any_training_field_by_name_and_every_run_gets_it() -> None:
    spec = load_spec(SMOKE, ["train.lr_decay=0.2", "train.warmup=false", "train.eval_batch_size=500"])
    assert dict(spec.train.overrides) == {"lr_decay": 0.2, "warmup": False, "eval_batch_size": 500}
    config = spec.train_config(spec.study_groups()[0], lr=0.1, weight_decay=1e-4, seed=0)
    assert (config.lr_decay, config.warmup, config.eval_batch_size) == (0.2, False, 500)
    assert spec_from_dict(yaml.safe_load(yaml.safe_dump(spec.to_dict()))) == spec
    assert spec.to_dict()["train"]["lr_decay"] == 0.2


def test_search_takes_any_numeric_or_categorical_field() -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from study.search import search_space

    spec = load_spec(SMOKE, ["search.momentum={low: 0.8, high: 0.99}", "search.batch_size={choices: [32, 64]}",
                             "search.warmup_window={low: 10, high: 100, log: true}", "search.lr.log=false",
                             "search.initial_points=[{lr: 5.0, weight_decay: 1.0e-4, momentum: 0.9, batch_size: 64,"
                             " warmup_window: 50}]"])
    space = search_space(spec.search)
    assert list(space) == ["lr", "weight_decay", "momentum", "batch_size", "warmup_window"]
    assert space["momentum"] == FloatDistribution(0.8, 0.99, log=False)
    assert space["lr"] == FloatDistribution(0.01, 8.0, log=False) and space["weight_decay"].log
    assert space["batch_size"] == CategoricalDistribution((32, 64))
    assert space["warmup_window"] == IntDistribution(10, 100, log=True)
    values = {"lr": 0.3, "weight_decay": 2e-4, "momentum": 0.95, "batch_size": 32, "warmup_window": 20}
    config = spec.train_config(spec.study_groups()[0], values, seed=0)
    assert (config.momentum, config.batch_size, config.warmup_window, config.lr) == (0.95, 32, 20, 0.3)
    assert spec_from_dict(yaml.safe_load(yaml.safe_dump(spec.to_dict()))) == spec
    assert spec.to_dict()["search"]["momentum"] == {"low": 0.8, "high": 0.99}


def test_a_default_range_dropped_with_null_fixes_the_field() -> None:
    spec = load_spec(SMOKE, ["search.lr=null", "search.initial_points=[]", "train.lr=0.05"])
    assert list(spec.search.space) == ["weight_decay"] and spec.search.lr is None
    assert spec.train_config(spec.study_groups()[0], weight_decay=1e-4, seed=0).lr == 0.05
    assert spec.to_dict()["search"]["lr"] is None
    assert spec_from_dict(yaml.safe_load(yaml.safe_dump(spec.to_dict()))) == spec


def test_groups_cross_any_field_and_each_value_is_its_own_group() -> None:
    spec = load_spec(SMOKE, ["groups.batch_size=[32, 64]"])
    groups = spec.study_groups()
    assert [g.key for g in groups] == ["resnet20-A-batch_size32", "resnet20-A-batch_size64", "plain20-batch_size32",
                                       "plain20-batch_size64"]
    assert [spec.train_config(g, lr=0.1, weight_decay=1e-4, seed=0).batch_size for g in groups] == [32, 64, 32, 64]
    assert spec_from_dict(yaml.safe_load(yaml.safe_dump(spec.to_dict()))) == spec


NEW_BAD_INPUTS = [
    (["train.lr_decya=0.2"], "unknown key train.lr_decya: valid keys under train are iterations"),
    (["train.lr_decya=0.2"], "did you mean train.lr_decay?"),
    (["search.momentun={low: 0.8, high: 0.9}"], "did you mean search.momentum?"),
    (["groups.batchsize=[32]"], "did you mean groups.batch_size?"),
    (["train.arch=resnet56"], "train.arch: arch is set by groups.archs: set it there"),
    (["search.val_split={low: 1, high: 9}"], "search.val_split: val_split is set by dataset.val_split"),
    (["search.iterations={low: 100, high: 200}"], "search.iterations: iterations cannot be searched"),
    (["groups.seed=[1, 2]"], "groups.seed: seed cannot be crossed"),
    (["train.lr_decay=fast"], "train.lr_decay: lr_decay must be"),
    (["train.plateau_patience=0"], "train.plateau_patience: plateau_patience must be a positive integer"),
    (["search.initial_points=[]", "search.momentum={low: 0.8, high: 1.5}"], "search.momentum.high=1.5: momentum must be in [0, 1)"),
    (["search.momentum={low: 0.9, high: 0.8}"], "search.momentum.low=0.9 >= search.momentum.high=0.8"),
    (["search.momentum={high: 0.9}"], "search.momentum needs low and high (or choices)"),
    (["search.normalization={low: 0, high: 1}"], "search.normalization: normalization is not numeric"),
    (["search.initial_points=[]", "search.normalization={choices: [channel, zca]}"], "search.normalization.choices[1]=zca: unknown "
                                                         "normalization 'zca'"),
    (["search.batch_size={low: 32.5, high: 64}"], "search.batch_size.low=32.5: batch_size is an integer"),
    (["search.momentum={low: 0.8, high: 0.9, choices: [0.9]}"], "search.momentum: give either choices or low/high"),
    (["search.momentum={choices: []}"], "search.momentum.choices is empty"),
    (["search.momentum={low: 0.8, high: 0.9}"], "search.initial_points[0].momentum is required"),
    (["search.initial_points=[]", "search.momentum={low: 0.8, high: 0.9}", "groups.momentum=[0.9]"], "search.momentum: momentum is also "
                                                                         "crossed under groups.momentum"),
    (["search.initial_points=[]", "search.lr_decay={low: 0.1, high: 0.5}", "train.lr_decay=0.2"], "search.lr_decay: lr_decay is also fixed"),
    (["groups.batch_size=[]"], "groups.batch_size is empty"),
    (["groups.batch_size=[32, 32]"], "groups.batch_size repeats a value"),
    (["groups.batch_size=[32, 0]"], "groups.batch_size: batch_size must be a positive integer"),
]


@pytest.mark.parametrize(("overrides", "message"), NEW_BAD_INPUTS, ids=[case[1][:40] for case in NEW_BAD_INPUTS])
def test_bad_training_fields_fail_with_one_line_naming_the_key(overrides: list[str], message: str) -> None:
    got = _error(*overrides)
    assert got.startswith(message) or message in got, got


# ------------------------------------------------------------------------------------------- ImageNet studies
TABLE2, TABLE3 = SPECS / "imagenet_table2.yaml", SPECS / "imagenet_table3.yaml"
IMAGENET = {"name": "tiny", "dataset": {"name": "imagenet", "path": "tiny-imagenet"},
            "groups": {"archs": ["resnet18", "plain18"]}}


def test_an_imagenet_study_starts_from_the_imagenet_recipe_of_sec_3_4() -> None:
    spec = spec_from_dict(IMAGENET)
    assert (spec.train.batch_size, spec.train.iterations, spec.train.milestones, spec.train.eval_every) == (
        256, 600_000, (), 5_000)
    assert spec.dataset.val_split == 10_000
    config = spec.train_config(spec.study_groups()[0], {"lr": 0.1, "weight_decay": 1e-4}, seed=0)
    assert (config.dataset, config.lr_schedule, config.lr_reference_batch, config.milestones) == (
        "imagenet", "plateau", 256, ())
    assert (config.image_size, config.crops, config.preset) == (224, 10, "paper")  # Sec. 3.4: 224 crops, 10-crop
    assert config.workers == 0  # one CPU per worker: the worker decodes its own images
    assert spec_from_dict(spec.to_dict()) == spec  # the recipe's values are written out, so they round-trip
    given = spec_from_dict({**IMAGENET, "train": {"batch_size": 64, "image_size": 64, "eval_crops": 1},
                            "resources": {"workers_per_trial": 2, "cpus_per_worker": 6}})
    config = given.train_config(given.study_groups()[0], {"lr": 0.1, "weight_decay": 1e-4}, seed=0)
    assert (given.train.batch_size, given.train.iterations, config.image_size, config.crops) == (64, 600_000, 64, 1)
    assert config.workers == 5  # DataLoader processes from the CPUs Ray gives a worker, one left to train
    assert config.scaled_lr == pytest.approx(0.1 * 64 / 256)  # the paper's lr is for batch 256


def test_cifar_studies_keep_the_cifar_recipe() -> None:
    spec = load_spec(SMOKE)
    config = spec.train_config(spec.study_groups()[0], {"lr": 0.1, "weight_decay": 1e-4}, seed=0)
    assert (config.dataset, config.lr_schedule, config.workers, config.lr_reference_batch) == ("cifar10", "step",
                                                                                               None, None)


def test_the_table_2_and_3_specs_hold_the_papers_networks() -> None:
    table2, table3 = load_spec(TABLE2), load_spec(TABLE3)
    assert [g.key for g in table2.study_groups()] == ["plain18", "plain34", "resnet18-A", "resnet34-A"]
    assert [g.key for g in table3.study_groups()] == ["resnet34-A", "resnet34-B", "resnet34-C", "resnet50-B"]
    for spec in (table2, table3):
        assert spec.dataset.name == "imagenet" and spec.train.batch_size == 256
        assert (spec.resources.workers_per_trial, spec.resources.gpus_per_worker) == (8, 1)
        config = spec.train_config(spec.study_groups()[-1], {"lr": 0.1, "weight_decay": 1e-4}, seed=0)
        assert config.crops == 10 and config.workers == 9 and config.batch_size % 8 == 0


IMAGENET_BAD_INPUTS = [
    ({"groups": {"archs": ["resnet20"]}}, "groups.archs: resnet20 is a CIFAR architecture but dataset.name=imagenet: "
                                          "use ImageNet architectures (resnet18, "),
    ({"dataset": {"name": "cifar10"}}, "groups.archs: resnet18 is an ImageNet architecture but dataset.name=cifar10: "
                                       "use CIFAR-10 architectures (resnet20, "),
    ({"groups": {"archs": ["plain34-C"]}}, "groups.archs[0]: plain34 is a plain net (no shortcuts, paper Fig. 3 "
                                           "middle), so it takes no option C: write plain34"),
    ({"groups": {"archs": ["resnet34-D"]}}, "groups.archs[0]: unknown shortcut option 'D' of resnet34: use "
                                            "resnet34-A, "),
    ({"groups": {"archs": ["resnet18", "resnet20"]}}, "groups.archs=['resnet18', 'resnet20'] mixes CIFAR and ImageNet"),
    ({"resources": {"workers_per_trial": 3}}, "train.batch_size=256 is not divisible by resources.workers_per_trial=3"),
]


@pytest.mark.parametrize(("change", "message"), IMAGENET_BAD_INPUTS, ids=[case[1][:40] for case in IMAGENET_BAD_INPUTS])
def test_imagenet_bad_input_is_one_line(change: dict, message: str) -> None:
    data = {**IMAGENET, **{key: {**IMAGENET.get(key, {}), **value} for key, value in change.items()}}
    with pytest.raises(SpecError) as error:
        spec_from_dict(data)
    assert str(error.value).startswith(message) and "\n" not in str(error.value), str(error.value)


def test_a_pinned_shortcut_option_makes_one_group() -> None:
    spec = spec_from_dict({**IMAGENET, "groups": {"archs": ["resnet34", "resnet50-B", "plain34"],
                                                  "shortcuts": ["A", "C"]}})
    assert [(g.key, g.shortcut) for g in spec.study_groups()] == [
        ("resnet34-A", "A"), ("resnet34-C", "C"), ("resnet50-B", "B"), ("plain34", None)]
