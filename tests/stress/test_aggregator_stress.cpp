// Stress tests for microbatch::Aggregator and microbatch::OrderedCollector: millions of
// concurrent operations, readers and takers racing with writers. Exact outcomes only (no
// timing assertions); each case is sized to finish within seconds under ThreadSanitizer on
// two cores.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "catch_shim.hpp"
#include "microbatch/aggregator.hpp"
#include "microbatch/ordered_collector.hpp"
#include "test_support.hpp"

using test_support::run_concurrently;

namespace {

struct Histogram8 {
    using value_type = std::vector<std::uint64_t>;
    value_type identity() const { return value_type(8, 0); }
    void combine(value_type& into, const value_type& from) const {
        for (std::size_t i = 0; i < into.size(); ++i) {
            into[i] += from[i];
        }
    }
};

struct MapHistogram {
    using value_type = std::map<int, std::uint64_t>;
    value_type identity() const { return {}; }
    void combine(value_type& into, value_type&& from) const {
        for (const auto& [key, count] : from) {
            into[key] += count;
        }
    }
};

}  // namespace

TEST_CASE("Millions of Sum merges racing with take() are each counted exactly once",
          "[aggregator][stress][take]") {
    const std::size_t writers = GENERATE(2, 4);
    const std::size_t shards = GENERATE(1, 2, 8);
    const std::int64_t total_merges = 3'000'000;
    const std::int64_t per_thread = total_merges / static_cast<std::int64_t>(writers);
    microbatch::Aggregator<microbatch::ops::Sum<std::int64_t>> sum(
        microbatch::AggregatorOptions{}.shards(shards));
    std::atomic<std::size_t> writers_done{0};
    std::int64_t taken = 0;
    std::size_t windows = 0;
    run_concurrently(writers + 1, [&](std::size_t t) {
        if (t == writers) {
            do {
                taken += sum.take();
                ++windows;
                std::this_thread::yield();
            } while (writers_done.load() < writers);
            return;
        }
        for (std::int64_t i = 1; i <= per_thread; ++i) {
            sum.merge(i);
        }
        writers_done.fetch_add(1);
    });
    taken += sum.take();
    CHECK(windows >= 1);
    CHECK(taken == static_cast<std::int64_t>(writers) * (per_thread * (per_thread + 1) / 2));
    CHECK(sum.value() == 0);
}

TEST_CASE("Millions of Count, Min and Max merges give the sequential results",
          "[aggregator][stress]") {
    constexpr std::size_t threads = 4;
    constexpr std::int64_t per_thread = 500'000;
    microbatch::Aggregator<microbatch::ops::Count> count;
    microbatch::Aggregator<microbatch::ops::Min<std::int64_t>> smallest;
    microbatch::Aggregator<microbatch::ops::Max<std::int64_t>> largest;
    run_concurrently(threads, [&](std::size_t t) {
        const auto offset = static_cast<std::int64_t>(t) * per_thread;
        for (std::int64_t i = 0; i < per_thread; ++i) {
            const std::int64_t value = (i * 2654435761 + offset) % 1'000'003 - 500'000;
            count.merge(1);
            smallest.merge(value);
            largest.merge(value);
        }
    });
    std::int64_t expected_min = std::numeric_limits<std::int64_t>::max();
    std::int64_t expected_max = std::numeric_limits<std::int64_t>::lowest();
    for (std::size_t t = 0; t < threads; ++t) {
        const auto offset = static_cast<std::int64_t>(t) * per_thread;
        for (std::int64_t i = 0; i < per_thread; ++i) {
            const std::int64_t value = (i * 2654435761 + offset) % 1'000'003 - 500'000;
            expected_min = value < expected_min ? value : expected_min;
            expected_max = value > expected_max ? value : expected_max;
        }
    }
    CHECK(count.value() == threads * per_thread);
    CHECK(smallest.value() == expected_min);
    CHECK(largest.value() == expected_max);
}

