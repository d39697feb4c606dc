// Tests of microbatch::Batcher: batching bounds, result delivery, backpressure, errors,
// shutdown and ordering. Deadlines are driven by ManualClock; nothing here measures time.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "catch_shim.hpp"
#include "microbatch/batcher.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using microbatch::Batch;
using microbatch::Batcher;
using microbatch::DispatchReason;
using microbatch::ManualClock;
using microbatch::Options;
using microbatch::Outcome;
using microbatch::SubmitStatus;
using test_support::Gate;

namespace {

// Waits (without a time limit: the CTest timeout bounds it) until @p n batches completed. A due
// batch is held while every worker is busy (issue 10), so a test that expects the time bound to
// seal the next batch first lets the worker finish the previous one in real time.
template <class B>
void wait_until_completed(const B& batcher, std::uint64_t n) {
    while (batcher.stats().batches_completed < n) {
        std::this_thread::yield();
    }
}

// Records every batch a batcher ran: its items and why it was dispatched.
struct BatchLog {
    struct Entry {
        std::vector<int> items;
        DispatchReason reason;
        std::uint64_t sequence;
    };
    std::mutex mutex;
    std::vector<Entry> entries;

    void add(const Batch<int>& batch) {
        std::lock_guard<std::mutex> lock(mutex);
        entries.push_back(
            {std::vector<int>(batch.begin(), batch.end()), batch.reason(), batch.sequence()});
    }
    std::vector<Entry> snapshot() {
        std::lock_guard<std::mutex> lock(mutex);
        return entries;
    }
};

std::vector<int> doubled(const Batch<int>& batch) {
    std::vector<int> out;
    out.reserve(batch.size());
    for (int x : batch) {
        out.push_back(2 * x);
    }
    return out;
}

}  // namespace

TEST_CASE("Batcher returns one result per item through handles", "[batcher]") {
    Batcher<int, int> doubler(Options{}.max_batch_size(3).max_delay(5ms).workers(2), doubled);
    auto handle = doubler.submit(21);
    CHECK(handle.get() == 42);
    CHECK_FALSE(handle.valid());

    std::vector<microbatch::Handle<int>> handles;
    for (int i = 1; i <= 10; ++i) {
        handles.push_back(doubler.submit(i));
    }
    doubler.close();
    for (int i = 1; i <= 10; ++i) {
        CHECK(handles[static_cast<std::size_t>(i - 1)].get() == 2 * i);
    }
}

TEST_CASE("Batcher dispatches a batch as soon as it holds max_batch_size items", "[batcher]") {
    ManualClock clock;  // never advanced: no deadline can fire
    BatchLog log;
    Batcher<int, void, ManualClock> batcher(
        Options{}.max_batch_size(4).max_delay(1s).workers(1),
        [&](Batch<int>& batch) { log.add(batch); }, clock);
    for (int i = 0; i < 8; ++i) {
        batcher.post(i);
    }
    batcher.wait_idle();  // nothing partial: waits for the two full batches only
    auto entries = log.snapshot();
    REQUIRE(entries.size() == 2);
    std::sort(entries.begin(), entries.end(),
              [](const auto& a, const auto& b) { return a.sequence < b.sequence; });
    CHECK(entries[0].items == std::vector<int>{0, 1, 2, 3});
    CHECK(entries[1].items == std::vector<int>{4, 5, 6, 7});
    CHECK(entries[0].reason == DispatchReason::full);
    CHECK(entries[1].reason == DispatchReason::full);
    CHECK(batcher.stats().batches_full == 2);
}

TEST_CASE("Batcher dispatches a partial batch when max_delay expires", "[batcher][deadline]") {
    ManualClock clock;
    BatchLog log;
    Batcher<int, int, ManualClock> batcher(
        Options{}.max_batch_size(3).max_delay(5ms).workers(1),
        [&](Batch<int>& batch) {
            log.add(batch);
            return doubled(batch);
        },
        clock);
    auto first = batcher.submit(1);
    auto second = batcher.submit(2);
    clock.advance(4ms);  // not due yet: the timer re-evaluated at 4 ms and kept waiting
    CHECK(batcher.stats().batches_deadline == 0);
    CHECK_FALSE(first.ready());
    clock.advance(1ms);  // due: when advance returns, the batch has been dispatched
    CHECK(batcher.stats().batches_deadline == 1);
    CHECK(first.get() == 2);
    CHECK(second.get() == 4);
    const auto entries = log.snapshot();
    REQUIRE(entries.size() == 1);
    CHECK(entries[0].items == std::vector<int>{1, 2});
    CHECK(entries[0].reason == DispatchReason::deadline);
}

