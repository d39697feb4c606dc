// Lanes (GitHub issue 13, item 4): does Options::lanes(n) > 1 help at default options, and is
// there a cheap signal a batcher could pick the lane count from? One binary, one run; compare
// lanes = 1 with lanes = 2, lanes = P and lanes = hardware_concurrency (each only where it
// differs from the others) in the same run.
//
// 1. BM_Throughput/B:b/P:p/W:w/lanes:n  p producer threads post() N items as fast as they can
//    (the values 1..N split evenly, --items = 131,072; a quarter at B = 1) into a fresh
//    Batcher<Item> with default options except max_batch_size b, workers w and lanes n.
//    process_batch sums the batch (trivial work, as in bench_batcher). The clock runs from the
//    producers' release to close() returning. A checksum fails the run on a lost or duplicated
//    item. B in {1, 16, 256}, P in {1, 2, 4}, W in {1, 2}.
//    Counters: items_per_second, mean_batch, and the contention signals below.
// 2. BM_Latency/lanes:n/rate:r  2 producer threads submit(item, callback) with Poisson arrivals
//    at r items/s in total (seeded, the same sequence for every lane count), B = 64, default
//    max_delay (1 ms), workers and everything else. process_batch busy-waits 20 us + 0.2 us per
//    item (a small remote call). Producers sleep until an item is due (no spinning: 2 cores), so
//    items may leave in small bursts; latency runs from just before submit to the callback.
//    max(r x 0.5 s, 2000) items per run. Counters: p50_us, p99_us, mean_batch, per_s
//    (completed / time from the first submit to the last callback), offered_per_s.
//
// Contention signals (both kinds of run), as candidates for an automatic lane count:
//   switch_fraction  of adjacent slot pairs within a batch, the share holding items of different
//                    producers: how often a producer's claim on the lane's slot counter followed
//                    another producer's. A producer can see this itself at the cost of one
//                    thread-local compare per submit (was my claim last + 1?). 0 with one
//                    producer per lane.
//   switches_per_us  the same switches per microsecond of run time: how often the claim
//                    counter's cache line moved between producers.
//   producer_ns      the mean time a producer spent per post() (its loop time / its items);
//                    includes waiting for capacity, so it also grows when the workers are behind.
//   submit_rate      items/s handed over per producer (its items / its loop time).
// 3. BM_ClaimCost/P:p/shared:s  p threads each make 8 x --items fetch_adds (seq_cst, as a
//    lane's claim counter) on one shared counter (s = 1) or on one counter each (s = 0):
//    ns_per_claim is the price of the shared cache line that lanes remove.
// Every run records load_1m, the 1-minute load average when it started (/proc/loadavg).
//
// The P = 1 rows with 2 lanes are a control: one producer uses one lane whatever the count, so
// their ratio to one lane shows the run's noise, not an effect of lanes.
//
// Defaults (later flags win): --benchmark_min_time=0.1 --benchmark_repetitions=7
// --benchmark_enable_random_interleaving=true --benchmark_display_aggregates_only=true.
// Extra flag: --items=N (items per throughput run).
//
//   ./bench_lanes                                         # everything, about 3 minutes
//   ./bench_lanes --benchmark_filter='BM_Latency'

#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "microbatch/aggregator.hpp"
#include "microbatch/batcher.hpp"

