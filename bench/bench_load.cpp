// Batch formation under load (GitHub issue 10): microbatch against a Triton-style pull batcher,
// a BentoML-CORK batcher and a grid of fixed (B, max_delay) settings, in one binary and one run,
// on the same workloads. process_batch busy-waits alpha + beta * n on steady_clock, at two cost
// points: (alpha, beta) = (1 ms, 10 us) and (50 us, 1 us).
//
// 1. Closed_<policy>/alpha_us:A/W:W/N:N  N client threads each loop `submit(x).get()`;
//    B = 32, max_delay = 1 ms, W workers. After a warm-up (--warmup_s, 0.1 s) completions are
//    counted for --closed_s (0.3 s). Counters: per_s (items/s), limit_per_s = the physical limit
//    min(N, W b) / (alpha + beta b) with b = min(B, ceil(N / W)), fraction = per_s / limit_per_s,
//    mean_batch (items / batches run in the window, counted by process_batch), and for microbatch
//    stats_mean_batch (Stats::batch_size_mean over the whole run).
//
// 2. Open_<policy>/alpha_us:A/W:1/load:L  Poisson arrivals at L % of W B / (alpha + beta B),
//    B = 32, one generator thread with precomputed arrival times (the same seeded sequence for
//    every policy at a given load), --open_s (0.5 s; 0.25 s at the cheap cost point) of
//    arrivals. Latency runs from each item's *scheduled* arrival to its completion callback, so
//    a generator held up by a blocking submit (or by the machine) is charged to the policy.
//    Below 100 % the generator uses blocking submit; at 120 % try_submit, and rejected items
//    are counted (`rejected`) and excluded from the percentiles. If the generator is still
//    behind schedule --grace_s (0.25 s) after the last arrival time, it stops: the items it
//    never submitted count as `unserved` with latency (stop time - scheduled arrival), a lower
//    bound, so p99 is a lower bound when unserved > 1 % of the items. Counters: p50_us, p99_us,
//    per_s (completed items / time from first arrival to last completion), offered_per_s,
//    mean_batch, rejected, unserved.
// Every run also records load_1m, the 1-minute load average when it started (/proc/loadavg).
//
// Policies (the same capacity in items, 4 x 32 = 128, for every one):
//   MB_Default       microbatch, Options with only B, max_delay, workers set (the headline)
//   MB_Delay0        microbatch with max_delay(0)
//   MB_357efd2       microbatch configured as the size/time-only rule shipped at 357efd2
//   Pull_B<b>_D<us>  baselines/pull_batcher.hpp (Triton rule) with B = b, max_delay = us;
//                    Pull_B32_D1000 and Pull_B32_D0 in both experiments, the whole grid
//                    b in {8, 16, 32} x us in {0, 250, 500, 1000} in the open loop ("best fixed
//                    in hindsight" = the lowest p99 of the grid at each load, picked by the report)
//   Cork             baselines/cork_batcher.hpp (BentoML's CORK rule), B = 32, max_delay 1 ms
//
// Defaults: --benchmark_repetitions=1 --benchmark_enable_random_interleaving=true (the whole
// run takes about 3 minutes on 2 cores; with more repetitions the report takes medians).
//
//   ./bench_load --benchmark_filter='Closed_.*/alpha_us:1000/W:1/'

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
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "baselines/cork_batcher.hpp"
#include "baselines/pull_batcher.hpp"
#include "microbatch/batcher.hpp"

#if defined(__linux__)
#include <sys/prctl.h>
#endif

