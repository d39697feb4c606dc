#pragma once
/**
 * @file detail/aggregator_shards.hpp
 * @brief Internal shard storage behind `microbatch::Aggregator`: atomic shards for small
 *        trivially copyable values, hand-off node shards for everything else.
 *
 * Two layouts, chosen at compile time by `is_atomic_backed`:
 *
 * - `AtomicShards`: one `std::atomic<T>` per cache line. A merge is one atomic read-modify-write
 *   on the calling thread's shard (`fetch_add`, or a CAS loop); `take()` is one `exchange` with
 *   the identity per shard. No allocation, no waiting.
 *
 * - `NodeShards`: each shard owns one heap node holding a `T` (its "home" accumulator), reached
 *   through an atomic pointer. Whoever wants to touch the node takes it with
 *   `exchange(nullptr)`, works on it alone, and puts it back with a release store. A merge that
 *   finds the node taken never waits: it tries a few other shards, and if every one is busy it
 *   wraps its value in a fresh node and pushes that onto the shard's lock-free overflow stack,
 *   which the next holder folds into the home node. Readers (`value()`, `take()`) do wait for
 *   the node, but only for merges already holding it (see `ReaderHold`).
 */

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <thread>
#include <type_traits>
#include <utility>

#include "microbatch/detail/config.hpp"

namespace microbatch::detail {

/// Largest number of shards an aggregator accepts.
inline constexpr std::size_t aggregator_max_shards = 1024;

/// Smallest power of two >= @p value (1 for 0 and 1). @p value must be <= 2^(bits-1).
constexpr std::size_t aggregator_round_up_pow2(std::size_t value) noexcept {
    std::size_t result = 1;
    while (result < value) {
        result <<= 1;
    }
    return result;
}

/// The default shard count: the hardware thread count rounded up to a power of two (>= 1).
inline std::size_t aggregator_default_shards() noexcept {
    const std::size_t hardware = std::thread::hardware_concurrency();  // 0 when unknown
    return aggregator_round_up_pow2(std::clamp<std::size_t>(hardware, 1, aggregator_max_shards));
}

/**
 * Dense per-thread numbers that spread threads over shards: a thread takes the lowest number no
 * live thread holds when it first merges, and gives it back when it exits. So the threads alive
 * at any moment hold small, distinct numbers, and up to N of them land on N distinct shards of
 * an aggregator with at least N shards, however often threads come and go (a benchmark harness
 * or a resized pool would otherwise drift into collisions).
 *
 * Taking a number is lock-free (a CAS on a bitmap word, once per thread); giving it back is one
 * `fetch_and`. All relaxed: the numbers are only hints, nothing is published through them.
 * Beyond `capacity` live threads, numbers come from a plain counter (shared shards then).
 */
class AggregatorThreadNumbers {
public:
    static constexpr std::size_t capacity = 1024;

    static std::size_t take() noexcept {
        for (std::size_t word = 0; word < words; ++word) {
            // relaxed (all accesses): the numbers are hints; nothing is published through them.
            std::uint64_t bits = used_[word].load(std::memory_order_relaxed);
            while (bits != ~std::uint64_t{0}) {
                std::size_t bit = 0;
                while ((bits >> bit) & 1U) {
                    ++bit;
                }
                if (used_[word].compare_exchange_weak(bits, bits | (std::uint64_t{1} << bit),
                                                      std::memory_order_relaxed)) {
                    return word * 64 + bit;
                }
            }
        }
        return capacity + overflow_.fetch_add(1, std::memory_order_relaxed);
    }

