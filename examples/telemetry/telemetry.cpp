// telemetry: per-window statistics of sensor readings produced by several threads.
//
// Producer threads post readings (a temperature and the latency the sensor reported) into a
// microbatch::Batcher. Each batch is summarised on a worker (count, mean and variance, min, max,
// latency histogram) and merged into a lock-free microbatch::Aggregator with merge_into. A
// reporting thread calls take() once per window: it returns everything merged since the last
// take() and resets the aggregate, and every batch lands in exactly one window.
//
// The readings are a pure function of (producer, index), so at the end the program recomputes
// the statistics of all readings sequentially and compares them with the windows combined. It
// exits with status 1 on any mismatch.
//
//   telemetry                      # 4 producers x 50,000 readings at 10,000/s, 1 s windows
//   telemetry --window-ms 250      # shorter windows
//   telemetry --test               # short bounded run for CTest
#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <microbatch/microbatch.hpp>

namespace {

constexpr const char* program_name = "telemetry";

// ---- Command line -----------------------------------------------------------------------------

constexpr const char* usage_text =
    "usage: telemetry [options]\n"
    "\n"
    "Sensor readings from several producer threads, summarised per batch and merged into a\n"
    "lock-free microbatch::Aggregator; one line per window (read-and-reset with take()), then a\n"
    "final summary checked against a sequential recomputation (exit status 1 on mismatch).\n"
    "\n"
    "options:\n"
    "  --producers N     producer threads (default 4)\n"
    "  --readings N      readings per producer (default 50000)\n"
    "  --rate N          readings per second per producer, 0 = unthrottled (default 10000)\n"
    "  --window-ms N     reporting window in milliseconds (default 1000)\n"
    "  --batch-size N    max_batch_size of the batcher (default 256)\n"
    "  --delay-us N      max_delay of the batcher in microseconds (default 2000)\n"
    "  --workers N       batcher worker threads (default 2)\n"
    "  --test            short bounded run for CTest (100 ms windows, 4 x 20000 readings)\n"
    "  --help            show this help\n";

struct Config {
    std::size_t producers = 4;
    std::size_t readings = 50000;
    std::size_t rate = 10000;
    std::size_t window_ms = 1000;
    std::size_t batch_size = 256;
    std::size_t delay_us = 2000;
    std::size_t workers = 2;
};

[[noreturn]] void usage_error(const std::string& message) {
    std::fprintf(stderr, "%s: %s (see --help)\n", program_name, message.c_str());
    std::exit(2);
}

std::size_t parse_count(const std::string& flag, const std::string& text, std::size_t min,
                        std::size_t max) {
    const bool digits = !text.empty() && std::all_of(text.begin(), text.end(),
                                                     [](char c) { return c >= '0' && c <= '9'; });
    errno = 0;
    const unsigned long long value = digits ? std::strtoull(text.c_str(), nullptr, 10) : 0;
    if (!digits || errno == ERANGE || value < min || value > max) {
        usage_error(flag + " expects an integer in [" + std::to_string(min) + ", " +
                    std::to_string(max) + "], got '" + text + "'");
    }
    return static_cast<std::size_t>(value);
}

Config parse_command_line(int argc, char** argv) {
    Config config;
    bool test = false;
    std::vector<std::string> args(argv + 1, argv + argc);
    for (std::size_t i = 0; i < args.size(); ++i) {
        std::string flag = args[i];
        std::string value;
        bool has_value = false;
        if (const auto equals = flag.find('='); flag.rfind("--", 0) == 0 && equals != flag.npos) {
            value = flag.substr(equals + 1);
            flag.resize(equals);
            has_value = true;
        }
        const auto take_value = [&]() -> const std::string& {
            if (!has_value) {
                if (i + 1 >= args.size()) {
                    usage_error(flag + " needs a value");
                }
                value = args[++i];
                has_value = true;
            }
            return value;
        };
        const auto no_value = [&] {
            if (has_value) {
                usage_error(flag + " takes no value");
            }
        };
        if (flag == "--help" || flag == "-h") {
            no_value();
            std::fputs(usage_text, stdout);
            std::exit(0);
        } else if (flag == "--test") {
            no_value();
            test = true;
        } else if (flag == "--producers") {
            config.producers = parse_count(flag, take_value(), 1, 64);
        } else if (flag == "--readings") {
            config.readings = parse_count(flag, take_value(), 1, 100000000);
        } else if (flag == "--rate") {
            config.rate = parse_count(flag, take_value(), 0, 100000000);
        } else if (flag == "--window-ms") {
            config.window_ms = parse_count(flag, take_value(), 10, 3600000);
        } else if (flag == "--batch-size") {
            config.batch_size = parse_count(flag, take_value(), 1, 65536);
        } else if (flag == "--delay-us") {
            config.delay_us = parse_count(flag, take_value(), 0, 10000000);
        } else if (flag == "--workers") {
            config.workers = parse_count(flag, take_value(), 1, 64);
        } else {
            usage_error("unknown argument '" + args[i] + "'");
        }
    }
    if (test) {
        config.readings = 20000;
        config.rate = 40000;
        config.window_ms = 100;
    }
    return config;
}

// ---- Readings ---------------------------------------------------------------------------------

struct Reading {
    double celsius = 0;            // temperature
    std::uint32_t latency_us = 0;  // how long the sensor took to report it
};

// splitmix64: a fast, well-mixed hash, so readings are a pure function of (producer, index).
std::uint64_t mix(std::uint64_t x) {
    x += 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    return x ^ (x >> 31);
}

Reading make_reading(std::size_t producer, std::size_t index) {
    const std::uint64_t h = mix((static_cast<std::uint64_t>(producer) << 40) ^ index);
    Reading reading;
    // 15.000 .. 29.999 C in steps of a millidegree, plus a per-producer offset of 0.5 C.
    reading.celsius =
        static_cast<double>(15000 + h % 15000) / 1000.0 + 0.5 * static_cast<double>(producer % 4);
    // Latency: usually 80-239 us, 5% of readings 0.5-4.5 ms, 0.5% 10-40 ms (a slow sensor).
    const auto spread = static_cast<std::uint32_t>(h >> 32);
    const std::uint64_t tail = (h >> 20) % 1000;
    if (tail < 5) {
        reading.latency_us = 10000 + spread % 30000;
    } else if (tail < 55) {
        reading.latency_us = 500 + spread % 4000;
    } else {
        reading.latency_us = 80 + spread % 160;
    }
    return reading;
}

// ---- The aggregate ----------------------------------------------------------------------------

// Latency histogram: bucket 0 holds [0, 2) us, bucket k >= 1 holds [2^k, 2^(k+1)) us, the last
// bucket everything from 2^15 us up.
constexpr std::size_t latency_buckets = 16;

std::size_t latency_bucket(std::uint32_t latency_us) {
    std::size_t bucket = 0;
    while (bucket + 1 < latency_buckets && (latency_us >> (bucket + 1)) != 0) {
        ++bucket;
    }
    return bucket;
}

std::uint64_t bucket_lower_bound(std::size_t bucket) {
    return bucket == 0 ? 0 : 1ULL << bucket;
}

// What one window (or one batch, or everything) looks like. Combining is associative and
// commutative, as the Aggregator requires: count/mean/variance through RunningStats (Chan's
// parallel update), min, max and the histogram exactly.
struct Summary {
    microbatch::ops::RunningStats celsius;
    double min = std::numeric_limits<double>::infinity();
    double max = -std::numeric_limits<double>::infinity();
    std::array<std::uint64_t, latency_buckets> latency{};

