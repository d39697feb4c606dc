// Throughput of microbatch::Batcher in each submission mode against every hand-written baseline,
// in one binary and one run (GitHub issue 4).
//
// Workload: N items (the values 1..N, split evenly over P producer threads) go through a fresh
// instance per iteration; the per-batch work is trivial (sum the batch into one shared sink), so
// the figures measure batching and hand-off cost, not work. The clock starts when the producers
// are released (thread start-up excluded) and stops when every item has been processed
// (close()/wait_idle() returned), so draining is included. A checksum over all items is verified
// on every iteration: a lost or duplicated item fails the benchmark.
//
// Implementations (benchmark names are parsed by bench/report/make_report.py):
//   Microbatch_Post        Batcher<Item>        post(item)            fire-and-forget
//   Microbatch_Post_Cap4B  the same with capacity 4 B (the default before issue 13)
//   Microbatch_Post_357efd2  the same with batch formation as at 357efd2 (size and time only)
//   Microbatch_PostN       Batcher<Item>        post_n(run of K)      bulk fire-and-forget
//   Microbatch_Post_Lanes  the same as Post with Options::lanes(P): one fill lane per producer
//   Microbatch_Callback    Batcher<Item, Item>  submit(item, cb)      cb merges its result
//   Microbatch_Handle      Batcher<Item, Item>  submit(item) -> get() producer sums its results
//   MutexBatcher           baselines/mutex_batcher.hpp (mutex + condvars + dispatcher thread)
//   MutexPromise           the same with one std::promise/std::future per item
//   PerItemDispatch        baselines/per_item_dispatch.hpp on microbatch::ThreadPool (no B)
//   Sequential             baselines/sequential.hpp: slices of B on the producer (P = 1, no W)
//   Moodycamel             baselines/moodycamel_handoff.hpp: the raw lock-free hand-off floor
//   Moodycamel_Bulk        the same with enqueue_bulk(run of K)
// Handle/Callback and MutexPromise run the same process function (copy the batch out as the
// results); Post and the other baselines run the same one (sum the batch).
//
// Arguments: B = max batch size, P = producer threads, W = worker threads. microbatch runs with
// its DEFAULT options except B and W (issue 13: the headline is a user's first experience;
// max_delay's default is 1 ms, the capacity's max(4 B, 1024)); rows that set more say so in
// their name. The mutex baselines get capacity max(4 B, 1024) items and max_delay 1 ms;
// Moodycamel and PerItemDispatch queues are unbounded. Two extra runs at B = 256,
// Microbatch_Post_Cap64B and MutexBatcher_Cap64B, use a capacity of 64 B to show how much of a
// gap to the unbounded queues is the capacity bound. Bulk rows hand over runs of K = --bulk
// (default 256) items from a vector built before the clock starts.
//
// Defaults (any of them can be overridden on the command line, later flags win):
//   --benchmark_min_time=0.05 --benchmark_repetitions=5 --benchmark_enable_random_interleaving
//   --benchmark_display_aggregates_only
// Extra flags: --items=N (items per iteration, default 131072; for the batchers at B = 1 a
// quarter of it, since those run 10-100x slower and are only there to show why batching
// matters); --capacity=N (items, for microbatch and the mutex baselines; default: microbatch's
// own, max(4 B, 1024) for the mutex baselines); --bulk=K (run length of the bulk rows, 256).
//
//   ./bench_batcher                                            # the whole matrix, < 3 min
//   ./bench_batcher --benchmark_filter='/B:256/P:2/W:2$' --benchmark_min_time=0.2

#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <future>
#include <numeric>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "baselines/moodycamel_handoff.hpp"
#include "baselines/mutex_batcher.hpp"
#include "baselines/per_item_dispatch.hpp"
#include "baselines/sequential.hpp"
#include "microbatch/batcher.hpp"
#include "microbatch/thread_pool.hpp"

