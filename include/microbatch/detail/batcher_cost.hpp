#pragma once
/**
 * @file batcher_cost.hpp
 * @brief Batcher internals, step 1 with a cost function (`cost_by`): weighing an item, the
 *        bound on pending cost, and claiming a slot under the batch cost bound.
 *
 * submit_general() and claim_bulk() hand a weighed batcher's items to submit_weighed() and
 * submit_bulk_weighed(), which for each item:
 *  1. weigh it (the cost function, once) and refuse it with CostLimitError if it exceeds
 *     max_pending_cost on its own;
 *  2. reserve its cost in pending_cost_ (reserve_cost: waits, in arrival order, like a full
 *     batcher when the bound would be exceeded). While producers wait for pending cost, open
 *     batches are sealed as soon as a worker is free (seal_policy.hpp rule 4c, reason full):
 *     their cost can only be freed by running them, and waiting for their time bound would
 *     idle the worker (or, without one, never end). A waiting producer, every claim while
 *     producers wait, and every worker that finishes a batch ask the policy;
 *  3. claim a slot (claim_weighed): with max_batch_cost, under the lane's fill_mutex, first
 *     sealing the open batch if the item does not fit in it (the pure rule is
 *     item_fits_batch()), then adding the cost to the batch it lands in;
 *  4. write the item as an unweighed submit would (fill_slot / fill_run), and seal the batch
 *     if the item brought it to the bound.
 * The worker adds a finished batch's cost to the stats and releases it from pending_cost_
 * (run_batch, detail/batcher_run.hpp).
 */

#include <string>

#include "microbatch/detail/batcher_core.hpp"
#include "microbatch/detail/config.hpp"

