#!/bin/bash
# Compile time and peak memory of microbatch against a std-only baseline (README "Compile cost").
# Usage: bash bench/compile_cost/measure.sh [compiler] [repetitions]   (defaults: g++ 3)
# Prints the median wall time and peak RSS of each case; run it on an idle machine.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cxx=${1:-g++}
reps=${2:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The standard headers the library includes, alone (from the single header, which lists them).
{
    grep -h '^#include <' "$root/single_include/microbatch/microbatch.hpp" | sort -u
    echo 'int main() {}'
} > "$work/tu_std_headers.cpp"

measure() {  # name, then the compiler arguments
    local name=$1
    shift
    local times=() memories=()
    for _ in $(seq "$reps"); do
        local line
        line=$( { /usr/bin/time -f '%e %M' "$cxx" -std=c++17 -O2 "$@" -o /dev/null; } 2>&1 | tail -1)
        times+=("${line% *}")
        memories+=("${line#* }")
    done
    local time memory
    time=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (reps + 1) / 2 ))p")
    memory=$(printf '%s\n' "${memories[@]}" | sort -n | sed -n "$(( (reps + 1) / 2 ))p")
    printf '%-40s %6s s %6d MiB\n' "$name" "$time" "$(( memory / 1024 ))"
}

echo "$cxx, -std=c++17 -O2, median of $reps; load average $(cut -d' ' -f1-3 /proc/loadavg)"
measure "Batcher<int, int> used" -I"$root/include" -c "$here/tu_batcher.cpp"
measure "Batcher<int, int> used, -fsyntax-only" -I"$root/include" -fsyntax-only "$here/tu_batcher.cpp"
measure "umbrella header, unused" -I"$root/include" -c "$here/tu_umbrella.cpp"
measure "its standard headers alone" -c "$work/tu_std_headers.cpp"
measure "baseline: MutexPromiseBatcher used" -I"$root/bench/baselines" -c "$here/tu_mutex_promise.cpp"
