#!/usr/bin/env bash
# Every GPU check and benchmark of the README's GPU section in ONE device call of about 8 minutes.
# A GPU lease is 15 minutes in all (machine start, idle and close counted): one call of ~8 min
# leaves time for one warm rerun of a part that failed or timed out. Run from the repository root:
#
#   bash bench/gpu_checks.sh                        # the GPU machine: every part, budget 465 s
#   bash bench/gpu_checks.sh --parts tests,retrain  # a warm rerun of some parts
#   bash bench/gpu_checks.sh --cpu-dry-run          # any machine: the same parts at tiny sizes on the
#                                                   # CPU, to check the plumbing (figures meaningless)
#   bash bench/gpu_checks.sh --list [--cpu-dry-run] # the parts' commands; runs nothing
#
# Options: --budget SECONDS (GPU 465; dry run 160, so that it ends within 3 minutes on a busy
# 2-core machine: there a late part may be skipped): no part starts after it, and each part runs
# under min(its cap, the budget left), so the summary always comes back; --min-part SECONDS (15):
# a part with less left is skipped.
#
# The parts, in order of value (cap in seconds on the GPU; the expectations are the review's
# estimates, ../shared/device/REVIEW.md, nothing here has been measured on a GPU yet):
#   tests               the GPU-only tests (real captures vs eager PyTorch, an end-to-end tiny search) 150
#   search-macro        paper macro epoch, graphs on, child phase shortened to 90 steps      80
#                       (--paper --samples 12800): warm-up (captures), clean, instrumented epochs;
#                       projected_paper_epoch_s adds the missing 262 steps at the clean epoch's
#                       time per step; the controller phase (1000 rewards) and export are whole
#   search-micro        the same for micro (72 of 282 steps)                                  110
#   retrain             retrain.py vs a hand-written graphed loop, paper batches, 2 x 30 steps 100
#   search-macro-eager  macro with --cuda-graphs off (45 steps), warm-up and clean epochs      70
#   search-micro-eager  the same for micro (36 steps)                                          80
#   retrain-eager       retrain.py --cuda-graphs off (the eager figure), 2 x 30 steps         60
#   peers-macro-ours    ours on the peers' macro network, 16,384 samples, batch 128            45
#   peers-macro-nni210  NNI 2.10 EnasTrainer, the same epoch (one, cold)                       45
#   peers-micro-ours, peers-micro-nni210   the same for micro                                  45 + 45
#   rnn                 bench/rnn_search.py at the paper's sizes: child step, reward, controller   90
#                       update, projected search epoch, retrain tokens/s (graphed windows), batch-1 test
#
# Output, in $OUT (else bench/results/gpu/): NN-PART.log each, parts.tsv (part, exit status or
# "skipped", seconds, limit), memory.csv (GPU memory every second from nvidia-smi; in a dry run
# the host's), summary.json, and the summary on stdout (bench/gpu_summary.py). Exit status 0
# when the summary came back, whatever the parts did; 2 on bad options or a missing GPU.
#
# Needs on the GPU machine (../shared/device/README.md): .device-site/nni30 (NNI 3.0), and for
# the peers .device-site/nni210 and bench/peer-bench (a copy of ../shared/peer-bench, or
# $ENAS_PEER_BENCH): carry `.device-site` and `bench/peer-bench` with the call. A missing peer
# folder or site skips its part.
set -uo pipefail
cd "$(dirname "$0")/.."

dry=0 list=0 budget='' min_part=15 only=''
while [ $# -gt 0 ]; do
    case $1 in
        --cpu-dry-run) dry=1 ;;
        --list) list=1 ;;
        --budget) budget=${2:-}; shift ;;
        --min-part) min_part=${2:-}; shift ;;
        --parts) only=${2:-}; shift ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown option '$1' (see $0 --help)" >&2; exit 2 ;;
    esac
    shift
done
[ -n "$budget" ] || budget=$([ $dry = 1 ] && echo 160 || echo 465)
case $budget$min_part in *[!0-9]*) echo "error: --budget and --min-part take whole seconds" >&2; exit 2 ;; esac

PARTS=(tests search-macro search-micro retrain rnn search-macro-eager search-micro-eager retrain-eager
       peers-macro-ours peers-macro-nni210 peers-micro-ours peers-micro-nni210)