namespace microbatch {
namespace detail {

/// The batch cost rule, pure: may an item costing @p cost join a batch that holds @p items
/// items costing @p batch_cost in all, under the bound @p max_batch_cost (0: none)? An empty
/// batch takes any item, so an item heavier than the bound gets a batch of its own.
constexpr bool item_fits_batch(std::uint64_t batch_cost, std::uint64_t items, std::uint64_t cost,
                               std::uint64_t max_batch_cost) noexcept {
    return max_batch_cost == 0 || items == 0 || batch_cost + cost <= max_batch_cost;
}

/// Whether a batch whose items cost @p batch_cost in all is full by cost (sealed at once).
constexpr bool batch_cost_full(std::uint64_t batch_cost, std::uint64_t max_batch_cost) noexcept {
    return max_batch_cost != 0 && batch_cost >= max_batch_cost;
}

}  // namespace detail

template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::initialise_cost() {
    max_batch_cost_ = options_.max_batch_cost();
    max_pending_cost_ = options_.max_pending_cost();
    const auto needs = [this](const char* option, std::size_t value) {
        if (value != 0 && !cost_function_) {
            MICROBATCH_THROW(std::invalid_argument(
                std::string("microbatch::Options: ") + option + " " + std::to_string(value) +
                " needs a cost function (pass microbatch::cost_by(f) to the Batcher "
                "constructor)"));
        }
    };
    needs("max_batch_cost", options_.max_batch_cost());
    needs("max_pending_cost", options_.max_pending_cost());
    cost_queue_.condition = &cost_condition_;
}

template <class T, class R, class Clock>
template <class U>
std::uint64_t detail::BatcherCore<T, R, Clock>::weigh(const U& item) const {
    if constexpr (std::is_same_v<U, T>) {
        return static_cast<std::uint64_t>(cost_function_(item));
    } else if constexpr (std::is_constructible_v<T, const U&>) {
        // Weighed as the T it will become: a copy, so that a rejected item stays untouched.
        const T converted(item);
        return static_cast<std::uint64_t>(cost_function_(converted));
    } else {
        MICROBATCH_THROW(std::invalid_argument(
            "microbatch::Batcher: with a cost function (cost_by), submit items as T or as a "
            "type T can be copied from: this argument could only be weighed by moving it"));
    }
}

// The item's cost; throws, counted as a rejected item (Stats::items_rejected_error), if weighing
// throws or the item exceeds max_pending_cost on its own (CostLimitError).
template <class T, class R, class Clock>
template <class U>
std::uint64_t detail::BatcherCore<T, R, Clock>::weigh_or_refuse(const U& item) {
    std::uint64_t cost = 0;
    MICROBATCH_TRY {
        cost = weigh(item);
        if (max_pending_cost_ != 0 && cost > max_pending_cost_) {
            MICROBATCH_THROW(CostLimitError("microbatch::Batcher: item cost " +
                                            std::to_string(cost) + " exceeds max_pending_cost " +
                                            std::to_string(max_pending_cost_)));
        }
    }
    MICROBATCH_CATCH_ALL {
        stats_.rejected_error();
        MICROBATCH_RETHROW;
    }
    return cost;
}

template <class T, class R, class Clock>
template <class U, class Store>
SubmitStatus detail::BatcherCore<T, R, Clock>::submit_weighed(U&& item, WaitMode mode,
                                                              Deadline deadline, Store& store) {
    const std::uint64_t cost = weigh_or_refuse(static_cast<const std::decay_t<U>&>(item));
    SubmitStatus status = reserve_cost(cost, mode, deadline, 1);
    if (status != SubmitStatus::accepted) {
        return status;
    }
    Lane& lane = lane_for_this_thread();
    const CostClaim claim = claim_weighed(lane, cost, mode, deadline, 1);
    if (claim.status != SubmitStatus::accepted) {
        release_cost(cost);
        return claim.status;
    }
    MICROBATCH_TRY {
        status = fill_slot(lane, claim.head, claim.index, std::forward<U>(item), store, cost);
    }
    MICROBATCH_CATCH_ALL {
        release_cost(cost);  // the slot became a hole; fill_slot took its cost off the batch
        MICROBATCH_RETHROW;
    }
    if (claim.seal_after) {
        // Only if it is still that batch: another producer may have sealed it already.
        seal_current(lane, DispatchReason::full, claim.head & ~count_mask, true, true);
    } else if (cost_wanted()) {
        seal_for_cost(lane);
    }
    return status;
}

template <class T, class R, class Clock>
template <class InputIt, class Store>
BulkResult detail::BatcherCore<T, R, Clock>::submit_bulk_weighed(InputIt& first, std::size_t n,
                                                                 WaitMode mode, Deadline deadline,
                                                                 Store& store) {
    Lane& lane = lane_for_this_thread();
    for (std::size_t done = 0; done < n; ++done) {
        // Dereferenced as a const lvalue: weighing never moves the item (a move_iterator's
        // item is moved once, by fill_run, when it is accepted).
        const std::uint64_t cost =
            weigh_or_refuse(static_cast<const std::decay_t<decltype(*first)>&>(*first));
        const SubmitStatus status = reserve_cost(cost, mode, deadline, n - done);
        if (status != SubmitStatus::accepted) {
            return BulkResult{status, done};
        }
        const CostClaim claim = claim_weighed(lane, cost, mode, deadline, n - done);
        if (claim.status != SubmitStatus::accepted) {
            release_cost(cost);
            return BulkResult{claim.status, done};
        }
        MICROBATCH_TRY {
            fill_run(lane, claim.head, claim.index, 1, first, done, store, cost);
        }
        MICROBATCH_CATCH_ALL {
            release_cost(cost);
            MICROBATCH_RETHROW;
        }
        if (claim.seal_after) {
            seal_current(lane, DispatchReason::full, claim.head & ~count_mask, true, true);
        } else if (cost_wanted()) {
            seal_for_cost(lane);
        }
    }
    return BulkResult{SubmitStatus::accepted, n};
}

// Claims one slot for an item costing @p cost. Without max_batch_cost this is try_claim_slot's
// claim plus adding the cost to the batch. With it, claims are serialised per lane, so that the
// open batch's item count and cost are exact while the item asks whether it fits: only holders
// of fill_mutex claim, so a claim that lands in another batch than the one inspected (the timer
// or a worker sealed it meanwhile) lands first in a fresh batch, which any item fits.
// @p items: what a rejection refuses (a bulk submission's rest), for the stats.
template <class T, class R, class Clock>
typename detail::BatcherCore<T, R, Clock>::CostClaim
detail::BatcherCore<T, R, Clock>::claim_weighed(Lane& lane, std::uint64_t cost, WaitMode mode,
                                                Deadline deadline, std::size_t items) {
    detail::AdmissionTurn turn;  // held while admitted from the queue of blocked producers
    for (;;) {
        std::uint64_t seal_first = 0;  // the head (without count) of a batch to seal, or 0
        {
            std::unique_lock<std::mutex> lock(lane.fill_mutex, std::defer_lock);
            if (max_batch_cost_ != 0) {
                lock.lock();
            }
            // acquire: the open batch's start and cost must be read after its opening.
            const std::uint64_t seen = lane.head.load(std::memory_order_acquire);
            const std::uint64_t seen_count = seen & count_mask;
            if (seen_count < batch_size_ && (seen & closed_bit) == 0) {
                const Buffer& open = buffers_[buffer_of(seen)];
                // relaxed: start was written before the opening CAS we acquired; cost is only
                // changed by holders of fill_mutex (we hold it) until the batch is sealed.
                const std::uint64_t start = open.start.load(std::memory_order_relaxed);
                const std::uint64_t held = seen_count > start ? seen_count - start : 0;
                if (!detail::item_fits_batch(open.cost.load(std::memory_order_relaxed), held, cost,
                                             max_batch_cost_)) {
                    // Seal after unlocking: dispatching may run the batch on this thread
                    // (an executor that refuses tasks), which must not happen under the lock.
                    seal_first = (seen & ~count_mask) | 1;  // | 1: never 0 (the tag may be 0)
                } else {
                    // seq_cst: as try_claim_slot's claim (orders it before note_batch_opened).
                    const std::uint64_t head = lane.head.fetch_add(1, std::memory_order_seq_cst);
                    const auto index = static_cast<std::uint32_t>(head & count_mask);
                    if (index < batch_size_) {
                        turn.release();  // claimed: the next blocked producer may go
                        // relaxed: published to the worker by our slot's release store; read
                        // by the next claimer under fill_mutex.
                        const std::uint64_t total = buffers_[buffer_of(head)].cost.fetch_add(
                                                        cost, std::memory_order_relaxed) +
                                                    cost;
                        const bool alone = max_batch_cost_ != 0 && cost > max_batch_cost_;
                        if (alone) {
                            stats_.oversized();
                        }
                        return CostClaim{SubmitStatus::accepted, head, index,
                                         detail::batch_cost_full(total, max_batch_cost_)};
                    }
                    continue;  // sealed between our look and our claim: look again
                }
            }
        }
        if (seal_first != 0) {
            seal_current(lane, DispatchReason::full, seal_first & ~count_mask, true);
            continue;
        }
        const SubmitStatus status = wait_for_space(lane, mode, deadline, turn, items);
        if (status != SubmitStatus::accepted) {
            return CostClaim{status, 0, 0, false};
        }
    }
}

// Reserves @p cost in pending_cost_, waiting (per @p mode) while max_pending_cost would be
// exceeded. @p items: what a rejection refuses, for the stats.
template <class T, class R, class Clock>
SubmitStatus detail::BatcherCore<T, R, Clock>::reserve_cost(std::uint64_t cost, WaitMode mode,
                                                            Deadline deadline, std::size_t items) {
    if (max_pending_cost_ == 0) {
        // relaxed: only pending_cost()'s snapshot reads it when there is no bound.
        pending_cost_.fetch_add(cost, std::memory_order_relaxed);
        return SubmitStatus::accepted;
    }
    // Producers already waiting go first (arrival order): do not overtake them.
    // seq_cst: pairs with wait_for_cost's registration (see release_cost).
    if (cost_waiters_.load(std::memory_order_seq_cst) == 0 && try_reserve_cost(cost)) {
        return SubmitStatus::accepted;
    }
    SubmitStatus status = SubmitStatus::full;
    if (is_closed()) {
        status = SubmitStatus::closed;
    } else if (mode != wait_never) {
        if (detail::is_running_on_this_thread(this)) {
            MICROBATCH_THROW(ReentrancyError(
                "microbatch::Batcher: blocking submit from inside process_batch found "
                "max_pending_cost reached (it could wait for its own batch); use try_submit"));
        }
        // Registered so that close() waits for us to leave before the batcher is destroyed.
        slow_producers_.fetch_add(1, std::memory_order_seq_cst);
        // seq_cst: from here on fast reservations stop, and every new claim and every worker
        // that finishes a batch asks the policy with cost_waiting set (rule 4c); the items
        // already in open batches are asked about below. Dekker handshakes: a claim either
        // comes before our look at the heads (we ask for its batch) or sees us; a worker's
        // finish either comes before our look at its finished count (we see it free) or sees us.
        cost_waiters_.fetch_add(1, std::memory_order_seq_cst);
        seal_for_cost_all();  // before cost_mutex_: an inline executor runs the batch here
        status = wait_for_cost(cost, mode, deadline);
        // relaxed: only lowers the count; a stale non-zero read costs a spare lock or seal.
        cost_waiters_.fetch_sub(1, std::memory_order_relaxed);
        if (status != SubmitStatus::accepted) {
            stats_.rejected(status, items);
        }
        // release: our last touch of the batcher happens-before close() sees zero.
        slow_producers_.fetch_sub(1, std::memory_order_release);
        return status;
    } else {
        seal_for_cost_all();  // a try_ form that polls gets room once these batches ran
    }
    stats_.rejected(status, items);
    return status;
}

// Pending cost is wanted: seal @p lane's open batch if the policy says so (a worker is free,
// rule 4c), so that its cost can be freed.
template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::seal_for_cost(Lane& lane) {
    // seq_cst: the load of the Dekker handshake in reserve_cost (seal_current's own loads,
    // sequenced after it, see the same or a later head).
    const std::uint64_t head = lane.head.load(std::memory_order_seq_cst);
    const std::uint64_t count = filling_count(head);
    if (count == 0) {
        return;
    }
    // relaxed: opened_at was stamped by the batch's first producer; an unset or stale value
    // only affects the time rules, which are not why we ask.
    const std::int64_t opened_at =
        buffers_[buffer_of(head)].opened_at.load(std::memory_order_relaxed);
    SealInputs in = policy_inputs(SealTrigger::producer, clock_.now().time_since_epoch().count(),
                                  static_cast<std::size_t>(count), pending_with(count),
                                  bound_of(buffer_of(head)), opened_at, unset_time);
    in.cost_waiting = true;  // also for a refused try_ form, which does not wait
    const SealDecision decision = decide_seal(in);
    if (decision.seal) {
        seal_current(lane, decision.reason, head & ~count_mask, true);
    }
}

template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::seal_for_cost_all() {
    for (std::uint32_t l = 0; l < lane_count_; ++l) {
        seal_for_cost(lanes_[l]);
    }
}

// True while producers wait for pending cost (then each claim seals its batch).
template <class T, class R, class Clock>
bool detail::BatcherCore<T, R, Clock>::cost_wanted() const noexcept {
    // seq_cst: the claim side of reserve_cost's Dekker handshake (after our seq_cst claim).
    return max_pending_cost_ != 0 && cost_waiters_.load(std::memory_order_seq_cst) != 0;
}

template <class T, class R, class Clock>
bool detail::BatcherCore<T, R, Clock>::try_reserve_cost(std::uint64_t cost) noexcept {
    // seq_cst: the load and CAS pair with release_cost's handshake (see there).
    std::uint64_t pending = pending_cost_.load(std::memory_order_seq_cst);
    // cost <= max_pending_cost_ (check_cost_limit), so an idle batcher always admits it.
    while (pending + cost <= max_pending_cost_) {
        if (pending_cost_.compare_exchange_weak(pending, pending + cost,
                                                std::memory_order_seq_cst)) {
            return true;
        }
    }
    return false;
}

template <class T, class R, class Clock>
SubmitStatus detail::BatcherCore<T, R, Clock>::wait_for_cost(std::uint64_t cost, WaitMode mode,
                                                             Deadline deadline) {
    // The caller raised cost_waiters_ (seq_cst) before: Dekker handshake with release_cost(),
    // which lowers pending_cost_ then reads cost_waiters_, while we read pending_cost_ after
    // (try_reserve_cost): one side sees the other.
    std::unique_lock<std::mutex> lock(cost_mutex_);
    detail::AdmissionWaiter self;
    cost_queue_.push(self, false);
    const auto admit = [&] {
        if (is_closed()) {
            return SubmitStatus::closed;
        }
        // Only the front waiter may take pending cost: a heavy item is not overtaken.
        return cost_queue_.front() == &self && try_reserve_cost(cost) ? SubmitStatus::accepted
                                                                      : SubmitStatus::full;
    };
    SubmitStatus status = SubmitStatus::full;
    for (;;) {
        status = admit();
        if (status != SubmitStatus::full) {
            break;
        }
        if (mode == wait_forever) {
            cost_condition_.wait(lock);
        } else if (cost_condition_.wait_until(lock, deadline) == std::cv_status::timeout) {
            status = admit();
            break;
        }
    }
    cost_queue_.remove(self);
    // The next waiter may fit now (after our reservation) or is the front now (we gave up).
    cost_condition_.notify_all();
    return status;
}

template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::release_cost(std::uint64_t cost) {
    if (max_pending_cost_ == 0) {
        // relaxed: only pending_cost()'s snapshot reads it when there is no bound.
        pending_cost_.fetch_sub(cost, std::memory_order_relaxed);
        return;
    }
    // seq_cst (both): Dekker handshake with wait_for_cost (see there).
    pending_cost_.fetch_sub(cost, std::memory_order_seq_cst);
    if (cost_waiters_.load(std::memory_order_seq_cst) != 0) {
        wake_cost_waiters();
    }
}

template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::wake_cost_waiters() {
    { std::lock_guard<std::mutex> lock(cost_mutex_); }
    cost_condition_.notify_all();
}

}  // namespace microbatch
