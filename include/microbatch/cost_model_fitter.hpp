#pragma once
/**
 * @file cost_model_fitter.hpp
 * @brief `microbatch::CostModelFitter`, which estimates a `CostModel` (alpha and beta) from
 *        measured batches by least squares, online, and `fit_cost_model`, the same fit of a list
 *        of samples in one call.
 *
 * cost_model.hpp includes this header at its end, so either header provides both.
 */

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "microbatch/cost_model.hpp"

namespace microbatch {

/**
 * @brief Estimates a `CostModel` from measured batches by least squares, online.
 *
 * Feed it one sample per processed batch (`add(batch size, processing time)`); `fit()` returns
 * the line duration = alpha + beta * size that minimises the squared error, constrained to
 * alpha >= 0 and beta >= 0 so the result is always a valid `CostModel`. When the ordinary
 * least-squares line already has non-negative coefficients (always so for noise-free data from
 * a valid model) the two coincide; otherwise the best line on the boundary (alpha = 0 or
 * beta = 0) is returned.
 *
 * Numerically stable: it keeps running means and co-moments updated Welford-style (as in
 * Chan, Golub and LeVeque's pairwise algorithm, which `merge` implements), never raw sums of
 * squares, so large batch sizes or long runs do not cancel catastrophically. `add` is O(1),
 * allocation-free and cheap enough to call for every batch.
 *
 * @code
 * microbatch::CostModelFitter fitter;
 * fitter.add(64, std::chrono::microseconds(180));
 * fitter.add(256, std::chrono::microseconds(560));
 * if (auto model = fitter.fit()) { use(*model); }
 * @endcode
 *
 * Thread safety: not thread-safe. Synchronise externally, or give each thread its own fitter
 * and combine them with `merge`. Const member functions may be called concurrently with each
 * other.
 */
class CostModelFitter {
public:
    /**
     * @brief Records one processed batch: @p batch_size items took @p duration.
     *
     * Any `std::chrono` duration converts implicitly (`std::chrono::nanoseconds` included).
     * O(1), no allocation.
     * @throws std::invalid_argument if batch_size is 0 or duration is negative or not finite;
     *         the fitter is then unchanged.
     */
    void add(std::size_t batch_size, CostModel::Seconds duration) {
        if (batch_size == 0) {
            detail::cost_model_support::throw_invalid_argument("CostModelFitter::add", "batch_size",
                                                               "must be >= 1", "0");
        }
        const double seconds = duration.count();
        if (!(seconds >= 0.0) || !std::isfinite(seconds)) {
            detail::cost_model_support::throw_invalid_argument(
                "CostModelFitter::add", "duration", "must be finite and >= 0",
                detail::cost_model_support::format_number(seconds) + " s");
        }
        note_batch_size(batch_size);
        ++count_;
        const double size = static_cast<double>(batch_size);
        const double count = static_cast<double>(count_);
        // Welford: deviations from the old mean times deviations from the new mean.
        const double size_delta = size - mean_size_;
        const double seconds_delta = seconds - mean_seconds_;
        mean_size_ += size_delta / count;
        mean_seconds_ += seconds_delta / count;
        size_comoment_ += size_delta * (size - mean_size_);
        seconds_comoment_ += seconds_delta * (seconds - mean_seconds_);
        cross_comoment_ += size_delta * (seconds - mean_seconds_);
    }

    /**
     * @brief Adds every sample recorded by @p other, as if they had been `add`ed here.
     *
     * O(1). Lets each worker keep its own fitter without locking and combine them later.
     */
    void merge(const CostModelFitter& other) noexcept {
        if (other.count_ == 0) {
            return;
        }
        if (count_ == 0) {
            *this = other;
            return;
        }
        note_batch_size(other.first_batch_size_);
        several_batch_sizes_ = several_batch_sizes_ || other.several_batch_sizes_;
        const double count_a = static_cast<double>(count_);
        const double count_b = static_cast<double>(other.count_);
        const double total = count_a + count_b;
        const double size_delta = other.mean_size_ - mean_size_;
        const double seconds_delta = other.mean_seconds_ - mean_seconds_;
        const double weight = count_a * count_b / total;
        size_comoment_ += other.size_comoment_ + size_delta * size_delta * weight;
        seconds_comoment_ += other.seconds_comoment_ + seconds_delta * seconds_delta * weight;
        cross_comoment_ += other.cross_comoment_ + size_delta * seconds_delta * weight;
        mean_size_ += size_delta * (count_b / total);
        mean_seconds_ += seconds_delta * (count_b / total);
        count_ += other.count_;
    }

    /// @brief Forgets every sample. O(1).
    void reset() noexcept { *this = CostModelFitter{}; }

    /// @brief The number of samples recorded (by `add` and `merge`).
    [[nodiscard]] std::size_t sample_count() const noexcept { return count_; }

