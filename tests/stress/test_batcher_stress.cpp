// Stress tests for microbatch::Batcher (issue 5: "prove it cannot lose an item").
//
// Each round builds a batcher with random options (batch size 1..4096, delay 0 .. tens of ms or
// none, capacity down to one batch, 1..8 owned workers or a shared external ThreadPool), runs
// 1, 2, 4 or 8 producers doing a random mix of every submission call plus flush/wait_idle, and
// closes it while they produce (or after). Every item carries a unique id; per-id atomic counters
// prove afterwards that each accepted item was processed exactly once and completed its handle or
// callback exactly once, that each rejected item was never processed, that one producer's items
// kept their order, and that the batcher's Stats add up.
//
// Assertions run on the test thread only (Catch2 v2 is not thread-safe): workers, callbacks and
// producers only record into atomics. No outcome depends on timing.
//
// Environment:
//   MICROBATCH_STRESS_SEED=<n>    replay a run (the seed is printed at the start of every case)
//   MICROBATCH_STRESS_SCALE=<x>   multiply the work (default 1; e.g. 0.2 for slow sanitizers)
//
// Compile with -DMICROBATCH_STRESS_AVOID_KNOWN_BUGS=1 to keep producers away from wait_idle()
// (two wait_idle() hangs found by this suite and the fuzzer are fixed; see the regression case
// at the end of this file and test_faults.cpp).

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iterator>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "catch_shim.hpp"
#include "microbatch/batcher.hpp"
#include "microbatch/thread_pool.hpp"

#ifndef MICROBATCH_STRESS_AVOID_KNOWN_BUGS
#define MICROBATCH_STRESS_AVOID_KNOWN_BUGS 0
#endif

using namespace std::chrono_literals;
using microbatch::Batch;
using microbatch::Batcher;
using microbatch::Handle;
using microbatch::Options;
using microbatch::Outcome;
using microbatch::SubmitStatus;

namespace {

// ---- Configuration from the environment -------------------------------------------------------

std::uint64_t stress_seed() {
    if (const char* text = std::getenv("MICROBATCH_STRESS_SEED")) {
        return std::strtoull(text, nullptr, 0);
    }
    std::random_device device;
    return (static_cast<std::uint64_t>(device()) << 32) ^ device();
}

double stress_scale() {
    if (const char* text = std::getenv("MICROBATCH_STRESS_SCALE")) {
        const double scale = std::strtod(text, nullptr);
        if (scale > 0.0) {
            return scale;
        }
    }
    return 1.0;
}

/// SplitMix64: tiny, seedable, and the same sequence on every standard library.
class Random {
public:
    explicit Random(std::uint64_t seed) : state_(seed) {}
    std::uint64_t next() {
        std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }
    /// Uniform in [low, high].
    std::uint64_t between(std::uint64_t low, std::uint64_t high) {
        return low + next() % (high - low + 1);
    }
    bool chance(unsigned percent) { return next() % 100 < percent; }

private:
    std::uint64_t state_;
};

std::uint64_t mix(std::uint64_t a, std::uint64_t b) {
    return Random(a * 0x9E3779B97F4A7C15ULL + b).next();
}

// ---- Items, results and the per-id ledger -----------------------------------------------------

/// The submitted item: an id and a checksum of it, so a torn or misplaced item is detected.
struct Item {
    std::uint32_t id;
    std::uint32_t check;
    explicit Item(std::uint32_t item_id) : id(item_id), check(checksum(item_id)) {}
    static std::uint32_t checksum(std::uint32_t id) { return id * 2654435761U ^ 0x5bd1e995U; }
};

std::uint64_t expected_result(std::uint32_t id) {
    return std::uint64_t{id} * 3 + 1;
}

struct InjectedFailure : std::runtime_error {
    InjectedFailure() : std::runtime_error("injected batch failure") {}
};

/// What the producer's submit call reported for an id.
enum Status : std::uint8_t { unused, accepted, rejected_full, rejected_closed };
/// How the id's outcome is delivered.
enum Delivery : std::uint8_t { none, by_callback, by_handle };
/// What process_batch decided for the id's batch.
enum Verdict : std::uint8_t { not_run = 0, succeeded = 1, failed = 2 };

/// Everything recorded about one round's items. Written by producers (status, delivery: one
/// writer per id), workers (processed, verdict, sequence, position) and callbacks (completed,
/// bad_outcomes); read by the test thread after close() and join.
struct Ledger {
    explicit Ledger(std::size_t ids)
        : status(ids, unused),
          delivery(ids, none),
          processed(new std::atomic<std::uint32_t>[ids]),
          completed(new std::atomic<std::uint32_t>[ids]),
          verdict(new std::atomic<std::uint8_t>[ids]),
          sequence(new std::atomic<std::uint64_t>[ids]),
          position(new std::atomic<std::uint32_t>[ids]) {
        for (std::size_t i = 0; i < ids; ++i) {
            processed[i].store(0, std::memory_order_relaxed);
            completed[i].store(0, std::memory_order_relaxed);
            verdict[i].store(not_run, std::memory_order_relaxed);
            sequence[i].store(0, std::memory_order_relaxed);
            position[i].store(0, std::memory_order_relaxed);
        }
    }

    std::vector<Status> status;
    std::vector<Delivery> delivery;
    std::unique_ptr<std::atomic<std::uint32_t>[]> processed;
    std::unique_ptr<std::atomic<std::uint32_t>[]> completed;
    std::unique_ptr<std::atomic<std::uint8_t>[]> verdict;
    std::unique_ptr<std::atomic<std::uint64_t>[]> sequence;
    std::unique_ptr<std::atomic<std::uint32_t>[]> position;

