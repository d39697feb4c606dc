#pragma once
/**
 * @file seal_policy.hpp
 * @brief When to seal the batch being filled: the batcher's whole dispatch decision as a pure
 *        function (`decide_seal`), plus the estimates it reads (`LoadEstimate`).
 *
 * The batcher asks this question at three moments: a producer has just added an item, the
 * timer woke up, or a worker finished a batch. Each caller gathers a `SealInputs` and acts on
 * the `SealDecision`; nothing here reads a clock or touches shared state, so every rule is
 * unit-tested with plain numbers (tests/test_seal_policy.cpp).
 *
 * **The rules, in order** (n = items in the open batch, B = max_batch_size, age = time since
 * its first item was accepted, D = max_delay, M = max_in_flight):
 * 1. n == 0: nothing to do.
 * 2. n >= B: seal (`full`). A full batch is dispatched even when M batches are in flight: it
 *    cannot grow, and the executor queues it.
 * 3. M batches are in flight (every worker the batcher may use is busy): keep filling, with no
 *    time bound. The batch grows instead of queueing behind the workers; the moment a batch
 *    finishes, the worker that finished it asks again. (Before the batch is due the answer
 *    also names its deadline, so that the timer looks again then.)
 * 4. age >= D: seal (`deadline`, or `worker_free` when asked by a worker that just finished,
 *    i.e. the batch was held past D because every worker was busy).
 *    b. Item deadlines (Options::deadline_sealing, issue 11): with d the earliest deadline of
 *    the batch's items, seal (`item_deadline`) once now >= d - (s * (alpha + beta * n) + m),
 *    with alpha, beta the fitted batch cost (0 before the first batch), s =
 *    SealPolicyConstants::deadline_safety and m = deadline_slack_ns (a timer wake-up, the
 *    hand-over to the worker): sealed then, the batch is predicted to finish by d. Until then
 *    the answer names that time (rule 6). While every worker is busy (rule 3) a seal would
 *    only queue the batch, so the rule waits for a worker like rule 4.
 *    c. Producers wait for pending cost (Options::max_pending_cost, issue 12): seal (`full`).
 *    The open batch's cost is freed only by running it, and waiting for D (or, without a time
 *    bound, for ever) would idle a free worker. While every worker is busy, rule 3 lets it grow
 *    and the worker that finishes asks again (as Kafka's producer sends every batch while its
 *    buffer memory is exhausted, but only when a worker can take it).
 * 5. Early sealing (Options::seal_early, on by default), only with a time bound (without one
 *    the user asked for batches that fill up) and once the estimates are ready. Rules a and c
 *    apply only to slow streams, where a whole batch takes at least 100 us to fill at the
 *    measured rate; a faster stream fills its batches before waiting costs anything.
 *    a. n >= target, where target = round(r * alpha / (1 - r * beta)) with r the arrival rate per
 *       in-flight slot (items/ns / M) and alpha, beta the fitted batch cost: the number of items
 *       that arrive, per worker, while one batch of that size runs. Waiting for more would make
 *       this batch larger than the ones the workers can keep up with; sealing earlier would
 *       leave the worker idle later. (With r * beta >= 1 the target is B.)
 *    b. no item arrived for the quiet window q = clamp(quiet_gaps * g, min_quiet, D), with g
 *       the mean gap between items while a batch fills (LoadEstimate::burst_gap_ns, else
 *       1 / r_lane): the stream paused for several gaps, nothing is coming, so waiting until
 *       D would only add delay. (Observed by the timer, which samples n.)
 *    c. every item the batcher usually holds at once is here: pending (accepted, unfinished
 *       items, the open batch's included) >= round(population), the slowly decaying maximum
 *       of pending at recent batch ends, known only while the samples keep reaching
 *       it. With N clients that each wait for their result it seals the moment the N-th
 *       arrives (and rule a waits for it: a closed loop would otherwise lock into whatever
 *       batch size it started with); with independent arrivals the count varies and the rule
 *       is off.
 *    All three are reported as `early`.
 * 6. Otherwise wait, and ask again at the earliest of (first item + D), (last change + q) and
 *    rule 4b's seal time.
 *
 * D stays a hard bound on waiting while a worker is free; `max_delay(0)` means "seal as soon as
 * a worker can take it" (rule 4 holds at once, rule 3 still lets the batch grow while busy).
 */

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "microbatch/batch.hpp"

