#pragma once
/**
 * @file clock.hpp
 * @brief The clocks a Batcher can measure `max_delay` with: the real steady clock and a
 *        manual clock that tests advance by hand.
 *
 * A Clock type used as `Batcher<T, R, Clock>` provides `duration`, `time_point`,
 * `time_point now() const`, and a nested `Sleeper` that the batcher's timer thread sleeps on:
 * `Sleeper(const Clock&, std::mutex&, std::condition_variable&)`,
 * `sleep(std::unique_lock<std::mutex>&)` (until notified),
 * `sleep_until(std::unique_lock<std::mutex>&, time_point)` (until notified or the deadline) and
 * `retire()` (the timer has stopped). Sleeps may end spuriously; the timer re-checks.
 */

#include "microbatch/version.hpp"  // the C++17 check

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace microbatch {

/**
 * @brief The default clock: `std::chrono::steady_clock`, with a timer that sleeps on a
 *        condition variable until the next deadline or new work (it never polls).
 *
 * Thread-safe: stateless.
 */
class SteadyClock {
public:
    using rep = std::chrono::steady_clock::rep;                ///< Tick count type.
    using period = std::chrono::steady_clock::period;          ///< Tick length.
    using duration = std::chrono::steady_clock::duration;      ///< Time interval type.
    using time_point = std::chrono::steady_clock::time_point;  ///< Point in time type.
    static constexpr bool is_steady = true;                    ///< Never goes backwards.

    /// @brief The current time of `std::chrono::steady_clock`.
    time_point now() const noexcept { return std::chrono::steady_clock::now(); }

    /// @brief How the batcher's timer sleeps: plain condition-variable waits.
    class Sleeper {
    public:
        /// @brief A sleeper that waits on @p condition (the batcher's timer mutex and condition).
        Sleeper(const SteadyClock&, std::mutex&, std::condition_variable& condition) noexcept
            : condition_(condition) {}
        /// Sleeps until notified (or spuriously woken).
        void sleep(std::unique_lock<std::mutex>& lock) { condition_.wait(lock); }
        /// Sleeps until notified or @p deadline.
        void sleep_until(std::unique_lock<std::mutex>& lock, time_point deadline) {
            condition_.wait_until(lock, deadline);
        }
        /// The timer has stopped; nothing to do for the real clock.
        void retire() noexcept {}

    private:
        std::condition_variable& condition_;
    };
};

/**
 * @brief A clock that only moves when `advance()` is called: deterministic tests of
 *        deadline behaviour without sleeping.
 *
 * Copies share one time line (the clock is a handle to shared state), so a test keeps a copy and
 * gives another to the batcher. `advance(d)` is synchronous: when it returns, every batcher timer
 * using this clock has seen the new time and dispatched every batch whose deadline passed (the
 * dispatch is queued on the executor; the batch may still be running).
 *
 * @code
 * microbatch::ManualClock clock;
 * microbatch::Batcher<int, int, microbatch::ManualClock> batcher(opts, fn, clock);
 * auto handle = batcher.submit(1);
 * clock.advance(opts.max_delay());   // the partial batch is dispatched now, reason deadline
 * @endcode
 *
 * Thread-safe: `now()` and `advance()` may be called from any thread. Time starts at zero.
 */
class ManualClock {
public:
    using rep = std::int64_t;                                           ///< Tick count type.
    using period = std::nano;                                           ///< Ticks are nanoseconds.
    using duration = std::chrono::nanoseconds;                          ///< Time interval type.
    using time_point = std::chrono::time_point<ManualClock, duration>;  ///< Point in time type.
    static constexpr bool is_steady = true;  ///< Never goes backwards (only advance() moves it).

private:
    struct Record {
        std::mutex* mutex = nullptr;
        std::condition_variable* condition = nullptr;
        std::atomic<rep> settled{std::numeric_limits<rep>::min()};
    };
    struct State {
        std::atomic<rep> now{0};
        std::mutex registry_mutex;
        std::vector<Record*> sleepers;
    };

public:
    ManualClock() : state_(std::make_shared<State>()) {}

    /// @brief The current manual time (starts at zero).
    time_point now() const noexcept {
        // acquire: pairs with advance()'s release so readers see the time it published.
        return time_point(duration(state_->now.load(std::memory_order_acquire)));
    }

    /**
     * @brief Moves time forward by @p step (negative steps are ignored) and waits until every
     *        timer sleeping on this clock has re-evaluated its deadlines at the new time.
     *
     * Blocks for as long as a timer takes to react (microseconds); never call it from a thread
     * such a timer may be waiting for (e.g. inside a batch that an inline executor runs on the
     * timer thread).
     */
    void advance(duration step) {
        if (step.count() <= 0) {
            return;
        }
        // release: publishes the new time to now() readers.
        const rep target =
            state_->now.fetch_add(step.count(), std::memory_order_acq_rel) + step.count();
        std::lock_guard<std::mutex> registry(state_->registry_mutex);
        for (Record* record : state_->sleepers) {
            // Taking the sleeper's mutex orders this notify after it either re-read the time
            // or started sleeping, so the wake-up cannot fall between the two.
            { std::lock_guard<std::mutex> lock(*record->mutex); }
            record->condition->notify_all();
        }
        for (Record* record : state_->sleepers) {
            // acquire: pairs with the sleeper's release of the time it settled at.
            while (record->settled.load(std::memory_order_acquire) < target) {
                std::this_thread::yield();
            }
        }
    }

    /// @brief How a batcher's timer sleeps on a manual clock: until advance() or a notify.
    class Sleeper {
    public:
        /// @brief Registers with @p clock, so advance() wakes the timer waiting on @p condition.
        Sleeper(const ManualClock& clock, std::mutex& mutex, std::condition_variable& condition)
            : state_(clock.state_) {
            record_.mutex = &mutex;
            record_.condition = &condition;
            std::lock_guard<std::mutex> registry(state_->registry_mutex);
            state_->sleepers.push_back(&record_);
        }
        Sleeper(const Sleeper&) = delete;
        Sleeper& operator=(const Sleeper&) = delete;
        ~Sleeper() {
            std::lock_guard<std::mutex> registry(state_->registry_mutex);
            auto& sleepers = state_->sleepers;
            sleepers.erase(std::remove(sleepers.begin(), sleepers.end(), &record_), sleepers.end());
        }

        /// Sleeps until notified; tells advance() that nothing is due at the current time.
        void sleep(std::unique_lock<std::mutex>& lock) {
            wait(lock, state_->now.load(std::memory_order_acquire));
        }
        /// Returns at once if @p deadline has passed, else sleeps like sleep().
        void sleep_until(std::unique_lock<std::mutex>& lock, time_point deadline) {
            // acquire: pairs with advance()'s release of the new time.
            const rep now = state_->now.load(std::memory_order_acquire);
            if (now >= deadline.time_since_epoch().count()) {
                return;
            }
            wait(lock, now);
        }
        /// The timer has stopped for good: advance() must no longer wait for it.
        void retire() noexcept {
            // release: advance() only compares the value; no data hangs on it.
            record_.settled.store(std::numeric_limits<rep>::max(), std::memory_order_release);
        }

    private:
        // Called with the timer's mutex held: nothing is due at time @p now (the time the
        // decision was made with), so advance() to @p now may return. release: advance() reads
        // it with acquire.
        void wait(std::unique_lock<std::mutex>& lock, rep now) {
            record_.settled.store(now, std::memory_order_release);
            record_.condition->wait(lock);
        }

        std::shared_ptr<State> state_;
        Record record_;
    };

private:
    std::shared_ptr<State> state_;
};

}  // namespace microbatch