TEST_CASE("Batcher measures max_delay from the oldest item of the batch", "[batcher][deadline]") {
    ManualClock clock;
    BatchLog log;
    Batcher<int, void, ManualClock> batcher(
        Options{}.max_batch_size(10).max_delay(5ms).workers(1),
        [&](Batch<int>& batch) { log.add(batch); }, clock);
    batcher.post(1);
    clock.advance(3ms);
    batcher.post(2);     // joins the same batch; the deadline stays at 5 ms
    clock.advance(2ms);  // t = 5 ms
    CHECK(batcher.stats().batches_deadline == 1);
    wait_until_completed(batcher, 1);  // the only worker is free again
    batcher.post(3);                   // a new batch, due at 10 ms
    clock.advance(4ms);                // t = 9 ms
    CHECK(batcher.stats().batches_deadline == 1);
    clock.advance(1ms);  // t = 10 ms
    CHECK(batcher.stats().batches_deadline == 2);
    batcher.wait_idle();
    auto entries = log.snapshot();
    std::sort(entries.begin(), entries.end(),
              [](const auto& a, const auto& b) { return a.sequence < b.sequence; });
    REQUIRE(entries.size() == 2);
    CHECK(entries[0].items == std::vector<int>{1, 2});
    CHECK(entries[1].items == std::vector<int>{3});
}

TEST_CASE("Batcher with an unbounded delay dispatches only full, flushed or closed batches",
          "[batcher][deadline]") {
    BatchLog log;
    Batcher<int> batcher(
        Options{}.max_batch_size(4).max_delay(std::chrono::nanoseconds::max()).workers(1),
        [&](Batch<int>& batch) { log.add(batch); });
    batcher.post(1);
    batcher.post(2);
    batcher.flush();
    batcher.post(3);
    batcher.close();
    auto entries = log.snapshot();
    std::sort(entries.begin(), entries.end(),
              [](const auto& a, const auto& b) { return a.sequence < b.sequence; });
    REQUIRE(entries.size() == 2);
    CHECK(entries[0].reason == DispatchReason::flush);
    CHECK(entries[0].items == std::vector<int>{1, 2});
    CHECK(entries[1].reason == DispatchReason::close);
    CHECK(entries[1].items == std::vector<int>{3});
}

TEST_CASE("Batcher flush dispatches the partial batch with reason flush", "[batcher]") {
    ManualClock clock;
    BatchLog log;
    Batcher<int, void, ManualClock> batcher(
        Options{}.max_batch_size(8).max_delay(1h).workers(1),
        [&](Batch<int>& batch) { log.add(batch); }, clock);
    batcher.flush();  // nothing to flush: no empty batch is dispatched
    batcher.post(7);
    batcher.post(8);
    batcher.wait_idle();
    const auto entries = log.snapshot();
    REQUIRE(entries.size() == 1);
    CHECK(entries[0].reason == DispatchReason::flush);
    CHECK(entries[0].items == std::vector<int>{7, 8});
    CHECK(batcher.stats().batches_flush == 1);
}

TEST_CASE("Batcher close dispatches the partial batch and loses nothing", "[batcher][close]") {
    ManualClock clock;
    BatchLog log;
    std::vector<microbatch::Handle<int>> handles;
    {
        Batcher<int, int, ManualClock> batcher(
            Options{}.max_batch_size(4).max_delay(1h).workers(2),
            [&](Batch<int>& batch) {
                log.add(batch);
                return doubled(batch);
            },
            clock);
        for (int i = 0; i < 10; ++i) {
            handles.push_back(batcher.submit(i));
        }
        batcher.close();
        batcher.close();  // idempotent
        CHECK(batcher.is_closed());
        const auto stats = batcher.stats();
        CHECK(stats.batches_full == 2);
        CHECK(stats.batches_close == 1);
        CHECK(stats.items_processed == 10);
    }
    for (int i = 0; i < 10; ++i) {
        CHECK(handles[static_cast<std::size_t>(i)].get() == 2 * i);
    }
    const auto entries = log.snapshot();
    std::size_t total = 0;
    for (const auto& entry : entries) {
        total += entry.items.size();
        if (entry.reason == DispatchReason::close) {
            CHECK(entry.items == std::vector<int>{8, 9});
        }
    }
    CHECK(total == 10);
}

TEST_CASE("Batcher destructor closes and processes pending items", "[batcher][close]") {
    std::atomic<int> processed{0};
    {
        Batcher<int> batcher(
            Options{}.max_batch_size(100).max_delay(1h).workers(1),
            [&](Batch<int>& batch) { processed += static_cast<int>(batch.size()); });
        for (int i = 0; i < 42; ++i) {
            batcher.post(i);
        }
    }
    CHECK(processed == 42);
}

