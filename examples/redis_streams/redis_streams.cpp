// redis_streams: scaling out. Several worker processes share one Redis Stream through a
// consumer group; each embeds a microbatch::Batcher that batches the entries it was given.
//
// A Batcher batches what one process receives. To spread work over several processes or
// machines, put something in front that hands each instance its share and takes it back from
// an instance that dies: a Kafka consumer group, or, here, a Redis Stream consumer group.
//
// One worker (`redis_streams worker ...`):
//   - its read loop takes up to --count new entries at a time (XREADGROUP ... COUNT n BLOCK ms
//     STREAMS <stream> >) and posts each entry id into its Batcher;
//   - the Batcher's worker thread processes one batch at a time: the work (a downstream call
//     costing about the same for 1 or 100 entries, simulated with a sleep of --work-us, and
//     one counter per entry id, HINCRBY, in one pipeline), then one XACK for the whole batch;
//   - every so often the read loop also claims entries that have been pending (delivered, not
//     acknowledged) for more than --min-idle-ms (XAUTOCLAIM): their consumer died or hangs.
// Entries are acknowledged only after their batch was processed, so delivery is at least
// once: a worker that dies between processing a batch and its XACK leaves the entries pending,
// another worker claims them and processes them again (duplicates). The entry counters make
// this visible: an entry processed twice has counter 2. XACK returns how many of the given
// entries it actually removed from the pending list, so the sum of all XACK replies equals the
// number of entries exactly when every entry was acknowledged once.
//
// The driver (the default mode) starts a private redis-server (--spawn-redis) or uses a
// running one, and runs the workers as child processes, three times over the same number of
// entries: 1 worker, then --workers workers (throughput side by side), then --workers workers
// of which one is killed with SIGKILL while it holds unacknowledged entries. After each run it
// checks that every entry was processed at least once and acknowledged exactly once, and that
// nothing is left pending; it counts the duplicates. Exit status 1 on any failed check.
//
// The worker is run_worker() below; the rest is the driver that starts workers and checks
// what they did, and ../common/redis_support.hpp holds the hiredis plumbing.
//
//   redis_streams --spawn-redis              # the three runs against a private redis-server
//   redis_streams --port 6379                # against a running server (its keys are deleted)
//   redis_streams worker --port 6379 --run demo --consumer a   # one worker, until SIGTERM
//   redis_streams --test --spawn-redis       # short run for CTest (exit 77 = skipped because
//                                            # redis-server is not installed)
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <microbatch/microbatch.hpp>

#include "redis_support.hpp"

namespace {

constexpr const char* program_name = "redis_streams";
constexpr int exit_skipped = 77;  // CTest SKIP_RETURN_CODE
constexpr const char* group_name = "workers";

using Clock = std::chrono::steady_clock;

// ---- Settings ---------------------------------------------------------------------------------

// From the command line; usage_text (below) describes each one.
struct Config {
    bool worker_mode = false;
    // Both modes.
    std::string host = "127.0.0.1";
    int port = 6379;
    std::size_t count = 100;
    std::size_t batch_size = 100;
    std::size_t delay_us = 1000;
    std::size_t work_us = 2000;
    std::size_t min_idle_ms = 1000;
    // Driver.
    bool spawn = false;
    std::string redis_server = "redis-server";
    std::size_t entries = 100000;
    std::size_t workers = 3;
    std::size_t timeout_seconds = 60;
    // Worker.
    std::string run;
    std::string consumer;
    bool crash = false;
    std::size_t crash_after = 0;
};

// ---- Keys shared by the driver and the workers -----------------------------------------------

struct Keys {
    explicit Keys(const std::string& run)
        : stream(run + ":stream"),
          processed(run + ":processed"),
          acked(run + ":acked"),
          claimed(run + ":claimed"),
          batches(run + ":batches"),
          unacked_at_crash(run + ":unacked-at-crash") {}

    std::vector<std::string> all() const {
        return {stream, processed, acked, claimed, batches, unacked_at_crash};
    }

