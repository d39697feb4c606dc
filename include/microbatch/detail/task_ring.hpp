#pragma once
/**
 * @file task_ring.hpp
 * @brief `microbatch::detail::TaskRing`: the bounded lock-free FIFO a ThreadPool queues tasks in
 *        before it falls back to its mutex-protected overflow queue.
 */

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "microbatch/detail/config.hpp"
#include "microbatch/executor.hpp"

namespace microbatch {
namespace detail {

/**
 * A bounded multi-producer multi-consumer FIFO of `Task`s (a ring of slots, each with a sequence
 * number that says whose turn the slot is: the classic bounded MPMC queue design), which can be
 * closed to new tasks.
 *
 * Why: a pool posting one task per batch paid a mutex lock and unlock on each side of every
 * hand-off, and a producer and a worker contending for that mutex put each other to sleep on a
 * futex. Here a push and a pop each take one compare-and-swap on their own position counter.
 *
 * Positions: `tail_` counts slots ever claimed by pushers (its top bit is the closed flag),
 * `head_` slots ever claimed by poppers. A push claims position p (tail_ p -> p + 1) when slot
 * p's sequence is p, moves the task in and sets the sequence to p + 1 (published); a pop claims
 * p (head_ p -> p + 1) when the sequence is p + 1, moves the task out and sets it to
 * p + capacity, the slot's next push position. Pops take positions in order, so tasks leave in
 * the order their pushes claimed positions.
 *
 * Guarantees: `try_push` and `try_pop` are lock-free and noexcept (a `Task` moves without
 * throwing); a failed push leaves its task untouched. Once `close()` has returned, every push
 * fails with `closed`, and every push that succeeded claimed its position before the close
 * (both update `tail_` atomically), so `claimed()` read after the close is final.
 * Thread-safe: every member may be called concurrently.
 */
class TaskRing {
public:
    /// Outcome of try_push().
    enum class PushResult { pushed, full, closed };
    /// Outcome of try_pop(): `busy` means the ring is not empty but its oldest task is still
    /// being moved in by its pusher (try again shortly).
    enum class PopResult { popped, empty, busy };

    /// A ring of @p capacity slots; @p capacity must be a power of two.
    explicit TaskRing(std::size_t capacity)
        : slots_(new Slot[capacity]), mask_(static_cast<std::uint64_t>(capacity) - 1) {
        for (std::size_t i = 0; i < capacity; ++i) {
            // relaxed: the ring is published to other threads by whatever shares the pool.
            slots_[i].sequence.store(i, std::memory_order_relaxed);
        }
    }

    /// Moves @p task into the ring (`pushed`), or leaves it untouched when the ring is full or
    /// closed. The claim is a seq_cst read-modify-write of the tail: a pool's sleeping workers
    /// rely on it (a worker going to sleep and a pusher then checking for sleepers cannot both
    /// miss each other, see ThreadPoolState).
    PushResult try_push(Task& task) noexcept {
        // relaxed: only a guess at the position; the compare-and-swap below validates it.
        std::uint64_t position = tail_.load(std::memory_order_relaxed);
        for (;;) {
            if ((position & closed_bit) != 0) {
                return PushResult::closed;
            }
            Slot& slot = slots_[position & mask_];
            // acquire: the popper's move out of this slot happens before our move in.
            const std::uint64_t sequence = slot.sequence.load(std::memory_order_acquire);
            const auto lag = static_cast<std::int64_t>(sequence - position);
            if (lag == 0) {
                // relaxed on failure: the reloaded position is only a new guess.
                if (tail_.compare_exchange_weak(position, position + 1, std::memory_order_seq_cst,
                                                std::memory_order_relaxed)) {
                    slot.task = std::move(task);
                    // release: publishes the task to the popper that acquires this sequence.
                    slot.sequence.store(position + 1, std::memory_order_release);
                    return PushResult::pushed;
                }
            } else if (lag < 0) {
                return PushResult::full;  // the task pushed a lap ago is not popped yet
            } else {
                // relaxed: another pusher took this position; guess again.
                position = tail_.load(std::memory_order_relaxed);
            }
        }
    }

    /// Moves the oldest task into @p out (`popped`; the slot keeps no copy of the captures), or
    /// reports `empty` or `busy` and leaves @p out untouched.
    PopResult try_pop(Task& out) noexcept {
        // relaxed: only a guess at the position; the compare-and-swap below validates it.
        std::uint64_t position = head_.load(std::memory_order_relaxed);
        for (;;) {
            Slot& slot = slots_[position & mask_];
            // acquire: pairs with the pusher's release, so its task is visible to us.
            const std::uint64_t sequence = slot.sequence.load(std::memory_order_acquire);
            const auto lag = static_cast<std::int64_t>(sequence - (position + 1));
            if (lag == 0) {
                // relaxed: the slot's contents were acquired above; head_ orders only poppers.
                if (head_.compare_exchange_weak(position, position + 1, std::memory_order_relaxed,
                                                std::memory_order_relaxed)) {
                    out = std::move(slot.task);
                    slot.task = nullptr;  // a moved-from std::function is not promised empty
                    // release: our move out happens before the next lap's push into the slot.
                    slot.sequence.store(position + mask_ + 1, std::memory_order_release);
                    return PopResult::popped;
                }
            } else if (lag < 0) {
                // Slot `position` is not published, so no popper got past it: head_ is still
                // `position`. Empty if no pusher claimed it, else its pusher is mid-move.
                return (tail_.load() & ~closed_bit) == position ? PopResult::empty
                                                                : PopResult::busy;
            } else {
                // relaxed: another popper took this position; guess again.
                position = head_.load(std::memory_order_relaxed);
            }
        }
    }

    /// Makes every later push fail with `closed`. Idempotent.
    void close() noexcept { tail_.fetch_or(closed_bit); }

    /// Positions claimed by successful pushes so far (seq_cst load).
    std::uint64_t claimed() const noexcept { return tail_.load() & ~closed_bit; }

    /// Positions claimed by successful pops so far (seq_cst load).
    std::uint64_t taken() const noexcept { return head_.load(); }

private:
    static constexpr std::uint64_t closed_bit = std::uint64_t{1} << 63;

    struct Slot {
        std::atomic<std::uint64_t> sequence{0};
        Task task;
    };

    std::unique_ptr<Slot[]> slots_;
    const std::uint64_t mask_;
    // On separate cache lines: pushers write tail_, poppers head_.
    alignas(64) std::atomic<std::uint64_t> tail_{0};
    alignas(64) std::atomic<std::uint64_t> head_{0};
};

}  // namespace detail
}  // namespace microbatch
