// redis_pipeline: batched SET commands to a real redis-server, one pipeline per microbatch.
//
// Each round trip to Redis costs a network exchange and two context switches, even over
// loopback: that is the fixed per-call cost alpha. Producer threads post keys into a
// microbatch::Batcher; its batch function appends one SET per key to a hiredis pipeline and then
// reads all the replies, so a batch of B keys costs one round trip instead of B. B = 1 is the
// classic one-round-trip-per-key client, run by the same code.
//
// After each run every key is read back (MGET) and compared with the value written; with
// --spawn-redis the key count (DBSIZE) is checked too. Exit status 1 on any difference.
//
//   redis_pipeline --spawn-redis               # starts its own redis-server on a free port
//   redis_pipeline --port 6379                 # uses a running server (its keys are deleted)
//   redis_pipeline --test --spawn-redis        # short bounded run for CTest (exit 77 = skipped
//                                              # because redis-server is not installed)
#include <hiredis/hiredis.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <microbatch/microbatch.hpp>

#include "redis_support.hpp"  // examples/common: the hiredis connection, a private server

namespace {

constexpr const char* program_name = "redis_pipeline";
constexpr int exit_skipped = 77;  // CTest SKIP_RETURN_CODE

// ---- Command line -----------------------------------------------------------------------------

constexpr const char* usage_text =
    "usage: redis_pipeline [options]\n"
    "\n"
    "Producer threads SET keys in Redis through a microbatch::Batcher: one hiredis pipeline\n"
    "(one round trip) per microbatch. Runs once per batch size (B=1 is one round trip per\n"
    "key), prints keys/s side by side, and reads every key back.\n"
    "\n"
    "options:\n"
    "  --host HOST           Redis host (default 127.0.0.1)\n"
    "  --port N              Redis port (default 6379)\n"
    "  --spawn-redis         start a private redis-server on a free loopback port\n"
    "                        (--save '' --appendonly no, in a temporary directory) and stop\n"
    "                        it at the end; exit status 77 if redis-server is not installed\n"
    "  --redis-server PATH   the redis-server binary for --spawn-redis (default: from PATH)\n"
    "  --keys N              keys per run (default 100000)\n"
    "  --max-seconds N       stop submitting after N seconds per run (default 8)\n"
    "  --batch-sizes LIST    comma-separated max_batch_size values (default 1,16,256)\n"
    "  --producers N         producer threads (default 4)\n"
    "  --delay-us N          max_delay in microseconds (default 1000)\n"
    "  --workers N           batcher workers, one connection each (default 1)\n"
    "  --test                short bounded run for CTest (10000 keys, 4 s per run)\n"
    "  --help                show this help\n";

struct Config {
    std::string host = "127.0.0.1";
    int port = 6379;
    bool spawn = false;
    std::string redis_server = "redis-server";
    std::size_t keys = 100000;
    std::size_t max_seconds = 8;
    std::vector<std::size_t> batch_sizes{1, 16, 256};
    std::size_t producers = 4;
    std::size_t delay_us = 1000;
    std::size_t workers = 1;
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
        } else {
            usage_error("unknown argument '" + args[i] + "'");
        }
    }
    if (test) {
        config.keys = 10000;
        config.max_seconds = 4;
    }
    return config;
}

// ---- Connections ------------------------------------------------------------------------------

using redis::Connection;
using redis::Reply;

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

// ---- The benchmark ----------------------------------------------------------------------------

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

    using Clock = std::chrono::steady_clock;
    const Clock::time_point start = Clock::now();
    const Clock::time_point stop_at = start + std::chrono::seconds(config.max_seconds);
    std::atomic<std::size_t> next_id{0};
    std::vector<std::thread> producers;
    for (std::size_t p = 0; p < config.producers; ++p) {
        producers.emplace_back([&] {
            // Check the clock before taking an id: every id taken is submitted.
            while (Clock::now() < stop_at) {
                const std::size_t id = next_id.fetch_add(1, std::memory_order_relaxed);
                if (id >= config.keys) {
                    return;
                }
                batcher.post(id);  // blocks while the batcher is full
            }
        });
    }
    for (std::thread& producer : producers) {
        producer.join();
    }
    batcher.close();  // sends the partial batch still pending and waits for every reply
    result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    result.keys = std::min(next_id.load(), config.keys);
    result.round_trips = round_trips.load();
    const microbatch::Stats stats = batcher.stats();
    if (stats.items_failed != 0) {
        result.errors.push_back(std::to_string(stats.items_failed) + " SETs failed");
    }
    return result;
}

