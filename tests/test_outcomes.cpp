// Per-item outcomes and poison-item isolation (issue 12, items 2 and 3): process_batch may
// return one Outcome per item, and with Options::isolate_failures a batch whose process_batch
// threw is re-run in halves so that only its failing items get an exception.
//
// Batches run on an inline executor (the thread that seals a batch runs it) with no time
// bound, so every batch, every re-run and every counter is exact; a last case uses a real pool
// with several producers.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "catch_shim.hpp"
#include "microbatch/batcher.hpp"
#include "microbatch/thread_pool.hpp"
#include "test_support.hpp"

using microbatch::Batch;
using microbatch::Batcher;
using microbatch::Handle;
using microbatch::Options;
using microbatch::Outcome;

namespace {

/// Options for exact tests: batches of @p size, sealed when full or flushed, run inline.
Options inline_options(std::size_t size) {
    return Options{}
        .max_batch_size(size)
        .max_delay(std::chrono::nanoseconds::max())
        .executor([](microbatch::Task task) { task(); });
}

/// The message of the exception @p outcome holds ("" on success).
template <class R>
std::string error_message(const Outcome<R>& outcome) {
    if (!outcome.error()) {
        return "";
    }
    try {
        std::rethrow_exception(outcome.error());
    } catch (const std::exception& error) {
        return error.what();
    } catch (...) {
        return "(not a std::exception)";
    }
}

/// Waits for @p handle and returns its outcome.
template <class R>
Outcome<R> outcome_of(Handle<R>& handle) {
    try {
        if constexpr (std::is_void_v<R>) {
            handle.get();
            return Outcome<R>();
        } else {
            return Outcome<R>(handle.get());
        }
    } catch (...) {
        return Outcome<R>(std::current_exception());
    }
}

/// One process_batch call: its items' offset in the whole batch and their number.
struct Call {
    std::size_t first;
    std::size_t size;
    bool operator==(const Call& other) const { return first == other.first && size == other.size; }
};

/// The calls isolation must make for a batch of @p size items with items @p poison failing
/// (every call holding one throws "call <index>"), splitting at most @p depth times, and for
/// each item the index of the call whose exception it must get (-1: succeeds).
struct Expected {
    std::vector<Call> calls;
    std::vector<int> failed_by;
};

void expect_calls(std::size_t first, std::size_t size, std::size_t level, std::size_t depth,
                  const std::set<std::size_t>& poison, Expected& expected) {
    expected.calls.push_back({first, size});
    const int call = static_cast<int>(expected.calls.size()) - 1;
    bool poisoned = false;
    for (std::size_t i = first; i < first + size; ++i) {
        poisoned = poisoned || poison.count(i) != 0;
    }
    if (!poisoned) {
        return;
    }
    if (size == 1 || level >= depth) {
        for (std::size_t i = first; i < first + size; ++i) {
            expected.failed_by[i] = call;
        }
        return;
    }
    expect_calls(first, size / 2, level + 1, depth, poison, expected);
    expect_calls(first + size / 2, size - size / 2, level + 1, depth, poison, expected);
}

Expected expect_isolation(std::size_t size, std::size_t depth,
                          const std::set<std::size_t>& poison) {
    Expected expected;
    expected.failed_by.assign(size, -1);
    expect_calls(0, size, 0, depth, poison, expected);
    return expected;
}

/// Runs one full batch of @p size items (item i is the int i; items in @p poison make every
/// call holding them throw "call <index>") through a Batcher<int, int> with isolation down to
/// @p depth, and checks every call, every item's outcome and the stats against the model.
void check_isolation(std::size_t size, std::size_t depth, const std::set<std::size_t>& poison) {
    const Expected expected = expect_isolation(size, depth, poison);
    std::vector<Call> calls;
    const int* base = nullptr;  // the batch's first item, to locate re-runs' sub-ranges
    std::vector<Handle<int>> handles;
    std::vector<Outcome<int>> callback_outcomes;
    {
        Batcher<int, int> batcher(
            inline_options(size).isolate_failures(true).isolation_depth(depth),
            [&](Batch<int>& batch) {
                if (base == nullptr) {
                    base = batch.data();
                }
                calls.push_back({static_cast<std::size_t>(batch.data() - base), batch.size()});
                std::vector<int> results;
                for (const int item : batch) {
                    if (poison.count(static_cast<std::size_t>(item)) != 0) {
                        throw std::runtime_error("call " + std::to_string(calls.size() - 1));
                    }
                    results.push_back(item * 10);
                }
                return results;
            });
        for (std::size_t i = 0; i < size; ++i) {
            if (i % 2 == 0) {
                handles.push_back(batcher.submit(static_cast<int>(i)));
            } else {
                batcher.submit(static_cast<int>(i), [&callback_outcomes](Outcome<int>&& outcome) {
                    callback_outcomes.push_back(std::move(outcome));
                });
            }
        }
        batcher.close();

        CHECK(calls == expected.calls);
        std::size_t failed = 0;
        for (std::size_t i = 0; i < size; ++i) {
            Outcome<int> outcome =
                i % 2 == 0 ? outcome_of(handles[i / 2]) : std::move(callback_outcomes[i / 2]);
            const int call = expected.failed_by[i];
            if (call < 0) {
                REQUIRE(outcome.has_value());
                CHECK(outcome.value() == static_cast<int>(i) * 10);
            } else {
                ++failed;
                CHECK(error_message(outcome) == "call " + std::to_string(call));
            }
        }
        REQUIRE(callback_outcomes.size() == size / 2);

        const microbatch::Stats stats = batcher.stats();
        const bool isolated = !poison.empty() && size > 1;
        std::size_t failed_runs = 0;
        for (std::size_t c = 1; c < expected.calls.size(); ++c) {
            const Call& run = expected.calls[c];
            for (std::size_t i = run.first; i < run.first + run.size; ++i) {
                if (poison.count(i) != 0) {
                    ++failed_runs;
                    break;
                }
            }
        }
        CHECK(stats.items_processed == size - failed);
        CHECK(stats.items_failed == failed);
        CHECK(stats.items_failed_individually == (isolated ? failed : 0));
        CHECK(stats.batches_failed == (poison.empty() ? 0U : 1U));
        CHECK(stats.batches_isolated == (isolated ? 1U : 0U));
        CHECK(stats.isolation_runs == expected.calls.size() - 1);
        CHECK(stats.isolation_runs_failed == failed_runs);
        CHECK(stats.batches_completed == 1);
    }
}

}  // namespace

