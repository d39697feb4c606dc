// libFuzzer target for microbatch::Batcher (issue 5): the input bytes choose the options, then a
// sequence of at most 200 operations (every submission call, flush, wait_idle, close, advancing
// the clock, items whose batch throws, returns too few results, or whose constructors throw). The
// driver keeps a sequential reference model and, after close(), checks that every accepted item
// was processed exactly once (or failed alone when its move during hole compaction threw), every
// rejected item was never processed, every handle and callback completed with the outcome its
// batch earned, and the stats add up. When the run is deterministic (inline executor, no time
// bound or a manual-clock bound) the model also predicts every batch exactly.
// Issue 11: items may carry a deadline (already due, or an hour away, which the manual clock
// never reaches), handles may be cancelled, and deadline sealing and admission control are
// switched by the input. The model predicts which items expire (due ones, unless cancelled
// first) and which cancels win (those of items whose batch has not formed, with the inline
// executor), and that neither kind reaches process_batch.
//
// Issue 12: the options byte also chooses process_batch's form (one result per item, or one
// Outcome per item, where "bad" items fail on their own) and poison-item isolation with a split
// depth. Items may then be passed to process_batch several times: the model replays the
// bisection of every batch (grouping calls by Batch::sequence()) and checks each call, each
// item's final fate and the isolation counters.
//
// Issue 12 item 1: with the size byte's bits 3-6 (batch sizes up to 8), items are weighed
// (cost_by, a cost of 0-6 from the item's id) under a batch cost bound and/or a pending cost
// bound. The model then predicts cost sealing (before an item that does not fit, at the bound,
// an oversized item alone), the sealing of the open batch when pending cost is short, try forms
// refused for pending cost, CostLimitError for items above the pending bound, and holes that
// no longer take a slot (the item is weighed, so constructed, before it claims one); every run
// checks that no batch of several items exceeds the cost bound and the cost stats.
//
// Build: clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude
//        tests/fuzz/fuzz_batcher.cpp -o fuzz_batcher
// Run:   ./fuzz_batcher -max_total_time=60 <scratch-corpus-dir> tests/fuzz/corpus
// Without libFuzzer, -DMICROBATCH_FUZZ_STANDALONE builds a main() that replays files given on
// the command line (any compiler).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>
#include <vector>

#include "microbatch/batcher.hpp"
#include "microbatch/clock.hpp"
#include "microbatch/thread_pool.hpp"

// Library bugs found on issue 5 (now fixed); build with -DMICROBATCH_FUZZ_AVOID_KNOWN_BUGS=1 to
// steer the driver around them again:
//   wait_idle() after close() with a single buffer spins forever (Batcher::flush_and_target);
//   wait_idle() can wait forever for a batch that already finished when the thread finishing
//   a batch is preempted (finished_sequence regresses in Batcher::finish_party). This one was
//   found by this fuzzer; the driver now calls wait_idle() only in deterministic runs.
#ifndef MICROBATCH_FUZZ_AVOID_KNOWN_BUGS
#define MICROBATCH_FUZZ_AVOID_KNOWN_BUGS 0
#endif

