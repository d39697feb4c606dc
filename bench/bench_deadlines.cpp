// Per-item deadlines under open-loop load (GitHub issue 11), and fair admission of blocked
// producers. process_batch costs alpha + beta * n at the cost points of bench_load:
// (alpha, beta) = (1 ms, 10 us), slept to ~20 us before the end and then busy-waited on
// steady_clock (so two workers and the generator fit on two cores), and (50 us, 1 us),
// busy-waited throughout (a sleep's wake-up latency would be a large part of it); B = 32.
//
// 1. Deadlines_<mode>/alpha_us:A/W:W/load:L  Poisson arrivals at L % of the maximum throughput
//    W B / (alpha + beta B), one generator thread with precomputed arrival times (the same
//    seeded sequence for every mode), --open_s (1 s; 0.5 s at the cheap cost point) of arrivals.
//    Every item's deadline is its scheduled arrival + 5 (alpha + beta B). The generator uses
//    try_submit (an open loop never blocks): an item refused because the batcher is full is
//    counted in `full`. Capacity: 32 batches (1,024 items), a deep queue as a service would
//    have, so that without deadlines the queue grows far past the deadline under overload.
//    Modes:
//      NoDeadlines  items carry no deadline (microbatch before issue 11)
//      Purge        deadlines, deadline_sealing(false): expired items are dropped when their
//                   batch forms (the Triton rule)
//      Sealing      + deadline-aware sealing (the default)
//      Admission    + admission_control(true)
//    Counters: goodput_per_s (items completed by their deadline per second of arrivals),
//    goodput_fraction (of the maximum throughput), late (completed after their deadline),
//    started_late (process_batch began after the item's deadline, as read by process_batch
//    just after the batcher's own check: a few may fall in between), expired
//    (Stats::items_expired), refused (SubmitStatus::infeasible), full, unserved (never
//    submitted: the generator fell --grace_s behind), p50_us / p99_us of completed items
//    (scheduled arrival to the end of their batch), offered_per_s, max_per_s, load_1m.
//
// 2. ProducerWait/N:N  N producer threads post() as fast as they can into one batcher
//    (alpha 1 ms, beta 10 us, B 32, W 1, capacity 64), so most of them are blocked on it, for
//    --wait_s (2 s). Counters over the post() calls that blocked (> 50 us): p50_us, p99_us,
//    max_us, p99_over_p50; and posts_min / posts_max, the fewest and most posts one producer
//    completed (max_over_min: 1 when every producer gets its turn equally often).
//
//   ./bench_deadlines --benchmark_filter='Deadlines_.*/alpha_us:1000/W:1/load:120'

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
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "microbatch/batcher.hpp"

#if defined(__linux__)
#include <sys/prctl.h>
#endif

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::nanoseconds;

constexpr std::size_t batch_size = 32;                   // B
constexpr std::size_t capacity_items = 32 * batch_size;  // a deep queue
constexpr double budget_batches = 5.0;                   // deadline = 5 (alpha + beta B)

double open_s = 1.0;    // --open_s (halved at the cheap cost point)
double grace_s = 0.25;  // --grace_s
double wait_s = 2.0;    // --wait_s

std::int64_t now_ns() {
    return std::chrono::duration_cast<nanoseconds>(Clock::now().time_since_epoch()).count();
}

void precise_timer_slack() {
#if defined(__linux__)
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
#endif
}

/// Sleeps until ~20 us before @p deadline_ns, then busy-waits for the rest.
void wait_until(std::int64_t deadline_ns) {
    constexpr std::int64_t spin_margin_ns = 20000;
    if (now_ns() < deadline_ns - spin_margin_ns) {
        std::this_thread::sleep_until(Clock::time_point(nanoseconds(deadline_ns - spin_margin_ns)));
    }
    while (now_ns() < deadline_ns) {
    }
}

struct Cost {
    std::int64_t alpha_ns;
    std::int64_t beta_ns;
    std::int64_t of(std::size_t n) const {
        return alpha_ns + beta_ns * static_cast<std::int64_t>(n);
    }
};

Cost cost_for(std::int64_t alpha_us) {
    return alpha_us >= 1000 ? Cost{1000000, 10000} : Cost{50000, 1000};
}

/// Runs one batch of @p n items: sleeps most of a long batch, spins a short one.
void run_batch(const Cost& cost, std::size_t n) {
    const std::int64_t end = now_ns() + cost.of(n);
    if (cost.alpha_ns >= 1000000) {
        wait_until(end);
    } else {
        while (now_ns() < end) {
        }
    }
}

double load_average() {
    std::ifstream stream("/proc/loadavg");
    double value = -1.0;
    if (stream) {
        stream >> value;
    }
    return value;
}

double percentile(const std::vector<double>& sorted, double q) {
    if (sorted.empty()) {
        return 0.0;
    }
    const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
    return sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)];
}

std::vector<std::int64_t> arrivals(double rate, double seconds, std::uint64_t seed) {
    std::mt19937_64 random(seed);
    std::exponential_distribution<double> gap(rate);
    std::vector<std::int64_t> out;
    double t = 0.0;
    for (;;) {
        t += gap(random);
        if (t >= seconds) {
            return out;
        }
        out.push_back(static_cast<std::int64_t>(t * 1e9));
    }
}

