// Tests of bulk submission (issue 13): post_n, submit_n and their try/timed forms claim a run of
// slots at once. Exact outcomes: every item once, in order, prefix acceptance at capacity,
// results and errors reaching exactly their items. Time is ManualClock where it matters.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <list>
#include <memory>
#include <mutex>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "catch_shim.hpp"
#include "microbatch/batcher.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using microbatch::Batch;
using microbatch::Batcher;
using microbatch::BulkResult;
using microbatch::ClosedError;
using microbatch::DispatchReason;
using microbatch::Handle;
using microbatch::ManualClock;
using microbatch::Options;
using microbatch::Outcome;
using microbatch::SubmitStatus;
using test_support::Gate;

namespace {

// Records each batch's items; the first batch waits on `hold` when `hold_first` is set.
struct Recorder {
    std::mutex mutex;
    std::vector<std::vector<int>> batches;
    Gate hold;
    std::atomic<bool> hold_first{false};
    std::atomic<int> started{0};

    void operator()(Batch<int>& batch) {
        started.fetch_add(1);
        if (hold_first.exchange(false)) {
            hold.wait();
        }
        std::lock_guard<std::mutex> lock(mutex);
        batches.emplace_back(batch.begin(), batch.end());
    }
    std::vector<std::vector<int>> snapshot() {
        std::lock_guard<std::mutex> lock(mutex);
        return batches;
    }
    std::vector<int> all_items() {
        std::vector<int> items;
        for (const auto& batch : snapshot()) {
            items.insert(items.end(), batch.begin(), batch.end());
        }
        return items;
    }
};

template <class Predicate>
void wait_until(Predicate predicate) {
    while (!predicate()) {
        std::this_thread::yield();
    }
}

std::vector<int> iota(int first, int count) {
    std::vector<int> values(static_cast<std::size_t>(count));
    std::iota(values.begin(), values.end(), first);
    return values;
}

using ManualBatcher = Batcher<int, void, ManualClock>;

ManualBatcher make(Recorder& recorder, ManualClock& clock, Options options) {
    return ManualBatcher(
        std::move(options), [&recorder](Batch<int>& batch) { recorder(batch); }, clock);
}

// Throws when constructed from a negative value.
struct Picky {
    int value;
    explicit Picky(int v) : value(v) {
        if (v < 0) {
            throw std::runtime_error("negative item");
        }
    }
};

}  // namespace

TEST_CASE("post_n submits every item once, in order, filling whole batches", "[bulk]") {
    ManualClock clock;
    Recorder recorder;
    auto batcher = make(recorder, clock,
                        Options{}.max_batch_size(4).max_delay(1h).seal_early(false).workers(1));
    const auto items = iota(0, 10);
    batcher.post_n(items.begin(), items.size());
    batcher.flush();
    batcher.wait_idle();
    const auto batches = recorder.snapshot();
    REQUIRE(batches.size() == 3);
    CHECK(batches[0] == std::vector<int>{0, 1, 2, 3});
    CHECK(batches[1] == std::vector<int>{4, 5, 6, 7});
    CHECK(batches[2] == std::vector<int>{8, 9});
    const auto stats = batcher.stats();
    CHECK(stats.items_submitted == 10);
    CHECK(stats.batches_full == 2);
    CHECK(stats.batches_flush == 1);
}

