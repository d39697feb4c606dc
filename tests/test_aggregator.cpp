// Tests for microbatch::Aggregator and the ready-made operations in microbatch::ops.
// Exact outcomes only: concurrent results are compared with sequential references, never with
// timings.

#include "microbatch/aggregator.hpp"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <limits>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "catch_shim.hpp"
#include "test_support.hpp"

using test_support::run_concurrently;

namespace {

/// A histogram keyed by bucket: a non-trivial value type (node shards).
struct MapHistogram {
    using value_type = std::map<int, std::uint64_t>;
    value_type identity() const { return {}; }
    void combine(value_type& into, value_type&& from) const {
        for (const auto& [key, count] : from) {
            into[key] += count;
        }
    }
};

/// A fixed-width histogram whose width is operation state: a stateful operation.
struct VectorHistogram {
    using value_type = std::vector<std::uint64_t>;
    std::size_t buckets = 0;
    value_type identity() const { return value_type(buckets, 0); }
    void combine(value_type& into, const value_type& from) const {
        for (std::size_t i = 0; i < from.size(); ++i) {
            into[i] += from[i];
        }
    }
};

/// A sum over a move-only value type.
struct BoxedSum {
    using value_type = std::unique_ptr<std::int64_t>;
    value_type identity() const { return std::make_unique<std::int64_t>(0); }
    void combine(value_type& into, value_type&& from) const { *into += *from; }
};

/// Each merge adds (x, 2x): a value is torn iff second != 2 * first.
struct PairSum {
    using value_type = std::pair<std::int64_t, std::int64_t>;
    value_type identity() const { return {0, 0}; }
    void combine(value_type& into, const value_type& from) const {
        into.first += from.first;
        into.second += from.second;
    }
};

/// Bitwise OR: atomic-backed without an atomic_combine, so merges use the generic CAS loop.
struct BitOr {
    using value_type = std::uint64_t;
    value_type identity() const { return 0; }
    void combine(value_type& into, value_type from) const { into |= from; }
};

/// Sums vectors element-wise but throws when asked to merge a negative value.
struct PickySum {
    using value_type = std::vector<int>;
    value_type identity() const { return {0}; }
    void combine(value_type& into, const value_type& from) const {
        if (from.at(0) < 0) {
            throw std::runtime_error("negative");
        }
        into[0] += from[0];
    }
};

struct Padded {
    char tag;
    std::int32_t value;
};

}  // namespace

// --- Layout selection ---------------------------------------------------------------------

static_assert(microbatch::Aggregator<microbatch::ops::Sum<std::int64_t>>::is_atomic_backed);
static_assert(microbatch::Aggregator<microbatch::ops::Count>::is_atomic_backed);
static_assert(microbatch::Aggregator<microbatch::ops::Min<double>>::is_atomic_backed);
static_assert(microbatch::Aggregator<microbatch::ops::Max<std::uint8_t>>::is_atomic_backed);
static_assert(microbatch::Aggregator<BitOr>::is_atomic_backed);
static_assert(!microbatch::Aggregator<microbatch::ops::MeanVariance>::is_atomic_backed);
static_assert(!microbatch::Aggregator<MapHistogram>::is_atomic_backed);
static_assert(!microbatch::Aggregator<BoxedSum>::is_atomic_backed);
static_assert(!microbatch::Aggregator<PairSum>::is_atomic_backed);
// Padding bits could make a compare_exchange fail forever: such types use node shards.
static_assert(!microbatch::detail::is_atomic_backed<Padded>::value);
static_assert(!microbatch::detail::is_aggregation_op<int>::value);

// --- Options -------------------------------------------------------------------------------

TEST_CASE("Aggregator rounds the shard count up to a power of two", "[aggregator][options]") {
    using Agg = microbatch::Aggregator<microbatch::ops::Sum<int>>;
    CHECK(Agg(microbatch::AggregatorOptions{}.shards(1)).shard_count() == 1);
    CHECK(Agg(microbatch::AggregatorOptions{}.shards(3)).shard_count() == 4);
    CHECK(Agg(microbatch::AggregatorOptions{}.shards(8)).shard_count() == 8);
    const std::size_t by_default = Agg().shard_count();
    CHECK(by_default >= 1);
    CHECK((by_default & (by_default - 1)) == 0);
}

