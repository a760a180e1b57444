"""LitData shards: written from a folder, read back row for row as the folder's own cache, reused,
refused with a named file when truncated or foreign, and shared out disjointly between two DDP
ranks (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

pytest.importorskip("litdata")

from hwnas_darts.config import load_config  # noqa: E402
from hwnas_darts.datasets import load_arrays  # noqa: E402
from hwnas_darts.errors import DataError  # noqa: E402
from hwnas_darts.shards import SHARDS_META, load_split, optimize_folder  # noqa: E402

from .conftest import ROOT  # noqa: E402


def _folder(root, n=40, test=10, numbered=False):
    """Three classes of PNGs under train/ and test/; ``numbered``: image i is the constant grey i."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for split, count in (("train", n), ("test", test)):
        for i in range(count):
            cls = ("ant", "bee", "cow")[i % 3]
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            arr = np.full((8, 8), i, np.uint8) if numbered else rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / split / cls / f"{i:05d}.png")
    return root


def _cfg(*overrides):
    return load_config(None, list(overrides)).data


def test_shards_hold_the_folders_rows_and_are_streamed_once(tmp_path):
    folder = _folder(tmp_path / "f")
    meta = optimize_folder(folder, tmp_path / "shards", size=8, channels=3, workers=1)
    assert meta["splits"] == {"train": {"dir": "train", "images": 40}, "test": {"dir": "test", "images": 10}}
    assert meta["classes"] == ["ant", "bee", "cow"] and (tmp_path / "shards" / SHARDS_META).is_file()
    shards = load_arrays(_cfg("data.dataset=litdata", f"data.root={tmp_path / 'shards'}"))
    direct = load_arrays(_cfg("data.dataset=imagefolder", f"data.root={folder}", "data.image_size=8"))
    assert shards.info.num_classes == 3 and shards.info.size == 8 and shards.info.channels == 3
    for a, b in ((shards.train_x[:], direct.train_x[:]), (shards.test_x[:], direct.test_x[:]),
                 (shards.train_y, direct.train_y), (shards.test_y, direct.test_y)):
        assert torch.equal(a, b)
    assert np.allclose(shards.mean, direct.mean) and np.allclose(shards.std, direct.std)
    again = load_split(tmp_path / "shards", "train")
    assert not again.built, "the second read must open the row cache, not stream the shards again"


def test_shards_and_the_folder_give_the_same_batches_for_the_same_seed(tmp_path):
    """Written by two worker processes (as a real run writes them), the shards still hold the
    folder's rows in the folder's order, so a seeded data module draws the same split and the same
    augmented batches from either source."""
    from hwnas_darts.data import HwnasDataModule

    folder = _folder(tmp_path / "f", n=60)
    optimize_folder(folder, tmp_path / "shards", size=8, channels=3, workers=2)
    common = ("data.image_size=8", "data.batch_size=6", "data.search_subset=null", "data.val_fraction=0.25")
    shards = _cfg("data.dataset=litdata", f"data.root={tmp_path / 'shards'}", *common)
    direct = _cfg("data.dataset=imagefolder", f"data.root={folder}", *common)

    def module(cfg, mode):
        dm = HwnasDataModule(cfg, seed=5, mode=mode)
        dm.setup()
        return dm

    s_search, f_search = module(shards, "search"), module(direct, "search")
    s_retrain, f_retrain = module(shards, "retrain"), module(direct, "retrain")
    assert np.array_equal(s_search.train_idx, f_search.train_idx) and np.array_equal(s_search.val_idx, f_search.val_idx)
    a, b = next(iter(s_search.train_dataloader()))[0], next(iter(f_search.train_dataloader()))[0]
    for part in ("train", "val"):
        assert torch.equal(a[part][0], b[part][0]) and torch.equal(a[part][1], b[part][1])
    a, b = next(iter(s_retrain.train_dataloader())), next(iter(f_retrain.train_dataloader()))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_shards_without_a_test_split_and_a_size_mismatch(tmp_path):
    folder = _folder(tmp_path / "f") / "train"  # a plain folder of classes: the test part is split off seeded
    optimize_folder(folder, tmp_path / "s", size=8, channels=1, workers=1)
    a = load_arrays(_cfg("data.dataset=litdata", f"data.root={tmp_path / 's'}", "data.test_fraction=0.25"))
    assert len(a.train_y) + len(a.test_y) == 40 and len(a.test_y) == 10 and a.info.channels == 1
    with pytest.raises(DataError, match="hold 8px images"):
        load_arrays(_cfg("data.dataset=litdata", f"data.root={tmp_path / 's'}", "data.image_size=16"))


