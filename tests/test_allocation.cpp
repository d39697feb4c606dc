// Allocation discipline of microbatch::Batcher (issue 5): a counting global allocator shows that
// after warm-up the callback, post, try_submit and submit_for paths make no heap allocation per
// item, measures what the handle path, the sealing producer and the workers allocate, and shows
// that memory stays bounded by the configured capacity when a producer outruns the workers.
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
#include "microbatch/thread_pool.hpp"
#include "test_support.hpp"

using microbatch::Batch;
using microbatch::Batcher;
using microbatch::Options;
using microbatch::Outcome;
using microbatch::SubmitStatus;

// ---- A counting global allocator ------------------------------------------------------------
//
// Every block carries a 16-byte prefix (malloc's pointer and the requested size) just below the
// pointer handed out, so every form of operator delete can free it and account for its size.

// Clang links its sanitizer runtimes statically with --whole-archive, and they define operator
// new themselves: a replacement cannot link there, so these cases skip under clang's ASan/TSan.
// g++'s shared runtimes are interposed by the replacement, so the cases run under g++ sanitizers.
#if defined(__clang__) && defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define ALLOCATION_COUNTING_ENABLED 0
#endif
#endif
#ifndef ALLOCATION_COUNTING_ENABLED
#define ALLOCATION_COUNTING_ENABLED 1
#endif

namespace counting {

constexpr bool enabled = ALLOCATION_COUNTING_ENABLED != 0;

// Process-wide figures. Relaxed: statistics, read by the test thread after the threads that
// allocated have been synchronised with (wait_idle, close, join).
std::atomic<std::uint64_t> allocations{0};
std::atomic<std::uint64_t> deallocations{0};
std::atomic<std::int64_t> live_bytes{0};
std::atomic<std::int64_t> peak_live_bytes{0};

// The calling thread's figures.
thread_local std::uint64_t thread_allocations = 0;
thread_local std::uint64_t thread_deallocations = 0;

constexpr std::size_t prefix = 16;

struct Prefix {
    void* raw;
    std::size_t size;
};
static_assert(sizeof(Prefix) <= prefix, "the prefix must fit");

#if defined(_MSC_VER)
#define ALLOCATION_COUNTING_NOINLINE __declspec(noinline)
#else
#define ALLOCATION_COUNTING_NOINLINE __attribute__((noinline))
#endif

// Out of line so that g++ does not pair the malloc()/free() inside with operator new/delete and
// warn (-Wmismatched-new-delete) about what is a matched replacement pair.
ALLOCATION_COUNTING_NOINLINE void* allocate(std::size_t size, std::size_t alignment) noexcept {
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
    const std::int64_t live =
        live_bytes.fetch_add(static_cast<std::int64_t>(size), std::memory_order_relaxed) +
        static_cast<std::int64_t>(size);
    std::int64_t peak = peak_live_bytes.load(std::memory_order_relaxed);
    while (live > peak &&
           !peak_live_bytes.compare_exchange_weak(peak, live, std::memory_order_relaxed)) {
    }
    return reinterpret_cast<void*>(user);
}

ALLOCATION_COUNTING_NOINLINE void release(void* memory) noexcept {
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

void* allocate_or_throw(std::size_t size, std::size_t alignment) {
    if (void* memory = allocate(size, alignment)) {
        return memory;
    }
    throw std::bad_alloc();
}

/// Restarts the peak at the current live figure.
inline void reset_peak() {
    peak_live_bytes.store(live_bytes.load(std::memory_order_relaxed), std::memory_order_relaxed);
}

}  // namespace counting

#if ALLOCATION_COUNTING_ENABLED
void* operator new(std::size_t size) {
    return counting::allocate_or_throw(size, 0);
}
void* operator new[](std::size_t size) {
    return counting::allocate_or_throw(size, 0);
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
    return counting::allocate(size, 0);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
    return counting::allocate(size, 0);
}
void* operator new(std::size_t size, std::align_val_t align) {
    return counting::allocate_or_throw(size, static_cast<std::size_t>(align));
}
void* operator new[](std::size_t size, std::align_val_t align) {
    return counting::allocate_or_throw(size, static_cast<std::size_t>(align));
}
void* operator new(std::size_t size, std::align_val_t align, const std::nothrow_t&) noexcept {
    return counting::allocate(size, static_cast<std::size_t>(align));
}
void* operator new[](std::size_t size, std::align_val_t align, const std::nothrow_t&) noexcept {
    return counting::allocate(size, static_cast<std::size_t>(align));
}
void operator delete(void* memory) noexcept {
    counting::release(memory);
}
void operator delete[](void* memory) noexcept {
    counting::release(memory);
}
void operator delete(void* memory, std::size_t) noexcept {
    counting::release(memory);
}
void operator delete[](void* memory, std::size_t) noexcept {
    counting::release(memory);
}
void operator delete(void* memory, const std::nothrow_t&) noexcept {
    counting::release(memory);
}
void operator delete[](void* memory, const std::nothrow_t&) noexcept {
    counting::release(memory);
}
void operator delete(void* memory, std::align_val_t) noexcept {
    counting::release(memory);
}
void operator delete[](void* memory, std::align_val_t) noexcept {
    counting::release(memory);
}
void operator delete(void* memory, std::size_t, std::align_val_t) noexcept {
    counting::release(memory);
}
void operator delete[](void* memory, std::size_t, std::align_val_t) noexcept {
    counting::release(memory);
}
void operator delete(void* memory, std::align_val_t, const std::nothrow_t&) noexcept {
    counting::release(memory);
}
void operator delete[](void* memory, std::align_val_t, const std::nothrow_t&) noexcept {
    counting::release(memory);
}
#endif  // ALLOCATION_COUNTING_ENABLED

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

enum class Path { post, try_submit, submit_for, callback, handle };

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
            return "handle submit";
    }
    return "?";
}

