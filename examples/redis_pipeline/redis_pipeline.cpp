// redis_pipeline: batched SET commands to a real redis-server, one pipeline per microbatch.
//
// Each round trip to Redis costs a network exchange and two context switches, even over
// loopback: that is the fixed per-call cost alpha. Producer threads post keys into a
// microbatch::Batcher; its batch function appends one SET per key to a hiredis pipeline and then
// reads all the replies, so a batch of B keys costs one round trip instead of B. B = 1 is the
// classic one-round-trip-per-key client, run by the same code.
//
// Values of skewed sizes (the second part): most values are small, a few are large. A count
// bound (max_batch_size) then makes pipelines whose size in bytes varies wildly: most are small,
// and now and then one holds several large values, megabytes that Redis reads and executes in
// one go while every other client waits. A byte bound (max_batch_cost with
// cost_by(value size), README "Weighted batches") seals a pipeline before a value that would
// take it above the target and as soon as it reaches it, so pipelines stay at or below the
// target; a value larger than the target goes alone. max_pending_cost also bounds the bytes
// posted and not yet written (the memory the values hold while they wait).
//
// Measured with --spawn-redis (defaults: 100000 values per run, 998 of them of 64 KiB - 1 MiB,
// 393 MB in all; 4 producers, 1 worker, max_delay 1 ms; redis 7.0.15): the median of each row
// over 5 runs on a shared 2-core VM, load average 4.5-5.3 (other builds running):
//
//                               count 64   bytes 256K  +pending 4M
//   values/s                      189000       234000       257000
//   MB/s                             742          919         1012
//   round trips                     1563         1359         1350
//   KiB per pipeline: mean           246          283          285
//                     p99           1496          974          974
//     max of several values         2440          256          256
//   ms per pipeline: p99            1.91         1.18         0.81
//   KiB pending, max sampled        9305         4032         4005
//   latency post-reply p50 ms       5.05         1.44         1.46
//                      p99 ms       11.0          6.3          3.1
//
// At about the same mean pipeline size and number of round trips, the count bound's pipelines
// reach 2.4 MiB; the byte bound's never exceed 256 KiB unless they hold one value larger than
// that (497 of the 100000 values, each alone). Per run, the byte bound wrote 1.05-1.38x the
// count bound's MB/s (1.21-1.36x with the pending bound) with a p99 latency 1.6-2.4x lower
// (2.0-4.8x with the pending bound); on a busier machine (load 5-6) single runs ranged from
// 0.7x to 2.6x in MB/s. Sizes and round trips barely move between runs; times do.
//
// After each run every key is read back (MGET) and compared with the value written; with
// --spawn-redis the key count (DBSIZE) is checked too. The skewed runs also check that every
// value was SET exactly once and that no pipeline exceeded the byte bound unless it held one
// oversized value alone (against the batcher's Stats). Exit status 1 on any difference.
//
//   redis_pipeline --spawn-redis               # starts its own redis-server on a free port
//   redis_pipeline --port 6379                 # uses a running server (its keys are deleted)
//   redis_pipeline --spawn-redis --mode skewed # only the count bound vs byte bound runs
//   redis_pipeline --test --spawn-redis        # short bounded run for CTest (exit 77 = skipped
//                                              # because redis-server is not installed)
#include <hiredis/hiredis.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <microbatch/microbatch.hpp>

#include "redis_support.hpp"  // examples/common: the hiredis connection, a private server

