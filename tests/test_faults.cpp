// Fault injection and misuse tests of microbatch::Batcher (issue 5): throwing, slow, blocked and
// wrong-length batch functions; items whose constructors throw; std::bad_alloc injected through a
// replaced global operator new; every invalid option; calls the batcher must refuse. Each case
// states the outcome it expects: an item is either rejected with a clear error or processed
// exactly once, never lost and never duplicated.
//
// Catch2 is only used on the test thread: workers, callbacks and producers record into atomics.
// Cases tagged [regression][issue5] reproduce library bugs found while writing these tests (see
// the comment on each; all fixed in batcher.hpp / stats.hpp): they fail if a bug comes back.

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <functional>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <csignal>
#endif

#include "catch_shim.hpp"
#include "microbatch/batcher.hpp"
#include "microbatch/detail/handle_state.hpp"
#include "microbatch/thread_pool.hpp"
#include "replace_operator_new.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using microbatch::Batch;
using microbatch::Batcher;
using microbatch::Handle;
using microbatch::Options;
using microbatch::Outcome;
using microbatch::SubmitStatus;
using test_support::Gate;

// ---- A global allocator that fails on demand --------------------------------------------------
//
// Every form of global operator new/delete in this test program comes here (through
// replace_operator_new.hpp). By default it just forwards to malloc/free. A test arms it on its
// own thread: fail the Nth next allocation (FailAllocation), or every allocation
// (FailAllAllocations). The switches are thread-local, so a
// worker's allocations are not affected by the test thread's switch unless the worker arms its
// own (as the worker-side cases do from inside process_batch).

namespace fault_injection {

/// False when operator new could not be replaced: the cases that inject std::bad_alloc skip.
constexpr bool enabled = MICROBATCH_TEST_REPLACES_NEW != 0;

thread_local long countdown = -1;            // -1: disarmed; N: let N pass, fail the next
thread_local bool fail_every = false;        // fail every allocation on this thread
thread_local unsigned long injected = 0;     // failures injected on this thread so far
thread_local unsigned long allocations = 0;  // allocation attempts on this thread so far

inline bool should_fail() noexcept {
    ++allocations;
    if (fail_every) {
        ++injected;
        return true;
    }
    if (countdown < 0) {
        return false;
    }
    if (countdown == 0) {
        countdown = -1;
        ++injected;
        return true;
    }
    --countdown;
    return false;
}

inline void* allocate(std::size_t size) noexcept {
    if (should_fail()) {
        return nullptr;
    }
    return std::malloc(size == 0 ? 1 : size);
}

// Over-allocates and stores malloc's pointer just below the aligned block (portable: no
// posix_memalign/_aligned_malloc).
inline void* allocate_aligned(std::size_t size, std::align_val_t align) noexcept {
    if (should_fail()) {
        return nullptr;
    }
    const std::size_t alignment = std::max(static_cast<std::size_t>(align), sizeof(void*));
    void* raw = std::malloc(size + alignment + sizeof(void*));
    if (raw == nullptr) {
        return nullptr;
    }
    const auto start = reinterpret_cast<std::uintptr_t>(raw) + sizeof(void*);
    const std::uintptr_t aligned = (start + alignment - 1) & ~(std::uintptr_t{alignment} - 1);
    reinterpret_cast<void**>(aligned)[-1] = raw;
    return reinterpret_cast<void*>(aligned);
}

inline void release(void* memory) noexcept {
    std::free(memory);
}

inline void release_aligned(void* memory) noexcept {
    if (memory != nullptr) {
        std::free(static_cast<void**>(memory)[-1]);
    }
}

}  // namespace fault_injection

void* test_allocate(std::size_t size, std::size_t alignment) noexcept {
    return alignment == 0 ? fault_injection::allocate(size)
                          : fault_injection::allocate_aligned(size, std::align_val_t{alignment});
}
void test_release(void* memory, bool aligned) noexcept {
    if (aligned) {
        fault_injection::release_aligned(memory);
    } else {
        fault_injection::release(memory);
    }
}

namespace {

/// While alive, the calling thread's allocation number `skip + 1` fails with std::bad_alloc.
class FailAllocation {
public:
    explicit FailAllocation(long skip = 0) : injected_before_(fault_injection::injected) {
        fault_injection::countdown = skip;
    }
    ~FailAllocation() { fault_injection::countdown = -1; }
    FailAllocation(const FailAllocation&) = delete;
    FailAllocation& operator=(const FailAllocation&) = delete;
    /// True once the armed allocation has failed.
    bool triggered() const { return fault_injection::injected != injected_before_; }

private:
    unsigned long injected_before_;
};

/// While alive, every allocation on the calling thread fails; counts the attempts.
class FailAllAllocations {
public:
    FailAllAllocations() : before_(fault_injection::allocations) {
        fault_injection::fail_every = true;
    }
    ~FailAllAllocations() { fault_injection::fail_every = false; }
    FailAllAllocations(const FailAllAllocations&) = delete;
    FailAllAllocations& operator=(const FailAllAllocations&) = delete;
    unsigned long attempts() const { return fault_injection::allocations - before_; }

private:
    unsigned long before_;
};

/// Skips the current test case when operator new could not be replaced (clang sanitizers).
#define SKIP_WITHOUT_FAULT_INJECTION()                                                    \
    do {                                                                                  \
        if (!fault_injection::enabled) {                                                  \
            WARN(                                                                         \
                "skipped: operator new cannot be replaced under clang's sanitizers; run " \
                "this case in a g++ or non-sanitized build");                             \
            return;                                                                       \
        }                                                                                 \
    } while (false)

constexpr auto no_delay_bound = std::chrono::nanoseconds::max();

// ---- Small helpers ----------------------------------------------------------------------------

/// SplitMix64, for reproducible random patterns.
class Random {
public:
    explicit Random(std::uint64_t seed) : state_(seed) {}
    std::uint64_t next() {
        std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }
    bool chance(unsigned percent) { return next() % 100 < percent; }

private:
    std::uint64_t state_;
};

/// Per-id record of what happened to items: filled by workers and callbacks, read by the test
/// thread after close().
struct Ledger {
    explicit Ledger(std::size_t ids)
        : processed(new std::atomic<int>[ids]),
          completed(new std::atomic<int>[ids]),
          failed(new std::atomic<int>[ids]),
          size(ids) {
        for (std::size_t i = 0; i < ids; ++i) {
            processed[i] = 0;
            completed[i] = 0;
            failed[i] = 0;
        }
    }
    std::unique_ptr<std::atomic<int>[]> processed;  // times process_batch saw the item
    std::unique_ptr<std::atomic<int>[]> completed;  // times its callback ran
    std::unique_ptr<std::atomic<int>[]> failed;     // 1 if its batch threw
    std::size_t size;
    std::atomic<int> mismatches{0};  // outcomes that disagree with what process_batch did
};

/// What an outcome delivered, as a code: 0 value, 1..n the error kinds below.
enum OutcomeKind : int {
    kind_value = 0,
    kind_runtime_error = 1,
    kind_result_count = 2,
    kind_bad_alloc = 3,
    kind_move_failure = 4,
    kind_other = 5,
    kind_none = 6,  // not completed
};

struct MoveFailure : std::runtime_error {
    MoveFailure() : std::runtime_error("move constructor failed") {}
};
struct ConstructionFailure : std::runtime_error {
    ConstructionFailure() : std::runtime_error("converting constructor failed") {}
};

int kind_of(const std::exception_ptr& error) {
    if (!error) {
        return kind_value;
    }
    try {
        std::rethrow_exception(error);
    } catch (const microbatch::ResultCountError&) {
        return kind_result_count;
    } catch (const MoveFailure&) {
        return kind_move_failure;
    } catch (const std::bad_alloc&) {
        return kind_bad_alloc;
    } catch (const std::runtime_error&) {
        return kind_runtime_error;
    } catch (...) {
        return kind_other;
    }
}

template <class R>
int kind_of_handle(Handle<R>& handle) {
    if (!handle.valid() || !handle.ready()) {
        return kind_none;
    }
    try {
        handle.get();
        return kind_value;
    } catch (...) {
        return kind_of(std::current_exception());
    }
}

#if defined(__linux__)
/// The kernel id of the calling thread.
pid_t current_tid() {
    return static_cast<pid_t>(::syscall(SYS_gettid));
}

/// True if /proc/self/task/<tid>/syscall can be read on this system.
bool can_inspect_threads() {
    std::ifstream file("/proc/self/task/" + std::to_string(current_tid()) + "/syscall");
    std::string first;
    return static_cast<bool>(file >> first);
}

/// True if thread @p tid is asleep in futex() on an address inside [object, object + size): it
/// waits on one of that object's mutexes or condition variables. Exact, no timing involved.
bool blocked_inside(pid_t tid, const void* object, std::size_t size) {
    std::ifstream file("/proc/self/task/" + std::to_string(tid) + "/syscall");
    long number = -1;
    unsigned long address = 0;
    if (!(file >> number >> std::hex >> address)) {
        return false;  // "running", or the thread is gone
    }
    const auto begin = reinterpret_cast<unsigned long>(object);
    return number == SYS_futex && address >= begin && address < begin + size;
}
#endif

}  // namespace

// =================================================================================================
// [faults]: failing, slow, blocked and malformed batch functions
// =================================================================================================

