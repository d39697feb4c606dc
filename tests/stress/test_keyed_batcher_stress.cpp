// Stress tests for microbatch::KeyedBatcher (issue 12, item 4): many producers x many keys.
//
// Each round builds a keyed batcher with random options (per-key batch sizes, delays down to 0
// or none, a small capacity, a key cap that may be below the number of keys with a zero idle
// timeout so that keys are reclaimed and recreated all the time, an owned pool or a shared
// ThreadPool, an in-flight limit of 1..4), runs 1..8 producers that each submit items for
// random keys through a random mix of every submission call, sometimes closes the batcher while
// they still produce, and checks afterwards from per-id ledgers that:
//   - every accepted item was processed exactly once and completed exactly once, with the
//     outcome its batch earned (batches holding a poison item fail as a whole);
//   - every rejected item (full, closed, key limit) was never processed;
//   - no batch mixed keys;
//   - one producer's items for one key kept their order: (batch sequence, index) increases;
//   - the stats add up;
//   - with item costs (half the rounds: a cost function, per-key max_batch_cost, maybe a
//     max_pending_cost): no batch costs more than its key's bound unless it is one oversized
//     item, the pending cost never exceeds max_pending_cost, items above it are refused with
//     CostLimitError, and the cost stats match the accepted items.
// Assertions run on the test thread only; workers, callbacks and producers record into atomics.
//
// Environment: MICROBATCH_STRESS_SEED=<n> replays a run; MICROBATCH_STRESS_SCALE=<x> multiplies
// the work (e.g. 0.2 under sanitizers).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "catch_shim.hpp"
#include "microbatch/keyed_batcher.hpp"
#include "microbatch/thread_pool.hpp"

using namespace std::chrono_literals;
using microbatch::Batch;
using microbatch::KeyedBatcher;
using microbatch::KeyedOptions;
using microbatch::KeyLimits;
using microbatch::Outcome;
using microbatch::SubmitStatus;

