"""Bad input in, the package's own error out: fuzzed configs, NaN training, collapse guard."""

from __future__ import annotations

import copy
import json
import random

import pytest
import torch

from hwnas_darts.config import config_from_dict, config_to_dict, load_config
from hwnas_darts.errors import HwnasError, TrainingError
from hwnas_darts.network import build_network
from hwnas_darts.space import SearchSpace
from hwnas_darts.supernet import SuperNet

from .conftest import TINY

VALUES = [-1, 0, 1, 2, 3, 7, 0.5, 1.5, -0.2, "abc", "", None, True, False, [], {}, "relu", "skip", "conv_k3",
          "s2d_n4", "auto", [1, 2], {"x": 1}, 100000000, "cuda", "gumbel", "softmax", 1e-12]


def _leaves(d, prefix=()):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _leaves(v, prefix + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _leaves(v, prefix + (i,))
        yield prefix
    else:
        yield prefix


def _mutate(data, rng):
    data = copy.deepcopy(data)
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(list(_leaves(data)))
        if not path:
            continue
        node = data
        for key in path[:-1]:
            node = node[key]
        if rng.random() < 0.1 and isinstance(node, dict):
            node[f"bogus{rng.randint(0, 9)}"] = 1  # an unknown key
        else:
            node[path[-1]] = rng.choice(VALUES)
    return data


def test_fuzzed_configs_run_or_fail_cleanly(tmp_path, capsys):
    """300 randomly mutated tiny configs: each is refused with the package's error, or its space
    builds and a supernet and a sampled network run; two of the valid ones run the whole fit."""
    import yaml

    from hwnas_darts.fit import main

    base = config_to_dict(load_config(TINY))
    rng = random.Random(1234)
    ok, failed = [], 0
    for _ in range(300):
        data = _mutate(base, rng)
        try:
            cfg = config_from_dict(data)
            space = SearchSpace.from_config(cfg)
            x = torch.randn(2, *space.input_shape)
            net = SuperNet(space, cfg.search.relaxation, 1.0).train()
            net(x).sum().backward()
            build_network(space, space.sample(0)).eval()(x)
            ok.append(data)
        except HwnasError:
            failed += 1
    assert len(ok) > 10 and failed > 100  # both kinds of outcome really happen
    runnable = [d for d in ok if d["data"]["dataset"] == "synthetic" and d["logger"]["kind"] != "wandb"
                and d["hardware"]["device"] in ("cpu", "auto") and d["trainer"]["devices"] == 1]
    for i, data in enumerate(runnable[:2]):
        data = dict(data, out=str(tmp_path / f"run{i}"))
        data["hardware"] = dict(data["hardware"], calibration_archs=4, validation_archs=3, min_run_time=0.01)
        path = tmp_path / f"c{i}.yaml"
        path.write_text(yaml.safe_dump(data))
        capsys.readouterr()
        rc = main(["--config", str(path), "trainer.progress=false"])
        err = capsys.readouterr().err
        if rc == 0:  # a finished run: every contract file, a real accuracy
            m = json.loads((tmp_path / f"run{i}" / "metrics.json").read_text())
            assert 0.0 <= m["test_accuracy"] <= 1.0 and (tmp_path / f"run{i}" / "model.ts").is_file()
        else:  # refused at run time: the package's error, said plainly, no traceback, no metrics
            assert rc == 2 and "error" in err.lower() and "Traceback" not in err, err
            assert not (tmp_path / f"run{i}" / "metrics.json").exists()


@pytest.mark.parametrize("overrides,match", [
    (["space.stages.0.width=100000000"], r"space.stages.0.width: must be <= 16384, got 100000000"),
    (["data.batch_size=0"], "data.batch_size: must be >= 1"),
    (["search.tau_end=0"], "search.tau_end: must be > 0"),
    (["data.val_fraction=1"], "data.val_fraction: must be < 1"),
    (["search.epochs=-2"], "search.epochs: must be >= 0"),
    (["space.stages.1.ops=[mb_k3_e99]"], "expansion"),
])
def test_out_of_range_values(overrides, match):
    with pytest.raises(HwnasError, match=match):
        cfg = load_config(TINY, overrides)
        SearchSpace.from_config(cfg)


def test_nan_loss_stops_the_search_naming_the_step(tiny_space, tiny_cfg):
    from torch.utils.data import DataLoader

    from hwnas_darts._pl import pl
    from hwnas_darts.search import SearchModule

    x = torch.full((8, 1, 16, 16), float("nan"))
    y = torch.zeros(8, dtype=torch.long)
    batches = [{"train": (x, y), "val": (x, y)}] * 4
    loader = DataLoader(batches, batch_size=None)
    module = SearchModule(tiny_space, tiny_cfg.search)
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    with pytest.raises(TrainingError, match=r"is nan at epoch 0, step 0"):
        trainer.fit(module, train_dataloaders=loader)
