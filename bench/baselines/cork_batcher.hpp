#pragma once
/**
 * @file baselines/cork_batcher.hpp
 * @brief Baseline for bench_load: a batcher following the CORK rule BentoML publishes for its
 *        dispatcher (the idea only; this is our own code on top of baselines/pull_batcher.hpp).
 *
 * A free worker forms a batch as in `PullBatcher` (nothing is dispatched while every worker is
 * busy; B and max_delay bound the batch as there). While forming, with n items waiting, it keeps
 * waiting while
 *
 *     n * (w_n + dt + a) <= 0.95 * w_avg
 *
 * - w_n: how long the newest waiting item has waited;
 * - dt: the recent inter-arrival gap (exponential moving average, weight 1/8 per arrival);
 * - a, b: least-squares fit of batch duration = a * n + b over the last 50 batches (a = 0 until
 *   two different sizes were seen; a >= 0);
 * - w_avg: mean, over the same 50 batches, of how long the batch's oldest item waited from
 *   arrival to the start of processing (0 before the first batch).
 *
 * The left side grows with time (through w_n), so the worker sleeps until the moment it becomes
 * false, w_n = 0.95 w_avg / n - dt - a, or until the next arrival re-evaluates it.
 * Not modelled: BentoML's warm-up phases and its shedding of requests past max_latency.
 */

#include <chrono>
#include <cstddef>
#include <deque>

#include "baselines/pull_batcher.hpp"

namespace microbatch_bench {

/// @brief The CORK early-release rule, plugged into `PullBatcher`.
class CorkRule {
public:
    static constexpr bool reevaluate_on_arrival = true;
    using TimePoint = std::chrono::steady_clock::time_point;
    static constexpr std::size_t history = 50;  ///< batches kept for the fit and w_avg
    static constexpr double decay = 0.95;

    /// When to take the forming batch of @p n items whose newest arrived at @p newest.
    TimePoint take_at(std::size_t n, TimePoint newest) const {
        const double limit = decay * wait_avg_ / static_cast<double>(n) - gap_ - a_;  // w_n, s
        if (limit <= 0.0) {
            return newest;  // already false: take now
        }
        return newest + std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::duration<double>(limit));
    }

    /// Updates dt with the gap since the previous arrival.
    void arrived(TimePoint now) {
        if (has_last_) {
            const double gap = std::chrono::duration<double>(now - last_).count();
            gap_ = has_gap_ ? gap_ + (gap - gap_) / 8.0 : gap;
            has_gap_ = true;
        }
        last_ = now;
        has_last_ = true;
    }

    /// Records a finished batch and refits a, b and w_avg over the last 50 batches.
    void finished(std::size_t n, std::chrono::nanoseconds wait, std::chrono::nanoseconds duration) {
        samples_.push_back(Sample{static_cast<double>(n),
                                  std::chrono::duration<double>(duration).count(),
                                  std::chrono::duration<double>(wait).count()});
        if (samples_.size() > history) {
            samples_.pop_front();
        }
        double sn = 0, sd = 0, snn = 0, snd = 0, sw = 0;
        for (const Sample& s : samples_) {
            sn += s.n;
            sd += s.duration;
            snn += s.n * s.n;
            snd += s.n * s.duration;
            sw += s.wait;
        }
        const double count = static_cast<double>(samples_.size());
        wait_avg_ = sw / count;
        const double denominator = count * snn - sn * sn;
        if (denominator > 1e-9) {  // at least two different sizes
            const double a = (count * snd - sn * sd) / denominator;
            a_ = a > 0.0 ? a : 0.0;
            b_ = (sd - a_ * sn) / count;
        }
    }

    double a() const { return a_; }  ///< fitted per-item cost, seconds
    double b() const { return b_; }  ///< fitted per-batch cost, seconds

private:
    struct Sample {
        double n, duration, wait;
    };
    std::deque<Sample> samples_;
    double a_ = 0.0, b_ = 0.0, wait_avg_ = 0.0, gap_ = 0.0;
    TimePoint last_{};
    bool has_last_ = false, has_gap_ = false;
};

/// @brief `PullBatcher` with the CORK rule (same options and completion interface).
template <class T>
using CorkBatcher = PullBatcher<T, CorkRule>;

}  // namespace microbatch_bench
