"""Roofline counters, formulas, timing, the latency table and the learned latency model."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hwnas_darts.errors import LUTError, LUTMissError
from hwnas_darts.hardware.lut import LatencyTable, Row, build_table
from hwnas_darts.hardware.measure import MeasureSettings, measure_module, measure_modules
from hwnas_darts.hardware.model import LatencyModel, fit_calibration, rank_metrics
from hwnas_darts.hardware.roofline import ByteCounter, Roofline, count_bytes, count_macs, intensity
from hwnas_darts.space.ops import build_op
from hwnas_darts.space.space import OpKey

from .conftest import has_cuda

FAST = dict(min_run_time=0.01, rounds=2, warmup=1, min_samples=3)


# ---------------------------------------------------------------- counters
def test_macs_and_bytes_of_a_3x3_conv():
    m = build_op("conv_k3_relu", 4, 8, 1)
    x = torch.randn(2, 4, 8, 8)
    assert count_macs(m, x) == 2 * 8 * 8 * 8 * 4 * 9  # out elements x c_in x k x k
    f = 4  # float32 bytes
    conv = (2 * 4 * 64 + 8 * 4 * 9 + 2 * 8 * 64) * f  # input + weight + output
    bn = (2 * 8 * 64 + 4 * 8 + 2 * 8 * 64) * f  # input + 4 parameter vectors + output
    relu = (2 * 8 * 64 * 2) * f
    assert count_bytes(m, x) == conv + bn + relu


def test_pixel_unshuffle_moves_bytes_without_macs():
    m = build_op("s2d_n2_relu", 4, 16, 2)
    x = torch.randn(2, 4, 8, 8)
    assert count_macs(m, x) == 0
    assert count_bytes(m, x) == 2 * x.numel() * 4  # read once, written once


def test_views_move_nothing_and_peak_memory_is_tracked():
    counter = ByteCounter()
    x = torch.randn(4, 16)
    with torch.inference_mode(), counter:
        y = x.view(16, 4).t()
        z = y + 1
    assert z.shape == (4, 16)
    assert counter.bytes == 2 * 64 * 4  # only the add: read + write
    assert counter.peak_bytes >= 64 * 4


def test_linear_macs():
    m = torch.nn.Linear(16, 10)
    assert count_macs(m, torch.randn(3, 16)) == 3 * 16 * 10


# ---------------------------------------------------------------- roofline formulas
def test_roofline_formulas():
    r = Roofline(peak_flops=100e9, bandwidth=10e9)
    assert r.ridge == pytest.approx(10.0)
    assert r.ideal_rate(2.0) == pytest.approx(20e9)  # memory bound: b * I
    assert r.ideal_rate(50.0) == pytest.approx(100e9)  # compute bound: C_max
    # 1e6 MACs = 2e6 FLOP over 1e5 bytes (I = 20, compute bound) in 0.1 ms -> 20 GFLOP/s achieved, E = 0.2
    assert intensity(1e6, 1e5) == pytest.approx(20.0)
    assert r.efficiency(1e6, 1e5, 0.1) == pytest.approx(0.2)
    # memory bound: I = 2, ideal 20 GFLOP/s, achieved 2e6 FLOP / 1 ms = 2 GFLOP/s -> E = 0.1
    assert r.efficiency(1e6, 1e6, 1.0) == pytest.approx(0.1)
    assert r.efficiency(0, 1e6, 1.0) == 0.0
    assert Roofline.from_dict(r.to_dict()) == Roofline(100e9, 10e9)


# ---------------------------------------------------------------- timing
def test_measure_module_statistics():
    s = MeasureSettings(batch_size=2, threads=1, **FAST)
    t = measure_module(build_op("conv_k3_relu", 4, 8, 1), (4, 8, 8), s)
    assert t.median_ms > 0 and t.iqr_ms >= 0 and t.p90_ms >= t.median_ms * 0.5
    assert len(t.samples_ms) >= 3 and t.raw_median_ms > 0


def test_measure_modules_interleaves_and_normalises():
    s = MeasureSettings(batch_size=2, threads=1, reference=True, **FAST)
    items = [(build_op("conv_k3_relu", 4, 8, 1), (4, 8, 8)), (build_op("skip", 4, 4, 1), (4, 8, 8))]
    calls = []
    timings, ref = measure_modules(items, s, progress=lambda d, t: calls.append((d, t)))
    assert len(timings) == 2 and ref > 0
    assert calls[-1] == (4, 4)  # 2 items x 2 rounds
    # normalised to a nominal reference twice as slow as measured -> timings about doubled
    timings2, _ = measure_modules(items[:1], s, ref_nominal_ms=1e6)
    assert timings2[0].median_ms > 100 * timings2[0].raw_median_ms


def test_device_record_fields():
    rec = MeasureSettings(batch_size=4, threads=1).record()
    assert rec["kind"] == "cpu" and rec["batch_size"] == 4 and rec["threads"] == 1
    assert rec["dtype"] == "float32" and rec["mode"] == "eager" and rec["reference"] == "ref-v1"
    assert MeasureSettings(reference=False).record()["reference"] is None


@pytest.mark.gpu
@pytest.mark.skipif(not has_cuda(), reason="needs a CUDA GPU")
def test_cuda_timing_events_and_graphs():
    s = MeasureSettings(device="cuda", batch_size=8, min_run_time=0.05)
    t = measure_module(build_op("conv_k3_relu", 16, 16, 1), (16, 32, 32), s)
    g = measure_module(build_op("conv_k3_relu", 16, 16, 1), (16, 32, 32), MeasureSettings(device="cuda", batch_size=8,
                                                                                          cuda_graphs=True, min_run_time=0.05))
    assert t.median_ms > 0 and g.median_ms > 0


def test_cuda_unavailable_is_a_clear_error():
    if has_cuda():
        pytest.skip("CUDA is available here")
    from hwnas_darts.errors import HwnasError

    with pytest.raises(HwnasError, match="CUDA is not available"):
        MeasureSettings(device="cuda")


# ---------------------------------------------------------------- latency table
def _fake_table(space, lat_fn=None, record=None):
    rec = record or MeasureSettings(batch_size=8, threads=1).record()
    rows = []
    for i, key in enumerate(space.all_keys()):
        lat = lat_fn(key) if lat_fn else 0.1 + 0.01 * i
        rows.append(Row(key, lat, 0.001, lat * 1.1, 1000 * (i + 1), 4000 * (i + 1), 10, [lat]))
    return LatencyTable(rec, Roofline(1e11, 1e10), rows, [space.space_id])


def test_table_save_load_round_trip(tmp_path, tiny_space):
    t = _fake_table(tiny_space)
    t.meta["reference_ms"] = 1.5
    path = t.save(tmp_path / "lut.json")
    u = LatencyTable.load(path)
    assert u.device == t.device and u.roofline == t.roofline and u.space_ids == t.space_ids
    assert {k: r.latency_ms for k, r in u.rows.items()} == {k: r.latency_ms for k, r in t.rows.items()}
    assert u.reference_ms == 1.5


def test_corrupted_and_foreign_tables(tmp_path, tiny_space):
    path = _fake_table(tiny_space).save(tmp_path / "lut.json")
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(LUTError, match="not valid JSON"):
        LatencyTable.load(path)
    path.write_text(json.dumps({"hello": 1}))
    with pytest.raises(LUTError, match="not a hwnas_darts latency table"):
        LatencyTable.load(path)
    data = json.loads(text)
    del data["rows"][0]["latency_ms"]
    path.write_text(json.dumps(data))
    with pytest.raises(LUTError, match="malformed"):
        LatencyTable.load(path)
    with pytest.raises(LUTError, match="not found"):
        LatencyTable.load(tmp_path / "none.json")


def test_mismatched_device_refused_unless_allowed(tiny_space):
    t = _fake_table(tiny_space)
    other = dict(t.device, batch_size=64, dtype="bfloat16")
    with pytest.raises(LUTError, match="batch_size: table has 8, this run has 64"):
        t.check_device(other)
    t.check_device(other, allow_mismatch=True)  # explicit override: warns only
    t.check_device(dict(t.device))


def test_miss_names_the_key(tiny_space):
    t = _fake_table(tiny_space)
    key = OpKey("conv_k3_relu", 3, 5, 1, 7, 7)
    with pytest.raises(LUTMissError, match=r"conv_k3_relu\[3x7x7->5,s1\]"):
        t.lookup(key)
    assert t.missing([key]) == [key]


def test_table_for_another_space_refused(tiny_space, tiny_cfg):
    from hwnas_darts.config import load_config
    from hwnas_darts.space import SearchSpace

    from .conftest import TINY

    other = SearchSpace.from_config(load_config(TINY, ["space.stages.1.width=24"]))
    t = _fake_table(tiny_space)
    with pytest.raises(LUTError, match="built for space"):
        t.check_space(other)
    t.check_space(tiny_space)


def test_build_measures_only_missing_rows(tiny_space):
    s = MeasureSettings(batch_size=2, threads=1, reference=False, **FAST)
    t = _fake_table(tiny_space, record=s.record())
    removed = sorted(t.rows)[:2]
    before = {k: t.rows[k].latency_ms for k in t.rows if k not in removed}
    for k in removed:
        del t.rows[k]
    t2 = build_table(tiny_space, s, t)
    assert t2.meta["rows_measured_last_build"] == 2
    assert all(k in t2 for k in removed)
    assert all(t2.rows[k].latency_ms == v for k, v in before.items())  # untouched


# ---------------------------------------------------------------- latency model
def test_expected_latency_equals_table_value_when_one_alpha_dominates(tiny_space):
    t = _fake_table(tiny_space)
    model = LatencyModel(t, tiny_space, calibration={})
    arch = tiny_space.sample(5)
    idx = tiny_space.index_of(arch)
    probs = [torch.full((len(l.candidates),), -40.0).index_fill(0, torch.tensor([i]), 40.0).softmax(0)
             for l, i in zip(tiny_space.layers, idx)]
    exp = model.expected(probs)
    assert float(exp["latency_ms"]) == pytest.approx(model.predict(arch), rel=1e-6)
    assert float(exp["macs"]) == pytest.approx(model.counts(arch)["macs"], rel=1e-6)
    assert model.predict(arch) == pytest.approx(sum(t.lookup(p.key).latency_ms for p in tiny_space.plan(arch)))


def test_gradients_flow_from_expected_metrics_to_alphas(tiny_space):
    model = LatencyModel(_fake_table(tiny_space), tiny_space, calibration={})
    alphas = [torch.zeros(len(l.candidates), requires_grad=True) for l in tiny_space.layers]
    exp = model.expected([a.softmax(0) for a in alphas])
    (exp["latency_ms"] + exp["intensity"] + exp["efficiency"]).backward()
    for a in alphas:
        assert a.grad is not None and a.grad.abs().sum() > 0


def test_calibration_learns_whole_network_behaviour(tiny_space):
    import random

    t = _fake_table(tiny_space, lat_fn=lambda k: random.Random(str(k)).uniform(0.05, 0.5))
    raw = LatencyModel(t, tiny_space, calibration={})
    archs = tiny_space.sample_unique(30, seed=0)

    def truth(a):  # ground truth: fused ops cost 1.5x their table value, the rest 1.2x, plus 0.4 ms
        return 0.4 + sum((1.5 if "fmb" in p.op else 1.2) * t.lookup(p.key).latency_ms for p in tiny_space.plan(a))

    cal = fit_calibration(raw, archs, [truth(a) for a in archs], ridge=1e-6)
    assert cal["fit_mape_pct"] < 0.5 and cal["space_id"] == tiny_space.space_id
    model = LatencyModel(t, tiny_space, calibration=cal)
    held_out = tiny_space.sample_unique(15, seed=99, exclude=archs)
    assert held_out
    for a in held_out:
        assert model.predict(a) == pytest.approx(truth(a), rel=0.01)
        assert abs(raw.predict(a) - truth(a)) / truth(a) > 0.15  # the plain table sum is far off


def test_rank_metrics():
    m = rank_metrics([1, 2, 3, 4.3], [1, 2, 3, 4])
    assert m["spearman"] == pytest.approx(1.0) and m["kendall"] == pytest.approx(1.0)
    assert m["mape_pct"] == pytest.approx(7.5 / 4)
    assert m["within_10pct"] == 1.0


def test_measured_table_end_to_end(tiny_table, tiny_space):
    """A real (quick) measured table: every row positive, calibrated for the space, predictions positive."""
    assert tiny_table.covers(tiny_space)
    assert all(r.latency_ms > 0 for r in tiny_table.rows.values())
    assert tiny_table.calibration["space_id"] == tiny_space.space_id
    assert tiny_table.validation["n"] == 4
    model = LatencyModel(tiny_table, tiny_space)
    assert all(model.predict(tiny_space.sample(s)) > 0 for s in range(5))
    assert math.isfinite(tiny_table.validation["learned"]["mape_pct"])


def test_sharded_build_merges_rows_from_several_processes(tiny_space):
    """The multi-GPU table build, exercised with two CPU worker processes."""
    from hwnas_darts.hardware.lut import build_table_sharded

    s = MeasureSettings(batch_size=2, threads=1, reference=False, **FAST)
    t = build_table_sharded(tiny_space, s, ["cpu", "cpu"])
    assert t.covers(tiny_space) and len(t) == len(tiny_space.all_keys())
    assert t.meta["build_devices"] == ["cpu", "cpu"] and t.device == s.record()
    assert all(r.latency_ms > 0 and (r.bytes > 0 or r.key.op == "skip") for r in t.rows.values())
