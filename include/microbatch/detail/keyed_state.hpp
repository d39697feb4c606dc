#pragma once
/**
 * @file detail/keyed_state.hpp
 * @brief KeyedBatcher internals: the per-key state, the batch storage (items and their
 *        completions) and the timer's entries. Plain data guarded by the batcher's mutex,
 *        except a batch's items and completions, which belong to the one worker running it.
 */

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "microbatch/batch.hpp"
#include "microbatch/detail/completion.hpp"
#include "microbatch/detail/config.hpp"

namespace microbatch::detail {

template <class Key, class T, class R>
struct KeyState;

/// The counters a worker updates when its batch ran, without taking the batcher's mutex (one
/// lock per batch fewer, where producers take it per item). relaxed: independent counters; a
/// producer that saw an item's result reads them after the handle's or callback's
/// synchronisation, which orders the increments (made before the items complete) before it.
struct WorkerCounters {
    std::atomic<std::uint64_t> items_processed{0};      ///< Items whose batch succeeded.
    std::atomic<std::uint64_t> items_failed{0};         ///< Items whose batch failed.
    std::atomic<std::uint64_t> batches_completed{0};    ///< Batches run.
    std::atomic<std::uint64_t> batches_failed{0};       ///< Batches that failed.
    std::atomic<std::uint64_t> callback_exceptions{0};  ///< Callbacks that threw.

    /// Counts one batch of @p count items that failed or not.
    void batch_ran(std::size_t count, bool failed) noexcept {
        batches_completed.fetch_add(1, std::memory_order_relaxed);
        if (failed) {
            batches_failed.fetch_add(1, std::memory_order_relaxed);
            items_failed.fetch_add(count, std::memory_order_relaxed);
        } else {
            items_processed.fetch_add(count, std::memory_order_relaxed);
        }
    }
};

/**
 * @brief One batch of one key: from its first item (open) through sealed and queued to running.
 *
 * Items are contiguous (`items`); `completions[i]` holds item i's callback or handle, if any.
 * Both grow with the items (doubling from 16, up to the bound) instead of being reserved for the
 * bound when the batch opens, so that many keys with small partial batches cost memory in
 * proportion to their items. Recycled through the batcher's free list, keeping their storage.
 */
template <class Key, class T, class R>
struct KeyedBatch {
    std::vector<T> items;                          ///< The items, in acceptance order.
    std::unique_ptr<Completion<R>[]> completions;  ///< At least one slot per item.
    std::size_t completion_slots = 0;              ///< Size of `completions`.
    std::size_t bound = 0;                         ///< Size bound it opened with.
    std::size_t cost_bound = 0;                    ///< Cost bound it opened with (0: none).
    std::size_t cost = 0;                          ///< Total cost of its items.
    std::size_t count = 0;                         ///< Items it ran with (set by the worker).
    bool any_completion = false;                   ///< Some slot holds a completion.
    KeyState<Key, T, R>* key = nullptr;            ///< Its key (live while it is pending).
    std::int64_t opened_at = 0;                    ///< Clock ticks of its first item.
    std::uint64_t generation = 0;                  ///< Unique per opening (timer entries).
    std::uint64_t first_ticket = 0;                ///< Acceptance number of its first item.
    std::uint64_t sequence = 0;                    ///< Seal order over all keys (Batch::sequence).
    DispatchReason reason = DispatchReason::full;  ///< Why it was sealed.

    /// Prepares a recycled (or new) batch for @p key with size bound @p size_bound and cost
    /// bound @p cost_limit (0: none).
    void open(KeyState<Key, T, R>* owner, std::size_t size_bound, std::size_t cost_limit) noexcept {
        bound = size_bound;
        cost_bound = cost_limit;
        cost = 0;
        any_completion = false;
        key = owner;
    }

