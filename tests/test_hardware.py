"""Roofline counters, formulas, timing, the latency table and the learned latency model."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hwnas_darts.errors import LUTError, LUTMissError
from hwnas_darts.hardware.table import LatencyTable, Row, build_table
from hwnas_darts.hardware.measure import MeasureSettings, measure_module, measure_modules
from hwnas_darts.hardware.calibration import fit_calibration, rank_metrics
from hwnas_darts.hardware.model import LatencyModel
from hwnas_darts.hardware.roofline import ByteCounter, Roofline, count_bytes, count_macs, intensity
from hwnas_darts.space.ops import build_op
from hwnas_darts.space.space import OpKey

from .conftest import has_cuda

FAST = dict(min_run_time=0.01, rounds=2, warmup=1, min_samples=3, processes=1)


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


def test_measure_modules_round_robin_and_normalises():
    s = MeasureSettings(batch_size=2, threads=1, reference=True, **FAST)
    items = [(build_op("conv_k3_relu", 4, 8, 1), (4, 8, 8)), (build_op("skip", 4, 4, 1), (4, 8, 8))]
    calls = []
    timings, ref = measure_modules(items, s, progress=lambda d, t: calls.append((d, t)))
    assert len(timings) == 2 and set(ref) == {"compute", "memory"} and min(ref.values()) > 0
    assert calls[-1][0] == calls[-1][1] and calls[-1][1] % 2 == 0  # every cycle times both items
    assert all(t.half_medians_ms is not None and len(t.samples_ms) >= 3 for t in timings)
    # normalised to nominal references far slower than measured -> timings scaled up accordingly
    timings2, _ = measure_modules(items[:1], s, ref_nominal={"compute": 1e6, "memory": 1e6})
    assert timings2[0].median_ms > 100 * timings2[0].raw_median_ms


def test_drift_correction_removes_a_slowdown_that_hits_memory_bound_work_harder():
    """Synthetic machine: from cycle 20 on a neighbour streams memory - memory-bound work runs 2x
    slower, compute-bound work 1.1x. Each item's time is its compute part times the compute
    slowdown plus its memory part times the memory slowdown; the references see the same."""
    import random

    from hwnas_darts.hardware.reference import compute_share, drift_factors, reference_intensities

    rng = random.Random(0)
    nominal = {"compute": 1.0, "memory": 0.5}
    ri = reference_intensities()
    slow_c = [1.0 if c < 20 else 1.1 for c in range(40)]
    slow_m = [1.0 if c < 20 else 2.0 for c in range(40)]
    ref_c = [nominal["compute"] * f * (1 + rng.gauss(0, 0.01)) for f in slow_c]
    ref_m = [nominal["memory"] * f * (1 + rng.gauss(0, 0.01)) for f in slow_m]
    for inten in (ri["memory"], math.sqrt(ri["memory"] * ri["compute"]), ri["compute"]):
        w = compute_share(inten)
        base = 3.0  # ms at nominal speed: w of it compute-bound, the rest memory-bound
        times = [base * (w * fc + (1 - w) * fm) for fc, fm in zip(slow_c, slow_m)]
        f = drift_factors(ref_c, ref_m, nominal, w, smooth=0)
        corrected = [t / x for t, x in zip(times, f)]
        assert max(abs(v / base - 1) for v in corrected) < 0.04
        # a single compute-bound reference would leave memory-bound work far off after the change
        single = [t / (rc / nominal["compute"]) for t, rc in zip(times, ref_c)]
        if w < 0.5:
            assert max(abs(v / base - 1) for v in single) > 0.3
    assert compute_share(ri["memory"]) == pytest.approx(0.0) and compute_share(ri["compute"]) == pytest.approx(1.0)
    assert compute_share(None) == 0.5


def test_device_record_fields():
    rec = MeasureSettings(batch_size=4, threads=1).record()
    assert rec["kind"] == "cpu" and rec["batch_size"] == 4 and rec["threads"] == 1
    assert rec["dtype"] == "float32" and rec["mode"] == "eager" and rec["reference"] == "ref-v2"
    assert MeasureSettings(reference=False).record()["reference"] is None


@pytest.mark.gpu
@pytest.mark.skipif(not has_cuda(), reason="needs a CUDA GPU")
def test_cuda_timing_events_and_graphs():
    s = MeasureSettings(device="cuda", batch_size=8, min_run_time=0.05)
    t = measure_module(build_op("conv_k3_relu", 16, 16, 1), (16, 32, 32), s)
    g = measure_module(build_op("conv_k3_relu", 16, 16, 1), (16, 32, 32), MeasureSettings(device="cuda", batch_size=8,
                                                                                          cuda_graphs=True, min_run_time=0.05))
    assert t.median_ms > 0 and g.median_ms > 0


@pytest.mark.gpu
@pytest.mark.skipif(not has_cuda(), reason="needs a CUDA GPU")
def test_cuda_graph_runner_keeps_its_module_and_input_alive():
    """A graph replays kernels on the addresses captured: the runner must hold the module and the
    input, or freeing them (and the allocator returning its cached blocks to the driver) turns the
    next replay into an illegal memory access (seen on an H200, 2026-11-30, before the fix)."""
    import gc

    import torch

    from hwnas_darts.hardware.measure import module_runner

    s = MeasureSettings(device="cuda", batch_size=8, cuda_graphs=True, dtype="bfloat16", channels_last=True)
    runs = [module_runner(build_op(op, 16, 16, 1), (16, 32, 32), s) for op in ("conv_k3_relu", "mb_k3_e3_relu")]
    gc.collect()
    torch.cuda.empty_cache()  # anything the runners no longer hold goes back to the driver here
    junk = [torch.randn(1 << 20, device="cuda") for _ in range(8)]  # new allocations over freed addresses
    for run in runs:
        run()
    torch.cuda.synchronize()
    del junk


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
    t.meta["reference_nominal_ms"] = {"compute": 1.5, "memory": 0.5}
    path = t.save(tmp_path / "lut.json")
    u = LatencyTable.load(path)
    assert u.device == t.device and u.roofline == t.roofline and u.space_ids == t.space_ids
    assert {k: r.latency_ms for k, r in u.rows.items()} == {k: r.latency_ms for k, r in t.rows.items()}
    assert u.reference_nominal == {"compute": 1.5, "memory": 0.5}


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

    cal = fit_calibration(raw, archs, [truth(a) for a in archs], ridge=(1e-6, 1.0))
    assert cal["fit_mape_pct"] < 0.5 and cal["space_id"] == tiny_space.space_id
    model = LatencyModel(t, tiny_space, calibration=cal)
    held_out = tiny_space.sample_unique(15, seed=99, exclude=archs)
    assert held_out
    for a in held_out:
        assert model.predict(a) == pytest.approx(truth(a), rel=0.01)
        assert abs(raw.predict(a) - truth(a)) / truth(a) > 0.15  # the plain table sum is far off


def test_calibration_recovers_per_row_in_context_costs_from_noisy_networks(tiny_space):
    """Ground truth: a few rows (layer x op) cost far more or less inside a network than alone
    (the table says otherwise), plus a constant; end-to-end timings carry 2% noise. The fit
    (ridge chosen by cross-validation) recovers those rows and predicts unseen networks."""
    import random

    from hwnas_darts.hardware.model import row_id

    t = _fake_table(tiny_space, lat_fn=lambda k: random.Random(str(k)).uniform(0.1, 0.5))
    raw = LatencyModel(t, tiny_space, calibration={})
    layers = tiny_space.layers
    odd = {row_id(layers[0].name, layers[0].candidates[0]): 1.9,  # e.g. a memory-bound op after a slow format
           row_id(layers[0].name, layers[0].candidates[1]): 0.4}

    def truth(a):
        total = 0.3
        for p in tiny_space.plan(a):
            total += odd.get(row_id(p.name, p.op), 1.0) * t.lookup(p.key).latency_ms
        return total

    rng = random.Random(1)
    archs = tiny_space.sample_unique(60, seed=3)
    meas = [truth(a) * (1 + rng.gauss(0, 0.02)) for a in archs]
    cal = fit_calibration(raw, archs, meas)
    model = LatencyModel(t, tiny_space, calibration=cal)
    assert cal["cv_mape_pct"] is not None and cal["n_archs"] == 60
    for rid, mult in odd.items():
        layer_name, op = rid.split(":")
        assert model.scale(layer_name, op) == pytest.approx(mult, abs=0.25)
    held_out = tiny_space.sample_unique(20, seed=77, exclude=archs)
    errs = [abs(model.predict(a) - truth(a)) / truth(a) for a in held_out]
    raw_errs = [abs(raw.predict(a) - truth(a)) / truth(a) for a in held_out]
    assert sum(errs) / len(errs) < 0.04 < sum(raw_errs) / len(raw_errs)
    # the expectation under one-hot probabilities equals the calibrated prediction
    a = held_out[0]
    probs = [torch.nn.functional.one_hot(torch.tensor(i), len(l.candidates)).double()
             for l, i in zip(layers, tiny_space.index_of(a))]
    assert float(model.expected(probs)["latency_ms"]) == pytest.approx(model.predict(a), rel=1e-9)


def test_calibration_rejects_bad_measurements(tiny_space):
    raw = LatencyModel(_fake_table(tiny_space), tiny_space, calibration={})
    archs = tiny_space.sample_unique(4, seed=0)
    with pytest.raises(ValueError, match="positive"):
        fit_calibration(raw, archs, [1.0, -1.0, 2.0, float("nan")])
    with pytest.raises(ValueError, match=">= 3"):
        fit_calibration(raw, archs[:2], [1.0, 2.0])


def test_rank_metrics():
    m = rank_metrics([1, 2, 3, 4.3], [1, 2, 3, 4])
    assert m["spearman"] == pytest.approx(1.0) and m["kendall"] == pytest.approx(1.0)
    assert m["mape_pct"] == pytest.approx(7.5 / 4)
    assert m["within_10pct"] == 1.0 and m["max_err_pct"] == pytest.approx(7.5)


def test_measured_table_end_to_end(tiny_table, tiny_space):
    """A real (quick) measured table: every row positive, calibrated for the space, predictions positive."""
    assert tiny_table.covers(tiny_space)
    assert all(r.latency_ms > 0 for r in tiny_table.rows.values())
    assert tiny_table.calibration["space_id"] == tiny_space.space_id
    assert tiny_table.validation["n"] == 4
    model = LatencyModel(tiny_table, tiny_space)
    assert all(model.predict(tiny_space.sample(s)) > 0 for s in range(5))
    assert math.isfinite(tiny_table.validation["learned"]["mape_pct"])
    assert tiny_table.validation["repeatability"]["n"] == 4 and tiny_table.reference_nominal


QUIET = dict(batch_size=8, threads=1, min_run_time=0.08, warmup=2, processes=1)  # longer, single-threaded: robust on a busy machine


@pytest.fixture(scope="module")
def quiet_table():
    """A calibrated tiny table measured with :data:`QUIET` settings (once for this module)."""
    from hwnas_darts.config import load_config
    from hwnas_darts.lut import ensure_calibration
    from hwnas_darts.space import SearchSpace

    from .conftest import TINY

    space = SearchSpace.from_config(load_config(TINY))
    s = MeasureSettings(**QUIET)
    table = build_table(space, s)
    ensure_calibration(table, space, s, 10, 0, seed=0)
    return table


def test_validate_on_calibration_networks_agrees_with_the_fit_units(quiet_table, tiny_space):
    """Re-measuring the table's own calibration networks (another call, later) lands on the fit's
    scale - same units, anchored - and reproduces the fit's error, not a multiple of it."""
    import statistics

    from hwnas_darts.hardware.calibration import validate_model
    from hwnas_darts.space.arch import Arch

    settings = MeasureSettings(**QUIET)
    model = LatencyModel(quiet_table, tiny_space)
    archs = [Arch.from_string(a) for a in quiet_table.calibration["archs"]]
    val = validate_model(model, tiny_space, settings, 0, 0, archs=archs)
    ratio = statistics.median(m / p for m, p in zip(val["measured_ms"], val["predicted_ms"]))
    # tiny networks timed for 20 ms each on a shared 2-core machine: loose bounds, but a unit
    # mismatch (the 2x of a table used on another host, or ms vs us) falls far outside them
    assert 0.67 < ratio < 1.5 and val["anchor_factor"] > 0
    refit = statistics.median(m / p for m, p in zip(quiet_table.calibration["measured_ms"], val["measured_ms"]))
    assert 0.67 < refit < 1.5
    assert val["learned"]["mape_pct"] < quiet_table.calibration["fit_mape_pct"] + 25
    assert val["unit"] == "ms at the table's reference speed"


