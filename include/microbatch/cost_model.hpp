#pragma once
/**
 * @file cost_model.hpp
 * @brief `microbatch::CostModel`: the linear batch-cost model T_batch(B) = alpha + beta * B and
 *        the predictions it supports (totals, throughput, batch sizes for a rate or a latency
 *        budget). `CostModelFitter`, which estimates alpha and beta from measured batches, is in
 *        cost_model_fitter.hpp, which this header includes at its end.
 *
 * Notation used throughout: B batch size (items), N item count, W workers, lambda arrival rate
 * (items per second), D the batcher's `max_delay`, alpha = `CostModel::per_batch`,
 * beta = `CostModel::per_item`.
 */

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>

#include "microbatch/detail/config.hpp"

namespace microbatch {

namespace detail::cost_model_support {

/// Formats @p value for an error message ("%g": short, exact enough, handles inf and nan).
inline std::string format_number(double value) {
    char text[32];
    std::snprintf(text, sizeof text, "%g", value);
    return text;
}

/// Throws std::invalid_argument("microbatch::<where>: <argument> <requirement> (got <value>)").
[[noreturn]] inline void throw_invalid_argument(const char* where, const char* argument,
                                                const char* requirement, const std::string& got) {
    MICROBATCH_THROW(std::invalid_argument(std::string("microbatch::") + where + ": " + argument +
                                           " " + requirement + " (got " + got + ")"));
}

/// ceil(numerator / denominator) for denominator >= 1, without the overflow of (n + d - 1) / d.
constexpr std::size_t ceil_div(std::size_t numerator, std::size_t denominator) noexcept {
    return numerator / denominator + (numerator % denominator != 0 ? 1 : 0);
}

}  // namespace detail::cost_model_support

/**
 * @brief The linear cost of processing one batch: T_batch(B) = alpha + beta * B.
 *
 * `per_batch` (alpha) is the fixed cost every batch pays whatever its size (a system call, a
 * network round trip, a kernel launch); `per_item` (beta) is the marginal cost of one more item.
 * Batching pays off exactly when alpha is large compared with beta: the fixed cost is then
 * shared by B items.
 *
 * A plain aggregate; durations are `std::chrono::duration<double>` (seconds), so any chrono
 * duration converts implicitly and units cannot be confused:
 * @code
 * using namespace std::chrono_literals;
 * microbatch::CostModel model{50us, 2ns};           // alpha = 50 us, beta = 2 ns
 * double items_per_second = model.throughput(256, 2);
 * auto batch = model.min_batch_for_rate(1e6, 2);     // std::optional<std::size_t>
 * @endcode
 *
 * Every member function requires a valid model (both coefficients finite and >= 0) and throws
 * `std::invalid_argument` naming `per_batch` or `per_item` otherwise; arguments are validated the
 * same way (counts >= 1, rates finite and > 0), the message naming the argument and its value.
 * All queries are O(1) (the searches solve the inequality in closed form and then correct for
 * rounding with at most a few evaluations).
 *
 * The model describes steady work on dedicated workers: it ignores contention between workers,
 * cache effects of large batches and the time to hand a batch to a worker (fold those into alpha
 * and beta by fitting them from real measurements with `CostModelFitter`).
 *
 * Thread safety: a plain value type; const member functions may be called concurrently.
 */
struct CostModel {
    /// @brief Durations in seconds, held as double.
    using Seconds = std::chrono::duration<double>;

    /**
     * @brief Largest batch size the searches consider: 2^32 - 1.
     *
     * Exactly representable as a double and a `std::size_t` on every platform. Callers feeding a
     * result into a batcher should still clamp it to the batcher's own limit
     * (`Options::max_supported_batch_size`).
     */
    static constexpr std::size_t max_searched_batch_size =
        std::numeric_limits<std::uint32_t>::max();

    /// @brief alpha: the fixed cost of one batch, independent of its size.
    Seconds per_batch{0.0};
    /// @brief beta: the additional cost of each item in a batch.
    Seconds per_item{0.0};