    static void give_back(std::size_t number) noexcept {
        if (number < capacity) {
            // relaxed: a hint going back to the pool; nothing is published through it.
            used_[number / 64].fetch_and(~(std::uint64_t{1} << (number % 64)),
                                         std::memory_order_relaxed);
        }
    }

private:
    static constexpr std::size_t words = capacity / 64;
    // Trivially destructible, so still valid while late thread_local destructors run.
    inline static std::atomic<std::uint64_t> used_[words] = {};
    inline static std::atomic<std::size_t> overflow_{0};
};

/// The calling thread's number (see AggregatorThreadNumbers); taken on first use, given back
/// when the thread exits.
inline std::size_t aggregator_thread_hint() noexcept {
    struct Holder {
        Holder() noexcept : number(AggregatorThreadNumbers::take()) {}
        Holder(const Holder&) = delete;
        Holder& operator=(const Holder&) = delete;
        ~Holder() { AggregatorThreadNumbers::give_back(number); }
        std::size_t number;
    };
    thread_local const Holder holder;
    return holder.number;
}

/// Waits politely in a retry loop: spins briefly, then yields the core (the machine may have
/// fewer cores than threads, and the thread being waited for may need ours).
inline void aggregator_backoff(unsigned& attempts) noexcept {
    if (++attempts > 16) {
        std::this_thread::yield();
    }
}

/**
 * Whether values of type `T` live directly in `std::atomic<T>` shards: trivially copyable,
 * always lock-free as an atomic, and comparable bit for bit by `compare_exchange`: no padding
 * bits, which could make a CAS fail forever. `float` and `double` qualify although their
 * object representations are not unique (NaN payloads, -0.0): the expected value of each CAS
 * was itself loaded from the atomic, bit for bit. (`long double` does not: its padding bytes
 * need not survive a copy.)
 */
template <class T, bool = std::is_trivially_copyable_v<T>>
struct is_atomic_backed : std::false_type {};

template <class T>
struct is_atomic_backed<T, true>
    : std::bool_constant<std::atomic<T>::is_always_lock_free &&
                         (std::has_unique_object_representations_v<T> || std::is_same_v<T, float> ||
                          std::is_same_v<T, double>)> {};

/// Whether `Op` has the optional fast path `op.atomic_combine(std::atomic<T>&, const T&)`.
/// Only instantiated for atomic-backed `T` (naming `std::atomic<T>` requires it).
template <class Op, class = void>
struct has_atomic_combine : std::false_type {};

template <class Op>
struct has_atomic_combine<Op, std::void_t<decltype(std::declval<const Op&>().atomic_combine(
                                  std::declval<std::atomic<typename Op::value_type>&>(),
                                  std::declval<const typename Op::value_type&>()))>>
    : std::true_type {};

/**
 * A fixed-size heap array of (typically cache-line-aligned) elements, each constructed from the
 * same arguments. Unlike `new T[n]` it needs no default constructor; unlike `std::vector` it
 * never moves elements (which hold atomics). Constness is shallow, as for `unique_ptr`: the
 * shards are shared mutable state even in a `const` aggregator.
 */
template <class T>
class AggregatorShardArray {
public:
    template <class... Args>
    explicit AggregatorShardArray(std::size_t size, const Args&... args) : storage_(size) {
        // One element at a time, counting as we go: if a constructor throws, storage_'s
        // destructor (a fully constructed member) destroys exactly the elements built so far.
        for (; storage_.constructed < size; ++storage_.constructed) {
            ::new (static_cast<void*>(storage_.data + storage_.constructed)) T(args...);
        }
    }

    AggregatorShardArray(const AggregatorShardArray&) = delete;
    AggregatorShardArray& operator=(const AggregatorShardArray&) = delete;

    std::size_t size() const noexcept { return storage_.constructed; }
    T& operator[](std::size_t index) const noexcept { return storage_.data[index]; }

private:
    struct Storage {
        explicit Storage(std::size_t size)
            : data(static_cast<T*>(
                  ::operator new (sizeof(T) * size, std::align_val_t{alignof(T)}))) {}
        Storage(const Storage&) = delete;
        Storage& operator=(const Storage&) = delete;
        ~Storage() {
            while (constructed > 0) {
                data[--constructed].~T();
            }
            ::operator delete (data, std::align_val_t{alignof(T)});
        }