def test_run_check_flags_a_table_scaled_by_one_and_a_half(quiet_table, tiny_space):
    import copy

    from hwnas_darts.hardware.calibration import check_table

    settings = MeasureSettings(**QUIET)
    bad = copy.deepcopy(quiet_table)
    for k, r in list(bad.rows.items()):
        bad.rows[k] = Row(k, r.latency_ms * 1.5, r.iqr_ms, r.p90_ms * 1.5, r.macs, r.bytes, r.params, r.samples_ms)
    bad.calibration = dict(bad.calibration, intercept_ms=bad.calibration["intercept_ms"] * 1.5)
    res = check_table(LatencyModel(bad, tiny_space), tiny_space, settings, 6, seed=5, tolerance_pct=20.0)
    assert not res["ok"] and res["median_ratio"] < 0.85
    assert res["n"] == 6 and not set(res["archs"]) & set(quiet_table.calibration["archs"])  # fresh networks only


def test_sharded_build_merges_rows_from_several_processes(tiny_space):
    """The multi-GPU table build, exercised with two CPU worker processes."""
    from hwnas_darts.hardware.table import build_table_sharded

    s = MeasureSettings(batch_size=2, threads=1, reference=False, **FAST)
    t = build_table_sharded(tiny_space, s, ["cpu", "cpu"])
    assert t.covers(tiny_space) and len(t) == len(tiny_space.all_keys())
    assert t.meta["build_devices"] == ["cpu", "cpu"] and t.device == s.record()
    assert all(r.latency_ms > 0 and (r.bytes > 0 or r.key.op == "skip") for r in t.rows.values())


