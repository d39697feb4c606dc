#include "microbatch/thread_pool.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "catch_shim.hpp"
#include "microbatch/errors.hpp"
#include "microbatch/executor.hpp"
#include "test_support.hpp"

using microbatch::ClosedError;
using microbatch::Executor;
using microbatch::ReentrancyError;
using microbatch::Task;
using microbatch::ThreadPool;

namespace {

using test_support::Gate;

// Occupies every worker of `pool` with a task that blocks on `gate`. Tasks run in FIFO order,
// so everything posted afterwards stays queued until the gate opens.
void hold_workers(ThreadPool& pool, Gate& gate) {
    for (std::size_t i = 0; i < pool.size(); ++i) {
        pool.post([&gate] { gate.wait(); });
    }
}

// Opens `gate` as soon as `pool` has begun shutting down, observed through an executor (which,
// unlike the pool, may be used while the pool is being destroyed). The probe tasks accepted
// before that point are counted in `probes_accepted` and count themselves in `probes_run`.
std::thread open_gate_once_closed(Executor probe, Gate& gate, std::atomic<int>& probes_accepted,
                                  std::atomic<int>& probes_run) {
    return std::thread([probe = std::move(probe), &gate, &probes_accepted, &probes_run] {
        for (;;) {
            try {
                probe([&probes_run] { probes_run.fetch_add(1); });
                probes_accepted.fetch_add(1);
            } catch (const ClosedError&) {
                break;
            }
            std::this_thread::yield();
        }
        gate.open();
    });
}

}  // namespace

TEST_CASE("ThreadPool runs every task posted by concurrent producers exactly once",
          "[thread_pool]") {
    const std::size_t threads = GENERATE(as<std::size_t>{}, 1, 2, 4, 8);
    constexpr std::size_t producers = 4;
    constexpr std::size_t tasks_per_producer = 2000;
    std::vector<std::atomic<int>> runs(producers * tasks_per_producer);

    ThreadPool pool(threads);
    std::vector<std::thread> producer_threads;
    for (std::size_t producer = 0; producer < producers; ++producer) {
        producer_threads.emplace_back([&pool, &runs, producer] {
            for (std::size_t i = 0; i < tasks_per_producer; ++i) {
                const std::size_t index = producer * tasks_per_producer + i;
                pool.post([&runs, index] { runs[index].fetch_add(1); });
            }
        });
    }
    for (std::thread& producer : producer_threads) {
        producer.join();
    }
    pool.shutdown();

    const auto not_once = std::count_if(runs.begin(), runs.end(),
                                        [](const std::atomic<int>& count) { return count != 1; });
    REQUIRE(not_once == 0);
    REQUIRE(pool.task_exceptions() == 0);
}

TEST_CASE("ThreadPool with one worker runs tasks in the order they were posted", "[thread_pool]") {
    std::vector<int> order;  // touched only by the single worker until shutdown() joins it
    ThreadPool pool(1);
    for (int i = 0; i < 100; ++i) {
        pool.post([&order, i] { order.push_back(i); });
    }
    pool.shutdown();

    std::vector<int> expected(100);
    std::iota(expected.begin(), expected.end(), 0);
    REQUIRE(order == expected);
}

TEST_CASE("ThreadPool::submit returns the value of the call", "[thread_pool]") {
    ThreadPool pool(2);

    auto sum = pool.submit([](int a, int b) { return a + b; }, 2, 40);
    auto text = pool.submit([](const std::string& s) { return s + "!"; }, std::string("hi"));
    auto from_move_only_argument =
        pool.submit([](std::unique_ptr<int> p) { return *p; }, std::make_unique<int>(7));
    auto from_move_only_callable = pool.submit([p = std::make_unique<int>(5)] { return *p; });
    int target = 0;
    auto reference = pool.submit([&target]() -> int& { return target; });
    int written = 0;
    auto through_reference_wrapper = pool.submit([](int& out) { out = 3; }, std::ref(written));

    REQUIRE(sum.get() == 42);
    REQUIRE(text.get() == "hi!");
    REQUIRE(from_move_only_argument.get() == 7);
    REQUIRE(from_move_only_callable.get() == 5);
    REQUIRE(&reference.get() == &target);
    through_reference_wrapper.get();
    REQUIRE(written == 3);
}