namespace {

using Item = std::uint64_t;
using Clock = std::chrono::steady_clock;

std::size_t base_items_per_run = std::size_t{1} << 17;  // --items=N

/// Items carry their producer's index in the low bits, so that process_batch can count the
/// places where a batch switches from one producer's items to another's.
constexpr unsigned producer_bits = 3;
constexpr Item producer_mask = (Item{1} << producer_bits) - 1;
constexpr std::size_t max_producers = std::size_t{1} << producer_bits;

Item encode(Item value, std::size_t producer) {
    return value << producer_bits | static_cast<Item>(producer);
}

std::size_t hardware_threads() {
    const unsigned count = std::thread::hardware_concurrency();
    return count == 0 ? 1 : count;
}

double load_average() {
    double load = -1.0;
    if (std::FILE* file = std::fopen("/proc/loadavg", "r")) {
        if (std::fscanf(file, "%lf", &load) != 1) {
            load = -1.0;
        }
        std::fclose(file);
    }
    return load;
}

/// Producer switches between adjacent items of @p batch.
std::uint64_t switches_in(const microbatch::Batch<Item>& batch) {
    std::uint64_t switches = 0;
    for (std::size_t index = 1; index < batch.size(); ++index) {
        switches += ((batch[index] ^ batch[index - 1]) & producer_mask) != 0 ? 1 : 0;
    }
    return switches;
}

/// What process_batch records: sharded, so that workers rarely share a cache line.
struct BatchCounts {
    microbatch::Aggregator<microbatch::ops::Sum<Item>> sum;
    microbatch::Aggregator<microbatch::ops::Sum<std::uint64_t>> batches;
    microbatch::Aggregator<microbatch::ops::Sum<std::uint64_t>> switches;

    void record(const microbatch::Batch<Item>& batch, Item batch_sum) {
        sum.merge(batch_sum);
        batches.merge(1);
        switches.merge(switches_in(batch));
    }
};

/// Runs produce(index) on @p producers fresh threads released together (fresh threads draw
/// consecutive producer numbers, so lanes = P gives each its own lane); returns the seconds
/// from the release until finish() returned.
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

/// Per-producer loop time, written by each producer for its own index only.
struct ProducerTimes {
    explicit ProducerTimes(std::size_t producers) : seconds(producers, 0.0), items(producers, 0) {}
    std::vector<double> seconds;
    std::vector<std::size_t> items;