namespace {

constexpr const char* program_name = "redis_pipeline";
constexpr int exit_skipped = 77;  // CTest SKIP_RETURN_CODE

// The skewed value sizes: a share of large values, log-uniform in each range.
constexpr std::size_t small_value_min = 100;
constexpr std::size_t small_value_max = 1024;
constexpr std::size_t large_value_min = 64 * 1024;
constexpr std::size_t large_value_max = 1024 * 1024;
constexpr double large_value_share = 0.01;
// max_batch_size of the byte-bound runs: large enough never to bind before the byte bound
// (1024 values of the smallest size, 100 B, are 100 KiB).
constexpr std::size_t byte_run_batch_size = 1024;

// ---- Command line -----------------------------------------------------------------------------

constexpr const char* usage_text =
    "usage: redis_pipeline [options]\n"
    "\n"
    "Producer threads SET keys in Redis through a microbatch::Batcher: one hiredis pipeline\n"
    "(one round trip) per microbatch. Uniform part: runs once per batch size (B=1 is one round\n"
    "trip per key), prints keys/s side by side. Skewed part: values of 100 B - 1 KiB and a few\n"
    "of 64 KiB - 1 MiB, batched by a count bound and by a byte bound (max_batch_cost), side by\n"
    "side. Every key is read back and compared.\n"
    "\n"
    "options:\n"
    "  --host HOST           Redis host (default 127.0.0.1)\n"
    "  --port N              Redis port (default 6379)\n"
    "  --spawn-redis         start a private redis-server on a free loopback port\n"
    "                        (--save '' --appendonly no, in a temporary directory) and stop\n"
    "                        it at the end; exit status 77 if redis-server is not installed\n"
    "  --redis-server PATH   the redis-server binary for --spawn-redis (default: from PATH)\n"
    "  --mode MODE           uniform, skewed or both (default both)\n"
    "  --max-seconds N       stop submitting after N seconds per run (default 8)\n"
    "  --producers N         producer threads (default 4)\n"
    "  --delay-us N          max_delay in microseconds (default 1000)\n"
    "  --workers N           batcher workers, one connection each (default 1)\n"
    "  --test                short bounded run for CTest (10000 uniform keys and 3000 skewed\n"
    "                        values per run, 4 s per run)\n"
    "  --help                show this help\n"
    "uniform part:\n"
    "  --keys N              keys per run (default 100000)\n"
    "  --batch-sizes LIST    comma-separated max_batch_size values (default 1,16,256)\n"
    "skewed part:\n"
    "  --skewed-keys N       values per run (default 100000)\n"
    "  --seed N              seed of the value sizes (default 12)\n"
    "  --count-bound N       max_batch_size of the count-bound run (default 64)\n"
    "  --batch-bytes N       max_batch_cost of the byte-bound runs, in value bytes\n"
    "                        (default 262144); their max_batch_size is 1024\n"
    "  --pending-bytes N     max_pending_cost of the third run (default 4194304; at least\n"
    "                        1048576, the largest value; 0 leaves that run out)\n";

struct Config {
    std::string host = "127.0.0.1";
    int port = 6379;
    bool spawn = false;
    std::string redis_server = "redis-server";
    bool uniform = true;
    bool skewed = true;
    std::size_t max_seconds = 8;
    std::size_t producers = 4;
    std::size_t delay_us = 1000;
    std::size_t workers = 1;
    // Uniform part.
    std::size_t keys = 100000;
    std::vector<std::size_t> batch_sizes{1, 16, 256};
    // Skewed part.
    std::size_t skewed_keys = 100000;
    std::uint64_t seed = 12;
    std::size_t count_bound = 64;
    std::size_t batch_bytes = 256 * 1024;
    std::size_t pending_bytes = 4 * 1024 * 1024;
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

std::vector<std::size_t> parse_list(const std::string& flag, const std::string& text) {
    std::vector<std::size_t> values;
    std::size_t begin = 0;
    for (;;) {
        const std::size_t comma = text.find(',', begin);
        values.push_back(parse_count(flag, text.substr(begin, comma - begin), 1, 65536));
        if (comma == std::string::npos) {
            break;
        }
        begin = comma + 1;
    }
    if (values.size() > 8) {
        usage_error(flag + " takes at most 8 batch sizes, got " + std::to_string(values.size()));
    }
    return values;
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
        } else if (flag == "--spawn-redis") {
            no_value();
            config.spawn = true;
        } else if (flag == "--host") {
            config.host = take_value();
            if (config.host.empty()) {
                usage_error("--host needs a non-empty value");
            }
        } else if (flag == "--port") {
            config.port = static_cast<int>(parse_count(flag, take_value(), 1, 65535));
        } else if (flag == "--redis-server") {
            config.redis_server = take_value();
            if (config.redis_server.empty()) {
                usage_error("--redis-server needs a non-empty path");
            }
        } else if (flag == "--mode") {
            const std::string mode = take_value();
            if (mode != "uniform" && mode != "skewed" && mode != "both") {
                usage_error("--mode expects uniform, skewed or both, got '" + mode + "'");
            }
            config.uniform = mode != "skewed";
            config.skewed = mode != "uniform";
        } else if (flag == "--keys") {
            config.keys = parse_count(flag, take_value(), 1, 10000000);
        } else if (flag == "--max-seconds") {
            config.max_seconds = parse_count(flag, take_value(), 1, 3600);
        } else if (flag == "--batch-sizes") {
            config.batch_sizes = parse_list(flag, take_value());
        } else if (flag == "--producers") {
            config.producers = parse_count(flag, take_value(), 1, 64);
        } else if (flag == "--delay-us") {
            config.delay_us = parse_count(flag, take_value(), 0, 10000000);
        } else if (flag == "--workers") {
            config.workers = parse_count(flag, take_value(), 1, 64);
        } else if (flag == "--skewed-keys") {
            config.skewed_keys = parse_count(flag, take_value(), 1, 1000000);
        } else if (flag == "--seed") {
            config.seed = parse_count(flag, take_value(), 0, 1000000000);
        } else if (flag == "--count-bound") {
            config.count_bound = parse_count(flag, take_value(), 1, 65536);
        } else if (flag == "--batch-bytes") {
            config.batch_bytes = parse_count(flag, take_value(), 1, std::size_t{1} << 30);
        } else if (flag == "--pending-bytes") {
            // An item heavier than max_pending_cost could never be admitted (CostLimitError).
            config.pending_bytes = parse_count(flag, take_value(), 0, std::size_t{1} << 34);
            if (config.pending_bytes != 0 && config.pending_bytes < large_value_max) {
                usage_error("--pending-bytes must be 0 or at least " +
                            std::to_string(large_value_max) + " (the largest value), got " +
                            std::to_string(config.pending_bytes));
            }
        } else {
            usage_error("unknown argument '" + args[i] + "'");
        }
    }
    if (test) {
        config.keys = 10000;
        config.skewed_keys = 3000;
        config.max_seconds = 4;
    }
    return config;
}

