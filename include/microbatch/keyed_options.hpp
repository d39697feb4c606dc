#pragma once
/**
 * @file keyed_options.hpp
 * @brief `microbatch::KeyedOptions`, `microbatch::KeyLimits` and `microbatch::KeyLimitError`:
 *        the configuration of a `KeyedBatcher` and the error it reports beyond its key cap.
 */

#include <chrono>
#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include "microbatch/detail/config.hpp"
#include "microbatch/errors.hpp"
#include "microbatch/executor.hpp"

namespace microbatch {

/**
 * @brief Thrown by a `KeyedBatcher` submit (every form, `try_submit` included) whose key is not
 *        live while `max_keys` keys are, none of them reclaimable. The item is left untouched.
 *
 * The key cap bounds the memory and timer work of a keyed batcher; a key is reclaimable once it
 * has had no pending item for `key_idle_timeout` (see `KeyedOptions::max_keys`).
 */
class KeyLimitError : public Error {
public:
    using Error::Error;
};

/**
 * @brief Run-time configuration of a `KeyedBatcher`: a plain value with fluent setters, like
 *        `Options` (each option has a getter and a setter returning `*this`).
 *
 * | option             | default | meaning                                             |
 * |--------------------|---------|-----------------------------------------------------|
 * | `max_batch_size`   | 64      | a key's batch is sealed when it holds this many     |
 * | `max_delay`        | 1 ms    | ...or when its oldest item has waited this long     |
 * | `max_batch_cost`   | 0: none | ...or at this total item cost (needs `cost_by`)     |
 * | `capacity`         | 0: auto | items accepted and not finished (all keys)          |
 * | `max_pending_cost` | 0: none | total cost of those items (needs `cost_by`)         |
 * | `max_keys`         | 1024    | keys live at once                                   |
 * | `key_idle_timeout` | 1 s     | a key with nothing pending this long is reclaimed   |
 * | `workers`          | 1       | threads of the owned pool (unused with `executor`)  |
 * | `executor`         | none    | run batches on this executor, not an owned pool     |
 * | `max_in_flight`    | 0: auto | batches running at once (all keys)                  |
 *
 * Automatic values: `capacity` max(65,536, 4 x max_batch_size); `max_in_flight` the owned
 * pool's `workers`, or the hardware threads with an `executor`. The cost options weigh items
 * with the cost function passed to the KeyedBatcher constructor (`microbatch::cost_by(f)`);
 * setting one without a cost function makes the constructor throw `std::invalid_argument`.
 *
 * `max_batch_size`, `max_delay` and `max_batch_cost` are the defaults of every key;
 * `KeyedBatcher::set_key_limits` overrides them per key. `validate()` (called by the
 * KeyedBatcher constructor) throws `std::invalid_argument` naming the option and its value.
 *
 * Thread safety: a plain value type; no internal synchronisation.
 */
class KeyedOptions {
public:
    /// Largest batch size supported (the same bound as `Options::max_supported_batch_size`).
    static constexpr std::size_t max_supported_batch_size = std::size_t{1} << 22;
    /// `max_in_flight` value meaning "no limit" (every sealed batch is handed to the executor).
    static constexpr std::size_t unlimited_in_flight = static_cast<std::size_t>(-1);

    /// @brief The default size bound B of every key's batches.
    std::size_t max_batch_size() const noexcept { return max_batch_size_; }
    /// @brief Sets the default size bound; must be in [1, max_supported_batch_size].
    KeyedOptions& max_batch_size(std::size_t value) & noexcept {
        max_batch_size_ = value;
        return *this;
    }
    /// @brief Rvalue overload, so that `auto o = KeyedOptions{}.max_batch_size(...)` moves.
    KeyedOptions&& max_batch_size(std::size_t value) && noexcept {
        max_batch_size_ = value;
        return std::move(*this);
    }

    /// @brief The default time bound of every key's batches (`nanoseconds::max()`: none).
    std::chrono::nanoseconds max_delay() const noexcept { return max_delay_; }
    /// @brief Sets the default time bound; must not be negative. Zero: as soon as a worker is free.
    KeyedOptions& max_delay(std::chrono::nanoseconds value) & noexcept {
        max_delay_ = value;
        return *this;
    }
    /// @brief Rvalue overload of max_delay(value).
    KeyedOptions&& max_delay(std::chrono::nanoseconds value) && noexcept {
        max_delay_ = value;
        return std::move(*this);
    }

    /**
     * @brief The default cost bound of every key's batches (0 = none, the default): with a cost
     *        function (`cost_by`), a key's batch is sealed (reason `full`) as soon as the total
     *        cost of its items reaches this bound, and before an item whose cost would take the
     *        total above it (the item then starts the key's next batch). An item whose cost
     *        alone exceeds the bound gets a batch of its own, sealed at once (counted in
     *        `KeyedStats::items_oversized`). Zero-cost items never fill a batch by cost;
     *        `max_batch_size` still applies.
     */
    std::size_t max_batch_cost() const noexcept { return max_batch_cost_; }
    /// @brief Sets the default batch cost bound (0 = none); nonzero needs a cost function.
    KeyedOptions& max_batch_cost(std::size_t value) & noexcept {
        max_batch_cost_ = value;
        return *this;
    }
    /// @brief Rvalue overload of max_batch_cost(value).
    KeyedOptions&& max_batch_cost(std::size_t value) && noexcept {
        max_batch_cost_ = value;
        return std::move(*this);
    }

