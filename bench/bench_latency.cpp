// Latency of microbatch::Batcher against the hand-written mutex batcher, in one binary and one run
// (GitHub issue 4). Three experiments, each a Google Benchmark with its results as counters:
//
// 1. Load_*  submit-to-result latency (p50 / p99 / p99.9 / max, microseconds) at offered loads
//    from light (one item every 50 us) to saturation (interval 0: submit as fast as possible).
//    One producer paces items open-loop (it sleeps through long gaps with 1 ns timer slack and
//    busy-waits only the last 20 us, to leave the 2 cores to the batcher); latency runs from just
//    before the submit call to the moment the item's result is known: when its callback runs
//    (Microbatch_Callback) or when process_batch finishes its batch (Microbatch_Post,
//    MutexBatcher, which stamp every item of the batch). If the producer cannot keep the
//    schedule it submits late (it never bursts to catch up), so `offered_per_s` reports the load
//    actually offered. B = 256, max_delay = 1 ms, W = 1, capacity 4 B.
//
// 2. TimeBound_*  how late a partial batch is dispatched after max_delay: one item is submitted
//    into an idle batcher with B = 4096 (never fills), and lateness = (start of process_batch) -
//    (submit of that first item) - max_delay. The next item follows only after the batch ran and
//    a pause, so every sample starts from an idle timer. Reported p50 / p99 / max (us) per
//    max_delay. For microbatch also `dispatch_late_mean_us` / `dispatch_late_max_us` from
//    Stats::queue_delay - max_delay: the timer's own share, before the hand-off to a worker.
//    Two diagnostic variants: _InlineExecutor runs the batch on the timer thread (the timer's
//    lateness alone) and _TimerSlack1ns creates the batcher from a thread whose timer slack is
//    1 ns, which its threads inherit (Linux: the effect of prctl(PR_SET_TIMERSLACK) in the timer).
//
// 3. IdleWakeups_*  an idle batcher must not wake up periodically: after one item has gone
//    through (so the timer has handled a deadline), the context switches (voluntary and
//    involuntary, from /proc/self/task/<tid>/status) and CPU time (/proc/.../schedstat) of the
//    threads the batcher created are read before and after sleeping 200 ms. The Moodycamel
//    hand-off, whose consumers poll, is the contrast. Linux only (elsewhere: skipped).
//
// Defaults: --benchmark_repetitions=3 --benchmark_enable_random_interleaving=true
// --benchmark_display_aggregates_only=true (later flags
// on the command line win). Extra flag: --scale=X multiplies the number of items/samples
// (default 1; e.g. 0.1 for a smoke test).
//
//   ./bench_latency --benchmark_filter=TimeBound

#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "baselines/moodycamel_handoff.hpp"
#include "baselines/mutex_batcher.hpp"
#include "microbatch/batcher.hpp"

#if defined(__linux__)
#include <sys/prctl.h>
#endif

namespace {

using Item = std::uint64_t;
using Clock = std::chrono::steady_clock;

double scale = 1.0;  // --scale=X

std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
        .count();
}

std::size_t scaled(std::size_t count, std::size_t minimum) {
    return std::max(minimum, static_cast<std::size_t>(static_cast<double>(count) * scale));
}

/// Busy-waits until steady_clock reaches @p deadline_ns (sleeps are far too coarse here).
void spin_until(std::int64_t deadline_ns) {
    while (now_ns() < deadline_ns) {
    }
}

/**
 * Sets the calling thread's timer slack to 1 ns for its lifetime (Linux; elsewhere a no-op), so
 * the paced producer can sleep through most of a gap instead of spinning on a shared core.
 * Threads inherit the slack when they are created, so this is only done after the batcher under
 * test has started its threads: they keep the default (50 us) slack, as in an application.
 */
class PreciseSleeps {
public:
    PreciseSleeps() {
#if defined(__linux__)
        previous_ = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
        prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
#endif
    }
    ~PreciseSleeps() {
#if defined(__linux__)
        if (previous_ > 0) {
            prctl(PR_SET_TIMERSLACK, static_cast<unsigned long>(previous_), 0, 0, 0);
        }
#endif
    }
    PreciseSleeps(const PreciseSleeps&) = delete;
    PreciseSleeps& operator=(const PreciseSleeps&) = delete;

private:
    int previous_ = 0;
};