// ---- Connections ------------------------------------------------------------------------------

using redis::Connection;
using redis::Reply;
using Clock = std::chrono::steady_clock;

// Connections for the batcher's workers: a batch borrows one for its pipeline. A connection
// that broke (I/O error) is replaced on the next borrow.
class ConnectionPool {
public:
    ConnectionPool(std::string host, int port) : host_(std::move(host)), port_(port) {}

    std::unique_ptr<Connection> borrow() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            while (!idle_.empty()) {
                std::unique_ptr<Connection> connection = std::move(idle_.back());
                idle_.pop_back();
                if (!connection->broken()) {
                    return connection;
                }
            }
        }
        return std::make_unique<Connection>(host_, port_);
    }

    void give_back(std::unique_ptr<Connection> connection) {
        std::lock_guard<std::mutex> lock(mutex_);
        idle_.push_back(std::move(connection));
    }

private:
    std::string host_;
    int port_;
    std::mutex mutex_;
    std::vector<std::unique_ptr<Connection>> idle_;
};

// Producer threads post ids 0, 1, ... through post(id) until `keys` ids or config.max_seconds;
// returns how many ids were posted (every id taken is posted).
template <class Post>
std::size_t produce(const Config& config, std::size_t keys, Post post) {
    const Clock::time_point stop_at = Clock::now() + std::chrono::seconds(config.max_seconds);
    std::atomic<std::size_t> next_id{0};
    std::vector<std::thread> producers;
    for (std::size_t p = 0; p < config.producers; ++p) {
        producers.emplace_back([&] {
            // Check the clock before taking an id: every id taken is posted.
            while (Clock::now() < stop_at) {
                const std::size_t id = next_id.fetch_add(1, std::memory_order_relaxed);
                if (id >= keys) {
                    return;
                }
                post(id);  // blocks while the batcher is full
            }
        });
    }
    for (std::thread& producer : producers) {
        producer.join();
    }
    return std::min(next_id.load(), keys);
}

// Reads keys back with MGET, a chunk at a time, and calls check(id, reply element) for each.
// A chunk holds at most 1000 keys and (by value_size(id)) about 16 MiB of values.
template <class KeyOf, class ValueSize, class Check>
void read_back(Connection& connection, std::size_t keys, KeyOf key_of, ValueSize value_size,
               Check check) {
    constexpr std::size_t chunk_keys = 1000;
    constexpr std::size_t chunk_bytes = 16 * 1024 * 1024;
    for (std::size_t first = 0; first < keys;) {
        std::vector<std::string> words{"MGET"};
        std::size_t bytes = 0;
        std::size_t last = first;
        while (last < keys && last - first < chunk_keys && bytes < chunk_bytes) {
            words.push_back(key_of(last));
            bytes += value_size(last);
            ++last;
        }
        const Reply reply = connection.command(words);
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != last - first) {
            throw std::runtime_error("unexpected reply to MGET");
        }
        for (std::size_t i = 0; i < reply->elements; ++i) {
            check(first + i, reply->element[i]);
        }
        first = last;
    }
}

// DEL of keys 0 .. keys-1, 1000 per command.
template <class KeyOf>
void delete_keys(Connection& connection, std::size_t keys, KeyOf key_of) {
    constexpr std::size_t chunk = 1000;
    for (std::size_t first = 0; first < keys; first += chunk) {
        std::vector<std::string> words{"DEL"};
        for (std::size_t id = first; id < std::min(keys, first + chunk); ++id) {
            words.push_back(key_of(id));
        }
        connection.command(words);
    }
}

std::string fixed(double value, int decimals) {
    char text[32];
    std::snprintf(text, sizeof text, "%.*f", decimals, value);
    return std::string(text);
}

// Prints one table row: a label, then one cell per result.
template <class Result, class Cell>
void print_row(const std::vector<Result>& results, const std::string& label, Cell cell) {
    std::printf("%-26s", label.c_str());
    for (const Result& result : results) {
        std::printf("%13s", cell(result).c_str());
    }
    std::printf("\n");
}

// ---- Uniform part: small values, one run per count bound -------------------------------------

std::string key_of(std::size_t batch_size, std::size_t id) {
    return "microbatch:example:B" + std::to_string(batch_size) + ":" + std::to_string(id);
}
std::string value_of(std::size_t id) {
    return "value-" + std::to_string(id);
}

