#pragma once
/**
 * @file handle.hpp
 * @brief `microbatch::Handle<R>`: a future-like handle to the result of one submitted item.
 */

#include <chrono>
#include <future>
#include <type_traits>
#include <utility>

#include "microbatch/detail/config.hpp"
#include "microbatch/detail/deadline.hpp"
#include "microbatch/detail/handle_state.hpp"
#include "microbatch/errors.hpp"
#include "microbatch/outcome.hpp"

namespace microbatch {

template <class T, class R, class Clock>
class Batcher;

namespace detail {
struct HandleAccess;
}  // namespace detail

/**
 * @brief A future-like handle to the result of one item submitted with `Batcher::submit(item)`.
 *
 * Semantics follow `std::future`: `get()` waits for the item's batch to be processed, then
 * returns the item's result (or nothing, for `R = void`) or rethrows the exception the batch
 * failed with; after `get()` the handle is no longer `valid()`. `wait`, `wait_for` and
 * `wait_until` block without consuming the result. Calling anything but `valid()` on an
 * invalid handle throws `microbatch::Error`.
 *
 * A handle takes no mutex (waiters park on a small global table of condition variables) and,
 * in the steady state, no heap allocation: its shared state comes from a per-thread pool of
 * recycled blocks (detail/handle_state.hpp). When the submitting thread also drops the handles
 * (submit, get, destroy), states are reused and nothing is allocated per item; when they are
 * dropped on other threads, one block is allocated per 32 items or so. Each thread keeps at
 * most about 18 KB per result type, freed when the thread exits; a block in use lives as long as
 * any of its handles (so a long-lived handle keeps about 2 KB alive). A state's result and
 * exception are destroyed as soon as its handle and its completion are gone. Destroying a
 * handle without calling `get()` is fine; the item is still processed (only `cancel()`
 * withdraws it).
 *
 * Thread safety: one handle must not be used from two threads at once (like `std::future`); the
 * producing side (the batcher's worker) runs concurrently and safely.
 * @tparam R the item's result type (`void` for side-effect-only batch functions).
 */
template <class R>
class Handle {
public:
    /// @brief An invalid handle (valid() is false).
    Handle() noexcept = default;
    /// @brief Takes over @p other's state; @p other becomes invalid.
    Handle(Handle&& other) noexcept : state_(std::exchange(other.state_, nullptr)) {}
    /// @brief Releases the current state and takes over @p other's.
    Handle& operator=(Handle&& other) noexcept {
        if (this != &other) {
            reset();
            state_ = std::exchange(other.state_, nullptr);
        }
        return *this;
    }
    Handle(const Handle&) = delete;
    Handle& operator=(const Handle&) = delete;
    /// @brief Releases the state; does not wait (the item is processed regardless).
    ~Handle() { reset(); }

    /// @brief True if the handle refers to a pending or completed item (and get() was not called).
    bool valid() const noexcept { return state_ != nullptr; }

    /// @brief True if the result is available (get() would not block).
    bool ready() const {
        check();
        return state_->ready();
    }

    /// @brief Blocks until the result is available.
    void wait() const {
        check();
        state_->wait();
    }

    /// @brief Blocks until the result is available or @p timeout has elapsed (steady clock).
    ///        A timeout too large to add to the current time (e.g. `nanoseconds::max()`) waits
    ///        without a time limit; a zero or negative one only checks readiness.
    /// @return `std::future_status::ready` or `std::future_status::timeout`.
    template <class Rep, class Period>
    std::future_status wait_for(const std::chrono::duration<Rep, Period>& timeout) const {
        return wait_until(detail::steady_deadline_after(timeout));
    }

    /// @brief Blocks until the result is available or @p deadline has passed.
    /// @return `std::future_status::ready` or `std::future_status::timeout`.
    template <class Clock, class Duration>
    std::future_status wait_until(const std::chrono::time_point<Clock, Duration>& deadline) const {
        check();
        return state_->wait_until(deadline) ? std::future_status::ready
                                            : std::future_status::timeout;
    }

    /**
     * @brief Cancels the item if its batch has not started running: the item is then never
     *        given to `process_batch`, and this handle completes at once with a `Cancelled`
     *        error (get() throws it). Returns true if the cancel won.
     *
     * Returns false when the worker already claimed the item (it does so for every item of a
     * batch as the batch starts, before calling process_batch), or when the item has already
     * completed (processed, failed, expired): the item then runs or has run normally and its
     * result is delivered to this handle as usual. A cancelled item still occupies its slot
     * until its batch is formed, where it is dropped and counted in `Stats::items_cancelled`.
     * Dropping a handle does not cancel its item. Never blocks; allocates the error object.
     * @throws Error if the handle is not valid().
     */
    bool cancel() {
        check();
        return state_->cancel(Outcome<R>(detail::make_error_ptr(
            Cancelled("microbatch: item cancelled before its batch started"))));
    }

    /**
     * @brief Waits for the result and returns it, or rethrows the item's exception.
     *
     * The handle is invalid afterwards (the result is moved out), whether it returned or threw.
     */
    R get() {
        check();
        state_->wait();
        // Move the outcome out before letting go of the state, so that this thread, not the
        // worker that may delete the state, drops the last reference to a stored exception.
        // (libstdc++ counts exception_ptr references in code ThreadSanitizer does not see; the
        // other order is correct but reported as a race.)
        Outcome<R> outcome = std::move(state_->outcome());
        reset();
        if constexpr (std::is_void_v<R>) {
            outcome.value();
        } else {
            return std::move(outcome).value();
        }
    }

private:
    friend struct detail::HandleAccess;

    explicit Handle(detail::HandleState<R>* state) noexcept : state_(state) {}

    void check() const {
        if (state_ == nullptr) {
            MICROBATCH_THROW(
                Error("microbatch::Handle: no state (default-constructed, moved "
                      "from, or get() already called)"));
        }
    }

    void reset() noexcept {
        if (state_ != nullptr) {
            std::exchange(state_, nullptr)->release();
        }
    }

    detail::HandleState<R>* state_ = nullptr;
};

namespace detail {
/// Lets batchers other than Batcher (KeyedBatcher) make a handle from a state they created.
struct HandleAccess {
    /// A handle owning one of @p state's two references.
    template <class R>
    static Handle<R> make(HandleState<R>* state) noexcept {
        return Handle<R>(state);
    }
};
}  // namespace detail

}  // namespace microbatch
