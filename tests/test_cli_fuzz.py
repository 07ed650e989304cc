"""Fuzz the doors (issue 32, part 7): for any command line of `dmcmc-fast sample` / `eval` and any arguments of
`api.sample`, the run either succeeds or fails with ONE line (stderr, or the exception's message), a status
!= 0, no traceback, no "internal error", and no output folder left behind. The CLI runs in this process (its
`main`), the sizes stay small (a few seconds in all)."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dmcmc_fast import api
from dmcmc_fast.cli import main
from dmcmc_fast.models.builtin import load_model
from dmcmc_fast.samplers import get_sampler

# 60 fixed examples per test in CI (a few seconds); DMCMC_FUZZ_EXAMPLES=N draws N fresh ones (a longer hunt)
HUNT = int(os.environ.get("DMCMC_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=HUNT or 60, deadline=None, derandomize=not HUNT, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
DLG_SMALL = ["--n-levels", "50", "--init-nfe", "3", "--n-init", "1", "--n-skip", "2"]
JUNK = st.sampled_from(["", "x", "nan", "inf", "-inf", "1e400", "1.5", "-0", "0x10", "1_0", " 3", "é", "--", "None"])


def ints(lo: int, hi: int) -> st.SearchStrategy:
    """Integers as text: mostly small valid ones, and negative, zero, huge and malformed ones."""
    return st.one_of(st.integers(lo, hi).map(str), st.integers(-10, lo - 1).map(str),
                     st.sampled_from([str(10 ** 12), str(2 ** 63), str(10 ** 40)]), JUNK)


def floats() -> st.SearchStrategy:
    return st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), JUNK)


@st.composite
def sample_argv(draw, root: str) -> tuple[list[str], str]:
    """(a `sample` command line, its --out): shared flags and the chosen sampler's own options, any of them bad."""
    sampler = draw(st.sampled_from(["heun", "euler", "karras_sde", "dlg", "obabo", "nope", ""]))
    out = draw(st.sampled_from(["fresh", "fresh/deep/er", "a_file", "a_file/under", "finished"]))
    flags = {"--model": draw(st.sampled_from(["gmm-digits"] * 6 + ["nope", "", "gmm-digits "])),
             "--sampler": sampler, "--nfe": draw(ints(1, 6)), "--out": os.path.join(root, out)}
    optional = {"--num": ints(1, 3), "--seed": ints(0, 3), "--batch-size": ints(1, 3), "--modes": ints(1, 12),
                "--std": floats(), "--device": st.sampled_from(["cpu", "cuda", "cuda:3", "bogus", "", "meta"]),
                "--graph": st.sampled_from(["auto", "on", "off", "bogus"])}
    if sampler in ("heun", "euler", "karras_sde", "dlg", "obabo"):
        for o in get_sampler(sampler).options:
            optional["--" + o.name.replace("_", "-")] = floats() if o.type is float else (
                ints(1, 4) if o.type is int else st.one_of(st.sampled_from(list(o.choices or [o.default])), JUNK))
    chosen = draw(st.lists(st.sampled_from(sorted(optional)), max_size=4, unique=True))
    flags.update({k: draw(optional[k]) for k in chosen})
    if "--num" not in flags:
        flags["--num"] = "2"  # the default 256 is valid, but not small
    argv = ["sample"]
    for k, v in flags.items():
        argv += [k, v] if not v.startswith("-") else [f"{k}={v}"]
    if sampler == "dlg":
        argv += [x for i, x in enumerate(DLG_SMALL) if DLG_SMALL[i - i % 2] not in flags]
    argv += draw(st.lists(st.sampled_from(["--resume", "--no-progress", "--bogus", "--eta=1"]),
                          max_size=2, unique=True))
    return argv, flags["--out"]


