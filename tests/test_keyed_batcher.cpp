// Tests for microbatch::KeyedBatcher (issue 12, item 4: keyed batching): the pure policy
// (detail/keyed_policy.hpp), batches that never mix keys, per-key bounds, the key cap and
// reclamation, round-robin fairness, exact outcomes, backpressure, close semantics and bad
// input. Time is a ManualClock and, where the order of batches matters, the executor is one
// the test drives by hand; nothing here measures time.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <dirent.h>
#endif

#include "catch_shim.hpp"
#include "microbatch/keyed_batcher.hpp"

using namespace std::chrono_literals;
using microbatch::Batch;
using microbatch::DispatchReason;
using microbatch::Handle;
using microbatch::KeyedBatcher;
using microbatch::KeyedOptions;
using microbatch::KeyLimitError;
using microbatch::KeyLimits;
using microbatch::ManualClock;
using microbatch::Outcome;
using microbatch::SubmitStatus;
namespace detail = microbatch::detail;

namespace {

// An executor the test runs by hand: tasks queue until run_all(); after run_inline() every
// task (queued or new) runs at once on the posting thread.
class ManualExecutor {
public:
    microbatch::Executor executor() {
        return [this](microbatch::Task task) {
            {
                std::lock_guard<std::mutex> lock(mutex_);
                if (!inline_) {
                    tasks_.push_back(std::move(task));
                    return;
                }
            }
            task();
        };
    }
    std::size_t run_all() {
        std::size_t ran = 0;
        for (;;) {
            microbatch::Task task;
            {
                std::lock_guard<std::mutex> lock(mutex_);
                if (tasks_.empty()) {
                    return ran;
                }
                task = std::move(tasks_.front());
                tasks_.pop_front();
            }
            task();
            ++ran;
        }
    }
    std::size_t queued() {
        std::lock_guard<std::mutex> lock(mutex_);
        return tasks_.size();
    }
    void run_inline() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            inline_ = true;
        }
        run_all();
    }

private:
    std::mutex mutex_;
    std::deque<microbatch::Task> tasks_;
    bool inline_ = false;
};

// What process_batch saw: one record per batch, in the order batches ran.
struct Seen {
    std::string key;
    std::vector<int> items;
    DispatchReason reason;
    std::uint64_t sequence;
};

struct Recorder {
    std::mutex mutex;
    std::vector<Seen> batches;
    void record(const std::string& key, Batch<int>& batch) {
        std::lock_guard<std::mutex> lock(mutex);
        batches.push_back(Seen{key, std::vector<int>(batch.begin(), batch.end()), batch.reason(),
                               batch.sequence()});
    }
    std::vector<Seen> take() {
        std::lock_guard<std::mutex> lock(mutex);
        return std::exchange(batches, {});
    }
};

using StringKeyed = KeyedBatcher<std::string, int, void, ManualClock>;

KeyedOptions manual_options(ManualExecutor& executor) {
    return KeyedOptions{}.executor(executor.executor()).max_in_flight(1);
}

}  // namespace

// ---- The pure policy -------------------------------------------------------------------------

TEST_CASE("check_key_batch: empty, filling, due and full", "[keyed][policy]") {
    using detail::check_key_batch;
    using detail::KeyBatchState;
    CHECK(check_key_batch(0, 4, 0, 10, 100).state == KeyBatchState::empty);
    CHECK(check_key_batch(4, 4, 0, 10, 0).state == KeyBatchState::full);
    CHECK(check_key_batch(5, 4, 0, -1, 0).state == KeyBatchState::full);
    const auto filling = check_key_batch(2, 4, 100, 10, 105);
    CHECK(filling.state == KeyBatchState::filling);
    CHECK(filling.due_at == 110);
    CHECK(check_key_batch(2, 4, 100, 10, 110).state == KeyBatchState::due);
    CHECK(check_key_batch(1, 4, 100, 0, 100).state == KeyBatchState::due);  // max_delay(0)
    const auto unbounded = check_key_batch(3, 4, 100, -1, 1'000'000);
    CHECK(unbounded.state == KeyBatchState::filling);
    CHECK(unbounded.due_at == detail::KeyBatchCheck::never);
    // No overflow near the end of time.
    CHECK(detail::key_due_time(detail::KeyBatchCheck::never - 5, 10) ==
          detail::KeyBatchCheck::never);
}

TEST_CASE("decide_key_dispatch: queued batches first, then a due open batch", "[keyed][policy]") {
    using detail::decide_key_dispatch;
    using detail::KeyDispatch;
    CHECK(decide_key_dispatch(0, false).take == KeyDispatch::none);
    CHECK(decide_key_dispatch(0, true).take == KeyDispatch::seal_open);
    CHECK_FALSE(decide_key_dispatch(0, true).requeue);
    CHECK(decide_key_dispatch(1, false).take == KeyDispatch::queued);
    CHECK_FALSE(decide_key_dispatch(1, false).requeue);
    CHECK(decide_key_dispatch(1, true).requeue);
    CHECK(decide_key_dispatch(3, false).requeue);
    CHECK(detail::due_reason(detail::KeyedTrigger::worker_finished) == DispatchReason::worker_free);
    CHECK(detail::due_reason(detail::KeyedTrigger::timer) == DispatchReason::deadline);
    CHECK(detail::worker_free(0, 1));
    CHECK_FALSE(detail::worker_free(1, 1));
    CHECK(detail::worker_free(1000, KeyedOptions::unlimited_in_flight));
}

TEST_CASE("The round-robin ring gives each waiting key one batch per round", "[keyed][policy]") {
    // Key 0 has 4 sealed batches, key 1 has 2, key 2 has 1; one worker takes them one by one.
    std::vector<std::size_t> queued = {4, 2, 1};
    detail::RoundRobinRing<int> ring;
    for (int key = 0; key < 3; ++key) {
        ring.push(key);
    }
    std::vector<int> order;
    while (!ring.empty()) {
        const int key = ring.pop();
        const auto decision = detail::decide_key_dispatch(queued[key], false);
        if (decision.take == detail::KeyDispatch::queued) {
            --queued[key];
            order.push_back(key);
        }
        if (decision.requeue) {
            ring.push(key);
        }
    }
    CHECK(order == std::vector<int>{0, 1, 2, 0, 1, 0, 0});
}