struct RunResult {
    std::size_t batch_size = 0;
    std::size_t keys = 0;  // keys submitted
    double seconds = 0;
    std::uint64_t round_trips = 0;
    std::size_t verified = 0;  // keys read back with the right value
    std::vector<std::string> errors;
};

RunResult run(const Config& config, std::size_t batch_size, ConnectionPool& pool) {
    RunResult result;
    result.batch_size = batch_size;
    std::atomic<std::uint64_t> round_trips{0};

    // The batch function: the whole batch goes out as one pipeline, then all replies are read.
    microbatch::Batcher<std::size_t> batcher(
        microbatch::Options{}
            .max_batch_size(batch_size)
            .max_delay(std::chrono::microseconds(config.delay_us))
            .workers(config.workers),
        [&](microbatch::Batch<std::size_t>& batch) {
            std::unique_ptr<Connection> connection = pool.borrow();
            for (const std::size_t id : batch) {
                connection->append({"SET", key_of(batch_size, id), value_of(id)});
            }
            for (std::size_t i = 0; i < batch.size(); ++i) {
                const Reply reply = connection->next_reply();  // the first call sends them all
                if (reply->type != REDIS_REPLY_STATUS || std::strcmp(reply->str, "OK") != 0) {
                    throw std::runtime_error("unexpected reply to SET");
                }
            }
            round_trips.fetch_add(1, std::memory_order_relaxed);  // relaxed: read after close()
            pool.give_back(std::move(connection));
        });

    const Clock::time_point start = Clock::now();
    result.keys = produce(config, config.keys, [&](std::size_t id) { batcher.post(id); });
    batcher.close();  // sends the partial batch still pending and waits for every reply
    result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    result.round_trips = round_trips.load();
    const microbatch::Stats stats = batcher.stats();
    if (stats.items_failed != 0) {
        result.errors.push_back(std::to_string(stats.items_failed) + " SETs failed");
    }
    return result;
}

// Reads every key of a run back and counts the ones holding the right value.
void verify(Connection& connection, RunResult& result) {
    const auto key = [&](std::size_t id) { return key_of(result.batch_size, id); };
    read_back(
        connection, result.keys, key, [](std::size_t id) { return value_of(id).size(); },
        [&](std::size_t id, const redisReply* element) {
            if (element->type == REDIS_REPLY_STRING &&
                std::string(element->str, element->len) == value_of(id)) {
                ++result.verified;
            } else if (result.errors.size() < 3) {
                result.errors.push_back("key " + key(id) + " is missing or wrong");
            }
        });
    if (result.verified != result.keys) {
        result.errors.push_back(std::to_string(result.verified) + " of " +
                                std::to_string(result.keys) + " keys hold their value");
    }
}

// The uniform runs, their table and checks; false if a check failed.
bool run_uniform(const Config& config, ConnectionPool& pool, Connection& control, bool spawned) {
    const long long keys_before = control.command({"DBSIZE"})->integer;
    std::vector<RunResult> results;
    for (const std::size_t batch_size : config.batch_sizes) {
        RunResult result = run(config, batch_size, pool);
        verify(control, result);
        results.push_back(std::move(result));
    }

    bool failed = false;
    std::size_t total_keys = 0;
    for (const RunResult& result : results) {
        total_keys += result.keys;
    }
    std::string dbsize_note;
    if (spawned) {
        // A private server holds nothing but our keys.
        const long long keys_now = control.command({"DBSIZE"})->integer;
        if (keys_now - keys_before != static_cast<long long>(total_keys)) {
            std::fprintf(stderr, "%s: MISMATCH: DBSIZE grew by %lld, %zu keys were submitted\n",
                         program_name, keys_now - keys_before, total_keys);
            failed = true;
        }
        dbsize_note = ", DBSIZE matches";
    } else {
        for (const RunResult& result : results) {
            // Leave a shared server as we found it.
            delete_keys(control, result.keys,
                        [&](std::size_t id) { return key_of(result.batch_size, id); });
        }
    }

    const RunResult& first = results.front();
    const double baseline = static_cast<double>(first.keys) / first.seconds;
    const auto row = [&](const std::string& label, auto cell) { print_row(results, label, cell); };
    std::printf("\nuniform values (value-<id>), one run per max_batch_size:\n");
    row("", [](const RunResult& r) { return "B=" + std::to_string(r.batch_size); });
    row("keys written", [](const RunResult& r) { return std::to_string(r.keys); });
    row("seconds", [&](const RunResult& r) { return fixed(r.seconds, 2); });
    row("keys/s",
        [&](const RunResult& r) { return fixed(static_cast<double>(r.keys) / r.seconds, 0); });
    row("round trips", [](const RunResult& r) { return std::to_string(r.round_trips); });
    row("keys per round trip", [&](const RunResult& r) {
        return fixed(r.round_trips == 0
                         ? 0.0
                         : static_cast<double>(r.keys) / static_cast<double>(r.round_trips),
                     1);
    });
    row("speed-up vs B=" + std::to_string(first.batch_size), [&](const RunResult& r) {
        return fixed(static_cast<double>(r.keys) / r.seconds / baseline, 1) + "x";
    });

    for (const RunResult& result : results) {
        for (const std::string& error : result.errors) {
            std::fprintf(stderr, "%s: B=%zu: MISMATCH: %s\n", program_name, result.batch_size,
                         error.c_str());
            failed = true;
        }
    }
    if (!failed) {
        std::printf("check: all %zu keys read back with MGET hold their values%s: OK\n", total_keys,
                    dbsize_note.c_str());
    }
    return !failed;
}

