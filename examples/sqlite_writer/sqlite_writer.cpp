// sqlite_writer: batched inserts into a real SQLite database, one transaction per microbatch.
//
// With journal_mode=WAL and synchronous=FULL every COMMIT waits for the write-ahead log to reach
// the disk (an fsync): that is the fixed per-call cost alpha. Several producer threads post rows
// into a microbatch::Batcher<Row>; its batch function inserts a whole batch inside one
// BEGIN ... COMMIT, so a batch of B rows pays for one fsync instead of B.
//
// The program writes the same rows with B = 1, 16 and 256 (one fresh database file each),
// prints rows/s side by side, and then reads every table back: it must hold exactly the rows
// that were submitted, including the partial batch still pending when the batcher was closed.
// Any difference is reported and the exit status is 1.
//
// Durable mode (--durable) is group commit: each producer submits one row and waits for its
// commit (`batcher.submit(row).get()`) before the next, so at most `producers` rows are ever
// pending. It runs at the library's default max_delay (1 ms): while the worker is committing,
// the waiting producers' rows collect into the next batch, and while it is free a partial
// batch is sealed as soon as waiting for more rows cannot pay, so B > 1 shares each fsync
// among the producers instead of idling for the delay.
//
//   sqlite_writer                          # 20,000 rows per run (each run capped at 8 s)
//   sqlite_writer --batch-sizes 1,64,1024 --rows 50000
//   sqlite_writer --durable                # producers wait for their commits (group commit)
//   sqlite_writer --test                   # short bounded run for CTest
//   sqlite_writer --test --durable         # short bounded durable run for CTest
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

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
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <microbatch/microbatch.hpp>

namespace {

constexpr const char* program_name = "sqlite_writer";

// ---- Command line -----------------------------------------------------------------------------

constexpr const char* usage_text =
    "usage: sqlite_writer [options]\n"
    "\n"
    "Producer threads insert rows into a SQLite database (WAL, synchronous=FULL) through a\n"
    "microbatch::Batcher: one transaction per microbatch. Runs once per batch size, prints\n"
    "rows/s side by side, and checks that each table holds exactly the submitted rows.\n"
    "\n"
    "options:\n"
    "  --rows N            rows per run (default 20000)\n"
    "  --max-seconds N     stop submitting after N seconds per run (default 8)\n"
    "  --batch-sizes LIST  comma-separated max_batch_size values (default 1,16,256)\n"
    "  --producers N       producer threads (default 4)\n"
    "  --delay-us N        max_delay in microseconds (default 5000; with --durable, the\n"
    "                      library default, 1 ms)\n"
    "  --durable           each producer waits for its row's commit before submitting the\n"
    "                      next (submit(row).get(): group commit)\n"
    "  --dir PATH          where the temporary database directory is created\n"
    "                      (default $TMPDIR or /tmp)\n"
    "  --keep              keep the database files (their path is printed)\n"
    "  --test              short bounded run for CTest (1000 rows, 3 s per run, no deadline:\n"
    "                      every partial batch waits for close()); with --durable, 300 rows\n"
    "                      at the default max_delay\n"
    "  --help              show this help\n";

struct Config {
    std::size_t rows = 20000;
    std::size_t max_seconds = 8;
    std::vector<std::size_t> batch_sizes{1, 16, 256};
    std::size_t producers = 4;
    std::size_t delay_us = 5000;
    bool delay_set = false;    // --delay-us given (durable mode otherwise keeps the default)
    bool durable = false;      // producers wait for their own row's commit
    bool no_deadline = false;  // test mode: partial batches are dispatched only by close()
    std::string dir;
    bool keep = false;
    bool test = false;
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
            config.test = true;
        } else if (flag == "--keep") {
            no_value();
            config.keep = true;
        } else if (flag == "--durable") {
            no_value();
            config.durable = true;
        } else if (flag == "--rows") {
            config.rows = parse_count(flag, take_value(), 1, 10000000);
        } else if (flag == "--max-seconds") {
            config.max_seconds = parse_count(flag, take_value(), 1, 3600);
        } else if (flag == "--batch-sizes") {
            config.batch_sizes = parse_list(flag, take_value());
        } else if (flag == "--producers") {
            config.producers = parse_count(flag, take_value(), 1, 64);
        } else if (flag == "--delay-us") {
            config.delay_us = parse_count(flag, take_value(), 0, 10000000);
            config.delay_set = true;
        } else if (flag == "--dir") {
            config.dir = take_value();
            if (config.dir.empty()) {
                usage_error("--dir needs a non-empty path");
            }
        } else {
            usage_error("unknown argument '" + args[i] + "'");
        }
    }
    if (config.test) {
        config.rows = config.durable ? 300 : 1000;
        config.max_seconds = 3;
        // A durable producer waits for its row's commit, so a partial batch must not wait for
        // close(): durable tests run at the default max_delay.
        config.no_deadline = !config.durable;
        config.delay_set = config.delay_set && !config.durable;
    }
    if (config.dir.empty()) {
        const char* tmpdir = std::getenv("TMPDIR");
        config.dir = tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/tmp";
    }
    return config;
}