// ---- Batching per key --------------------------------------------------------------------------

TEST_CASE("KeyedBatcher never mixes keys and processes every item exactly once",
          "[keyed][batcher]") {
    constexpr int items = 2000;
    std::vector<std::atomic<int>> processed(items);
    std::atomic<bool> mixed{false};
    {
        // The key is item % 7, given by the key function; process_batch sees it.
        KeyedBatcher<int, int, int> batcher(
            KeyedOptions{}.max_batch_size(8).max_delay(200us).workers(2),
            [](const int& item) { return item % 7; },
            [&](const int& key, Batch<int>& batch) {
                std::vector<int> out;
                for (int item : batch) {
                    if (item % 7 != key) {
                        mixed = true;
                    }
                    processed[static_cast<std::size_t>(item)].fetch_add(1);
                    out.push_back(item * 2);
                }
                return out;
            });
        std::vector<Handle<int>> handles;
        for (int i = 0; i < items; ++i) {
            handles.push_back(batcher.submit(i));
        }
        for (int i = 0; i < items; ++i) {
            REQUIRE(handles[static_cast<std::size_t>(i)].get() == 2 * i);
        }
        batcher.close();
        const auto stats = batcher.stats();
        CHECK(stats.items_accepted == items);
        CHECK(stats.items_processed == items);
        CHECK(stats.items_failed == 0);
        CHECK(stats.keys_live == 7);
        CHECK(stats.batches_completed == stats.batches_full + stats.batches_deadline +
                                             stats.batches_worker_free + stats.batches_flush +
                                             stats.batches_close);
        for (int key = 0; key < 7; ++key) {
            const auto key_stats = batcher.key_stats(key);
            REQUIRE(key_stats);
            CHECK(key_stats->items_processed == static_cast<std::uint64_t>((items - key + 6) / 7));
            CHECK(key_stats->pending == 0);
        }
    }
    CHECK_FALSE(mixed);
    for (auto& count : processed) {
        REQUIRE(count.load() == 1);
    }
}

TEST_CASE("KeyedBatcher seals each key by its own size and time bounds", "[keyed][deadline]") {
    ManualExecutor executor;
    ManualClock clock;
    Recorder recorder;
    StringKeyed batcher(
        manual_options(executor)
            .max_in_flight(KeyedOptions::unlimited_in_flight)
            .max_batch_size(5)
            .max_delay(50ms),
        [&](const std::string& key, Batch<int>& batch) { recorder.record(key, batch); }, clock);
    batcher.set_key_limits("a", KeyLimits{2, 10ms});
    batcher.set_key_limits("b", KeyLimits{3, std::nullopt});  // default delay

    for (int i = 0; i < 5; ++i) {
        batcher.post("a", i);
        batcher.post("b", 10 + i);
        batcher.post("c", 20 + i);
    }
    executor.run_all();
    auto seen = recorder.take();
    // a: two full batches of 2 (one item left), b: one of 3 (two left), c: one of 5.
    std::map<std::string, std::vector<std::vector<int>>> by_key;
    for (const auto& batch : seen) {
        CHECK(batch.reason == DispatchReason::full);
        by_key[batch.key].push_back(batch.items);
    }
    CHECK(by_key["a"] == std::vector<std::vector<int>>{{0, 1}, {2, 3}});
    CHECK(by_key["b"] == std::vector<std::vector<int>>{{10, 11, 12}});
    CHECK(by_key["c"] == std::vector<std::vector<int>>{{20, 21, 22, 23, 24}});

    clock.advance(9ms);  // a's partial batch opened at 0 with a 10 ms bound: not yet
    executor.run_all();
    CHECK(recorder.take().empty());
    clock.advance(1ms);
    executor.run_all();
    seen = recorder.take();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].key == "a");
    CHECK(seen[0].items == std::vector<int>{4});
    CHECK(seen[0].reason == DispatchReason::deadline);
    CHECK(seen[0].sequence == 4);  // sealed after a's two, b's and c's full batches

    clock.advance(39ms);
    executor.run_all();
    CHECK(recorder.take().empty());
    clock.advance(1ms);  // 50 ms: b's default bound
    executor.run_all();
    seen = recorder.take();
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].key == "b");
    CHECK(seen[0].items == std::vector<int>{13, 14});

    const auto a = batcher.key_stats("a");
    REQUIRE(a);
    CHECK(a->max_batch_size == 2);
    CHECK(a->max_delay == 10ms);
    CHECK(batcher.key_stats("c")->max_delay == 50ms);
    executor.run_inline();
}

TEST_CASE("KeyedBatcher: a due batch keeps growing while every worker is busy",
          "[keyed][deadline]") {
    ManualExecutor executor;
    ManualClock clock;
    Recorder recorder;
    StringKeyed batcher(
        manual_options(executor).max_batch_size(10).max_delay(0ns),
        [&](const std::string& key, Batch<int>& batch) { recorder.record(key, batch); }, clock);
    batcher.post("x", 1);  // due at once, the worker is free: dispatched alone
    CHECK(batcher.in_flight() == 1);
    batcher.post("y", 2);  // due, but the only worker slot is taken: y grows
    batcher.post("y", 3);
    batcher.post("y", 4);
    executor.run_all();
    const auto seen = recorder.take();
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].items == std::vector<int>{1});
    CHECK(seen[0].reason == DispatchReason::deadline);
    CHECK(seen[1].key == "y");
    CHECK(seen[1].items == std::vector<int>{2, 3, 4});
    CHECK(seen[1].reason == DispatchReason::worker_free);
    executor.run_inline();
}

// ---- Fairness ----------------------------------------------------------------------------------