    void add(const Reading& reading) {
        celsius.add(reading.celsius);
        min = std::min(min, reading.celsius);
        max = std::max(max, reading.celsius);
        ++latency[latency_bucket(reading.latency_us)];
    }

    void combine(const Summary& other) {
        celsius.combine(other.celsius);
        min = std::min(min, other.min);
        max = std::max(max, other.max);
        for (std::size_t i = 0; i < latency_buckets; ++i) {
            latency[i] += other.latency[i];
        }
    }

    std::uint64_t count() const { return celsius.count(); }

    // Upper bound of the bucket holding the q-quantile of the latencies (q in (0, 1]).
    std::uint64_t latency_quantile_bound(double q) const {
        const auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count())));
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < latency_buckets; ++i) {
            seen += latency[i];
            if (seen >= rank && seen > 0) {
                return bucket_lower_bound(i + 1);
            }
        }
        return bucket_lower_bound(latency_buckets);
    }
};

// The aggregation operation: value_type, identity() and combine() are all an Aggregator needs.
// Summary is too big for a lock-free std::atomic, so the aggregator keeps it in node shards.
struct SummaryOp {
    using value_type = Summary;
    Summary identity() const { return Summary{}; }
    void combine(Summary& into, const Summary& from) const { into.combine(from); }
};