// ---- Skewed part: values of skewed sizes, a count bound vs a byte bound ----------------------

// The value sizes, fixed by the seed. std::mt19937_64's output is fixed by the standard (the
// <random> distributions are not), so the sizes are drawn from it directly: a share
// large_value_share of the values are log-uniform in [64 KiB, 1 MiB], the rest log-uniform in
// [100 B, 1 KiB].
std::vector<std::size_t> skewed_sizes(std::size_t count, std::uint64_t seed) {
    std::mt19937_64 engine(seed);
    const auto unit = [&engine] { return static_cast<double>(engine() >> 11) * 0x1.0p-53; };
    const auto log_uniform = [&unit](std::size_t low, std::size_t high) {
        const double lo = static_cast<double>(low);
        const double size = lo * std::pow(static_cast<double>(high) / lo, unit());
        return std::min(high, static_cast<std::size_t>(std::llround(size)));
    };
    std::vector<std::size_t> sizes(count);
    for (std::size_t& size : sizes) {
        size = unit() < large_value_share ? log_uniform(large_value_min, large_value_max)
                                          : log_uniform(small_value_min, small_value_max);
    }
    return sizes;
}

// The value of key `id`: "<id>:" then a letter that depends on the id, `size` bytes in all
// (size >= small_value_min, longer than any prefix).
std::string skewed_value(std::size_t id, std::size_t size) {
    const std::string prefix = std::to_string(id) + ":";
    std::string value(size, static_cast<char>('a' + id % 26));
    value.replace(0, prefix.size(), prefix);
    return value;
}

// What producers post: the key's id and its value, held by the batcher until its SET.
struct Entry {
    std::size_t id = 0;
    std::string value;
};

// One skewed run's bounds: (a) count bound only, (b) byte bound, (c) byte + pending bound.
struct SkewedRun {
    std::string name;  // the table's column header
    std::size_t max_batch_size = 0;
    std::size_t max_batch_cost = 0;    // 0: none
    std::size_t max_pending_cost = 0;  // 0: none
};

// What the batch function saw of one pipeline.
struct PipelineRecord {
    std::uint64_t bytes = 0;  // value bytes
    std::size_t values = 0;
    std::int64_t nanoseconds = 0;   // from the first append to the last reply
    std::size_t pending_bytes = 0;  // Batcher::pending_cost() during the batch
};

struct SkewedResult {
    SkewedRun run;
    std::size_t index = 0;  // in the key prefix
    std::size_t keys = 0;   // values submitted
    std::uint64_t bytes = 0;
    double seconds = 0;
    microbatch::Stats stats;
    std::vector<PipelineRecord> pipelines;
    std::vector<std::int64_t> latencies_ns;  // per value, post() to its pipeline's last reply
    std::vector<std::string> errors;
};

std::string skewed_key(std::size_t run_index, std::size_t id) {
    return "microbatch:example:skewed" + std::to_string(run_index) + ":" + std::to_string(id);
}

// "256K" for 262144, "4M" for 4194304, plain bytes otherwise.
std::string short_bytes(std::size_t bytes) {
    if (bytes != 0 && bytes % (1024 * 1024) == 0) {
        return std::to_string(bytes / (1024 * 1024)) + "M";
    }
    if (bytes != 0 && bytes % 1024 == 0) {
        return std::to_string(bytes / 1024) + "K";
    }
    return std::to_string(bytes);
}