def _run_cli(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as done:  # argparse: usage errors and --help
            rc = done.code
    return rc, err.getvalue()


def _assert_one_line_failure(rc, err: str, argv):
    assert rc not in (0, None), argv
    text = err.strip().split("\r")[-1]  # a progress bar's line is cleared ("\r") before the error is said
    assert text and "\n" not in err.strip(), f"{argv}: not one line:\n{err}"
    assert "Traceback" not in text and "internal error" not in text, f"{argv}: {text}"
    assert text.startswith("dmcmc-fast"), f"{argv}: {text}"


def _tree(root: str) -> set[str]:
    return {os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root) for n in dirs + files}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished heun run (for --out of an earlier run, and eval's inputs)."""
    out = tmp_path_factory.mktemp("finished")
    assert main(["sample", "--model", "gmm-digits", "--modes", "10", "--sampler", "heun", "--nfe", "3", "--num", "4",
                 "--no-progress", "--out", str(out)]) == 0
    return out


def _fresh_root(finished_run) -> str:
    root = tempfile.mkdtemp(prefix="fuzz-")
    with open(os.path.join(root, "a_file"), "w") as f:
        f.write("x")
    shutil.copytree(finished_run, os.path.join(root, "finished"))
    return root


def test_any_sample_command_line_succeeds_or_fails_in_one_line(finished_run):
    @FUZZ
    @given(data=st.data())
    def check(data):
        root = _fresh_root(finished_run)
        try:
            argv, out = data.draw(sample_argv(root))
            before = _tree(root)
            rc, err = _run_cli(argv)
            if rc == 0:
                assert os.path.exists(os.path.join(out, "samples.npz")), argv
                return
            _assert_one_line_failure(rc, err, argv)
            assert _tree(root) == before, f"{argv}: left behind {sorted(_tree(root) - before)}"
        finally:
            shutil.rmtree(root, ignore_errors=True)

    check()


@st.composite
def broken_npz(draw, good: dict, path: str) -> str:
    """A samples file: good, with keys dropped or replaced, NaN rows, or its bytes cut or overwritten."""
    z = dict(good)
    kind = draw(st.sampled_from(["good", "drop", "nan", "dtype", "shape", "cut", "noise", "config"]))
    if kind == "drop":
        for k in draw(st.lists(st.sampled_from(sorted(z)), min_size=1, unique=True)):
            z.pop(k)
    elif kind == "nan":
        x = z["samples"].copy()
        x[draw(st.integers(0, len(x) - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        z["samples"] = x
    elif kind == "dtype":
        z[draw(st.sampled_from(["samples", "nfe"]))] = np.array(["a", "b"])
    elif kind == "shape":
        z[draw(st.sampled_from(["samples", "nfe"]))] = np.zeros(draw(st.sampled_from([(), (0,), (2, 2), (9,)])))
    elif kind == "config":
        z["config"] = np.array(draw(st.sampled_from(["{", "[1]", "null", '{"model_options": 3}'])))
    np.savez(path, **z)
    if kind in ("cut", "noise"):
        raw = bytearray(open(path, "rb").read())
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] if kind == "cut" else raw[:at] + bytes(draw(st.binary(min_size=1, max_size=64))) + raw[at:]
        open(path, "wb").write(bytes(raw))
    return path


def test_any_eval_input_succeeds_or_fails_in_one_line(finished_run):
    good = dict(np.load(finished_run / "samples.npz"))

    @FUZZ
    @given(data=st.data())
    def check(data):
        root = tempfile.mkdtemp(prefix="fuzz-eval-")
        try:
            path = data.draw(broken_npz(good, os.path.join(root, "s.npz")))
            argv = ["eval", path, "--no-features"]
            ref = data.draw(st.sampled_from([None, "gmm-digits", "nope", "ideal-digits", "gmm-mnist"]))
            if ref is not None:
                argv += ["--ref", ref]
            argv += data.draw(st.lists(st.sampled_from(["--modes=0", "--modes=3", "--std=-1", "--std=nan", "--fid",
                                                        "--fid-ref=nope", "--modes=x"]), max_size=2, unique=True))
            rc, err = _run_cli(argv)
            if rc != 0:
                _assert_one_line_failure(rc, err, argv)
        finally:
            shutil.rmtree(root, ignore_errors=True)

    check()


API_JUNK = st.sampled_from([None, -1, 0, 1.5, float("nan"), float("inf"), True, "3", 10 ** 30, [2], torch.tensor(2),
                            torch.tensor([1, 2])])


def test_any_api_arguments_succeed_or_fail_in_one_line():
    model = load_model("gmm-digits", modes=10)

    @FUZZ
    @given(data=st.data())
    def check(data):
        root = tempfile.mkdtemp(prefix="fuzz-api-")
        open(os.path.join(root, "a_file"), "w").close()
        try:
            args = dict(num=2, nfe=3, seed=0, batch_size=2, device="cpu", graph="auto")
            for name in data.draw(st.lists(st.sampled_from(sorted(args)), min_size=1, max_size=3, unique=True)):
                junk = API_JUNK.filter(lambda v: name != "num" or not (isinstance(v, int) and v > 10 ** 6))
                args[name] = data.draw(st.one_of(junk, st.integers(-5, 5)) if name != "device"  # a huge valid num
                                       else st.sampled_from(["cpu", "cuda", "bogus", "", None, 3, "cuda:9"]))  # is work
            out = data.draw(st.sampled_from([None, "new", "a_file", "a_file/x", ""]))
            sampler = data.draw(st.sampled_from(["heun", "karras_sde", "nope", 3]))
            before = _tree(root)
            try:
                api.sample(model, sampler, progress=False, out_dir=None if out is None else os.path.join(root, out),
                           **args)
            except (ValueError, FileExistsError, FileNotFoundError) as err:
                assert "\n" not in str(err), f"{sampler} {args} {out}: not one line: {err}"
                assert _tree(root) == before, f"{sampler} {args} {out}: left {sorted(_tree(root) - before)}"
        finally:
            shutil.rmtree(root, ignore_errors=True)

    check()