TEST_CASE("Aggregator rejects too many shards with invalid_argument", "[aggregator][options]") {
    using Agg = microbatch::Aggregator<microbatch::ops::Sum<int>>;
    const auto too_many =
        microbatch::AggregatorOptions{}.shards(microbatch::AggregatorOptions::max_shards + 1);
    CHECK_THROWS_AS(Agg(too_many), std::invalid_argument);
    CHECK_NOTHROW(
        Agg(microbatch::AggregatorOptions{}.shards(microbatch::AggregatorOptions::max_shards)));
}

// --- Atomic-backed operations ---------------------------------------------------------------

TEST_CASE("Sum of int64 equals the sequential sum under concurrent merges",
          "[aggregator][sum][concurrency]") {
    const std::size_t threads = GENERATE(1, 2, 4, 8);
    const std::size_t shards = GENERATE(1, 8);
    constexpr std::int64_t per_thread = 20000;
    microbatch::Aggregator<microbatch::ops::Sum<std::int64_t>> total(
        microbatch::AggregatorOptions{}.shards(shards));
    run_concurrently(threads, [&](std::size_t t) {
        for (std::int64_t i = 0; i < per_thread; ++i) {
            const std::int64_t value = (i % 3 == 0 ? -1 : 1) * (i * 7 + static_cast<int>(t));
            total.merge(value);
        }
    });
    std::int64_t expected = 0;
    for (std::size_t t = 0; t < threads; ++t) {
        for (std::int64_t i = 0; i < per_thread; ++i) {
            expected += (i % 3 == 0 ? -1 : 1) * (i * 7 + static_cast<int>(t));
        }
    }
    CHECK(total.value() == expected);
    CHECK(total.take() == expected);
    CHECK(total.value() == 0);
}

TEST_CASE("Count counts every merged event exactly", "[aggregator][count][concurrency]") {
    const std::size_t threads = GENERATE(1, 2, 4, 8);
    microbatch::Aggregator<microbatch::ops::Count> events;
    run_concurrently(threads, [&](std::size_t) {
        for (int i = 0; i < 10000; ++i) {
            events.merge(1);
        }
        events.merge(std::uint64_t{5});  // a whole batch of five
    });
    CHECK(events.value() == threads * 10005);
}

TEST_CASE("Min and Max find the extremes under concurrent merges",
          "[aggregator][min][max][concurrency]") {
    const std::size_t threads = GENERATE(1, 2, 4, 8);
    microbatch::Aggregator<microbatch::ops::Min<std::int64_t>> smallest;
    microbatch::Aggregator<microbatch::ops::Max<std::int64_t>> largest;
    microbatch::Aggregator<microbatch::ops::Min<double>> smallest_real;
    microbatch::Aggregator<microbatch::ops::Max<double>> largest_real;
    auto sample = [](std::size_t t, std::int64_t i) {
        // A scrambled sequence of positive and negative values, distinct per thread.
        return ((i * 7919 + static_cast<std::int64_t>(t) * 104729) % 20011) - 10000;
    };
    run_concurrently(threads, [&](std::size_t t) {
        for (std::int64_t i = 0; i < 10000; ++i) {
            const std::int64_t value = sample(t, i);
            smallest.merge(value);
            largest.merge(value);
            smallest_real.merge(static_cast<double>(value) / 4);
            largest_real.merge(static_cast<double>(value) / 4);
        }
    });
    std::int64_t expected_min = std::numeric_limits<std::int64_t>::max();
    std::int64_t expected_max = std::numeric_limits<std::int64_t>::lowest();
    for (std::size_t t = 0; t < threads; ++t) {
        for (std::int64_t i = 0; i < 10000; ++i) {
            expected_min = std::min(expected_min, sample(t, i));
            expected_max = std::max(expected_max, sample(t, i));
        }
    }
    CHECK(smallest.value() == expected_min);
    CHECK(largest.value() == expected_max);
    CHECK(smallest_real.value() == static_cast<double>(expected_min) / 4);
    CHECK(largest_real.value() == static_cast<double>(expected_max) / 4);
}