TEST_CASE("A million histogram merges racing with value() and take() lose nothing",
          "[aggregator][stress][node]") {
    const std::size_t shards = GENERATE(1, 2);
    constexpr std::size_t writers = 4;
    constexpr int per_thread = 250'000;
    microbatch::Aggregator<Histogram8> histogram(microbatch::AggregatorOptions{}.shards(shards));
    std::atomic<std::size_t> writers_done{0};
    std::vector<std::uint64_t> taken(8, 0);
    std::size_t torn_reads = 0;
    run_concurrently(writers + 2, [&](std::size_t t) {
        if (t == writers) {  // taker
            do {
                Histogram8{}.combine(taken, histogram.take());
            } while (writers_done.load() < writers);
            return;
        }
        if (t == writers + 1) {  // reader: every merge adds 1 to bucket b and 2 to bucket 7
            do {
                const auto seen = histogram.value();
                std::uint64_t ones = 0;
                for (std::size_t b = 0; b < 7; ++b) {
                    ones += seen[b];
                }
                torn_reads += seen[7] == 2 * ones ? 0 : 1;
            } while (writers_done.load() < writers);
            return;
        }
        for (int i = 0; i < per_thread; ++i) {
            std::vector<std::uint64_t> batch(8, 0);
            batch[static_cast<std::size_t>(i) % 7] = 1;
            batch[7] = 2;
            histogram.merge(std::move(batch));
        }
        writers_done.fetch_add(1);
    });
    Histogram8{}.combine(taken, histogram.take());
    std::vector<std::uint64_t> expected(8, 0);
    for (int i = 0; i < per_thread; ++i) {
        expected[static_cast<std::size_t>(i) % 7] += writers;
    }
    expected[7] = 2 * writers * per_thread;
    CHECK(torn_reads == 0);
    CHECK(taken == expected);
}

TEST_CASE("Eight threads on one node shard with a busy reader stay exact",
          "[aggregator][stress][node]") {
    // One shard, eight writers: most merges find the node held and take the overflow path,
    // while a reader keeps asking for the node.
    constexpr std::size_t writers = 8;
    constexpr int per_thread = 40'000;
    microbatch::Aggregator<MapHistogram> histogram(microbatch::AggregatorOptions{}.shards(1));
    std::atomic<std::size_t> writers_done{0};
    std::size_t reads = 0;
    run_concurrently(writers + 1, [&](std::size_t t) {
        if (t == writers) {
            do {
                reads += histogram.value().size() <= 16 ? 1 : 0;
            } while (writers_done.load() < writers);
            return;
        }
        for (int i = 0; i < per_thread; ++i) {
            histogram.merge(MapHistogram::value_type{{i % 16, 1}});
        }
        writers_done.fetch_add(1);
    });
    const auto result = histogram.take();
    std::map<int, std::uint64_t> expected;
    for (int i = 0; i < per_thread; ++i) {
        expected[i % 16] += writers;
    }
    CHECK(reads >= 1);
    CHECK(result == expected);
}

TEST_CASE("A million MeanVariance merges racing with take() keep the exact count",
          "[aggregator][stress][stats]") {
    constexpr std::size_t writers = 2;
    constexpr int per_thread = 500'000;
    microbatch::Aggregator<microbatch::ops::MeanVariance> stats;
    std::atomic<std::size_t> writers_done{0};
    microbatch::ops::RunningStats taken;
    run_concurrently(writers + 1, [&](std::size_t t) {
        if (t == writers) {
            do {
                taken.combine(stats.take());
                std::this_thread::yield();
            } while (writers_done.load() < writers);
            return;
        }
        for (int i = 0; i < per_thread; ++i) {
            stats.merge(microbatch::ops::RunningStats::of(7.0));
        }
        writers_done.fetch_add(1);
    });
    taken.combine(stats.take());
    CHECK(taken.count() == writers * per_thread);
    CHECK(taken.mean() == 7.0);
    CHECK(taken.variance() == 0.0);
}

TEST_CASE("Half a million concurrent failures are counted and one is kept",
          "[aggregator][stress][failures]") {
    constexpr std::size_t threads = 4;
    constexpr int per_thread = 125'000;
    microbatch::Aggregator<microbatch::ops::Count> batches;
    const auto error = std::make_exception_ptr(std::runtime_error("batch failed"));
    run_concurrently(threads, [&](std::size_t) {
        for (int i = 0; i < per_thread; ++i) {
            batches.record_failure(error);
        }
    });
    CHECK(batches.failures() == threads * per_thread);
    CHECK(batches.first_exception() == error);
}

TEST_CASE("Two million concurrent OrderedCollector writes collect in order",
          "[ordered_collector][stress]") {
    constexpr std::size_t threads = 4;
    constexpr std::size_t count = 2'000'000;
    microbatch::OrderedCollector<std::uint64_t> results(1);  // grows through 21 segments
    run_concurrently(threads, [&](std::size_t t) {
        // Interleaved strides, walked backwards: every thread touches every segment, and
        // the high segments are allocated while the low ones are still being written.
        for (std::size_t i = count - threads + t + 1; i-- > 0;) {
            if (i % threads == t) {
                results.set(i, std::uint64_t{i} * 3 + 1);
            }
        }
    });
    const auto collected = results.collect();
    REQUIRE(collected.size() == count);
    std::size_t wrong = 0;
    for (std::size_t i = 0; i < count; ++i) {
        wrong += collected[i] == std::uint64_t{i} * 3 + 1 ? 0 : 1;
    }
    CHECK(wrong == 0);
}