TEST_CASE("ThreadPool::submit delivers the call's exception through the future", "[thread_pool]") {
    ThreadPool pool(2);

    auto failing = pool.submit([]() -> int { throw std::runtime_error("boom"); });
    auto failing_void = pool.submit([] { throw std::logic_error("void boom"); });

    // Let the workers drop their reference to the exceptions first: libstdc++'s exception_ptr
    // reference count is not instrumented, so ThreadSanitizer would otherwise report a (false)
    // race between our reading the exception and a worker releasing it.
    pool.wait_idle();

    REQUIRE_THROWS_MATCHES(failing.get(), std::runtime_error, Catch::Matchers::Message("boom"));
    REQUIRE_THROWS_MATCHES(failing_void.get(), std::logic_error,
                           Catch::Matchers::Message("void boom"));
    REQUIRE(pool.task_exceptions() == 0);  // delivered to the caller, so not counted
}

TEST_CASE("ThreadPool counts exceptions escaping posted tasks and keeps working", "[thread_pool]") {
    const std::size_t threads = GENERATE(as<std::size_t>{}, 1, 2);
    ThreadPool pool(threads);

    for (int i = 0; i < 10; ++i) {
        pool.post([] { throw std::runtime_error("task failed"); });
    }
    pool.post([] { throw 42; });  // not derived from std::exception
    pool.post(Task{});            // empty: calling it throws std::bad_function_call
    pool.wait_idle();

    REQUIRE(pool.task_exceptions() == 12);
    REQUIRE(pool.submit([] { return 7; }).get() == 7);
    std::atomic<int> ran{0};
    for (int i = 0; i < 10; ++i) {
        pool.post([&ran] { ran.fetch_add(1); });
    }
    pool.wait_idle();
    REQUIRE(ran == 10);
    REQUIRE(pool.task_exceptions() == 12);
}

TEST_CASE("ThreadPool rejects work after shutdown with ClosedError and leaves the task intact",
          "[thread_pool]") {
    ThreadPool pool(1);
    pool.shutdown();

    int calls = 0;
    Task task = [&calls] { ++calls; };
    REQUIRE_THROWS_AS(pool.post(std::move(task)), ClosedError);
    REQUIRE(static_cast<bool>(task));  // not moved from: the caller can still run it
    task();
    REQUIRE(calls == 1);
    REQUIRE_THROWS_AS(pool.post(task), ClosedError);
    REQUIRE_THROWS_AS(pool.submit([] { return 1; }), ClosedError);
    REQUIRE_THROWS_AS(pool.executor()([] {}), ClosedError);
    REQUIRE(calls == 1);
}

TEST_CASE("ThreadPool::shutdown runs every task queued before it", "[thread_pool]") {
    const std::size_t threads = GENERATE(as<std::size_t>{}, 1, 2, 4, 8);
    ThreadPool pool(threads);
    Gate gate;
    hold_workers(pool, gate);
    std::atomic<int> ran{0};
    for (int i = 0; i < 200; ++i) {
        pool.post([&ran] { ran.fetch_add(1); });
    }
    std::atomic<int> probes_accepted{0};
    std::atomic<int> probes_run{0};
    std::thread opener = open_gate_once_closed(pool.executor(), gate, probes_accepted, probes_run);

    pool.shutdown();  // returns only after the gate opened and the queue drained

    REQUIRE(ran == 200);
    REQUIRE(probes_run == probes_accepted);
    REQUIRE(pool.pending() == 0);
    opener.join();
}

TEST_CASE("ThreadPool::shutdown is idempotent and concurrent calls all wait for the drain",
          "[thread_pool]") {
    const std::size_t threads = GENERATE(as<std::size_t>{}, 1, 2, 4);
    ThreadPool pool(threads);
    Gate gate;
    hold_workers(pool, gate);
    std::atomic<int> ran{0};
    for (int i = 0; i < 100; ++i) {
        pool.post([&ran] { ran.fetch_add(1); });
    }
    std::atomic<int> probes_accepted{0};
    std::atomic<int> probes_run{0};
    std::thread opener = open_gate_once_closed(pool.executor(), gate, probes_accepted, probes_run);

    std::atomic<int> seen_by_first{-1};
    std::atomic<int> seen_by_second{-1};
    std::thread first([&] {
        pool.shutdown();
        seen_by_first = ran.load();
    });
    std::thread second([&] {
        pool.shutdown();
        seen_by_second = ran.load();
    });
    first.join();
    second.join();
    opener.join();

    REQUIRE(seen_by_first == 100);
    REQUIRE(seen_by_second == 100);
    pool.shutdown();  // a third call returns at once
    REQUIRE(ran == 100);
    REQUIRE(probes_run == probes_accepted);
}