def test_damaged_and_foreign_shards_are_named(tmp_path):
    folder = _folder(tmp_path / "f")
    optimize_folder(folder, tmp_path / "s", size=8, workers=1)
    chunk = sorted((tmp_path / "s" / "train").glob("*.bin"))[0]
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"{chunk.name}: shard chunk is {len(data) // 2} bytes"):
        load_arrays(_cfg("data.dataset=litdata", f"data.root={tmp_path / 's'}"))
    with pytest.raises(DataError, match="not a shard directory written by this package"):
        load_arrays(_cfg("data.dataset=litdata", f"data.root={folder}"))
    # shards of some other program, given this package's metadata: the first item is named
    import litdata

    foreign = tmp_path / "foreign"
    litdata.optimize(fn=_foreign_items, inputs=[0, 1], output_dir=str(foreign / "train"), num_workers=1,
                     chunk_bytes="1MB")
    (foreign / SHARDS_META).write_text(json.dumps({"format": 1, "classes": ["a", "b"], "size": 8, "channels": 3,
                                                   "splits": {"train": {"dir": "train", "images": 4}}}))
    with pytest.raises(DataError, match=r"chunk-.*item 0 is not an image shard item"):
        load_split(foreign, "train")
    assert not list((tmp_path / "s").parent.glob(".*tmp*")), "a failed write left a temporary directory"


def _foreign_items(i):
    for j in range(2):
        yield {"text": f"row {i}-{j}", "value": j}


def test_the_command_line_writes_and_refuses_to_overwrite(tmp_path):
    folder = _folder(tmp_path / "f", n=12, test=3)
    cmd = [sys.executable, "-m", "hwnas_darts.shards", str(folder), str(tmp_path / "s"), "--image-size", "8",
           "--workers", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "train 12, test 3 images at 8px" in res.stdout and "data.dataset=litdata" in res.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert again.returncode == 2 and "exists and is not empty" in again.stderr and "--force" in again.stderr


_DDP_SCRIPT = """
import json, os, sys
import torch
from hwnas_darts._pl import pl
from hwnas_darts.config import load_config
from hwnas_darts.data import HwnasDataModule

class Seen(pl.LightningModule):
    def __init__(self, mean, std):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.mean, self.std, self.seen = mean[0], std[0], []
    def training_step(self, batch, i):
        x, y = batch
        self.seen += [int(v) for v in ((x[:, 0, 0, 0] * self.std + self.mean) * 255).round().tolist()]
        return (self.w * x.mean()).sum()
    def on_train_end(self):
        with open(os.path.join(sys.argv[2], f"rank{self.global_rank}.json"), "w") as fh:
            json.dump(self.seen, fh)
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

cfg = load_config(None, ["data.dataset=litdata", "data.root=" + sys.argv[1], "data.augment=false", "data.batch_size=8"])
dm = HwnasDataModule(cfg.data, seed=3, mode="retrain")
dm.setup()
trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
trainer.fit(Seen(*dm.normalization), train_dataloaders=dm.train_dataloader())
"""


@pytest.mark.distributed
def test_two_ddp_ranks_read_disjoint_shares_of_the_shards(tmp_path):
    folder = _folder(tmp_path / "f", n=96, test=6, numbered=True)
    optimize_folder(folder, tmp_path / "s", size=8, channels=1, workers=1)
    script = tmp_path / "ddp_shards.py"
    script.write_text(textwrap.dedent(_DDP_SCRIPT))
    env = dict(os.environ, PYTHONPATH=str(ROOT), MASTER_ADDR="127.0.0.1")
    res = subprocess.run([sys.executable, str(script), str(tmp_path / "s"), str(tmp_path)], capture_output=True,
                         text=True, cwd=tmp_path, env=env, timeout=400)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert len(r0) == len(r1) == 48, (len(r0), len(r1))  # 96 images, 2 ranks, 6 batches of 8 each
    assert not set(r0) & set(r1), "the ranks read overlapping images"
    assert set(r0) | set(r1) == set(range(96)) and len(set(r0)) == 48