TEST_CASE("Batcher rejects submissions after close with ClosedError", "[batcher][close]") {
    Batcher<int, int> batcher(Options{}.max_batch_size(2).workers(1), doubled);
    batcher.close();
    CHECK_THROWS_AS(batcher.submit(1), microbatch::ClosedError);
    CHECK_THROWS_AS(batcher.post(1), microbatch::ClosedError);
    CHECK_THROWS_AS(batcher.submit(1, [](Outcome<int>&&) {}), microbatch::ClosedError);
    CHECK(batcher.try_submit(1) == SubmitStatus::closed);
    CHECK(batcher.submit_for(1, 1ms) == SubmitStatus::closed);
    microbatch::Handle<int> handle;
    CHECK(batcher.try_submit(1, handle) == SubmitStatus::closed);
    CHECK_FALSE(handle.valid());
    const auto stats = batcher.stats();
    CHECK(stats.items_rejected_closed == 6);
    CHECK(stats.items_accepted == 0);
}

TEST_CASE("Batcher supports a void process_batch", "[batcher]") {
    std::atomic<long> sum{0};
    Batcher<int> batcher(Options{}.max_batch_size(16).workers(2), [&](Batch<int>& batch) {
        for (int x : batch) {
            sum += x;
        }
    });
    auto handle = batcher.submit(5);
    handle.get();  // void: returns once processed
    for (int i = 1; i <= 100; ++i) {
        batcher.post(i);
    }
    batcher.close();
    CHECK(sum == 5 + 5050);
}

TEST_CASE("Batcher passes move-only items and results", "[batcher]") {
    Batcher<std::unique_ptr<int>, std::unique_ptr<int>> batcher(
        Options{}.max_batch_size(4).workers(2), [](Batch<std::unique_ptr<int>>& batch) {
            std::vector<std::unique_ptr<int>> out;
            for (auto& item : batch) {
                *item *= 3;
                out.push_back(std::move(item));  // moving out of the batch is allowed
            }
            return out;
        });
    std::vector<microbatch::Handle<std::unique_ptr<int>>> handles;
    for (int i = 0; i < 10; ++i) {
        handles.push_back(batcher.submit(std::make_unique<int>(i)));
    }
    for (int i = 0; i < 10; ++i) {
        CHECK(*handles[static_cast<std::size_t>(i)].get() == 3 * i);
    }
}

TEST_CASE("Batcher leaves a rejected item untouched", "[batcher][backpressure]") {
    Gate gate;
    Batcher<std::unique_ptr<int>> batcher(Options{}.max_batch_size(1).capacity(1).workers(1),
                                          [&](Batch<std::unique_ptr<int>>&) { gate.wait(); });
    batcher.post(std::make_unique<int>(1));  // fills the only buffer; the worker blocks
    auto item = std::make_unique<int>(2);
    CHECK(batcher.try_submit(std::move(item)) == SubmitStatus::full);
    REQUIRE(item != nullptr);  // not moved from
    CHECK(*item == 2);
    gate.open();
    batcher.close();
    CHECK(batcher.try_submit(std::move(item)) == SubmitStatus::closed);
    CHECK(item != nullptr);
}

TEST_CASE("Batcher delivers results to callbacks", "[batcher]") {
    std::mutex mutex;
    std::map<int, int> results;
    Batcher<int, int> batcher(Options{}.max_batch_size(5).workers(2), doubled);
    for (int i = 0; i < 50; ++i) {
        batcher.submit(i, [&mutex, &results, i](Outcome<int>&& outcome) {
            std::lock_guard<std::mutex> lock(mutex);
            results[i] = outcome.value();
        });
    }
    batcher.close();
    REQUIRE(results.size() == 50);
    for (const auto& [key, value] : results) {
        CHECK(value == 2 * key);
    }
}

TEST_CASE("Batcher copies an lvalue callback and moves an rvalue one", "[batcher]") {
    auto counter = std::make_shared<int>(0);
    auto callback = [counter](Outcome<void>&&) { ++*counter; };
    Batcher<int> batcher(Options{}.max_batch_size(2).workers(1), [](Batch<int>&) {});
    batcher.submit(1, callback);  // copied: `callback` still holds its capture
    CHECK(counter.use_count() >= 2);
    batcher.submit(2, std::move(callback));
    batcher.close();
    CHECK(*counter == 2);
}

TEST_CASE("Batcher try_submit reports full at once and submit_for times out",
          "[batcher][backpressure]") {
    Gate gate;
    std::atomic<int> processed{0};
    Batcher<int> batcher(Options{}.max_batch_size(2).capacity(2).workers(1),
                         [&](Batch<int>& batch) {
                             gate.wait();
                             processed += static_cast<int>(batch.size());
                         });
    batcher.post(1);
    batcher.post(2);  // the only buffer is sealed and held by the blocked worker
    CHECK(batcher.try_submit(3) == SubmitStatus::full);
    std::atomic<bool> rejected_callback_ran{false};
    CHECK(batcher.try_submit(3, [&](Outcome<void>&&) { rejected_callback_ran = true; }) ==
          SubmitStatus::full);
    CHECK(batcher.submit_for(3, 2ms) == SubmitStatus::full);
    CHECK(batcher.stats().items_rejected_full == 3);
    gate.open();
    CHECK(batcher.submit_for(3, 1h) == SubmitStatus::accepted);
    batcher.close();
    CHECK(processed == 3);
    CHECK_FALSE(rejected_callback_ran);
}