def test_calibration_drops_row_corrections_the_data_do_not_support(tiny_space):
    """Ground truth with family-level effects only (fused ops 1.3x, the rest 1.0x, plus a
    constant) and 3% noise: the one-standard-error rule keeps the group scales and drops the
    per-row corrections, which here could only fit noise."""
    import random

    t = _fake_table(tiny_space, lat_fn=lambda k: random.Random(str(k)).uniform(0.1, 0.5))
    raw = LatencyModel(t, tiny_space, calibration={})

    def truth(a):
        return 0.3 + sum((1.3 if "fmb" in p.op else 1.0) * t.lookup(p.key).latency_ms for p in tiny_space.plan(a))

    rng = random.Random(4)
    archs = tiny_space.sample_unique(60, seed=5)
    cal = fit_calibration(raw, archs, [truth(a) * (1 + rng.gauss(0, 0.03)) for a in archs])
    assert cal["rows"] == {} and cal["ridge"]["row"] is None
    assert cal["cv_mape_pct"] >= cal["cv_best_mape_pct"]
    model = LatencyModel(t, tiny_space, calibration=cal)
    held_out = tiny_space.sample_unique(20, seed=78, exclude=archs)
    errs = [abs(model.predict(a) - truth(a)) / truth(a) for a in held_out]
    assert sum(errs) / len(errs) < 0.03