/// Sleeps until ~20 us before @p deadline_ns, then busy-waits for the rest.
void wait_until(std::int64_t deadline_ns) {
    constexpr std::int64_t spin_margin_ns = 20000;
    const std::int64_t sleep_until_ns = deadline_ns - spin_margin_ns;
    if (now_ns() < sleep_until_ns) {
        std::this_thread::sleep_until(Clock::time_point(std::chrono::nanoseconds(sleep_until_ns)));
    }
    spin_until(deadline_ns);
}

/// Nearest-rank percentile of @p sorted (ascending), @p q in [0, 1].
double percentile(const std::vector<double>& sorted, double q) {
    if (sorted.empty()) {
        return 0.0;
    }
    const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
    return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
}

/// Sorts @p microseconds and publishes p50/p99/p99.9/max/mean counters named <prefix>_...
void report_percentiles(benchmark::State& state, std::vector<double>& microseconds,
                        bool with_p999) {
    std::sort(microseconds.begin(), microseconds.end());
    double total = 0.0;
    for (double value : microseconds) {
        total += value;
    }
    state.counters["p50_us"] = percentile(microseconds, 0.50);
    state.counters["p99_us"] = percentile(microseconds, 0.99);
    if (with_p999) {
        state.counters["p999_us"] = percentile(microseconds, 0.999);
    }
    state.counters["max_us"] = microseconds.empty() ? 0.0 : microseconds.back();
    state.counters["mean_us"] =
        microseconds.empty() ? 0.0 : total / static_cast<double>(microseconds.size());
    state.counters["samples"] = static_cast<double>(microseconds.size());
}

// ---- 1. Submit-to-result latency under load --------------------------------------------------

constexpr std::size_t load_batch_size = 256;
constexpr auto load_max_delay = std::chrono::milliseconds(1);

/// Items per run: enough for a p99.9 (>= 10000) while keeping each run near 0.1-0.5 s.
std::size_t load_items(std::int64_t interval_ns) {
    if (interval_ns <= 0) {
        return scaled(200000, 1000);
    }
    const auto for_duration = static_cast<std::size_t>(3e8 / static_cast<double>(interval_ns));
    return scaled(std::clamp<std::size_t>(for_duration, 10000, 200000), 1000);
}

/**
 * Submits items 0..n-1 with submit(i), item i due at start + i * interval (busy-waiting for it),
 * recording in submitted[i] the time just before the call. Returns the seconds taken to submit.
 */
template <class Submit>
double paced_submit(std::size_t items, std::int64_t interval_ns,
                    std::vector<std::int64_t>& submitted, Submit&& submit) {
    const PreciseSleeps precise;  // after the instance started its threads: they keep theirs
    const std::int64_t start = now_ns() + 100000;  // a little slack to get going
    spin_until(start);
    for (std::size_t i = 0; i < items; ++i) {
        if (interval_ns > 0) {
            wait_until(start + static_cast<std::int64_t>(i) * interval_ns);
        }
        submitted[i] = now_ns();
        submit(static_cast<Item>(i));
    }
    return static_cast<double>(now_ns() - start) * 1e-9;
}

/// Publishes the latency counters of one run; false (and an error) if an item has no result.
bool finish_load(benchmark::State& state, const std::vector<std::int64_t>& submitted,
                 const std::vector<std::int64_t>& done, double submit_seconds) {
    std::vector<double> microseconds(submitted.size());
    for (std::size_t i = 0; i < submitted.size(); ++i) {
        if (done[i] == 0) {
            state.SkipWithError("an item was never completed");
            return false;
        }
        microseconds[i] = static_cast<double>(done[i] - submitted[i]) * 1e-3;
    }
    report_percentiles(state, microseconds, true);
    state.counters["offered_per_s"] = static_cast<double>(submitted.size()) / submit_seconds;
    return true;
}

microbatch::Options load_options() {
    return microbatch::Options{}
        .max_batch_size(load_batch_size)
        .max_delay(load_max_delay)
        .capacity(4 * load_batch_size)
        .workers(1);
}

microbatch_bench::MutexBatcherOptions mutex_load_options() {
    microbatch_bench::MutexBatcherOptions options;
    options.max_batch_size = load_batch_size;
    options.max_delay = load_max_delay;
    options.capacity = 4 * load_batch_size;
    options.workers = 1;
    return options;
}

