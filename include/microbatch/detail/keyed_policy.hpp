#pragma once
/**
 * @file detail/keyed_policy.hpp
 * @brief KeyedBatcher internals: its decisions as pure functions (when a key's batch is full or
 *        due, which key's batch a free worker takes next), unit-tested without threads in
 *        tests/test_keyed_batcher.cpp.
 *
 * **Sealing** (check_key_batch): a key's open batch with n items, bound B, opened at t0 with
 * time bound D is `full` when n >= B (sealed at once, whatever the workers do: it cannot grow),
 * or when its total cost reaches the key's cost bound (cost_full; an item that would overflow it
 * seals the batch first, cost_seals_first), `due` when now >= t0 + D (it goes into the round-robin
 * ring and is sealed when a worker takes it, growing meanwhile), otherwise `filling` until t0 + D.
 * D < 0 means no time bound.
 *
 * **Dispatch** (RoundRobinRing + decide_key_dispatch): keys with work (sealed batches waiting,
 * or a due open batch) sit in a FIFO ring, each at most once. While fewer than max_in_flight
 * batches run, the front key gives one batch (its oldest sealed batch, else its due open batch
 * sealed now) and goes to the back if it has more. So when workers are scarce, n keys with
 * work each get one batch in every n dispatched, whatever their arrival rates.
 */

#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>

#include "microbatch/batch.hpp"
#include "microbatch/detail/config.hpp"