declare -A CAP=([tests]=150 [search-macro]=80 [search-micro]=110 [retrain]=100 [rnn]=90 [search-macro-eager]=70
                [search-micro-eager]=80 [retrain-eager]=60 [peers-macro-ours]=45 [peers-macro-nni210]=45
                [peers-micro-ours]=45 [peers-micro-nni210]=45)
DRY_CAP=50      # every part of a dry run

selected=("${PARTS[@]}")
if [ -n "$only" ]; then
    IFS=, read -r -a selected <<<"$only"
    for part in "${selected[@]}"; do
        [ -n "${CAP[$part]:-}" ] || { echo "error: unknown part '$part' (the parts: ${PARTS[*]})" >&2; exit 2; }
    done
fi

peers=${ENAS_PEER_BENCH:-bench/peer-bench}       # as bench/peers.py; a dev checkout also has ../shared
[ -d "$peers" ] || [ ! -d ../shared/peer-bench ] || peers=../shared/peer-bench
site=${DEVICE_SITE:-$PWD/.device-site}
export PYTHONUNBUFFERED=1 PYTHONPATH="$site/nni30:$PWD${PYTHONPATH:+:$PYTHONPATH}"
# a dry run shares a small CPU with others: one thread per process does not oversubscribe it
[ $dry = 0 ] || export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

command_of() {   # command_of PART: the part's command, one word per line; "skip: WHY" when it cannot run
    local part=$1 space
    local -a search=(python3 bench/search_epoch.py --sample-reps 0)
    local -a retrain=(python3 bench/retrain_loop.py --reps 1)
    local -a peer=(--samples 16384 --batch-size 128)
    if [ $dry = 1 ]; then   # tiny sizes; the graphs-on parts use the CPU stand-in graphs
        search+=(--device cpu --paper --samples 48 --batch-size 16 --ctrl-steps 1 --ctrl-steps-aggregate 2
                 --num-candidates 2 --layers 1 --channels 4)
        retrain+=(--device cpu --arcs paper-micro --layers 1 --channels 4 --steps 1 --batch-size 4)
        peer=(--samples 32 --batch-size 16 --device cpu --plan warmup,clean)
    else
        search+=(--device cuda --paper)
        retrain+=(--device cuda --steps 30)
        peer+=(--device cuda)
    fi
    case $part in
        tests) printf '%s\n' python3 -m pytest -q -rs -p no:cacheprovider tests/test_cuda_graphs.py \
                   tests/test_search_graphs.py tests/test_data.py tests/test_language_model.py \
                   -k 'gpu or loader_on_cuda' ;;
        rnn)
            if [ $dry = 1 ]; then
                printf '%s\n' python3 bench/rnn_search.py --device cpu --hidden-size 8 --nodes 3 --batch-size 4 \
                    --bptt 5 --vocab 50 --steps 1 --rewards 1 --ctrl-updates 1 --ctrl-steps-aggregate 2 \
                    --retrain-hidden 8 --retrain-steps 1 --test-windows 2
            else
                printf '%s\n' python3 bench/rnn_search.py --device cuda --steps 50 --rewards 50 --ctrl-updates 20 \
                    --retrain-steps 20 --test-windows 200
            fi ;;
        search-macro|search-micro)
            space=${part#search-}
            if [ $dry = 1 ]; then search+=(--stand-in-graphs); else search+=(--samples 12800); fi
            printf '%s\n' "${search[@]}" --plan warmup,clean,instrumented --search-for "$space" ;;
        search-macro-eager|search-micro-eager)
            space=${part#search-}
            [ $dry = 1 ] || search+=(--samples 6400)
            printf '%s\n' "${search[@]}" --plan warmup,clean --cuda-graphs off --search-for "${space%-eager}" ;;
        retrain) printf '%s\n' "${retrain[@]}" ;;
        retrain-eager) printf '%s\n' "${retrain[@]}" --cuda-graphs off --impls ours ;;
        peers-*-ours)
            space=${part#peers-}
            [ -d "$peers/peer_nni30" ] || { echo "skip: needs $peers (a copy of ../shared/peer-bench)"; return; }
            printf '%s\n' python3 bench/search_epoch.py --network peers --peer-dir "$peers" --search-for "${space%-ours}" \
                "${peer[@]}" --no-profile --sample-reps 0 ;;
        peers-*-nni210)
            space=${part#peers-}
            [ -d "$site/nni210" ] || { echo "skip: needs .device-site/nni210 (make-site.sh nni210)"; return; }
            [ -f "$peers/peer_nni210/bench_epoch.py" ] || { echo "skip: needs $peers/peer_nni210"; return; }
            [ $dry = 1 ] && peer=(--samples 32 --batch-size 16 --device cpu)
            printf '%s\n' env "PYTHONPATH=$site/nni210" python3 "$peers/peer_nni210/bench_epoch.py" \
                --search-for "${space%-nni210}" "${peer[@]}" ;;
    esac
}