namespace {

std::uint64_t stress_seed() {
    if (const char* text = std::getenv("MICROBATCH_STRESS_SEED")) {
        return std::strtoull(text, nullptr, 0);
    }
    std::random_device device;
    return (static_cast<std::uint64_t>(device()) << 32) ^ device();
}

double stress_scale() {
    if (const char* text = std::getenv("MICROBATCH_STRESS_SCALE")) {
        const double scale = std::strtod(text, nullptr);
        if (scale > 0.0) {
            return scale;
        }
    }
    return 1.0;
}

/// SplitMix64: seedable and the same sequence everywhere.
class Random {
public:
    explicit Random(std::uint64_t seed) : state_(seed) {}
    std::uint64_t next() {
        std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }
    std::uint64_t between(std::uint64_t low, std::uint64_t high) {
        return low + next() % (high - low + 1);
    }
    bool chance(unsigned percent) { return next() % 100 < percent; }

private:
    std::uint64_t state_;
};

/// An item: its id and its key, so a batch of the wrong key is detected, and its cost.
struct Item {
    std::uint32_t id;
    int key;
    std::uint32_t cost;
};

bool is_poison(std::uint32_t id) {
    return id % 211 == 7;
}

enum Status : std::uint8_t { unused, accepted, rejected };
enum Delivery : std::uint8_t { none, by_callback, by_handle };
enum Verdict : std::uint8_t { not_run = 0, succeeded = 1, failed = 2 };

struct Ledger {
    explicit Ledger(std::size_t ids)
        : status(ids, unused),
          delivery(ids, none),
          key(ids, 0),
          cost(ids, 0),
          processed(new std::atomic<std::uint32_t>[ids]),
          completed(new std::atomic<std::uint32_t>[ids]),
          good_outcome(new std::atomic<std::uint32_t>[ids]),
          verdict(new std::atomic<std::uint8_t>[ids]),
          position(new std::atomic<std::uint64_t>[ids]) {
        for (std::size_t i = 0; i < ids; ++i) {
            processed[i] = 0;
            completed[i] = 0;
            good_outcome[i] = 0;
            verdict[i] = not_run;
            position[i] = 0;
        }
    }
    std::vector<std::uint8_t> status;  // one writer per id (its producer)
    std::vector<std::uint8_t> delivery;
    std::vector<int> key;
    std::vector<std::uint32_t> cost;  // one writer per id (its producer)
    std::unique_ptr<std::atomic<std::uint32_t>[]> processed;
    std::unique_ptr<std::atomic<std::uint32_t>[]> completed;
    std::unique_ptr<std::atomic<std::uint32_t>[]> good_outcome;
    std::unique_ptr<std::atomic<std::uint8_t>[]> verdict;
    std::unique_ptr<std::atomic<std::uint64_t>[]> position;  // (sequence << 32) | index
    std::atomic<std::uint64_t> mixed_batches{0};
    std::atomic<std::uint64_t> wrong_sizes{0};
    std::atomic<std::uint64_t> wrong_costs{0};        // a batch above its cost bound
    std::atomic<std::uint64_t> pending_cost_over{0};  // pending_cost() above the bound seen
    std::atomic<std::uint64_t> cost_limit_errors{0};  // CostLimitError from a submit
    std::atomic<std::uint64_t> wrong_cost_errors{0};  // ...for an item that fits the bound
};

struct RoundConfig {
    std::size_t producers;
    std::size_t keys;
    std::size_t items_per_producer;
    bool close_early;
};

void run_round(std::uint64_t seed, const RoundConfig& config) {
    Random random(seed);
    const std::size_t ids = config.producers * config.items_per_producer;
    Ledger ledger(ids);

    const std::size_t batch_size = static_cast<std::size_t>(random.between(1, 32));
    KeyedOptions options;
    options.max_batch_size(batch_size);
    const auto delay_kind = random.between(0, 3);
    options.max_delay(delay_kind == 0   ? std::chrono::nanoseconds(0)
                      : delay_kind == 1 ? std::chrono::nanoseconds(random.between(1, 2000) * 1000)
                      : delay_kind == 2 ? std::chrono::nanoseconds(random.between(1, 50) * 1000)
                                        : std::chrono::nanoseconds::max());
    const std::size_t capacity = 64 * static_cast<std::size_t>(random.between(1, 8));
    options.capacity(std::max(capacity, std::size_t{64}));
    const bool tight_keys = random.chance(40);
    options.max_keys(tight_keys ? std::max<std::size_t>(1, config.keys / 2) : config.keys);
    options.key_idle_timeout(tight_keys ? 0ns
                                        : std::chrono::nanoseconds(random.between(0, 3) * 100'000));
    options.max_in_flight(static_cast<std::size_t>(random.between(1, 4)));
    std::unique_ptr<microbatch::ThreadPool> shared_pool;
    if (random.chance(50)) {
        shared_pool = std::make_unique<microbatch::ThreadPool>(2);
        options.executor(shared_pool->executor());
    } else {
        options.workers(static_cast<std::size_t>(random.between(1, 3)));
    }
    // Per-key bounds for a few keys (delay none or short).
    std::vector<std::pair<int, KeyLimits>> limits;
    for (std::size_t k = 0; k < config.keys; k += 3) {
        KeyLimits limit;
        limit.max_batch_size = static_cast<std::size_t>(random.between(1, 64));
        if (random.chance(50)) {
            limit.max_delay = std::chrono::microseconds(random.between(0, 500));
        }
        limits.emplace_back(static_cast<int>(k), limit);
    }
    std::vector<std::size_t> bound_of(config.keys, batch_size);
    for (const auto& limit : limits) {
        bound_of[static_cast<std::size_t>(limit.first)] = *limit.second.max_batch_size;
    }
    // Item costs: a default batch cost bound (or none), some keys with their own, maybe a bound
    // on the pending cost. Costs are 0..48, a few heavier (oversized, or above max_pending_cost).
    const bool costed = random.chance(50);
    const std::size_t default_cost_bound =
        costed && random.chance(80) ? static_cast<std::size_t>(random.between(16, 256)) : 0;
    const std::size_t pending_cost_bound =
        costed && random.chance(60) ? static_cast<std::size_t>(random.between(64, 4096)) : 0;
    std::vector<std::size_t> cost_bound_of(config.keys, default_cost_bound);
    if (costed) {
        options.max_batch_cost(default_cost_bound).max_pending_cost(pending_cost_bound);
        for (std::size_t k = 1; k < config.keys; k += 4) {
            const std::size_t bound =
                random.chance(20) ? 0 : static_cast<std::size_t>(random.between(8, 128));
            const auto same_key = [k](const std::pair<int, KeyLimits>& entry) {
                return entry.first == static_cast<int>(k);
            };
            const auto found = std::find_if(limits.begin(), limits.end(), same_key);
            if (found != limits.end()) {
                found->second.max_batch_cost = bound;  // one KeyLimits per key: they replace
            } else {
                KeyLimits limit;
                limit.max_batch_cost = bound;
                limits.emplace_back(static_cast<int>(k), limit);
            }
            cost_bound_of[k] = bound;
        }
    }

    auto process = [&ledger, &bound_of, &cost_bound_of](const int& key, Batch<Item>& batch) {
        bool poison = false;
        if (batch.size() > bound_of[static_cast<std::size_t>(key)]) {
            ledger.wrong_sizes.fetch_add(1);
        }
        std::size_t cost = 0;
        for (const Item& item : batch) {
            cost += item.cost;
        }
        const std::size_t cost_bound = cost_bound_of[static_cast<std::size_t>(key)];
        if (cost_bound != 0 && cost > cost_bound && batch.size() != 1) {
            ledger.wrong_costs.fetch_add(1);
        }
        for (std::size_t i = 0; i < batch.size(); ++i) {
            const Item& item = batch[i];
            if (item.key != key) {
                ledger.mixed_batches.fetch_add(1);
            }
            ledger.processed[item.id].fetch_add(1);
            ledger.position[item.id].store((batch.sequence() << 32) | i);
            poison = poison || is_poison(item.id);
        }
        for (const Item& item : batch) {
            ledger.verdict[item.id].store(poison ? failed : succeeded);
        }
        if (poison) {
            throw std::runtime_error("poison");
        }
        std::vector<std::uint64_t> results;
        for (const Item& item : batch) {
            results.push_back(std::uint64_t{item.id} * 3 + 1);
        }
        return results;
    };
    const auto key_of = [](const Item& item) { return item.key; };
    auto batcher =
        costed ? std::make_unique<KeyedBatcher<int, Item, std::uint64_t>>(
                     std::move(options), key_of,
                     microbatch::cost_by([](const Item& item) -> std::size_t { return item.cost; }),
                     process)
               : std::make_unique<KeyedBatcher<int, Item, std::uint64_t>>(std::move(options),
                                                                          key_of, process);
    for (const auto& limit : limits) {
        batcher->set_key_limits(limit.first, limit.second);
    }

    std::atomic<std::size_t> producers_done{0};
    std::vector<std::thread> threads;
    for (std::size_t p = 0; p < config.producers; ++p) {
        threads.emplace_back([&, p] {
            Random local(seed ^ (p + 1) * 0x9E3779B97F4A7C15ULL);
            std::vector<std::pair<std::uint32_t, microbatch::Handle<std::uint64_t>>> handles;
            for (std::size_t n = 0; n < config.items_per_producer; ++n) {
                const auto id = static_cast<std::uint32_t>(p * config.items_per_producer + n);
                const int key = static_cast<int>(local.between(0, config.keys - 1));
                ledger.key[id] = key;
                const auto cost_kind = local.between(0, 99);
                const auto cost = static_cast<std::uint32_t>(
                    !costed         ? 0
                    : cost_kind < 2 ? local.between(4097, 5000)  // maybe above the pending bound
                    : cost_kind < 6 ? local.between(129, 300)    // maybe oversized
                                    : local.between(0, 48));
                ledger.cost[id] = cost;
                const Item item{id, key, cost};
                const auto callback = [&ledger, id](Outcome<std::uint64_t>&& outcome) {
                    ledger.completed[id].fetch_add(1);
                    if (outcome.has_value() && outcome.value() == std::uint64_t{id} * 3 + 1) {
                        ledger.good_outcome[id].fetch_add(1);
                    }
                };
                SubmitStatus status = SubmitStatus::closed;
                try {
                    switch (local.between(0, 5)) {
                        case 0:
                            handles.emplace_back(id, batcher->submit(key, item));
                            ledger.delivery[id] = by_handle;
                            status = SubmitStatus::accepted;
                            break;
                        case 1:
                            batcher->submit(item, callback);
                            ledger.delivery[id] = by_callback;
                            status = SubmitStatus::accepted;
                            break;
                        case 2:
                            batcher->post(item);
                            status = SubmitStatus::accepted;
                            break;
                        case 3:
                            status = batcher->try_submit(key, item, callback);
                            if (status == SubmitStatus::accepted) {
                                ledger.delivery[id] = by_callback;
                            }
                            break;
                        case 4:
                            status = batcher->submit_for(item, 200us);
                            break;
                        default: {
                            auto result = batcher->try_submit_handle(key, item);
                            status = result.status;
                            if (result.accepted()) {
                                ledger.delivery[id] = by_handle;
                                handles.emplace_back(id, std::move(result.handle));
                            }
                            break;
                        }
                    }
                } catch (const microbatch::ClosedError&) {
                    status = SubmitStatus::closed;
                } catch (const microbatch::KeyLimitError&) {
                    status = SubmitStatus::full;
                } catch (const microbatch::CostLimitError&) {
                    status = SubmitStatus::full;
                    ledger.cost_limit_errors.fetch_add(1);
                    if (pending_cost_bound == 0 || cost <= pending_cost_bound) {
                        ledger.wrong_cost_errors.fetch_add(1);
                    }
                }
                if (pending_cost_bound != 0 && local.chance(5) &&
                    batcher->pending_cost() > pending_cost_bound) {
                    ledger.pending_cost_over.fetch_add(1);
                }
                ledger.status[id] = status == SubmitStatus::accepted ? accepted : rejected;
                if (status == SubmitStatus::full && local.chance(20)) {
                    std::this_thread::yield();
                }
                if (local.chance(1)) {
                    batcher->flush();
                }
            }
            batcher->flush();  // without a time bound, our last partial batches wait for it
            for (auto& entry : handles) {
                try {
                    const std::uint64_t value = entry.second.get();
                    ledger.completed[entry.first].fetch_add(1);
                    if (value == std::uint64_t{entry.first} * 3 + 1) {
                        ledger.good_outcome[entry.first].fetch_add(1);
                    }
                } catch (const std::runtime_error&) {
                    ledger.completed[entry.first].fetch_add(1);
                }
            }
            producers_done.fetch_add(1);
        });
    }
    if (config.close_early) {
        std::this_thread::sleep_for(std::chrono::microseconds(random.between(0, 2000)));
        batcher->close();
    }
    for (auto& thread : threads) {
        thread.join();
    }
    batcher->close();
    const auto stats = batcher->stats();
    batcher.reset();
    shared_pool.reset();

    REQUIRE(ledger.mixed_batches.load() == 0);
    REQUIRE(ledger.wrong_sizes.load() == 0);
    REQUIRE(ledger.wrong_costs.load() == 0);
    REQUIRE(ledger.pending_cost_over.load() == 0);
    REQUIRE(ledger.wrong_cost_errors.load() == 0);
    std::uint64_t accepted_count = 0;
    std::uint64_t failed_count = 0;
    std::uint64_t accepted_cost = 0;
    std::uint64_t oversized = 0;
    for (std::size_t id = 0; id < ids; ++id) {
        if (ledger.status[id] != accepted) {
            REQUIRE(ledger.processed[id].load() == 0);
            continue;
        }
        ++accepted_count;
        accepted_cost += ledger.cost[id];
        const std::size_t cost_bound = cost_bound_of[static_cast<std::size_t>(ledger.key[id])];
        oversized += cost_bound != 0 && ledger.cost[id] > cost_bound ? 1 : 0;
        REQUIRE(ledger.processed[id].load() == 1);
        const std::uint8_t verdict = ledger.verdict[id].load();
        REQUIRE(verdict != not_run);
        failed_count += verdict == failed ? 1 : 0;
        if (ledger.delivery[id] != none) {
            REQUIRE(ledger.completed[id].load() == 1);
            REQUIRE(ledger.good_outcome[id].load() == (verdict == succeeded ? 1u : 0u));
        }
    }
    // Per producer, per key: positions strictly increase in submission order.
    for (std::size_t p = 0; p < config.producers; ++p) {
        std::vector<std::uint64_t> last(config.keys, 0);
        std::vector<bool> seen(config.keys, false);
        for (std::size_t n = 0; n < config.items_per_producer; ++n) {
            const std::size_t id = p * config.items_per_producer + n;
            if (ledger.status[id] != accepted) {
                continue;
            }
            const auto key = static_cast<std::size_t>(ledger.key[id]);
            const std::uint64_t position = ledger.position[id].load();
            if (seen[key]) {
                REQUIRE(position > last[key]);
            }
            seen[key] = true;
            last[key] = position;
        }
    }
    REQUIRE(stats.items_accepted == accepted_count);
    REQUIRE(stats.items_failed == failed_count);
    REQUIRE(stats.items_processed + stats.items_failed == stats.items_accepted);
    REQUIRE(stats.pending == 0);
    REQUIRE(stats.in_flight == 0);
    REQUIRE(stats.queued_batches == 0);
    REQUIRE(stats.batches_completed == stats.batches_full + stats.batches_deadline +
                                           stats.batches_worker_free + stats.batches_flush +
                                           stats.batches_close);
    REQUIRE(stats.items_rejected_full + stats.items_rejected_closed +
                stats.items_rejected_key_limit + ledger.cost_limit_errors.load() ==
            ids - accepted_count);
    REQUIRE(stats.item_cost_total == accepted_cost);
    REQUIRE(stats.items_oversized == oversized);
    REQUIRE(stats.pending_cost == 0);
    if (pending_cost_bound != 0) {
        REQUIRE(stats.batch_item_cost_max <= pending_cost_bound);
    }
}

}  // namespace

TEST_CASE("KeyedBatcher: many producers x many keys, exactly once and in order per key",
          "[keyed][stress]") {
    const std::uint64_t seed = stress_seed();
    const double scale = stress_scale();
    std::printf("keyed stress seed %llu (MICROBATCH_STRESS_SEED to replay), scale %g\n",
                static_cast<unsigned long long>(seed), scale);
    Random random(seed);
    const int rounds = std::max(4, static_cast<int>(24 * scale));
    const std::size_t key_choices[] = {1, 10, 100, 1000};
    const std::size_t producer_choices[] = {1, 2, 4, 8};
    for (int round = 0; round < rounds; ++round) {
        RoundConfig config;
        config.producers = producer_choices[random.between(0, 3)];
        config.keys = key_choices[random.between(0, 3)];
        config.items_per_producer =
            std::max<std::size_t>(200, static_cast<std::size_t>(4000 * scale) / config.producers);
        config.close_early = random.chance(30);
        const std::uint64_t round_seed = random.next();
        INFO("round " << round << " seed " << round_seed << " producers " << config.producers
                      << " keys " << config.keys << " close_early " << config.close_early);
        run_round(round_seed, config);
    }
}
