#pragma once
/**
 * @file detail/handle_state.hpp
 * @brief `HandleState<R>`, the state a `Handle<R>` shares with the batch slot that completes it,
 *        and the per-thread block pool that recycles those states so that handle mode
 *        allocates nothing per item in the steady state.
 *
 * **Pool design.** States are carved out of blocks of `HandleStateBlock<R>::capacity` slots
 * (up to 32, about 2 KB). Each thread has, per result type `R`, one *current* block it hands
 * slots out of in order (no atomics) and a small cache of empty blocks. A block counts its slots
 * that are not yet retired; when a state's last reference goes, the state is destroyed on the
 * spot (its result and exception released) and its slot retired. The thread that retires a
 * block's last slot keeps the empty block in its own cache, or frees it when the cache is full.
 *
 * - Steady state: when the thread that submits also drops the last references (the usual
 *   submit, get, drop), blocks return to its own cache and are reused: no allocation per item.
 *   When the last references are dropped elsewhere (handles destroyed before their items
 *   finish, so the worker's completion lets go last; or handed to other threads), the
 *   submitting thread allocates one block per `capacity` items. A get() that races with the
 *   worker (which releases its reference just after publishing the result) may leave a block
 *   on either side.
 * - Memory bound: per thread and result type, one current block plus at most
 *   `HandleStatePool<R>::max_cached_blocks` empty ones (at most 16 KB); beyond that, a block
 *   lives exactly as long as one of its states is referenced (a long-lived handle keeps its
 *   whole block, about 2 KB, alive).
 * - Thread exit: the thread's pool frees its cached blocks and gives back the unused slots of
 *   its current block; that block is freed at once if its states are all gone, otherwise by the
 *   thread that releases its last state. No state depends on the thread that created it.
 *   States created or released on a thread whose pool is already destroyed (from another
 *   thread_local's destructor) bypass the pool.
 *
 * Under AddressSanitizer, unused and retired slots are poisoned, so a use after release is
 * still reported although the memory is not returned to the allocator.
 */

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <new>
#include <optional>
#include <utility>

#include "microbatch/detail/config.hpp"
#include "microbatch/detail/parking_lot.hpp"
#include "microbatch/outcome.hpp"

#if defined(__SANITIZE_ADDRESS__)
#define MICROBATCH_DETAIL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MICROBATCH_DETAIL_ASAN 1
#endif
#endif
#ifdef MICROBATCH_DETAIL_ASAN
#include <sanitizer/asan_interface.h>
#endif

namespace microbatch::detail {

/// Marks @p size bytes at @p address as unusable for AddressSanitizer (no-op otherwise).
/// Regions must not share an 8-byte granule with memory another thread (un)poisons concurrently.
inline void poison_memory(const void* address, std::size_t size) noexcept {
#ifdef MICROBATCH_DETAIL_ASAN
    __asan_poison_memory_region(address, size);
#else
    (void)address;
    (void)size;
#endif
}

/// Undoes poison_memory() (no-op without AddressSanitizer).
inline void unpoison_memory(const void* address, std::size_t size) noexcept {
#ifdef MICROBATCH_DETAIL_ASAN
    __asan_unpoison_memory_region(address, size);
#else
    (void)address;
    (void)size;
#endif
}

template <class R>
struct HandleStateBlock;
template <class R>
class HandleStatePool;

/**
 * @brief The state a Handle shares with the batch slot that will complete it.
 *
 * Two owners (the handle and the pending completion); the last one to let go destroys the state
 * and recycles its memory (see the file comment). Waiters park on a shared ParkingSpot, so a
 * state costs no mutex of its own. Works with move-only `R`.
 *
 * Thread safety: set() is called once by the completing thread while one other thread may wait
 * or poll; each owner calls release() exactly once, from any thread.
 */
template <class R>
class HandleState {
public:
    /**
     * @brief Returns a new state (not ready, no outcome, two references) from the calling
     *        thread's pool. Does not block; allocates only when the pool needs a new block.
     * @throws std::bad_alloc if that allocation fails.
     */
    static HandleState* create() { return HandleStatePool<R>::create(); }

    HandleState(const HandleState&) = delete;
    HandleState& operator=(const HandleState&) = delete;