namespace {

struct FaultyRun {
    int seed = 0;
    bool throw_sometimes = false;
    bool slow_sometimes = false;
};

/// Two producers submit ids 0..n-1 (handle, callback or post by id % 3) into a batcher whose
/// process_batch throws or dawdles on batches chosen from their content; then checks that each
/// item was processed once and its outcome says exactly what happened to its batch.
void run_faulty_batches(const FaultyRun& run) {
    INFO("seed " << run.seed);
    constexpr std::size_t items = 3000;
    Ledger ledger(items);
    std::atomic<int> thrown_batches{0};
    std::atomic<int> items_in_thrown_batches{0};
    const std::size_t batch_size = 1 + static_cast<std::size_t>(run.seed * 7) % 40;
    Batcher<int, int> batcher(
        Options{}
            .max_batch_size(batch_size)
            .capacity(batch_size * 2)
            .max_delay(std::chrono::microseconds(run.seed % 2 == 0 ? 0 : 50))
            .workers(3),
        [&](Batch<int>& batch) {
            const std::uint64_t fate = Random(run.seed * 1000003ULL + batch[0]).next();
            const bool fail = run.throw_sometimes && fate % 3 == 0;
            for (int id : batch) {
                ledger.processed[id].fetch_add(1);
                ledger.failed[id].store(fail ? 1 : 0);
            }
            if (run.slow_sometimes && (fate >> 16) % 4 == 0) {
                for (std::uint64_t i = 0; i < (fate >> 24) % 200; ++i) {
                    std::this_thread::yield();
                }
            }
            if (fail) {
                thrown_batches.fetch_add(1);
                items_in_thrown_batches.fetch_add(static_cast<int>(batch.size()));
                throw std::runtime_error("injected failure of a batch");
            }
            std::vector<int> results;
            for (int id : batch) {
                results.push_back(id * 2);
            }
            return results;
        });

    std::vector<std::vector<std::pair<int, Handle<int>>>> handles(2);
    std::vector<std::thread> producers;
    for (int p = 0; p < 2; ++p) {
        producers.emplace_back([&, p] {
            for (int id = p; id < static_cast<int>(items); id += 2) {
                switch (id % 3) {
                    case 0:
                        handles[p].emplace_back(id, batcher.submit(id));
                        break;
                    case 1:
                        batcher.submit(id, [&ledger, id](Outcome<int>&& outcome) {
                            const bool ok = ledger.failed[id].load() != 0
                                                ? kind_of(outcome.error()) == kind_runtime_error
                                                : outcome.has_value() && outcome.value() == id * 2;
                            if (!ok) {
                                ledger.mismatches.fetch_add(1);
                            }
                            ledger.completed[id].fetch_add(1);
                        });
                        break;
                    default:
                        batcher.post(id);
                        break;
                }
            }
        });
    }
    for (auto& producer : producers) {
        producer.join();
    }
    batcher.close();

    int handle_mismatches = 0;
    for (auto& list : handles) {
        for (auto& [id, handle] : list) {
            const int expected = ledger.failed[id].load() != 0 ? kind_runtime_error : kind_value;
            if (kind_of_handle(handle) != expected) {
                ++handle_mismatches;
            }
        }
    }
    int not_once = 0;
    int wrong_completions = 0;
    for (std::size_t id = 0; id < items; ++id) {
        not_once += ledger.processed[id].load() == 1 ? 0 : 1;
        const int expected_completions = id % 3 == 1 ? 1 : 0;
        wrong_completions += ledger.completed[id].load() == expected_completions ? 0 : 1;
    }
    CHECK(not_once == 0);
    CHECK(wrong_completions == 0);
    CHECK(ledger.mismatches.load() == 0);
    CHECK(handle_mismatches == 0);

    const auto stats = batcher.stats();
    CHECK(stats.items_accepted == items);
    CHECK(stats.items_failed == static_cast<std::uint64_t>(items_in_thrown_batches.load()));
    CHECK(stats.items_processed + stats.items_failed == items);
    CHECK(stats.batches_failed == static_cast<std::uint64_t>(thrown_batches.load()));
    CHECK(stats.batch_size_max <= batch_size);
    if (run.throw_sometimes) {
        CHECK(thrown_batches.load() > 0);
    }
}

}  // namespace

TEST_CASE("Batcher fails exactly the items of the batches whose process_batch throws",
          "[batcher][faults]") {
    const int seed = GENERATE(1, 2, 3, 4);
    run_faulty_batches({seed, true, false});
}

TEST_CASE("Batcher loses nothing when some batches are slow, with or without failures",
          "[batcher][faults]") {
    const int seed = GENERATE(5, 6);
    const bool throw_sometimes = GENERATE(false, true);
    run_faulty_batches({seed, throw_sometimes, true});
}

TEST_CASE("Batcher blocked in process_batch holds exactly its capacity and loses nothing",
          "[batcher][faults][backpressure]") {
    // Batch size 4, capacity 10 (counted in items since issue 10): batches of 4, 4 and 2.
    Gate release;
    std::atomic<int> processed{0};
    Batcher<int> batcher(
        Options{}.max_batch_size(4).capacity(10).max_delay(no_delay_bound).workers(1),
        [&](Batch<int>& batch) {
            release.wait();
            processed.fetch_add(static_cast<int>(batch.size()));
        });
    // One producer: every hand-over to the next buffer happens on this thread, so try_submit
    // reports full exactly when the 10 items are taken.
    int accepted = 0;
    while (batcher.try_submit(accepted) == SubmitStatus::accepted) {
        ++accepted;
    }
    CHECK(accepted == 10);
    CHECK(batcher.try_submit(99) == SubmitStatus::full);
    CHECK(batcher.submit_for(99, 1ms) == SubmitStatus::full);  // times out: nothing can free

    // A producer blocked in post() wakes with ClosedError once closing begins (the gate keeps
    // every buffer busy until after close_for gave up, so it cannot have been accepted).
    std::atomic<int> producer_outcome{0};  // 1 accepted, 2 ClosedError
    std::thread producer([&] {
        try {
            batcher.post(100);
            producer_outcome = 1;
        } catch (const microbatch::ClosedError&) {
            producer_outcome = 2;
        }
    });

    const auto result = batcher.close_for(1ms);
    CHECK_FALSE(result.completed);
    CHECK(result.batches_in_flight == 3);
    CHECK(result.items_in_flight == 10);
    CHECK(batcher.is_closed());
    producer.join();
    CHECK(producer_outcome.load() == 2);

    release.open();
    batcher.close();
    CHECK(processed.load() == 10);
    const auto stats = batcher.stats();
    CHECK(stats.items_accepted == 10);
    CHECK(stats.items_processed == 10);
    CHECK(stats.items_rejected_full == 3);  // the try_submit that ended the loop, 99 twice
    CHECK(stats.items_rejected_closed == 1);
}

TEST_CASE("Batcher fails every item of a batch whose result vector has the wrong length",
          "[batcher][faults]") {
    // Batches are formed deterministically: one producer, batch size 5, no time bound.
    const std::array<std::size_t, 10> lengths{5, 4, 6, 0, 5, 1, 5, 10, 5, 5};
    std::atomic<int> batch_index{0};
    Batcher<int, int> batcher(
        Options{}.max_batch_size(5).max_delay(no_delay_bound).workers(1), [&](Batch<int>& batch) {
            const std::size_t length = lengths[static_cast<std::size_t>(batch[0] / 5)];
            batch_index.fetch_add(1);
            std::vector<int> results;
            for (std::size_t i = 0; i < length; ++i) {
                results.push_back(i < batch.size() ? batch[i] * 2 : -1);
            }
            return results;
        });
    std::vector<Handle<int>> handles;
    for (int id = 0; id < 50; ++id) {
        handles.push_back(batcher.submit(id));
    }
    batcher.close();

    int wrong = 0;
    std::string message;
    for (int id = 0; id < 50; ++id) {
        const bool bad_batch = lengths[static_cast<std::size_t>(id / 5)] != 5;
        try {
            const int value = handles[static_cast<std::size_t>(id)].get();
            wrong += (!bad_batch && value == id * 2) ? 0 : 1;
        } catch (const microbatch::ResultCountError& error) {
            wrong += bad_batch ? 0 : 1;
            if (id == 5) {
                message = error.what();
            }
        }
    }
    CHECK(wrong == 0);
    CHECK(message.find("returned 4 results for a batch of 5 items") != std::string::npos);
    const auto stats = batcher.stats();
    CHECK(batch_index.load() == 10);
    CHECK(stats.batches_failed == 5);
    CHECK(stats.items_failed == 25);
    CHECK(stats.items_processed == 25);
}

namespace {

/// What the submitter asks for: an id, and which of Fragile's constructors should throw.
struct Spec {
    int id;
    bool hole;           // the converting constructor Fragile(Spec) throws
    bool throw_on_move;  // Fragile's move constructor throws for this item
};

std::atomic<int> fragile_moves{0};  // move constructions attempted, including those that threw

/// An item whose converting constructor may throw (leaving a hole in its batch) and whose move
/// constructor may throw (which only the worker's compaction of holes exercises).
struct Fragile {
    int id;
    bool throw_on_move;
    explicit Fragile(const Spec& spec) : id(spec.id), throw_on_move(spec.throw_on_move) {
        if (spec.hole) {
            throw ConstructionFailure();
        }
    }
    Fragile(Fragile&& other) : id(other.id), throw_on_move(other.throw_on_move) {
        fragile_moves.fetch_add(1);
        if (throw_on_move) {
            throw MoveFailure();
        }
    }
    Fragile(const Fragile&) = delete;
    Fragile& operator=(const Fragile&) = delete;
    Fragile& operator=(Fragile&&) = delete;
    ~Fragile() = default;
};

}  // namespace

