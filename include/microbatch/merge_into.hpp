#pragma once
/**
 * @file merge_into.hpp
 * @brief `microbatch::merge_into`: connects a Batcher to an Aggregator, so that each batch's
 *        result is merged into one running aggregate.
 */

#include <exception>
#include <type_traits>
#include <utility>

#include "microbatch/aggregator.hpp"
#include "microbatch/detail/config.hpp"

namespace microbatch {

/**
 * @brief Turns @p process, a batch function that returns one aggregate value per batch (a sum,
 *        a count, a histogram, a `ops::RunningStats`, ...), into a `void` batch function that
 *        merges that value into @p aggregator. Use it as the batch function of a `Batcher<T>`.
 *
 * @code
 * microbatch::Aggregator<microbatch::ops::Sum<long>> total;
 * microbatch::Batcher<int> summer(options, microbatch::merge_into(total, [](auto& batch) {
 *     long sum = 0;
 *     for (int x : batch) sum += x;
 *     return sum;
 * }));
 * summer.post(42);                   // fire-and-forget: no allocation per item
 * summer.wait_idle();
 * long everything = total.value();   // or total.take() for per-window reporting
 * @endcode
 *
 * If @p process throws (or merging throws), nothing of that batch is merged, the exception is
 * recorded with `Aggregator::record_failure` (counted; the first one is kept for the reader)
 * and rethrown, so the batcher also delivers it to the batch's items and counts it in its stats.
 *
 * What a reader sees: after `Batcher::wait_idle()` or `close()`, `value()` includes every
 * batch that finished before; while batches run, each batch's contribution is either wholly
 * included or wholly absent (see `Aggregator`). The aggregator must outlive the batcher.
 *
 * Thread safety: the returned function may run on many workers at once (merges are lock-free).
 * @param aggregator where batch results go; held by reference.
 * @param process    `process(batch)` returning something `aggregator.merge` accepts; copied
 *                   (moved) into the returned function, which is move-only if it is.
 */
template <class Op, class F>
auto merge_into(Aggregator<Op>& aggregator, F process) {
    return [&aggregator, process = std::move(process)](auto& batch) mutable {
        static_assert(!std::is_void_v<decltype(process(batch))>,
                      "microbatch::merge_into: the batch function must return the batch's "
                      "aggregate value");
        MICROBATCH_TRY {
            aggregator.merge(process(batch));
        }
        MICROBATCH_CATCH_ALL {
            aggregator.record_failure(std::current_exception());
            MICROBATCH_RETHROW;
        }
    };
}

}  // namespace microbatch