        T* data;
        std::size_t constructed = 0;
    };

    Storage storage_;
};

/**
 * Shards that are plain `std::atomic<T>`, one per cache line.
 *
 * Every access is `memory_order_relaxed`: the shard value is the only data involved (nothing
 * else is published through it), atomicity of each read-modify-write alone makes merges exact,
 * and coherence guarantees that a read which happens after a merge (for example after joining
 * the merging thread) sees that merge or a later value.
 */
template <class Op>
class AtomicShards {
public:
    using value_type = typename Op::value_type;

    AtomicShards(const Op& op, std::size_t count)
        : shards_(count, op.identity()), mask_(count - 1) {}

    /// One atomic read-modify-write on the calling thread's shard. Wait-free with an
    /// `atomic_combine` built on `fetch_add`; lock-free with a CAS loop (a failed CAS means
    /// another merge on the same shard succeeded).
    void merge(const Op& op, const value_type& value) const {
        std::atomic<value_type>& target = shards_[aggregator_thread_hint() & mask_].value;
        if constexpr (has_atomic_combine<Op>::value) {
            op.atomic_combine(target, value);
        } else {
            // relaxed (here and below): see the class comment; the value is the only data.
            value_type current = target.load(std::memory_order_relaxed);
            for (;;) {
                value_type next = current;
                op.combine(next, value_type(value));
                if (target.compare_exchange_weak(current, next, std::memory_order_relaxed,
                                                 std::memory_order_relaxed)) {
                    return;
                }
            }
        }
    }

    value_type value(const Op& op) const {
        value_type result = op.identity();
        for (std::size_t i = 0; i < shards_.size(); ++i) {
            // relaxed: see the class comment; coherence still shows every earlier merge.
            op.combine(result, shards_[i].value.load(std::memory_order_relaxed));
        }
        return result;
    }

    /// Each shard's exchange is ordered with every merge on that shard (all are read-modify-
    /// writes of one atomic), so each merge lands either before it (in this result) or after
    /// it (in the shard, for the next take): exactly once.
    value_type take(const Op& op) const {
        const value_type identity = op.identity();
        value_type result = identity;
        for (std::size_t i = 0; i < shards_.size(); ++i) {
            // relaxed: see the class comment; exactness comes from RMW atomicity alone.
            op.combine(result, shards_[i].value.exchange(identity, std::memory_order_relaxed));
        }
        return result;
    }

    std::size_t size() const noexcept { return shards_.size(); }

private:
    // alignas: one shard per cache line, so threads merging into different shards never
    // invalidate each other's line.
    struct alignas(cache_line_size) Shard {
        explicit Shard(const value_type& initial) noexcept : value(initial) {}
        std::atomic<value_type> value;
    };

    AggregatorShardArray<Shard> shards_;
    std::size_t mask_;  // shard count - 1; the count is a power of two
};

/**
 * Shards holding a heap node each, handed from thread to thread by pointer exchange.
 *
 * Progress: `merge` is lock-free. Its steps are one `exchange` per probed shard (a bounded
 * number), the combine itself, and, when every probed shard is busy, a Treiber-stack push whose
 * CAS fails only when another thread's push or drain succeeded. It never waits for another
 * thread. (The allocator and the user's combine are outside this guarantee; glibc's malloc, for
 * one, takes internal locks.) Readers are blocking: see `ReaderHold`.
 */
template <class Op>
class NodeShards {
public:
    using value_type = typename Op::value_type;

    NodeShards(const Op& op, std::size_t count) : shards_(count, op), mask_(count - 1) {}