// ---- Per-item outcomes ---------------------------------------------------------------------

TEST_CASE("Batcher delivers each per-item Outcome to exactly its item", "[outcomes]") {
    constexpr int n = 8;
    std::vector<Handle<int>> handles;
    std::vector<std::pair<int, Outcome<int>>> callbacks;
    Batcher<int, int> batcher(inline_options(n), [](Batch<int>& batch) {
        std::vector<Outcome<int>> outcomes;
        for (const int item : batch) {
            if (item % 3 == 0) {
                outcomes.emplace_back(std::make_exception_ptr(
                    std::invalid_argument("bad item " + std::to_string(item))));
            } else {
                outcomes.emplace_back(item * 2);
            }
        }
        return outcomes;
    });
    for (int i = 0; i < n; ++i) {
        if (i < 4) {
            handles.push_back(batcher.submit(i));
        } else if (i < 7) {
            batcher.submit(i, [&callbacks, i](Outcome<int>&& outcome) {
                callbacks.emplace_back(i, std::move(outcome));
            });
        } else {
            batcher.post(i);  // fire-and-forget: counted, delivered to nobody
        }
    }
    batcher.close();

    for (int i = 0; i < 4; ++i) {
        const Outcome<int> outcome = outcome_of(handles[static_cast<std::size_t>(i)]);
        if (i % 3 == 0) {
            CHECK(error_message(outcome) == "bad item " + std::to_string(i));
            CHECK_THROWS_AS(outcome.value(), std::invalid_argument);
        } else {
            CHECK(outcome.value() == i * 2);
        }
    }
    REQUIRE(callbacks.size() == 3);
    for (const auto& [item, outcome] : callbacks) {
        if (item % 3 == 0) {
            CHECK(error_message(outcome) == "bad item " + std::to_string(item));
        } else {
            CHECK(outcome.value() == item * 2);
        }
    }
    const microbatch::Stats stats = batcher.stats();
    CHECK(stats.items_accepted == 8);
    CHECK(stats.items_failed == 3);  // items 0, 3, 6
    CHECK(stats.items_failed_individually == 3);
    CHECK(stats.items_processed == 5);
    CHECK(stats.batches_failed == 0);  // the call returned: the batch did not fail
    CHECK(stats.batches_isolated == 0);
    CHECK(stats.isolation_runs == 0);
    CHECK(stats.batch_cost.sample_count() == 1);  // a partly failed batch is still a cost sample
}