namespace {

using Item = std::uint64_t;
using Clock = std::chrono::steady_clock;
using std::chrono::nanoseconds;

constexpr std::size_t batch_size = 32;  // B
constexpr nanoseconds default_delay = std::chrono::milliseconds(1);
constexpr std::size_t capacity_items = 4 * batch_size;  // every policy's bound

double warmup_s = 0.1;  // --warmup_s
double closed_s = 0.3;  // --closed_s
double open_s = 0.5;    // --open_s (halved at the cheap cost point)
double grace_s = 0.25;  // --grace_s

std::int64_t now_ns() {
    return std::chrono::duration_cast<nanoseconds>(Clock::now().time_since_epoch()).count();
}

void spin_until(std::int64_t deadline_ns) {
    while (now_ns() < deadline_ns) {
    }
}

/// The synthetic batch: busy-waits alpha + beta * n (preemption does not lengthen it).
struct Cost {
    std::int64_t alpha_ns;
    std::int64_t beta_ns;
    void run(std::size_t n) const {
        spin_until(now_ns() + alpha_ns + beta_ns * static_cast<std::int64_t>(n));
    }
    double seconds(double n) const {
        return (static_cast<double>(alpha_ns) + static_cast<double>(beta_ns) * n) * 1e-9;
    }
};

Cost cost_for(std::int64_t alpha_us) {
    return alpha_us >= 1000 ? Cost{1000000, 10000} : Cost{50000, 1000};
}

/// Sets the calling thread's timer slack to 1 ns for its lifetime (Linux), so the generator can
/// sleep through long gaps precisely. Threads inherit the slack, so it is set after the batcher
/// under test started its threads.
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
    if (now_ns() < deadline_ns - spin_margin_ns) {
        std::this_thread::sleep_until(Clock::time_point(nanoseconds(deadline_ns - spin_margin_ns)));
    }
    spin_until(deadline_ns);
}

/// The 1-minute load average (Linux /proc/loadavg; -1 elsewhere), recorded with every run.
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

// ---- Policies ----------------------------------------------------------------------------------

enum class Policy { mb_default, mb_delay0, mb_357efd2, pull, cork };

/// The microbatch configuration of each microbatch policy (the only place they differ).
microbatch::Options microbatch_options(Policy policy, std::size_t b, nanoseconds delay,
                                       std::size_t workers) {
    auto options = microbatch::Options{}.max_batch_size(b).max_delay(delay).workers(workers);
    switch (policy) {
        case Policy::mb_delay0:
            options.max_delay(nanoseconds(0));
            break;
        case Policy::mb_357efd2:
            // The size/time-only rule as shipped at 357efd2: seal on full or max_delay, whether
            // or not a worker is free, and never early.
            options.max_in_flight(microbatch::Options::unlimited_in_flight).seal_early(false);
            break;
        default:
            break;
    }
    return options;
}

struct PolicySpec {
    std::string name;
    Policy policy;
    std::size_t b;
    nanoseconds delay;
};

std::vector<PolicySpec> policies(bool grid) {
    std::vector<PolicySpec> out = {
        {"MB_Default", Policy::mb_default, batch_size, default_delay},
        {"MB_Delay0", Policy::mb_delay0, batch_size, nanoseconds(0)},
        {"MB_357efd2", Policy::mb_357efd2, batch_size, default_delay},
        {"Cork", Policy::cork, batch_size, default_delay},
    };
    const std::vector<std::size_t> sizes =
        grid ? std::vector<std::size_t>{8, 16, 32} : std::vector<std::size_t>{32};
    const std::vector<std::int64_t> delays_us =
        grid ? std::vector<std::int64_t>{0, 250, 500, 1000} : std::vector<std::int64_t>{0, 1000};
    for (std::size_t b : sizes) {
        for (std::int64_t us : delays_us) {
            out.push_back({"Pull_B" + std::to_string(b) + "_D" + std::to_string(us), Policy::pull,
                           b, std::chrono::microseconds(us)});
        }
    }
    return out;
}

/// Batches and items run, counted by every policy's process function.
struct BatchCounters {
    std::atomic<std::uint64_t> batches{0};
    std::atomic<std::uint64_t> items{0};
    void add(std::size_t n) {
        batches.fetch_add(1, std::memory_order_relaxed);
        items.fetch_add(n, std::memory_order_relaxed);
    }
};

/**
 * One instance of a policy behind a uniform interface: `submit_wait(x)` (closed loop) and
 * `submit_cb(x, done, block)` (open loop; false if rejected), `close()`, `stats_mean_batch()`.
 */
class Instance {
public:
    virtual ~Instance() = default;
    virtual void submit_wait(Item item) = 0;
    virtual bool submit_cb(Item item, std::int64_t* stamp, bool block) = 0;
    virtual void close() = 0;
    virtual double stats_mean_batch() const { return -1.0; }
};