TEST_CASE("Min and Max start from the identity and ignore NaN", "[aggregator][min][max]") {
    microbatch::Aggregator<microbatch::ops::Min<double>> smallest;
    microbatch::Aggregator<microbatch::ops::Max<int>> largest;
    CHECK(smallest.value() == std::numeric_limits<double>::infinity());
    CHECK(largest.value() == std::numeric_limits<int>::lowest());
    smallest.merge(std::numeric_limits<double>::quiet_NaN());
    smallest.merge(2.5);
    smallest.merge(std::numeric_limits<double>::quiet_NaN());
    CHECK(smallest.value() == 2.5);
    largest.merge(-3);
    CHECK(largest.take() == -3);
    CHECK(largest.value() == std::numeric_limits<int>::lowest());
}

TEST_CASE("Integer sums wrap on overflow like atomic arithmetic", "[aggregator][sum]") {
    microbatch::Aggregator<microbatch::ops::Sum<std::int32_t>> total(
        microbatch::AggregatorOptions{}.shards(2));
    // Two threads, two shards: combining the shards on read overflows int32.
    run_concurrently(2, [&](std::size_t t) {
        total.merge(t == 0 ? std::numeric_limits<std::int32_t>::max() : std::int32_t{1});
    });
    CHECK(total.value() == std::numeric_limits<std::int32_t>::min());

    microbatch::Aggregator<microbatch::ops::Sum<std::uint8_t>> small;
    for (int i = 0; i < 300; ++i) {
        small.merge(std::uint8_t{1});
    }
    CHECK(small.value() == 300 % 256);
}

TEST_CASE("An atomic-backed operation without atomic_combine merges through a CAS loop",
          "[aggregator][cas][concurrency]") {
    const std::size_t threads = GENERATE(1, 2, 4, 8);
    const std::size_t shards = GENERATE(1, 4);
    microbatch::Aggregator<BitOr> bits(microbatch::AggregatorOptions{}.shards(shards));
    run_concurrently(threads, [&](std::size_t t) {
        for (unsigned bit = 0; bit < 64; ++bit) {
            if (bit % threads == t) {
                for (int repeat = 0; repeat < 100; ++repeat) {
                    bits.merge(std::uint64_t{1} << bit);
                }
            }
        }
    });
    CHECK(bits.value() == ~std::uint64_t{0});
}

// --- Mean and variance ----------------------------------------------------------------------

TEST_CASE("RunningStats handles empty, single and combined sample sets", "[aggregator][stats]") {
    microbatch::ops::RunningStats empty;
    CHECK(empty.count() == 0);
    CHECK(empty.mean() == 0.0);
    CHECK(empty.variance() == 0.0);
    CHECK(empty.sample_variance() == 0.0);

    auto one = microbatch::ops::RunningStats::of(3.0);
    CHECK(one.count() == 1);
    CHECK(one.mean() == 3.0);
    CHECK(one.variance() == 0.0);
    CHECK(one.sample_variance() == 0.0);

    microbatch::ops::RunningStats left;
    for (double x : {1.0, 2.0, 3.0, 4.0}) {
        left.add(x);
    }
    CHECK(left.mean() == 2.5);
    CHECK(left.sum_of_squared_deviations() == 5.0);
    CHECK(left.variance() == 1.25);

    microbatch::ops::RunningStats right;
    for (double x : {5.0, 6.0, 7.0, 8.0}) {
        right.add(x);
    }
    microbatch::ops::RunningStats both = left;
    both.combine(right);
    both.combine(empty);
    CHECK(both.count() == 8);
    CHECK(both.mean() == 4.5);
    CHECK(both.sum_of_squared_deviations() == 42.0);
    CHECK(both.sample_variance() == 6.0);

    microbatch::ops::RunningStats from_empty;
    from_empty.combine(both);
    CHECK(from_empty.count() == 8);
    CHECK(from_empty.mean() == 4.5);
}

