#pragma once
/**
 * @file ordered_collector.hpp
 * @brief `microbatch::OrderedCollector`: per-item results written concurrently, out of order,
 *        by many batches, collected afterwards in submission order.
 */

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "microbatch/detail/collector_segments.hpp"
#include "microbatch/detail/config.hpp"
#include "microbatch/errors.hpp"

namespace microbatch {

/**
 * @brief Slots indexed by submission position that many threads fill concurrently, and that
 *        `collect()` returns in index order as one `std::vector<R>`.
 *
 * Typical use: a producer numbers each item (`reserve_index()`, or its own sequence number)
 * before submitting it; whichever batch processes the item calls `set(index, result)`; once
 * every batch has finished, `collect()` returns all results in submission order.
 *
 * Storage is a directory of segments whose sizes double (first segment: the constructor's
 * `initial_capacity`). A write to an index beyond the allocated segments allocates the segment
 * covering it and installs it with a CAS; nothing is ever reallocated or moved, so growth never
 * stops or invalidates concurrent writers. Apart from those segments (which hold the results
 * themselves plus one state byte per slot) nothing is allocated per item.
 *
 * Progress: `set`/`emplace` are wait-free apart from the allocator and the constructor of `R`:
 * a bounded number of steps with no retry loop — one directory load; when the index's segment
 * does not exist yet, an allocation and a single CAS to install it (a writer that loses that
 * race frees its segment and uses the winner's); a single CAS to claim the slot; one store to
 * publish the value.
 *
 * @tparam R the result type; only needs to be move-constructible (`std::unique_ptr` works) —
 *         `emplace` constructs it in place from any arguments.
 * @code
 * microbatch::OrderedCollector<std::string> results;
 * // producer: auto index = results.reserve_index(); submit {index, item}
 * // any worker thread: results.set(index, process(item));
 * // after the workers are done:
 * std::vector<std::string> in_order = results.collect();
 * @endcode
 * Thread safety: `reserve_index`, `reserve_indices`, `set`, `emplace`, `contains` and `size`
 * may be called concurrently from any thread (a second `set` of the same index throws, it
 * never races); `collect()` must not run concurrently with any other call (writers must have
 * finished, i.e. their `set` calls happened-before `collect`, e.g. through joining or a
 * future).
 */
template <class R>
class OrderedCollector {
public:
    /// The result type.
    using value_type = R;

    /// Default size of the first segment.
    static constexpr std::size_t default_initial_capacity = 256;
    /// Largest initial capacity accepted.
    static constexpr std::size_t max_initial_capacity = std::size_t{1} << 30;
    /// Largest index accepted by `set`/`emplace` (2^62 - 1 with a 64-bit `std::size_t`).
    static constexpr std::size_t max_index = detail::collector_max_index;

    /**
     * @brief Creates an empty collector and allocates its first segment.
     * @param initial_capacity slots in the first segment, rounded up to a power of two (0 is
     *        treated as 1). Results up to this count never allocate again; beyond it each new
     *        segment doubles the capacity.
     * @throws std::invalid_argument if @p initial_capacity exceeds `max_initial_capacity`;
     *         `std::bad_alloc`.
     */
    explicit OrderedCollector(std::size_t initial_capacity = default_initial_capacity)
        : segments_(first_segment_size(initial_capacity)) {
        segments_.get_or_create(0);
    }

    OrderedCollector(const OrderedCollector&) = delete;
    OrderedCollector& operator=(const OrderedCollector&) = delete;

    /// @brief Destroys every result not collected. No other call may be running.
    ~OrderedCollector() = default;

    /**
     * @brief Reserves the next submission position: returns 0, 1, 2, ... to successive calls.
     *
     * Wait-free (one `fetch_add`), never throws. Reserved indices count towards `size()`, so a
     * reserved index that is never set is reported as a hole by `collect()`.
     * Thread-safe: may be called concurrently from any thread.
     */
    std::size_t reserve_index() noexcept { return reserve_indices(1); }

    /**
     * @brief Reserves @p count consecutive positions (for a whole batch) and returns the first.
     *
     * Wait-free, never throws. Thread-safe: may be called concurrently from any thread.
     */
    std::size_t reserve_indices(std::size_t count) noexcept {
        // relaxed: hands out distinct numbers only; the results are published by set().
        return next_index_.fetch_add(count, std::memory_order_relaxed);
    }