// ---- 1. Deadlines under open-loop load --------------------------------------------------------

enum class Mode { no_deadlines, purge, sealing, admission };

microbatch::Options options_for(Mode mode, std::size_t workers) {
    return microbatch::Options{}
        .max_batch_size(batch_size)
        .workers(workers)
        .capacity(capacity_items)
        .deadline_sealing(mode == Mode::sealing || mode == Mode::admission)
        .admission_control(mode == Mode::admission);
}

void deadlines(benchmark::State& state, Mode mode) {
    const std::int64_t alpha_us = state.range(0);
    const Cost cost = cost_for(alpha_us);
    const auto workers = static_cast<std::size_t>(state.range(1));
    const std::int64_t load_pct = state.range(2);
    const double max_rate = static_cast<double>(workers * batch_size) /
                            (static_cast<double>(cost.of(batch_size)) * 1e-9);
    const double rate = max_rate * static_cast<double>(load_pct) / 100.0;
    const double duration = alpha_us >= 1000 ? open_s : open_s / 2;
    const auto budget =
        static_cast<std::int64_t>(budget_batches * static_cast<double>(cost.of(batch_size)));
    const std::vector<std::int64_t> schedule = arrivals(
        rate, duration, static_cast<std::uint64_t>(alpha_us * 1000 + load_pct * 10) + workers);
    for (auto _ : state) {
        state.counters["load_1m"] = load_average();
        const std::size_t n = schedule.size();
        std::vector<std::int64_t> done(n, 0);
        std::vector<std::int64_t> began(n, 0);
        std::vector<char> status(n, 0);  // 1 accepted, 2 full, 3 infeasible
        std::int64_t start = 0;
        std::int64_t stopped_at = 0;
        std::size_t submitted = 0;
        microbatch::Stats stats;
        {
            microbatch::Batcher<std::uint32_t> batcher(
                options_for(mode, workers), [&](microbatch::Batch<std::uint32_t>& batch) {
                    static thread_local bool precise = (precise_timer_slack(), true);
                    (void)precise;
                    const std::int64_t begin = now_ns();
                    run_batch(cost, batch.size());
                    const std::int64_t end = now_ns();
                    for (const std::uint32_t index : batch) {
                        began[index] = begin;
                        done[index] = end;
                    }
                });
            precise_timer_slack();  // the generator thread (after the batcher's threads)
            start = now_ns() + 2000000;
            const std::int64_t give_up =
                start + static_cast<std::int64_t>((duration + grace_s) * 1e9);
            for (; submitted < n; ++submitted) {
                const std::int64_t scheduled = start + schedule[submitted];
                wait_until(scheduled);
                if (now_ns() > give_up) {
                    break;
                }
                const auto item = static_cast<std::uint32_t>(submitted);
                const microbatch::SubmitStatus result =
                    mode == Mode::no_deadlines
                        ? batcher.try_submit(item)
                        : batcher.try_submit(Clock::time_point(nanoseconds(scheduled + budget)),
                                             item);
                status[submitted] = result == microbatch::SubmitStatus::accepted ? 1
                                    : result == microbatch::SubmitStatus::full   ? 2
                                                                                 : 3;
            }
            stopped_at = now_ns();
            batcher.close();
            stats = batcher.stats();
        }
        std::vector<double> latency_us;
        latency_us.reserve(n);
        std::size_t on_time = 0;
        std::size_t late = 0;
        std::size_t started_late = 0;
        std::size_t full = 0;
        std::size_t refused = 0;
        for (std::size_t i = 0; i < n && i < submitted; ++i) {
            const std::int64_t scheduled = start + schedule[i];
            if (status[i] == 2) {
                ++full;
            } else if (status[i] == 3) {
                ++refused;
            } else if (done[i] != 0) {
                latency_us.push_back(static_cast<double>(done[i] - scheduled) * 1e-3);
                (done[i] <= scheduled + budget ? on_time : late) += 1;
                started_late += began[i] > scheduled + budget ? 1 : 0;
            }
        }
        std::sort(latency_us.begin(), latency_us.end());
        state.SetIterationTime(std::max(static_cast<double>(stopped_at - start) * 1e-9, 1e-6));
        const double goodput = static_cast<double>(on_time) / duration;
        state.counters["goodput_per_s"] = goodput;
        state.counters["goodput_fraction"] = goodput / max_rate;
        state.counters["max_per_s"] = max_rate;
        state.counters["offered_per_s"] = rate;
        state.counters["items"] = static_cast<double>(n);
        state.counters["late"] = static_cast<double>(late);
        state.counters["started_late"] = static_cast<double>(started_late);
        state.counters["expired"] = static_cast<double>(stats.items_expired);
        state.counters["refused"] = static_cast<double>(refused);
        state.counters["full"] = static_cast<double>(full);
        state.counters["unserved"] = static_cast<double>(n - submitted);
        state.counters["p50_us"] = percentile(latency_us, 0.50);
        state.counters["p99_us"] = percentile(latency_us, 0.99);
        state.counters["deadline_us"] = static_cast<double>(budget) * 1e-3;
        state.counters["mean_batch"] = stats.batch_size_mean();
    }
}

