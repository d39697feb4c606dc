#pragma once
/**
 * @file options.hpp
 * @brief `microbatch::Options`: the run-time configuration of a Batcher.
 */

#include <chrono>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>

#include "microbatch/detail/config.hpp"
#include "microbatch/executor.hpp"

namespace microbatch {

/**
 * @brief Run-time configuration of a `Batcher`: a plain value with fluent setters.
 *
 * Each option has a getter (`opts.max_batch_size()`) and a setter returning `*this`
 * (`opts.max_batch_size(64)`), so options chain:
 * @code
 * auto opts = microbatch::Options{}.max_batch_size(256).max_delay(std::chrono::milliseconds(2));
 * @endcode
 * Setters store values as given; `validate()` (called by the Batcher constructor) rejects
 * invalid combinations with `std::invalid_argument` naming the option and its value.
 *
 * | option           | default | meaning                                                     |
 * |------------------|---------|-------------------------------------------------------------|
 * | `max_batch_size` | 64      | a batch is dispatched as soon as it holds this many items    |
 * | `max_delay`      | 1 ms    | ...or when its oldest item has waited this long              |
 * | `capacity`       | 0 = 4 x max_batch_size | items accepted but not yet completed          |
 * | `workers`        | 1       | threads of the batcher's own pool (ignored with `executor`)  |
 * | `executor`       | none    | run batches on this executor instead of an owned pool        |
 *
 * Thread safety: a plain value type; no internal synchronisation.
 */
class Options {
public:
    /// Largest batch size supported (the batch slot counter uses 24 bits).
    static constexpr std::size_t max_supported_batch_size = std::size_t{1} << 22;

    /// @brief The size bound B: a batch is dispatched (reason `full`) when it holds B items.
    std::size_t max_batch_size() const noexcept { return max_batch_size_; }
    /// @brief Sets the size bound; must be in [1, max_supported_batch_size].
    Options& max_batch_size(std::size_t value) & noexcept {
        max_batch_size_ = value;
        return *this;
    }
    /// @brief Rvalue overload, so that `auto o = Options{}.max_batch_size(...)` moves.
    Options&& max_batch_size(std::size_t value) && noexcept {
        max_batch_size_ = value;
        return std::move(*this);
    }

    /// @brief The time bound: a partial batch is dispatched (reason `deadline`) once its oldest
    /// item has waited this long. `std::chrono::nanoseconds::max()` disables the time bound.
    std::chrono::nanoseconds max_delay() const noexcept { return max_delay_; }
    /// @brief Sets the time bound; must not be negative. Zero dispatches as soon as possible.
    Options& max_delay(std::chrono::nanoseconds value) & noexcept {
        max_delay_ = value;
        return *this;
    }
    /// @brief Rvalue overload, so that `auto o = Options{}.max_delay(...)` moves.
    Options&& max_delay(std::chrono::nanoseconds value) && noexcept {
        max_delay_ = value;
        return std::move(*this);
    }

    /**
     * @brief The bound on items accepted but not yet completed (queued, filling or processing).
     *
     * 0 (the default) means 4 x max_batch_size. Storage is reserved in whole batches: the
     * batcher allocates ceil(capacity / max_batch_size) batch buffers of max_batch_size slots
     * up front and never allocates more, so memory stays bounded by that rounded-up figure.
     * When every buffer is in use, blocking submits wait and `try_submit` reports `full`.
     */
    std::size_t capacity() const noexcept { return capacity_; }
    /// @brief Sets the capacity; must be 0 (automatic) or at least max_batch_size.
    Options& capacity(std::size_t value) & noexcept {
        capacity_ = value;
        return *this;
    }
    /// @brief Rvalue overload, so that `auto o = Options{}.capacity(...)` moves.
    Options&& capacity(std::size_t value) && noexcept {
        capacity_ = value;
        return std::move(*this);
    }

    /// @brief Threads of the pool the batcher owns (used only when no executor is set).
    std::size_t workers() const noexcept { return workers_; }
    /// @brief Sets the owned pool's size; must be >= 1 unless an executor is set.
    Options& workers(std::size_t value) & noexcept {
        workers_ = value;
        return *this;
    }
    /// @brief Rvalue overload, so that `auto o = Options{}.workers(...)` moves.
    Options&& workers(std::size_t value) && noexcept {
        workers_ = value;
        return std::move(*this);
    }

    /// @brief The external executor batches run on; empty means "use an owned pool".
    const Executor& executor() const noexcept { return executor_; }
    /// @brief Runs batches on @p value (shared pools, the application's own pool).
    Options& executor(Executor value) & {
        executor_ = std::move(value);
        return *this;
    }
    /// @brief Rvalue overload, so that `auto o = Options{}.executor(...)` moves.
    Options&& executor(Executor value) && {
        executor_ = std::move(value);
        return std::move(*this);
    }

    /// @brief The capacity actually used: `capacity()`, or 4 x max_batch_size when it is 0.
    std::size_t effective_capacity() const noexcept {
        return capacity_ != 0 ? capacity_ : 4 * max_batch_size_;
    }

    /**
     * @brief Throws `std::invalid_argument` naming the first invalid option and its value.
     *
     * Checks: max_batch_size in [1, max_supported_batch_size]; max_delay >= 0; capacity 0 or
     * >= max_batch_size; workers >= 1 when no executor is set.
     */
    void validate() const {
        if (max_batch_size_ == 0 || max_batch_size_ > max_supported_batch_size) {
            fail("max_batch_size must be in [1, " + std::to_string(max_supported_batch_size) +
                 "] (got " + std::to_string(max_batch_size_) + ")");
        }
        if (max_delay_.count() < 0) {
            fail("max_delay must not be negative (got " + std::to_string(max_delay_.count()) +
                 "ns)");
        }
        if (capacity_ != 0 && capacity_ < max_batch_size_) {
            fail("capacity must be 0 (automatic) or >= max_batch_size " +
                 std::to_string(max_batch_size_) + " (got " + std::to_string(capacity_) + ")");
        }
        if (!executor_ && workers_ == 0) {
            fail("workers must be >= 1 when no executor is set (got 0)");
        }
    }

private:
    [[noreturn]] static void fail(const std::string& message) {
        MICROBATCH_THROW(std::invalid_argument("microbatch::Options: " + message));
    }

    std::size_t max_batch_size_ = 64;
    std::chrono::nanoseconds max_delay_ = std::chrono::milliseconds(1);
    std::size_t capacity_ = 0;
    std::size_t workers_ = 1;
    Executor executor_;
};

}  // namespace microbatch
