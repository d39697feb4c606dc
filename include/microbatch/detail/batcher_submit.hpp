#pragma once
/**
 * @file batcher_submit.hpp
 * @brief Batcher internals, step 1 of an item's path: claiming a slot and writing the item.
 *
 * submit/post/try_submit end in submit_impl(): try_claim_slot() claims a slot with one fetch_add
 * on the lane's head word, fill_slot() constructs the item in place and publishes it; the
 * producer of the last slot seals the batch (detail/batcher_seal.hpp). submit_impl() is the
 * common case (a slot in the middle of a batch it publishes itself, with publish_slot() and
 * maybe_seal_early(); the first and last slots go to fill_slot()); submit_general() handles the
 * rest (timeouts, weighed items, throwing constructors) and, when no batch is open, waits in
 * wait_for_space().
 */

#include "microbatch/detail/batcher_core.hpp"

namespace microbatch {

template <class T, class R, class Clock>
template <class U>
SubmitStatus detail::BatcherCore<T, R, Clock>::submit_with_handle(U&& item, WaitMode mode,
                                                                  Deadline deadline,
                                                                  Handle<R>& out) {
    return with_new_handle(out, [&](auto& store) {
        return submit_impl(std::forward<U>(item), mode, deadline, store);
    });
}

// Makes a handle and calls submit(store), where store puts the handle's completion into the
// claimed slot; @p out receives the handle if the item was accepted. Every handle-returning
// submission (with or without a deadline) comes through here.
template <class T, class R, class Clock>
template <class Submit>
SubmitStatus detail::BatcherCore<T, R, Clock>::with_new_handle(Handle<R>& out, Submit&& submit) {
    // The handle owns one reference; the slot's completion gets the other on acceptance.
    detail::HandleState<R>* const state = detail::HandleState<R>::create();
    Handle<R> handle = detail::HandleAccess::make(state);
    struct Unclaimed {  // releases the slot's reference if it was never handed out
        detail::HandleState<R>* state;
        ~Unclaimed() {
            if (state != nullptr) {
                state->release();
            }
        }
    } unclaimed{state};
    const auto store = [&unclaimed](detail::Completion<R>& slot) noexcept {
        slot.emplace(detail::HandleCompletion<R>(std::exchange(unclaimed.state, nullptr)));
        return true;
    };
    const SubmitStatus status = submit(store);
    if (status == SubmitStatus::accepted) {
        out = std::move(handle);
    }
    return status;
}

template <class T, class R, class Clock>
template <class U, class Store>
SubmitStatus detail::BatcherCore<T, R, Clock>::submit_impl(U&& item, WaitMode mode,
                                                           Deadline deadline, Store&& store) {
    // The common case, kept small enough to inline into post()/submit(): no per-item deadline
    // or cost to handle, an open batch with a free slot, and a fill that cannot throw. Anything
    // else (no slot, a closed batcher, a default timeout, weighed items, a throwing
    // constructor) takes submit_general(), which handles every case; a claim that came too
    // late is a stray increment there too, so falling back after one is safe.
    if constexpr (!detail::carries_deadline<std::decay_t<Store>>::value &&
                  std::is_nothrow_constructible_v<T, U&&> &&
                  std::is_nothrow_invocable_v<Store&, detail::Completion<R>&>) {
        if (!has_default_timeout_ && !cost_function_) {
            Lane& lane = lane_for_this_thread();
            std::uint64_t head = 0;
            if (try_claim_slot(lane, head)) {
                const auto index = static_cast<std::uint32_t>(head & count_mask);
                const std::uint32_t buffer = buffer_of(head);
                // relaxed: see Buffer::start.
                const std::uint32_t start = buffers_[buffer].start.load(std::memory_order_relaxed);
                if (index == start || index + 1 == batch_size_) {
                    return fill_slot(lane, head, index, std::forward<U>(item), store);
                }
                // A middle slot (the batch neither opens nor fills here): publish it and ask
                // the one cheap early-seal question, with no call. fill_slot's prologue and
                // epilogue were a fifth of a post's instructions (callgrind, B = 256).
                publish_slot(static_cast<std::size_t>(buffer) * batch_size_ + index,
                             std::forward<U>(item), store);
                maybe_seal_early(lane, head, start, index + 1);
                return SubmitStatus::accepted;
            }
        }
    }
    return submit_general(std::forward<U>(item), mode, deadline, store);
}

template <class T, class R, class Clock>
template <class U, class Store>
SubmitStatus detail::BatcherCore<T, R, Clock>::submit_general(U&& item, WaitMode mode,
                                                              Deadline deadline, Store& store) {
    if constexpr (!detail::carries_deadline<std::decay_t<Store>>::value) {
        if (has_default_timeout_) {  // Options::default_timeout: detail/batcher_deadlines.hpp
            return submit_due(default_deadline_, std::forward<U>(item), mode, deadline, store);
        }
    }
    if (cost_function_) {  // weighed items: detail/batcher_cost.hpp
        return submit_weighed(std::forward<U>(item), mode, deadline, store);
    }
    Lane& lane = lane_for_this_thread();
    detail::AdmissionTurn turn;  // held while admitted from the queue of blocked producers
    for (;;) {
        std::uint64_t head = 0;
        if (try_claim_slot(lane, head)) {
            turn.release();  // claimed: the next blocked producer may go (fair admission)
            return fill_slot(lane, head, static_cast<std::uint32_t>(head & count_mask),
                             std::forward<U>(item), store);
        }
        const SubmitStatus status = wait_for_space(lane, mode, deadline, turn);
        if (status != SubmitStatus::accepted) {
            return status;  // counted in wait_for_space
        }
        // accepted here means "a batch is open again": claim anew.
    }
}

// Claims one slot of @p lane's open batch: true with the claimed head word in @p head, false if
// no batch is open (sealed, awaiting a buffer, or closed).
template <class T, class R, class Clock>
inline bool detail::BatcherCore<T, R, Clock>::try_claim_slot(Lane& lane,
                                                             std::uint64_t& head) noexcept {
    // Test before claiming: a claim on a sealed or closed head is a stray increment of the
    // 24-bit count, and an unbounded run of them (a producer polling try_submit on a full or
    // closed batcher) would carry into the buffer field. relaxed: only a filter; the
    // fetch_add below decides.
    const std::uint64_t seen = lane.head.load(std::memory_order_relaxed);
    if ((seen & count_mask) >= batch_size_ || (seen & closed_bit) != 0) {
        return false;
    }
    // seq_cst: claims a slot; also orders the claim before the opened_at/timer_idle_
    // handshake in note_batch_opened (free on x86, where every RMW is a full fence).
    head = lane.head.fetch_add(1, std::memory_order_seq_cst);
    return (head & count_mask) < batch_size_;  // else a stray increment, harmless (above)
}

template <class T, class R, class Clock>
template <class U, class Store>
SubmitStatus detail::BatcherCore<T, R, Clock>::fill_slot(Lane& lane, std::uint64_t head,
                                                         std::uint32_t index, U&& item,
                                                         Store& store, std::uint64_t cost) {
    const std::uint32_t buffer = buffer_of(head);
    const std::size_t slot = static_cast<std::size_t>(buffer) * batch_size_ + index;
    // relaxed: written before the head CAS our claim synchronised with (see Buffer::start).
    const std::uint32_t start = buffers_[buffer].start.load(std::memory_order_relaxed);
    // With a batch size of 1 this very claim seals the batch: no deadline to time.
    const std::int64_t opened_now =
        index == start ? note_batch_opened(buffers_[buffer], index + 1 < batch_size_) : unset_time;
    if constexpr (std::is_nothrow_constructible_v<T, U&&> &&
                  std::is_nothrow_invocable_v<Store&, detail::Completion<R>&>) {
        // Nothing can fail: publish and seal without the error bookkeeping below.
        publish_slot(slot, std::forward<U>(item), store);
        after_fill(lane, head, buffer, start, index + 1, opened_now);
        return SubmitStatus::accepted;
    } else {
        T* place = items_.get() + slot;
        detail::Completion<R>& completion = completions_[slot];
        std::uint8_t state = detail::slot_item;
        std::exception_ptr error;
        // The completion first: if storing it throws, the item has not been touched yet.
        MICROBATCH_TRY {
            if (store(completion)) {
                state = detail::slot_item_completion;
            }
            MICROBATCH_TRY {
                ::new (static_cast<void*>(place)) T(std::forward<U>(item));
            }
            MICROBATCH_CATCH_ALL {
                completion.reset();  // never invoked: the item was not accepted
                MICROBATCH_RETHROW;
            }
        }
        MICROBATCH_CATCH_ALL {
            // The slot is claimed and must still be published, or the batch would wait for
            // it forever: publish a hole, which the worker skips.
            error = std::current_exception();
            state = detail::slot_hole;
            // A hole is no accepted item: count it finished for close_for() now, while
            // the batch cannot finish (it waits for this slot). The seal may not have added it
            // yet, so the count can read one low for a moment (in_flight_item_count() clamps).
            // relaxed: a statistic; nothing is published through it.
            finished_items_.fetch_add(1, std::memory_order_relaxed);
            if (cost != 0) {
                // relaxed: published to the worker by the hole's release store below.
                buffers_[buffer].cost.fetch_sub(cost, std::memory_order_relaxed);
            }
        }
        // release: publishes the item (or the hole) and completion to the batch's worker.
        slot_states_[slot].store(state, std::memory_order_release);
        after_fill(lane, head, buffer, start, index + 1, opened_now);
        if (error) {
            stats_.rejected_error();
            std::rethrow_exception(error);
        }
        return SubmitStatus::accepted;
    }
}

// Writes the completion and the item of a claimed slot and publishes them to the worker, for
// fills that cannot throw.
template <class T, class R, class Clock>
template <class U, class Store>
inline void detail::BatcherCore<T, R, Clock>::publish_slot(std::size_t slot, U&& item,
                                                           Store& store) noexcept {
    static_assert(std::is_nothrow_constructible_v<T, U&&> &&
                  std::is_nothrow_invocable_v<Store&, detail::Completion<R>&>);
    const std::uint8_t state =
        store(completions_[slot]) ? detail::slot_item_completion : detail::slot_item;
    ::new (static_cast<void*>(items_.get() + slot)) T(std::forward<U>(item));
    // release: publishes the item and completion to the worker that runs this batch.
    slot_states_[slot].store(state, std::memory_order_release);
}

// After a producer published the slots of the batch @p head describes up to @p end: the
// producer of the last slot seals the batch; otherwise it may seal early (see below).
template <class T, class R, class Clock>
inline void detail::BatcherCore<T, R, Clock>::after_fill(Lane& lane, std::uint64_t head,
                                                         std::uint32_t buffer, std::uint32_t start,
                                                         std::uint32_t end,
                                                         std::int64_t opened_now) {
    if (end == batch_size_) {
        seal_and_dispatch(buffer, batch_size_ - start, DispatchReason::full, true, opened_now);
    } else {
        maybe_seal_early(lane, head, start, end);
    }
}

// A producer's per-item early-seal question: the batch of @p head, slots @p start to @p end
// published, is not full.
template <class T, class R, class Clock>
inline void detail::BatcherCore<T, R, Clock>::maybe_seal_early(Lane& lane, std::uint64_t head,
                                                               std::uint32_t start,
                                                               std::uint32_t end) {
    // The count rules a producer can meet, as decide_seal() states them: while rule 5c is on
    // (a population is known), 5a also waits for the population, so the pending items decide
    // alone; otherwise the batch's size against the threshold (rule 5a's target, or 1 with
    // max_delay 0). Asking on the size alone made decide_seal() decline once per item from the
    // target to the population (callgrind, post at B = 256: 1 claim in 20 asked in vain, ~360
    // instructions each). relaxed loads: policy inputs, see in_flight_batch_count(); a stale
    // value only delays the seal to the timer or a worker.
    const std::uint32_t population = population_threshold_.load(std::memory_order_relaxed);
    if ((population == 0 ? end - start >= producer_threshold_.load(std::memory_order_relaxed)
                         : pending_with(end - start) >= population) &&
        in_flight_batch_count(std::memory_order_relaxed) <
            max_in_flight_.load(std::memory_order_relaxed)) {
        // A worker is free and the batch reached the size the policy seals at without a clock.
        seal_early_after_fill(lane, head, start, end);
    }
}

// after_fill()'s rare branch, out of line so that the per-item path stays short: confirm with
// the policy and seal the batch here, rather than wait for the timer to wake.
template <class T, class R, class Clock>
MICROBATCH_NOINLINE void detail::BatcherCore<T, R, Clock>::seal_early_after_fill(
    Lane& lane, std::uint64_t head, std::uint32_t start, std::uint32_t end) {
    const SealDecision decision =
        decide_seal(policy_inputs(SealTrigger::producer, 0, end - start, pending_with(end - start),
                                  batch_size_ - start, unset_time, unset_time));
    if (decision.seal) {
        seal_current(lane, decision.reason, head & ~count_mask, true, true);
    }
}

// The producer of slot 0 stamps the batch's start time and wakes an idle timer. Returns the
// time it stamped.
template <class T, class R, class Clock>
std::int64_t detail::BatcherCore<T, R, Clock>::note_batch_opened(Buffer& buffer, bool needs_timer) {
    const std::int64_t now = clock_.now().time_since_epoch().count();
    // seq_cst (store and load): a Dekker handshake with run_timer(), which sets
    // timer_idle_ and then re-reads the heads and opened_at; one side always sees the other.
    // The exchange lets one opener wake it: the others would each pay a futex call (a fast
    // stream opens batches faster than the woken timer gets a core: about half the openings at
    // B = 256 notified it, against one notify per idle period now).
    buffer.opened_at.store(now, std::memory_order_seq_cst);
    if (needs_timer && timer_idle_.load(std::memory_order_seq_cst) &&
        timer_idle_.exchange(false, std::memory_order_seq_cst)) {
        { std::lock_guard<std::mutex> lock(timer_mutex_); }
        timer_condition_.notify_one();
    }
    return now;
}

// Waits until a batch is open again (returns accepted), the batcher closed, or the mode's
// patience runs out (full). Rejections are counted here, while this producer is still
// registered: close() may let the batcher be destroyed as soon as it has left.
// @p items: the items this rejection would refuse (a bulk submission's rest); one is counted
// by wait_for_space_registered, the others here, still registered.
template <class T, class R, class Clock>
SubmitStatus detail::BatcherCore<T, R, Clock>::wait_for_space(Lane& lane, WaitMode mode,
                                                              Deadline deadline,
                                                              detail::AdmissionTurn& turn,
                                                              std::size_t items) {
    const SubmitStatus status = wait_for_space_registered(lane, mode, deadline, turn);
    if (items > 1 && status != SubmitStatus::accepted) {
        stats_.rejected(status, items - 1);
    }
    slow_producers_.fetch_sub(1, std::memory_order_release);  // our last touch: see close
    return status;
}

template <class T, class R, class Clock>
SubmitStatus detail::BatcherCore<T, R, Clock>::wait_for_space_registered(
    Lane& lane, WaitMode mode, Deadline deadline, detail::AdmissionTurn& turn) {
    // Registered so that close() can wait for blocked producers to leave before the
    // batcher is destroyed.
    slow_producers_.fetch_add(1, std::memory_order_seq_cst);
    struct Leave {  // on exceptions only; the normal path leaves in wait_for_space
        std::atomic<std::uint32_t>& count;
        bool armed = true;
        // release: our last touch of the batcher happens-before close() sees zero.
        ~Leave() {
            if (armed) {
                count.fetch_sub(1, std::memory_order_release);
            }
        }
    } leave{slow_producers_};
    const auto finish = [&](SubmitStatus status) {
        if (status != SubmitStatus::accepted) {
            // Giving up: pass the turn on while still registered (fair admission).
            turn.release();
        }
        if (status == SubmitStatus::full) {
            stats_.rejected_full();
        } else if (status == SubmitStatus::closed) {
            stats_.rejected_closed();
        }
        leave.armed = false;
        return status;
    };

    // A batch hand-over (seal, then open the next buffer) takes nanoseconds when the next
    // buffer is free: spin briefly before treating the batcher as full.
    // Not while producers are queued for this batcher: a blocking submit then queues behind
    // them at once (fair admission, detail/admission_queue.hpp). relaxed: a hint.
    const int spins = mode == wait_never                                                    ? 32
                      : !turn.held() && space_waiters_.load(std::memory_order_relaxed) != 0 ? 0
                                                                                            : 256;
    for (int spin = 0; spin < spins; ++spin) {
        // acquire: a batch we see open must be fully reset before we write into it.
        const std::uint64_t head = lane.head.load(std::memory_order_acquire);
        if ((head & closed_bit) != 0) {
            return finish(SubmitStatus::closed);
        }
        if ((head & count_mask) < batch_size_) {
            return finish(SubmitStatus::accepted);
        }
        if (spin >= 64) {
            std::this_thread::yield();
        } else {
            detail::cpu_relax();
        }
    }
    if (mode == wait_never) {
        return finish(SubmitStatus::full);
    }
    if (detail::is_running_on_this_thread(this)) {
        turn.release();
        MICROBATCH_THROW(ReentrancyError(
            "microbatch::Batcher: blocking submit from inside process_batch found the "
            "batcher full (it could wait for its own batch); use try_submit"));
    }
    return finish(wait_in_line(lane, mode, deadline, turn));  // detail/batcher_admission.hpp
}

}  // namespace microbatch