// ---- 2. Blocked producers' waits under overload -----------------------------------------------

void producer_wait(benchmark::State& state) {
    const auto producers = static_cast<std::size_t>(state.range(0));
    const Cost cost = cost_for(1000);
    for (auto _ : state) {
        state.counters["load_1m"] = load_average();
        std::vector<std::vector<double>> waits(producers);
        {
            microbatch::Batcher<std::uint32_t> batcher(
                microbatch::Options{}
                    .max_batch_size(batch_size)
                    .workers(1)
                    .capacity(2 * batch_size),
                [cost](microbatch::Batch<std::uint32_t>& batch) {
                    static thread_local bool precise = (precise_timer_slack(), true);
                    (void)precise;
                    run_batch(cost, batch.size());
                });
            const std::int64_t stop = now_ns() + static_cast<std::int64_t>(wait_s * 1e9);
            std::vector<std::thread> threads;
            for (std::size_t p = 0; p < producers; ++p) {
                threads.emplace_back([&, p] {
                    std::uint32_t item = 0;
                    while (now_ns() < stop) {
                        const std::int64_t before = now_ns();
                        batcher.post(item++);
                        waits[p].push_back(static_cast<double>(now_ns() - before) * 1e-3);
                    }
                });
            }
            for (auto& thread : threads) {
                thread.join();
            }
        }
        std::vector<double> blocked;
        std::size_t fewest = static_cast<std::size_t>(-1);
        std::size_t most = 0;
        for (const auto& w : waits) {
            fewest = std::min(fewest, w.size());
            most = std::max(most, w.size());
            for (const double x : w) {
                if (x > 50.0) {
                    blocked.push_back(x);
                }
            }
        }
        std::sort(blocked.begin(), blocked.end());
        const double p50 = percentile(blocked, 0.50);
        const double p99 = percentile(blocked, 0.99);
        state.SetIterationTime(wait_s);
        state.counters["blocked_posts"] = static_cast<double>(blocked.size());
        state.counters["p50_us"] = p50;
        state.counters["p99_us"] = p99;
        state.counters["max_us"] = blocked.empty() ? 0.0 : blocked.back();
        state.counters["p99_over_p50"] = p50 > 0.0 ? p99 / p50 : 0.0;
        state.counters["posts_min"] = static_cast<double>(fewest);
        state.counters["posts_max"] = static_cast<double>(most);
        state.counters["max_over_min"] =
            fewest > 0 ? static_cast<double>(most) / static_cast<double>(fewest) : 0.0;
    }
}

// ---- Registration ------------------------------------------------------------------------------

void register_all() {
    const struct {
        const char* name;
        Mode mode;
    } modes[] = {{"NoDeadlines", Mode::no_deadlines},
                 {"Purge", Mode::purge},
                 {"Sealing", Mode::sealing},
                 {"Admission", Mode::admission}};
    for (const auto& entry : modes) {
        const Mode mode = entry.mode;
        benchmark::RegisterBenchmark((std::string("BM_Deadlines_") + entry.name).c_str(),
                                     [mode](benchmark::State& state) { deadlines(state, mode); })
            ->ArgNames({"alpha_us", "W", "load"})
            ->ArgsProduct({{1000, 50}, {1, 2}, {70, 90, 120, 200}})
            ->Iterations(1)
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
    }
    benchmark::RegisterBenchmark("BM_ProducerWait", producer_wait)
        ->ArgNames({"N"})
        ->Arg(16)
        ->Iterations(1)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
}

bool parse_double_flag(const char* argument, const char* name, double& value) {
    const std::size_t length = std::strlen(name);
    if (std::strncmp(argument, name, length) != 0) {
        return false;
    }
    value = std::atof(argument + length);
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<char*> arguments;
    arguments.push_back(argv[0]);
    static char repetitions[] = "--benchmark_repetitions=1";
    arguments.push_back(repetitions);
    for (int i = 1; i < argc; ++i) {
        if (!parse_double_flag(argv[i], "--open_s=", open_s) &&
            !parse_double_flag(argv[i], "--grace_s=", grace_s) &&
            !parse_double_flag(argv[i], "--wait_s=", wait_s)) {
            arguments.push_back(argv[i]);
        }
    }
    if (!(open_s > 0.0) || !(wait_s > 0.0) || grace_s < 0.0) {
        std::fprintf(stderr, "bench_deadlines: --open_s and --wait_s must be > 0\n");
        return 1;
    }
    register_all();
    int count = static_cast<int>(arguments.size());
    arguments.push_back(nullptr);
    benchmark::Initialize(&count, arguments.data());
    if (benchmark::ReportUnrecognizedArguments(count, arguments.data())) {
        return 1;
    }
    benchmark::AddCustomContext("deadlines_B", std::to_string(batch_size));
    benchmark::AddCustomContext("deadlines_capacity_items", std::to_string(capacity_items));
    benchmark::AddCustomContext("deadlines_budget", "5 x (alpha + beta B)");
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