TEST_CASE("MeanVariance is exact for batches with a common mean, merged in any order",
          "[aggregator][stats][concurrency]") {
    // Every batch is {m - d, m + d}: all means equal, so each Chan update has delta == 0 and
    // the mean stays exactly m while m2 is a sum of small integers, exact in double, whatever
    // order and grouping the shards combine in.
    const std::size_t threads = GENERATE(1, 2, 4, 8);
    constexpr double m = 1000.0;
    constexpr int per_thread = 5000;
    microbatch::Aggregator<microbatch::ops::MeanVariance> stats;
    run_concurrently(threads, [&](std::size_t t) {
        for (int i = 0; i < per_thread; ++i) {
            const double d = static_cast<double>((i + static_cast<int>(t)) % 17);
            microbatch::ops::RunningStats batch;
            batch.add(m - d);
            batch.add(m + d);
            stats.merge(batch);
        }
    });
    double expected_m2 = 0.0;
    for (std::size_t t = 0; t < threads; ++t) {
        for (int i = 0; i < per_thread; ++i) {
            const double d = static_cast<double>((i + static_cast<int>(t)) % 17);
            expected_m2 += 2 * d * d;
        }
    }
    const auto result = stats.value();
    CHECK(result.count() == threads * per_thread * 2);
    CHECK(result.mean() == m);
    CHECK(result.sum_of_squared_deviations() == expected_m2);
    CHECK(result.variance() == expected_m2 / static_cast<double>(threads * per_thread * 2));
}

TEST_CASE("MeanVariance matches a two-pass computation under concurrent merges",
          "[aggregator][stats][concurrency]") {
    const std::size_t threads = GENERATE(1, 2, 4, 8);
    microbatch::Aggregator<microbatch::ops::MeanVariance> stats;
    auto sample = [](std::size_t t, int i) {
        return static_cast<double>((i * 37 + static_cast<int>(t) * 11) % 101) * 0.5;
    };
    run_concurrently(threads, [&](std::size_t t) {
        for (int batch = 0; batch < 500; ++batch) {
            microbatch::ops::RunningStats batch_stats;
            for (int i = batch * 8; i < batch * 8 + 8; ++i) {
                batch_stats.add(sample(t, i));
            }
            stats.merge(std::move(batch_stats));
        }
    });
    double sum = 0.0;
    std::uint64_t count = 0;
    for (std::size_t t = 0; t < threads; ++t) {
        for (int i = 0; i < 4000; ++i) {
            sum += sample(t, i);
            ++count;
        }
    }
    const double mean = sum / static_cast<double>(count);
    double m2 = 0.0;
    for (std::size_t t = 0; t < threads; ++t) {
        for (int i = 0; i < 4000; ++i) {
            m2 += (sample(t, i) - mean) * (sample(t, i) - mean);
        }
    }
    const auto result = stats.value();
    CHECK(result.count() == count);
    CHECK(result.mean() == Approx(mean).epsilon(1e-12));
    CHECK(result.variance() == Approx(m2 / static_cast<double>(count)).epsilon(1e-10));
}

// --- Node shards: non-trivial values --------------------------------------------------------

TEST_CASE("A std::map histogram equals the sequential histogram under concurrent merges",
          "[aggregator][node][concurrency]") {
    const std::size_t threads = GENERATE(1, 2, 4, 8);
    const std::size_t shards = GENERATE(1, 2, 8);
    microbatch::Aggregator<MapHistogram> histogram(microbatch::AggregatorOptions{}.shards(shards));
    auto batch_of = [](std::size_t t, int b) {
        std::map<int, std::uint64_t> batch;
        for (int i = 0; i < 4; ++i) {
            batch[(b * 13 + i * 5 + static_cast<int>(t)) % 23] += 1;
        }
        return batch;
    };
    run_concurrently(threads, [&](std::size_t t) {
        for (int b = 0; b < 2000; ++b) {
            if (b % 2 == 0) {
                histogram.merge(batch_of(t, b));
            } else {
                const auto batch = batch_of(t, b);
                histogram.merge(batch);  // the copying overload
            }
        }
    });
    std::map<int, std::uint64_t> expected;
    for (std::size_t t = 0; t < threads; ++t) {
        for (int b = 0; b < 2000; ++b) {
            MapHistogram{}.combine(expected, batch_of(t, b));
        }
    }
    CHECK(histogram.value() == expected);
    CHECK(histogram.take() == expected);
    CHECK(histogram.value().empty());
}