TEST_CASE("ThreadPool's destructor runs every queued task before returning", "[thread_pool]") {
    const std::size_t threads = GENERATE(as<std::size_t>{}, 1, 4);
    std::atomic<int> ran{0};
    std::atomic<int> probes_accepted{0};
    std::atomic<int> probes_run{0};
    Gate gate;
    std::thread opener;
    {
        ThreadPool pool(threads);
        hold_workers(pool, gate);
        for (int i = 0; i < 100; ++i) {
            pool.post([&ran] { ran.fetch_add(1); });
        }
        opener = open_gate_once_closed(pool.executor(), gate, probes_accepted, probes_run);
    }
    REQUIRE(ran == 100);
    opener.join();
    REQUIRE(probes_run == probes_accepted);
}

TEST_CASE("ThreadPool::wait_idle returns only after the tasks in flight have finished",
          "[thread_pool]") {
    const std::size_t threads = GENERATE(as<std::size_t>{}, 1, 2, 4);
    ThreadPool pool(threads);
    Gate gate;
    std::atomic<std::size_t> started{0};
    std::atomic<std::size_t> finished{0};
    const std::size_t tasks = 3 * threads;
    for (std::size_t i = 0; i < tasks; ++i) {
        pool.post([&] {
            started.fetch_add(1);
            gate.wait();
            finished.fetch_add(1);
        });
    }
    // Opens the gate once every worker is inside a task, from a thread other than the waiter.
    std::thread opener([&] {
        while (started.load() < threads) {
            std::this_thread::yield();
        }
        gate.open();
    });

    pool.wait_idle();

    REQUIRE(finished == tasks);
    REQUIRE(pool.pending() == 0);
    opener.join();
}

TEST_CASE("ThreadPool::wait_idle waits for tasks posted while a finished task is destroyed",
          "[thread_pool]") {
    // The worker destroys a finished task before it counts the task as done, outside its lock,
    // so a destructor that posts neither deadlocks nor escapes wait_idle().
    class PostsWhenDestroyed {
    public:
        PostsWhenDestroyed(ThreadPool& pool, std::atomic<int>& ran) : pool_(pool), ran_(ran) {}
        PostsWhenDestroyed(const PostsWhenDestroyed&) = delete;
        PostsWhenDestroyed& operator=(const PostsWhenDestroyed&) = delete;
        ~PostsWhenDestroyed() {
            pool_.post([&ran = ran_] { ran.fetch_add(1); });
        }

    private:
        ThreadPool& pool_;
        std::atomic<int>& ran_;
    };
    ThreadPool pool(2);
    std::atomic<int> ran{0};
    auto tracker = std::make_shared<int>(0);
    pool.post([poster = std::make_shared<PostsWhenDestroyed>(pool, ran), tracker] {});

    pool.wait_idle();

    REQUIRE(ran == 1);
    REQUIRE(tracker.use_count() == 1);  // the finished task's captures are already destroyed
}

TEST_CASE("ThreadPool::wait_idle called from one of the pool's workers throws ReentrancyError",
          "[thread_pool]") {
    ThreadPool pool(2);
    auto from_own_worker = pool.submit([&pool] { pool.wait_idle(); });
    pool.wait_idle();  // see "submit delivers the call's exception" for why we wait first
    REQUIRE_THROWS_AS(from_own_worker.get(), ReentrancyError);

    ThreadPool other(1);  // another pool's worker may wait for this pool
    auto from_other_pool = other.submit([&pool] { pool.wait_idle(); });
    REQUIRE_NOTHROW(from_other_pool.get());
}

