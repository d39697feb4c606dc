#pragma once
/**
 * @file detail/batcher_core.hpp
 * @brief `detail::BatcherCore<T, R, Clock>`: the state and machinery behind
 *        `microbatch::Batcher`, which derives from it privately and adds the documented API.
 *
 * Everything here is an implementation detail. The member functions are defined in one file
 * per step of an item's path, included at the end: detail/batcher_submit.hpp (claiming a
 * slot and writing the item), batcher_seal.hpp (sealing a batch and handing it to the
 * executor), batcher_run.hpp (running it and completing its items); beside them the sealing
 * policy, the timer, item costs, deadlines, bulk claims, per-item outcomes, fair admission,
 * the control calls and close.
 */

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "microbatch/batch.hpp"
#include "microbatch/clock.hpp"
#include "microbatch/close_result.hpp"
#include "microbatch/detail/admission_queue.hpp"
#include "microbatch/detail/batcher_ring.hpp"
#include "microbatch/detail/batcher_slots.hpp"
#include "microbatch/detail/completion.hpp"
#include "microbatch/detail/config.hpp"
#include "microbatch/detail/stats_recorder.hpp"
#include "microbatch/detail/unique_function.hpp"
#include "microbatch/errors.hpp"
#include "microbatch/executor.hpp"
#include "microbatch/handle.hpp"
#include "microbatch/item_cost.hpp"
#include "microbatch/item_deadline.hpp"
#include "microbatch/options.hpp"
#include "microbatch/outcome.hpp"
#include "microbatch/seal_policy.hpp"
#include "microbatch/stats.hpp"
#include "microbatch/submit_result.hpp"
#include "microbatch/thread_pool.hpp"

namespace microbatch {
namespace detail {

template <class R>
struct BatchOutcomes;  // detail/batcher_outcomes.hpp

/**
 * @brief The state and member functions of `Batcher<T, R, Clock>` (see batcher.hpp for what
 *        they guarantee). Batcher inherits privately, so none of this is part of the API.
 *
 * Thread safety, blocking and exceptions: as documented at the Batcher member each function
 * implements; the internal steps state their own contracts where they are defined.
 */
template <class T, class R, class Clock>
class BatcherCore {
protected:
    // ---- Types and constants Batcher re-exports (documented there) -------------------------
    using deadline_type = ItemDeadline<Clock>;
    using batch_result_type = std::conditional_t<std::is_void_v<R>, void, std::vector<R>>;
    using process_function = detail::UniqueFunction<batch_result_type(Batch<T>&)>;
    using outcome_result_type = std::vector<Outcome<R>>;
    using outcome_function = detail::UniqueFunction<outcome_result_type(Batch<T>&)>;
    // Most slots one bulk claim takes (a larger run takes several claims). Bounds the stray
    // increments a claim racing a seal can leave on the head word.
    static constexpr std::size_t max_bulk_claim = 256;

    // Batcher's constructors store process_batch and call initialise() in their bodies.
    BatcherCore(Options options, Clock clock)
        : options_(std::move(options)), clock_(std::move(clock)) {}
    BatcherCore(const BatcherCore&) = delete;
    BatcherCore& operator=(const BatcherCore&) = delete;
    ~BatcherCore() = default;  // Batcher's destructor closes first

    // ---- The bodies of Batcher's control calls: detail/batcher_control.hpp ------------------
    void flush();
    void wait_idle();
    std::size_t waiting_producers() const;  // detail/batcher_admission.hpp
    Stats stats() const noexcept;
    std::size_t pending() const noexcept;
    std::size_t in_flight() const noexcept;
    void set_max_batch_size(std::size_t size);
    void set_max_delay(std::chrono::nanoseconds delay);
    void set_max_in_flight(std::size_t limit);
    std::size_t max_batch_size() const noexcept;
    std::chrono::nanoseconds max_delay() const noexcept;
    std::size_t max_in_flight() const noexcept;
    bool is_closed() const noexcept {
        // acquire: a true answer happens-after the close that set the bit. Lane 0 is closed
        // first, so this turns true as soon as close() has begun.
        return (lanes_[0].head.load(std::memory_order_acquire) & closed_bit) != 0;
    }

