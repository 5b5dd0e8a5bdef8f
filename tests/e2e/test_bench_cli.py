"""A short `nanomoni bench` run: result JSON, PNG plots carrying the same numbers."""

from __future__ import annotations

import json
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

from nanomoni.tools.local import cli_command, local_services

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunks(path: Path) -> tuple[tuple[int, int], dict[str, str]]:
    """(width, height) and the text chunks of a PNG, parsed by hand."""
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), path
    offset, size, texts = len(PNG_SIGNATURE), (0, 0), {}
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(kind + body), f"{path}: bad CRC in {kind!r}"
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"tEXt":
            key, _, value = body.partition(b"\0")
            texts[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\0")
            # compression flag, method, language tag, translated keyword, then text
            flag = rest[0]
            _, _, rest = rest[2:].partition(b"\0")
            _, _, text = rest.partition(b"\0")
            texts[key.decode("latin-1")] = (zlib.decompress(text) if flag else text).decode()
        offset += 12 + length
    return size, texts


def measured_or_warned(run: dict[str, Any], part: str, what: str) -> None:
    """A CPU figure is either measured (> 0) or withheld with a warning saying why."""
    figure = run[f"{part}_cpu_us_per_payment"]
    if figure is None:
        assert any(f"{what} CPU was" in warning for warning in run["warnings"]), run
    else:
        assert figure > 0


def cpu_plotted(runs: list[dict[str, Any]], parts: tuple[str, ...]) -> dict[str, Any]:
    """What cpu.png must carry: each part's measured figures (withheld ones are left out)."""
    plotted = {}
    for part in parts:
        values = {
            run["label"]: run[f"{part}_cpu_us_per_payment"]
            for run in runs
            if run[f"{part}_cpu_us_per_payment"] is not None
        }
        if values:
            plotted[part] = values
    return plotted


def run_bench(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv, env = cli_command("bench", "--out", str(out), *extra)
    return subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env, cwd=out)


def test_short_bench_writes_json_and_matching_plots(tmp_path: Path) -> None:
    modes = "signature,payword,paytree_first_opt,paytree_second_opt:blake3"
    done = run_bench(
        tmp_path, "--modes", modes, "--payments", "300", "--channels", "4", "--concurrency", "4"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    runs: list[dict[str, Any]] = result["runs"]
    assert [run["label"] for run in runs] == [
        "signature",
        "payword",
        "paytree_first_opt",
        "paytree_second_opt (blake3)",
    ]
    for run in runs:
        assert run["accepted"] == run["planned"] == 300 and run["errors"] == {}
        assert run["replays"] == 0
        assert run["owed_total"] == run["settled_total"] == 300 and run["settled_exact"]
        assert run["throughput_per_s"] == pytest.approx(run["timed"] / run["elapsed_s"])
        # Each channel's first payment is the untimed warm-up (the vendor learns it).
        assert run["warmup"] == 4 and run["timed"] == 296
        assert sum(run["latency_histogram"]["counts"]) == 296
        latency = run["latency_ms"]
        assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]
        measured_or_warned(run, "vendor", "vendor")  # the bench started the vendor: PID known
        assert run["redis_cpu_us_per_payment"] is None  # embedded store: no redis

    plotted = {}
    for name in ("throughput", "latency", "cpu"):
        if name == "cpu" and not cpu_plotted(runs, ("vendor",)):
            assert not (tmp_path / "cpu.png").exists()  # nothing measurable: no figure
            continue
        (width, height), texts = png_chunks(tmp_path / f"{name}.png")
        assert width > 100 and height > 100
        plotted[name] = json.loads(texts["nanomoni"])
    assert plotted["throughput"] == {run["label"]: run["throughput_per_s"] for run in runs}
    assert plotted.get("cpu", {}) == cpu_plotted(runs, ("vendor",))
    assert plotted["latency"] == {run["label"]: run["latency_histogram"] for run in runs}
    # An existing result is not overwritten silently.
    again = run_bench(tmp_path, "--modes", "payword", "--payments", "20", "--channels", "2")
    assert again.returncode != 0 and "--overwrite" in again.stderr
    assert json.loads((tmp_path / "result.json").read_text()) == result


def test_bench_refuses_remote_services(tmp_path: Path) -> None:
    done = run_bench(
        tmp_path, "--issuer-url", "http://192.0.2.1:8001", "--vendor-url", "http://127.0.0.1:1"
    )
    assert done.returncode == 2
    assert "loopback" in done.stderr
    assert not (tmp_path / "result.json").exists()


def test_paced_bench_stops_at_its_duration_and_settles_what_was_accepted(tmp_path: Path) -> None:
    done = run_bench(
        tmp_path,
        "--modes", "paytree_first_opt",
        "--payments", "5000",
        "--channels", "2",
        "--concurrency", "2",
        "--rate", "100",
        "--duration", "1",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = json.loads((tmp_path / "result.json").read_text())["runs"]
    # 100/s for 1 s: about 100 payments, far fewer than planned; none refused.
    assert run["planned"] == 5000
    assert 50 <= run["accepted"] <= 130, run["accepted"]
    assert run["elapsed_s"] >= 0.95
    assert run["errors"] == {}
    assert run["owed_total"] == run["settled_total"] == run["accepted"] and run["settled_exact"]


def test_bench_against_running_services(tmp_path: Path) -> None:
    with local_services("embedded") as services:
        done = run_bench(
            tmp_path,
            "--issuer-url", services.issuer_url,
            "--vendor-url", services.vendor_url,
            "--vendor-pid", str(services.vendor_pid),
            "--modes", "paytree",
            "--payments", "200",
            "--channels", "2",
        )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["store"] == "external" and result["vendor_pid"] == services.vendor_pid
    (run,) = result["runs"]
    assert run["accepted"] == run["settled_total"] == 200 and run["settled_exact"]
    measured_or_warned(run, "vendor", "vendor")
    assert run["redis_cpu_us_per_payment"] is None


@pytest.mark.redis
def test_bench_on_a_redis_store_it_starts_and_stops(tmp_path: Path) -> None:
    done = run_bench(
        tmp_path, "--store", "redis", "--modes", "payword,paytree_second_opt", "--payments", "400"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["store"] == "redis"
    for run in result["runs"]:
        assert run["accepted"] == run["settled_total"] == 400 and run["settled_exact"]
        measured_or_warned(run, "redis", "redis")
        measured_or_warned(run, "vendor", "vendor")
    # Everything the bench started is gone, redis-server included.
    expected = cpu_plotted(result["runs"], ("vendor", "redis"))
    if expected:
        (_, texts) = png_chunks(tmp_path / "cpu.png")
        assert json.loads(texts["nanomoni"]) == expected
    for pid in (result["redis_pid"], result["vendor_pid"]):
        assert not is_running(pid), pid


def is_running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has stopped running


@pytest.mark.parametrize("transport", ["batch", "websocket"])
def test_bench_sends_batches_and_stream_frames(tmp_path: Path, transport: str) -> None:
    done = run_bench(
        tmp_path,
        "--modes", "signature,paytree_second_opt",
        "--payments", "400",
        "--channels", "16",
        "--concurrency", "2",
        "--transport", transport,
        "--batch-size", "32",
        "--floor",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["config"]["transport"] == transport and result["config"]["batch_size"] == 32
    for run in result["runs"]:
        assert run["transport"] == transport
        assert run["accepted"] == run["planned"] == 400 and run["errors"] == {}
        assert run["owed_total"] == run["settled_total"] == 400 and run["settled_exact"]
        # 384 timed payments over 2 connections of 8 channels each: 12 batches of 32.
        assert run["timed"] == 384 and run["payments_per_request"] == 32
        assert run["channels_per_batch"] == 8
        assert sum(run["latency_histogram"]["counts"]) == 12
        # CPU is read in /proc ticks: a figure too small to tell is withheld, with a warning.
        withheld = {w.split(" CPU ")[0].split(": ")[1] for w in run["warnings"]}
        assert (run["vendor_cpu_us_per_payment"] is None) == ("vendor" in withheld)
        # The floor app serves plain POSTs only: it is measured for batches, not streams.
        if transport == "websocket":
            assert run["floor_cpu_us_per_request"] is None and "floor" not in withheld
        else:
            assert (run["floor_cpu_us_per_request"] is None) == ("floor" in withheld)
