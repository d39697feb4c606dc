#pragma once
/**
 * @file submit_result.hpp
 * @brief `microbatch::SubmitResult<R>`: what `Batcher::try_submit_handle` and
 *        `Batcher::submit_for_handle` return, the status and, on acceptance, the item's handle;
 *        `microbatch::BulkResult`: what the non-blocking and timed bulk submissions return.
 */

#include <cstddef>

#include "microbatch/errors.hpp"
#include "microbatch/handle.hpp"

namespace microbatch {

/**
 * @brief The status of a non-blocking or timed submission together with the item's handle.
 *
 * @tparam R the batcher's per-item result type.
 *
 * @code
 * if (auto submitted = batcher.try_submit_handle(item)) {
 *     use(submitted.handle.get());
 * } else if (submitted.status == microbatch::SubmitStatus::full) {
 *     // shed load; `item` was left untouched
 * }
 * @endcode
 *
 * Move-only (it owns the handle). Not thread-safe: one thread uses a given result.
 */
template <class R>
struct SubmitResult {
    /// `accepted`, or why the item was rejected (`full`, `closed`).
    SubmitStatus status = SubmitStatus::closed;
    /// The item's handle when `status` is `accepted`; otherwise empty.
    Handle<R> handle;

    /// @brief True if the item was accepted (then `handle` will deliver its outcome).
    bool accepted() const noexcept { return status == SubmitStatus::accepted; }
    /// @brief Same as accepted().
    explicit operator bool() const noexcept { return accepted(); }
};

/**
 * @brief The outcome of a non-blocking or timed bulk submission (`Batcher::try_post_n`,
 *        `Batcher::post_n_for`, ...): how many of the items were accepted, and why the rest
 *        were not.
 *
 * Bulk submissions accept a prefix: items `[0, accepted)` of the range were accepted (each
 * will be processed exactly once, in order), items `[accepted, n)` were left untouched.
 *
 * @code
 * auto result = batcher.try_post_n(rows.begin(), rows.size());
 * if (!result) {
 *     retry_later(rows.begin() + result.accepted, rows.end());  // status says why
 * }
 * @endcode
 *
 * A plain value type; not synchronised.
 */
struct BulkResult {
    /// `accepted` if every item was accepted; otherwise why the first rejected item was
    /// rejected (`full`: capacity, or the timeout ran out; `closed`).
    SubmitStatus status = SubmitStatus::accepted;
    /// The number of items accepted: a prefix of the range.
    std::size_t accepted = 0;

    /// @brief True if every item of the range was accepted.
    bool all_accepted() const noexcept { return status == SubmitStatus::accepted; }
    /// @brief Same as all_accepted().
    explicit operator bool() const noexcept { return all_accepted(); }
};

}  // namespace microbatch