// Reads every key of a run back, 1000 per MGET, and counts the ones holding the right value.
void verify(Connection& connection, RunResult& result) {
    constexpr std::size_t chunk = 1000;
    for (std::size_t first = 0; first < result.keys; first += chunk) {
        const std::size_t last = std::min(result.keys, first + chunk);
        std::vector<std::string> words{"MGET"};
        for (std::size_t id = first; id < last; ++id) {
            words.push_back(key_of(result.batch_size, id));
        }
        const Reply reply = connection.command(words);
        if (reply->type != REDIS_REPLY_ARRAY || reply->elements != last - first) {
            throw std::runtime_error("unexpected reply to MGET");
        }
        for (std::size_t i = 0; i < reply->elements; ++i) {
            const redisReply* element = reply->element[i];
            if (element->type == REDIS_REPLY_STRING &&
                std::string(element->str, element->len) == value_of(first + i)) {
                ++result.verified;
            } else if (result.errors.size() < 3) {
                result.errors.push_back("key " + key_of(result.batch_size, first + i) +
                                        " is missing or wrong");
            }
        }
    }
    if (result.verified != result.keys) {
        result.errors.push_back(std::to_string(result.verified) + " of " +
                                std::to_string(result.keys) + " keys hold their value");
    }
}

void delete_keys(Connection& connection, const RunResult& result) {
    constexpr std::size_t chunk = 1000;
    for (std::size_t first = 0; first < result.keys; first += chunk) {
        std::vector<std::string> words{"DEL"};
        for (std::size_t id = first; id < std::min(result.keys, first + chunk); ++id) {
            words.push_back(key_of(result.batch_size, id));
        }
        connection.command(words);
    }
}

std::string server_version(Connection& connection) {
    const Reply info = connection.command({"INFO", "server"});
    const std::string text(info->str, info->len);
    const std::string field = "redis_version:";
    const std::size_t at = text.find(field);
    if (at == std::string::npos) {
        return "?";
    }
    const std::size_t end = text.find_first_of("\r\n", at);
    return text.substr(at + field.size(), end - at - field.size());
}

int run_all(const Config& config) {
    std::unique_ptr<redis::Server> server;
    int port = config.port;
    if (config.spawn) {
        const std::string binary = redis::find_executable(config.redis_server);
        if (binary.empty()) {
            std::printf("%s: SKIPPED: %s not found; install the Debian package redis-server\n",
                        program_name, config.redis_server.c_str());
            return exit_skipped;
        }
        server = std::make_unique<redis::Server>(binary, config.host);
        port = server->port();
    }
    ConnectionPool pool(config.host, port);
    Connection control(config.host, port);  // for INFO, MGET, DBSIZE, DEL
    const long long keys_before = control.command({"DBSIZE"})->integer;

    std::printf(
        "redis_pipeline: redis %s at %s:%d%s, %zu producers, %zu worker(s), up to %zu keys or "
        "%zu s per run, max_delay %zu us\n",
        server_version(control).c_str(), config.host.c_str(), port, server ? " (spawned)" : "",
        config.producers, config.workers, config.keys, config.max_seconds, config.delay_us);
    std::fflush(stdout);

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
    if (server) {
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
            delete_keys(control, result);  // leave a shared server as we found it
        }
    }

    const auto row = [&](const std::string& label, auto cell) {
        std::printf("%-24s", label.c_str());
        for (const RunResult& result : results) {
            std::printf("%12s", cell(result).c_str());
        }
        std::printf("\n");
    };
    const auto fixed = [](double value, int decimals) {
        char text[32];
        std::snprintf(text, sizeof text, "%.*f", decimals, value);
        return std::string(text);
    };
    const RunResult& first = results.front();
    const double baseline = static_cast<double>(first.keys) / first.seconds;
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
    if (failed) {
        return 1;
    }
    std::printf("check: all %zu keys read back with MGET hold their values%s: OK\n", total_keys,
                dbsize_note.c_str());
    return 0;
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
