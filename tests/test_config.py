from __future__ import annotations

import pytest

from hwnas_darts.config import (Config, ConfigError, apply_overrides, config_from_dict, config_to_dict, config_to_yaml,
                                load_config)
from hwnas_darts.errors import ConfigError as BaseConfigError

from .conftest import ROOT, TINY


def test_default_yaml_equals_builtin_defaults():
    # configs/fashion_mnist.yaml documents the defaults; it must not drift from the dataclasses
    assert load_config(ROOT / "configs" / "fashion_mnist.yaml") == Config()


@pytest.mark.parametrize("name", ["fashion_mnist.yaml", "tiny.yaml", "cifar10.yaml"])
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.name


def test_unknown_key_lists_valid_keys_and_suggests():
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"search": {"epocs": 3}})
    msg = str(exc.value)
    assert "search.epocs: unknown key" in msg
    assert "did you mean 'epochs'" in msg
    assert "relaxation" in msg  # the valid keys are listed


def test_every_problem_reported_with_its_path():
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"search": {"epochs": -1, "tau_start": 0.0}, "data": {"val_fraction": 1.5},
                          "retrain": {"epochs": "three"}})
    probs = exc.value.problems
    # type and range problems are reported together, one line per YAML path
    assert len(probs) == 4, probs
    assert "retrain.epochs: expected an integer, got 'three'" in probs
    assert "search.epochs: must be >= 0, got -1" in probs
    assert "search.tau_start: must be > 0, got 0.0" in probs
    assert "data.val_fraction: must be < 1, got 1.5" in probs


def test_values_that_scale_time_have_upper_bounds():
    # a typo that would time for hours (the tiny config once accepted min_run_time=1e9) is refused
    with pytest.raises(ConfigError, match="hardware.min_run_time: must be <= 30, got 1000000000.0"):
        load_config(TINY, ["hardware.min_run_time=1e9"])
    for key in ("search.epochs=100000", "retrain.epochs=5000", "hardware.calibration_archs=100000",
                "derive.num_samples=5000", "data.num_workers=1000"):
        with pytest.raises(ConfigError, match=key.split("=")[0]):
            load_config(TINY, [key])


def test_weight_sampling_other_than_the_policy_needs_reinforce():
    for choice in ("uniform", "sandwich"):
        with pytest.raises(ConfigError, match=f"search.weight_sampling={choice} needs search.relaxation=reinforce"):
            load_config(TINY, ["search.relaxation=softmax", f"search.weight_sampling={choice}"])
        assert load_config(TINY, [f"search.weight_sampling={choice}"]).search.weight_sampling == choice
    with pytest.raises(ConfigError, match="search.sandwich_random"):
        load_config(TINY, ["search.weight_sampling=sandwich", "search.sandwich_random=-1"])


def test_choices_and_nested_unknown_keys():
    with pytest.raises(ConfigError) as exc:
        config_from_dict({"search": {"relaxation": "dart"}, "space": {"stages": [{"widht": 8, "ops": ["skip"]}]}})
    msg = str(exc.value)
    assert "search.relaxation: must be one of 'softmax', 'gumbel' or 'reinforce', got 'dart'" in msg
    assert "space.stages.0.widht: unknown key (did you mean 'width'?)" in msg


def test_config_errors_are_package_errors_that_the_cli_reports(capsys):
    """A bad value raises the package's ConfigError (catchable as HwnasError), and the CLI turns
    it into exit code 2 with the offending key on stderr instead of a traceback."""
    from hwnas_darts.errors import HwnasError
    from hwnas_darts.fit import main

    with pytest.raises(BaseConfigError) as exc:
        load_config(TINY, ["search.epochs=-2"])
    assert isinstance(exc.value, HwnasError) and isinstance(exc.value, ConfigError)
    assert main(["--config", str(TINY), "search.epochs=-2"]) == 2
    err = capsys.readouterr().err
    assert "search.epochs" in err and "Traceback" not in err


def test_overrides_dotted_lists_and_yaml_values():
    data = config_to_dict(load_config(TINY))
    out = apply_overrides(data, ["search.epochs=5", "space.stages.0.width=24", "--data.augment=false",
                                 "space.stages.1.ops=[conv_k3, skip]"])
    cfg = config_from_dict(out)
    assert cfg.search.epochs == 5
    assert cfg.space.stages[0].width == 24
    assert cfg.data.augment is False
    assert cfg.space.stages[1].ops == ["conv_k3", "skip"]


@pytest.mark.parametrize("bad", ["search.epochs", "space.stages.9.width=3", "=3"])
def test_bad_overrides(bad):
    with pytest.raises(ConfigError):
        apply_overrides(config_to_dict(Config()), [bad])


def test_yaml_round_trip(tmp_path):
    cfg = load_config(TINY, ["search.epochs=3", "objective.latency_target=2.5"])
    path = tmp_path / "c.yaml"
    path.write_text(config_to_yaml(cfg))
    assert load_config(path) == cfg


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_latency_target_number_or_auto():
    assert load_config(TINY, ["objective.latency_target=3.5"]).objective.latency_target == 3.5
    with pytest.raises(ConfigError, match="objective.latency_target"):
        load_config(TINY, ["objective.latency_target=fast"])
    with pytest.raises(ConfigError, match="objective.latency_target"):
        load_config(TINY, ["objective.latency_target=-1"])


def test_holdout_needs_full_train():
    from hwnas_darts.errors import ConfigError

    assert load_config(None, ["retrain.holdout=100"]).retrain.holdout == 100
    with pytest.raises(ConfigError, match="retrain.holdout needs retrain.full_train=true"):
        load_config(None, ["retrain.holdout=100", "retrain.full_train=false"])


def test_retrain_augment_takes_flip():
    """retrain.augment: true / false / null / flip, from the command line too; anything else is refused."""
    from hwnas_darts.config import ConfigError

    assert load_config(None, ["retrain.augment=flip"]).retrain_augment() == "flip"
    assert load_config(None, ["retrain.augment=true"]).retrain_augment() is True
    assert load_config(None, ["retrain.augment=null", "data.augment=false"]).retrain_augment() is False
    with pytest.raises(ConfigError, match="retrain.augment"):
        load_config(None, ["retrain.augment=crop"])
