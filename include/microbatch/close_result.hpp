#pragma once
/**
 * @file close_result.hpp
 * @brief `microbatch::CloseResult`: what `Batcher::close_for` reports when it gives up
 *        waiting.
 */

#include <cstddef>

#include "microbatch/detail/config.hpp"

namespace microbatch {

/**
 * @brief What `Batcher::close_for` reports.
 */
struct CloseResult {
    bool completed = true;            ///< True if every accepted item finished before the timeout.
    std::size_t items_in_flight = 0;  ///< Accepted items not yet finished when it gave up.
    std::size_t batches_in_flight = 0;  ///< Batches not yet finished when it gave up.
};

}  // namespace microbatch