TEST_CASE("Batcher blocks a producer while full and resumes it when space frees",
          "[batcher][backpressure]") {
    Gate gate;
    std::atomic<int> processed{0};
    Batcher<int> batcher(Options{}.max_batch_size(1).capacity(1).workers(1),
                         [&](Batch<int>& batch) {
                             gate.wait();
                             processed += batch[0];
                         });
    batcher.post(1);
    auto producer = std::async(std::launch::async, [&] { batcher.post(10); });
    gate.open();
    producer.get();  // returned: its item was accepted after the first batch finished
    batcher.close();
    CHECK(processed == 11);
}

TEST_CASE("Batcher wakes producers blocked on a full batcher with ClosedError when closed",
          "[batcher][backpressure][close]") {
    Gate gate;
    Batcher<int> batcher(Options{}.max_batch_size(1).capacity(1).workers(1),
                         [&](Batch<int>&) { gate.wait(); });
    batcher.post(1);
    std::vector<std::future<void>> producers;
    for (int i = 0; i < 3; ++i) {
        producers.push_back(std::async(std::launch::async, [&] { batcher.post(2); }));
    }
    auto closer = std::async(std::launch::async, [&] { batcher.close(); });
    // Whether each producer was already blocked or arrived after close began, it must fail
    // with ClosedError: the only buffer stays busy until the gate opens.
    for (auto& producer : producers) {
        CHECK_THROWS_AS(producer.get(), microbatch::ClosedError);
    }
    gate.open();
    closer.get();
    const auto stats = batcher.stats();
    CHECK(stats.items_accepted == 1);
    CHECK(stats.items_processed == 1);
    CHECK(stats.items_rejected_closed == 3);
}

TEST_CASE("Batcher delivers a process_batch exception to every item and keeps working",
          "[batcher][errors]") {
    Batcher<int, int> batcher(Options{}.max_batch_size(3).max_delay(1h).workers(1),
                              [](Batch<int>& batch) {
                                  if (batch[0] < 0) {
                                      throw std::runtime_error("negative batch");
                                  }
                                  return doubled(batch);
                              });
    std::vector<microbatch::Handle<int>> bad;
    for (int i = 0; i < 3; ++i) {
        bad.push_back(batcher.submit(-1 - i));
    }
    // Catch2 assertions are not thread-safe: callbacks record, the test thread checks.
    std::atomic<int> callback_errors{0};
    std::atomic<int> callback_value{0};
    auto good = batcher.submit(5);
    batcher.submit(6, [&](Outcome<int>&& outcome) { callback_value = outcome.value(); });
    batcher.flush();
    for (auto& handle : bad) {
        CHECK_THROWS_WITH(handle.get(), "negative batch");
    }
    CHECK(good.get() == 10);
    for (int i = 0; i < 3; ++i) {
        batcher.submit(-1, [&](Outcome<int>&& outcome) {
            try {
                outcome.value();
            } catch (const std::runtime_error&) {
                if (!outcome.has_value() && outcome.error() != nullptr) {
                    ++callback_errors;
                }
            }
        });
    }
    batcher.close();
    CHECK(callback_value == 12);
    CHECK(callback_errors == 3);
    const auto stats = batcher.stats();
    CHECK(stats.batches_failed == 2);
    CHECK(stats.items_failed == 6);
    CHECK(stats.items_processed == 2);
}

TEST_CASE("Batcher reports a result vector of the wrong length on every item",
          "[batcher][errors]") {
    Batcher<int, int> batcher(Options{}.max_batch_size(3).max_delay(1h).workers(1),
                              [](Batch<int>& batch) {
                                  auto out = doubled(batch);
                                  out.pop_back();
                                  return out;
                              });
    std::vector<microbatch::Handle<int>> handles;
    for (int i = 0; i < 3; ++i) {
        handles.push_back(batcher.submit(i));
    }
    for (auto& handle : handles) {
        CHECK_THROWS_AS(handle.get(), microbatch::ResultCountError);
    }
    batcher.close();
    CHECK(batcher.stats().items_failed == 3);
}

TEST_CASE("Batcher counts and survives exceptions thrown by callbacks", "[batcher][errors]") {
    std::atomic<int> processed{0};
    Batcher<int> batcher(Options{}.max_batch_size(2).workers(1),
                         [&](Batch<int>& batch) { processed += static_cast<int>(batch.size()); });
    batcher.submit(1, [](Outcome<void>&&) { throw std::runtime_error("callback"); });
    batcher.submit(2, [](Outcome<void>&&) {});
    batcher.submit(3, [](Outcome<void>&&) {});
    batcher.close();
    CHECK(processed == 3);
    CHECK(batcher.stats().callback_exceptions == 1);
}

