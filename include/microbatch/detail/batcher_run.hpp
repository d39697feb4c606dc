#pragma once
/**
 * @file batcher_run.hpp
 * @brief Batcher internals, step 3: running a batch on a worker and completing its items.
 *
 * run_batch() waits for late writers, compacts holes, calls process_batch (in one of its forms,
 * isolating poison items if asked: detail/batcher_outcomes.hpp), records stats, then completes
 * every item's handle or callback; finish_party() frees the buffer.
 */

#include "microbatch/detail/batcher_core.hpp"

namespace microbatch {

template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::run_batch(std::uint32_t buffer_index) noexcept {
    Buffer& buffer = buffers_[buffer_index];
    // relaxed: the sealer handed this batch to us through the executor (see Buffer::start).
    const std::size_t first = static_cast<std::size_t>(buffer_index) * batch_size_ +
                              buffer.start.load(std::memory_order_relaxed);
    T* items = items_.get() + first;
    detail::Completion<R>* completions = completions_.get() + first;
    std::atomic<std::uint8_t>* states = slot_states_.get() + first;
    const std::size_t size = buffer.size;

    const detail::RunningBatch running{this, detail::running_batches};
    detail::running_batches = &running;

    // Producers that claimed a slot may still be writing it: wait for each slot's state. The
    // states are bits, so or-ing them tells which kinds the batch holds with a load and an or
    // per item; holes, which are rare, are counted in a second pass (callgrind, post_n at
    // B = 256: 27 -> 17 instructions per item on the worker, the benchmark's sum included).
    unsigned kinds = 0;
    for (std::size_t i = 0; i < size; ++i) {
        // acquire: pairs with the producer's release so its item is visible.
        std::uint8_t state = states[i].load(std::memory_order_acquire);
        if (state == detail::slot_empty) {
            state = wait_for_slot(states[i]);
        }
        kinds |= state;
    }
    const bool any_completion = (kinds & detail::slot_item_completion) != 0;
    std::size_t holes = 0;
    if ((kinds & detail::slot_hole) != 0) {
        for (std::size_t i = 0; i < size; ++i) {
            // relaxed: acquired in the loop above.
            holes += states[i].load(std::memory_order_relaxed) == detail::slot_hole ? 1 : 0;
        }
    }
    std::size_t failed_in_compaction = 0;
    // Cancelled and expired items leave the batch here, as holes (detail/batcher_deadlines.hpp).
    const std::size_t removed = any_completion ? screen(items, completions, states, size) : 0;
    const std::size_t count = holes + removed == 0
                                  ? size
                                  : compact(items, completions, states, size, failed_in_compaction);

    // acquire not needed: opened_at was written by the slot-0 producer before its slot
    // state, which we acquired above.
    const std::int64_t opened_at = buffer.opened_at.load(std::memory_order_relaxed);
    const std::int64_t queue_delay =
        opened_at == unset_time ? 0 : to_nanoseconds(buffer.dispatched_at - opened_at);

    std::exception_ptr error;
    [[maybe_unused]] batch_result_type_or_empty results{};
    // One outcome per item when the items' fates differ (per-item form, isolation).
    detail::BatchOutcomes<R> outcomes;
    const auto started = clock_.now();
    if (count != 0) {
        Batch<T> batch(items, count, buffer.reason, buffer.number);
        call_process(batch, error, results, outcomes);  // detail/batcher_outcomes.hpp
    }
    const auto processed_at = clock_.now();
    const auto processing = to_nanoseconds((processed_at - started).count());
    const std::int64_t dispatch_wait =
        to_nanoseconds(started.time_since_epoch().count() - buffer.dispatched_at);

    // An isolated batch failed its first call, whatever the re-runs saved.
    const bool batch_failed = static_cast<bool>(error) || outcomes.isolated;
    // Stats first: a producer that sees its item's result then also sees it counted.
    if (holes != 0) {
        stats_.holes(holes);
    }
    // Items that failed in compaction were counted (failed_early) before they completed.
    const std::size_t failed = outcomes.active ? outcomes.failed : batch_failed ? count : 0;
    record_outcomes(outcomes);
    // relaxed: every producer added its item's cost before its slot's release store, which
    // we acquired above.
    const std::uint64_t batch_cost =
        cost_function_ ? buffer.cost.load(std::memory_order_relaxed) : 0;
    if (cost_function_) {
        stats_.batch_item_cost(batch_cost);
    }
    // One end-to-end sample per batch: its oldest item, accepted at opened_at, has had its
    // result delivered (Stats::item_latency). Without completions to run, results were
    // "delivered" when process_batch returned: that sample goes in with the batch's others (one
    // lock for all); with completions it is taken once they have run, below.
    const bool latency_sample = count != 0 && opened_at != unset_time;
    stats_.completed(count - failed, failed, batch_failed, queue_delay, dispatch_wait, processing,
                     failed_in_compaction,
                     latency_sample && !any_completion
                         ? to_nanoseconds(processed_at.time_since_epoch().count() - opened_at)
                         : detail::StatsRecorder::no_latency);
    // The population sample of seal_policy.hpp rule 5c, taken before this batch's items are
    // completed (their clients cannot have submitted again yet, so nobody is counted twice):
    // with clients that each wait for their result, these items come back at once.
    // Only here, not at seals: a seal sees the items in flight but not those waiting in other
    // lanes, and in a closed loop a batch sealed early would make the samples disagree.
    if (!every_claim_seals()) {  // else no partial batch ever asks rule 5c
        note_population(pending());
    }
    if (any_completion && outcomes.active) {
        complete_outcomes(completions, outcomes);
    } else if (any_completion && !error) {
        for (std::size_t i = 0; i < count; ++i) {
            if (completions[i].has_value()) {
                complete_ok(completions[i], results, i);
            }
        }
    } else if (any_completion) {
        std::size_t last = count;
        for (std::size_t i = count; i-- > 0;) {
            if (completions[i].has_value()) {
                last = i;
                break;
            }
        }
        for (std::size_t i = 0; i < count; ++i) {
            if (completions[i].has_value()) {
                // The last completion takes our reference to the exception: this thread must
                // not drop a reference after publishing the others. (exception_ptr counts
                // references inside libstdc++, which ThreadSanitizer cannot see, so a late
                // release here would be reported as a race with the consumer.)
                deliver(completions[i], Outcome<R>(i == last ? std::move(error) : error));
            }
        }
    }
    if constexpr (!std::is_trivially_destructible_v<T>) {
        for (std::size_t i = 0; i < count; ++i) {
            items[i].~T();
        }
    }
    // relaxed: published to the next producers by arrive()'s acq_rel and the open CAS.
    detail::store_slot_states<std::memory_order_relaxed>(states, size, detail::slot_empty);
    // One clock read serves the latency sample and the decision the free worker takes below;
    // without completions to run, results were "delivered" when process_batch returned, and
    // that reading serves too (a clock read is ~10% of a 1-item batch's cost).
    const std::int64_t finished = any_completion ? clock_.now().time_since_epoch().count()
                                                 : processed_at.time_since_epoch().count();
    if (latency_sample && any_completion) {
        stats_.item_latency(to_nanoseconds(finished - opened_at));  // see completed() above
    }
    // Holes were taken off by their producers (fill_slot). relaxed: a statistic for close_for().
    finished_items_.fetch_add(size - holes, std::memory_order_relaxed);
    if (cost_function_) {
        // The items are finished: their cost leaves the pending total. Reset for the buffer's
        // next batch (relaxed: published to its producers by the buffer's reopening).
        buffer.cost.store(0, std::memory_order_relaxed);
        release_cost(batch_cost);
    }
    // The batch's slots are free: their share of the capacity goes back to the lane (and may
    // open a buffer parked for want of items).
    return_items(lanes_[buffer_index / buffers_per_lane_], static_cast<std::int64_t>(size));
    detail::running_batches = running.outer;
    // The worker is free: seq_cst, Dekker handshake with the timer (seal_for_free_worker).
    finished_batches_.fetch_add(1, std::memory_order_seq_cst);
    seal_for_free_worker(finished);
}

// Completes one item of a batch that succeeded: no exception_ptr copied per item, no optional
// for the void case (callgrind, handle items at B = 256: 317 -> 297
// instructions per item with the out-of-line HandleCompletion::drop).
template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::complete_ok(
    detail::Completion<R>& completion, [[maybe_unused]] batch_result_type_or_empty& results,
    [[maybe_unused]] std::size_t index) noexcept {
    if constexpr (std::is_void_v<R>) {
        deliver(completion, Outcome<R>());
    } else {
        std::optional<Outcome<R>> outcome;
        MICROBATCH_TRY {
            outcome.emplace(std::move(results[index]));
        }
        MICROBATCH_CATCH_ALL {
            // Moving the result threw: the item gets that exception instead.
            outcome.emplace(std::current_exception());
        }
        deliver(completion, std::move(*outcome));
    }
}

// Runs @p completion with @p outcome; an exception from a callback is counted, not propagated.
template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::deliver(detail::Completion<R>& completion,
                                               Outcome<R>&& outcome) noexcept {
    MICROBATCH_TRY {
        completion.complete(std::move(outcome));
    }
    MICROBATCH_CATCH_ALL {
        stats_.callback_exception();
    }
}

template <class T, class R, class Clock>
std::uint8_t detail::BatcherCore<T, R, Clock>::wait_for_slot(
    std::atomic<std::uint8_t>& state) noexcept {
    for (int spin = 0;; ++spin) {
        // acquire: pairs with the producer's release so its item is visible.
        const std::uint8_t value = state.load(std::memory_order_acquire);
        if (value != detail::slot_empty) {
            return value;
        }
        if (spin < 128) {
            detail::cpu_relax();
        } else {
            std::this_thread::yield();  // the producer was preempted mid-write
        }
    }
}

// Closes the holes left by failed constructions so the batch is contiguous again. An item
// whose move constructor throws here fails with that exception (reported through its
// completion) instead of being processed; it is counted in the stats before it completes.
template <class T, class R, class Clock>
std::size_t detail::BatcherCore<T, R, Clock>::compact(T* items, detail::Completion<R>* completions,
                                                      std::atomic<std::uint8_t>* states,
                                                      std::size_t size,
                                                      std::size_t& failed) noexcept {
    std::size_t kept = 0;
    for (std::size_t i = 0; i < size; ++i) {
        if (states[i].load(std::memory_order_relaxed) == detail::slot_hole) {
            continue;
        }
        if (kept != i) {
            MICROBATCH_TRY {
                ::new (static_cast<void*>(items + kept)) T(std::move(items[i]));
            }
            MICROBATCH_CATCH_ALL {
                const std::exception_ptr error = std::current_exception();
                items[i].~T();
                ++failed;
                stats_.failed_early();  // before completing: whoever sees it sees it counted
                if (completions[i].has_value()) {
                    MICROBATCH_TRY {
                        completions[i].complete(Outcome<R>(error));
                    }
                    MICROBATCH_CATCH_ALL {
                        stats_.callback_exception();
                    }
                }
                continue;
            }
            items[i].~T();
            if (completions[i].has_value()) {
                completions[kept].take(completions[i]);
            }
        }
        ++kept;
    }
    return kept;
}

// Two parties finish a batch: the task that ran it and the thread that posted it (which
// may still be inside the executor call when the batch is done). The second one frees the
// buffer, so neither touches it, nor the batcher, after the batcher could be destroyed.
template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::finish_party(std::uint32_t index) noexcept {
    Buffer& buffer = buffers_[index];
    // acq_rel: the second party must see everything the first did.
    if (buffer.finish_parties.fetch_add(1, std::memory_order_acq_rel) == 0) {
        return;
    }
    const std::uint64_t sequence = buffer.sequence.load(std::memory_order_relaxed);
    arrive(index);
    // Under the mutex, notify included: once close() sees the count reach zero it may destroy
    // the batcher, so the count's last change must be our last touch. (A lock-free decrement
    // would need the waiters' presence folded into the count to stay safe; it would save one
    // locked instruction per batch, so the lock stays.)
    std::lock_guard<std::mutex> lock(idle_mutex_);
    mark_finished(buffer, sequence);
    --open_batches_;
    if (idle_waiters_ != 0) {
        idle_condition_.notify_all();
    }
}

}  // namespace microbatch
