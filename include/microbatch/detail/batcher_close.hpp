#pragma once
/**
 * @file batcher_close.hpp
 * @brief Batcher internals: flush, wait_idle and close.
 *
 *
 */

#include "microbatch/detail/batcher_core.hpp"

namespace microbatch {

// Seals @p lane's batch being filled (if it holds items) and returns the lane number of the
// lane's last batch holding items accepted before the call.
template <class T, class R, class Clock>
std::uint64_t detail::BatcherCore<T, R, Clock>::flush_and_target(Lane& lane) {
    for (;;) {
        const std::uint64_t head = lane.head.load(std::memory_order_seq_cst);
        if ((head & closed_bit) != 0) {
            // Closed: no batch opens any more, and every opened one is sealed or retired
            // (a reopened-then-retired buffer no longer matches the head's tag, so the
            // check below would never succeed). Wait for everything opened so far.
            // relaxed: every opening incremented next_sequence before its CAS on head, and
            // our seq_cst load of head above already synchronised with those CASes.
            return lane.next_sequence.load(std::memory_order_relaxed) - 1;
        }
        const Buffer& buffer = buffers_[buffer_of(head)];
        const std::uint64_t sequence = buffer.sequence.load(std::memory_order_acquire);
        if ((sequence & tag_mask) != tag_of(head)) {
            continue;  // the buffer was reopened since we read the head: read again
        }
        const std::uint64_t count = head & count_mask;
        // relaxed: written before the head we read (seq_cst) was published (Buffer::start).
        const std::uint64_t start = buffer.start.load(std::memory_order_relaxed);
        if ((head & closed_bit) == 0 && count <= start) {
            return sequence - 1;  // open and empty: everything before it
        }
        if ((head & closed_bit) == 0 && count < batch_size_ &&
            !seal_current(lane, DispatchReason::flush, head & ~count_mask, true)) {
            continue;  // a producer or the timer changed it first: look again
        }
        return sequence;
    }
}

// True if @p lane's batches up to lane number @p target have finished. Called with
// idle_mutex_ held.
template <class T, class R, class Clock>
bool detail::BatcherCore<T, R, Clock>::finished_through(const Lane& lane,
                                                        std::uint64_t target) const noexcept {
    const std::uint32_t n = buffers_per_lane_;
    for (std::uint64_t s = target + 1 - n; s <= target; ++s) {
        const Buffer& buffer = buffers_[lane.first_buffer + s % n];
        // acquire: pairs with mark_finished()'s release.
        if (buffer.finished_sequence.load(std::memory_order_acquire) < s) {
            return false;
        }
    }
    return true;
}

template <class T, class R, class Clock>
CloseResult detail::BatcherCore<T, R, Clock>::close_impl(const Deadline* deadline) {
    check_not_reentrant("close");
    std::unique_lock<std::mutex> close_lock(close_mutex_);
    if (!close_started_) {
        close_started_ = true;
        begin_close();
    }
    close_lock.unlock();

    std::unique_lock<std::mutex> lock(idle_mutex_);
    ++idle_waiters_;
    const auto done = [this] { return open_batches_ == 0; };
    bool finished = true;
    if (deadline == nullptr) {
        idle_condition_.wait(lock, done);
    } else {
        finished = idle_condition_.wait_until(lock, *deadline, done);
    }
    --idle_waiters_;
    if (!finished) {
        CloseResult result;
        result.completed = false;
        result.batches_in_flight = static_cast<std::size_t>(open_batches_);
        // A statistic; we are not waiting for these items here.
        result.items_in_flight = static_cast<std::size_t>(in_flight_item_count());
        return result;
    }
    lock.unlock();
    // Producers woken by begin_close() leave promptly; wait until none is inside.
    // acquire: pairs with their release on leaving.
    while (slow_producers_.load(std::memory_order_acquire) != 0) {
        std::this_thread::yield();
    }
    return CloseResult{};
}

template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::begin_close() {
    for (std::uint32_t l = 0; l < lane_count_; ++l) {
        Lane& lane = lanes_[l];
        // seq_cst: competes with claims, seals and opens on the same word.
        std::uint64_t head = lane.head.load(std::memory_order_seq_cst);
        while (!lane.head.compare_exchange_weak(
            head, (head & ~count_mask) | closed_bit | sealed_count, std::memory_order_seq_cst,
            std::memory_order_seq_cst)) {
        }
        const std::uint64_t count = head & count_mask;
        // relaxed: written before the head we exchanged was published (Buffer::start).
        const std::uint64_t start = buffers_[buffer_of(head)].start.load(std::memory_order_relaxed);
        if (count >= batch_size_) {
            // a sealer owns that batch and dispatches it
        } else if (count <= start) {
            retire_unused(buffers_[buffer_of(head)]);  // the open batch was empty
        } else {
            seal_and_dispatch(buffer_of(head), static_cast<std::uint32_t>(count - start),
                              DispatchReason::close);
        }
    }
    // A buffer parked for want of free items will never open now: account for it.
    for (std::uint32_t l = 0; l < lane_count_; ++l) {
        // seq_cst: competes with return_items() and try_open() for the parked buffer.
        const std::uint32_t parked =
            lanes_[l].parked.exchange(no_buffer, std::memory_order_seq_cst);
        if (parked != no_buffer) {
            retire_unused(buffers_[parked]);
        }
    }
    if (timer_.joinable()) {
        {
            std::lock_guard<std::mutex> lock(timer_mutex_);
            timer_stop_ = true;
        }
        timer_condition_.notify_all();
        timer_.join();
    }
    wake_all_waiters();   // blocked producers see the closed bit and leave
    wake_cost_waiters();  // so do those waiting for pending cost (detail/batcher_cost.hpp)
}

}  // namespace microbatch