TEST_CASE("Batcher compaction fails only the item whose move constructor throws",
          "[batcher][faults][compaction]") {
    // One producer, batch size 6, no time bound: batch k is exactly slots 6k..6k+5, holes
    // included (a hole still takes its slot). The worker moves an item only when a hole precedes
    // it in its batch; such a move may throw, and then that item alone fails with the exception.
    const std::uint64_t seed = GENERATE(11u, 12u, 13u);
    INFO("seed " << seed);
    constexpr int batch_size = 6;
    constexpr int items = 60;
    Random random(seed);
    std::vector<Spec> specs;
    for (int id = 0; id < items; ++id) {
        const bool all_holes_batch = id / batch_size == 3;  // one batch with nothing left
        specs.push_back({id, all_holes_batch || random.chance(25), random.chance(35)});
    }

    // The model: expected outcome per id, and the number of moves the worker will attempt.
    std::vector<int> expected(items, kind_none);
    int expected_moves = 0;
    int expected_batches_run = 0;
    for (int first = 0; first < items; first += batch_size) {
        bool hole_seen = false;
        bool any_kept = false;
        for (int id = first; id < first + batch_size; ++id) {
            const Spec& spec = specs[static_cast<std::size_t>(id)];
            if (spec.hole) {
                hole_seen = true;
                continue;
            }
            if (hole_seen) {
                ++expected_moves;
                if (spec.throw_on_move) {
                    expected[static_cast<std::size_t>(id)] = kind_move_failure;
                    continue;
                }
            }
            expected[static_cast<std::size_t>(id)] = kind_value;
            any_kept = true;
        }
        expected_batches_run += any_kept ? 1 : 0;
    }

    fragile_moves = 0;
    std::vector<std::atomic<int>> kinds(items);
    std::vector<std::atomic<int>> processed(items);
    for (int id = 0; id < items; ++id) {
        kinds[static_cast<std::size_t>(id)] = kind_none;
        processed[static_cast<std::size_t>(id)] = 0;
    }
    std::atomic<int> batches_run{0};
    std::atomic<int> empty_batches{0};
    int submit_threw = 0;
    {
        Batcher<Fragile, int> batcher(
            Options{}.max_batch_size(batch_size).capacity(2 * batch_size).max_delay(no_delay_bound),
            [&](Batch<Fragile>& batch) {
                batches_run.fetch_add(1);
                empty_batches.fetch_add(batch.empty() ? 1 : 0);
                std::vector<int> results;
                for (const Fragile& item : batch) {
                    processed[static_cast<std::size_t>(item.id)].fetch_add(1);
                    results.push_back(item.id);
                }
                return results;
            });
        for (const Spec& spec : specs) {
            try {
                batcher.submit(spec, [&kinds, id = spec.id](Outcome<int>&& outcome) {
                    const bool value_ok = !outcome.has_value() || outcome.value() == id;
                    kinds[static_cast<std::size_t>(id)] =
                        value_ok ? kind_of(outcome.error()) : kind_other;
                });
            } catch (const ConstructionFailure&) {
                ++submit_threw;
            }
        }
        batcher.close();
        const auto stats = batcher.stats();
        const int holes = static_cast<int>(
            std::count_if(specs.begin(), specs.end(), [](const Spec& s) { return s.hole; }));
        const int move_failures =
            static_cast<int>(std::count(expected.begin(), expected.end(), kind_move_failure));
        CHECK(submit_threw == holes);
        CHECK(stats.items_rejected_error == static_cast<std::uint64_t>(holes));
        CHECK(stats.items_accepted == static_cast<std::uint64_t>(items - holes));
        CHECK(stats.items_failed == static_cast<std::uint64_t>(move_failures));
        CHECK(stats.items_processed == static_cast<std::uint64_t>(items - holes - move_failures));
        CHECK(stats.batches_failed == 0);
    }
    CHECK(fragile_moves.load() == expected_moves);
    CHECK(batches_run.load() == expected_batches_run);
    CHECK(empty_batches.load() == 0);
    int wrong = 0;
    for (int id = 0; id < items; ++id) {
        const auto index = static_cast<std::size_t>(id);
        const int want_processed = expected[index] == kind_value ? 1 : 0;
        if (kinds[index].load() != expected[index] || processed[index].load() != want_processed) {
            ++wrong;
            UNSCOPED_INFO("id " << id << ": outcome " << kinds[index].load() << " expected "
                                << expected[index] << ", processed " << processed[index].load());
        }
    }
    CHECK(wrong == 0);
}

TEST_CASE("Batcher never loses or duplicates items when concurrent producers leave holes",
          "[batcher][faults][compaction]") {
    // Four producers race to fill batches with items whose constructors (hole) or move
    // constructors (compaction) sometimes throw. Every item is rejected at submit (hole), or
    // processed exactly once, or fails alone with MoveFailure; its callback runs exactly once.
    const std::size_t batch_size = GENERATE(1, 3, 16);
    INFO("batch size " << batch_size);
    constexpr int producers = 4;
    constexpr int per_producer = 1500;
    constexpr int items = producers * per_producer;
    std::vector<Spec> specs;
    Random random(batch_size);
    for (int id = 0; id < items; ++id) {
        specs.push_back({id, random.chance(20), random.chance(20)});
    }
    Ledger ledger(items);
    std::vector<std::atomic<int>> kinds(items);
    for (auto& kind : kinds) {
        kind = kind_none;
    }
    std::atomic<int> empty_batches{0};
    std::array<int, producers> rejected{};
    Batcher<Fragile> batcher(
        Options{}.max_batch_size(batch_size).capacity(batch_size * 3).max_delay(20us).workers(2),
        [&](Batch<Fragile>& batch) {
            empty_batches.fetch_add(batch.empty() ? 1 : 0);
            for (const Fragile& item : batch) {
                ledger.processed[static_cast<std::size_t>(item.id)].fetch_add(1);
            }
        });
    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p) {
        threads.emplace_back([&, p] {
            for (int k = 0; k < per_producer; ++k) {
                const Spec& spec = specs[static_cast<std::size_t>(p * per_producer + k)];
                try {
                    batcher.submit(spec, [&kinds, &ledger, id = spec.id](Outcome<void>&& outcome) {
                        kinds[static_cast<std::size_t>(id)] = kind_of(outcome.error());
                        ledger.completed[static_cast<std::size_t>(id)].fetch_add(1);
                    });
                } catch (const ConstructionFailure&) {
                    ++rejected[static_cast<std::size_t>(p)];
                }
            }
        });
    }
    for (auto& thread : threads) {
        thread.join();
    }
    batcher.close();

    int holes = 0;
    int move_failures = 0;
    int wrong = 0;
    for (int id = 0; id < items; ++id) {
        const auto index = static_cast<std::size_t>(id);
        const Spec& spec = specs[index];
        const int processed = ledger.processed[index].load();
        const int completed = ledger.completed[index].load();
        const int kind = kinds[index].load();
        if (spec.hole) {
            ++holes;
            wrong += (processed == 0 && completed == 0) ? 0 : 1;
        } else if (kind == kind_move_failure) {
            ++move_failures;
            wrong += (spec.throw_on_move && processed == 0 && completed == 1) ? 0 : 1;
        } else {
            wrong += (kind == kind_value && processed == 1 && completed == 1) ? 0 : 1;
        }
    }
    CHECK(wrong == 0);
    CHECK(empty_batches.load() == 0);
    CHECK(rejected[0] + rejected[1] + rejected[2] + rejected[3] == holes);
    const auto stats = batcher.stats();
    CHECK(stats.items_rejected_error == static_cast<std::uint64_t>(holes));
    CHECK(stats.items_accepted == static_cast<std::uint64_t>(items - holes));
    CHECK(stats.items_failed == static_cast<std::uint64_t>(move_failures));
    CHECK(stats.items_processed + stats.items_failed == stats.items_accepted);
    CHECK(stats.items_submitted == static_cast<std::uint64_t>(items));
}

namespace {

/// A result type whose move constructor throws for one poisoned value.
struct TouchyResult {
    int value;
    explicit TouchyResult(int v) : value(v) {}
    TouchyResult(const TouchyResult& other) : value(other.value) { check(); }
    TouchyResult(TouchyResult&& other) : value(other.value) { check(); }
    TouchyResult& operator=(const TouchyResult&) = default;
    void check() const {
        if (value == poisoned) {
            throw MoveFailure();
        }
    }
    static constexpr int poisoned = -7;
};

}  // namespace