TEST_CASE("post_n copies from any input iterator, converting items, in order", "[bulk]") {
    // post_n's fire-and-forget path copies a run with one call when the iterator is random
    // access (a memmove for contiguous trivially copyable items) and item by item otherwise.
    ManualClock clock;
    Recorder recorder;
    auto batcher = make(recorder, clock,
                        Options{}.max_batch_size(4).max_delay(1h).seal_early(false).workers(1));
    const std::vector<int> values = iota(0, 6);
    std::list<int> linked(values.begin(), values.end());  // bidirectional, not random access
    const std::vector<short> narrow = {6, 7, 8};          // converted to int on the way in
    std::istringstream text("9 10 11 12 13");             // single-pass input iterator
    batcher.post_n(linked.begin(), linked.size());
    batcher.post_n(narrow.begin(), narrow.size());
    batcher.post_n(std::istream_iterator<int>(text), 5);
    batcher.post_n(values.data() + 1, 2);  // a raw pointer: contiguous storage
    batcher.flush();
    batcher.wait_idle();
    const auto batches = recorder.snapshot();
    REQUIRE(batches.size() == 4);
    CHECK(batches[0] == std::vector<int>{0, 1, 2, 3});
    CHECK(batches[1] == std::vector<int>{4, 5, 6, 7});
    CHECK(batches[2] == std::vector<int>{8, 9, 10, 11});
    CHECK(batches[3] == std::vector<int>{12, 13, 1, 2});
    CHECK(batcher.stats().items_accepted == 16);
}

TEST_CASE("post_n continues a partly filled batch and runs longer than one claim", "[bulk]") {
    ManualClock clock;
    Recorder recorder;
    const std::size_t b = 2 * Batcher<int>::max_bulk_claim + 3;  // several claims per batch
    auto batcher = make(recorder, clock,
                        Options{}.max_batch_size(b).max_delay(1h).seal_early(false).workers(1));
    batcher.post(-1);
    const auto items = iota(0, static_cast<int>(2 * b));
    batcher.post_n(items.begin(), items.size());
    batcher.post(-2);
    batcher.flush();
    batcher.wait_idle();
    const auto batches = recorder.snapshot();
    REQUIRE(batches.size() == 3);
    CHECK(batches[0].size() == b);
    CHECK(batches[1].size() == b);
    CHECK(batches[2].size() == 2);
    std::vector<int> expected{-1};
    expected.insert(expected.end(), items.begin(), items.end());
    expected.push_back(-2);
    CHECK(recorder.all_items() == expected);
}

TEST_CASE("post_n with n = 0 does nothing", "[bulk]") {
    Recorder recorder;
    Batcher<int> batcher(Options{}.max_batch_size(4), [&recorder](Batch<int>& b) { recorder(b); });
    const std::vector<int> none;
    batcher.post_n(none.begin(), 0);
    CHECK(batcher.try_post_n(none.begin(), 0).all_accepted());
    batcher.close();
    CHECK(batcher.stats().items_submitted == 0);
    CHECK(recorder.snapshot().empty());
}

TEST_CASE("try_post_n accepts the prefix that fits and leaves the rest", "[bulk][capacity]") {
    ManualClock clock;
    Recorder recorder;
    recorder.hold_first = true;
    auto batcher =
        make(recorder, clock,
             Options{}.max_batch_size(4).capacity(8).max_delay(1h).seal_early(false).workers(1));
    const auto first = iota(0, 4);
    batcher.post_n(first.begin(), first.size());  // full: dispatched, held by the worker
    wait_until([&] { return recorder.started.load() == 1; });

    const auto more = iota(100, 10);
    const BulkResult result = batcher.try_post_n(more.begin(), more.size());
    CHECK_FALSE(result);
    CHECK(result.status == SubmitStatus::full);
    CHECK(result.accepted == 4);  // capacity 8 items, 4 of them in the running batch
    CHECK(batcher.stats().items_rejected_full == 6);  // every item refused

    recorder.hold.open();
    batcher.wait_idle();
    // The rest goes in once there is room again.
    const BulkResult rest = batcher.try_post_n(more.begin() + 4, 6);
    CHECK(rest.all_accepted());
    CHECK(rest.accepted == 6);
    batcher.flush();
    batcher.wait_idle();
    std::vector<int> expected = first;
    expected.insert(expected.end(), more.begin(), more.end());
    CHECK(recorder.all_items() == expected);
}

