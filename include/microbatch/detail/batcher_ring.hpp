#pragma once
/**
 * @file batcher_ring.hpp
 * @brief Batcher internals: the head word that producers claim slots on, and the lanes and
 *        batch buffers it points into (independent of the item type).
 */

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <mutex>

#include "microbatch/batch.hpp"
#include "microbatch/detail/config.hpp"
#include "microbatch/detail/deadline.hpp"

namespace microbatch {
namespace detail {

/// The head word: [closed:1][tag:23][buffer:16][count:24].
namespace head_word {
// One 64-bit atomic per lane describes the lane's batch being filled, so a producer claims a
// slot with a single fetch_add: [closed:1][tag:23][buffer:16][count:24]. `count` is the
// number of slots claimed in buffer `buffer` (an index into buffers_, which all lanes
// share); values >= batch_size_ mean "not accepting" (sealed, awaiting a free buffer, or
// closed). `tag` is the batch's lane sequence number modulo 2^23 and defends the
// compare-exchanges of the timer and flush against ABA on a reused buffer.
inline constexpr unsigned buffer_shift = 24;
inline constexpr unsigned tag_shift = 40;
inline constexpr std::uint64_t count_mask = (std::uint64_t{1} << buffer_shift) - 1;
inline constexpr std::uint64_t buffer_mask = 0xFFFF;
inline constexpr std::uint64_t tag_mask = (std::uint64_t{1} << 23) - 1;
inline constexpr std::uint64_t closed_bit = std::uint64_t{1} << 63;
// Count stored by partial seals; above any batch size (<= 2^22) with ample room for the
// stray increments of producers that arrive while a batch is sealed.
inline constexpr std::uint64_t sealed_count = std::uint64_t{1} << 23;
inline constexpr std::size_t max_buffers = buffer_mask + 1;
inline constexpr std::int64_t unset_time = std::numeric_limits<std::int64_t>::min();
inline constexpr std::uint32_t no_buffer = std::numeric_limits<std::uint32_t>::max();
inline std::uint64_t make_head(std::uint64_t sequence, std::uint64_t buffer) noexcept {
    return ((sequence & tag_mask) << tag_shift) | (buffer << buffer_shift);
}
inline std::uint32_t buffer_of(std::uint64_t head) noexcept {
    return static_cast<std::uint32_t>((head >> buffer_shift) & buffer_mask);
}
inline std::uint64_t tag_of(std::uint64_t head) noexcept {
    return (head >> tag_shift) & tag_mask;
}

}  // namespace head_word

// Each lane owns a ring of buffers_per_lane_ consecutive buffers. A buffer's life: opened
// (published in its lane's head) -> filled by producers -> sealed (by the producer that
// took the last slot, the timer, flush or close) -> run by a worker -> finished -> reopened
// once its predecessor in its lane's round-robin order has been sealed too. Lane batch
// number s always uses the lane's buffer s % buffers_per_lane_.
struct BatcherLane {
    // Every producer of the lane hits head: it has a cache line to itself.
    alignas(cache_line_size) std::atomic<std::uint64_t> head{0};
    alignas(cache_line_size) std::atomic<std::uint64_t> next_sequence{0};
    std::uint32_t first_buffer = 0;  // index in buffers_ of the lane's buffer 0
    // Capacity in items: the lane's share of `capacity` not yet granted to a batch. A
    // buffer opens with min(batch size, free_items) slots; sealing returns the slots its
    // batch did not use, finishing returns the rest. Written once or twice per batch.
    std::atomic<std::int64_t> free_items{0};
    // The lane's next buffer, when it could not open for want of free items (no_buffer
    // otherwise): the thread returning items opens it. seq_cst handshake, see try_open().
    std::atomic<std::uint32_t> parked{head_word::no_buffer};
    // With Options::max_batch_cost only: serialises the lane's claims, so that a batch's
    // total item cost is known exactly when the next item asks whether it fits
    // (detail/batcher_cost.hpp). Held for the claim only.
    std::mutex fill_mutex;
};

struct alignas(cache_line_size) BatcherBuffer {
    std::atomic<std::int64_t> opened_at{
        head_word::unset_time};  // clock ticks when slot 0 was claimed
    // First slot of the current use: max_batch_size (as constructed) - the batch size in
    // force when the buffer opened; the head's count starts here, so a batch is full when
    // the count reaches the constructed size whatever the current one. Written by the
    // opener before the head CAS that publishes the buffer; relaxed accesses suffice for
    // every reader that acquired that head (the stats() reader tolerates a stale value).
    std::atomic<std::uint32_t> start{0};
    std::atomic<std::uint64_t> sequence{0};           // batch number of the current use
    std::atomic<std::uint64_t> finished_sequence{0};  // batch number of the last finished use
    std::atomic<std::uint32_t> arrivals{0};           // "free" + "predecessor sealed" events
    std::atomic<std::uint32_t> finish_parties{0};     // worker + poster, see finish_party()
    // Earliest item deadline (clock ticks) of the current use, max() if none: lowered only by
    // submits with a deadline (Batcher::note_item_deadline), reset when the buffer opens.
    std::atomic<std::int64_t> earliest_deadline{std::numeric_limits<std::int64_t>::max()};
    // Total item cost (cost_by) of the current use: added by producers after their claim and
    // before publishing their slot, taken (and reset to 0) by the worker when the batch ends.
    std::atomic<std::uint64_t> cost{0};
    // Written by the sealer before the batch is handed to the executor, read by the worker.
    std::uint32_t size = 0;
    DispatchReason reason = DispatchReason::full;
    std::int64_t dispatched_at = 0;
    std::uint64_t number = 0;  // Batch::sequence(): the batcher-wide dispatch number
};

}  // namespace detail
}  // namespace microbatch
