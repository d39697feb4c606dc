#pragma once
/**
 * @file thread_pool.hpp
 * @brief `microbatch::ThreadPool`: a fixed-size pool of worker threads, the default executor
 *        of a Batcher.
 */

#include <cstddef>
#include <exception>
#include <future>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "microbatch/detail/config.hpp"
#include "microbatch/detail/thread_pool_state.hpp"
#include "microbatch/errors.hpp"
#include "microbatch/executor.hpp"

namespace microbatch {

/**
 * @brief A fixed number of worker threads running posted tasks, started in FIFO order.
 *
 * Built for microbatch's Batcher, which posts one task per batch: a task costs a slot in a
 * lock-free ring of 1,024 tasks (one compare-and-swap to queue it, one to take it; no lock while
 * a worker is awake) and whatever `std::function` allocates (small lambdas fit its inline
 * buffer; with libstdc++ that means trivially copyable captures of up to 16 bytes). Tasks
 * posted while the ring is full queue behind it in a mutex-protected deque, still in FIFO
 * order. The ring takes about 40 KB per pool. Usable on its own:
 * @code
 * microbatch::ThreadPool pool(4);
 * pool.post([] { do_work(); });
 * std::future<int> answer = pool.submit([](int x) { return x * 2; }, 21);
 * pool.wait_idle();
 * @endcode
 *
 * Waking: a worker that runs out of tasks while tasks are streaming in (at least 6 of its last 8
 * waits ended within 50 microseconds; a new worker counts as streaming) yield-spins for up to 50
 * microseconds before it sleeps on a condition variable, so a steady stream (a batch every few
 * microseconds) is picked up without a futex wake-up per task. Otherwise it sleeps at once:
 * yielding would cost it scheduler credit and delay its wake-up behind a busy submitter when the
 * next task comes. An idle pool sleeps and uses no CPU (after at most three spins per worker);
 * posting wakes a sleeping worker only when no spinning or already woken worker will take the
 * task.
 *
 * Lifetime: `shutdown()` (also run by the destructor) stops accepting work, runs every task
 * already queued, then joins the workers, so no accepted task is lost. A task may call
 * `shutdown()` on its own pool, and may even destroy its pool; see those members.
 *
 * Thread safety: every member function may be called concurrently from any thread, including
 * from tasks running on this pool, except where a member documents a restriction.
 */
class ThreadPool {
public:
    /**
     * @brief Starts @p threads worker threads.
     * @param threads Number of workers; must be at least 1.
     * @throws std::invalid_argument if @p threads is 0
     *         ("ThreadPool: threads must be >= 1 (got 0)").
     * @throws std::system_error (or std::bad_alloc) if a thread cannot be started; the workers
     *         started before it are stopped and joined first, so no thread outlives the failure.
     */
    explicit ThreadPool(std::size_t threads)
        : size_(validated_thread_count(threads)),
          state_(std::make_shared<detail::ThreadPoolState>()) {
        threads_.reserve(size_);
        detail::invoke_catching(
            [this] {
                for (std::size_t i = 0; i < size_; ++i) {
                    threads_.emplace_back([state = state_] { state->run_worker(); });
                }
            },
            [this] {
                state_->stop();
                for (std::thread& thread : threads_) {
                    thread.join();
                }
                std::rethrow_exception(std::current_exception());
            });
    }

    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;
    ThreadPool(ThreadPool&&) = delete;
    ThreadPool& operator=(ThreadPool&&) = delete;

    /**
     * @brief Runs `shutdown()`: waits for every queued task, then joins the workers.
     *
     * May be called from one of the pool's own tasks (for example when that task drops the last
     * `shared_ptr` to the pool). Then it joins the other workers (which drain the queue) and
     * detaches the calling worker, which finishes its current task, runs anything still queued
     * (possible only with one worker) and exits on its own; the state it needs outlives the
     * pool object. The detached thread is not joined by anyone, so the program must not depend
     * on it having exited.
     *
     * Blocks until the queue has drained. As for any object, no other call on this pool may
     * run concurrently with (or after) its destruction; executors from `executor()` may.
     */
    ~ThreadPool() {
        if (!is_worker_thread()) {
            shutdown();
            return;
        }
        state_->stop();
        std::lock_guard<std::mutex> lock(join_mutex_);
        const std::thread::id self = std::this_thread::get_id();
        for (std::thread& thread : threads_) {
            if (!thread.joinable()) {
                continue;
            }
            if (thread.get_id() == self) {
                thread.detach();  // join() on ourselves would throw resource_deadlock_would_occur
            } else {
                thread.join();
            }
        }
    }

    /**
     * @brief Queues @p task to run once on a worker; tasks start in the order they were queued.
     *
     * Never blocks on running tasks (only briefly on the pool's lock, taken when a worker must
     * be woken or the ring is full). An exception escaping
     * the task is caught on the worker and counted by `task_exceptions()`; the pool keeps
     * running. An empty `Task` counts as a task that threw (`std::bad_function_call`).
     *
     * @throws ClosedError once `shutdown()` has begun; the task is not run, and an rvalue
     *         argument is left untouched (not moved from), so the caller can still run it.
     *
     * Thread-safe: may be called concurrently from any thread, including from tasks.
     */
    void post(Task&& task) {
        if (!state_->push(task)) {
            MICROBATCH_THROW(ClosedError("ThreadPool::post: the pool is shut down"));
        }
    }

