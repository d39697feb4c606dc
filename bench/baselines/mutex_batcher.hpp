#pragma once
/**
 * @file baselines/mutex_batcher.hpp
 * @brief Baselines 1 and 5: the batcher people write by hand (one mutex, two condition
 *        variables, a vector buffer, a dispatcher thread and a small worker pool), and the same
 *        batcher returning a `std::future` per item.
 *
 * Written to be a fair opponent, not a straw man: the buffer is swapped out in O(1) under the
 * lock, allocation happens outside it, only full batches leave before their deadline, and
 * in-flight items are bounded so memory stays bounded.
 */

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <iterator>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace microbatch_bench {

/**
 * @brief Configuration of `MutexBatcher` (same meanings as `microbatch::Options`).
 */
struct MutexBatcherOptions {
    /// @brief B: a batch is dispatched as soon as it holds this many items (>= 1).
    std::size_t max_batch_size = 64;
    /// @brief A partial batch is dispatched once its oldest item has waited this long.
    /// `std::chrono::nanoseconds::max()` disables the time bound.
    std::chrono::nanoseconds max_delay = std::chrono::milliseconds(1);
    /// @brief Items accepted but not yet processed; `submit` blocks at this bound.
    /// 0 means 4 x max_batch_size.
    std::size_t capacity = 0;
    /// @brief W: threads processing batches (>= 1).
    std::size_t workers = 1;
};

namespace detail {

/**
 * @brief W threads taking batches from one mutex-protected queue: the worker pool of a
 *        hand-written batcher.
 *
 * Thread-safe: `post` may be called from any thread; `close` from one thread.
 */
template <typename Batch>
class BatchWorkerPool {
public:
    /// @brief Starts @p workers threads that call @p run on each posted batch.
    BatchWorkerPool(std::size_t workers, std::function<void(Batch&)> run) : run_(std::move(run)) {
        threads_.reserve(workers);
        try {
            for (std::size_t i = 0; i < workers; ++i) {
                threads_.emplace_back([this] { work(); });
            }
        } catch (...) {
            close();
            throw;
        }
    }

    BatchWorkerPool(const BatchWorkerPool&) = delete;
    BatchWorkerPool& operator=(const BatchWorkerPool&) = delete;
    ~BatchWorkerPool() { close(); }

    /// @brief Queues @p batch for the next free worker.
    void post(Batch batch) {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            queue_.push_back(std::move(batch));
        }
        ready_.notify_one();
    }

    /// @brief Runs every queued batch, then joins the threads. Idempotent.
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
            Batch batch;
            {
                std::unique_lock<std::mutex> lock(mutex_);
                ready_.wait(lock, [this] { return !queue_.empty() || closing_; });
                if (queue_.empty()) {
                    return;  // closing and drained
                }
                batch = std::move(queue_.front());
                queue_.pop_front();
            }
            run_(batch);
        }
    }

    std::function<void(Batch&)> run_;
    std::mutex mutex_;
    std::condition_variable ready_;
    std::deque<Batch> queue_;
    bool closing_ = false;
    std::vector<std::thread> threads_;
};

}  // namespace detail

/**
 * @brief Baseline 1: the typical hand-written batcher.
 *
 * Producers `submit` under one mutex into a `std::vector` buffer. A dispatcher thread waits
 * until the buffer holds B items or its oldest item is `max_delay` old, swaps the buffer out,
 * and posts it, cut into batches of at most B items, to a pool of W worker threads that call
 * `process(std::vector<T>&)`. Under backlog only whole batches leave early: a partial remainder
 * stays in the buffer (keeping its original deadline, so no item ever waits longer than
 * max_delay for dispatch). At most `capacity` items are in flight (buffered, queued or being
 * processed); `submit` blocks at that bound.
 *
 * The first exception thrown by `process` is rethrown by `close()`; later ones are dropped.
 *
 * @tparam T The item type (movable).
 *
 * Thread safety: `submit` may be called concurrently from any thread; `close` from one thread
 * (not from inside `process`).
 */
template <typename T>
class MutexBatcher {
public:
    /// @brief Processes one batch (1 to B items, in submission order per producer).
    using ProcessFunction = std::function<void(std::vector<T>&)>;