    // ---- The head word, lanes and batch buffers: detail/batcher_ring.hpp --------------------
    using Lane = detail::BatcherLane;
    using Buffer = detail::BatcherBuffer;
    static constexpr std::uint64_t count_mask = detail::head_word::count_mask;
    static constexpr std::uint64_t tag_mask = detail::head_word::tag_mask;
    static constexpr std::uint64_t closed_bit = detail::head_word::closed_bit;
    static constexpr std::uint64_t sealed_count = detail::head_word::sealed_count;
    static constexpr std::size_t max_buffers = detail::head_word::max_buffers;
    static constexpr std::int64_t unset_time = detail::head_word::unset_time;
    static constexpr std::uint32_t no_buffer = detail::head_word::no_buffer;
    static std::uint64_t make_head(std::uint64_t sequence, std::uint64_t buffer) noexcept {
        return detail::head_word::make_head(sequence, buffer);
    }
    static std::uint32_t buffer_of(std::uint64_t head) noexcept {
        return detail::head_word::buffer_of(head);
    }
    static std::uint64_t tag_of(std::uint64_t head) noexcept {
        return detail::head_word::tag_of(head);
    }
    enum WaitMode { wait_never, wait_forever, wait_until_deadline };
    using Deadline = std::chrono::steady_clock::time_point;  // timed submits: steady clock
    template <class Rep, class Period>
    static Deadline deadline_after(const std::chrono::duration<Rep, Period>& timeout) {
        return detail::steady_deadline_after(timeout);
    }

    struct ItemsDeleter {
        std::size_t count;
        void operator()(T* items) const noexcept { std::allocator<T>().deallocate(items, count); }
    };
    void initialise();  // detail/batcher_seal.hpp

    // Items in the batch being filled described by @p head (0 if it is sealed or closed).
    std::uint64_t filling_count(std::uint64_t head) const noexcept {
        const std::uint64_t count = head & count_mask;
        if ((head & closed_bit) != 0 || count >= batch_size_) {
            return 0;
        }
        // relaxed: see Buffer::start; a stale value only skews a statistic.
        const std::uint64_t start = buffers_[buffer_of(head)].start.load(std::memory_order_relaxed);
        return count > start ? count - start : 0;
    }

    // ---- Load, policy inputs: detail/batcher_policy.hpp ------------------------------------
    LoadEstimate load_estimate() const noexcept;
    SealInputs policy_inputs(SealTrigger trigger, std::int64_t now, std::size_t count,
                             std::size_t pending, std::size_t bound, std::int64_t opened_at,
                             std::int64_t last_change_at) const noexcept;
    // Batches dispatched and not finished: the in-flight limit's count. @p order is the
    // finished count's load: seq_cst where it is one half of a Dekker handshake (a finishing
    // worker's seq_cst increment against the timer's or a cost waiter's announcement).
    std::uint64_t in_flight_batch_count(std::memory_order order) const noexcept {
        // acquire at least: a batch counted finished was counted dispatched before it ran, so
        // the dispatched count read next cannot be the smaller (relaxed: only a count).
        const std::uint64_t finished = finished_batches_.load(
            order == std::memory_order_seq_cst ? order : std::memory_order_acquire);
        const std::uint64_t dispatched = dispatched_batches_.load(std::memory_order_relaxed);
        return dispatched > finished ? dispatched - finished : 0;
    }
    // Accepted items of dispatched batches not yet finished (holes excluded). Can read low for
    // a moment: a hole's producer may count it finished before its batch is dispatched.
    std::uint64_t in_flight_item_count() const noexcept {
        // acquire, then relaxed: as in in_flight_batch_count(); a statistic and policy input.
        const std::uint64_t finished = finished_items_.load(std::memory_order_acquire);
        const std::uint64_t dispatched = dispatched_items_.load(std::memory_order_relaxed);
        return dispatched > finished ? dispatched - finished : 0;
    }
    // Items pending if the open batch holds @p count: those in flight plus @p count.
    std::size_t pending_with(std::uint64_t count) const noexcept {
        return static_cast<std::size_t>(in_flight_item_count() + count);
    }
    // With a batch size of 1 every claim fills and seals its batch: no partial batch ever
    // exists, so the policy's estimates, the free-worker seal and rule 5c's population sample
    // are never needed. Skipping them saves the worker ~300 instructions per (one-item) batch
    // and a read of each lane's head, a cache line the producers keep writing.
    bool every_claim_seals() const noexcept { return batch_size_ == 1; }
    // The size bound of the batch in buffer @p buffer (the batch size in force when it opened,
    // or fewer when the lane was short of free items).
    std::uint32_t bound_of(std::uint32_t buffer) const noexcept {
        // relaxed: see Buffer::start.
        return batch_size_ - buffers_[buffer].start.load(std::memory_order_relaxed);
    }
    void note_sealed(std::uint32_t size, std::int64_t now, std::int64_t opened_at,
                     bool at_arrival) noexcept;
    void refresh_producer_threshold() noexcept;
    void note_population(std::size_t pending) noexcept;
    void wake_timer();
    void seal_for_free_worker(std::int64_t now = unset_time);