    // Counters of anomalies (all must end at zero) and of work done. Relaxed throughout: the
    // test thread reads them after joining every thread and closing the batcher.
    std::atomic<std::uint64_t> corrupt_items{0};
    std::atomic<std::uint64_t> bad_batch_sizes{0};
    std::atomic<std::uint64_t> bad_outcomes{0};
    std::atomic<std::uint64_t> batches{0};
    std::atomic<std::uint64_t> failed_batches{0};
    std::atomic<std::uint64_t> items_in_failed_batches{0};
    std::atomic<std::uint64_t> ops_done{0};
};

/// Checks one delivered outcome against what process_batch decided for its id.
template <class R>
bool outcome_matches(const Ledger& ledger, std::uint32_t id, const Outcome<R>& outcome) {
    const std::uint8_t verdict = ledger.verdict[id].load(std::memory_order_relaxed);
    if (verdict == failed) {
        try {
            outcome.value();
        } catch (const InjectedFailure&) {
            return true;
        } catch (...) {
        }
        return false;
    }
    if (verdict != succeeded || !outcome.has_value()) {
        return false;
    }
    if constexpr (std::is_void_v<R>) {
        return true;
    } else {
        return outcome.value() == expected_result(id);
    }
}

/// The per-item callback: 16 bytes, stored inline in the batch slot.
template <class R>
struct Recorder {
    Ledger* ledger;
    std::uint32_t id;
    void operator()(Outcome<R>&& outcome) const {
        if (!outcome_matches(*ledger, id, outcome)) {
            ledger->bad_outcomes.fetch_add(1, std::memory_order_relaxed);
        }
        ledger->completed[id].fetch_add(1, std::memory_order_relaxed);
    }
};

// ---- One round --------------------------------------------------------------------------------

enum class CloseMode { after_producers, racing_close, racing_close_for };

const char* to_string(CloseMode mode) {
    switch (mode) {
        case CloseMode::after_producers:
            return "after_producers";
        case CloseMode::racing_close:
            return "racing_close";
        case CloseMode::racing_close_for:
            return "racing_close_for";
    }
    return "?";
}

struct RoundConfig {
    std::uint64_t seed = 0;
    std::size_t producers = 1;
    std::size_t items_per_producer = 0;
    std::size_t batch_size = 1;
    std::size_t capacity = 1;
    std::chrono::nanoseconds delay{0};
    std::size_t workers = 1;  // 0: the shared external pool
    std::size_t lanes = 1;
    unsigned fail_one_in = 0;  // 0: no injected failures
    unsigned slow_one_in = 0;  // 0: no slow batches
    CloseMode close_mode = CloseMode::after_producers;
    std::size_t close_after_ops = 0;
    std::uint64_t op_weights_seed = 0;