    /// @brief Copies @p task into the queue; otherwise as `post(Task&&)`.
    void post(const Task& task) { post(Task(task)); }

    /**
     * @brief Queues `f(args...)` and returns a future for its result or exception.
     *
     * @p f and @p args are decay-copied (moved when given as rvalues) and invoked as rvalues on
     * a worker, as `std::thread` would. An exception thrown by @p f is delivered through the
     * future (and not counted by `task_exceptions()`).
     *
     * Does not block on running tasks (only briefly on the pool's lock, as `post`); allocates the
     * shared call state, the future's state and the queued `Task`.
     *
     * @return A future that becomes ready when the call finishes.
     * @throws ClosedError once `shutdown()` has begun (the copies of @p f and @p args are
     *         destroyed unrun).
     *
     * Thread-safe: may be called concurrently from any thread, including from tasks (but a task
     * that blocks on the future of a task queued behind it can deadlock a busy pool).
     */
    template <class F, class... Args>
    auto submit(F&& f, Args&&... args)
        -> std::future<std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>> {
        using Result = std::invoke_result_t<std::decay_t<F>, std::decay_t<Args>...>;
        using Call = detail::PackagedCall<Result, std::decay_t<F>, std::decay_t<Args>...>;
        // Shared because std::function needs a copyable target and the call may be move-only.
        auto call = std::make_shared<Call>(std::forward<F>(f), std::forward<Args>(args)...);
        std::future<Result> future = call->get_future();
        Task task = [call] { call->run(); };
        if (!state_->push(task)) {
            MICROBATCH_THROW(ClosedError("ThreadPool::submit: the pool is shut down"));
        }
        return future;
    }

    /**
     * @brief Blocks until the queue is empty and no task is running.
     *
     * Tasks posted while it waits (by other threads or by running tasks) are waited for if they
     * are queued before the pool first becomes idle, and not otherwise: on return the pool was
     * idle at some instant, it may be busy again already. Works during and after `shutdown()`.
     *
     * @throws ReentrancyError when called from one of this pool's workers (it would wait for
     *         the very task calling it).
     *
     * Thread-safe: may be called concurrently from any thread that is not this pool's worker.
     */
    void wait_idle() {
        if (is_worker_thread()) {
            MICROBATCH_THROW(
                ReentrancyError("ThreadPool::wait_idle: called from one of the pool's own "
                                "workers, which would wait for itself"));
        }
        state_->wait_idle();
    }

    /**
     * @brief Stops accepting tasks, runs every task already queued, then joins the workers.
     *
     * After it returns, `post` and `submit` throw ClosedError and every task accepted before it
     * has finished. Idempotent: concurrent and repeated calls all return once the workers are
     * joined.
     *
     * Called from one of this pool's own tasks it only stops accepting and returns at once:
     * the workers (the caller's included, after its current task) still drain the queue, but
     * it does not wait for them, since joining itself is impossible and waiting for the other
     * workers could deadlock on tasks that wait for the caller. The destructor or a later
     * `shutdown()` from another thread joins them.
     *
     * Thread-safe: may be called concurrently from any thread, including from tasks.
     */
    void shutdown() {
        state_->stop();
        if (is_worker_thread()) {
            return;
        }
        // Serialises joining: two threads must not join the same std::thread, and a second
        // caller must not return before the first has finished joining.
        std::lock_guard<std::mutex> lock(join_mutex_);
        for (std::thread& thread : threads_) {
            if (thread.joinable()) {
                thread.join();
            }
        }
    }

    /**
     * @brief Returns an `Executor` that posts its tasks into this pool.
     *
     * Calling the executor is `post(std::move(task))`: it does not block on running tasks and
     * throws ClosedError once the pool has begun shutting down, and also if it is called after
     * the pool is destroyed (it keeps the queue's state alive, not the workers). `Executor` takes
     * its `Task` by value, so a caller that passes `std::move(task)` has given it away even when
     * the call throws: keep a copy (or the work's data) to run it yourself on ClosedError.
     *
     * Thread-safe: the executor and copies of it may be called concurrently from any thread.
     */
    Executor executor() {
        return [state = state_](Task task) {
            if (!state->push(task)) {
                MICROBATCH_THROW(ClosedError("ThreadPool executor: the pool is shut down"));
            }
        };
    }

    /// @brief Number of worker threads. Thread-safe; constant for the pool's lifetime.
    std::size_t size() const noexcept { return size_; }

    /// @brief True when the calling thread is one of this pool's workers. Thread-safe.
    bool is_worker_thread() const noexcept {
        return detail::current_thread_pool_state == state_.get();
    }

    /// @brief Number of queued tasks not yet started (a snapshot). Thread-safe.
    std::size_t pending() const { return state_->pending(); }

    /// @brief Number of posted tasks that exited with an exception so far. Thread-safe.
    std::size_t task_exceptions() const { return state_->task_exceptions(); }

private:
    static std::size_t validated_thread_count(std::size_t threads) {
        if (threads == 0) {
            MICROBATCH_THROW(std::invalid_argument("ThreadPool: threads must be >= 1 (got " +
                                                   std::to_string(threads) + ")"));
        }
        return threads;
    }

    const std::size_t size_;
    std::shared_ptr<detail::ThreadPoolState> state_;
    std::mutex join_mutex_;             // held while joining threads_, see shutdown()
    std::vector<std::thread> threads_;  // not resized after construction
};

}  // namespace microbatch
