// Validation of microbatch's cost model T = ceil(N/B) * T_batch(B), T_batch(B) = alpha + beta B
// (GitHub issue 4).
//
// process_batch is synthetic: it busy-waits on steady_clock for alpha + beta * size (sleeps are
// far too coarse for microseconds). Busy-waiting towards a wall-clock deadline also makes a batch
// robust to being preempted in the middle: it still ends on time, unless preempted at the very
// end.
//
// 1. Calibration (before any benchmark runs, reported as BM_Calibration): one batcher with W = 1
//    and B = 1024 receives k items followed by wait_idle(), for 20 sizes k from 1 to 1024, each
//    --calibration_repeats times (default 7). process_batch times itself; the median duration of
//    each size is fed to microbatch::CostModelFitter (medians: a preempted sample must not drag
//    the line), which fits alpha and beta by least squares.
//
// 2. Sweep (BM_CostModel/N/B/W): N items are posted by one producer into a fresh batcher with
//    max_batch_size B, W workers and no time bound (max_delay = nanoseconds::max(), so every
//    batch is full except the last, flushed by close(), exactly the model's schedule). Capacity
//    is --capacity_batches (default 64) batches: the model assumes a worker never waits for
//    items, and with the library's default of 4 batches a producer that shares the 2 cores with
//    busy workers occasionally wakes too late to refill, which shows up as tail gaps between
//    batches (mean gap 1.2 us instead of 0.3 us at B = 16 in a probe). Pass
//    --capacity_batches=4 to measure that too.
//    T is measured from the first post to close() returning. Reported: measured T, the simple
//    prediction predicted_total = ceil(N/B) T_batch(B) / min(W, batches), the refined
//    predicted_makespan (list schedule incl. the partial last batch), and both relative errors
//    (measured - predicted) / predicted. Points whose predicted T exceeds --max_point_seconds
//    (default 2.5) are skipped with an error message saying so, to bound the run time.
//
// With W = 2 on a 2-core machine the two busy-waiting workers compete with the producer (and on
// a shared machine with everything else): those errors measure that contention honestly. To
// show it, each point also reports from /proc/self/task/<tid>/schedstat the workers' CPU time
// and run-queue wait (runnable, but the CPU was busy elsewhere) as `worker_runqueue_share` =
// wait / (W T), and the producer's CPU time and run-queue wait. A "min" statistic (fastest
// repetition) is reported next to mean/median: contention only ever adds time.
//
// Defaults: --benchmark_repetitions=5 --benchmark_enable_random_interleaving=true
// --benchmark_display_aggregates_only=true (later flags
// win). Extra flags: --alpha_us=20 --beta_us=0.5 --max_point_seconds=2.5
// --calibration_repeats=7 --capacity_batches=64.
//
//   ./bench_cost_model --benchmark_filter='N:100000/'

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
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "microbatch/batcher.hpp"
#include "microbatch/cost_model.hpp"

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace {

using Item = std::uint64_t;
using Clock = std::chrono::steady_clock;

// Command-line settings.
double alpha_us = 20.0;
double beta_us = 0.5;
double max_point_seconds = 2.5;
int calibration_repeats = 7;
int capacity_batches = 64;

std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
        .count();
}

/// The synthetic batch: busy-waits alpha + beta * size from entry; returns its duration in ns.
std::int64_t synthetic_batch(std::size_t size) {
    const std::int64_t start = now_ns();
    const auto cost = static_cast<std::int64_t>(
        std::llround((alpha_us + beta_us * static_cast<double>(size)) * 1000.0));
    const std::int64_t deadline = start + cost;
    std::int64_t now = start;
    while (now < deadline) {
        now = now_ns();
    }
    return now - start;
}

// ---- Calibration ------------------------------------------------------------------------------

struct Calibration {
    microbatch::CostModel model;
    double r_squared = 0.0;
    std::size_t sizes = 0;
    std::size_t samples = 0;
    double seconds = 0.0;
};

const std::vector<std::size_t> calibration_sizes = {1,  2,  3,  4,   6,   8,   12,  16,  24,  32,
                                                    48, 64, 96, 128, 192, 256, 384, 512, 768, 1024};