    /// Stores the outcome and wakes waiters. Called exactly once, by the completing worker.
    void set(Outcome<R>&& outcome) noexcept {
        outcome_.emplace(std::move(outcome));
        // acq_rel: release publishes outcome_ to the reader; acquire pairs with a waiter's
        // fetch_or so that we see its waiting bit if it set it first.
        wake_waiter(this, word_.fetch_or(ready_bit, std::memory_order_acq_rel));
    }

    /// set() and then release() in one read-modify-write (the worker's completion of an item
    /// it claimed): stores the outcome, marks it ready and drops the worker's reference.
    void set_and_release(Outcome<R>&& outcome) noexcept {
        outcome_.emplace(std::move(outcome));
        // Adds the ready bit (not set yet: set() runs once) and subtracts one reference.
        // acq_rel: as set() and release() together.
        const std::uint32_t previous =
            word_.fetch_add(ready_bit - one_reference, std::memory_order_acq_rel);
        if ((previous & reference_mask) == one_reference) {
            destroy_and_recycle();  // the handle was gone: nobody waits, nobody reads
            return;
        }
        // The handle may destroy this state as soon as it sees the ready bit: from here on
        // only this address is used (to find the parking spot), never the state.
        wake_waiter(this, previous);
    }

    /// True once set() has run; never blocks.
    bool ready() const noexcept {
        // acquire: pairs with set()'s release so a true result makes outcome_ readable.
        return (word_.load(std::memory_order_acquire) & ready_bit) != 0;
    }

    /**
     * @brief Called by the worker before the item's batch runs: claims the item for processing.
     *        False if the handle cancelled it first (cancel() then completed the state itself).
     */
    bool try_claim() noexcept {
        // relaxed: only the order of the two read-modify-writes on status_ decides who won; the
        // loser reads nothing the winner wrote (the worker does not touch outcome_).
        return (word_.fetch_or(claimed_bit, std::memory_order_relaxed) & cancelled_bit) == 0;
    }

    /**
     * @brief Called through the handle: completes the state with @p outcome unless the worker
     *        already claimed the item (or it is complete). True if the cancel won.
     */
    bool cancel(Outcome<R>&& outcome) noexcept {
        // relaxed: see try_claim(); set() below publishes the outcome with release.
        std::uint32_t status = word_.load(std::memory_order_relaxed);
        do {
            if ((status & (claimed_bit | cancelled_bit | ready_bit)) != 0) {
                return false;
            }
        } while (!word_.compare_exchange_weak(status, status | cancelled_bit,
                                              std::memory_order_relaxed));
        set(std::move(outcome));
        return true;
    }

    /// Blocks until set() has run. The caller must own a reference.
    void wait() noexcept {
        if (spin_until_ready()) {
            return;
        }
        ParkingSpot& spot = parking_spot_for(this);
        std::unique_lock<std::mutex> lock(spot.mutex);
        if (announce_waiter()) {
            return;
        }
        spot.condition.wait(lock, [this] { return ready(); });
    }

    /// Blocks until set() has run or @p deadline has passed; true if ready.
    template <class Clock, class Duration>
    bool wait_until(const std::chrono::time_point<Clock, Duration>& deadline) noexcept {
        if (spin_until_ready()) {
            return true;
        }
        ParkingSpot& spot = parking_spot_for(this);
        std::unique_lock<std::mutex> lock(spot.mutex);
        if (announce_waiter()) {
            return true;
        }
        return spot.condition.wait_until(lock, deadline, [this] { return ready(); });
    }

    /// The stored outcome; only after ready() returned true (or wait() returned).
    Outcome<R>& outcome() noexcept { return *outcome_; }

    /// Drops one of the two references; the last one destroys the state and recycles its slot.
    void release() noexcept {
        // acq_rel: the destroying side must see every write the other owner made before letting
        // go (its reads of outcome_ included).
        if ((word_.fetch_sub(one_reference, std::memory_order_acq_rel) & reference_mask) ==
            one_reference) {
            destroy_and_recycle();
        }
    }

private:
    friend struct HandleStateBlock<R>;

    static constexpr std::uint32_t ready_bit = 1;
    static constexpr std::uint32_t waiting_bit = 2;
    static constexpr std::uint32_t claimed_bit = 4;    // the worker took the item (try_claim)
    static constexpr std::uint32_t cancelled_bit = 8;  // the handle cancelled it first
    // The two owners' references count in the same word as the status bits, from bit 8, so
    // that the worker can mark the outcome ready and let go in one operation.
    static constexpr std::uint32_t one_reference = 256;
    static constexpr std::uint32_t reference_mask = ~std::uint32_t{255};

