"""bench/op_counts.py counts what each sampler dispatches per NFE besides the model; the counts are exact
(op dispatch, not time), so a ceiling per sampler keeps per-step host work from creeping back."""
from bench import op_counts

# current counts + ~10%: lower them when a change cuts ops (issue 18), never raise them silently
CEILINGS = {"heun": 4, "euler": 4, "karras_sde": 6, "deis": 6, "unipc": 40, "dpmpp_2m": 19, "langevin": 20, "dlg": 95}


def test_ops_per_nfe_stay_under_their_ceilings(tmp_path):
    rows = op_counts.main(["--samplers", ",".join(CEILINGS), "--out", str(tmp_path / "o.json"),
                           "--md", str(tmp_path / "o.md")])
    plain, *ours = rows
    assert plain["sampler"] == "plain Heun loop" and plain["sampler_ops_per_nfe"] == 5.0  # 2 NFE: sub, div, mul...
    got = {r["sampler"]: r["sampler_ops_per_nfe"] for r in ours}
    assert set(got) == set(CEILINGS)
    over = {k: v for k, v in got.items() if v > CEILINGS[k]}
    assert not over, f"ops per NFE above the ceiling: {over} (ceilings {CEILINGS})"
    assert "| heun |" in (tmp_path / "o.md").read_text()
