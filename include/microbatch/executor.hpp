#pragma once
/**
 * @file executor.hpp
 * @brief The executor abstraction batchers dispatch batches to.
 */

#include "microbatch/version.hpp"  // the C++17 check

#include <functional>

namespace microbatch {

/// A unit of work handed to an executor.
using Task = std::function<void()>;

/**
 * @brief Something that runs tasks: a callable taking a `Task` and arranging for it to run
 *        exactly once, on some thread, eventually.
 *
 * Any thread pool can be adapted with a lambda, e.g.
 * `[&pool](microbatch::Task t) { pool.post(std::move(t)); }`; `ThreadPool::executor()` returns
 * one for microbatch's own pool. The executor must run every task it accepted, even while it is
 * shutting down, for as long as a batcher using it is alive; if the call itself throws, the
 * batcher runs the batch on the calling thread instead, so no item is lost.
 */
using Executor = std::function<void(Task)>;

}  // namespace microbatch
