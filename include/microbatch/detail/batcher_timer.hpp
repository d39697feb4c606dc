#pragma once
/**
 * @file batcher_timer.hpp
 * @brief Batcher internals: the timer thread that seals batches by their time bound.
 *
 *
 */

#if defined(__linux__) && __has_include(<sys/prctl.h>)
#include <sys/prctl.h>  // PR_SET_TIMERSLACK for the timer thread
#endif

#include "microbatch/batcher.hpp"

namespace microbatch {

template <class T, class R, class Clock>
void Batcher<T, R, Clock>::run_timer() {
#if defined(__linux__) && __has_include(<sys/prctl.h>)
    // Linux lets a sleeping thread's timer fire up to 50 us late by default (timer slack);
    // this thread exists to wake on time, so ask for 1 ns. Affects only this thread.
    ::prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
#endif
    std::unique_lock<std::mutex> lock(timer_mutex_);
    while (!timer_stop_) {
        std::uint64_t head = 0;
        std::int64_t deadline = 0;
        if (Lane* lane = earliest_deadline(head, deadline)) {
            if (clock_.now().time_since_epoch().count() >= deadline) {
                // Unlocked: dispatching may run the batch inline (an inline executor), and
                // its submits may need to wake this timer.
                lock.unlock();
                seal_current(*lane, DispatchReason::deadline, head & ~count_mask, true);
                lock.lock();
            } else if (deadline == std::numeric_limits<std::int64_t>::max()) {
                sleeper_->sleep(lock);
            } else {
                sleeper_->sleep_until(
                    lock, typename Clock::time_point(typename Clock::duration(deadline)));
            }
            continue;
        }
        // Nothing to time: sleep until a producer opens a batch. seq_cst: Dekker handshake
        // with note_batch_opened(); re-check after announcing we are idle.
        timer_idle_.store(true, std::memory_order_seq_cst);
        if (earliest_deadline(head, deadline) != nullptr) {
            timer_idle_.store(false, std::memory_order_relaxed);
            continue;
        }
        sleeper_->sleep(lock);
        // relaxed: only producers read it, as a hint protected by the handshake above.
        timer_idle_.store(false, std::memory_order_relaxed);
    }
    sleeper_->retire();
}

// The lane whose batch being filled is due first (nullptr if none holds items with a known
// start time), with that batch's head and deadline.
template <class T, class R, class Clock>
typename Batcher<T, R, Clock>::Lane* Batcher<T, R, Clock>::earliest_deadline(
    std::uint64_t& head, std::int64_t& deadline) const noexcept {
    Lane* earliest = nullptr;
    for (std::uint32_t l = 0; l < lane_count_; ++l) {
        std::uint64_t lane_head = 0;
        std::int64_t opened_at = unset_time;
        if (!current_batch_start(lanes_[l], lane_head, opened_at)) {
            continue;
        }
        const std::int64_t due =
            opened_at > std::numeric_limits<std::int64_t>::max() - max_delay_ticks_
                ? std::numeric_limits<std::int64_t>::max()
                : opened_at + max_delay_ticks_;
        if (earliest == nullptr || due < deadline) {
            earliest = &lanes_[l];
            head = lane_head;
            deadline = due;
        }
    }
    return earliest;
}

// True if @p lane's batch being filled holds items whose start time is known.
template <class T, class R, class Clock>
bool Batcher<T, R, Clock>::current_batch_start(const Lane& lane, std::uint64_t& head,
                                               std::int64_t& opened_at) const noexcept {
    head = lane.head.load(std::memory_order_seq_cst);
    const std::uint64_t count = head & count_mask;
    if ((head & closed_bit) != 0 || count == 0 || count >= batch_size_) {
        return false;
    }
    opened_at = buffers_[buffer_of(head)].opened_at.load(std::memory_order_seq_cst);
    return opened_at != unset_time;
}

}  // namespace microbatch
