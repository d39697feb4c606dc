// Tests of the clocks: ManualClock time keeping and the synchronous advance() handshake.

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "catch_shim.hpp"
#include "microbatch/clock.hpp"

using namespace std::chrono_literals;
using microbatch::ManualClock;

TEST_CASE("ManualClock starts at zero and moves only when advanced", "[clock]") {
    ManualClock clock;
    CHECK(clock.now().time_since_epoch() == 0ns);
    clock.advance(5ms);
    CHECK(clock.now().time_since_epoch() == 5ms);
    clock.advance(-1ms);  // ignored
    clock.advance(0ns);
    CHECK(clock.now().time_since_epoch() == 5ms);
}

TEST_CASE("ManualClock copies share one time line", "[clock]") {
    ManualClock clock;
    ManualClock copy = clock;
    copy.advance(7us);
    CHECK(clock.now().time_since_epoch() == 7us);
}

TEST_CASE("ManualClock advance returns after a sleeper has re-evaluated its deadline", "[clock]") {
    ManualClock clock;
    std::mutex mutex;
    std::condition_variable condition;
    int wakeups_due = 0;  // guarded by mutex
    bool stop = false;    // guarded by mutex
    ManualClock::Sleeper sleeper(clock, mutex, condition);
    std::thread timer([&] {
        std::unique_lock<std::mutex> lock(mutex);
        const auto deadline = ManualClock::time_point(10ms);
        while (!stop) {
            if (clock.now() >= deadline && wakeups_due == 0) {
                wakeups_due = 1;  // "dispatch" exactly once
            }
            if (wakeups_due == 0) {
                sleeper.sleep_until(lock, deadline);
            } else {
                sleeper.sleep(lock);  // nothing left to time
            }
        }
        sleeper.retire();
    });
    clock.advance(9ms);
    {
        std::lock_guard<std::mutex> lock(mutex);
        CHECK(wakeups_due == 0);
    }
    clock.advance(1ms);
    {
        std::lock_guard<std::mutex> lock(mutex);
        CHECK(wakeups_due == 1);  // synchronous: the sleeper acted before advance returned
        stop = true;
    }
    condition.notify_all();
    timer.join();
    clock.advance(1ms);  // a retired sleeper is not waited for
    CHECK(clock.now().time_since_epoch() == 11ms);
}

TEST_CASE("SteadyClock reads std::chrono::steady_clock", "[clock]") {
    const microbatch::SteadyClock clock;
    const auto before = std::chrono::steady_clock::now();
    const auto now = clock.now();
    CHECK(now >= before);
    CHECK(microbatch::SteadyClock::is_steady);
}