TEST_CASE("ThreadPool::is_worker_thread is true only on the pool's own workers", "[thread_pool]") {
    ThreadPool pool(2);
    ThreadPool other(1);

    REQUIRE_FALSE(pool.is_worker_thread());
    REQUIRE(pool.submit([&pool] { return pool.is_worker_thread(); }).get());
    REQUIRE_FALSE(other.submit([&pool] { return pool.is_worker_thread(); }).get());
}

TEST_CASE("ThreadPool::shutdown called from inside a task returns and the queue still drains",
          "[thread_pool]") {
    const std::size_t threads = GENERATE(as<std::size_t>{}, 1, 2, 4);
    ThreadPool pool(threads);
    Gate gate;
    hold_workers(pool, gate);
    std::promise<bool> post_inside_was_rejected;
    pool.post([&pool, &post_inside_was_rejected] {
        pool.shutdown();  // must not join (or wait for) the calling worker
        try {
            pool.post([] {});
            post_inside_was_rejected.set_value(false);
        } catch (const ClosedError&) {
            post_inside_was_rejected.set_value(true);
        }
    });
    std::atomic<int> ran{0};
    for (int i = 0; i < 100; ++i) {
        pool.post([&ran] { ran.fetch_add(1); });
    }
    gate.open();

    REQUIRE(post_inside_was_rejected.get_future().get());
    REQUIRE_THROWS_AS(pool.post([] {}), ClosedError);
    pool.wait_idle();  // the workers drain without anyone joining them
    REQUIRE(ran == 100);
    pool.shutdown();  // joins
    REQUIRE(ran == 100);
}

TEST_CASE("ThreadPool destroyed from inside one of its own tasks drains and does not deadlock",
          "[thread_pool]") {
    const std::size_t threads = GENERATE(as<std::size_t>{}, 1, 2, 4);
    auto pool = std::make_unique<ThreadPool>(threads);
    Gate gate;
    hold_workers(*pool, gate);
    // Promises shared with the tasks: the worker that sets one may still be inside set_value()
    // when this test returns, and with one worker nobody joins it.
    auto destroyed = std::make_shared<std::promise<void>>();
    auto all_ran = std::make_shared<std::promise<void>>();
    std::future<void> destroyed_future = destroyed->get_future();
    std::future<void> all_ran_future = all_ran->get_future();
    pool->post([&pool, destroyed] {
        pool.reset();
        destroyed->set_value();
    });
    constexpr int tasks = 100;
    std::atomic<int> ran{0};
    for (int i = 0; i < tasks; ++i) {
        pool->post([&ran, all_ran] {
            if (ran.fetch_add(1) + 1 == tasks) {
                all_ran->set_value();
            }
        });
    }
    all_ran.reset();
    destroyed.reset();
    gate.open();  // from here on only the destroying task touches `pool`

    destroyed_future.wait();
    all_ran_future.wait();
    REQUIRE(pool == nullptr);
    REQUIRE(ran == tasks);
}

TEST_CASE("ThreadPool::executor posts tasks into the pool", "[thread_pool]") {
    ThreadPool pool(2);
    const Executor executor = pool.executor();
    std::atomic<int> ran{0};
    std::atomic<int> ran_on_worker{0};
    for (int i = 0; i < 100; ++i) {
        executor([&] {
            ran.fetch_add(1);
            if (pool.is_worker_thread()) {
                ran_on_worker.fetch_add(1);
            }
        });
    }
    pool.wait_idle();
    REQUIRE(ran == 100);
    REQUIRE(ran_on_worker == 100);
}

TEST_CASE("ThreadPool's executor throws ClosedError once the pool is gone", "[thread_pool]") {
    Executor executor;
    {
        ThreadPool pool(1);
        executor = pool.executor();
    }
    REQUIRE_THROWS_AS(executor([] {}), ClosedError);
}

TEST_CASE("ThreadPool reports its size and the number of queued tasks", "[thread_pool]") {
    REQUIRE(ThreadPool(3).size() == 3);

    ThreadPool pool(1);
    REQUIRE(pool.size() == 1);
    REQUIRE(pool.pending() == 0);
    Gate gate;
    std::promise<void> started;
    pool.post([&] {
        started.set_value();
        gate.wait();
    });
    started.get_future().wait();
    for (int i = 0; i < 3; ++i) {
        pool.post([] {});
    }
    REQUIRE(pool.pending() == 3);
    gate.open();
    pool.wait_idle();
    REQUIRE(pool.pending() == 0);
}

