// Tests of a Batcher wired to an Aggregator (merge_into) and to an OrderedCollector: results
// merged exactly once, failures recorded, take() windows racing with running batches.

#include <atomic>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <thread>
#include <vector>

#include "catch_shim.hpp"
#include "microbatch/microbatch.hpp"

using microbatch::Aggregator;
using microbatch::Batch;
using microbatch::Batcher;
using microbatch::Options;

namespace {
std::int64_t sum_of(const Batch<int>& batch) {
    std::int64_t sum = 0;
    for (int x : batch) {
        sum += x;
    }
    return sum;
}
}  // namespace

TEST_CASE("A batcher merges every batch's result into an aggregator exactly once",
          "[aggregating_batcher][concurrency]") {
    const int producers = GENERATE(1, 2, 4, 8);
    const std::size_t batch_size = GENERATE(1u, 16u, 256u);
    const int per_producer = 5000;
    Aggregator<microbatch::ops::Sum<std::int64_t>> total;
    Aggregator<microbatch::ops::Count> batches;
    {
        Batcher<int> batcher(Options{}.max_batch_size(batch_size).workers(2),
                             microbatch::merge_into(total, [&batches](Batch<int>& batch) {
                                 batches.merge(1);
                                 return sum_of(batch);
                             }));
        std::vector<std::thread> threads;
        for (int p = 0; p < producers; ++p) {
            threads.emplace_back([&batcher, p] {
                for (int i = 1; i <= per_producer; ++i) {
                    if (i % 2 == 0) {
                        batcher.post(p * per_producer + i);
                    } else {
                        while (batcher.try_submit(p * per_producer + i) !=
                               microbatch::SubmitStatus::accepted) {
                            std::this_thread::yield();
                        }
                    }
                }
            });
        }
        for (auto& thread : threads) {
            thread.join();
        }
        batcher.wait_idle();
        const std::int64_t n = static_cast<std::int64_t>(producers) * per_producer;
        CHECK(total.value() == n * (n + 1) / 2);
        CHECK(batches.value() == batcher.stats().batches_completed);
    }
    CHECK(total.failures() == 0);
}

TEST_CASE("A batch that throws merges nothing and is recorded on the aggregator",
          "[aggregating_batcher][errors]") {
    Aggregator<microbatch::ops::Sum<std::int64_t>> total;
    Batcher<int> batcher(Options{}.max_batch_size(2).max_delay(std::chrono::hours(1)),
                         microbatch::merge_into(total, [](Batch<int>& batch) {
                             if (batch[0] < 0) {
                                 throw std::domain_error("negative");
                             }
                             return sum_of(batch);
                         }));
    auto failed = batcher.submit(-1);
    batcher.post(-2);
    batcher.post(3);
    batcher.post(4);
    batcher.post(-5);
    batcher.post(6);
    batcher.close();
    CHECK_THROWS_AS(failed.get(), std::domain_error);
    CHECK(total.value() == 7);
    CHECK(total.failures() == 2);
    REQUIRE(total.first_exception() != nullptr);
    CHECK_THROWS_WITH(std::rethrow_exception(total.first_exception()), "negative");
    CHECK(batcher.stats().batches_failed == 2);
    CHECK(batcher.stats().items_failed == 4);
}

TEST_CASE("take() windows racing with running batches lose and double-count nothing",
          "[aggregating_batcher][concurrency]") {
    Aggregator<microbatch::ops::Sum<std::int64_t>> total;
    std::atomic<bool> done{false};
    std::int64_t windows = 0;  // written only by the reporter thread, read after join
    std::thread reporter([&] {
        while (!done.load()) {
            windows += total.take();
            std::this_thread::yield();
        }
    });
    const int items = 200000;
    {
        Batcher<int> batcher(Options{}.max_batch_size(64).workers(2),
                             microbatch::merge_into(total, sum_of));
        for (int i = 1; i <= items; ++i) {
            batcher.post(i);
        }
    }
    done = true;
    reporter.join();
    const std::int64_t n = items;
    CHECK(windows + total.take() == n * (n + 1) / 2);
}

TEST_CASE("A batcher merges non-trivial aggregates (a histogram map)", "[aggregating_batcher]") {
    using Histogram = std::map<int, std::uint64_t>;
    struct MergeHistograms {
        using value_type = Histogram;
        Histogram identity() const { return {}; }
        void combine(Histogram& into, Histogram&& from) const {
            for (const auto& [bucket, count] : from) {
                into[bucket] += count;
            }
        }
    };
    Aggregator<MergeHistograms> histogram;
    {
        Batcher<int> batcher(Options{}.max_batch_size(32).workers(2),
                             microbatch::merge_into(histogram, [](Batch<int>& batch) {
                                 Histogram local;
                                 for (int x : batch) {
                                     ++local[x % 10];
                                 }
                                 return local;
                             }));
        for (int i = 0; i < 10000; ++i) {
            batcher.post(i);
        }
    }
    const Histogram result = histogram.value();
    REQUIRE(result.size() == 10);
    for (const auto& [bucket, count] : result) {
        CHECK(count == 1000);
    }
}

TEST_CASE("An ordered collector returns a batcher's per-item results in submission order",
          "[aggregating_batcher][ordered_collector]") {
    const int producers = GENERATE(1, 4);
    microbatch::OrderedCollector<int> results;
    {
        Batcher<int, int> squarer(Options{}.max_batch_size(7).workers(2), [](Batch<int>& batch) {
            std::vector<int> out;
            for (int x : batch) {
                out.push_back(x * x);
            }
            return out;
        });
        std::vector<std::thread> threads;
        for (int p = 0; p < producers; ++p) {
            threads.emplace_back([&] {
                for (int i = 0; i < 1000; ++i) {
                    const std::size_t position = results.reserve_index();
                    const int item = static_cast<int>(position % 1000);
                    squarer.submit(item, [&results, position](microbatch::Outcome<int>&& outcome) {
                        results.set(position, std::move(outcome).value());
                    });
                }
            });
        }
        for (auto& thread : threads) {
            thread.join();
        }
    }
    const std::vector<int> in_order = results.collect();
    REQUIRE(in_order.size() == static_cast<std::size_t>(producers) * 1000);
    for (std::size_t i = 0; i < in_order.size(); ++i) {
        const int item = static_cast<int>(i % 1000);
        REQUIRE(in_order[i] == item * item);
    }
}