    // ---- Submission: detail/batcher_submit.hpp --------------------------------------------

    static constexpr detail::NoCompletionStore<R> no_completion{};

    // Stores the callback (moved if the caller passed an rvalue, copied otherwise). Every
    // callback overload comes through here, so this is where a wrong signature is reported.
    template <class F>
    static auto emplacer(std::remove_reference_t<F>& callback) {
        static_assert(std::is_invocable_v<std::decay_t<F>&, Outcome<R>&&>,
                      "microbatch::Batcher: the callback must be callable as "
                      "void(microbatch::Outcome<R>&&), where R is the batcher's result type "
                      "(Outcome<void> for Batcher<T>)");
        return [&callback](detail::Completion<R>& slot) {
            if constexpr (std::is_invocable_v<std::decay_t<F>&, Outcome<R>&&>) {
                slot.emplace(std::forward<F>(callback));
                return true;
            } else {
                return false;  // not reached: the static_assert above failed
            }
        };
    }

    template <class U>
    SubmitStatus submit_with_handle(U&& item, WaitMode mode, Deadline deadline, Handle<R>& out);
    template <class Submit>
    SubmitStatus with_new_handle(Handle<R>& out, Submit&& submit);
    void throw_if_rejected(SubmitStatus status) const {
        if (status == SubmitStatus::closed) {
            MICROBATCH_THROW(ClosedError("microbatch::Batcher: submit on a closed batcher"));
        }
        if (status == SubmitStatus::infeasible) {  // admission control (deadlines)
            MICROBATCH_THROW(DeadlineInfeasible(
                "microbatch::Batcher: the item cannot finish by its deadline (admission control)"));
        }
    }

    // The calling thread's lane: fixed per thread, so one producer's items stay in order.
    Lane& lane_for_this_thread() const noexcept {
        return lane_count_ == 1 ? lanes_[0] : lanes_[detail::producer_number() % lane_count_];
    }

