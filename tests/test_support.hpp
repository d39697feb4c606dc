#pragma once
// Small synchronisation helpers shared by the tests.

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <thread>
#include <vector>

namespace test_support {

/// A one-shot gate: wait() blocks until open() was called (then never again).
class Gate {
public:
    void open() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            open_ = true;
        }
        condition_.notify_all();
    }
    void wait() {
        std::unique_lock<std::mutex> lock(mutex_);
        condition_.wait(lock, [this] { return open_; });
    }

private:
    std::mutex mutex_;
    std::condition_variable condition_;
    bool open_ = false;
};

/// Runs body(thread_index) on @p threads threads that start together, and joins them.
template <class Body>
void run_concurrently(std::size_t threads, Body body) {
    std::atomic<bool> go{false};
    std::vector<std::thread> pool;
    pool.reserve(threads);
    for (std::size_t t = 0; t < threads; ++t) {
        pool.emplace_back([&go, &body, t] {
            while (!go.load()) {
                std::this_thread::yield();
            }
            body(t);
        });
    }
    go.store(true);
    for (auto& thread : pool) {
        thread.join();
    }
}

}  // namespace test_support
