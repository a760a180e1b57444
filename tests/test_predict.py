from __future__ import annotations

import numpy as np
import pytest
import torch

from hwnas_darts.errors import DataError, ModelFileError
from hwnas_darts.export import export_program, export_torchscript
from hwnas_darts.network import build_network
from hwnas_darts.predict import load_model, main, predict

from .test_data import write_idx

META = {"arch": "x", "input_shape": [1, 16, 16], "mean": [0.5], "std": [0.25], "class_names": ["a", "b", "c", "d"]}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, ):
    from hwnas_darts.config import load_config
    from hwnas_darts.space import SearchSpace

    from .conftest import TINY

    space = SearchSpace.from_config(load_config(TINY))
    d = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    net = build_network(space, space.sample(2)).eval()
    assert export_torchscript(net, d / "model.ts", (1, 16, 16), META).ok
    assert export_program(net, d / "model.pt2", (1, 16, 16), META).ok
    return d, net


def test_predict_images_idx_and_directories(tmp_path, exported):
    from PIL import Image

    d, net = exported
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (5, 16, 16), dtype=np.uint8)
    for i, a in enumerate(imgs):
        Image.fromarray(a).save(tmp_path / f"img{i}.png")
    write_idx(tmp_path / "batch-idx3-ubyte.gz", imgs)
    preds = predict(d / "model.ts", [tmp_path / "img0.png", tmp_path / "batch-idx3-ubyte.gz"])
    assert len(preds) == 6
    # same preprocessing as training: (x/255 - mean)/std
    x = (torch.from_numpy(imgs).float()[:, None] / 255 - 0.5) / 0.25
    expected = net(x).argmax(1).tolist()
    assert [p.label for p in preds[1:]] == expected and preds[0].label == expected[0]
    assert all(0 <= p.probability <= 1 and p.class_name in META["class_names"] for p in preds)
    # the .pt2 program gives the same predictions
    assert [p.label for p in predict(d / "model.pt2", [tmp_path])] == [p.label for p in predict(d / "model.ts", [tmp_path])]


def test_rgb_images_are_converted_and_resized_unless_strict(tmp_path, exported):
    from PIL import Image

    d, _ = exported
    Image.new("RGB", (20, 20), (10, 20, 30)).save(tmp_path / "rgb.jpg")
    assert len(predict(d / "model.ts", [tmp_path / "rgb.jpg"])) == 1
    with pytest.raises(DataError, match="20x20, the model takes 16x16"):
        predict(d / "model.ts", [tmp_path / "rgb.jpg"], strict=True)


def test_bad_inputs(tmp_path, exported):
    d, _ = exported
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="cannot read the image"):
        predict(d / "model.ts", [tmp_path / "bad.png"])
    write_idx(tmp_path / "big-idx3-ubyte.gz", np.zeros((2, 28, 28), dtype=np.uint8))
    with pytest.raises(DataError, match="the model takes 1x16x16"):
        predict(d / "model.ts", [tmp_path / "big-idx3-ubyte.gz"])
    with pytest.raises(DataError, match="not found"):
        predict(d / "model.ts", [tmp_path / "missing.png"])


def test_corrupted_and_foreign_model_files(tmp_path, exported):
    d, net = exported
    blob = (d / "model.ts").read_bytes()
    (tmp_path / "cut.ts").write_bytes(blob[: len(blob) // 3])
    with pytest.raises(ModelFileError, match="not a readable TorchScript"):
        load_model(tmp_path / "cut.ts")
    (tmp_path / "text.pt2").write_text("hello")
    with pytest.raises(ModelFileError, match="not a readable torch.export"):
        load_model(tmp_path / "text.pt2")
    torch.jit.save(torch.jit.trace(net, torch.zeros(2, 1, 16, 16)), str(tmp_path / "foreign.ts"))
    with pytest.raises(ModelFileError, match="not exported by hwnas_darts"):
        load_model(tmp_path / "foreign.ts")
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "none.ts")


def test_cli(tmp_path, exported, capsys):

    d, _ = exported
    imgs = np.random.default_rng(1).integers(0, 255, (4, 16, 16), dtype=np.uint8)
    write_idx(tmp_path / "x-idx3-ubyte.gz", imgs)
    preds = predict(d / "model.ts", [tmp_path / "x-idx3-ubyte.gz"])
    write_idx(tmp_path / "y-idx1-ubyte.gz", np.array([p.label for p in preds], dtype=np.uint8))
    assert main(["--model", str(d / "model.ts"), str(tmp_path / "x-idx3-ubyte.gz"), "--labels",
                 str(tmp_path / "y-idx1-ubyte.gz"), "--output", str(tmp_path / "p.csv")]) == 0
    out = capsys.readouterr().out
    assert "accuracy: 1.0000 (4/4)" in out
    assert (tmp_path / "p.csv").read_text().count("\n") == 5
    assert main(["--model", str(tmp_path / "none.ts"), str(tmp_path)]) == 2
    assert "model file not found" in capsys.readouterr().err
