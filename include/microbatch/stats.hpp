#pragma once
/**
 * @file stats.hpp
 * @brief `microbatch::Stats`: a snapshot of a batcher's counters and timing summaries.
 */

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>

#include "microbatch/batch.hpp"
#include "microbatch/cost_model.hpp"
#include "microbatch/detail/config.hpp"
#include "microbatch/errors.hpp"

namespace microbatch {

namespace detail {
/// The index of the highest set bit of @p value (> 0). One instruction where the compiler has a
/// builtin (it runs once per batch on the worker: the portable loop cost ~150 instructions).
inline std::size_t highest_bit(std::uint64_t value) noexcept {
#if defined(__GNUC__) || defined(__clang__)
    return 63 - static_cast<std::size_t>(__builtin_clzll(value));
#else
    std::size_t msb = 0;
    for (unsigned step = 32; step != 0; step /= 2) {
        if ((value >> (msb + step)) != 0) {
            msb += step;
        }
    }
    return msb;
#endif
}
}  // namespace detail

/**
 * @brief Count, minimum, maximum and total of a set of durations.
 *
 * Thread safety: a plain value type.
 */
struct DurationSummary {
    std::uint64_t count = 0;            ///< Number of samples.
    std::chrono::nanoseconds min{0};    ///< Smallest sample (0 when count is 0).
    std::chrono::nanoseconds max{0};    ///< Largest sample.
    std::chrono::nanoseconds total{0};  ///< Sum of all samples.

    /// @brief Mean of the samples (0 when there are none).
    std::chrono::nanoseconds mean() const noexcept {
        return count == 0
                   ? std::chrono::nanoseconds(0)
                   : std::chrono::nanoseconds(total.count() / static_cast<std::int64_t>(count));
    }
};

/**
 * @brief A latency distribution kept as a log-scale histogram: percentiles without storing
 *        samples.
 *
 * Each power of two is split into four buckets: a sample v >= 4 ns whose highest set bit is m
 * goes to bucket 4m + (the two bits below it); buckets 0-3 hold 0-3 ns. A reported percentile
 * is the upper edge of its bucket, less than 25 % above the true value. Thread safety: a plain
 * value type.
 */
struct LatencySummary {
    /// Number of buckets: four per power of two up to 2^63 ns.
    static constexpr std::size_t bucket_count = 256;

    std::uint64_t count = 0;                            ///< Number of samples.
    std::chrono::nanoseconds max{0};                    ///< Largest sample.
    std::chrono::nanoseconds total{0};                  ///< Sum of all samples.
    std::array<std::uint64_t, bucket_count> buckets{};  ///< Samples per bucket.

    /// @brief The bucket a sample of @p nanoseconds falls in. O(1).
    static std::size_t bucket_of(std::int64_t nanoseconds) noexcept {
        if (nanoseconds < 4) {
            return nanoseconds < 0 ? 0 : static_cast<std::size_t>(nanoseconds);
        }
        const auto value = static_cast<std::uint64_t>(nanoseconds);
        const std::size_t msb = detail::highest_bit(value);
        const std::size_t quarter = static_cast<std::size_t>((value >> (msb - 2)) & 3);
        return msb * 4 + quarter;
    }
    /// @brief The largest value bucket @p index holds (its upper edge). O(1).
    static std::chrono::nanoseconds bucket_upper(std::size_t index) noexcept {
        if (index < 4) {
            return std::chrono::nanoseconds(static_cast<std::int64_t>(index));
        }
        const std::size_t msb = index / 4;
        if (msb < 2) {
            return std::chrono::nanoseconds(
                3);  // buckets 4-7 are never used: values < 4 sit in 0-3
        }
        if (msb >= 62) {
            return std::chrono::nanoseconds::max();
        }
        const std::uint64_t quarter = index % 4;
        const std::uint64_t upper = ((4 + quarter + 1) << (msb - 2)) - 1;
        return std::chrono::nanoseconds(static_cast<std::int64_t>(upper));
    }
    /// @brief The mean (0 without samples).
    std::chrono::nanoseconds mean() const noexcept {
        return count == 0
                   ? std::chrono::nanoseconds(0)
                   : std::chrono::nanoseconds(total.count() / static_cast<std::int64_t>(count));
    }
    /**
     * @brief The @p q quantile (0 < q <= 1; 0.5 = median, 0.99 = p99): the upper edge of the
     *        bucket holding it, capped at `max`. 0 without samples. O(bucket_count).
     */
    std::chrono::nanoseconds percentile(double q) const noexcept {
        if (count == 0) {
            return std::chrono::nanoseconds(0);
        }
        const double wanted = q * static_cast<double>(count);
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < bucket_count; ++i) {
            seen += buckets[i];
            if (static_cast<double>(seen) >= wanted && seen != 0) {
                return std::min(bucket_upper(i), max);
            }
        }
        return max;
    }
};