    /**
     * @brief Stores @p value as the result at position @p index. See `emplace`.
     *
     * Thread-safe: may be called concurrently from any thread, for distinct indices.
     */
    void set(std::size_t index, R value) { emplace(index, std::move(value)); }

    /**
     * @brief Constructs the result at position @p index from @p args.
     *
     * @p index need not have come from `reserve_index`; any index up to `max_index` works, in
     * any order. Wait-free apart from allocation and `R`'s constructor (see the class
     * description); O(1), plus the allocation of a segment the first time an index in it is
     * written.
     * @throws microbatch::Error if @p index was already set (the existing result is kept);
     *         std::out_of_range if @p index > `max_index`; `std::bad_alloc`; whatever the
     *         constructor of `R` throws (the slot then stays empty and may be set again).
     *
     * Thread-safe: may be called concurrently from any thread, for distinct indices.
     */
    template <class... Args>
    void emplace(std::size_t index, Args&&... args) {
        if (index > max_index) {
            MICROBATCH_THROW(std::out_of_range("microbatch::OrderedCollector: index " +
                                               std::to_string(index) + " exceeds max_index"));
        }
        const auto [segment_number, offset] = segments_.locate(index);
        detail::CollectorSegment<R>& segment = segments_.get_or_create(segment_number);
        std::atomic<std::uint8_t>& state = segment.state(offset);
        std::uint8_t expected = detail::collector_slot_empty;
        // relaxed: a claim; RMW atomicity alone lets exactly one writer win the slot, and
        // nothing is read through it.
        if (!state.compare_exchange_strong(expected, detail::collector_slot_writing,
                                           std::memory_order_relaxed, std::memory_order_relaxed)) {
            MICROBATCH_THROW(Error("microbatch::OrderedCollector: index " + std::to_string(index) +
                                   " was set twice"));
        }
        SlotClaim claim(state);  // back to empty if the constructor throws
        ::new (static_cast<void*>(segment.slot(offset))) R(std::forward<Args>(args)...);
        claim.publish();
    }

    /**
     * @brief Whether a result is stored at @p index (false while it is still being written).
     *
     * Lock-free, O(1), never throws. Thread-safe: may be called concurrently from any thread.
     */
    bool contains(std::size_t index) const noexcept {
        if (index > max_index) {
            return false;
        }
        const auto [segment_number, offset] = segments_.locate(index);
        const detail::CollectorSegment<R>* segment = segments_.find(segment_number);
        // acquire: a true answer means the value is constructed and visible to this thread.
        return segment != nullptr && segment->state(offset).load(std::memory_order_acquire) ==
                                         detail::collector_slot_ready;
    }

    /**
     * @brief The number of results `collect()` would return: the larger of the number of
     *        reserved indices and one past the highest index set (or being set).
     *
     * Scans from the top of the highest allocated segment down to the last written slot, so
     * O(allocated slots) in the worst case. Never throws. Thread-safe: may be called
     * concurrently with writers, but is then only a lower bound of the final size.
     */
    std::size_t size() const noexcept {
        std::size_t highest_end = 0;  // one past the highest written index
        for (std::size_t segment = detail::collector_directory_size; segment-- > 0;) {
            const detail::CollectorSegment<R>* found = segments_.find(segment);
            if (found == nullptr) {
                continue;
            }
            for (std::size_t offset = found->size(); offset-- > 0;) {
                // relaxed: only counting; collect() acquires every slot before reading it.
                if (found->state(offset).load(std::memory_order_relaxed) !=
                    detail::collector_slot_empty) {
                    highest_end = segments_.first_index(segment) + offset + 1;
                    break;
                }
            }
            if (highest_end != 0) {
                break;
            }
        }
        // relaxed: only counting, as above.
        const std::size_t reserved = next_index_.load(std::memory_order_relaxed);
        return reserved > highest_end ? reserved : highest_end;
    }

