# Cost model validation: measured T (points) vs predicted makespan (solid) and the simple
# ceil(N/B) T_batch(B) / min(W, batches) estimate (dashed), over B, one panel per N, log-log.
# Usage: gnuplot -e "data='<dir with cost_model_N*.dat>'; out='<output dir>'; ns='10000 100000'"
#        cost_model.gp        (ns: the N values that have a data file; default all three)
# Columns (make_report.py): B, measured_W1, makespan_W1, simple_W1, measured_W2, makespan_W2,
# simple_W2 (seconds, "NaN" where skipped).

set terminal pngcairo size 1600,560 enhanced font 'Sans,10'
set output out.'/cost_model_T_vs_B.png'
set datafile missing 'NaN'
set logscale xy
set format y '10^{%L}'
set xrange [0.7:1500]
set xtics (1, 4, 16, 64, 256, 1024)
set xlabel 'max batch size B'
set ylabel 'T (s)'
set grid xtics ytics mytics
set key top right font ',8'
if (!exists("ns")) ns = "10000 100000 1000000"
set multiplot layout 1,words(ns) title "Cost model: measured T vs predicted (calibrated alpha, beta; shared 2-core machine)" font ',12'
do for [n in ns] {
    set title sprintf('N = %s items', n)
    file = data.'/cost_model_N'.n.'.dat'
    plot file using 1:2 with points pt 7 ps 1.3 lc rgb '#1f77b4' title 'measured W=1', \
         file using 1:3 with lines lw 2 lc rgb '#1f77b4' title 'makespan W=1', \
         file using 1:4 with lines lw 1 dt 2 lc rgb '#1f77b4' title 'simple W=1', \
         file using 1:5 with points pt 5 ps 1.2 lc rgb '#d62728' title 'measured W=2', \
         file using 1:6 with lines lw 2 lc rgb '#d62728' title 'makespan W=2', \
         file using 1:7 with lines lw 1 dt 2 lc rgb '#d62728' title 'simple W=2'
}
unset multiplot