    /**
     * @brief Builds a model from alpha and beta given as plain seconds.
     * @throws std::invalid_argument if either is negative or not finite.
     */
    [[nodiscard]] static CostModel from_seconds(double per_batch_seconds, double per_item_seconds) {
        CostModel model{Seconds{per_batch_seconds}, Seconds{per_item_seconds}};
        model.validate("CostModel::from_seconds");
        return model;
    }

    /**
     * @brief T_batch(B) = alpha + beta * B: the time one worker needs for a batch of B items.
     * @param batch_size B, >= 1.
     * @throws std::invalid_argument if B is 0 or the model is invalid.
     */
    [[nodiscard]] Seconds batch_time(std::size_t batch_size) const {
        validate("CostModel::batch_time");
        require_at_least_one("CostModel::batch_time", "batch_size", batch_size);
        return unchecked_batch_time(static_cast<double>(batch_size));
    }

    /**
     * @brief The simple ("fluid") estimate of the time to process N items: every batch is
     *        treated as full and the work is spread evenly over the busy workers,
     *        T = ceil(N/B) * T_batch(B) / min(W, ceil(N/B)).
     *
     * Quick and smooth in its arguments, but not a schedule: it charges the last, partial batch
     * as if it were full (overestimating) and lets workers share fractional rounds
     * (underestimating when ceil(N/B) is not a multiple of W). Example with alpha = 1 s,
     * beta = 0.5 s, N = 10, B = 4, W = 2: 3 batches of 3 s over 2 workers = 4.5 s, whereas the
     * real schedule needs 5 s (see `predicted_makespan`).
     *
     * @param item_count N, >= 1.  @param batch_size B, >= 1.  @param workers W, >= 1.
     * @throws std::invalid_argument naming the first invalid argument (or model coefficient).
     */
    [[nodiscard]] Seconds predicted_total(std::size_t item_count, std::size_t batch_size,
                                          std::size_t workers) const {
        constexpr const char* where = "CostModel::predicted_total";
        validate(where);
        require_at_least_one(where, "item_count", item_count);
        require_at_least_one(where, "batch_size", batch_size);
        require_at_least_one(where, "workers", workers);
        const std::size_t batches = detail::cost_model_support::ceil_div(item_count, batch_size);
        const std::size_t busy_workers = std::min(workers, batches);
        return unchecked_batch_time(static_cast<double>(batch_size)) *
               (static_cast<double>(batches) / static_cast<double>(busy_workers));
    }

    /**
     * @brief The refined estimate: the makespan of the actual batches, list-scheduled in order
     *        on W workers (each batch runs whole on one worker as soon as one is free).
     *
     * N items form q = floor(N/B) full batches and, when r = N mod B > 0, one last batch of r
     * items. The full batches take ceil(q/W) rounds of T_batch(B); the partial batch starts on
     * the first worker to become free, at floor(q/W) * T_batch(B). Hence
     *
     *     makespan = ceil(q/W) * T_batch(B)                                          if r = 0
     *     makespan = max(ceil(q/W) * T_batch(B), floor(q/W) * T_batch(B) + T_batch(r)) if r > 0
     *
     * Same example as `predicted_total` (alpha = 1 s, beta = 0.5 s, N = 10, B = 4, W = 2): two
     * full batches run in parallel for 3 s, then the 2-item batch takes 2 s: 5 s. With W = 3 the
     * partial batch runs alongside them: 3 s.
     *
     * @param item_count N, >= 1.  @param batch_size B, >= 1.  @param workers W, >= 1.
     * @throws std::invalid_argument naming the first invalid argument (or model coefficient).
     */
    [[nodiscard]] Seconds predicted_makespan(std::size_t item_count, std::size_t batch_size,
                                             std::size_t workers) const {
        constexpr const char* where = "CostModel::predicted_makespan";
        validate(where);
        require_at_least_one(where, "item_count", item_count);
        require_at_least_one(where, "batch_size", batch_size);
        require_at_least_one(where, "workers", workers);
        const std::size_t full_batches = item_count / batch_size;
        const std::size_t remainder = item_count % batch_size;
        const std::size_t complete_rounds = full_batches / workers;
        const std::size_t rounds = detail::cost_model_support::ceil_div(full_batches, workers);
        const Seconds full_time = unchecked_batch_time(static_cast<double>(batch_size));
        const Seconds full_batches_done = full_time * static_cast<double>(rounds);
        if (remainder == 0) {
            return full_batches_done;
        }
        const Seconds partial_done = full_time * static_cast<double>(complete_rounds) +
                                     unchecked_batch_time(static_cast<double>(remainder));
        return std::max(full_batches_done, partial_done);
    }

