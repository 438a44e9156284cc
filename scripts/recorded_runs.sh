#!/usr/bin/env bash
# The recorded sequential runs of results/sequential/: CounterFact (1,000 records) and zsRE (500),
# batches of 100, evaluated every 500 edits and at the end, with fluency on the first 100 records
# (two generation prompts each) and the general-ability suite. One process per BLUE/base column and
# one CPU thread each, so two cores are both busy; a third, low-priority process evaluates the
# unedited model. Rerunning the same command resumes from the checkpoints in RUNS.
#
#   bash scripts/recorded_runs.sh counterfact   # or zsre
#   bash scripts/recorded_runs.sh counterfact dynamic   # beyond the paper (notebook 10): the
#       <base>_blue_dynamic columns, in the same folder, on the same records and batches
#   N=200 BASE=memit bash scripts/recorded_runs.sh counterfact dynamic_pair   # a shorter run of
#       its own (<dataset>_n<N>_b100) holding <base>_blue_dynamic and fixed <base>_blue side by side
#       (each process also evaluates the unedited row, as every replicate run does): the
#       dynamic-vs-fixed comparison at N edits where the long run's dynamic column would not fit in
#       the time at hand (N overrides the dataset's size)
#   bash scripts/recorded_runs.sh counterfact fair      # the base columns again at an equal total
#       v* budget (--budget equal_total: the base's one optimisation gets 50 steps), in a folder of
#       their own (<dataset>_n<N>_b100_equal_total). BLUE's columns are not run again: under that
#       rule each of its two optimisations gets 25 steps, as in the same-cap run, so notebook 09 §7
#       pairs these with the same-cap run's BLUE columns (curves.equal_total_run checks that the
#       configurations, records and evaluation agree, and refuses otherwise)
#   python -c "from bluebook.experiments.curves import export_run; export_run('RUNS/counterfact_n1000_b100', 'results/sequential/counterfact_n1000_b100')"
set -euo pipefail
DATASET=${1:-counterfact}
WHAT=${2:-paper}
RUNS=${RUNS:-$HOME/bluebook-runs}
PY=${PY:-.venv/bin/python}
case "$DATASET" in
  counterfact) N=${N:-1000}; EXTRA="--generation --fluency-records 100 --fluency-prompts 2" ;;
  zsre) N=${N:-500}; EXTRA="" ;;
  *) echo "dataset must be counterfact or zsre" >&2; exit 2 ;;
esac
OUT=$RUNS/${DATASET}_n${N}_b100
BUDGET=""
if [ "$WHAT" = fair ]; then
  OUT=${OUT}_equal_total
  BUDGET="--budget equal_total --budget-steps 25"
fi
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TQDM_MININTERVAL=30
COMMON="replicate --model smollm2-135m --dataset $DATASET --n $N --batch 100 --eval-every 500 $EXTRA --ability suite --probes all --probe-n 100 $BUDGET --out $OUT"
if [ "$WHAT" = fair ]; then
  nohup $PY -m bluebook $COMMON --methods memit > "$OUT.f1.log" 2>&1 &
  nohup $PY -m bluebook $COMMON --methods alphaedit > "$OUT.f2.log" 2>&1 &
  nohup nice -n 19 $PY -m bluebook $COMMON --methods none > "$OUT.p0.log" 2>&1 &
  echo "started; logs in $OUT.f{1,2}.log and $OUT.p0.log"
  exit 0
fi
if [ "$WHAT" = dynamic ]; then
  nohup $PY -m bluebook $COMMON --methods memit_blue_dynamic > "$OUT.d1.log" 2>&1 &
  nohup $PY -m bluebook $COMMON --methods alphaedit_blue_dynamic > "$OUT.d2.log" 2>&1 &
  echo "started; logs in $OUT.d{1,2}.log"
  exit 0
fi
if [ "$WHAT" = dynamic_pair ]; then
  BASE=${BASE:-memit}
  nohup $PY -m bluebook $COMMON --methods "${BASE}_blue_dynamic" > "$OUT.d1.log" 2>&1 &
  nohup $PY -m bluebook $COMMON --methods "${BASE}_blue" > "$OUT.d2.log" 2>&1 &
  echo "started; logs in $OUT.d{1,2}.log"
  exit 0
fi
nohup $PY -m bluebook $COMMON --methods memit,alphaedit > "$OUT.p1.log" 2>&1 &
nohup $PY -m bluebook $COMMON --methods memit_blue,alphaedit_blue > "$OUT.p2.log" 2>&1 &
nohup nice -n 19 $PY -m bluebook $COMMON --methods none > "$OUT.p0.log" 2>&1 &
echo "started; logs in $OUT.p{0,1,2}.log"
