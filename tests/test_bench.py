"""adaptkit bench: option checking, adaptive timing with spread and flags, figures, result files and the CLI."""

from __future__ import annotations

import dataclasses
import itertools
import json
import subprocess
import sys
import time

import pytest
import torch
from torch.utils.benchmark import Measurement as TorchMeasurement
from torch.utils.benchmark.utils.common import TaskSpec

from adaptkit import BenchError, ConfigError
from adaptkit.bench import (
    BenchRequest,
    BenchResult,
    Device,
    Measurement,
    Precision,
    check_out_dir,
    environment,
    make_request,
    measure,
    result_filename,
    summarize,
    write_json,
    write_plot,
)
from adaptkit.bench.harness import count_cells
from adaptkit.bench.request import parse_batches, parse_inputs
from adaptkit.bench.timing import MIN_SAMPLES

from .conftest import ROOT

# ------------------------------------------------------------------------------ options


def test_parse_batches_and_inputs():
    assert parse_batches("1, 8,32") == (1, 8, 32)
    assert parse_batches("8,8,1") == (8, 1)
    assert parse_batches([2, 4]) == (2, 4)
    assert parse_inputs("256x192,640X640") == ((256, 192), (640, 640))
    assert parse_inputs([(64, 48)]) == ((64, 48),)


@pytest.mark.parametrize(
    ("text", "match"),
    [("", "is empty"), ("1,x", "'x' is not a whole number"), ("0", "'0' is not a batch size from 1"), ("1,-8", "'-8'")],
)
def test_bad_batch_lists(text, match):
    with pytest.raises(BenchError, match=match):
        parse_batches(text)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "is empty"),
        ("256", "'256' is not HEIGHTxWIDTH"),
        ("0x64", "sides from 32"),
        ("3x3", "'3x3' must have sides from 32 to 8192 pixels"),
        ("64x", "not"),
    ],
)
def test_bad_input_lists(text, match):
    with pytest.raises(BenchError, match=match):
        parse_inputs(text)


