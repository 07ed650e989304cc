#!/usr/bin/env bash
# The one command a lent GPU runs first: install the carried wheels, build the C++ extension against the
# image's torch, compile the Triton kernels ahead of time, run the CUDA tests, then benchmark the kernels,
# the engine and the throughput against the usual samplers. Every stage has its own time limit, so one
# failing or hanging stage still lets the others run and report; the limits add up to 8 minutes. The aot stage
# compiles every kernel variant for the device's arch once, up front, on all cores, into the Triton cache the
# later stages launch from.
#
#   bash scripts/gpu_check.sh              # on the GPU machine, from the repository root
#   bash scripts/gpu_check.sh --quick      # the three headline figures in at most 3 minutes: kernel GB/s against
#                                          # the device copy, time per NFE over the graphed bare forward at batch
#                                          # 1 and 256, samples/s against k-diffusion and diffusers at batch 16
#   bash scripts/gpu_check.sh --dry-run    # anywhere, on the CPU at tiny sizes (CI runs it: the script can't rot)
#   bash scripts/gpu_check.sh --sim        # the GPU run's own commands at tiny sizes on a simulated CUDA device
#                                          # (tests/sim_cuda.py: CUDA branches, graphs, Triton on device tensors;
#                                          # CI runs it: what would break at first contact breaks here first)
#   bash scripts/gpu_check.sh --only cuda-tests,bench-engine   # chosen stages again on a warm machine (a fresh
#                                          # machine needs env,wheels,build before the others); with --quick too
#
# Results go to $OUT when it is set (the device tool brings back at most 8 files), else to
# bench/results/gpu_check-<time>/: summary.md and summary.json (stage, status, seconds, limit, note),
# gpu_check.log (everything every stage printed), results.md (the benchmarks' markdown sections) and
# results.tar.gz (per-stage logs, the benchmarks' JSON/markdown/plots, JUnit XML of the tests).
# These are rewritten every $GPU_CHECK_FLUSH_S seconds (default 10) while a stage runs (its row says
# "running") and after every stage, and the benchmarks write each row as they measure it, so a stage cut
# off at its limit, or the whole call cut off, still brings back what was done.
# Status: pass, FAIL (exit code), TIMEOUT, skip (with a note), missing (a module not written yet).
# Python: $PYTHON, else python3 on the PATH (on the GPU image, /opt/torch/.venv/bin/python3).
# Wheels: scripts/fetch_wheels.sh fills .whl/ on a machine with a package registry; carry .whl along.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
CMD=$(echo "bash scripts/gpu_check.sh $*" | sed 's/ *$//')

DRY=0
SIM=0
QUICK=0
ONLY=""
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) DRY=1 ;;
        --sim) SIM=1 ;;
        --quick) QUICK=1 ;;
        --only) ONLY=${2:-}; shift ;;
        -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

[ "$DRY" = 1 ] && [ "$SIM" = 1 ] && { echo "gpu_check.sh: --dry-run or --sim, not both" >&2; exit 2; }

# name:limit_s (the order they run in) on the GPU; the limits add up to 480 s (x SCALE in the CPU rehearsals).
# No GPU has run this yet: the limits are twice the cold-machine times estimated from what this CPU measures
# (README, "On a GPU": the C++ build, the AOT compile per variant, the kernel tests' compiles); each run's
# summary.json records every stage's seconds, which set them after the first GPU run.
STAGES=(env:20 wheels:20 build:90 aot:40 cuda-tests:40 kernel-tests:60 bench-kernels-fp32:35
        bench-kernels-bf16:30 bench-engine:55 bench-throughput:90)