#define FUZZ_CHECK(condition)                                                             \
    do {                                                                                  \
        if (!(condition)) {                                                               \
            std::fprintf(stderr, "fuzz_batcher: check failed at line %d: %s\n", __LINE__, \
                         #condition);                                                     \
            std::abort();                                                                 \
        }                                                                                 \
    } while (false)

namespace {

using microbatch::Batch;
using microbatch::Handle;
using microbatch::ManualClock;
using microbatch::Options;
using microbatch::Outcome;
using microbatch::SubmitStatus;

constexpr std::size_t max_operations = 200;
// Items: one per single submission, up to max_bulk per bulk operation (issue 13).
constexpr std::size_t max_bulk = 8;
constexpr std::size_t max_items = max_operations * max_bulk;
constexpr auto tiny_delay = std::chrono::microseconds(1);

enum Flag : std::uint8_t {
    poison = 1,      // process_batch throws InjectedFailure for this item's batch
    short_ = 2,      // process_batch returns one result too few for this item's batch
    hole = 4,        // constructing the item throws ConstructionFailure (submit rejects it)
    fragile = 8,     // the item's move constructor throws MoveFailure (only compaction moves)
    bad = 16,        // per-item form: the item's own Outcome is an ItemFailure
    due_now = 32,    // submitted with a deadline that has already come: expires, unprocessed
    due_later = 64,  // submitted with a deadline an hour away: processed as usual
};

struct InjectedFailure : std::runtime_error {
    InjectedFailure() : std::runtime_error("injected batch failure") {}
};
struct ConstructionFailure : std::runtime_error {
    ConstructionFailure() : std::runtime_error("item construction failed") {}
};
struct MoveFailure : std::runtime_error {
    MoveFailure() : std::runtime_error("item move failed") {}
};
struct ItemFailure : std::runtime_error {
    ItemFailure() : std::runtime_error("item failed on its own") {}
};

struct Spec {
    std::uint32_t id;
    std::uint8_t flags;
};

struct Item {
    std::uint32_t id;
    std::uint8_t flags;
    explicit Item(const Spec& spec) : id(spec.id), flags(spec.flags) {
        if ((flags & hole) != 0) {
            throw ConstructionFailure();
        }
    }
    Item(Item&& other) : id(other.id), flags(other.flags) {
        if ((flags & fragile) != 0) {
            throw MoveFailure();
        }
    }
    Item(const Item&) = delete;
    Item& operator=(const Item&) = delete;
    Item& operator=(Item&&) = delete;
    ~Item() = default;
};

int expected_value(std::uint32_t id) {
    return static_cast<int>(id) * 7 + 3;
}

/// An item's cost in weighted runs (issue 12): 0 to 6, from its id.
std::uint64_t item_cost(std::uint32_t id) {
    return (static_cast<std::uint64_t>(id) * 5 + 3) % 7;
}

enum Verdict : std::uint8_t { not_run, succeeded, failed_injected, failed_count, failed_item };
enum Delivery : std::uint8_t { none, by_callback, by_handle };
// not_tried: an item of a bulk submission after the one whose construction threw (never
// submitted: in no counter).
enum Status : std::uint8_t {
    unknown,
    accepted,
    rejected_full,
    rejected_closed,
    rejected_hole,
    rejected_infeasible,  // admission control (issue 11)
    rejected_cost,        // CostLimitError: the item alone exceeds max_pending_cost (issue 12)
    not_tried
};

/// Everything one input's run records. Workers write `processed`, `verdict` and the batch log;
/// callbacks write `completions` and `bad_outcomes`; the driver reads them after close().
struct Run {
    explicit Run(std::size_t ids)
        : processed(new std::atomic<int>[ids]),
          completions(new std::atomic<int>[ids]),
          verdict(new std::atomic<std::uint8_t>[ids]),
          move_failed(new std::atomic<int>[ids]),
          due(new std::atomic<int>[ids]),
          cancel_won(new std::atomic<int>[ids]) {
        for (std::size_t i = 0; i < ids; ++i) {
            due[i].store(0);
            cancel_won[i].store(0);
            processed[i].store(0);
            completions[i].store(0);
            verdict[i].store(not_run);
            move_failed[i].store(0);
        }
    }
    std::unique_ptr<std::atomic<int>[]> processed;
    std::unique_ptr<std::atomic<int>[]> completions;
    std::unique_ptr<std::atomic<std::uint8_t>[]> verdict;
    std::unique_ptr<std::atomic<int>[]> move_failed;  // its outcome was MoveFailure
    std::unique_ptr<std::atomic<int>[]> due;          // submitted already due (set before)
    std::unique_ptr<std::atomic<int>[]> cancel_won;   // Handle::cancel() returned true
    std::atomic<int> bad_outcomes{0};
    std::atomic<int> empty_batches{0};
    std::atomic<int> oversized_batches{0};
    std::atomic<int> over_cost_batches{0};  // several items above max_batch_cost (issue 12)
    std::atomic<int> batches{0};
    std::mutex log_mutex;
    std::vector<std::vector<std::uint32_t>> log;  // processed ids of each batch, in run order
    // Every call's ids by batch sequence number: the first is the batch, then its re-runs.
    std::map<std::uint64_t, std::vector<std::vector<std::uint32_t>>> calls;
};

/// Checks an outcome against what process_batch did with the item (or the move failure).
bool outcome_fits(Run& run, std::uint32_t id, const Outcome<int>& outcome) {
    const std::uint8_t verdict = run.verdict[id].load();
    const auto error_is = [&outcome](auto* tag) {
        using Error = std::remove_pointer_t<decltype(tag)>;
        try {
            (void)outcome.value();
        } catch (const Error&) {
            return true;
        } catch (...) {
        }
        return false;
    };
    if (run.cancel_won[id].load() != 0) {
        return verdict == not_run && error_is(static_cast<microbatch::Cancelled*>(nullptr));
    }
    if (run.due[id].load() != 0) {
        return verdict == not_run && error_is(static_cast<microbatch::DeadlineExceeded*>(nullptr));
    }
    switch (verdict) {
        case succeeded:
            return outcome.has_value() && outcome.value() == expected_value(id);
        case failed_injected:
            return error_is(static_cast<InjectedFailure*>(nullptr));
        case failed_count:
            return error_is(static_cast<microbatch::ResultCountError*>(nullptr));
        case failed_item:
            return error_is(static_cast<ItemFailure*>(nullptr));
        case not_run:
            if (error_is(static_cast<MoveFailure*>(nullptr))) {
                run.move_failed[id].store(1);
                return true;
            }
            return false;
    }
    return false;
}

struct Recorder {
    Run* run;
    std::uint32_t id;
    void operator()(Outcome<int>&& outcome) const {
        if (!outcome_fits(*run, id, outcome)) {
            run->bad_outcomes.fetch_add(1);
        }
        run->completions[id].fetch_add(1);
    }
};

/// process_batch in both forms: one result per item, or (@p per_item) one Outcome per item.
/// Throws for a batch holding a poison item, returns one result too few for one holding a
/// short_ item; records the call and each item's verdict (the last call holding it decides).
std::vector<Outcome<int>> process(Run& run, std::size_t batch_size, std::uint64_t max_cost,
                                  Batch<Item>& batch, bool per_item) {
    run.batches.fetch_add(1);
    if (batch.empty()) {
        run.empty_batches.fetch_add(1);
    }
    if (batch.size() > batch_size) {
        run.oversized_batches.fetch_add(1);
    }
    std::uint64_t cost = 0;
    for (const Item& item : batch) {
        cost += item_cost(item.id);
    }
    if (max_cost != 0 && batch.size() > 1 && cost > max_cost) {
        run.over_cost_batches.fetch_add(1);
    }
    bool poisoned = false;
    bool shortened = false;
    std::vector<std::uint32_t> ids;
    for (const Item& item : batch) {
        poisoned = poisoned || (item.flags & poison) != 0;
        shortened = shortened || (item.flags & short_) != 0;
        ids.push_back(item.id);
    }
    const Verdict verdict = poisoned ? failed_injected : shortened ? failed_count : succeeded;
    for (const Item& item : batch) {
        run.processed[item.id].fetch_add(1);
        run.verdict[item.id].store(
            verdict == succeeded && per_item && (item.flags & bad) != 0 ? failed_item : verdict);
    }
    {
        std::lock_guard<std::mutex> lock(run.log_mutex);
        std::vector<std::vector<std::uint32_t>>& calls = run.calls[batch.sequence()];
        if (calls.empty()) {
            run.log.push_back(ids);  // the batch's first call; re-runs follow it
        }
        calls.push_back(std::move(ids));
    }
    if (poisoned) {
        throw InjectedFailure();
    }
    std::vector<Outcome<int>> results;
    for (const Item& item : batch) {
        if (per_item && (item.flags & bad) != 0) {
            results.emplace_back(std::make_exception_ptr(ItemFailure()));
        } else {
            results.emplace_back(expected_value(item.id));
        }
    }
    if (shortened) {
        results.pop_back();
    }
    return results;
}

/// What the model expects of one batch and its re-runs.
struct Expected {
    std::vector<std::vector<std::uint32_t>> calls;
    std::map<std::uint32_t, Verdict> verdicts;
    bool isolated = false;
    std::size_t runs_failed = 0;
};

/// Replays Options::isolate_failures on the items @p ids of one call at @p level splits.
void expect_calls(const std::vector<std::uint32_t>& ids, std::size_t level,
                  const std::vector<std::uint8_t>& flags, bool per_item, bool isolate,
                  std::size_t depth, Expected& expected) {
    expected.calls.push_back(ids);
    bool poisoned = false;
    bool shortened = false;
    for (const std::uint32_t id : ids) {
        poisoned = poisoned || (flags[id] & poison) != 0;
        shortened = shortened || (flags[id] & short_) != 0;
    }
    if (level > 0 && (poisoned || shortened)) {
        ++expected.runs_failed;
    }
    if (poisoned && isolate && ids.size() > 1 && level < depth) {
        expected.isolated = expected.isolated || level == 0;
        const auto middle = ids.begin() + static_cast<std::ptrdiff_t>(ids.size() / 2);
        expect_calls({ids.begin(), middle}, level + 1, flags, per_item, isolate, depth, expected);
        expect_calls({middle, ids.end()}, level + 1, flags, per_item, isolate, depth, expected);
        return;
    }
    for (const std::uint32_t id : ids) {
        expected.verdicts[id] = poisoned                             ? failed_injected
                                : shortened                          ? failed_count
                                : per_item && (flags[id] & bad) != 0 ? failed_item
                                                                     : succeeded;
    }
}

/// Reads the input byte by byte; zeros once it is exhausted.
class Input {
public:
    Input(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
    std::uint8_t byte() { return position_ < size_ ? data_[position_++] : 0; }
    bool done() const { return position_ >= size_; }

private:
    const std::uint8_t* data_;
    std::size_t size_;
    std::size_t position_ = 0;
};

microbatch::ThreadPool& shared_pool() {
    static microbatch::ThreadPool pool(2);
    return pool;
}

enum class DelayMode { none, tiny, zero };
enum class ExecutorMode { inline_, shared_pool, owned_pool };

/// The sequential reference model of batch formation, used when the run is deterministic.
struct Model {
    std::size_t batch_size;
    // Capacity is counted in items (issue 10): a batch opens with min(batch_size, items not
    // granted to an unfinished batch) slots. With the inline executor a sealed batch has run
    // by the time the next item comes, but the next batch opened before it ran: its bound is
    // min(batch_size, capacity - the sealed batch's slots), or batch_size if that is 0 (the
    // buffer then waits for the finished batch's items and opens with a full bound).
    std::size_t capacity;
    std::size_t bound;
    std::size_t current;  // the batch size in force (set_max_batch_size): bounds the next batch
    // One buffer in all (capacity == batch size and no in-flight limit, so no room for partial
    // batches): the next batch opens only after the sealed one ran, with every item free again.
    bool single_buffer;
    std::vector<Spec> open;                // slots of the batch being filled (holes included)
    std::vector<std::uint32_t> cancelled;  // ids whose cancel won (never sealed before it)
    std::vector<std::vector<std::uint32_t>> batches;
    std::vector<std::size_t> sizes;  // accepted items of every sealed batch (0: only holes)
    bool closed = false;
    // Weighted runs (issue 12): the bounds, the open batch's cost, the largest batch cost.
    std::uint64_t max_batch_cost = 0;
    std::uint64_t max_pending_cost = 0;
    std::uint64_t open_cost = 0;
    std::uint64_t max_cost_seen = 0;

    void seal() {
        if (open.empty()) {
            return;
        }
        max_cost_seen = std::max(max_cost_seen, open_cost);
        open_cost = 0;
        // The worker compacts holes: items after the first hole are moved, and a fragile one
        // fails there instead of being processed.
        std::vector<std::uint32_t> kept;
        bool hole_seen = false;
        std::size_t size = 0;
        for (const Spec& spec : open) {
            // Cancelled and expired items leave the batch before compaction, as holes do.
            const bool removed =
                (spec.flags & due_now) != 0 ||
                std::find(cancelled.begin(), cancelled.end(), spec.id) != cancelled.end();
            if ((spec.flags & hole) != 0 || removed) {
                hole_seen = true;
                continue;
            }
            ++size;  // an item that fails in compaction still belongs to the batch
            if (!hole_seen || (spec.flags & fragile) == 0) {
                kept.push_back(spec.id);
            }
        }
        sizes.push_back(size);
        if (!kept.empty()) {
            batches.push_back(std::move(kept));
        }
        const std::size_t left = capacity - open.size();
        bound = left == 0 || single_buffer ? current : std::min(current, left);
        open.clear();
    }
    // With the inline executor a sealed batch has run: a cancel wins only while the item is in
    // the open batch.
    bool cancel_wins(std::uint32_t id) const {
        for (const Spec& spec : open) {
            if (spec.id == id) {
                return std::find(cancelled.begin(), cancelled.end(), id) == cancelled.end() &&
                       (spec.flags & hole) == 0;
            }
        }
        return false;
    }
    void claim(const Spec& spec) {
        open.push_back(spec);
        if (open.size() == bound) {
            seal();
        }
    }
    // Weighted runs, before a claim: with an inline executor the pending cost is the open
    // batch's. If the item does not fit the pending bound, the open batch is sealed (it runs
    // and frees its cost) and true is returned: try forms are refused, the others go on.
    bool pending_refuses(std::uint64_t cost) {
        if (max_pending_cost != 0 && open_cost + cost > max_pending_cost) {
            seal();
            return true;
        }
        return false;
    }
    // A weighted claim: sealed first if the item does not fit, sealed after at either bound.
    void claim_weighed(const Spec& spec) {
        const std::uint64_t cost = item_cost(spec.id);
        if (max_batch_cost != 0 && !open.empty() && open_cost + cost > max_batch_cost) {
            seal();
        }
        open.push_back(spec);
        open_cost += cost;
        if (open.size() == bound || (max_batch_cost != 0 && open_cost >= max_batch_cost)) {
            seal();
        }
    }
};

void run_one(const std::uint8_t* data, std::size_t size) {
    Input input(data, size);
    const std::uint8_t size_byte = input.byte();
    const std::size_t batch_size = (size_byte & 0x80) != 0 ? 1 + size_byte % 64 : 1 + size_byte % 8;
    const std::uint8_t buffers_byte = input.byte();
    const std::size_t buffers = 1 + buffers_byte % 4;
    const std::uint8_t delay_byte = input.byte();
    const auto delay_mode = static_cast<DelayMode>(delay_byte % 3);
    const std::uint8_t executor_byte = input.byte();
    const auto executor_mode = static_cast<ExecutorMode>(executor_byte % 3);

    Options options = Options{}.max_batch_size(batch_size).capacity(batch_size * buffers);
    // Issue 12: weighted items, from the size byte's bits 3-6 when bit 7 is clear (unused by
    // the batch size then; 0 keeps the batcher unweighed).
    const unsigned cost_mode = (size_byte & 0x80) == 0 ? (size_byte >> 3) & 0x0F : 0;
    const bool weighted = cost_mode != 0;
    constexpr std::uint64_t batch_costs[4] = {0, 4, 8, 12};
    constexpr std::uint64_t pending_costs[4] = {0, 5, 12, 30};
    const std::uint64_t max_batch_cost = batch_costs[cost_mode & 3];
    const std::uint64_t max_pending_cost = pending_costs[(cost_mode >> 2) & 3];
    options.max_batch_cost(max_batch_cost).max_pending_cost(max_pending_cost);
    // Batch formation (issue 10): early sealing on or off, and the in-flight limit automatic,
    // 1, or none (the plain size/time rule).
    options.seal_early(((buffers_byte >> 2) & 1) == 0);
    switch ((buffers_byte >> 3) % 3) {
        case 1:
            options.max_in_flight(1);
            break;
        case 2:
            options.max_in_flight(Options::unlimited_in_flight);
            break;
        default:
            break;
    }
    switch (delay_mode) {
        case DelayMode::none:
            options.max_delay(std::chrono::nanoseconds::max());
            break;
        case DelayMode::tiny:
            options.max_delay(tiny_delay);
            break;
        case DelayMode::zero:
            options.max_delay(std::chrono::nanoseconds(0));
            break;
    }
    // Issue 12, from the executor byte's upper bits: per-item form (bit 3), isolation (bit 4)
    // with a split depth of 1 to 7 or down to single items (bits 5-7).
    const bool per_item = ((executor_byte >> 3) & 1) != 0;
    const bool isolate = ((executor_byte >> 4) & 1) != 0;
    const std::size_t depth_bits = static_cast<std::size_t>(executor_byte >> 5);
    const std::size_t depth = depth_bits == 0 ? Options::max_isolation_depth : depth_bits;
    options.isolate_failures(isolate).isolation_depth(depth);
    switch (executor_mode) {
        case ExecutorMode::inline_:
            options.executor([](microbatch::Task task) { task(); });
            break;
        case ExecutorMode::shared_pool:
            options.executor(shared_pool().executor());
            break;
        case ExecutorMode::owned_pool:
            options.workers(1 + (executor_byte >> 2) % 2);
            break;
    }
    // Early sealing (seal_policy.hpp rule 5) decides from measured load (arrival rate, the
    // population of pending items), which the model does not track: exact batches are
    // predicted only without it (off, or no time bound, which turns it off).
    // Issue 11: deadline sealing (on or off) seals a batch holding a due item from the timer
    // thread, which the model does not time: such a run stops being deterministic at its first
    // due item. Admission control refuses only once a batch was measured to take time, which on
    // a manual clock needs an advance while a batch runs on another thread: never in a
    // deterministic run (inline executor), where it admits everything.
    // The delay byte's high bits (the executor byte's carry the outcome form and isolation).
    options.deadline_sealing(((delay_byte >> 3) & 1) != 0);
    options.admission_control(((delay_byte >> 4) & 1) != 0);
    bool deterministic = executor_mode == ExecutorMode::inline_ && delay_mode != DelayMode::zero &&
                         (!options.seal_early() || delay_mode == DelayMode::none);

    Run run(max_items);
    const bool single_buffer =
        buffers == 1 && options.max_in_flight() == Options::unlimited_in_flight;
    Model model{batch_size, batch_size * buffers, batch_size, batch_size, single_buffer, {}, {}, {},
                {}};
    model.max_batch_cost = max_batch_cost;
    model.max_pending_cost = max_pending_cost;
    std::vector<Status> status(max_items, unknown);
    std::vector<Delivery> delivery(max_items, none);
    std::vector<std::uint8_t> flags(max_items, 0);
    std::vector<std::pair<std::uint32_t, Handle<int>>> handles;
    std::uint32_t next_id = 0;
    bool closed = false;

    ManualClock clock;
    {
        // The form is chosen at compile time from process_batch's return type: two lambdas.
        using FuzzBatcher = microbatch::Batcher<Item, int, ManualClock>;
        std::optional<FuzzBatcher> holder;
        const auto per_item_form = [&run, batch_size, max_batch_cost](Batch<Item>& batch) {
            return process(run, batch_size, max_batch_cost, batch, true);
        };
        const auto plain_form = [&run, batch_size, max_batch_cost](Batch<Item>& batch) {
            std::vector<int> results;
            for (Outcome<int>& outcome : process(run, batch_size, max_batch_cost, batch, false)) {
                results.push_back(outcome.value());
            }
            return results;
        };
        const auto weigh = microbatch::cost_by(
            [](const Item& item) { return static_cast<std::size_t>(item_cost(item.id)); });
        if (weighted && per_item) {
            holder.emplace(options, weigh, per_item_form, clock);
        } else if (weighted) {
            holder.emplace(options, weigh, plain_form, clock);
        } else if (per_item) {
            holder.emplace(options, per_item_form, clock);
        } else {
            holder.emplace(options, plain_form, clock);
        }
        FuzzBatcher& batcher = *holder;

        // Submits one item through @p call (which returns the status) and records the outcome.
        // A weighted item's outcome against the model (issue 12): weighing (so constructing) the
        // item and the pending cost bound come before the claim; @p waits: a blocking or timed
        // form (which seals the open batch and, with the inline executor, goes on).
        const auto weighed_item = [&](const Spec& spec, Status result, bool waits) {
            const std::uint64_t cost = item_cost(spec.id);
            // Admission control judges an item with a deadline before it is weighed (as it
            // judges a bulk run whole): an infeasible item is refused whatever its cost, and
            // untouched (so a hole is not constructed).
            if (result == rejected_infeasible) {
                FUZZ_CHECK(options.admission_control() &&
                           (spec.flags & (due_now | due_later)) != 0);
                FUZZ_CHECK(!deterministic);
                return;
            }
            if (result == rejected_hole) {
                FUZZ_CHECK((spec.flags & hole) != 0);  // weighed, so refused before a claim
                return;
            }
            FUZZ_CHECK((spec.flags & hole) == 0);
            if (result == rejected_cost) {
                FUZZ_CHECK(max_pending_cost != 0 && cost > max_pending_cost);
                return;
            }
            FUZZ_CHECK(max_pending_cost == 0 || cost <= max_pending_cost);
            if (result == rejected_closed) {
                FUZZ_CHECK(closed);
                return;
            }
            FUZZ_CHECK(!closed);
            const bool refused = model.pending_refuses(cost);
            if (deterministic) {
                FUZZ_CHECK(result == (refused && !waits ? rejected_full : accepted));
            }
            if (result == accepted) {
                model.claim_weighed(spec);
            }
        };

        const auto submit_item = [&](std::uint8_t item_flags, Delivery how, auto call,
                                     bool waits = true) {
            const std::uint32_t id = next_id++;
            const Spec spec{id, item_flags};
            flags[id] = item_flags;
            run.due[id].store((item_flags & due_now) != 0 ? 1 : 0);
            if ((item_flags & due_now) != 0 && options.deadline_sealing()) {
                deterministic = false;  // the timer seals its batch, see above
            }
            delivery[id] = how;
            Status result = unknown;
            try {
                result = call(spec);
            } catch (const ConstructionFailure&) {
                FUZZ_CHECK((item_flags & hole) != 0);
                result = rejected_hole;
            } catch (const microbatch::ClosedError&) {
                result = rejected_closed;
            } catch (const microbatch::DeadlineInfeasible&) {
                result = rejected_infeasible;
            } catch (const microbatch::CostLimitError&) {
                FUZZ_CHECK(weighted);
                result = rejected_cost;
            }
            status[id] = result;
            if (weighted) {
                weighed_item(spec, result, waits);
                return;
            }
            // The model: a hole still takes its slot; a closed batcher takes nothing.
            if (result == rejected_closed) {
                FUZZ_CHECK(closed);
            } else if (result == accepted || result == rejected_hole) {
                FUZZ_CHECK(!closed);
                model.claim(spec);
            } else if (result == rejected_infeasible) {
                FUZZ_CHECK(options.admission_control() &&
                           (item_flags & (due_now | due_later)) != 0);
                FUZZ_CHECK(!deterministic);
            } else if (deterministic) {
                FUZZ_CHECK(false);  // an inline executor always has room
            }
        };
        const auto from = [](SubmitStatus s) {
            return s == SubmitStatus::accepted     ? accepted
                   : s == SubmitStatus::full       ? rejected_full
                   : s == SubmitStatus::infeasible ? rejected_infeasible
                                                   : rejected_closed;
        };

        // An item's flags from one input byte.
        const auto flags_of = [](std::uint8_t item_byte) {
            std::uint8_t item_flags = 0;
            switch (item_byte & 0x0F) {
                case 1:
                    item_flags |= poison;
                    break;
                case 2:
                    item_flags |= short_;
                    break;
                case 3:
                    item_flags |= hole;
                    break;
                case 4:
                    item_flags |= bad;
                    break;
                default:
                    break;
            }
            switch (item_byte >> 4) {
                case 1:
                    item_flags |= fragile;
                    break;
                case 2:
                    item_flags |= due_now;
                    break;
                case 3:
                    item_flags |= due_later;
                    break;
                case 4:
                    item_flags |= fragile | due_now;
                    break;
                case 5:
                    item_flags |= fragile | due_later;
                    break;
                default:
                    break;
            }
            return item_flags;
        };

        // A bulk submission (issue 13) of 1..max_bulk items in one of four forms; the model
        // claims them as single claims would, except that a construction failure ends the run:
        // the failed item and the rest of its claimed run become holes, later items are never
        // tried.
        const auto submit_bulk = [&](std::uint8_t bulk_byte) {
            const std::size_t count = 1 + bulk_byte % max_bulk;
            const unsigned form = (bulk_byte >> 3) % 4;
            // Bit 5: a deadline for the whole run (issue 11 x 13), due now if bit 7 is set too.
            const bool dated = (bulk_byte & 0x20) != 0;
            const std::uint8_t due_flag = (bulk_byte & 0x80) != 0 ? due_now : due_later;
            const microbatch::ItemDeadline<ManualClock> run_deadline =
                due_flag == due_now ? microbatch::ItemDeadline<ManualClock>(clock.now())
                                    : microbatch::ItemDeadline<ManualClock>(std::chrono::hours(1));
            if (dated && due_flag == due_now && options.deadline_sealing()) {
                deterministic = false;  // the timer seals its batch, as for single items
            }
            const Delivery how = form == 2 ? by_handle : form == 3 ? by_callback : none;
            const std::uint32_t base = next_id;
            std::vector<Spec> specs;
            for (std::size_t i = 0; i < count; ++i) {
                const std::uint32_t id = next_id++;
                // The run's deadline, if any, replaces the items' own deadline flags.
                const auto own =
                    static_cast<std::uint8_t>(flags_of(input.byte()) & ~(due_now | due_later));
                specs.push_back(Spec{id, static_cast<std::uint8_t>(dated ? own | due_flag : own)});
                run.due[id].store(dated && due_flag == due_now ? 1 : 0);
                flags[id] = specs.back().flags;
                delivery[id] = how;
            }
            std::size_t accepted_count = count;
            SubmitStatus result = SubmitStatus::accepted;
            bool threw_hole = false;
            bool threw_cost = false;  // CostLimitError (weighted runs)
            std::vector<Handle<int>> bulk_handles;
            try {
                switch (form) {
                    case 0:
                        if (dated) {
                            batcher.post_n(run_deadline, specs.begin(), count);
                        } else {
                            batcher.post_n(specs.begin(), count);
                        }
                        break;
                    case 1: {
                        const microbatch::BulkResult r =
                            dated ? batcher.try_post_n(run_deadline, specs.begin(), count)
                                  : batcher.try_post_n(specs.begin(), count);
                        accepted_count = r.accepted;
                        result = r.status;
                        break;
                    }
                    case 2:
                        if (dated) {
                            batcher.submit_n(run_deadline, specs.begin(), count,
                                             std::back_inserter(bulk_handles));
                        } else {
                            batcher.submit_n(specs.begin(), count,
                                             std::back_inserter(bulk_handles));
                        }
                        break;
                    default: {
                        const auto record = [runp = &run, base](std::size_t index,
                                                                Outcome<int>&& outcome) {
                            Recorder{runp,
                                     base + static_cast<std::uint32_t>(index)}(std::move(outcome));
                        };
                        if (dated) {
                            batcher.submit_n(run_deadline, specs.begin(), count, record);
                        } else {
                            batcher.submit_n(specs.begin(), count, record);
                        }
                        break;
                    }
                }
            } catch (const ConstructionFailure&) {
                threw_hole = true;
            } catch (const microbatch::ClosedError&) {
                result = SubmitStatus::closed;
                accepted_count = 0;
            } catch (const microbatch::DeadlineInfeasible&) {
                result = SubmitStatus::infeasible;
                accepted_count = 0;
            } catch (const microbatch::CostLimitError&) {
                FUZZ_CHECK(weighted);
                threw_cost = true;
            }
            if (weighted && (threw_hole || threw_cost)) {
                // Weighed one by one: the first item that cannot be weighed (a hole) or exceeds
                // the pending bound ends the run; the items before it were accepted.
                accepted_count = 0;
                while ((specs[accepted_count].flags & hole) == 0 &&
                       (max_pending_cost == 0 ||
                        item_cost(specs[accepted_count].id) <= max_pending_cost)) {
                    ++accepted_count;
                }
                FUZZ_CHECK(threw_hole == ((specs[accepted_count].flags & hole) != 0));
            } else if (threw_hole) {
                accepted_count = 0;
                while ((specs[accepted_count].flags & hole) == 0) {
                    ++accepted_count;
                }
            }
            if (form == 2) {
                FUZZ_CHECK(bulk_handles.size() == accepted_count);
                for (std::size_t i = 0; i < bulk_handles.size(); ++i) {
                    handles.emplace_back(specs[i].id, std::move(bulk_handles[i]));
                }
            }
            for (std::size_t i = 0; i < count; ++i) {
                const std::uint32_t id = specs[i].id;
                if (i < accepted_count) {
                    status[id] = accepted;
                } else if (threw_hole) {
                    status[id] = i == accepted_count ? rejected_hole : not_tried;
                } else if (threw_cost) {
                    status[id] = i == accepted_count ? rejected_cost : not_tried;
                } else {
                    status[id] = from(result);
                }
            }
            if (result == SubmitStatus::closed) {
                FUZZ_CHECK(closed);
                return;
            }
            if (result == SubmitStatus::infeasible) {  // the run is refused as a whole
                FUZZ_CHECK(options.admission_control() && dated && accepted_count == 0);
                FUZZ_CHECK(!deterministic);
                return;
            }
            if (weighted) {
                // Weighing comes first, so even a closed batcher refuses a hole or an item above
                // the pending bound with its own error, having accepted nothing.
                if (closed) {
                    FUZZ_CHECK(accepted_count == 0 && (threw_hole || threw_cost));
                    return;
                }
                // The model, item by item as the batcher claims them: the pending bound, then a
                // weighted claim. In a deterministic run the run's end is predicted exactly.
                const bool waits = form != 1;
                std::size_t predicted = count;
                bool predicted_full = false;
                for (std::size_t i = 0; i < count && i <= accepted_count; ++i) {
                    const std::uint64_t cost = item_cost(specs[i].id);
                    if ((specs[i].flags & hole) != 0 ||
                        (max_pending_cost != 0 && cost > max_pending_cost)) {
                        predicted = i;
                        break;
                    }
                    if (model.pending_refuses(cost) && !waits) {
                        predicted = i;
                        predicted_full = true;
                        break;
                    }
                    if (i == accepted_count) {
                        break;  // refused for want of room (not in deterministic runs)
                    }
                    model.claim_weighed(specs[i]);
                }
                if (deterministic) {
                    FUZZ_CHECK(predicted == accepted_count);
                    FUZZ_CHECK(predicted_full == (result == SubmitStatus::full));
                }
                return;
            }
            FUZZ_CHECK(!closed);
            if (result == SubmitStatus::full && deterministic) {
                FUZZ_CHECK(false);  // an inline executor always has room
            }
            // The model: runs of min(left, free slots of the open batch) claims.
            std::size_t at = 0;
            while (at < count && at <= accepted_count) {
                const std::size_t run_length =
                    std::min(count - at, model.bound - model.open.size());
                bool ended = false;
                for (std::size_t i = at; i < at + run_length; ++i) {
                    if (i < accepted_count) {
                        model.claim(specs[i]);
                    } else if (threw_hole) {
                        Spec filler = specs[i];
                        filler.flags |= hole;  // claimed, published as a hole
                        model.claim(filler);
                        ended = true;
                    } else {
                        ended = true;  // try_post_n stopped here (not in deterministic runs)
                        break;
                    }
                }
                if (ended) {
                    break;
                }
                at += run_length;
            }
        };

        for (std::size_t op = 0; op < max_operations && !input.done(); ++op) {
            const unsigned operation = input.byte() % 16U;
            const std::uint8_t item_flags = operation < 9 ? flags_of(input.byte()) : 0;
            // The item's deadline, for the deadline forms (used when `dated`).
            const bool dated = (item_flags & (due_now | due_later)) != 0;
            const microbatch::ItemDeadline<ManualClock> deadline =
                (item_flags & due_now) != 0
                    ? microbatch::ItemDeadline<ManualClock>(clock.now())
                    : microbatch::ItemDeadline<ManualClock>(std::chrono::hours(1));
            Handle<int> handle;
            const auto keep_handle = [&handles, &handle](std::uint32_t id) {
                if (handle.valid()) {
                    handles.emplace_back(id, std::move(handle));
                }
            };
            switch (operation) {
                case 0:
                    submit_item(item_flags, by_handle, [&](const Spec& spec) {
                        handle = dated ? batcher.submit(deadline, spec) : batcher.submit(spec);
                        keep_handle(spec.id);
                        return accepted;
                    });
                    break;
                case 1:
                    submit_item(item_flags, by_callback, [&](const Spec& spec) {
                        if (dated) {
                            batcher.submit(deadline, spec, Recorder{&run, spec.id});
                        } else {
                            batcher.submit(spec, Recorder{&run, spec.id});
                        }
                        return accepted;
                    });
                    break;
                case 2:
                    submit_item(item_flags, none, [&](const Spec& spec) {
                        if (dated) {
                            batcher.post(deadline, spec);
                        } else {
                            batcher.post(spec);
                        }
                        return accepted;
                    });
                    break;
                case 3:
                    submit_item(
                        item_flags, none,
                        [&](const Spec& spec) {
                            return from(dated ? batcher.try_submit(deadline, spec)
                                              : batcher.try_submit(spec));
                        },
                        false);
                    break;
                case 4:
                    submit_item(
                        item_flags, by_callback,
                        [&](const Spec& spec) {
                            return from(
                                dated ? batcher.try_submit(deadline, spec, Recorder{&run, spec.id})
                                      : batcher.try_submit(spec, Recorder{&run, spec.id}));
                        },
                        false);
                    break;
                case 5:
                    submit_item(
                        item_flags, by_handle,
                        [&](const Spec& spec) {
                            Status s = unknown;
                            if (dated) {
                                auto result = batcher.try_submit_handle(deadline, spec);
                                s = from(result.status);
                                handle = std::move(result.handle);
                            } else {
                                s = from(batcher.try_submit(spec, handle));
                            }
                            keep_handle(spec.id);
                            return s;
                        },
                        false);
                    break;
                case 6:
                    submit_item(item_flags, none, [&](const Spec& spec) {
                        return from(
                            dated ? batcher.submit_for(deadline, spec, std::chrono::nanoseconds(0))
                                  : batcher.submit_for(spec, std::chrono::nanoseconds(0)));
                    });
                    break;
                case 7:
                    submit_item(item_flags, by_callback, [&](const Spec& spec) {
                        return from(dated ? batcher.submit_for(deadline, spec,
                                                               Recorder{&run, spec.id},
                                                               std::chrono::microseconds(10))
                                          : batcher.submit_for(spec, Recorder{&run, spec.id},
                                                               std::chrono::microseconds(10)));
                    });
                    break;
                case 8:
                    submit_item(item_flags, by_handle, [&](const Spec& spec) {
                        Status s = unknown;
                        if (dated) {
                            auto result = batcher.submit_for_handle(deadline, spec,
                                                                    std::chrono::nanoseconds(0));
                            s = from(result.status);
                            handle = std::move(result.handle);
                        } else {
                            s = from(batcher.submit_for(spec, handle, std::chrono::nanoseconds(0)));
                        }
                        keep_handle(spec.id);
                        return s;
                    });
                    break;
                case 9:
                    batcher.flush();
                    if (!closed) {
                        model.seal();
                    }
                    break;
                case 10:
#if MICROBATCH_FUZZ_AVOID_KNOWN_BUGS
                    if (!deterministic || (closed && buffers == 1)) {
                        batcher.flush();
                        if (!closed) {
                            model.seal();
                        }
                        break;
                    }
#endif
                    batcher.wait_idle();
                    if (!closed) {
                        model.seal();
                    }
                    break;
                case 11:
                    batcher.close();
                    if (!closed) {
                        model.seal();
                    }
                    closed = true;
                    FUZZ_CHECK(batcher.is_closed());
                    break;
                case 12:
                    if (delay_mode == DelayMode::tiny) {
                        clock.advance(tiny_delay);
                        if (!closed) {
                            model.seal();  // the batch opened before this advance has expired
                        }
                    }
                    break;
                case 13: {
                    // Takes effect from the next batch: the model's next bound.
                    const std::size_t new_size = 1 + input.byte() % batch_size;
                    batcher.set_max_batch_size(new_size);
                    model.current = new_size;
                    FUZZ_CHECK(batcher.max_batch_size() == new_size);
                    break;
                }
                case 14: {
                    // In a deterministic run every batch has finished before the next decision
                    // (inline executor), so no limit >= 1 changes what the model predicts.
                    const std::uint8_t limit = input.byte();
                    batcher.set_max_in_flight(limit % 4 == 3 ? Options::unlimited_in_flight
                                                             : limit % 4);
                    FUZZ_CHECK(batcher.max_in_flight() >= 1);
                    break;
                }
                default: {
                    // Issue 13: a bulk submission for bytes >= 64; otherwise statistics and
                    // (issue 11) a cancel of a kept handle, picked by the same byte.
                    const std::uint8_t pick = input.byte();
                    if (pick >= 64) {
                        submit_bulk(pick);
                        break;
                    }
                    (void)batcher.stats();
                    (void)batcher.pending();
                    if (handles.empty()) {
                        break;
                    }
                    auto& entry = handles[pick % handles.size()];
                    const std::uint32_t id = entry.first;
                    const bool wins = deterministic && !closed && model.cancel_wins(id);
                    const bool won = entry.second.cancel();
                    if (deterministic) {
                        FUZZ_CHECK(won == wins);
                    }
                    if (won) {
                        FUZZ_CHECK(run.cancel_won[id].load() == 0);  // a second cancel loses
                        FUZZ_CHECK(entry.second.ready());
                        run.cancel_won[id].store(1);
                        model.cancelled.push_back(id);
                    }
                    break;
                }
            }
        }
        batcher.close();
        if (!closed) {
            model.seal();
        }

        // ---- Invariants after close() ----------------------------------------------------------
        for (auto& entry : handles) {
            const std::uint32_t id = entry.first;
            Handle<int>& handle = entry.second;
            FUZZ_CHECK(status[id] == accepted);
            FUZZ_CHECK(handle.ready());
            Outcome<int> outcome = [&handle]() {
                try {
                    return Outcome<int>(handle.get());
                } catch (...) {
                    return Outcome<int>(std::current_exception());
                }
            }();
            FUZZ_CHECK(outcome_fits(run, id, outcome));
            run.completions[id].fetch_add(1);
        }
        FUZZ_CHECK(run.bad_outcomes.load() == 0);
        FUZZ_CHECK(run.empty_batches.load() == 0);
        FUZZ_CHECK(run.oversized_batches.load() == 0);

        std::uint64_t accepted_count = 0;
        std::uint64_t full_count = 0;
        std::uint64_t closed_count = 0;
        std::uint64_t hole_count = 0;
        std::uint64_t move_failures = 0;
        std::uint64_t not_tried_count = 0;
        std::uint64_t expired_count = 0;
        std::uint64_t infeasible_count = 0;
        std::uint64_t cancelled_count = 0;
        std::uint64_t cost_count = 0;       // CostLimitError (issue 12)
        std::uint64_t accepted_cost = 0;    // the cost of every accepted item
        std::uint64_t oversized_count = 0;  // accepted items above max_batch_cost
        for (std::uint32_t id = 0; id < next_id; ++id) {
            const int processed = run.processed[id].load();
            const int completions = run.completions[id].load();
            switch (status[id]) {
                case accepted:
                    ++accepted_count;
                    accepted_cost += weighted ? item_cost(id) : 0;
                    oversized_count +=
                        weighted && max_batch_cost != 0 && item_cost(id) > max_batch_cost ? 1 : 0;
                    if (run.cancel_won[id].load() != 0 || run.due[id].load() != 0) {
                        // Removed when its batch formed: never processed, never moved.
                        FUZZ_CHECK(processed == 0);
                        ++(run.cancel_won[id].load() != 0 ? cancelled_count : expired_count);
                    } else if (processed == 0) {
                        // Not processed: only an item moved during compaction may fail so.
                        FUZZ_CHECK((flags[id] & fragile) != 0);
                        ++move_failures;
                        if (delivery[id] != none) {
                            FUZZ_CHECK(run.move_failed[id].load() == 1);
                        }
                    } else {
                        // Isolation passes the items of a failed batch again (checked call by
                        // call below).
                        FUZZ_CHECK(processed == 1 || (isolate && processed > 1));
                    }
                    FUZZ_CHECK(completions == (delivery[id] == none ? 0 : 1));
                    break;
                case rejected_full:
                case rejected_closed:
                case rejected_hole:
                case rejected_infeasible:
                case rejected_cost:
                    cost_count += status[id] == rejected_cost ? 1 : 0;
                    infeasible_count += status[id] == rejected_infeasible ? 1 : 0;
                    full_count += status[id] == rejected_full ? 1 : 0;
                    closed_count += status[id] == rejected_closed ? 1 : 0;
                    hole_count += status[id] == rejected_hole ? 1 : 0;
                    FUZZ_CHECK(processed == 0);
                    FUZZ_CHECK(completions == 0);
                    break;
                case not_tried:
                    ++not_tried_count;
                    FUZZ_CHECK(processed == 0);
                    FUZZ_CHECK(completions == 0);
                    break;
                case unknown:
                    FUZZ_CHECK(false);
            }
        }

        // Each batch's calls (the batch, then its re-runs) and its items' fates, replayed.
        std::uint64_t failed_batches = 0;
        std::uint64_t isolated_batches = 0;
        std::uint64_t runs = 0;
        std::uint64_t runs_failed = 0;
        std::uint64_t items_failed = move_failures;
        std::uint64_t items_failed_individually = 0;
        {
            std::lock_guard<std::mutex> lock(run.log_mutex);
            for (const auto& entry : run.calls) {
                const std::vector<std::vector<std::uint32_t>>& calls = entry.second;
                Expected expected;
                expect_calls(calls.front(), 0, flags, per_item, isolate, depth, expected);
                FUZZ_CHECK(calls == expected.calls);
                bool batch_failed = false;
                for (const std::uint32_t id : calls.front()) {
                    batch_failed = batch_failed || (flags[id] & (poison | short_)) != 0;
                }
                failed_batches += batch_failed ? 1 : 0;
                isolated_batches += expected.isolated ? 1 : 0;
                runs += calls.size() - 1;
                runs_failed += expected.runs_failed;
                for (const auto& fate : expected.verdicts) {
                    FUZZ_CHECK(run.verdict[fate.first].load() == fate.second);
                    if (fate.second == succeeded) {
                        continue;
                    }
                    ++items_failed;
                    // Alone: by its own outcome in a batch that returned, or in a re-run.
                    items_failed_individually +=
                        expected.isolated || fate.second == failed_item ? 1 : 0;
                }
            }
        }

        const microbatch::Stats stats = batcher.stats();
        FUZZ_CHECK(stats.items_failed_individually == items_failed_individually);
        FUZZ_CHECK(stats.batches_isolated == isolated_batches);
        FUZZ_CHECK(stats.isolation_runs == runs);
        FUZZ_CHECK(stats.isolation_runs_failed == runs_failed);
        FUZZ_CHECK(stats.items_submitted == next_id - not_tried_count);
        FUZZ_CHECK(stats.items_accepted == accepted_count);
        FUZZ_CHECK(stats.items_rejected_full == full_count);
        FUZZ_CHECK(stats.items_rejected_closed == closed_count);
        FUZZ_CHECK(stats.items_rejected_error == hole_count + cost_count);
        // Issue 12: every accepted item's cost went through a completed batch and left the
        // pending total; no batch of several items exceeded the cost bound.
        FUZZ_CHECK(run.over_cost_batches.load() == 0);
        FUZZ_CHECK(stats.item_cost_total == accepted_cost);
        FUZZ_CHECK(stats.items_oversized == oversized_count);
        FUZZ_CHECK(batcher.pending_cost() == 0);
        if (weighted && max_batch_cost != 0) {
            FUZZ_CHECK(stats.batch_item_cost_max <= std::max<std::uint64_t>(max_batch_cost, 6));
        }
        FUZZ_CHECK(stats.items_expired == expired_count);
        FUZZ_CHECK(stats.items_cancelled == cancelled_count);
        FUZZ_CHECK(stats.items_rejected_infeasible == infeasible_count);
        FUZZ_CHECK(stats.items_accepted == stats.items_processed + stats.items_failed +
                                               stats.items_expired + stats.items_cancelled);
        FUZZ_CHECK(stats.items_failed == items_failed);
        FUZZ_CHECK(stats.batches_failed == failed_batches);
        FUZZ_CHECK(stats.batch_size_max <= batch_size);
        FUZZ_CHECK(stats.callback_exceptions == 0);
        // Issue 15: every counter agrees on batches, including batches made only of holes,
        // which are dispatched and completed but have no size.
        FUZZ_CHECK(stats.batches_completed == stats.batches_dispatched());
        FUZZ_CHECK(stats.queue_delay.count == stats.batches_completed);
        FUZZ_CHECK(stats.batch_size_min <= stats.batch_size_max);
        std::uint64_t sized_batches = 0;
        for (const std::uint64_t bucket : stats.batch_size_histogram) {
            sized_batches += bucket;
        }
        FUZZ_CHECK(sized_batches <= stats.batches_completed);
        FUZZ_CHECK((sized_batches == 0) == (stats.batch_size_max == 0));
        FUZZ_CHECK((sized_batches == 0) == (stats.batch_size_min == 0));

        if (deterministic) {
            std::lock_guard<std::mutex> lock(run.log_mutex);
            FUZZ_CHECK(run.log == model.batches);
            std::uint64_t model_sized = 0;
            std::uint64_t model_min = 0;
            std::uint64_t model_max = 0;
            for (const std::size_t batch : model.sizes) {
                if (batch == 0) {
                    continue;
                }
                ++model_sized;
                model_min = model_min == 0 ? batch : std::min<std::uint64_t>(model_min, batch);
                model_max = std::max<std::uint64_t>(model_max, batch);
            }
            FUZZ_CHECK(stats.batches_completed == model.sizes.size());
            FUZZ_CHECK(sized_batches == model_sized);
            FUZZ_CHECK(stats.batch_size_min == model_min);
            FUZZ_CHECK(stats.batch_size_max == model_max);
            FUZZ_CHECK(stats.batch_item_cost_max == (weighted ? model.max_cost_seen : 0));
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    run_one(data, size);
    return 0;
}

#if defined(MICROBATCH_FUZZ_STANDALONE)
#include <fstream>
#include <iterator>

int main(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
        std::ifstream file(argv[i], std::ios::binary);
        const std::vector<char> bytes((std::istreambuf_iterator<char>(file)),
                                      std::istreambuf_iterator<char>());
        run_one(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
        std::printf("%s: ok\n", argv[i]);
    }
    return 0;
}
#endif