def test_network_measurement_in_fresh_processes(quiet_table, tiny_space):
    """hardware.processes > 1 measures the networks in that many spawned processes and combines
    them: one value per network (the geometric mean of the per-process ones), the per-process
    values kept, and the validation report states the agreement between processes."""
    import dataclasses
    import math

    from hwnas_darts.hardware.calibration import between_processes, validate_model
    from hwnas_darts.hardware.model import measure_arch_timings

    settings = dataclasses.replace(MeasureSettings(**QUIET), processes=2)
    archs = tiny_space.sample_unique(4, seed=11)
    info = {}
    timings = measure_arch_timings(tiny_space, archs, settings, quiet_table, info=info)
    assert len(timings) == 4 and info["processes"] == 2 and len(info["anchor_factors"]) == 2
    for t in timings:
        assert len(t.process_medians_ms) == 2
        assert t.median_ms == pytest.approx(math.sqrt(t.process_medians_ms[0] * t.process_medians_ms[1]))
    bp = between_processes(timings)
    assert bp["n_processes"] == 2 and -1 <= bp["spearman"] <= 1 and bp["noise_pct"] >= 0
    val = validate_model(LatencyModel(quiet_table, tiny_space), tiny_space, settings, 0, 0, archs=archs)
    assert val["processes"] == 2 and "processes" in val["repeatability"]
    assert len(val["process_ms"]) == 4


def test_measuring_a_module_in_another_memory_format_leaves_it_trainable_and_exportable():
    """The measurement converts the caller's module to its memory format in place: that conversion must
    happen outside inference mode, or the converted parameters are inference tensors and a later
    backward or torch.export of the same network fails (a contiguous retrained network profiled
    channels-last lost its .pt2 export that way)."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    measure_modules([(net, (3, 8, 8))], MeasureSettings(batch_size=2, threads=1, channels_last=True, **FAST))
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(p.is_inference() for p in net.parameters())
    net.train()
    net(torch.randn(2, 3, 8, 8)).sum().backward()
    assert net[0].weight.grad is not None
