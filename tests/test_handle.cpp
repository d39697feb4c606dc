// Tests of microbatch::Handle and microbatch::Outcome: future-like waiting, value and
// exception delivery, validity rules.

#include <chrono>
#include <future>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include "catch_shim.hpp"
#include "microbatch/batcher.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using microbatch::Batch;
using microbatch::Batcher;
using microbatch::Handle;
using microbatch::Options;
using microbatch::Outcome;

TEST_CASE("Outcome holds a value or an exception", "[handle][outcome]") {
    Outcome<int> good(7);
    CHECK(good.has_value());
    CHECK(static_cast<bool>(good));
    CHECK(good.value() == 7);
    CHECK(good.error() == nullptr);

    Outcome<int> bad(std::make_exception_ptr(std::runtime_error("boom")));
    CHECK_FALSE(bad.has_value());
    CHECK_THROWS_WITH(bad.value(), "boom");

    Outcome<void> done;
    CHECK(done.has_value());
    CHECK_NOTHROW(done.value());
    Outcome<void> failed(std::make_exception_ptr(std::logic_error("no")));
    CHECK_THROWS_AS(failed.value(), std::logic_error);

    Outcome<std::unique_ptr<int>> owned(std::make_unique<int>(3));
    std::unique_ptr<int> taken = std::move(owned).value();
    CHECK(*taken == 3);
}

TEST_CASE("A default or consumed Handle is invalid and says so", "[handle]") {
    Handle<int> empty;
    CHECK_FALSE(empty.valid());
    CHECK_THROWS_AS(empty.get(), microbatch::Error);
    CHECK_THROWS_AS(empty.wait(), microbatch::Error);
    CHECK_THROWS_AS(empty.ready(), microbatch::Error);

    Batcher<int, int> batcher(Options{}.max_batch_size(1),
                              [](Batch<int>& batch) { return std::vector<int>{batch[0] + 1}; });
    Handle<int> handle = batcher.submit(1);
    CHECK(handle.valid());
    Handle<int> moved = std::move(handle);
    CHECK_FALSE(handle.valid());  // NOLINT(bugprone-use-after-move): checking moved-from state
    CHECK(moved.get() == 2);
    CHECK_FALSE(moved.valid());
}

TEST_CASE("Handle wait_for times out while the batch is pending, then becomes ready", "[handle]") {
    test_support::Gate gate;
    Batcher<int, int> batcher(Options{}.max_batch_size(1).workers(1), [&](Batch<int>& batch) {
        gate.wait();
        return std::vector<int>{batch[0] * 10};
    });
    Handle<int> handle = batcher.submit(4);
    CHECK(handle.wait_for(1ms) == std::future_status::timeout);  // held by the gate
    CHECK_FALSE(handle.ready());
    gate.open();
    handle.wait();
    CHECK(handle.ready());
    CHECK(handle.wait_for(0s) == std::future_status::ready);
    CHECK(handle.wait_until(std::chrono::steady_clock::now()) == std::future_status::ready);
    CHECK(handle.get() == 40);
}

TEST_CASE("Handle rethrows the batch's exception from get", "[handle]") {
    Batcher<int, int> batcher(
        Options{}.max_batch_size(2).max_delay(0ns),
        [](Batch<int>&) -> std::vector<int> { throw std::out_of_range("bad batch"); });
    Handle<int> handle = batcher.submit(1);
    CHECK_THROWS_AS(handle.get(), std::out_of_range);
    CHECK_FALSE(handle.valid());
}

TEST_CASE("Handles may be dropped before their items are processed", "[handle]") {
    std::atomic<int> processed{0};
    {
        Batcher<int, int> batcher(Options{}.max_batch_size(8).workers(2), [&](Batch<int>& batch) {
            processed += static_cast<int>(batch.size());
            return std::vector<int>(batch.begin(), batch.end());
        });
        for (int i = 0; i < 100; ++i) {
            (void)batcher.submit(i);  // handle destroyed at once
        }
    }
    CHECK(processed == 100);
}

TEST_CASE("Many threads wait on handles concurrently", "[handle][concurrency]") {
    const int waiters = GENERATE(1, 2, 4, 8);
    Batcher<int, int> batcher(Options{}.max_batch_size(16).workers(2), [](Batch<int>& batch) {
        return std::vector<int>(batch.begin(), batch.end());
    });
    std::vector<std::thread> threads;
    std::atomic<int> correct{0};
    for (int t = 0; t < waiters; ++t) {
        threads.emplace_back([&, t] {
            for (int i = 0; i < 200; ++i) {
                const int value = t * 1000 + i;
                if (batcher.submit(value).get() == value) {
                    ++correct;
                }
            }
        });
    }
    for (auto& thread : threads) {
        thread.join();
    }
    CHECK(correct == waiters * 200);
}
