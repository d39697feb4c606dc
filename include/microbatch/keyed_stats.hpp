#pragma once
/**
 * @file keyed_stats.hpp
 * @brief `microbatch::KeyedStats` and `microbatch::KeyStats`: snapshots of a `KeyedBatcher`'s
 *        counters, over all keys and for one key.
 */

#include <chrono>
#include <cstddef>
#include <cstdint>

#include "microbatch/detail/config.hpp"

namespace microbatch {

/**
 * @brief The counters of one live key (`KeyedBatcher::key_stats(key)`), since the key became
 *        live. Reclaiming a key drops them; its totals stay in `KeyedStats`.
 *
 * A batch is counted before its items' handles and callbacks complete, so a producer that has
 * seen an item's result also sees it counted. Thread safety: a plain value type.
 */
struct KeyStats {
    std::uint64_t items_accepted = 0;     ///< Items accepted for this key.
    std::uint64_t items_processed = 0;    ///< Items whose batch succeeded.
    std::uint64_t items_failed = 0;       ///< Items whose batch failed (process_batch threw).
    std::uint64_t batches_completed = 0;  ///< Batches run (succeeded or failed).
    std::uint64_t batches_failed = 0;     ///< Batches whose process_batch threw.
    std::size_t pending = 0;         ///< Items accepted, not finished (filling, waiting, running).
    std::size_t queued_batches = 0;  ///< Sealed batches waiting for a free worker.
    std::size_t in_flight = 0;       ///< Batches of this key running now.
    std::size_t max_batch_size = 0;  ///< The key's size bound for batches opened from now on.
    std::chrono::nanoseconds max_delay{0};  ///< The key's time bound (`max()`: none).
    /// The key's cost bound for batches opened from now on (0: none). See `KeyedStats` for the
    /// cost counters below; without a cost function every item costs 0.
    std::size_t max_batch_cost = 0;
    std::size_t pending_cost = 0;           ///< Total cost of this key's pending items.
    std::uint64_t item_cost_total = 0;      ///< Sum of the costs of this key's sealed batches.
    std::uint64_t batch_item_cost_max = 0;  ///< The largest cost of one of this key's batches.
    std::uint64_t items_oversized = 0;      ///< Items costing more than the key's cost bound.
};

/**
 * @brief A snapshot of a `KeyedBatcher`'s counters over all keys (`KeyedBatcher::stats()`).
 *
 * Taken under the batcher's mutex, except the counters workers update without it (items
 * processed and failed, batches completed and failed, callback exceptions), which may be a
 * batch ahead of the rest while batches finish. After `close()`
 * (or `wait_idle()` with no concurrent submitters) they add up:
 * `items_accepted == items_processed + items_failed`, and `batches_completed` equals the sum of
 * the per-reason batch counts, and `pending_cost == 0`. Thread safety: a plain value type.
 */
struct KeyedStats {
    std::uint64_t items_accepted = 0;         ///< Items accepted.
    std::uint64_t items_processed = 0;        ///< Items whose batch succeeded.
    std::uint64_t items_failed = 0;           ///< Items whose batch failed.
    std::uint64_t items_rejected_full = 0;    ///< Rejected `full` (try/timed submits at capacity).
    std::uint64_t items_rejected_closed = 0;  ///< Rejected because the batcher was closed.
    /// Rejected with KeyLimitError (a new key while `max_keys` keys were live).
    std::uint64_t items_rejected_key_limit = 0;
    std::uint64_t batches_completed = 0;  ///< Batches run (succeeded or failed).
    std::uint64_t batches_failed = 0;     ///< Batches whose process_batch threw (or bad results).
    std::uint64_t batches_full = 0;       ///< Batches sealed because they held their bound.
    std::uint64_t batches_deadline = 0;   ///< Sealed at their time bound with a worker free.
    /// Sealed by a finishing worker: the batch reached its time bound while every worker was
    /// busy and kept growing until a worker was free.
    std::uint64_t batches_worker_free = 0;
    std::uint64_t batches_flush = 0;        ///< Sealed by flush() or wait_idle().
    std::uint64_t batches_close = 0;        ///< Sealed by close().
    std::uint64_t callback_exceptions = 0;  ///< Exceptions thrown by callbacks (ignored).
    std::uint64_t keys_created = 0;         ///< Keys that became live (again counts anew).
    std::uint64_t keys_reclaimed = 0;       ///< Keys reclaimed after their idle timeout.
    std::size_t keys_live = 0;              ///< Keys live now.
    std::size_t pending = 0;                ///< Items accepted, not finished.
    std::size_t queued_batches = 0;         ///< Sealed batches waiting for a free worker.
    std::size_t in_flight = 0;              ///< Batches running now.
    /// Total cost of the pending items (`KeyedBatcher::pending_cost()`), the quantity
    /// `max_pending_cost` bounds. Item costs come from the constructor's cost function
    /// (`cost_by`); without one every item costs 0 and the cost counters stay 0.
    std::size_t pending_cost = 0;
    /// Sum of the costs of the batches sealed so far (counted when a batch is sealed, like the
    /// per-reason batch counts); after `close()` it equals the total cost of the accepted items.
    /// Divided by the batches sealed, the mean cost per batch.
    std::uint64_t item_cost_total = 0;
    std::uint64_t batch_item_cost_max = 0;  ///< The largest cost of one sealed batch.
    /// Items whose cost alone exceeded their key's `max_batch_cost`: each ran in a batch of its
    /// own, sealed at once (reason `full`).
    std::uint64_t items_oversized = 0;
};

}  // namespace microbatch
