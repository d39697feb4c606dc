# Throughput vs max batch size B, one panel per (producers, workers), log-log.
# Usage: gnuplot -e "data='<dir with throughput_P*_W*.dat>'; out='<output dir>'" throughput.gp
# The .dat files are written by make_report.py: column 1 = B, then one column per
# implementation with its name as the header ("NaN" where not measured).

set terminal pngcairo size 1500,1050 enhanced font 'Sans,10'
set output out.'/throughput_vs_batch_size.png'
set datafile missing 'NaN'
set logscale xy
set format y '10^{%L}'
set xrange [0.7:6000]
set xtics (1, 16, 256, 4096)
set xlabel 'max batch size B (items)'
set ylabel 'items per second (median)'
set grid xtics ytics mytics
set key bottom right font ',8' spacing 0.9
set style line 1 lw 2.5 pt 7 ps 1.2 lc rgb '#d62728'
set style line 2 lw 2.5 pt 13 ps 1.2 lc rgb '#e377c2'
set style line 3 lw 2.5 pt 5 ps 1.1 lc rgb '#ff7f0e'
set style line 4 lw 2.5 pt 9 ps 1.3 lc rgb '#bcbd22'
set style line 5 lw 1.5 pt 4 ps 1.0 lc rgb '#1f77b4' dt 2
set style line 6 lw 1.5 pt 6 ps 1.0 lc rgb '#2ca02c' dt 2
set style line 7 lw 1.5 pt 8 ps 1.0 lc rgb '#9467bd' dt 2
set style line 8 lw 1.5 pt 1 ps 1.0 lc rgb '#7f7f7f' dt 3
set style line 9 lw 1.5 pt 2 ps 1.0 lc rgb '#8c564b' dt 4
set style line 10 lw 1.5 pt 3 ps 1.0 lc rgb '#17becf' dt 2
set style line 11 lw 1.5 pt 10 ps 1.0 lc rgb '#393b79' dt 4
set style line 12 lw 1.5 pt 12 ps 1.0 lc rgb '#637939' dt 3

set multiplot layout 2,2 title "microbatch throughput vs B, trivial per-batch work (shared, noisy 2-core machine)" font ',13'
do for [pw in "P1_W1 P1_W2 P2_W1 P2_W2"] {
    p = substr(pw, 2, 2)
    w = substr(pw, 5, 5)
    set title sprintf('P = %s producer(s), W = %s worker(s)', p, w)
    plot for [i=2:13] data.'/throughput_'.pw.'.dat' using 1:i with linespoints ls (i-1) title columnhead(i)
}
unset multiplot