    explicit HandleState(HandleStateBlock<R>* block) noexcept : block_(block) {}
    ~HandleState() = default;

    bool spin_until_ready() const noexcept {
        // Results usually arrive within a batch's processing time; a short spin avoids a futex
        // round trip when they are nearly there.
        for (int i = 0; i < 64; ++i) {
            if (ready()) {
                return true;
            }
        }
        return false;
    }

    // Sets the waiting bit under the spot's mutex; returns true if the result is already there.
    bool announce_waiter() noexcept {
        // acq_rel: acquire so a ready result's outcome_ is visible; release is harmless.
        return (word_.fetch_or(waiting_bit, std::memory_order_acq_rel) & ready_bit) != 0;
    }

    // After the ready bit went in: wakes the waiter whose bit @p previous shows, if any, on
    // the parking spot of @p address (static: the state itself may be gone by now).
    static void wake_waiter(const void* address, std::uint32_t previous) noexcept {
        if ((previous & waiting_bit) != 0) {
            ParkingSpot& spot = parking_spot_for(address);
            // Taking the mutex orders this notify after the waiter's wait() began (it holds
            // the mutex from setting its bit until it sleeps), so the wake-up is not lost.
            { std::lock_guard<std::mutex> lock(spot.mutex); }
            spot.condition.notify_all();
        }
    }

    void destroy_and_recycle() noexcept {
        HandleStateBlock<R>* const block = block_;
        block->destroy(this);  // runs ~R and ~exception_ptr now, not when the slot is reused
        HandleStatePool<R>::retire(block);
    }

    // Status bits (ready, waiting, claimed, cancelled) and, from bit 8, the references: two
    // owners at first, the handle and the pending completion.
    std::atomic<std::uint32_t> word_{2 * one_reference};
    HandleStateBlock<R>* const block_;  // where this state's memory comes from
    std::optional<Outcome<R>> outcome_;
};

/**
 * @brief A block of slots for `HandleState<R>`, handed out in order by one thread's pool and
 *        freed or reused once every slot has been retired.
 *
 * Thread safety: construct() only by the pool that owns the block as its current block;
 * destroy() by the state's last owner, on any thread; `unretired` is atomic.
 */
template <class R>
struct HandleStateBlock {
    /// Bytes per slot: the state's size rounded up to whole 8-byte AddressSanitizer granules, so
    /// that threads poisoning neighbouring slots never share a granule. Still a multiple of the
    /// state's alignment (a power of two: either it divides 8 or it already divides the size).
    static constexpr std::size_t slot_size = (sizeof(HandleState<R>) + 7) / 8 * 8;
    /// Alignment of the first slot: the state's, and at least a granule's.
    static constexpr std::size_t slot_alignment = std::max<std::size_t>(alignof(HandleState<R>), 8);
    /// Slots per block: about 2 KB of states, at most 32 and at least one.
    static constexpr std::uint32_t capacity =
        static_cast<std::uint32_t>(std::clamp<std::size_t>(2048 / slot_size, 1, 32));

    HandleStateBlock() noexcept { poison_memory(storage, sizeof(storage)); }
    ~HandleStateBlock() { unpoison_memory(storage, sizeof(storage)); }
    HandleStateBlock(const HandleStateBlock&) = delete;
    HandleStateBlock& operator=(const HandleStateBlock&) = delete;

    /// Constructs a fresh state in slot @p index. Does not allocate or throw.
    HandleState<R>* construct(std::uint32_t index) noexcept {
        void* const slot = storage + std::size_t{index} * slot_size;
        unpoison_memory(slot, slot_size);
        return ::new (slot) HandleState<R>(this);
    }

    /// Destroys @p state (one of this block's); the caller retires its slot afterwards.
    void destroy(HandleState<R>* state) noexcept {
        state->~HandleState();
        poison_memory(state, slot_size);
    }