TEST_CASE("KeyedBatcher hands batches out round-robin between keys when workers are scarce",
          "[keyed][fairness]") {
    ManualExecutor executor;
    ManualClock clock;
    Recorder recorder;
    StringKeyed batcher(
        manual_options(executor).max_batch_size(2).max_delay(std::chrono::nanoseconds::max()),
        [&](const std::string& key, Batch<int>& batch) { recorder.record(key, batch); }, clock);
    // A's first batch takes the only worker slot; then A queues 3 more, B 2, C 1.
    for (int i = 0; i < 8; ++i) {
        batcher.post("A", i);
    }
    for (int i = 0; i < 4; ++i) {
        batcher.post("B", 100 + i);
    }
    batcher.post("C", 200);
    batcher.post("C", 201);
    CHECK(batcher.in_flight() == 1);
    CHECK(batcher.stats().queued_batches == 6);
    executor.run_all();
    std::vector<std::string> order;
    std::map<std::string, int> count;
    std::uint64_t last_sequence = 0;
    for (const auto& batch : recorder.take()) {
        order.push_back(batch.key + std::to_string(count[batch.key]++));
        if (batch.key == "A") {
            CHECK(batch.sequence >= last_sequence);  // a key's batches run in seal order
            last_sequence = batch.sequence;
        }
    }
    CHECK(order == std::vector<std::string>{"A0", "A1", "B0", "C0", "A2", "B1", "A3"});
    executor.run_inline();
}

// ---- Keys: cap and reclamation ----------------------------------------------------------------

TEST_CASE("KeyedBatcher caps live keys and reclaims idle ones after key_idle_timeout",
          "[keyed][keys]") {
    ManualClock clock;
    KeyedBatcher<std::string, std::string, void, ManualClock> batcher(
        KeyedOptions{}.max_keys(2).key_idle_timeout(100ms).max_batch_size(1).workers(1),
        [](Batch<std::string>&) {}, clock);
    batcher.post("a", std::string("one"));
    batcher.post("b", std::string("two"));
    CHECK(batcher.live_keys() == 2);

    std::string item = "three";
    CHECK_THROWS_AS(batcher.post("c", std::move(item)), KeyLimitError);
    CHECK(item == "three");  // rejected: left untouched
    CHECK_THROWS_AS(batcher.try_submit("c", std::move(item)), KeyLimitError);
    try {
        batcher.post("c", std::move(item));
    } catch (const KeyLimitError& error) {
        CHECK(std::string(error.what()).find("max_keys 2") != std::string::npos);
    }
    CHECK(item == "three");
    batcher.post("a", std::string("again"));  // a live key is always accepted

    batcher.wait_idle();  // both keys are idle from here on (at time 0)
    clock.advance(99ms);
    CHECK(batcher.live_keys() == 2);
    CHECK_THROWS_AS(batcher.post("c", std::move(item)), KeyLimitError);
    clock.advance(1ms);  // the timer reclaims both
    CHECK(batcher.live_keys() == 0);
    CHECK_FALSE(batcher.key_stats("a"));
    batcher.post("c", std::move(item));
    batcher.close();
    const auto stats = batcher.stats();
    CHECK(stats.keys_reclaimed == 2);
    CHECK(stats.keys_created == 3);
    CHECK(stats.items_rejected_key_limit == 4);
    CHECK(stats.items_processed == 4);
}

TEST_CASE("KeyedBatcher reclaims an idle key at the cap without waiting for the timer",
          "[keyed][keys]") {
    ManualExecutor executor;
    ManualClock clock;
    StringKeyed batcher(
        manual_options(executor).max_keys(1).key_idle_timeout(0ns), [](Batch<int>&) {}, clock);
    for (int round = 0; round < 20; ++round) {
        const std::string key = "k" + std::to_string(round);
        batcher.post(key, round);
        batcher.flush();
        executor.run_all();  // the key is idle now and reclaimable at once
    }
    executor.run_inline();
    batcher.close();
    CHECK(batcher.stats().keys_created == 20);
    CHECK(batcher.stats().items_processed == 20);
}

// ---- Outcomes
// ------------------------------------------------------------------------------------

TEST_CASE("KeyedBatcher delivers results and errors to exactly the items of their batch",
          "[keyed][errors]") {
    ManualExecutor executor;
    ManualClock clock;
    KeyedBatcher<std::string, int, int, ManualClock> batcher(
        manual_options(executor).max_in_flight(2).max_batch_size(3),
        [](const std::string& key, Batch<int>& batch) {
            if (key == "poison") {
                throw std::runtime_error("bad batch");
            }
            std::vector<int> out;
            for (int item : batch) {
                out.push_back(item + 1);
            }
            if (key == "short") {
                out.pop_back();
            }
            return out;
        },
        clock);
    std::vector<Handle<int>> good;
    std::vector<Handle<int>> poison;
    std::vector<Handle<int>> short_results;
    std::atomic<int> callback_errors{0};
    std::atomic<int> callback_values{0};
    for (int i = 0; i < 6; ++i) {
        good.push_back(batcher.submit("good", i));
        poison.push_back(batcher.submit("poison", i));
        short_results.push_back(batcher.submit("short", i));
        batcher.submit("poison", i, [&](Outcome<int>&& outcome) {
            callback_errors += outcome.has_value() ? 0 : 1;
        });
        batcher.submit("good", i, [&](Outcome<int>&& outcome) {
            callback_values += outcome.has_value() ? outcome.value() : -1000;
            throw std::runtime_error("callback throws: counted, ignored");
        });
    }
    executor.run_inline();
    batcher.close();
    for (int i = 0; i < 6; ++i) {
        CHECK(good[static_cast<std::size_t>(i)].get() == i + 1);
        CHECK_THROWS_WITH(poison[static_cast<std::size_t>(i)].get(), "bad batch");
        CHECK_THROWS_AS(short_results[static_cast<std::size_t>(i)].get(),
                        microbatch::ResultCountError);
    }
    CHECK(callback_errors == 6);
    CHECK(callback_values == 21);
    const auto stats = batcher.stats();
    CHECK(stats.items_accepted == 30);
    CHECK(stats.items_processed == 12);
    CHECK(stats.items_failed == 18);
    CHECK(stats.callback_exceptions == 6);
    CHECK(batcher.key_stats("poison")->batches_failed == 4);
    CHECK(batcher.key_stats("good")->items_failed == 0);
}