namespace {
// Constructing from 13 throws; used to check that a failed construction loses nothing else.
struct Picky {
    int value;
    Picky(int v) : value(v) {  // NOLINT(google-explicit-constructor): converts on submit
        if (v == 13) {
            throw std::invalid_argument("unlucky");
        }
    }
};
}  // namespace

TEST_CASE("Batcher rejects an item whose construction throws and processes the rest",
          "[batcher][errors]") {
    std::mutex mutex;
    std::vector<std::vector<int>> batches;
    Batcher<Picky> batcher(Options{}.max_batch_size(4).max_delay(1h).workers(1),
                           [&](Batch<Picky>& batch) {
                               std::vector<int> values;
                               for (const auto& item : batch) {
                                   values.push_back(item.value);
                               }
                               std::lock_guard<std::mutex> lock(mutex);
                               batches.push_back(values);
                           });
    batcher.post(1);
    batcher.post(2);
    CHECK_THROWS_AS(batcher.post(13), std::invalid_argument);
    batcher.post(3);  // the fourth slot: the batch is full, with a hole where 13 would be
    batcher.post(4);
    batcher.close();
    REQUIRE(batches.size() == 2);
    CHECK(batches[0] == std::vector<int>{1, 2, 3});
    CHECK(batches[1] == std::vector<int>{4});
    const auto stats = batcher.stats();
    CHECK(stats.items_rejected_error == 1);
    CHECK(stats.items_accepted == 4);
    CHECK(stats.items_processed == 4);
}

TEST_CASE("Batcher detects close and wait_idle from inside process_batch",
          "[batcher][reentrancy]") {
    Batcher<int>* self = nullptr;
    std::atomic<int> close_errors{0};
    std::atomic<int> idle_errors{0};
    Batcher<int> batcher(Options{}.max_batch_size(1).workers(1), [&](Batch<int>&) {
        try {
            self->close();
        } catch (const microbatch::ReentrancyError&) {
            ++close_errors;
        }
        try {
            self->wait_idle();
        } catch (const microbatch::ReentrancyError&) {
            ++idle_errors;
        }
        self->flush();  // allowed: never waits
    });
    self = &batcher;
    batcher.post(1);
    batcher.post(2);
    batcher.close();
    CHECK(close_errors == 2);
    CHECK(idle_errors == 2);
}

TEST_CASE("Batcher allows re-entrant submit when there is room and reports it when full",
          "[batcher][reentrancy]") {
    Batcher<int>* self = nullptr;
    std::atomic<int> seen{0};
    std::atomic<int> reentrancy_errors{0};
    std::atomic<int> try_full{0};
    SECTION("room in another buffer: accepted") {
        Batcher<int> batcher(Options{}.max_batch_size(1).capacity(4).workers(1),
                             [&](Batch<int>& batch) {
                                 ++seen;
                                 if (batch[0] == 1) {
                                     self->post(2);
                                 }
                             });
        self = &batcher;
        batcher.post(1);
        batcher.wait_idle();
        batcher.close();
        CHECK(seen == 2);
    }
    SECTION("no room: try_submit says full, blocking submit throws ReentrancyError") {
        Batcher<int> batcher(Options{}.max_batch_size(1).capacity(1).workers(1),
                             [&](Batch<int>& batch) {
                                 ++seen;
                                 if (batch[0] == 1) {
                                     if (self->try_submit(2) == SubmitStatus::full) {
                                         ++try_full;
                                     }
                                     try {
                                         self->post(3);
                                     } catch (const microbatch::ReentrancyError&) {
                                         ++reentrancy_errors;
                                     }
                                 }
                             });
        self = &batcher;
        batcher.post(1);
        batcher.wait_idle();  // the re-entrant calls happen before close() can begin
        batcher.close();
        CHECK(seen == 1);
        CHECK(try_full == 1);
        CHECK(reentrancy_errors == 1);
    }
}

TEST_CASE("Batcher wait_idle waits for every item accepted before the call", "[batcher]") {
    std::atomic<int> processed{0};
    Batcher<int> batcher(Options{}.max_batch_size(7).max_delay(1h).workers(2),
                         [&](Batch<int>& batch) { processed += static_cast<int>(batch.size()); });
    for (int round = 1; round <= 5; ++round) {
        for (int i = 0; i < 100; ++i) {
            batcher.post(i);
        }
        batcher.wait_idle();
        CHECK(processed == 100 * round);
    }
}

