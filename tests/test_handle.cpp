// Tests of microbatch::Handle and microbatch::Outcome: future-like waiting, value and
// exception delivery, validity rules; and the per-thread pool that recycles handle states
// (detail/handle_state.hpp): recycled states start clean, states may be released on any
// thread, thread exit frees a thread's pool (leaks would fail the ASan/LSan build), move-only
// results.

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "catch_shim.hpp"
#include "microbatch/batcher.hpp"
#include "microbatch/detail/handle_state.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using microbatch::Batch;
using microbatch::Batcher;
using microbatch::Handle;
using microbatch::Options;
using microbatch::Outcome;
using microbatch::detail::HandleState;
using microbatch::detail::HandleStatePool;

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

// Issue 15, item 3: wait_for computed now() + timeout unchecked, so a huge timeout overflowed
// (undefined behaviour, reported by UBSan) and in practice returned timeout at once.
TEST_CASE("Handle wait_for with a huge timeout waits instead of overflowing",
          "[handle][regression][issue15]") {
    test_support::Gate gate;
    Batcher<int, int> batcher(Options{}.max_batch_size(1).workers(1), [&](Batch<int>& batch) {
        gate.wait();
        return std::vector<int>{batch[0] * 10};
    });
    Handle<int> handle = batcher.submit(4);
    // Pending: a zero or negative timeout only checks, however negative.
    CHECK(handle.wait_for(0s) == std::future_status::timeout);
    CHECK(handle.wait_for(std::chrono::nanoseconds::min()) == std::future_status::timeout);
    std::thread opener([&] { gate.open(); });
    CHECK(handle.wait_for(std::chrono::nanoseconds::max()) == std::future_status::ready);
    opener.join();
    CHECK(handle.wait_for(std::chrono::hours(24 * 365 * 300)) == std::future_status::ready);
    CHECK(handle.wait_for(std::chrono::duration<double>(1e300)) == std::future_status::ready);
    CHECK(handle.wait_for(std::chrono::seconds::max()) == std::future_status::ready);
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

// ---- Recycled handle states -------------------------------------------------------------------

namespace {

/// "value N" or "error MESSAGE": what an outcome holds, for comparing outcomes across rounds.
template <class R>
std::string describe(Outcome<R>& outcome) {
    try {
        return "value " + std::to_string(outcome.value());
    } catch (const std::exception& error) {
        return std::string("error ") + error.what();
    }
}

/// Counts its live instances, to show that results do not outlive their handles.
struct Tracked {
    static inline std::atomic<int> live{0};
    explicit Tracked(int v) : value(v) { ++live; }
    Tracked(const Tracked&) = delete;
    Tracked& operator=(const Tracked&) = delete;
    ~Tracked() { --live; }
    int value;
};

}  // namespace

TEST_CASE("A recycled handle state starts clean and delivers its own outcome",
          "[handle][recycle]") {
    // On a fresh thread (an empty pool), fill one block with states, complete and release them
    // all: the empty block goes to the thread's cache, and the next block's worth of states
    // reuses exactly the same slots. Each reused state must start not ready, with no outcome,
    // and deliver the value or exception it is given now, never the previous one's.
    constexpr std::uint32_t per_block = HandleStatePool<int>::states_per_block;
    struct Observed {
        bool same_slot = false;
        bool ready_before_set = true;
        bool wait_until_timed_out = false;
        bool ready_after_set = false;
        std::string first;
        std::string second;
        bool poisoned_after_release = true;  // checked only under AddressSanitizer
    };
    std::vector<Observed> observed(per_block);
    std::thread([&] {
        std::vector<HandleState<int>*> first(per_block);
        for (std::uint32_t i = 0; i < per_block; ++i) {
            first[i] = HandleState<int>::create();
            if (i % 2 == 0) {
                first[i]->set(Outcome<int>(static_cast<int>(i)));
            } else {
                first[i]->set(Outcome<int>(
                    std::make_exception_ptr(std::runtime_error("first " + std::to_string(i)))));
            }
            observed[i].first = describe(first[i]->outcome());
            first[i]->release();  // the completion's reference
            first[i]->release();  // the handle's: the state is destroyed, its slot retired
#ifdef MICROBATCH_DETAIL_ASAN
            observed[i].poisoned_after_release = __asan_address_is_poisoned(first[i]) != 0;
#endif
        }
        for (std::uint32_t i = 0; i < per_block; ++i) {
            HandleState<int>* const state = HandleState<int>::create();
            observed[i].same_slot = state == first[i];
            observed[i].ready_before_set = state->ready();
            observed[i].wait_until_timed_out = !state->wait_until(std::chrono::steady_clock::now());
            if (i % 2 == 0) {
                state->set(Outcome<int>(
                    std::make_exception_ptr(std::logic_error("second " + std::to_string(i)))));
            } else {
                state->set(Outcome<int>(1000 + static_cast<int>(i)));
            }
            observed[i].ready_after_set = state->ready();
            state->wait();
            observed[i].second = describe(state->outcome());
            state->release();
            state->release();
        }
    }).join();
    for (std::uint32_t i = 0; i < per_block; ++i) {
        INFO("slot " << i);
        CHECK(observed[i].same_slot);
        CHECK_FALSE(observed[i].ready_before_set);
        CHECK(observed[i].wait_until_timed_out);
        CHECK(observed[i].ready_after_set);
        CHECK(observed[i].first ==
              (i % 2 == 0 ? "value " + std::to_string(i) : "error first " + std::to_string(i)));
        CHECK(observed[i].second == (i % 2 == 0 ? "error second " + std::to_string(i)
                                                : "value " + std::to_string(1000 + i)));
        CHECK(observed[i].poisoned_after_release);
    }
}

TEST_CASE("Handles on recycled states each deliver their own value or exception",
          "[handle][recycle]") {
    // Many more items than one thread's pool holds, one item per batch, alternating success and
    // failure: every handle reports exactly its own item. wait_idle() before get() makes this
    // thread drop each state's last reference, so its slots are reused over and over. Then an
    // item held in process_batch by a gate: its handle, on a reused slot, is not ready until the
    // gate opens.
    constexpr int items = 8 * static_cast<int>(HandleStatePool<int>::states_per_block *
                                               (HandleStatePool<int>::max_cached_blocks + 1));
    constexpr int held_item = 999'999;  // a multiple of 3: fails
    test_support::Gate gate;
    Batcher<int, int> batcher(Options{}.max_batch_size(1).workers(1), [&](Batch<int>& batch) {
        if (batch[0] == held_item) {
            gate.wait();
        }
        if (batch[0] % 3 == 0) {
            throw std::runtime_error("item " + std::to_string(batch[0]));
        }
        return std::vector<int>{batch[0] * 2};
    });
    int wrong = 0;
    for (int i = 0; i < items; ++i) {
        Handle<int> handle = batcher.submit(i);
        batcher.wait_idle();  // the worker has released its reference
        if (i % 3 == 0) {
            try {
                handle.get();
                ++wrong;
            } catch (const std::runtime_error& error) {
                wrong += error.what() == "item " + std::to_string(i) ? 0 : 1;
            }
        } else {
            wrong += handle.get() == 2 * i ? 0 : 1;
        }
    }
    CHECK(wrong == 0);

    Handle<int> held = batcher.submit(held_item + 1);  // not a multiple of 3: a value
    CHECK(held.get() == 2 * (held_item + 1));
    held = batcher.submit(held_item);
    CHECK_FALSE(held.ready());
    CHECK(held.wait_until(std::chrono::steady_clock::now()) == std::future_status::timeout);
    gate.open();
    CHECK_THROWS_WITH(held.get(), "item 999999");
}

TEST_CASE("Handle states may be released and consumed on threads that never submit",
          "[handle][recycle][concurrency]") {
    // Producers submit and publish their handles; one consumer per producer takes them as they
    // come, calling get() on some and dropping the others. The last reference to a state (and
    // so the retirement of its block) lands on the producer, the consumer or the worker,
    // depending on timing; every outcome must still be right, with no race (TSan) and no leak
    // (ASan/LSan).
    const int producers = GENERATE(1, 2, 4);
    constexpr int per_producer = 2000;
    Batcher<int, int> batcher(Options{}.max_batch_size(16).workers(2), [](Batch<int>& batch) {
        return std::vector<int>(batch.begin(), batch.end());
    });
    struct Lane {
        std::vector<Handle<int>> handles = std::vector<Handle<int>>(per_producer);
        std::atomic<int> published{0};
        long long sum = 0;
        int wrong = 0;
    };
    std::vector<Lane> lanes(static_cast<std::size_t>(producers));
    test_support::run_concurrently(2 * lanes.size(), [&](std::size_t index) {
        Lane& lane = lanes[index / 2];
        const int base = static_cast<int>(index / 2) * per_producer;
        if (index % 2 == 0) {
            for (int i = 0; i < per_producer; ++i) {
                lane.handles[static_cast<std::size_t>(i)] = batcher.submit(base + i);
                // release: publishes the handle to the consumer.
                lane.published.store(i + 1, std::memory_order_release);
            }
            return;
        }
        for (int i = 0; i < per_producer;) {
            // acquire: pairs with the producer's release; the handles up to here are written.
            const int available = lane.published.load(std::memory_order_acquire);
            if (available == i) {
                std::this_thread::yield();
                continue;
            }
            for (; i < available; ++i) {
                Handle<int>& handle = lane.handles[static_cast<std::size_t>(i)];
                if (i % 4 == 3) {
                    handle = Handle<int>();  // dropped, maybe before it is processed
                } else {
                    const int value = handle.get();
                    lane.sum += value;
                    lane.wrong += value == base + i ? 0 : 1;
                }
            }
        }
    });
    batcher.close();
    for (std::size_t p = 0; p < lanes.size(); ++p) {
        long long expected = 0;
        for (int i = 0; i < per_producer; ++i) {
            expected += i % 4 == 3 ? 0 : static_cast<long long>(p) * per_producer + i;
        }
        CHECK(lanes[p].wrong == 0);
        CHECK(lanes[p].sum == expected);
    }
}

namespace {

/// Submits and waits for one item from its destructor: run from a thread_local destroyed after
/// the thread's handle state pool, it exercises the path that bypasses the destroyed pool.
struct SubmitsAtThreadExit {
    Batcher<int, int>* batcher = nullptr;
    std::atomic<int>* results = nullptr;
    ~SubmitsAtThreadExit() {
        if (batcher != nullptr) {
            results->fetch_add(batcher->submit(20).get());
            Handle<int> dropped = batcher->submit(1);  // released by this destructor too
        }
    }
};

}  // namespace

TEST_CASE("Thread exit frees the thread's handle state pool, and states outlive their thread",
          "[handle][recycle][concurrency]") {
    // Short-lived threads submit handles: some are consumed on the thread, some are handed to
    // this thread and released after the submitting thread has exited (its pool is gone by
    // then; the state's block must not be). A thread_local whose destructor runs after the pool's
    // creates and releases states with no pool. Any leak fails the ASan (LeakSanitizer) build;
    // any use of freed memory fails ASan and TSan.
    Batcher<int, int> batcher(
        Options{}.max_batch_size(1).executor([](microbatch::Task task) { task(); }),
        [](Batch<int>& batch) { return std::vector<int>{batch[0] * 2}; });
    constexpr int threads = 8;
    constexpr int per_thread = 3 * static_cast<int>(HandleStatePool<int>::states_per_block) + 7;
    std::vector<std::vector<Handle<int>>> kept(threads);
    std::atomic<int> at_exit{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            // Constructed before this thread's handle state pool, so destroyed after it.
            static thread_local SubmitsAtThreadExit submits_at_exit;
            submits_at_exit.batcher = &batcher;
            submits_at_exit.results = &at_exit;
            for (int i = 0; i < per_thread; ++i) {
                Handle<int> handle = batcher.submit(i);
                if (i % 2 == 0) {
                    kept[static_cast<std::size_t>(t)].push_back(std::move(handle));
                } else {
                    (void)handle.get();
                }
            }
        });
    }
    for (auto& thread : pool) {
        thread.join();
    }
    CHECK(at_exit.load() == threads * 40);
    long long sum = 0;
    for (auto& handles : kept) {
        for (auto& handle : handles) {
            sum += handle.get();  // the last release happens here, on another thread
        }
    }
    long long expected = 0;
    for (int i = 0; i < per_thread; i += 2) {
        expected += 2LL * i;
    }
    CHECK(sum == threads * expected);
}

