#pragma once
/**
 * @file detail/parking_lot.hpp
 * @brief A fixed table of mutex/condition-variable pairs that waiters on many small objects
 *        share, so that those objects need no mutex of their own.
 */

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>

#include "microbatch/detail/config.hpp"

namespace microbatch::detail {

/// One waiting place: a mutex and the condition variable waiters on it sleep on.
struct alignas(cache_line_size) ParkingSpot {
    std::mutex mutex;
    std::condition_variable condition;
};

/**
 * @brief Returns the spot for the object at @p address (a hash of the address into a table of
 *        64 spots). Several objects may share a spot; waiters must re-check their own condition
 *        after every wake-up.
 *
 * Thread-safe; the table lives for the whole program (function-local static).
 */
inline ParkingSpot& parking_spot_for(const void* address) noexcept {
    static ParkingSpot spots[64];
    auto bits = reinterpret_cast<std::uintptr_t>(address);
    // Objects are at least 8-byte aligned; mix higher bits so neighbours spread out.
    bits ^= bits >> 17;
    bits *= 0x9E3779B97F4A7C15ull;
    return spots[(bits >> 58) & 63];
}

}  // namespace microbatch::detail