    std::string stream;            // the stream; its group is group_name
    std::string processed;         // hash: entry id -> times processed (the work's effect)
    std::string acked;             // hash: consumer -> sum of its XACK replies
    std::string claimed;           // hash: consumer -> entries it claimed with XAUTOCLAIM
    std::string batches;           // hash: consumer -> batches it acknowledged
    std::string unacked_at_crash;  // list: ids --crash-after processed but did not acknowledge
};

// The entry ids in an array of stream entries ([id, [field, value, ...]] each). This worker's
// work needs only the id; a real one would take the fields too.
void append_entry_ids(const redisReply* entries, std::vector<std::string>& ids) {
    for (std::size_t i = 0; i < entries->elements; ++i) {
        const redisReply* entry = entries->element[i];
        // Redis 6.2 returned nil in place of an entry deleted while pending: nothing to do.
        if (entry->type == REDIS_REPLY_ARRAY && entry->elements >= 1) {
            ids.push_back(redis::text(entry->element[0]));
        }
    }
}

// ---- The worker -------------------------------------------------------------------------------

[[noreturn]] void hang_until_killed() {
    for (;;) {
        std::this_thread::sleep_for(std::chrono::hours(1));
    }
}

int run_worker(const Config& config) {
    // SIGTERM and SIGINT ask for a clean stop. They are blocked here, before the Batcher
    // starts its threads (which inherit the mask), and polled by the read loop with
    // sigpending(): no handler ever interrupts a thread in the middle of a hiredis call.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
    const auto stop_requested = [&] {
        sigset_t pending;
        sigpending(&pending);
        return sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1;
    };

    const Keys keys(config.run);
    // A failed batch leaves its entries pending (they are claimed again later, by this worker
    // or another); the worker then stops reading and exits 1 so that a supervisor restarts it.
    std::atomic<bool> failed{false};

    // process_batch runs on the Batcher's single worker thread, one batch at a time, with its
    // own connection (a hiredis connection is not thread-safe): the lambda owns it, which
    // makes the lambda move-only; Batcher accepts that.
    microbatch::Batcher<std::string> batcher(
        microbatch::Options{}
            .max_batch_size(config.batch_size)
            .max_delay(std::chrono::microseconds(config.delay_us))
            // The capacity (4 batches) bounds the entries this worker holds unacknowledged
            // to capacity + COUNT (one more read waits in post_n()): what a crash leaves for
            // the others to claim. They must be processed well within --min-idle-ms, or the
            // others claim a live worker's entries too (duplicates, never losses). Set here
            // rather than left to the default (at least 1,024 items), which is sized for
            // throughput, not for how much a crash may redeliver.
            .capacity(4 * config.batch_size)
            .workers(1),
        [&config, &keys, &failed,
         connection = std::make_unique<redis::Connection>(config.host, config.port),
         acked_so_far = std::size_t{0}](microbatch::Batch<std::string>& batch) mutable {
            try {
                // 1. The work. A downstream call that costs about the same for one entry or a
                // hundred (a bulk insert, a model call) is what makes batching pay; it is
                // simulated by a sleep. Its effect, one counter per entry, goes out as one
                // pipeline: one round trip for the batch.
                std::this_thread::sleep_for(std::chrono::microseconds(config.work_us));
                for (const std::string& id : batch) {
                    connection->append({"HINCRBY", keys.processed, id, "1"});
                }
                for (std::size_t i = 0; i < batch.size(); ++i) {
                    connection->next_reply();
                }

                if (config.crash && acked_so_far >= config.crash_after) {
                    // Fault injection: the batch is processed but never acknowledged, as if
                    // the process died right here. Its ids are recorded for the driver's check
                    // (each must be processed again by another worker), then the worker hangs
                    // until the driver kills it.
                    std::vector<std::string> words{"RPUSH", keys.unacked_at_crash};
                    words.insert(words.end(), batch.begin(), batch.end());
                    connection->command(words);
                    hang_until_killed();
                }

                // 2. Acknowledge the batch, only now that it is processed: one XACK for all of
                // its entries. The reply counts the entries it actually removed from the
                // pending list (0 for an entry already acknowledged by another worker).
                std::vector<std::string> words{"XACK", keys.stream, group_name};
                words.insert(words.end(), batch.begin(), batch.end());
                const long long acknowledged = redis::integer(connection->command(words).get());
                acked_so_far += batch.size();

                // Bookkeeping for the driver's check, one more round trip. (A crash between
                // XACK and these would lose them from the tally; --crash-after hangs before
                // XACK, so the test's tally is exact.)
                connection->append(
                    {"HINCRBY", keys.acked, config.consumer, std::to_string(acknowledged)});
                connection->append({"HINCRBY", keys.batches, config.consumer, "1"});
                connection->next_reply();
                connection->next_reply();
            } catch (const std::exception& error) {
                if (!failed.exchange(true)) {
                    std::fprintf(stderr, "%s: worker %s: %s\n", program_name,
                                 config.consumer.c_str(), error.what());
                }
                throw;  // the Batcher counts the failed batch; its entries stay pending
            }
        });

    redis::Connection reader(config.host, config.port);
    // The group usually exists already (the driver creates it); creating it here lets a worker
    // start on an empty server. "0": a new group starts with the stream's first entry.
    try {
        reader.command({"XGROUP", "CREATE", keys.stream, group_name, "0", "MKSTREAM"});
    } catch (const std::runtime_error& error) {
        if (std::string(error.what()).find("BUSYGROUP") == std::string::npos) {
            throw;
        }
    }
    const std::string count = std::to_string(config.count);
    const std::string min_idle = std::to_string(config.min_idle_ms);
    // Look for abandoned entries a few times per idle period: a dead worker's entries are
    // claimed about min_idle to 1.25 x min_idle after they were delivered to it.
    const auto claim_interval = std::chrono::milliseconds(config.min_idle_ms / 4);
    Clock::time_point next_claim = Clock::now();
    std::string claim_cursor = "0-0";
    std::vector<std::string> ids;

    while (!stop_requested() && !failed.load()) {
        ids.clear();
        if (Clock::now() >= next_claim) {
            // XAUTOCLAIM scans the group's pending list from the cursor and takes over up to
            // COUNT entries idle for more than min_idle; they are delivered to this consumer
            // now, as if read. A returned cursor of 0-0 means the scan reached the end.
            const redis::Reply reply =
                reader.command({"XAUTOCLAIM", keys.stream, group_name, config.consumer, min_idle,
                                claim_cursor, "COUNT", count});
            claim_cursor = redis::text(reply->element[0]);
            append_entry_ids(reply->element[1], ids);
            if (claim_cursor == "0-0") {
                next_claim = Clock::now() + claim_interval;
            }
            if (!ids.empty()) {
                reader.command(
                    {"HINCRBY", keys.claimed, config.consumer, std::to_string(ids.size())});
            }
        } else {
            // New entries (">"): each goes to exactly one consumer of the group. BLOCK bounds
            // the wait so that stop requests and claims are noticed within 100 ms.
            const redis::Reply reply =
                reader.command({"XREADGROUP", "GROUP", group_name, config.consumer, "COUNT", count,
                                "BLOCK", "100", "STREAMS", keys.stream, ">"});
            if (reply->type == REDIS_REPLY_ARRAY) {  // nil when BLOCK expired
                for (std::size_t s = 0; s < reply->elements; ++s) {
                    append_entry_ids(reply->element[s]->element[1], ids);
                }
            }
        }
        // One bulk hand-over per read (the ids are moved out): blocks while the Batcher is
        // full, so the reader never runs ahead of the work by more than its capacity.
        batcher.post_n(std::make_move_iterator(ids.begin()), ids.size());
    }
    batcher.close();  // processes and acknowledges every entry it accepted
    return failed.load() ? 1 : 0;
}

// ---- The driver: worker processes -------------------------------------------------------------

std::string this_program(const char* argv0) {
#ifdef __linux__
    char path[PATH_MAX];
    const ssize_t length = readlink("/proc/self/exe", path, sizeof path - 1);
    if (length > 0) {
        return std::string(path, static_cast<std::size_t>(length));
    }
#endif
    return argv0;
}

std::string describe_status(int status) {
    if (WIFEXITED(status)) {
        return "exited with status " + std::to_string(WEXITSTATUS(status));
    }
    if (WIFSIGNALED(status)) {
        return std::string("was killed by signal ") + strsignal(WTERMSIG(status));
    }
    return "stopped";
}

// The worker processes of one run. The destructor kills (SIGKILL) and reaps any still running,
// so that an error never leaves a worker behind.
class WorkerProcesses {
public:
    explicit WorkerProcesses(std::string program) : program_(std::move(program)) {}
    WorkerProcesses(const WorkerProcesses&) = delete;
    WorkerProcesses& operator=(const WorkerProcesses&) = delete;
    ~WorkerProcesses() {
        for (const Process& process : processes_) {
            if (process.running) {
                kill(process.pid, SIGKILL);
                waitpid(process.pid, nullptr, 0);
            }
        }
    }