TEST_CASE("Recycled handle states work with move-only results and free them on release",
          "[handle][recycle]") {
    // Results are move-only and counted: whether a handle is consumed with get() or dropped
    // unread, its result is destroyed when the last reference goes, not kept by the pool.
    Tracked::live = 0;
    {
        Batcher<int, std::unique_ptr<Tracked>> batcher(
            Options{}.max_batch_size(8).workers(1), [](Batch<int>& batch) {
                std::vector<std::unique_ptr<Tracked>> out;
                for (int item : batch) {
                    out.push_back(std::make_unique<Tracked>(item));
                }
                return out;
            });
        constexpr int rounds =
            4 *
            static_cast<int>(HandleStatePool<std::unique_ptr<Tracked>>::states_per_block *
                             (HandleStatePool<std::unique_ptr<Tracked>>::max_cached_blocks + 1));
        std::array<Handle<std::unique_ptr<Tracked>>, 8> window;
        int wrong = 0;
        for (int round = 0; round < rounds / 8; ++round) {
            for (int k = 0; k < 8; ++k) {
                window[static_cast<std::size_t>(k)] = batcher.submit(round * 8 + k);
            }
            batcher.wait_idle();
            for (int k = 0; k < 8; ++k) {
                auto& handle = window[static_cast<std::size_t>(k)];
                if (k % 2 == 0) {
                    std::unique_ptr<Tracked> result = handle.get();
                    wrong += result->value == round * 8 + k ? 0 : 1;
                } else {
                    handle = {};  // dropped unread: its result is destroyed now
                }
            }
            wrong += Tracked::live.load() == 0 ? 0 : 1;
        }
        CHECK(wrong == 0);
    }
    CHECK(Tracked::live.load() == 0);
}
