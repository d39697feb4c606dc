// Hand-off latency of microbatch::ThreadPool against a plain mutex + condition-variable pool
// (baselines/per_item_dispatch.hpp: SimpleThreadPool, whose workers never spin), in one binary
// and one run.
//
// Handoff_*  One busy submitter posts a task every `interval_us` (busy-waiting in between, as a
// producer filling a batch does), to a pool of one worker. Latency runs from just before post()
// to the first instruction of the task; reported as p50 / p90 / p99 / max (microseconds). This
// is the hand-off a Batcher pays once per batch: at B = 256, 500 us apart is 500 k items/s,
// 2 us apart a stream of ~130 M items/s. Where the worker spins, a stream is picked up without
// a futex wake-up; where it yields while nothing comes, the scheduler may leave it waiting behind
// the busy submitter when the task finally comes (detail/thread_pool_state.hpp, IdleSpinPolicy).
//
// Stream_*   P producer threads post 65,536 trivial tasks in all (each adds to one atomic) as
// fast as they can into a pool of W workers; the time runs from releasing the producers until
// every task has run (items_per_second = tasks per second). This is the per-batch hand-off
// throughput a Batcher sees at B = 1, without the batcher around it.
//
// Defaults: --benchmark_repetitions=3 --benchmark_enable_random_interleaving=true
// --benchmark_display_aggregates_only=true (later flags on the command line win). Extra flag:
// --scale=X multiplies the number of samples and of streamed tasks (default 1; e.g. 0.1 for a
// smoke test).
//
//   ./bench_thread_pool --benchmark_filter='interval_us:500$'

#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <thread>
#include <utility>
#include <vector>

#include "baselines/per_item_dispatch.hpp"
#include "microbatch/thread_pool.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double scale = 1.0;  // --scale=X

std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
        .count();
}

/// Nearest-rank percentile of @p sorted (ascending), @p q in [0, 1].
double percentile(const std::vector<double>& sorted, double q) {
    const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
    return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
}

/// Samples per run: about 0.3 s of posting, at least 500 (p99 = the 5th largest).
std::size_t handoff_samples(std::int64_t interval_us) {
    const auto count = static_cast<std::size_t>(3e5 / static_cast<double>(interval_us) * scale);
    return std::max<std::size_t>(count, 500);
}

/**
 * One hand-off run: posts @p samples tasks through @p post, one every @p interval_us, each
 * stamping its start; then @p drain must return once every task has run. Publishes the
 * latency percentiles and sets the iteration time to the posting time.
 */
template <class Post, class Drain>
void measure_handoff(benchmark::State& state, std::size_t samples, std::int64_t interval_us,
                     Post&& post, Drain&& drain) {
    std::vector<std::int64_t> posted(samples, 0);
    std::vector<std::int64_t> started(samples, 0);
    const std::int64_t interval_ns = interval_us * 1000;
    const std::int64_t start = now_ns() + 100000;  // a little slack to get going
    for (std::size_t i = 0; i < samples; ++i) {
        const std::int64_t due = start + static_cast<std::int64_t>(i) * interval_ns;
        while (now_ns() < due) {
            // Busy, like a producer filling a batch: the worker must not find this core idle.
        }
        posted[i] = now_ns();
        std::int64_t* const stamp = &started[i];
        post([stamp] { *stamp = now_ns(); });
    }
    const std::int64_t end = now_ns();
    drain();  // synchronises with the workers: every stamp is visible after it

    std::vector<double> microseconds(samples);
    for (std::size_t i = 0; i < samples; ++i) {
        microseconds[i] = static_cast<double>(started[i] - posted[i]) * 1e-3;
    }
    std::sort(microseconds.begin(), microseconds.end());
    state.SetIterationTime(static_cast<double>(end - start) * 1e-9);
    state.counters["p50_us"] = percentile(microseconds, 0.50);
    state.counters["p90_us"] = percentile(microseconds, 0.90);
    state.counters["p99_us"] = percentile(microseconds, 0.99);
    state.counters["max_us"] = microseconds.back();
    state.counters["samples"] = static_cast<double>(samples);
}

void BM_Handoff_ThreadPool(benchmark::State& state) {
    const std::int64_t interval_us = state.range(0);
    const std::size_t samples = handoff_samples(interval_us);
    for (auto _ : state) {
        microbatch::ThreadPool pool(1);
        measure_handoff(
            state, samples, interval_us,
            [&pool](microbatch::Task task) { pool.post(std::move(task)); },
            [&pool] { pool.wait_idle(); });
    }
}

void BM_Handoff_SimpleThreadPool(benchmark::State& state) {
    const std::int64_t interval_us = state.range(0);
    const std::size_t samples = handoff_samples(interval_us);
    for (auto _ : state) {
        microbatch_bench::SimpleThreadPool pool(1);
        measure_handoff(
            state, samples, interval_us,
            [&pool](std::function<void()> task) { pool.post(std::move(task)); },
            [&pool] { pool.close(); });
    }
}

