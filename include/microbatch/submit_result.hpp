#pragma once
/**
 * @file submit_result.hpp
 * @brief `microbatch::SubmitResult<R>`: what `Batcher::try_submit_handle` and
 *        `Batcher::submit_for_handle` return, the status and, on acceptance, the item's handle.
 */

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

}  // namespace microbatch
