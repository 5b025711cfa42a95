#!/bin/bash
# issue 12 item 5: the original configuration and the recommended board configuration trained the same way (128 px, from scratch),
# then compared on 1,000 twin test images with the board runtime (OpenCV DNN fp32). Make the twin first:
#   pneumonia-kit synth data/twin_easy --n-images 400 --n-test 1000 --difficulty easy --seed 0
# At full scale on a GPU: the same commands with `--preset original --backbone se_resnext50_32x4d` and `--preset board_r18_p4p7` (512 px, ImageNet weights) on the real data.
# The distillation step at the end was not run for bench/board_model/results.md (out of CPU time).
set -e
D=${D:-data/twin_easy}; R=${R:-outputs/board_model}; EP=${EP:-20}
cd "$(dirname "$0")/../.."
mkdir -p $R
date
[ -f $R/original/summary.json ] || pneumonia-kit train $D --preset cpu_original_sx50 --out $R/original --epochs $EP > $R/original.log 2>&1
pneumonia-kit sweep $R/original > $R/original_sweep.log 2>&1
date
[ -f $R/board/summary.json ] || pneumonia-kit train $D --preset cpu_board_r18_p4p7 --out $R/board --epochs $EP > $R/board.log 2>&1
pneumonia-kit sweep $R/board > $R/board_sweep.log 2>&1
date
pneumonia-kit board-pareto board_r18_p4p7=$R/board --original original=$R/original --data $D --n-test ${NT:-1000} --out $R/pareto --meter-size 512 > $R/pareto.log 2>&1
date
[ -f $R/distilled/summary.json ] || pneumonia-kit distill $R/original --data $D --preset cpu_board_r18_p4p7 --out $R/distilled --epochs $EP > $R/distilled.log 2>&1
pneumonia-kit sweep $R/distilled > $R/distilled_sweep.log 2>&1
pneumonia-kit board-pareto board_r18_p4p7=$R/board distilled=$R/distilled --original original=$R/original --data $D --n-test ${NT:-1000} --out $R/pareto --meter-size 512 > $R/pareto2.log 2>&1
date
