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

#include <algorithm>
#include <chrono>
#include <vector>

#include "microbatch/detail/batcher_core.hpp"

namespace microbatch {

// The timer asks decide_seal() about every lane's partial batch, seals what it says, and sleeps
// until the earliest time it named. Rule 5b needs to know when a batch last grew without a
// clock read per item: the timer remembers the count it saw per lane and when it changed.
template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::run_timer() {
#if defined(__linux__) && __has_include(<sys/prctl.h>)
    // Linux lets a sleeping thread's timer fire up to 50 us late by default (timer slack);
    // this thread exists to wake on time, so ask for 1 ns. Affects only this thread.
    ::prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
#endif
    TimerSeen* const seen = timer_seen_.get();
    bool announced = false;  // timer_idle_ and timer_waits_for_worker_ are set
    std::unique_lock<std::mutex> lock(timer_mutex_);
    while (!timer_stop_) {
        const std::int64_t now = clock_.now().time_since_epoch().count();
        std::int64_t wake = SealDecision::never;
        bool sealed = false;
        for (std::uint32_t l = 0; l < lane_count_ && !sealed; ++l) {
            std::uint64_t head = 0;
            std::int64_t opened_at = unset_time;
            if (!current_batch_start(lanes_[l], head, opened_at)) {
                seen[l] = TimerSeen{};
                continue;
            }
            const std::uint64_t count = filling_count(head);
            const std::uint64_t batch = head & ~count_mask;
            if (seen[l].batch != batch) {
                // A batch we have not seen: with one item, it last grew when it opened.
                seen[l] = TimerSeen{batch, count, count == 1 ? opened_at : now};
            } else if (seen[l].count != count) {
                seen[l].count = count;
                seen[l].changed_at = now;
            }
            const SealDecision decision = decide_seal(with_item_deadline(
                policy_inputs(SealTrigger::timer, now, static_cast<std::size_t>(count),
                              pending_with(count), bound_of(buffer_of(head)), opened_at,
                              seen[l].changed_at),
                buffer_of(head)));
            if (decision.seal) {
                // Unlocked: dispatching may run the batch inline (an inline executor), and its
                // submits may need to wake this timer.
                lock.unlock();
                seal_current(lanes_[l], decision.reason, batch, true);
                lock.lock();
                sealed = true;
            } else {
                wake = std::min(wake, decision.wake_at);
            }
        }
        if (sealed) {
            continue;
        }
        if (wake != SealDecision::never) {
            if (announced) {
                // relaxed: hints for producers and workers, protected by the handshake below.
                timer_idle_.store(false, std::memory_order_relaxed);
                timer_waits_for_worker_.store(false, std::memory_order_relaxed);
                announced = false;
            }
            const auto ticks =
                std::chrono::ceil<typename Clock::duration>(std::chrono::nanoseconds(wake));
            sleeper_->sleep_until(lock, typename Clock::time_point(ticks));
            continue;
        }
        // Nothing to time (no partial batch, or every worker busy): sleep until a producer
        // opens a batch, a worker finishes one or a setter changes the rules. seq_cst: Dekker
        // handshakes with note_batch_opened() and seal_for_free_worker(); announce, then look
        // once more before sleeping.
        // Announced already, but a producer took timer_idle_ back to wake us (note_batch_opened
        // exchanges it, so that one opener notifies): its notify may have come while we were
        // sealing, unlocked, and be lost; announce again and look once more.
        if (!announced || !timer_idle_.load(std::memory_order_seq_cst)) {
            timer_idle_.store(true, std::memory_order_seq_cst);
            timer_waits_for_worker_.store(true, std::memory_order_seq_cst);
            announced = true;
            continue;
        }
        sleeper_->sleep(lock);
        timer_idle_.store(false, std::memory_order_relaxed);
        timer_waits_for_worker_.store(false, std::memory_order_relaxed);
        announced = false;
    }
    sleeper_->retire();
}

// True if @p lane's batch being filled holds items whose start time is known.
template <class T, class R, class Clock>
bool detail::BatcherCore<T, R, Clock>::current_batch_start(const Lane& lane, std::uint64_t& head,
                                                           std::int64_t& opened_at) const noexcept {
    head = lane.head.load(std::memory_order_seq_cst);
    if (filling_count(head) == 0) {
        return false;  // sealed, closed or empty
    }
    opened_at = buffers_[buffer_of(head)].opened_at.load(std::memory_order_seq_cst);
    return opened_at != unset_time;
}

}  // namespace microbatch