    /**
     * @brief Moves every result out, in index order, and leaves the collector empty.
     *
     * Returns a vector of `size()` results, element i being the result set at index i. Then
     * resets the collector: no index is set, `reserve_index()` starts at 0 again, and the
     * allocated segments are kept for reuse.
     *
     * Precondition: no other call runs concurrently, and every `set` happened-before this call.
     * Blocking: no; O(size()) plus the moves.
     * @throws microbatch::Error naming the first index in [0, size()) that holds no result (a
     *         hole: never set, or still being written). Nothing has been moved then: the caller
     *         may set the missing index and call `collect()` again. `std::bad_alloc` for the
     *         vector (also before anything moved). If a move constructor of `R` throws, the
     *         exception propagates and every slot stays set (those already moved from hold
     *         moved-from values); the collector remains destructible (basic guarantee).
     */
    std::vector<R> collect() {
        const std::size_t count = size();
        if (count > max_index + 1) {
            MICROBATCH_THROW(
                Error("microbatch::OrderedCollector::collect: more than max_index "
                      "indices were reserved"));
        }
        for_each_slot(count, [count](detail::CollectorSegment<R>* segment, std::size_t offset,
                                     std::size_t index) {
            // acquire: pairs with emplace's release store, so the value is visible.
            if (segment == nullptr || segment->state(offset).load(std::memory_order_acquire) !=
                                          detail::collector_slot_ready) {
                throw_hole(index, count);
            }
        });

        std::vector<R> results;
        results.reserve(count);
        for_each_slot(count, [&results](detail::CollectorSegment<R>* segment, std::size_t offset,
                                        std::size_t) {
            results.push_back(std::move(*segment->slot(offset)));
        });
        segments_.for_each_segment(
            [](detail::CollectorSegment<R>& segment, std::size_t) { segment.destroy_values(); });
        // relaxed: collect() runs alone; later writers are ordered after it by the caller.
        next_index_.store(0, std::memory_order_relaxed);
        return results;
    }

private:
    /// Returns a claimed slot to empty unless `publish()` marked it ready.
    class SlotClaim {
    public:
        explicit SlotClaim(std::atomic<std::uint8_t>& state) noexcept : state_(state) {}
        SlotClaim(const SlotClaim&) = delete;
        SlotClaim& operator=(const SlotClaim&) = delete;
        ~SlotClaim() {
            if (!published_) {
                // relaxed: nothing was constructed, nothing to publish.
                state_.store(detail::collector_slot_empty, std::memory_order_relaxed);
            }
        }
        void publish() noexcept {
            // release: collect()'s and contains()' acquire loads see the constructed value.
            state_.store(detail::collector_slot_ready, std::memory_order_release);
            published_ = true;
        }

    private:
        std::atomic<std::uint8_t>& state_;
        bool published_ = false;
    };

    static std::size_t first_segment_size(std::size_t initial_capacity) {
        if (initial_capacity > max_initial_capacity) {
            MICROBATCH_THROW(std::invalid_argument(
                "microbatch::OrderedCollector: initial_capacity must be at most " +
                std::to_string(max_initial_capacity) + " (got " + std::to_string(initial_capacity) +
                ")"));
        }
        std::size_t size = 1;
        while (size < initial_capacity) {
            size <<= 1;
        }
        return size;
    }

    /// Calls `visit(segment or null, offset, index)` for every index in [0, count) in order,
    /// segment by segment (null for an index whose segment was never allocated: a hole).
    /// @p count <= max_index + 1, so segment start indices cannot overflow.
    template <class Visit>
    void for_each_slot(std::size_t count, Visit&& visit) const {
        for (std::size_t segment = 0; segments_.first_index(segment) < count; ++segment) {
            const std::size_t first = segments_.first_index(segment);
            detail::CollectorSegment<R>* found = segments_.find(segment);
            const std::size_t in_segment = std::min(count - first, segments_.segment_size(segment));
            for (std::size_t offset = 0; offset < in_segment; ++offset) {
                visit(found, offset, first + offset);
            }
        }
    }

    [[noreturn]] static void throw_hole(std::size_t index, std::size_t count) {
        MICROBATCH_THROW(Error("microbatch::OrderedCollector::collect: no result at index " +
                               std::to_string(index) + " of " + std::to_string(count) +
                               " (never set, or still being written)"));
    }

    detail::CollectorSegments<R> segments_;
    // alignas: reserve_index() is a shared counter hammered by producers; keep it off the
    // directory's lines, which every writer reads.
    alignas(detail::cache_line_size) std::atomic<std::size_t> next_index_{0};
};

}  // namespace microbatch
