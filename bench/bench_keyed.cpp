// Keyed batching (GitHub issue 12, item 4): one KeyedBatcher against the same number of
// separate Batchers, both on one shared ThreadPool(2), at 1, 10, 100 and 1,000 keys.
//
//   BM_Keyed/keys:K       one KeyedBatcher<int, Item>, executor = the shared pool,
//                         max_in_flight 2; items go to submit(key, item, callback)
//   BM_Separate/keys:K    K Batcher<Item>, each with executor = the shared pool (and, as every
//                         Batcher, its own timer thread); items go to batchers[key]->submit
//
// Both: B = 64, max_delay = 1 ms, max_in_flight 2, callbacks, the same total capacity: each
// Batcher 4 x B items, the KeyedBatcher 4 x B x K over all keys. Two producer
// threads submit --items (200,000) items in total, each to a uniformly random key. process_batch
// busy-waits alpha + beta n on the steady clock, alpha = 5 us, beta = 0.1 us (a cheap call per
// batch, like a small INSERT). The pool and the batchers are built before the clock starts; the
// time runs from the first submit until the last callback (not the teardown).
//
// Counters: per_s (items/s), p50_us / p99_us (submit -> callback of every item),
// threads_created (threads of the process after building the pool and the batchers, minus
// before: /proc/self/task; the pool's 2 included), mean_batch, load_1m (the
// 1-minute load average when the run started). Compare Keyed with Separate in the same run:
//   ./bench_keyed --benchmark_repetitions=5 --benchmark_enable_random_interleaving=true

#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <dirent.h>
#endif

#include "microbatch/batcher.hpp"
#include "microbatch/keyed_batcher.hpp"
#include "microbatch/thread_pool.hpp"

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t batch_size = 64;
constexpr auto max_delay = std::chrono::milliseconds(1);
constexpr std::size_t producers = 2;
constexpr std::size_t items = 200'000;
constexpr std::int64_t alpha_ns = 5'000;
constexpr std::int64_t beta_ns = 100;

std::size_t thread_count() {
    std::size_t count = 0;
#if defined(__linux__)
    if (DIR* directory = opendir("/proc/self/task")) {
        while (const dirent* entry = readdir(directory)) {
            count += entry->d_name[0] != '.' ? 1 : 0;
        }
        closedir(directory);
    }
#endif
    return count;
}

double load_average() {
    double load = -1.0;
    if (std::FILE* file = std::fopen("/proc/loadavg", "r")) {
        if (std::fscanf(file, "%lf", &load) != 1) {
            load = -1.0;
        }
        std::fclose(file);
    }
    return load;
}

void busy_wait(std::size_t n) {
    const auto until =
        Clock::now() + std::chrono::nanoseconds(alpha_ns + beta_ns * static_cast<std::int64_t>(n));
    while (Clock::now() < until) {
    }
}

/// Per run: submit times, latencies, the completion count and the batch count.
struct Run {
    explicit Run(std::size_t n) : submitted(n), latency(n) {}
    std::vector<Clock::time_point> submitted;  // written by the producer before submit
    std::vector<std::int64_t> latency;         // written by the item's callback
    std::atomic<std::size_t> done{0};
    std::atomic<std::size_t> batches{0};
};

struct Callback {
    Run* run;
    std::uint32_t id;
    void operator()(microbatch::Outcome<void>&&) const noexcept {
        run->latency[id] = (Clock::now() - run->submitted[id]).count();
        run->done.fetch_add(1, std::memory_order_release);
    }
};

/// The keys of the items, the same seeded sequence for both setups.
std::vector<int> make_keys(std::size_t keys) {
    std::mt19937_64 random(42);
    std::uniform_int_distribution<int> pick(0, static_cast<int>(keys) - 1);
    std::vector<int> out(items);
    for (auto& key : out) {
        key = pick(random);
    }
    return out;
}

