// Tests for microbatch::OrderedCollector: concurrent out-of-order writes, growth across
// segments, move-only results, hole detection.

#include "microbatch/ordered_collector.hpp"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "catch_shim.hpp"
#include "microbatch/errors.hpp"
#include "test_support.hpp"

using test_support::run_concurrently;

namespace {

/// Counts live instances, to check that results are destroyed exactly once.
struct Tracked {
    static inline std::atomic<int> live{0};
    explicit Tracked(int v) : value(v) { live.fetch_add(1); }
    Tracked(Tracked&& other) noexcept : value(other.value) { live.fetch_add(1); }
    Tracked(const Tracked&) = delete;
    Tracked& operator=(const Tracked&) = delete;
    Tracked& operator=(Tracked&&) = delete;
    ~Tracked() { live.fetch_sub(1); }
    int value;
};

/// A result type without a default constructor whose constructor throws on request.
struct Picky {
    Picky(int v, bool fail) : value(v) {
        if (fail) {
            throw std::runtime_error("construction failed");
        }
    }
    int value;
};

std::string result_for(std::size_t index) {
    return "result #" + std::to_string(index);
}

}  // namespace

TEST_CASE("OrderedCollector returns results in index order whatever the write order",
          "[ordered_collector]") {
    microbatch::OrderedCollector<int> results(4);
    for (int index : {3, 0, 5, 1, 4, 2}) {
        results.set(static_cast<std::size_t>(index), index * 10);
    }
    CHECK(results.size() == 6);
    CHECK(results.collect() == std::vector<int>{0, 10, 20, 30, 40, 50});
}

TEST_CASE("OrderedCollector collects nothing as an empty vector", "[ordered_collector]") {
    microbatch::OrderedCollector<int> results;
    CHECK(results.size() == 0);
    CHECK(results.collect().empty());
}

TEST_CASE("Concurrent writers to disjoint indices in random order, across many segments",
          "[ordered_collector][concurrency]") {
    const std::size_t threads = GENERATE(1, 2, 4, 8);
    const std::size_t initial_capacity = GENERATE(1, 64);
    constexpr std::size_t count = 50000;  // 1 -> 16 segments, 64 -> 10 segments
    microbatch::OrderedCollector<std::string> results(initial_capacity);

    std::vector<std::size_t> order(count);
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::shuffle(order.begin(), order.end(), std::mt19937_64(threads * 1000 + initial_capacity));
    run_concurrently(threads, [&](std::size_t t) {
        for (std::size_t i = t; i < count; i += threads) {
            results.set(order[i], result_for(order[i]));
        }
    });

    CHECK(results.size() == count);
    CHECK(results.contains(0));
    CHECK(results.contains(count - 1));
    CHECK_FALSE(results.contains(count));
    const std::vector<std::string> collected = results.collect();
    REQUIRE(collected.size() == count);
    std::size_t mismatches = 0;
    for (std::size_t index = 0; index < count; ++index) {
        mismatches += collected[index] == result_for(index) ? 0 : 1;
    }
    CHECK(mismatches == 0);
}

TEST_CASE("Writers that reserve their own indices get a dense, ordered result",
          "[ordered_collector][concurrency]") {
    const std::size_t threads = GENERATE(1, 2, 4, 8);
    microbatch::OrderedCollector<std::pair<std::size_t, std::size_t>> results(16);
    run_concurrently(threads, [&](std::size_t t) {
        for (int i = 0; i < 2000; ++i) {
            if (i % 4 == 0) {
                const std::size_t first = results.reserve_indices(3);  // a batch of three
                for (std::size_t k = 0; k < 3; ++k) {
                    results.set(first + k, {first + k, t});
                }
            } else {
                const std::size_t index = results.reserve_index();
                results.emplace(index, index, t);
            }
        }
    });
    const auto collected = results.collect();
    CHECK(collected.size() == threads * (500 * 3 + 1500));
    std::size_t misplaced = 0;
    for (std::size_t index = 0; index < collected.size(); ++index) {
        misplaced += collected[index].first == index ? 0 : 1;
    }
    CHECK(misplaced == 0);
    CHECK(results.reserve_index() == 0);  // collect() reset the numbering
}

TEST_CASE("OrderedCollector holds move-only results", "[ordered_collector][move_only]") {
    const std::size_t threads = GENERATE(1, 2, 4, 8);
    constexpr std::size_t count = 20000;
    microbatch::OrderedCollector<std::unique_ptr<int>> results(8);
    run_concurrently(threads, [&](std::size_t t) {
        // Each thread writes a contiguous block backwards.
        const std::size_t begin = count * t / threads;
        const std::size_t end = count * (t + 1) / threads;
        for (std::size_t index = end; index-- > begin;) {
            results.set(index, std::make_unique<int>(static_cast<int>(index) * 3));
        }
    });
    std::vector<std::unique_ptr<int>> collected = results.collect();
    REQUIRE(collected.size() == count);
    std::size_t wrong = 0;
    for (std::size_t index = 0; index < count; ++index) {
        wrong += (collected[index] && *collected[index] == static_cast<int>(index) * 3) ? 0 : 1;
    }
    CHECK(wrong == 0);
}

