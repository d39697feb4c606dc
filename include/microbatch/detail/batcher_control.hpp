#pragma once
/**
 * @file batcher_control.hpp
 * @brief Batcher internals: the bodies of the public calls that observe and steer a running
 *        batcher (stats, pending, in_flight, flush, wait_idle, the run-time setters). Their
 *        documentation is at their declarations in batcher.hpp.
 */

#include <chrono>
#include <mutex>
#include <stdexcept>
#include <string>

#include "microbatch/detail/batcher_core.hpp"

namespace microbatch {

template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::flush() {
    for (std::uint32_t l = 0; l < lane_count_; ++l) {
        seal_current(lanes_[l], DispatchReason::flush, 0, false);
    }
}

template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::wait_idle() {
    check_not_reentrant("wait_idle");
    flush();  // every lane's partial batch leaves now, so the lanes drain side by side
    for (std::uint32_t l = 0; l < lane_count_; ++l) {
        Lane& lane = lanes_[l];
        const std::uint64_t target = flush_and_target(lane);
        std::unique_lock<std::mutex> lock(idle_mutex_);
        ++idle_waiters_;
        idle_condition_.wait(lock, [&] { return finished_through(lane, target); });
        --idle_waiters_;
    }
}

template <class T, class R, class Clock>
Stats detail::BatcherCore<T, R, Clock>::stats() const noexcept {
    Stats result;
    std::uint64_t filling = 0;
    for (std::uint32_t l = 0; l < lane_count_; ++l) {
        // relaxed: a statistic; no data is read through it.
        filling += filling_count(lanes_[l].head.load(std::memory_order_relaxed));
    }
    stats_.snapshot(result, filling);
    return result;
}

template <class T, class R, class Clock>
std::size_t detail::BatcherCore<T, R, Clock>::pending() const noexcept {
    // relaxed: a statistic; no data is read through these counters.
    std::uint64_t filling = 0;
    for (std::uint32_t l = 0; l < lane_count_; ++l) {
        filling += filling_count(lanes_[l].head.load(std::memory_order_relaxed));
    }
    return static_cast<std::size_t>(in_flight_item_count() + filling);
}

template <class T, class R, class Clock>
std::size_t detail::BatcherCore<T, R, Clock>::in_flight() const noexcept {
    // relaxed: a statistic; no data is read through it.
    return static_cast<std::size_t>(in_flight_batch_count(std::memory_order_relaxed));
}

template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::set_max_batch_size(std::size_t size) {
    if (size == 0 || size > batch_size_) {
        MICROBATCH_THROW(std::invalid_argument(
            "microbatch::Batcher::set_max_batch_size: size must be in [1, " +
            std::to_string(batch_size_) + "] (the constructed max_batch_size; got " +
            std::to_string(size) + ")"));
    }
    // relaxed: read by open_buffer() for the next batch; no data is published with it.
    current_batch_size_.store(static_cast<std::uint32_t>(size), std::memory_order_relaxed);
    refresh_producer_threshold();
}

template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::set_max_delay(std::chrono::nanoseconds delay) {
    if (delay.count() < 0) {
        MICROBATCH_THROW(std::invalid_argument(
            "microbatch::Batcher::set_max_delay: max_delay must not be negative (got " +
            std::to_string(delay.count()) + "ns)"));
    }
    const std::int64_t ticks = delay == std::chrono::nanoseconds::max()
                                   ? -1
                                   : std::chrono::ceil<typename Clock::duration>(delay).count();
    // relaxed: a setting; the timer re-reads it under timer_mutex_ after the notify below.
    max_delay_ticks_.store(ticks, std::memory_order_relaxed);
    refresh_producer_threshold();
    wake_timer();
}

template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::set_max_in_flight(std::size_t limit) {
    Options probe = options_;
    probe.max_in_flight(limit);
    // relaxed: a setting; see set_max_delay.
    max_in_flight_.store(probe.effective_max_in_flight(), std::memory_order_relaxed);
    refresh_producer_threshold();
    seal_for_free_worker();  // a higher limit may free a worker for a held batch
    wake_timer();
}

template <class T, class R, class Clock>
std::size_t detail::BatcherCore<T, R, Clock>::max_batch_size() const noexcept {
    return current_batch_size_.load(std::memory_order_relaxed);
}

template <class T, class R, class Clock>
std::chrono::nanoseconds detail::BatcherCore<T, R, Clock>::max_delay() const noexcept {
    const std::int64_t ticks = max_delay_ticks_.load(std::memory_order_relaxed);
    return ticks < 0 ? std::chrono::nanoseconds::max()
                     : std::chrono::nanoseconds(to_nanoseconds(ticks));
}

template <class T, class R, class Clock>
std::size_t detail::BatcherCore<T, R, Clock>::max_in_flight() const noexcept {
    return max_in_flight_.load(std::memory_order_relaxed);
}

}  // namespace microbatch
