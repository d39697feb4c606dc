#pragma once
/**
 * @file detail/batcher_outcomes.hpp
 * @brief Batcher internals, step 3 continued: calling process_batch in its plain or per-item
 *        form, and isolating poison items by re-running a failed batch in halves
 *        (`Options::isolate_failures`).
 *
 * run_batch() calls call_process(). While every item of a batch shares one fate (the results
 * of one successful call, or one exception), nothing here allocates and run_batch completes
 * the items as before. When their fates differ (a per-item result vector, or a batch that
 * isolation re-ran) call_process() leaves one Outcome per item in a BatchOutcomes, which
 * complete_outcomes() hands out instead.
 */

#include <cstddef>
#include <exception>
#include <new>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "microbatch/detail/batcher_core.hpp"
#include "microbatch/detail/config.hpp"

namespace microbatch {
namespace detail {

/// One Outcome per item of a batch whose items' fates differ. Lives on the worker's stack for
/// one batch; unused (`active` false, nothing allocated) on the common path.
template <class R>
struct BatchOutcomes {
    std::vector<Outcome<R>> items;  // in item order once `active`
    bool active = false;            // items holds one outcome per item of the batch
    bool isolated = false;          // the first call threw and the batch was re-run in halves
    std::size_t failed = 0;         // outcomes holding an exception (set by call_process)
    std::size_t runs = 0;           // process_batch calls made by isolation
    std::size_t runs_failed = 0;    // ...that threw or returned the wrong number of results

