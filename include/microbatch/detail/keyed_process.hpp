#pragma once
/**
 * @file detail/keyed_process.hpp
 * @brief KeyedBatcher internals: storing process_batch (with or without the key argument, its
 *        return type checked at compile time), the key and cost functions.
 */

#include <cstddef>
#include <type_traits>
#include <utility>
#include <vector>

#include "microbatch/batch.hpp"
#include "microbatch/detail/config.hpp"
#include "microbatch/detail/unique_function.hpp"
#include "microbatch/item_cost.hpp"

namespace microbatch::detail {

/// True for `CostBy<C>` (item_cost.hpp): keeps the KeyedBatcher constructor taking a key
/// function from taking a cost function for one.
template <class X>
struct is_keyed_cost_by : std::false_type {};
/// `CostBy<C>` is a cost function wrapper.
template <class C>
struct is_keyed_cost_by<CostBy<C>> : std::true_type {};

/// Stores the cost function of a `KeyedBatcher<Key, T>` (`cost_by(f)`); fails to compile, with
/// a message naming the rule, unless it is callable as `std::size_t(const T&)`.
template <class T, class C>
UniqueFunction<std::size_t(const T&)> keyed_cost_function(CostBy<C>&& cost) {
    static_assert(is_cost_function_v<C, T>,
                  "microbatch::KeyedBatcher: the cost function (cost_by) must be callable as "
                  "std::size_t(const T&)");
    return UniqueFunction<std::size_t(const T&)>(std::move(cost.function));
}

/// Stores the key function of a `KeyedBatcher<Key, T>`; fails to compile, with a message
/// naming the rule, unless it is callable as `Key(const T&)`.
template <class Key, class T, class KeyOf>
UniqueFunction<Key(const T&)> keyed_key_function(KeyOf&& key_of) {
    static_assert(std::is_invocable_r_v<Key, std::decay_t<KeyOf>&, const T&>,
                  "microbatch::KeyedBatcher: the key function must be callable as Key(const T&)");
    return UniqueFunction<Key(const T&)>(std::forward<KeyOf>(key_of));
}

/// What a keyed batcher's process_batch returns: `std::vector<R>`, or nothing for `R = void`.
template <class R>
using keyed_batch_result_t = std::conditional_t<std::is_void_v<R>, void, std::vector<R>>;

/// Fails to compile, with a message naming the rule, unless @p Result is what process_batch of
/// a `KeyedBatcher<Key, T, R>` must return.
template <class R, class Result>
constexpr void check_keyed_result() noexcept {
    if constexpr (std::is_void_v<R>) {
        static_assert(std::is_void_v<Result>,
                      "microbatch::KeyedBatcher<Key, T, void>: process_batch must return void");
    } else {
        static_assert(std::is_convertible_v<Result, std::vector<R>>,
                      "microbatch::KeyedBatcher<Key, T, R>: process_batch must return "
                      "std::vector<R> with one result per item");
    }
}

/// Stores @p process as a function of (key, batch): as it is when it takes the key, else
/// wrapped so that the key is dropped.
template <class Key, class T, class R, class F>
UniqueFunction<keyed_batch_result_t<R>(const Key&, Batch<T>&)> wrap_keyed_process(F&& process) {
    using Stored = std::decay_t<F>;
    using Function = UniqueFunction<keyed_batch_result_t<R>(const Key&, Batch<T>&)>;
    if constexpr (std::is_invocable_v<Stored&, const Key&, Batch<T>&>) {
        check_keyed_result<R, std::invoke_result_t<Stored&, const Key&, Batch<T>&>>();
        return Function(std::forward<F>(process));
    } else {
        static_assert(std::is_invocable_v<Stored&, Batch<T>&>,
                      "microbatch::KeyedBatcher: process_batch must be callable as "
                      "f(const Key&, microbatch::Batch<T>&) or f(microbatch::Batch<T>&)");
        check_keyed_result<R, std::invoke_result_t<Stored&, Batch<T>&>>();
        return Function([function = Stored(std::forward<F>(process))](
                            const Key&, Batch<T>& batch) mutable -> keyed_batch_result_t<R> {
            return function(batch);
        });
    }
}

}  // namespace microbatch::detail
