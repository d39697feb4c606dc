#pragma once
/**
 * @file batcher_policy.hpp
 * @brief Batcher internals: feeding seal_policy.hpp. The load estimate (arrival rate, fitted
 *        cost), the inputs of `decide_seal`, and the worker-finished path that seals a batch
 *        held while every worker was busy.
 */

#include <algorithm>
#include <cmath>

#include "microbatch/detail/batcher_core.hpp"

namespace microbatch {
namespace detail {
/// The batcher whose seal_for_free_worker() runs on this thread: stops the recursion an inline
/// executor would cause (sealing runs the batch, whose end seals again).
inline thread_local const void* sealing_for_free_worker = nullptr;
/// Batches that finished inside that call's loop (an inline executor ran what it sealed): each
/// frees the worker again, so the loop owes it another full pass.
inline thread_local std::uint64_t finished_while_sealing = 0;
}  // namespace detail

template <class T, class R, class Clock>
LoadEstimate detail::BatcherCore<T, R, Clock>::load_estimate() const noexcept {
    LoadEstimate load;
    // relaxed: estimates; a torn pair (items from one sample, time from the next) is harmless.
    const double items = rate_items_.load(std::memory_order_relaxed);
    const double nanoseconds = rate_nanoseconds_.load(std::memory_order_relaxed);
    load.arrival_rate = nanoseconds > 0.0 ? items / nanoseconds : 0.0;
    stats_.fitted_cost(load.per_batch_ns, load.per_item_ns);
    // Eight rate samples (batches sealed after the first) before trusting either estimate.
    load.ready = rate_samples_.load(std::memory_order_relaxed) >= 8;
    load.burst_gap_ns = burst_gap_ns_.load(std::memory_order_relaxed);
    // A population only when the samples keep reaching their maximum (mean >= 90 % of it): a
    // fixed set of clients that each wait for their result. Independent arrivals make the
    // pending count vary, their maximum is a tail, and rule 5c must not wait for it.
    load.population = stable_population(population_.load(std::memory_order_relaxed),
                                        population_mean_.load(std::memory_order_relaxed));
    return load;
}

template <class T, class R, class Clock>
SealInputs detail::BatcherCore<T, R, Clock>::policy_inputs(
    SealTrigger trigger, std::int64_t now, std::size_t count, std::size_t pending,
    std::size_t bound, std::int64_t opened_at, std::int64_t last_change_at) const noexcept {
    SealInputs in;
    in.trigger = trigger;
    in.now = to_nanoseconds(now);
    in.count = count;
    in.pending = pending;
    in.opened_at = opened_at == unset_time ? SealInputs::unset : to_nanoseconds(opened_at);
    in.last_change_at =
        last_change_at == unset_time ? SealInputs::unset : to_nanoseconds(last_change_at);
    // relaxed: settings and counters, each read once; the decision is re-taken at every event.
    in.max_batch_size = bound;  // the batch's own bound, not a later set_max_batch_size
    const std::int64_t delay = max_delay_ticks_.load(std::memory_order_relaxed);
    in.max_delay = delay < 0 ? -1 : to_nanoseconds(delay);
    // seq_cst: the timer's half of the handshake with seal_for_free_worker() (free on x86).
    in.in_flight = static_cast<std::size_t>(in_flight_batch_count(std::memory_order_seq_cst));
    in.max_in_flight = max_in_flight_.load(std::memory_order_relaxed);
    in.lanes = lane_count_;
    in.seal_early = seal_early_;
    // Rule 4c is asked by producers (a waiting one, each claim while one waits) and finishing
    // workers, which together cover every case; not by the timer, which would only race them
    // (and, with an inline executor, run the batch on its own thread while the producer that
    // asked waits for it). seq_cst: see reserve_cost's handshake.
    in.cost_waiting = trigger != SealTrigger::timer && cost_wanted();
    in.load = load_estimate();
    return in;
}

// Called by whoever sealed a batch of @p size items at clock ticks @p now: one sample of the
// arrival rate (items sealed / time since the previous seal, exponentially weighted with 1/8)
// and, when the producer of the last item sealed it (@p at_arrival), one sample of the gap
// between items while a batch fills: (now - @p opened_at) / (size - 1).
template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::note_sealed(std::uint32_t size, std::int64_t now,
                                                   std::int64_t opened_at,
                                                   bool at_arrival) noexcept {
    if (every_claim_seals()) {
        return;  // the rate and the thresholds these samples feed are never asked for
    }
    if (at_arrival && size >= 2 && opened_at != unset_time && now >= opened_at) {
        const double gap =
            static_cast<double>(to_nanoseconds(now - opened_at)) / static_cast<double>(size - 1);
        // relaxed: an estimate, as below.
        const double previous = burst_gap_ns_.load(std::memory_order_relaxed);
        burst_gap_ns_.store(previous == 0.0 ? gap : 0.875 * previous + 0.125 * gap,
                            std::memory_order_relaxed);
    }
    // relaxed: an estimate; concurrent sealers may each see the other's time, which only
    // shortens one interval.
    const std::int64_t previous = last_seal_at_.exchange(now, std::memory_order_relaxed);
    if (previous != unset_time && now > previous) {
        constexpr double weight = 1.0 / 8.0;
        const double interval = static_cast<double>(to_nanoseconds(now - previous));
        const bool first = rate_samples_.load(std::memory_order_relaxed) == 0;
        const double items = first ? static_cast<double>(size)
                                   : (1.0 - weight) * rate_items_.load(std::memory_order_relaxed) +
                                         weight * static_cast<double>(size);
        const double nanoseconds =
            first ? interval
                  : (1.0 - weight) * rate_nanoseconds_.load(std::memory_order_relaxed) +
                        weight * interval;
        rate_items_.store(items, std::memory_order_relaxed);
        rate_nanoseconds_.store(nanoseconds, std::memory_order_relaxed);
        rate_samples_.fetch_add(1, std::memory_order_relaxed);
    }
    refresh_producer_threshold();
}

// One sample of the usual number of pending items (rule 5c), taken at every seal and at every
// batch's end before its items leave: a maximum that decays by 1/16 per sample, so that it
// follows a shrinking load.
template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::note_population(std::size_t pending) noexcept {
    // relaxed: estimates; a lost update between two samplers only delays the decay.
    const double decayed = population_.load(std::memory_order_relaxed) * (15.0 / 16.0);
    const double sample = static_cast<double>(pending);
    population_.store(sample > decayed ? sample : decayed, std::memory_order_relaxed);
    const double mean = population_mean_.load(std::memory_order_relaxed);
    population_mean_.store(mean == 0.0 ? sample : 0.875 * mean + 0.125 * sample,
                           std::memory_order_relaxed);
}

template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::refresh_producer_threshold() noexcept {
    // relaxed: settings; see policy_inputs.
    const std::int64_t delay = max_delay_ticks_.load(std::memory_order_relaxed);
    const LoadEstimate load = load_estimate();
    const std::size_t threshold =
        producer_seal_threshold(load, max_in_flight_.load(std::memory_order_relaxed),
                                current_batch_size_.load(std::memory_order_relaxed),
                                delay < 0 ? -1 : to_nanoseconds(delay), seal_early_, lane_count_);
    producer_threshold_.store(static_cast<std::uint32_t>(threshold), std::memory_order_relaxed);
    const bool population_rule =
        seal_early_ && delay > 0 && load.population >= 1.0 &&
        count_rules_apply(load, lane_count_, current_batch_size_.load(std::memory_order_relaxed));
    population_threshold_.store(
        population_rule ? static_cast<std::uint32_t>(std::floor(load.population + 0.5)) : 0,
        std::memory_order_relaxed);
}

template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::wake_timer() {
    { std::lock_guard<std::mutex> lock(timer_mutex_); }
    timer_condition_.notify_one();
}

// A worker became free (a batch finished, or the limit was raised): seal the oldest partial
// batch if the policy says so (rule 4 reports `worker_free`, rule 5a `early`), as many times as
// the limit allows, then let the timer re-plan if it was waiting for a worker.
template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::seal_for_free_worker(std::int64_t now) {
    if (every_claim_seals()) {
        return;  // no partial batch to seal or to time
    }
    if (detail::sealing_for_free_worker == this) {
        ++detail::finished_while_sealing;  // an inline executor ran the batch we sealed: the
        return;                            // loop below goes on, with a fresh budget
    }
    const void* const outer = detail::sealing_for_free_worker;
    detail::sealing_for_free_worker = this;
    // A partial batch that has been open for a while is left for the timer to time (rule 5b
    // needs the timer's observations). A younger one is covered by the deadline the timer
    // already sleeps until (rule 3's answer) and by the next producer's or worker's decision.
    bool waiting_batch = false;
    // One seal per lane plus one, unless a sealed batch ran here (an inline executor): then the
    // worker is free again, as when we were called, and gets a full pass. Without the refill a
    // producer waiting for pending cost (rule 4c) while the last of those batches ran was never
    // asked for: the nested call above returned at once, the timer does not seal for cost, and
    // the producer waited forever (fuzz_batcher, an inline executor with deadline sealing).
    std::uint32_t last_round = lane_count_;
    for (std::uint32_t round = 0; round <= last_round; ++round) {
        Lane* oldest = nullptr;
        std::uint64_t oldest_head = 0;
        std::int64_t oldest_opened = 0;
        for (std::uint32_t l = 0; l < lane_count_; ++l) {
            std::uint64_t head = 0;
            std::int64_t opened_at = unset_time;
            if (current_batch_start(lanes_[l], head, opened_at) &&
                (oldest == nullptr || opened_at < oldest_opened)) {
                oldest = &lanes_[l];
                oldest_head = head;
                oldest_opened = opened_at;
            }
        }
        if (oldest == nullptr) {
            break;  // no partial batch: a producer opening one wakes the timer itself
        }
        const bool fresh = now == unset_time || round != 0;
        if (fresh) {
            now = clock_.now().time_since_epoch().count();
        }
        const auto decide = [&] {
            return decide_seal(with_item_deadline(
                policy_inputs(SealTrigger::worker_finished, now,
                              static_cast<std::size_t>(filling_count(oldest_head)),
                              pending_with(filling_count(oldest_head)),
                              bound_of(buffer_of(oldest_head)), oldest_opened, unset_time),
                buffer_of(oldest_head)));
        };
        const SealDecision decision = decide();
        if (!decision.seal) {
            // The caller's time was read before it counted its batch finished, so its "not yet" may
            // be stale: meanwhile the timer may have seen this batch due while every worker was
            // busy (rule 3: no time to wake at) and gone idle, and nobody would seal it (every
            // client waiting on its handle hung: test_formation's "free worker ... held batch"
            // and the stress suite's closed-loop case). On a fresh reading, a batch that is due
            // now is the timer's to seal (as `deadline`, like any batch that came due while a
            // worker was free): wake it below. The worker does not seal it itself, which would
            // race the timer for a batch it was about to seal by its deadline. Only a timer
            // idle for want of a worker can miss it (a sleeping one saw the batch young and
            // wakes by its deadline; one that announces later sees our decrement, seq_cst), so
            // a streaming worker, whose timer sleeps to a deadline, reads no second clock.
            bool due_now = false;
            if (!fresh && timer_waits_for_worker_.load(std::memory_order_seq_cst)) {
                now = clock_.now().time_since_epoch().count();
                due_now = decide().seal;
            }
            waiting_batch =
                due_now || to_nanoseconds(now - oldest_opened) >= SealPolicyConstants::min_quiet_ns;
            break;
        }
        const std::uint64_t finished_before = detail::finished_while_sealing;
        if (!seal_current(*oldest, decision.reason, oldest_head & ~count_mask, true)) {
            break;
        }
        if (detail::finished_while_sealing != finished_before) {
            last_round = round + lane_count_ + 1;  // the batch ran here: a full pass
        }
    }
    detail::sealing_for_free_worker = outer;
    // Wake the timer only if it sleeps for want of a worker and one is free now with a batch
    // to time: with every worker still busy (a queue of full batches) it would only look and
    // sleep again. seq_cst: Dekker handshake with run_timer(), which announces the wait and
    // then re-reads the finished count (incremented by our caller with seq_cst).
    if (waiting_batch && timer_waits_for_worker_.load(std::memory_order_seq_cst) &&
        in_flight_batch_count(std::memory_order_seq_cst) <
            max_in_flight_.load(std::memory_order_relaxed)) {
        wake_timer();
    }
}

}  // namespace microbatch
