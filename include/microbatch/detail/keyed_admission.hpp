#pragma once
/**
 * @file detail/keyed_admission.hpp
 * @brief KeyedBatcher internals: admitting an item before it is placed. The handle made for a
 *        submit, the item's cost (weighed once, outside the mutex; CostLimitError above
 *        max_pending_cost), and the wait for room in count (`capacity`) and cost
 *        (`max_pending_cost`), with waiters for pending cost admitted first come, first served.
 *
 * with_handle, submit_core and check_cost run without mutex_; has_room, wait_for_space and
 * leave_cost_queue expect it held.
 */

#include <algorithm>
#include <optional>
#include <string>

#include "microbatch/detail/batcher_slots.hpp"  // HandleCompletion, re-entrancy chain
#include "microbatch/detail/config.hpp"
#include "microbatch/detail/keyed_batcher_core.hpp"

namespace microbatch {

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
template <class U>
SubmitStatus detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::with_handle(
    Key key, U&& item, WaitMode mode, Deadline deadline, Handle<R>& out) {
    // The handle owns one reference; the item's completion gets the other on acceptance.
    detail::HandleState<R>* const state = detail::HandleState<R>::create();
    Handle<R> handle = detail::HandleAccess::make(state);
    struct Unclaimed {  // releases the completion's reference if it was never handed out
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
    const SubmitStatus status =
        submit_core(std::move(key), std::forward<U>(item), mode, deadline, store);
    if (status == SubmitStatus::accepted) {
        out = std::move(handle);
    }
    return status;
}

// Weighs the item (outside the mutex, once) and hands it to accept().
template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
template <class U, class Store>
SubmitStatus detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::submit_core(
    Key key, U&& item, WaitMode mode, Deadline deadline, Store&& store) {
    if (!cost_of_) {
        return accept(std::move(key), std::forward<U>(item), 0, mode, deadline,
                      std::forward<Store>(store));
    }
    if constexpr (std::is_same_v<std::decay_t<U>, T>) {
        const std::size_t cost = cost_of_(item);
        check_cost(cost);
        return accept(std::move(key), std::forward<U>(item), cost, mode, deadline,
                      std::forward<Store>(store));
    } else {
        // The cost function takes a T: make it once (from a copy where T allows, so that a
        // rejected argument stays untouched), weigh it, and move it in.
        std::optional<T> made;
        if constexpr (std::is_constructible_v<T, U&>) {
            made.emplace(item);
        } else {
            made.emplace(std::forward<U>(item));
        }
        const std::size_t cost = cost_of_(*made);
        check_cost(cost);
        return accept(std::move(key), std::move(*made), cost, mode, deadline,
                      std::forward<Store>(store));
    }
}

template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::check_cost(
    std::size_t cost) const {
    if (max_pending_cost_ != 0 && cost > max_pending_cost_) {
        MICROBATCH_THROW(CostLimitError("microbatch::KeyedBatcher: item cost " +
                                        std::to_string(cost) + " exceeds max_pending_cost " +
                                        std::to_string(max_pending_cost_)));
    }
}

// Room for one more item of @p cost: under capacity and, with max_pending_cost, under it.
template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
bool detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::has_room(
    std::size_t cost) const noexcept {
    return pending_items_ < capacity_ &&
           detail::pending_cost_fits(pending_cost_, cost, max_pending_cost_);
}

// Waits until an item of @p cost may enter (per @p mode). With max_pending_cost set, a submit
// that has to wait takes a ticket in cost_queue_, and only the front ticket (or, with the queue
// empty, a newcomer) may enter: first come, first served, whatever the costs.
template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
SubmitStatus detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::wait_for_space(
    Lock& lock, WaitMode mode, Deadline deadline, std::size_t cost) {
    struct Ticket {  // leaves cost_queue_ on every way out (also when an exception leaves)
        KeyedBatcherCore* self;
        std::optional<std::uint64_t> number;
        ~Ticket() {
            if (number) {
                self->leave_cost_queue(*number);
            }
        }
        bool my_turn() const noexcept {
            return number ? self->cost_queue_.front() == *number : self->cost_queue_.empty();
        }
    } ticket{this, std::nullopt};
    for (;;) {
        if (closed_) {
            return SubmitStatus::closed;
        }
        const bool room = has_room(cost);
        if (room && ticket.my_turn()) {
            return SubmitStatus::accepted;
        }
        if (!room && in_flight_ == 0 && stats_.queued_batches == 0) {
            // Every pending item sits in a partial batch, and nothing running will free space:
            // without a time bound that would never change (with one, only at max_delay).
            // Seal them all (reason full: the batcher is), so that the wait below ends.
            BatchList ready;
            seal_all(DispatchReason::full, ready);
            if (!ready.empty()) {
                ++posters_;
                lock.unlock();
                post_batches(ready, 0);
                lock.lock();
                continue;
            }
        }
        if (mode == wait_never) {
            return SubmitStatus::full;
        }
        if (detail::is_running_on_this_thread(this)) {
            MICROBATCH_THROW(
                ReentrancyError("microbatch::KeyedBatcher: a blocking submit found the batcher "
                                "full inside its own process_batch or callback and would wait "
                                "for itself; use try_submit"));
        }
        if (max_pending_cost_ != 0 && !ticket.number) {
            ticket.number = next_cost_ticket_++;
            cost_queue_.push_back(*ticket.number);
        }
        ++space_waiters_;
        bool timed_out = false;
        if (mode == wait_forever) {
            space_condition_.wait(lock);
        } else {
            timed_out = space_condition_.wait_until(lock, deadline) == std::cv_status::timeout;
        }
        --space_waiters_;
        if (closed_ && idle_waiters_ != 0) {
            idle_condition_.notify_all();  // close() waits for blocked producers to leave
        }
        if (timed_out && !closed_ && !(has_room(cost) && ticket.my_turn())) {
            return SubmitStatus::full;
        }
    }
}

// Removes @p ticket from cost_queue_; if it was the front one, the next may enter now.
template <class Key, class T, class R, class Clock, class Hash, class KeyEqual>
void detail::KeyedBatcherCore<Key, T, R, Clock, Hash, KeyEqual>::leave_cost_queue(
    std::uint64_t ticket) noexcept {
    const bool front = cost_queue_.front() == ticket;
    cost_queue_.erase(std::find(cost_queue_.begin(), cost_queue_.end(), ticket));
    if (front && !cost_queue_.empty() && space_waiters_ != 0) {
        space_condition_.notify_all();
    }
}

}  // namespace microbatch