    /**
     * @brief The capacity W * B / T_batch(B), in items per second, of W workers that are never
     *        idle and always process batches of B items.
     *
     * Increases with B towards W / beta when alpha > 0. Returns +infinity when T_batch(B) is 0
     * (a model with alpha = beta = 0).
     *
     * @param batch_size B, >= 1.  @param workers W, >= 1.
     * @throws std::invalid_argument naming the first invalid argument (or model coefficient).
     */
    [[nodiscard]] double throughput(std::size_t batch_size, std::size_t workers) const {
        constexpr const char* where = "CostModel::throughput";
        validate(where);
        require_at_least_one(where, "batch_size", batch_size);
        require_at_least_one(where, "workers", workers);
        return unchecked_throughput(static_cast<double>(batch_size), static_cast<double>(workers));
    }

    /**
     * @brief The smallest batch size whose throughput keeps up with @p arrival_rate:
     *        the least B >= 1 with W * B / (alpha + beta * B) >= lambda.
     *
     * Rearranged: B * (W - lambda * beta) >= lambda * alpha. So with alpha > 0 the answer is
     * max(1, ceil(lambda * alpha / (W - lambda * beta))) when lambda * beta < W, and there is
     * none when lambda * beta >= W (even infinitely large batches cannot beat the per-item cost).
     * With alpha = 0 the throughput does not depend on B: the answer is 1 or none.
     *
     * @param arrival_rate lambda in items per second, finite and > 0.
     * @param workers W, >= 1.
     * @return B, or `std::nullopt` when no B in [1, max_searched_batch_size] is fast enough.
     * @throws std::invalid_argument naming the first invalid argument (or model coefficient).
     */
    [[nodiscard]] std::optional<std::size_t> min_batch_for_rate(double arrival_rate,
                                                                std::size_t workers) const {
        constexpr const char* where = "CostModel::min_batch_for_rate";
        validate(where);
        require_positive_rate(where, arrival_rate);
        require_at_least_one(where, "workers", workers);
        return unchecked_min_batch_for_rate(arrival_rate, static_cast<double>(workers));
    }

    /**
     * @brief The expected time from an item's arrival until its batch has been processed, when
     *        items arrive steadily at rate lambda and batches are dispatched when B items are
     *        in them.
     *
     * latency(B) = (B - 1) / (2 * lambda) + T_batch(B)
     *
     * A batch fills in (B - 1) / lambda after its first item; the item arriving k-th waits
     * (B - 1 - k) / lambda, so the mean fill wait is (B - 1) / (2 * lambda) (under evenly spaced
     * and under Poisson arrivals alike). When W workers cannot keep up (throughput(B, W) <
     * lambda), batches queue without bound and the result is +infinity. Otherwise the formula is
     * exact for evenly spaced arrivals: consecutive batches go to different workers and none has
     * to wait for a worker. With random arrivals, waiting for a busy worker adds to it as
     * throughput approaches lambda, so treat it as a lower bound there.
     *
     * @param batch_size B, >= 1.  @param arrival_rate lambda, finite and > 0.
     * @param workers W, >= 1.
     * @throws std::invalid_argument naming the first invalid argument (or model coefficient).
     */
    [[nodiscard]] Seconds expected_latency(std::size_t batch_size, double arrival_rate,
                                           std::size_t workers) const {
        constexpr const char* where = "CostModel::expected_latency";
        validate(where);
        require_at_least_one(where, "batch_size", batch_size);
        require_positive_rate(where, arrival_rate);
        require_at_least_one(where, "workers", workers);
        return unchecked_latency(static_cast<double>(batch_size), arrival_rate,
                                 static_cast<double>(workers), std::nullopt);
    }