TEST_CASE("Batcher<T, void> reports per-item failures with std::vector<Outcome<void>>",
          "[outcomes]") {
    std::vector<Handle<void>> handles;
    Batcher<std::string> batcher(inline_options(4), [](Batch<std::string>& batch) {
        std::vector<Outcome<void>> outcomes;
        for (const std::string& item : batch) {
            outcomes.push_back(item.empty() ? Outcome<void>(std::make_exception_ptr(
                                                  std::length_error("empty string")))
                                            : Outcome<void>());
        }
        return outcomes;
    });
    for (const char* item : {"a", "", "c", ""}) {
        handles.push_back(batcher.submit(std::string(item)));
    }
    batcher.close();
    CHECK(outcome_of(handles[0]).has_value());
    const Outcome<void> second = outcome_of(handles[1]);
    CHECK(error_message(second) == "empty string");
    CHECK_THROWS_AS(second.value(), std::length_error);
    CHECK(outcome_of(handles[2]).has_value());
    CHECK(error_message(outcome_of(handles[3])) == "empty string");
    const microbatch::Stats stats = batcher.stats();
    CHECK(stats.items_failed == 2);
    CHECK(stats.items_failed_individually == 2);
    CHECK(stats.items_processed == 2);
    CHECK(stats.batches_failed == 0);
}

TEST_CASE(
    "Batcher fails every item with ResultCountError when the per-item vector's length is wrong",
    "[outcomes]") {
    const auto returned = GENERATE(as<std::size_t>{}, 0, 2, 4);  // for a batch of 3
    std::vector<Handle<int>> handles;
    Batcher<int, int> batcher(inline_options(3), [returned](Batch<int>&) {
        return std::vector<Outcome<int>>(returned, Outcome<int>(1));
    });
    for (int i = 0; i < 3; ++i) {
        handles.push_back(batcher.submit(i));
    }
    batcher.close();
    for (Handle<int>& handle : handles) {
        const Outcome<int> outcome = outcome_of(handle);
        CHECK(error_message(outcome) == "microbatch::Batcher: process_batch returned " +
                                            std::to_string(returned) +
                                            " results for a batch of 3 "
                                            "items");
        CHECK_THROWS_AS(outcome.value(), microbatch::ResultCountError);
    }
    const microbatch::Stats stats = batcher.stats();
    CHECK(stats.batches_failed == 1);
    CHECK(stats.items_failed == 3);
    CHECK(stats.items_failed_individually == 0);  // the batch failed as one
    CHECK(stats.isolation_runs == 0);
}