// ---- A thin SQLite wrapper --------------------------------------------------------------------

struct DatabaseCloser {
    void operator()(sqlite3* db) const { sqlite3_close(db); }
};
struct StatementFinalizer {
    void operator()(sqlite3_stmt* statement) const { sqlite3_finalize(statement); }
};
using Database = std::unique_ptr<sqlite3, DatabaseCloser>;
using Statement = std::unique_ptr<sqlite3_stmt, StatementFinalizer>;

[[noreturn]] void throw_sqlite(sqlite3* db, const std::string& what) {
    throw std::runtime_error(what + ": " + sqlite3_errmsg(db));
}

Database open_database(const std::string& path) {
    sqlite3* raw = nullptr;
    const int status =
        sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
    Database db(raw);
    if (status != SQLITE_OK) {
        throw std::runtime_error("cannot open " + path + ": " +
                                 (raw != nullptr ? sqlite3_errmsg(raw) : "out of memory"));
    }
    sqlite3_busy_timeout(db.get(), 5000);
    return db;
}

void execute(sqlite3* db, const char* sql) {
    char* error = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &error) != SQLITE_OK) {
        const std::string message = error != nullptr ? error : "unknown error";
        sqlite3_free(error);
        throw std::runtime_error(std::string(sql) + ": " + message);
    }
}

Statement prepare(sqlite3* db, const char* sql) {
    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &raw, nullptr) != SQLITE_OK) {
        throw_sqlite(db, std::string("prepare ") + sql);
    }
    return Statement(raw);
}

// The text result of a one-row, one-column query (e.g. a PRAGMA).
std::string query_text(sqlite3* db, const char* sql) {
    Statement statement = prepare(db, sql);
    if (sqlite3_step(statement.get()) != SQLITE_ROW) {
        throw_sqlite(db, sql);
    }
    const unsigned char* text = sqlite3_column_text(statement.get(), 0);
    return text != nullptr ? reinterpret_cast<const char*>(text) : "";
}

// ---- The writer -------------------------------------------------------------------------------

struct Row {
    std::int64_t id = 0;
    std::int32_t producer = 0;
    double value = 0;
};

double value_of(std::int64_t id) {
    return static_cast<double>(id) * 0.25 - 100.0;
}

// Owns one connection and inserts one batch per transaction. Used by a single worker thread.
class BatchWriter {
public:
    explicit BatchWriter(const std::string& path) : db_(open_database(path)) {
        // WAL: readers do not block the writer. FULL: every COMMIT is durable (fsync).
        if (query_text(db_.get(), "PRAGMA journal_mode=WAL") != "wal") {
            throw std::runtime_error("could not switch " + path + " to WAL mode");
        }
        execute(db_.get(), "PRAGMA synchronous=FULL");
        execute(db_.get(),
                "CREATE TABLE readings (id INTEGER PRIMARY KEY, producer INTEGER NOT NULL, "
                "value REAL NOT NULL, batch INTEGER NOT NULL)");
        insert_ = prepare(db_.get(),
                          "INSERT INTO readings (id, producer, value, batch) VALUES (?, ?, ?, ?)");
    }