/// Stamps every item of a batch (items are their own indices) with the batch's end time.
template <class Range>
void stamp_batch(const Range& batch, std::vector<std::int64_t>& done, std::atomic<Item>& checksum) {
    Item sum = 0;
    for (Item item : batch) {
        sum += item;
    }
    // relaxed: read after close(), which synchronises with the workers.
    checksum.fetch_add(sum, std::memory_order_relaxed);
    const std::int64_t finished = now_ns();
    for (Item item : batch) {
        done[static_cast<std::size_t>(item)] = finished;
    }
}

void BM_Load_Microbatch_Callback(benchmark::State& state) {
    const std::int64_t interval = state.range(0);
    const std::size_t items = load_items(interval);
    for (auto _ : state) {
        std::vector<std::int64_t> submitted(items, 0);
        std::vector<std::int64_t> done(items, 0);
        std::atomic<Item> checksum{0};
        double seconds = 0.0;
        {
            microbatch::Batcher<Item> batcher(
                load_options(), [&checksum](microbatch::Batch<Item>& batch) {
                    Item sum = 0;
                    for (Item item : batch) {
                        sum += item;
                    }
                    checksum.fetch_add(sum, std::memory_order_relaxed);
                });
            std::int64_t* const stamps = done.data();
            seconds = paced_submit(items, interval, submitted, [&](Item item) {
                batcher.submit(
                    item, [stamps, item](microbatch::Outcome<void>&&) { stamps[item] = now_ns(); });
            });
            batcher.close();
        }
        state.SetIterationTime(seconds);
        if (!finish_load(state, submitted, done, seconds)) {
            return;
        }
    }
}

void BM_Load_Microbatch_Post(benchmark::State& state) {
    const std::int64_t interval = state.range(0);
    const std::size_t items = load_items(interval);
    for (auto _ : state) {
        std::vector<std::int64_t> submitted(items, 0);
        std::vector<std::int64_t> done(items, 0);
        std::atomic<Item> checksum{0};
        double seconds = 0.0;
        {
            microbatch::Batcher<Item> batcher(load_options(), [&](microbatch::Batch<Item>& batch) {
                stamp_batch(batch, done, checksum);
            });
            seconds =
                paced_submit(items, interval, submitted, [&](Item item) { batcher.post(item); });
            batcher.close();
        }
        state.SetIterationTime(seconds);
        if (!finish_load(state, submitted, done, seconds)) {
            return;
        }
    }
}

void BM_Load_MutexBatcher(benchmark::State& state) {
    const std::int64_t interval = state.range(0);
    const std::size_t items = load_items(interval);
    for (auto _ : state) {
        std::vector<std::int64_t> submitted(items, 0);
        std::vector<std::int64_t> done(items, 0);
        std::atomic<Item> checksum{0};
        double seconds = 0.0;
        {
            microbatch_bench::MutexBatcher<Item> batcher(
                mutex_load_options(),
                [&](std::vector<Item>& batch) { stamp_batch(batch, done, checksum); });
            seconds =
                paced_submit(items, interval, submitted, [&](Item item) { batcher.submit(item); });
            batcher.close();
        }
        state.SetIterationTime(seconds);
        if (!finish_load(state, submitted, done, seconds)) {
            return;
        }
    }
}

// ---- 2. Time-bound accuracy ----------------------------------------------------------------

constexpr std::size_t huge_batch = 4096;

/// Samples per max_delay: about 0.5 s of run time, at least 100 (p99 = 2nd largest).
std::size_t time_bound_samples(std::int64_t delay_us) {
    const auto count = static_cast<std::size_t>(5e5 / (1.6 * static_cast<double>(delay_us)));
    return scaled(std::clamp<std::size_t>(count, 100, 2000), 20);
}

/**
 * One time-bound run. post(i) submits item i; started[i] must be set by process_batch on entry
 * and `batches` incremented after. Returns the lateness samples in microseconds.
 */
template <class Post>
std::vector<double> measure_lateness(std::int64_t delay_us, std::size_t samples,
                                     std::vector<std::int64_t>& started,
                                     const std::atomic<std::size_t>& batches, Post&& post) {
    const std::int64_t delay_ns = delay_us * 1000;
    std::vector<double> lateness;
    lateness.reserve(samples);
    std::uint32_t random = 12345;  // LCG: a deterministic pseudo-random pause between samples
    for (std::size_t i = 0; i < samples; ++i) {
        const std::int64_t submitted = now_ns();
        post(static_cast<Item>(i));
        // Wake well after the expected dispatch, so this thread does not compete with the
        // timer and the worker for a core at the moment being measured.
        std::this_thread::sleep_until(Clock::time_point(std::chrono::nanoseconds(
            submitted + delay_ns + std::max<std::int64_t>(300000, delay_ns / 2))));
        // acquire: pairs with the worker's release increment, so started[i] is visible.
        while (batches.load(std::memory_order_acquire) <= i) {
            std::this_thread::sleep_for(std::chrono::microseconds(20));
        }
        lateness.push_back(static_cast<double>(started[i] - submitted - delay_ns) * 1e-3);
        random = random * 1664525u + 1013904223u;
        const std::int64_t pause = delay_ns / 10 + static_cast<std::int64_t>(random >> 8) %
                                                       std::max<std::int64_t>(1, delay_ns / 2);
        std::this_thread::sleep_for(std::chrono::nanoseconds(pause));
    }
    return lateness;
}

