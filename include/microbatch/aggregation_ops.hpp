#pragma once
/**
 * @file aggregation_ops.hpp
 * @brief The ready-made reducing operations an `Aggregator` is instantiated with, in
 *        `microbatch::ops` (`Sum`, `Count`, `Min`, `Max`, `MeanVariance` and its value type
 *        `RunningStats`), and what an operation of your own must provide.
 */

#include "microbatch/version.hpp"  // the C++17 check

#include <atomic>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace microbatch {

/**
 * @brief The reducing operations an `Aggregator` is instantiated with.
 *
 * An operation is a small type `Op` with
 * - `using value_type = T;` the accumulated value (and the type of each merge),
 * - `T identity() const` the neutral element: `combine(x, identity())` leaves `x` unchanged,
 * - `void combine(T& into, T&& from) const` folding `from` into `into` (taking `from` by
 *   `const T&` works too). It must be associative and commutative: the aggregator combines
 *   merges in an unspecified order and grouping.
 * - optionally `void atomic_combine(std::atomic<T>& target, const T& value) const`, a faster
 *   merge for atomic-backed types (e.g. a `fetch_add`); without it a CAS loop over `combine` is
 *   used.
 *
 * The member functions are `const` and are called concurrently from many threads; a stateful
 * operation (say, histogram bucket bounds) must therefore not change its state in them.
 */
namespace ops {

/**
 * @brief Sum: `identity()` is `T{}`, `combine` is `+=`.
 *
 * For integer `T` the sum wraps modulo 2^bits on overflow, as `std::atomic` arithmetic does
 * (never undefined behaviour); it is atomic-backed with a wait-free `fetch_add` merge.
 * Floating-point sums are atomic-backed with a CAS loop; since shards are added in an
 * unspecified order the result may differ from a sequential sum in the last bits.
 * @tparam T an arithmetic type, or any type with `+=` whose `T{}` is zero.
 *
 * Thread-safe: stateless.
 */
template <class T>
struct Sum {
    using value_type = T;  ///< The aggregated value type.

    /// @brief Returns `T{}`.
    T identity() const noexcept(std::is_nothrow_default_constructible_v<T>) { return T{}; }

    /// @brief `into += from` (wrapping for integers).
    void combine(T& into, const T& from) const {
        if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
            // Add as unsigned: wraps instead of overflowing, matching atomic fetch_add.
            using Unsigned = std::make_unsigned_t<T>;
            into = static_cast<T>(static_cast<Unsigned>(into) + static_cast<Unsigned>(from));
        } else {
            into += from;
        }
    }

    /// @brief Wait-free merge for integers: one relaxed `fetch_add`.
    template <class U = T,
              std::enable_if_t<std::is_integral_v<U> && !std::is_same_v<U, bool>, int> = 0>
    void atomic_combine(std::atomic<U>& target, const U& value) const noexcept {
        // relaxed: the sum is the only data; fetch_add's atomicity alone makes it exact.
        target.fetch_add(value, std::memory_order_relaxed);
    }
};

/**
 * @brief Count of events: a `Sum<std::uint64_t>` under a clearer name. Merge the number of
 *        events each batch saw (`agg.merge(batch.size())`, or `agg.merge(1)` per event).
 *
 * Thread-safe: stateless.
 */
struct Count : Sum<std::uint64_t> {};

/**
 * @brief Minimum: `identity()` is the largest value of `T` (+infinity for floating point).
 *
 * NaN merges are ignored (every comparison with NaN is false). Atomic-backed for arithmetic
 * types, with a lock-free CAS loop that returns at once when the value is no improvement.
 * @tparam T a type with `<` and a `std::numeric_limits` specialisation.
 *
 * Thread-safe: stateless.
 */
template <class T>
struct Min {
    static_assert(std::numeric_limits<T>::is_specialized,
                  "microbatch::ops::Min<T> needs std::numeric_limits<T>");
    using value_type = T;  ///< The aggregated value type.

    /// @brief Returns the largest `T` (+infinity when `T` has one).
    T identity() const noexcept {
        if constexpr (std::numeric_limits<T>::has_infinity) {
            return std::numeric_limits<T>::infinity();
        } else {
            return std::numeric_limits<T>::max();
        }
    }

    /// @brief `into = min(into, from)`.
    void combine(T& into, const T& from) const noexcept(noexcept(from < into)) {
        if (from < into) {
            into = from;
        }
    }

    /// @brief Lock-free merge: CAS only while `value` improves on the shard's value.
    template <class U = T, std::enable_if_t<std::is_arithmetic_v<U>, int> = 0>
    void atomic_combine(std::atomic<U>& target, const U& value) const noexcept {
        // relaxed: the minimum is the only data; CAS atomicity alone makes it exact.
        U current = target.load(std::memory_order_relaxed);
        while (value < current &&
               !target.compare_exchange_weak(current, value, std::memory_order_relaxed,
                                             std::memory_order_relaxed)) {
        }
    }
};