SkewedResult run_skewed(const Config& config, const SkewedRun& run, std::size_t index,
                        const std::vector<std::size_t>& sizes, ConnectionPool& pool) {
    SkewedResult result;
    result.run = run;
    result.index = index;
    const std::size_t keys = sizes.size();
    std::vector<std::atomic<std::uint8_t>> writes(keys);  // SETs acknowledged, per id
    // Written by the producer of `id` before post(id), read by the batch: post() orders them.
    std::vector<Clock::time_point> posted(keys);
    std::mutex record_mutex;

    // The cost of an entry is its value's size in bytes: max_batch_cost bounds the bytes of
    // one pipeline, max_pending_cost the bytes posted and not yet written.
    microbatch::Batcher<Entry> batcher(
        microbatch::Options{}
            .max_batch_size(run.max_batch_size)
            .max_batch_cost(run.max_batch_cost)
            .max_pending_cost(run.max_pending_cost)
            .max_delay(std::chrono::microseconds(config.delay_us))
            .workers(config.workers),
        microbatch::cost_by([](const Entry& entry) { return entry.value.size(); }),
        [&](microbatch::Batch<Entry>& batch) {
            const Clock::time_point started = Clock::now();
            std::unique_ptr<Connection> connection = pool.borrow();
            PipelineRecord record;
            for (const Entry& entry : batch) {
                const std::string key = skewed_key(index, entry.id);
                // String views: hiredis copies the value into its output buffer, once.
                connection->append(std::array<std::string_view, 3>{"SET", key, entry.value});
                record.bytes += entry.value.size();
            }
            for (std::size_t i = 0; i < batch.size(); ++i) {
                const Reply reply = connection->next_reply();  // the first call sends them all
                if (reply->type != REDIS_REPLY_STATUS || std::strcmp(reply->str, "OK") != 0) {
                    throw std::runtime_error("unexpected reply to SET");
                }
            }
            const Clock::time_point finished = Clock::now();
            pool.give_back(std::move(connection));
            record.values = batch.size();
            record.nanoseconds = std::chrono::nanoseconds(finished - started).count();
            record.pending_bytes = batcher.pending_cost();  // this batch still counts
            std::lock_guard<std::mutex> lock(record_mutex);
            result.pipelines.push_back(record);
            for (const Entry& entry : batch) {
                writes[entry.id].fetch_add(1, std::memory_order_relaxed);  // read after close()
                result.latencies_ns.push_back(
                    std::chrono::nanoseconds(finished - posted[entry.id]).count());
            }
        });

    const Clock::time_point start = Clock::now();
    result.keys = produce(config, keys, [&](std::size_t id) {
        std::string value = skewed_value(id, sizes[id]);  // made before the clock starts
        posted[id] = Clock::now();
        batcher.post(Entry{id, std::move(value)});  // blocks while the batcher is full
    });
    batcher.close();  // sends the partial batch still pending and waits for every reply
    result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    result.stats = batcher.stats();
    for (std::size_t id = 0; id < result.keys; ++id) {
        result.bytes += sizes[id];
    }

    // Exact checks against what the batch function saw and the batcher's Stats.
    const auto fail = [&](const std::string& message) {
        if (result.errors.size() < 8) {
            result.errors.push_back(message);
        }
    };
    const microbatch::Stats& stats = result.stats;
    if (stats.items_processed != result.keys || stats.items_failed != 0) {
        fail(std::to_string(stats.items_processed) + " values processed, " +
             std::to_string(stats.items_failed) + " failed, of " + std::to_string(result.keys));
    }
    for (std::size_t id = 0; id < keys; ++id) {
        const unsigned expected = id < result.keys ? 1 : 0;
        if (writes[id].load() != expected) {
            fail("key " + skewed_key(index, id) + " was SET " + std::to_string(writes[id].load()) +
                 " times, not " + std::to_string(expected));
        }
    }
    if (stats.item_cost_total != result.bytes) {
        fail("Stats::item_cost_total " + std::to_string(stats.item_cost_total) +
             " != " + std::to_string(result.bytes) + " value bytes posted");
    }
    if (stats.batches_completed != result.pipelines.size()) {
        fail("Stats::batches_completed " + std::to_string(stats.batches_completed) +
             " != " + std::to_string(result.pipelines.size()) + " pipelines");
    }
    std::uint64_t largest = 0;
    std::size_t over_bound = 0;  // pipelines above max_batch_cost
    for (const PipelineRecord& pipeline : result.pipelines) {
        largest = std::max(largest, pipeline.bytes);
        if (pipeline.values > run.max_batch_size) {
            fail("a pipeline of " + std::to_string(pipeline.values) + " values");
        }
        if (run.max_batch_cost != 0 && pipeline.bytes > run.max_batch_cost) {
            ++over_bound;
            if (pipeline.values != 1) {
                fail("a pipeline of " + std::to_string(pipeline.values) + " values and " +
                     std::to_string(pipeline.bytes) + " bytes, above max_batch_cost");
            }
        }
        if (run.max_pending_cost != 0 && pipeline.pending_bytes > run.max_pending_cost) {
            fail("pending_cost() " + std::to_string(pipeline.pending_bytes) +
                 " above max_pending_cost");
        }
    }
    if (stats.batch_item_cost_max != largest) {
        fail("Stats::batch_item_cost_max " + std::to_string(stats.batch_item_cost_max) +
             " != the largest pipeline, " + std::to_string(largest) + " bytes");
    }
    // Every value above the byte bound, and only those, went alone into a pipeline.
    std::size_t oversized = 0;
    for (std::size_t id = 0; id < result.keys; ++id) {
        oversized += run.max_batch_cost != 0 && sizes[id] > run.max_batch_cost ? 1 : 0;
    }
    if (stats.items_oversized != oversized || over_bound != oversized) {
        fail("Stats::items_oversized " + std::to_string(stats.items_oversized) + ", " +
             std::to_string(over_bound) + " pipelines above the byte bound, " +
             std::to_string(oversized) + " values above it");
    }
    return result;
}

