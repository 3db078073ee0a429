#!/usr/bin/env bash
# The GPU checks and benchmarks of the README's Performance section, in as few device calls as
# possible. Run from the repository root on the GPU machine:
#
#   bash bench/gpu_checks.sh tests search-macro search-micro   # call 1 (time limits: 9.7 min in all)
#   bash bench/gpu_checks.sh retrain peers                     # call 2 (time limits: 9.7 min in all)
#   bash bench/gpu_checks.sh search-macro-eager retrain-eager  # call 3, if device time is left
#   bash bench/gpu_checks.sh rnn-tests rnn                     # the recurrent cell (time limits: 7 min in all)
#
# (A device call may run 10 minutes. How long each part really takes on the current code has not
# been measured yet: the limits are set from the old code's figures.)
#
# Parts (each under its own `timeout`, its output in $OUT/<part>.log, or bench/results/gpu/):
#   tests               the GPU-only tests: real CUDA-graph captures against eager PyTorch
#   search-macro        bench/search_epoch.py --paper --search-for macro (CUDA graphs on): warm-up,
#                       clean, instrumented and profiled epochs (old code: 66 s an epoch)
#   search-micro        the same for micro (old code: 60 s an epoch)
#   search-macro-eager  macro with --cuda-graphs off, no profiled epoch: before/after on one machine
#   search-micro-eager  the same for micro
#   retrain             bench/retrain_loop.py, paper batches, 50 steps an epoch, graphs on
#   retrain-eager       the same with --cuda-graphs off
#   peers               ours vs NNI 2.10 EnasTrainer on the peers' networks (macro, micro)
#   rnn-tests           the recurrent cell's GPU test: its windows as CUDA graphs against eager PyTorch
#   rnn                 bench/rnn_search.py at the paper's sizes: child step, reward, controller update,
#                       projected search epoch, retrain tokens/s (graphed windows) and batch-1 test tokens/s
#
# Needs: .device-site/nni30 (NNI 3.0, `bash ../shared/device/make-site.sh`), and for `peers`
# .device-site/nni210 (`make-site.sh nni210`) and bench/peer-bench (a copy of
# ../shared/peer-bench): carry `.device-site` and `bench/peer-bench` with the call.
# Each part's last JSON line (the bench scripts' metrics) is also printed at the end.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench/results/gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/.device-site/nni30:$PWD${PYTHONPATH:+:$PYTHONPATH}"
peers=bench/peer-bench

run() {   # run PART SECONDS COMMAND...: one part, its log, and how it ended
    local part=$1 seconds=$2
    shift 2
    local start=$SECONDS
    echo "== $part: $*" | tee "$out/$part.log"
    timeout "$seconds" "$@" >>"$out/$part.log" 2>&1
    local rc=$?
    echo "== $part: exit $rc after $((SECONDS - start)) s" | tee -a "$out/$part.log"
}

summary() {   # the logs of this call, in the order they were written
    for log in $(ls -tr "$out"/*.log); do
        echo "-- $(basename "$log" .log)"
        grep -E '^(FAILED|ERROR|[0-9]+ (passed|failed))|passed|skipped' "$log" | tail -3
        grep -E '^\{' "$log" | tail -2 | cut -c1-1500
    done
}

parts=" tests search-macro search-micro search-macro-eager search-micro-eager retrain retrain-eager peers rnn-tests rnn "

[ $# -gt 0 ] || set -- tests search-macro search-micro
for part in "$@"; do
    case $parts in
        *" $part "*) ;;
        *) echo "error: unknown part '$part' (the parts are listed at the top of $0)" >&2; exit 2 ;;
    esac
done
rm -f "$out"/*.log      # the summary reads this call's logs only
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch, pytorch_lightning as pl; print("torch", torch.__version__, "lightning", pl.__version__)'
for part in "$@"; do
    case $part in
        tests) run tests 120 python3 -m pytest -q -rs -p no:cacheprovider tests/test_cuda_graphs.py -k gpu ;;
        search-macro|search-micro)
            run "$part" 230 python3 bench/search_epoch.py --device cuda --paper --search-for "${part#search-}" ;;
        search-macro-eager|search-micro-eager)
            space=${part#search-}
            run "$part" 280 python3 bench/search_epoch.py --device cuda --paper --search-for "${space%-eager}" \
                --cuda-graphs off --no-profile ;;
        retrain) run retrain 300 python3 bench/retrain_loop.py --device cuda --steps 50 ;;
        retrain-eager) run retrain-eager 300 python3 bench/retrain_loop.py --device cuda --steps 50 --cuda-graphs off ;;
        rnn-tests) run rnn-tests 120 python3 -m pytest -q -rs -p no:cacheprovider tests/test_language_model.py -k gpu ;;
        rnn) run rnn 300 python3 bench/rnn_search.py --device cuda --steps 50 --rewards 50 --ctrl-updates 20 \
                 --retrain-steps 20 --test-windows 200 ;;
        peers)
            for space in macro micro; do
                run "peers-ours-$space" 70 python3 bench/search_epoch.py --network peers --peer-dir "$peers" \
                    --search-for "$space" --samples 16384 --batch-size 128 --device cuda
                run "peers-nni210-$space" 70 env PYTHONPATH="$PWD/.device-site/nni210" python3 \
                    "$peers/peer_nni210/bench_epoch.py" --search-for "$space" --samples 16384 --batch-size 128 \
                    --device cuda
            done ;;
    esac
done
summary