    // ---- Bulk submission: detail/batcher_bulk.hpp ------------------------------------------
    struct BulkPostStore;
    template <class F>
    class BulkCallbackStore;
    template <class OutputIt>
    class BulkHandleStore;
    template <class Sink>
    auto bulk_store(Sink& sink);
    void throw_if_bulk_rejected(const BulkResult& result, std::size_t n) const;
    template <class Inner>
    struct BulkDeadlineStore;  // Options::default_timeout for bulk items
    template <class InputIt, class Store>
    BulkResult submit_bulk(InputIt& first, std::size_t n, WaitMode mode, Deadline deadline,
                           Store&& store);
    template <class InputIt, class Store>
    BulkResult submit_bulk_due(const deadline_type& due, InputIt& first, std::size_t n,
                               WaitMode mode, Deadline wait, Store&& store);
    template <class InputIt, class Store>
    BulkResult claim_bulk(InputIt& first, std::size_t n, WaitMode mode, Deadline deadline,
                          Store& store);
    template <class InputIt, class Store>
    std::uint32_t fill_run(Lane& lane, std::uint64_t head, std::uint32_t index, std::uint32_t count,
                           InputIt& first, std::size_t done, Store& store, std::uint64_t cost = 0);
    template <class U, class Store>
    void publish_slot(std::size_t slot, U&& item, Store& store) noexcept;
    void after_fill(Lane& lane, std::uint64_t head, std::uint32_t buffer, std::uint32_t start,
                    std::uint32_t end, std::int64_t opened_now);
    void maybe_seal_early(Lane& lane, std::uint64_t head, std::uint32_t start, std::uint32_t end);
    void seal_early_after_fill(Lane& lane, std::uint64_t head, std::uint32_t start,
                               std::uint32_t end);

    template <class U, class Store>
    SubmitStatus submit_impl(U&& item, WaitMode mode, Deadline deadline, Store&& store);
    template <class U, class Store>
    SubmitStatus submit_general(U&& item, WaitMode mode, Deadline deadline, Store& store);
    bool try_claim_slot(Lane& lane, std::uint64_t& head) noexcept;
    // @p cost: the item's cost (cost_by), taken off its batch again if the item turns into a
    // hole. Likewise for fill_run's single item (weighed bulk submissions fill one at a time).
    template <class U, class Store>
    SubmitStatus fill_slot(Lane& lane, std::uint64_t head, std::uint32_t index, U&& item,
                           Store& store, std::uint64_t cost = 0);
    std::int64_t note_batch_opened(Buffer& buffer, bool needs_timer);
    // @p items: the items a rejection refuses (a bulk submission's rest), see detail/.
    SubmitStatus wait_for_space(Lane& lane, WaitMode mode, Deadline deadline,
                                detail::AdmissionTurn& turn, std::size_t items = 1);
    SubmitStatus wait_for_space(Lane& lane, WaitMode mode, Deadline deadline) {
        detail::AdmissionTurn turn;  // callers that do not pass the turn on to their claim
        return wait_for_space(lane, mode, deadline, turn);
    }
    SubmitStatus wait_for_space_registered(Lane& lane, WaitMode mode, Deadline deadline,
                                           detail::AdmissionTurn& turn);
    // Fair admission: detail/batcher_admission.hpp.
    SubmitStatus wait_in_line(Lane& lane, WaitMode mode, Deadline deadline,
                              detail::AdmissionTurn& turn);
    void wake_first_waiter(Lane& lane);
    void wake_all_waiters();

    // ---- Item costs (cost_by, max_batch_cost, max_pending_cost): detail/batcher_cost.hpp ---
    using cost_function = detail::UniqueFunction<std::size_t(const T&)>;
    void initialise_cost();
    template <class U>
    std::uint64_t weigh(const U& item) const;
    template <class U>
    std::uint64_t weigh_or_refuse(const U& item);
    struct CostClaim {
        SubmitStatus status;
        std::uint64_t head;
        std::uint32_t index;
        bool seal_after;  // the item filled its batch's cost bound: seal once it is written
    };
    CostClaim claim_weighed(Lane& lane, std::uint64_t cost, WaitMode mode, Deadline deadline,
                            std::size_t items);
    template <class U, class Store>
    SubmitStatus submit_weighed(U&& item, WaitMode mode, Deadline deadline, Store& store);
    template <class InputIt, class Store>
    BulkResult submit_bulk_weighed(InputIt& first, std::size_t n, WaitMode mode, Deadline deadline,
                                   Store& store);
    SubmitStatus reserve_cost(std::uint64_t cost, WaitMode mode, Deadline deadline,
                              std::size_t items);
    bool try_reserve_cost(std::uint64_t cost) noexcept;
    SubmitStatus wait_for_cost(std::uint64_t cost, WaitMode mode, Deadline deadline);
    void release_cost(std::uint64_t cost);
    void wake_cost_waiters();
    void seal_for_cost(Lane& lane);
    void seal_for_cost_all();
    bool cost_wanted() const noexcept;

