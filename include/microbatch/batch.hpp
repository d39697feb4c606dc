#pragma once
/**
 * @file batch.hpp
 * @brief `microbatch::Batch<T>`: the view of one microbatch handed to `process_batch`.
 */

#include "microbatch/version.hpp"  // the C++17 check

#include <cstddef>
#include <cstdint>

namespace microbatch {

/**
 * @brief Why a batch was dispatched.
 */
enum class DispatchReason {
    full,      ///< All its `max_batch_size` slots were claimed (see `Batch::size()`).
    deadline,  ///< Its oldest item had waited `max_delay`.
    flush,     ///< `Batcher::flush()` or `Batcher::wait_idle()` was called.
    close,     ///< The batcher was closed (or destroyed).
    /// Its oldest item had waited `max_delay` while every worker was busy (the batch kept
    /// growing meanwhile); a worker that finished a batch sealed it.
    worker_free,
    /// Sealed before `max_delay` while a worker was free, because waiting could not pay
    /// (seal_policy.hpp, rule 5): it held as many items as arrive while one batch runs, or no
    /// item had arrived for several mean gaps.
    early,
    /// Sealed while a worker was free because an item's deadline was near: the batch's earliest
    /// deadline minus its predicted processing time (seal_policy.hpp, rule 4b).
    item_deadline,
};

/// Returns a stable lower-case name for @p reason ("full", "deadline", "flush", "close",
/// "worker_free", "early", "item_deadline").
constexpr const char* to_string(DispatchReason reason) noexcept {
    switch (reason) {
        case DispatchReason::full:
            return "full";
        case DispatchReason::deadline:
            return "deadline";
        case DispatchReason::flush:
            return "flush";
        case DispatchReason::close:
            return "close";
        case DispatchReason::worker_free:
            return "worker_free";
        case DispatchReason::early:
            return "early";
        case DispatchReason::item_deadline:
            return "item_deadline";
    }
    return "unknown";
}

/**
 * @brief A non-owning view of the items of one microbatch: a pointer and a size, no copy.
 *
 * Items are contiguous and in the order the batcher accepted them. `process_batch` may read
 * them, modify them, or move from them (e.g. `std::move(batch[i])` for move-only types); the
 * batcher destroys them after `process_batch` returns. The view is valid only during that call.
 * With `Options::isolate_failures`, the items of a call that throws are passed again (a re-run
 * sees a sub-range of them, with the same `reason()` and `sequence()`): such a call must leave
 * them unmoved.
 *
 * Thread safety: a plain view; the batch belongs to the one `process_batch` call it is given to.
 * @tparam T the item type.
 */
template <class T>
class Batch {
public:
    using value_type = T;             ///< The item type.
    using iterator = T*;              ///< Mutable iterator: items may be moved out.
    using const_iterator = const T*;  ///< Read-only iterator.

    /// @brief Wraps @p size items starting at @p items.
    Batch(T* items, std::size_t size, DispatchReason reason, std::uint64_t sequence = 0) noexcept
        : items_(items), size_(size), reason_(reason), sequence_(sequence) {}

    /// @brief Number of items, in [1, max_batch_size]. A submit whose item construction threw
    ///        still used up a slot (a hole, left out of the batch), so a batch dispatched as
    ///        `full` may hold fewer than max_batch_size items.
    std::size_t size() const noexcept { return size_; }
    /// @brief True if the batch holds no items (never the case for a dispatched batch).
    bool empty() const noexcept { return size_ == 0; }
    /// @brief Pointer to the first item; items are contiguous.
    T* data() const noexcept { return items_; }
    /// @brief The item at @p index (unchecked, like `std::vector::operator[]`).
    T& operator[](std::size_t index) const noexcept { return items_[index]; }
    /// @brief Iterator to the first item.
    T* begin() const noexcept { return items_; }
    /// @brief Iterator past the last item.
    T* end() const noexcept { return items_ + size_; }
    /// @brief Why the batch was dispatched.
    DispatchReason reason() const noexcept { return reason_; }
    /**
     * @brief The batch's number: batches are numbered 0, 1, 2, ... in the order they were
     *        dispatched, which within one lane (see `Options::lanes`) is the order they started
     *        filling. Items of one producer in batch s precede its items in any batch s' > s.
     *        Batches may run (and finish) out of this order on several workers.
     *        A batch whose every slot is a hole (every item construction threw) is numbered
     *        but never reaches `process_batch`, so the numbers it sees may have gaps.
     */
    std::uint64_t sequence() const noexcept { return sequence_; }

private:
    T* items_;
    std::size_t size_;
    DispatchReason reason_;
    std::uint64_t sequence_;
};

}  // namespace microbatch