void handoff(benchmark::internal::Benchmark* benchmark) {
    benchmark->ArgName("interval_us")
        ->ArgsProduct({{2, 20, 100, 500}})
        ->Iterations(1)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
}

BENCHMARK(BM_Handoff_ThreadPool)->Apply(handoff);
BENCHMARK(BM_Handoff_SimpleThreadPool)->Apply(handoff);

/**
 * One streaming run: @p producers threads, released together, post @p tasks trivial tasks in
 * all (each adds its number to one atomic) as fast as they can through @p post; @p drain must
 * return once every task has run. Returns the seconds from the release until drain() returned;
 * fails the benchmark if a task was lost or run twice.
 */
template <class Post, class Drain>
double stream_run(benchmark::State& state, std::size_t producers, std::size_t tasks, Post&& post,
                  Drain&& drain) {
    std::atomic<std::uint64_t> sum{0};
    std::atomic<std::size_t> waiting{0};
    std::atomic<bool> released{false};
    std::vector<std::thread> threads;
    for (std::size_t p = 0; p < producers; ++p) {
        threads.emplace_back([&, p] {
            waiting.fetch_add(1);
            while (!released.load()) {
                std::this_thread::yield();
            }
            for (std::size_t i = p; i < tasks; i += producers) {
                const std::uint64_t value = i + 1;
                // relaxed: the total is read after drain(), which synchronises with the workers.
                post([&sum, value] { sum.fetch_add(value, std::memory_order_relaxed); });
            }
        });
    }
    while (waiting.load() != producers) {
        std::this_thread::yield();
    }
    const Clock::time_point start = Clock::now();
    released.store(true);
    for (std::thread& thread : threads) {
        thread.join();
    }
    drain();
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    const auto n = static_cast<std::uint64_t>(tasks);
    if (sum.load() != n * (n + 1) / 2) {
        state.SkipWithError("checksum mismatch: a task was lost or run twice");
    }
    return seconds;
}

std::size_t stream_tasks() {
    return std::max<std::size_t>(static_cast<std::size_t>(65536 * scale), 64);
}

void BM_Stream_ThreadPool(benchmark::State& state) {
    const auto producers = static_cast<std::size_t>(state.range(0));
    const auto workers = static_cast<std::size_t>(state.range(1));
    for (auto _ : state) {
        microbatch::ThreadPool pool(workers);
        state.SetIterationTime(stream_run(
            state, producers, stream_tasks(),
            [&pool](microbatch::Task task) { pool.post(std::move(task)); },
            [&pool] { pool.wait_idle(); }));
    }
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(stream_tasks()));
}

void BM_Stream_SimpleThreadPool(benchmark::State& state) {
    const auto producers = static_cast<std::size_t>(state.range(0));
    const auto workers = static_cast<std::size_t>(state.range(1));
    for (auto _ : state) {
        microbatch_bench::SimpleThreadPool pool(workers);
        state.SetIterationTime(stream_run(
            state, producers, stream_tasks(),
            [&pool](std::function<void()> task) { pool.post(std::move(task)); },
            [&pool] { pool.close(); }));
    }
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(stream_tasks()));
}

void stream(benchmark::internal::Benchmark* benchmark) {
    benchmark->ArgNames({"P", "W"})
        ->ArgsProduct({{1, 2}, {1, 2}})
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
}

BENCHMARK(BM_Stream_ThreadPool)->Apply(stream);
BENCHMARK(BM_Stream_SimpleThreadPool)->Apply(stream);

}  // namespace

int main(int argc, char** argv) {
    // Defaults first, the caller's flags after them: Google Benchmark keeps the last value.
    std::vector<char*> arguments;
    arguments.push_back(argv[0]);
    static char repetitions[] = "--benchmark_repetitions=3";
    static char interleave[] = "--benchmark_enable_random_interleaving=true";
    static char aggregates[] = "--benchmark_display_aggregates_only=true";
    arguments.push_back(repetitions);
    arguments.push_back(interleave);
    arguments.push_back(aggregates);
    for (int i = 1; i < argc; ++i) {
        constexpr const char* scale_flag = "--scale=";
        if (std::strncmp(argv[i], scale_flag, std::strlen(scale_flag)) == 0) {
            scale = std::atof(argv[i] + std::strlen(scale_flag));
            if (!(scale > 0.0)) {
                std::fprintf(stderr, "bench_thread_pool: --scale must be > 0\n");
                return 1;
            }
        } else {
            arguments.push_back(argv[i]);
        }
    }
    int count = static_cast<int>(arguments.size());
    arguments.push_back(nullptr);
    benchmark::Initialize(&count, arguments.data());
    if (benchmark::ReportUnrecognizedArguments(count, arguments.data())) {
        return 1;
    }
    benchmark::AddCustomContext("handoff", "1 worker, 1 busy submitter, one task per interval");
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