    template <class V>
    void merge(const Op& op, V&& value) const {
        const std::size_t hint = aggregator_thread_hint();
        const std::size_t probes = std::min<std::size_t>(shards_.size(), max_probes);
        for (std::size_t k = 0; k < probes; ++k) {
            Shard& shard = shards_[(hint + k) & mask_];
            // A reader is waiting for this shard's node: leave it alone so the reader is
            // served. seq_cst (the default): pairs with the reader's increment, see ReaderHold.
            if (shard.readers_waiting.load() != 0) {
                continue;
            }
            // acquire: the previous holder released the node (MergeHold / ReaderHold), so its
            // writes to node->value are visible before we combine into it.
            Node* home = shard.home.exchange(nullptr, std::memory_order_acquire);
            if (home == nullptr) {
                continue;  // another merge or a reader holds it: try the next shard
            }
            MergeHold hold(shard, home);
            fold_overflow(op, shard, *home);
            op.combine(home->value, std::forward<V>(value));
            return;
        }
        // Every probed shard is busy right now: leave the value, whole, for the next holder.
        Node* node = new Node(std::forward<V>(value));
        push_overflow(shards_[hint & mask_], node, node);
    }

    value_type value(const Op& op) const {
        value_type result = op.identity();
        for (std::size_t i = 0; i < shards_.size(); ++i) {
            Shard& shard = shards_[i];
            // Copy under the hold, combine after releasing it: merges wait for nothing, but
            // the shorter the hold, the fewer of them take the allocating overflow path.
            value_type copy = [&] {
                ReaderHold hold(shard);
                fold_overflow(op, shard, *hold.node);
                return value_type(hold.node->value);
            }();
            op.combine(result, std::move(copy));
        }
        return result;
    }

    /// A merge combined into the home node before we take it, or pushed onto the overflow
    /// stack before our drain, is in the result; any other merge goes into the node or the
    /// stack after we put the node back, for the next take. Each node is reachable from exactly
    /// one place at any time, so nothing is lost or counted twice.
    value_type take(const Op& op) const {
        value_type result = op.identity();
        for (std::size_t i = 0; i < shards_.size(); ++i) {
            Shard& shard = shards_[i];
            value_type fresh = op.identity();  // before the hold: identity() may throw
            value_type taken = [&] {
                ReaderHold hold(shard);
                fold_overflow(op, shard, *hold.node);
                return std::exchange(hold.node->value, std::move(fresh));
            }();
            op.combine(result, std::move(taken));
        }
        return result;
    }

    std::size_t size() const noexcept { return shards_.size(); }

private:
    /// Shards a merge tries before falling back to an overflow node.
    static constexpr std::size_t max_probes = 4;

    struct Node {
        template <class V>
        explicit Node(V&& initial) : value(std::forward<V>(initial)) {}
        value_type value;
        Node* next = nullptr;  // link in an overflow stack; written only by the pusher
    };

    // alignas: one shard per cache line, so merges into different shards do not contend. The
    // three atomics of a shard share its line: normally only one thread uses a shard.
    struct alignas(cache_line_size) Shard {
        explicit Shard(const Op& op) : home(new Node(op.identity())) {}
        Shard(const Shard&) = delete;
        Shard& operator=(const Shard&) = delete;
        ~Shard() {
            // relaxed: the aggregator is being destroyed, so no other thread uses it.
            delete home.load(std::memory_order_relaxed);
            Node* node = overflow.load(std::memory_order_relaxed);
            while (node != nullptr) {
                delete std::exchange(node, node->next);
            }
        }

        /// The accumulator; null while a merge or a reader holds it.
        std::atomic<Node*> home;
        /// Treiber stack of whole merges that found the shards busy.
        std::atomic<Node*> overflow{nullptr};
        /// Readers waiting for or holding `home`; merges leave the node alone while non-zero.
        std::atomic<std::uint32_t> readers_waiting{0};
    };

    /// Puts a merge's node back on every exit path, exceptions included, so that readers
    /// (which wait for the node) can never be stranded by a throwing combine.
    struct MergeHold {
        MergeHold(Shard& held, Node* taken) noexcept : shard(held), node(taken) {}
        MergeHold(const MergeHold&) = delete;
        MergeHold& operator=(const MergeHold&) = delete;
        ~MergeHold() {
            // release: the next holder's acquire exchange sees our writes to node->value.
            shard.home.store(node, std::memory_order_release);
        }
        Shard& shard;
        Node* node;
    };