// BUG (issue 5, library): Batcher::complete() (batcher.hpp) builds the Outcome<R> from
// results[index] *before* handing it to the completion, inside the try that is meant for the
// callback. When R's move constructor throws there, the completion never runs: a callback is
// silently skipped (only callback_exceptions counts it) and a handle is left pending; it is
// only failed with "item dropped before completion" when the batcher is destroyed, or never if
// a later item reuses the slot (Completion::emplace overwrites it: the handle hangs, its state
// leaks). Fix: build the outcome in its own try and deliver the exception instead:
//   Outcome<R> outcome = error ? Outcome<R>(error) : make_value_outcome(results[index]) /* in
//   try; catch (...) -> Outcome<R>(std::current_exception()) */; then complete(std::move(
//   outcome)) in the existing try/catch that counts callback exceptions.
TEST_CASE("Batcher completes an item whose result's move constructor throws",
          "[batcher][faults][regression][issue5]") {
    std::atomic<int> callback_kind{kind_none};
    Handle<TouchyResult> handle;  // declared first: outlives the batcher
    {
        Batcher<int, TouchyResult> batcher(
            Options{}.max_batch_size(2).max_delay(no_delay_bound).workers(1),
            [](Batch<int>& batch) {
                std::vector<TouchyResult> results;
                results.reserve(batch.size());
                for (int x : batch) {
                    results.emplace_back(x);
                }
                return results;
            });
        handle = batcher.submit(TouchyResult::poisoned);
        batcher.submit(TouchyResult::poisoned, [&](Outcome<TouchyResult>&& outcome) {
            callback_kind = kind_of(outcome.error());
        });
        batcher.close();
        // Every accepted item's handle is ready once close() returns, and every callback ran.
        CHECK(handle.ready());
        CHECK(callback_kind.load() == kind_move_failure);
        CHECK(batcher.stats().callback_exceptions == 0);
    }
}

// =================================================================================================
// [faults]: std::bad_alloc injected through the global operator new
// =================================================================================================

TEST_CASE("Batcher handle submit reports std::bad_alloc and leaves the item untouched",
          "[batcher][faults][bad_alloc]") {
    SKIP_WITHOUT_FAULT_INJECTION();
    Batcher<std::string, std::size_t> batcher(
        Options{}.max_batch_size(4).max_delay(no_delay_bound).workers(1),
        [](Batch<std::string>& batch) {
            std::vector<std::size_t> sizes;
            for (const auto& item : batch) {
                sizes.push_back(item.size());
            }
            return sizes;
        });
    const std::string original(100, 'x');
    std::string item = original;
    bool threw_bad_alloc = false;
    bool triggered = false;
    Handle<std::size_t> try_handle;
    SubmitStatus status = SubmitStatus::closed;
    bool try_threw_bad_alloc = false;
    // On a thread that has not used handles yet, the block its handle states come from is the
    // first allocation of submit(): it fails. A failed allocation leaves the thread's pool
    // empty, so try_submit's fails the same way.
    std::thread([&] {
        {
            FailAllocation fail;
            try {
                Handle<std::size_t> handle = batcher.submit(std::move(item));
            } catch (const std::bad_alloc&) {
                threw_bad_alloc = true;
            }
            triggered = fail.triggered();
        }
        FailAllocation fail;
        try {
            status = batcher.try_submit(std::move(item), try_handle);
        } catch (const std::bad_alloc&) {
            try_threw_bad_alloc = true;
        }
    }).join();
    CHECK(triggered);
    CHECK(threw_bad_alloc);
    CHECK(item == original);                // not moved from: the call never reached a slot
    CHECK(try_threw_bad_alloc);             // thrown, not reported as a status
    CHECK(status == SubmitStatus::closed);  // unchanged: try_submit did not return
    CHECK_FALSE(try_handle.valid());
    CHECK(item == original);

    // Stated outcome: the failed calls are not counted at all; the batcher is unharmed.
    CHECK(batcher.stats().items_submitted == 0);
    Handle<std::size_t> handle = batcher.submit(std::move(item));
    batcher.close();
    CHECK(handle.get() == 100);
    CHECK(batcher.stats().items_processed == 1);
}

TEST_CASE("Batcher handle submit allocates only when its thread's state pool needs a new block",
          "[batcher][faults][bad_alloc][handle]") {
    SKIP_WITHOUT_FAULT_INJECTION();
    // Handle states are carved from blocks of states_per_block. On a fresh thread the first
    // submit allocates a block; the next states_per_block - 1 submits allocate nothing, even
    // with every allocation failing; the one after needs a new block (the handles are all still
    // held, so no block is empty) and reports std::bad_alloc without accepting its item.
    constexpr std::uint32_t per_block = microbatch::detail::HandleStatePool<int>::states_per_block;
    Batcher<int, int> batcher(
        Options{}.max_batch_size(8).max_delay(no_delay_bound).workers(1),
        [](Batch<int>& batch) { return std::vector<int>(batch.begin(), batch.end()); });
    std::vector<Handle<int>> handles;
    handles.reserve(per_block + 1);
    unsigned long attempts = 0;
    bool next_block_threw = false;
    std::thread([&] {
        handles.push_back(batcher.submit(0));
        FailAllAllocations fail;
        for (std::uint32_t i = 1; i < per_block; ++i) {
            handles.push_back(batcher.submit(static_cast<int>(i)));
        }
        attempts = fail.attempts();
        try {
            handles.push_back(batcher.submit(-1));
        } catch (const std::bad_alloc&) {
            next_block_threw = true;
        }
    }).join();
    CHECK(attempts == 0);
    CHECK(next_block_threw);
    REQUIRE(handles.size() == per_block);
    batcher.close();
    for (std::uint32_t i = 0; i < per_block; ++i) {
        CHECK(handles[i].get() == static_cast<int>(i));
    }
    CHECK(batcher.stats().items_processed == per_block);
}

TEST_CASE("Batcher callback, post, try_submit and submit_for allocate nothing per item",
          "[batcher][faults][bad_alloc]") {
    SKIP_WITHOUT_FAULT_INJECTION();
    // Every allocation on this thread fails while armed: any allocation on these paths would
    // surface as std::bad_alloc. Batch size 64 and 40 items: no batch is sealed here, so the
    // executor is not involved (see test_allocation.cpp for the sealing producer).
    std::atomic<int> callbacks{0};
    std::atomic<int> processed{0};
    Batcher<int> batcher(Options{}.max_batch_size(64).max_delay(1h).workers(1),
                         [&](Batch<int>& batch) { processed += static_cast<int>(batch.size()); });
    int bad_allocs = 0;
    int not_accepted = 0;
    unsigned long attempts = 0;
    {
        FailAllAllocations fail;
        for (int i = 0; i < 10; ++i) {
            try {
                batcher.submit(i, [&callbacks](Outcome<void>&&) { callbacks.fetch_add(1); });
                batcher.post(i);
                not_accepted += batcher.try_submit(i) == SubmitStatus::accepted ? 0 : 1;
                not_accepted += batcher.submit_for(i, 1ms) == SubmitStatus::accepted ? 0 : 1;
            } catch (const std::bad_alloc&) {
                ++bad_allocs;
            }
        }
        attempts = fail.attempts();
    }
    CHECK(bad_allocs == 0);
    CHECK(not_accepted == 0);
    CHECK(attempts == 0);

    // The handle path allocates when its thread's state pool is empty (here, a fresh thread),
    // and says so with std::bad_alloc.
    bool handle_threw = false;
    std::thread([&] {
        FailAllAllocations fail;
        try {
            (void)batcher.submit(7);
        } catch (const std::bad_alloc&) {
            handle_threw = true;
        }
    }).join();
    CHECK(handle_threw);
    batcher.close();
    CHECK(processed.load() == 40);
    CHECK(callbacks.load() == 10);
}

TEST_CASE("Batcher rejects an item whose construction runs out of memory and keeps the rest",
          "[batcher][faults][bad_alloc]") {
    SKIP_WITHOUT_FAULT_INJECTION();
    std::atomic<int> callbacks{0};
    std::vector<std::string> seen;
    Batcher<std::string> batcher(Options{}.max_batch_size(3).max_delay(no_delay_bound).workers(1),
                                 [&](Batch<std::string>& batch) {
                                     for (auto& item : batch) {
                                         seen.push_back(item);  // one worker: no race
                                     }
                                 });
    const char* long_text = "a string far too long for the small-string buffer: it allocates";
    batcher.submit(long_text, [&](Outcome<void>&&) { callbacks.fetch_add(1); });
    bool threw_bad_alloc = false;
    {
        FailAllocation fail;  // std::string(const char*) inside the batch slot fails
        try {
            batcher.submit(long_text, [&](Outcome<void>&&) { callbacks.fetch_add(100); });
        } catch (const std::bad_alloc&) {
            threw_bad_alloc = true;
        }
    }
    CHECK(threw_bad_alloc);
    batcher.submit("short", [&](Outcome<void>&&) { callbacks.fetch_add(1); });  // seals
    batcher.close();
    CHECK(callbacks.load() == 2);
    REQUIRE(seen.size() == 2);
    CHECK(seen[0] == long_text);
    CHECK(seen[1] == "short");
    const auto stats = batcher.stats();
    CHECK(stats.items_rejected_error == 1);
    CHECK(stats.items_accepted == 2);
    CHECK(stats.items_processed == 2);
    CHECK(stats.batches_completed == 1);
}