TEST_CASE("A stateful vector histogram operation is used for every merge",
          "[aggregator][node][concurrency]") {
    const std::size_t threads = GENERATE(1, 2, 4, 8);
    microbatch::Aggregator<VectorHistogram> histogram(microbatch::AggregatorOptions{},
                                                      VectorHistogram{16});
    CHECK(histogram.operation().buckets == 16);
    CHECK(histogram.value() == std::vector<std::uint64_t>(16, 0));
    run_concurrently(threads, [&](std::size_t t) {
        for (int b = 0; b < 3000; ++b) {
            std::vector<std::uint64_t> batch(16, 0);
            batch[(static_cast<std::size_t>(b) + t) % 16] += 2;
            batch[t % 16] += 1;
            histogram.merge(std::move(batch));
        }
    });
    std::vector<std::uint64_t> expected(16, 0);
    for (std::size_t t = 0; t < threads; ++t) {
        for (int b = 0; b < 3000; ++b) {
            expected[(static_cast<std::size_t>(b) + t) % 16] += 2;
            expected[t % 16] += 1;
        }
    }
    CHECK(histogram.value() == expected);
}

TEST_CASE("A move-only value type is merged and taken", "[aggregator][node][concurrency]") {
    const std::size_t threads = GENERATE(1, 2, 4, 8);
    microbatch::Aggregator<BoxedSum> total(microbatch::AggregatorOptions{}.shards(2));
    run_concurrently(threads, [&](std::size_t t) {
        for (int i = 1; i <= 1000; ++i) {
            total.merge(std::make_unique<std::int64_t>(i + static_cast<int>(t)));
        }
    });
    std::int64_t expected = 0;
    for (std::size_t t = 0; t < threads; ++t) {
        expected += 500500 + 1000 * static_cast<std::int64_t>(t);
    }
    const auto taken = total.take();
    REQUIRE(taken != nullptr);
    CHECK(*taken == expected);
    CHECK(*total.take() == 0);
}

TEST_CASE("value() never sees a torn merge", "[aggregator][node][concurrency]") {
    const std::size_t writers = GENERATE(1, 2, 4);
    microbatch::Aggregator<PairSum> pairs(microbatch::AggregatorOptions{}.shards(2));
    std::atomic<std::size_t> writers_done{0};
    std::size_t torn = 0;
    std::size_t reads = 0;
    run_concurrently(writers + 1, [&](std::size_t t) {
        if (t == writers) {
            // The reader: every value must be a sum of whole (x, 2x) merges.
            do {
                const auto seen = pairs.value();
                torn += seen.second != 2 * seen.first ? 1 : 0;
                ++reads;
            } while (writers_done.load() < writers);
            return;
        }
        for (std::int64_t x = 1; x <= 5000; ++x) {
            pairs.merge(PairSum::value_type{x, 2 * x});
        }
        writers_done.fetch_add(1);
    });
    CHECK(reads > 0);
    CHECK(torn == 0);
    const auto final_value = pairs.value();
    CHECK(final_value.first == static_cast<std::int64_t>(writers) * 5000 * 5001 / 2);
    CHECK(final_value.second == 2 * final_value.first);
}

TEST_CASE("A throwing combine leaves the aggregator usable and loses no other merge",
          "[aggregator][node][exceptions]") {
    microbatch::Aggregator<PickySum> total(microbatch::AggregatorOptions{}.shards(1));
    total.merge(std::vector<int>{5});
    CHECK_THROWS_AS(total.merge(std::vector<int>{-1}), std::runtime_error);
    total.merge(std::vector<int>{7});
    // The shard's node was handed back despite the exception: reads do not wait forever.
    CHECK(total.value() == std::vector<int>{12});
    CHECK(total.take() == std::vector<int>{12});
    CHECK(total.value() == std::vector<int>{0});
}

// --- take() ---------------------------------------------------------------------------------