#if __has_include("microbatch/aggregator.hpp")
#include "microbatch/aggregator.hpp"
#define MICROBATCH_BENCH_HAVE_AGGREGATOR 1
#else
#define MICROBATCH_BENCH_HAVE_AGGREGATOR 0
#endif

namespace {

using Item = std::uint64_t;
using Clock = std::chrono::steady_clock;

std::size_t base_items_per_run = std::size_t{1} << 17;  // --items=N
std::size_t capacity_override = 0;                      // --capacity=N, 0: see library_options
std::size_t bulk_run = 256;                             // --bulk=K: run length of the bulk rows

// ---- The shared sink every implementation sums into ----------------------------------------

#if MICROBATCH_BENCH_HAVE_AGGREGATOR
/// Per-batch sums land in microbatch's sharded aggregator (workers rarely share a cache line).
class Sink {
public:
    void merge(Item value) { total_.merge(value); }
    Item value() const { return total_.value(); }

private:
    microbatch::Aggregator<microbatch::ops::Sum<Item>> total_;
};
constexpr const char* sink_name = "microbatch::Aggregator<Sum>";
#else
/// Fallback while aggregator.hpp is not available: one relaxed atomic.
class Sink {
public:
    // relaxed: the sum is the only data; it is read after every thread was joined.
    void merge(Item value) { total_.fetch_add(value, std::memory_order_relaxed); }
    Item value() const { return total_.load(std::memory_order_relaxed); }

private:
    std::atomic<Item> total_{0};
};
constexpr const char* sink_name = "std::atomic fetch_add";
#endif

template <class Range>
Item sum_of(const Range& items) {
    return std::accumulate(items.begin(), items.end(), Item{0});
}

// ---- Run shape and timing ---------------------------------------------------------------------

/// One benchmark configuration, read from the benchmark arguments.
struct Shape {
    std::size_t batch_size = 1;        // B
    std::size_t producers = 1;         // P
    std::size_t workers = 1;           // W
    std::size_t items = 0;             // N for this configuration
    std::size_t capacity_batches = 0;  // nonzero: capacity = this many batches (the *_Cap64B runs)
    std::size_t lanes = 1;             // microbatch only: Options::lanes
    bool size_time_rule = false;       // microbatch only: the 357efd2 rule (issue 10 baseline)
    bool capacity_4b = false;          // microbatch only: capacity 4 B (the 357efd2 default)

    /// Capacity given to every bounded implementation (--capacity=N overrides, rounded up to
    /// a multiple of B).
    std::size_t capacity() const {
        if (capacity_batches != 0) {
            return capacity_batches * batch_size;
        }
        if (capacity_override != 0) {
            return (std::max(capacity_override, batch_size) + batch_size - 1) / batch_size *
                   batch_size;
        }
        return std::max<std::size_t>(4 * batch_size, 1024);
    }