TEST_CASE(
    "KeyedBatcher carries move-only items and rejects keyless submits without a key "
    "function",
    "[keyed][api]") {
    std::atomic<int> sum{0};
    KeyedBatcher<int, std::unique_ptr<int>> batcher(KeyedOptions{}.max_batch_size(4).workers(1),
                                                    [&](Batch<std::unique_ptr<int>>& batch) {
                                                        for (auto& item : batch) {
                                                            sum += *item;
                                                        }
                                                    });
    batcher.submit(1, std::make_unique<int>(5)).get();
    auto item = std::make_unique<int>(7);
    CHECK_THROWS_AS(batcher.post(std::move(item)), microbatch::Error);
    REQUIRE(item);  // untouched
    const auto result = batcher.try_submit_handle(2, std::move(item));
    REQUIRE(result.accepted());
    batcher.close();
    CHECK(sum == 12);
    CHECK_THROWS_AS(batcher.post(3, std::make_unique<int>(1)), microbatch::ClosedError);
    CHECK(batcher.try_submit(3, std::make_unique<int>(1)) == SubmitStatus::closed);
}

// ---- Backpressure and shutdown
// --------------------------------------------------------------------

TEST_CASE("KeyedBatcher bounds pending items over all keys", "[keyed][backpressure]") {
    ManualExecutor executor;
    ManualClock clock;
    StringKeyed batcher(
        manual_options(executor).max_batch_size(2).capacity(4), [](Batch<int>&) {}, clock);
    CHECK(batcher.try_submit("a", 1) == SubmitStatus::accepted);
    CHECK(batcher.try_submit("b", 2) == SubmitStatus::accepted);
    CHECK(batcher.try_submit("c", 3) == SubmitStatus::accepted);
    CHECK(batcher.try_submit("a", 4) == SubmitStatus::accepted);
    CHECK(batcher.pending() == 4);
    CHECK(batcher.try_submit("d", 5) == SubmitStatus::full);
    CHECK(batcher.submit_for("a", 5, 1ms) == SubmitStatus::full);
    CHECK_FALSE(batcher.submit_for_handle("a", 5, 0ms).accepted());
    CHECK(batcher.stats().items_rejected_full == 3);
    executor.run_all();  // a's full batch runs: two items free up
    CHECK(batcher.pending() == 2);
    CHECK(batcher.try_submit("d", 5) == SubmitStatus::accepted);
    executor.run_inline();
}

TEST_CASE("KeyedBatcher close processes every accepted item and wakes blocked producers",
          "[keyed][close]") {
    ManualExecutor executor;
    ManualClock clock;
    Recorder recorder;
    StringKeyed batcher(
        manual_options(executor).max_batch_size(2).capacity(3).max_delay(1h),
        [&](const std::string& key, Batch<int>& batch) { recorder.record(key, batch); }, clock);
    batcher.post("a", 1);
    batcher.post("a", 2);  // full: dispatched, waits in the executor
    batcher.post("b", 3);  // at capacity; b's partial batch stays open (a batch is in flight)
    std::atomic<int> producer_result{0};  // 1: ClosedError
    std::thread producer([&] {
        try {
            batcher.post("c", 4);  // blocks until close
            producer_result = 2;
        } catch (const microbatch::ClosedError&) {
            producer_result = 1;
        }
    });
    std::atomic<bool> closed{false};
    std::thread closer([&] {
        batcher.close();
        closed = true;
    });
    while (!batcher.is_closed()) {  // run nothing before close began: c must not get room
        std::this_thread::yield();
    }
    while (!closed) {  // close waits for the batches; this thread runs them
        executor.run_all();
        std::this_thread::yield();
    }
    closer.join();
    producer.join();
    CHECK(producer_result == 1);
    const auto seen = recorder.take();
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].key == "a");
    CHECK(seen[0].reason == DispatchReason::full);
    CHECK(seen[1].key == "b");
    CHECK(seen[1].items == std::vector<int>{3});
    CHECK(seen[1].reason == DispatchReason::close);
    CHECK(batcher.is_closed());
    batcher.close();  // idempotent
    CHECK(batcher.stats().items_rejected_closed == 1);
    CHECK(batcher.stats().batches_close == 1);
    CHECK_THROWS_AS(batcher.submit("a", 5), microbatch::ClosedError);
    executor.run_inline();
}

TEST_CASE("KeyedBatcher seals partial batches when they hold the whole capacity",
          "[keyed][backpressure]") {
    // Three keys' partial batches fill the capacity, nothing runs and there is no time bound:
    // without the rule, a blocking submit would wait forever.
    ManualExecutor executor;
    ManualClock clock;
    Recorder recorder;
    StringKeyed batcher(
        manual_options(executor).max_in_flight(3).max_batch_size(4).capacity(4).max_delay(
            std::chrono::nanoseconds::max()),
        [&](const std::string& key, Batch<int>& batch) { recorder.record(key, batch); }, clock);
    batcher.post("a", 1);
    batcher.post("a", 2);
    batcher.post("b", 3);
    batcher.post("c", 4);
    CHECK(batcher.in_flight() == 0);
    CHECK(batcher.try_submit("d", 5) == SubmitStatus::full);  // sealed a, b, c
    CHECK(batcher.in_flight() == 3);
    executor.run_all();
    const auto seen = recorder.take();
    REQUIRE(seen.size() == 3);
    for (const auto& batch : seen) {
        CHECK(batch.reason == DispatchReason::full);
    }
    CHECK(batcher.try_submit("d", 5) == SubmitStatus::accepted);
    executor.run_inline();
}

TEST_CASE("KeyedBatcher wait_idle waits for every earlier item; close inside a batch throws",
          "[keyed][close]") {
    std::atomic<int> reentrant{0};
    std::atomic<int> done{0};
    KeyedBatcher<int, int>* self = nullptr;
    KeyedBatcher<int, int> batcher(KeyedOptions{}.max_batch_size(16).max_delay(1h).workers(2),
                                   [&](const int& key, Batch<int>& batch) {
                                       if (key == 0) {
                                           try {
                                               self->close();
                                           } catch (const microbatch::ReentrancyError&) {
                                               ++reentrant;
                                           }
                                       }
                                       done += static_cast<int>(batch.size());
                                   });
    self = &batcher;
    for (int i = 0; i < 100; ++i) {
        batcher.post(i % 3, i);
    }
    batcher.wait_idle();  // flushes the partial batches (1 h bound) and waits for them
    CHECK(done == 100);
    CHECK(reentrant >= 1);
    CHECK_FALSE(batcher.is_closed());
    CHECK(batcher.stats().batches_flush == 3);
}

// ---- Bad input and threads
// ------------------------------------------------------------------------