    /// Makes room for one more item (`items.size() < bound`) and returns its completion slot.
    /// @throws std::bad_alloc, or what moving `T` throws while `items` grows (then the
    ///         batch is unchanged, unless T's move constructor throws and T is not copyable).
    Completion<R>& next_slot() {
        const std::size_t index = items.size();
        if (index == items.capacity()) {
            items.reserve(grown(items.capacity()));
        }
        if (index == completion_slots) {
            const std::size_t size = grown(completion_slots);
            std::unique_ptr<Completion<R>[]> larger(new Completion<R>[size]);
            for (std::size_t i = 0; i < index; ++i) {
                if (completions[i].has_value()) {
                    larger[i].take(completions[i]);
                }
            }
            completions = std::move(larger);
            completion_slots = size;
        }
        return completions[index];
    }

private:
    std::size_t grown(std::size_t current) const noexcept {
        const std::size_t doubled = current < 8 ? 16 : 2 * current;
        return doubled < bound ? doubled : bound;
    }

public:
};

/**
 * @brief The state of one live key, owned by the batcher (reached through its key map).
 *
 * A key is *idle* when it has no open batch, no queued batch and none running; an idle key is
 * reclaimed once it has been idle for `key_idle_timeout`. At most one reclaim entry per key is
 * in the timer heap: when it comes up for a key that was busy meanwhile and is idle again, it is
 * rescheduled at `idle_since` + timeout; for a busy key it is dropped (the next idle
 * transition schedules a new one).
 */
template <class Key, class T, class R>
struct KeyState {
    /// A state for @p k with the bounds in force for it.
    KeyState(const Key& k, std::size_t size_bound, std::int64_t delay_ticks, std::size_t cost_limit)
        : key(k), max_batch_size(size_bound), max_delay(delay_ticks), max_batch_cost(cost_limit) {}

    Key key;                                    ///< Its key (a copy).
    std::size_t max_batch_size;                 ///< Bound for batches opened from now on.
    std::int64_t max_delay;                     ///< In clock ticks; < 0: none.
    std::size_t max_batch_cost;                 ///< Cost bound for batches opened from now on.
    KeyedBatch<Key, T, R>* open = nullptr;      ///< The batch being filled, if any.
    bool open_due = false;                      ///< The open batch reached its time bound.
    std::deque<KeyedBatch<Key, T, R>*> queued;  ///< Sealed, waiting for a worker.
    bool in_ring = false;                       ///< In the round-robin ring.
    std::size_t in_flight = 0;                  ///< Its batches running now.
    std::size_t pending = 0;                    ///< Accepted, unfinished items.
    std::int64_t idle_since = 0;                ///< When it last became idle (ticks).
    bool reclaim_scheduled = false;             ///< A reclaim_key entry is in the heap.
    std::size_t timer_entries = 0;              ///< Timer entries pointing at it.
    bool reclaimed = false;             ///< Removed from the map; freed with its last timer entry.
    std::uint64_t items_accepted = 0;   ///< KeyStats::items_accepted (under the mutex).
    std::size_t pending_cost = 0;       ///< Total cost of its pending items.
    std::uint64_t item_cost_total = 0;  ///< KeyStats::item_cost_total (under the mutex).
    std::uint64_t batch_item_cost_max = 0;  ///< KeyStats::batch_item_cost_max (under the mutex).
    std::uint64_t items_oversized = 0;      ///< KeyStats::items_oversized (under the mutex).
    /// The counters workers update without the mutex (see WorkerCounters).
    WorkerCounters counters;

    /// True if nothing of this key is pending.
    bool idle() const noexcept { return open == nullptr && queued.empty() && in_flight == 0; }
};

/// What a timer entry asks the timer to look at.
enum class KeyTimerKind : std::uint8_t {
    batch_due,    ///< The key's open batch of generation `stamp` becomes due.
    reclaim_key,  ///< The key may have been idle for key_idle_timeout: reclaim it.
};

/// One entry of the timer's min-heap. Entries are never removed early: a stale one (its batch
/// sealed, its key busy again) is recognised by its stamp and dropped when it comes up.
template <class Key, class T, class R>
struct KeyTimerEntry {
    std::int64_t at = 0;                          ///< Clock ticks.
    KeyState<Key, T, R>* key = nullptr;           ///< Kept alive by `timer_entries`.
    std::uint64_t stamp = 0;                      ///< Batch generation (batch_due entries).
    KeyTimerKind kind = KeyTimerKind::batch_due;  ///< What to check.

    /// Orders the heap so that the earliest entry is on top (`std::priority_queue` is a
    /// max-heap).
    bool operator<(const KeyTimerEntry& other) const noexcept { return at > other.at; }
};

}  // namespace microbatch::detail
