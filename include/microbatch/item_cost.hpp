#pragma once
/**
 * @file item_cost.hpp
 * @brief `microbatch::cost_by`: weighs items (bytes, tokens, rows) so that batches and the
 *        items pending in a batcher can be bounded by their total cost, not only by count.
 *
 * Not to be confused with cost_model.hpp, which fits the *time* a batch takes.
 */

#include <cstddef>
#include <type_traits>
#include <utility>

#include "microbatch/detail/config.hpp"

namespace microbatch {

/**
 * @brief A cost function on items, as passed to the `Batcher` and `KeyedBatcher` constructors:
 *        `function(item)` returns the item's cost (e.g. its size in bytes) as a `std::size_t`.
 *
 * Made with `cost_by(f)`. The batcher calls the function once per item, on the submitting
 * thread, before the item is accepted, and never again (the cost of an item cannot change while
 * it waits). Requirements: callable as `std::size_t(const T&)` for the batcher's item type `T`
 * (checked at compile time); it may be called concurrently from several producer threads; if it
 * throws, the submission propagates the exception and the item is not accepted.
 *
 * Thread safety: a plain value holding @p F.
 */
template <class F>
struct CostBy {
    F function;  ///< The cost function.
};

/**
 * @brief Wraps @p function as an item cost function for a batcher constructor:
 * @code
 * microbatch::Batcher<std::string> writer(
 *     microbatch::Options{}.max_batch_cost(64 * 1024),          // at most 64 KiB per batch
 *     microbatch::cost_by([](const std::string& s) { return s.size(); }),
 *     [](microbatch::Batch<std::string>& batch) { ... });
 * @endcode
 * Never throws unless moving or copying @p function throws.
 */
template <class F>
CostBy<std::decay_t<F>> cost_by(F&& function) {
    return CostBy<std::decay_t<F>>{std::forward<F>(function)};
}

namespace detail {
/// True if @p F is callable as a cost function on const @p T lvalues.
template <class F, class T>
inline constexpr bool is_cost_function_v = std::is_invocable_r_v<std::size_t, const F&, const T&>;
}  // namespace detail

}  // namespace microbatch
