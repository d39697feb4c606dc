#pragma once
/**
 * @file item_deadline.hpp
 * @brief `microbatch::ItemDeadline<Clock>`: the deadline of one submitted item, a time point of
 *        the batcher's clock or a timeout counted from the submit call.
 */

#include <chrono>
#include <cstdint>

#include "microbatch/detail/config.hpp"

namespace microbatch {

/**
 * @brief The deadline of one item, as passed to the deadline forms of `Batcher` submits
 *        (`batcher.submit(deadline, item)`, README "Deadlines").
 *
 * Converts implicitly from a `Clock::time_point` (an absolute deadline on the batcher's clock)
 * and from any `std::chrono::duration` (a timeout: the deadline is the batcher clock's time when
 * the submit call reads it, plus the timeout). A zero or negative timeout makes an item that is
 * already due; a timeout too large to add saturates at the clock's largest time point.
 *
 * @code
 * batcher.submit(std::chrono::milliseconds(5), item);           // 5 ms from now
 * batcher.post(batcher.clock().now() + std::chrono::seconds(1), item);
 * @endcode
 *
 * Thread safety: a plain value type.
 * @tparam Clock the batcher's clock (see clock.hpp).
 */
template <class Clock>
class ItemDeadline {
public:
    using time_point = typename Clock::time_point;  ///< The clock's time point type.
    using duration = typename Clock::duration;      ///< The clock's duration type.

    /// @brief An absolute deadline: the item is due at @p at.
    ItemDeadline(time_point at) noexcept  // NOLINT(google-explicit-constructor): by design
        : at_(at) {}

    /// @brief A timeout: the item is due @p timeout after the submit call reads the clock.
    template <class Rep, class Period>
    ItemDeadline(const std::chrono::duration<Rep, Period>& timeout) noexcept  // NOLINT: by design
        : relative_(true), timeout_(saturate(timeout)) {}

    /// @brief True for a timeout, false for an absolute time point.
    bool relative() const noexcept { return relative_; }

    /// @brief The deadline for an item accepted at @p now (saturating, never overflowing).
    time_point resolve(time_point now) const noexcept {
        if (!relative_) {
            return at_;
        }
        if (timeout_ > duration::zero() && now > time_point::max() - timeout_) {
            return time_point::max();
        }
        return now + timeout_;
    }

private:
    // @p timeout in the clock's ticks, rounded up; one too large saturates at duration::max().
    template <class Rep, class Period>
    static duration saturate(const std::chrono::duration<Rep, Period>& timeout) noexcept {
        // Compared in floating point, so that no integer conversion of a huge value overflows.
        const double seconds = std::chrono::duration<double>(timeout).count();
        if (seconds >= std::chrono::duration<double>(duration::max()).count()) {
            return duration::max();
        }
        if (seconds <= std::chrono::duration<double>(duration::min()).count()) {
            return duration::min();
        }
        return std::chrono::ceil<duration>(timeout);
    }

    time_point at_{};
    bool relative_ = false;
    duration timeout_{0};
};

}  // namespace microbatch