class MicrobatchInstance final : public Instance {
public:
    MicrobatchInstance(const PolicySpec& spec, std::size_t workers, Cost cost,
                       BatchCounters& counters)
        : batcher_(microbatch_options(spec.policy, spec.b, spec.delay, workers),
                   [cost, &counters](microbatch::Batch<Item>& batch) {
                       cost.run(batch.size());
                       counters.add(batch.size());
                   }) {}
    void submit_wait(Item item) override { batcher_.submit(item).get(); }
    bool submit_cb(Item item, std::int64_t* stamp, bool block) override {
        auto done = [stamp](microbatch::Outcome<void>&&) { *stamp = now_ns(); };
        if (block) {
            batcher_.submit(item, done);
            return true;
        }
        return batcher_.try_submit(item, done) == microbatch::SubmitStatus::accepted;
    }
    void close() override { batcher_.close(); }
    double stats_mean_batch() const override { return batcher_.stats().batch_size_mean(); }

private:
    microbatch::Batcher<Item> batcher_;
};

template <class Rule>
class PullInstance final : public Instance {
public:
    PullInstance(const PolicySpec& spec, std::size_t workers, Cost cost, BatchCounters& counters)
        : batcher_(
              microbatch_bench::PullBatcherOptions{spec.b, spec.delay, workers, capacity_items},
              [cost, &counters](std::vector<Item>& batch) {
                  cost.run(batch.size());
                  counters.add(batch.size());
              }) {}
    void submit_wait(Item item) override { batcher_.submit(item).get(); }
    bool submit_cb(Item item, std::int64_t* stamp, bool block) override {
        auto done = [stamp] { *stamp = now_ns(); };
        if (block) {
            batcher_.submit(item, done);
            return true;
        }
        return batcher_.try_submit(item, done);
    }
    void close() override { batcher_.close(); }

private:
    microbatch_bench::PullBatcher<Item, Rule> batcher_;
};

std::unique_ptr<Instance> make_instance(const PolicySpec& spec, std::size_t workers, Cost cost,
                                        BatchCounters& counters) {
    switch (spec.policy) {
        case Policy::pull:
            return std::make_unique<PullInstance<microbatch_bench::FixedDelay>>(spec, workers, cost,
                                                                                counters);
        case Policy::cork:
            return std::make_unique<PullInstance<microbatch_bench::CorkRule>>(spec, workers, cost,
                                                                              counters);
        default:
            return std::make_unique<MicrobatchInstance>(spec, workers, cost, counters);
    }
}

// ---- 1. Closed loop ----------------------------------------------------------------------------

double closed_limit(std::size_t clients, std::size_t workers, Cost cost) {
    const std::size_t b = std::min(batch_size, (clients + workers - 1) / workers);
    return static_cast<double>(std::min(clients, workers * b)) /
           cost.seconds(static_cast<double>(b));
}