TEST_CASE("Batcher fails only the item whose Outcome holds neither a value nor an exception",
          "[outcomes]") {
    std::vector<Handle<int>> handles;
    Batcher<int, int> batcher(inline_options(3), [](Batch<int>& batch) {
        std::vector<Outcome<int>> outcomes;
        for (const int item : batch) {
            outcomes.emplace_back(item);
        }
        // A failed outcome moved from leaves neither value nor exception behind.
        Outcome<int> failed(std::make_exception_ptr(std::runtime_error("taken")));
        const Outcome<int> taken(std::move(failed));
        outcomes[1] = std::move(failed);
        return outcomes;
    });
    for (int i = 0; i < 3; ++i) {
        handles.push_back(batcher.submit(i));
    }
    batcher.close();
    CHECK(outcome_of(handles[0]).value() == 0);
    const Outcome<int> second = outcome_of(handles[1]);
    CHECK(error_message(second) ==
          "microbatch::Batcher: process_batch returned an Outcome holding neither a value nor an "
          "exception for item 1 of a batch of 3");
    CHECK_THROWS_AS(second.value(), microbatch::ResultCountError);
    CHECK(outcome_of(handles[2]).value() == 2);
    CHECK(batcher.stats().items_failed_individually == 1);
}

TEST_CASE("Batcher counts callback exceptions of per-item outcomes and completes the others",
          "[outcomes]") {
    std::atomic<int> completed{0};
    Batcher<int, int> batcher(inline_options(4), [](Batch<int>& batch) {
        return std::vector<Outcome<int>>(batch.size(), Outcome<int>(7));
    });
    for (int i = 0; i < 4; ++i) {
        batcher.submit(i, [&completed, i](Outcome<int>&& outcome) {
            completed.fetch_add(outcome.value());
            if (i % 2 == 0) {
                throw std::runtime_error("callback");
            }
        });
    }
    batcher.close();
    CHECK(completed.load() == 28);
    CHECK(batcher.stats().callback_exceptions == 2);
}

// ---- Poison-item isolation -----------------------------------------------------------------

TEST_CASE("Batcher isolates one poison item of 256 with 16 re-runs; the other 255 succeed",
          "[isolation]") {
    const auto poison = GENERATE(as<std::size_t>{}, 0, 1, 100, 128, 255);
    check_isolation(256, Options::max_isolation_depth, {poison});
}

TEST_CASE("Batcher isolates several poison items, each with its own exception", "[isolation]") {
    check_isolation(256, Options::max_isolation_depth, {0, 7, 100, 101, 255});
    check_isolation(13, Options::max_isolation_depth, {3, 4, 12});  // uneven halves
    check_isolation(2, Options::max_isolation_depth, {0, 1});
    check_isolation(5, Options::max_isolation_depth, {0, 1, 2, 3, 4});  // all: 2n - 2 re-runs
    check_isolation(64, Options::max_isolation_depth, {});              // no failure, no re-run
}

TEST_CASE("Batcher fails every item of a failing sub-batch at the isolation depth cap",
          "[isolation]") {
    // Depth 2 on 16 items, poison 5: [0,16) throws, [0,8) throws, [0,4) succeeds, [4,8)
    // throws at the cap: items 4..7 all get its exception ("call 3"); [8,16) succeeds.
    const Expected expected = expect_isolation(16, 2, {5});
    CHECK(expected.calls == std::vector<Call>{{0, 16}, {0, 8}, {0, 4}, {4, 4}, {8, 8}});
    CHECK(expected.failed_by[4] == 3);
    CHECK(expected.failed_by[7] == 3);
    CHECK(expected.failed_by[3] == -1);
    check_isolation(16, 2, {5});
    const auto depth = GENERATE(as<std::size_t>{}, 1, 3, 4, 5);
    check_isolation(16, depth, {5, 9});
}