if [ $list = 1 ]; then
    for part in "${selected[@]}"; do
        mapfile -t cmd < <(command_of "$part")
        if [ "${cmd[0]}" != "${cmd[0]#skip: }" ]; then printf '%s\t%s\n' "$part" "${cmd[0]}"
        else printf '%s\t%s\n' "$part" "$(printf '%q ' "${cmd[@]}")"; fi
    done
    exit 0
fi

out=${OUT:-bench/results/gpu}
mkdir -p "$out"
rm -f "$out"/*.log "$out/parts.tsv" "$out/memory.csv" "$out/summary.json" "$out/env.txt"   # the summary reads this call's files only
if [ $dry = 0 ]; then
    if ! nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/env.txt"; then
        echo "error: no NVIDIA GPU here (nvidia-smi failed): use --cpu-dry-run" >&2; exit 2
    fi
else
    echo "cpu dry run: $(nproc --all) cores, one thread per process" | tee "$out/env.txt"
fi
python3 -c 'import torch, pytorch_lightning as pl, nni; print("torch", torch.__version__, "lightning", pl.__version__,
    "nni", nni.__version__, "cuda", torch.cuda.is_available())' | tee -a "$out/env.txt"
[ "${PIPESTATUS[0]}" = 0 ] || { echo "error: torch, Lightning or NNI missing" >&2; exit 2; }

sample_memory() {   # every second: time, used MiB, total MiB (the GPU's, or the host's in a dry run)
    echo "time_s,used_mib,total_mib" >"$out/memory.csv"
    while :; do
        if [ $dry = 0 ]; then
            nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader,nounits | head -1 |
                tr -d ' ' | sed "s/^/$SECONDS,/"
        else
            awk -v t=$SECONDS '/^MemTotal/{m=$2} /^MemAvailable/{a=$2} END{printf "%d,%d,%d\n", t, (m-a)/1024, m/1024}' \
                /proc/meminfo
        fi >>"$out/memory.csv"
        sleep 1
    done
}
sample_memory &
sampler=$!
trap 'kill $sampler 2>/dev/null' EXIT

printf 'part\tstatus\tseconds\tlimit\n' >"$out/parts.tsv"
t0=$SECONDS n=0
for part in "${selected[@]}"; do
    n=$((n + 1))
    log=$out/$(printf %02d $n)-$part.log
    mapfile -t cmd < <(command_of "$part")
    left=$((budget - (SECONDS - t0)))
    if [ "${cmd[0]}" != "${cmd[0]#skip: }" ]; then
        printf '%s\tskipped\t0\t0\t%s\n' "$part" "${cmd[0]#skip: }" >>"$out/parts.tsv"
        echo "== $part: skipped (${cmd[0]#skip: })" | tee "$log"
        continue
    fi
    if [ $left -lt "$min_part" ]; then
        printf '%s\tskipped\t0\t0\tbudget: %s s left\n' "$part" "$left" >>"$out/parts.tsv"
        echo "== $part: skipped (budget: $left s left)" | tee "$log"
        continue
    fi
    cap=$([ $dry = 1 ] && echo $DRY_CAP || echo "${CAP[$part]}")
    limit=$((cap < left ? cap : left))
    echo "== $part (limit $limit s): ${cmd[*]}" | tee "$log"
    start=$SECONDS
    if [ $dry = 1 ]; then nice -n 5 timeout -k 5 "$limit" "${cmd[@]}" >>"$log" 2>&1; else
        timeout -k 5 "$limit" "${cmd[@]}" >>"$log" 2>&1; fi
    rc=$?
    printf '%s\t%s\t%s\t%s\n' "$part" "$rc" "$((SECONDS - start))" "$limit" >>"$out/parts.tsv"
    echo "== $part: exit $rc after $((SECONDS - start)) s" | tee -a "$log"
done
kill $sampler 2>/dev/null
echo "== all parts: $((SECONDS - t0)) s of a $budget s budget"
python3 bench/gpu_summary.py "$out" --dry-run $dry || echo "(the summary failed: the logs are in $out)"
exit 0