Calibration calibrate() {
    Calibration result;
    const auto begin = Clock::now();
    std::vector<std::vector<double>> durations(calibration_sizes.size());
    std::vector<double>* current = nullptr;  // written before each round, read by the worker
    {
        microbatch::Batcher<Item> batcher(microbatch::Options{}
                                              .max_batch_size(calibration_sizes.back())
                                              .max_delay(std::chrono::nanoseconds::max())
                                              .workers(1),
                                          [&current](microbatch::Batch<Item>& batch) {
                                              const std::int64_t ns = synthetic_batch(batch.size());
                                              current->push_back(static_cast<double>(ns) * 1e-9);
                                          });
        // Rounds go over all sizes in turn, so slow phases of a noisy machine hit every size.
        for (int round = 0; round < calibration_repeats; ++round) {
            for (std::size_t s = 0; s < calibration_sizes.size(); ++s) {
                current = &durations[s];  // wait_idle() below orders this with the worker
                for (std::size_t i = 0; i < calibration_sizes[s]; ++i) {
                    batcher.post(Item{i});
                }
                batcher.wait_idle();  // flushes the k items as one batch and waits for it
            }
        }
        batcher.close();
    }
    microbatch::CostModelFitter fitter;
    for (std::size_t s = 0; s < calibration_sizes.size(); ++s) {
        std::vector<double>& samples = durations[s];
        result.samples += samples.size();
        if (samples.empty()) {
            continue;
        }
        std::sort(samples.begin(), samples.end());
        fitter.add(calibration_sizes[s],
                   microbatch::CostModel::Seconds{samples[samples.size() / 2]});
        ++result.sizes;
    }
    const auto fitted = fitter.fit();
    if (!fitted) {
        std::fprintf(stderr, "bench_cost_model: calibration failed (no fit)\n");
        std::exit(1);
    }
    result.model = *fitted;
    result.r_squared = fitter.r_squared().value_or(0.0);
    result.seconds = std::chrono::duration<double>(Clock::now() - begin).count();
    return result;
}

std::optional<Calibration> calibration;  // set in main() before the benchmarks run

void BM_Calibration(benchmark::State& state) {
    for (auto _ : state) {
        state.SetIterationTime(calibration->seconds);
    }
    state.counters["alpha_us"] = calibration->model.per_batch.count() * 1e6;
    state.counters["beta_us"] = calibration->model.per_item.count() * 1e6;
    state.counters["nominal_alpha_us"] = alpha_us;
    state.counters["nominal_beta_us"] = beta_us;
    state.counters["r_squared"] = calibration->r_squared;
    state.counters["sizes"] = static_cast<double>(calibration->sizes);
    state.counters["samples"] = static_cast<double>(calibration->samples);
}

// ---- Where the time went: per-thread scheduler statistics (Linux) --------------------------

/// CPU time and run-queue wait of a set of threads, from /proc/self/task/<tid>/schedstat.
struct SchedulerTimes {
    double cpu_s = 0.0;
    double waiting_s = 0.0;  // runnable but not running: the CPU was busy with something else
};

std::set<long> thread_ids() {
    std::set<long> ids;
    std::error_code error;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task", error)) {
        ids.insert(std::atol(entry.path().filename().c_str()));
    }
    return ids;
}

SchedulerTimes scheduler_times(const std::vector<long>& threads) {
    SchedulerTimes times;
    for (long tid : threads) {
        std::ifstream schedstat("/proc/self/task/" + std::to_string(tid) + "/schedstat");
        long long cpu_ns = 0;
        long long waiting_ns = 0;
        if (schedstat >> cpu_ns >> waiting_ns) {
            times.cpu_s += static_cast<double>(cpu_ns) * 1e-9;
            times.waiting_s += static_cast<double>(waiting_ns) * 1e-9;
        }
    }
    return times;
}

long current_thread_id() {
#if defined(__linux__)
    return static_cast<long>(::syscall(SYS_gettid));
#else
    return 0;
#endif
}

// ---- Sweep ------------------------------------------------------------------------------------

void BM_CostModel(benchmark::State& state) {
    const auto items = static_cast<std::size_t>(state.range(0));
    const auto batch_size = static_cast<std::size_t>(state.range(1));
    const auto workers = static_cast<std::size_t>(state.range(2));
    const microbatch::CostModel& model = calibration->model;
    const double simple = model.predicted_total(items, batch_size, workers).count();
    const double makespan = model.predicted_makespan(items, batch_size, workers).count();
    if (makespan > max_point_seconds) {
        char message[160];
        std::snprintf(message, sizeof message,
                      "skipped: predicted T = %.2f s exceeds --max_point_seconds=%.2f", makespan,
                      max_point_seconds);
        state.SkipWithError(message);
        for (auto _ : state) {
        }
        return;
    }
    double measured = 0.0;
    SchedulerTimes workers_used;
    SchedulerTimes producer_used;
    for (auto _ : state) {
        std::atomic<std::size_t> processed{0};
        const std::set<long> before = thread_ids();
        microbatch::Batcher<Item> batcher(
            microbatch::Options{}
                .max_batch_size(batch_size)
                .max_delay(std::chrono::nanoseconds::max())
                .capacity(static_cast<std::size_t>(capacity_batches) * batch_size)
                .workers(workers),
            [&processed](microbatch::Batch<Item>& batch) {
                synthetic_batch(batch.size());
                processed.fetch_add(batch.size(), std::memory_order_relaxed);
            });
        std::vector<long> batcher_threads;  // the pool's workers (no timer: no max_delay)
        for (long tid : thread_ids()) {
            if (before.count(tid) == 0) {
                batcher_threads.push_back(tid);
            }
        }
        const std::vector<long> producer = {current_thread_id()};
        const SchedulerTimes workers_before = scheduler_times(batcher_threads);
        const SchedulerTimes producer_before = scheduler_times(producer);
        const auto start = Clock::now();
        for (std::size_t i = 0; i < items; ++i) {
            batcher.post(Item{i});
        }
        batcher.close();
        measured = std::chrono::duration<double>(Clock::now() - start).count();
        const SchedulerTimes workers_after = scheduler_times(batcher_threads);
        const SchedulerTimes producer_after = scheduler_times(producer);
        workers_used.cpu_s = workers_after.cpu_s - workers_before.cpu_s;
        workers_used.waiting_s = workers_after.waiting_s - workers_before.waiting_s;
        producer_used.cpu_s = producer_after.cpu_s - producer_before.cpu_s;
        producer_used.waiting_s = producer_after.waiting_s - producer_before.waiting_s;
        state.SetIterationTime(measured);
        if (processed.load(std::memory_order_relaxed) != items) {
            state.SkipWithError("items lost");
            return;
        }
    }
    state.counters["measured_s"] = measured;
    state.counters["predicted_total_s"] = simple;
    state.counters["predicted_makespan_s"] = makespan;
    state.counters["error_total"] = (measured - simple) / simple;
    state.counters["error_makespan"] = (measured - makespan) / makespan;
    // Share of the W worker-seconds the workers spent runnable but not running (CPU taken by
    // the producer, the other worker or other processes): the contention behind an error.
    state.counters["worker_runqueue_share"] =
        workers_used.waiting_s / (measured * static_cast<double>(workers));
    state.counters["worker_cpu_s"] = workers_used.cpu_s;
    state.counters["producer_cpu_s"] = producer_used.cpu_s;
    state.counters["producer_runqueue_s"] = producer_used.waiting_s;
    state.counters["batches"] = static_cast<double>((items + batch_size - 1) / batch_size);
}

