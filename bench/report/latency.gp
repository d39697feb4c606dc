# Submit-to-result latency percentiles vs offered load, log-log.
# Usage: gnuplot -e "data='<dir with latency_*.dat>'; out='<output dir>'" latency.gp
# Each latency_<implementation>.dat (written by make_report.py) has the columns
# offered items/s, p50, p99, p99.9 (microseconds).

set terminal pngcairo size 1100,700 enhanced font 'Sans,10'
set output out.'/latency_vs_load.png'
set logscale xy
set format x '10^{%L}'
set xlabel 'offered load (items/s achieved by the paced producer; rightmost = saturation)'
set ylabel 'submit-to-result latency (us)'
set grid xtics ytics mytics
set key bottom left font ',9' opaque box
set title "Latency vs load: B = 256, max\\_delay = 1 ms, W = 1 (p50 solid, p99 dashed, p99.9 dotted)"
files = "Load_Microbatch_Callback Load_Microbatch_Post Load_MutexBatcher"
names = "microbatch\\_callback microbatch\\_post mutex\\_batcher"
colors = "#d62728 #ff7f0e #1f77b4"
plot for [i=1:3] data.'/latency_'.word(files,i).'.dat' using 1:2 with linespoints lw 2 pt 7 lc rgb word(colors,i) title word(names,i).' p50', \
     for [i=1:3] data.'/latency_'.word(files,i).'.dat' using 1:3 with linespoints lw 1.5 dt 2 pt 5 lc rgb word(colors,i) title word(names,i).' p99', \
     for [i=1:3] data.'/latency_'.word(files,i).'.dat' using 1:4 with linespoints lw 1 dt 3 pt 1 lc rgb word(colors,i) title word(names,i).' p99.9'