/// How the microbatch time-bound run is set up.
enum class TimerSetup {
    pool,             ///< as shipped: the timer seals, a pool worker runs the batch
    inline_executor,  ///< the timer thread runs the batch itself: the timer's lateness alone
    slack_1ns,        ///< as shipped, but the batcher's threads have 1 ns timer slack
};

void time_bound_microbatch(benchmark::State& state, TimerSetup setup) {
    const std::int64_t delay_us = state.range(0);
    const std::size_t samples = time_bound_samples(delay_us);
    for (auto _ : state) {
        std::vector<std::int64_t> started(samples, 0);
        std::atomic<std::size_t> batches{0};
        const auto begin = Clock::now();
        auto options = microbatch::Options{}
                           .max_batch_size(huge_batch)
                           .max_delay(std::chrono::microseconds(delay_us))
                           .workers(1);
        if (setup == TimerSetup::inline_executor) {
            options.executor([](microbatch::Task task) { task(); });
        }
        std::optional<PreciseSleeps> inherited_slack;  // threads inherit it at creation
        if (setup == TimerSetup::slack_1ns) {
            inherited_slack.emplace();
        }
        microbatch::Batcher<Item> batcher(std::move(options), [&](microbatch::Batch<Item>& batch) {
            started[static_cast<std::size_t>(batch[0])] = now_ns();
            batches.fetch_add(1, std::memory_order_release);
        });
        inherited_slack.reset();
        std::vector<double> lateness = measure_lateness(delay_us, samples, started, batches,
                                                        [&](Item item) { batcher.post(item); });
        batcher.close();
        state.SetIterationTime(std::chrono::duration<double>(Clock::now() - begin).count());
        report_percentiles(state, lateness, false);
        const microbatch::Stats stats = batcher.stats();
        const double delay = static_cast<double>(delay_us);
        state.counters["dispatch_late_mean_us"] =
            static_cast<double>(stats.queue_delay.mean().count()) * 1e-3 - delay;
        state.counters["dispatch_late_max_us"] =
            static_cast<double>(stats.queue_delay.max.count()) * 1e-3 - delay;
        state.counters["deadline_batches"] = static_cast<double>(stats.batches_deadline);
    }
}

void BM_TimeBound_Microbatch(benchmark::State& state) {
    time_bound_microbatch(state, TimerSetup::pool);
}
void BM_TimeBound_Microbatch_InlineExecutor(benchmark::State& state) {
    time_bound_microbatch(state, TimerSetup::inline_executor);
}
void BM_TimeBound_Microbatch_TimerSlack1ns(benchmark::State& state) {
    time_bound_microbatch(state, TimerSetup::slack_1ns);
}

void BM_TimeBound_MutexBatcher(benchmark::State& state) {
    const std::int64_t delay_us = state.range(0);
    const std::size_t samples = time_bound_samples(delay_us);
    for (auto _ : state) {
        std::vector<std::int64_t> started(samples, 0);
        std::atomic<std::size_t> batches{0};
        const auto begin = Clock::now();
        microbatch_bench::MutexBatcherOptions options;
        options.max_batch_size = huge_batch;
        options.max_delay = std::chrono::microseconds(delay_us);
        options.workers = 1;
        microbatch_bench::MutexBatcher<Item> batcher(options, [&](std::vector<Item>& batch) {
            started[static_cast<std::size_t>(batch[0])] = now_ns();
            batches.fetch_add(1, std::memory_order_release);
        });
        std::vector<double> lateness = measure_lateness(delay_us, samples, started, batches,
                                                        [&](Item item) { batcher.submit(item); });
        batcher.close();
        state.SetIterationTime(std::chrono::duration<double>(Clock::now() - begin).count());
        report_percentiles(state, lateness, false);
    }
}