TEST_CASE("Batcher runs a batch on the sealing thread when its executor runs out of memory",
          "[batcher][faults][bad_alloc][executor]") {
    SKIP_WITHOUT_FAULT_INJECTION();
    microbatch::ThreadPool pool(1);
    // An executor that needs memory for every task (e.g. a queue of shared tasks).
    microbatch::Executor allocating = [&pool](microbatch::Task task) {
        auto shared = std::make_shared<microbatch::Task>(std::move(task));
        pool.post([shared] { (*shared)(); });
    };
    std::atomic<int> processed{0};
    std::atomic<int> ran_on_producer{0};
    const std::thread::id producer = std::this_thread::get_id();
    Batcher<int> batcher(Options{}.max_batch_size(2).max_delay(no_delay_bound).executor(allocating),
                         [&](Batch<int>& batch) {
                             processed += static_cast<int>(batch.size());
                             ran_on_producer += std::this_thread::get_id() == producer ? 1 : 0;
                         });
    batcher.post(1);
    bool triggered = false;
    {
        // post(2) seals the batch; the first allocation on this thread is the executor's.
        FailAllocation fail;
        batcher.post(2);
        triggered = fail.triggered();
    }
    CHECK(triggered);
    CHECK(ran_on_producer.load() == 1);  // ran inline, before post() returned
    CHECK(processed.load() == 2);
    batcher.post(3);
    batcher.post(4);
    batcher.close();
    CHECK(processed.load() == 4);
    CHECK(ran_on_producer.load() == 1);
    CHECK(batcher.stats().items_processed == 4);
}

TEST_CASE("Batcher loses nothing when its own pool's queue cannot allocate",
          "[batcher][faults][bad_alloc][executor]") {
    SKIP_WITHOUT_FAULT_INJECTION();
    // Batch size 1: every post seals a batch and queues it on the owned pool. The pool's ring
    // never allocates, but the overflow deque behind it needs a new block every few tasks: hold
    // the worker in the first batch, fill the ring, then arm one failure and post until the
    // deque hits it: that batch runs inline on this thread; every item is still processed
    // exactly once.
    constexpr int ring = static_cast<int>(microbatch::detail::ThreadPoolState::ring_capacity);
    std::atomic<int> processed{0};
    std::atomic<int> ran_on_producer{0};
    std::atomic<bool> first{true};
    std::atomic<bool> holding{false};
    Gate release;
    const std::thread::id producer = std::this_thread::get_id();
    Batcher<int> batcher(
        Options{}.max_batch_size(1).capacity(4 * ring).max_delay(no_delay_bound),
        [&](Batch<int>& batch) {
            if (first.exchange(false)) {
                holding = true;
                release.wait();  // the worker holds the first batch: the queue fills behind it
            }
            processed += static_cast<int>(batch.size());
            ran_on_producer += std::this_thread::get_id() == producer ? 1 : 0;
        });
    int posted = 0;
    batcher.post(posted++);
    while (!holding) {
        std::this_thread::yield();  // then no batch before the armed failure runs on this thread
    }
    while (posted <= ring + 1) {
        batcher.post(posted++);  // the ring is full now, the deque holds at least one task
    }
    bool triggered = false;
    {
        FailAllocation fail;
        while (!fail.triggered() && posted < 3 * ring) {
            batcher.post(posted++);
        }
        triggered = fail.triggered();
    }
    release.open();
    CHECK(triggered);
    INFO("posted " << posted << " items before the queue allocated");
    batcher.close();
    CHECK(processed.load() == posted);
    CHECK(ran_on_producer.load() == 1);
    CHECK(batcher.stats().items_processed == static_cast<std::uint64_t>(posted));
}

TEST_CASE("Batcher delivers std::bad_alloc from a worker to every item of the batch",
          "[batcher][faults][bad_alloc]") {
    SKIP_WITHOUT_FAULT_INJECTION();
    std::vector<Handle<int>> handles;
    Batcher<int, int> batcher(
        Options{}.max_batch_size(3).max_delay(no_delay_bound).workers(1), [](Batch<int>& batch) {
            if (batch[0] == 0) {
                throw std::bad_alloc();  // process_batch itself runs out of memory
            }
            std::vector<int> results(batch.size() - 1, 0);  // wrong length...
            if (batch[0] == 3) {
                // ...and building the ResultCountError message fails: the worker's next
                // allocation (after process_batch returns) throws std::bad_alloc.
                fault_injection::countdown = 0;
            }
            return results;
        });
    for (int i = 0; i < 9; ++i) {
        handles.push_back(batcher.submit(i));
    }
    batcher.close();
    std::vector<int> kinds;
    for (auto& handle : handles) {
        kinds.push_back(kind_of_handle(handle));
    }
    CHECK(kinds == std::vector<int>{kind_bad_alloc, kind_bad_alloc, kind_bad_alloc, kind_bad_alloc,
                                    kind_bad_alloc, kind_bad_alloc, kind_result_count,
                                    kind_result_count, kind_result_count});
    const auto stats = batcher.stats();
    CHECK(stats.items_failed == 9);
    CHECK(stats.batches_failed == 3);
}

namespace {

/// A callback whose copy constructor throws (its move does not, as the batcher requires).
struct CopyThrowingCallback {
    std::atomic<int>* calls;
    explicit CopyThrowingCallback(std::atomic<int>* counter) : calls(counter) {}
    CopyThrowingCallback(const CopyThrowingCallback& other) : calls(other.calls) {
        throw std::runtime_error("callback copy failed");
    }
    CopyThrowingCallback(CopyThrowingCallback&& other) noexcept : calls(other.calls) {}
    void operator()(Outcome<void>&&) const { calls->fetch_add(1); }
};

}  // namespace

// BUG (issue 5, library): Batcher::fill_slot (batcher.hpp) constructs T in the slot from the
// forwarded item first and stores the completion second. When storing the completion throws
// (copying an lvalue callback that throws or runs out of memory), it destroys the new T and
// publishes a hole: the submit throws and the item is rejected, but an rvalue item has already
// been moved into the destroyed T, contrary to "moved from only when accepted". Fix: store the
// completion first, then construct T; if T's constructor throws, reset() the completion before
// publishing the hole.
TEST_CASE("Batcher leaves an rvalue item untouched when copying its callback throws",
          "[batcher][faults][bad_alloc][regression][issue5]") {
    std::atomic<int> calls{0};
    Batcher<std::string> batcher(Options{}.max_batch_size(4).max_delay(no_delay_bound).workers(1),
                                 [](Batch<std::string>&) {});
    const std::string original(100, 'y');

    std::string item = original;
    CopyThrowingCallback callback(&calls);
    CHECK_THROWS_WITH(batcher.submit(std::move(item), callback), "callback copy failed");

    // The same with an allocation failure: a std::function whose target does not fit its
    // small buffer allocates when copied.
    std::string item2 = original;
    int rejected = 1;
    if (fault_injection::enabled) {
        std::array<char, 64> big{};
        std::function<void(Outcome<void> &&)> function = [big, &calls](Outcome<void>&&) {
            calls.fetch_add(big[0] + 1);
        };
        bool threw_bad_alloc = false;
        {
            FailAllocation fail;
            try {
                batcher.submit(std::move(item2), function);
            } catch (const std::bad_alloc&) {
                threw_bad_alloc = true;
            }
        }
        CHECK(threw_bad_alloc);
        ++rejected;
    }
    batcher.close();
    CHECK(calls.load() == 0);
    CHECK(batcher.stats().items_rejected_error == static_cast<std::uint64_t>(rejected));
    CHECK(batcher.stats().items_accepted == 0);
    // The contract: a rejected item is left as it was.
    CHECK(item == original);
    CHECK(item2 == original);
}

// =================================================================================================
// [misuse]: invalid options, calls after close, re-entrant calls, destruction under load
// =================================================================================================

TEST_CASE("Batcher rejects every invalid option value with a message naming the option",
          "[batcher][misuse][options]") {
    const auto noop = [](Batch<int>&) {};
    struct Case {
        const char* name;
        Options options;
        const char* must_mention;
    };
    const std::vector<Case> cases{
        {"max_batch_size 0", Options{}.max_batch_size(0), "max_batch_size"},
        {"max_batch_size too large",
         Options{}.max_batch_size(Options::max_supported_batch_size + 1), "max_batch_size"},
        {"negative max_delay", Options{}.max_delay(std::chrono::nanoseconds(-1)), "max_delay"},
        {"capacity below max_batch_size", Options{}.max_batch_size(8).capacity(7), "capacity"},
        {"capacity 1 with batch size 2", Options{}.max_batch_size(2).capacity(1), "capacity"},
        {"workers 0 without executor", Options{}.workers(0), "workers"},
        {"too many buffers", Options{}.max_batch_size(1).capacity(65537), "capacity"},
    };
    for (const Case& c : cases) {
        INFO(c.name);
        std::string message;
        try {
            Batcher<int> batcher(c.options, noop);
        } catch (const std::invalid_argument& error) {
            message = error.what();
        }
        CHECK(message.find(c.must_mention) != std::string::npos);
    }

    // The boundaries themselves are valid.
    microbatch::ThreadPool pool(1);
    CHECK_NOTHROW(Batcher<int>(Options{}.max_batch_size(8).capacity(8), noop));
    CHECK_NOTHROW(Batcher<int>(Options{}.max_batch_size(1).capacity(65536), noop));
    CHECK_NOTHROW(Batcher<int>(Options{}.max_delay(0ns), noop));
    CHECK_NOTHROW(Batcher<int>(Options{}.max_delay(no_delay_bound), noop));
    CHECK_NOTHROW(Batcher<int>(Options{}.workers(0).executor(pool.executor()), noop));
}