TEST_CASE("KeyedOptions and set_key_limits reject bad values naming option and value",
          "[keyed][options]") {
    const auto fails_with = [](KeyedOptions options, const std::string& text) {
        try {
            KeyedBatcher<int, int> batcher(std::move(options), [](Batch<int>&) {});
            FAIL("no exception");
        } catch (const std::invalid_argument& error) {
            CHECK_THAT(std::string(error.what()), Catch::Matchers::Contains(text));
        }
    };
    fails_with(KeyedOptions{}.max_batch_size(0), "max_batch_size must be in [1, 4194304] (got 0)");
    fails_with(KeyedOptions{}.max_keys(0), "max_keys must be >= 1 (got 0)");
    fails_with(KeyedOptions{}.max_delay(-1ms), "max_delay must not be negative (got -1000000ns)");
    fails_with(KeyedOptions{}.key_idle_timeout(-1ns), "key_idle_timeout must not be negative");
    fails_with(KeyedOptions{}.max_batch_size(8).capacity(4), "capacity must be 0 (automatic) or");
    fails_with(KeyedOptions{}.workers(0), "workers must be >= 1 when no executor is set (got 0)");

    KeyedBatcher<int, int> batcher(KeyedOptions{}.capacity(100), [](Batch<int>&) {});
    CHECK_THROWS_WITH(batcher.set_key_limits(1, KeyLimits{0, std::nullopt}),
                      Catch::Matchers::Contains("max_batch_size must be in [1"));
    CHECK_THROWS_WITH(
        batcher.set_key_limits(1, KeyLimits{101, std::nullopt}),
        Catch::Matchers::Contains("max_batch_size must be <= capacity 100 (got 101)"));
    CHECK_THROWS_WITH(batcher.set_key_limits(1, KeyLimits{std::nullopt, -5ns}),
                      Catch::Matchers::Contains("max_delay must not be negative (got -5ns)"));
}

#if defined(__linux__)
namespace {
std::size_t thread_count() {
    std::size_t count = 0;
    if (DIR* directory = opendir("/proc/self/task")) {
        while (const dirent* entry = readdir(directory)) {
            count += entry->d_name[0] != '.' ? 1 : 0;
        }
        closedir(directory);
    }
    return count;
}
}  // namespace

TEST_CASE("KeyedBatcher with 100 keys uses one timer thread and its pool", "[keyed][threads]") {
    // A sanitizer runtime may start a helper thread with the process's first extra thread:
    // start one first. Threads joined earlier may still be leaving /proc: let the count settle.
    std::thread([] {}).join();
    std::size_t before = thread_count();
    for (int i = 0; i < 500; ++i) {
        std::this_thread::sleep_for(2ms);
        const std::size_t now = thread_count();
        if (now == before) {
            break;
        }
        before = now;
    }
    {
        KeyedBatcher<int, int> batcher(KeyedOptions{}.max_batch_size(4).workers(2),
                                       [](Batch<int>&) {});
        for (int i = 0; i < 1000; ++i) {
            batcher.post(i % 100, i);
        }
        CHECK(batcher.live_keys() == 100);
        CHECK(thread_count() - before == 3);  // 2 workers + 1 timer
    }
    // Joined threads may linger in /proc for a moment: wait for them to go (not a timing check).
    for (int i = 0; i < 2000 && thread_count() != before; ++i) {
        std::this_thread::sleep_for(1ms);
    }
    CHECK(thread_count() == before);
}
#endif

// ---- Item costs (issue 12 item 1: max_batch_cost, max_pending_cost) ---------------------------

namespace {

// Every int item costs its value.
std::size_t int_cost(const int& item) {
    return static_cast<std::size_t>(item);
}

using CostKeyed = KeyedBatcher<std::string, int, void, ManualClock>;

std::vector<std::vector<int>> items_of(const std::vector<Seen>& seen, const std::string& key) {
    std::vector<std::vector<int>> out;
    for (const auto& batch : seen) {
        if (batch.key == key) {
            out.push_back(batch.items);
        }
    }
    return out;
}

}  // namespace

TEST_CASE("Cost policy: seal first, full, oversized and pending fit", "[keyed][policy][cost]") {
    using detail::cost_full;
    using detail::cost_oversized;
    using detail::cost_seals_first;
    using detail::pending_cost_fits;
    CHECK_FALSE(cost_seals_first(0, 0, 50, 10));   // an empty batch takes anything
    CHECK_FALSE(cost_seals_first(2, 6, 4, 10));    // reaches the bound exactly: joins
    CHECK(cost_seals_first(2, 6, 5, 10));          // would go above: seal first
    CHECK(cost_seals_first(1, 1, 11, 10));         // oversized after others: seal first
    CHECK_FALSE(cost_seals_first(3, 6, 1000, 0));  // no bound
    CHECK(cost_seals_first(1, 1, static_cast<std::size_t>(-1), 10));  // no overflow
    CHECK(cost_full(10, 10));
    CHECK(cost_full(11, 10));
    CHECK_FALSE(cost_full(9, 10));
    CHECK_FALSE(cost_full(0, 10));
    CHECK_FALSE(cost_full(100, 0));
    CHECK(cost_oversized(11, 10));
    CHECK_FALSE(cost_oversized(10, 10));
    CHECK_FALSE(cost_oversized(11, 0));
    CHECK(pending_cost_fits(6, 4, 10));
    CHECK_FALSE(pending_cost_fits(6, 5, 10));
    CHECK(pending_cost_fits(1000, 1000, 0));
    CHECK_FALSE(pending_cost_fits(1, static_cast<std::size_t>(-1), 10));  // no overflow
}