TEST_CASE("Batcher does not isolate without the option, for one item, or on a wrong count",
          "[isolation]") {
    std::size_t calls = 0;
    std::vector<Handle<int>> handles;
    SECTION("isolation off") {
        Batcher<int, int> batcher(inline_options(4), [&calls](Batch<int>&) -> std::vector<int> {
            ++calls;
            throw std::runtime_error("whole batch");
        });
        for (int i = 0; i < 4; ++i) {
            handles.push_back(batcher.submit(i));
        }
        batcher.close();
        CHECK(calls == 1);
        for (Handle<int>& handle : handles) {
            CHECK(error_message(outcome_of(handle)) == "whole batch");
        }
        CHECK(batcher.stats().items_failed_individually == 0);
        CHECK(batcher.stats().batches_isolated == 0);
    }
    SECTION("a batch of one item") {
        Batcher<int, int> batcher(inline_options(1).isolate_failures(true),
                                  [&calls](Batch<int>&) -> std::vector<int> {
                                      ++calls;
                                      throw std::runtime_error("alone");
                                  });
        handles.push_back(batcher.submit(1));
        batcher.close();
        CHECK(calls == 1);
        CHECK(error_message(outcome_of(handles[0])) == "alone");
        CHECK(batcher.stats().batches_isolated == 0);
        CHECK(batcher.stats().isolation_runs == 0);
    }
    SECTION("a wrong result count fails the batch without re-runs") {
        Batcher<int, int> batcher(inline_options(4).isolate_failures(true), [&calls](Batch<int>&) {
            ++calls;
            return std::vector<int>{1};
        });
        for (int i = 0; i < 4; ++i) {
            handles.push_back(batcher.submit(i));
        }
        batcher.close();
        CHECK(calls == 1);
        for (Handle<int>& handle : handles) {
            CHECK_THROWS_AS(handle.get(), microbatch::ResultCountError);
        }
        CHECK(batcher.stats().isolation_runs == 0);
    }
}

TEST_CASE("Batcher gives a re-run's wrong result count to that sub-batch's items only",
          "[isolation]") {
    // 8 items, item 6 poison: [0,8) throws; [0,4) returns 3 results (not split further:
    // ResultCountError for items 0..3); [4,8) throws; [4,6) succeeds; [6,8) throws; [6] throws;
    // [7] succeeds.
    std::vector<Call> calls;
    const int* base = nullptr;
    std::vector<Handle<int>> handles;
    Batcher<int, int> batcher(inline_options(8).isolate_failures(true), [&](Batch<int>& batch) {
        if (base == nullptr) {
            base = batch.data();
        }
        calls.push_back({static_cast<std::size_t>(batch.data() - base), batch.size()});
        std::vector<int> results;
        for (const int item : batch) {
            if (item == 6) {
                throw std::runtime_error("poison");
            }
            results.push_back(item);
        }
        if (batch.size() == 4) {
            results.pop_back();
        }
        return results;
    });
    for (int i = 0; i < 8; ++i) {
        handles.push_back(batcher.submit(i));
    }
    batcher.close();
    CHECK(calls == std::vector<Call>{{0, 8}, {0, 4}, {4, 4}, {4, 2}, {6, 2}, {6, 1}, {7, 1}});
    for (int i = 0; i < 4; ++i) {
        CHECK_THROWS_AS(handles[static_cast<std::size_t>(i)].get(), microbatch::ResultCountError);
    }
    CHECK(handles[4].get() == 4);
    CHECK(handles[5].get() == 5);
    CHECK(error_message(outcome_of(handles[6])) == "poison");
    CHECK(handles[7].get() == 7);
    const microbatch::Stats stats = batcher.stats();
    CHECK(stats.isolation_runs == 6);
    CHECK(stats.isolation_runs_failed == 4);  // [0,4) by its count, [4,8), [6,8), [6]
    CHECK(stats.items_failed == 5);
    CHECK(stats.items_failed_individually == 5);
    CHECK(stats.items_processed == 3);
    CHECK(stats.batches_failed == 1);
}

