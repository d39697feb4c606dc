#pragma once
/**
 * @file detail/keyed_run.hpp
 * @brief KeyedBatcher internals: construction, running batches on the workers, the one timer
 *        thread, wait_idle, close and the stats snapshots.
 *
 * A worker runs a batch outside the mutex, counts it in atomic counters (before any item
 * completes, so a producer that saw a result sees it counted), completes the items, then takes
 * the mutex once to retire it and to pick the next batch round-robin, which it runs itself.
 */

#if defined(__linux__) && __has_include(<sys/prctl.h>)
#include <sys/prctl.h>  // PR_SET_TIMERSLACK for the timer thread
#endif

#include <limits>
#include <stdexcept>
#include <string>

#include "microbatch/detail/batcher_slots.hpp"  // HandleCompletion, re-entrancy chain
#include "microbatch/detail/keyed_batcher_core.hpp"

namespace microbatch {

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::initialise() {
    options_.validate();
    if (!cost_of_) {  // a cost bound weighs nothing without a cost function: say so
        const auto needs_cost = [](const char* option, std::size_t value) {
            if (value != 0) {
                MICROBATCH_THROW(std::invalid_argument(
                    std::string("microbatch::KeyedOptions: ") + option + " " +
                    std::to_string(value) +
                    " needs a cost function (pass microbatch::cost_by(f) to the constructor)"));
            }
        };
        needs_cost("max_batch_cost", options_.max_batch_cost());
        needs_cost("max_pending_cost", options_.max_pending_cost());
    }
    capacity_ = options_.effective_capacity();
    max_pending_cost_ = options_.max_pending_cost();
    default_batch_cost_ = options_.max_batch_cost();
    max_keys_ = options_.max_keys();
    max_in_flight_ = options_.effective_max_in_flight();
    default_batch_size_ = options_.max_batch_size();
    default_delay_ = to_ticks(options_.max_delay());
    idle_timeout_ = to_ticks(options_.key_idle_timeout());
    if (options_.executor()) {
        executor_ = options_.executor();
    } else {
        pool_ = std::make_unique<ThreadPool>(options_.workers());
        executor_ = pool_->executor();
    }
    free_batches_.reserve(max_free_batches);  // recycle() never allocates
    sleeper_.emplace(clock_, mutex_, timer_condition_);
    timer_wake_at_ = std::numeric_limits<std::int64_t>::min();  // awake until it first sleeps
    timer_ = std::thread([this] { run_timer(); });
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::destroy() noexcept {
    close();
    pool_.reset();  // joins the owned pool's threads (idle by now)
    // Timer entries keep reclaimed states alive; drop them, then the live states.
    while (!timer_heap_.empty()) {
        State* const state = timer_heap_.top().key;
        timer_heap_.pop();
        release_entry(state);
    }
    keys_.clear();
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::run_batches(
    KeyBatch* batch) noexcept {
    for (unsigned run = 1; batch != nullptr; ++run) {
        run_one(batch);
        batch = finish(batch, run < max_batches_per_task);
    }
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::run_one(KeyBatch* batch) noexcept {
    const detail::RunningBatch running{this, detail::running_batches};
    detail::running_batches = &running;
    State* const state = batch->key;  // stays live: the batch counts in its in_flight
    const std::size_t count = batch->items.size();
    batch->count = count;  // for finish(), after the items are gone
    Batch<T> view(batch->items.data(), count, batch->reason, batch->sequence);
    std::exception_ptr error;
    [[maybe_unused]] std::conditional_t<std::is_void_v<R>, std::nullptr_t, std::vector<R>>
        results{};
    MICROBATCH_TRY {
        if constexpr (std::is_void_v<R>) {
            process_(state->key, view);
        } else {
            results = process_(state->key, view);
            if (results.size() != count) {
                error = detail::make_error_ptr(
                    ResultCountError("microbatch::KeyedBatcher: process_batch returned " +
                                     std::to_string(results.size()) + " results for a batch of " +
                                     std::to_string(count) + " items"));
            }
        }
    }
    MICROBATCH_CATCH_ALL {
        error = std::current_exception();
    }
    // Counted before any item completes (see WorkerCounters).
    counters_.batch_ran(count, static_cast<bool>(error));
    state->counters.batch_ran(count, static_cast<bool>(error));
    if (batch->any_completion) {
        std::size_t last = count;
        for (std::size_t i = count; i-- > 0;) {
            if (batch->completions[i].has_value()) {
                last = i;
                break;
            }
        }
        for (std::size_t i = 0; i < count; ++i) {
            if (batch->completions[i].has_value()) {
                // The last completion takes our reference to the exception (see Batcher's
                // run_batch: a late release here would look like a race to ThreadSanitizer).
                complete(batch->completions[i], i == last ? std::move(error) : error, results, i);
            }
        }
    }
    batch->items.clear();  // destroys the items, outside the mutex
    detail::running_batches = running.outer;
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::complete(
    detail::Completion<R>& completion, std::exception_ptr error,
    std::conditional_t<std::is_void_v<R>, std::nullptr_t, std::vector<R>>& results,
    std::size_t index) noexcept {
    std::optional<Outcome<R>> outcome;
    if (error) {
        outcome.emplace(std::move(error));
    } else if constexpr (std::is_void_v<R>) {
        outcome.emplace();
    } else {
        MICROBATCH_TRY {
            outcome.emplace(std::move(results[index]));
        }
        MICROBATCH_CATCH_ALL {
            outcome.emplace(std::current_exception());  // moving the result threw
        }
    }
    MICROBATCH_TRY {
        completion.complete(std::move(*outcome));
    }
    MICROBATCH_CATCH_ALL {
        // relaxed: a statistic (see WorkerCounters).
        counters_.callback_exceptions.fetch_add(1, std::memory_order_relaxed);
    }
}

// Retires @p batch (its items are gone) and returns the next batch for this worker (if
// @p take_next), handing any others to the executor. After the mutex is released for the last
// time the worker touches nothing of the batcher, which close() may then destroy.
template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
typename detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::KeyBatch*
detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::finish(KeyBatch* batch,
                                                                   bool take_next) noexcept {
    const std::int64_t now = now_ticks();
    BatchList next;
    KeyBatch* mine = nullptr;
    std::size_t first = 0;
    {
        Lock lock(mutex_);
        State* const state = batch->key;
        pending_items_ -= batch->count;
        state->pending -= batch->count;
        pending_cost_ -= batch->cost;
        state->pending_cost -= batch->cost;
        --in_flight_;
        --state->in_flight;
        unfinished_tickets_.erase(batch->first_ticket);
        recycle(batch);
        if (state->idle()) {
            note_idle(state, now);
        }
        MICROBATCH_TRY {
            dispatch_ready(detail::KeyedTrigger::worker_finished, next);
        }
        MICROBATCH_CATCH_ALL {
            // Out of memory for the list: the ring keeps the work; the next event takes it.
        }
        if (take_next && !next.empty()) {
            mine = next.front();
            first = 1;
        }
        if (next.size() > first) {
            ++posters_;
        }
        if (space_waiters_ != 0) {
            space_condition_.notify_all();
        }
        if (idle_waiters_ != 0) {
            idle_condition_.notify_all();
        }
    }
    if (next.size() > first) {
        post_batches(next, first);
    }
    return mine;
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::run_timer() {
#if defined(__linux__) && __has_include(<sys/prctl.h>)
    // This thread exists to wake on time: ask for 1 ns timer slack instead of 50 us.
    ::prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
#endif
    Lock lock(mutex_);
    while (!timer_stop_) {
        reclaim_expired(now_ticks());
        BatchList ready;
        dispatch_ready(detail::KeyedTrigger::timer, ready);
        if (!ready.empty()) {
            // Unlocked: an inline executor runs the batch here, and it may submit.
            ++posters_;
            lock.unlock();
            post_batches(ready, 0);
            lock.lock();
            continue;
        }
        const std::int64_t wake = timer_heap_.empty() ? never : timer_heap_.top().at;
        timer_wake_at_ = wake;
        if (wake == never) {
            sleeper_->sleep(lock);
        } else {
            sleeper_->sleep_until(lock, typename Clock::time_point(typename Clock::duration(wake)));
        }
        timer_wake_at_ = std::numeric_limits<std::int64_t>::min();
    }
    sleeper_->retire();
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::check_not_reentrant(
    const char* what) const {
    if (detail::is_running_on_this_thread(this)) {
        MICROBATCH_THROW(ReentrancyError(std::string("microbatch::KeyedBatcher: ") + what +
                                         "() called from inside this batcher's process_batch "
                                         "or callback would wait for itself"));
    }
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::wait_idle() {
    check_not_reentrant("wait_idle");
    BatchList ready;
    Lock lock(mutex_);
    seal_all(DispatchReason::flush, ready);
    const std::uint64_t target = next_ticket_;
    if (!ready.empty()) {
        ++posters_;
        lock.unlock();
        post_batches(ready, 0);
        lock.lock();
    }
    ++idle_waiters_;
    idle_condition_.wait(lock, [this, target] {
        return unfinished_tickets_.empty() || *unfinished_tickets_.begin() >= target;
    });
    --idle_waiters_;
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::close() {
    check_not_reentrant("close");
    BatchList ready;
    Lock lock(mutex_);
    if (!closed_) {
        closed_ = true;
        seal_all(DispatchReason::close, ready);
        space_condition_.notify_all();  // blocked producers leave with ClosedError
        if (!ready.empty()) {
            ++posters_;
            lock.unlock();
            post_batches(ready, 0);
            lock.lock();
        }
    }
    ++idle_waiters_;
    idle_condition_.wait(lock, [this] {
        return pending_items_ == 0 && in_flight_ == 0 && posters_ == 0 && space_waiters_ == 0;
    });
    --idle_waiters_;
    lock.unlock();
    std::lock_guard<std::mutex> join(join_mutex_);
    if (timer_.joinable()) {
        {
            Lock stop(mutex_);
            timer_stop_ = true;
            timer_condition_.notify_all();
        }
        timer_.join();
    }
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
bool detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::is_closed() const {
    Lock lock(mutex_);
    return closed_;
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
KeyedStats detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::stats() const {
    Lock lock(mutex_);
    KeyedStats snapshot = stats_;
    // relaxed: see WorkerCounters.
    snapshot.items_processed = counters_.items_processed.load(std::memory_order_relaxed);
    snapshot.items_failed = counters_.items_failed.load(std::memory_order_relaxed);
    snapshot.batches_completed = counters_.batches_completed.load(std::memory_order_relaxed);
    snapshot.batches_failed = counters_.batches_failed.load(std::memory_order_relaxed);
    snapshot.callback_exceptions = counters_.callback_exceptions.load(std::memory_order_relaxed);
    snapshot.keys_live = keys_.size();
    snapshot.pending = pending_items_;
    snapshot.pending_cost = pending_cost_;
    snapshot.in_flight = in_flight_;
    return snapshot;
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
std::optional<KeyStats> detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::key_stats(
    const Key& key) const {
    Lock lock(mutex_);
    const auto found = keys_.find(key);
    if (found == keys_.end()) {
        return std::nullopt;
    }
    const State& state = *found->second;
    KeyStats snapshot;
    snapshot.items_accepted = state.items_accepted;
    // relaxed: see WorkerCounters.
    snapshot.items_processed = state.counters.items_processed.load(std::memory_order_relaxed);
    snapshot.items_failed = state.counters.items_failed.load(std::memory_order_relaxed);
    snapshot.batches_completed = state.counters.batches_completed.load(std::memory_order_relaxed);
    snapshot.batches_failed = state.counters.batches_failed.load(std::memory_order_relaxed);
    snapshot.pending = state.pending;
    snapshot.queued_batches = state.queued.size();
    snapshot.in_flight = state.in_flight;
    snapshot.max_batch_size = state.max_batch_size;
    snapshot.max_batch_cost = state.max_batch_cost;
    snapshot.pending_cost = state.pending_cost;
    snapshot.item_cost_total = state.item_cost_total;
    snapshot.batch_item_cost_max = state.batch_item_cost_max;
    snapshot.items_oversized = state.items_oversized;
    snapshot.max_delay =
        state.max_delay < 0
            ? std::chrono::nanoseconds::max()
            : std::chrono::duration_cast<std::chrono::nanoseconds>(
                  typename Clock::duration(static_cast<typename Clock::rep>(state.max_delay)));
    return snapshot;
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
std::size_t detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::live_keys() const {
    Lock lock(mutex_);
    return keys_.size();
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
std::size_t detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::pending() const {
    Lock lock(mutex_);
    return pending_items_;
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
std::size_t detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::pending_cost() const {
    Lock lock(mutex_);
    return pending_cost_;
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
std::size_t detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::in_flight() const {
    Lock lock(mutex_);
    return in_flight_;
}

}  // namespace microbatch