    /// Mean over producers of (loop time / items): ns per submit call.
    double ns_per_item() const {
        double sum = 0.0;
        for (std::size_t index = 0; index < seconds.size(); ++index) {
            sum +=
                items[index] == 0 ? 0.0 : seconds[index] * 1e9 / static_cast<double>(items[index]);
        }
        return sum / static_cast<double>(seconds.size());
    }
    /// Mean over producers of items / loop time.
    double submit_rate() const {
        double sum = 0.0;
        for (std::size_t index = 0; index < seconds.size(); ++index) {
            sum += seconds[index] <= 0.0 ? 0.0 : static_cast<double>(items[index]) / seconds[index];
        }
        return sum / static_cast<double>(seconds.size());
    }
};

// ---- 1. Throughput ------------------------------------------------------------------------------

void BM_Throughput(benchmark::State& state) {
    const auto batch_size = static_cast<std::size_t>(state.range(0));
    const auto producers = static_cast<std::size_t>(state.range(1));
    const auto workers = static_cast<std::size_t>(state.range(2));
    const auto lanes = static_cast<std::size_t>(state.range(3));
    const std::size_t items =
        batch_size == 1 ? std::max<std::size_t>(base_items_per_run / 4, 8) : base_items_per_run;
    const std::size_t per_producer = items / producers;
    Item expected = 0;
    for (std::size_t index = 0; index < producers; ++index) {
        const std::size_t count =
            index + 1 == producers ? items - index * per_producer : per_producer;
        for (std::size_t at = 0; at < count; ++at) {
            expected += encode(static_cast<Item>(index * per_producer + at + 1), index);
        }
    }

    double seconds = 0.0;
    double batches = 0.0;
    double switches = 0.0;
    double producer_ns = 0.0;
    double submit_rate = 0.0;
    double load = 0.0;
    for (auto _ : state) {
        load += load_average();
        BatchCounts counts;
        ProducerTimes times(producers);
        microbatch::Batcher<Item> batcher(
            microbatch::Options{}.max_batch_size(batch_size).workers(workers).lanes(lanes),
            [&counts](microbatch::Batch<Item>& batch) {
                Item sum = 0;
                for (const Item item : batch) {
                    sum += item;
                }
                counts.record(batch, sum);
            });
        const double elapsed = timed_run(
            producers,
            [&](std::size_t index) {
                const std::size_t first = index * per_producer;
                const std::size_t last = index + 1 == producers ? items : first + per_producer;
                const auto start = Clock::now();
                for (std::size_t value = first + 1; value <= last; ++value) {
                    batcher.post(encode(static_cast<Item>(value), index));
                }
                times.seconds[index] = std::chrono::duration<double>(Clock::now() - start).count();
                times.items[index] = last - first;
            },
            [&] { batcher.close(); });
        state.SetIterationTime(elapsed);
        if (counts.sum.value() != expected) {
            state.SkipWithError("checksum mismatch: items lost or duplicated");
            return;
        }
        seconds += elapsed;
        batches += static_cast<double>(counts.batches.value());
        switches += static_cast<double>(counts.switches.value());
        producer_ns += times.ns_per_item();
        submit_rate += times.submit_rate();
    }
    const double iterations = static_cast<double>(state.iterations());
    const double total_items = iterations * static_cast<double>(items);
    state.SetItemsProcessed(static_cast<std::int64_t>(total_items));
    state.counters["mean_batch"] = batches > 0 ? total_items / batches : 0.0;
    // Adjacent pairs within batches: items - batches.
    state.counters["switch_fraction"] =
        total_items > batches ? switches / (total_items - batches) : 0.0;
    state.counters["switches_per_us"] = seconds > 0 ? switches / (seconds * 1e6) : 0.0;
    state.counters["producer_ns"] = iterations > 0 ? producer_ns / iterations : 0.0;
    state.counters["submit_rate"] = iterations > 0 ? submit_rate / iterations : 0.0;
    state.counters["load_1m"] = iterations > 0 ? load / iterations : 0.0;
}

/// The lane counts to compare for P producers: 1, 2, P and the hardware threads, without
/// repeats.
std::vector<std::int64_t> lane_counts(std::size_t producers) {
    std::vector<std::int64_t> counts;
    for (const std::size_t lanes :
         {std::size_t{1}, std::size_t{2}, producers, hardware_threads()}) {
        const auto value = static_cast<std::int64_t>(lanes);
        if (lanes <= microbatch::Options::max_supported_lanes &&
            std::find(counts.begin(), counts.end(), value) == counts.end()) {
            counts.push_back(value);
        }
    }
    return counts;
}

void throughput_shapes(benchmark::internal::Benchmark* benchmark) {
    benchmark->ArgNames({"B", "P", "W", "lanes"});
    for (const std::int64_t batch_size : {1, 16, 256}) {
        for (const std::int64_t producers : {1, 2, 4}) {
            for (const std::int64_t workers : {1, 2}) {
                for (const std::int64_t lanes : lane_counts(static_cast<std::size_t>(producers))) {
                    benchmark->Args({batch_size, producers, workers, lanes});
                }
            }
        }
    }
    benchmark->UseManualTime()->Unit(benchmark::kMillisecond);
}

// ---- 2. Latency at low and moderate rates -------------------------------------------------------

constexpr std::size_t latency_producers = 2;
constexpr std::size_t latency_batch_size = 64;
constexpr std::int64_t alpha_ns = 20'000;
constexpr std::int64_t beta_ns = 200;

void busy_wait(std::size_t n) {
    const auto until =
        Clock::now() + std::chrono::nanoseconds(alpha_ns + beta_ns * static_cast<std::int64_t>(n));
    while (Clock::now() < until) {
    }
}

/// One latency run's bookkeeping, indexed by item id.
struct LatencyRun {
    explicit LatencyRun(std::size_t n) : submitted(n), latency(n) {}
    std::vector<Clock::time_point> submitted;  // written by the producer before submit
    std::vector<std::int64_t> latency;         // written by the item's callback
    std::atomic<std::size_t> done{0};
    std::atomic<std::int64_t> last_done_ns{0};  // since the epoch of Clock
};

/// Poisson arrival offsets (ns from the start) of @p count items at @p rate items/s.
std::vector<std::int64_t> arrivals(std::size_t count, double rate, std::uint64_t seed) {
    std::mt19937_64 random(seed);
    std::exponential_distribution<double> gap(rate);
    std::vector<std::int64_t> out(count);
    double at = 0.0;
    for (auto& offset : out) {
        at += gap(random);
        offset = static_cast<std::int64_t>(at * 1e9);
    }
    return out;
}

void BM_Latency(benchmark::State& state) {
    const auto lanes = static_cast<std::size_t>(state.range(0));
    const auto rate = static_cast<double>(state.range(1));
    const std::size_t items = std::max<std::size_t>(static_cast<std::size_t>(rate * 0.5), 2000);
    const std::size_t per_producer = items / latency_producers;
    std::vector<std::vector<std::int64_t>> schedule;
    for (std::size_t index = 0; index < latency_producers; ++index) {
        schedule.push_back(arrivals(per_producer, rate / latency_producers, 1000 + index));
    }
    const std::size_t total = per_producer * latency_producers;

    for (auto _ : state) {
        const double load = load_average();
        LatencyRun run(total);
        BatchCounts counts;
        ProducerTimes times(latency_producers);
        microbatch::Batcher<Item> batcher(
            microbatch::Options{}.max_batch_size(latency_batch_size).lanes(lanes),
            [&counts](microbatch::Batch<Item>& batch) {
                busy_wait(batch.size());
                counts.record(batch, 0);
            });
        LatencyRun* const target = &run;
        Clock::time_point first_submit{};
        const double elapsed = timed_run(
            latency_producers,
            [&](std::size_t index) {
                const auto start = Clock::now();
                if (index == 0) {
                    first_submit = start;
                }
                const std::vector<std::int64_t>& due = schedule[index];
                for (std::size_t at = 0; at < due.size(); ++at) {
                    const auto when = start + std::chrono::nanoseconds(due[at]);
                    const auto now = Clock::now();
                    if (when > now) {
                        std::this_thread::sleep_for(when - now);
                    }
                    const std::size_t id = index * per_producer + at;
                    run.submitted[id] = Clock::now();
                    batcher.submit(
                        encode(static_cast<Item>(id), index),
                        [target, id](microbatch::Outcome<void>&&) {
                            const auto now_done = Clock::now();
                            target->latency[id] = (now_done - target->submitted[id]).count();
                            // relaxed: a statistic, read after close() joined.
                            target->last_done_ns.store(now_done.time_since_epoch().count(),
                                                       std::memory_order_relaxed);
                            target->done.fetch_add(1, std::memory_order_relaxed);
                        });
                }
                times.seconds[index] = std::chrono::duration<double>(Clock::now() - start).count();
                times.items[index] = due.size();
            },
            [&] { batcher.close(); });
        state.SetIterationTime(elapsed);
        if (run.done.load() != total) {
            state.SkipWithError("not every item completed");
            return;
        }
        std::vector<std::int64_t> sorted = run.latency;
        std::sort(sorted.begin(), sorted.end());
        const double span =
            static_cast<double>(run.last_done_ns.load() - first_submit.time_since_epoch().count()) /
            1e9;
        const double batches = static_cast<double>(counts.batches.value());
        const double switches = static_cast<double>(counts.switches.value());
        const double n = static_cast<double>(total);
        state.counters["p50_us"] = static_cast<double>(sorted[sorted.size() / 2]) / 1e3;
        state.counters["p99_us"] = static_cast<double>(sorted[sorted.size() * 99 / 100]) / 1e3;
        state.counters["mean_batch"] = batches > 0 ? n / batches : 0.0;
        state.counters["per_s"] = span > 0 ? n / span : 0.0;
        state.counters["offered_per_s"] = rate;
        state.counters["switch_fraction"] = n > batches ? switches / (n - batches) : 0.0;
        state.counters["switches_per_us"] = elapsed > 0 ? switches / (elapsed * 1e6) : 0.0;
        state.counters["producer_ns"] = times.ns_per_item();
        state.counters["submit_rate"] = times.submit_rate();
        state.counters["load_1m"] = load;
    }
}

void latency_shapes(benchmark::internal::Benchmark* benchmark) {
    benchmark->ArgNames({"lanes", "rate"});
    for (const std::int64_t lanes : lane_counts(latency_producers)) {
        for (const std::int64_t rate : {1'000, 10'000, 100'000, 1'000'000}) {
            benchmark->Args({lanes, rate});
        }
    }
    benchmark->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);
}

static_assert(latency_producers <= max_producers, "producer index must fit producer_bits");

// ---- 3. The price of one shared claim counter ---------------------------------------------------

/// One counter per cache line (128 bytes: adjacent-line prefetch pairs lines on x86).
struct alignas(128) PaddedCounter {
    std::atomic<std::uint64_t> value{0};
};

/// P threads each make --items claims with fetch_add (seq_cst, as a lane's claim counter) on
/// one shared counter (shared = 1) or on a counter of their own (shared = 0): the hardware cost
/// lanes can save per item, and what a producer timing a sample of its claims would see.
void BM_ClaimCost(benchmark::State& state) {
    const auto producers = static_cast<std::size_t>(state.range(0));
    const bool shared = state.range(1) != 0;
    const std::size_t claims = base_items_per_run * 8;
    double ns = 0.0;
    double load = 0.0;
    for (auto _ : state) {
        load += load_average();
        std::vector<PaddedCounter> counters(producers);
        ProducerTimes times(producers);
        const double elapsed = timed_run(
            producers,
            [&](std::size_t index) {
                std::atomic<std::uint64_t>& counter = counters[shared ? 0 : index].value;
                const auto start = Clock::now();
                for (std::size_t at = 0; at < claims; ++at) {
                    counter.fetch_add(1);
                }
                times.seconds[index] = std::chrono::duration<double>(Clock::now() - start).count();
                times.items[index] = claims;
            },
            [] {});
        state.SetIterationTime(elapsed);
        ns += times.ns_per_item();
    }
    const double iterations = static_cast<double>(state.iterations());
    state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(claims * producers));
    state.counters["ns_per_claim"] = iterations > 0 ? ns / iterations : 0.0;
    state.counters["load_1m"] = iterations > 0 ? load / iterations : 0.0;
}

