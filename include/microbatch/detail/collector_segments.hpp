#pragma once
/**
 * @file detail/collector_segments.hpp
 * @brief Internal storage behind `microbatch::OrderedCollector`: a directory of geometrically
 *        growing segments that are allocated on demand and never move.
 *
 * With a first segment of B = 2^s slots, segment k holds B * 2^k slots and starts at index
 * B * (2^k - 1), so segment k of a collector covers [B(2^k - 1), B(2^(k+1) - 1)). The total
 * capacity doubles with each segment, like a vector's, but growing never copies or moves a
 * slot: a new segment is allocated and installed with one CAS into its directory entry, while
 * writers keep writing to the old ones. A directory of one entry per bit of `std::size_t` is
 * enough for every index up to `collector_max_index`, so there is no capacity limit to
 * configure and no directory to grow either.
 */

#include "microbatch/version.hpp"  // the C++17 check

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <utility>

namespace microbatch::detail {

/// Slot states. A slot goes empty -> writing (claimed by one set) -> ready (value constructed),
/// or back to empty if the value's constructor throws.
inline constexpr std::uint8_t collector_slot_empty = 0;
inline constexpr std::uint8_t collector_slot_writing = 1;
inline constexpr std::uint8_t collector_slot_ready = 2;

/// Number of directory entries: one per bit of `std::size_t`.
inline constexpr std::size_t collector_directory_size = std::numeric_limits<std::size_t>::digits;

/// Largest index a collector accepts (2^62 - 1 with a 64-bit `std::size_t`): keeps every
/// segment size and start index representable.
inline constexpr std::size_t collector_max_index = std::numeric_limits<std::size_t>::max() >> 2;

/// floor(log2(value)) for value > 0.
inline std::size_t collector_floor_log2(std::size_t value) noexcept {
    std::size_t result = 0;
    while (value >>= 1) {
        ++result;
    }
    return result;
}

/**
 * One segment: `size` uninitialised slots for `R` plus one state byte each.
 *
 * States live in their own array rather than beside each value: denser (a `std::int32_t` result
 * costs 4 + 1 bytes, not 8), and `collect()` scans them linearly.
 */
template <class R>
class CollectorSegment {
public:
    /// Allocates the slots; every state starts empty. Throws `std::bad_alloc`.
    explicit CollectorSegment(std::size_t size)
        // `new T[n]()` value-initialises: every state is collector_slot_empty (0).
        : size_(size),
          states_(new std::atomic<std::uint8_t>[size]()),
          values_(std::allocator<R>().allocate(size)) {}

    CollectorSegment(const CollectorSegment&) = delete;
    CollectorSegment& operator=(const CollectorSegment&) = delete;

    /// Destroys the values still held. Only called when no thread uses the collector.
    ~CollectorSegment() {
        destroy_values();
        std::allocator<R>().deallocate(values_, size_);
    }

    std::size_t size() const noexcept { return size_; }
    std::atomic<std::uint8_t>& state(std::size_t offset) const noexcept { return states_[offset]; }
    /// Storage for the value at @p offset; holds an `R` only while its state is ready.
    R* slot(std::size_t offset) const noexcept { return values_ + offset; }

    /// Destroys every ready value and marks its slot empty. Only called when no thread writes.
    void destroy_values() noexcept {
        for (std::size_t offset = 0; offset < size_; ++offset) {
            // relaxed: callers guarantee no concurrent writer (collect's precondition, or
            // destruction); collect() already acquired every state it moved from.
            if (states_[offset].load(std::memory_order_relaxed) == collector_slot_ready) {
                values_[offset].~R();
                states_[offset].store(collector_slot_empty, std::memory_order_relaxed);
            }
        }
    }

private:
    std::size_t size_;
    std::unique_ptr<std::atomic<std::uint8_t>[]> states_;
    R* values_;  // last member: if its allocation throws, states_ is already freed by its dtor
};

/**
 * The segment directory. Entries are null until first needed, then point at a segment that
 * lives until the table is destroyed.
 */
template <class R>
class CollectorSegments {
public:
    /// @param first_segment_size a power of two.
    explicit CollectorSegments(std::size_t first_segment_size)
        : shift_(collector_floor_log2(first_segment_size)) {
        for (auto& entry : directory_) {
            // relaxed: construction; the collector is published to other threads by whatever
            // hands it to them.
            entry.store(nullptr, std::memory_order_relaxed);
        }
    }

    CollectorSegments(const CollectorSegments&) = delete;
    CollectorSegments& operator=(const CollectorSegments&) = delete;

    ~CollectorSegments() {
        for (auto& entry : directory_) {
            // relaxed: destruction is exclusive.
            delete entry.load(std::memory_order_relaxed);
        }
    }

    /// Where index @p index lives: {segment number, offset in it}. @p index <= max index.
    std::pair<std::size_t, std::size_t> locate(std::size_t index) const noexcept {
        const std::size_t segment = collector_floor_log2((index >> shift_) + 1);
        return {segment, index - first_index(segment)};
    }

    std::size_t first_index(std::size_t segment) const noexcept {
        return ((std::size_t{1} << segment) - 1) << shift_;
    }
    std::size_t segment_size(std::size_t segment) const noexcept {
        return std::size_t{1} << (segment + shift_);
    }

    /// The segment, or null if it was never allocated. Lock-free (one load).
    CollectorSegment<R>* find(std::size_t segment) const noexcept {
        // acquire: pairs with the release half of the installing CAS, so the segment's
        // allocation and zeroed states are visible.
        return directory_[segment].load(std::memory_order_acquire);
    }

    /// The segment, allocating and installing it first if needed. Lock-free: writers that race
    /// to install the same segment each allocate one, one CAS wins, the others free theirs and
    /// use the winner's; nobody waits. Throws `std::bad_alloc`.
    CollectorSegment<R>& get_or_create(std::size_t segment) {
        if (CollectorSegment<R>* existing = find(segment)) {
            return *existing;
        }
        auto fresh = std::make_unique<CollectorSegment<R>>(segment_size(segment));
        CollectorSegment<R>* expected = nullptr;
        // acq_rel on success: release publishes the new segment (acquire is not needed but
        // keeps the failure order no stronger than the success order). acquire on failure:
        // we use the winner's segment, so we must see its construction.
        if (directory_[segment].compare_exchange_strong(
                expected, fresh.get(), std::memory_order_acq_rel, std::memory_order_acquire)) {
            return *fresh.release();
        }
        return *expected;
    }

    /// Calls `visit(segment&, first index)` for every allocated segment, lowest first.
    template <class Visit>
    void for_each_segment(Visit&& visit) const {
        for (std::size_t segment = 0; segment < collector_directory_size; ++segment) {
            if (CollectorSegment<R>* found = find(segment)) {
                visit(*found, first_index(segment));
            }
        }
    }

private:
    std::size_t shift_;  // log2 of the first segment's size
    std::atomic<CollectorSegment<R>*> directory_[collector_directory_size];
};

}  // namespace microbatch::detail
