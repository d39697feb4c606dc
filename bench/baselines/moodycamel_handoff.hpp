#pragma once
/**
 * @file baselines/moodycamel_handoff.hpp
 * @brief Baseline 4: the raw lock-free hand-off floor. Producers enqueue into a
 *        moodycamel::ConcurrentQueue with producer tokens; W consumers `try_dequeue_bulk` up to
 *        B items at a time and process them. No time bound, no capacity bound, no per-item
 *        results: the least any batcher built on a fast MPMC queue can cost.
 *
 * Available when the ConcurrentQueue header is found (Debian: libconcurrentqueue-dev, which
 * installs <concurrentqueue/concurrentqueue.h>; vcpkg and Conan: <concurrentqueue.h> or
 * <concurrentqueue/moodycamel/concurrentqueue.h>). `MICROBATCH_HAVE_CONCURRENTQUEUE` is defined
 * to 1 or 0 accordingly; define it to 0 beforehand to leave the baseline out.
 */

#if !defined(MICROBATCH_HAVE_CONCURRENTQUEUE)
#if __has_include(<concurrentqueue/concurrentqueue.h>) || \
    __has_include(<concurrentqueue/moodycamel/concurrentqueue.h>) || __has_include(<concurrentqueue.h>)
#define MICROBATCH_HAVE_CONCURRENTQUEUE 1
#else
#define MICROBATCH_HAVE_CONCURRENTQUEUE 0
#endif
#endif

#if MICROBATCH_HAVE_CONCURRENTQUEUE
#if __has_include(<concurrentqueue/concurrentqueue.h>)
#include <concurrentqueue/concurrentqueue.h>
#elif __has_include(<concurrentqueue/moodycamel/concurrentqueue.h>)
#include <concurrentqueue/moodycamel/concurrentqueue.h>
#else
#include <concurrentqueue.h>
#endif
#endif

#if MICROBATCH_HAVE_CONCURRENTQUEUE

#include <atomic>
#include <cstddef>
#include <exception>
#include <functional>
#include <iterator>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace microbatch_bench {

/**
 * @brief Baseline 4: producers enqueue items; W consumer threads dequeue up to B at a time.
 *
 * Each producing thread makes its own `Producer` (which holds a moodycamel producer token, the
 * queue's fast path) and calls `submit`. Consumers poll with `try_dequeue_bulk` and a consumer
 * token; when the queue is empty they yield, so idle consumers cost CPU, as such hand-offs
 * usually do. A batch is whatever one dequeue returned (1 to B items): nothing waits for a
 * batch to fill.
 *
 * `close()` must be called after every `submit` has returned: consumers then drain the queue
 * and exit. The first exception `process` threw is rethrown by `close()`.
 *
 * @tparam T The item type (movable).
 *
 * Thread safety: `make_producer` may be called from any thread; a `Producer` is used by one
 * thread at a time; `close` from one thread. Every `Producer` must be destroyed before the
 * handoff.
 */
template <typename T>
class MoodycamelHandoff {
    using Queue = moodycamel::ConcurrentQueue<T>;

public:
    /// @brief Processes one dequeued batch of 1 to B items.
    using ProcessFunction = std::function<void(std::vector<T>&)>;

    /**
     * @brief A producer's handle: its own token into the queue.
     *
     * Thread safety: one thread at a time. Must not outlive its `MoodycamelHandoff`.
     */
    class Producer {
    public:
        /// @brief Enqueues @p item (may allocate a block; never blocks).
        /// @throws std::bad_alloc if the queue cannot allocate.
        void submit(T item) {
            if (!queue_->enqueue(token_, std::move(item))) {
                throw std::bad_alloc();
            }
        }

        /// @brief Enqueues the @p count items at @p first with one enqueue_bulk (may allocate).
        /// @throws std::bad_alloc if the queue cannot allocate.
        template <typename It>
        void submit_bulk(It first, std::size_t count) {
            if (!queue_->enqueue_bulk(token_, first, count)) {
                throw std::bad_alloc();
            }
        }

    private:
        friend class MoodycamelHandoff;
        explicit Producer(Queue& queue) : queue_(&queue), token_(queue) {}

        Queue* queue_;
        moodycamel::ProducerToken token_;
    };

    /**
     * @brief Starts @p workers consumers that dequeue up to @p batch_size items at a time.
     * @throws std::invalid_argument if batch_size or workers is 0.
     */
    MoodycamelHandoff(std::size_t batch_size, std::size_t workers, ProcessFunction process)
        : batch_size_(batch_size), process_(std::move(process)) {
        if (batch_size == 0 || workers == 0) {
            throw std::invalid_argument(
                "MoodycamelHandoff: batch_size and workers must be >= 1 (got batch_size " +
                std::to_string(batch_size) + ", workers " + std::to_string(workers) + ")");
        }
        consumers_.reserve(workers);
        try {
            for (std::size_t i = 0; i < workers; ++i) {
                consumers_.emplace_back([this] { consume(); });
            }
        } catch (...) {
            stop_and_join();
            throw;
        }
    }

    MoodycamelHandoff(const MoodycamelHandoff&) = delete;
    MoodycamelHandoff& operator=(const MoodycamelHandoff&) = delete;

    /// @brief Drains and joins unless `close()` was called.
    ~MoodycamelHandoff() { stop_and_join(); }

    /// @brief A new producer handle for the calling thread.
    Producer make_producer() { return Producer(queue_); }

    /**
     * @brief Lets the consumers drain the queue, then joins them. Call after every `submit`
     *        has returned. Idempotent. Rethrows the first exception `process` threw, once.
     */
    void close() {
        stop_and_join();
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
    void stop_and_join() {
        // release: the enqueues that happened before close() are visible to a consumer that
        // reads closing_ == true.
        closing_.store(true, std::memory_order_release);
        for (std::thread& consumer : consumers_) {
            if (consumer.joinable()) {
                consumer.join();
            }
        }
    }

    void consume() {
        moodycamel::ConsumerToken token(queue_);
        std::vector<T> batch;
        batch.reserve(batch_size_);
        for (;;) {
            // Read the flag before dequeuing: if it was already set, every enqueue is complete,
            // so a dequeue that then finds nothing means the queue is drained for good (an item
            // a concurrent consumer claimed is processed by that consumer).
            const bool closing = closing_.load(std::memory_order_acquire);
            batch.clear();
            if (queue_.try_dequeue_bulk(token, std::back_inserter(batch), batch_size_) != 0) {
                run_batch(batch);
            } else if (closing) {
                return;
            } else {
                std::this_thread::yield();
            }
        }
    }

    void run_batch(std::vector<T>& batch) {
        try {
            process_(batch);
        } catch (...) {
            std::lock_guard<std::mutex> lock(error_mutex_);
            if (!first_error_) {
                first_error_ = std::current_exception();
            }
        }
    }

    const std::size_t batch_size_;
    ProcessFunction process_;
    Queue queue_;
    std::atomic<bool> closing_{false};
    std::mutex error_mutex_;
    std::exception_ptr first_error_;
    std::vector<std::thread> consumers_;  // last: started after everything they use
};

}  // namespace microbatch_bench

#endif  // MICROBATCH_HAVE_CONCURRENTQUEUE
