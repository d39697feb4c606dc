#pragma once
/**
 * @file batcher_deadlines.hpp
 * @brief Batcher internals for per-item deadlines, cancellation and admission control
 *        (README "Deadlines").
 *
 * A submit with a deadline wraps its completion store in a DeadlineStore, which also records
 * the deadline in the slot's Completion (in padding, flagged by the completion's operations
 * table) and lowers the buffer's earliest deadline (an atomic minimum that only deadline
 * submits touch). Items without a deadline write nothing and read no clock. When a batch
 * starts, screen() claims every cancellable item (a handle's) and removes the cancelled ones
 * and those whose deadline has passed (one clock read per batch holding deadlines), marking
 * them as holes that compact() closes, so process_batch sees only live items.
 */

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

#include "microbatch/detail/batcher_core.hpp"

namespace microbatch {

template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::initialise_deadlines() {
    deadline_sealing_ = options_.deadline_sealing();
    admission_control_ = options_.admission_control();
    has_default_timeout_ = options_.default_timeout().count() > 0;
    default_deadline_ = deadline_type(options_.default_timeout());
    // Batches that run at once: the in-flight limit, but never more than the pool's workers
    // (or hardware threads with an executor), e.g. with unlimited_in_flight.
    Options automatic = options_;
    automatic.max_in_flight(0);
    admission_workers_ = std::max<std::size_t>(
        1, std::min(automatic.effective_max_in_flight(), options_.effective_max_in_flight()));
    // Not a deadline matter, but issue 11 too: the queues of blocked producers.
    admission_ = std::make_unique<detail::AdmissionQueue[]>(lane_count_);
    for (std::uint32_t l = 0; l < lane_count_; ++l) {
        admission_[l].condition = &space_condition_;
    }
}

// Wraps the completion store of a submit with a deadline.
template <class T, class R, class Clock>
template <class Store>
struct detail::BatcherCore<T, R, Clock>::DeadlineStore {
    static constexpr bool carries_deadline = true;  // see detail::carries_deadline
    BatcherCore* owner;
    Store* inner;
    std::int64_t deadline;  // clock ticks

