#pragma once
/**
 * @file batcher_seal.hpp
 * @brief Batcher internals, step 2: sealing a batch, handing it to the executor, recycling buffers.
 *
 * Also the construction of the buffer ring (initialise).
 */

#include "microbatch/batcher.hpp"

namespace microbatch {

template <class T, class R, class Clock>
void Batcher<T, R, Clock>::initialise() {
    options_.validate();
    batch_size_ = static_cast<std::uint32_t>(options_.max_batch_size());
    lane_count_ = static_cast<std::uint32_t>(options_.lanes());
    const std::size_t capacity = options_.effective_capacity();
    // Rounded up without overflow, even for a capacity near SIZE_MAX.
    const std::size_t batches = capacity / batch_size_ + (capacity % batch_size_ != 0);
    const std::size_t per_lane = batches / lane_count_ + (batches % lane_count_ != 0);
    const std::size_t buffers = per_lane <= max_buffers ? per_lane * lane_count_ : 0;
    if (buffers == 0 || buffers > max_buffers) {
        MICROBATCH_THROW(std::invalid_argument(
            "microbatch::Options: capacity / max_batch_size must be <= " +
            std::to_string(max_buffers) + " batches in all lanes (got capacity " +
            std::to_string(capacity) + ", max_batch_size " + std::to_string(batch_size_) +
            ", lanes " + std::to_string(lane_count_) + ")"));
    }
    buffers_per_lane_ = static_cast<std::uint32_t>(per_lane);
    const std::size_t slots = buffers * batch_size_;
    items_ =
        std::unique_ptr<T, ItemsDeleter>(std::allocator<T>().allocate(slots), ItemsDeleter{slots});
    completions_ = std::make_unique<detail::Completion<R>[]>(slots);
    slot_states_ = std::make_unique<std::atomic<std::uint8_t>[]>(slots);  // zeroed
    buffers_ = std::make_unique<Buffer[]>(buffers);
    lanes_ = std::make_unique<Lane[]>(lane_count_);
    // Lane batch numbers start at n = buffers_per_lane_, so "lane batch s finished" can be
    // tested as the lane's buffer s % n having finished_sequence >= s for every s, including
    // the virtual batches 0..n-1 that stand for "this buffer has never been used".
    // relaxed stores below: no other thread sees the batcher yet; starting the timer thread
    // (and the caller sharing the constructed batcher) publishes them.
    const std::uint32_t n = buffers_per_lane_;
    for (std::uint32_t l = 0; l < lane_count_; ++l) {
        Lane& lane = lanes_[l];
        lane.first_buffer = l * n;
        for (std::uint32_t b = 0; b < n; ++b) {
            Buffer& buffer = buffers_[lane.first_buffer + b];
            buffer.finished_sequence.store(b, std::memory_order_relaxed);
            buffer.arrivals.store(b == 0 ? 0 : 1, std::memory_order_relaxed);
        }
        buffers_[lane.first_buffer].sequence.store(n, std::memory_order_relaxed);
        lane.next_sequence.store(n + 1, std::memory_order_relaxed);
        lane.head.store(make_head(n, lane.first_buffer), std::memory_order_relaxed);
    }
    open_batches_ = lane_count_;

    const auto delay = options_.max_delay();
    if (delay == std::chrono::nanoseconds::max()) {
        max_delay_ticks_ = -1;  // no time bound: no timer thread at all
    } else {
        max_delay_ticks_ = std::chrono::ceil<typename Clock::duration>(delay).count();
    }

    if (options_.executor()) {
        executor_ = options_.executor();
    } else {
        pool_ = std::make_unique<ThreadPool>(options_.workers());
        executor_ = pool_->executor();
    }
    if (max_delay_ticks_ >= 0) {
        sleeper_.emplace(clock_, timer_mutex_, timer_condition_);
        timer_ = std::thread([this] { run_timer(); });
    }
}

// Seals @p lane's batch being filled if it holds items. With @p only_tagged, only if it is
// still the batch whose head (without the count) was @p expected. Returns true if it sealed.
template <class T, class R, class Clock>
bool Batcher<T, R, Clock>::seal_current(Lane& lane, DispatchReason reason, std::uint64_t expected,
                                        bool only_tagged) {
    // acquire: the buffer we may seal must be read after its opening.
    std::uint64_t head = lane.head.load(std::memory_order_acquire);
    for (;;) {
        const std::uint64_t count = head & count_mask;
        if ((head & closed_bit) != 0 || count == 0 || count >= batch_size_) {
            return false;
        }
        if (only_tagged && (head & ~count_mask) != expected) {
            return false;
        }
        const std::uint64_t sealed = (head & ~count_mask) | sealed_count;
        // seq_cst: competes with producers' claims; whoever wins decides the batch size.
        if (lane.head.compare_exchange_weak(head, sealed, std::memory_order_seq_cst,
                                            std::memory_order_acquire)) {
            seal_and_dispatch(buffer_of(head), static_cast<std::uint32_t>(count), reason);
            return true;
        }
    }
}

// Called exactly once per batch by whoever sealed it, with its final size.
template <class T, class R, class Clock>
void Batcher<T, R, Clock>::seal_and_dispatch(std::uint32_t buffer, std::uint32_t size,
                                             DispatchReason reason) {
    Buffer& current = buffers_[buffer];
    current.size = size;
    current.reason = reason;
    current.dispatched_at = clock_.now().time_since_epoch().count();
    // relaxed: distinct numbers suffice; the lane's next batch is numbered only after the
    // arrive() below opened it, so numbers grow along each lane.
    current.number = dispatched_batches_.fetch_add(1, std::memory_order_relaxed);
    stats_.dispatched(size, reason);
    // relaxed: a statistic for close_for(); nothing is published through it.
    in_flight_items_.fetch_add(size, std::memory_order_relaxed);
    // The lane's next buffer may open as soon as it is free: let producers go on.
    const std::uint32_t local = buffer % buffers_per_lane_;
    arrive(local + 1 == buffers_per_lane_ ? buffer - local : buffer + 1);
    post_batch(buffer);
}

template <class T, class R, class Clock>
void Batcher<T, R, Clock>::post_batch(std::uint32_t buffer) {
    bool posted = false;
    MICROBATCH_TRY {
        executor_([this, buffer] {
            run_batch(buffer);
            finish_party(buffer);
        });
        posted = true;
    }
    MICROBATCH_CATCH_ALL {
        // The executor refused the task (e.g. its pool is shutting down): run the batch
        // here rather than lose it.
    }
    if (!posted) {
        run_batch(buffer);
        finish_party(buffer);
    }
    finish_party(buffer);
}

// Registers one of two events that free buffer @p index for its next batch: "its last
// batch finished" and "the batch before it in round-robin order was sealed". The second
// arrival opens it.
template <class T, class R, class Clock>
void Batcher<T, R, Clock>::arrive(std::uint32_t index) {
    Buffer& buffer = buffers_[index];
    // acq_rel: the opener must see the finished batch's cleanup (slot states reset, items
    // destroyed) and the sealer's writes, whichever arrived first.
    if (buffer.arrivals.fetch_add(1, std::memory_order_acq_rel) == 1) {
        buffer.arrivals.store(0, std::memory_order_relaxed);  // published by the open below
        open_buffer(index);
    }
}

template <class T, class R, class Clock>
void Batcher<T, R, Clock>::open_buffer(std::uint32_t index) {
    Buffer& buffer = buffers_[index];
    Lane& lane = lanes_[index / buffers_per_lane_];
    // A lane's openings are serialised by the seal -> arrive -> open chain, so the relaxed
    // increment still hands out consecutive numbers, and sequence % buffers_per_lane_ is the
    // buffer's place in the lane's ring.
    const std::uint64_t sequence = lane.next_sequence.fetch_add(1, std::memory_order_relaxed);
    // relaxed stores: published to producers by the release CAS on the head below.
    buffer.sequence.store(sequence, std::memory_order_relaxed);
    buffer.opened_at.store(unset_time, std::memory_order_relaxed);
    buffer.finish_parties.store(0, std::memory_order_relaxed);
    // relaxed: the count is only compared under idle_mutex_ after the decrements, which
    // are all ordered after this increment by the batch chain.
    open_batches_.fetch_add(1, std::memory_order_relaxed);
    std::uint64_t head = lane.head.load(std::memory_order_relaxed);
    for (;;) {
        if ((head & closed_bit) != 0) {
            // Closed meanwhile: this batch will never be used.
            retire_unused(buffer);
            return;
        }
        // seq_cst: publishes the reset buffer (release) and takes part in the Dekker
        // handshake with blocked producers (space_waiters_ below).
        if (lane.head.compare_exchange_weak(head, make_head(sequence, index),
                                            std::memory_order_seq_cst, std::memory_order_relaxed)) {
            break;
        }
    }
    if (space_waiters_.load(std::memory_order_seq_cst) != 0) {
        { std::lock_guard<std::mutex> lock(space_mutex_); }
        space_condition_.notify_all();
    }
}

// A batch that was opened but will never hold items (the batcher closed): account for it
// as finished.
template <class T, class R, class Clock>
void Batcher<T, R, Clock>::retire_unused(Buffer& buffer) {
    std::lock_guard<std::mutex> lock(idle_mutex_);
    mark_finished(buffer, buffer.sequence.load(std::memory_order_relaxed));
    --open_batches_;
    idle_condition_.notify_all();
}

// Records that batch @p sequence of @p buffer finished. Called with idle_mutex_ held.
// Monotonic: once arrive() has reopened the buffer, its next batch may finish (and record
// itself) before the thread finishing the previous one gets here; never go backwards.
template <class T, class R, class Clock>
void Batcher<T, R, Clock>::mark_finished(Buffer& buffer, std::uint64_t sequence) noexcept {
    // relaxed load: every store happens under idle_mutex_, which we hold. release store:
    // wait_idle() acquires it to learn the batch's items have finished.
    if (buffer.finished_sequence.load(std::memory_order_relaxed) < sequence) {
        buffer.finished_sequence.store(sequence, std::memory_order_release);
    }
}

}  // namespace microbatch