    /**
     * @brief `expected_latency` for a batcher that also dispatches a batch once its oldest item
     *        has waited @p max_delay (D).
     *
     * With evenly spaced arrivals, n_D = 1 + floor(lambda * D) items have arrived when the timer
     * fires. If B <= n_D the batch fills first and nothing changes. Otherwise the timer
     * dispatches a batch of n = n_D items at D, and their mean wait is D minus their mean arrival
     * time: D - (n - 1) / (2 * lambda) (which lies between D/2 and D: the time bound caps every
     * item's wait at D, not the mean at D). Processing takes T_batch(n):
     *
     *     latency = (B - 1) / (2 * lambda) + T_batch(B)           if B <= n_D
     *     latency = D - (n_D - 1) / (2 * lambda) + T_batch(n_D)   if B >  n_D
     *
     * +infinity when throughput(min(B, n_D), W) < lambda.
     *
     * @param batch_size B, >= 1.  @param arrival_rate lambda, finite and > 0.
     * @param workers W, >= 1.  @param max_delay D, >= 0 (may be infinite: no time bound).
     * @throws std::invalid_argument naming the first invalid argument (or model coefficient).
     */
    [[nodiscard]] Seconds expected_latency(std::size_t batch_size, double arrival_rate,
                                           std::size_t workers, Seconds max_delay) const {
        constexpr const char* where = "CostModel::expected_latency";
        validate(where);
        require_at_least_one(where, "batch_size", batch_size);
        require_positive_rate(where, arrival_rate);
        require_at_least_one(where, "workers", workers);
        require_non_negative(where, "max_delay", max_delay);
        return unchecked_latency(static_cast<double>(batch_size), arrival_rate,
                                 static_cast<double>(workers), max_delay);
    }

    /**
     * @brief The largest batch size whose `expected_latency` stays within @p latency_budget.
     *
     * latency(B) = (B - 1) / (2 * lambda) + alpha + beta * B increases with B, so the budget
     * holds for B <= (2 * lambda * (budget - alpha) + 1) / (1 + 2 * lambda * beta); the result is
     * that bound rounded down, provided W workers keep up at that size (throughput increases
     * with B, so if they do not, no size within the budget works). Larger batches are more
     * efficient, so this is the most efficient size that meets the budget.
     *
     * @param latency_budget Mean latency allowed, >= 0.  @param arrival_rate lambda, finite and
     * > 0.  @param workers W, >= 1.
     * @return B in [1, max_searched_batch_size], or `std::nullopt` when even B = 1 exceeds the
     *         budget or the sizes within it cannot keep up with lambda.
     * @throws std::invalid_argument naming the first invalid argument (or model coefficient).
     */
    [[nodiscard]] std::optional<std::size_t> max_batch_for_latency(Seconds latency_budget,
                                                                   double arrival_rate,
                                                                   std::size_t workers) const {
        constexpr const char* where = "CostModel::max_batch_for_latency";
        validate(where);
        require_non_negative(where, "latency_budget", latency_budget);
        require_positive_rate(where, arrival_rate);
        require_at_least_one(where, "workers", workers);
        return unchecked_max_batch_for_latency(latency_budget, arrival_rate,
                                               static_cast<double>(workers),
                                               static_cast<double>(max_searched_batch_size));
    }

