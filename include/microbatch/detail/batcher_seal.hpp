#pragma once
/**
 * @file batcher_seal.hpp
 * @brief Batcher internals, step 2: sealing a batch, handing it to the executor, recycling buffers.
 *
 * Also the construction of the buffer ring (initialise).
 */

#include "microbatch/detail/batcher_core.hpp"

namespace microbatch {

template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::initialise() {
    options_.validate();
    batch_size_ = static_cast<std::uint32_t>(options_.max_batch_size());
    lane_count_ = static_cast<std::uint32_t>(options_.lanes());
    seal_early_ = options_.seal_early();
    const std::size_t in_flight_limit = options_.effective_max_in_flight();
    // relaxed stores of the settings: published with the rest of the batcher, see below.
    current_batch_size_.store(batch_size_, std::memory_order_relaxed);
    max_in_flight_.store(in_flight_limit, std::memory_order_relaxed);
    const std::size_t capacity = options_.effective_capacity();
    // Capacity is counted in items: each lane gets ceil(capacity / lanes) of them, handed to
    // its batches as they open (Lane::free_items). Buffers: enough for that many items in full
    // batches, plus room for the partial batches the in-flight limit lets run (sealed by time
    // or early only while fewer than that many batches are in flight), so partial batches do
    // not make producers wait for a buffer. Without a limit (unlimited_in_flight, the plain
    // size/time rule) partial batches are unbounded and get no extra room.
    // Rounded up without overflow, even for a capacity near SIZE_MAX.
    const std::size_t lane_items = capacity / lane_count_ + (capacity % lane_count_ != 0);
    const std::size_t per_lane_full = lane_items / batch_size_ + (lane_items % batch_size_ != 0);
    const std::size_t partial_room = in_flight_limit == Options::unlimited_in_flight
                                         ? 0
                                         : std::min<std::size_t>(in_flight_limit, 64);
    // The extra room is dropped where it would exceed the buffer limit (partial batches may
    // then make producers wait for a buffer before capacity items).
    const std::size_t room_limit = max_buffers / lane_count_;
    const std::size_t per_lane =
        per_lane_full >= room_limit
            ? per_lane_full
            : per_lane_full + std::min(partial_room, room_limit - per_lane_full);
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
        // The first batch opens below with min(batch size, the lane's items) slots.
        const std::size_t items = std::min<std::size_t>(
            lane_items, static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max()));
        const std::uint32_t first_grant =
            static_cast<std::uint32_t>(std::min<std::size_t>(items, batch_size_));
        lane.free_items.store(static_cast<std::int64_t>(items - first_grant),
                              std::memory_order_relaxed);
        buffers_[lane.first_buffer].start.store(batch_size_ - first_grant,
                                                std::memory_order_relaxed);
        for (std::uint32_t b = 0; b < n; ++b) {
            Buffer& buffer = buffers_[lane.first_buffer + b];
            buffer.finished_sequence.store(b, std::memory_order_relaxed);
            buffer.arrivals.store(b == 0 ? 0 : 1, std::memory_order_relaxed);
        }
        buffers_[lane.first_buffer].sequence.store(n, std::memory_order_relaxed);
        lane.next_sequence.store(n + 1, std::memory_order_relaxed);
        lane.head.store(make_head(n, lane.first_buffer) | (batch_size_ - first_grant),
                        std::memory_order_relaxed);
    }
    open_batches_ = lane_count_;

    const auto delay = options_.max_delay();
    max_delay_ticks_.store(delay == std::chrono::nanoseconds::max()
                               ? -1  // no time bound
                               : std::chrono::ceil<typename Clock::duration>(delay).count(),
                           std::memory_order_relaxed);
    refresh_producer_threshold();
    initialise_deadlines();
    initialise_cost();

    if (options_.executor()) {
        executor_ = options_.executor();
    } else {
        pool_ = std::make_unique<ThreadPool>(options_.workers());
        executor_ = pool_->executor();
    }
    // Always started: set_max_delay may introduce a time bound later, and early sealing's quiet
    // window is timed by it. It sleeps without waking while nothing is to be timed.
    timer_seen_ = std::make_unique<TimerSeen[]>(lane_count_);
    sleeper_.emplace(clock_, timer_mutex_, timer_condition_);
    timer_ = std::thread([this] { run_timer(); });
}