    // ---- Deadlines, cancellation, admission control: detail/batcher_deadlines.hpp ----------

    void initialise_deadlines();
    template <class Store>
    struct DeadlineStore;  // wraps a Store: also records the item's deadline in its slot
    template <class U, class Store>
    SubmitStatus submit_due(const deadline_type& due, U&& item, WaitMode mode, Deadline wait,
                            Store&& store);
    template <class U>
    SubmitStatus submit_due_with_handle(const deadline_type& due, U&& item, WaitMode mode,
                                        Deadline wait, Handle<R>& out);
    bool admissible(std::int64_t deadline, std::int64_t now, std::size_t ahead = 0) const noexcept;
    std::int64_t predicted_batch_ticks(std::size_t size) const noexcept;
    void note_item_deadline(std::size_t slot, std::int64_t deadline) noexcept;
    bool resolve_and_admit(const deadline_type& due, std::size_t count, std::int64_t& deadline);
    void keep_deadline(detail::Completion<R>& slot, bool has_completion,
                       std::int64_t deadline) noexcept;
    SealInputs with_item_deadline(SealInputs in, std::uint32_t buffer) const noexcept;
    std::size_t screen(T* items, detail::Completion<R>* completions,
                       std::atomic<std::uint8_t>* states, std::size_t size) noexcept;

    // ---- Sealing, dispatch, buffer ring: detail/batcher_seal.hpp ---------------------------

    bool seal_current(Lane& lane, DispatchReason reason, std::uint64_t expected, bool only_tagged,
                      bool at_arrival = false);
    // at_arrival: the sealer is the producer whose item just joined the batch, so the seal time
    // is the last arrival's (a burst-gap sample, see note_sealed).
    // @p now: the caller's fresh clock reading, or unset_time to read the clock.
    void seal_and_dispatch(std::uint32_t buffer, std::uint32_t size, DispatchReason reason,
                           bool at_arrival = false, std::int64_t now = unset_time);
    void post_batch(std::uint32_t buffer);
    void arrive(std::uint32_t index);
    void open_buffer(std::uint32_t index);
    void try_open(std::uint32_t index);
    std::int64_t take_items(Lane& lane, std::int64_t wanted) noexcept;
    void return_items(Lane& lane, std::int64_t count);
    void retire_unused(Buffer& buffer);
    static void mark_finished(Buffer& buffer, std::uint64_t sequence) noexcept;

    // ---- Running a batch: detail/batcher_run.hpp ------------------------------------------

    void run_batch(std::uint32_t buffer_index) noexcept;

    using batch_result_type_or_empty =
        std::conditional_t<std::is_void_v<R>, std::nullptr_t, std::vector<R>>;
    void complete_ok(detail::Completion<R>& completion, batch_result_type_or_empty& results,
                     std::size_t index) noexcept;
    void deliver(detail::Completion<R>& completion, Outcome<R>&& outcome) noexcept;
    static std::uint8_t wait_for_slot(std::atomic<std::uint8_t>& state) noexcept;

    // ---- process_batch's forms, per-item outcomes, isolation: detail/batcher_outcomes.hpp --

    template <class F>
    void store_process(F&& process);
    void call_process(Batch<T>& batch, std::exception_ptr& error,
                      batch_result_type_or_empty& results,
                      detail::BatchOutcomes<R>& outcomes) noexcept;
    void call_part(Batch<T>& part, std::size_t level, detail::BatchOutcomes<R>& outcomes) noexcept;
    void isolate(Batch<T>& part, std::size_t level, std::exception_ptr error,
                 detail::BatchOutcomes<R>& outcomes) noexcept;
    void record_outcomes(const detail::BatchOutcomes<R>& outcomes) noexcept;
    void complete_outcomes(detail::Completion<R>* completions,
                           detail::BatchOutcomes<R>& outcomes) noexcept;
    std::size_t compact(T* items, detail::Completion<R>* completions,
                        std::atomic<std::uint8_t>* states, std::size_t size,
                        std::size_t& failed) noexcept;
    void finish_party(std::uint32_t index) noexcept;

