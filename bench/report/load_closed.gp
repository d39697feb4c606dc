# Closed loop (bench_load): throughput as a fraction of the physical limit vs client count N,
# one panel per cost point and worker count, one line per policy.
# Usage: gnuplot -e "data='<dir with load_closed_*.dat>'; out='<output dir>'" load_closed.gp
# Each load_closed_a<alpha_us>_W<W>.dat (written by make_report.py) has the columns N, then one
# fraction per policy (MB_Default MB_Delay0 MB_357efd2 Pull_B32_D1000 Pull_B32_D0 Cork).

set terminal pngcairo size 1300,950 enhanced font 'Sans,10'
set output out.'/load_closed.png'
set logscale x 2
set xrange [0.8:160]
set yrange [0:1.05]
set xlabel 'closed-loop clients N'
set ylabel 'throughput / physical limit'
set grid xtics ytics
set key below horizontal maxrows 1 font ',8'
names = "microbatch\\_defaults microbatch\\_max\\_delay(0) 357efd2\\_rule pull\\_1ms pull\\_0 CORK"
colors = "#d62728 #ff7f0e #7f7f7f #1f77b4 #17becf #2ca02c"
alphas = "1000 50"
cost(a) = a == 1 ? "{/Symbol a} = 1 ms, {/Symbol b} = 10 us" : "{/Symbol a} = 50 us, {/Symbol b} = 1 us"
set multiplot layout 2,2 title "Closed loop, B = 32, max\\_delay = 1 ms: throughput / min(N, W b)/({/Symbol a} + {/Symbol b} b)"
do for [a=1:2] {
    do for [w=1:2] {
        set title cost(a).', W = '.w
        set arrow 1 from 0.8,0.9 to 160,0.9 nohead dt 2 lc rgb '#000000'
        plot for [i=1:6] data.'/load_closed_a'.word(alphas,a).'_W'.w.'.dat' using 1:(column(i+1)) \
             with linespoints lw 2 pt 7 lc rgb word(colors,i) title word(names,i)
    }
}
unset multiplot
