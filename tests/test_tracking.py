"""W&B offline tracking, checked by reading the offline run's own files (no network, no mock)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from .conftest import TINY, run_fit

wandb = pytest.importorskip("wandb")


def read_wandb_records(path: Path):
    """Records of a .wandb transaction log (LevelDB-log framing of protobuf ``Record`` messages)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    pos, block = 7, 32768
    chunks: list[bytes] = []
    while pos + 7 <= len(data):
        left = block - (pos % block)
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        payload = data[pos:pos + length]
        pos += length
        if kind == 0 and length == 0:
            continue
        chunks.append(payload)
        if kind in (1, 4):  # FULL or LAST
            rec = pb.Record()
            rec.ParseFromString(b"".join(chunks))
            chunks = []
            yield rec


def test_offline_wandb_run_holds_summary_alpha_tables_and_artifacts(tmp_path):
    out = tmp_path / "wb"
    run_fit("--config", str(TINY), "--out", str(out), "logger.kind=wandb", "logger.mode=offline",
            env={"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_CACHE_DIR": str(tmp_path / "cache"),
                 "WANDB_DATA_DIR": str(tmp_path / "data"), "WANDB_CONFIG_DIR": str(tmp_path / "config")})
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((out / "wandb").iterdir())
    run = runs[0]
    records = list(read_wandb_records(next(run.glob("*.wandb"))))
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            for u in r.summary.update:
                summary[u.key or "/".join(u.nested_key)] = json.loads(u.value_json)
    assert 0 <= summary["test_accuracy"] <= 1 and summary["latency_ms"] > 0
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