    // ---- Timer: detail/batcher_timer.hpp --------------------------------------------------

    void run_timer();
    bool current_batch_start(const Lane& lane, std::uint64_t& head,
                             std::int64_t& opened_at) const noexcept;

    // ---- Idle and close: detail/batcher_close.hpp -----------------------------------------

    std::uint64_t flush_and_target(Lane& lane);
    bool finished_through(const Lane& lane, std::uint64_t target) const noexcept;
    void check_not_reentrant(const char* what) const {
        if (detail::is_running_on_this_thread(this)) {
            MICROBATCH_THROW(ReentrancyError(std::string("microbatch::Batcher: ") + what +
                                             "() called from inside this batcher's "
                                             "process_batch or callback would wait for itself"));
        }
    }

    CloseResult close_impl(const Deadline* deadline);
    void begin_close();
    std::int64_t to_nanoseconds(std::int64_t ticks) const noexcept {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(typename Clock::duration(ticks))
            .count();
    }

    // ---- Members --------------------------------------------------------------------------
    Options options_;
    process_function process_;
    outcome_function process_outcomes_;  // instead of process_ for the per-item form
    Clock clock_;
    std::uint32_t batch_size_ = 0;
    std::uint32_t lane_count_ = 1;
    std::uint32_t buffers_per_lane_ = 0;
    bool seal_early_ = true;
    bool deadline_sealing_ = true;    // Options::deadline_sealing
    bool admission_control_ = false;  // Options::admission_control
    bool has_default_timeout_ = false;
    deadline_type default_deadline_{std::chrono::nanoseconds(0)};  // Options::default_timeout
    std::size_t admission_workers_ = 1;   // batches that run at once, for admissible()
    cost_function cost_function_;         // empty without cost_by
    std::uint64_t max_batch_cost_ = 0;    // Options::max_batch_cost (0: none)
    std::uint64_t max_pending_cost_ = 0;  // Options::max_pending_cost (0: none)

    // Settings changeable at run time (relaxed: each is one independent value).
    std::atomic<std::uint32_t> current_batch_size_{0};
    std::atomic<std::int64_t> max_delay_ticks_{-1};
    std::atomic<std::size_t> max_in_flight_{1};
    // Producers seal once their batch holds this many items and a worker is free
    // (producer_seal_threshold(); recomputed at every seal and setter).
    std::atomic<std::uint32_t> producer_threshold_{0};

    // Batches and items that finished (the items' slots returned to their lane), counted by
    // the workers: with dispatched_batches_ and dispatched_items_, counted by the sealers on
    // another line, they give the batches and items in flight (in_flight_batch_count()). Two
    // counters rather than one that both sides change: a sealer that had to pull the line back
    // from the worker at every batch stalled there for ~20 % of a B = 1 run (perf), and a
    // worker that writes only its own line sped B = 1 up 1.1-1.2x.
    alignas(detail::cache_line_size) std::atomic<std::uint64_t> finished_batches_{0};
    // Also counts holes, added by their producers (they never reach a worker as items).
    std::atomic<std::uint64_t> finished_items_{0};
    // The timer sleeps without a deadline because every worker is busy; a finishing worker
    // must wake it (seq_cst Dekker handshake with finished_batches_).
    std::atomic<bool> timer_waits_for_worker_{false};
    // Arrival-rate estimate: exponentially weighted items and nanoseconds between seals.
    // Updated by whichever thread seals, without a lock: concurrent seals may lose one sample,
    // which only makes the estimate a little less smooth.
    alignas(detail::cache_line_size) std::atomic<std::int64_t> last_seal_at_{unset_time};
    std::atomic<double> rate_items_{0.0};
    std::atomic<double> rate_nanoseconds_{0.0};
    std::atomic<std::uint64_t> rate_samples_{0};
    std::atomic<double> burst_gap_ns_{0.0};
    std::atomic<double> population_{0.0};
    std::atomic<double> population_mean_{0.0};
    // round(population_) while early sealing may use it, else 0: producers seal (worker free)
    // once their batch's items plus the items in flight reach it (rule 5c).
    std::atomic<std::uint32_t> population_threshold_{0};
    // The storage, read by every submit: a cache line of its own, away from the estimates
    // above, which a worker or sealer rewrites at every batch.
    alignas(detail::cache_line_size) std::unique_ptr<T, ItemsDeleter> items_{nullptr,
                                                                             ItemsDeleter{0}};
    std::unique_ptr<detail::Completion<R>[]> completions_;
    std::unique_ptr<std::atomic<std::uint8_t>[]> slot_states_;
    std::unique_ptr<Buffer[]> buffers_;
    std::unique_ptr<Lane[]> lanes_;
    // The timer's memory of each lane's batch (run_timer), allocated before the timer starts.
    struct TimerSeen {
        std::uint64_t batch = ~std::uint64_t{0};  // head without the count: which batch
        std::uint64_t count = 0;
        std::int64_t changed_at = unset_time;
    };
    std::unique_ptr<TimerSeen[]> timer_seen_;