// Reads every value of a skewed run back and compares it; on a spawned server checks DBSIZE
// grew by the run's keys; then deletes them (memory stays bounded across runs).
void verify_skewed(Connection& control, SkewedResult& result, const std::vector<std::size_t>& sizes,
                   long long keys_before, bool spawned) {
    const auto key = [&](std::size_t id) { return skewed_key(result.index, id); };
    std::size_t verified = 0;
    read_back(
        control, result.keys, key, [&](std::size_t id) { return sizes[id]; },
        [&](std::size_t id, const redisReply* element) {
            if (element->type == REDIS_REPLY_STRING && element->len == sizes[id] &&
                std::string_view(element->str, element->len) == skewed_value(id, sizes[id])) {
                ++verified;
            } else if (result.errors.size() < 8) {
                result.errors.push_back("key " + key(id) + " is missing or wrong");
            }
        });
    if (verified != result.keys) {
        result.errors.push_back(std::to_string(verified) + " of " + std::to_string(result.keys) +
                                " keys hold their value");
    }
    if (spawned) {
        const long long grown = control.command({"DBSIZE"})->integer - keys_before;
        if (grown != static_cast<long long>(result.keys)) {
            result.errors.push_back("DBSIZE grew by " + std::to_string(grown) + ", " +
                                    std::to_string(result.keys) + " keys were submitted");
        }
    }
    delete_keys(control, result.keys, key);
}

// The p-quantile (0 < p <= 1) of @p values, nearest rank; 0 for none.
template <class T>
T quantile(std::vector<T> values, double p) {
    if (values.empty()) {
        return T{};
    }
    const auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(values.size())));
    const std::size_t at = std::min(values.size() - 1, rank == 0 ? 0 : rank - 1);
    std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(at),
                     values.end());
    return values[at];
}

