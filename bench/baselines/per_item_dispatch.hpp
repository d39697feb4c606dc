#pragma once
/**
 * @file baselines/per_item_dispatch.hpp
 * @brief Baseline 2: no batching at all. Every item becomes its own task on a thread pool.
 *
 * This is what code looks like before anyone batches: `pool.post([item] { handle(item); })`.
 * It pays one task (a `std::function`, usually an allocation, and a queue push and pop under
 * the pool's lock) per item.
 */

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace microbatch_bench {

/**
 * @brief A minimal thread pool: W threads taking `std::function<void()>` tasks from one
 *        mutex + condition-variable queue.
 *
 * Tasks must not throw (an escaping exception terminates, as with a plain std::thread).
 *
 * Thread safety: `post` may be called concurrently from any thread (not after `close`);
 * `close` from one thread, not from a task.
 */
class SimpleThreadPool {
public:
    /// @brief Starts @p threads workers. @throws std::invalid_argument if threads is 0.
    explicit SimpleThreadPool(std::size_t threads) {
        if (threads == 0) {
            throw std::invalid_argument("SimpleThreadPool: threads must be >= 1 (got 0)");
        }
        threads_.reserve(threads);
        try {
            for (std::size_t i = 0; i < threads; ++i) {
                threads_.emplace_back([this] { work(); });
            }
        } catch (...) {
            close();
            throw;
        }
    }

    SimpleThreadPool(const SimpleThreadPool&) = delete;
    SimpleThreadPool& operator=(const SimpleThreadPool&) = delete;

    /// @brief Runs the remaining tasks and joins (see `close`).
    ~SimpleThreadPool() { close(); }

    /// @brief Queues @p task to run once on some worker.
    void post(std::function<void()> task) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            tasks_.push_back(std::move(task));
        }
        ready_.notify_one();
    }

    /// @brief An executor callable, `void(std::function<void()>)`, posting to this pool.
    auto executor() noexcept {
        return [this](std::function<void()> task) { post(std::move(task)); };
    }

    /// @brief Runs every queued task, then joins the workers. Idempotent.
    void close() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            closing_ = true;
        }
        ready_.notify_all();
        for (std::thread& thread : threads_) {
            if (thread.joinable()) {
                thread.join();
            }
        }
    }

private:
    void work() {
        for (;;) {
            std::function<void()> task;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                ready_.wait(lock, [this] { return !tasks_.empty() || closing_; });
                if (tasks_.empty()) {
                    return;  // closing and drained
                }
                task = std::move(tasks_.front());
                tasks_.pop_front();
            }
            task();
        }
    }

    std::mutex mutex_;
    std::condition_variable ready_;
    std::deque<std::function<void()>> tasks_;
    bool closing_ = false;
    std::vector<std::thread> threads_;
};

/**
 * @brief Baseline 2: posts each submitted item as its own task to an executor.
 *
 * The executor is any callable `void(std::function<void()>)`: `SimpleThreadPool::executor()`,
 * or a lambda posting into microbatch's `ThreadPool`. `wait_idle()` waits until every item
 * submitted so far has been processed and rethrows the first exception `process` threw.
 *
 * Completion is tracked with one atomic counter that a task decrements as its very last access
 * to the dispatcher, and `wait_idle` polls it (yielding, then sleeping briefly). A condition
 * variable would need each task to lock a mutex after its decrement, which is either a second
 * lock per item or a use-after-free race with the destructor; polling keeps the per-item cost
 * at its minimum, so the baseline is not handicapped.
 *
 * @tparam T The item type (copy-constructible: `std::function` requires copyable tasks).
 * @tparam Executor `void(std::function<void()>)`.
 *
 * Thread safety: `submit` may be called concurrently from any thread; `wait_idle` from any
 * thread but not from inside `process`. The executor must outlive the dispatcher's tasks.
 */
template <typename T, typename Executor>
class PerItemDispatcher {
public:
    /// @brief Processes one item.
    using ProcessFunction = std::function<void(T&)>;

    /// @brief Dispatches to @p executor, calling @p process once per item.
    PerItemDispatcher(Executor executor, ProcessFunction process)
        : executor_(std::move(executor)), process_(std::move(process)) {}

    PerItemDispatcher(const PerItemDispatcher&) = delete;
    PerItemDispatcher& operator=(const PerItemDispatcher&) = delete;

    /// @brief Waits for outstanding items (tasks reference this object).
    ~PerItemDispatcher() { wait_for_zero(); }

    /// @brief Posts one task that processes @p item.
    void submit(T item) {
        // relaxed: the executor's queue (its mutex) publishes the increment to the task.
        outstanding_.fetch_add(1, std::memory_order_relaxed);
        try {
            executor_([this, item = std::move(item)]() mutable { run(item); });
        } catch (...) {
            outstanding_.fetch_sub(1, std::memory_order_relaxed);  // the task never existed
            throw;
        }
    }

    /**
     * @brief Blocks until every item submitted before the call has been processed.
     * @throws the first exception thrown by `process` since the last `wait_idle`.
     */
    void wait_idle() {
        wait_for_zero();
        std::exception_ptr error;
        {
            std::lock_guard<std::mutex> lock(error_mutex_);
            error = std::exchange(first_error_, nullptr);
        }
        if (error) {
            std::rethrow_exception(error);
        }
    }

private:
    void run(T& item) {
        try {
            process_(item);
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex_);
            if (!first_error_) {
                first_error_ = std::current_exception();
            }
        }
        // acq_rel: makes the processing (and first_error_) visible to wait_idle's acquire load.
        // This must be the task's last access to *this.
        outstanding_.fetch_sub(1, std::memory_order_acq_rel);
    }

    void wait_for_zero() const {
        for (int spins = 0; outstanding_.load(std::memory_order_acquire) != 0; ++spins) {
            if (spins < 1000) {
                std::this_thread::yield();
            } else {
                std::this_thread::sleep_for(std::chrono::microseconds(50));
            }
        }
    }

    Executor executor_;
    ProcessFunction process_;
    std::atomic<std::size_t> outstanding_{0};
    std::mutex error_mutex_;
    std::exception_ptr first_error_;
};

}  // namespace microbatch_bench
