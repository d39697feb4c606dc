#pragma once
/**
 * @file batcher_admission.hpp
 * @brief Batcher internals: fair admission of producers blocked on a full lane, in arrival
 *        order (the queue itself is detail/admission_queue.hpp).
 *
 * A blocking submit that finds its lane full (after a short spin, skipped when others already
 * wait) queues in the lane's AdmissionQueue. When a batch opens, try_open() wakes the queued
 * producers, of whom only the queue's front one goes on; it is admitted if the lane has room and
 * holds the turn until it has claimed a slot (submit_impl releases it), which wakes the next one.
 * Producers that arrive while nobody is queued still take free slots directly: a submit's fast path
 * never looks at the queue.
 */

#include "microbatch/detail/batcher_core.hpp"

namespace microbatch {

template <class T, class R, class Clock>
SubmitStatus detail::BatcherCore<T, R, Clock>::wait_in_line(Lane& lane, WaitMode mode,
                                                            Deadline deadline,
                                                            detail::AdmissionTurn& turn) {
    detail::AdmissionQueue& queue = admission_[static_cast<std::size_t>(&lane - lanes_.get())];
    std::unique_lock<std::mutex> lock(space_mutex_);
    // seq_cst: Dekker handshake with try_open(), which publishes the head then reads this.
    space_waiters_.fetch_add(1, std::memory_order_seq_cst);
    detail::AdmissionWaiter self;
    // A producer admitted before whose claim lost a race keeps its place at the front.
    const bool first = turn.held();
    if (first) {
        turn.give_back();
    }
    queue.push(self, first);
    const auto admit = [&](std::uint64_t head) {
        if ((head & closed_bit) != 0) {
            return SubmitStatus::closed;
        }
        if ((head & count_mask) < batch_size_ && queue.front() == &self && !queue.turn_held) {
            turn.take(queue, space_mutex_);
            return SubmitStatus::accepted;
        }
        return SubmitStatus::full;
    };
    SubmitStatus status = SubmitStatus::full;
    for (;;) {
        status = admit(lane.head.load(std::memory_order_seq_cst));
        if (status != SubmitStatus::full) {
            break;
        }
        if (mode == wait_forever) {
            space_condition_.wait(lock);
        } else if (space_condition_.wait_until(lock, deadline) == std::cv_status::timeout) {
            status = admit(lane.head.load(std::memory_order_seq_cst));
            break;
        }
    }
    const bool was_front = queue.front() == &self;
    queue.remove(self);
    if (was_front && status != SubmitStatus::accepted) {
        queue.wake_front();  // leaving without the turn: the next one may have room
    }
    // relaxed: only a hint for try_open(); a stale non-zero costs one spare lock.
    space_waiters_.fetch_sub(1, std::memory_order_relaxed);
    return status;
}

// A batch opened in @p lane: wake the producer whose turn it is.
template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::wake_first_waiter(Lane& lane) {
    std::lock_guard<std::mutex> lock(space_mutex_);
    admission_[static_cast<std::size_t>(&lane - lanes_.get())].wake_front();
}

// The batcher is closing: every blocked producer must see it.
template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::wake_all_waiters() {
    std::lock_guard<std::mutex> lock(space_mutex_);
    for (std::uint32_t l = 0; l < lane_count_; ++l) {
        admission_[l].wake_all();
    }
}

template <class T, class R, class Clock>
std::size_t detail::BatcherCore<T, R, Clock>::waiting_producers() const {
    std::lock_guard<std::mutex> lock(space_mutex_);
    std::size_t waiting = 0;
    for (std::uint32_t l = 0; l < lane_count_; ++l) {
        waiting += admission_[l].size();
    }
    std::lock_guard<std::mutex> cost_lock(cost_mutex_);  // and those waiting for pending cost
    return waiting + cost_queue_.size();
}

}  // namespace microbatch
