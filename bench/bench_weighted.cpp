// Weighted batches (GitHub issue 12, item 1): what a cost function and the cost bounds cost on
// the submit path, against the same batcher without them and a hand-written mutex batcher, in
// one binary and one run.
//
// Each producer posts its share of N = 1,048,576 u64 items; item v costs v % 16 + 1 (mean 8.5),
// process_batch sums its batch. Rows (default options except B and W = 1):
//   Post            no cost function: the lock-free claim (the same-run baseline)
//   Post_Costed     cost_by(f), no bound: items are weighed and counted, claims stay lock-free
//   Post_BatchCost  + max_batch_cost = 8.5 x B (the cost bound binds about as often as B): claims
//                   take the lane's fill mutex
//   Post_Pending    + max_pending_cost = 64 x the batch cost bound (room for 64 batches; the
//                   default capacity is 1,024 items = 64 batches at B = 16)
//   MutexBatcher    the hand-written baseline (bench/baselines/mutex_batcher.hpp), count-bound
// Arguments: B in {16, 256}, P in {1, 2}. Counters: items_per_second (Google Benchmark),
// ns_per_item. Run: ./bench_weighted (--benchmark_format=json for a file).

#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <thread>
#include <vector>

#include "baselines/mutex_batcher.hpp"
#include "microbatch/batcher.hpp"

namespace {

using Item = std::uint64_t;
constexpr std::size_t total_items = std::size_t{1} << 20;

std::size_t cost_of(Item value) {
    return static_cast<std::size_t>(value % 16 + 1);
}

enum class Mode { plain, costed, batch_cost, pending };

// Runs P producers posting their shares through @p post, then @p finish; returns seconds.
template <class Post, class Finish>
double timed(std::size_t producers, Post&& post, Finish&& finish) {
    std::atomic<std::size_t> ready{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    for (std::size_t p = 0; p < producers; ++p) {
        threads.emplace_back([&, p] {
            ready.fetch_add(1);
            while (!go.load()) {
                std::this_thread::yield();
            }
            const Item first = p * (total_items / producers);
            const Item last = first + total_items / producers;
            for (Item value = first; value != last; ++value) {
                post(value);
            }
        });
    }
    while (ready.load() != producers) {
        std::this_thread::yield();
    }
    const auto start = std::chrono::steady_clock::now();
    go.store(true);
    for (auto& thread : threads) {
        thread.join();
    }
    finish();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

Item expected_sum() {
    return static_cast<Item>(total_items) * (total_items - 1) / 2;
}

void report(benchmark::State& state, double seconds) {
    const double items = static_cast<double>(state.iterations()) * total_items;
    state.SetItemsProcessed(static_cast<std::int64_t>(items));
    state.counters["ns_per_item"] = items > 0 ? seconds * 1e9 / items : 0.0;
}

void run_microbatch(benchmark::State& state, Mode mode) {
    const auto batch_size = static_cast<std::size_t>(state.range(0));
    const auto producers = static_cast<std::size_t>(state.range(1));
    double seconds = 0;
    for (auto _ : state) {
        std::atomic<Item> sum{0};
        const auto process = [&sum](microbatch::Batch<Item>& batch) {
            Item local = 0;
            for (const Item value : batch) {
                local += value;
            }
            sum.fetch_add(local, std::memory_order_relaxed);
        };
        auto options = microbatch::Options{}.max_batch_size(batch_size).workers(1);
        const std::size_t batch_cost = batch_size * 17 / 2;
        if (mode == Mode::batch_cost || mode == Mode::pending) {
            options.max_batch_cost(batch_cost);
        }
        if (mode == Mode::pending) {
            options.max_pending_cost(64 * batch_cost);
        }
        double elapsed = 0;
        if (mode == Mode::plain) {
            microbatch::Batcher<Item> batcher(options, process);
            elapsed = timed(
                producers, [&](Item value) { batcher.post(value); }, [&] { batcher.close(); });
        } else {
            microbatch::Batcher<Item> batcher(
                options, microbatch::cost_by([](const Item& value) { return cost_of(value); }),
                process);
            elapsed = timed(
                producers, [&](Item value) { batcher.post(value); }, [&] { batcher.close(); });
        }
        state.SetIterationTime(elapsed);
        seconds += elapsed;
        if (sum.load() != expected_sum()) {
            state.SkipWithError("checksum mismatch: items lost or duplicated");
            return;
        }
    }
    report(state, seconds);
}

void BM_Post(benchmark::State& state) {
    run_microbatch(state, Mode::plain);
}
void BM_Post_Costed(benchmark::State& state) {
    run_microbatch(state, Mode::costed);
}
void BM_Post_BatchCost(benchmark::State& state) {
    run_microbatch(state, Mode::batch_cost);
}
void BM_Post_Pending(benchmark::State& state) {
    run_microbatch(state, Mode::pending);
}

void BM_MutexBatcher(benchmark::State& state) {
    const auto batch_size = static_cast<std::size_t>(state.range(0));
    const auto producers = static_cast<std::size_t>(state.range(1));
    double seconds = 0;
    for (auto _ : state) {
        std::atomic<Item> sum{0};
        microbatch_bench::MutexBatcherOptions options;
        options.max_batch_size = batch_size;
        options.capacity = std::max<std::size_t>(4 * batch_size, 1024);
        microbatch_bench::MutexBatcher<Item> batcher(options, [&sum](std::vector<Item>& batch) {
            Item local = 0;
            for (const Item value : batch) {
                local += value;
            }
            sum.fetch_add(local, std::memory_order_relaxed);
        });
        const double elapsed = timed(
            producers, [&](Item value) { batcher.submit(value); }, [&] { batcher.close(); });
        state.SetIterationTime(elapsed);
        seconds += elapsed;
        if (sum.load() != expected_sum()) {
            state.SkipWithError("checksum mismatch: items lost or duplicated");
            return;
        }
    }
    report(state, seconds);
}

void shapes(benchmark::internal::Benchmark* benchmark) {
    benchmark->ArgNames({"B", "P"})
        ->ArgsProduct({{16, 256}, {1, 2}})
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond)
        ->Repetitions(5)
        ->ReportAggregatesOnly(true);
}

}  // namespace

BENCHMARK(BM_Post)->Apply(shapes);
BENCHMARK(BM_Post_Costed)->Apply(shapes);
BENCHMARK(BM_Post_BatchCost)->Apply(shapes);
BENCHMARK(BM_Post_Pending)->Apply(shapes);
BENCHMARK(BM_MutexBatcher)->Apply(shapes);

BENCHMARK_MAIN();
