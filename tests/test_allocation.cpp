// Allocation discipline of microbatch::Batcher (issue 5): a counting global allocator shows that
// after warm-up the callback, post, try_submit, submit_for and handle paths make no heap
// allocation per item, measures what the sealing producer and the workers allocate and what
// handle mode allocates when handles are dropped on other threads, and shows that memory stays
// bounded by the configured capacity when a producer outruns the workers.
// Each case prints what it measured ("[alloc] ...").
//
// Assertions run on the test thread only; counts are exact, nothing depends on timing.

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <thread>
#include <vector>

#include "catch_shim.hpp"
#include "microbatch/batcher.hpp"
#include "microbatch/detail/handle_state.hpp"
#include "microbatch/thread_pool.hpp"
#include "replace_operator_new.hpp"
#include "test_support.hpp"

using microbatch::Batch;
using microbatch::Batcher;
using microbatch::Handle;
using microbatch::Options;
using microbatch::Outcome;
using microbatch::SubmitStatus;

// ---- A counting global allocator ------------------------------------------------------------
//
// Every block carries a 16-byte prefix (malloc's pointer and the requested size) just below the
// pointer handed out, so every form of operator delete can free it and account for its size.

namespace counting {

constexpr bool enabled = MICROBATCH_TEST_REPLACES_NEW != 0;

// Process-wide figures. Relaxed: statistics, read by the test thread after the threads that
// allocated have been synchronised with (wait_idle, close, join).
std::atomic<std::uint64_t> allocations{0};
std::atomic<std::uint64_t> deallocations{0};
std::atomic<std::int64_t> live_bytes{0};
std::atomic<std::int64_t> peak_live_bytes{0};

// The calling thread's figures.
thread_local std::uint64_t thread_allocations = 0;
thread_local std::uint64_t thread_deallocations = 0;

// Allocations of exactly tracked_size bytes, process-wide (0: track nothing). Relaxed, as above.
std::atomic<std::size_t> tracked_size{0};
std::atomic<std::uint64_t> tracked_allocations{0};

constexpr std::size_t prefix = 16;

struct Prefix {
    void* raw;
    std::size_t size;
};
static_assert(sizeof(Prefix) <= prefix, "the prefix must fit");

void* allocate(std::size_t size, std::size_t alignment) noexcept {
    alignment = std::max(alignment, prefix);
    void* raw = std::malloc(size + alignment + prefix);
    if (raw == nullptr) {
        return nullptr;
    }
    const auto start = reinterpret_cast<std::uintptr_t>(raw) + prefix;
    const std::uintptr_t user = (start + alignment - 1) & ~(std::uintptr_t{alignment} - 1);
    reinterpret_cast<Prefix*>(user - prefix)->raw = raw;
    reinterpret_cast<Prefix*>(user - prefix)->size = size;
    ++thread_allocations;
    allocations.fetch_add(1, std::memory_order_relaxed);
    if (size == tracked_size.load(std::memory_order_relaxed)) {
        tracked_allocations.fetch_add(1, std::memory_order_relaxed);
    }
    const std::int64_t live =
        live_bytes.fetch_add(static_cast<std::int64_t>(size), std::memory_order_relaxed) +
        static_cast<std::int64_t>(size);
    std::int64_t peak = peak_live_bytes.load(std::memory_order_relaxed);
    while (live > peak &&
           !peak_live_bytes.compare_exchange_weak(peak, live, std::memory_order_relaxed)) {
    }
    return reinterpret_cast<void*>(user);
}

void release(void* memory) noexcept {
    if (memory == nullptr) {
        return;
    }
    const Prefix* block =
        reinterpret_cast<const Prefix*>(reinterpret_cast<std::uintptr_t>(memory) - prefix);
    ++thread_deallocations;
    deallocations.fetch_add(1, std::memory_order_relaxed);
    live_bytes.fetch_sub(static_cast<std::int64_t>(block->size), std::memory_order_relaxed);
    std::free(block->raw);
}

/// Restarts the peak at the current live figure.
inline void reset_peak() {
    peak_live_bytes.store(live_bytes.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

}  // namespace counting

void* test_allocate(std::size_t size, std::size_t alignment) noexcept {
    return counting::allocate(size, alignment);
}
void test_release(void* memory, bool) noexcept {
    counting::release(memory);  // the prefix handles both layouts
}

namespace {

#define SKIP_WITHOUT_ALLOCATION_COUNTING()                                                \
    do {                                                                                  \
        if (!counting::enabled) {                                                         \
            WARN(                                                                         \
                "skipped: operator new cannot be replaced under clang's sanitizers; run " \
                "this case in a g++ or non-sanitized build");                             \
            return;                                                                       \
        }                                                                                 \
    } while (false)

constexpr auto no_delay_bound = std::chrono::nanoseconds::max();

/// Allocations made by the calling thread, and by the whole process, between two points.
class AllocationWindow {
public:
    AllocationWindow()
        : thread_start_(counting::thread_allocations),
          process_start_(counting::allocations.load()) {}
    std::uint64_t this_thread() const { return counting::thread_allocations - thread_start_; }
    std::uint64_t process() const { return counting::allocations.load() - process_start_; }
    std::uint64_t other_threads() const { return process() - this_thread(); }

private:
    std::uint64_t thread_start_;
    std::uint64_t process_start_;
};

enum class Path { post, try_submit, submit_for, callback, handle, handle_get, post_n, callback_n };

/// Items per call on the bulk paths (issue 13); not a divisor of the batch size, so runs
/// straddle batches.
constexpr int bulk_run = 10;

/// Handles kept by the handle_get path before it waits for them: one batch in the tests below.
constexpr std::size_t handle_window = 64;

const char* to_string(Path path) {
    switch (path) {
        case Path::post:
            return "post";
        case Path::try_submit:
            return "try_submit";
        case Path::submit_for:
            return "submit_for";
        case Path::callback:
            return "callback submit";
        case Path::handle:
            return "handle submit, dropped at once";
        case Path::handle_get:
            return "handle submit, then get";
        case Path::post_n:
            return "post_n";
        case Path::callback_n:
            return "submit_n with a callback";
    }
    return "?";
}

/// Submits @p count items with handles, handle_window at a time, and calls get() on each window
/// before submitting the next (no allocation of its own: the window lives on the stack).
template <class B>
void submit_and_get(B& batcher, int count) {
    std::array<Handle<typename B::result_type>, handle_window> window;
    for (int i = 0; i < count;) {
        std::size_t filled = 0;
        for (; filled < window.size() && i < count; ++filled, ++i) {
            window[filled] = batcher.submit(i);
        }
        if (filled < window.size()) {
            batcher.flush();  // a partial batch: do not wait for max_delay
        }
        for (std::size_t k = 0; k < filled; ++k) {
            window[k].get();
        }
    }
}

/// Submits @p count items through @p path (retrying a refused try_submit/submit_for).
template <class B>
void submit_many(B& batcher, Path path, int count, std::atomic<int>& callbacks) {
    if (path == Path::handle_get) {
        submit_and_get(batcher, count);
        return;
    }
    if (path == Path::post_n || path == Path::callback_n) {
        std::array<int, bulk_run> run{};  // on the stack: the test allocates nothing itself
        for (int at = 0; at < count; at += bulk_run) {
            const auto n = static_cast<std::size_t>(std::min(bulk_run, count - at));
            for (std::size_t k = 0; k < n; ++k) {
                run[k] = at + static_cast<int>(k);
            }
            if (path == Path::post_n) {
                batcher.post_n(run.begin(), n);
            } else {
                batcher.submit_n(run.begin(), n, [&callbacks](std::size_t, Outcome<void>&&) {
                    callbacks.fetch_add(1, std::memory_order_relaxed);
                });
            }
        }
        return;
    }
    for (int i = 0; i < count; ++i) {
        switch (path) {
            case Path::post:
                batcher.post(i);
                break;
            case Path::try_submit:
                while (batcher.try_submit(i) != SubmitStatus::accepted) {
                }
                break;
            case Path::submit_for:
                while (batcher.submit_for(i, std::chrono::milliseconds(1)) !=
                       SubmitStatus::accepted) {
                }
                break;
            case Path::callback:
                batcher.submit(i, [&callbacks](Outcome<void>&&) {
                    callbacks.fetch_add(1, std::memory_order_relaxed);
                });
                break;
            case Path::handle:
                (void)batcher.submit(i);  // the handle is dropped: the item is still processed
                break;
            case Path::handle_get:
            case Path::post_n:
            case Path::callback_n:
                break;  // handled above
        }
    }
}

}  // namespace

TEST_CASE("Batcher submits without allocating when batches run on an inline executor",
          "[batcher][alloc]") {
    SKIP_WITHOUT_ALLOCATION_COUNTING();
    // Everything runs on this thread: claiming slots, sealing, running each batch and its
    // callbacks. So every allocation the batcher makes per item or per batch would be counted.
    // Handle states included: both references are dropped on this thread, so the state blocks
    // come back to its pool and are reused. The pool grows to the most blocks ever in use at
    // once, which depends on how batches line up with blocks; the warm-up is whole batches and
    // whole blocks, as the measured run, so that it meets the same peak.
    const Path path = GENERATE(Path::post, Path::post_n, Path::callback_n, Path::try_submit,
                               Path::submit_for, Path::callback, Path::handle, Path::handle_get);
    INFO("path " << to_string(path));
    constexpr int items = 10'000;
    constexpr int warm_up = 1024;
    static_assert(warm_up % 64 == 0 &&
                  warm_up % microbatch::detail::HandleStatePool<void>::states_per_block == 0);
    std::atomic<int> processed{0};
    std::atomic<int> callbacks{0};
    Batcher<int> batcher(Options{}
                             .max_batch_size(64)
                             .capacity(256)
                             .max_delay(no_delay_bound)
                             .executor([](microbatch::Task task) { task(); }),
                         [&processed](Batch<int>& batch) {
                             processed.fetch_add(static_cast<int>(batch.size()),
                                                 std::memory_order_relaxed);
                         });
    submit_many(batcher, path, warm_up, callbacks);
    batcher.wait_idle();

    const AllocationWindow window;
    submit_many(batcher, path, items, callbacks);
    batcher.wait_idle();
    const std::uint64_t allocated = window.process();
    std::printf("[alloc] inline executor, %s: %d items, %llu allocations\n", to_string(path), items,
                static_cast<unsigned long long>(allocated));
    CHECK(allocated == 0);
    batcher.close();
    CHECK(processed.load() == items + warm_up);
    CHECK(callbacks.load() ==
          (path == Path::callback || path == Path::callback_n ? items + warm_up : 0));
}

TEST_CASE("Batcher producers and workers allocate nothing per item with the owned pool",
          "[batcher][alloc]") {
    SKIP_WITHOUT_ALLOCATION_COUNTING();
    // The producer seals every batch it fills and queues it on the pool: std::deque needs a new
    // block every few dozen tasks (512-byte blocks of 32-byte std::function tasks in libstdc++),
    // an allocation per several batches, never per item. The worker's side (popping the task,
    // running the batch and its callbacks, releasing handle states) allocates nothing: the
    // task's lambda fits std::function's small buffer.
    // Handle states come from blocks of states_per_block. Which thread drops a state's last
    // reference depends on timing here (the worker's completion or the producer's handle), and
    // a block is reused by the thread that retires it last, so the producer allocates anything
    // from no block at all to one per states_per_block items; never more.
    const Path path = GENERATE(Path::post, Path::post_n, Path::callback_n, Path::try_submit,
                               Path::submit_for, Path::callback, Path::handle, Path::handle_get);
    INFO("path " << to_string(path));
    using StatePool = microbatch::detail::HandleStatePool<void>;
    counting::tracked_size = sizeof(StatePool::Block);
    constexpr int items = 10'000;
    constexpr int batch_size = 64;
    constexpr int batches = items / batch_size + 1;  // + the partial batch wait_idle flushes
    std::atomic<int> processed{0};
    std::atomic<int> callbacks{0};
    Batcher<int> batcher(
        Options{}.max_batch_size(batch_size).capacity(4 * batch_size).max_delay(no_delay_bound),
        [&processed](Batch<int>& batch) {
            processed.fetch_add(static_cast<int>(batch.size()), std::memory_order_relaxed);
        });
    submit_many(batcher, path, 5000, callbacks);  // warm-up: grows the pool's queue
    batcher.wait_idle();

    const AllocationWindow window;
    const std::uint64_t blocks_before = counting::tracked_allocations.load();
    submit_many(batcher, path, items, callbacks);
    batcher.wait_idle();
    const std::uint64_t producer = window.this_thread();
    const std::uint64_t workers = window.other_threads();
    const std::uint64_t state_blocks = counting::tracked_allocations.load() - blocks_before;
    counting::tracked_size = 0;
    std::printf(
        "[alloc] owned pool, %s: %d items in ~%d batches: producer thread %llu allocations "
        "(%llu handle state blocks of %u states), worker %llu\n",
        to_string(path), items, batches, static_cast<unsigned long long>(producer),
        static_cast<unsigned long long>(state_blocks), StatePool::states_per_block,
        static_cast<unsigned long long>(workers));
    CHECK(state_blocks <= items / StatePool::states_per_block + 1);
    // Queue blocks: at most one allocation per 8 batches (one per 16 with libstdc++).
    CHECK(producer - state_blocks <= batches / 8 + 2);
    CHECK(workers == 0);
    batcher.close();
    CHECK(processed.load() == items + 5000);
}

TEST_CASE(
    "Batcher handle mode allocates nothing per item when the submitting thread drops the "
    "handles",
    "[batcher][alloc][handle]") {
    SKIP_WITHOUT_ALLOCATION_COUNTING();
    // The common pattern with a real worker: submit a batch's worth of items, wait, take the
    // results. wait_idle() makes the order exact: the worker has dropped its references (its
    // completions ran) before this thread drops the last ones, so every block comes back to
    // this thread's pool. The state blocks are told apart from the pool's queue blocks by size.
    constexpr int batch_size = static_cast<int>(handle_window);
    constexpr int rounds = 200;
    using StatePool = microbatch::detail::HandleStatePool<int>;
    Batcher<int, int> batcher(
        Options{}.max_batch_size(batch_size).capacity(4 * batch_size).max_delay(no_delay_bound),
        [](Batch<int>& batch) { return std::vector<int>(batch.begin(), batch.end()); });
    std::array<Handle<int>, handle_window> handles;
    int next = 0;
    long long sum = 0;
    const auto run_rounds = [&](int count) {
        for (int round = 0; round < count; ++round) {
            for (auto& handle : handles) {
                handle = batcher.submit(next++);
            }
            batcher.wait_idle();
            for (auto& handle : handles) {
                sum += handle.get();
            }
        }
    };
    run_rounds(10);  // warm-up: fills this thread's pool and the executor's queue
    counting::tracked_size = sizeof(StatePool::Block);
    const std::uint64_t blocks_before = counting::tracked_allocations.load();
    const AllocationWindow window;
    run_rounds(rounds);
    const std::uint64_t producer = window.this_thread();
    const std::uint64_t workers = window.other_threads();
    const std::uint64_t state_blocks = counting::tracked_allocations.load() - blocks_before;
    counting::tracked_size = 0;
    std::printf(
        "[alloc] owned pool, handles dropped by the submitting thread: %d items, %llu handle "
        "state blocks, producer thread %llu allocations, worker %llu\n",
        rounds * batch_size, static_cast<unsigned long long>(state_blocks),
        static_cast<unsigned long long>(producer), static_cast<unsigned long long>(workers));
    CHECK(state_blocks == 0);
    CHECK(producer <= rounds / 8 + 2);  // queue blocks only, as in the case above
    CHECK(workers == static_cast<std::uint64_t>(rounds));  // process_batch's result vectors
    const long long n = next;
    CHECK(sum == n * (n - 1) / 2);
}

TEST_CASE(
    "Handle states dropped on another thread cost one block per states_per_block items, "
    "and thread exit frees them all",
    "[batcher][alloc][handle]") {
    SKIP_WITHOUT_ALLOCATION_COUNTING();
    // A fresh producer thread (empty pool) submits on an inline executor and hands every handle
    // to a second thread, which drops them (half after get(), half without). No block ever comes
    // back to the producer, so it allocates exactly one block per states_per_block states, plus
    // the result vector process_batch returns for each batch (run inline, on the producer).
    // The dropping thread allocates nothing and keeps at most max_cached_blocks empty blocks.
    // When both threads have exited, every byte is back: their pools freed what they held.
    using StatePool = microbatch::detail::HandleStatePool<long>;
    constexpr int batch_size = 16;
    constexpr int items = 10 * static_cast<int>(StatePool::states_per_block) + 5;
    constexpr std::uint64_t expected_blocks =
        (items + StatePool::states_per_block - 1) / StatePool::states_per_block;
    constexpr std::uint64_t expected_batches = (items + batch_size - 1) / batch_size;
    Batcher<int, long> batcher(Options{}
                                   .max_batch_size(batch_size)
                                   .capacity(64)
                                   .max_delay(no_delay_bound)
                                   .executor([](microbatch::Task task) { task(); }),
                               [](Batch<int>& batch) {
                                   std::vector<long> out;
                                   out.reserve(batch.size());
                                   for (int item : batch) {
                                       out.push_back(2L * item);
                                   }
                                   return out;
                               });
    std::vector<Handle<long>> handles;
    handles.reserve(items);
    const std::int64_t live_before = counting::live_bytes.load();

    counting::tracked_size = sizeof(StatePool::Block);
    const std::uint64_t blocks_before = counting::tracked_allocations.load();
    std::uint64_t producer_allocations = 0;
    std::thread producer([&] {
        const std::uint64_t start = counting::thread_allocations;
        for (int i = 0; i < items; ++i) {
            handles.push_back(batcher.submit(i));
        }
        batcher.flush();  // the last partial batch
        producer_allocations = counting::thread_allocations - start;
    });
    producer.join();  // its pool gives back the unused slots of its current block
    const std::int64_t held_by_handles = counting::live_bytes.load() - live_before;

    std::uint64_t dropper_allocations = 0;
    long long sum = 0;
    std::thread dropper([&] {
        const std::uint64_t start = counting::thread_allocations;
        for (std::size_t i = 0; i < handles.size(); ++i) {
            if (i % 2 == 0) {
                sum += handles[i].get();
            } else {
                handles[i] = Handle<long>();
            }
        }
        dropper_allocations = counting::thread_allocations - start;
    });
    dropper.join();  // its pool frees the empty blocks it kept
    const std::int64_t leaked = counting::live_bytes.load() - live_before;
    const std::uint64_t state_blocks = counting::tracked_allocations.load() - blocks_before;
    counting::tracked_size = 0;
    std::printf(
        "[alloc] handles dropped on another thread: %d items, %llu handle state blocks of %u "
        "states, producer %llu allocations, dropper %llu, %lld bytes held by the handles, %lld "
        "bytes left after both threads exited\n",
        items, static_cast<unsigned long long>(state_blocks), StatePool::states_per_block,
        static_cast<unsigned long long>(producer_allocations),
        static_cast<unsigned long long>(dropper_allocations),
        static_cast<long long>(held_by_handles), static_cast<long long>(leaked));
    CHECK(state_blocks == expected_blocks);
    CHECK(producer_allocations == expected_blocks + expected_batches);
    CHECK(held_by_handles == static_cast<std::int64_t>(expected_blocks * sizeof(StatePool::Block)));
    CHECK(dropper_allocations == 0);
    CHECK(leaked == 0);
    long long expected_sum = 0;
    for (int i = 0; i < items; i += 2) {
        expected_sum += 2LL * i;
    }
    CHECK(sum == expected_sum);
}

TEST_CASE("Batcher workers allocate only what process_batch allocates", "[batcher][alloc]") {
    SKIP_WITHOUT_ALLOCATION_COUNTING();
    // With results (R = int), process_batch returns a std::vector: exactly one allocation per
    // batch, made by the user's function on the worker; the batcher adds none.
    constexpr int items = 6400;
    constexpr int batch_size = 32;
    std::atomic<int> callbacks{0};
    std::atomic<int> batches{0};
    Batcher<int, int> batcher(Options{}
                                  .max_batch_size(batch_size)
                                  .capacity(8 * batch_size)
                                  .max_delay(no_delay_bound)
                                  .workers(2),
                              [&batches](Batch<int>& batch) {
                                  batches.fetch_add(1, std::memory_order_relaxed);
                                  return std::vector<int>(batch.begin(), batch.end());
                              });
    const auto submit_all = [&](int count) {
        for (int i = 0; i < count; ++i) {
            batcher.submit(i, [&callbacks](Outcome<int>&& outcome) {
                callbacks.fetch_add(outcome.value() >= 0 ? 1 : 0, std::memory_order_relaxed);
            });
        }
    };
    submit_all(3200);  // warm-up
    batcher.wait_idle();
    const int batches_before = batches.load();

    const AllocationWindow window;
    submit_all(items);
    batcher.wait_idle();
    const int batches_run = batches.load() - batches_before;
    std::printf("[alloc] owned pool, results: %d batches, worker allocations %llu\n", batches_run,
                static_cast<unsigned long long>(window.other_threads()));
    CHECK(batches_run == items / batch_size);
    CHECK(window.other_threads() == static_cast<std::uint64_t>(batches_run));
    batcher.close();
    CHECK(callbacks.load() == items + 3200);
}

TEST_CASE("Batcher accepts exactly its capacity and allocates nothing more when workers stall",
          "[batcher][alloc][backpressure]") {
    SKIP_WITHOUT_ALLOCATION_COUNTING();
    // Capacity 100 with batch size 16: 7 buffers for full batches plus one of room for the
    // worker's partial batch (in-flight limit 1), all allocated at construction. Capacity is
    // counted in items (issue 10): with the only worker stalled, one producer gets exactly 100
    // items accepted (six batches of 16, one of 4); then try_submit reports full, however often
    // it is called, without allocating.
    test_support::Gate release;
    std::atomic<int> processed{0};
    const std::int64_t before_construction = counting::live_bytes.load();
    Batcher<std::array<char, 256>> batcher(
        Options{}.max_batch_size(16).capacity(100).max_delay(no_delay_bound).workers(1),
        [&](Batch<std::array<char, 256>>& batch) {
            release.wait();
            processed.fetch_add(static_cast<int>(batch.size()));
        });
    const std::int64_t reserved = counting::live_bytes.load() - before_construction;
    const std::array<char, 256> item{};

    const AllocationWindow window;
    const std::int64_t live_before = counting::live_bytes.load();
    int accepted = 0;
    while (batcher.try_submit(item) == SubmitStatus::accepted) {
        ++accepted;
    }
    const std::uint64_t filling_allocations = window.this_thread();
    int refused = 1;
    for (int i = 0; i < 5000; ++i) {
        refused += batcher.try_submit(item) == SubmitStatus::full ? 1 : 0;
    }
    const std::uint64_t refusing_allocations = window.this_thread() - filling_allocations;
    const std::int64_t growth = counting::live_bytes.load() - live_before;
    std::printf(
        "[alloc] stalled workers: %d accepted (capacity 100, batch 16), %lld bytes reserved at "
        "construction, %llu allocations while filling, %lld bytes of growth, %llu allocations "
        "over 5000 refusals\n",
        accepted, static_cast<long long>(reserved),
        static_cast<unsigned long long>(filling_allocations), static_cast<long long>(growth),
        static_cast<unsigned long long>(refusing_allocations));
    CHECK(accepted == 100);
    CHECK(refused == 5001);
    CHECK(refusing_allocations == 0);
    CHECK(filling_allocations <= 2);  // at most a block of the pool's queue
    CHECK(reserved >= static_cast<std::int64_t>(112 * sizeof(item)));
    release.open();
    batcher.close();
    CHECK(processed.load() == 100);
}

TEST_CASE("Batcher memory stays bounded by its capacity when a producer outruns the workers",
          "[batcher][alloc][backpressure]") {
    SKIP_WITHOUT_ALLOCATION_COUNTING();
    // 100,000 items of 256 bytes (25.6 MB in total) through a batcher with capacity 256: the
    // producer blocks whenever the slow worker falls behind, and the heap never grows by more
    // than a few queue blocks beyond what the batcher reserved at construction.
    constexpr int items = 100'000;
    std::atomic<int> processed{0};
    const std::int64_t before_construction = counting::live_bytes.load();
    Batcher<std::array<char, 256>> batcher(
        Options{}.max_batch_size(32).capacity(256).max_delay(no_delay_bound).workers(1),
        [&](Batch<std::array<char, 256>>& batch) {
            std::this_thread::yield();  // slower than the producer
            processed.fetch_add(static_cast<int>(batch.size()), std::memory_order_relaxed);
        });
    const std::int64_t reserved = counting::live_bytes.load() - before_construction;
    const std::int64_t baseline = counting::live_bytes.load();
    counting::reset_peak();
    const std::array<char, 256> item{};
    for (int i = 0; i < items; ++i) {
        batcher.post(item);
    }
    batcher.close();
    const std::int64_t peak_growth = counting::peak_live_bytes.load() - baseline;
    std::printf(
        "[alloc] producer outrunning 1 worker: %d items x %zu bytes, %lld bytes reserved, peak "
        "growth during the run %lld bytes\n",
        items, sizeof(item), static_cast<long long>(reserved), static_cast<long long>(peak_growth));
    CHECK(processed.load() == items);
    CHECK(peak_growth < 16 * 1024);
    CHECK(peak_growth < reserved / 4);
}