TEST_CASE("KeyedBatcher seals a key's batch at its cost bound and before an item above it",
          "[keyed][cost]") {
    ManualExecutor executor;
    ManualClock clock;
    Recorder recorder;
    CostKeyed batcher(
        manual_options(executor)
            .max_in_flight(KeyedOptions::unlimited_in_flight)
            .max_batch_size(100)
            .max_delay(std::chrono::nanoseconds::max())
            .max_batch_cost(10),
        microbatch::cost_by(int_cost),
        [&](const std::string& key, Batch<int>& batch) { recorder.record(key, batch); }, clock);
    for (int item : {3, 3, 4}) {  // 10: full at exactly the bound
        batcher.post("a", item);
    }
    CHECK(batcher.pending_cost() == 10);
    for (int item : {5, 4, 2}) {  // 9, then 2 would make 11: {5, 4} is sealed first
        batcher.post("a", item);
    }
    batcher.post("a", 25);  // oversized: {2} sealed first, then {25} alone, sealed at once
    batcher.post("a", 1);
    for (int i = 0; i < 5; ++i) {
        batcher.post("z", 0);  // zero cost never fills a batch by cost
    }
    CHECK(batcher.pending_cost() == 47);
    CHECK(batcher.stats().pending_cost == 47);
    executor.run_all();
    auto seen = recorder.take();
    CHECK(items_of(seen, "a") == std::vector<std::vector<int>>{{3, 3, 4}, {5, 4}, {2}, {25}});
    for (const auto& batch : seen) {
        CHECK(batch.reason == DispatchReason::full);
    }
    CHECK(items_of(seen, "z").empty());
    CHECK(batcher.pending_cost() == 1);
    batcher.flush();
    executor.run_all();
    seen = recorder.take();
    CHECK(items_of(seen, "a") == std::vector<std::vector<int>>{{1}});
    CHECK(items_of(seen, "z") == std::vector<std::vector<int>>{{0, 0, 0, 0, 0}});
    CHECK(batcher.pending_cost() == 0);

    const auto stats = batcher.stats();
    CHECK(stats.items_oversized == 1);
    CHECK(stats.item_cost_total == 47);
    CHECK(stats.batch_item_cost_max == 25);
    CHECK(stats.batches_full == 4);
    CHECK(stats.batches_flush == 2);
    CHECK(stats.pending_cost == 0);
    const auto a = batcher.key_stats("a");
    REQUIRE(a);
    CHECK(a->items_oversized == 1);
    CHECK(a->item_cost_total == 47);
    CHECK(a->batch_item_cost_max == 25);
    CHECK(a->max_batch_cost == 10);
    CHECK(a->pending_cost == 0);
    const auto z = batcher.key_stats("z");
    REQUIRE(z);
    CHECK(z->item_cost_total == 0);
    CHECK(z->items_oversized == 0);
    executor.run_inline();
}

TEST_CASE("KeyedBatcher: an oversized item runs alone between its neighbours' batches",
          "[keyed][cost]") {
    ManualExecutor executor;
    ManualClock clock;
    Recorder recorder;
    CostKeyed batcher(
        manual_options(executor)
            .max_in_flight(KeyedOptions::unlimited_in_flight)
            .max_batch_size(3)
            .max_delay(std::chrono::nanoseconds::max())
            .max_batch_cost(8),
        microbatch::cost_by(int_cost),
        [&](const std::string& key, Batch<int>& batch) { recorder.record(key, batch); }, clock);
    batcher.post("k", 1);
    batcher.post("k", 2);
    batcher.post("k", 9);  // oversized
    batcher.post("k", 1);
    batcher.post("k", 1);
    batcher.post("k", 1);  // three items: full by count (cost 3)
    batcher.post("k", 8);  // exactly the bound: full by cost at once, not oversized
    executor.run_all();
    const auto seen = recorder.take();
    CHECK(items_of(seen, "k") == std::vector<std::vector<int>>{{1, 2}, {9}, {1, 1, 1}, {8}});
    CHECK(batcher.stats().items_oversized == 1);
    CHECK(batcher.stats().batch_item_cost_max == 9);
    executor.run_inline();
}

TEST_CASE("KeyedBatcher applies each key's own cost bound (set_key_limits)", "[keyed][cost]") {
    ManualExecutor executor;
    ManualClock clock;
    Recorder recorder;
    CostKeyed batcher(
        manual_options(executor)
            .max_in_flight(KeyedOptions::unlimited_in_flight)
            .max_batch_size(100)
            .max_delay(std::chrono::nanoseconds::max())
            .max_batch_cost(10),
        microbatch::cost_by(int_cost),
        [&](const std::string& key, Batch<int>& batch) { recorder.record(key, batch); }, clock);
    KeyLimits small;
    small.max_batch_cost = 4;
    batcher.set_key_limits("small", small);
    KeyLimits unbounded;
    unbounded.max_batch_cost = 0;  // no cost bound for this key
    batcher.set_key_limits("free", unbounded);
    KeyLimits by_count{2, std::nullopt};  // keeps the default cost bound
    batcher.set_key_limits("count", by_count);
    for (const char* key : {"small", "default", "free", "count"}) {
        for (int item : {2, 2, 3, 3, 5}) {
            batcher.post(key, item);
        }
    }
    batcher.flush();
    executor.run_all();
    const auto seen = recorder.take();
    CHECK(items_of(seen, "small") ==
          std::vector<std::vector<int>>{{2, 2}, {3}, {3}, {5}});  // 5 > 4: oversized
    CHECK(items_of(seen, "default") == std::vector<std::vector<int>>{{2, 2, 3, 3}, {5}});
    CHECK(items_of(seen, "free") == std::vector<std::vector<int>>{{2, 2, 3, 3, 5}});
    CHECK(items_of(seen, "count") == std::vector<std::vector<int>>{{2, 2}, {3, 3}, {5}});
    CHECK(batcher.key_stats("small")->max_batch_cost == 4);
    CHECK(batcher.key_stats("small")->items_oversized == 1);
    CHECK(batcher.key_stats("free")->max_batch_cost == 0);
    CHECK(batcher.key_stats("count")->max_batch_cost == 10);
    CHECK(batcher.key_stats("default")->batch_item_cost_max == 10);
    batcher.clear_key_limits("small");
    CHECK(batcher.key_stats("small")->max_batch_cost == 10);
    CHECK(batcher.stats().items_oversized == 1);
    executor.run_inline();
}

