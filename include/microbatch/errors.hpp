#pragma once
/**
 * @file errors.hpp
 * @brief The exception types microbatch throws and the status codes of non-throwing calls.
 */

#include "microbatch/version.hpp"  // the C++17 check

#include <cstddef>
#include <stdexcept>
#include <string>

namespace microbatch {

/**
 * @brief Base class of every error microbatch reports at run time.
 *
 * Misconfiguration is reported with `std::invalid_argument` instead (at construction).
 */
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/**
 * @brief Thrown when work is submitted to a batcher or pool that is closed (or closing).
 *
 * Producers blocked in `submit` on a full batcher wake with this error when it is closed.
 * The item passed to the failing call is left untouched (not moved from).
 */
class ClosedError : public Error {
public:
    using Error::Error;
};

/**
 * @brief Thrown by the blocking bulk submissions (`Batcher::post_n`, `Batcher::submit_n`) when
 *        the batcher is closed before every item was accepted.
 *
 * The first `accepted()` items of the range were accepted (they are processed as usual); the
 * rest were left untouched. Catching `ClosedError` catches it too.
 */
class BulkClosedError : public ClosedError {
public:
    /// @brief @p message as `what()`; @p accepted items of the range were accepted.
    BulkClosedError(const std::string& message, std::size_t accepted)
        : ClosedError(message), accepted_(accepted) {}
    /// @brief How many items of the range (a prefix) were accepted before the close.
    std::size_t accepted() const noexcept { return accepted_; }

private:
    std::size_t accepted_;
};

/**
 * @brief Delivered to every item of a batch whose `process_batch` returned a result vector
 *        whose length differs from the batch size; in the per-item form
 *        (`Batcher::outcome_result_type`), also to the one item whose `Outcome` holds neither a
 *        value nor an exception.
 */
class ResultCountError : public Error {
public:
    using Error::Error;
};

/**
 * @brief Thrown when a call would deadlock because it is made from inside the batcher's own
 *        `process_batch` (for example `close()` or `wait_idle()`, which wait for that very
 *        batch, or a blocking `submit` that finds the batcher full), also when that batch runs
 *        further out on the same thread, around another batcher's batch (see `Batcher`,
 *        "Re-entrancy").
 */
class ReentrancyError : public Error {
public:
    using Error::Error;
};

/**
 * @brief Delivered (through the item's handle or callback) to an item whose deadline had passed
 *        when its batch was formed (with `Options::admission_control`: would pass before the
 *        batch's predicted end): the item was removed from the batch and never reached
 *        `process_batch` (see README "Deadlines").
 */
class DeadlineExceeded : public Error {
public:
    using Error::Error;
};

/**
 * @brief Delivered through its handle to an item cancelled with `Handle::cancel()` before its
 *        batch was dispatched: the item never reached `process_batch`.
 */
class Cancelled : public Error {
public:
    using Error::Error;
};

/**
 * @brief Thrown by the throwing submit forms (`submit`, `post`) with a deadline when admission
 *        control (`Options::admission_control`) predicts the item cannot finish by its deadline;
 *        the non-throwing forms return `SubmitStatus::infeasible` instead. The item is left
 *        untouched (not moved from).
 */
class DeadlineInfeasible : public Error {
public:
    using Error::Error;
};

/**
 * @brief Thrown by every submit form (the non-throwing ones included, since waiting could never
 *        help) when an item's cost (`cost_by`) exceeds `max_pending_cost`, the bound on the total
 *        cost of pending items: the item could never be admitted. The item is left untouched.
 *        The message names the item's cost and the bound. With `admission_control`, an item
 *        with a deadline is judged before it is weighed (as a bulk run is judged whole): one
 *        refused as infeasible is refused so, untouched, whatever its cost.
 */
class CostLimitError : public Error {
public:
    using Error::Error;
};

/**
 * @brief Outcome of a non-throwing submission (`try_submit`, `submit_for`).
 */
enum class SubmitStatus {
    accepted,  ///< The item was accepted and will be processed exactly once.
    full,      ///< Rejected: the batcher was at capacity (or the timeout expired while it was).
    closed,    ///< Rejected: the batcher is closed.
    /// Rejected by admission control (`Options::admission_control`): the item's predicted
    /// completion is after its deadline.
    infeasible,
};

/// Returns a stable lower-case name for @p status ("accepted", "full", "closed",
/// "infeasible").
constexpr const char* to_string(SubmitStatus status) noexcept {
    switch (status) {
        case SubmitStatus::accepted:
            return "accepted";
        case SubmitStatus::full:
            return "full";
        case SubmitStatus::closed:
            return "closed";
        case SubmitStatus::infeasible:
            return "infeasible";
    }
    return "unknown";
}

}  // namespace microbatch