namespace {

/// Merges `1..per_thread` (as produced by make_value) from `writers` threads while another
/// thread takes windows; returns the windows' total plus the final take.
template <class Op, class MakeValue, class Add>
void check_take_is_exactly_once(std::size_t writers, std::size_t shards, int per_thread,
                                MakeValue make_value, Add add_window) {
    microbatch::Aggregator<Op> aggregator(microbatch::AggregatorOptions{}.shards(shards));
    std::atomic<std::size_t> writers_done{0};
    std::size_t windows = 0;
    run_concurrently(writers + 1, [&](std::size_t t) {
        if (t == writers) {
            do {
                add_window(aggregator.take());
                ++windows;
            } while (writers_done.load() < writers);
            return;
        }
        for (int i = 1; i <= per_thread; ++i) {
            aggregator.merge(make_value(i));
        }
        writers_done.fetch_add(1);
    });
    add_window(aggregator.take());
    CHECK(windows >= 1);
}

}  // namespace

TEST_CASE("take() racing with Sum merges counts every merge exactly once",
          "[aggregator][take][concurrency]") {
    const std::size_t writers = GENERATE(1, 2, 4, 8);
    const std::size_t shards = GENERATE(1, 4);
    constexpr int per_thread = 20000;
    std::int64_t taken = 0;
    check_take_is_exactly_once<microbatch::ops::Sum<std::int64_t>>(
        writers, shards, per_thread, [](int i) { return std::int64_t{i}; },
        [&](std::int64_t window) { taken += window; });
    CHECK(taken == static_cast<std::int64_t>(writers) * per_thread * (per_thread + 1) / 2);
}

TEST_CASE("take() racing with histogram merges counts every merge exactly once",
          "[aggregator][take][node][concurrency]") {
    const std::size_t writers = GENERATE(1, 2, 4, 8);
    const std::size_t shards = GENERATE(1, 4);
    constexpr int per_thread = 3000;
    std::map<int, std::uint64_t> taken;
    check_take_is_exactly_once<MapHistogram>(
        writers, shards, per_thread,
        [](int i) {
            return std::map<int, std::uint64_t>{{i % 7, 1}, {100, 2}};
        },
        [&](std::map<int, std::uint64_t>&& window) {
            MapHistogram{}.combine(taken, std::move(window));
        });
    std::map<int, std::uint64_t> expected;
    for (int i = 1; i <= per_thread; ++i) {
        expected[i % 7] += writers;
        expected[100] += 2 * writers;
    }
    CHECK(taken == expected);
}

TEST_CASE("take() racing with MeanVariance merges keeps the exact count",
          "[aggregator][take][stats][concurrency]") {
    const std::size_t writers = GENERATE(1, 2, 4);
    constexpr int per_thread = 5000;
    microbatch::ops::RunningStats taken;
    check_take_is_exactly_once<microbatch::ops::MeanVariance>(
        writers, 2, per_thread,
        [](int i) { return microbatch::ops::RunningStats::of(static_cast<double>(i % 2)); },
        [&](const microbatch::ops::RunningStats& window) { taken.combine(window); });
    CHECK(taken.count() == writers * per_thread);
    CHECK(taken.mean() == Approx(0.5).epsilon(1e-12));
}

// --- Failures -------------------------------------------------------------------------------

TEST_CASE("record_failure keeps the first exception and counts the rest",
          "[aggregator][failures]") {
    microbatch::Aggregator<microbatch::ops::Count> events;
    CHECK(events.failures() == 0);
    CHECK(events.first_exception() == nullptr);

    events.record_failure(nullptr);  // counted, nothing to keep
    CHECK(events.failures() == 1);
    CHECK(events.first_exception() == nullptr);

    events.record_failure(std::make_exception_ptr(std::runtime_error("first")));
    events.record_failure(std::make_exception_ptr(std::logic_error("second")));
    CHECK(events.failures() == 3);
    REQUIRE(events.first_exception() != nullptr);
    CHECK_THROWS_WITH(std::rethrow_exception(events.first_exception()), "first");
    CHECK_THROWS_AS(std::rethrow_exception(events.first_exception()), std::runtime_error);

    (void)events.take();  // take() resets the value, not the failures
    CHECK(events.failures() == 3);
    CHECK(events.first_exception() != nullptr);
}