TEST_CASE("Batcher close_for reports what is still in flight when it gives up",
          "[batcher][close]") {
    Gate gate;
    Batcher<int> batcher(Options{}.max_batch_size(2).max_delay(1h).workers(1),
                         [&](Batch<int>&) { gate.wait(); });
    batcher.post(1);
    batcher.post(2);  // full batch, held by the gate
    batcher.post(3);  // partial, dispatched by close
    const auto result = batcher.close_for(1ms);
    CHECK_FALSE(result.completed);
    CHECK(result.batches_in_flight == 2);
    CHECK(result.items_in_flight == 3);
    CHECK(batcher.is_closed());
    gate.open();
    const auto second = batcher.close_for(1h);
    CHECK(second.completed);
    CHECK(second.items_in_flight == 0);
    CHECK(batcher.stats().items_processed == 3);
}

TEST_CASE("Batchers share an external executor", "[batcher][executor]") {
    microbatch::ThreadPool pool(2);
    std::atomic<int> a_sum{0};
    std::atomic<int> b_sum{0};
    {
        Batcher<int> a(Options{}.max_batch_size(4).executor(pool.executor()).workers(0),
                       [&](Batch<int>& batch) {
                           for (int x : batch) {
                               a_sum += x;
                           }
                       });
        Batcher<int> b(Options{}.max_batch_size(3).executor(pool.executor()),
                       [&](Batch<int>& batch) {
                           for (int x : batch) {
                               b_sum += x;
                           }
                       });
        for (int i = 1; i <= 100; ++i) {
            a.post(i);
            b.post(2 * i);
        }
    }
    CHECK(a_sum == 5050);
    CHECK(b_sum == 10100);
}

TEST_CASE("Batcher runs a batch on the submitting thread when the executor refuses it",
          "[batcher][executor]") {
    std::atomic<int> sum{0};
    Batcher<int, int> batcher(Options{}.max_batch_size(2).executor([](microbatch::Task) {
        throw std::runtime_error("executor refuses");
    }),
                              [&](Batch<int>& batch) {
                                  for (int x : batch) {
                                      sum += x;
                                  }
                                  return doubled(batch);
                              });
    auto first = batcher.submit(1);
    auto second = batcher.submit(2);
    CHECK(first.ready());  // ran inline in the second submit
    CHECK(first.get() == 2);
    CHECK(second.get() == 4);
    batcher.close();
    CHECK(sum == 3);
}

TEST_CASE("Batcher works with an inline executor", "[batcher][executor]") {
    std::atomic<int> sum{0};
    Batcher<int> batcher(
        Options{}.max_batch_size(3).executor([](microbatch::Task task) { task(); }),
        [&](Batch<int>& batch) {
            for (int x : batch) {
                sum += x;
            }
        });
    for (int i = 1; i <= 10; ++i) {
        batcher.post(i);
    }
    batcher.close();
    CHECK(sum == 55);
}

TEST_CASE("Batcher processes every item exactly once, in per-producer order",
          "[batcher][concurrency]") {
    const int producers = GENERATE(1, 2, 4, 8);
    const std::size_t batch_size = GENERATE(1u, 7u, 64u);
    const std::size_t lanes = GENERATE(1u, 3u);
    const int per_producer = 2000;
    const int total = producers * per_producer;
    std::vector<std::atomic<int>> seen(static_cast<std::size_t>(total));
    struct Record {
        std::uint64_t sequence;
        std::size_t index;
        int id;
    };
    std::mutex mutex;
    std::vector<Record> records;
    {
        Batcher<int> batcher(Options{}
                                 .max_batch_size(batch_size)
                                 .capacity(batch_size * 4 * lanes)
                                 .lanes(lanes)
                                 .max_delay(50us)
                                 .workers(2),
                             [&](Batch<int>& batch) {
                                 std::lock_guard<std::mutex> lock(mutex);
                                 for (std::size_t i = 0; i < batch.size(); ++i) {
                                     seen[static_cast<std::size_t>(batch[i])]++;
                                     records.push_back({batch.sequence(), i, batch[i]});
                                 }
                             });
        std::vector<std::thread> threads;
        for (int p = 0; p < producers; ++p) {
            threads.emplace_back([&, p] {
                for (int i = 0; i < per_producer; ++i) {
                    const int id = p * per_producer + i;
                    switch (i % 3) {
                        case 0:
                            batcher.post(id);
                            break;
                        case 1:
                            batcher.submit(id, [](Outcome<void>&& outcome) { outcome.value(); });
                            break;
                        default:
                            batcher.submit(id).get();
                            break;
                    }
                    if (i % 500 == 0) {
                        batcher.flush();
                    }
                }
            });
        }
        for (auto& thread : threads) {
            thread.join();
        }
        batcher.close();
        const auto stats = batcher.stats();
        CHECK(stats.items_accepted == static_cast<std::uint64_t>(total));
        CHECK(stats.items_processed == static_cast<std::uint64_t>(total));
        CHECK(stats.batch_size_max <= batch_size);
    }
    for (int id = 0; id < total; ++id) {
        REQUIRE(seen[static_cast<std::size_t>(id)] == 1);
    }
    std::sort(records.begin(), records.end(), [](const Record& a, const Record& b) {
        return a.sequence != b.sequence ? a.sequence < b.sequence : a.index < b.index;
    });
    std::vector<int> last(static_cast<std::size_t>(producers), -1);
    for (const Record& record : records) {
        const auto producer = static_cast<std::size_t>(record.id / per_producer);
        REQUIRE(record.id > last[producer]);
        last[producer] = record.id;
    }
}

