"""W&B offline tracking, checked by reading the offline run's own files (no network, no mock)."""

from __future__ import annotations

import json

import pytest

from .conftest import TINY, run_fit

wandb = pytest.importorskip("wandb")

from hwnas_darts.tracking import read_offline_records, read_offline_summary  # noqa: E402


def test_offline_wandb_run_holds_summary_alpha_tables_and_artifacts(tmp_path):
    out = tmp_path / "wb"
    run_fit("--config", str(TINY), "--out", str(out), "logger.kind=wandb", "logger.mode=offline",
            env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_CACHE_DIR": str(tmp_path / "cache"),
                 "WANDB_DATA_DIR": str(tmp_path / "data"), "WANDB_CONFIG_DIR": str(tmp_path / "config")})
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((out / "wandb").iterdir())
    run = runs[0]
    records = list(read_offline_records(next(run.glob("*.wandb"))))
    summary = read_offline_summary(out)
    metrics = json.loads((out / "metrics.json").read_text())
    # the summary holds the final metrics, exactly as metrics.json has them
    for key in ("test_accuracy", "latency_ms", "latency_ms_predicted", "macs", "params", "score", "arch"):
        assert summary[key] == metrics[key], key
    kinds = [r.WhichOneof("record_type") for r in records]
    history = [r.history for r in records if r.WhichOneof("record_type") == "history"]
    table_epochs = []
    for h in history:
        items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in h.item}
        if items.get("search/alpha_table/_type") == "table-file":
            table_epochs.append(items["search/alpha_epoch"])
    assert table_epochs == [0, 1], table_epochs  # one alpha table per search epoch
    tables = list((run / "files" / "media" / "table").rglob("*.table.json"))
    assert tables
    t = json.loads(tables[0].read_text())
    assert t["columns"] == ["epoch", "layer", "op", "probability"] and len(t["data"]) > 0
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert artifacts, kinds
    files = {c.path for a in artifacts for c in a.manifest.contents}
    assert {"model.ts", "arch.json", "lut.json", "report.md"} <= files
    config = [r.config for r in records if r.WhichOneof("record_type") == "config"]
    keys = {u.key for c in config for u in c.update}
    assert {"search", "objective", "hardware"} <= keys


def test_wandb_not_imported_for_other_loggers(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from hwnas_darts.config import load_config; from hwnas_darts.tracking import make_tracker; "
            f"t = make_tracker(load_config({str(TINY)!r}), __import__('pathlib').Path({str(tmp_path)!r})); "
            "assert 'wandb' not in sys.modules, 'wandb imported'; print(t.kind)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "none"
