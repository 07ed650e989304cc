"""bench/serve.py: its comparison arithmetic on known numbers, and a tiny run end to end (every request finishes
in every server, the section and plot are written)."""
import json

from bench.serve import compare, main, workload


def _pt(throughput, p99):
    return {"throughput": throughput, "p99_ms": p99, "p50_ms": p99 / 2, "mean_ms": p99 / 2}


def test_compare_reads_throughput_at_equal_p99_and_p99_at_equal_load():
    rates = {"1": {"continuous": _pt(10, 100), "static 50 ms": _pt(10, 400)},
             "2": {"continuous": _pt(20, 200), "static 50 ms": _pt(15, 900)},
             "4": {"continuous": _pt(25, 1000), "static 50 ms": _pt(16, 2000)}}
    s = compare(rates)
    # at static's p99 of 400 ms continuous reaches 20 (its 200 ms point): 2x; at 900 ms 20 / 15; at 2000 ms 25 / 16
    assert [round(r["ratio"], 4) for r in s["throughput_at_equal_p99"]] == [2.0, round(20 / 15, 4), round(25 / 16, 4)]
    assert s["throughput_ratio_min"] == 20 / 15 and s["throughput_ratio_max"] == 2.0
    assert s["p99_at_equal_load"] == {"1": 0.25, "2": 200 / 900, "4": 0.5}


def test_workload_is_poisson_with_the_issue_sizes():
    reqs = workload(400, 50.0, 0)
    gaps = [b["at"] - a["at"] for a, b in zip(reqs, reqs[1:])]
    assert reqs[0]["at"] == 0 and abs(sum(gaps) / len(gaps) - 1 / 50) < 0.004  # mean gap 1/rate
    assert {r["num"] for r in reqs} == {1, 2, 3, 4} and {r["nfe"] for r in reqs} == {10, 20, 35}


def test_a_tiny_run_serves_every_request_in_every_server(tmp_path):
    out = str(tmp_path / "serve")
    main(["--models", "gmm-digits", "--rates", "200", "--requests", "6", "--waits", "20", "--out", out])
    result = json.load(open(out + ".json"))
    servers = result["models"]["gmm-digits"]["200"]
    assert set(servers) == {"continuous", "one at a time", "static 20 ms"}
    for key, times in result["raw"]["gmm-digits"].items():
        assert len(times) == 6 and all(a is not None and d is not None and d >= a for a, d in times), key
    assert "## Continuous batching" in open(out + ".md").read() and (tmp_path / "serve.png").exists()
