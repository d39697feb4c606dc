#pragma once
/**
 * @file deadline.hpp
 * @brief Internal: now + timeout on the steady clock without overflow (Handle::wait_for and the
 *        batcher's timed submits).
 */

#include <chrono>

#include "microbatch/detail/config.hpp"  // the C++17 check comes first

namespace microbatch {
namespace detail {

/// now() + @p timeout on the steady clock; a zero or negative timeout gives now(), one too large
/// to add gives time_point::max() instead of overflowing (signed overflow is undefined).
template <class Rep, class Period>
std::chrono::steady_clock::time_point steady_deadline_after(
    const std::chrono::duration<Rep, Period>& timeout) {
    using Deadline = std::chrono::steady_clock::time_point;
    const Deadline now = std::chrono::steady_clock::now();
    if (timeout <= std::chrono::duration<Rep, Period>::zero()) {
        return now;
    }
    // Compared in floating point, so that no integer conversion of a huge timeout overflows.
    if (std::chrono::duration<double>(timeout) >=
        std::chrono::duration<double>(Deadline::max() - now)) {
        return Deadline::max();
    }
    return now + std::chrono::ceil<Deadline::duration>(timeout);
}

}  // namespace detail
}  // namespace microbatch