    /**
     * @brief `max_batch_for_latency` for a batcher with time bound @p max_delay (D).
     *
     * A batcher with time bound D never builds batches larger than n_D = 1 + floor(lambda * D)
     * under steady arrivals; any B > n_D yields the same batches as B = n_D, only dispatched
     * later (at D instead of when full), so it is never better. The answer is therefore the
     * largest B in [1, n_D] with expected_latency(B, lambda, W, D) <= budget. Within that range
     * the latency is the one without a time bound, so when n_D is returned, the time bound
     * (not the budget) is what limits the batch size: raise `max_delay` to allow larger batches.
     *
     * @param latency_budget Mean latency allowed, >= 0.  @param arrival_rate lambda, finite and
     * > 0.  @param workers W, >= 1.  @param max_delay D, >= 0 (may be infinite).
     * @return B in [1, min(n_D, max_searched_batch_size)], or `std::nullopt` (see the overload
     *         without D).
     * @throws std::invalid_argument naming the first invalid argument (or model coefficient).
     */
    [[nodiscard]] std::optional<std::size_t> max_batch_for_latency(Seconds latency_budget,
                                                                   double arrival_rate,
                                                                   std::size_t workers,
                                                                   Seconds max_delay) const {
        constexpr const char* where = "CostModel::max_batch_for_latency";
        validate(where);
        require_non_negative(where, "latency_budget", latency_budget);
        require_positive_rate(where, arrival_rate);
        require_at_least_one(where, "workers", workers);
        require_non_negative(where, "max_delay", max_delay);
        return unchecked_max_batch_for_latency(
            latency_budget, arrival_rate, static_cast<double>(workers),
            std::min(items_by_deadline(arrival_rate, max_delay),
                     static_cast<double>(max_searched_batch_size)));
    }

private:
    /// Throws unless both coefficients are finite and >= 0.
    void validate(const char* where) const {
        require_finite_non_negative(where, "per_batch", per_batch);
        require_finite_non_negative(where, "per_item", per_item);
    }

    static void require_finite_non_negative(const char* where, const char* argument,
                                            Seconds value) {
        if (!(value.count() >= 0.0) || !std::isfinite(value.count())) {
            detail::cost_model_support::throw_invalid_argument(
                where, argument, "must be finite and >= 0",
                detail::cost_model_support::format_number(value.count()) + " s");
        }
    }

    static void require_at_least_one(const char* where, const char* argument, std::size_t value) {
        if (value == 0) {
            detail::cost_model_support::throw_invalid_argument(where, argument, "must be >= 1",
                                                               "0");
        }
    }

    static void require_positive_rate(const char* where, double arrival_rate) {
        if (!(arrival_rate > 0.0) || !std::isfinite(arrival_rate)) {
            detail::cost_model_support::throw_invalid_argument(
                where, "arrival_rate", "must be finite and > 0",
                detail::cost_model_support::format_number(arrival_rate) + " items/s");
        }
    }

    /// Accepts +infinity (meaning "unbounded"); rejects negative values and NaN.
    static void require_non_negative(const char* where, const char* argument, Seconds value) {
        if (!(value.count() >= 0.0)) {
            detail::cost_model_support::throw_invalid_argument(
                where, argument, "must be >= 0",
                detail::cost_model_support::format_number(value.count()) + " s");
        }
    }

    Seconds unchecked_batch_time(double batch_size) const noexcept {
        return per_batch + per_item * batch_size;
    }

    double unchecked_throughput(double batch_size, double workers) const noexcept {
        const double seconds = unchecked_batch_time(batch_size).count();
        return seconds > 0.0 ? workers * batch_size / seconds
                             : std::numeric_limits<double>::infinity();
    }

    /// n_D = 1 + floor(lambda * D): the items that have arrived when the timer fires
    /// (+infinity for an infinite D).
    static double items_by_deadline(double arrival_rate, Seconds max_delay) noexcept {
        return 1.0 + std::floor(arrival_rate * max_delay.count());
    }