    /// Slots not yet retired: set to `capacity` when the block is taken into use; each state's
    /// last release, and the owning pool for slots it never handed out, subtract from it.
    std::atomic<std::uint32_t> unretired{0};
    /// The slots, `slot_size` bytes apart.
    alignas(slot_alignment) unsigned char storage[capacity * slot_size];
};

/**
 * @brief One thread's pool of `HandleState<R>` slots: its current block and a bounded cache of
 *        empty blocks (see the file comment for the design).
 *
 * Thread safety: the static functions may be called from any thread, and each touches only the
 * calling thread's pool (plus a block's atomic count). No locks, no blocking.
 */
template <class R>
class HandleStatePool {
public:
    /// The block type.
    using Block = HandleStateBlock<R>;
    /// States carved from one block allocation.
    static constexpr std::uint32_t states_per_block = Block::capacity;
    /// Empty blocks a thread keeps for reuse: up to 8, and at most 16 KB of them (none for
    /// huge `R`).
    static constexpr std::size_t max_cached_blocks =
        std::min<std::size_t>(8, 16 * 1024 / sizeof(Block));

    HandleStatePool() noexcept = default;
    HandleStatePool(const HandleStatePool&) = delete;
    HandleStatePool& operator=(const HandleStatePool&) = delete;

    /// Thread exit: frees the cached blocks and gives back the unused slots of the current one.
    ~HandleStatePool() {
        destroyed_ = true;  // from here on, this thread's create() and retire() bypass the pool
        while (cached_count_ > 0) {
            delete cached_[--cached_count_];
        }
        if (current_ != nullptr) {
            const std::uint32_t unused = states_per_block - next_slot_;
            if (subtract(*current_, unused)) {
                delete current_;  // every state handed out from it is already gone
            }
            current_ = nullptr;
        }
    }

    /**
     * @brief Returns a new state from the calling thread's pool.
     * @throws std::bad_alloc when a new block is needed and cannot be allocated (the pool is
     *         left unchanged).
     */
    static HandleState<R>* create() {
        if (HandleStatePool* pool = local()) {
            return pool->next_state();
        }
        // This thread's pool is already destroyed: a block for this one state.
        Block* const block = new Block;
        // relaxed: the block is private to this thread until the state is handed out, and
        // handing it out (through the batcher's slot) is what publishes it.
        block->unretired.store(1, std::memory_order_relaxed);
        return block->construct(0);
    }

    /// Retires one slot of @p block, whose state was just destroyed. The thread that retires
    /// the last slot keeps the empty block in its cache, or frees it if the cache is full.
    static void retire(Block* block) noexcept {
        if (!subtract(*block, 1)) {
            return;
        }
        HandleStatePool* const pool = local();
        if (pool != nullptr && pool->cached_count_ < max_cached_blocks) {
            pool->cached_[pool->cached_count_++] = block;
        } else {
            delete block;
        }
    }

private:
    // The calling thread's pool; null once it has been destroyed (during thread exit).
    static HandleStatePool* local() noexcept {
        if (destroyed_) {
            return nullptr;
        }
        static thread_local HandleStatePool pool;
        return &pool;
    }

    // Subtracts @p count from the block's unretired slots; true if none are left.
    static bool subtract(Block& block, std::uint32_t count) noexcept {
        // acq_rel: release orders this thread's use and destruction of its states before the
        // block is reused or freed; acquire, for whoever retires the last slot, makes the other
        // threads' destructions visible before it reuses or frees the block.
        return block.unretired.fetch_sub(count, std::memory_order_acq_rel) == count;
    }

    HandleState<R>* next_state() {
        if (current_ == nullptr) {
            Block* const block = cached_count_ > 0 ? cached_[--cached_count_] : new Block;
            // relaxed: the block is private to this thread until one of its states is handed
            // out (through the batcher's slot), which publishes this store with it.
            block->unretired.store(states_per_block, std::memory_order_relaxed);
            current_ = block;
            next_slot_ = 0;
        }
        Block* const block = current_;
        const std::uint32_t index = next_slot_++;
        if (next_slot_ == states_per_block) {
            // Every slot is handed out: the block now belongs to its states, and may be retired
            // on another thread as soon as the last one is released. Do not touch it again.
            current_ = nullptr;
        }
        return block->construct(index);
    }

    Block* current_ = nullptr;     // the block slots are handed out from; null if none
    std::uint32_t next_slot_ = 0;  // the next unused slot of current_
    std::size_t cached_count_ = 0;
    std::array<Block*, max_cached_blocks> cached_{};  // empty blocks, [0, cached_count_)

    // Set when this thread's pool is destroyed. A trivially destructible thread_local, so it
    // can still be read by thread_local destructors that run after the pool's.
    static inline thread_local bool destroyed_ = false;
};

}  // namespace microbatch::detail
