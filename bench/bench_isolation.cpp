// Poison-item isolation (GitHub issue 12, item 3): one batch of 256 items, some of them poison
// (process_batch throws for any batch holding one), with Options::isolate_failures on or off.
// A count benchmark: batches run inline on the submitting thread, so the counters are exact
// and the same on every machine and run.
//
// BM_Isolation/<poison>/<depth>: depth 0 = isolation off (the library default); 64 =
// Options::max_isolation_depth, down to single items. Poison items sit at evenly spread
// positions (i * 256 / poison + 256 / (2 * poison)): each in its own half as early as possible,
// the most re-runs for that many poison items. Counters per batch:
//   calls          process_batch calls (1 + isolation_runs)
//   extra_calls    isolation_runs
//   succeeded      items whose handle held a result (goal: 256 - poison)
//   failed         items whose handle held an exception
//   bound          2 * poison * log2(256), the documented cost bound on extra_calls
// The time per iteration is the cost of one batch with its re-runs (process_batch itself does
// almost nothing), for scale only.
//
// Run: ./bench_isolation  (prints the counters as columns; --benchmark_format=json for a file)

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "microbatch/batcher.hpp"

namespace {

constexpr std::size_t batch_size = 256;

void BM_Isolation(benchmark::State& state) {
    const auto poison_count = static_cast<std::size_t>(state.range(0));
    const auto depth = static_cast<std::size_t>(state.range(1));
    std::vector<char> poison(batch_size, 0);
    for (std::size_t i = 0; i < poison_count; ++i) {
        poison[i * batch_size / poison_count + batch_size / (2 * poison_count)] = 1;
    }
    microbatch::Options options = microbatch::Options{}
                                      .max_batch_size(batch_size)
                                      .max_delay(std::chrono::nanoseconds::max())
                                      .executor([](microbatch::Task task) { task(); });
    if (depth != 0) {
        options.isolate_failures(true).isolation_depth(depth);
    }
    microbatch::Batcher<std::uint32_t, std::uint32_t> batcher(
        options, [&poison](microbatch::Batch<std::uint32_t>& batch) {
            std::vector<std::uint32_t> results;
            results.reserve(batch.size());
            for (const std::uint32_t item : batch) {
                if (poison[item] != 0) {
                    throw std::runtime_error("poison item");
                }
                results.push_back(item + 1);
            }
            return results;
        });
    std::vector<microbatch::Handle<std::uint32_t>> handles(batch_size);
    std::uint64_t succeeded = 0;
    std::uint64_t failed = 0;
    for (auto _ : state) {
        for (std::uint32_t i = 0; i < batch_size; ++i) {
            handles[i] = batcher.submit(i);  // the 256th fills the batch and runs it inline
        }
        for (auto& handle : handles) {
            try {
                benchmark::DoNotOptimize(handle.get());
                ++succeeded;
            } catch (const std::runtime_error&) {
                ++failed;
            }
        }
    }
    const microbatch::Stats stats = batcher.stats();
    const auto batches = static_cast<double>(stats.batches_completed);
    const auto per_batch = [batches](std::uint64_t value) {
        return batches == 0 ? 0.0 : static_cast<double>(value) / batches;
    };
    state.counters["calls"] = per_batch(stats.batches_completed + stats.isolation_runs);
    state.counters["extra_calls"] = per_batch(stats.isolation_runs);
    state.counters["succeeded"] = per_batch(succeeded);
    state.counters["failed"] = per_batch(failed);
    state.counters["bound"] = 2.0 * static_cast<double>(poison_count) * 8.0;  // log2(256) = 8
    if (stats.items_processed != succeeded || stats.items_failed != failed) {
        state.SkipWithError("stats disagree with the handles");
    }
}

void isolation_arguments(benchmark::internal::Benchmark* benchmark) {
    for (const std::int64_t poison : {0, 1, 2, 4, 8, 16, 64, 256}) {
        benchmark->Args({poison, 0});
        benchmark->Args({poison, 64});
    }
    for (const std::int64_t depth : {1, 2, 4, 6}) {
        benchmark->Args({1, depth});
        benchmark->Args({4, depth});
    }
}

BENCHMARK(BM_Isolation)->Apply(isolation_arguments)->ArgNames({"poison", "depth"});

}  // namespace

BENCHMARK_MAIN();
