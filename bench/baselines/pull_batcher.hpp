#pragma once
/**
 * @file baselines/pull_batcher.hpp
 * @brief Baseline for bench_load: a Triton-style *pull* batcher. Items wait in one
 *        mutex-protected queue; a worker that becomes free takes up to B of them, first waiting
 *        for the queue to hold B items, but never longer than max_delay after the oldest waiting
 *        item arrived (max_delay 0: it takes what is there at once). Nothing is dispatched while
 *        every worker is busy, so batches grow under load.
 *
 * One worker at a time "forms" a batch (waits for it to fill); the others wait for their turn,
 * so two free workers never split one forming batch. The waiting rule is a template parameter:
 * `FixedDelay` (this file) is Triton's; baselines/cork_batcher.hpp plugs in BentoML's CORK rule.
 * Per-item completion: `submit(item)` returns a `std::future<void>`, or `submit(item, done)` /
 * `try_submit(item, done)` call `done()` on the worker after the item's batch ran.
 */

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace microbatch_bench {

/// @brief Configuration of `PullBatcher`.
struct PullBatcherOptions {
    std::size_t max_batch_size = 32;              ///< B (>= 1)
    std::chrono::nanoseconds max_delay{1000000};  ///< longest wait, from the oldest item
    std::size_t workers = 1;                      ///< W (>= 1)
    std::size_t capacity = 0;                     ///< queued + running items; 0 = 4 B
};

/// @brief Triton's rule: wait for a full batch until max_delay (no earlier release).
struct FixedDelay {
    static constexpr bool reevaluate_on_arrival = false;  ///< only "full" matters on arrival
    using TimePoint = std::chrono::steady_clock::time_point;
    /// When to take the forming batch of @p n items (besides full / max_delay): never.
    TimePoint take_at(std::size_t /*n*/, TimePoint /*newest*/) const { return TimePoint::max(); }
    void arrived(TimePoint /*now*/) {}
    void finished(std::size_t /*n*/, std::chrono::nanoseconds /*wait*/,
                  std::chrono::nanoseconds /*duration*/) {}
};

/**
 * @brief W workers pulling batches of up to B items from one queue (see the file comment).
 * @tparam T the item type (movable). @tparam Rule the early-release rule (`FixedDelay`).
 *
 * Thread safety: every member may be called from any thread; `close()` not from `process`.
 */
template <class T, class Rule = FixedDelay>
class PullBatcher {
public:
    using Clock = std::chrono::steady_clock;
    using Process = std::function<void(std::vector<T>&)>;
    using Done = std::function<void()>;

    PullBatcher(PullBatcherOptions options, Process process, Rule rule = Rule{})
        : batch_size_(std::max<std::size_t>(1, options.max_batch_size)),
          max_delay_(options.max_delay),
          capacity_(options.capacity != 0 ? options.capacity : 4 * batch_size_),
          process_(std::move(process)),
          rule_(std::move(rule)) {
        for (std::size_t i = 0; i < std::max<std::size_t>(1, options.workers); ++i) {
            threads_.emplace_back([this] { work(); });
        }
    }
    PullBatcher(const PullBatcher&) = delete;
    PullBatcher& operator=(const PullBatcher&) = delete;
    ~PullBatcher() { close(); }

    /// @brief Blocks while `capacity` items are queued or running; `done()` runs after the batch.
    void submit(T item, Done done) { enqueue(std::move(item), std::move(done), true); }
    /// @brief Like `submit(item, done)` but returns false at once when full.
    bool try_submit(T item, Done done) { return enqueue(std::move(item), std::move(done), false); }
    /// @brief Blocking submit; the future becomes ready after the item's batch ran.
    std::future<void> submit(T item) {
        auto promise = std::make_shared<std::promise<void>>();
        std::future<void> future = promise->get_future();
        submit(std::move(item), [promise] { promise->set_value(); });
        return future;
    }

    /// @brief Processes every accepted item, then joins the workers. Idempotent.
    void close() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            closed_ = true;
        }
        idle_.notify_all();
        fill_.notify_all();
        space_.notify_all();
        for (std::thread& thread : threads_) {
            if (thread.joinable()) {
                thread.join();
            }
        }
    }

private:
    struct Entry {
        T item;
        Done done;
        Clock::time_point arrival;
    };

    bool enqueue(T item, Done done, bool block) {
        std::unique_lock<std::mutex> lock(mutex_);
        if (block) {
            space_.wait(lock, [this] { return in_flight_ < capacity_ || closed_; });
        }
        if (closed_ || in_flight_ >= capacity_) {
            return false;
        }
        const Clock::time_point now = Clock::now();
        rule_.arrived(now);
        queue_.push_back(Entry{std::move(item), std::move(done), now});
        ++in_flight_;
        const bool wake_former =
            forming_ && (Rule::reevaluate_on_arrival || queue_.size() >= batch_size_);
        const bool wake_idle = !forming_ && queue_.size() == 1;
        lock.unlock();
        if (wake_former) {
            fill_.notify_one();
        } else if (wake_idle) {
            idle_.notify_one();
        }
        return true;
    }

    void work() {
        std::vector<Entry> batch;
        std::vector<T> items;
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            idle_.wait(lock, [this] { return closed_ || (!forming_ && !queue_.empty()); });
            if (queue_.empty() || forming_) {
                if (closed_ && queue_.empty()) {
                    return;
                }
                continue;
            }
            forming_ = true;  // this worker waits for the batch to fill; others wait their turn
            while (queue_.size() < batch_size_ && !closed_) {
                const Clock::time_point at =
                    std::min(queue_.front().arrival + max_delay_,
                             rule_.take_at(queue_.size(), queue_.back().arrival));
                if (Clock::now() >= at) {
                    break;
                }
                fill_.wait_until(lock, at);
            }
            const std::size_t n = std::min(batch_size_, queue_.size());
            const Clock::time_point oldest = queue_.front().arrival;
            for (std::size_t i = 0; i < n; ++i) {
                batch.push_back(std::move(queue_.front()));
                queue_.pop_front();
            }
            forming_ = false;
            const bool more = !queue_.empty();
            lock.unlock();
            if (more) {
                idle_.notify_one();
            }
            for (Entry& entry : batch) {
                items.push_back(std::move(entry.item));
            }
            const Clock::time_point start = Clock::now();
            process_(items);
            const Clock::time_point end = Clock::now();
            for (Entry& entry : batch) {
                if (entry.done) {
                    entry.done();
                }
            }
            batch.clear();
            items.clear();
            lock.lock();
            in_flight_ -= n;
            rule_.finished(n, start - oldest, end - start);
            space_.notify_all();
        }
    }

    const std::size_t batch_size_;
    const std::chrono::nanoseconds max_delay_;
    const std::size_t capacity_;
    Process process_;
    std::mutex mutex_;               // guards everything below except threads_
    std::condition_variable idle_;   // workers waiting for their turn to form a batch
    std::condition_variable fill_;   // the forming worker
    std::condition_variable space_;  // producers blocked at capacity
    std::deque<Entry> queue_;
    Rule rule_;
    std::size_t in_flight_ = 0;
    bool forming_ = false;
    bool closed_ = false;
    std::vector<std::thread> threads_;  // last: started after everything they use
};

}  // namespace microbatch_bench