TEST_CASE("KeyedBatcher bounds the pending cost: try reports full, timed waits then full",
          "[keyed][cost][backpressure]") {
    ManualExecutor executor;
    ManualClock clock;
    CostKeyed batcher(
        manual_options(executor).max_batch_size(1).max_pending_cost(10),
        microbatch::cost_by(int_cost), [](Batch<int>&) {}, clock);
    CHECK(batcher.try_submit("a", 6) == SubmitStatus::accepted);  // runs (in flight)
    CHECK(batcher.try_submit("b", 4) == SubmitStatus::accepted);  // queued: pending cost 10
    CHECK(batcher.pending_cost() == 10);
    CHECK(batcher.try_submit("c", 1) == SubmitStatus::full);
    CHECK(batcher.try_submit_handle("c", 1).status == SubmitStatus::full);
    CHECK(batcher.submit_for("c", 1, 1ms) == SubmitStatus::full);
    CHECK(batcher.submit_for_handle("c", 1, 0ms).status == SubmitStatus::full);
    CHECK(batcher.try_submit("c", 0) == SubmitStatus::accepted);  // costs nothing: fits
    CHECK(batcher.stats().items_rejected_full == 4);
    executor.run_all();
    CHECK(batcher.pending_cost() == 0);
    CHECK(batcher.try_submit("c", 10) == SubmitStatus::accepted);
    CHECK(batcher.submit_for("c", 1, 1ms) == SubmitStatus::full);
    executor.run_all();
    CHECK(batcher.submit_for("c", 1, 1h) == SubmitStatus::accepted);  // room: no wait
    executor.run_inline();
    batcher.close();
    CHECK(batcher.stats().pending_cost == 0);
    CHECK(batcher.stats().item_cost_total == 21);
}

TEST_CASE("KeyedBatcher seals partial batches when they hold the whole pending cost",
          "[keyed][cost][backpressure]") {
    ManualExecutor executor;
    ManualClock clock;
    Recorder recorder;
    CostKeyed batcher(
        manual_options(executor)
            .max_in_flight(2)
            .max_batch_size(10)
            .max_delay(std::chrono::nanoseconds::max())
            .max_pending_cost(10),
        microbatch::cost_by(int_cost),
        [&](const std::string& key, Batch<int>& batch) { recorder.record(key, batch); }, clock);
    batcher.post("a", 4);
    batcher.post("b", 4);
    CHECK(batcher.in_flight() == 0);
    CHECK(batcher.try_submit("c", 4) == SubmitStatus::full);  // sealed a and b
    CHECK(batcher.in_flight() == 2);
    executor.run_all();
    const auto seen = recorder.take();
    REQUIRE(seen.size() == 2);
    for (const auto& batch : seen) {
        CHECK(batch.reason == DispatchReason::full);
    }
    CHECK(batcher.try_submit("c", 4) == SubmitStatus::accepted);
    executor.run_inline();
}

TEST_CASE("KeyedBatcher: a blocked heavy item is admitted before later lighter ones",
          "[keyed][cost][backpressure]") {
    ManualExecutor executor;
    ManualClock clock;
    Recorder recorder;
    CostKeyed batcher(
        manual_options(executor).max_batch_size(1).max_pending_cost(10),
        microbatch::cost_by(int_cost),
        [&](const std::string& key, Batch<int>& batch) { recorder.record(key, batch); }, clock);
    batcher.post("a", 6);  // in flight until the executor runs it
    std::atomic<bool> heavy_done{false};
    std::thread heavy([&] {
        batcher.post("h", 8);  // 6 + 8 > 10: waits
        heavy_done = true;
    });
    // A zero-cost item always fits, so it is refused only while a waiter is queued ahead of
    // it: once refused, the heavy producer is waiting.
    while (batcher.try_submit("probe", 0) == SubmitStatus::accepted) {
        std::this_thread::yield();
    }
    CHECK_FALSE(heavy_done);
    CHECK(batcher.try_submit("light", 1) == SubmitStatus::full);  // fits, but not its turn
    CHECK(batcher.submit_for("light", 1, 1ms) == SubmitStatus::full);
    CHECK_FALSE(heavy_done);
    while (!heavy_done) {  // a's batch finishes: the heavy item enters first
        executor.run_all();
        std::this_thread::yield();
    }
    heavy.join();
    CHECK(batcher.try_submit("light", 1) == SubmitStatus::accepted);
    executor.run_inline();
    batcher.close();
    std::vector<std::string> order;
    for (const auto& batch : recorder.take()) {
        if (batch.key != "probe") {
            order.push_back(batch.key);
        }
    }
    CHECK(order == std::vector<std::string>{"a", "h", "light"});
}

TEST_CASE("KeyedBatcher: close wakes producers waiting for pending cost", "[keyed][cost][close]") {
    ManualExecutor executor;
    ManualClock clock;
    CostKeyed batcher(
        manual_options(executor).max_batch_size(1).max_pending_cost(5),
        microbatch::cost_by(int_cost), [](Batch<int>&) {}, clock);
    batcher.post("a", 5);
    std::atomic<int> result{0};  // 1: ClosedError
    std::thread producer([&] {
        try {
            batcher.post("b", 1);
            result = 2;
        } catch (const microbatch::ClosedError&) {
            result = 1;
        }
    });
    while (batcher.try_submit("probe", 0) == SubmitStatus::accepted) {  // until b waits
        std::this_thread::yield();
    }
    std::atomic<bool> closed{false};
    std::thread closer([&] {
        batcher.close();
        closed = true;
    });
    while (!batcher.is_closed()) {
        std::this_thread::yield();
    }
    while (!closed) {
        executor.run_all();
        std::this_thread::yield();
    }
    closer.join();
    producer.join();
    CHECK(result == 1);
    CHECK(batcher.pending_cost() == 0);
    executor.run_inline();
}

TEST_CASE("KeyedBatcher throws CostLimitError for an item above max_pending_cost, untouched",
          "[keyed][cost][errors]") {
    KeyedBatcher<int, std::string> batcher(
        KeyedOptions{}.max_pending_cost(8).workers(1),
        microbatch::cost_by([](const std::string& text) { return text.size(); }),
        [](Batch<std::string>&) {});
    std::string item = "nine char";
    try {
        (void)batcher.try_submit(1, std::move(item));
        FAIL("no exception");
    } catch (const microbatch::CostLimitError& error) {
        CHECK(std::string(error.what()) ==
              "microbatch::KeyedBatcher: item cost 9 exceeds max_pending_cost 8");
    }
    CHECK(item == "nine char");
    CHECK_THROWS_AS(batcher.post(1, std::move(item)), microbatch::CostLimitError);
    CHECK_THROWS_AS(batcher.submit(1, std::move(item)), microbatch::CostLimitError);
    CHECK_THROWS_AS(batcher.try_submit_handle(1, std::move(item)), microbatch::CostLimitError);
    CHECK_THROWS_AS(batcher.submit_for(1, std::move(item), 1ms), microbatch::CostLimitError);
    CHECK_THROWS_AS(batcher.submit(1, std::move(item), [](Outcome<void>&&) {}),
                    microbatch::CostLimitError);
    CHECK(item == "nine char");
    CHECK_THROWS_AS(batcher.post(1, "also nine"), microbatch::CostLimitError);  // converted
    batcher.submit(1, std::string("eight ch")).get();                           // at the bound
    batcher.close();
    CHECK(batcher.stats().items_accepted == 1);
    CHECK(batcher.stats().item_cost_total == 8);
}