TEST_CASE("collect() throws naming the first index that was never set",
          "[ordered_collector][holes]") {
    microbatch::OrderedCollector<std::unique_ptr<int>> results(4);
    for (std::size_t index : {0, 1, 2, 4, 5, 9}) {
        results.set(index, std::make_unique<int>(static_cast<int>(index)));
    }
    CHECK(results.size() == 10);
    CHECK_THROWS_AS(results.collect(), microbatch::Error);
    CHECK_THROWS_WITH(results.collect(), Catch::Matchers::Contains("no result at index 3 of 10"));

    // Nothing was moved out: fill the holes and collect everything.
    for (std::size_t index : {3, 6, 7, 8}) {
        results.set(index, std::make_unique<int>(static_cast<int>(index)));
    }
    const auto collected = results.collect();
    REQUIRE(collected.size() == 10);
    for (std::size_t index = 0; index < 10; ++index) {
        REQUIRE(collected[index] != nullptr);
        CHECK(*collected[index] == static_cast<int>(index));
    }
}

TEST_CASE("collect() reports a hole in a segment that was never allocated",
          "[ordered_collector][holes]") {
    microbatch::OrderedCollector<int> results(2);  // segments: [0,2) [2,6) [6,14) [14,30)
    results.set(0, 0);
    results.set(1, 1);
    results.set(20, 20);  // allocates segment 3 only
    CHECK(results.size() == 21);
    CHECK_THROWS_WITH(results.collect(), Catch::Matchers::Contains("no result at index 2 of 21"));
}

TEST_CASE("collect() reports reserved indices that were never set", "[ordered_collector][holes]") {
    microbatch::OrderedCollector<int> results;
    const std::size_t first = results.reserve_indices(3);
    results.set(first, 1);
    results.set(first + 2, 3);
    CHECK(results.size() == 3);
    CHECK_THROWS_WITH(results.collect(), Catch::Matchers::Contains("no result at index 1 of 3"));
}

TEST_CASE("Setting an index twice throws and keeps the first result",
          "[ordered_collector][errors]") {
    microbatch::OrderedCollector<std::string> results;
    results.set(0, "first");
    CHECK_THROWS_AS(results.set(0, "second"), microbatch::Error);
    CHECK_THROWS_WITH(results.set(0, "third"), Catch::Matchers::Contains("index 0 was set twice"));
    CHECK(results.collect() == std::vector<std::string>{"first"});
}

TEST_CASE("An index beyond max_index is rejected", "[ordered_collector][errors]") {
    microbatch::OrderedCollector<int> results;
    using Collector = microbatch::OrderedCollector<int>;
    CHECK_THROWS_AS(results.set(Collector::max_index + 1, 1), std::out_of_range);
    CHECK_FALSE(results.contains(Collector::max_index + 1));
    CHECK_THROWS_AS(Collector(Collector::max_initial_capacity + 1), std::invalid_argument);
}

TEST_CASE("A throwing constructor leaves the slot empty and settable",
          "[ordered_collector][errors]") {
    microbatch::OrderedCollector<Picky> results;
    results.emplace(0, 0, false);
    CHECK_THROWS_AS(results.emplace(1, 1, true), std::runtime_error);
    CHECK_FALSE(results.contains(1));
    results.emplace(1, 1, false);
    const auto collected = results.collect();
    REQUIRE(collected.size() == 2);
    CHECK(collected[1].value == 1);
}

TEST_CASE("Results are destroyed exactly once, collected or not", "[ordered_collector]") {
    REQUIRE(Tracked::live.load() == 0);
    {
        microbatch::OrderedCollector<Tracked> results(2);
        for (int index = 0; index < 10; ++index) {
            results.emplace(static_cast<std::size_t>(index), index);
        }
        CHECK(Tracked::live.load() == 10);
        {
            const auto collected = results.collect();
            CHECK(collected.size() == 10);
            CHECK(Tracked::live.load() == 10);  // moved into the vector, originals destroyed
        }
        CHECK(Tracked::live.load() == 0);
        // Reuse after collect, then destroy the collector without collecting.
        results.emplace(0, 100);
        results.emplace(7, 107);
        CHECK(Tracked::live.load() == 2);
    }
    CHECK(Tracked::live.load() == 0);
}