TEST_CASE("Batcher validates its options at construction", "[batcher][options]") {
    const auto make = [](Options options) {
        Batcher<int> batcher(std::move(options), [](Batch<int>&) {});
    };
    CHECK_THROWS_AS(make(Options{}.max_batch_size(0)), std::invalid_argument);
    CHECK_THROWS_AS(make(Options{}.workers(0)), std::invalid_argument);
    CHECK_THROWS_AS(make(Options{}.max_batch_size(8).capacity(4)), std::invalid_argument);
    CHECK_THROWS_AS(make(Options{}.max_delay(-1ms)), std::invalid_argument);
    CHECK_THROWS_WITH(make(Options{}.max_batch_size(1).capacity(1u << 20)),
                      Catch::Matchers::Contains("capacity"));
}

TEST_CASE("Batcher stats fit the cost model from the batches it ran", "[batcher][stats]") {
    ManualClock clock;  // processing time is read from the clock: advance it inside the batch
    Batcher<int, void, ManualClock> batcher(
        Options{}.max_batch_size(8).max_delay(1h).workers(1),
        [&](Batch<int>& batch) {
            // alpha = 100 us per batch, beta = 10 us per item, on the manual clock
            clock.advance(100us + 10us * static_cast<long>(batch.size()));
        },
        clock);
    for (int size : {1, 2, 4, 8, 3}) {
        for (int i = 0; i < size; ++i) {
            batcher.post(i);
        }
        batcher.wait_idle();
    }
    const auto stats = batcher.stats();
    CHECK(stats.batch_cost.sample_count() == 5);
    const auto model = stats.batch_cost.fit();
    REQUIRE(model.has_value());
    CHECK(model->per_batch.count() == Approx(100e-6).epsilon(1e-6));
    CHECK(model->per_item.count() == Approx(10e-6).epsilon(1e-6));
}

// ---- Lanes ---------------------------------------------------------------------------------

namespace {

// Runs @p body on a fresh thread that submits to lane @p lane of a batcher with @p lanes lanes
// (a thread's lane is its producer number modulo the lane count), and joins it.
template <class Body>
void run_in_lane(std::size_t lanes, std::size_t lane, Body body) {
    bool done = false;
    do {
        std::thread thread([&] {
            if (microbatch::detail::producer_number() % lanes == lane) {
                body();
                done = true;
            }
        });
        thread.join();
    } while (!done);
}

std::vector<BatchLog::Entry> by_sequence(std::vector<BatchLog::Entry> entries) {
    std::sort(entries.begin(), entries.end(),
              [](const auto& a, const auto& b) { return a.sequence < b.sequence; });
    return entries;
}

}  // namespace

TEST_CASE("Batcher with lanes keeps each lane's items in batches of their own",
          "[batcher][lanes]") {
    BatchLog log;
    Batcher<int> batcher(
        Options{}.max_batch_size(3).lanes(2).max_delay(std::chrono::nanoseconds::max()).workers(1),
        [&](Batch<int>& batch) { log.add(batch); });
    run_in_lane(2, 0, [&] {
        batcher.post(1);
        batcher.post(2);
    });
    run_in_lane(2, 1, [&] {
        batcher.post(11);
        batcher.post(12);
        batcher.post(13);  // fills lane 1's batch; lane 0's is still open with two items
    });
    batcher.wait_idle();  // the waiting thread's own lane does not matter: it flushes them all
    run_in_lane(2, 0, [&] { batcher.post(3); });
    run_in_lane(2, 1, [&] { batcher.post(14); });
    batcher.close();

    const auto entries = by_sequence(log.snapshot());
    REQUIRE(entries.size() == 4);
    CHECK(entries[0].items == std::vector<int>{11, 12, 13});
    CHECK(entries[0].reason == DispatchReason::full);
    CHECK(entries[1].items == std::vector<int>{1, 2});
    CHECK(entries[1].reason == DispatchReason::flush);
    // close() dispatches the lanes' partial batches in lane order.
    CHECK(entries[2].items == std::vector<int>{3});
    CHECK(entries[2].reason == DispatchReason::close);
    CHECK(entries[3].items == std::vector<int>{14});
    CHECK(entries[3].reason == DispatchReason::close);
    for (std::size_t i = 0; i < entries.size(); ++i) {
        CHECK(entries[i].sequence == i);  // numbered 0, 1, 2, ... in dispatch order
    }
    const auto stats = batcher.stats();
    CHECK(stats.items_accepted == 7);
    CHECK(stats.items_processed == 7);
    CHECK(stats.batches_full == 1);
}

