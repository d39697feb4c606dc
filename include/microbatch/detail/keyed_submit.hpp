#pragma once
/**
 * @file detail/keyed_submit.hpp
 * @brief KeyedBatcher internals, under the mutex: placing an admitted item (key, open batch,
 *        the count and cost bounds), sealing, the timer heap, key reclamation and round-robin
 *        dispatch; flush and limits. Admission itself (cost, room) is in keyed_admission.hpp.
 *
 * Every function here except accept, flush and the limit setters expects mutex_ held. Batches are
 * handed to the executor only after the mutex is released (post_batches), with posters_ counting
 * the threads still inside an executor call so that close() cannot return (and the batcher be
 * destroyed) under them.
 */

#include <algorithm>
#include <limits>
#include <string>

#include "microbatch/detail/batcher_slots.hpp"  // HandleCompletion, re-entrancy chain
#include "microbatch/detail/keyed_batcher_core.hpp"

namespace microbatch {

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
template <class U, class Store>
SubmitStatus detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::accept(
    Key key, U&& item, std::size_t cost, WaitMode mode, Deadline deadline, Store&& store) {
    BatchList ready;
    {
        Lock lock(mutex_);
        const SubmitStatus space = wait_for_space(lock, mode, deadline, cost);
        if (space != SubmitStatus::accepted) {
            ++(space == SubmitStatus::full ? stats_.items_rejected_full
                                           : stats_.items_rejected_closed);
            return space;
        }
        State* const state = find_or_create_key(key);  // throws KeyLimitError at the cap
        const bool sealed_first =
            state->open != nullptr &&
            detail::cost_seals_first(state->open->items.size(), state->open->cost, cost,
                                     state->open->cost_bound);
        if (sealed_first) {
            // The item would take the open batch above its cost bound: seal it first (full).
            queue_sealed(state, seal(state, DispatchReason::full));
        }
        KeyBatch* batch = state->open;
        const bool opened = batch == nullptr;
        const std::int64_t now = opened ? now_ticks() : 0;
        if (opened) {
            batch = open_batch(state, now);
        }
        detail::Completion<R>* slot = nullptr;
        MICROBATCH_TRY {
            // Room first, then the completion: if storing it throws (a copied callback), the
            // item is still untouched. Then the item, into room made, so nothing moves.
            slot = &batch->next_slot();
            const bool has_completion = store(*slot);
            batch->items.emplace_back(std::forward<U>(item));
            batch->any_completion = batch->any_completion || has_completion;
        }
        MICROBATCH_CATCH_ALL {
            if (slot != nullptr) {
                slot->reset();
            }
            if (opened) {  // undo the opening: nothing of this key is pending because of us
                state->open = nullptr;
                unfinished_tickets_.erase(batch->first_ticket);
                recycle(batch);
                if (state->idle()) {
                    note_idle(state, now);
                }
            }
            if (sealed_first) {
                // The batch sealed for this item waits in the ring, and we leave without
                // dispatching: wake the timer, which hands out what workers are free for.
                timer_wake_at_ = std::numeric_limits<std::int64_t>::min();
                timer_condition_.notify_one();
            }
            MICROBATCH_RETHROW;
        }
        ++next_ticket_;
        ++pending_items_;
        ++state->pending;
        ++state->items_accepted;
        ++stats_.items_accepted;
        pending_cost_ += cost;
        state->pending_cost += cost;
        batch->cost += cost;
        if (detail::cost_oversized(cost, batch->cost_bound)) {  // alone: opened for it above
            ++stats_.items_oversized;
            ++state->items_oversized;
        }
        if (batch->items.size() >= batch->bound ||
            detail::cost_full(batch->cost, batch->cost_bound)) {
            queue_sealed(state, seal(state, DispatchReason::full));
        } else if (opened) {
            const detail::KeyBatchCheck check =
                detail::check_key_batch(1, batch->bound, now, state->max_delay, now);
            if (check.state == detail::KeyBatchState::due) {
                mark_due(state);  // max_delay(0): as soon as a worker is free
            } else if (check.due_at != never) {
                schedule(check.due_at, state, batch->generation, detail::KeyTimerKind::batch_due);
            }
        }
        dispatch_ready(detail::KeyedTrigger::producer, ready);
        if (!ready.empty()) {
            ++posters_;
        }
    }
    if (!ready.empty()) {
        post_batches(ready, 0);
    }
    return SubmitStatus::accepted;
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
typename detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::State*
detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::find_or_create_key(const Key& key) {
    const auto found = keys_.find(key);
    if (found != keys_.end()) {
        return found->second.get();
    }
    if (keys_.size() >= max_keys_) {
        reclaim_expired(now_ticks());
        if (keys_.size() >= max_keys_) {
            ++stats_.items_rejected_key_limit;
            MICROBATCH_THROW(KeyLimitError(
                "microbatch::KeyedBatcher: max_keys " + std::to_string(max_keys_) +
                " keys are live and none has been idle for key_idle_timeout; a new key cannot "
                "be added (raise max_keys or lower key_idle_timeout)"));
        }
    }
    auto state = std::make_unique<State>(key, bound_for(key), delay_for(key), cost_bound_for(key));
    State* const raw = state.get();
    keys_.emplace(key, std::move(state));
    ++stats_.keys_created;
    return raw;
}

// Handles every timer entry due at @p now: due batches join the ring, idle keys are reclaimed.
template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::reclaim_expired(std::int64_t now) {
    while (!timer_heap_.empty() && timer_heap_.top().at <= now) {
        const TimerEntry entry = timer_heap_.top();
        timer_heap_.pop();
        State* const state = entry.key;
        if (!state->reclaimed) {
            if (entry.kind == detail::KeyTimerKind::batch_due) {
                if (state->open != nullptr && state->open->generation == entry.stamp) {
                    mark_due(state);
                }
            } else {
                state->reclaim_scheduled = false;
                if (state->idle()) {
                    const std::int64_t at = detail::key_due_time(state->idle_since, idle_timeout_);
                    if (at <= now) {
                        reclaim(state);
                    } else {
                        state->reclaim_scheduled = true;  // busy meanwhile: idle for less
                        schedule(at, state, 0, detail::KeyTimerKind::reclaim_key);
                    }
                }
            }
        }
        release_entry(state);
    }
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::reclaim(State* state) {
    const auto found = keys_.find(state->key);
    state->reclaimed = true;
    ++stats_.keys_reclaimed;
    if (state->timer_entries == 0) {
        keys_.erase(found);  // destroys the state
    } else {
        found->second.release();  // freed by release_entry() with its last timer entry
        keys_.erase(found);
    }
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::release_entry(
    State* state) noexcept {
    if (--state->timer_entries == 0 && state->reclaimed) {
        delete state;
    }
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
typename detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::KeyBatch*
detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::open_batch(State* state,
                                                                       std::int64_t now) {
    std::unique_ptr<KeyBatch> batch;
    if (!free_batches_.empty()) {
        batch = std::move(free_batches_.back());
        free_batches_.pop_back();
    } else {
        batch = std::make_unique<KeyBatch>();
    }
    batch->open(state, state->max_batch_size, state->max_batch_cost);
    batch->opened_at = now;
    batch->generation = next_generation_++;
    batch->first_ticket = next_ticket_;
    unfinished_tickets_.insert(next_ticket_);
    state->open = batch.release();
    state->open_due = false;
    return state->open;
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
typename detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::KeyBatch*
detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::seal(State* state,
                                                                 DispatchReason reason) {
    KeyBatch* const batch = state->open;
    state->open = nullptr;
    state->open_due = false;
    batch->reason = reason;
    batch->sequence = next_sequence_++;
    stats_.item_cost_total += batch->cost;
    stats_.batch_item_cost_max = std::max<std::uint64_t>(stats_.batch_item_cost_max, batch->cost);
    state->item_cost_total += batch->cost;
    state->batch_item_cost_max = std::max<std::uint64_t>(state->batch_item_cost_max, batch->cost);
    switch (reason) {
        case DispatchReason::full:
            ++stats_.batches_full;
            break;
        case DispatchReason::flush:
            ++stats_.batches_flush;
            break;
        case DispatchReason::close:
            ++stats_.batches_close;
            break;
        case DispatchReason::worker_free:
            ++stats_.batches_worker_free;
            break;
        default:
            ++stats_.batches_deadline;
            break;
    }
    return batch;
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::queue_sealed(State* state,
                                                                              KeyBatch* batch) {
    state->queued.push_back(batch);
    ++stats_.queued_batches;
    if (!state->in_ring) {
        state->in_ring = true;
        ring_.push(state);
    }
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::mark_due(State* state) {
    state->open_due = true;
    if (!state->in_ring) {
        state->in_ring = true;
        ring_.push(state);
    }
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::schedule(
    std::int64_t at, State* state, std::uint64_t stamp, detail::KeyTimerKind kind) {
    timer_heap_.push(TimerEntry{at, state, stamp, kind});
    ++state->timer_entries;
    if (at < timer_wake_at_) {
        // The timer sleeps past this entry: wake it (it recomputes under mutex_ before
        // sleeping again, so one notify per sleep is enough).
        timer_wake_at_ = std::numeric_limits<std::int64_t>::min();
        timer_condition_.notify_one();
    }
}

// Hands out batches round-robin between keys while workers are free (detail/keyed_policy.hpp).
template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::dispatch_ready(
    detail::KeyedTrigger trigger, BatchList& out) {
    while (detail::worker_free(in_flight_, max_in_flight_) && !ring_.empty()) {
        State* const state = ring_.pop();
        state->in_ring = false;
        const detail::KeyDispatchDecision decision = detail::decide_key_dispatch(
            state->queued.size(), state->open != nullptr && state->open_due);
        KeyBatch* batch = nullptr;
        if (decision.take == detail::KeyDispatch::queued) {
            batch = state->queued.front();
            state->queued.pop_front();
            --stats_.queued_batches;
        } else if (decision.take == detail::KeyDispatch::seal_open) {
            batch = seal(state, detail::due_reason(trigger));
        } else {
            continue;
        }
        out.push_back(batch);
        ++in_flight_;
        ++state->in_flight;
        if (decision.requeue) {
            state->in_ring = true;
            ring_.push(state);
        }
    }
}

// Called without mutex_, after the caller counted itself in posters_ under it.
template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::post_batches(
    BatchList& batches, std::size_t first) noexcept {
    for (std::size_t i = first; i < batches.size(); ++i) {
        KeyBatch* const batch = batches[i];
        MICROBATCH_TRY {
            executor_([this, batch] { run_batches(batch); });
        }
        MICROBATCH_CATCH_ALL {
            run_batches(batch);  // the executor refused it: run it here, lose nothing
        }
    }
    Lock lock(mutex_);
    if (--posters_ == 0 && idle_waiters_ != 0) {
        idle_condition_.notify_all();
    }
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::recycle(KeyBatch* batch) noexcept {
    batch->key = nullptr;
    if (free_batches_.size() < max_free_batches) {
        free_batches_.emplace_back(batch);  // reserved in initialise(): does not allocate
    } else {
        delete batch;
    }
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::seal_all(DispatchReason reason,
                                                                          BatchList& out) {
    for (auto& entry : keys_) {
        State* const state = entry.second.get();
        if (state->open != nullptr) {
            queue_sealed(state, seal(state, reason));
        }
    }
    dispatch_ready(detail::KeyedTrigger::flush, out);
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::note_idle(State* state,
                                                                           std::int64_t now) {
    state->idle_since = now;
    if (idle_timeout_ >= 0 && !state->reclaim_scheduled) {
        state->reclaim_scheduled = true;
        schedule(detail::key_due_time(now, idle_timeout_), state, 0,
                 detail::KeyTimerKind::reclaim_key);
    }
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
std::size_t detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::bound_for(
    const Key& key) const {
    const auto found = limits_.find(key);
    return found != limits_.end() && found->second.max_batch_size ? *found->second.max_batch_size
                                                                  : default_batch_size_;
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
std::int64_t detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::delay_for(
    const Key& key) const {
    const auto found = limits_.find(key);
    return found != limits_.end() && found->second.max_delay ? to_ticks(*found->second.max_delay)
                                                             : default_delay_;
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
std::size_t detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::cost_bound_for(
    const Key& key) const {
    const auto found = limits_.find(key);
    return found != limits_.end() && found->second.max_batch_cost ? *found->second.max_batch_cost
                                                                  : default_batch_cost_;
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
std::int64_t detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::to_ticks(
    std::chrono::nanoseconds value) const noexcept {
    if (value == std::chrono::nanoseconds::max()) {
        return -1;  // no bound
    }
    return static_cast<std::int64_t>(std::chrono::ceil<typename Clock::duration>(value).count());
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::flush() {
    BatchList ready;
    {
        Lock lock(mutex_);
        seal_all(DispatchReason::flush, ready);
        if (!ready.empty()) {
            ++posters_;
        }
    }
    if (!ready.empty()) {
        post_batches(ready, 0);
    }
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::flush(const Key& key) {
    BatchList ready;
    {
        Lock lock(mutex_);
        const auto found = keys_.find(key);
        if (found == keys_.end() || found->second->open == nullptr) {
            return;
        }
        State* const state = found->second.get();
        queue_sealed(state, seal(state, DispatchReason::flush));
        dispatch_ready(detail::KeyedTrigger::flush, ready);
        if (!ready.empty()) {
            ++posters_;
        }
    }
    if (!ready.empty()) {
        post_batches(ready, 0);
    }
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::set_key_limits(
    const Key& key, const KeyLimits& limits) {
    if (limits.max_batch_size) {
        KeyedOptions::check_batch_size("max_batch_size", *limits.max_batch_size);
        if (*limits.max_batch_size > capacity_) {
            MICROBATCH_THROW(std::invalid_argument(
                "microbatch::KeyedBatcher::set_key_limits: max_batch_size must be <= capacity " +
                std::to_string(capacity_) + " (got " + std::to_string(*limits.max_batch_size) +
                ")"));
        }
    }
    if (limits.max_delay) {
        KeyedOptions::check_delay("max_delay", *limits.max_delay);
    }
    if (limits.max_batch_cost && *limits.max_batch_cost != 0 && !cost_of_) {
        MICROBATCH_THROW(std::invalid_argument(
            "microbatch::KeyedBatcher::set_key_limits: max_batch_cost " +
            std::to_string(*limits.max_batch_cost) +
            " needs a cost function (pass microbatch::cost_by(f) to the constructor)"));
    }
    Lock lock(mutex_);
    limits_[key] = limits;
    const auto found = keys_.find(key);
    if (found != keys_.end()) {
        found->second->max_batch_size = bound_for(key);
        found->second->max_delay = delay_for(key);
        found->second->max_batch_cost = cost_bound_for(key);
    }
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::clear_key_limits(const Key& key) {
    Lock lock(mutex_);
    limits_.erase(key);
    const auto found = keys_.find(key);
    if (found != keys_.end()) {
        found->second->max_batch_size = default_batch_size_;
        found->second->max_delay = default_delay_;
        found->second->max_batch_cost = default_batch_cost_;
    }
}

}  // namespace microbatch