TEST_CASE("post_n_for gives up after its timeout with the accepted count", "[bulk][capacity]") {
    Recorder recorder;
    recorder.hold_first = true;
    Batcher<int> batcher(Options{}.max_batch_size(2).capacity(4).max_delay(1h).workers(1),
                         [&recorder](Batch<int>& b) { recorder(b); });
    const auto items = iota(0, 9);
    const BulkResult result = batcher.post_n_for(items.begin(), items.size(), 1ms);
    CHECK(result.status == SubmitStatus::full);
    CHECK(result.accepted == 4);
    recorder.hold.open();
    batcher.close();
    CHECK(recorder.all_items() == iota(0, 4));
}

TEST_CASE("post_n blocks until space frees and then submits the rest", "[bulk][capacity]") {
    Recorder recorder;
    recorder.hold_first = true;
    Batcher<int> batcher(Options{}.max_batch_size(2).capacity(4).max_delay(1h).workers(1),
                         [&recorder](Batch<int>& b) { recorder(b); });
    const auto items = iota(0, 11);
    std::thread producer([&] { batcher.post_n(items.begin(), items.size()); });
    wait_until([&] { return recorder.started.load() == 1; });
    recorder.hold.open();
    producer.join();
    batcher.close();
    CHECK(recorder.all_items() == items);
}

TEST_CASE("bulk submissions on a closed batcher", "[bulk][close]") {
    Batcher<int> batcher(Options{}.max_batch_size(4), [](Batch<int>&) {});
    batcher.close();
    const auto items = iota(0, 3);
    try {
        batcher.post_n(items.begin(), items.size());
        FAIL("post_n on a closed batcher did not throw");
    } catch (const microbatch::BulkClosedError& error) {
        CHECK(std::string(error.what()).find("0 of 3 items were accepted") != std::string::npos);
        CHECK(error.accepted() == 0);
    }
    const BulkResult result = batcher.try_post_n(items.begin(), items.size());
    CHECK(result.status == SubmitStatus::closed);
    CHECK(result.accepted == 0);
    std::vector<Handle<void>> handles;
    CHECK_THROWS_AS(batcher.submit_n(items.begin(), items.size(), std::back_inserter(handles)),
                    ClosedError);
    CHECK(handles.empty());
}

TEST_CASE("submit_n hands out one handle per item, in order", "[bulk][handle]") {
    Batcher<int, int> batcher(Options{}.max_batch_size(3).max_delay(1ms).workers(2),
                              [](Batch<int>& batch) {
                                  std::vector<int> results;
                                  for (int item : batch) {
                                      results.push_back(item * 10);
                                  }
                                  return results;
                              });
    const auto items = iota(1, 8);
    std::vector<Handle<int>> handles;
    auto end = batcher.submit_n(items.begin(), items.size(), std::back_inserter(handles));
    (void)end;
    REQUIRE(handles.size() == items.size());
    for (std::size_t i = 0; i < handles.size(); ++i) {
        CHECK(handles[i].get() == items[i] * 10);
    }
    // Into an array, with the try form.
    Handle<int> array[4];
    const BulkResult result = batcher.try_submit_n(items.begin(), 4, &array[0]);
    CHECK(result.accepted == 4);
    for (std::size_t i = 0; i < 4; ++i) {
        CHECK(array[i].get() == items[i] * 10);
    }
}

TEST_CASE("submit_n with a callback reports each item's index and outcome once",
          "[bulk][callback]") {
    std::mutex mutex;
    std::vector<int> seen(20, 0);
    std::vector<int> values(20, -1);
    {
        Batcher<int, int> batcher(Options{}.max_batch_size(6).max_delay(1ms).workers(2),
                                  [](Batch<int>& batch) {
                                      std::vector<int> results;
                                      for (int item : batch) {
                                          results.push_back(item + 1000);
                                      }
                                      return results;
                                  });
        const auto items = iota(0, 20);
        batcher.submit_n(items.begin(), items.size(),
                         [&mutex, &seen, &values](std::size_t index, Outcome<int>&& outcome) {
                             std::lock_guard<std::mutex> lock(mutex);
                             ++seen[index];
                             values[index] = outcome.value();
                         });
        batcher.close();
    }
    CHECK(seen == std::vector<int>(20, 1));
    CHECK(values == iota(1000, 20));
}