/// Submits @p count items through @p path (retrying a refused try_submit/submit_for).
template <class B>
void submit_many(B& batcher, Path path, int count, std::atomic<int>& callbacks) {
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
        }
    }
}

}  // namespace

TEST_CASE("Batcher submits without allocating when batches run on an inline executor",
          "[batcher][alloc]") {
    SKIP_WITHOUT_ALLOCATION_COUNTING();
    // Everything runs on this thread: claiming slots, sealing, running each batch and its
    // callbacks. So every allocation the batcher makes per item or per batch would be counted.
    const Path path = GENERATE(Path::post, Path::try_submit, Path::submit_for, Path::callback);
    INFO("path " << to_string(path));
    constexpr int items = 10'000;
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
    submit_many(batcher, path, 1000, callbacks);  // warm-up
    batcher.wait_idle();

    const AllocationWindow window;
    submit_many(batcher, path, items, callbacks);
    batcher.wait_idle();
    const std::uint64_t allocated = window.process();
    std::printf("[alloc] inline executor, %s: %d items, %llu allocations\n", to_string(path), items,
                static_cast<unsigned long long>(allocated));
    CHECK(allocated == 0);
    batcher.close();
    CHECK(processed.load() == items + 1000);
    CHECK(callbacks.load() == (path == Path::callback ? items + 1000 : 0));
}

TEST_CASE("Batcher producers and workers allocate nothing per item with the owned pool",
          "[batcher][alloc]") {
    SKIP_WITHOUT_ALLOCATION_COUNTING();
    // The producer seals every batch it fills and queues it on the pool: std::deque needs a new
    // block every few dozen tasks (512-byte blocks of 32-byte std::function tasks in libstdc++),
    // an allocation per several batches, never per item. The worker's side (popping the task,
    // running the batch and its callbacks) allocates nothing: the task's lambda fits
    // std::function's small buffer.
    const Path path =
        GENERATE(Path::post, Path::try_submit, Path::submit_for, Path::callback, Path::handle);
    INFO("path " << to_string(path));
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
    submit_many(batcher, path, items, callbacks);
    batcher.wait_idle();
    const std::uint64_t producer = window.this_thread();
    const std::uint64_t workers = window.other_threads();
    const std::uint64_t per_item = path == Path::handle ? 1 : 0;  // the handle's shared state
    std::printf(
        "[alloc] owned pool, %s: %d items in ~%d batches: producer thread %llu allocations "
        "(%llu beyond %llu per item), worker %llu\n",
        to_string(path), items, batches, static_cast<unsigned long long>(producer),
        static_cast<unsigned long long>(producer - per_item * items),
        static_cast<unsigned long long>(per_item), static_cast<unsigned long long>(workers));
    CHECK(producer >= per_item * items);
    // Queue blocks: at most one allocation per 8 batches (one per 16 with libstdc++).
    CHECK(producer - per_item * items <= batches / 8 + 2);
    CHECK(workers == 0);
    batcher.close();
    CHECK(processed.load() == items + 5000);
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
    // Capacity 100 with batch size 16 is rounded up to 7 buffers = 112 slots, all allocated at
    // construction. With the only worker stalled, one producer fills exactly those 112 slots;
    // then try_submit reports full, however often it is called, without allocating.
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
    CHECK(accepted == 112);
    CHECK(refused == 5001);
    CHECK(refusing_allocations == 0);
    CHECK(filling_allocations <= 2);  // at most a block of the pool's queue
    CHECK(reserved >= static_cast<std::int64_t>(112 * sizeof(item)));
    release.open();
    batcher.close();
    CHECK(processed.load() == 112);
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