    /// @brief The mean duration of the recorded batches (0 before the first). O(1).
    [[nodiscard]] CostModel::Seconds mean_duration() const noexcept {
        return CostModel::Seconds{count_ == 0 ? 0.0 : mean_seconds_};
    }

    /**
     * @brief The least-squares model (alpha, beta >= 0), or `std::nullopt` while fewer than
     *        two distinct batch sizes have been seen (a line through one x is undetermined).
     *
     * Ordinary least squares: beta = S_xy / S_xx, alpha = mean_y - beta * mean_x, with S the
     * centred co-moments of size (x) and duration (y). If that gives a negative coefficient, the
     * better of alpha = 0, beta = max(0, sum xy / sum xx) and beta = 0, alpha = mean_y is used.
     * O(1).
     */
    [[nodiscard]] std::optional<CostModel> fit() const noexcept {
        const std::optional<Line> line = best_line();
        if (!line) {
            return std::nullopt;
        }
        return CostModel{CostModel::Seconds{line->intercept}, CostModel::Seconds{line->slope}};
    }

    /**
     * @brief The coefficient of determination of `fit()`: 1 - SSE / S_yy, in [0, 1].
     *
     * 1 means the samples lie exactly on the fitted line (also reported when every duration is
     * equal and the fit is therefore exact); near 0 means batch size explains little of the
     * variation. `std::nullopt` when `fit()` is. O(1).
     */
    [[nodiscard]] std::optional<double> r_squared() const noexcept {
        const std::optional<Line> line = best_line();
        if (!line) {
            return std::nullopt;
        }
        if (!(seconds_comoment_ > 0.0)) {
            return 1.0;
        }
        return std::clamp(1.0 - line->squared_error / seconds_comoment_, 0.0, 1.0);
    }

private:
    struct Line {
        double intercept;
        double slope;
        double squared_error;
    };

    void note_batch_size(std::size_t batch_size) noexcept {
        if (count_ == 0) {
            first_batch_size_ = batch_size;
        } else if (batch_size != first_batch_size_) {
            several_batch_sizes_ = true;
        }
    }

    /// Sum of (y - a - b x)^2 from the centred moments: no cancellation between large sums.
    double squared_error(double intercept, double slope) const noexcept {
        const double offset = mean_seconds_ - intercept - slope * mean_size_;
        return seconds_comoment_ - 2.0 * slope * cross_comoment_ + slope * slope * size_comoment_ +
               static_cast<double>(count_) * offset * offset;
    }

    std::optional<Line> best_line() const noexcept {
        if (!several_batch_sizes_ || !(size_comoment_ > 0.0)) {
            return std::nullopt;
        }
        const double slope = cross_comoment_ / size_comoment_;
        const double intercept = mean_seconds_ - slope * mean_size_;
        if (slope >= 0.0 && intercept >= 0.0) {
            return Line{intercept, slope, std::max(0.0, squared_error(intercept, slope))};
        }
        // The unconstrained optimum is infeasible, so the constrained one lies on an edge of the
        // quadrant; on each edge the error is a convex parabola, minimised by clamping.
        const double count = static_cast<double>(count_);
        const double sum_xy = cross_comoment_ + count * mean_size_ * mean_seconds_;
        const double sum_xx = size_comoment_ + count * mean_size_ * mean_size_;
        const double origin_slope = std::max(0.0, sum_xy / sum_xx);
        const double flat_intercept = std::max(0.0, mean_seconds_);
        const double origin_error = std::max(0.0, squared_error(0.0, origin_slope));
        const double flat_error = std::max(0.0, squared_error(flat_intercept, 0.0));
        return origin_error <= flat_error ? Line{0.0, origin_slope, origin_error}
                                          : Line{flat_intercept, 0.0, flat_error};
    }

    std::size_t count_ = 0;
    double mean_size_ = 0.0;
    double mean_seconds_ = 0.0;
    double size_comoment_ = 0.0;     // S_xx = sum (x - mean_x)^2
    double seconds_comoment_ = 0.0;  // S_yy = sum (y - mean_y)^2
    double cross_comoment_ = 0.0;    // S_xy = sum (x - mean_x)(y - mean_y)
    std::size_t first_batch_size_ = 0;
    bool several_batch_sizes_ = false;
};

/**
 * @brief Fits a `CostModel` to (batch size, seconds) samples in one call.
 *
 * Equivalent to `add`ing every sample to a fresh `CostModelFitter` and calling `fit()`. O(n).
 * @return The model, or `std::nullopt` when fewer than two distinct batch sizes occur.
 * @throws std::invalid_argument for a sample with batch size 0 or a negative or non-finite
 *         duration.
 */
[[nodiscard]] inline std::optional<CostModel> fit_cost_model(
    const std::vector<std::pair<std::size_t, double>>& samples) {
    CostModelFitter fitter;
    for (const auto& [batch_size, seconds] : samples) {
        fitter.add(batch_size, CostModel::Seconds{seconds});
    }
    return fitter.fit();
}

}  // namespace microbatch