void sweep(benchmark::internal::Benchmark* benchmark) {
    benchmark->ArgNames({"N", "B", "W"})
        ->ArgsProduct({{10000, 100000, 1000000}, {1, 4, 16, 64, 256, 1024}, {1, 2}})
        ->Iterations(1)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond)
        // Contention only ever adds time, so the fastest repetition is reported next to the
        // median: it shows how close the model gets when the machine lets the workers run.
        ->ComputeStatistics("min", [](const std::vector<double>& values) {
            return values.empty() ? 0.0 : *std::min_element(values.begin(), values.end());
        });
}

BENCHMARK(BM_Calibration)->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CostModel)->Apply(sweep);

bool parse_double(const char* argument, const char* flag, double& value) {
    const std::size_t length = std::strlen(flag);
    if (std::strncmp(argument, flag, length) != 0) {
        return false;
    }
    value = std::atof(argument + length);
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    // Defaults first, the caller's flags after them: Google Benchmark keeps the last value.
    std::vector<char*> arguments;
    arguments.push_back(argv[0]);
    static char repetitions[] = "--benchmark_repetitions=5";
    static char aggregates[] = "--benchmark_display_aggregates_only=true";
    // Interleaved repetitions: a burst of load from other processes hits several
    // configurations a little instead of one configuration entirely.
    static char interleave[] = "--benchmark_enable_random_interleaving=true";
    arguments.push_back(repetitions);
    arguments.push_back(interleave);
    arguments.push_back(aggregates);
    for (int i = 1; i < argc; ++i) {
        double repeats = 0.0;
        if (parse_double(argv[i], "--alpha_us=", alpha_us) ||
            parse_double(argv[i], "--beta_us=", beta_us) ||
            parse_double(argv[i], "--max_point_seconds=", max_point_seconds)) {
            continue;
        }
        if (parse_double(argv[i], "--calibration_repeats=", repeats)) {
            calibration_repeats = std::max(1, static_cast<int>(repeats));
            continue;
        }
        if (parse_double(argv[i], "--capacity_batches=", repeats)) {
            capacity_batches = std::max(1, static_cast<int>(repeats));
            continue;
        }
        arguments.push_back(argv[i]);
    }
    if (!(alpha_us >= 0.0) || !(beta_us >= 0.0) || !(alpha_us + beta_us > 0.0)) {
        std::fprintf(stderr,
                     "bench_cost_model: need --alpha_us >= 0, --beta_us >= 0, not both 0\n");
        return 1;
    }
    int count = static_cast<int>(arguments.size());
    arguments.push_back(nullptr);
    benchmark::Initialize(&count, arguments.data());
    if (benchmark::ReportUnrecognizedArguments(count, arguments.data())) {
        return 1;
    }
    calibration = calibrate();
    char text[160];
    std::snprintf(
        text, sizeof text, "alpha = %.3f us, beta = %.4f us (nominal %.3f / %.4f), R^2 %.5f",
        calibration->model.per_batch.count() * 1e6, calibration->model.per_item.count() * 1e6,
        alpha_us, beta_us, calibration->r_squared);
    benchmark::AddCustomContext("calibrated_model", text);
    std::snprintf(text, sizeof text, "%.2f", max_point_seconds);
    benchmark::AddCustomContext("max_point_seconds", text);
    benchmark::AddCustomContext("capacity_batches", std::to_string(capacity_batches));
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