    /**
     * @brief Starts the dispatcher and the W workers.
     * @throws std::invalid_argument if max_batch_size or workers is 0, or capacity is nonzero
     *         and below max_batch_size.
     */
    MutexBatcher(MutexBatcherOptions options, ProcessFunction process)
        : batch_size_(options.max_batch_size),
          max_delay_(options.max_delay),
          capacity_(options.capacity != 0 ? options.capacity : 4 * options.max_batch_size),
          process_(std::move(process)) {
        if (options.max_batch_size == 0 || options.workers == 0 ||
            (options.capacity != 0 && options.capacity < options.max_batch_size)) {
            throw std::invalid_argument(
                "MutexBatcher: need max_batch_size >= 1, workers >= 1 and capacity 0 or >= "
                "max_batch_size (got max_batch_size " +
                std::to_string(options.max_batch_size) + ", workers " +
                std::to_string(options.workers) + ", capacity " + std::to_string(options.capacity) +
                ")");
        }
        buffer_.reserve(batch_size_);
        pool_ = std::make_unique<detail::BatchWorkerPool<std::vector<T>>>(
            options.workers, [this](std::vector<T>& batch) { run_batch(batch); });
        dispatcher_ = std::thread([this] { dispatch_loop(); });
    }

    MutexBatcher(const MutexBatcher&) = delete;
    MutexBatcher& operator=(const MutexBatcher&) = delete;

    /// @brief Closes (processing everything submitted) unless `close()` was called.
    ~MutexBatcher() {
        try {
            close();
        } catch (...) {  // NOLINT(bugprone-empty-catch): a destructor must not throw
        }
    }

    /**
     * @brief Adds @p item to the current batch, blocking while `capacity` items are in flight.
     * @throws std::runtime_error if the batcher is closed (also when closed while waiting).
     */
    void submit(T item) {
        std::unique_lock<std::mutex> lock(mutex_);
        not_full_.wait(lock, [this] { return in_flight_ < capacity_ || closed_; });
        if (closed_) {
            throw std::runtime_error("MutexBatcher: submit after close");
        }
        if (buffer_.empty()) {
            oldest_ = Clock::now();
        }
        buffer_.push_back(std::move(item));
        ++in_flight_;
        const std::size_t size = buffer_.size();
        lock.unlock();
        // The dispatcher waits for "not empty" (to start the timer) and then for "full".
        if (size == 1 || size == batch_size_) {
            dispatcher_wakeup_.notify_one();
        }
    }

    /**
     * @brief Stops accepting items, processes every accepted one, joins all threads.
     *
     * Idempotent. Rethrows the first exception `process` threw, once.
     */
    void close() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            closed_ = true;
        }
        dispatcher_wakeup_.notify_one();
        not_full_.notify_all();
        if (dispatcher_.joinable()) {
            dispatcher_.join();
        }
        if (pool_) {
            pool_->close();
        }
        std::exception_ptr error;
        {
            std::lock_guard<std::mutex> lock(mutex_);
            error = std::exchange(first_error_, nullptr);
        }
        if (error) {
            std::rethrow_exception(error);
        }
    }

