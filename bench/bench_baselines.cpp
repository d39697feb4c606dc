// Throughput of the hand-written baselines microbatch is compared against, on trivial work:
// each batch is summed into one atomic, so the numbers are the cost of batching and hand-off.
//
// Every run pushes the same items (1..N, split evenly over P producer threads) through a fresh
// instance and stops the clock when `close()` (or `wait_idle()`) has returned, so thread start-up
// is excluded (manual timing) but draining is included. The checksum is verified each run.
//
// Arguments: B = max batch size, P = producer threads, W = worker threads.
// Extra flag: --items=N (default 65536) sets the items per run, e.g. tiny for sanitizer runs.
//
//   ./bench_baselines --benchmark_min_time=0.05
//   ./bench_baselines --benchmark_filter='B:256/P:2/W:2' --benchmark_repetitions=7

#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "baselines/moodycamel_handoff.hpp"
#include "baselines/mutex_batcher.hpp"
#include "baselines/per_item_dispatch.hpp"
#include "baselines/sequential.hpp"

// Baseline 2 can also post into microbatch's own pool (only its post(Task&&) is used).
#if __has_include("microbatch/thread_pool.hpp")
#include "microbatch/thread_pool.hpp"
#define MICROBATCH_BENCH_HAVE_THREAD_POOL 1
#else
#define MICROBATCH_BENCH_HAVE_THREAD_POOL 0
#endif