// The skewed runs, their table and checks; false if a check failed.
bool run_skewed_part(const Config& config, ConnectionPool& pool, Connection& control,
                     bool spawned) {
    std::vector<SkewedRun> runs{
        {"count " + std::to_string(config.count_bound), config.count_bound, 0, 0},
        {"bytes " + short_bytes(config.batch_bytes), byte_run_batch_size, config.batch_bytes, 0}};
    if (config.pending_bytes != 0) {
        runs.push_back({"+pending " + short_bytes(config.pending_bytes), byte_run_batch_size,
                        config.batch_bytes, config.pending_bytes});
    }
    const std::vector<std::size_t> sizes = skewed_sizes(config.skewed_keys, config.seed);
    std::uint64_t total_bytes = 0;
    std::size_t large = 0;
    for (const std::size_t size : sizes) {
        total_bytes += size;
        large += size >= large_value_min ? 1 : 0;
    }

    std::vector<SkewedResult> results;
    for (std::size_t i = 0; i < runs.size(); ++i) {
        const long long keys_before = control.command({"DBSIZE"})->integer;
        SkewedResult result = run_skewed(config, runs[i], i, sizes, pool);
        verify_skewed(control, result, sizes, keys_before, spawned);
        results.push_back(std::move(result));
    }

    std::printf(
        "\nskewed values: %zu per run, seed %llu: %zu of 64 KiB - 1 MiB, the rest 100 B - 1 KiB; "
        "%.1f MB in all\n",
        sizes.size(), static_cast<unsigned long long>(config.seed), large,
        static_cast<double>(total_bytes) / 1e6);
    const auto row = [&](const std::string& label, auto cell) { print_row(results, label, cell); };
    const auto per_second = [](double amount, const SkewedResult& r) {
        return r.seconds > 0 ? amount / r.seconds : 0.0;
    };
    const auto kib = [](double bytes) { return fixed(bytes / 1024.0, 1); };
    const auto ms = [](std::int64_t nanoseconds) {
        return fixed(static_cast<double>(nanoseconds) / 1e6, 2);
    };
    const auto pipeline_bytes = [](const SkewedResult& r) {
        std::vector<std::uint64_t> bytes;
        for (const PipelineRecord& pipeline : r.pipelines) {
            bytes.push_back(pipeline.bytes);
        }
        return bytes;
    };
    const auto pipeline_ns = [](const SkewedResult& r) {
        std::vector<std::int64_t> nanoseconds;
        for (const PipelineRecord& pipeline : r.pipelines) {
            nanoseconds.push_back(pipeline.nanoseconds);
        }
        return nanoseconds;
    };
    const auto above_target = [&](const SkewedResult& r, bool alone) {
        return std::to_string(std::count_if(
            r.pipelines.begin(), r.pipelines.end(), [&](const PipelineRecord& pipeline) {
                return pipeline.bytes > config.batch_bytes && (!alone || pipeline.values == 1);
            }));
    };
    const std::string target = short_bytes(config.batch_bytes);
    row("", [](const SkewedResult& r) { return r.run.name; });
    row("values written", [](const SkewedResult& r) { return std::to_string(r.keys); });
    row("seconds", [&](const SkewedResult& r) { return fixed(r.seconds, 2); });
    row("values/s", [&](const SkewedResult& r) {
        return fixed(per_second(static_cast<double>(r.keys), r), 0);
    });
    row("MB/s", [&](const SkewedResult& r) {
        return fixed(per_second(static_cast<double>(r.bytes) / 1e6, r), 1);
    });
    row("round trips", [](const SkewedResult& r) { return std::to_string(r.pipelines.size()); });
    row("values per round trip", [&](const SkewedResult& r) {
        return fixed(
            r.stats.batches_completed == 0
                ? 0.0
                : static_cast<double>(r.keys) / static_cast<double>(r.stats.batches_completed),
            1);
    });
    row("KiB per pipeline: mean",
        [&](const SkewedResult& r) { return kib(r.stats.batch_item_cost_mean()); });
    row("                  p99", [&](const SkewedResult& r) {
        return kib(static_cast<double>(quantile(pipeline_bytes(r), 0.99)));
    });
    row("                  max", [&](const SkewedResult& r) {
        return kib(static_cast<double>(r.stats.batch_item_cost_max));
    });
    row("  max of several values", [&](const SkewedResult& r) {
        std::uint64_t largest = 0;
        for (const PipelineRecord& pipeline : r.pipelines) {
            largest = pipeline.values > 1 ? std::max(largest, pipeline.bytes) : largest;
        }
        return kib(static_cast<double>(largest));
    });
    row("pipelines above " + target, [&](const SkewedResult& r) { return above_target(r, false); });
    row("  of them one value", [&](const SkewedResult& r) { return above_target(r, true); });
    row("ms per pipeline: p99",
        [&](const SkewedResult& r) { return ms(quantile(pipeline_ns(r), 0.99)); });
    row("                 max",
        [&](const SkewedResult& r) { return ms(quantile(pipeline_ns(r), 1.0)); });
    row("KiB pending, max sampled", [&](const SkewedResult& r) {
        std::size_t largest = 0;
        for (const PipelineRecord& pipeline : r.pipelines) {
            largest = std::max(largest, pipeline.pending_bytes);
        }
        return kib(static_cast<double>(largest));
    });
    row("latency post-reply p50 ms",
        [&](const SkewedResult& r) { return ms(quantile(r.latencies_ns, 0.5)); });
    row("                   p99 ms",
        [&](const SkewedResult& r) { return ms(quantile(r.latencies_ns, 0.99)); });

    bool failed = false;
    std::size_t total_keys = 0;
    for (const SkewedResult& result : results) {
        total_keys += result.keys;
        for (const std::string& error : result.errors) {
            std::fprintf(stderr, "%s: %s: MISMATCH: %s\n", program_name, result.run.name.c_str(),
                         error.c_str());
            failed = true;
        }
    }
    if (!failed) {
        std::printf(
            "check: all %zu values SET exactly once and read back intact%s; no pipeline above "
            "%zu bytes but for values above it, each alone (Stats::items_oversized, "
            "batch_item_cost_max): OK\n",
            total_keys, spawned ? ", DBSIZE matches" : "", config.batch_bytes);
    }
    return !failed;
}

int run_all(const Config& config) {
    std::unique_ptr<redis::Server> server;
    int port = config.port;
    if (config.spawn) {
        server = redis::spawn_server(program_name, config.redis_server, config.host);
        if (!server) {
            return exit_skipped;
        }
        port = server->port();
    }
    ConnectionPool pool(config.host, port);
    Connection control(config.host, port);  // for INFO, MGET, DBSIZE, DEL

    std::printf(
        "redis_pipeline: redis %s at %s:%d%s, %zu producers, %zu worker(s), up to %zu s per run, "
        "max_delay %zu us\n",
        redis::server_version(control).c_str(), config.host.c_str(), port,
        server ? " (spawned)" : "", config.producers, config.workers, config.max_seconds,
        config.delay_us);
    std::fflush(stdout);

    bool ok = true;
    if (config.uniform) {
        ok = run_uniform(config, pool, control, server != nullptr) && ok;
        std::fflush(stdout);
    }
    if (config.skewed) {
        ok = run_skewed_part(config, pool, control, server != nullptr) && ok;
    }
    return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    const Config config = parse_command_line(argc, argv);
    try {
        return run_all(config);
    } catch (const std::exception& error) {
        std::fprintf(stderr, "%s: %s\n", program_name, error.what());
        return 1;
    }
}