    /**
     * A reader's exclusive hold on a shard's home node. It first announces itself in
     * `readers_waiting` (seq_cst, pairing with the merges' check), so merges that start after
     * that leave the node alone; then it spins until the node is free. It therefore waits only
     * for merges that were already past their check when it arrived — a bounded number, each
     * one combine long — and cannot be starved by a stream of new merges. A merge preempted
     * while holding the node delays the reader until it runs again: readers are blocking.
     */
    struct ReaderHold {
        explicit ReaderHold(Shard& held) : shard(held) {
            shard.readers_waiting.fetch_add(1);
            unsigned attempts = 0;
            // acquire: pairs with the previous holder's release store of the node.
            while ((node = shard.home.exchange(nullptr, std::memory_order_acquire)) == nullptr) {
                aggregator_backoff(attempts);
            }
        }
        ReaderHold(const ReaderHold&) = delete;
        ReaderHold& operator=(const ReaderHold&) = delete;
        ~ReaderHold() {
            // release: the next holder sees our writes to node->value (take() resets it).
            shard.home.store(node, std::memory_order_release);
            // relaxed: the counter only steers merges away; the node itself is handed over
            // by the exchange/store pair above.
            shard.readers_waiting.fetch_sub(1, std::memory_order_relaxed);
        }
        Shard& shard;
        Node* node = nullptr;
    };

    /// On destruction pushes the still-unfolded part of a drained overflow chain back.
    struct ReturnToOverflow {
        ReturnToOverflow(Shard& target, Node*& remaining) noexcept
            : stack_owner(target), pending(remaining) {}
        ReturnToOverflow(const ReturnToOverflow&) = delete;
        ReturnToOverflow& operator=(const ReturnToOverflow&) = delete;
        ~ReturnToOverflow() {
            if (pending != nullptr) {
                Node* last = pending;
                while (last->next != nullptr) {
                    last = last->next;
                }
                push_overflow(stack_owner, pending, last);
            }
        }
        Shard& stack_owner;
        Node*& pending;  // the drain loop's cursor: null once everything is folded
    };

    /// Pushes the chain first..last (already linked) onto the shard's overflow stack.
    static void push_overflow(Shard& shard, Node* first, Node* last) noexcept {
        // relaxed: the head is only used as the value to link to, never dereferenced here.
        Node* head = shard.overflow.load(std::memory_order_relaxed);
        do {
            last->next = head;
            // release on success: publishes the nodes' values and links to the drainer's
            // acquire exchange. relaxed on failure: we just retry with the new head. No ABA
            // hazard: nodes are only ever removed all at once, by exchange.
        } while (!shard.overflow.compare_exchange_weak(head, first, std::memory_order_release,
                                                       std::memory_order_relaxed));
    }

    /// Folds every node on the shard's overflow stack into @p into; called by a holder only.
    static void fold_overflow(const Op& op, Shard& shard, Node& into) {
        // relaxed: a cheap emptiness check; the exchange below does the acquiring.
        if (shard.overflow.load(std::memory_order_relaxed) == nullptr) {
            return;
        }
        // acquire: pairs with the pushers' release CAS, so the node values are visible.
        Node* rest = shard.overflow.exchange(nullptr, std::memory_order_acquire);
        // If a combine throws, the nodes not yet folded go back on the stack (they belong to
        // other, finished merges); the node being combined is dropped (the combine may have
        // consumed part of it, so pushing it back could count it twice).
        ReturnToOverflow return_rest(shard, rest);
        while (rest != nullptr) {
            std::unique_ptr<Node> node(std::exchange(rest, rest->next));
            op.combine(into.value, std::move(node->value));
        }
    }

    AggregatorShardArray<Shard> shards_;
    std::size_t mask_;  // shard count - 1; the count is a power of two
};

}  // namespace microbatch::detail