# --quick: what the three headline figures need, limits adding up to 180 s
QUICK_STAGES=(env:15 wheels:15 build:60 bench-kernels-fp32:25 bench-engine:30 bench-throughput:35)
[ "$QUICK" = 1 ] && STAGES=("${QUICK_STAGES[@]}")
# The CPU rehearsals run on shared 2-core machines: their limits are generous multiples of the GPU's, sized from
# measured times. --dry-run x3 (at load 8 on 2 cores: aot 17-20 s of 40, cuda-tests 16-22 s of 40 before it
# collected only the gpu-marked files); --sim x12 (the simulated device is slow: at load 9-14 on 2 cores,
# cuda-tests took 176 s and bench-engine over 440 s, 8x its 55 s).
SCALE=$( [ "$SIM" = 1 ] && echo 12 || { [ "$DRY" = 1 ] && echo 3 || echo 1; })
BUDGET_S=0
for s in "${STAGES[@]}"; do BUDGET_S=$((BUDGET_S + ${s##*:})); done
TOTAL_S=${GPU_CHECK_TOTAL_S:-$((BUDGET_S * SCALE))}
FLUSH_S=${GPU_CHECK_FLUSH_S:-10}
if [ -n "$ONLY" ]; then  # every name must be a stage of this run
    for name in ${ONLY//,/ }; do
        printf '%s\n' "${STAGES[@]%%:*}" | grep -qx -- "$name" \
            || { echo "gpu_check.sh: --only: no stage '$name' in this run; stages: ${STAGES[*]%%:*}" >&2; exit 2; }
    done
fi

export ROOT DRY SIM QUICK PYTHONUNBUFFERED=1
export PY=${PYTHON:-python3}
export SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
STAMP=$(date +%Y%m%d-%H%M%S)
RES=${OUT:-$ROOT/bench/results/gpu_check-$STAMP}
mkdir -p "$RES" || exit 2
RES=$(cd "$RES" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX") || exit 2
export WORK RESULTS=$WORK/results
trap 'rm -rf "$WORK"' EXIT  # everything in it comes back in results.tar.gz
mkdir -p "$WORK/logs" "$RESULTS"
# DPY: the python of the stages that use the device; with --sim, the same python on the simulated device
export DPY=$PY
if [ "$SIM" = 1 ]; then
    DPY=$WORK/sim-python
    printf '#!/usr/bin/env bash\nexec %q %q "$@"\n' "$PY" "$ROOT/tests/sim_cuda.py" >"$DPY"
    chmod +x "$DPY"
fi
LOG=$RES/gpu_check.log
: >"$LOG"
SUMMARY=()  # "stage<TAB>status<TAB>seconds<TAB>limit<TAB>note"
T_START=$(date +%s%N)

say() { echo "$*" | tee -a "$LOG"; }

# ---------------------------------------------------------------- the stages
# Each runs in its own bash under `timeout`, from the repository root, with $NOTE (a file: one line
# for the summary), $RESULTS (files to bring back), $DRY and $SIM. Exit 0 pass, 77 skip, 78 missing.

light() { [ "$DRY" = 1 ] || [ "$SIM" = 1 ]; }  # no real device: install, build and compile nothing new

stage_env() {
    "$DPY" - <<'EOF' | tee "$WORK/logs/env.out"
import os, platform, sys
import torch
try:
    import triton
    tv = triton.__version__
except ImportError:
    tv = None
cuda = torch.cuda.is_available()
dev = torch.cuda.get_device_name() if cuda else f"cpu ({platform.machine()}, {os.cpu_count()} cores)"
print(f"python {platform.python_version()} ({sys.executable}); torch {torch.__version__} "
      f"(cuda {torch.version.cuda}); triton {tv}; device: {dev}")
if cuda:
    p = torch.cuda.get_device_properties(0)
    print(f"{p.name}: sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB")
print(f"NOTE {dev}, torch {torch.__version__}, triton {tv}")
sys.exit(0 if cuda or os.environ["DRY"] == "1" else 3)
EOF
    local rc=${PIPESTATUS[0]}
    grep '^NOTE ' "$WORK/logs/env.out" | sed 's/^NOTE //' >"$NOTE"
    if ! light; then
        nvidia-smi -L 2>&1 || true
        nvcc --version 2>&1 | tail -2 || true
        [ "$rc" = 3 ] && echo "; torch sees no CUDA device" | tee -a "$NOTE"
    fi
    return "$rc"
}

stage_wheels() {
    local wheels=(.whl/*.whl)
    if [ ! -e "${wheels[0]}" ]; then
        if light; then  # nothing to install: check that the fetch script parses
            bash -n scripts/fetch_wheels.sh && echo "dry run: no .whl/; scripts/fetch_wheels.sh parses" >"$NOTE"
            return
        fi
        echo "no .whl/: run scripts/fetch_wheels.sh where pip reaches a registry, and carry .whl" >"$NOTE"
        return 77
    fi
    if light; then  # resolve the install, install nothing
        "$PY" -m pip install --dry-run -q --no-index --no-deps --no-compile --target "$WORK/site-dry" "${wheels[@]}" \
            || return
        echo "dry run: ${#wheels[@]} wheels resolve (pip install --dry-run)" >"$NOTE"
        return
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "${wheels[@]}" || return
    PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} "$PY" -c "
import importlib.util
for m in ('diffusers', 'k_diffusion', 'torchsde', 'trampoline', 'pytorch_fid', 'mlxtend'):
    assert importlib.util.find_spec(m), m + ' not importable'
import diffusers, torchsde
print('diffusers', diffusers.__version__, 'torchsde', torchsde.__version__)" || return
    echo "${#wheels[@]} wheels into $SITE" >"$NOTE"
}

stage_build() {
    local check="import dmcmc_fast, dmcmc_fast.kernels; from dmcmc_fast import _C; print('dmcmc_fast._C:', _C.__file__)"
    if light; then  # building takes minutes on a 2-core machine: reuse the installed one
        "$PY" -c "$check" || return
        echo "dry run: the installed extension imports (not rebuilt)" >"$NOTE"
        return
    fi
    # First what the editable install maps (dmcmc_fast.kernels -> kernels/), so that the later stages can
    # import the package from the repository root even if the build below fails or runs out of time: without
    # the extension its torch twins do its work (same numbers, slower), and this stage says FAIL.
    [ -e dmcmc_fast/kernels ] || ln -s ../kernels dmcmc_fast/kernels
    # An editable install into the image's python: builds dmcmc_fast/_C in place against that torch.
    # No index, no build isolation: nothing is downloaded.
    if "$PY" -m pip install --no-index --no-deps --no-build-isolation -e . ; then
        echo "pip install -e . (editable, in $("$PY" -c 'import sys; print(sys.prefix)'))" >"$NOTE"
    else
        echo "pip install -e . failed; falling back to setup.py build_ext --inplace"
        if ! "$PY" setup.py build_ext --inplace; then
            echo "the C++ extension did not build against this torch (log); later stages run without dmcmc_fast._C" \
                >"$NOTE"
            return 1
        fi
        echo "build_ext --inplace (pip -e failed)" >"$NOTE"
    fi
    "$PY" -c "$check"
}

stage_aot() {
    if ! "$PY" -c "import importlib.util as u, sys; sys.exit(0 if u.find_spec('dmcmc_fast.kernels.aot') else 1)"; then
        echo "dmcmc_fast.kernels.aot does not exist (yet)" | tee "$NOTE"
        return 78
    fi
    # Ahead-of-time compilation needs no GPU (Triton ships ptxas). On the GPU: every variant for the device's arch,
    # on every core, into the Triton cache (the default one, which the later stages' launches read: a launch whose
    # specialisation a variant covers loads its cubin instead of compiling). The light runs compile one kernel's
    # fp32 variants.
    local arch=90 extra=(--kernel karras_step._euler --dtype fp32 --jobs 1)
    if ! light; then
        arch=$("$PY" -c "import torch; c = torch.cuda.get_device_capability(); print(c[0] * 10 + c[1])") || arch=90
        extra=(--jobs "$(nproc 2>/dev/null || echo 8)")
    fi
    env -u TRITON_INTERPRET "$PY" -m dmcmc_fast.kernels.aot --arch "$arch" "${extra[@]}" 2>&1 | tee "$WORK/logs/aot.out"
    local rc=${PIPESTATUS[0]}
    grep -o 'compiled [0-9]* of [0-9]*' "$WORK/logs/aot.out" | tail -1 >"$NOTE"
    return "$rc"
}

_pytest_note() {  # the last line of pytest's output, without its '=' rule
    grep -E '(passed|failed|skipped|error|deselected|no tests ran|collected|tests? collected)' "$1" | tail -1 \
        | sed 's/^=* *//; s/ *=*$//' >"$NOTE"
}

stage_cuda_tests() {  # every test marked gpu (they skip without CUDA), from the files that mark any (collecting
    # only those takes seconds, not the whole suite's imports; tests/test_gpu_check.py keeps the grep complete)
    local files
    files=$(grep -lE 'mark\.gpu|requires_cuda' tests/test_*.py | tr '\n' ' ')
    # shellcheck disable=SC2086
    "$DPY" -m pytest -q -rs -m gpu -p no:cacheprovider --junitxml="$RESULTS/cuda-tests.xml" $files 2>&1 \
        | tee "$WORK/logs/cuda-tests.out"
    local rc=${PIPESTATUS[0]}
    _pytest_note "$WORK/logs/cuda-tests.out"
    if [ "$rc" = 0 ] && [ "$DRY" = 0 ] && ! grep -q ' passed' "$NOTE"; then
        echo "no gpu test ran (all skipped?)" >>"$NOTE"
        return 1
    fi
    return "$rc"
}

stage_kernel_tests() {  # tests on the `device` fixture: compiled Triton vs the torch references on the GPU
    local files
    files=$(grep -lE 'def test_[A-Za-z0-9_]*\([^)]*\bdevice\b' tests/test_*.py | tr '\n' ' ')
    local args=(-q -rs -p no:cacheprovider -m "not gpu and not slow")
    if [ "$DRY" = 1 ]; then  # on the CPU these run in the normal suite (interpreter): only collect them here
        args+=(--collect-only)
    else  # many Triton compilations: spread them over processes where pytest-xdist is there, a file per worker
        # (the tests of one kernel sit in one file: a worker compiles what a concurrent one would compile again)
        args+=(--junitxml="$RESULTS/kernel-tests.xml")
        [ "$SIM" = 0 ] && "$PY" -c "import xdist" 2>/dev/null && args+=(-n 8 --dist loadfile)
    fi
    # shellcheck disable=SC2086
    "$DPY" -m pytest "${args[@]}" $files 2>&1 | tee "$WORK/logs/kernel-tests.out"
    local rc=${PIPESTATUS[0]}
    _pytest_note "$WORK/logs/kernel-tests.out"
    return "$rc"
}

_bench_kernels() {
    local dtype=$1 extra=()
    [ "$DRY" = 1 ] && extra=(--cpu-smoke --kernels euler_step block_min_update gibbs_block_min_M1000)
    [ "$SIM" = 1 ] && extra=(--batch 4 --dim 4096 --reps 2)
    [ "$QUICK" = 1 ] && ! light && extra=(--reps 30)
    "$DPY" -m bench.kernels --dtype "$dtype" --out "$RESULTS/kernels.jsonl" --md "$RESULTS/kernels.md" "${extra[@]}" \
        2>&1 | tee "$WORK/logs/kernels-$dtype.out"
    local rc=${PIPESTATUS[0]}
    grep '^# summary' "$WORK/logs/kernels-$dtype.out" | sed 's/^# summary: //' >"$NOTE"
    return "$rc"
}
stage_bench_kernels_fp32() { _bench_kernels float32; }
stage_bench_kernels_bf16() { _bench_kernels bfloat16; }

stage_bench_engine() {
    local extra=(--max-seconds 35)
    [ "$DRY" = 1 ] && extra=(--cpu-smoke)
    [ "$SIM" = 1 ] && extra=(--batches 1 --nfe 3 --reps 2 --runs 1 --batches-per-call 2)
    # --quick: heun's time per NFE over the graphed bare forward at batch 1 and 256
    [ "$QUICK" = 1 ] && ! light && extra=(--samplers heun --batches 1 256 --reps 10 --runs 1 --max-seconds 15)
    "$DPY" -m bench.engine --out "$RESULTS/engine.jsonl" --md "$RESULTS/engine.md" "${extra[@]}" 2>&1 \
        | tee "$WORK/logs/engine.out"
    local rc=${PIPESTATUS[0]}
    grep '^# summary' "$WORK/logs/engine.out" | sed 's/^# summary: //' >"$NOTE"
    return "$rc"
}

stage_bench_throughput() {
    local args
    if [ "$DRY" = 1 ]; then
        args=(--device cpu --models gmm-digits --kinds heun --batches 2 --nfe 3 --reps 2 --warmup 0 --budget 1
              --compile-models none --no-plot)
    elif [ "$SIM" = 1 ]; then  # the GPU run's models and baselines, at one tiny cell each
        args=(--models cifar-unet,gmm-mnist --kinds heun --batches 1 --nfe 3 --reps 2 --warmup 0 --budget 1
              --compile-models gmm-mnist --no-plot)
    elif [ "$QUICK" = 1 ]; then  # samples/s against the baselines (k-diffusion, diffusers among them) at batch 16
        args=(--models cifar-unet --kinds heun --batches 16 --nfe 35 --reps 3 --warmup 1 --budget 2
              --compile-models none --max-seconds 20 --no-plot)
    else  # the CIFAR UNet (network-bound), then the analytic model (sampler overhead), which is also run
        # under torch.compile (compiling the UNet's step takes minutes: not in this budget)
        args=(--models cifar-unet,gmm-mnist --kinds heun --batches 1,16,256 --nfe 35 --reps 10 --warmup 1
              --budget 4 --compile-models gmm-mnist --max-seconds 60)
    fi
    "$DPY" -m bench.throughput "${args[@]}" --out "$RESULTS/throughput" 2>&1 | tee "$WORK/logs/throughput.out"
    local rc=${PIPESTATUS[0]}
    grep '^# summary' "$WORK/logs/throughput.out" | sed 's/^# summary: //' >"$NOTE"
    return "$rc"
}

export -f light stage_env stage_wheels stage_build stage_aot _pytest_note stage_cuda_tests stage_kernel_tests \
    _bench_kernels stage_bench_kernels_fp32 stage_bench_kernels_bf16 stage_bench_engine stage_bench_throughput

# ---------------------------------------------------------------- running and reporting
_json_str() {  # a JSON string literal
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\t'/ }
    s=${s//$'\r'/ }
    printf '"%s"' "${s//$'\n'/ }"
}

_kind() {  # how this run met a device, for the summary's title
    [ "$QUICK" = 1 ] && printf '(quick) '
    if [ "$DRY" = 1 ]; then echo '(dry run, CPU) '; elif [ "$SIM" = 1 ]; then echo '(simulated CUDA on the CPU) '; fi
}

_secs() { printf '%d.%d' $(($1 / 1000)) $((($1 % 1000) / 100)); }

write_summary() {  # [a row of the stage running now]: summary.md/.json, results.md, results.tar.gz in $RES
    local total_ms=$((($(date +%s%N) - T_START) / 1000000)) line stage status secs limit note first=1 md
    local rows=("${SUMMARY[@]}") tag=$BASHPID  # this writer's temporary names (the flusher is another process)
    [ $# -gt 0 ] && rows+=("$1")
    {
        echo "# gpu_check $(_kind)— $STAMP"
        echo
        echo "- device: ${DEVICE:-unknown}"
        echo "- total: $(_secs "$total_ms") s (stage limits add up to at most ${TOTAL_S} s); command: \`$CMD\`"
        echo
        echo "| stage | status | seconds | limit s | note |"
        echo "|---|---|---|---|---|"
        for line in "${rows[@]}"; do
            IFS=$'\t' read -r stage status secs limit note <<<"$line"
            echo "| $stage | $status | $secs | $limit | ${note//|/\\|} |"
        done
    } >"$RES/summary.md.tmp$tag"
    {
        printf '{"dry_run": %s, "sim": %s, "quick": %s, "time": %s, "device": %s, "total_s": %s, "limit_s": %s, "stages": [' \
            "$( [ "$DRY" = 1 ] && echo true || echo false)" "$( [ "$SIM" = 1 ] && echo true || echo false)" \
            "$( [ "$QUICK" = 1 ] && echo true || echo false)" \
            "$(_json_str "$STAMP")" "$(_json_str "${DEVICE:-unknown}")" \
            "$(_secs "$total_ms")" "$TOTAL_S"
        for line in "${rows[@]}"; do
            IFS=$'\t' read -r stage status secs limit note <<<"$line"
            [ $first = 1 ] || printf ', '
            first=0
            printf '{"stage": %s, "status": %s, "seconds": %s, "limit_s": %s, "note": %s}' "$(_json_str "$stage")" \
                "$(_json_str "$status")" "$secs" "$limit" "$(_json_str "$note")"
        done
        printf ']}\n'
    } >"$RES/summary.json.tmp$tag"
    : >"$RES/results.md.tmp$tag"
    for md in kernels.md engine.md throughput/throughput.md; do
        [ -f "$RESULTS/$md" ] && cat "$RESULTS/$md" >>"$RES/results.md.tmp$tag"
    done
    cp "$RES/summary.md.tmp$tag" "$WORK/summary.md"
    mv "$RES/summary.md.tmp$tag" "$RES/summary.md"  # each file replaced whole: a reader never sees half of one
    mv "$RES/summary.json.tmp$tag" "$RES/summary.json"
    mv "$RES/results.md.tmp$tag" "$RES/results.md"
    tar czf "$RES/results.tar.gz.tmp$tag" -C "$WORK" logs results summary.md 2>/dev/null \
        && mv "$RES/results.tar.gz.tmp$tag" "$RES/results.tar.gz" || rm -f "$RES/results.tar.gz.tmp$tag"
}

run_stage() {  # name limit
    local name=$1 limit=$(($2 * SCALE)) fn=stage_${1//-/_}
    local left=$((TOTAL_S - ($(date +%s%N) - T_START) / 1000000000))
    if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$name,"* ]]; then
        SUMMARY+=("$name	skip	0.0	$limit	not in --only")
        return
    fi
    [ "$left" -lt "$limit" ] && limit=$left
    if [ "$limit" -lt 3 ]; then
        SUMMARY+=("$name	skip	0.0	$limit	no time left of ${TOTAL_S} s")
        say "=== [$name] skipped: no time left"
        return
    fi
    export NOTE=$WORK/logs/$name.note
    : >"$NOTE"
    say ""
    say "=== [$name] (limit ${limit} s) $(date +%H:%M:%S)"
    local t0 flusher
    t0=$(date +%s%N)
    (  # the results so far, with this stage's row "running", every FLUSH_S seconds until the stage ends
        n=0
        while [ ! -e "$WORK/flush.stop" ]; do
            sleep 1
            n=$((n + 1))
            [ $((n % FLUSH_S)) = 0 ] && [ ! -e "$WORK/flush.stop" ] \
                && write_summary "$name	running	$(_secs $((($(date +%s%N) - t0) / 1000000)))	$limit	partial results so far"
        done
    ) &
    flusher=$!
    timeout -k 5 "$limit" bash -c "$fn" </dev/null 2>&1 | tee -a "$LOG" "$WORK/logs/$name.log"
    local rc=${PIPESTATUS[0]} ms=$((($(date +%s%N) - t0) / 1000000)) status note
    touch "$WORK/flush.stop"  # the flusher finishes the write it is in (if any) and stops
    wait "$flusher"
    rm -f "$WORK/flush.stop"
    case $rc in
        0) status=pass ;;
        77) status=skip ;;
        78) status=missing ;;
        124 | 137) status=TIMEOUT ;;
        *) status="FAIL ($rc)" ;;
    esac
    note=$(tr '\n\t' '  ' <"$NOTE" | sed 's/  */ /g; s/ $//')
    [ -z "$note" ] && [ "$rc" != 0 ] && note=$(grep -v '^\s*$' "$WORK/logs/$name.log" | tail -1 | cut -c1-200)
    SUMMARY+=("$name	$status	$(_secs "$ms")	$limit	$note")
    say "=== [$name] $status in $(_secs "$ms") s${note:+: $note}"
    [ "$name" = env ] && DEVICE=${note:-unknown}
    # the wheels live in $SITE: every later stage imports them from there
    [ "$name" = wheels ] && [ "$status" = pass ] && ! light && export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
    write_summary
}

say "gpu_check $( [ "$QUICK" = 1 ] && echo '--quick ')$( [ "$DRY" = 1 ] && echo '--dry-run ')$( [ "$SIM" = 1 ] && echo '--sim ')in $ROOT with $PY;" \
    "results in $RES; work files in $WORK"
for s in "${STAGES[@]}"; do
    run_stage "${s%%:*}" "${s##*:}"
done
write_summary
if [ "$(stat -c %s "$LOG")" -gt $((15 * 2 ** 20)) ]; then  # the device tool brings back files up to 16 MiB
    { head -c $((7 * 2 ** 20)) "$LOG"; echo; echo "[... cut ...]"; tail -c $((7 * 2 ** 20)) "$LOG"; } >"$LOG.cut"
    mv "$LOG.cut" "$LOG"
fi
echo
cat "$RES/summary.md"
echo
echo "results: $RES (summary.md, summary.json, gpu_check.log, results.md, results.tar.gz)"
! grep -qE '\| (FAIL|TIMEOUT|missing)' "$RES/summary.md"