void closed_loop(benchmark::State& state, const PolicySpec& spec) {
    const Cost cost = cost_for(state.range(0));
    const auto workers = static_cast<std::size_t>(state.range(1));
    const auto clients = static_cast<std::size_t>(state.range(2));
    for (auto _ : state) {
        state.counters["load_1m"] = load_average();
        BatchCounters counters;
        std::unique_ptr<Instance> instance = make_instance(spec, workers, cost, counters);
        std::atomic<bool> go{false};
        std::atomic<bool> stop{false};
        std::atomic<std::uint64_t> completed{0};
        std::vector<std::thread> threads;
        threads.reserve(clients);
        for (std::size_t c = 0; c < clients; ++c) {
            threads.emplace_back([&, c] {
                while (!go.load(std::memory_order_acquire)) {
                    std::this_thread::yield();
                }
                Item x = c;
                while (!stop.load(std::memory_order_relaxed)) {
                    instance->submit_wait(x++);
                    completed.fetch_add(1, std::memory_order_relaxed);
                }
            });
        }
        go.store(true, std::memory_order_release);
        std::this_thread::sleep_for(std::chrono::duration<double>(warmup_s));
        const auto t0 = Clock::now();
        const std::uint64_t c0 = completed.load(std::memory_order_relaxed);
        const std::uint64_t b0 = counters.batches.load(std::memory_order_relaxed);
        const std::uint64_t i0 = counters.items.load(std::memory_order_relaxed);
        std::this_thread::sleep_for(std::chrono::duration<double>(closed_s));
        const auto t1 = Clock::now();
        const std::uint64_t c1 = completed.load(std::memory_order_relaxed);
        const std::uint64_t b1 = counters.batches.load(std::memory_order_relaxed);
        const std::uint64_t i1 = counters.items.load(std::memory_order_relaxed);
        stop.store(true, std::memory_order_relaxed);
        for (std::thread& thread : threads) {
            thread.join();
        }
        instance->close();
        const double seconds = std::chrono::duration<double>(t1 - t0).count();
        state.SetIterationTime(seconds);
        const double per_s = static_cast<double>(c1 - c0) / seconds;
        const double limit = closed_limit(clients, workers, cost);
        state.counters["per_s"] = per_s;
        state.counters["limit_per_s"] = limit;
        state.counters["fraction"] = per_s / limit;
        state.counters["mean_batch"] =
            b1 > b0 ? static_cast<double>(i1 - i0) / static_cast<double>(b1 - b0) : 0.0;
        const double stats_mean = instance->stats_mean_batch();
        if (stats_mean >= 0.0) {
            state.counters["stats_mean_batch"] = stats_mean;
        }
    }
}

// ---- 2. Open loop ------------------------------------------------------------------------------

/// Arrival offsets (ns from the start) of a Poisson process at @p rate for @p seconds; seeded
/// by the configuration so every policy sees the same sequence.
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

void open_loop(benchmark::State& state, const PolicySpec& spec) {
    const std::int64_t alpha_us = state.range(0);
    const Cost cost = cost_for(alpha_us);
    const auto workers = static_cast<std::size_t>(state.range(1));
    const std::int64_t load_pct = state.range(2);
    const double max_rate =
        static_cast<double>(workers * batch_size) / cost.seconds(static_cast<double>(batch_size));
    const double rate = max_rate * static_cast<double>(load_pct) / 100.0;
    const double duration = alpha_us >= 1000 ? open_s : open_s / 2;
    const bool overload = load_pct > 100;
    const std::vector<std::int64_t> schedule =
        arrivals(rate, duration, static_cast<std::uint64_t>(alpha_us * 1000 + load_pct));
    for (auto _ : state) {
        state.counters["load_1m"] = load_average();
        const std::size_t n = schedule.size();
        std::vector<std::int64_t> done(n, 0);
        std::vector<char> accepted(n, 0);
        BatchCounters counters;
        std::unique_ptr<Instance> instance = make_instance(spec, workers, cost, counters);
        std::int64_t start = 0;
        std::int64_t stopped_at = 0;
        std::size_t submitted = 0;
        {
            const PreciseSleeps precise;  // after the instance started its threads
            start = now_ns() + 2000000;
            const std::int64_t give_up =
                start + static_cast<std::int64_t>((duration + grace_s) * 1e9);
            for (; submitted < n; ++submitted) {
                wait_until(start + schedule[submitted]);
                if (now_ns() > give_up) {
                    break;
                }
                accepted[submitted] =
                    instance->submit_cb(static_cast<Item>(submitted), &done[submitted], !overload)
                        ? 1
                        : 0;
            }
            stopped_at = now_ns();
        }
        instance->close();  // every accepted item has completed (and stamped) after this
        std::vector<double> latency_us;
        latency_us.reserve(n);
        std::size_t rejected = 0;
        std::size_t unserved = 0;
        std::int64_t last_done = start;
        for (std::size_t i = 0; i < n; ++i) {
            const std::int64_t scheduled = start + schedule[i];
            if (i >= submitted) {
                ++unserved;
                latency_us.push_back(static_cast<double>(stopped_at - scheduled) * 1e-3);
            } else if (accepted[i] == 0) {
                ++rejected;
            } else {
                latency_us.push_back(static_cast<double>(done[i] - scheduled) * 1e-3);
                last_done = std::max(last_done, done[i]);
            }
        }
        std::sort(latency_us.begin(), latency_us.end());
        const double seconds = static_cast<double>(last_done - start) * 1e-9;
        state.SetIterationTime(std::max(seconds, 1e-6));
        const std::size_t completed = submitted - rejected;
        state.counters["p50_us"] = percentile(latency_us, 0.50);
        state.counters["p99_us"] = percentile(latency_us, 0.99);
        state.counters["per_s"] = seconds > 0 ? static_cast<double>(completed) / seconds : 0.0;
        state.counters["offered_per_s"] = rate;
        state.counters["items"] = static_cast<double>(n);
        state.counters["rejected"] = static_cast<double>(rejected);
        state.counters["unserved"] = static_cast<double>(unserved);
        const std::uint64_t batches = counters.batches.load();
        state.counters["mean_batch"] =
            batches > 0 ? static_cast<double>(counters.items.load()) / static_cast<double>(batches)
                        : 0.0;
        const double stats_mean = instance->stats_mean_batch();
        if (stats_mean >= 0.0) {
            state.counters["stats_mean_batch"] = stats_mean;
        }
    }
}