TEST_CASE("Batcher refuses every kind of submit after close and leaves items untouched",
          "[batcher][misuse][close]") {
    std::atomic<int> callbacks{0};
    std::atomic<int> processed{0};
    Batcher<std::string, int> batcher(Options{}.max_batch_size(4).max_delay(1h).workers(2),
                                      [&](Batch<std::string>& batch) {
                                          processed += static_cast<int>(batch.size());
                                          return std::vector<int>(batch.size(), 1);
                                      });
    Handle<int> before = batcher.submit(std::string("before"));
    batcher.close();
    CHECK(before.get() == 1);

    const std::string original(64, 'z');
    std::string item = original;
    const auto callback = [&callbacks](Outcome<int>&&) { callbacks.fetch_add(1); };
    Handle<int> handle;
    CHECK_THROWS_AS(batcher.submit(std::move(item)), microbatch::ClosedError);
    CHECK_THROWS_AS(batcher.submit(std::move(item), callback), microbatch::ClosedError);
    CHECK_THROWS_AS(batcher.post(std::move(item)), microbatch::ClosedError);
    CHECK(batcher.try_submit(std::move(item)) == SubmitStatus::closed);
    CHECK(batcher.try_submit(std::move(item), callback) == SubmitStatus::closed);
    CHECK(batcher.try_submit(std::move(item), handle) == SubmitStatus::closed);
    CHECK(batcher.submit_for(std::move(item), 1ms) == SubmitStatus::closed);
    CHECK(batcher.submit_for(std::move(item), callback, 1ms) == SubmitStatus::closed);
    CHECK(batcher.submit_for(std::move(item), handle, 1ms) == SubmitStatus::closed);
    CHECK(item == original);
    CHECK_FALSE(handle.valid());

    // Everything else is harmless after close.
    batcher.flush();
    batcher.close();
    CHECK(batcher.close_for(1ms).completed);
    CHECK(batcher.is_closed());

    CHECK(callbacks.load() == 0);
    CHECK(processed.load() == 1);
    const auto stats = batcher.stats();
    CHECK(stats.items_rejected_closed == 9);
    CHECK(stats.items_accepted == 1);
    CHECK(stats.items_submitted == 10);
}

TEST_CASE("Batcher refuses close, close_for and wait_idle from inside process_batch or a callback",
          "[batcher][misuse][reentrancy]") {
    // Codes recorded inside the batch function / callback: 1 ReentrancyError, 2 returned
    // normally, 3 another exception.
    struct Calls {
        std::atomic<int> close{0}, close_for{0}, wait_idle{0}, flush{0}, stats{0};
    };
    Calls in_batch;
    Calls in_callback;
    std::atomic<Batcher<int>*> self{nullptr};
    const auto attempt = [](std::atomic<int>& code, auto&& call) {
        try {
            call();
            code = 2;
        } catch (const microbatch::ReentrancyError&) {
            code = 1;
        } catch (...) {
            code = 3;
        }
    };
    const auto try_everything = [&](Calls& calls) {
        Batcher<int>& batcher = *self.load();
        attempt(calls.close, [&] { batcher.close(); });
        attempt(calls.close_for, [&] { (void)batcher.close_for(1ms); });
        attempt(calls.wait_idle, [&] { batcher.wait_idle(); });
        attempt(calls.flush, [&] { batcher.flush(); });
        attempt(calls.stats, [&] { (void)batcher.stats(); });
    };
    std::atomic<int> batches{0};
    Batcher<int> batcher(Options{}.max_batch_size(2).max_delay(no_delay_bound).workers(1),
                         [&](Batch<int>& batch) {
                             batches.fetch_add(1);
                             if (batch[0] == 1) {
                                 try_everything(in_batch);
                             }
                         });
    self = &batcher;
    batcher.post(1);
    batcher.post(2);  // full: runs the batch that tries everything
    batcher.post(3);
    batcher.submit(4, [&](Outcome<void>&&) { try_everything(in_callback); });
    batcher.post(5);  // left partial: flushed by close()
    batcher.close();

    for (Calls* calls : {&in_batch, &in_callback}) {
        CHECK(calls->close.load() == 1);
        CHECK(calls->close_for.load() == 1);
        CHECK(calls->wait_idle.load() == 1);
        CHECK(calls->flush.load() == 2);  // flush never waits: allowed
        CHECK(calls->stats.load() == 2);
    }
    CHECK(batches.load() == 3);
    CHECK(batcher.stats().items_processed == 5);
    CHECK(batcher.stats().callback_exceptions == 0);
}

TEST_CASE("Batcher counts exceptions thrown by callbacks and keeps completing the others",
          "[batcher][misuse][errors]") {
    std::atomic<int> completed{0};
    std::vector<Handle<int>> handles;
    Batcher<int, int> batcher(
        Options{}.max_batch_size(4).max_delay(no_delay_bound).workers(2),
        [](Batch<int>& batch) { return std::vector<int>(batch.begin(), batch.end()); });
    int throwing = 0;
    for (int i = 0; i < 40; ++i) {
        if (i % 4 == 1) {
            handles.push_back(batcher.submit(i));
        } else {
            const bool throws = i % 3 == 0;
            throwing += throws ? 1 : 0;
            batcher.submit(i, [&completed, throws](Outcome<int>&&) {
                completed.fetch_add(1);
                if (throws) {
                    throw std::runtime_error("callback failed");
                }
            });
        }
    }
    batcher.close();
    CHECK(completed.load() == 30);
    int values = 0;
    for (std::size_t k = 0; k < handles.size(); ++k) {
        values += handles[k].get() == static_cast<int>(4 * k + 1) ? 1 : 0;
    }
    CHECK(values == 10);
    const auto stats = batcher.stats();
    CHECK(stats.callback_exceptions == static_cast<std::uint64_t>(throwing));
    CHECK(stats.items_processed == 40);
    CHECK(stats.items_failed == 0);
}

TEST_CASE("Batcher allows a re-entrant submit with room and refuses one that would wait",
          "[batcher][misuse][reentrancy]") {
    // Outcome codes: 1 accepted, 2 full, 3 ReentrancyError, 4 other.
    struct Codes {
        std::atomic<int> submit{0}, post{0}, try_submit{0}, submit_for{0}, callback{0};
    };
    const auto run = [](std::size_t capacity, Codes& codes) {
        std::atomic<Batcher<int, int>*> self{nullptr};
        std::atomic<int> reentrant_processed{0};
        Handle<int> reentrant_handle;
        std::atomic<bool> handle_taken{false};
        Gate reentered;  // close() must not begin before the re-entrant calls are done
        Batcher<int, int> batcher(
            Options{}.max_batch_size(2).capacity(capacity).max_delay(no_delay_bound).workers(1),
            [&](Batch<int>& batch) {
                for (int x : batch) {
                    reentrant_processed += x >= 100 ? 1 : 0;
                }
                if (batch[0] == 0) {
                    Batcher<int, int>& b = *self.load();
                    const auto code = [](auto&& call) {
                        try {
                            return call() ? 1 : 2;
                        } catch (const microbatch::ReentrancyError&) {
                            return 3;
                        } catch (...) {
                            return 4;
                        }
                    };
                    codes.submit = code([&] {
                        reentrant_handle = b.submit(100);
                        handle_taken = true;
                        return true;
                    });
                    codes.callback = code([&] {
                        return b.try_submit(101, [](Outcome<int>&&) {}) == SubmitStatus::accepted;
                    });
                    codes.post = code([&] {
                        b.post(102);
                        return true;
                    });
                    codes.try_submit =
                        code([&] { return b.try_submit(103) == SubmitStatus::accepted; });
                    codes.submit_for =
                        code([&] { return b.submit_for(104, 0ms) == SubmitStatus::accepted; });
                    reentered.open();
                }
                return std::vector<int>(batch.begin(), batch.end());
            });
        self = &batcher;
        batcher.post(0);
        batcher.post(1);  // seals batch {0, 1}: its process_batch makes the re-entrant calls
        reentered.wait();
        batcher.close();
        if (handle_taken.load()) {
            CHECK(reentrant_handle.get() == 100);
        }
        const auto stats = batcher.stats();
        CHECK(stats.items_accepted == 2 + static_cast<std::uint64_t>(reentrant_processed));
        CHECK(stats.items_processed == stats.items_accepted);
        return reentrant_processed.load();
    };

    SECTION("with room (a second buffer is open) every call is accepted") {
        Codes codes;
        CHECK(run(8, codes) == 5);
        CHECK(codes.submit.load() == 1);
        CHECK(codes.callback.load() == 1);
        CHECK(codes.post.load() == 1);
        CHECK(codes.try_submit.load() == 1);
        CHECK(codes.submit_for.load() == 1);
    }
    SECTION("without room (the only buffer is the running batch) nothing waits for itself") {
        Codes codes;
        CHECK(run(2, codes) == 0);
        CHECK(codes.submit.load() == 3);
        CHECK(codes.callback.load() == 2);
        CHECK(codes.post.load() == 3);
        CHECK(codes.try_submit.load() == 2);
        CHECK(codes.submit_for.load() == 3);
    }
}

namespace {

using StringBatcher = Batcher<std::string>;

/// Raw storage for a batcher that is destroyed explicitly: it stays mapped until every thread
/// that used the batcher has been joined, so a late access is a bug report (TSan), not a crash.
struct alignas(StringBatcher) BatcherStorage {
    unsigned char bytes[sizeof(StringBatcher)];
};

}  // namespace