namespace {

using Item = std::uint64_t;

std::size_t items_per_run = std::size_t{1} << 16;  // --items=N

Item expected_sum() {
    return static_cast<Item>(items_per_run) * (items_per_run + 1) / 2;
}

/// The half-open range of item values producer @p index of @p producers submits: 1..N overall.
struct Share {
    Item first;
    Item last;
};
Share share_of(std::size_t index, std::size_t producers) {
    const std::size_t per_producer = items_per_run / producers;
    const std::size_t begin = index * per_producer;
    const std::size_t end = index + 1 == producers ? items_per_run : begin + per_producer;
    return {static_cast<Item>(begin) + 1, static_cast<Item>(end) + 1};
}

/// Per-batch work: one relaxed add of the batch's sum (the total is read after join()).
void add_batch(std::atomic<Item>& total, const std::vector<Item>& batch) {
    total.fetch_add(std::accumulate(batch.begin(), batch.end(), Item{0}),
                    std::memory_order_relaxed);
}

/**
 * Starts @p producers threads running produce(index), releases them together, joins them, calls
 * finish() and returns the seconds from the release to finish() returning.
 */
template <typename Produce, typename Finish>
double timed_run(std::size_t producers, Produce&& produce, Finish&& finish) {
    std::atomic<std::size_t> ready{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    threads.reserve(producers);
    for (std::size_t p = 0; p < producers; ++p) {
        threads.emplace_back([&, p] {
            ready.fetch_add(1);
            while (!go.load(std::memory_order_acquire)) {
                std::this_thread::yield();
            }
            produce(p);
        });
    }
    while (ready.load() != producers) {
        std::this_thread::yield();
    }
    const auto start = std::chrono::steady_clock::now();
    go.store(true, std::memory_order_release);
    for (std::thread& thread : threads) {
        thread.join();
    }
    finish();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

/// Records one run; marks the benchmark failed if the checksum is wrong.
bool record(benchmark::State& state, double seconds, Item sum, double& total_seconds) {
    state.SetIterationTime(seconds);
    total_seconds += seconds;
    if (sum != expected_sum()) {
        state.SkipWithError("checksum mismatch: items lost or duplicated");
        return false;
    }
    return true;
}

/// items_per_second (from the manual time) and ns_per_item, the same figure inverted.
void finish_counters(benchmark::State& state, double total_seconds) {
    const double items =
        static_cast<double>(state.iterations()) * static_cast<double>(items_per_run);
    state.SetItemsProcessed(static_cast<std::int64_t>(items));
    state.counters["ns_per_item"] = items > 0 ? total_seconds * 1e9 / items : 0.0;
}

microbatch_bench::MutexBatcherOptions mutex_options(const benchmark::State& state) {
    microbatch_bench::MutexBatcherOptions options;
    options.max_batch_size = static_cast<std::size_t>(state.range(0));
    options.max_delay = std::chrono::milliseconds(1);
    options.capacity = 0;  // 4 x B, microbatch's default
    options.workers = static_cast<std::size_t>(state.range(2));
    return options;
}

// ---------------------------------------------------------------------------------------------

void BM_Sequential(benchmark::State& state) {
    const auto batch_size = static_cast<std::size_t>(state.range(0));
    double total_seconds = 0.0;
    for (auto _ : state) {
        std::atomic<Item> total{0};
        microbatch_bench::SequentialBatcher<Item> batcher(
            batch_size, [&total](std::vector<Item>& batch) { add_batch(total, batch); });
        const double seconds = timed_run(
            1,
            [&](std::size_t) {
                for (Item value = 1; value <= items_per_run; ++value) {
                    batcher.submit(value);
                }
            },
            [&] { batcher.flush(); });
        if (!record(state, seconds, total.load(), total_seconds)) {
            break;
        }
    }
    finish_counters(state, total_seconds);
}

void BM_MutexBatcher(benchmark::State& state) {
    const auto producers = static_cast<std::size_t>(state.range(1));
    double total_seconds = 0.0;
    for (auto _ : state) {
        std::atomic<Item> total{0};
        microbatch_bench::MutexBatcher<Item> batcher(
            mutex_options(state), [&total](std::vector<Item>& batch) { add_batch(total, batch); });
        const double seconds = timed_run(
            producers,
            [&](std::size_t index) {
                const Share share = share_of(index, producers);
                for (Item value = share.first; value != share.last; ++value) {
                    batcher.submit(value);
                }
            },
            [&] { batcher.close(); });
        if (!record(state, seconds, total.load(), total_seconds)) {
            break;
        }
    }
    finish_counters(state, total_seconds);
}

void BM_MutexPromiseBatcher(benchmark::State& state) {
    const auto producers = static_cast<std::size_t>(state.range(1));
    double total_seconds = 0.0;
    for (auto _ : state) {
        std::atomic<Item> total{0};  // summed by the producers from their futures
        microbatch_bench::MutexPromiseBatcher<Item, Item> batcher(
            mutex_options(state), [](std::vector<Item>& batch) { return batch; });
        const double seconds = timed_run(
            producers,
            [&](std::size_t index) {
                const Share share = share_of(index, producers);
                std::vector<std::future<Item>> futures;
                futures.reserve(static_cast<std::size_t>(share.last - share.first));
                for (Item value = share.first; value != share.last; ++value) {
                    futures.push_back(batcher.submit_with_promise(value));
                }
                Item sum = 0;
                for (std::future<Item>& future : futures) {
                    sum += future.get();
                }
                total.fetch_add(sum, std::memory_order_relaxed);
            },
            [&] { batcher.close(); });
        if (!record(state, seconds, total.load(), total_seconds)) {
            break;
        }
    }
    finish_counters(state, total_seconds);
}

/// Baseline 2 on @p Pool, which must have `Pool(std::size_t threads)` and `post(Task&&)`.
template <typename Pool>
void run_per_item_dispatch(benchmark::State& state) {
    const auto producers = static_cast<std::size_t>(state.range(0));
    const auto workers = static_cast<std::size_t>(state.range(1));
    double total_seconds = 0.0;
    for (auto _ : state) {
        std::atomic<Item> total{0};
        Pool pool(workers);
        auto executor = [&pool](std::function<void()> task) { pool.post(std::move(task)); };
        microbatch_bench::PerItemDispatcher<Item, decltype(executor)> dispatcher(
            executor, [&total](Item& value) { total.fetch_add(value, std::memory_order_relaxed); });
        const double seconds = timed_run(
            producers,
            [&](std::size_t index) {
                const Share share = share_of(index, producers);
                for (Item value = share.first; value != share.last; ++value) {
                    dispatcher.submit(value);
                }
            },
            [&] { dispatcher.wait_idle(); });
        if (!record(state, seconds, total.load(), total_seconds)) {
            break;
        }
    }
    finish_counters(state, total_seconds);
}

void BM_PerItemDispatch(benchmark::State& state) {
    run_per_item_dispatch<microbatch_bench::SimpleThreadPool>(state);
}

#if MICROBATCH_BENCH_HAVE_THREAD_POOL
void BM_PerItemDispatchMicrobatchPool(benchmark::State& state) {
    run_per_item_dispatch<microbatch::ThreadPool>(state);
}
#endif

#if MICROBATCH_HAVE_CONCURRENTQUEUE
void BM_MoodycamelHandoff(benchmark::State& state) {
    const auto batch_size = static_cast<std::size_t>(state.range(0));
    const auto producers = static_cast<std::size_t>(state.range(1));
    const auto workers = static_cast<std::size_t>(state.range(2));
    double total_seconds = 0.0;
    for (auto _ : state) {
        std::atomic<Item> total{0};
        microbatch_bench::MoodycamelHandoff<Item> handoff(
            batch_size, workers, [&total](std::vector<Item>& batch) { add_batch(total, batch); });
        const double seconds = timed_run(
            producers,
            [&](std::size_t index) {
                auto producer = handoff.make_producer();
                const Share share = share_of(index, producers);
                for (Item value = share.first; value != share.last; ++value) {
                    producer.submit(value);
                }
            },
            [&] { handoff.close(); });
        if (!record(state, seconds, total.load(), total_seconds)) {
            break;
        }
    }
    finish_counters(state, total_seconds);
}
#endif

// ---------------------------------------------------------------------------------------------

const std::vector<std::int64_t> batch_sizes = {1, 16, 256, 4096};
const std::vector<std::int64_t> thread_counts = {1, 2};

BENCHMARK(BM_Sequential)->ArgName("B")->ArgsProduct({batch_sizes})->UseManualTime();
BENCHMARK(BM_MutexBatcher)
    ->ArgNames({"B", "P", "W"})
    ->ArgsProduct({batch_sizes, thread_counts, thread_counts})
    ->UseManualTime();
BENCHMARK(BM_MutexPromiseBatcher)
    ->ArgNames({"B", "P", "W"})
    ->ArgsProduct({batch_sizes, thread_counts, thread_counts})
    ->UseManualTime();
BENCHMARK(BM_PerItemDispatch)
    ->ArgNames({"P", "W"})
    ->ArgsProduct({thread_counts, thread_counts})
    ->UseManualTime();
#if MICROBATCH_BENCH_HAVE_THREAD_POOL
BENCHMARK(BM_PerItemDispatchMicrobatchPool)
    ->ArgNames({"P", "W"})
    ->ArgsProduct({thread_counts, thread_counts})
    ->UseManualTime();
#endif
#if MICROBATCH_HAVE_CONCURRENTQUEUE
BENCHMARK(BM_MoodycamelHandoff)
    ->ArgNames({"B", "P", "W"})
    ->ArgsProduct({batch_sizes, thread_counts, thread_counts})
    ->UseManualTime();
#endif

}  // namespace

int main(int argc, char** argv) {
    benchmark::Initialize(&argc, argv);
    // Initialize removed the flags it knows; take ours from what is left.
    int kept = 1;
    for (int i = 1; i < argc; ++i) {
        constexpr const char* items_flag = "--items=";
        if (std::strncmp(argv[i], items_flag, std::strlen(items_flag)) == 0) {
            const long long value = std::atoll(argv[i] + std::strlen(items_flag));
            if (value < 2) {
                std::fprintf(stderr, "bench_baselines: --items must be >= 2\n");
                return 1;
            }
            items_per_run = static_cast<std::size_t>(value);
        } else {
            argv[kept++] = argv[i];
        }
    }
    argc = kept;
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
        return 1;
    }
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