    // The batch function: one transaction for the whole batch. On any error the transaction is
    // rolled back and the exception propagates, so the batcher reports the batch as failed.
    void write(microbatch::Batch<Row>& batch) {
        execute(db_.get(), "BEGIN IMMEDIATE");
        try {
            sqlite3_stmt* insert = insert_.get();
            for (const Row& row : batch) {
                sqlite3_bind_int64(insert, 1, row.id);
                sqlite3_bind_int(insert, 2, row.producer);
                sqlite3_bind_double(insert, 3, row.value);
                sqlite3_bind_int64(insert, 4, static_cast<sqlite3_int64>(batch.sequence()));
                if (sqlite3_step(insert) != SQLITE_DONE) {
                    throw_sqlite(db_.get(), "insert");
                }
                sqlite3_reset(insert);
            }
            execute(db_.get(), "COMMIT");  // alpha: the WAL fsync
        } catch (...) {
            sqlite3_reset(insert_.get());
            sqlite3_exec(db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
            throw;
        }
        commits_.fetch_add(1, std::memory_order_relaxed);  // relaxed: read after close()
        if (batch.reason() == microbatch::DispatchReason::close) {
            rows_at_close_.fetch_add(batch.size(), std::memory_order_relaxed);
        }
    }

    std::uint64_t commits() const { return commits_.load(std::memory_order_relaxed); }
    std::uint64_t rows_at_close() const { return rows_at_close_.load(std::memory_order_relaxed); }

private:
    Database db_;
    Statement insert_;
    std::atomic<std::uint64_t> commits_{0};
    std::atomic<std::uint64_t> rows_at_close_{0};
};

struct RunResult {
    std::size_t batch_size = 0;
    std::size_t rows = 0;  // rows submitted (and, if the check passes, in the table)
    double seconds = 0;
    std::uint64_t commits = 0;
    std::uint64_t rows_at_close = 0;
    std::size_t acknowledged = 0;       // durable mode: submit(row).get() returned
    std::uint64_t sealed_early = 0;     // partial batches sealed before max_delay
    std::uint64_t sealed_at_delay = 0;  // partial batches sealed at max_delay (or later, busy)
    double mean_fill_us = 0;            // first row accepted -> batch sealed
    std::vector<std::string> errors;
};

// The batcher's options: one worker (SQLite has one writer per database anyway). Durable mode
// keeps the library's default max_delay unless --delay-us was given.
microbatch::Options batcher_options(const Config& config, std::size_t batch_size) {
    microbatch::Options options = microbatch::Options{}.max_batch_size(batch_size).workers(1);
    if (config.no_deadline) {
        options.max_delay(std::chrono::nanoseconds::max());
    } else if (!config.durable || config.delay_set) {
        options.max_delay(std::chrono::microseconds(config.delay_us));
    }
    return options;
}

// Submits up to config.rows rows from config.producers threads (stopping early after
// config.max_seconds), closes the batcher, and returns what happened.
RunResult run(const Config& config, std::size_t batch_size, const std::string& path,
              std::vector<std::int32_t>& submitted_by) {
    RunResult result;
    result.batch_size = batch_size;
    BatchWriter writer(path);
    microbatch::Batcher<Row> batcher(
        batcher_options(config, batch_size),
        [&writer](microbatch::Batch<Row>& batch) { writer.write(batch); });

    using Clock = std::chrono::steady_clock;
    const Clock::time_point start = Clock::now();
    const Clock::time_point stop_at = start + std::chrono::seconds(config.max_seconds);
    std::atomic<std::size_t> next_id{0};
    std::atomic<std::size_t> acknowledged{0};
    std::atomic<std::size_t> durable_failures{0};
    submitted_by.assign(config.rows, -1);
    std::vector<std::thread> producers;
    for (std::size_t p = 0; p < config.producers; ++p) {
        producers.emplace_back([&, p] {
            for (;;) {
                // Check the clock before taking an id: every id taken is submitted, so the
                // submitted ids are exactly 0 .. n-1.
                if (Clock::now() >= stop_at) {
                    return;
                }
                const std::size_t id = next_id.fetch_add(1, std::memory_order_relaxed);
                if (id >= config.rows) {
                    return;
                }
                const Row row{static_cast<std::int64_t>(id), static_cast<std::int32_t>(p),
                              value_of(static_cast<std::int64_t>(id))};
                submitted_by[id] = row.producer;  // each id is written by one thread only
                if (!config.durable) {
                    batcher.post(row);  // blocks while the batcher is full
                    continue;
                }
                // Group commit: wait until the transaction holding this row has committed.
                try {
                    batcher.submit(row).get();
                    acknowledged.fetch_add(1, std::memory_order_relaxed);
                } catch (const std::exception&) {
                    durable_failures.fetch_add(1, std::memory_order_relaxed);
                }
            }
        });
    }
    for (std::thread& producer : producers) {
        producer.join();
    }
    // Shutdown: close() dispatches the partial batch still pending and waits for every commit.
    batcher.close();
    result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    result.rows = std::min(next_id.load(), config.rows);
    result.commits = writer.commits();
    result.rows_at_close = writer.rows_at_close();
    result.acknowledged = acknowledged.load();

    if (config.durable) {
        // Every producer had its last commit before close(): nothing was left for close().
        if (result.acknowledged != result.rows || durable_failures.load() != 0) {
            result.errors.push_back(std::to_string(result.acknowledged) + " of " +
                                    std::to_string(result.rows) + " rows acknowledged, " +
                                    std::to_string(durable_failures.load()) + " get() threw");
        }
        if (result.rows_at_close != 0) {
            result.errors.push_back(std::to_string(result.rows_at_close) +
                                    " rows committed by close() although every producer had "
                                    "waited for its commit");
        }
    }

    const microbatch::Stats stats = batcher.stats();
    result.sealed_early = stats.batches_early;
    result.sealed_at_delay = stats.batches_deadline + stats.batches_worker_free;
    result.mean_fill_us =
        std::chrono::duration<double, std::micro>(stats.queue_delay.mean()).count();
    if (stats.items_failed != 0) {
        result.errors.push_back(std::to_string(stats.items_failed) + " rows failed to insert");
    }
    if (stats.batches_completed != result.commits) {
        result.errors.push_back(std::to_string(stats.batches_completed) + " batches but " +
                                std::to_string(result.commits) + " commits");
    }
    return result;
}

// Reads the table back through a fresh connection and compares it with what was submitted.
void verify(const std::string& path, RunResult& result,
            const std::vector<std::int32_t>& submitted_by) {
    Database db = open_database(path);
    Statement rows = prepare(db.get(), "SELECT id, producer, value FROM readings ORDER BY id");
    std::size_t expected_id = 0;
    std::size_t wrong = 0;
    int status = SQLITE_OK;
    while ((status = sqlite3_step(rows.get())) == SQLITE_ROW) {
        const auto id = static_cast<std::size_t>(sqlite3_column_int64(rows.get(), 0));
        const int producer = sqlite3_column_int(rows.get(), 1);
        const double value = sqlite3_column_double(rows.get(), 2);
        if (id != expected_id || id >= result.rows || producer != submitted_by[id] ||
            value != value_of(static_cast<std::int64_t>(id))) {
            if (++wrong <= 3) {
                result.errors.push_back("unexpected row id " + std::to_string(id) +
                                        " (expected id " + std::to_string(expected_id) + ")");
            }
        }
        expected_id = id + 1;
    }
    if (status != SQLITE_DONE) {
        throw_sqlite(db.get(), "read back");
    }
    if (wrong != 0 || expected_id != result.rows) {
        result.errors.push_back("table holds ids up to " + std::to_string(expected_id) + ", " +
                                std::to_string(wrong) + " wrong rows; submitted " +
                                std::to_string(result.rows));
    }
    // One transaction per microbatch: every batch number appears once per commit and no batch
    // holds more than B rows.
    Statement batches = prepare(db.get(),
                                "SELECT COUNT(*), COALESCE(MAX(n), 0) FROM "
                                "(SELECT COUNT(*) AS n FROM readings GROUP BY batch)");
    if (sqlite3_step(batches.get()) != SQLITE_ROW) {
        throw_sqlite(db.get(), "count batches");
    }
    const auto distinct = static_cast<std::uint64_t>(sqlite3_column_int64(batches.get(), 0));
    const auto largest = static_cast<std::size_t>(sqlite3_column_int64(batches.get(), 1));
    if (distinct != result.commits || largest > result.batch_size) {
        result.errors.push_back(std::to_string(distinct) + " batch numbers in the table for " +
                                std::to_string(result.commits) + " commits, largest " +
                                std::to_string(largest));
    }
}

void remove_database(const std::string& path) {
    for (const char* suffix : {"", "-wal", "-shm"}) {
        std::remove((path + suffix).c_str());
    }
}

}  // namespace