    void start(const std::string& consumer, std::vector<std::string> args) {
        args.insert(args.begin(), {program_, "worker"});
        std::vector<char*> argv;
        for (std::string& arg : args) {
            argv.push_back(arg.data());
        }
        argv.push_back(nullptr);
        std::fflush(nullptr);  // no buffered output duplicated into the child
        const pid_t pid = fork();
        if (pid < 0) {
            throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
        }
        if (pid == 0) {
#ifdef __linux__
            prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the driver
#endif
            execv(argv[0], argv.data());
            _exit(127);
        }
        processes_.push_back({consumer, pid, true});
    }

    // Throws if a worker exited (or died) while it should be running.
    void check_running() {
        for (Process& process : processes_) {
            int status = 0;
            if (process.running && waitpid(process.pid, &status, WNOHANG) == process.pid) {
                process.running = false;
                throw std::runtime_error("worker " + process.consumer + " " +
                                         describe_status(status) + " during the run");
            }
        }
    }

    // SIGKILL: no chance to finish anything. Returns the wait status.
    int kill_now(const std::string& consumer) {
        Process& process = find(consumer);
        kill(process.pid, SIGKILL);
        int status = 0;
        waitpid(process.pid, &status, 0);
        process.running = false;
        return status;
    }

    // SIGTERM to every running worker (they finish what they hold); each must exit 0 within
    // `timeout`. Returns one message per worker that did not.
    std::vector<std::string> stop_all(std::chrono::seconds timeout) {
        for (const Process& process : processes_) {
            if (process.running) {
                kill(process.pid, SIGTERM);
            }
        }
        std::vector<std::string> errors;
        const Clock::time_point give_up = Clock::now() + timeout;
        for (Process& process : processes_) {
            int status = 0;
            while (process.running) {
                if (waitpid(process.pid, &status, WNOHANG) == process.pid) {
                    process.running = false;
                    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                        errors.push_back("worker " + process.consumer + " " +
                                         describe_status(status) + " after SIGTERM");
                    }
                } else if (Clock::now() >= give_up) {
                    kill(process.pid, SIGKILL);
                    waitpid(process.pid, nullptr, 0);
                    process.running = false;
                    errors.push_back("worker " + process.consumer + " did not stop within " +
                                     std::to_string(timeout.count()) + " s of SIGTERM");
                } else {
                    std::this_thread::sleep_for(std::chrono::milliseconds(5));
                }
            }
        }
        return errors;
    }

private:
    struct Process {
        std::string consumer;
        pid_t pid;
        bool running;
    };

