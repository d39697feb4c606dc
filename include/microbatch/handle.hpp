#pragma once
/**
 * @file handle.hpp
 * @brief `microbatch::Handle<R>`: a future-like handle to the result of one submitted item.
 */

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <future>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>

#include "microbatch/detail/config.hpp"
#include "microbatch/detail/parking_lot.hpp"
#include "microbatch/errors.hpp"
#include "microbatch/outcome.hpp"

namespace microbatch {

template <class T, class R, class Clock>
class Batcher;

namespace detail {

/**
 * @brief The state a Handle shares with the batch slot that will complete it.
 *
 * Two owners (the handle and the pending completion); the last one to let go deletes it.
 * Waiters park on a shared ParkingSpot, so a state costs no mutex of its own.
 */
template <class R>
class HandleState {
public:
    /// Stores the outcome and wakes waiters. Called exactly once, by the completing worker.
    void set(Outcome<R>&& outcome) noexcept {
        outcome_.emplace(std::move(outcome));
        // acq_rel: release publishes outcome_ to the reader; acquire pairs with a waiter's
        // fetch_or so that we see its waiting bit if it set it first.
        const std::uint32_t previous = status_.fetch_or(ready_bit, std::memory_order_acq_rel);
        if ((previous & waiting_bit) != 0) {
            ParkingSpot& spot = parking_spot_for(this);
            // Taking the mutex orders this notify after the waiter's wait() began (it holds
            // the mutex from setting its bit until it sleeps), so the wake-up is not lost.
            { std::lock_guard<std::mutex> lock(spot.mutex); }
            spot.condition.notify_all();
        }
    }

    bool ready() const noexcept {
        // acquire: pairs with set()'s release so a true result makes outcome_ readable.
        return (status_.load(std::memory_order_acquire) & ready_bit) != 0;
    }

    void wait() noexcept {
        if (spin_until_ready()) {
            return;
        }
        ParkingSpot& spot = parking_spot_for(this);
        std::unique_lock<std::mutex> lock(spot.mutex);
        if (announce_waiter()) {
            return;
        }
        spot.condition.wait(lock, [this] { return ready(); });
    }

    template <class Clock, class Duration>
    bool wait_until(const std::chrono::time_point<Clock, Duration>& deadline) noexcept {
        if (spin_until_ready()) {
            return true;
        }
        ParkingSpot& spot = parking_spot_for(this);
        std::unique_lock<std::mutex> lock(spot.mutex);
        if (announce_waiter()) {
            return true;
        }
        return spot.condition.wait_until(lock, deadline, [this] { return ready(); });
    }

    Outcome<R>& outcome() noexcept { return *outcome_; }

    /// Drops one of the two references; deletes the state when it was the last.
    void release() noexcept {
        // acq_rel: the deleting side must see every write the other owner made before letting go.
        if (references_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
            delete this;
        }
    }

private:
    static constexpr std::uint32_t ready_bit = 1;
    static constexpr std::uint32_t waiting_bit = 2;

    bool spin_until_ready() const noexcept {
        // Results usually arrive within a batch's processing time; a short spin avoids a futex
        // round trip when they are nearly there.
        for (int i = 0; i < 64; ++i) {
            if (ready()) {
                return true;
            }
        }
        return false;
    }

    // Sets the waiting bit under the spot's mutex; returns true if the result is already there.
    bool announce_waiter() noexcept {
        // acq_rel: acquire so a ready result's outcome_ is visible; release is harmless.
        return (status_.fetch_or(waiting_bit, std::memory_order_acq_rel) & ready_bit) != 0;
    }

    std::atomic<std::uint32_t> status_{0};
    std::atomic<std::uint32_t> references_{2};
    std::optional<Outcome<R>> outcome_;
};

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
 * A handle costs one heap allocation per item (its shared state) and no mutex: waiters park on
 * a small global table of condition variables. Destroying a handle without calling `get()` is
 * fine; the item is still processed.
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
    /// @return `std::future_status::ready` or `std::future_status::timeout`.
    template <class Rep, class Period>
    std::future_status wait_for(const std::chrono::duration<Rep, Period>& timeout) const {
        return wait_until(std::chrono::steady_clock::now() + timeout);
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
    template <class, class, class>
    friend class Batcher;

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

}  // namespace microbatch