    /// (B - 1) / (2 lambda) + T_batch(B): the latency when the batch fills before any timer.
    Seconds filled_batch_latency(double batch_size, double arrival_rate) const noexcept {
        return Seconds{(batch_size - 1.0) / (2.0 * arrival_rate)} +
               unchecked_batch_time(batch_size);
    }

    Seconds unchecked_latency(double batch_size, double arrival_rate, double workers,
                              std::optional<Seconds> max_delay) const noexcept {
        const double items_by_timer =
            max_delay ? items_by_deadline(arrival_rate, *max_delay) : batch_size;
        const bool timer_fires_first = items_by_timer < batch_size;
        const double dispatched = timer_fires_first ? items_by_timer : batch_size;
        if (unchecked_throughput(dispatched, workers) < arrival_rate) {
            return Seconds{std::numeric_limits<double>::infinity()};
        }
        if (!timer_fires_first) {
            return filled_batch_latency(batch_size, arrival_rate);
        }
        return *max_delay - Seconds{(dispatched - 1.0) / (2.0 * arrival_rate)} +
               unchecked_batch_time(dispatched);
    }

    std::optional<std::size_t> unchecked_min_batch_for_rate(double arrival_rate,
                                                            double workers) const noexcept {
        const double limit = static_cast<double>(max_searched_batch_size);
        const auto fast_enough = [&](double batch_size) {
            return unchecked_throughput(batch_size, workers) >= arrival_rate;
        };
        if (per_batch.count() == 0.0) {
            // Throughput W / beta does not depend on the batch size.
            return fast_enough(1.0) ? std::optional<std::size_t>{1} : std::nullopt;
        }
        const double slack = workers - arrival_rate * per_item.count();
        if (!(slack > 0.0)) {
            return std::nullopt;
        }
        const double bound = arrival_rate * per_batch.count() / slack;
        if (!(bound <= limit)) {
            return std::nullopt;
        }
        // The closed form may be off by one after rounding; the predicate itself decides.
        double batch_size = std::max(1.0, std::ceil(bound));
        while (batch_size > 1.0 && fast_enough(batch_size - 1.0)) {
            batch_size -= 1.0;
        }
        while (!fast_enough(batch_size)) {
            if (batch_size >= limit) {
                return std::nullopt;
            }
            batch_size += 1.0;
        }
        return static_cast<std::size_t>(batch_size);
    }

    /// Largest B in [1, largest] with filled_batch_latency(B) <= budget and throughput >= lambda.
    std::optional<std::size_t> unchecked_max_batch_for_latency(Seconds budget, double arrival_rate,
                                                               double workers,
                                                               double largest) const noexcept {
        const auto within_budget = [&](double batch_size) {
            return filled_batch_latency(batch_size, arrival_rate) <= budget;
        };
        const double twice_rate = 2.0 * arrival_rate;
        const double bound = (twice_rate * (budget - per_batch).count() + 1.0) /
                             (1.0 + twice_rate * per_item.count());
        // NaN-safe clamp into [1, largest]; the predicate then corrects rounding either way.
        double batch_size = bound >= largest ? largest : (bound >= 1.0 ? std::floor(bound) : 1.0);
        while (batch_size < largest && within_budget(batch_size + 1.0)) {
            batch_size += 1.0;
        }
        while (!within_budget(batch_size)) {
            if (batch_size <= 1.0) {
                return std::nullopt;
            }
            batch_size -= 1.0;
        }
        // Throughput grows with B: if the largest size within budget cannot keep up, none can.
        if (unchecked_throughput(batch_size, workers) < arrival_rate) {
            return std::nullopt;
        }
        return static_cast<std::size_t>(batch_size);
    }
};

}  // namespace microbatch

// Included last (it needs CostModel) so that cost_model.hpp still provides CostModelFitter.
#include "microbatch/cost_model_fitter.hpp"