TEST_CASE("Batcher isolation passes the same items again, in sub-ranges of the batch",
          "[isolation]") {
    // Move-only items read (never moved) by process_batch: every re-run sees the items
    // themselves, with the batch's reason and sequence number.
    std::vector<std::uint64_t> sequences;
    std::vector<microbatch::DispatchReason> reasons;
    std::vector<Handle<int>> handles;
    std::unique_ptr<int>* first = nullptr;
    bool inside = true;
    Batcher<std::unique_ptr<int>, int> batcher(
        inline_options(6).isolate_failures(true), [&](Batch<std::unique_ptr<int>>& batch) {
            if (first == nullptr) {
                first = batch.data();
            }
            inside = inside && batch.data() >= first && batch.end() <= first + 6;
            sequences.push_back(batch.sequence());
            reasons.push_back(batch.reason());
            std::vector<int> results;
            for (const std::unique_ptr<int>& item : batch) {
                if (*item == 3) {
                    throw std::runtime_error("three");
                }
                results.push_back(*item + 100);
            }
            return results;
        });
    for (int i = 0; i < 5; ++i) {
        handles.push_back(batcher.submit(std::make_unique<int>(i)));
    }
    batcher.flush();  // 5 items in a batch of 6: reason flush
    batcher.close();
    CHECK(inside);
    // [0,5) throws, [0,2) succeeds, [2,5) throws, [2] succeeds, [3,5) throws, [3] throws, [4].
    CHECK(sequences == std::vector<std::uint64_t>(7, sequences.front()));
    CHECK(reasons == std::vector<microbatch::DispatchReason>(7, microbatch::DispatchReason::flush));
    for (int i = 0; i < 5; ++i) {
        if (i == 3) {
            CHECK(error_message(outcome_of(handles[3])) == "three");
        } else {
            CHECK(handles[static_cast<std::size_t>(i)].get() == i + 100);
        }
    }
}

TEST_CASE("Batcher isolation works with per-item outcomes and with R = void", "[isolation]") {
    SECTION("per-item outcomes in every re-run") {
        // Item 5 makes any call throw; item 2 fails through its own outcome.
        std::size_t calls = 0;
        std::vector<Handle<int>> handles;
        Batcher<int, int> batcher(
            inline_options(8).isolate_failures(true), [&calls](Batch<int>& batch) {
                ++calls;
                std::vector<Outcome<int>> outcomes;
                for (const int item : batch) {
                    if (item == 5) {
                        throw std::runtime_error("poison");
                    }
                    outcomes.push_back(
                        item == 2 ? Outcome<int>(std::make_exception_ptr(std::runtime_error("own")))
                                  : Outcome<int>(item));
                }
                return outcomes;
            });
        for (int i = 0; i < 8; ++i) {
            handles.push_back(batcher.submit(i));
        }
        batcher.close();
        CHECK(calls == 7);  // [0,8) [0,4) [4,8) [4,6) [4] [5] [6,8)
        for (int i = 0; i < 8; ++i) {
            const Outcome<int> outcome = outcome_of(handles[static_cast<std::size_t>(i)]);
            if (i == 2) {
                CHECK(error_message(outcome) == "own");
            } else if (i == 5) {
                CHECK(error_message(outcome) == "poison");
            } else {
                CHECK(outcome.value() == i);
            }
        }
        const microbatch::Stats stats = batcher.stats();
        CHECK(stats.items_failed == 2);
        CHECK(stats.items_failed_individually == 2);
        CHECK(stats.isolation_runs == 6);
        CHECK(stats.isolation_runs_failed == 3);  // [4,8), [4,6), [5]
    }
    SECTION("R = void") {
        std::vector<std::size_t> sizes;
        std::vector<Handle<void>> handles;
        Batcher<int> batcher(inline_options(4).isolate_failures(true), [&sizes](Batch<int>& batch) {
            sizes.push_back(batch.size());
            for (const int item : batch) {
                if (item == 0) {
                    throw std::runtime_error("zero");
                }
            }
        });
        for (int i = 0; i < 4; ++i) {
            handles.push_back(batcher.submit(i));
        }
        batcher.close();
        CHECK(sizes == std::vector<std::size_t>{4, 2, 1, 1, 2});
        CHECK(error_message(outcome_of(handles[0])) == "zero");
        for (std::size_t i = 1; i < 4; ++i) {
            CHECK(outcome_of(handles[i]).has_value());
        }
        CHECK(batcher.stats().items_processed == 3);
        CHECK(batcher.stats().items_failed_individually == 1);
    }
}

