"""Smoke runs of the benchmark and study tools on the tiny config (not the studies themselves)."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import ROOT, TINY


def test_bench_search_smoke(tmp_path):
    out = tmp_path / "b.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_search.py"), "--config", str(TINY), "--iters", "2",
                           "--warmup", "1", "--json", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert set(res["relaxations"]) == {"single_path", "gumbel", "softmax"}
    for r in res["relaxations"].values():
        assert r["iteration_s"] > 0 and r["ratio_to_floor"] > 0 and r["peak_bytes"] > 0
    assert "x floor" in proc.stdout


def test_compare_search_smoke(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "compare_search.py"), "--config", str(TINY), "--out",
                           str(tmp_path / "s"), "--hw", "objective.form=score objective.latency_weight=-0.3",
                           "--flops", "objective.form=score objective.latency_weight=-0.3", "--methods", "hw,flops,random,hand",
                           "--random-max", "2", "--random-steps", "3", "--buckets", "2", "retrain.steps_per_epoch=3",
                           "search.steps_per_epoch=3"],
                          capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    study = json.loads((tmp_path / "s" / "study.json").read_text())
    methods = {r["method"] for r in study["rows"]}
    assert methods == {"hw", "flops", "random", "hand"}
    assert set(study["hypervolume"]) == methods
    assert (tmp_path / "s" / "study.png").is_file() and "Hypervolume" in (tmp_path / "s" / "study.md").read_text()