TEST_CASE("ThreadPool rejects zero threads with a message naming the option", "[thread_pool]") {
    REQUIRE_THROWS_MATCHES(ThreadPool(0), std::invalid_argument,
                           Catch::Matchers::Message("ThreadPool: threads must be >= 1 (got 0)"));
}

// ---- Idle spinning ---------------------------------------------------------------------------
// The policy is tested by recording waits directly; the pool tests below only check that tasks
// are never stranded while workers move between running, spinning and sleeping (no timing).

using microbatch::detail::IdleSpinPolicy;

namespace {

constexpr std::size_t history_length = IdleSpinPolicy::history_length;
constexpr std::size_t min_short_waits = IdleSpinPolicy::min_short_waits;

/// Records @p count waits into @p policy, all short or all long.
void record_waits(IdleSpinPolicy& policy, std::size_t count, bool short_wait) {
    for (std::size_t i = 0; i < count; ++i) {
        policy.record_wait(short_wait);
    }
}

}  // namespace

TEST_CASE("IdleSpinPolicy starts spinning and stops once an idle pool's waits are long",
          "[thread_pool][idle_spin]") {
    STATIC_REQUIRE(min_short_waits > history_length / 2);  // a clear majority, see its comment
    STATIC_REQUIRE(min_short_waits <= history_length);

    IdleSpinPolicy policy;
    REQUIRE(policy.should_spin());  // a new pool starts as if tasks were streaming
    record_waits(policy, history_length - min_short_waits, false);
    REQUIRE(policy.should_spin());
    record_waits(policy, 1, false);
    REQUIRE_FALSE(policy.should_spin());
    record_waits(policy, 3 * history_length, false);  // idle for good: never spins again
    REQUIRE_FALSE(policy.should_spin());
}

TEST_CASE("IdleSpinPolicy does not spin until enough of the recent waits were short",
          "[thread_pool][idle_spin]") {
    IdleSpinPolicy policy;
    record_waits(policy, history_length, false);
    REQUIRE_FALSE(policy.should_spin());

    record_waits(policy, min_short_waits - 1, true);
    REQUIRE_FALSE(policy.should_spin());
    record_waits(policy, 1, true);
    REQUIRE(policy.should_spin());
    record_waits(policy, 3 * history_length, true);  // only the last history_length count
    REQUIRE(policy.should_spin());
}

TEST_CASE("IdleSpinPolicy stops spinning after a few long waits in a row and starts again",
          "[thread_pool][idle_spin]") {
    IdleSpinPolicy policy;
    record_waits(policy, history_length, true);
    const std::size_t tolerated = history_length - min_short_waits;
    for (std::size_t long_waits = 1; long_waits <= tolerated; ++long_waits) {
        record_waits(policy, 1, false);
        REQUIRE(policy.should_spin());
    }
    record_waits(policy, 1, false);
    REQUIRE_FALSE(policy.should_spin());

    // A stream that starts again is recognised once its short waits dominate the history.
    record_waits(policy, min_short_waits - 1, true);
    REQUIRE_FALSE(policy.should_spin());
    record_waits(policy, 1, true);
    REQUIRE(policy.should_spin());
}

TEST_CASE("IdleSpinPolicy never spins while short waits are not the clear majority",
          "[thread_pool][idle_spin]") {
    // Moderate load: now and then a batch is sealed just after the worker ran out of work,
    // which must not make it spin. Here every window of history_length waits holds
    // min_short_waits - 1 short ones.
    IdleSpinPolicy policy;
    record_waits(policy, history_length, false);
    for (std::size_t i = 0; i < 10 * history_length; ++i) {
        policy.record_wait(i % history_length < min_short_waits - 1);
        REQUIRE_FALSE(policy.should_spin());
    }
}