TEST_CASE("Batcher rejects an isolation_depth outside [1, 64] naming the option and value",
          "[isolation]") {
    const auto depth = GENERATE(as<std::size_t>{}, 0, 65, static_cast<std::size_t>(-1));
    const auto process = [](Batch<int>&) {};
    try {
        Batcher<int> batcher(Options{}.isolate_failures(true).isolation_depth(depth), process);
        FAIL("no exception");
    } catch (const std::invalid_argument& error) {
        CHECK(std::string(error.what()) ==
              "microbatch::Options: isolation_depth must be in [1, "
              "64] (got " +
                  std::to_string(depth) + ")");
    }
    CHECK(Options{}.isolation_depth() == Options::max_isolation_depth);
    CHECK_FALSE(Options{}.isolate_failures());
    CHECK_NOTHROW(Batcher<int>(Options{}.isolate_failures(true).isolation_depth(1), process));
}

TEST_CASE("Batcher isolates poison items exactly under concurrent producers on a pool",
          "[isolation][concurrency]") {
    // Every item divisible by 37 is poison; batches form however the threads meet, and every
    // other item must succeed, every poison item fail alone.
    constexpr int producers = 4;
    constexpr int per_producer = 2000;
    std::atomic<int> bad_outcomes{0};
    std::atomic<int> completions{0};
    microbatch::ThreadPool pool(2);
    {
        Batcher<int, int> batcher(Options{}
                                      .max_batch_size(32)
                                      .max_delay(std::chrono::microseconds(50))
                                      .executor(pool.executor())
                                      .isolate_failures(true),
                                  [](Batch<int>& batch) {
                                      std::vector<int> results;
                                      for (const int item : batch) {
                                          if (item % 37 == 0) {
                                              throw std::runtime_error("poison");
                                          }
                                          results.push_back(item + 1);
                                      }
                                      return results;
                                  });
        test_support::run_concurrently(producers, [&](std::size_t t) {
            for (int i = 0; i < per_producer; ++i) {
                const int item = static_cast<int>(t) * per_producer + i;
                batcher.submit(item, [&, item](Outcome<int>&& outcome) {
                    const bool ok = item % 37 == 0
                                        ? !outcome.has_value() && error_message(outcome) == "poison"
                                        : outcome.has_value() && outcome.value() == item + 1;
                    if (!ok) {
                        bad_outcomes.fetch_add(1);
                    }
                    completions.fetch_add(1);
                });
            }
        });
        batcher.close();
        const microbatch::Stats stats = batcher.stats();
        constexpr int total = producers * per_producer;
        int poison = 0;
        for (int item = 0; item < total; ++item) {
            poison += item % 37 == 0 ? 1 : 0;
        }
        CHECK(stats.items_failed == static_cast<std::uint64_t>(poison));
        CHECK(stats.items_processed == static_cast<std::uint64_t>(total - poison));
        // A failed batch of one item is not re-run (nothing to isolate): its item failed with
        // the batch. Every other poison item failed in a re-run.
        CHECK(stats.batches_isolated <= stats.batches_failed);
        CHECK(stats.items_failed_individually + (stats.batches_failed - stats.batches_isolated) ==
              static_cast<std::uint64_t>(poison));
        CHECK(stats.isolation_runs >= 2 * stats.batches_isolated);
    }
    CHECK(bad_outcomes.load() == 0);
    CHECK(completions.load() == producers * per_producer);
}
