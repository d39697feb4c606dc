# Open loop (bench_load): p99 latency vs offered load, one panel per cost point, one line per
# policy plus the best fixed pull setting in hindsight (dashed).
# Usage: gnuplot -e "data='<dir with load_open_*.dat>'; out='<output dir>'" load_open.gp
# Each load_open_a<alpha_us>.dat (written by make_report.py) has the columns load %, then p99 in
# ms per policy (MB_Default MB_Delay0 MB_357efd2 Pull_B32_D1000 Pull_B32_D0 Cork), best_fixed.

set terminal pngcairo size 1200,550 enhanced font 'Sans,10'
set output out.'/load_open.png'
set logscale y
set xrange [0:130]
set xlabel 'offered load (% of W B / ({/Symbol a} + {/Symbol b} B)); 120 % = overload, try\_submit'
set ylabel 'p99 latency, scheduled arrival to completion (ms)'
set grid xtics ytics mytics
set key below horizontal font ',8'
names = "microbatch\\_defaults microbatch\\_max\\_delay(0) 357efd2\\_rule pull\\_1ms pull\\_0 CORK"
colors = "#d62728 #ff7f0e #7f7f7f #1f77b4 #17becf #2ca02c"
alphas = "1000 50"
cost(a) = a == 1 ? "{/Symbol a} = 1 ms, {/Symbol b} = 10 us" : "{/Symbol a} = 50 us, {/Symbol b} = 1 us"
set multiplot layout 1,2 title "Open loop (Poisson), B = 32, W = 1: p99 vs load"
do for [a=1:2] {
    set title cost(a)
    plot for [i=1:6] data.'/load_open_a'.word(alphas,a).'.dat' using 1:(column(i+1)) \
             with linespoints lw 2 pt 7 lc rgb word(colors,i) title word(names,i), \
         data.'/load_open_a'.word(alphas,a).'.dat' using 1:8 with linespoints lw 2 dt 2 pt 4 \
             lc rgb '#000000' title 'best fixed (hindsight)'
}
unset multiplot