    std::string describe() const {
        std::string delay_text = delay == std::chrono::nanoseconds::max()
                                     ? std::string("none")
                                     : std::to_string(delay.count()) + "ns";
        return "seed=" + std::to_string(seed) + " producers=" + std::to_string(producers) +
               " items/producer=" + std::to_string(items_per_producer) +
               " batch=" + std::to_string(batch_size) + " capacity=" + std::to_string(capacity) +
               " delay=" + delay_text +
               " workers=" + (workers == 0 ? std::string("shared pool") : std::to_string(workers)) +
               " lanes=" + std::to_string(lanes) + " fail_one_in=" + std::to_string(fail_one_in) +
               " slow_one_in=" + std::to_string(slow_one_in) + " close=" + to_string(close_mode) +
               " close_after_ops=" + std::to_string(close_after_ops);
    }
};

RoundConfig random_config(Random& random, std::size_t producers, std::size_t items_per_round) {
    RoundConfig config;
    config.seed = random.next();
    config.producers = producers;
    config.items_per_producer = std::max<std::size_t>(1, items_per_round / producers);
    // Log-uniform batch size in [1, 4096].
    const unsigned bits = static_cast<unsigned>(random.between(0, 12));
    config.batch_size = static_cast<std::size_t>(
        random.between(std::uint64_t{1} << bits, (std::uint64_t{1} << (bits + 1)) - 1));
    config.batch_size = std::min<std::size_t>(config.batch_size, 4096);
    switch (random.between(0, 3)) {
        case 0:
            config.capacity = config.batch_size;  // one buffer: the tightest setting
            break;
        case 1:
            config.capacity = config.batch_size + random.between(0, config.batch_size);
            break;
        default:
            config.capacity = config.batch_size * random.between(2, 8);
            break;
    }
    switch (random.between(0, 4)) {
        case 0:
            config.delay = std::chrono::nanoseconds(0);
            break;
        case 1:
            config.delay = std::chrono::microseconds(random.between(1, 100));
            break;
        case 2:
            config.delay = std::chrono::microseconds(random.between(100, 30'000));
            break;
        default:
            config.delay = std::chrono::nanoseconds::max();  // no time bound at all
            break;
    }
    config.workers = random.chance(30) ? 0 : static_cast<std::size_t>(random.between(1, 8));
    config.lanes = random.chance(40) ? static_cast<std::size_t>(random.between(2, 4)) : 1;
    config.fail_one_in = random.chance(40) ? static_cast<unsigned>(random.between(2, 9)) : 0;
    config.slow_one_in = random.chance(30) ? static_cast<unsigned>(random.between(2, 6)) : 0;
    config.close_mode = static_cast<CloseMode>(random.between(0, 2));
    const std::size_t total_ops = config.items_per_producer * producers;
    // Mostly late, so most items are accepted, sometimes right at the start.
    config.close_after_ops =
        static_cast<std::size_t>(random.chance(20) ? random.between(0, total_ops)
                                                   : random.between(total_ops / 2, total_ops));
    config.op_weights_seed = random.next();
    return config;
}

/// The operations a producer can perform for one id (flush and wait_idle come on top).
enum class Op {
    submit_handle,
    submit_callback,
    post,
    try_submit,
    try_submit_callback,
    try_submit_handle,
    submit_for,
    submit_for_callback,
    submit_for_handle,
    // Bulk submissions (issue 13): a run of 1..16 consecutive ids in one call.
    post_n,
    try_post_n,
    post_n_for,
    submit_n_handles,
    submit_n_callback,
    count
};

bool is_bulk(Op op) {
    return op >= Op::post_n && op < Op::count;
}

/// Per-round weights, so some rounds are dominated by one kind of call.
struct OpMix {
    explicit OpMix(std::uint64_t seed) {
        Random random(seed);
        for (auto& weight : weights) {
            weight = static_cast<unsigned>(random.chance(25) ? 0 : random.between(1, 10));
        }
        weights[static_cast<std::size_t>(Op::post)] += 1;  // never all zero
        for (unsigned weight : weights) {
            total += weight;
        }
        flush_percent = static_cast<unsigned>(random.between(0, 5));
        wait_idle_per_mille = static_cast<unsigned>(random.between(0, 2));
    }
    Op pick(Random& random) const {
        std::uint64_t ticket = random.between(0, total - 1);
        for (std::size_t i = 0; i < weights.size(); ++i) {
            if (ticket < weights[i]) {
                return static_cast<Op>(i);
            }
            ticket -= weights[i];
        }
        return Op::post;
    }
    std::array<unsigned, static_cast<std::size_t>(Op::count)> weights{};
    std::uint64_t total = 0;
    unsigned flush_percent = 0;
    unsigned wait_idle_per_mille = 0;
};

/// Totals over every round of a test case, reported at its end.
struct Totals {
    std::uint64_t rounds = 0;
    std::uint64_t items = 0;
    std::uint64_t accepted = 0;
    std::uint64_t rejected = 0;
    std::uint64_t batches = 0;
};

template <class R>
struct Producer {
    using BatcherType = Batcher<Item, R>;

    Producer(BatcherType& batcher_ref, Ledger& ledger_ref, const RoundConfig& config_ref,
             const OpMix& mix_ref, std::size_t index_value)
        : batcher(batcher_ref),
          ledger(ledger_ref),
          config(config_ref),
          op_mix(mix_ref),
          index(index_value),
          random(mix(config_ref.seed, index_value + 1)) {}

    void run() {
        const std::uint32_t first = static_cast<std::uint32_t>(index * config.items_per_producer);
        // Two wait_idle() bugs (issue 5, fixed) hung it: it spun forever after close() with a
        // single buffer, and it could wait for a batch that had already finished.
        const bool may_wait_idle = MICROBATCH_STRESS_AVOID_KNOWN_BUGS == 0;
        for (std::size_t k = 0; k < config.items_per_producer;) {
            const std::uint32_t id = first + static_cast<std::uint32_t>(k);
            if (op_mix.flush_percent != 0 && random.chance(op_mix.flush_percent)) {
                batcher.flush();
            }
            if (may_wait_idle && op_mix.wait_idle_per_mille != 0 &&
                random.between(0, 999) < op_mix.wait_idle_per_mille) {
                batcher.wait_idle();
            }
            const Op op = op_mix.pick(random);
            if (is_bulk(op)) {
                const std::size_t n = std::min<std::size_t>(
                    static_cast<std::size_t>(random.between(1, 16)), config.items_per_producer - k);
                perform_bulk(op, id, n);
                ledger.ops_done.fetch_add(n, std::memory_order_relaxed);
                k += n;
            } else {
                ledger.status[id] = perform(op, id);
                ledger.ops_done.fetch_add(1, std::memory_order_relaxed);
                ++k;
            }
        }
    }

    // Submits ids [first, first + n) with one bulk call and records each id's status: a prefix
    // accepted, the rest rejected with the call's status.
    void perform_bulk(Op op, std::uint32_t first, std::size_t n) {
        std::vector<std::uint32_t> ids(n);
        for (std::size_t i = 0; i < n; ++i) {
            ids[i] = first + static_cast<std::uint32_t>(i);
        }
        const Delivery how = op == Op::submit_n_handles    ? by_handle
                             : op == Op::submit_n_callback ? by_callback
                                                           : none;
        for (std::uint32_t id : ids) {
            ledger.delivery[id] = how;
        }
        const auto timeout = std::chrono::microseconds(random.between(0, 300));
        microbatch::BulkResult result{SubmitStatus::accepted, n};
        std::vector<Handle<R>> bulk_handles;
        try {
            switch (op) {
                case Op::post_n:
                    batcher.post_n(ids.begin(), n);
                    break;
                case Op::try_post_n:
                    result = batcher.try_post_n(ids.begin(), n);
                    break;
                case Op::post_n_for:
                    result = batcher.post_n_for(ids.begin(), n, timeout);
                    break;
                case Op::submit_n_handles:
                    batcher.submit_n(ids.begin(), n, std::back_inserter(bulk_handles));
                    break;
                default:
                    batcher.submit_n(
                        ids.begin(), n,
                        [ledger_ptr = &ledger, first](std::size_t at, Outcome<R>&& outcome) {
                            Recorder<R>{ledger_ptr,
                                        first + static_cast<std::uint32_t>(at)}(std::move(outcome));
                        });
                    break;
            }
        } catch (const microbatch::BulkClosedError& error) {
            result = microbatch::BulkResult{SubmitStatus::closed, error.accepted()};
        }
        if (how == by_handle && bulk_handles.size() != result.accepted) {
            handle_missing = true;
        }
        for (std::size_t i = 0; i < bulk_handles.size(); ++i) {
            handles.emplace_back(ids[i], std::move(bulk_handles[i]));
        }
        for (std::size_t i = 0; i < n; ++i) {
            ledger.status[ids[i]] = i < result.accepted ? accepted : from(result.status);
        }
    }

    Status perform(Op op, std::uint32_t id) {
        const auto timeout = std::chrono::microseconds(random.between(0, 300));
        Handle<R> handle;
        Status status = unused;
        switch (op) {
            case Op::submit_handle:
                ledger.delivery[id] = by_handle;
                status = blocking([&] { handle = batcher.submit(Item(id)); });
                break;
            case Op::submit_callback:
                ledger.delivery[id] = by_callback;
                status = blocking([&] { batcher.submit(Item(id), Recorder<R>{&ledger, id}); });
                break;
            case Op::post:
                status = blocking([&] { batcher.post(Item(id)); });
                break;
            case Op::try_submit:
                status = from(batcher.try_submit(Item(id)));
                break;
            case Op::try_submit_callback:
                ledger.delivery[id] = by_callback;
                status = from(batcher.try_submit(Item(id), Recorder<R>{&ledger, id}));
                break;
            case Op::try_submit_handle:
                ledger.delivery[id] = by_handle;
                status = from(batcher.try_submit(Item(id), handle));
                break;
            case Op::submit_for:
                status = from(batcher.submit_for(Item(id), timeout));
                break;
            case Op::submit_for_callback:
                ledger.delivery[id] = by_callback;
                status = from(batcher.submit_for(Item(id), Recorder<R>{&ledger, id}, timeout));
                break;
            case Op::submit_for_handle:
                ledger.delivery[id] = by_handle;
                status = from(batcher.submit_for(Item(id), handle, timeout));
                break;
            case Op::post_n:  // bulk: see perform_bulk
            case Op::try_post_n:
            case Op::post_n_for:
            case Op::submit_n_handles:
            case Op::submit_n_callback:
            case Op::count:
                break;
        }
        if (handle.valid()) {
            handles.emplace_back(id, std::move(handle));
        } else if (status == accepted && ledger.delivery[id] == by_handle) {
            handle_missing = true;
        }
        return status;
    }

    template <class Call>
    Status blocking(Call call) {
        try {
            call();
            return accepted;
        } catch (const microbatch::ClosedError&) {
            return rejected_closed;
        }
    }

    static Status from(SubmitStatus status) {
        switch (status) {
            case SubmitStatus::accepted:
                return accepted;
            case SubmitStatus::full:
                return rejected_full;
            case SubmitStatus::closed:
                return rejected_closed;
            case SubmitStatus::infeasible:  // admission control is off in these rounds
                return unused;
        }
        return unused;
    }

    BatcherType& batcher;
    Ledger& ledger;
    const RoundConfig& config;
    const OpMix& op_mix;
    std::size_t index;
    Random random;
    std::vector<std::pair<std::uint32_t, Handle<R>>> handles;
    bool handle_missing = false;  // an accepted handle submit left the handle invalid
};

/// Handle::get() turned into an Outcome, so it can be checked like a callback's.
template <class R>
Outcome<R> take_outcome(Handle<R>& handle) {
    try {
        if constexpr (std::is_void_v<R>) {
            handle.get();
            return Outcome<R>();
        } else {
            return Outcome<R>(handle.get());
        }
    } catch (...) {
        return Outcome<R>(std::current_exception());
    }
}

template <class R>
std::vector<R> results_for(const Batch<Item>& batch) {
    std::vector<R> results;
    results.reserve(batch.size());
    for (const Item& item : batch) {
        results.push_back(expected_result(item.id));
    }
    return results;
}

/// Everything a round found, gathered without Catch2 (it may run on any thread) and checked by
/// check_round() on the test thread.
struct RoundResult {
    std::uint64_t ids = 0;
    std::uint64_t accepted = 0;
    std::uint64_t full = 0;
    std::uint64_t closed = 0;
    std::uint64_t not_exactly_once = 0;
    std::uint64_t rejected_but_processed = 0;
    std::uint64_t wrong_completions = 0;
    std::uint64_t unrecorded = 0;
    std::uint64_t first_bad_id = 0;
    std::uint64_t bad_outcomes = 0;
    std::uint64_t corrupt_items = 0;
    std::uint64_t bad_batch_sizes = 0;
    std::uint64_t handles_not_ready = 0;
    std::uint64_t handles_missing = 0;
    std::uint64_t order_violations = 0;
    std::uint64_t batches = 0;
    std::uint64_t failed_batches = 0;
    std::uint64_t items_in_failed_batches = 0;
    bool close_for_completed = true;
    std::uint64_t close_for_items_in_flight = 0;
    microbatch::Stats stats;
};

/// Runs one round: builds the batcher, runs the producers and the closer, closes, then reads
/// every handle and the ledger. Makes no Catch2 calls.
template <class R>
RoundResult execute_round(const RoundConfig& config, microbatch::ThreadPool& shared_pool) {
    const std::size_t ids = config.items_per_producer * config.producers;
    Ledger ledger(ids);
    const OpMix op_mix(config.op_weights_seed);

    Options options = Options{}
                          .max_batch_size(config.batch_size)
                          .capacity(config.capacity)
                          .lanes(config.lanes)
                          .max_delay(config.delay);
    if (config.workers == 0) {
        options.executor(shared_pool.executor());
    } else {
        options.workers(config.workers);
    }

    const std::size_t batch_size = config.batch_size;
    const unsigned fail_one_in = config.fail_one_in;
    const unsigned slow_one_in = config.slow_one_in;
    const std::uint64_t seed = config.seed;
    auto process = [&ledger, batch_size, fail_one_in, slow_one_in, seed](Batch<Item>& batch) {
        if (batch.empty() || batch.size() > batch_size) {
            ledger.bad_batch_sizes.fetch_add(1, std::memory_order_relaxed);
        }
        ledger.batches.fetch_add(1, std::memory_order_relaxed);
        // Decided from the batch's content, so the decision is independent of scheduling.
        const std::uint64_t fate = batch.empty() ? 0 : mix(seed, batch[0].id);
        const bool fail = fail_one_in != 0 && fate % fail_one_in == 0;
        for (std::size_t i = 0; i < batch.size(); ++i) {
            const Item& item = batch[i];
            if (item.id >= ledger.status.size() || item.check != Item::checksum(item.id)) {
                ledger.corrupt_items.fetch_add(1, std::memory_order_relaxed);
                continue;
            }
            ledger.processed[item.id].fetch_add(1, std::memory_order_relaxed);
            ledger.verdict[item.id].store(fail ? failed : succeeded, std::memory_order_relaxed);
            ledger.sequence[item.id].store(batch.sequence(), std::memory_order_relaxed);
            ledger.position[item.id].store(static_cast<std::uint32_t>(i),
                                           std::memory_order_relaxed);
        }
        if (slow_one_in != 0 && (fate >> 8) % slow_one_in == 0) {
            for (int i = 0; i < 50; ++i) {
                std::this_thread::yield();
            }
        }
        if (fail) {
            ledger.failed_batches.fetch_add(1, std::memory_order_relaxed);
            ledger.items_in_failed_batches.fetch_add(batch.size(), std::memory_order_relaxed);
            throw InjectedFailure();
        }
        if constexpr (!std::is_void_v<R>) {
            return results_for<R>(batch);
        }
    };

    RoundResult result;
    result.ids = ids;
    Batcher<Item, R> batcher(options, process);
    std::vector<Producer<R>> producers;
    producers.reserve(config.producers);
    for (std::size_t p = 0; p < config.producers; ++p) {
        producers.emplace_back(batcher, ledger, config, op_mix, p);
    }

    std::atomic<std::size_t> producers_done{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    for (auto& producer : producers) {
        threads.emplace_back([&producer, &producers_done, &go] {
            while (!go.load()) {
                std::this_thread::yield();
            }
            producer.run();
            producers_done.fetch_add(1);
        });
    }
    std::thread closer;
    if (config.close_mode != CloseMode::after_producers) {
        closer = std::thread([&] {
            while (ledger.ops_done.load(std::memory_order_relaxed) < config.close_after_ops &&
                   producers_done.load() < config.producers) {
                std::this_thread::yield();
            }
            if (config.close_mode == CloseMode::racing_close) {
                batcher.close();
            } else {
                const auto closed = batcher.close_for(std::chrono::microseconds(200));
                result.close_for_completed = closed.completed;
                result.close_for_items_in_flight = closed.items_in_flight;
            }
        });
    }
    go.store(true);
    for (auto& thread : threads) {
        thread.join();
    }
    if (closer.joinable()) {
        closer.join();
    }
    batcher.close();  // also waits for whatever a racing close_for left running

    // Every handle must be ready now: close() returns only after every item completed.
    for (auto& producer : producers) {
        result.handles_missing += producer.handle_missing ? 1 : 0;
        for (auto& [id, handle] : producer.handles) {
            if (!handle.ready()) {
                ++result.handles_not_ready;
                continue;
            }
            if (!outcome_matches(ledger, id, take_outcome(handle))) {
                ledger.bad_outcomes.fetch_add(1);
            }
            ledger.completed[id].fetch_add(1);
        }
    }

    result.first_bad_id = ids;
    for (std::size_t id = 0; id < ids; ++id) {
        const std::uint32_t processed = ledger.processed[id].load();
        const std::uint32_t completed = ledger.completed[id].load();
        bool bad = false;
        switch (ledger.status[id]) {
            case accepted:
                ++result.accepted;
                if (processed != 1) {
                    ++result.not_exactly_once;
                    bad = true;
                }
                if (completed != (ledger.delivery[id] == none ? 0U : 1U)) {
                    ++result.wrong_completions;
                    bad = true;
                }
                break;
            case rejected_full:
            case rejected_closed:
                (ledger.status[id] == rejected_full ? result.full : result.closed) += 1;
                if (processed != 0 || completed != 0) {
                    ++result.rejected_but_processed;
                    bad = true;
                }
                break;
            case unused:
                ++result.unrecorded;
                bad = true;
                break;
        }
        if (bad && result.first_bad_id == ids) {
            result.first_bad_id = id;
        }
    }

    // One producer's accepted items keep their order, within and across batches.
    for (std::size_t p = 0; p < config.producers; ++p) {
        bool have_previous = false;
        std::pair<std::uint64_t, std::uint32_t> previous{0, 0};
        for (std::size_t k = 0; k < config.items_per_producer; ++k) {
            const std::size_t id = p * config.items_per_producer + k;
            if (ledger.status[id] != accepted) {
                continue;
            }
            const std::pair<std::uint64_t, std::uint32_t> place{ledger.sequence[id].load(),
                                                                ledger.position[id].load()};
            if (have_previous && !(previous < place)) {
                ++result.order_violations;
            }
            previous = place;
            have_previous = true;
        }
    }

    result.bad_outcomes = ledger.bad_outcomes.load();
    result.corrupt_items = ledger.corrupt_items.load();
    result.bad_batch_sizes = ledger.bad_batch_sizes.load();
    result.batches = ledger.batches.load();
    result.failed_batches = ledger.failed_batches.load();
    result.items_in_failed_batches = ledger.items_in_failed_batches.load();
    result.stats = batcher.stats();
    return result;
}

/// Asserts every invariant of one round (test thread only).
void check_round(const RoundConfig& config, const RoundResult& result, Totals& totals) {
    INFO("round: " << config.describe());
    INFO("first bad id: " << result.first_bad_id);
    CHECK(result.unrecorded == 0);
    CHECK(result.accepted + result.full + result.closed == result.ids);
    CHECK(result.not_exactly_once == 0);
    CHECK(result.rejected_but_processed == 0);
    CHECK(result.wrong_completions == 0);
    CHECK(result.bad_outcomes == 0);
    CHECK(result.corrupt_items == 0);
    CHECK(result.bad_batch_sizes == 0);
    CHECK(result.handles_not_ready == 0);
    CHECK(result.handles_missing == 0);
    CHECK(result.order_violations == 0);
    if (result.close_for_completed) {
        CHECK(result.close_for_items_in_flight == 0);
    }

    // The batcher's own accounting agrees with ours.
    const microbatch::Stats& stats = result.stats;
    CHECK(stats.items_submitted == result.ids);
    CHECK(stats.items_accepted == result.accepted);
    CHECK(stats.items_rejected_full == result.full);
    CHECK(stats.items_rejected_closed == result.closed);
    CHECK(stats.items_rejected_error == 0);
    CHECK(stats.items_submitted == stats.items_accepted + stats.items_rejected());
    CHECK(stats.items_accepted == stats.items_processed + stats.items_failed);
    CHECK(stats.items_failed == result.items_in_failed_batches);
    CHECK(stats.batches_completed == result.batches);
    CHECK(stats.batches_failed == result.failed_batches);
    CHECK(stats.batches_dispatched() == stats.batches_completed);
    CHECK(stats.batch_size_max <= config.batch_size);
    if (stats.batches_completed != 0) {
        CHECK(stats.batch_size_min >= 1);
    }
    CHECK(stats.callback_exceptions == 0);

    ++totals.rounds;
    totals.items += result.ids;
    totals.accepted += result.accepted;
    totals.rejected += result.full + result.closed;
    totals.batches += result.batches;
}

template <class R>
void run_round(const RoundConfig& config, microbatch::ThreadPool& shared_pool, Totals& totals) {
    const RoundResult result = execute_round<R>(config, shared_pool);
    check_round(config, result, totals);
}

void report(const char* name, std::size_t producers, const Totals& totals) {
    std::printf("[stress] %s, %zu producer(s): %" PRIu64 " rounds, %" PRIu64
                " items pushed (%" PRIu64 " accepted, %" PRIu64 " rejected), %" PRIu64 " batches\n",
                name, producers, totals.rounds, totals.items, totals.accepted, totals.rejected,
                totals.batches);
    std::fflush(stdout);
}

/// Rounds and items per round of one test case, scaled by MICROBATCH_STRESS_SCALE.
struct Budget {
    std::size_t rounds;
    std::size_t items_per_round;
};

Budget budget(std::size_t rounds, std::size_t items_per_round) {
    const double scale = stress_scale();
    const double scaled_rounds = static_cast<double>(rounds) * std::min(1.0, scale);
    const double scaled_items = static_cast<double>(items_per_round) * std::max(0.05, scale);
    return {std::max<std::size_t>(1, static_cast<std::size_t>(scaled_rounds)),
            std::max<std::size_t>(8, static_cast<std::size_t>(scaled_items))};
}

}  // namespace

TEST_CASE("Batcher processes every accepted item exactly once under random load and racing close",
          "[batcher][stress]") {
    const std::size_t producers = GENERATE(1, 2, 4, 8);
    const std::uint64_t seed = stress_seed();
    std::printf("[stress] MICROBATCH_STRESS_SEED=%" PRIu64 " (producers=%zu)\n", seed, producers);
    std::fflush(stdout);
    INFO("MICROBATCH_STRESS_SEED=" << seed << " producers=" << producers);

    microbatch::ThreadPool shared_pool(3);
    Random random(mix(seed, producers));
    const Budget work = budget(40, 8000);
    Totals totals;
    for (std::size_t round = 0; round < work.rounds; ++round) {
        INFO("round " << round);
        run_round<std::uint64_t>(random_config(random, producers, work.items_per_round),
                                 shared_pool, totals);
    }
    report("results", producers, totals);
}

TEST_CASE("Batcher with a void process_batch loses nothing under random load and racing close",
          "[batcher][stress]") {
    const std::size_t producers = GENERATE(2, 8);
    const std::uint64_t seed = stress_seed();
    std::printf("[stress] MICROBATCH_STRESS_SEED=%" PRIu64 " (void, producers=%zu)\n", seed,
                producers);
    std::fflush(stdout);
    INFO("MICROBATCH_STRESS_SEED=" << seed << " producers=" << producers);

    microbatch::ThreadPool shared_pool(2);
    Random random(mix(seed, 100 + producers));
    const Budget work = budget(20, 8000);
    Totals totals;
    for (std::size_t round = 0; round < work.rounds; ++round) {
        INFO("round " << round);
        run_round<void>(random_config(random, producers, work.items_per_round), shared_pool,
                        totals);
    }
    report("void", producers, totals);
}

TEST_CASE("Two batchers sharing one ThreadPool each lose nothing while both are closed mid-run",
          "[batcher][stress][executor]") {
    const std::uint64_t seed = stress_seed();
    std::printf("[stress] MICROBATCH_STRESS_SEED=%" PRIu64 " (shared pool)\n", seed);
    std::fflush(stdout);
    INFO("MICROBATCH_STRESS_SEED=" << seed);

    microbatch::ThreadPool shared_pool(2);
    Random random(mix(seed, 999));
    const Budget work = budget(12, 6000);
    Totals totals[2];
    for (std::size_t round = 0; round < work.rounds; ++round) {
        INFO("round " << round);
        RoundConfig configs[2];
        for (auto& config : configs) {
            config = random_config(random, 2, work.items_per_round);
            config.workers = 0;  // both on the shared pool
        }
        // Both batchers run at once on the same pool; the second runs on a helper thread,
        // which only gathers results: the checks run here, on the test thread.
        RoundResult other_result;
        std::thread other(
            [&] { other_result = execute_round<std::uint64_t>(configs[1], shared_pool); });
        const RoundResult result = execute_round<std::uint64_t>(configs[0], shared_pool);
        other.join();
        check_round(configs[0], result, totals[0]);
        check_round(configs[1], other_result, totals[1]);
    }
    report("shared pool A", 2, totals[0]);
    report("shared pool B", 2, totals[1]);
}

namespace {

/// True in builds with a sanitizer, whose slowdown calls for fewer iterations.
constexpr bool sanitized_build() {
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
    return true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
    return true;
#else
    return false;
#endif
#else
    return false;
#endif
}

/// Watches a counter that the test advances: after 5 s without progress (a stall: nothing here
/// takes that long) it counts one and calls @p unstick so the test can finish and report it.
/// Only bounds a hang; asserts nothing timed.
class Watchdog {
public:
    template <class Unstick>
    Watchdog(const std::atomic<long>& progress, Unstick unstick)
        : thread_([this, &progress, unstick]() mutable {
              long last = -1;
              int idle_ticks = 0;
              while (!done_.load()) {
                  std::this_thread::sleep_for(100ms);
                  const long now = progress.load();
                  if (now != last) {
                      last = now;
                      idle_ticks = 0;
                  } else if (++idle_ticks == 50) {
                      stuck_.fetch_add(1);
                      unstick();
                      idle_ticks = 0;
                  }
              }
          }) {}
    Watchdog(const Watchdog&) = delete;
    Watchdog& operator=(const Watchdog&) = delete;
    ~Watchdog() { stop(); }
    /// Stops watching; returns the stalls counted.
    int stop() {
        done_.store(true);
        if (thread_.joinable()) {
            thread_.join();
        }
        return stuck_.load();
    }

private:
    std::atomic<bool> done_{false};
    std::atomic<int> stuck_{0};
    std::thread thread_;
};

}  // namespace

// BUG (issue 5, library): Batcher::finish_party (batcher.hpp) lets the second finishing party
// call arrive(index), which may re-open the buffer for its next batch, *before* it stores
// finished_sequence = <its batch> under idle_mutex_. If that thread is preempted in between,
// the next batch of the same buffer can fill, run and finish, storing its own (larger) number,
// and the delayed store then overwrites it with the older one: finished_sequence goes
// backwards. wait_idle() (finished_through) then waits for a batch that has already finished
// and blocks until some later batch of that buffer finishes, i.e. forever if no more items come.
// Found by the fuzzer (tests/fuzz) in seconds: one buffer, batch size 3, zero delay, a shared
// ThreadPool, 7 submits, then wait_idle() blocked with head open and empty (batch 3),
// buffer 0 sequence 3, finished_sequence 1. Fix: make the store monotonic (under idle_mutex_:
// `if (finished_sequence < sequence) store(sequence)`), or store finished_sequence before
// arrive() while keeping `--open_batches_` after it (close() relies on that order).
// The race needs a preemption inside a window of a few instructions, so this case can only
// try many times: it detects a stuck wait_idle() (no progress for 5 s), counts it, and frees
// it by posting one more item. It may pass by luck while the bug exists; it cannot fail once
// the bug is fixed (short of a 5-second stall of a microsecond loop).
TEST_CASE("Batcher wait_idle returns once every accepted item has finished",
          "[batcher][stress][wait_idle][regression][issue5]") {
    const double base = sanitized_build() ? 20'000 : 200'000;
    const long iterations = std::max(1000L, static_cast<long>(base * stress_scale()));
    microbatch::ThreadPool pool(2);
    // One buffer of one slot: every post seals a batch, and the next post waits for the buffer
    // to be re-opened by whichever thread finishes the batch last.
    Batcher<int> batcher(Options{}
                             .max_batch_size(1)
                             .capacity(1)
                             .max_delay(std::chrono::nanoseconds::max())
                             .executor(pool.executor()),
                         [](Batch<int>&) {});
    std::atomic<long> progress{0};
    // A later batch of the buffer finishing releases a stuck wait_idle.
    Watchdog watchdog(progress, [&batcher] { batcher.post(-1); });
    for (long i = 0; i < iterations; ++i) {
        batcher.post(0);
        batcher.post(1);
        batcher.wait_idle();
        progress.store(i);
    }
    const int stuck = watchdog.stop();
    std::printf("[stress] wait_idle: %ld iterations, %d stuck\n", iterations, stuck);
    std::fflush(stdout);
    CHECK(stuck == 0);
}

// Regression (found in this suite's neighbourhood, 2026-12-05): closed-loop clients, each
// waiting on its handle, on several lanes with a short max_delay and two workers. A worker that
// became free judged the oldest partial batch on the clock reading it took when process_batch
// returned; in between, the timer could see that batch past max_delay while every worker was
// still busy (no time to wake at), and go idle. On the stale reading the batch looked young, so
// the worker neither sealed it nor woke the timer, and every client waited for ever (measured: 3
// runs of 3 of a 100-round program hung at 0455f00). Also covers note_batch_opened()'s single
// timer wake-up (one opener notifies; the timer announces again when its flag was taken).
// A watchdog counts a stall (no client progress for 5 s) and frees it with flush().
TEST_CASE("Batcher never strands closed-loop clients between a free worker and an idle timer",
          "[batcher][stress][timer][regression]") {
    const std::size_t lanes = GENERATE(2u, 3u);
    const Budget work = budget(sanitized_build() ? 6 : 30, 3000);
    std::atomic<long> progress{0};
    int stuck = 0;
    std::uint64_t completed = 0;
    for (std::size_t round = 0; round < work.rounds; ++round) {
        Batcher<int> batcher(Options{}
                                 .max_batch_size(4)
                                 .lanes(lanes)
                                 .capacity(16 * lanes)
                                 .max_delay(20us)
                                 .workers(2),
                             [](Batch<int>&) {});
        // flush() seals the stranded batches so the round can end.
        Watchdog watchdog(progress, [&batcher] { batcher.flush(); });
        std::atomic<int> failed{0};
        std::vector<std::thread> clients;
        for (int c = 0; c < 6; ++c) {
            clients.emplace_back([&, c] {
                for (std::size_t i = 0; i < work.items_per_round; ++i) {
                    try {
                        batcher.submit(c).get();
                    } catch (...) {
                        failed.fetch_add(1);
                    }
                    progress.fetch_add(1);
                }
            });
        }
        for (std::thread& client : clients) {
            client.join();
        }
        stuck += watchdog.stop();
        batcher.close();
        CHECK(failed.load() == 0);
        completed += batcher.stats().items_processed;
    }
    std::printf("[stress] closed-loop clients, %zu lanes: %zu rounds, %" PRIu64
                " items, %d stuck\n",
                lanes, work.rounds, completed, stuck);
    std::fflush(stdout);
    CHECK(completed == work.rounds * 6 * work.items_per_round);
    CHECK(stuck == 0);
}

TEST_CASE(
    "Batcher loses nothing and keeps each producer's order while its rules change at run time",
    "[batcher][stress][formation]") {
    // Issue 10: the setters race with producers, the timer, the workers and flush. Each item
    // carries (producer, sequence); process_batch records each batch with its dispatch number
    // (batches run concurrently and may finish out of order), and afterwards every item must
    // have run exactly once and, in dispatch order, each producer's items in submission order.
    constexpr std::size_t producers = 3;
    constexpr std::uint32_t per_producer = 4000;
    constexpr std::size_t max_batch = 32;
    const std::size_t rounds = 3;
    for (std::size_t round = 0; round < rounds; ++round) {
        std::mutex mutex;
        std::vector<std::pair<std::uint64_t, std::vector<std::uint64_t>>> batches;
        Batcher<std::uint64_t> batcher(Options{}
                                           .max_batch_size(max_batch)
                                           .max_delay(std::chrono::microseconds(200))
                                           .capacity(4 * max_batch)
                                           .workers(2)
                                           .lanes(1 + round % 2),
                                       [&](Batch<std::uint64_t>& batch) {
                                           std::vector<std::uint64_t> items(batch.begin(),
                                                                            batch.end());
                                           std::lock_guard<std::mutex> lock(mutex);
                                           batches.emplace_back(batch.sequence(), std::move(items));
                                       });
        std::atomic<bool> done{false};
        std::thread control([&] {
            std::mt19937 random(static_cast<std::uint32_t>(round * 7919 + 17));
            while (!done.load()) {
                switch (random() % 5) {
                    case 0:
                        batcher.set_max_batch_size(1 + random() % max_batch);
                        break;
                    case 1: {
                        const std::uint32_t choice = random() % 4;
                        batcher.set_max_delay(choice == 0   ? std::chrono::nanoseconds(0)
                                              : choice == 1 ? std::chrono::nanoseconds(50'000)
                                              : choice == 2 ? std::chrono::nanoseconds(1'000'000)
                                                            : std::chrono::nanoseconds::max());
                        break;
                    }
                    case 2: {
                        const std::uint32_t choice = random() % 4;
                        batcher.set_max_in_flight(choice == 3 ? Options::unlimited_in_flight
                                                              : choice);
                        break;
                    }
                    case 3:
                        batcher.flush();
                        break;
                    default:
                        (void)batcher.pending();
                        (void)batcher.in_flight();
                        break;
                }
                std::this_thread::yield();
            }
        });
        std::vector<std::thread> threads;
        for (std::size_t p = 0; p < producers; ++p) {
            threads.emplace_back([&, p] {
                for (std::uint32_t i = 0; i < per_producer; ++i) {
                    batcher.post((static_cast<std::uint64_t>(p) << 32) | i);
                }
            });
        }
        for (auto& thread : threads) {
            thread.join();
        }
        done = true;
        control.join();
        batcher.set_max_delay(std::chrono::nanoseconds(0));  // whatever the last setting left
        batcher.close();
        std::sort(batches.begin(), batches.end(),
                  [](const auto& a, const auto& b) { return a.first < b.first; });
        std::vector<std::vector<std::uint32_t>> seen(producers);
        for (const auto& batch : batches) {
            for (const std::uint64_t item : batch.second) {
                seen[item >> 32].push_back(static_cast<std::uint32_t>(item & 0xFFFFFFFFu));
            }
        }
        for (std::size_t p = 0; p < producers; ++p) {
            REQUIRE(seen[p].size() == per_producer);
            for (std::uint32_t i = 0; i < per_producer; ++i) {
                REQUIRE(seen[p][i] == i);
            }
        }
        const auto stats = batcher.stats();
        CHECK(stats.items_processed == producers * per_producer);
        CHECK(stats.batches_completed == stats.batches_dispatched());
        CHECK(batcher.pending() == 0);
        CHECK(batcher.in_flight() == 0);
    }
}

TEST_CASE("Batcher isolation and per-item outcomes fail exactly the poison and bad items",
          "[batcher][stress][isolation]") {
    // Issue 12: random batch sizes, delays, lanes, workers (own pool or the shared one), depth
    // caps, both result forms, racing producers with handles and callbacks. Poison ids (one in
    // poison_one_in) make every call holding them throw; bad ids fail by their own Outcome.
    // Afterwards each id completed exactly once, with success exactly when neither poison nor
    // bad nor in a sub-batch cut off by the depth cap (then InjectedFailure), and the counters
    // add up.
    const std::uint64_t seed = stress_seed();
    std::printf("[stress] isolation seed=%" PRIu64 "\n", seed);
    std::fflush(stdout);
    Random random(seed);
    const std::size_t rounds = 6;
    const auto per_producer = static_cast<std::uint32_t>(std::max(200.0, 3000.0 * stress_scale()));
    static microbatch::ThreadPool shared(2);
    for (std::size_t round = 0; round < rounds; ++round) {
        const std::size_t producers = static_cast<std::size_t>(random.between(1, 4));
        const std::size_t batch_size = static_cast<std::size_t>(random.between(1, 300));
        const std::uint64_t poison_one_in = random.between(5, 200);
        const bool per_item = random.chance(50);
        const std::size_t depth = random.chance(50)
                                      ? Options::max_isolation_depth
                                      : static_cast<std::size_t>(random.between(1, 6));
        Options options = Options{}
                              .max_batch_size(batch_size)
                              .max_delay(std::chrono::microseconds(random.between(0, 200)))
                              .lanes(static_cast<std::size_t>(random.between(1, 2)))
                              .isolate_failures(true)
                              .isolation_depth(depth);
        if (random.chance(30)) {
            options.executor(shared.executor());
        } else {
            options.workers(static_cast<std::size_t>(random.between(1, 3)));
        }
        const std::uint32_t total = static_cast<std::uint32_t>(producers) * per_producer;
        const auto poisoned = [poison_one_in](std::uint32_t id) {
            return mix(id, 12) % poison_one_in == 0;
        };
        const auto bad = [per_item](std::uint32_t id) { return per_item && mix(id, 34) % 7 == 0; };
        // Per id: completions, and the outcome seen: 1 success, 2 InjectedFailure, 3 own
        // failure, 4 anything else.
        std::unique_ptr<std::atomic<int>[]> completions(new std::atomic<int>[total]);
        std::unique_ptr<std::atomic<int>[]> seen(new std::atomic<int>[total]);
        for (std::uint32_t id = 0; id < total; ++id) {
            completions[id].store(0);
            seen[id].store(0);
        }
        const auto classify = [](const Outcome<std::uint64_t>& outcome, std::uint32_t id) {
            if (outcome.has_value()) {
                return outcome.value() == expected_result(id) ? 1 : 4;
            }
            try {
                std::rethrow_exception(outcome.error());
            } catch (const InjectedFailure&) {
                return 2;
            } catch (const std::invalid_argument&) {
                return 3;
            } catch (...) {
                return 4;
            }
        };
        const auto results = [&](Batch<Item>& batch) {
            std::vector<Outcome<std::uint64_t>> outcomes;
            for (const Item& item : batch) {
                if (poisoned(item.id)) {
                    throw InjectedFailure();
                }
                if (bad(item.id)) {
                    outcomes.emplace_back(std::make_exception_ptr(std::invalid_argument("bad")));
                } else {
                    outcomes.emplace_back(expected_result(item.id));
                }
            }
            return outcomes;
        };
        std::optional<Batcher<Item, std::uint64_t>> holder;
        if (per_item) {
            holder.emplace(options, results);
        } else {
            holder.emplace(options, [&results](Batch<Item>& batch) {
                std::vector<std::uint64_t> values;
                for (Outcome<std::uint64_t>& outcome : results(batch)) {
                    values.push_back(outcome.value());
                }
                return values;
            });
        }
        Batcher<Item, std::uint64_t>& batcher = *holder;
        std::vector<std::thread> threads;
        for (std::size_t p = 0; p < producers; ++p) {
            threads.emplace_back([&, p] {
                std::vector<std::pair<std::uint32_t, Handle<std::uint64_t>>> handles;
                for (std::uint32_t i = 0; i < per_producer; ++i) {
                    const std::uint32_t id = static_cast<std::uint32_t>(p) * per_producer + i;
                    if (i % 2 == 0) {
                        handles.emplace_back(id, batcher.submit(Item(id)));
                    } else {
                        batcher.submit(Item(id), [&, id](Outcome<std::uint64_t>&& outcome) {
                            seen[id].store(classify(outcome, id));
                            completions[id].fetch_add(1);
                        });
                    }
                }
                for (auto& entry : handles) {
                    Outcome<std::uint64_t> outcome = [&entry] {
                        try {
                            return Outcome<std::uint64_t>(entry.second.get());
                        } catch (...) {
                            return Outcome<std::uint64_t>(std::current_exception());
                        }
                    }();
                    seen[entry.first].store(classify(outcome, entry.first));
                    completions[entry.first].fetch_add(1);
                }
            });
        }
        for (auto& thread : threads) {
            thread.join();
        }
        batcher.close();
        const microbatch::Stats stats = batcher.stats();
        std::uint64_t wrong = 0;
        std::uint64_t failed = 0;
        std::uint64_t poison_count = 0;
        std::uint64_t bad_count = 0;
        for (std::uint32_t id = 0; id < total; ++id) {
            const int outcome = seen[id].load();
            wrong += completions[id].load() == 1 ? 0 : 1;
            poison_count += poisoned(id) ? 1 : 0;
            bad_count += !poisoned(id) && bad(id) ? 1 : 0;
            failed += outcome == 1 ? 0 : 1;
            // A poison item always fails with InjectedFailure; a bad one by itself unless a
            // poison neighbour's sub-batch at the depth cap took it down; any other item
            // succeeds, or (depth cap, or a lone batch) fails with InjectedFailure.
            if (poisoned(id)) {
                wrong += outcome == 2 ? 0 : 1;
            } else if (bad(id)) {
                wrong += outcome == 3 || outcome == 2 ? 0 : 1;
            } else {
                wrong +=
                    outcome == 1 || (outcome == 2 && depth < Options::max_isolation_depth) ? 0 : 1;
            }
        }
        INFO("round " << round << " producers=" << producers << " batch=" << batch_size
                      << " poison 1/" << poison_one_in << " per_item=" << per_item
                      << " depth=" << depth);
        CHECK(wrong == 0);
        CHECK(stats.items_accepted == total);
        CHECK(stats.items_failed == failed);
        CHECK(stats.items_processed == total - failed);
        CHECK(stats.batches_isolated <= stats.batches_failed);
        CHECK(stats.isolation_runs_failed <= stats.isolation_runs);
        CHECK(stats.items_failed_individually <= stats.items_failed);
        if (depth == Options::max_isolation_depth) {
            // Down to single items: only poison and bad items fail.
            CHECK(failed == poison_count + bad_count);
        }
    }
}