private:
    using Clock = std::chrono::steady_clock;

    void dispatch_loop() {
        const bool timed = max_delay_ < std::chrono::hours(24 * 365);  // else: no time bound
        std::vector<T> fresh;
        fresh.reserve(batch_size_);  // allocated outside the lock, swapped in under it
        std::unique_lock<std::mutex> lock(mutex_);
        for (;;) {
            dispatcher_wakeup_.wait(lock, [this] { return !buffer_.empty() || closed_; });
            if (buffer_.empty()) {
                return;  // closed and flushed
            }
            const auto full_or_closed = [this] { return buffer_.size() >= batch_size_ || closed_; };
            bool deadline_passed = false;
            if (timed) {
                deadline_passed =
                    !dispatcher_wakeup_.wait_until(lock, oldest_ + max_delay_, full_or_closed);
            } else {
                dispatcher_wakeup_.wait(lock, full_or_closed);
            }
            std::vector<T> taken = std::exchange(buffer_, std::move(fresh));
            if (!deadline_passed && !closed_) {
                // Only whole batches leave early; the rest keeps waiting (and its deadline).
                const std::size_t keep = taken.size() % batch_size_;
                const auto first_kept = taken.end() - static_cast<std::ptrdiff_t>(keep);
                buffer_.insert(buffer_.end(), std::make_move_iterator(first_kept),
                               std::make_move_iterator(taken.end()));
                taken.erase(first_kept, taken.end());
            }
            lock.unlock();
            hand_off(std::move(taken));
            fresh = std::vector<T>();
            fresh.reserve(batch_size_);
            lock.lock();
        }
    }

    /// Posts @p items to the pool in batches of at most B (no copy when they form one batch).
    void hand_off(std::vector<T> items) {
        if (items.size() <= batch_size_) {
            pool_->post(std::move(items));
            return;
        }
        for (std::size_t first = 0; first < items.size(); first += batch_size_) {
            const std::size_t last = std::min(items.size(), first + batch_size_);
            pool_->post(std::vector<T>(
                std::make_move_iterator(items.begin() + static_cast<std::ptrdiff_t>(first)),
                std::make_move_iterator(items.begin() + static_cast<std::ptrdiff_t>(last))));
        }
    }

    void run_batch(std::vector<T>& batch) {
        const std::size_t size = batch.size();
        std::exception_ptr error;
        try {
            process_(batch);
        } catch (...) {
            error = std::current_exception();
        }
        {
            std::lock_guard<std::mutex> lock(mutex_);
            in_flight_ -= size;
            if (error && !first_error_) {
                first_error_ = error;
            }
        }
        not_full_.notify_all();  // a batch frees many slots: wake every blocked producer
    }

    const std::size_t batch_size_;
    const std::chrono::nanoseconds max_delay_;
    const std::size_t capacity_;
    ProcessFunction process_;

    std::mutex mutex_;  // guards everything below except the threads
    std::condition_variable dispatcher_wakeup_;
    std::condition_variable not_full_;
    std::vector<T> buffer_;
    Clock::time_point oldest_{};  // arrival of buffer_.front()
    std::size_t in_flight_ = 0;
    bool closed_ = false;
    std::exception_ptr first_error_;

    std::unique_ptr<detail::BatchWorkerPool<std::vector<T>>> pool_;
    std::thread dispatcher_;
};

/**
 * @brief Baseline 5: `MutexBatcher` with a `std::promise` per item, so each caller gets its own
 *        result as a `std::future` (what hand-written batchers do to return per-item results).
 *
 * `process` receives the batch's items and returns one result per item, in order. If it throws,
 * or returns the wrong number of results, every future of the batch receives the exception
 * (a `std::length_error` for a wrong count).
 *
 * @tparam T The item type (movable).  @tparam R The result type (not void).
 *
 * Thread safety: as `MutexBatcher`.
 */
template <typename T, typename R>
class MutexPromiseBatcher {
public:
    /// @brief Processes one batch and returns its results, one per item, in order.
    using ProcessFunction = std::function<std::vector<R>(std::vector<T>&)>;

    /// @brief Starts the batcher. @throws std::invalid_argument as `MutexBatcher`.
    MutexPromiseBatcher(MutexBatcherOptions options, ProcessFunction process)
        : process_(std::move(process)),
          batcher_(options, [this](std::vector<Request>& batch) { run_batch(batch); }) {}

    /**
     * @brief Submits @p item; the future becomes ready when its batch has been processed.
     * @throws std::runtime_error if closed (as `MutexBatcher::submit`).
     */
    std::future<R> submit_with_promise(T item) {
        std::promise<R> promise;
        std::future<R> future = promise.get_future();
        batcher_.submit(Request{std::move(item), std::move(promise)});
        return future;
    }

    /// @brief Processes everything submitted and joins (see `MutexBatcher::close`).
    void close() { batcher_.close(); }

private:
    struct Request {
        T item;
        std::promise<R> promise;
    };

    void run_batch(std::vector<Request>& batch) {
        std::vector<T> items;
        items.reserve(batch.size());
        for (Request& request : batch) {
            items.push_back(std::move(request.item));
        }
        std::vector<R> results;
        try {
            results = process_(items);
            if (results.size() != batch.size()) {
                throw std::length_error("MutexPromiseBatcher: process returned " +
                                        std::to_string(results.size()) + " results for " +
                                        std::to_string(batch.size()) + " items");
            }
        } catch (...) {
            const std::exception_ptr error = std::current_exception();
            for (Request& request : batch) {
                request.promise.set_exception(error);
            }
            return;
        }
        for (std::size_t i = 0; i < batch.size(); ++i) {
            batch[i].promise.set_value(std::move(results[i]));
        }
    }

    ProcessFunction process_;
    MutexBatcher<Request> batcher_;  // last: its threads use process_
};

}  // namespace microbatch_bench