TEST_CASE("Destroying a batcher wakes producers blocked in post() with ClosedError",
          "[batcher][misuse][close]") {
#if !defined(__linux__)
    WARN("skipped: needs /proc/self/task/<tid>/syscall to see that producers are blocked");
#else
    if (!can_inspect_threads()) {
        WARN("skipped: /proc/self/task/<tid>/syscall is not readable here");
        return;
    }
    const int round = GENERATE(range(0, 3));
    INFO("round " << round);
    auto storage = std::make_unique<BatcherStorage>();
    std::atomic<StringBatcher*> self{nullptr};
    std::atomic<int> processed{0};
    // Capacity 1: the first item's batch holds the only buffer. It returns once closing has
    // begun (the destructor's close() sets the closed state first, then waits for it).
    auto* batcher = new (storage->bytes) StringBatcher(
        Options{}.max_batch_size(1).capacity(1).workers(1), [&](Batch<std::string>& batch) {
            while (!self.load()->is_closed()) {
                std::this_thread::yield();
            }
            processed += static_cast<int>(batch.size());
        });
    self = batcher;
    batcher->post(std::string("first"));

    constexpr int producers = 4;
    const std::string original(80, 'p');
    std::array<std::atomic<pid_t>, producers> tids{};
    std::array<std::atomic<int>, producers> outcomes{};  // 1 accepted, 2 ClosedError, 3 other
    std::array<std::string, producers> items;
    std::vector<std::thread> threads;
    for (int p = 0; p < producers; ++p) {
        items[static_cast<std::size_t>(p)] = original;
        threads.emplace_back([&, p] {
            const auto index = static_cast<std::size_t>(p);
            tids[index] = current_tid();
            try {
                batcher->post(std::move(items[index]));
                outcomes[index] = 1;
            } catch (const microbatch::ClosedError&) {
                outcomes[index] = 2;
            } catch (...) {
                outcomes[index] = 3;
            }
        });
    }
    // Wait until each producer sleeps on one of the batcher's own mutexes or condition
    // variables: it is then blocked inside post(), not about to enter it.
    for (auto& tid : tids) {
        while (tid.load() == 0 || !blocked_inside(tid.load(), batcher, sizeof(StringBatcher))) {
            std::this_thread::yield();
        }
    }
    batcher->~StringBatcher();
    for (auto& thread : threads) {
        thread.join();
    }
    CHECK(processed.load() == 1);
    for (std::size_t p = 0; p < producers; ++p) {
        CHECK(outcomes[p].load() == 2);
        CHECK(items[p] == original);  // a rejected item is left as it was
    }
#endif
}

// BUG (issue 5, library): after a blocked producer wakes because the batcher closed,
// Batcher::submit_impl calls stats_.rejected_closed() (and rejected_full()) *after*
// wait_for_space() has returned, i.e. after its Leave guard decremented slow_producers_. The
// destructor's close() waits only for slow_producers_ == 0, so it can return and free the
// batcher while the woken producer is still about to write stats_: a use-after-free. TSan
// reports it every time with a heap-allocated batcher (operator delete vs. the atomic write in
// submit_impl). Fix: count the rejection inside wait_for_space() before `leave` is destroyed
// (or hold the registration across the whole slow path in submit_impl).
// The failure was only visible to ThreadSanitizer (or, rarely, ASan): the tsan preset runs it.
TEST_CASE("Destroying a heap batcher with blocked producers never touches freed memory",
          "[batcher][misuse][close][regression][issue5]") {
#if defined(__linux__)
    if (!can_inspect_threads()) {
        return;
    }
    for (int round = 0; round < 20; ++round) {
        std::atomic<StringBatcher*> self{nullptr};
        auto batcher = std::make_unique<StringBatcher>(
            Options{}.max_batch_size(1).capacity(1).workers(1), [&](Batch<std::string>&) {
                while (!self.load()->is_closed()) {
                    std::this_thread::yield();
                }
            });
        self = batcher.get();
        batcher->post(std::string("first"));
        std::array<std::atomic<pid_t>, 4> tids{};
        std::atomic<int> closed_errors{0};
        std::vector<std::thread> threads;
        for (std::size_t p = 0; p < tids.size(); ++p) {
            threads.emplace_back([&, p] {
                tids[p] = current_tid();
                try {
                    batcher->post(std::string("blocked"));
                } catch (const microbatch::ClosedError&) {
                    closed_errors.fetch_add(1);
                }
            });
        }
        for (auto& tid : tids) {
            while (tid.load() == 0 ||
                   !blocked_inside(tid.load(), batcher.get(), sizeof(StringBatcher))) {
                std::this_thread::yield();
            }
        }
        batcher.reset();
        for (auto& thread : threads) {
            thread.join();
        }
        CHECK(closed_errors.load() == 4);
    }
#endif
}

// BUG (issue 5, library): the claim in Batcher::submit_impl is an unconditional
// head_.fetch_add(1). While the head is not accepting (count >= max_batch_size), every refused
// claim still adds one to the 24-bit count field, which only a re-opening CAS resets. After
// close() nothing resets it: 2^23 refused submits (closed count starts at sealed_count = 2^23)
// carry into the buffer field, the next claim sees count 0 and fill_slot() writes the item into
// buffer 1, reporting `accepted` on a closed batcher; the item is never processed and its
// callback never runs (with a single buffer the write lands outside buffers_). The same carry
// happens without close() after 2^24 - max_batch_size refused try_submit calls while every buffer
// is busy (e.g. a producer polling try_submit while a batch is blocked for a few seconds).
// Fix: load head_ first and only fetch_add when it shows count < max_batch_size and not closed
// (test-and-test-and-set), which bounds the stray increments by the number of racing threads;
// and treat the closed bit as "rejected" in submit_impl even when the count looks open.
TEST_CASE("Batcher stays closed however many submits it refuses",
          "[batcher][misuse][close][regression][issue5]") {
    std::atomic<int> callbacks{0};
    // Four buffers, so the carried claim lands in a real (unused) buffer instead of outside
    // the array; batch size 64 so that a single stray item never seals a batch.
    Batcher<int> batcher(Options{}.max_batch_size(64).capacity(256).max_delay(no_delay_bound),
                         [](Batch<int>&) {});
    batcher.close();
    constexpr std::size_t refusals = std::size_t{1} << 23;
    std::size_t closed = 0;
    for (std::size_t i = 0; i < refusals; ++i) {
        closed += batcher.try_submit(1) == SubmitStatus::closed ? 1 : 0;
    }
    CHECK(closed == refusals);
    const SubmitStatus next =
        batcher.try_submit(2, [&](Outcome<void>&&) { callbacks.fetch_add(1); });
    CHECK(next == SubmitStatus::closed);
    CHECK(batcher.stats().items_accepted == 0);
}

// BUG (issue 5, library): Batcher::flush_and_target (used by wait_idle) loops forever after
// close() when the batcher has a single buffer (capacity == max_batch_size) and close() began
// while that buffer's batch was in flight. The closed head keeps the old batch's tag; when the
// batch finishes, arrive() re-opens the buffer (open_buffer stores a new sequence, then sees the
// closed bit and retires it), so `(sequence & tag_mask) != tag_of(head)` holds forever and the
// `continue` ("the buffer was reopened since we read head_") spins without end. Fix: when the
// head is closed, return without comparing tags (everything accepted is in batches that close()
// accounts for; wait on open_batches_ == 0 as close does), or have open_buffer() leave sequence
// untouched when it retires a buffer because the batcher is closed.
// The hang is detected in a child process killed by alarm(), so the suite never hangs.
TEST_CASE("Batcher wait_idle returns after close with a single buffer",
          "[batcher][misuse][close][regression][issue5]") {
#if !defined(__linux__)
    WARN("skipped: needs fork()");
#else
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        ::alarm(5);  // a hang bound for the child, not a timing assertion
        {
            Gate release;
            Batcher<int> batcher(
                Options{}.max_batch_size(2).capacity(2).max_delay(no_delay_bound).workers(1),
                [&](Batch<int>&) { release.wait(); });
            batcher.post(1);
            batcher.post(2);  // full: in flight, blocked on the gate
            std::thread closer([&] { batcher.close(); });
            while (!batcher.is_closed()) {
                std::this_thread::yield();
            }
            release.open();
            closer.join();
            batcher.wait_idle();  // must return: nothing is left to wait for
        }
        std::_Exit(0);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    const bool exited_cleanly = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    const int signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    INFO("child killed by signal " << signal << " (" << SIGALRM << " = SIGALRM: wait_idle hung)");
    CHECK(exited_cleanly);
#endif
}

// Minor (issue 5, library): a batch whose every slot is a hole is never handed to process_batch
// (good) but is still counted by StatsRecorder::completed() as a completed batch of size 0, so
// Stats::batch_size_min becomes 0 while batches_completed > 0 ("0 before the first" per the
// docs) and batch_size_mean() is skewed. Fix: in run_batch, skip stats_.completed() (or count it
// separately) when count == 0 and failed_in_compaction == 0.
TEST_CASE("Batcher stats never report an empty completed batch",
          "[batcher][faults][regression][issue5]") {
    Batcher<Fragile> batcher(Options{}.max_batch_size(2).max_delay(no_delay_bound).workers(1),
                             [](Batch<Fragile>&) {});
    for (int id = 0; id < 2; ++id) {
        CHECK_THROWS_AS(batcher.post(Spec{id, true, false}), ConstructionFailure);
    }
    batcher.post(Spec{2, false, false});
    batcher.post(Spec{3, false, false});
    batcher.close();
    const auto stats = batcher.stats();
    CHECK(stats.items_processed == 2);
    CHECK(stats.batch_size_min == 2);  // the empty "batch" must not count as the smallest
    CHECK(stats.batch_size_max == 2);
}