TEST_CASE("KeyedBatcher cost function: runs once per item, on converted items, may throw",
          "[keyed][cost][api]") {
    std::atomic<int> calls{0};
    KeyedBatcher<std::string, std::string> batcher(
        KeyedOptions{}.max_batch_size(100).max_batch_cost(6).max_delay(1h).workers(1),
        [](const std::string& text) { return text.substr(0, 1); },  // key function
        microbatch::cost_by([&calls](const std::string& text) -> std::size_t {
            ++calls;
            if (text == "xbad") {
                throw std::runtime_error("cannot weigh");
            }
            return text.size();
        }),
        [](const std::string&, Batch<std::string>&) {});
    batcher.post(std::string("abc"));
    batcher.post("ab");  // a const char*: weighed as a std::string
    CHECK(batcher.pending_cost() == 5);
    std::string bad = "xbad";
    CHECK_THROWS_WITH(batcher.post(std::move(bad)), "cannot weigh");
    CHECK(bad == "xbad");
    CHECK_THROWS_WITH(batcher.try_submit("x", "xbad"), "cannot weigh");
    CHECK(calls == 4);
    batcher.post("abcd");  // 5 + 4 > 6: a's {abc, ab} sealed first
    batcher.wait_idle();
    const auto stats = batcher.stats();
    CHECK(stats.items_accepted == 3);
    CHECK(stats.item_cost_total == 9);
    CHECK(stats.batch_item_cost_max == 5);
    CHECK(stats.batches_full == 1);
    CHECK(calls == 5);
}

TEST_CASE("KeyedBatcher rejects cost bounds without a cost function, naming option and value",
          "[keyed][cost][options]") {
    const auto fails_with = [](KeyedOptions options, const std::string& text) {
        try {
            KeyedBatcher<int, int> batcher(std::move(options), [](Batch<int>&) {});
            FAIL("no exception");
        } catch (const std::invalid_argument& error) {
            CHECK(std::string(error.what()) == text);
        }
    };
    fails_with(KeyedOptions{}.max_batch_cost(4096),
               "microbatch::KeyedOptions: max_batch_cost 4096 needs a cost function (pass "
               "microbatch::cost_by(f) to the constructor)");
    fails_with(KeyedOptions{}.max_pending_cost(100),
               "microbatch::KeyedOptions: max_pending_cost 100 needs a cost function (pass "
               "microbatch::cost_by(f) to the constructor)");
    try {
        KeyedBatcher<int, int> keyed(
            KeyedOptions{}.max_pending_cost(7), [](const int& item) { return item; },
            [](Batch<int>&) {});
        FAIL("no exception");
    } catch (const std::invalid_argument& error) {
        CHECK_THAT(std::string(error.what()), Catch::Matchers::Contains("max_pending_cost 7"));
    }

    KeyedBatcher<int, int> batcher(KeyedOptions{}, [](Batch<int>&) {});
    KeyLimits limits;
    limits.max_batch_cost = 64;
    CHECK_THROWS_WITH(batcher.set_key_limits(1, limits),
                      "microbatch::KeyedBatcher::set_key_limits: max_batch_cost 64 needs a cost "
                      "function (pass microbatch::cost_by(f) to the constructor)");
    limits.max_batch_cost = 0;
    batcher.set_key_limits(1, limits);  // no bound: fine
    batcher.post(1, 5);
    batcher.close();
    CHECK(batcher.stats().item_cost_total == 0);  // no cost function: everything costs 0
    CHECK(batcher.stats().pending_cost == 0);
}

namespace {
// An item whose copy may throw (after the cost function weighed it).
struct Fragile {
    int cost = 0;
    bool throws = false;
    Fragile(int c, bool t) : cost(c), throws(t) {}
    Fragile(const Fragile& other) : cost(other.cost), throws(other.throws) {
        if (throws) {
            throw std::runtime_error("copy fails");
        }
    }
    Fragile(Fragile&&) noexcept = default;
    Fragile& operator=(const Fragile&) = default;
    Fragile& operator=(Fragile&&) noexcept = default;
    ~Fragile() = default;
};
}  // namespace

TEST_CASE("KeyedBatcher: a batch sealed for an item whose copy then throws still runs",
          "[keyed][cost][errors]") {
    ManualExecutor executor;
    ManualClock clock;
    std::vector<int> seen;  // the executor runs batches on this thread
    KeyedBatcher<int, Fragile, void, ManualClock> batcher(
        manual_options(executor).max_batch_size(10).max_delay(1h).max_batch_cost(10),
        microbatch::cost_by(
            [](const Fragile& item) { return static_cast<std::size_t>(item.cost); }),
        [&](Batch<Fragile>& batch) {
            for (const Fragile& item : batch) {
                seen.push_back(item.cost);
            }
        },
        clock);
    batcher.post(1, Fragile(8, false));
    clock.advance(1ms);  // returns once the timer sleeps again (nothing due for an hour)
    const Fragile fragile(5, true);
    CHECK_THROWS_WITH(batcher.post(1, fragile), "copy fails");  // {8} was sealed first
    CHECK(batcher.stats().items_accepted == 1);
    CHECK(batcher.stats().batches_full == 1);
    // Nobody submits again: the timer hands the sealed batch out.
    for (int i = 0; i < 10000 && executor.queued() == 0; ++i) {
        std::this_thread::sleep_for(1ms);
    }
    executor.run_all();
    CHECK(seen == std::vector<int>{8});
    CHECK(batcher.pending_cost() == 0);
    executor.run_inline();
}