    /**
     * @brief The bound on the total cost of items accepted and not yet finished, over all keys
     *        (0 = none, the default; like Kafka's `buffer.memory`). A submit whose item would
     *        take the total above it waits like one at `capacity`: blocking submits wait,
     *        `try_submit` reports `full`, `submit_for` waits up to its timeout; waiters are
     *        admitted in arrival order, so a heavy item is not starved by lighter ones behind
     *        it. An item whose cost alone exceeds the bound could never be admitted: every
     *        submit form throws `CostLimitError` (item untouched). Nonzero needs a cost function.
     */
    std::size_t max_pending_cost() const noexcept { return max_pending_cost_; }
    /// @brief Sets the pending cost bound (0 = none); nonzero needs a cost function.
    KeyedOptions& max_pending_cost(std::size_t value) & noexcept {
        max_pending_cost_ = value;
        return *this;
    }
    /// @brief Rvalue overload of max_pending_cost(value).
    KeyedOptions&& max_pending_cost(std::size_t value) && noexcept {
        max_pending_cost_ = value;
        return std::move(*this);
    }

    /**
     * @brief The bound on items accepted and not yet finished, over all keys (0 = automatic:
     *        max(65,536, 4 x max_batch_size)). At the bound, blocking submits wait, `try_submit`
     *        reports `full` and `submit_for` waits up to its timeout.
     */
    std::size_t capacity() const noexcept { return capacity_; }
    /// @brief Sets the capacity; must be 0 (automatic) or at least max_batch_size.
    KeyedOptions& capacity(std::size_t value) & noexcept {
        capacity_ = value;
        return *this;
    }
    /// @brief Rvalue overload of capacity(value).
    KeyedOptions&& capacity(std::size_t value) && noexcept {
        capacity_ = value;
        return std::move(*this);
    }

    /**
     * @brief The most keys live at once. A key becomes live with its first accepted item and
     *        stays live until it is reclaimed: `key_idle_timeout` after it last had nothing
     *        pending (no item in a batch being filled, waiting or running). A submit for a new
     *        key while `max_keys` are live first reclaims keys whose idle time has passed; if
     *        none can be, it throws `KeyLimitError`. Must be >= 1.
     */
    std::size_t max_keys() const noexcept { return max_keys_; }
    /// @brief Sets the key cap; must be >= 1.
    KeyedOptions& max_keys(std::size_t value) & noexcept {
        max_keys_ = value;
        return *this;
    }
    /// @brief Rvalue overload of max_keys(value).
    KeyedOptions&& max_keys(std::size_t value) && noexcept {
        max_keys_ = value;
        return std::move(*this);
    }

    /// @brief How long a key must have had nothing pending before it is reclaimed (its state
    ///        and per-key stats dropped, by the timer thread or by a submit at the key cap).
    ///        Zero reclaims a key as soon as it is idle; `nanoseconds::max()` never does (then
    ///        `max_keys` bounds the distinct keys ever submitted).
    std::chrono::nanoseconds key_idle_timeout() const noexcept { return key_idle_timeout_; }
    /// @brief Sets the idle timeout; must not be negative.
    KeyedOptions& key_idle_timeout(std::chrono::nanoseconds value) & noexcept {
        key_idle_timeout_ = value;
        return *this;
    }
    /// @brief Rvalue overload of key_idle_timeout(value).
    KeyedOptions&& key_idle_timeout(std::chrono::nanoseconds value) && noexcept {
        key_idle_timeout_ = value;
        return std::move(*this);
    }

    /// @brief Threads of the pool the batcher owns (used only when no executor is set).
    std::size_t workers() const noexcept { return workers_; }
    /// @brief Sets the owned pool's size; must be >= 1 unless an executor is set.
    KeyedOptions& workers(std::size_t value) & noexcept {
        workers_ = value;
        return *this;
    }
    /// @brief Rvalue overload of workers(value).
    KeyedOptions&& workers(std::size_t value) && noexcept {
        workers_ = value;
        return std::move(*this);
    }

    /// @brief The external executor batches run on; empty means "use an owned pool".
    const Executor& executor() const noexcept { return executor_; }
    /// @brief Runs batches on @p value (a shared pool, the application's own pool).
    KeyedOptions& executor(Executor value) & {
        executor_ = std::move(value);
        return *this;
    }
    /// @brief Rvalue overload of executor(value).
    KeyedOptions&& executor(Executor value) && {
        executor_ = std::move(value);
        return std::move(*this);
    }