// Seals @p lane's batch being filled if it holds items. With @p only_tagged, only if it is
// still the batch whose head (without the count) was @p expected. Returns true if it sealed.
template <class T, class R, class Clock>
bool detail::BatcherCore<T, R, Clock>::seal_current(Lane& lane, DispatchReason reason,
                                                    std::uint64_t expected, bool only_tagged,
                                                    bool at_arrival) {
    // acquire: the buffer we may seal must be read after its opening.
    std::uint64_t head = lane.head.load(std::memory_order_acquire);
    for (;;) {
        const std::uint64_t count = head & count_mask;
        if ((head & closed_bit) != 0 || count >= batch_size_) {
            return false;
        }
        if (only_tagged && (head & ~count_mask) != expected) {
            return false;
        }
        // relaxed: written before the head CAS we acquired (see Buffer::start).
        const std::uint64_t start = buffers_[buffer_of(head)].start.load(std::memory_order_relaxed);
        if (count <= start) {
            return false;  // empty
        }
        const std::uint64_t sealed = (head & ~count_mask) | sealed_count;
        // seq_cst: competes with producers' claims; whoever wins decides the batch size.
        if (lane.head.compare_exchange_weak(head, sealed, std::memory_order_seq_cst,
                                            std::memory_order_acquire)) {
            seal_and_dispatch(buffer_of(head), static_cast<std::uint32_t>(count - start), reason,
                              at_arrival);
            return true;
        }
    }
}

// Called exactly once per batch by whoever sealed it, with its final number of items.
template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::seal_and_dispatch(std::uint32_t buffer, std::uint32_t size,
                                                         DispatchReason reason, bool at_arrival,
                                                         std::int64_t now) {
    Buffer& current = buffers_[buffer];
    current.size = size;
    current.reason = reason;
    // A producer that opened and filled the batch in one claim (B = 1, or a bulk run) read the
    // clock a moment ago: one reading serves both (a clock read is ~10% of a 1-item batch).
    current.dispatched_at = now != unset_time ? now : clock_.now().time_since_epoch().count();
    // relaxed: distinct numbers suffice; the lane's next batch is numbered only after the
    // arrive() below opened it, so numbers grow along each lane. The count is also the
    // in-flight limit's (in_flight_batch_count()), a policy input read without ordering: a
    // stale read lets at most one decision see the previous count, and every finishing worker
    // decides again. The worker that runs the batch sees the increment (the executor's
    // hand-off orders it), so no finished count overtakes it.
    current.number = dispatched_batches_.fetch_add(1, std::memory_order_relaxed);
    stats_.dispatched(size, reason);
    // relaxed: a statistic for close_for() and a policy input, as the batch count.
    dispatched_items_.fetch_add(size, std::memory_order_relaxed);
    // relaxed: opened_at was written by the slot-0 producer before its slot state; only an
    // estimate is computed from it (a stale unset value skips the sample).
    note_sealed(size, current.dispatched_at, current.opened_at.load(std::memory_order_relaxed),
                at_arrival);
    // Slots granted to this batch but not used go back to the lane before its next buffer
    // opens. relaxed load: see Buffer::start.
    Lane& lane = lanes_[buffer / buffers_per_lane_];
    const std::uint32_t granted = batch_size_ - current.start.load(std::memory_order_relaxed);
    if (granted > size) {
        return_items(lane, static_cast<std::int64_t>(granted - size));
    }
    // The lane's next buffer may open as soon as it is free: let producers go on.
    const std::uint32_t local = buffer % buffers_per_lane_;
    arrive(local + 1 == buffers_per_lane_ ? buffer - local : buffer + 1);
    post_batch(buffer);
}