    bool operator()(detail::Completion<R>& slot) noexcept(
        std::is_nothrow_invocable_v<Store&, detail::Completion<R>&>) {
        owner->keep_deadline(slot, (*inner)(slot), deadline);
        return true;
    }
};

// Resolves @p due into clock ticks (@p deadline) and, with admission control, decides whether
// @p count items due then (one item, or a bulk run judged by its last item) are admitted;
// refusals are counted here. The clock is read only when needed: for a timeout, and for
// admission control.
template <class T, class R, class Clock>
bool detail::BatcherCore<T, R, Clock>::resolve_and_admit(const deadline_type& due,
                                                         std::size_t count,
                                                         std::int64_t& deadline) {
    typename Clock::time_point now{};
    if (due.relative() || admission_control_) {
        now = clock_.now();
    }
    deadline = due.resolve(now).time_since_epoch().count();
    if (admission_control_ && !is_closed() &&
        !admissible(deadline, now.time_since_epoch().count(), count - 1)) {
        stats_.rejected(SubmitStatus::infeasible, count);
        return false;
    }
    return true;
}

// Records @p deadline in an item's slot (@p has_completion: the submit stored a completion
// there; if not, an empty one keeps the deadline) and in its batch's earliest deadline.
template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::keep_deadline(detail::Completion<R>& slot,
                                                     bool has_completion,
                                                     std::int64_t deadline) noexcept {
    if (!has_completion) {
        slot.emplace(detail::NoCompletion<R>{});  // somewhere to keep the deadline
    }
    slot.set_deadline(deadline);
    note_item_deadline(static_cast<std::size_t>(&slot - completions_.get()), deadline);
}

template <class T, class R, class Clock>
template <class U, class Store>
SubmitStatus detail::BatcherCore<T, R, Clock>::submit_due(const deadline_type& due, U&& item,
                                                          WaitMode mode, Deadline wait,
                                                          Store&& store) {
    std::int64_t deadline = 0;
    if (!resolve_and_admit(due, 1, deadline)) {
        return SubmitStatus::infeasible;  // the item is left untouched
    }
    DeadlineStore<std::remove_reference_t<Store>> wrapped{this, &store, deadline};
    return submit_impl(std::forward<U>(item), mode, wait, wrapped);
}

template <class T, class R, class Clock>
template <class U>
SubmitStatus detail::BatcherCore<T, R, Clock>::submit_due_with_handle(const deadline_type& due,
                                                                      U&& item, WaitMode mode,
                                                                      Deadline wait,
                                                                      Handle<R>& out) {
    return with_new_handle(out, [&](auto& store) {
        return submit_due(due, std::forward<U>(item), mode, wait, store);
    });
}

/*
 * Admission control's prediction (Options::admission_control). Inputs: now, the item's
 * deadline, P = pending() (items accepted and unfinished, the open batches' included), B = the
 * batch size in force, W = batches that run at once (admission_workers_), and alpha, beta from
 * the online cost fit (Stats::batch_cost; before the first successful batch both are 0 and
 * every item is admitted). The work ahead is drained in full batches by W workers:
 *     drain = (ceil(P / B) * alpha + P * beta) / W
 * and the item's own batch then takes alpha + beta * min(B, P + 1), so
 *     predicted completion = now + drain + alpha + beta * min(B, P + 1).
 * The item is refused when that is after its deadline, except on an idle batcher (P = 0),
 * which admits every item so that an overestimating fit is corrected by the batches that run.
 * It ignores the progress of batches already running (pessimistic by up to one batch time) and
 * arrivals after the item (they queue behind it, except in other lanes).
 */
template <class T, class R, class Clock>
bool detail::BatcherCore<T, R, Clock>::admissible(std::int64_t deadline, std::int64_t now,
                                                  std::size_t ahead) const noexcept {
    const LoadEstimate load = load_estimate();
    const double alpha = load.per_batch_ns > 0.0 ? load.per_batch_ns : 0.0;
    const double beta = load.per_item_ns > 0.0 ? load.per_item_ns : 0.0;
    if (alpha == 0.0 && beta == 0.0) {
        return true;  // nothing measured yet
    }
    // @p ahead: items of the same bulk run submitted before the one judged.
    const double pending = static_cast<double>(this->pending() + ahead);
    if (pending == 0.0) {
        // Idle: the item's batch starts as soon as it is sealed. Admitted whatever the fit
        // says, so that a fit that overestimates is corrected by the batches that then run
        // (refusing everything would keep it stale for good).
        return true;
    }
    // relaxed: a setting.
    const double size = static_cast<double>(
        std::max<std::uint32_t>(1, current_batch_size_.load(std::memory_order_relaxed)));
    const double drain = (std::ceil(pending / size) * alpha + pending * beta) /
                         static_cast<double>(admission_workers_);
    const double own = alpha + beta * std::min(size, pending + 1.0);
    // In nanoseconds, as doubles: no overflow whatever the deadline.
    constexpr double ns_per_tick =
        1e9 * static_cast<double>(Clock::period::num) / static_cast<double>(Clock::period::den);
    const double predicted = static_cast<double>(now) * ns_per_tick + drain + own;
    return predicted <= static_cast<double>(deadline) * ns_per_tick;
}

// Admission control's prediction of one batch of @p size items at formation, 1.25 (alpha + beta
// * size) from the online cost fit, in clock ticks (0 before the fit exists).
template <class T, class R, class Clock>
std::int64_t detail::BatcherCore<T, R, Clock>::predicted_batch_ticks(
    std::size_t size) const noexcept {
    double alpha = 0.0;
    double beta = 0.0;
    stats_.fitted_cost(alpha, beta);
    const double nanoseconds =
        SealPolicyConstants::deadline_safety *
        (std::max(0.0, alpha) + std::max(0.0, beta) * static_cast<double>(size));
    constexpr double ticks_per_ns =
        static_cast<double>(Clock::period::den) / (1e9 * static_cast<double>(Clock::period::num));
    const double ticks = nanoseconds * ticks_per_ns;
    // Far below any overflow: a batch is predicted to take less than an hour.
    return static_cast<std::int64_t>(std::min(ticks, 3.6e12 * ticks_per_ns));
}

// A deadline submit's item is in @p slot: lower its buffer's earliest deadline, and wake the
// timer when it did, so that rule 4b of seal_policy.hpp is timed from the new deadline.
template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::note_item_deadline(std::size_t slot,
                                                          std::int64_t deadline) noexcept {
    Buffer& buffer = buffers_[slot / batch_size_];
    // relaxed: the timer reads it under timer_mutex_, which wake_timer() takes after this
    // store, so it either sees the new minimum or is sleeping and gets the notify.
    std::int64_t current = buffer.earliest_deadline.load(std::memory_order_relaxed);
    while (deadline < current) {
        if (buffer.earliest_deadline.compare_exchange_weak(current, deadline,
                                                           std::memory_order_relaxed)) {
            if (deadline_sealing_) {
                wake_timer();
            }
            return;
        }
    }
}

// Adds the earliest item deadline of @p buffer's batch to @p in (rule 4b), when deadline
// sealing is on and the batch holds an item with a deadline.
template <class T, class R, class Clock>
SealInputs detail::BatcherCore<T, R, Clock>::with_item_deadline(
    SealInputs in, std::uint32_t buffer) const noexcept {
    if (!deadline_sealing_) {
        return in;
    }
    // relaxed: see note_item_deadline(); a worker that reads a stale value leaves the seal to
    // the timer, which the submit woke.
    const std::int64_t deadline =
        buffers_[buffer].earliest_deadline.load(std::memory_order_relaxed);
    if (deadline != std::numeric_limits<std::int64_t>::max()) {
        in.earliest_deadline = to_nanoseconds(deadline);
    }
    return in;
}

// Called by run_batch on a batch with completions, before process_batch: claims every
// cancellable item (a cancel after this fails), and turns cancelled items and items whose
// deadline has passed (with admission control: is before the batch's predicted end) into holes,
// destroying the items and completing the expired ones with DeadlineExceeded. Returns how many it
// removed; compact() then closes the holes.
template <class T, class R, class Clock>
std::size_t detail::BatcherCore<T, R, Clock>::screen(T* items, detail::Completion<R>* completions,
                                                     std::atomic<std::uint8_t>* states,
                                                     std::size_t size) noexcept {
    // Marks between the two passes below only.
    constexpr std::uint8_t slot_expired = 0xFF;  // deadline passed
    constexpr std::uint8_t slot_doomed = 0xFE;   // due before the batch's predicted end
    std::int64_t now = unset_time;
    // With admission control, items that can only finish late go too: those due before the
    // batch's predicted end, now + 1.25 (alpha + beta * size) (size counts every slot, an upper
    // bound; 1.25 = rule 4b's safety factor, for batches slower than the fitted mean).
    std::int64_t cutoff = unset_time;
    std::size_t expired = 0;
    std::size_t doomed = 0;
    std::size_t cancelled = 0;
    std::size_t live = 0;
    for (std::size_t i = 0; i < size; ++i) {
        // relaxed: run_batch acquired every state already; only this thread writes them now.
        const std::uint8_t state = states[i].load(std::memory_order_relaxed);
        if (state != detail::slot_item_completion) {
            live += state == detail::slot_item ? 1 : 0;
            continue;
        }
        detail::Completion<R>& completion = completions[i];
        if (!completion.claim()) {  // cancelled: its handle is already complete
            items[i].~T();
            states[i].store(detail::slot_hole, std::memory_order_relaxed);
            ++cancelled;
            continue;
        }
        const std::int64_t deadline = completion.deadline();
        if (deadline == detail::Completion<R>::no_deadline) {
            ++live;
            continue;
        }
        if (now == unset_time) {
            now = clock_.now().time_since_epoch().count();  // once per batch with deadlines
            cutoff = admission_control_ ? now + predicted_batch_ticks(size) : now;
        }
        if (deadline <= now) {
            states[i].store(slot_expired, std::memory_order_relaxed);
            ++expired;
        } else if (deadline <= cutoff) {
            states[i].store(slot_doomed, std::memory_order_relaxed);
            ++doomed;
        } else {
            ++live;
        }
    }
    // A batch of doomed items only still runs: the prediction may be stale (the fit learns
    // only from batches that run), and a fit that overestimates must not starve the batcher.
    const bool keep_doomed = live == 0;
    const std::size_t removed = expired + (keep_doomed ? 0 : doomed);
    if (removed + cancelled == 0) {
        for (std::size_t i = 0; i < size && doomed != 0; ++i) {
            if (states[i].load(std::memory_order_relaxed) == slot_doomed) {
                states[i].store(detail::slot_item_completion, std::memory_order_relaxed);
            }
        }
        return 0;
    }
    stats_.removed(removed, cancelled);  // before completing: whoever sees it sees it counted
    std::exception_ptr error;
    if (removed != 0) {
        error = detail::make_error_ptr(
            DeadlineExceeded("microbatch: the item's deadline passed (or, with admission control, "
                             "would pass before its batch finished) before its batch ran"));
    }
    std::size_t left = removed;
    for (std::size_t i = 0; i < size && (left != 0 || (keep_doomed && doomed != 0)); ++i) {
        const std::uint8_t state = states[i].load(std::memory_order_relaxed);
        if (state == slot_doomed && keep_doomed) {
            states[i].store(detail::slot_item_completion, std::memory_order_relaxed);
            --doomed;
            continue;
        }
        if (state != slot_expired && state != slot_doomed) {
            continue;
        }
        items[i].~T();
        states[i].store(detail::slot_hole, std::memory_order_relaxed);
        --left;
        // The last one takes our reference (see run_batch on exception_ptr and TSan).
        MICROBATCH_TRY {
            completions[i].complete(Outcome<R>(left == 0 ? std::move(error) : error));
        }
        MICROBATCH_CATCH_ALL {
            stats_.callback_exception();
        }
    }
    return removed + cancelled;
}

}  // namespace microbatch