TEST_CASE("submit_n delivers a batch's exception to each of its items", "[bulk][errors]") {
    Batcher<int, int> batcher(Options{}.max_batch_size(2).max_delay(1ms),
                              [](Batch<int>& batch) -> std::vector<int> {
                                  if (batch[0] == 2) {
                                      throw std::runtime_error("bad batch");
                                  }
                                  return std::vector<int>(batch.begin(), batch.end());
                              });
    const auto items = iota(0, 4);
    std::vector<Handle<int>> handles;
    batcher.submit_n(items.begin(), items.size(), std::back_inserter(handles));
    REQUIRE(handles.size() == 4);
    CHECK(handles[0].get() == 0);
    CHECK(handles[1].get() == 1);
    CHECK_THROWS_AS(handles[2].get(), std::runtime_error);
    CHECK_THROWS_AS(handles[3].get(), std::runtime_error);
}

TEST_CASE("post_n moves items from a move_iterator", "[bulk]") {
    std::atomic<int> sum{0};
    Batcher<std::unique_ptr<int>> batcher(Options{}.max_batch_size(3).max_delay(1ms),
                                          [&sum](Batch<std::unique_ptr<int>>& batch) {
                                              for (auto& p : batch) {
                                                  sum += *p;
                                              }
                                          });
    std::vector<std::unique_ptr<int>> items;
    for (int i = 1; i <= 5; ++i) {
        items.push_back(std::make_unique<int>(i));
    }
    batcher.post_n(std::make_move_iterator(items.begin()), items.size());
    batcher.close();
    CHECK(sum == 15);
    for (const auto& p : items) {
        CHECK(p == nullptr);
    }
}

TEST_CASE("a throwing item ends the bulk submission: the items before it are accepted",
          "[bulk][errors]") {
    std::mutex mutex;
    std::vector<int> processed;
    Batcher<Picky> batcher(Options{}.max_batch_size(8).max_delay(1h).seal_early(false),
                           [&](Batch<Picky>& batch) {
                               std::lock_guard<std::mutex> lock(mutex);
                               for (const Picky& p : batch) {
                                   processed.push_back(p.value);
                               }
                           });
    const std::vector<int> items{1, 2, 3, -1, 5, 6};
    CHECK_THROWS_AS(batcher.post_n(items.begin(), items.size()), std::runtime_error);
    batcher.post(Picky(7));
    batcher.close();
    CHECK(processed == std::vector<int>{1, 2, 3, 7});
    const auto stats = batcher.stats();
    CHECK(stats.items_accepted == 4);
    CHECK(stats.items_rejected_error == 1);  // the item that threw; 5 and 6 were never tried
    CHECK(stats.items_submitted == 5);
}

TEST_CASE("a throwing item in submit_n gets no handle and no callback", "[bulk][errors]") {
    Batcher<Picky, int> batcher(Options{}.max_batch_size(4).max_delay(1ms),
                                [](Batch<Picky>& batch) {
                                    std::vector<int> results;
                                    for (const Picky& p : batch) {
                                        results.push_back(p.value);
                                    }
                                    return results;
                                });
    const std::vector<int> items{10, -1, 30};
    std::vector<Handle<int>> handles;
    CHECK_THROWS_AS(batcher.submit_n(items.begin(), items.size(), std::back_inserter(handles)),
                    std::runtime_error);
    REQUIRE(handles.size() == 1);
    CHECK(handles[0].get() == 10);
    std::atomic<int> callbacks{0};
    CHECK_THROWS_AS(batcher.submit_n(items.begin(), items.size(),
                                     [&callbacks](std::size_t index, Outcome<int>&& outcome) {
                                         CHECK(index == 0);
                                         CHECK(outcome.value() == 10);
                                         ++callbacks;
                                     }),
                    std::runtime_error);
    batcher.close();
    CHECK(callbacks == 1);
}