    Process& find(const std::string& consumer) {
        for (Process& process : processes_) {
            if (process.consumer == consumer) {
                return process;
            }
        }
        throw std::logic_error("no worker " + consumer);
    }

    std::string program_;
    std::vector<Process> processes_;
};

// ---- The driver: runs and checks --------------------------------------------------------------

struct RunResult {
    std::string label;
    std::size_t workers = 0;
    bool crash = false;
    std::size_t entries = 0;
    double seconds = 0;
    long long processings = 0;  // sum of the per-entry counters
    long long acked = 0;        // sum of all XACK replies
    long long claimed = 0;      // entries taken over with XAUTOCLAIM
    long long batches = 0;      // batches acknowledged
    std::string acked_per_worker;
    // Crash run only.
    long long pending_at_kill = 0;     // the killed worker's pending entries right after SIGKILL
    std::size_t unacked_at_crash = 0;  // of these, processed but not acknowledged
    std::vector<std::string> errors;
};

long long hash_sum(redis::Connection& connection, const std::string& key) {
    long long sum = 0;
    const redis::Reply values = connection.command({"HVALS", key});
    for (std::size_t i = 0; i < values->elements; ++i) {
        sum += redis::integer(values->element[i]);
    }
    return sum;
}

// XPENDING's summary: [count, smallest id, greatest id, [[consumer, count], ...]].
long long pending_count(redis::Connection& connection, const Keys& keys,
                        const std::string& consumer = std::string()) {
    const redis::Reply reply = connection.command({"XPENDING", keys.stream, group_name});
    if (consumer.empty()) {
        return redis::integer(reply->element[0]);
    }
    const redisReply* consumers = reply->element[3];
    for (std::size_t i = 0; consumers->type == REDIS_REPLY_ARRAY && i < consumers->elements; ++i) {
        if (redis::text(consumers->element[i]->element[0]) == consumer) {
            return redis::integer(consumers->element[i]->element[1]);
        }
    }
    return 0;
}

// The group's last-delivered-id, from XINFO GROUPS (flat field/value pairs per group).
std::string last_delivered_id(redis::Connection& connection, const Keys& keys) {
    const redis::Reply groups = connection.command({"XINFO", "GROUPS", keys.stream});
    for (std::size_t g = 0; g < groups->elements; ++g) {
        const redisReply* fields = groups->element[g];
        std::string name;
        std::string last;
        for (std::size_t f = 0; f + 1 < fields->elements; f += 2) {
            const std::string field = redis::text(fields->element[f]);
            if (field == "name") {
                name = redis::text(fields->element[f + 1]);
            } else if (field == "last-delivered-id") {
                last = redis::text(fields->element[f + 1]);
            }
        }
        if (name == group_name) {
            return last;
        }
    }
    throw std::runtime_error("no group '" + std::string(group_name) + "' on " + keys.stream);
}