    /**
     * @brief The most batches running at once over all keys (0 = automatic: `workers`, or the
     *        hardware threads with an executor). Sealed batches beyond it wait in their key's
     *        queue and are handed out round-robin between keys as batches finish; a key's batch
     *        that reached its time bound meanwhile keeps growing until its turn.
     *        `unlimited_in_flight`: every sealed batch goes to the executor at once.
     */
    std::size_t max_in_flight() const noexcept { return max_in_flight_; }
    /// @brief Sets the in-flight limit (0 = automatic, `unlimited_in_flight` = none).
    KeyedOptions& max_in_flight(std::size_t value) & noexcept {
        max_in_flight_ = value;
        return *this;
    }
    /// @brief Rvalue overload of max_in_flight(value).
    KeyedOptions&& max_in_flight(std::size_t value) && noexcept {
        max_in_flight_ = value;
        return std::move(*this);
    }

    /// @brief The capacity used: `capacity()`, or max(65,536, 4 x max_batch_size) when 0.
    std::size_t effective_capacity() const noexcept {
        if (capacity_ != 0) {
            return capacity_;
        }
        const std::size_t four_batches = 4 * max_batch_size_;
        return four_batches > 65536 ? four_batches : 65536;
    }

    /// @brief The in-flight limit used: `max_in_flight()`, or when 0 the owned pool's workers
    ///        (no executor) or the hardware threads (executor), at least 1.
    std::size_t effective_max_in_flight() const noexcept {
        if (max_in_flight_ != 0) {
            return max_in_flight_;
        }
        if (!executor_) {
            return workers_ == 0 ? 1 : workers_;
        }
        const unsigned hardware = std::thread::hardware_concurrency();
        return hardware == 0 ? 1 : hardware;
    }

    /**
     * @brief Throws `std::invalid_argument` naming the first invalid option and its value.
     *
     * Checks: max_batch_size in [1, max_supported_batch_size]; max_delay >= 0; capacity 0 or
     * >= max_batch_size; max_keys >= 1; key_idle_timeout >= 0; workers >= 1 without executor.
     * The cost bounds take any value; that a nonzero one has a cost function to go with it is
     * checked by the KeyedBatcher constructor (the options cannot know).
     */
    void validate() const {
        check_batch_size("max_batch_size", max_batch_size_);
        check_delay("max_delay", max_delay_);
        if (capacity_ != 0 && capacity_ < max_batch_size_) {
            fail("capacity must be 0 (automatic) or >= max_batch_size " +
                 std::to_string(max_batch_size_) + " (got " + std::to_string(capacity_) + ")");
        }
        if (max_keys_ == 0) {
            fail("max_keys must be >= 1 (got 0)");
        }
        check_delay("key_idle_timeout", key_idle_timeout_);
        if (!executor_ && workers_ == 0) {
            fail("workers must be >= 1 when no executor is set (got 0)");
        }
    }

    /// @brief Throws `std::invalid_argument` unless @p value is a valid batch size bound
    ///        (in [1, max_supported_batch_size]); @p option names it in the message.
    static void check_batch_size(const char* option, std::size_t value) {
        if (value == 0 || value > max_supported_batch_size) {
            fail(std::string(option) + " must be in [1, " +
                 std::to_string(max_supported_batch_size) + "] (got " + std::to_string(value) +
                 ")");
        }
    }

    /// @brief Throws `std::invalid_argument` if @p value is negative; @p option names it.
    static void check_delay(const char* option, std::chrono::nanoseconds value) {
        if (value.count() < 0) {
            fail(std::string(option) + " must not be negative (got " +
                 std::to_string(value.count()) + "ns)");
        }
    }

private:
    [[noreturn]] static void fail(const std::string& message) {
        MICROBATCH_THROW(std::invalid_argument("microbatch::KeyedOptions: " + message));
    }

    std::size_t max_batch_size_ = 64;
    std::chrono::nanoseconds max_delay_ = std::chrono::milliseconds(1);
    std::size_t max_batch_cost_ = 0;
    std::size_t max_pending_cost_ = 0;
    std::size_t capacity_ = 0;
    std::size_t max_keys_ = 1024;
    std::chrono::nanoseconds key_idle_timeout_ = std::chrono::seconds(1);
    std::size_t workers_ = 1;
    std::size_t max_in_flight_ = 0;
    Executor executor_;
};

/**
 * @brief Per-key bounds that override the `KeyedOptions` defaults for one key
 *        (`KeyedBatcher::set_key_limits`). An empty field keeps the default.
 *
 * Thread safety: a plain value type.
 */
struct KeyLimits {
    /// The key's size bound, in [1, max_supported_batch_size] and <= the capacity.
    std::optional<std::size_t> max_batch_size;
    /// The key's time bound (>= 0; `nanoseconds::max()`: none).
    std::optional<std::chrono::nanoseconds> max_delay;
    /// The key's batch cost bound (0: none; nonzero needs a cost function, see
    /// `KeyedOptions::max_batch_cost`).
    /// (Initialised explicitly, so that `KeyLimits{size, delay}` stays warning-free.)
    std::optional<std::size_t> max_batch_cost{};
};

}  // namespace microbatch