// ---- 3. Idle wake-ups ------------------------------------------------------------------------

/// Scheduler counters of one thread, from /proc/self/task/<tid>/{status,schedstat}.
struct ThreadCounters {
    long long voluntary = 0;
    long long involuntary = 0;
    long long cpu_ns = 0;
};

std::set<long> thread_ids() {
    std::set<long> ids;
    std::error_code error;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task", error)) {
        ids.insert(std::atol(entry.path().filename().c_str()));
    }
    return ids;
}

bool read_counters(long tid, ThreadCounters& counters) {
    const std::string directory = "/proc/self/task/" + std::to_string(tid);
    std::ifstream status(directory + "/status");
    if (!status) {
        return false;
    }
    std::string line;
    bool found = false;
    while (std::getline(status, line)) {
        constexpr const char* voluntary = "voluntary_ctxt_switches:";
        constexpr const char* involuntary = "nonvoluntary_ctxt_switches:";
        if (line.rfind(voluntary, 0) == 0) {
            counters.voluntary = std::atoll(line.c_str() + std::strlen(voluntary));
            found = true;
        } else if (line.rfind(involuntary, 0) == 0) {
            counters.involuntary = std::atoll(line.c_str() + std::strlen(involuntary));
        }
    }
    std::ifstream schedstat(directory + "/schedstat");
    if (schedstat) {
        schedstat >> counters.cpu_ns;
    }
    return found;
}

/**
 * Measures the threads @p make_idle_instance starts: it must build the instance (returned as
 * an owning pointer) and leave it idle after one item went through.
 */
template <class MakeIdle>
void measure_idle(benchmark::State& state, MakeIdle&& make_idle_instance) {
    constexpr auto window = std::chrono::milliseconds(200);
    for (auto _ : state) {
        const std::set<long> before = thread_ids();
        auto instance = make_idle_instance();
        std::this_thread::sleep_for(std::chrono::milliseconds(20));  // let it settle
        std::vector<long> threads;
        for (long tid : thread_ids()) {
            if (before.count(tid) == 0) {
                threads.push_back(tid);
            }
        }
        if (threads.empty()) {
            state.SkipWithError("cannot see the instance's threads in /proc/self/task");
            return;
        }
        std::vector<ThreadCounters> first(threads.size());
        std::vector<ThreadCounters> second(threads.size());
        for (std::size_t i = 0; i < threads.size(); ++i) {
            read_counters(threads[i], first[i]);
        }
        const auto begin = Clock::now();
        std::this_thread::sleep_for(window);
        for (std::size_t i = 0; i < threads.size(); ++i) {
            read_counters(threads[i], second[i]);
        }
        state.SetIterationTime(std::chrono::duration<double>(Clock::now() - begin).count());
        long long voluntary = 0;
        long long involuntary = 0;
        long long cpu_ns = 0;
        for (std::size_t i = 0; i < threads.size(); ++i) {
            voluntary += second[i].voluntary - first[i].voluntary;
            involuntary += second[i].involuntary - first[i].involuntary;
            cpu_ns += second[i].cpu_ns - first[i].cpu_ns;
        }
        // Thread ids grow in creation order; microbatch and MutexBatcher start their timer /
        // dispatcher thread last.
        const std::size_t last = threads.size() - 1;
        state.counters["threads"] = static_cast<double>(threads.size());
        state.counters["voluntary_switches"] = static_cast<double>(voluntary);
        state.counters["involuntary_switches"] = static_cast<double>(involuntary);
        state.counters["last_thread_voluntary"] =
            static_cast<double>(second[last].voluntary - first[last].voluntary);
        state.counters["cpu_ms"] = static_cast<double>(cpu_ns) * 1e-6;
        state.counters["window_ms"] = static_cast<double>(window.count());
    }
}