// Polls `done` every 5 ms until it holds; throws if a worker dies meanwhile or after `timeout`.
void wait_until(const std::string& what, const std::function<bool()>& done,
                WorkerProcesses& workers, std::chrono::seconds timeout) {
    const Clock::time_point give_up = Clock::now() + timeout;
    while (!done()) {
        workers.check_running();
        if (Clock::now() >= give_up) {
            throw std::runtime_error("timed out after " + std::to_string(timeout.count()) +
                                     " s waiting for " + what);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
}

// Adds `entries` entries (field n = 0, 1, ...), 1000 per pipeline; returns the last id.
std::string fill_stream(redis::Connection& connection, const Keys& keys, std::size_t entries) {
    std::string last_id;
    constexpr std::size_t chunk = 1000;
    for (std::size_t first = 0; first < entries; first += chunk) {
        const std::size_t last = std::min(entries, first + chunk);
        for (std::size_t n = first; n < last; ++n) {
            connection.append({"XADD", keys.stream, "*", "n", std::to_string(n)});
        }
        for (std::size_t n = first; n < last; ++n) {
            last_id = redis::text(connection.next_reply().get());
        }
    }
    return last_id;
}

// Every entry processed at least once, acknowledged exactly once, nothing pending.
void check(redis::Connection& connection, const Keys& keys, RunResult& result) {
    const auto fail = [&](const std::string& message) { result.errors.push_back(message); };

    // Each entry's counter, 1000 ids at a time (XRANGE with an exclusive start to page).
    std::size_t entries = 0;
    std::size_t never_processed = 0;
    std::string start = "-";
    for (;;) {
        const redis::Reply page =
            connection.command({"XRANGE", keys.stream, start, "+", "COUNT", "1000"});
        if (page->elements == 0) {
            break;
        }
        std::vector<std::string> ids;
        append_entry_ids(page.get(), ids);
        std::vector<std::string> words{"HMGET", keys.processed};
        words.insert(words.end(), ids.begin(), ids.end());
        const redis::Reply counts = connection.command(words);
        for (std::size_t i = 0; i < counts->elements; ++i) {
            if (counts->element[i]->type == REDIS_REPLY_NIL) {
                if (++never_processed <= 3) {
                    fail("entry " + ids[i] + " was never processed");
                }
            } else {
                result.processings += redis::integer(counts->element[i]);
            }
        }
        entries += ids.size();
        start = "(" + ids.back();
    }
    if (entries != result.entries) {
        fail("the stream holds " + std::to_string(entries) + " entries, " +
             std::to_string(result.entries) + " were added");
    }
    if (never_processed != 0) {
        fail(std::to_string(never_processed) + " entries were never processed");
    }
    const long long counted = redis::integer(connection.command({"HLEN", keys.processed}).get());
    if (counted != static_cast<long long>(entries)) {
        fail(std::to_string(counted) + " ids were processed, the stream has " +
             std::to_string(entries));
    }

    // Exactly-once acknowledgement: XACK counts only entries it removed from the pending list,
    // so the replies add up to the number of entries iff each entry was acknowledged once.
    result.acked = hash_sum(connection, keys.acked);
    if (result.acked != static_cast<long long>(result.entries)) {
        fail("the XACK replies add up to " + std::to_string(result.acked) + ", not " +
             std::to_string(result.entries));
    }
    const long long pending = pending_count(connection, keys);
    if (pending != 0) {
        fail(std::to_string(pending) + " entries are still pending");
    }
    result.claimed = hash_sum(connection, keys.claimed);
    result.batches = hash_sum(connection, keys.batches);
    for (std::size_t w = 1; w <= result.workers; ++w) {
        const redis::Reply acked =
            connection.command({"HGET", keys.acked, "w" + std::to_string(w)});
        result.acked_per_worker +=
            (w > 1 ? "/" : "") +
            std::to_string(acked->type == REDIS_REPLY_NIL ? 0 : redis::integer(acked.get()));
    }

    if (result.crash) {
        // What the killed worker processed but never acknowledged must have been claimed and
        // processed again by another worker: at-least-once delivery, seen in the counters.
        const redis::Reply unacked =
            connection.command({"LRANGE", keys.unacked_at_crash, "0", "-1"});
        result.unacked_at_crash = unacked->elements;
        if (result.unacked_at_crash == 0) {
            fail("the killed worker recorded no unacknowledged batch");
        }
        for (std::size_t i = 0; i < unacked->elements; ++i) {
            const std::string id = redis::text(unacked->element[i]);
            const redis::Reply times = connection.command({"HGET", keys.processed, id});
            if (times->type == REDIS_REPLY_NIL || redis::integer(times.get()) < 2) {
                fail("entry " + id + ", processed by the killed worker, was not processed again");
                break;
            }
        }
        if (result.claimed == 0) {
            fail("no entry was claimed with XAUTOCLAIM after the kill");
        }
    }
}

RunResult run(const Config& config, redis::Connection& connection, const std::string& program,
              const std::string& run_name, std::size_t workers, bool crash) {
    RunResult result;
    result.workers = workers;
    result.crash = crash;
    result.entries = config.entries;
    const Keys keys(run_name);
    std::vector<std::string> del{"DEL"};
    for (const std::string& key : keys.all()) {
        del.push_back(key);
    }
    connection.command(del);
    connection.command({"XGROUP", "CREATE", keys.stream, group_name, "0", "MKSTREAM"});
    const std::string last_id = fill_stream(connection, keys, config.entries);

    const auto worker_args = [&](const std::string& consumer) {
        return std::vector<std::string>{"--host",        config.host,
                                        "--port",        std::to_string(config.port),
                                        "--run",         run_name,
                                        "--consumer",    consumer,
                                        "--count",       std::to_string(config.count),
                                        "--batch-size",  std::to_string(config.batch_size),
                                        "--delay-us",    std::to_string(config.delay_us),
                                        "--work-us",     std::to_string(config.work_us),
                                        "--min-idle-ms", std::to_string(config.min_idle_ms)};
    };
    const std::chrono::seconds timeout(config.timeout_seconds);
    WorkerProcesses processes(program);
    const Clock::time_point start = Clock::now();
    if (!crash) {
        for (std::size_t w = 1; w <= workers; ++w) {
            processes.start("w" + std::to_string(w), worker_args("w" + std::to_string(w)));
        }
    } else {
        // The victim, w1, starts alone: after config.entries / 10 acknowledged entries it
        // processes one more batch and hangs before XACK, holding that batch and whatever it
        // had read beyond it. Then the others start; once they are acknowledging entries too,
        // w1 is killed. Its pending entries are idle from then on, and the others claim them.
        std::vector<std::string> args = worker_args("w1");
        args.insert(args.end(), {"--crash-after", std::to_string(config.entries / 10)});
        processes.start("w1", args);
        wait_until(
            "worker w1 to process its batch without acknowledging it",
            [&] {
                return redis::integer(connection.command({"LLEN", keys.unacked_at_crash}).get()) >
                       0;
            },
            processes, timeout);
        for (std::size_t w = 2; w <= workers; ++w) {
            processes.start("w" + std::to_string(w), worker_args("w" + std::to_string(w)));
        }
        wait_until(
            "the other workers to acknowledge entries",
            [&] {
                for (std::size_t w = 2; w <= workers; ++w) {
                    const redis::Reply acked =
                        connection.command({"HGET", keys.acked, "w" + std::to_string(w)});
                    if (acked->type != REDIS_REPLY_NIL && redis::integer(acked.get()) > 0) {
                        return true;
                    }
                }
                return false;
            },
            processes, timeout);
        const int status = processes.kill_now("w1");
        if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL) {
            result.errors.push_back("worker w1 " + describe_status(status) + " before SIGKILL");
        }
        result.pending_at_kill = pending_count(connection, keys, "w1");
    }
    // Done when the group has delivered the last entry and nothing is pending.
    wait_until(
        "every entry to be acknowledged",
        [&] {
            return pending_count(connection, keys) == 0 &&
                   last_delivered_id(connection, keys) == last_id;
        },
        processes, timeout);
    result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    for (std::string& error : processes.stop_all(std::chrono::seconds(10))) {
        result.errors.push_back(std::move(error));
    }
    check(connection, keys, result);
    return result;
}

std::string fixed(double value, int decimals) {
    char text[32];
    std::snprintf(text, sizeof text, "%.*f", decimals, value);
    return text;
}

int run_driver(Config config, const std::string& program) {
    std::unique_ptr<redis::Server> server;
    if (config.spawn) {
        server = redis::spawn_server(program_name, config.redis_server);
        if (!server) {
            return exit_skipped;
        }
        config.host = "127.0.0.1";
        config.port = server->port();
    }
    redis::Connection connection(config.host, config.port);
    std::printf(
        "redis_streams: redis %s at %s:%d%s, %zu entries per run, XREADGROUP COUNT %zu, "
        "batches of up to %zu, %zu us of simulated work per batch, XAUTOCLAIM after %zu ms "
        "idle\n",
        redis::server_version(connection).c_str(), config.host.c_str(), config.port,
        server ? " (spawned)" : "", config.entries, config.count, config.batch_size, config.work_us,
        config.min_idle_ms);
    std::fflush(stdout);

    // Keys unique to this driver, so that a shared server's other keys are never touched.
    const std::string prefix = "microbatch:redis_streams:" + std::to_string(getpid());
    const std::string workers_label = std::to_string(config.workers) + " workers";
    std::vector<RunResult> results;
    results.push_back(run(config, connection, program, prefix + ":1", 1, false));
    results.back().label = "1 worker";
    results.push_back(run(config, connection, program, prefix + ":2", config.workers, false));
    results.back().label = workers_label;
    results.push_back(run(config, connection, program, prefix + ":3", config.workers, true));
    results.back().label = workers_label + ", 1 killed";
    for (const char* run_name : {":1", ":2", ":3"}) {
        std::vector<std::string> del{"DEL"};
        for (const std::string& key : Keys(prefix + run_name).all()) {
            del.push_back(key);
        }
        connection.command(del);
    }

    const auto row = [&](const char* label, auto cell) {
        std::printf("%-36s", label);
        for (const RunResult& result : results) {
            std::printf("%21s", cell(result).c_str());
        }
        std::printf("\n");
    };
    const auto rate = [](const RunResult& r) { return static_cast<double>(r.entries) / r.seconds; };
    row("", [](const RunResult& r) { return r.label; });
    row("entries", [](const RunResult& r) { return std::to_string(r.entries); });
    row("seconds", [](const RunResult& r) { return fixed(r.seconds, 2); });
    row("entries/s", [&](const RunResult& r) { return fixed(rate(r), 0); });
    row("speed-up vs 1 worker", [&](const RunResult& r) {
        return r.crash ? std::string("-") : fixed(rate(r) / rate(results.front()), 1) + "x";
    });
    row("batches acknowledged", [](const RunResult& r) { return std::to_string(r.batches); });
    row("entries per batch", [](const RunResult& r) {
        return fixed(
            r.batches == 0 ? 0.0 : static_cast<double>(r.acked) / static_cast<double>(r.batches),
            1);
    });
    row("processings", [](const RunResult& r) { return std::to_string(r.processings); });
    row("duplicates (processed again)", [](const RunResult& r) {
        return std::to_string(r.processings - static_cast<long long>(r.entries));
    });
    row("sum of XACK replies", [](const RunResult& r) { return std::to_string(r.acked); });
    row("acknowledged per worker", [](const RunResult& r) { return r.acked_per_worker; });
    row("claimed with XAUTOCLAIM", [](const RunResult& r) { return std::to_string(r.claimed); });

    const RunResult& crashed = results.back();
    std::printf(
        "killed w1 with SIGKILL holding %lld pending entries, %zu of them processed but not "
        "acknowledged; the other workers claimed them after %zu ms idle\n",
        crashed.pending_at_kill, crashed.unacked_at_crash, config.min_idle_ms);

    bool failed = false;
    for (const RunResult& result : results) {
        for (const std::string& error : result.errors) {
            std::fprintf(stderr, "%s: %s: FAILED: %s\n", program_name, result.label.c_str(),
                         error.c_str());
            failed = true;
        }
    }
    if (failed) {
        return 1;
    }
    std::printf(
        "check: in every run each entry was processed at least once and acknowledged exactly "
        "once (sum of XACK replies == entries), nothing is pending; the killed worker's "
        "unacknowledged batch was processed again: OK\n");
    return 0;
}

// ---- Command line -----------------------------------------------------------------------------

constexpr const char* usage_text =
    "usage: redis_streams [options]\n"
    "       redis_streams worker --run NAME --consumer NAME [options]\n"
    "\n"
    "Worker processes, each embedding a microbatch::Batcher, consume one Redis Stream through\n"
    "a consumer group: XREADGROUP COUNT n, process a batch, XACK the batch; entries a dead\n"
    "worker left unacknowledged are claimed by the others (XAUTOCLAIM).\n"
    "\n"
    "Without 'worker', runs 1 worker, then N workers, then N workers of which one is killed\n"
    "with SIGKILL mid-run, over the same entries; prints entries/s and checks that every entry\n"
    "was processed at least once and acknowledged exactly once, counting duplicates.\n"
    "\n"
    "options (both modes):\n"
    "  --host HOST           Redis host (default 127.0.0.1)\n"
    "  --port N              Redis port (default 6379)\n"
    "  --count N             XREADGROUP / XAUTOCLAIM COUNT (default 100)\n"
    "  --batch-size N        the Batcher's max_batch_size (default 100)\n"
    "  --delay-us N          the Batcher's max_delay in microseconds (default 1000)\n"
    "  --work-us N           simulated cost of one batch's downstream call (default 2000)\n"
    "  --min-idle-ms N       claim entries left unacknowledged this long (default 1000)\n"
    "driver options:\n"
    "  --spawn-redis         start a private redis-server on a free loopback port and stop it\n"
    "                        at the end; exit status 77 if redis-server is not installed\n"
    "  --redis-server PATH   the redis-server binary for --spawn-redis (default: from PATH)\n"
    "  --entries N           entries per run (default 100000, at least 1000)\n"
    "  --workers N           workers of the second and third runs (default 3, at least 2)\n"
    "  --timeout-seconds N   fail a run that has not finished after N s (default 60)\n"
    "  --test                short run for CTest (20000 entries, 30 s timeout)\n"
    "worker options:\n"
    "  --run NAME            key prefix: stream NAME:stream, group 'workers' (required)\n"
    "  --consumer NAME       this worker's consumer name in the group (required)\n"
    "  --crash-after N       fault injection: after N entries are acknowledged, process the\n"
    "                        next batch, record its ids in NAME:unacked-at-crash and hang\n"
    "                        before XACK (the driver then kills the worker with SIGKILL)\n"
    "  --help                show this help\n"
    "\n"
    "A worker stops on SIGTERM or SIGINT: it stops reading, processes and acknowledges what it\n"
    "holds, and exits 0.\n";

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
    std::vector<std::string> args(argv + 1, argv + argc);
    if (!args.empty() && args.front() == "worker") {
        config.worker_mode = true;
        args.erase(args.begin());
    }
    const std::set<std::string> driver_only{"--spawn-redis", "--redis-server",    "--entries",
                                            "--workers",     "--timeout-seconds", "--test"};
    const std::set<std::string> worker_only{"--run", "--consumer", "--crash-after"};
    bool test = false;
    for (std::size_t i = 0; i < args.size(); ++i) {
        std::string flag = args[i];
        std::string value;
        bool has_value = false;
        if (const auto equals = flag.find('='); flag.rfind("--", 0) == 0 && equals != flag.npos) {
            value = flag.substr(equals + 1);
            flag.resize(equals);
            has_value = true;
        }
        if (config.worker_mode && driver_only.count(flag) != 0) {
            usage_error(flag + " is not a worker option");
        }
        if (!config.worker_mode && worker_only.count(flag) != 0) {
            usage_error(flag + " is a worker option (redis_streams worker ...)");
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
        const auto non_empty = [&]() -> const std::string& {
            if (take_value().empty()) {
                usage_error(flag + " needs a non-empty value");
            }
            return value;
        };
        if (flag == "--help" || flag == "-h") {
            no_value();
            std::fputs(usage_text, stdout);
            std::exit(0);
        } else if (flag == "--host") {
            config.host = non_empty();
        } else if (flag == "--port") {
            config.port = static_cast<int>(parse_count(flag, take_value(), 1, 65535));
        } else if (flag == "--count") {
            config.count = parse_count(flag, take_value(), 1, 10000);
        } else if (flag == "--batch-size") {
            config.batch_size = parse_count(flag, take_value(), 1, 10000);
        } else if (flag == "--delay-us") {
            config.delay_us = parse_count(flag, take_value(), 0, 10000000);
        } else if (flag == "--work-us") {
            config.work_us = parse_count(flag, take_value(), 0, 10000000);
        } else if (flag == "--min-idle-ms") {
            config.min_idle_ms = parse_count(flag, take_value(), 10, 3600000);
        } else if (flag == "--spawn-redis") {
            no_value();
            config.spawn = true;
        } else if (flag == "--redis-server") {
            config.redis_server = non_empty();
        } else if (flag == "--entries") {
            config.entries = parse_count(flag, take_value(), 1000, 10000000);
        } else if (flag == "--workers") {
            config.workers = parse_count(flag, take_value(), 2, 64);
        } else if (flag == "--timeout-seconds") {
            config.timeout_seconds = parse_count(flag, take_value(), 1, 3600);
        } else if (flag == "--test") {
            no_value();
            test = true;
        } else if (flag == "--run") {
            config.run = non_empty();
        } else if (flag == "--consumer") {
            config.consumer = non_empty();
        } else if (flag == "--crash-after") {
            config.crash = true;
            config.crash_after = parse_count(flag, take_value(), 0, 1000000000);
        } else {
            usage_error("unknown argument '" + args[i] + "'");
        }
    }
    if (config.worker_mode && (config.run.empty() || config.consumer.empty())) {
        usage_error("worker needs --run and --consumer");
    }
    if (test) {
        config.entries = 20000;
        config.timeout_seconds = 30;
    }
    return config;
}

}  // namespace

int main(int argc, char** argv) {
    const Config config = parse_command_line(argc, argv);
    try {
        return config.worker_mode ? run_worker(config) : run_driver(config, this_program(argv[0]));
    } catch (const std::exception& error) {
        std::fprintf(stderr, "%s: %s\n", program_name, error.what());
        return 1;
    }
}