void print_window(std::size_t number, double start_s, double end_s, const Summary& window) {
    if (window.count() == 0) {
        std::printf("window %3zu  %6.2f-%6.2f s  readings %8d\n", number, start_s, end_s, 0);
        return;
    }
    std::printf(
        "window %3zu  %6.2f-%6.2f s  readings %8llu  min %6.3f  max %6.3f  mean %7.4f C  "
        "latency p50 < %llu us  p99 < %llu us\n",
        number, start_s, end_s, static_cast<unsigned long long>(window.count()), window.min,
        window.max, window.celsius.mean(),
        static_cast<unsigned long long>(window.latency_quantile_bound(0.50)),
        static_cast<unsigned long long>(window.latency_quantile_bound(0.99)));
    std::fflush(stdout);
}

bool close_enough(double a, double b) {
    return std::fabs(a - b) <= 1e-9 * std::max({1.0, std::fabs(a), std::fabs(b)});
}

}  // namespace

int main(int argc, char** argv) {
    const Config config = parse_command_line(argc, argv);
    using Clock = std::chrono::steady_clock;

    std::printf(
        "telemetry: %zu producers x %zu readings (%s), batches of <= %zu, %zu workers, "
        "%zu ms windows\n",
        config.producers, config.readings,
        config.rate == 0 ? "unthrottled" : (std::to_string(config.rate) + "/s each").c_str(),
        config.batch_size, config.workers, config.window_ms);

    // The window aggregate. Each batch contributes one Summary, merged without a lock.
    microbatch::Aggregator<SummaryOp> window;
    microbatch::Batcher<Reading> batcher(
        microbatch::Options{}
            .max_batch_size(config.batch_size)
            .max_delay(std::chrono::microseconds(config.delay_us))
            .workers(config.workers),
        microbatch::merge_into(window, [](microbatch::Batch<Reading>& batch) {
            Summary summary;
            for (const Reading& reading : batch) {
                summary.add(reading);
            }
            return summary;
        }));

    std::mutex done_mutex;
    std::condition_variable done_condition;
    std::size_t producers_left = config.producers;

    const Clock::time_point start = Clock::now();
    std::vector<std::thread> producers;
    for (std::size_t p = 0; p < config.producers; ++p) {
        producers.emplace_back([&, p] {
            for (std::size_t i = 0; i < config.readings; ++i) {
                if (config.rate != 0 && i % 100 == 0) {
                    // Pace the sensor: reading i is due at start + i / rate.
                    std::this_thread::sleep_until(
                        start + std::chrono::microseconds(i * 1000000 / config.rate));
                }
                batcher.post(make_reading(p, i));  // blocks briefly if the batcher is full
            }
            std::lock_guard<std::mutex> lock(done_mutex);
            if (--producers_left == 0) {
                done_condition.notify_all();
            }
        });
    }

    // Report once per window until every producer is done.
    const auto seconds_since_start = [&](Clock::time_point t) {
        return std::chrono::duration<double>(t - start).count();
    };
    const auto window_length = std::chrono::milliseconds(config.window_ms);
    Summary all_windows;
    std::size_t windows = 0;
    Clock::time_point window_start = start;
    {
        std::unique_lock<std::mutex> lock(done_mutex);
        for (;;) {
            const Clock::time_point window_end = window_start + window_length;
            if (done_condition.wait_until(lock, window_end, [&] { return producers_left == 0; })) {
                break;
            }
            lock.unlock();
            Summary taken = window.take();  // read-and-reset: this window's batches only
            print_window(++windows, seconds_since_start(window_start),
                         seconds_since_start(window_end), taken);
            all_windows.combine(taken);
            window_start = window_end;
            lock.lock();
        }
    }
    for (std::thread& producer : producers) {
        producer.join();
    }
    batcher.close();  // processes everything still queued; afterwards the aggregate is exact
    Summary last = window.take();
    const Clock::time_point end = Clock::now();
    print_window(++windows, seconds_since_start(window_start), seconds_since_start(end), last);
    all_windows.combine(last);

    // The same statistics, computed sequentially from the same readings.
    Summary expected;
    for (std::size_t p = 0; p < config.producers; ++p) {
        for (std::size_t i = 0; i < config.readings; ++i) {
            expected.add(make_reading(p, i));
        }
    }

    const microbatch::Stats stats = batcher.stats();
    std::printf(
        "total   %llu readings in %zu windows, %.2f s: min %.3f  max %.3f  mean %.4f  "
        "stddev %.4f C\n",
        static_cast<unsigned long long>(all_windows.count()), windows, seconds_since_start(end),
        all_windows.min, all_windows.max, all_windows.celsius.mean(),
        std::sqrt(all_windows.celsius.variance()));
    std::printf("        %llu batches, mean batch size %.1f, largest %llu\n",
                static_cast<unsigned long long>(stats.batches_completed), stats.batch_size_mean(),
                static_cast<unsigned long long>(stats.batch_size_max));
    std::printf("latency histogram (all readings):\n");
    const std::uint64_t peak =
        *std::max_element(all_windows.latency.begin(), all_windows.latency.end());
    for (std::size_t i = 0; i < latency_buckets; ++i) {
        if (all_windows.latency[i] == 0) {
            continue;
        }
        const std::string upper = i + 1 < latency_buckets
                                      ? std::to_string(bucket_lower_bound(i + 1))
                                      : std::string("inf");
        const auto bar = static_cast<std::size_t>(40 * all_windows.latency[i] / peak);
        std::printf("  [%5llu, %5s) us %9llu %s\n",
                    static_cast<unsigned long long>(bucket_lower_bound(i)), upper.c_str(),
                    static_cast<unsigned long long>(all_windows.latency[i]),
                    std::string(bar, '#').c_str());
    }

    // Compare. Count, min, max and histogram are exact; mean and variance are floating-point
    // sums combined in a different order, so they agree to rounding.
    std::vector<std::string> mismatches;
    const std::uint64_t submitted = static_cast<std::uint64_t>(config.producers) * config.readings;
    if (all_windows.count() != submitted || expected.count() != submitted) {
        mismatches.push_back("count " + std::to_string(all_windows.count()) + ", expected " +
                             std::to_string(submitted));
    }
    if (all_windows.min != expected.min || all_windows.max != expected.max) {
        mismatches.push_back("min/max differ");
    }
    if (all_windows.latency != expected.latency) {
        mismatches.push_back("latency histogram differs");
    }
    if (!close_enough(all_windows.celsius.mean(), expected.celsius.mean()) ||
        !close_enough(all_windows.celsius.variance(), expected.celsius.variance())) {
        mismatches.push_back("mean/variance differ beyond rounding");
    }
    if (stats.items_processed != submitted || stats.items_failed != 0 || window.failures() != 0) {
        mismatches.push_back("batcher processed " + std::to_string(stats.items_processed) +
                             " items, " + std::to_string(stats.items_failed) + " failed");
    }
    if (!mismatches.empty()) {
        for (const std::string& mismatch : mismatches) {
            std::fprintf(stderr, "%s: MISMATCH: %s\n", program_name, mismatch.c_str());
        }
        return 1;
    }
    std::printf("check: windows combined == sequential recomputation of %llu readings: OK\n",
                static_cast<unsigned long long>(submitted));
    return 0;
}