// Issue 15, item 1: after a batch made only of holes (B = 1, one failed construction), Stats
// reported batch_size_min = 2^63 - 1 (its "unset" value) with batches_completed = 1. A batch of
// holes is dispatched and completed but has no size: every size figure leaves it out.
TEST_CASE("Batcher stats count a batch made only of failed constructions consistently",
          "[batcher][faults][stats][regression][issue15]") {
    Batcher<Fragile> batcher(Options{}.max_batch_size(1).max_delay(no_delay_bound).workers(1),
                             [](Batch<Fragile>&) {});
    CHECK_THROWS_AS(batcher.post(Spec{0, true, false}), ConstructionFailure);
    batcher.close();
    const auto stats = batcher.stats();
    CHECK(stats.items_submitted == 1);
    CHECK(stats.items_rejected_error == 1);
    CHECK(stats.items_accepted == 0);
    CHECK(stats.items_processed + stats.items_failed == 0);
    CHECK(stats.batches_full == 1);
    CHECK(stats.batches_dispatched() == 1);
    CHECK(stats.batches_completed == 1);
    CHECK(stats.batches_failed == 0);
    CHECK(stats.batch_size_min == 0);
    CHECK(stats.batch_size_max == 0);
    CHECK(stats.batch_size_mean() == 0.0);
    for (const std::uint64_t bucket : stats.batch_size_histogram) {
        CHECK(bucket == 0);
    }
    CHECK(stats.queue_delay.count == 1);
    CHECK(stats.processing_time.count == 1);
    CHECK(stats.batch_cost.sample_count() == 0);
}

TEST_CASE("Batcher stats leave batches of holes out of the size figures",
          "[batcher][faults][stats][regression][issue15]") {
    Batcher<Fragile> batcher(Options{}.max_batch_size(2).max_delay(no_delay_bound).workers(1),
                             [](Batch<Fragile>&) {});
    CHECK_THROWS_AS(batcher.post(Spec{0, true, false}), ConstructionFailure);
    CHECK_THROWS_AS(batcher.post(Spec{1, true, false}), ConstructionFailure);  // batch 0: holes
    CHECK_THROWS_AS(batcher.post(Spec{2, true, false}), ConstructionFailure);
    batcher.post(Spec{3, false, false});  // batch 1: one item, dispatched full
    batcher.post(Spec{4, false, false});
    batcher.post(Spec{5, false, false});  // batch 2: two items
    batcher.close();
    const auto stats = batcher.stats();
    CHECK(stats.items_submitted == 6);
    CHECK(stats.items_processed == 3);
    CHECK(stats.batches_dispatched() == 3);
    CHECK(stats.batches_completed == 3);
    CHECK(stats.batch_size_min == 1);
    CHECK(stats.batch_size_max == 2);
    CHECK(stats.batch_size_histogram[0] == 1);
    CHECK(stats.batch_size_histogram[1] == 1);
    CHECK(stats.batch_size_mean() == 1.5);
    CHECK(stats.queue_delay.count == 3);
}

// Issue 15, item 2: an item whose move constructor threw during compaction had its handle and
// callback completed while items_processed + items_failed was still 0, contradicting "a producer
// that has seen an item's result also sees the item counted".
TEST_CASE("Batcher counts an item that fails in compaction before completing it",
          "[batcher][faults][stats][compaction][regression][issue15]") {
    Gate release;
    std::atomic<int> batches_run{0};
    Batcher<Fragile, int> batcher(Options{}.max_batch_size(4).max_delay(no_delay_bound).workers(1),
                                  [&](Batch<Fragile>& batch) {
                                      batches_run.fetch_add(1);
                                      release.wait();
                                      return std::vector<int>(batch.size(), 7);
                                  });
    std::atomic<std::uint64_t> counted_in_callback{99};
    CHECK_THROWS_AS(batcher.post(Spec{0, true, false}), ConstructionFailure);  // hole
    batcher.submit(Spec{1, false, true}, [&](Outcome<int>&& outcome) {         // move bomb
        const auto stats = batcher.stats();
        counted_in_callback = outcome.has_value() ? 98 : stats.items_processed + stats.items_failed;
    });
    Handle<int> bomb = batcher.submit(Spec{2, false, true});  // move bomb
    Handle<int> good = batcher.submit(Spec{3, false, false});
    CHECK_THROWS_AS(bomb.get(), MoveFailure);
    // Seen through the handle while process_batch still runs (held by the gate).
    auto stats = batcher.stats();
    CHECK(stats.items_failed == 2);
    CHECK(stats.items_processed == 0);
    CHECK(stats.batches_completed == 0);
    CHECK(counted_in_callback.load() == 1);  // itself, before the second bomb
    release.open();
    CHECK(good.get() == 7);
    batcher.close();
    stats = batcher.stats();
    CHECK(batches_run.load() == 1);
    CHECK(stats.items_accepted == 3);
    CHECK(stats.items_failed == 2);
    CHECK(stats.items_processed == 1);
    CHECK(stats.batches_completed == 1);
    CHECK(stats.batches_failed == 0);
    CHECK(stats.batch_size_max == 3);  // the failed items still belonged to the batch
    CHECK(stats.batch_size_min == 3);
}

// Issue 15, item 5: close_for().items_in_flight counted slots whose construction threw.
TEST_CASE("Batcher close_for does not count failed constructions as in flight",
          "[batcher][faults][close][regression][issue15]") {
    Gate release;
    Batcher<Fragile> batcher(Options{}.max_batch_size(2).max_delay(no_delay_bound).workers(1),
                             [&](Batch<Fragile>&) { release.wait(); });
    CHECK_THROWS_AS(batcher.post(Spec{0, true, false}), ConstructionFailure);
    batcher.post(Spec{1, false, false});  // batch 0: hole + item, running (held by the gate)
    CHECK_THROWS_AS(batcher.post(Spec{2, true, false}), ConstructionFailure);
    batcher.post(Spec{3, false, false});  // batch 1: hole + item, queued behind batch 0
    batcher.post(Spec{4, false, false});  // batch 2: dispatched by close
    const auto result = batcher.close_for(1ms);
    CHECK_FALSE(result.completed);
    CHECK(result.batches_in_flight == 3);
    CHECK(result.items_in_flight == 3);
    release.open();
    const auto second = batcher.close_for(1h);
    CHECK(second.completed);
    CHECK(second.items_in_flight == 0);
    const auto stats = batcher.stats();
    CHECK(stats.items_processed == 3);
    CHECK(stats.items_rejected_error == 2);
}

// Issue 15, item 4: the thread remembered only the innermost running batcher, so when A's batch
// ran B's batch on the same thread (inline or refusing executor) and B's batch called back into
// A, wait_idle / close / a blocking submit on a full A deadlocked instead of throwing.
TEST_CASE("Batcher detects re-entrancy through other batchers' batches nested on the thread",
          "[batcher][misuse][reentrancy][regression][issue15]") {
    const int op = GENERATE(0, 1, 2, 3, 4);  // wait_idle, close, close_for, post, submit_for 0
    const bool refusing = GENERATE(false, true);
    const int depth = GENERATE(1, 2);  // B calls A, or B runs C which calls A
    INFO("op " << op << (refusing ? ", refusing" : ", inline") << " executor, depth " << depth);
    const microbatch::Executor inner_executor =
        refusing ? microbatch::Executor([](microbatch::Task) { throw std::runtime_error("no"); })
                 : microbatch::Executor([](microbatch::Task task) { task(); });
    const auto inner_options =
        Options{}.max_batch_size(1).max_delay(no_delay_bound).executor(inner_executor);
    std::atomic<Batcher<int>*> outer{nullptr};
    std::atomic<int> code{0};  // 1 returned, 3 ReentrancyError, 4 anything else
    Batcher<int> c(inner_options, [&](Batch<int>&) {
        Batcher<int>& a = *outer.load();
        try {
            switch (op) {
                case 0:
                    a.wait_idle();
                    break;
                case 1:
                    a.close();
                    break;
                case 2:
                    (void)a.close_for(1h);
                    break;
                case 3:
                    a.post(100);  // A is full: its only buffer is the running batch
                    break;
                default:
                    (void)a.submit_for(101, 0ms);
                    break;
            }
            code = 1;
        } catch (const microbatch::ReentrancyError&) {
            code = 3;
        } catch (...) {
            code = 4;
        }
    });
    Batcher<int> b(inner_options, [&](Batch<int>&) { c.post(3); });
    Batcher<int> a(Options{}.max_batch_size(1).capacity(1).max_delay(no_delay_bound).workers(1),
                   [&](Batch<int>&) {
                       if (depth == 1) {
                           c.post(2);  // C's batch runs here, on A's worker
                       } else {
                           b.post(2);  // B's batch runs here and runs C's batch
                       }
                   });
    outer = &a;
    a.post(1);
    a.wait_idle();
    CHECK(code.load() == 3);
    CHECK_FALSE(a.is_closed());
    a.close();
    const auto stats = a.stats();
    CHECK(stats.items_accepted == 1);
    CHECK(stats.items_processed == 1);
    CHECK(c.stats().items_processed == 1);
}