// ---- Registration ------------------------------------------------------------------------------

const std::vector<std::int64_t> alphas_us = {1000, 50};
const std::vector<std::int64_t> closed_workers = {1, 2};
const std::vector<std::int64_t> closed_clients = {1, 4, 16, 32, 48, 128};
const std::vector<std::int64_t> open_loads = {10, 30, 50, 70, 90, 120};

void register_all() {
    for (const PolicySpec& spec : policies(false)) {
        benchmark::RegisterBenchmark(("BM_Closed_" + spec.name).c_str(),
                                     [spec](benchmark::State& state) { closed_loop(state, spec); })
            ->ArgNames({"alpha_us", "W", "N"})
            ->ArgsProduct({alphas_us, closed_workers, closed_clients})
            ->Iterations(1)
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
    }
    for (const PolicySpec& spec : policies(true)) {
        benchmark::RegisterBenchmark(("BM_Open_" + spec.name).c_str(),
                                     [spec](benchmark::State& state) { open_loop(state, spec); })
            ->ArgNames({"alpha_us", "W", "load"})
            ->ArgsProduct({alphas_us, {1}, open_loads})
            ->Iterations(1)
            ->UseManualTime()
            ->Unit(benchmark::kMillisecond);
    }
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
    // Defaults first, the caller's flags after them: Google Benchmark keeps the last value.
    std::vector<char*> arguments;
    arguments.push_back(argv[0]);
    static char repetitions[] = "--benchmark_repetitions=1";
    static char interleave[] = "--benchmark_enable_random_interleaving=true";
    arguments.push_back(repetitions);
    arguments.push_back(interleave);
    for (int i = 1; i < argc; ++i) {
        if (!parse_double_flag(argv[i], "--warmup_s=", warmup_s) &&
            !parse_double_flag(argv[i], "--closed_s=", closed_s) &&
            !parse_double_flag(argv[i], "--open_s=", open_s) &&
            !parse_double_flag(argv[i], "--grace_s=", grace_s)) {
            arguments.push_back(argv[i]);
        }
    }
    if (!(closed_s > 0.0) || !(open_s > 0.0) || warmup_s < 0.0 || grace_s < 0.0) {
        std::fprintf(stderr, "bench_load: --closed_s and --open_s must be > 0\n");
        return 1;
    }
    register_all();
    int count = static_cast<int>(arguments.size());
    arguments.push_back(nullptr);
    benchmark::Initialize(&count, arguments.data());
    if (benchmark::ReportUnrecognizedArguments(count, arguments.data())) {
        return 1;
    }
    benchmark::AddCustomContext("load_B", std::to_string(batch_size));
    benchmark::AddCustomContext("load_capacity_items", std::to_string(capacity_items));
    benchmark::AddCustomContext("load_costs",
                                "alpha_us:1000 -> (1 ms, 10 us); alpha_us:50 -> "
                                "(50 us, 1 us)");
    benchmark::AddCustomContext("load_policy_357efd2",
                                "MB_357efd2 = defaults + max_in_flight(unlimited_in_flight) + "
                                "seal_early(false)");
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