namespace microbatch {

/// @brief Who asks `decide_seal` (changes only the reason reported for rule 4).
enum class SealTrigger {
    producer,         ///< A producer has just added an item.
    timer,            ///< The timer woke up (a deadline or a quiet window elapsed).
    worker_finished,  ///< A worker has just finished a batch.
};

/**
 * @brief What the batcher measures about its load: the arrival rate and the fitted batch cost.
 *
 * `arrival_rate` is items per nanosecond over the whole batcher; `per_batch_ns` and
 * `per_item_ns` are alpha and beta of the online least-squares fit (Stats::batch_cost).
 * `ready` is false until enough batches were seen for these to mean anything; early sealing
 * is then off. Thread safety: a plain value type.
 */
struct LoadEstimate {
    bool ready = false;         ///< Enough samples for rules 5a/5b.
    double arrival_rate = 0.0;  ///< Items per nanosecond accepted by the batcher (all lanes).
    double per_batch_ns = 0.0;  ///< alpha: fixed cost of one batch, in ns.
    double per_item_ns = 0.0;   ///< beta: cost of each item, in ns.
    /// Mean gap between consecutive items of a batch while it fills, in ns, from batches whose
    /// last item sealed them (so the fill time ends at an arrival); 0 when unknown. Shorter
    /// than 1 / arrival_rate when items come in bursts (clients answering their results).
    double burst_gap_ns = 0.0;
    /// How many items are usually pending at once: a slowly decaying maximum of the items
    /// accepted and unfinished, sampled at each batch's end; 0 when unknown or when the
    /// samples vary (their mean below 90 % of that maximum: independent arrivals). With
    /// clients that each wait for their result (closed loop) it is the number of clients.
    double population = 0.0;
};

/**
 * @brief Everything `decide_seal` reads. Times are in nanoseconds on one clock; `unset` means
 *        "unknown". Thread safety: a plain value type.
 */
struct SealInputs {
    /// Marks an unknown time.
    static constexpr std::int64_t unset = std::numeric_limits<std::int64_t>::min();

    SealTrigger trigger = SealTrigger::producer;  ///< Who asks.
    std::int64_t now = 0;                         ///< The current time.
    std::size_t count = 0;                        ///< Items in the open batch.
    std::size_t pending = 0;         ///< Items accepted and unfinished (the open batch's included).
    std::int64_t opened_at = unset;  ///< When its first item was accepted (unset: unknown).
    std::int64_t last_change_at = unset;  ///< When n was last seen to change (timer only).
    std::size_t max_batch_size = 1;       ///< B, as currently set.
    std::int64_t max_delay = 0;           ///< D in ns; negative: no time bound.
    std::size_t in_flight = 0;            ///< Batches dispatched and not finished.
    std::size_t max_in_flight = 1;        ///< M; SIZE_MAX: no limit.
    std::size_t lanes = 1;                ///< Lanes sharing the arrival rate.
    /// Earliest deadline of the batch's items (unset: none, or deadline sealing is off).
    std::int64_t earliest_deadline = unset;
    bool seal_early = true;  ///< Options::seal_early.
    /// Producers wait for pending cost (Options::max_pending_cost): rule 4c.
    bool cost_waiting = false;
    LoadEstimate load;  ///< The measured load.
};

/// @brief What `decide_seal` answers. Thread safety: a plain value type.
struct SealDecision {
    /// Marks "no time to wake at: wait for an event (an item, a finished batch)".
    static constexpr std::int64_t never = std::numeric_limits<std::int64_t>::max();