/// Waits (sleeping) until @p counter reaches @p target.
void wait_for(const std::atomic<int>& counter, int target) {
    while (counter.load(std::memory_order_acquire) < target) {
        std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
}

void BM_IdleWakeups_Microbatch(benchmark::State& state) {
    std::atomic<int> processed{0};
    measure_idle(state, [&] {
        processed.store(0);
        auto batcher = std::make_unique<microbatch::Batcher<Item>>(
            microbatch::Options{}.max_batch_size(256).max_delay(std::chrono::milliseconds(1)),
            [&](microbatch::Batch<Item>&) { processed.fetch_add(1, std::memory_order_release); });
        batcher->post(Item{1});  // dispatched by the deadline: the timer has been busy once
        wait_for(processed, 1);
        return batcher;
    });
}

void BM_IdleWakeups_MutexBatcher(benchmark::State& state) {
    std::atomic<int> processed{0};
    measure_idle(state, [&] {
        processed.store(0);
        microbatch_bench::MutexBatcherOptions options;
        options.max_batch_size = 256;
        options.max_delay = std::chrono::milliseconds(1);
        auto batcher = std::make_unique<microbatch_bench::MutexBatcher<Item>>(
            options,
            [&](std::vector<Item>&) { processed.fetch_add(1, std::memory_order_release); });
        batcher->submit(Item{1});
        wait_for(processed, 1);
        return batcher;
    });
}

#if MICROBATCH_HAVE_CONCURRENTQUEUE
void BM_IdleWakeups_Moodycamel(benchmark::State& state) {
    std::atomic<int> processed{0};
    measure_idle(state, [&] {
        processed.store(0);
        auto handoff = std::make_unique<microbatch_bench::MoodycamelHandoff<Item>>(
            256, 1, [&](std::vector<Item>&) { processed.fetch_add(1, std::memory_order_release); });
        handoff->make_producer().submit(Item{1});
        wait_for(processed, 1);
        return handoff;
    });
}
#endif

// ---- Registration ----------------------------------------------------------------------------

// Intervals between items, ns: 20k, 100k, 500k, 2M items/s offered, then saturation.
const std::vector<std::int64_t> intervals = {50000, 10000, 2000, 500, 0};
// max_delay values for the time-bound test, microseconds.
const std::vector<std::int64_t> delays = {200, 1000, 5000};

void load(benchmark::internal::Benchmark* benchmark) {
    benchmark->ArgName("interval_ns")
        ->ArgsProduct({intervals})
        ->Iterations(1)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
}
void time_bound(benchmark::internal::Benchmark* benchmark) {
    benchmark->ArgName("delay_us")
        ->ArgsProduct({delays})
        ->Iterations(1)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
}
void idle(benchmark::internal::Benchmark* benchmark) {
    benchmark->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);
}

BENCHMARK(BM_Load_Microbatch_Callback)->Apply(load);
BENCHMARK(BM_Load_Microbatch_Post)->Apply(load);
BENCHMARK(BM_Load_MutexBatcher)->Apply(load);
BENCHMARK(BM_TimeBound_Microbatch)->Apply(time_bound);
BENCHMARK(BM_TimeBound_Microbatch_InlineExecutor)->Apply(time_bound);
#if defined(__linux__)
BENCHMARK(BM_TimeBound_Microbatch_TimerSlack1ns)->Apply(time_bound);
#endif
BENCHMARK(BM_TimeBound_MutexBatcher)->Apply(time_bound);
#if defined(__linux__)
BENCHMARK(BM_IdleWakeups_Microbatch)->Apply(idle);
BENCHMARK(BM_IdleWakeups_MutexBatcher)->Apply(idle);
#if MICROBATCH_HAVE_CONCURRENTQUEUE
BENCHMARK(BM_IdleWakeups_Moodycamel)->Apply(idle);
#endif
#endif

}  // namespace

int main(int argc, char** argv) {
    // Defaults first, the caller's flags after them: Google Benchmark keeps the last value.
    std::vector<char*> arguments;
    arguments.push_back(argv[0]);
    static char repetitions[] = "--benchmark_repetitions=3";
    static char aggregates[] = "--benchmark_display_aggregates_only=true";
    // Interleaved repetitions: a burst of load from other processes hits several
    // configurations a little instead of one configuration entirely.
    static char interleave[] = "--benchmark_enable_random_interleaving=true";
    arguments.push_back(repetitions);
    arguments.push_back(interleave);
    arguments.push_back(aggregates);
    for (int i = 1; i < argc; ++i) {
        constexpr const char* scale_flag = "--scale=";
        if (std::strncmp(argv[i], scale_flag, std::strlen(scale_flag)) == 0) {
            scale = std::atof(argv[i] + std::strlen(scale_flag));
            if (!(scale > 0.0)) {
                std::fprintf(stderr, "bench_latency: --scale must be > 0\n");
                return 1;
            }
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
    benchmark::AddCustomContext("load", "B=256, max_delay=1ms, W=1, capacity=4B, 1 producer");
    benchmark::AddCustomContext("time_bound", "B=4096 (never full), W=1, one item per batch");
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
