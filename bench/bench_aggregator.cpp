// Merge throughput of microbatch::Aggregator against hand-written baselines, in one binary and
// one run: a std::mutex-protected accumulator, a single std::atomic fetch_add accumulator and a
// single-atomic CAS loop, for an int64 sum; a mutex-protected accumulator for a 16-bucket
// histogram and for running mean/variance statistics.
//
// Every benchmark runs at 1 and 2 threads against one shared accumulator and reports
// items_per_second over wall-clock time (UseRealTime), i.e. the merges per second of all threads
// together. Build with -O2 and compare ratios within one run; the absolute numbers depend on
// the machine and its load:
//
//   g++ -std=c++17 -O2 -DNDEBUG -Iinclude bench/bench_aggregator.cpp -lbenchmark -lpthread
//   ./a.out --benchmark_repetitions=5 --benchmark_report_aggregates_only=true

#include <benchmark/benchmark.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "microbatch/aggregator.hpp"
#include "microbatch/detail/config.hpp"

namespace {

// --- Baselines ------------------------------------------------------------------------------

/// One int64 behind a std::mutex.
class MutexSum {
public:
    void merge(std::int64_t value) {
        std::lock_guard<std::mutex> lock(mutex_);
        total_ += value;
    }

private:
    std::mutex mutex_;
    std::int64_t total_ = 0;
};

/// One std::atomic<int64_t> that every thread fetch_adds into.
class AtomicFetchAddSum {
public:
    // relaxed: the sum is the only data, as in the aggregator's own fetch_add path.
    void merge(std::int64_t value) { total_.fetch_add(value, std::memory_order_relaxed); }

private:
    alignas(microbatch::detail::cache_line_size) std::atomic<std::int64_t> total_{0};
};

/// One std::atomic<int64_t> updated with a compare-exchange loop (how a general combine
/// would be applied to a single shared atomic).
class AtomicCasSum {
public:
    void merge(std::int64_t value) {
        // relaxed: the sum is the only data; CAS atomicity alone makes it exact.
        std::int64_t current = total_.load(std::memory_order_relaxed);
        while (!total_.compare_exchange_weak(current, current + value, std::memory_order_relaxed,
                                             std::memory_order_relaxed)) {
        }
    }

private:
    alignas(microbatch::detail::cache_line_size) std::atomic<std::int64_t> total_{0};
};

constexpr std::size_t histogram_buckets = 16;

/// Adds histograms of `histogram_buckets` counters element-wise.
struct HistogramOp {
    using value_type = std::vector<std::uint64_t>;
    value_type identity() const { return value_type(histogram_buckets, 0); }
    void combine(value_type& into, const value_type& from) const {
        for (std::size_t i = 0; i < histogram_buckets; ++i) {
            into[i] += from[i];
        }
    }
};

/// A histogram behind a std::mutex.
class MutexHistogram {
public:
    void merge(const std::vector<std::uint64_t>& batch) {
        std::lock_guard<std::mutex> lock(mutex_);
        HistogramOp{}.combine(counts_, batch);
    }

private:
    std::mutex mutex_;
    std::vector<std::uint64_t> counts_ = HistogramOp{}.identity();
};

/// Running statistics behind a std::mutex.
class MutexStats {
public:
    void merge(const microbatch::ops::RunningStats& batch) {
        std::lock_guard<std::mutex> lock(mutex_);
        stats_.combine(batch);
    }

private:
    std::mutex mutex_;
    microbatch::ops::RunningStats stats_;
};

using SumAggregator = microbatch::Aggregator<microbatch::ops::Sum<std::int64_t>>;
using HistogramAggregator = microbatch::Aggregator<HistogramOp>;
using StatsAggregator = microbatch::Aggregator<microbatch::ops::MeanVariance>;

// --- Benchmarks -----------------------------------------------------------------------------
// Each accumulator is a function-local static shared by the benchmark's threads (thread-safe
// initialisation, never destroyed mid-run); the values it accumulates are irrelevant.

template <class Accumulator>
void BM_Sum(benchmark::State& state) {
    static Accumulator accumulator;
    std::int64_t value = state.thread_index();
    for (auto _ : state) {
        accumulator.merge(value);
        value = (value + 1) & 7;
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

template <class Accumulator>
void BM_Histogram(benchmark::State& state) {
    static Accumulator accumulator;
    // A per-batch histogram prepared outside the timed loop: the merge is what is measured.
    std::vector<std::uint64_t> batch(histogram_buckets, 0);
    batch[static_cast<std::size_t>(state.thread_index()) % histogram_buckets] = 3;
    batch[(static_cast<std::size_t>(state.thread_index()) + 5) % histogram_buckets] = 1;
    for (auto _ : state) {
        accumulator.merge(batch);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

template <class Accumulator>
void BM_Stats(benchmark::State& state) {
    static Accumulator accumulator;
    microbatch::ops::RunningStats batch;
    for (double x : {1.0, 2.0, 4.0, 8.0}) {
        batch.add(x + state.thread_index());
    }
    for (auto _ : state) {
        accumulator.merge(batch);
    }
    state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

}  // namespace

BENCHMARK_TEMPLATE(BM_Sum, SumAggregator)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(BM_Sum, MutexSum)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(BM_Sum, AtomicFetchAddSum)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(BM_Sum, AtomicCasSum)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(BM_Histogram, HistogramAggregator)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(BM_Histogram, MutexHistogram)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(BM_Stats, StatsAggregator)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK_TEMPLATE(BM_Stats, MutexStats)->Threads(1)->Threads(2)->UseRealTime();

BENCHMARK_MAIN();