TEST_CASE("Batcher with lanes times each lane's batch from its own oldest item",
          "[batcher][lanes][deadline]") {
    ManualClock clock;
    BatchLog log;
    Batcher<int, void, ManualClock> batcher(
        // Two workers: the in-flight limit (one batch per worker) never holds a due batch back
        // here, whichever batch is still running in real time.
        Options{}.max_batch_size(10).lanes(2).max_delay(5ms).workers(2),
        [&](Batch<int>& batch) { log.add(batch); }, clock);
    run_in_lane(2, 1, [&] { batcher.post(1); });  // lane 1 opens at 0 ms
    clock.advance(3ms);
    run_in_lane(2, 0, [&] { batcher.post(2); });  // lane 0 opens at 3 ms
    CHECK(batcher.stats().batches_deadline == 0);
    clock.advance(2ms);  // 5 ms: lane 1 is due, lane 0 is not
    CHECK(batcher.stats().batches_deadline == 1);
    run_in_lane(2, 1, [&] { batcher.post(3); });  // lane 1 opens again at 5 ms
    clock.advance(2ms);                           // 7 ms: nothing due
    CHECK(batcher.stats().batches_deadline == 1);
    wait_until_completed(batcher, 1);
    clock.advance(1ms);  // 8 ms: lane 0 is due
    CHECK(batcher.stats().batches_deadline == 2);
    wait_until_completed(batcher, 2);
    clock.advance(2ms);  // 10 ms: lane 1's second batch is due
    CHECK(batcher.stats().batches_deadline == 3);
    batcher.wait_idle();

    const auto entries = by_sequence(log.snapshot());
    REQUIRE(entries.size() == 3);
    CHECK(entries[0].items == std::vector<int>{1});
    CHECK(entries[1].items == std::vector<int>{2});
    CHECK(entries[2].items == std::vector<int>{3});
    for (const auto& entry : entries) {
        CHECK(entry.reason == DispatchReason::deadline);
    }
}

TEST_CASE("Batcher with lanes bounds the capacity of each lane", "[batcher][lanes][backpressure]") {
    Gate release;
    std::atomic<int> processed{0};
    Batcher<int> batcher(
        Options{}.max_batch_size(2).capacity(4).lanes(2).max_delay(std::chrono::nanoseconds::max()),
        [&](Batch<int>& batch) {
            release.wait();
            processed += static_cast<int>(batch.size());
        });
    SubmitStatus lane0_third = SubmitStatus::accepted;
    run_in_lane(2, 0, [&] {
        batcher.post(1);
        batcher.post(2);  // full: lane 0's only buffer is now running (and held by the gate)
        lane0_third = batcher.try_submit(3);
    });
    SubmitStatus lane1_first = SubmitStatus::full;
    run_in_lane(2, 1, [&] { lane1_first = batcher.try_submit(11); });
    CHECK(lane0_third == SubmitStatus::full);
    CHECK(lane1_first == SubmitStatus::accepted);  // lane 1's buffer is its own
    release.open();
    batcher.close();
    CHECK(processed == 3);
    const auto stats = batcher.stats();
    CHECK(stats.items_rejected_full == 1);
    CHECK(stats.items_processed == 3);
}

TEST_CASE("Batcher with lanes closes every lane", "[batcher][lanes][close]") {
    BatchLog log;
    Batcher<int> batcher(
        Options{}.max_batch_size(100).lanes(3).max_delay(std::chrono::nanoseconds::max()),
        [&](Batch<int>& batch) { log.add(batch); });
    for (std::size_t lane = 0; lane < 3; ++lane) {
        run_in_lane(3, lane, [&] { batcher.post(static_cast<int>(lane)); });
    }
    CHECK(batcher.stats().items_accepted == 3);  // counted across the three open batches
    batcher.close();
    CHECK(batcher.is_closed());
    for (std::size_t lane = 0; lane < 3; ++lane) {
        run_in_lane(3, lane, [&] {
            CHECK_THROWS_AS(batcher.post(7), microbatch::ClosedError);
            CHECK(batcher.try_submit(7) == SubmitStatus::closed);
        });
    }
    auto entries = by_sequence(log.snapshot());
    REQUIRE(entries.size() == 3);
    std::vector<int> items;
    for (const auto& entry : entries) {
        CHECK(entry.reason == DispatchReason::close);
        REQUIRE(entry.items.size() == 1);
        items.push_back(entry.items[0]);
    }
    std::sort(items.begin(), items.end());
    CHECK(items == std::vector<int>{0, 1, 2});
}