    // The helpers below never throw: isolation reserves room for every item first, and an
    // outcome whose value cannot be moved in becomes that exception, so the items stay
    // aligned with their outcomes whatever happens.
    void add_error(const std::exception_ptr& error, std::size_t count) noexcept {
        for (std::size_t i = 0; i < count; ++i) {
            items.emplace_back(error);
        }
    }
    template <class Value>
    void add(Value&& value) noexcept {
        MICROBATCH_TRY {
            items.emplace_back(std::forward<Value>(value));
        }
        MICROBATCH_CATCH_ALL {
            items.emplace_back(std::current_exception());
        }
    }
};

inline std::exception_ptr result_count_error(std::size_t results, std::size_t items) {
    return make_error_ptr(ResultCountError("microbatch::Batcher: process_batch returned " +
                                           std::to_string(results) + " results for a batch of " +
                                           std::to_string(items) + " items"));
}

}  // namespace detail

// Chooses the form from what process_batch returns: the plain form when it converts to
// batch_result_type (so a Batcher<T, Outcome<X>> returning std::vector<Outcome<X>> keeps
// the plain form), else the per-item form.
template <class T, class R, class Clock>
template <class F>
void detail::BatcherCore<T, R, Clock>::store_process(F&& process) {
    static_assert(std::is_invocable_v<F&, Batch<T>&>,
                  "microbatch::Batcher: process_batch must be callable with "
                  "microbatch::Batch<T>&");
    if constexpr (std::is_invocable_v<F&, Batch<T>&>) {
        using Result = std::invoke_result_t<F&, Batch<T>&>;
        if constexpr (std::is_convertible_v<Result, batch_result_type>) {
            process_ = process_function(std::forward<F>(process));
        } else if constexpr (std::is_convertible_v<Result, outcome_result_type>) {
            process_outcomes_ = outcome_function(std::forward<F>(process));
        } else if constexpr (std::is_void_v<R>) {
            static_assert(std::is_convertible_v<Result, outcome_result_type>,
                          "microbatch::Batcher<T, void>: process_batch must return void, or "
                          "std::vector<microbatch::Outcome<void>> with one outcome per item; "
                          "use Batcher<T, R> for one result per item");
        } else {
            static_assert(std::is_convertible_v<Result, outcome_result_type>,
                          "microbatch::Batcher<T, R>: process_batch must return std::vector<R> "
                          "with one result per item, or std::vector<microbatch::Outcome<R>> "
                          "with one outcome per item");
        }
    }
}

template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::call_process(Batch<T>& batch, std::exception_ptr& error,
                                                    batch_result_type_or_empty& results,
                                                    detail::BatchOutcomes<R>& outcomes) noexcept {
    const std::size_t count = batch.size();
    bool threw = false;
    MICROBATCH_TRY {
        if (process_outcomes_) {
            outcomes.items = process_outcomes_(batch);
            if (outcomes.items.size() == count) {
                outcomes.active = true;
            } else {
                error = detail::result_count_error(outcomes.items.size(), count);
                outcomes.items.clear();  // nothing was handed out yet: the batch fails as one
            }
        } else if constexpr (std::is_void_v<R>) {
            process_(batch);
        } else {
            results = process_(batch);
            if (results.size() != count) {
                error = detail::result_count_error(results.size(), count);
            }
        }
    }
    MICROBATCH_CATCH_ALL {
        error = std::current_exception();
        threw = true;
    }
    // Isolation starts outside the handler, so that re-runs do not nest inside it. Only a
    // thrown exception is retried: a wrong result count is a bug that halves would repeat.
    if (threw && options_.isolate_failures() && count > 1) {
        bool reserved = false;
        MICROBATCH_TRY {
            outcomes.items.reserve(count);
            reserved = true;
        }
        MICROBATCH_CATCH_ALL {
            // No room for per-item outcomes: the batch fails as a whole, as without isolation.
        }
        if (reserved) {
            outcomes.active = true;
            outcomes.isolated = true;
            // Our reference to the first exception goes before any item is completed (see
            // run_batch on exception_ptr references and ThreadSanitizer).
            isolate(batch, 0, std::move(error), outcomes);
            error = nullptr;
        }
    }
    if (!outcomes.active) {
        return;
    }
    for (std::size_t i = 0; i < count; ++i) {
        Outcome<R>& outcome = outcomes.items[i];
        if (outcome.has_value()) {
            continue;
        }
        ++outcomes.failed;
        if constexpr (!std::is_void_v<R>) {
            if (!outcome.error()) {
                // Neither a value nor an exception (a moved-from failed Outcome): reading it
                // would be undefined, so the item fails with a clear error instead.
                std::exception_ptr replacement;
                MICROBATCH_TRY {
                    replacement = detail::make_error_ptr(ResultCountError(
                        "microbatch::Batcher: process_batch returned an Outcome holding neither "
                        "a value nor an exception for item " +
                        std::to_string(i) + " of a batch of " + std::to_string(count)));
                }
                MICROBATCH_CATCH_ALL {
                    replacement = std::current_exception();  // std::bad_alloc
                }
                // Replaced in place: Outcome<R> need not be assignable.
                outcome.~Outcome<R>();
                ::new (static_cast<void*>(&outcome)) Outcome<R>(std::move(replacement));
            }
        }
    }
}

// The call on @p part (after @p level splits of the batch) threw @p error: split it in two
// halves and run each, or, at a single item or the depth cap, fail its items with @p error.
// Appends one outcome per item of @p part, in order (left half first).
template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::isolate(Batch<T>& part, std::size_t level,
                                               std::exception_ptr error,
                                               detail::BatchOutcomes<R>& outcomes) noexcept {
    if (part.size() == 1 || level >= options_.isolation_depth()) {
        outcomes.add_error(error, part.size());
        return;
    }
    error = nullptr;  // each half reports its own exception
    const std::size_t half = part.size() / 2;
    Batch<T> first(part.data(), half, part.reason(), part.sequence());
    Batch<T> second(part.data() + half, part.size() - half, part.reason(), part.sequence());
    call_part(first, level + 1, outcomes);
    call_part(second, level + 1, outcomes);
}

// One re-run: calls process_batch on @p part and appends its items' outcomes, isolating
// further if it throws. Recursion depth is at most log2(max_batch_size) + 1 (about 23).
template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::call_part(Batch<T>& part, std::size_t level,
                                                 detail::BatchOutcomes<R>& outcomes) noexcept {
    ++outcomes.runs;
    std::exception_ptr error;
    bool threw = false;
    MICROBATCH_TRY {
        if (process_outcomes_) {
            outcome_result_type part_outcomes = process_outcomes_(part);
            if (part_outcomes.size() == part.size()) {
                for (Outcome<R>& outcome : part_outcomes) {
                    outcomes.add(std::move(outcome));
                }
                return;
            }
            error = detail::result_count_error(part_outcomes.size(), part.size());
        } else if constexpr (std::is_void_v<R>) {
            process_(part);
            outcomes.add_error(nullptr, part.size());  // Outcome<void>(null): success
            return;
        } else {
            batch_result_type part_results = process_(part);
            if (part_results.size() == part.size()) {
                for (R& result : part_results) {
                    outcomes.add(std::move(result));
                }
                return;
            }
            error = detail::result_count_error(part_results.size(), part.size());
        }
    }
    MICROBATCH_CATCH_ALL {
        error = std::current_exception();
        threw = true;
    }
    ++outcomes.runs_failed;
    if (threw) {
        isolate(part, level, std::move(error), outcomes);
    } else {
        outcomes.add_error(error, part.size());  // a wrong result count is not split further
    }
}

template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::record_outcomes(
    const detail::BatchOutcomes<R>& outcomes) noexcept {
    if (outcomes.active) {
        stats_.outcomes(outcomes.failed, outcomes.isolated, outcomes.runs, outcomes.runs_failed);
    }
}

template <class T, class R, class Clock>
void detail::BatcherCore<T, R, Clock>::complete_outcomes(
    detail::Completion<R>* completions, detail::BatchOutcomes<R>& outcomes) noexcept {
    std::vector<Outcome<R>>& items = outcomes.items;
    // Items nobody waits for drop their reference to a shared exception first: this thread
    // must not drop one after handing out the others (see run_batch: ThreadSanitizer cannot
    // see libstdc++'s reference counts). Completed items hand theirs over by move.
    for (std::size_t i = 0; i < items.size(); ++i) {
        if (!completions[i].has_value() && items[i].error()) {
            MICROBATCH_TRY {
                const Outcome<R> dropped(std::move(items[i]));  // holds no value: cannot throw
            }
            MICROBATCH_CATCH_ALL {}
        }
    }
    for (std::size_t i = 0; i < items.size(); ++i) {
        if (completions[i].has_value()) {
            MICROBATCH_TRY {
                completions[i].complete(std::move(items[i]));
            }
            MICROBATCH_CATCH_ALL {
                stats_.callback_exception();
            }
        }
    }
}

}  // namespace microbatch