/**
 * @brief Maximum: `identity()` is the lowest value of `T` (-infinity for floating point).
 *
 * NaN merges are ignored. Atomic-backed for arithmetic types, like `Min`.
 * @tparam T a type with `<` and a `std::numeric_limits` specialisation.
 *
 * Thread-safe: stateless.
 */
template <class T>
struct Max {
    static_assert(std::numeric_limits<T>::is_specialized,
                  "microbatch::ops::Max<T> needs std::numeric_limits<T>");
    using value_type = T;  ///< The aggregated value type.

    /// @brief Returns the lowest `T` (-infinity when `T` has one).
    T identity() const noexcept {
        if constexpr (std::numeric_limits<T>::has_infinity) {
            return -std::numeric_limits<T>::infinity();
        } else {
            return std::numeric_limits<T>::lowest();
        }
    }

    /// @brief `into = max(into, from)`.
    void combine(T& into, const T& from) const noexcept(noexcept(into < from)) {
        if (into < from) {
            into = from;
        }
    }

    /// @brief Lock-free merge: CAS only while `value` improves on the shard's value.
    template <class U = T, std::enable_if_t<std::is_arithmetic_v<U>, int> = 0>
    void atomic_combine(std::atomic<U>& target, const U& value) const noexcept {
        // relaxed: the maximum is the only data; CAS atomicity alone makes it exact.
        U current = target.load(std::memory_order_relaxed);
        while (current < value &&
               !target.compare_exchange_weak(current, value, std::memory_order_relaxed,
                                             std::memory_order_relaxed)) {
        }
    }
};

/**
 * @brief Count, mean and sum of squared deviations of a set of samples, combinable in any
 *        order: the value type of `MeanVariance`.
 *
 * `add` is Welford's update; `combine` is Chan et al.'s pairwise update, so per-batch
 * statistics merged in any grouping give the statistics of all samples together — up to
 * floating-point rounding in `mean` and `variance`; the `count` is an exact integer.
 * @code
 * microbatch::ops::RunningStats batch_stats;
 * for (double latency : latencies) batch_stats.add(latency);
 * aggregator.merge(batch_stats);
 * @endcode
 * Thread safety: a plain value type.
 */
class RunningStats {
public:
    /// @brief The empty set: count 0, mean 0, variance 0.
    RunningStats() noexcept = default;

    /// @brief The statistics of the single sample @p x.
    static RunningStats of(double x) noexcept {
        RunningStats stats;
        stats.add(x);
        return stats;
    }

    /// @brief Adds one sample (Welford's update). O(1).
    void add(double x) noexcept {
        ++count_;
        const double delta = x - mean_;
        mean_ += delta / static_cast<double>(count_);
        m2_ += delta * (x - mean_);
    }

    /// @brief Adds every sample of @p other (Chan et al.'s parallel update). O(1).
    void combine(const RunningStats& other) noexcept {
        if (other.count_ == 0) {
            return;
        }
        if (count_ == 0) {
            *this = other;
            return;
        }
        const std::uint64_t total = count_ + other.count_;
        const double n_this = static_cast<double>(count_);
        const double n_other = static_cast<double>(other.count_);
        const double share_of_other = n_other / static_cast<double>(total);  // one division
        const double delta = other.mean_ - mean_;
        mean_ += delta * share_of_other;
        m2_ += other.m2_ + delta * delta * n_this * share_of_other;
        count_ = total;
    }

    /// @brief Number of samples (exact).
    std::uint64_t count() const noexcept { return count_; }
    /// @brief Arithmetic mean (0 when empty).
    double mean() const noexcept { return mean_; }
    /// @brief Sum of squared deviations from the mean (0 when empty).
    double sum_of_squared_deviations() const noexcept { return m2_; }
    /// @brief Population variance, m2 / n (0 when empty).
    double variance() const noexcept {
        return count_ == 0 ? 0.0 : m2_ / static_cast<double>(count_);
    }
    /// @brief Sample variance, m2 / (n - 1) (0 with fewer than two samples).
    double sample_variance() const noexcept {
        return count_ < 2 ? 0.0 : m2_ / static_cast<double>(count_ - 1);
    }

private:
    std::uint64_t count_ = 0;
    double mean_ = 0.0;
    double m2_ = 0.0;
};

/**
 * @brief Mean and variance (with exact count) of all samples merged, as a `RunningStats`.
 *
 * Not atomic-backed (24 bytes is too wide for a lock-free atomic), so it uses node shards:
 * merges combine in place and allocate only when every probed shard is busy at that moment.
 *
 * Thread-safe: stateless.
 */
struct MeanVariance {
    using value_type = RunningStats;  ///< The aggregated value type.

    /// @brief The empty `RunningStats`.
    RunningStats identity() const noexcept { return RunningStats{}; }
    /// @brief `into.combine(from)`.
    void combine(RunningStats& into, const RunningStats& from) const noexcept {
        into.combine(from);
    }
};

}  // namespace ops

}  // namespace microbatch