/**
 * @brief A snapshot of a batcher's counters, taken by `Batcher::stats()`.
 *
 * A batch is counted (processed or failed, with its timings) as soon as `process_batch`
 * returned and before its items' handles and callbacks complete, so a producer that has seen an
 * item's result also sees the item counted. (An item that fails before its batch runs, because
 * its move constructor threw while the batch was compacted, is counted in `items_failed` before
 * its handle or callback completes, which happens while the rest of its batch still runs.)
 *
 * Sizes count a batch's accepted items: a slot whose item construction threw (a *hole*, counted
 * in `items_rejected_error`) is no item. A batch made only of holes is dispatched and completed
 * like any other (it is in `batches_dispatched()`, `batches_completed`, `queue_delay` and
 * `processing_time`, so those agree) but never reaches `process_batch` and has no size: it is
 * left out of `batch_size_min`, `batch_size_max`, the histogram, `batch_size_mean()` and
 * `batch_cost`.
 *
 * Durations are measured with the batcher's `Clock` (see clock.hpp): with a `ManualClock`, as in
 * tests, they advance only when the test advances the clock.
 *
 * Each field is read atomically, but the snapshot is not one instant across fields: while the
 * batcher runs, a batch completing during the snapshot may be counted in one field and not yet
 * in another. After `close()` or `wait_idle()` with no concurrent submitters the figures are
 * exact and add up: `items_accepted == items_processed + items_failed + items_expired +
 * items_cancelled` and `items_submitted == items_accepted + items_rejected()`.
 *
 * Expired and cancelled items (README "Deadlines") are counted when their batch is formed, just
 * before the worker completes them (an expired item's handle or callback therefore sees it
 * counted; a cancelled handle completed itself earlier, in `Handle::cancel()`).
 *
 * Thread safety: a plain value type.
 */
struct Stats {
    /// Submit calls that were accepted or rejected: accepted + rejected. A submit that throws
    /// `ReentrancyError` (a usage error) or fails to allocate its handle is in no counter.
    std::uint64_t items_submitted = 0;
    std::uint64_t items_accepted = 0;         ///< Items the batcher took responsibility for.
    std::uint64_t items_rejected_full = 0;    ///< try/timed submits refused at capacity.
    std::uint64_t items_rejected_closed = 0;  ///< Submits refused because the batcher was closed.
    /// Submits whose item construction (or callback copy) threw; each left a hole in its batch.
    /// With a cost function (`cost_by`) also items whose weighing threw or that exceed
    /// `max_pending_cost` on their own (`CostLimitError`): refused before taking a slot.
    std::uint64_t items_rejected_error = 0;
    /// Submits with a deadline refused by admission control (`SubmitStatus::infeasible`).
    std::uint64_t items_rejected_infeasible = 0;
    std::uint64_t items_processed = 0;  ///< Items of batches that succeeded.
    /// Items of failed batches (see `batches_failed`) that isolation did not save, items with
    /// a failed per-item `Outcome` (see `items_failed_individually`), and items whose move
    /// constructor threw while their batch was compacted.
    std::uint64_t items_failed = 0;
    /// Accepted items whose deadline had passed when their batch was formed: removed from the
    /// batch, completed with `DeadlineExceeded`, never given to process_batch.
    std::uint64_t items_expired = 0;
    /// Accepted items cancelled through `Handle::cancel()` before their batch started: removed
    /// from the batch, never given to process_batch.
    std::uint64_t items_cancelled = 0;

    /// Batches dispatched because all their slots were claimed (holes included, so such a
    /// batch may reach process_batch with fewer than max_batch_size items).
    std::uint64_t batches_full = 0;
    std::uint64_t batches_deadline = 0;  ///< Batches dispatched when max_delay expired.
    std::uint64_t batches_flush = 0;     ///< Batches dispatched by flush()/wait_idle().
    std::uint64_t batches_close = 0;     ///< Batches dispatched by close().
    /// Batches held past max_delay while every worker was busy, sealed when one finished.
    std::uint64_t batches_worker_free = 0;
    /// Partial batches sealed before max_delay because waiting could not pay (seal_policy.hpp).
    std::uint64_t batches_early = 0;
    /// Partial batches sealed while a worker was free because an item's deadline was near
    /// (seal_policy.hpp, rule 4b).
    std::uint64_t batches_item_deadline = 0;
    /// Batches whose processing finished (including batches made only of holes).
    std::uint64_t batches_completed = 0;
    /// Completed batches whose process_batch threw or returned the wrong number of results
    /// (`ResultCountError`): the first call on the whole batch, whatever isolation re-runs
    /// then saved (`batches_isolated`). A per-item result with failed outcomes is no failed
    /// batch.
    std::uint64_t batches_failed = 0;