def test_make_request_checks_every_option():
    request = make_request("sctnet-s", ["hrnet"], device="cpu", batches="1,2", inputs="64x64", quick=True)
    assert request.device is Device.CPU and request.batches == (1, 2) and request.inputs == ((64, 64),)
    assert request.budget_s == 0.5 and request.threshold == 0.1
    quick = make_request(device="cpu", quick=True)
    assert quick.batches == (1, 8) and quick.inputs == ((256, 192),)
    full = make_request(device="cpu")
    assert full.batches == (1, 8, 32) and full.inputs == ((256, 192), (640, 640)) and full.budget_s == 2.0
    with pytest.raises(BenchError, match="unknown device 'tpu'; choose one of 'cpu', 'cuda', 'auto'"):
        make_request(device="tpu")
    with pytest.raises(BenchError, match="unknown dtype 'fp8'"):
        make_request(device="cpu", precision="fp8")
    with pytest.raises(BenchError, match="fp16 autocast needs a CUDA device"):
        make_request(device="cpu", precision="fp16")
    with pytest.raises(BenchError, match="--cuda-graphs needs a CUDA device"):
        make_request(device="cpu", cuda_graphs=True)
    with pytest.raises(BenchError, match="--threshold must be a fraction between 0 and 1"):
        make_request(device="cpu", threshold=0)
    with pytest.raises(BenchError, match="--budget must be a positive number"):
        make_request(device="cpu", budget_s=0)
    with pytest.raises(BenchError, match="--threads must be"):
        make_request(device="cpu", threads=0)
    with pytest.raises(ConfigError, match="config file 'no/such.py' does not exist"):
        make_request(device="cpu", targets=["no/such.py"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_refused():
    with pytest.raises(BenchError, match="torch sees no CUDA device here"):
        make_request(device="cuda")
    assert make_request(device="auto").device is Device.CPU


def test_cell_count_follows_the_request():
    request = make_request(device="cpu", batches="1,8", inputs="64x64,128x128", quick=True)
    # neck/head variants per target (5, 4) at 4 (size, batch) pairs, the estimator variants (2, 1) at one
    assert count_cells(request, [(5, 2), (4, 1)]) == 4 * 5 + 4 * 4 + 2 + 1


def test_out_dir_is_checked_before_anything_runs(tmp_path):
    assert check_out_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(BenchError, match="afile' is a file"):
        check_out_dir(tmp_path / "afile" / "sub")
    with pytest.raises(BenchError, match="cannot be a folder; give a folder"):
        check_out_dir(tmp_path / "afile")
    with pytest.raises(BenchError, match="cannot write in '/proc'"):
        check_out_dir("/proc/adaptkit-results")
    assert not (tmp_path / "new").exists()  # checked, not created


# ------------------------------------------------------------------------------ measure


def test_measure_keeps_median_spread_samples_and_torchs_record():
    m = measure(lambda: torch.ones(200_000).sum(), variant="ones", batch=4, budget_s=0.2)
    assert isinstance(m, Measurement) and isinstance(m.measurement, TorchMeasurement)
    assert m.samples >= MIN_SAMPLES and len(m.times_ms) == m.samples == len(m.measurement.raw_times)
    assert m.calls_per_sample == m.measurement.number_per_run >= 1
    assert m.p25_ms <= m.median_ms <= m.p75_ms and m.iqr_ms == pytest.approx(m.p75_ms - m.p25_ms)
    assert m.median_ms == pytest.approx(m.measurement.median * 1000, rel=1e-6)
    assert m.per_image_ms == pytest.approx(m.median_ms / 4)
    assert m.throughput == pytest.approx(4 / (m.median_ms / 1000))
    assert m.memory_kind == "cpu-peak-allocated" and m.memory_bytes >= 800_000  # the tensor it allocates
    assert m.measurement.task_spec.num_threads == torch.get_num_threads()  # not Timer's default of one
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.median_ms = 0.0  # type: ignore[misc]


def test_a_noisy_call_is_flagged_and_a_slow_one_still_gets_four_samples():
    # every call lasts over the 50 ms a block needs, so each block is one call and they alternate 60 / 100 ms
    # (calls that fill a block several times over would average out, by a count that a loaded machine changes)
    pattern = itertools.cycle((0.06, 0.1))
    m = measure(lambda: time.sleep(next(pattern)), variant="noisy", batch=1, budget_s=0.05, memory=False)
    assert m.samples >= MIN_SAMPLES and m.calls_per_sample == 1  # far past the 50 ms budget: four blocks
    assert m.memory_bytes is None and m.memory_kind == "none"
    assert m.iqr_ms > 20 and any(f.startswith("spread ") for f in m.flags)


def test_a_run_started_under_load_flags_every_cpu_cell():
    m = measure(lambda: torch.zeros(10), variant="z", batch=1, budget_s=0.05, memory=False, loaded=True)
    assert "load at start" in m.flags


def test_environment_records_the_load_and_the_cores():
    env = environment("cpu")
    assert env.cores >= 1 and env.threads == torch.get_num_threads()
    if env.load_average is not None:
        assert env.loaded == (env.load_average[0] > env.cores)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CUDA events, autocast, CUDA graphs)")
@pytest.mark.parametrize(("precision", "graph"), [("fp32", False), ("bf16", True)])
def test_measure_on_cuda_with_events_autocast_and_graphs(precision, graph):
    conv = torch.nn.Conv2d(16, 16, 3, padding=1).cuda().eval()
    x = torch.randn(8, 16, 64, 64, device="cuda")
    m = measure(lambda: conv(x), variant="conv", batch=8, device="cuda", precision=precision, cuda_graph=graph)
    assert m.device == "cuda" and m.samples >= MIN_SAMPLES and m.cuda_graph is graph and m.note == ""
    assert m.memory_kind == "cuda-peak-allocated" and m.measurement.task_spec.description == "cuda events"
    assert "load at start" not in m.flags


# ------------------------------------------------------------------------------ figures and files


SPEC = TaskSpec(stmt="fake", setup="", num_threads=1)


def fake(variant: str, ms: float, target: str = "hrnet", batch: int = 8, spread: float = 0.0) -> Measurement:
    return Measurement(
        variant=variant,
        target=target,
        input_hw=(256, 192),
        batch=batch,
        device="cpu",
        precision="fp32",
        median_ms=ms,
        iqr_ms=2 * spread,
        p25_ms=ms - spread,
        p75_ms=ms + spread,
        samples=4,
        calls_per_sample=1,
        times_ms=(ms - spread, ms, ms, ms + spread),
        per_image_ms=ms / batch,
        throughput=batch / (ms / 1000),
        memory_bytes=1000,
        memory_kind="cpu-peak-allocated",
        cuda_graph=False,
        flags=("spread 50% > 10%",) if spread > ms / 4 else (),
        measurement=TorchMeasurement(1, [(ms - spread) / 1000, ms / 1000, ms / 1000, (ms + spread) / 1000], SPEC),
    )


FAKES = (
    fake("head", 2.0),
    fake("naive-head", 6.0),
    fake("naive-resize", 30.0),
    fake("planned", 10.0, spread=1.0),
    fake("fused", 4.0, spread=0.5),
    fake("estimator", 208.0),
    fake("estimator-fused", 202.0),
    fake("head", 2.0, batch=1),
    fake("planned", 3.0, batch=1),
    fake("fused", 2.5, batch=1, spread=1.0),
)


def test_summarize_gives_speedup_with_its_range_and_the_adapter_share():
    by_batch = {s.batch: s for s in summarize(FAKES)}
    s = by_batch[8]
    assert s.fused_speedup == pytest.approx(2.5) and s.naive_speedup == pytest.approx(1.5)
    assert s.fused_speedup_low == pytest.approx(9 / 4.5) and s.fused_speedup_high == pytest.approx(11 / 3.5)
    assert s.adapter_ms_planned == pytest.approx(8.0) and s.adapter_ms_fused == pytest.approx(2.0)
    assert s.share_planned == pytest.approx(8 / 208) and s.share_fused == pytest.approx(2 / 202)
    assert not s.flagged and by_batch[1].flagged  # the batch-1 fused cell's spread is flagged
    assert by_batch[1].share_fused is None and by_batch[1].naive_head_ms is None


def test_result_files(tmp_path):
    env = environment("cpu")
    result = BenchResult(
        request=BenchRequest(precision=Precision.FP32),
        environment=env,
        measurements=FAKES,
        fusion=(),
        started="2025-01-01T00:00:00",
        seconds=1.0,
    )
    name = result_filename(env)
    assert name.startswith("adapter_bench-cpu-") and name.endswith(".json") and " " not in name
    path = write_json(result, tmp_path / "nested" / name)
    doc = json.loads(path.read_text())
    assert doc["environment"]["threads"] == torch.get_num_threads() and "loaded" in doc["environment"]
    assert doc["request"]["device"] == "cpu" and len(doc["measurements"]) == len(FAKES)
    cell = doc["measurements"][3]
    assert (cell["median_ms"], cell["iqr_ms"], cell["samples"], cell["flagged"]) == (10.0, 2.0, 4, False)
    assert cell["measurement"]["raw_times_s"] == pytest.approx([0.009, 0.01, 0.01, 0.011])
    assert doc["measurements"][-1]["flagged"] is True and doc["measurements"][-1]["flags"] == ["spread 50% > 10%"]
    assert doc["summary"][0]["fused_speedup"] == pytest.approx(2.5)
    png = write_plot(result, tmp_path / "plot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------ CLI


@pytest.mark.slow
def test_cli_strict_run_writes_json_and_png_and_exits_3_on_flagged_cells(run_cli, tmp_path):
    code, out, err = run_cli(
        "bench", "sctnet-s", "--target", "hrnet", "--device", "cpu", "--batch", "1,2", "--input", "64x64",
        "--quick", "--budget", "0.05", "--threshold", "0.000001", "--strict", "--out-dir", str(tmp_path),
    )  # fmt: skip
    assert code == 3, err  # a spread under a millionth of the median: every cell is flagged
    assert "flagged (*)" in out and "exit 3 (--strict)" in out
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].startswith("adapter_bench-cpu-") and files[0].endswith(".json")
    assert files[1] == files[0].replace(".json", ".png")
    doc = json.loads((tmp_path / files[0]).read_text())
    variants = {m["variant"] for m in doc["measurements"]}
    assert variants == {"head", "naive-head", "naive-resize", "planned", "fused", "estimator", "estimator-fused"}
    estimator_batches = {m["batch"] for m in doc["measurements"] if m["variant"].startswith("estimator")}
    assert estimator_batches == {1}  # --quick: the whole estimator only at the smallest size
    for m in doc["measurements"]:
        assert m["input_hw"] == [64, 64] and m["samples"] >= MIN_SAMPLES and m["flagged"]
        assert len(m["measurement"]["raw_times_s"]) == m["samples"] and m["iqr_ms"] >= 0
    assert doc["fusion"]["hrnet"]["fold_into"] == "final_layer"
    assert {(p["batch"], p["slow"], p["fast"]) for p in doc["speedups"]} == {
        (1, "planned", "fused"),
        (2, "planned", "fused"),
    }
    assert all(p["rounds"] >= 6 and len(p["ratios"]) == p["rounds"] and p["flags"] for p in doc["speedups"])
    # the default: four placements in memory, in two fresh processes, 16 rounds each at the least
    assert all((p["placements"], p["processes"]) == (4, 2) and p["rounds"] >= 32 for p in doc["speedups"])
    assert all(s["paired"] for s in doc["summary"])
    assert "fused vs planned" in out and "wrote" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch", "1,zero"], "batch list '1,zero': 'zero' is not a whole number"),
        (["--batch", "0"], "batch list '0': '0' is not a batch size from 1 to 4096"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--input", "640"], "input size '640' is not HEIGHTxWIDTH"),
        (["--input", "3x3"], "input size '3x3' must have sides from 32"),
        (["--target", "nowhere.py"], "config file 'nowhere.py' does not exist"),
        (["--threshold", "2"], "--threshold must be a fraction between 0 and 1"),
        (["--pair-processes", "-1"], "--pair-processes must be a whole number from 0 to 16, got -1"),
        (["--out-dir", "/proc/adaptkit"], "cannot write in '/proc'"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(run_cli, tmp_path, argv, message):
    code, out, err = run_cli("bench", "--device", "cpu", "--out-dir", str(tmp_path), *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("adaptkit bench: error: ") and message in err
    assert not any(tmp_path.iterdir())


def test_cli_refuses_an_out_dir_under_a_file_before_building(run_cli, tmp_path):
    (tmp_path / "afile").write_text("x")
    started = time.perf_counter()
    code, out, err = run_cli("bench", "--device", "cpu", "--out-dir", str(tmp_path / "afile" / "sub"))
    assert code == 2 and out == "" and err.count("\n") == 1 and "is a file" in err
    assert time.perf_counter() - started < 10  # nothing was built or timed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cli_cuda_without_a_gpu_is_one_line(run_cli, tmp_path):
    code, out, err = run_cli("bench", "--device", "cuda", "--out-dir", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "torch sees no CUDA device here" in err


def test_script_calls_the_library_and_reports_bad_input_in_one_line():
    script = ROOT / "benchmarks" / "adapter_bench.py"
    assert "adaptkit.cli" not in script.read_text()
    done = subprocess.run([sys.executable, str(script), "--batch", "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "adapter_bench.py: error: batch list '0': '0' is not a batch size from 1 to 4096"
    ]


@pytest.mark.slow
def test_cli_refuses_an_input_the_feature_stride_does_not_divide(run_cli, tmp_path):
    code, out, err = run_cli(
        "bench", "sctnet-s", "--target", "hrnet", "--device", "cpu", "--input", "100x100", "--out-dir", str(tmp_path)
    )
    assert code == 2 and err.count("\n") == 1
    assert "input 100x100 is not a multiple of the feature stride 8x8" in err
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_rtmcc_target_is_timed_planned_only_at_the_size_its_head_takes(run_cli, tmp_path):
    code, out, err = run_cli(
        "bench", "sctnet-s", "--target", "hrnet", "--target", "rtmpose", "--device", "cpu", "--batch", "1",
        "--input", "64x64,256x192", "--no-estimator", "--budget", "0.05", "--no-plot", "--pair-processes", "0",
        "--out-dir", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(next(tmp_path.glob("*.json")).read_text())
    cells = {(m["target"], tuple(m["input_hw"]), m["variant"]) for m in doc["measurements"]}
    assert {v for t, hw, v in cells if t == "rtmpose"} == {"head", "planned"}  # no fused, no heatmap hand fix
    assert {hw for t, hw, v in cells if t == "rtmpose"} == {(256, 192)}
    assert ("hrnet", (64, 64), "fused") in cells and list(doc["fusion"]) == ["hrnet"]
    assert any(n.startswith("rtmpose: not timed at 64x64") for n in doc["notes"])
    assert "rtmpose: fuse does not fold this head, so it is timed planned only" in doc["notes"]