int main(int argc, char** argv) {
    const Config config = parse_command_line(argc, argv);

    std::string dir_template = config.dir + "/microbatch-sqlite-XXXXXX";
    if (mkdtemp(dir_template.data()) == nullptr) {
        std::fprintf(stderr, "%s: cannot create a directory in %s: %s\n", program_name,
                     config.dir.c_str(), std::strerror(errno));
        return 1;
    }
    const std::string dir = dir_template;

    const microbatch::Options shown = batcher_options(config, 1);
    const std::string delay_text =
        config.no_deadline
            ? "no max_delay (partial batches wait for close())"
            : "max_delay " +
                  std::to_string(
                      std::chrono::duration_cast<std::chrono::microseconds>(shown.max_delay())
                          .count()) +
                  " us" + (config.durable && !config.delay_set ? " (default)" : "");
    std::printf(
        "sqlite_writer: SQLite %s, WAL, synchronous=FULL, %zu producers%s, up to %zu rows or %zu "
        "s per run, %s\n",
        sqlite3_libversion(), config.producers,
        config.durable ? " each waiting for its row's commit (durable)" : "", config.rows,
        config.max_seconds, delay_text.c_str());
    std::printf("database directory: %s%s\n", dir.c_str(), config.keep ? " (kept)" : "");
    std::fflush(stdout);

    std::vector<RunResult> results;
    std::vector<std::int32_t> submitted_by;
    bool failed = false;
    for (const std::size_t batch_size : config.batch_sizes) {
        const std::string path = dir + "/rows-B" + std::to_string(batch_size) + ".db";
        try {
            RunResult result = run(config, batch_size, path, submitted_by);
            verify(path, result, submitted_by);
            // With no deadline, every batch but the last is full: the last rows % B rows must
            // have been pending until close() and committed by it.
            if (config.no_deadline && result.rows_at_close != result.rows % batch_size) {
                result.errors.push_back(std::to_string(result.rows_at_close) +
                                        " rows committed by close(), expected " +
                                        std::to_string(result.rows % batch_size));
            }
            results.push_back(std::move(result));
        } catch (const std::exception& error) {
            std::fprintf(stderr, "%s: B=%zu: %s\n", program_name, batch_size, error.what());
            failed = true;
        }
        if (!config.keep) {
            remove_database(path);
        }
    }
    if (!config.keep) {
        rmdir(dir.c_str());
    }

    // The table, one column per batch size.
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
    const double baseline =
        results.empty() || results.front().seconds <= 0
            ? 0
            : static_cast<double>(results.front().rows) / results.front().seconds;
    row("", [](const RunResult& r) { return "B=" + std::to_string(r.batch_size); });
    row("rows written", [](const RunResult& r) { return std::to_string(r.rows); });
    row("seconds", [&](const RunResult& r) { return fixed(r.seconds, 2); });
    row("rows/s",
        [&](const RunResult& r) { return fixed(static_cast<double>(r.rows) / r.seconds, 0); });
    row("transactions (commits)", [](const RunResult& r) { return std::to_string(r.commits); });
    row("rows per commit", [&](const RunResult& r) {
        return fixed(
            r.commits == 0 ? 0.0 : static_cast<double>(r.rows) / static_cast<double>(r.commits), 1);
    });
    row("sealed early / at delay", [](const RunResult& r) {
        return std::to_string(r.sealed_early) + "/" + std::to_string(r.sealed_at_delay);
    });
    row("mean fill time (us)", [&](const RunResult& r) { return fixed(r.mean_fill_us, 0); });
    row("rows committed by close",
        [](const RunResult& r) { return std::to_string(r.rows_at_close); });
    const std::string speedup_label =
        results.empty() ? "" : "speed-up vs B=" + std::to_string(results.front().batch_size);
    row(speedup_label, [&](const RunResult& r) {
        return baseline <= 0 ? std::string("-")
                             : fixed(static_cast<double>(r.rows) / r.seconds / baseline, 1) + "x";
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
    std::printf("check: every table holds exactly the submitted rows, one batch per commit: OK\n");
    return 0;
}