BENCHMARK(BM_Throughput)->Apply(throughput_shapes);
BENCHMARK(BM_Latency)->Apply(latency_shapes);
BENCHMARK(BM_ClaimCost)
    ->ArgNames({"P", "shared"})
    ->ArgsProduct({{1, 2, 4}, {0, 1}})
    ->UseManualTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
    // Defaults first, the caller's flags after them: Google Benchmark keeps the last value.
    std::vector<char*> arguments;
    arguments.push_back(argv[0]);
    static char min_time[] = "--benchmark_min_time=0.1";
    static char repetitions[] = "--benchmark_repetitions=7";
    static char interleave[] = "--benchmark_enable_random_interleaving=true";
    static char aggregates[] = "--benchmark_display_aggregates_only=true";
    for (char* flag : {min_time, repetitions, interleave, aggregates}) {
        arguments.push_back(flag);
    }
    for (int i = 1; i < argc; ++i) {
        constexpr const char* items_flag = "--items=";
        if (std::strncmp(argv[i], items_flag, std::strlen(items_flag)) == 0) {
            const long long value = std::atoll(argv[i] + std::strlen(items_flag));
            if (value < 64) {
                std::fprintf(stderr, "bench_lanes: --items must be >= 64\n");
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
    benchmark::AddCustomContext("items_per_run", std::to_string(base_items_per_run));
    benchmark::AddCustomContext("hardware_concurrency", std::to_string(hardware_threads()));
    benchmark::AddCustomContext("max_delay", "1 ms (the default)");
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