TEST_CASE("bulk submissions from many producers: exactly once, per-producer order",
          "[bulk][concurrency]") {
    constexpr int producers = 4;
    constexpr int per_producer = 5000;
    std::mutex mutex;
    std::vector<std::pair<std::uint64_t, std::vector<int>>> batches;
    {
        Batcher<int> batcher(Options{}.max_batch_size(16).max_delay(50us).workers(2),
                             [&](Batch<int>& batch) {
                                 std::lock_guard<std::mutex> lock(mutex);
                                 batches.emplace_back(batch.sequence(),
                                                      std::vector<int>(batch.begin(), batch.end()));
                             });
        test_support::run_concurrently(producers, [&](std::size_t p) {
            std::vector<int> mine =
                iota(static_cast<int>(p) * per_producer, per_producer);  // producer p's items
            std::size_t next = 0;
            std::size_t run = 1;
            while (next < mine.size()) {
                const std::size_t n = std::min(run, mine.size() - next);
                if (run % 3 == 0) {
                    const BulkResult r = batcher.try_post_n(mine.begin() + next, n);
                    next += r.accepted;
                } else {
                    batcher.post_n(mine.begin() + next, n);
                    next += n;
                }
                run = run % 37 + 1;
            }
        });
        batcher.close();
    }
    // Two workers may record batches out of order: sort by dispatch sequence (one lane, so
    // the lane's order), then each producer's items must appear in its order, each once.
    std::sort(batches.begin(), batches.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<int> count(producers * per_producer, 0);
    std::vector<int> last(producers, -1);
    bool ordered = true;
    for (const auto& batch : batches) {
        for (int item : batch.second) {
            ++count[static_cast<std::size_t>(item)];
            const auto p = static_cast<std::size_t>(item / per_producer);
            ordered = ordered && item > last[p];
            last[p] = item;
        }
    }
    CHECK(ordered);
    CHECK(count == std::vector<int>(producers * per_producer, 1));
}

// Issue 11 x 13: bulk submissions honour Options::default_timeout (their items expire unprocessed
// like single ones), and a bulk submission's handles can cancel their items.
TEST_CASE("bulk items take the default timeout and their handles can cancel", "[bulk][deadlines]") {
    ManualClock clock;
    std::mutex mutex;
    std::vector<int> processed;
    Batcher<int, int, ManualClock> batcher(
        Options{}
            .max_batch_size(8)
            .max_delay(1h)
            .seal_early(false)
            .default_timeout(1ms)
            .deadline_sealing(false),
        [&](Batch<int>& batch) {
            std::lock_guard<std::mutex> lock(mutex);
            processed.insert(processed.end(), batch.begin(), batch.end());
            return std::vector<int>(batch.begin(), batch.end());
        },
        clock);
    const auto stale = iota(0, 3);
    std::vector<Handle<int>> stale_handles;
    batcher.submit_n(stale.begin(), stale.size(), std::back_inserter(stale_handles));
    clock.advance(1ms);  // the first three are due now
    const auto fresh = iota(10, 3);
    std::vector<Handle<int>> fresh_handles;
    batcher.submit_n(fresh.begin(), fresh.size(), std::back_inserter(fresh_handles));
    REQUIRE(fresh_handles.size() == 3);
    CHECK(fresh_handles[1].cancel());  // before its batch started: never processed
    batcher.flush();
    batcher.wait_idle();
    for (auto& handle : stale_handles) {
        CHECK_THROWS_AS(handle.get(), microbatch::DeadlineExceeded);
    }
    CHECK(fresh_handles[0].get() == 10);
    CHECK_THROWS_AS(fresh_handles[1].get(), microbatch::Cancelled);
    CHECK(fresh_handles[2].get() == 12);
    CHECK(processed == std::vector<int>{10, 12});
    const auto stats = batcher.stats();
    CHECK(stats.items_expired == 3);
    CHECK(stats.items_cancelled == 1);
}
