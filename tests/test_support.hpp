#pragma once
// Small synchronisation helpers shared by the tests.

#include <condition_variable>
#include <mutex>

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

}  // namespace test_support
