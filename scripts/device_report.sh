#!/usr/bin/env bash
# Accelerator report (docs/performance.md, "GPU"): the same tract calibrated on the default JAX
# device and on the CPU of the same machine, their products compared, then the benchmark on the
# default device and a CPU baseline of its tract pass. The calibrations compile every program
# (--no-compile-cache): their wall times are first-run times.
#
#   bash scripts/device_report.sh OUTDIR [SIZES...]      # SIZES default: 1e5 1e6 1e7
#
# Run from the repository root (PYTHONPATH=. is set here). Logs go to OUTDIR/*.log.
set -u -o pipefail
out=${1:?usage: device_report.sh OUTDIR [SIZES...]}
shift
sizes=${*:-1e5 1e6 1e7}
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$out"
repo=$(mktemp -d)/repo

python -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1 | tee "$out/devices.log"
python -m jaxfgcm.simulate --repo "$repo" --tract 9615 --preset tract --seed 77 --quiet \
    >"$out/simulate.log" 2>&1 || { tail "$out/simulate.log"; exit 1; }
for where in device cpu; do
    if [ "$where" = cpu ]; then plat=cpu; else plat=${JAX_PLATFORMS:-}; fi
    start=$(date +%s%N)
    JAX_PLATFORMS=$plat python -m jaxfgcm.calibrate --tract 9615 --repo "$repo" \
        --output "$out/run_$where" --no-plots --no-compile-cache >"$out/calibrate_$where.log" 2>&1
    rc=$?
    echo "calibrate on $where: rc $rc, $(( ($(date +%s%N) - start) / 1000000 )) ms wall"
    grep -E "zeropoints|in [0-9.]+ s on" "$out/calibrate_$where.log"
done
python scripts/compare_runs.py "$out/run_cpu" "$out/run_device" --tolerance-mmag 0.01 \
    2>&1 | tee "$out/compare.log"
# shellcheck disable=SC2086  # the sizes are separate words
python scripts/bench.py --repo "$repo" --sizes $sizes 2>&1 | tee "$out/bench_device.log"
JAX_PLATFORMS=cpu python scripts/bench.py --repo "$repo" --no-calibrate --sizes 1e6 \
    2>&1 | tee "$out/bench_cpu.log"