namespace microbatch::detail {

/// The state of a key's open batch (see the file comment).
enum class KeyBatchState {
    empty,    ///< No open batch (or no item in it).
    filling,  ///< Below its bound and not yet due: look again at `due_at`.
    due,      ///< Reached its time bound: seal it when a worker takes it.
    full,     ///< Holds its bound: seal it now.
};

/// What check_key_batch answers.
struct KeyBatchCheck {
    /// Marks "no time": the batch has no time bound.
    static constexpr std::int64_t never = std::numeric_limits<std::int64_t>::max();
    KeyBatchState state = KeyBatchState::empty;  ///< The verdict.
    std::int64_t due_at = never;                 ///< When a `filling` batch becomes due.
};

/// @p opened_at + @p delay without overflow (`never` when @p delay < 0 or the sum overflows).
inline std::int64_t key_due_time(std::int64_t opened_at, std::int64_t delay) noexcept {
    if (delay < 0 || opened_at > KeyBatchCheck::never - delay) {
        return KeyBatchCheck::never;
    }
    return opened_at + delay;
}

/**
 * @brief The state of an open batch holding @p count items with size bound @p bound, opened at
 *        @p opened_at, time bound @p delay (< 0: none), at time @p now. Pure; O(1).
 */
inline KeyBatchCheck check_key_batch(std::size_t count, std::size_t bound, std::int64_t opened_at,
                                     std::int64_t delay, std::int64_t now) noexcept {
    KeyBatchCheck check;
    if (count == 0) {
        return check;
    }
    if (count >= bound) {
        check.state = KeyBatchState::full;
        return check;
    }
    check.due_at = key_due_time(opened_at, delay);
    check.state = now >= check.due_at ? KeyBatchState::due : KeyBatchState::filling;
    return check;
}

/**
 * @brief Cost bound (`max_batch_cost`): true if an item of cost @p item_cost must not join the
 *        open batch of @p open_items items and total cost @p open_cost under cost bound
 *        @p bound (0: none), because it would take the total above the bound: the open batch is
 *        sealed first (reason `full`) and the item starts the next one. An empty batch takes
 *        any item (an oversized one then fills it alone). Pure; O(1); no overflow.
 */
inline bool cost_seals_first(std::size_t open_items, std::size_t open_cost, std::size_t item_cost,
                             std::size_t bound) noexcept {
    return bound != 0 && open_items != 0 && (open_cost >= bound || item_cost > bound - open_cost);
}

/// True if a batch of total cost @p cost is full by cost bound @p bound (0: none): sealed at
/// once. Zero-cost items never fill a batch by cost. Pure.
inline bool cost_full(std::size_t cost, std::size_t bound) noexcept {
    return bound != 0 && cost != 0 && cost >= bound;
}

/// True if an item of cost @p item_cost exceeds cost bound @p bound (0: none) on its own: it
/// gets a batch of its own, sealed at once. Pure.
inline bool cost_oversized(std::size_t item_cost, std::size_t bound) noexcept {
    return bound != 0 && item_cost > bound;
}

/// True if an item of cost @p item_cost fits next to @p pending_cost of pending items under the
/// pending cost bound @p bound (0: none). Pure; no overflow.
inline bool pending_cost_fits(std::size_t pending_cost, std::size_t item_cost,
                              std::size_t bound) noexcept {
    return bound == 0 || (pending_cost <= bound && item_cost <= bound - pending_cost);
}

/// Who hands out a batch: the reason a due open batch is sealed with depends on it.
enum class KeyedTrigger {
    producer,         ///< A submit (a batch filled, or an item opened a batch due at once).
    timer,            ///< The timer found a batch due.
    worker_finished,  ///< A worker finished a batch and takes the next one.
    flush,            ///< flush(), wait_idle() or close().
};

/// The reason a due open batch sealed at dispatch gets: `worker_free` when a finishing worker
/// takes it (it was held past its time bound because every worker was busy), else `deadline`.
inline DispatchReason due_reason(KeyedTrigger trigger) noexcept {
    return trigger == KeyedTrigger::worker_finished ? DispatchReason::worker_free
                                                    : DispatchReason::deadline;
}

/// What a free worker takes from the key at the front of the ring.
enum class KeyDispatch {
    none,       ///< Nothing (a stale ring entry): drop the key from the ring.
    queued,     ///< Its oldest sealed batch.
    seal_open,  ///< Its due open batch, sealed now.
};

/// decide_key_dispatch's answer: what to take, and whether the key goes back into the ring.
struct KeyDispatchDecision {
    KeyDispatch take = KeyDispatch::none;  ///< What to take.
    bool requeue = false;                  ///< True: the key has more work; back of the ring.
};

/**
 * @brief The front key of the ring has @p queued sealed batches waiting and an open batch that
 *        is @p open_due or not: what a free worker takes from it. Sealed batches go first (they
 *        are older than the open one). Pure; O(1).
 */
inline KeyDispatchDecision decide_key_dispatch(std::size_t queued, bool open_due) noexcept {
    KeyDispatchDecision decision;
    if (queued > 0) {
        decision.take = KeyDispatch::queued;
        decision.requeue = queued > 1 || open_due;
    } else if (open_due) {
        decision.take = KeyDispatch::seal_open;
    }
    return decision;
}

/**
 * @brief The FIFO ring of keys with work. The caller keeps each key at most once in it (a flag
 *        per key: `push` only when the key is not in the ring, cleared by `pop`).
 *
 * Not thread-safe: the KeyedBatcher uses it under its mutex. O(1) per operation.
 */
template <class Id>
class RoundRobinRing {
public:
    /// Appends @p id at the back.
    void push(Id id) { ring_.push_back(id); }
    /// Removes and returns the front id; the ring must not be empty.
    Id pop() noexcept {
        Id id = ring_.front();
        ring_.pop_front();
        return id;
    }
    /// True if no key is waiting.
    bool empty() const noexcept { return ring_.empty(); }
    /// Keys waiting.
    std::size_t size() const noexcept { return ring_.size(); }

private:
    std::deque<Id> ring_;
};

/// True if another batch may be dispatched while @p in_flight run under limit @p max_in_flight
/// (`SIZE_MAX`: no limit). Pure.
inline bool worker_free(std::size_t in_flight, std::size_t max_in_flight) noexcept {
    return in_flight < max_in_flight;
}

}  // namespace microbatch::detail