    /// The values producer @p index submits: [first, last).
    std::pair<Item, Item> share(std::size_t index) const {
        const std::size_t per_producer = items / producers;
        const std::size_t begin = index * per_producer;
        const std::size_t end = index + 1 == producers ? items : begin + per_producer;
        return {static_cast<Item>(begin) + 1, static_cast<Item>(end) + 1};
    }
    Item checksum() const { return static_cast<Item>(items) * (items + 1) / 2; }
};

std::size_t items_for(std::size_t batch_size) {
    return batch_size == 1 ? std::max<std::size_t>(base_items_per_run / 4, 2) : base_items_per_run;
}

Shape shape_bpw(const benchmark::State& state) {
    Shape shape;
    shape.batch_size = static_cast<std::size_t>(state.range(0));
    shape.producers = static_cast<std::size_t>(state.range(1));
    shape.workers = static_cast<std::size_t>(state.range(2));
    shape.items = items_for(shape.batch_size);
    return shape;
}

constexpr auto max_delay = std::chrono::milliseconds(1);

/**
 * Runs produce(index) on @p producers fresh threads released together; returns the seconds from
 * the release until finish() has returned (thread creation is not timed, joining and draining
 * are).
 */
template <class Produce, class Finish>
double timed_run(std::size_t producers, Produce&& produce, Finish&& finish) {
    std::atomic<std::size_t> waiting{0};
    std::atomic<bool> released{false};
    std::vector<std::thread> threads;
    threads.reserve(producers);
    for (std::size_t index = 0; index < producers; ++index) {
        threads.emplace_back([&, index] {
            waiting.fetch_add(1, std::memory_order_relaxed);
            // acquire: pairs with the release below (nothing is published, but it is cheap).
            while (!released.load(std::memory_order_acquire)) {
                std::this_thread::yield();
            }
            produce(index);
        });
    }
    while (waiting.load(std::memory_order_relaxed) != producers) {
        std::this_thread::yield();
    }
    const auto start = Clock::now();
    released.store(true, std::memory_order_release);
    for (std::thread& thread : threads) {
        thread.join();
    }
    finish();
    return std::chrono::duration<double>(Clock::now() - start).count();
}

/**
 * Drives one benchmark: each iteration calls run(checksum), which builds a fresh instance, runs
 * it once, stores the sum it saw in checksum and returns the timed seconds.
 */
template <class Run>
void drive(benchmark::State& state, const Shape& shape, Run&& run) {
    double seconds = 0.0;
    for (auto _ : state) {
        Item checksum = 0;
        const double elapsed = run(checksum);
        state.SetIterationTime(elapsed);
        seconds += elapsed;
        if (checksum != shape.checksum()) {
            state.SkipWithError("checksum mismatch: items lost or duplicated");
            return;
        }
    }
    const double items = static_cast<double>(state.iterations()) * static_cast<double>(shape.items);
    state.SetItemsProcessed(static_cast<std::int64_t>(items));
    state.counters["ns_per_item"] = items > 0 ? seconds * 1e9 / items : 0.0;
    state.counters["items"] = static_cast<double>(shape.items);
}

// The library gets its default options except B, W (and lanes where a row says so): the
// headline is a user's first experience (issue 13). Rows that set a capacity say so.
microbatch::Options library_options(const Shape& shape) {
    auto options = microbatch::Options{}
                       .max_batch_size(shape.batch_size)
                       .lanes(shape.lanes)
                       .workers(shape.workers);
    if (shape.capacity_batches != 0 || capacity_override != 0 || shape.capacity_4b) {
        options.capacity(shape.capacity_4b ? 4 * shape.batch_size : shape.capacity());
    }
    if (shape.size_time_rule) {
        // Batch formation as shipped at 357efd2: seal on full or max_delay whatever the workers
        // do, never early.
        options.max_in_flight(microbatch::Options::unlimited_in_flight).seal_early(false);
    }
    return options;
}

microbatch_bench::MutexBatcherOptions mutex_options(const Shape& shape) {
    microbatch_bench::MutexBatcherOptions options;
    options.max_batch_size = shape.batch_size;
    options.max_delay = max_delay;
    options.capacity = shape.capacity();
    options.workers = shape.workers;
    return options;
}

/// Each producer's values as a vector (the bulk rows hand ranges of it over).
std::vector<std::vector<Item>> producer_runs(const Shape& shape) {
    std::vector<std::vector<Item>> runs(shape.producers);
    for (std::size_t index = 0; index < shape.producers; ++index) {
        const auto [first, last] = shape.share(index);
        for (Item value = first; value != last; ++value) {
            runs[index].push_back(value);
        }
    }
    return runs;
}

// ---- microbatch -------------------------------------------------------------------------------

void run_microbatch_post(benchmark::State& state, const Shape& shape) {
    drive(state, shape, [&](Item& checksum) {
        Sink sink;
        microbatch::Batcher<Item> batcher(
            library_options(shape),
            [&sink](microbatch::Batch<Item>& batch) { sink.merge(sum_of(batch)); });
        const double seconds = timed_run(
            shape.producers,
            [&](std::size_t index) {
                const auto [first, last] = shape.share(index);
                for (Item value = first; value != last; ++value) {
                    batcher.post(value);
                }
            },
            [&] { batcher.close(); });
        checksum = sink.value();
        return seconds;
    });
}

void BM_Microbatch_Post(benchmark::State& state) {
    run_microbatch_post(state, shape_bpw(state));
}

/// Post with one lane per producer (the same total capacity, split over the lanes): producers
/// no longer share the claim counter.
void BM_Microbatch_Post_Lanes(benchmark::State& state) {
    Shape shape = shape_bpw(state);
    shape.lanes = shape.producers;
    run_microbatch_post(state, shape);
}

/// Post with batch formation as at 357efd2 (size and time only): the same-run baseline for the
/// worker-aware, early-sealing default (issue 10 goal: the default >= 0.95x of this).
void BM_Microbatch_Post_357efd2(benchmark::State& state) {
    Shape shape = shape_bpw(state);
    shape.size_time_rule = true;
    run_microbatch_post(state, shape);
}

/// Post with a capacity of 64 batches: how much of the gap to the (unbounded) Moodycamel queue
/// is the capacity bound rather than the hand-off.
void BM_Microbatch_Post_Cap64B(benchmark::State& state) {
    Shape shape = shape_bpw(state);
    shape.capacity_batches = 64;
    run_microbatch_post(state, shape);
}

/// Post with the default capacity before issue 13 (4 B): why the default changed.
void BM_Microbatch_Post_Cap4B(benchmark::State& state) {
    Shape shape = shape_bpw(state);
    shape.capacity_4b = true;
    run_microbatch_post(state, shape);
}

/// Bulk fire-and-forget: each producer hands its items over in runs of --bulk=K (default 256)
/// with post_n; compare with Moodycamel_Bulk (enqueue_bulk with the same runs).
void BM_Microbatch_PostN(benchmark::State& state) {
    const Shape shape = shape_bpw(state);
    drive(state, shape, [&](Item& checksum) {
        Sink sink;
        microbatch::Batcher<Item> batcher(
            library_options(shape),
            [&sink](microbatch::Batch<Item>& batch) { sink.merge(sum_of(batch)); });
        const auto runs = producer_runs(shape);  // built before the clock starts
        const double seconds = timed_run(
            shape.producers,
            [&](std::size_t index) {
                const std::vector<Item>& mine = runs[index];
                for (std::size_t at = 0; at < mine.size(); at += bulk_run) {
                    batcher.post_n(mine.begin() + static_cast<std::ptrdiff_t>(at),
                                   std::min(bulk_run, mine.size() - at));
                }
            },
            [&] { batcher.close(); });
        checksum = sink.value();
        return seconds;
    });
}

/// Handle/Callback and MutexPromise share this process function: one result per item.
std::vector<Item> copy_out(const Item* first, const Item* last) {
    return std::vector<Item>(first, last);
}

void BM_Microbatch_Callback(benchmark::State& state) {
    const Shape shape = shape_bpw(state);
    drive(state, shape, [&](Item& checksum) {
        Sink sink;
        microbatch::Batcher<Item, Item> batcher(
            library_options(shape),
            [](microbatch::Batch<Item>& batch) { return copy_out(batch.begin(), batch.end()); });
        Sink* const target = &sink;
        const double seconds = timed_run(
            shape.producers,
            [&](std::size_t index) {
                const auto [first, last] = shape.share(index);
                for (Item value = first; value != last; ++value) {
                    batcher.submit(value, [target](microbatch::Outcome<Item>&& outcome) {
                        target->merge(outcome.value());
                    });
                }
            },
            [&] { batcher.close(); });
        checksum = sink.value();
        return seconds;
    });
}

void BM_Microbatch_Handle(benchmark::State& state) {
    const Shape shape = shape_bpw(state);
    drive(state, shape, [&](Item& checksum) {
        Sink sink;
        microbatch::Batcher<Item, Item> batcher(
            library_options(shape),
            [](microbatch::Batch<Item>& batch) { return copy_out(batch.begin(), batch.end()); });
        // The handle vectors are allocated before the clock starts, as for MutexPromise.
        std::vector<std::vector<microbatch::Handle<Item>>> handles(shape.producers);
        for (std::size_t index = 0; index < shape.producers; ++index) {
            const auto [first, last] = shape.share(index);
            handles[index].reserve(static_cast<std::size_t>(last - first));
        }
        const double seconds = timed_run(
            shape.producers,
            [&](std::size_t index) {
                const auto [first, last] = shape.share(index);
                auto& mine = handles[index];
                for (Item value = first; value != last; ++value) {
                    mine.push_back(batcher.submit(value));
                }
                Item sum = 0;
                for (auto& handle : mine) {
                    sum += handle.get();
                }
                sink.merge(sum);
            },
            [&] { batcher.close(); });
        checksum = sink.value();
        return seconds;
    });
}

// ---- Baselines --------------------------------------------------------------------------------

void run_mutex_batcher(benchmark::State& state, const Shape& shape) {
    drive(state, shape, [&](Item& checksum) {
        Sink sink;
        microbatch_bench::MutexBatcher<Item> batcher(
            mutex_options(shape), [&sink](std::vector<Item>& batch) { sink.merge(sum_of(batch)); });
        const double seconds = timed_run(
            shape.producers,
            [&](std::size_t index) {
                const auto [first, last] = shape.share(index);
                for (Item value = first; value != last; ++value) {
                    batcher.submit(value);
                }
            },
            [&] { batcher.close(); });
        checksum = sink.value();
        return seconds;
    });
}

void BM_MutexBatcher(benchmark::State& state) {
    run_mutex_batcher(state, shape_bpw(state));
}

/// The mutex batcher with a capacity of 64 batches, as BM_Microbatch_Post_Cap64B.
void BM_MutexBatcher_Cap64B(benchmark::State& state) {
    Shape shape = shape_bpw(state);
    shape.capacity_batches = 64;
    run_mutex_batcher(state, shape);
}

void BM_MutexPromise(benchmark::State& state) {
    const Shape shape = shape_bpw(state);
    drive(state, shape, [&](Item& checksum) {
        Sink sink;
        microbatch_bench::MutexPromiseBatcher<Item, Item> batcher(
            mutex_options(shape), [](std::vector<Item>& batch) {
                return copy_out(batch.data(), batch.data() + batch.size());
            });
        std::vector<std::vector<std::future<Item>>> futures(shape.producers);
        for (std::size_t index = 0; index < shape.producers; ++index) {
            const auto [first, last] = shape.share(index);
            futures[index].reserve(static_cast<std::size_t>(last - first));
        }
        const double seconds = timed_run(
            shape.producers,
            [&](std::size_t index) {
                const auto [first, last] = shape.share(index);
                auto& mine = futures[index];
                for (Item value = first; value != last; ++value) {
                    mine.push_back(batcher.submit_with_promise(value));
                }
                Item sum = 0;
                for (auto& future : mine) {
                    sum += future.get();
                }
                sink.merge(sum);
            },
            [&] { batcher.close(); });
        checksum = sink.value();
        return seconds;
    });
}

void BM_PerItemDispatch(benchmark::State& state) {
    Shape shape;
    shape.producers = static_cast<std::size_t>(state.range(0));
    shape.workers = static_cast<std::size_t>(state.range(1));
    shape.items = base_items_per_run;
    drive(state, shape, [&](Item& checksum) {
        Sink sink;
        microbatch::ThreadPool pool(shape.workers);
        auto executor = [&pool](std::function<void()> task) { pool.post(std::move(task)); };
        microbatch_bench::PerItemDispatcher<Item, decltype(executor)> dispatcher(
            executor, [&sink](Item& value) { sink.merge(value); });
        const double seconds = timed_run(
            shape.producers,
            [&](std::size_t index) {
                const auto [first, last] = shape.share(index);
                for (Item value = first; value != last; ++value) {
                    dispatcher.submit(value);
                }
            },
            [&] { dispatcher.wait_idle(); });
        checksum = sink.value();
        return seconds;
    });
}

void BM_Sequential(benchmark::State& state) {
    Shape shape;
    shape.batch_size = static_cast<std::size_t>(state.range(0));
    shape.items = items_for(shape.batch_size);
    drive(state, shape, [&](Item& checksum) {
        Sink sink;
        microbatch_bench::SequentialBatcher<Item> batcher(
            shape.batch_size, [&sink](std::vector<Item>& batch) { sink.merge(sum_of(batch)); });
        const double seconds = timed_run(
            1,
            [&](std::size_t) {
                for (Item value = 1; value <= shape.items; ++value) {
                    batcher.submit(value);
                }
            },
            [&] { batcher.flush(); });
        checksum = sink.value();
        return seconds;
    });
}

#if MICROBATCH_HAVE_CONCURRENTQUEUE
void BM_Moodycamel(benchmark::State& state) {
    const Shape shape = shape_bpw(state);
    drive(state, shape, [&](Item& checksum) {
        Sink sink;
        microbatch_bench::MoodycamelHandoff<Item> handoff(
            shape.batch_size, shape.workers,
            [&sink](std::vector<Item>& batch) { sink.merge(sum_of(batch)); });
        const double seconds = timed_run(
            shape.producers,
            [&](std::size_t index) {
                auto producer = handoff.make_producer();
                const auto [first, last] = shape.share(index);
                for (Item value = first; value != last; ++value) {
                    producer.submit(value);
                }
            },
            [&] { handoff.close(); });
        checksum = sink.value();
        return seconds;
    });
}
#endif

#if MICROBATCH_HAVE_CONCURRENTQUEUE
/// The moodycamel hand-off with producers enqueuing runs of --bulk=K items (enqueue_bulk).
void BM_Moodycamel_Bulk(benchmark::State& state) {
    const Shape shape = shape_bpw(state);
    drive(state, shape, [&](Item& checksum) {
        Sink sink;
        microbatch_bench::MoodycamelHandoff<Item> handoff(
            shape.batch_size, shape.workers,
            [&sink](std::vector<Item>& batch) { sink.merge(sum_of(batch)); });
        const auto runs = producer_runs(shape);
        const double seconds = timed_run(
            shape.producers,
            [&](std::size_t index) {
                auto producer = handoff.make_producer();
                const std::vector<Item>& mine = runs[index];
                for (std::size_t at = 0; at < mine.size(); at += bulk_run) {
                    producer.submit_bulk(mine.begin() + static_cast<std::ptrdiff_t>(at),
                                         std::min(bulk_run, mine.size() - at));
                }
            },
            [&] { handoff.close(); });
        checksum = sink.value();
        return seconds;
    });
}
#endif

// ---- Registration -----------------------------------------------------------------------------

const std::vector<std::int64_t> batch_sizes = {1, 16, 256, 4096};
const std::vector<std::int64_t> thread_counts = {1, 2};

void bpw(benchmark::internal::Benchmark* benchmark) {
    benchmark->ArgNames({"B", "P", "W"})
        ->ArgsProduct({batch_sizes, thread_counts, thread_counts})
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
}

// With one producer, lanes = P = 1 is BM_Microbatch_Post itself: run the lanes variant at P = 2.
void bw_two_producers(benchmark::internal::Benchmark* benchmark) {
    benchmark->ArgNames({"B", "P", "W"})
        ->ArgsProduct({batch_sizes, {2}, thread_counts})
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
}

BENCHMARK(BM_Microbatch_Post)->Apply(bpw);
BENCHMARK(BM_Microbatch_Post_357efd2)->Apply(bpw);
BENCHMARK(BM_Microbatch_Post_Cap4B)->Apply(bpw);
BENCHMARK(BM_Microbatch_PostN)->Apply(bpw);
BENCHMARK(BM_Microbatch_Post_Lanes)->Apply(bw_two_producers);
BENCHMARK(BM_Microbatch_Callback)->Apply(bpw);
BENCHMARK(BM_Microbatch_Handle)->Apply(bpw);
BENCHMARK(BM_MutexBatcher)->Apply(bpw);
BENCHMARK(BM_MutexPromise)->Apply(bpw);
#if MICROBATCH_HAVE_CONCURRENTQUEUE
BENCHMARK(BM_Moodycamel)->Apply(bpw);
BENCHMARK(BM_Moodycamel_Bulk)->Apply(bpw);
#endif
// Capacity sensitivity, at B = 256 only (the goals' batch size).
void cap64(benchmark::internal::Benchmark* benchmark) {
    benchmark->ArgNames({"B", "P", "W"})
        ->ArgsProduct({{256}, thread_counts, thread_counts})
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
}
BENCHMARK(BM_Microbatch_Post_Cap64B)->Apply(cap64);
BENCHMARK(BM_MutexBatcher_Cap64B)->Apply(cap64);
BENCHMARK(BM_PerItemDispatch)
    ->ArgNames({"P", "W"})
    ->ArgsProduct({thread_counts, thread_counts})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Sequential)
    ->ArgName("B")
    ->ArgsProduct({batch_sizes})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
    // Defaults first, the caller's flags after them: Google Benchmark keeps the last value.
    std::vector<char*> arguments;
    arguments.push_back(argv[0]);
    static char min_time[] = "--benchmark_min_time=0.05";
    static char repetitions[] = "--benchmark_repetitions=5";
    static char interleave[] = "--benchmark_enable_random_interleaving=true";
    static char aggregates[] = "--benchmark_display_aggregates_only=true";
    for (char* flag : {min_time, repetitions, interleave, aggregates}) {
        arguments.push_back(flag);
    }
    for (int i = 1; i < argc; ++i) {
        constexpr const char* items_flag = "--items=";
        constexpr const char* capacity_flag = "--capacity=";
        constexpr const char* bulk_flag = "--bulk=";
        if (std::strncmp(argv[i], capacity_flag, std::strlen(capacity_flag)) == 0) {
            capacity_override =
                static_cast<std::size_t>(std::atoll(argv[i] + std::strlen(capacity_flag)));
        } else if (std::strncmp(argv[i], bulk_flag, std::strlen(bulk_flag)) == 0) {
            const long long value = std::atoll(argv[i] + std::strlen(bulk_flag));
            if (value < 1) {
                std::fprintf(stderr, "bench_batcher: --bulk must be >= 1\n");
                return 1;
            }
            bulk_run = static_cast<std::size_t>(value);
        } else if (std::strncmp(argv[i], items_flag, std::strlen(items_flag)) == 0) {
            const long long value = std::atoll(argv[i] + std::strlen(items_flag));
            if (value < 8) {
                std::fprintf(stderr, "bench_batcher: --items must be >= 8\n");
                return 1;
            }
            base_items_per_run = static_cast<std::size_t>(value);
        } else {
            arguments.push_back(argv[i]);
        }
    }
    int count = static_cast<int>(arguments.size());
    arguments.push_back(nullptr);
    benchmark::Initialize(&count, arguments.data());
    if (benchmark::ReportUnrecognizedArguments(count, arguments.data())) {
        return 1;
    }
    benchmark::AddCustomContext("sink", sink_name);
    benchmark::AddCustomContext("items_per_run", std::to_string(base_items_per_run));
    benchmark::AddCustomContext(
        "capacity", capacity_override == 0
                        ? std::string("microbatch: its default; mutex baselines: max(4*B, 1024)")
                        : std::to_string(capacity_override) +
                              " (rounded up to a multiple of B) for microbatch and mutex "
                              "baselines");
    benchmark::AddCustomContext("max_delay", "1 ms (microbatch: its default, also 1 ms)");
    benchmark::AddCustomContext("bulk_run", std::to_string(bulk_run));
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