template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::post_batch(std::uint32_t buffer) {
    bool posted = false;
    MICROBATCH_TRY {
        Task task([this, buffer] {
            run_batch(buffer);
            finish_party(buffer);
        });
        if (pool_) {
            // The batcher's own pool: post straight into its queue rather than through the
            // Executor's std::function (the same call and error, one indirection less).
            pool_->post(std::move(task));
        } else {
            executor_(std::move(task));
        }
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
void detail::BatcherCore<T, R, Clock>::arrive(std::uint32_t index) {
    Buffer& buffer = buffers_[index];
    // acq_rel: the opener must see the finished batch's cleanup (slot states reset, items
    // destroyed) and the sealer's writes, whichever arrived first.
    if (buffer.arrivals.fetch_add(1, std::memory_order_acq_rel) == 1) {
        buffer.arrivals.store(0, std::memory_order_relaxed);  // published by the open below
        open_buffer(index);
    }
}

template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::open_buffer(std::uint32_t index) {
    Buffer& buffer = buffers_[index];
    Lane& lane = lanes_[index / buffers_per_lane_];
    // A lane's openings are serialised by the seal -> arrive -> open chain, so the relaxed
    // increment still hands out consecutive numbers, and sequence % buffers_per_lane_ is the
    // buffer's place in the lane's ring.
    const std::uint64_t sequence = lane.next_sequence.fetch_add(1, std::memory_order_relaxed);
    // relaxed stores: published to producers by the release CAS on the head in try_open().
    buffer.sequence.store(sequence, std::memory_order_relaxed);
    buffer.opened_at.store(unset_time, std::memory_order_relaxed);
    buffer.earliest_deadline.store(std::numeric_limits<std::int64_t>::max(),
                                   std::memory_order_relaxed);
    buffer.finish_parties.store(0, std::memory_order_relaxed);
    // relaxed: the count is only compared under idle_mutex_ after the decrements, which
    // are all ordered after this increment by the batch chain.
    open_batches_.fetch_add(1, std::memory_order_relaxed);
    try_open(index);
}

// Grants buffer @p index as many slots as the batch size in force and the lane's free items
// allow, and publishes it in the lane's head. With no free item it parks the buffer in the
// lane; return_items() opens it later (or close() retires it).
template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::try_open(std::uint32_t index) {
    Buffer& buffer = buffers_[index];
    Lane& lane = lanes_[index / buffers_per_lane_];
    // The batch size in force now (set_max_batch_size). relaxed: a setting.
    const std::int64_t wanted = current_batch_size_.load(std::memory_order_relaxed);
    std::int64_t granted = take_items(lane, wanted);
    if (granted == 0) {
        // seq_cst (store, re-take, compare-exchange): a Dekker handshake with return_items(),
        // which adds items and then takes the parked buffer; one side always sees the other.
        lane.parked.store(index, std::memory_order_seq_cst);
        granted = take_items(lane, wanted);
        if (granted == 0) {
            return;  // parked: whoever returns items opens it
        }
        std::uint32_t expected = index;
        if (!lane.parked.compare_exchange_strong(expected, no_buffer, std::memory_order_seq_cst)) {
            return_items(lane, granted);  // a returner took the buffer and opens it itself
            return;
        }
    }
    // The count starts at start, so the batch is full after `granted` claims.
    const std::uint32_t start = batch_size_ - static_cast<std::uint32_t>(granted);
    buffer.start.store(start, std::memory_order_relaxed);  // published by the CAS below
    std::uint64_t head = lane.head.load(std::memory_order_relaxed);
    for (;;) {
        if ((head & closed_bit) != 0) {
            // Closed meanwhile: this batch will never be used.
            return_items(lane, granted);
            retire_unused(buffer);
            return;
        }
        // seq_cst: publishes the reset buffer (release) and takes part in the Dekker
        // handshake with blocked producers (space_waiters_ below).
        if (lane.head.compare_exchange_weak(
                head, make_head(buffer.sequence.load(std::memory_order_relaxed), index) | start,
                std::memory_order_seq_cst, std::memory_order_relaxed)) {
            break;
        }
    }
    if (space_waiters_.load(std::memory_order_seq_cst) != 0) {
        wake_first_waiter(lane);  // fair admission: only the producer whose turn it is
    }
}

// Takes up to @p wanted free items of @p lane; returns how many (0 if none is free).
template <class T, class R, class Clock>
std::int64_t detail::BatcherCore<T, R, Clock>::take_items(Lane& lane,
                                                          std::int64_t wanted) noexcept {
    // seq_cst: part of the parking handshake in try_open().
    std::int64_t free = lane.free_items.load(std::memory_order_seq_cst);
    while (free > 0) {
        const std::int64_t granted = std::min(free, wanted);
        if (lane.free_items.compare_exchange_weak(free, free - granted,
                                                  std::memory_order_seq_cst)) {
            return granted;
        }
    }
    return 0;
}

// Gives @p count items back to @p lane and opens its parked buffer, if any.
template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::return_items(Lane& lane, std::int64_t count) {
    // seq_cst: the returner's half of the parking handshake in try_open().
    lane.free_items.fetch_add(count, std::memory_order_seq_cst);
    if (lane.parked.load(std::memory_order_seq_cst) != no_buffer) {
        const std::uint32_t parked = lane.parked.exchange(no_buffer, std::memory_order_seq_cst);
        if (parked != no_buffer) {
            try_open(parked);
        }
    }
}

// A batch that was opened but will never hold items (the batcher closed): account for it
// as finished.
template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::retire_unused(Buffer& buffer) {
    std::lock_guard<std::mutex> lock(idle_mutex_);
    mark_finished(buffer, buffer.sequence.load(std::memory_order_relaxed));
    --open_batches_;
    idle_condition_.notify_all();
}

// Records that batch @p sequence of @p buffer finished. Called with idle_mutex_ held.
// Monotonic: once arrive() has reopened the buffer, its next batch may finish (and record
// itself) before the thread finishing the previous one gets here; never go backwards.
template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::mark_finished(Buffer& buffer,
                                                     std::uint64_t sequence) noexcept {
    // relaxed load: every store happens under idle_mutex_, which we hold. release store:
    // wait_idle() acquires it to learn the batch's items have finished.
    if (buffer.finished_sequence.load(std::memory_order_relaxed) < sequence) {
        buffer.finished_sequence.store(sequence, std::memory_order_release);
    }
}

}  // namespace microbatch