    alignas(detail::cache_line_size) std::atomic<bool> timer_idle_{false};
    // Batches and slots dispatched, counted by their sealers (see finished_batches_). The
    // batch count also numbers the batches (Batch::sequence()).
    std::atomic<std::uint64_t> dispatched_batches_{0};
    std::atomic<std::uint64_t> dispatched_items_{0};
    std::atomic<std::uint32_t> slow_producers_{0};
    std::atomic<std::uint32_t> space_waiters_{0};
    std::mutex timer_mutex_;
    std::condition_variable timer_condition_;
    bool timer_stop_ = false;  // guarded by timer_mutex_
    std::optional<typename Clock::Sleeper> sleeper_;
    mutable std::mutex space_mutex_;
    std::condition_variable space_condition_;              // blocked producers sleep here
    std::unique_ptr<detail::AdmissionQueue[]> admission_;  // per lane, guarded by space_mutex_
    // Pending item costs (detail/batcher_cost.hpp): the total, and producers waiting for it to
    // fall, queued in arrival order under cost_mutex_.
    alignas(detail::cache_line_size) std::atomic<std::uint64_t> pending_cost_{0};
    std::atomic<std::uint32_t> cost_waiters_{0};
    mutable std::mutex cost_mutex_;
    std::condition_variable cost_condition_;
    detail::AdmissionQueue cost_queue_;  // guarded by cost_mutex_
    std::mutex idle_mutex_;
    std::condition_variable idle_condition_;
    std::uint32_t idle_waiters_ = 0;  // guarded by idle_mutex_
    // Batches opened and not finished; changes under idle_mutex_ except the increment in
    // open_buffer(), which always happens while another batch of the chain is still counted.
    std::atomic<std::int64_t> open_batches_{0};
    std::mutex close_mutex_;
    bool close_started_ = false;  // guarded by close_mutex_

    detail::StatsRecorder stats_;
    std::unique_ptr<ThreadPool> pool_;
    Executor executor_;
    std::thread timer_;  // last: started after everything it uses is constructed
};

}  // namespace detail
}  // namespace microbatch

// The member functions, one file per step of an item's path (see each file's header comment).
#include "microbatch/detail/batcher_admission.hpp"
#include "microbatch/detail/batcher_bulk.hpp"
#include "microbatch/detail/batcher_close.hpp"
#include "microbatch/detail/batcher_control.hpp"
#include "microbatch/detail/batcher_cost.hpp"
#include "microbatch/detail/batcher_deadlines.hpp"
#include "microbatch/detail/batcher_outcomes.hpp"
#include "microbatch/detail/batcher_policy.hpp"
#include "microbatch/detail/batcher_run.hpp"
#include "microbatch/detail/batcher_seal.hpp"
#include "microbatch/detail/batcher_submit.hpp"
#include "microbatch/detail/batcher_timer.hpp"