TEST_CASE("ThreadPool runs every task when bursts alternate with pauses that idle its workers",
          "[thread_pool][idle_spin]") {
    const std::size_t threads = GENERATE(as<std::size_t>{}, 1, 2, 4, 8);
    constexpr std::size_t producers = 2;
    constexpr int rounds = 60;
    ThreadPool pool(threads);
    std::atomic<int> ran{0};
    int posted = 0;
    for (int round = 0; round < rounds; ++round) {
        // Bursts of 1..64 tasks per producer: long streams teach the workers to spin, single
        // tasks after a pause find them asleep (or just giving up a spin).
        const int burst = 1 + (round * 37) % 64;
        test_support::run_concurrently(producers, [&](std::size_t) {
            for (int i = 0; i < burst; ++i) {
                pool.post([&ran] { ran.fetch_add(1); });
            }
        });
        posted += static_cast<int>(producers) * burst;
        if (round % 3 == 0) {
            pool.wait_idle();
        }
        // Pauses from none to about a millisecond: shorter and longer than a spin.
        std::this_thread::sleep_for(std::chrono::microseconds((round * 113) % 1100));
    }
    pool.wait_idle();
    REQUIRE(ran == posted);

    // A single task after the workers went back to sleep still runs.
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    REQUIRE(pool.submit([] { return 1; }).get() == 1);
}

// ---- The lock-free ring and its overflow deque (issue 13 item 2) -----------------------------

namespace {
// More tasks than the ring holds, so the tail of every such run queues in the overflow deque.
constexpr std::size_t past_the_ring = 3 * microbatch::detail::ThreadPoolState::ring_capacity + 17;

// hold_workers(), then waits until every worker has taken its blocking task off the queue.
void hold_workers_started(ThreadPool& pool, Gate& gate) {
    hold_workers(pool, gate);
    while (pool.pending() != 0) {
        std::this_thread::yield();
    }
}
}  // namespace

