"""adaptkit bench: option checking, the measure function, figures, result files and the CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time

import pytest
import torch

from adaptkit import BenchError, ConfigError
from adaptkit.bench.benchmarking import (
    BenchRequest,
    BenchResult,
    Device,
    Measurement,
    Precision,
    environment,
    make_request,
    measure,
    parse_batches,
    parse_inputs,
    result_filename,
    summarize,
    write_json,
    write_plot,
)

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
    [("", "is empty"), ("256", "'256' is not HEIGHTxWIDTH"), ("0x64", "sides from 1"), ("64x", "not")],
)
def test_bad_input_lists(text, match):
    with pytest.raises(BenchError, match=match):
        parse_inputs(text)


def test_make_request_checks_every_option():
    request = make_request("sctnet-s", ["hrnet"], device="cpu", batches="1,2", inputs="64x64", quick=True)
    assert request.device is Device.CPU and request.batches == (1, 2) and request.inputs == ((64, 64),)
    assert (request.repeat, request.warmup, request.budget_s) == (3, 1, 0.5)
    assert make_request(device="cpu", repeat=5).repeat == 5
    with pytest.raises(BenchError, match="unknown device 'tpu'; choose one of 'cpu', 'cuda', 'auto'"):
        make_request(device="tpu")
    with pytest.raises(BenchError, match="unknown dtype 'fp8'"):
        make_request(device="cpu", precision="fp8")
    with pytest.raises(BenchError, match="fp16 autocast needs a CUDA device"):
        make_request(device="cpu", precision="fp16")
    with pytest.raises(BenchError, match="--cuda-graphs needs a CUDA device"):
        make_request(device="cpu", cuda_graphs=True)
    with pytest.raises(BenchError, match="--repeat must be a whole number of at least 1"):
        make_request(device="cpu", repeat=0)
    with pytest.raises(BenchError, match="--warmup must be"):
        make_request(device="cpu", warmup=-1)
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


# ------------------------------------------------------------------------------ measure


def test_measure_returns_a_frozen_record_with_percentiles_and_memory():
    m = measure(lambda: torch.ones(1_000_000), variant="ones", batch=4, repeat=5, warmup=2)
    assert isinstance(m, Measurement)
    assert len(m.times_ms) == 5 and m.warmup == 2
    assert m.min_ms <= m.p50_ms <= m.p90_ms <= max(m.times_ms)
    assert m.throughput == pytest.approx(4 / (m.p50_ms / 1000))
    assert m.memory_kind == "cpu-peak-allocated" and m.memory_bytes >= 4_000_000  # the 4 MB result it holds
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.p50_ms = 0.0  # type: ignore[misc]


def test_measure_stops_a_slow_call_at_the_budget():
    m = measure(lambda: time.sleep(0.03), variant="sleep", batch=1, repeat=50, warmup=5, budget_s=0.05, memory=False)
    assert 1 <= len(m.times_ms) <= 3 and m.warmup <= 3
    assert m.memory_bytes is None and m.memory_kind == "none"
    assert m.p50_ms >= 25


# ------------------------------------------------------------------------------ figures and files


def fake(variant: str, ms: float, target: str = "hrnet", batch: int = 8) -> Measurement:
    return Measurement(
        variant=variant,
        target=target,
        input_hw=(256, 192),
        batch=batch,
        device="cpu",
        precision="fp32",
        times_ms=(ms, ms),
        warmup=1,
        p50_ms=ms,
        p90_ms=ms,
        mean_ms=ms,
        min_ms=ms,
        throughput=batch / (ms / 1000),
        memory_bytes=1000,
        memory_kind="cpu-peak-allocated",
        cuda_graph=False,
    )


FAKES = (
    fake("head", 2.0),
    fake("naive-head", 6.0),
    fake("naive-resize", 30.0),
    fake("planned", 10.0),
    fake("fused", 4.0),
    fake("estimator", 208.0),
    fake("estimator-fused", 202.0),
    fake("head", 2.0, batch=1),
    fake("planned", 3.0, batch=1),
    fake("fused", 2.5, batch=1),
)


def test_summarize_gives_speedup_and_adapter_share():
    by_batch = {s.batch: s for s in summarize(FAKES)}
    s = by_batch[8]
    assert s.fused_speedup == pytest.approx(2.5) and s.naive_speedup == pytest.approx(1.5)
    assert s.adapter_ms_planned == pytest.approx(8.0) and s.adapter_ms_fused == pytest.approx(2.0)
    assert s.share_planned == pytest.approx(8 / 208) and s.share_fused == pytest.approx(2 / 202)
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
    assert doc["environment"]["threads"] == torch.get_num_threads()
    assert doc["request"]["device"] == "cpu" and len(doc["measurements"]) == len(FAKES)
    assert doc["summary"][0]["fused_speedup"] == pytest.approx(2.5)
    png = write_plot(result, tmp_path / "plot.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------ CLI


@pytest.mark.slow
def test_cli_quick_run_writes_json_and_png(run_cli, tmp_path):
    code, out, err = run_cli(
        "bench", "sctnet-s", "--target", "hrnet", "--device", "cpu", "--batch", "1,2", "--input", "64x64",
        "--quick", "--repeat", "2", "--warmup", "0", "--budget", "0.05", "--out-dir", str(tmp_path),
    )  # fmt: skip
    assert code == 0, err
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].startswith("adapter_bench-cpu-") and files[0].endswith(".json")
    assert files[1] == files[0].replace(".json", ".png")
    doc = json.loads((tmp_path / files[0]).read_text())
    variants = {m["variant"] for m in doc["measurements"]}
    assert variants == {"head", "naive-head", "naive-resize", "planned", "fused", "estimator", "estimator-fused"}
    estimator_batches = {m["batch"] for m in doc["measurements"] if m["variant"].startswith("estimator")}
    assert estimator_batches == {1}  # --quick: the whole estimator only at the smallest size
    assert all(m["input_hw"] == [64, 64] and 1 <= len(m["times_ms"]) <= 2 for m in doc["measurements"])
    assert doc["fusion"]["hrnet"]["fold_into"] == "final_layer"
    assert "fused vs planned" in out and "wrote" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--batch", "1,zero"], "batch list '1,zero': 'zero' is not a whole number"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--input", "640"], "input size '640' is not HEIGHTxWIDTH"),
        (["--target", "nowhere.py"], "config file 'nowhere.py' does not exist"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(run_cli, tmp_path, argv, message):
    code, out, err = run_cli("bench", "--device", "cpu", "--out-dir", str(tmp_path), *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("adaptkit bench: error: ") and message in err
    assert not any(tmp_path.iterdir())


def test_script_forwards_to_the_command():
    script = ROOT / "benchmarks" / "adapter_bench.py"
    done = subprocess.run([sys.executable, str(script), "--batch", "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "adaptkit bench: error: batch list '0': '0' is not a batch size from 1 to 4096"
    ]


@pytest.mark.slow
def test_cli_refuses_an_input_the_feature_stride_does_not_divide(run_cli, tmp_path):
    code, out, err = run_cli(
        "bench", "sctnet-s", "--target", "hrnet", "--device", "cpu", "--input", "100x100", "--out-dir", str(tmp_path)
    )
    assert code == 2 and err.count("\n") == 1
    assert "input 100x100 is not a multiple of the feature stride 8x8" in err
    assert not any(tmp_path.iterdir())