    /// Smallest completed batch holding items (0 before the first).
    std::uint64_t batch_size_min = 0;
    std::uint64_t batch_size_max = 0;  ///< Largest completed batch (0 before the first).
    /// Completed batches holding items, by size: bucket k counts sizes in [2^k, 2^(k+1)).
    std::array<std::uint64_t, 24> batch_size_histogram{};

    /**
     * Per completed batch, measured with the batcher's Clock, the fill time: from the moment its
     * first item was accepted to the moment the batch was sealed. It does not include the wait for
     * a worker (`dispatch_wait`) nor the processing; an item's whole latency is in `item_latency`.
     */
    DurationSummary queue_delay;
    /// Per batch, from its seal (dispatch to the executor) to the start of process_batch: the
    /// time a sealed batch waited for a worker.
    DurationSummary dispatch_wait;
    /**
     * End-to-end latency, submit to completion, sampled once per batch on its oldest item
     * (accepted first, so the sample bounds every item of the batch from above): from the
     * moment that item was accepted to the moment its batch's handles and callbacks had all
     * completed. One sample per batch keeps clock reads off the per-item path.
     */
    LatencySummary item_latency;
    /// Per completed batch, how long process_batch ran (Clock; ~0 for a batch of holes; with
    /// `Options::isolate_failures`, a failed batch's re-runs included).
    DurationSummary processing_time;

    std::uint64_t callback_exceptions = 0;  ///< Exceptions thrown by per-item callbacks.

    // ---- Per-item outcomes and failure isolation (Options::isolate_failures) ----------------
    /**
     * Items that failed on their own while their batch's process_batch call did not fail for
     * all of them: a failed `Outcome` in a per-item result vector, or (with
     * `Options::isolate_failures`) the exception of a failing re-run. Part of `items_failed`;
     * the rest of `items_failed` are items of failed batches that were not re-run and items
     * whose move threw during compaction.
     */
    std::uint64_t items_failed_individually = 0;
    /// Failed batches (counted in `batches_failed`: their first call threw) that were re-run in
    /// halves to isolate the failing items.
    std::uint64_t batches_isolated = 0;
    /// Extra process_batch calls made by isolation, on sub-batches. Calls made in all: batches
    /// holding items (the batch-size histogram's total) plus this.
    std::uint64_t isolation_runs = 0;
    /// Those of `isolation_runs` that threw or returned the wrong number of results.
    std::uint64_t isolation_runs_failed = 0;

    /// Item costs (with a cost function, `cost_by`; all 0 without one). Not to be confused with
    /// `batch_cost`, the fit of batch *processing time*. The total cost of the items of
    /// completed batches (expired and cancelled items included: they were in the batch).
    std::uint64_t item_cost_total = 0;
    /// The largest total item cost of one completed batch.
    std::uint64_t batch_item_cost_max = 0;
    /// Items costing more than `Options::max_batch_cost` on their own, each given a batch of its
    /// own.
    std::uint64_t items_oversized = 0;

    /**
     * @brief (batch size, processing time) of every successful batch, as least-squares
     *        moments: `stats.batch_cost.fit()` estimates the cost model's α (per batch) and
     *        β (per item) from the running batcher (see cost_model.hpp).
     */
    CostModelFitter batch_cost;

    /// @brief All rejected submits.
    std::uint64_t items_rejected() const noexcept {
        return items_rejected_full + items_rejected_closed + items_rejected_error +
               items_rejected_infeasible;
    }
    /// @brief All dispatched batches.
    std::uint64_t batches_dispatched() const noexcept {
        return batches_full + batches_deadline + batches_flush + batches_close +
               batches_worker_free + batches_early + batches_item_deadline;
    }
    /// @brief Mean total item cost (`cost_by`) of completed batches (0 before the first).
    double batch_item_cost_mean() const noexcept {
        return batches_completed == 0
                   ? 0.0
                   : static_cast<double>(item_cost_total) / static_cast<double>(batches_completed);
    }
    /// @brief Mean size of completed batches holding items (0 before the first).
    double batch_size_mean() const noexcept {
        std::uint64_t sized = 0;  // batches made only of holes have no size: see above
        for (const std::uint64_t bucket : batch_size_histogram) {
            sized += bucket;
        }
        return sized == 0 ? 0.0
                          : static_cast<double>(items_processed + items_failed) /
                                static_cast<double>(sized);
    }
};

}  // namespace microbatch