template <class Submit>
void produce(Run& run, const std::vector<int>& keys, Submit submit) {
    std::vector<std::thread> threads;
    for (std::size_t p = 0; p < producers; ++p) {
        threads.emplace_back([&, p] {
            for (std::size_t i = p; i < items; i += producers) {
                const auto id = static_cast<std::uint32_t>(i);
                run.submitted[id] = Clock::now();
                submit(keys[i], id, Callback{&run, id});
            }
        });
    }
    for (auto& thread : threads) {
        thread.join();
    }
    while (run.done.load(std::memory_order_acquire) < items) {
        std::this_thread::yield();
    }
}

void report(benchmark::State& state, Run& run, double seconds, std::size_t threads, double load) {
    std::vector<std::int64_t> sorted = run.latency;
    std::sort(sorted.begin(), sorted.end());
    state.SetIterationTime(seconds);
    state.counters["per_s"] = static_cast<double>(items) / seconds;
    state.counters["p50_us"] = static_cast<double>(sorted[sorted.size() / 2]) / 1e3;
    state.counters["p99_us"] = static_cast<double>(sorted[sorted.size() * 99 / 100]) / 1e3;
    state.counters["threads_created"] = static_cast<double>(threads);
    state.counters["mean_batch"] =
        static_cast<double>(items) / static_cast<double>(std::max<std::size_t>(1, run.batches));
    state.counters["load_1m"] = load;
}

void BM_Keyed(benchmark::State& state) {
    const auto keys = static_cast<std::size_t>(state.range(0));
    const std::vector<int> key_of = make_keys(keys);
    for (auto _ : state) {
        const double load = load_average();
        const std::size_t before = thread_count();
        Run run(items);
        auto pool = std::make_unique<microbatch::ThreadPool>(2);
        auto batcher = std::make_unique<microbatch::KeyedBatcher<int, std::uint32_t>>(
            microbatch::KeyedOptions{}
                .max_batch_size(batch_size)
                .max_delay(max_delay)
                .capacity(4 * batch_size * keys)  // the separate batchers' total
                .max_keys(keys)
                .max_in_flight(2)
                .executor(pool->executor()),
            [&run](microbatch::Batch<std::uint32_t>& batch) {
                busy_wait(batch.size());
                run.batches.fetch_add(1, std::memory_order_relaxed);
            });
        const std::size_t threads = thread_count() - before;
        const auto start = Clock::now();
        produce(run, key_of, [&](int key, std::uint32_t id, Callback callback) {
            batcher->submit(key, id, callback);
        });
        const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
        batcher.reset();
        pool.reset();
        report(state, run, seconds, threads, load);
    }
}

void BM_Separate(benchmark::State& state) {
    const auto keys = static_cast<std::size_t>(state.range(0));
    const std::vector<int> key_of = make_keys(keys);
    for (auto _ : state) {
        const double load = load_average();
        const std::size_t before = thread_count();
        Run run(items);
        auto pool = std::make_unique<microbatch::ThreadPool>(2);
        std::vector<std::unique_ptr<microbatch::Batcher<std::uint32_t>>> batchers;
        for (std::size_t k = 0; k < keys; ++k) {
            batchers.push_back(std::make_unique<microbatch::Batcher<std::uint32_t>>(
                microbatch::Options{}
                    .max_batch_size(batch_size)
                    .max_delay(max_delay)
                    .capacity(4 * batch_size)
                    .executor(pool->executor())
                    .max_in_flight(2),
                [&run](microbatch::Batch<std::uint32_t>& batch) {
                    busy_wait(batch.size());
                    run.batches.fetch_add(1, std::memory_order_relaxed);
                }));
        }
        const std::size_t threads = thread_count() - before;
        const auto start = Clock::now();
        produce(run, key_of, [&](int key, std::uint32_t id, Callback callback) {
            batchers[static_cast<std::size_t>(key)]->submit(id, callback);
        });
        const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
        batchers.clear();
        pool.reset();
        report(state, run, seconds, threads, load);
    }
}

void key_counts(benchmark::internal::Benchmark* benchmark) {
    benchmark->ArgNames({"keys"})
        ->Args({1})
        ->Args({10})
        ->Args({100})
        ->Args({1000})
        ->Iterations(1)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
}

}  // namespace

BENCHMARK(BM_Keyed)->Apply(key_counts);
BENCHMARK(BM_Separate)->Apply(key_counts);

BENCHMARK_MAIN();