    bool seal = false;                             ///< Seal the open batch now.
    DispatchReason reason = DispatchReason::full;  ///< Why, when `seal`.
    std::int64_t wake_at = never;                  ///< Otherwise: ask again at this time.
};

/// @brief Tuning constants of rule 5 (documented, fixed: not options).
struct SealPolicyConstants {
    /// Rule 5b: the stream counts as paused after this many mean inter-arrival gaps.
    static constexpr double quiet_gaps = 4.0;
    /// Rule 5b: the quiet window is never shorter than this (ns): shorter pauses are scheduling
    /// noise, and the timer cannot wake more precisely anyway.
    static constexpr std::int64_t min_quiet_ns = 20'000;
    /// Rules 5a and 5c apply only when a whole batch takes at least this long (ns) to fill at
    /// the measured rate (max_batch_size / the lane's rate). Faster streams fill their batches
    /// before waiting could cost anything, and sealing them early would only multiply the
    /// per-batch overhead (measured: batches of ~10 instead of 256 at 20-50 M items/s).
    static constexpr double min_fill_time_ns = 100'000.0;
    /// Rule 4b: the predicted batch time alpha + beta * n is stretched by this factor (the fit
    /// is a mean; batches vary around it).
    static constexpr double deadline_safety = 1.25;
    /// Rule 4b: plus this fixed margin (ns): the timer's wake-up latency and the hand-over of
    /// the sealed batch to a worker.
    static constexpr std::int64_t deadline_slack_ns = 50'000;
};

/**
 * @brief The population rule 5c may use: @p maximum (the decaying maximum of pending-item
 *        samples) while the samples keep reaching it (their mean @p mean >= 90 % of it, a fixed
 *        set of clients that each wait for their result), else 0 (unknown). Pure; O(1).
 */
inline double stable_population(double maximum, double mean) noexcept {
    return maximum >= 1.0 && mean >= 0.9 * maximum ? maximum : 0.0;
}

/**
 * @brief True when rules 5a/5c may apply: the estimate is ready and a batch of
 *        @p max_batch_size takes at least min_fill_time_ns to fill at one lane's rate. Pure.
 */
inline bool count_rules_apply(const LoadEstimate& load, std::size_t lanes,
                              std::size_t max_batch_size) noexcept {
    if (!load.ready || !(load.arrival_rate > 0.0)) {
        return false;
    }
    const double lane_rate =
        load.arrival_rate / static_cast<double>(lanes == 0 ? std::size_t{1} : lanes);
    return static_cast<double>(max_batch_size) / lane_rate >= SealPolicyConstants::min_fill_time_ns;
}

/**
 * @brief Rule 5a's target size: items arriving per in-flight slot while one such batch runs.
 *
 * Returns 0 when the estimate is not ready or alpha is 0 (batching saves nothing: rule 5a is
 * off), otherwise a value in [1, max_batch_size]. Pure; O(1).
 */
inline std::size_t target_batch_size(const LoadEstimate& load, std::size_t max_in_flight,
                                     std::size_t max_batch_size) noexcept {
    if (!load.ready || !(load.per_batch_ns > 0.0) || !(load.arrival_rate > 0.0)) {
        return 0;
    }
    const double slots = static_cast<double>(std::max<std::size_t>(1, max_in_flight));
    const double rate = load.arrival_rate / slots;
    const double remaining = 1.0 - rate * load.per_item_ns;
    if (!(remaining > 0.0)) {
        return max_batch_size;  // the per-item cost alone outruns the workers: fill up
    }
    // Rounded to the nearest count, not up: the estimate hovers around the true steady-state
    // size (e.g. N clients that each wait for their result), and rounding 4.02 up to 5 would
    // make every batch of 4 wait for an item that never comes.
    const double target = std::ceil(rate * load.per_batch_ns / remaining - 0.5);
    if (!(target < static_cast<double>(max_batch_size))) {
        return max_batch_size;
    }
    return target < 1.0 ? 1 : static_cast<std::size_t>(target);
}

/**
 * @brief Rule 5b's quiet window in ns, or -1 when rule 5b is off (estimate not ready).
 *        Clamped to [min_quiet_ns, max_delay] when max_delay >= 0. Pure; O(1).
 */
inline std::int64_t quiet_window(const LoadEstimate& load, std::size_t lanes,
                                 std::int64_t max_delay) noexcept {
    if (!load.ready || !(load.arrival_rate > 0.0)) {
        return -1;
    }
    const double lane_rate =
        load.arrival_rate / static_cast<double>(std::max<std::size_t>(1, lanes));
    const double gap = load.burst_gap_ns > 0.0 ? load.burst_gap_ns : 1.0 / lane_rate;
    double window = SealPolicyConstants::quiet_gaps * gap;
    if (max_delay >= 0 && window > static_cast<double>(max_delay)) {
        window = static_cast<double>(max_delay);
    }
    if (window < static_cast<double>(SealPolicyConstants::min_quiet_ns)) {
        window = static_cast<double>(SealPolicyConstants::min_quiet_ns);
    }
    return static_cast<std::int64_t>(window);
}

/// @brief a + b without overflow (saturates at SealDecision::never).
inline std::int64_t saturating_add(std::int64_t a, std::int64_t b) noexcept {
    if (b > 0 && a > SealDecision::never - b) {
        return SealDecision::never;
    }
    return a + b;
}

/**
 * @brief Rule 4b's seal time for a batch of @p count items whose earliest deadline is
 *        @p deadline (ns): deadline - (deadline_safety * (alpha + beta * count) +
 *        deadline_slack_ns), saturating at the lowest time. Pure; O(1).
 */
inline std::int64_t deadline_seal_time(std::int64_t deadline, const LoadEstimate& load,
                                       std::size_t count) noexcept {
    const double alpha = load.per_batch_ns > 0.0 ? load.per_batch_ns : 0.0;
    const double beta = load.per_item_ns > 0.0 ? load.per_item_ns : 0.0;
    const double lead =
        SealPolicyConstants::deadline_safety * (alpha + beta * static_cast<double>(count)) +
        static_cast<double>(SealPolicyConstants::deadline_slack_ns);
    const double lowest = static_cast<double>(std::numeric_limits<std::int64_t>::min());
    if (static_cast<double>(deadline) - lead <= lowest) {
        return std::numeric_limits<std::int64_t>::min() + 1;  // above SealInputs::unset
    }
    return deadline - static_cast<std::int64_t>(lead);
}

/**
 * @brief The smallest batch size at which a producer, which reads no clock, should ask
 *        `decide_seal` after adding an item while a worker is free: 1 with max_delay 0 (rule 4),
 *        else rule 5a's target when early sealing is on and ready, else max_batch_size (rule 2).
 *        The batcher caches it so the per-item test is one comparison. Pure; O(1).
 */
inline std::size_t producer_seal_threshold(const LoadEstimate& load, std::size_t max_in_flight,
                                           std::size_t max_batch_size, std::int64_t max_delay,
                                           bool seal_early, std::size_t lanes = 1) noexcept {
    if (max_delay == 0) {
        return 1;
    }
    const std::size_t target =
        seal_early && max_delay > 0 && count_rules_apply(load, lanes, max_batch_size)
            ? target_batch_size(load, max_in_flight, max_batch_size)
            : 0;
    return target != 0 ? target : max_batch_size;
}

/**
 * @brief The sealing decision (rules 1-6 of this file's description). Pure: reads only its
 *        argument; never throws; O(1).
 */
inline SealDecision decide_seal(const SealInputs& in) noexcept {
    SealDecision decision;
    if (in.count == 0) {
        return decision;  // rule 1
    }
    if (in.count >= in.max_batch_size) {  // rule 2
        decision.seal = true;
        decision.reason = DispatchReason::full;
        return decision;
    }
    const bool timed = in.max_delay >= 0;
    const bool known_start = in.opened_at != SealInputs::unset;
    const std::int64_t due = in.earliest_deadline == SealInputs::unset  // rule 4b's seal time
                                 ? SealDecision::never
                                 : deadline_seal_time(in.earliest_deadline, in.load, in.count);
    if (in.in_flight >= in.max_in_flight) {
        // Rule 3: every worker busy, grow; a finishing worker asks again. Until the batch is
        // due, ask again at its deadline too: a worker that frees before then need not wake
        // anyone for it (waking the timer at every batch of a fast stream costs a system call
        // per batch).
        if (timed && known_start && in.now - in.opened_at < in.max_delay) {
            decision.wake_at = saturating_add(in.opened_at, in.max_delay);
        }
        if (in.now < due) {  // likewise for rule 4b's seal time
            decision.wake_at = std::min(decision.wake_at, due);
        }
        return decision;
    }
    if (timed &&
        (in.max_delay == 0 || (known_start && in.now - in.opened_at >= in.max_delay))) {  // rule 4
        decision.seal = true;
        decision.reason = in.trigger == SealTrigger::worker_finished ? DispatchReason::worker_free
                                                                     : DispatchReason::deadline;
        return decision;
    }
    if (in.now >= due) {  // rule 4b
        decision.seal = true;
        decision.reason = DispatchReason::item_deadline;
        return decision;
    }
    if (in.cost_waiting) {  // rule 4c
        decision.seal = true;
        decision.reason = DispatchReason::full;
        return decision;
    }
    std::int64_t quiet = -1;
    if (in.seal_early && timed) {
        const bool by_count = count_rules_apply(in.load, in.lanes, in.max_batch_size);
        const std::size_t target =
            by_count ? target_batch_size(in.load, in.max_in_flight, in.max_batch_size) : 0;
        // Rule 5a yields to 5c: while fewer items are pending than usual, the missing ones are
        // probably clients about to answer their results (a closed loop), and a batch sealed
        // now would lock the loop into batches of this smaller size (the target is measured
        // from the batches the loop produces).
        const bool population_in =
            !(in.load.population >= 1.0) ||
            static_cast<double>(in.pending) >= std::floor(in.load.population + 0.5);
        if (target != 0 && in.count >= target && population_in) {  // rule 5a
            decision.seal = true;
            decision.reason = DispatchReason::early;
            return decision;
        }
        if (by_count && in.load.population >= 1.0 &&
            static_cast<double>(in.pending) >= std::floor(in.load.population + 0.5)) {  // 5c
            decision.seal = true;
            decision.reason = DispatchReason::early;
            return decision;
        }
        quiet = quiet_window(in.load, in.lanes, in.max_delay);
        if (quiet >= 0 && in.last_change_at != SealInputs::unset &&
            in.now - in.last_change_at >= quiet) {  // rule 5b
            decision.seal = true;
            decision.reason = DispatchReason::early;
            return decision;
        }
    }
    // Rule 6: ask again at the deadline or when the quiet window would elapse.
    if (timed && known_start) {
        decision.wake_at = saturating_add(in.opened_at, in.max_delay);
    }
    if (quiet >= 0) {
        const std::int64_t from =
            in.last_change_at != SealInputs::unset ? in.last_change_at : in.now;
        decision.wake_at = std::min(decision.wake_at, saturating_add(from, quiet));
    }
    decision.wake_at = std::min(decision.wake_at, due);
    return decision;
}

}  // namespace microbatch