TEST_CASE("ThreadPool keeps FIFO order when tasks overflow the ring", "[thread_pool][ring]") {
    ThreadPool pool(1);
    Gate gate;
    hold_workers_started(pool, gate);
    std::vector<std::size_t> order;  // touched only by the single worker until wait_idle()
    // Interleave: while the deque holds tasks, new tasks queue behind them, not in the ring.
    for (std::size_t i = 0; i < past_the_ring; ++i) {
        pool.post([&order, i] { order.push_back(i); });
    }
    CHECK(pool.pending() == past_the_ring);  // CHECK: the gate must still open on failure
    gate.open();
    pool.wait_idle();
    REQUIRE(pool.pending() == 0);

    std::vector<std::size_t> expected(past_the_ring);
    std::iota(expected.begin(), expected.end(), std::size_t{0});
    REQUIRE(order == expected);

    // Once both drained, the ring is used again, still in order.
    order.clear();
    for (std::size_t i = 0; i < 10; ++i) {
        pool.post([&order, i] { order.push_back(i); });
    }
    pool.wait_idle();
    REQUIRE(order == std::vector<std::size_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
}

TEST_CASE("ThreadPool keeps each producer's tasks in order through the ring and the deque",
          "[thread_pool][ring]") {
    constexpr std::size_t producers = 3;
    ThreadPool pool(1);
    Gate gate;
    hold_workers_started(pool, gate);
    std::vector<std::vector<std::size_t>> seen(producers);  // written by the single worker
    // The worker is held at first (the ring fills and overflows), then released mid-way.
    std::thread opener([&gate] {
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
        gate.open();
    });
    test_support::run_concurrently(producers, [&](std::size_t producer) {
        for (std::size_t i = 0; i < past_the_ring; ++i) {
            pool.post([&seen, producer, i] { seen[producer].push_back(i); });
        }
    });
    opener.join();
    pool.wait_idle();

    std::vector<std::size_t> expected(past_the_ring);
    std::iota(expected.begin(), expected.end(), std::size_t{0});
    for (std::size_t producer = 0; producer < producers; ++producer) {
        REQUIRE(seen[producer] == expected);
    }
}

TEST_CASE("ThreadPool runs every task exactly once when producers outrun sleeping workers",
          "[thread_pool][ring]") {
    const std::size_t threads = GENERATE(as<std::size_t>{}, 1, 2, 3);
    constexpr std::size_t producers = 4;
    constexpr std::size_t rounds = 20;
    constexpr std::size_t per_round = 700;  // 4 x 700 > the ring: some rounds overflow
    std::vector<std::atomic<int>> runs(producers * rounds * per_round);
    ThreadPool pool(threads);
    for (std::size_t round = 0; round < rounds; ++round) {
        test_support::run_concurrently(producers, [&](std::size_t producer) {
            for (std::size_t i = 0; i < per_round; ++i) {
                const std::size_t index = (round * producers + producer) * per_round + i;
                pool.post([&runs, index] { runs[index].fetch_add(1); });
            }
        });
        // Long enough for the workers to stop spinning and sleep before the next round.
        std::this_thread::sleep_for(std::chrono::microseconds(200 + (round % 4) * 400));
    }
    pool.wait_idle();
    const auto not_once = std::count_if(runs.begin(), runs.end(),
                                        [](const std::atomic<int>& count) { return count != 1; });
    REQUIRE(not_once == 0);
    REQUIRE(pool.pending() == 0);
}

TEST_CASE("ThreadPool::shutdown runs the tasks queued in both the ring and the deque",
          "[thread_pool][ring]") {
    const std::size_t threads = GENERATE(as<std::size_t>{}, 1, 2);
    std::atomic<std::size_t> ran{0};
    ThreadPool pool(threads);
    Gate gate;
    hold_workers_started(pool, gate);
    for (std::size_t i = 0; i < past_the_ring; ++i) {
        pool.post([&ran] { ran.fetch_add(1); });
    }
    std::thread closer([&pool] { pool.shutdown(); });
    // Wait until the pool refuses work, so shutdown() began with every task still queued.
    for (;;) {
        try {
            pool.post([] {});
        } catch (const ClosedError&) {
            break;
        }
        std::this_thread::yield();  // that probe was accepted; it runs but counts nothing
    }
    gate.open();
    closer.join();
    REQUIRE(ran == past_the_ring);
    REQUIRE(pool.pending() == 0);
    Task task = [] {};
    REQUIRE_THROWS_AS(pool.post(std::move(task)), ClosedError);
    REQUIRE(static_cast<bool>(task));  // a rejected task is left untouched
}

TEST_CASE("ThreadPool runs exactly the tasks it accepted while shutdown races with producers",
          "[thread_pool][ring]") {
    const std::size_t threads = GENERATE(as<std::size_t>{}, 1, 2);
    constexpr std::size_t producers = 3;
    for (int trial = 0; trial < 20; ++trial) {
        std::atomic<std::size_t> accepted{0};
        std::atomic<std::size_t> rejected_intact{0};
        std::atomic<std::size_t> ran{0};
        ThreadPool pool(threads);
        std::thread closer([&pool, trial] {
            std::this_thread::sleep_for(std::chrono::microseconds(50 * (trial % 5)));
            pool.shutdown();
        });
        test_support::run_concurrently(producers, [&](std::size_t) {
            for (;;) {
                Task task = [&ran] { ran.fetch_add(1); };
                try {
                    pool.post(std::move(task));
                    accepted.fetch_add(1);
                } catch (const ClosedError&) {
                    rejected_intact.fetch_add(task ? 1 : 0);
                    return;
                }
            }
        });
        closer.join();
        REQUIRE(ran == accepted);
        REQUIRE(rejected_intact == producers);
        pool.wait_idle();  // works after shutdown, with nothing queued
    }
}

TEST_CASE("ThreadPool::wait_idle from several threads returns once overflowing tasks finish",
          "[thread_pool][ring]") {
    ThreadPool pool(2);
    Gate gate;
    hold_workers_started(pool, gate);
    std::atomic<std::size_t> ran{0};
    for (std::size_t i = 0; i < past_the_ring; ++i) {
        pool.post([&ran] { ran.fetch_add(1); });
    }
    std::atomic<int> returned{0};
    std::vector<std::thread> waiters;
    for (int i = 0; i < 3; ++i) {
        waiters.emplace_back([&] {
            pool.wait_idle();
            // Idle means every task queued before the wait finished.
            if (ran.load() == past_the_ring) {
                returned.fetch_add(1);
            }
        });
    }
    gate.open();
    for (std::thread& waiter : waiters) {
        waiter.join();
    }
    REQUIRE(returned == 3);
}