TEST_CASE("record_failure is exact under concurrency and keeps one recorded exception",
          "[aggregator][failures][concurrency]") {
    const std::size_t threads = GENERATE(1, 2, 4, 8);
    constexpr int per_thread = 2000;
    microbatch::Aggregator<microbatch::ops::Sum<int>> batches;
    std::atomic<int> seen_before_first{0};
    run_concurrently(threads, [&](std::size_t t) {
        for (int i = 0; i < per_thread; ++i) {
            batches.record_failure(std::make_exception_ptr(
                std::runtime_error("thread " + std::to_string(t) + " batch " + std::to_string(i))));
            // Reading while others record: once an exception is visible the count is >= 1.
            if (batches.first_exception() != nullptr && batches.failures() == 0) {
                seen_before_first.fetch_add(1);
            }
        }
    });
    CHECK(batches.failures() == threads * per_thread);
    CHECK(seen_before_first.load() == 0);
    const std::exception_ptr first = batches.first_exception();
    REQUIRE(first != nullptr);
    std::string message;
    try {
        std::rethrow_exception(first);
    } catch (const std::runtime_error& error) {
        message = error.what();
    }
    CHECK(message.rfind("thread ", 0) == 0);
    CHECK(batches.first_exception() == first);  // never replaced
}

// --- Shard assignment -----------------------------------------------------------------------

TEST_CASE("Live threads hold distinct shard numbers and exited threads' numbers are reused",
          "[aggregator][shards]") {
    // Two threads alive at once never share a number, so two merging threads land on two
    // distinct shards of a two-shard aggregator.
    std::size_t first = 0;
    std::size_t second = 0;
    std::atomic<int> arrived{0};
    run_concurrently(2, [&](std::size_t t) {
        (t == 0 ? first : second) = microbatch::detail::aggregator_thread_hint();
        arrived.fetch_add(1);
        while (arrived.load() < 2) {
            std::this_thread::yield();  // both alive while the other reads its number
        }
    });
    CHECK(first != second);
    CHECK((first & 1) != (second & 1));  // consecutive free numbers: one per shard of two

    // A thread that exits gives its number back; the next new thread gets it again.
    std::size_t exited = 0;
    std::thread([&] { exited = microbatch::detail::aggregator_thread_hint(); }).join();
    std::size_t reused = 0;
    std::thread([&] { reused = microbatch::detail::aggregator_thread_hint(); }).join();
    CHECK(reused == exited);
}

TEST_CASE("Two concurrent take() callers split the merges between them exactly",
          "[aggregator][take][concurrency]") {
    const std::size_t writers = GENERATE(1, 2, 4);
    constexpr int per_thread = 10000;
    microbatch::Aggregator<microbatch::ops::Sum<std::int64_t>> sum(
        microbatch::AggregatorOptions{}.shards(2));
    microbatch::Aggregator<MapHistogram> histogram(microbatch::AggregatorOptions{}.shards(2));
    std::atomic<std::size_t> writers_done{0};
    std::int64_t taken_sum[2] = {0, 0};
    std::map<int, std::uint64_t> taken_histogram[2];
    run_concurrently(writers + 2, [&](std::size_t t) {
        if (t >= writers) {
            const std::size_t taker = t - writers;
            do {
                taken_sum[taker] += sum.take();
                MapHistogram{}.combine(taken_histogram[taker], histogram.take());
            } while (writers_done.load() < writers);
            return;
        }
        for (int i = 1; i <= per_thread; ++i) {
            sum.merge(std::int64_t{i});
            histogram.merge(std::map<int, std::uint64_t>{{i % 5, 1}});
        }
        writers_done.fetch_add(1);
    });
    std::int64_t total = taken_sum[0] + taken_sum[1] + sum.take();
    std::map<int, std::uint64_t> combined = histogram.take();
    MapHistogram{}.combine(combined, std::move(taken_histogram[0]));
    MapHistogram{}.combine(combined, std::move(taken_histogram[1]));
    CHECK(total == static_cast<std::int64_t>(writers) * per_thread * (per_thread + 1) / 2);
    std::map<int, std::uint64_t> expected;
    for (int i = 1; i <= per_thread; ++i) {
        expected[i % 5] += writers;
    }
    CHECK(combined == expected);
}
