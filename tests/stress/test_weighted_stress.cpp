// Stress test for weighted batches (issue 12 item 1): rounds of random options (batch size,
// delay, lanes, workers, a batch cost bound, a pending cost bound) with 1-6 producers doing a
// random mix of every submission form, closed while they produce or after. Every item has a
// unique id and a cost derived from it; afterwards per-id counters prove that each accepted item
// was processed exactly once and completed exactly once, each refused item never, that no batch
// of several items exceeded the cost bound, that exactly the items above the pending bound got
// CostLimitError, that one producer's items kept their order inside each batch, and that the
// cost stats add up.
//
// Assertions run on the test thread only; workers and producers record into atomics. No outcome
// depends on timing.
//
// Environment: MICROBATCH_STRESS_SEED=<n> replays a run (printed at the start);
//              MICROBATCH_STRESS_SCALE=<x> multiplies the work (default 1).

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "catch_shim.hpp"
#include "microbatch/batcher.hpp"

using namespace std::chrono_literals;
using microbatch::Batch;
using microbatch::Batcher;
using microbatch::Handle;
using microbatch::Options;
using microbatch::Outcome;
using microbatch::SubmitStatus;

namespace {

double scale() {
    const char* value = std::getenv("MICROBATCH_STRESS_SCALE");
    const double parsed = value != nullptr ? std::atof(value) : 1.0;
    return parsed > 0 ? parsed : 1.0;
}

std::uint64_t seed() {
    const char* value = std::getenv("MICROBATCH_STRESS_SEED");
    return value != nullptr ? std::strtoull(value, nullptr, 10) : std::random_device{}();
}

// An item's cost from its id: mostly small, sometimes heavy (up to 300).
std::uint64_t cost_of(std::uint64_t id) {
    const std::uint64_t mixed = (id * 0x9E3779B97F4A7C15ULL) >> 40;
    return mixed % 16 == 0 ? mixed % 301 : mixed % 20;
}

enum Outcome_ : int { none = 0, accepted = 1, refused = 2, cost_refused = 3 };

struct Round {
    explicit Round(std::size_t items)
        : processed(new std::atomic<int>[items]),
          completed(new std::atomic<int>[items]),
          fate(new std::atomic<int>[items]) {
        for (std::size_t i = 0; i < items; ++i) {
            processed[i] = 0;
            completed[i] = 0;
            fate[i] = none;
        }
    }
    std::unique_ptr<std::atomic<int>[]> processed;
    std::unique_ptr<std::atomic<int>[]> completed;
    std::unique_ptr<std::atomic<int>[]> fate;
    std::atomic<int> over_bound{0};
    std::atomic<int> out_of_order{0};
    std::size_t producers = 0;
};

void run_round(std::mt19937_64& random, std::size_t per_producer) {
    const std::size_t producers = 1 + random() % 6;
    const std::size_t batch_size = std::size_t{1} << (random() % 9);  // 1..256
    const std::uint64_t batch_costs[] = {0, 16, 100, 1000};
    const std::uint64_t pending_costs[] = {0, 64, 500, 5000};
    const std::uint64_t max_batch_cost = batch_costs[random() % 4];
    const std::uint64_t max_pending_cost = pending_costs[random() % 4];
    const std::chrono::nanoseconds delays[] = {0ns, 50us, 1ms, std::chrono::nanoseconds::max()};
    Options options = Options{}
                          .max_batch_size(batch_size)
                          .max_delay(delays[random() % 4])
                          .lanes(1 + random() % 3)
                          .workers(1 + random() % 3)
                          .max_batch_cost(max_batch_cost)
                          .max_pending_cost(max_pending_cost);
    if (random() % 2 == 0) {
        options.capacity(batch_size * (1 + random() % 4));
    }
    const bool close_early = random() % 4 == 0;
    if (std::getenv("MICROBATCH_STRESS_VERBOSE") != nullptr) {
        std::printf(
            "round: producers %zu batch %zu cost %llu pending %llu delay %lld lanes %zu "
            "workers %zu capacity %zu close_early %d\n",
            producers, batch_size, static_cast<unsigned long long>(max_batch_cost),
            static_cast<unsigned long long>(max_pending_cost),
            static_cast<long long>(options.max_delay().count()), options.lanes(), options.workers(),
            options.capacity(), close_early ? 1 : 0);
        std::fflush(stdout);
    }
    const std::size_t items = producers * per_producer;
    Round round(items);
    round.producers = producers;

    {
        Batcher<std::uint64_t, std::uint64_t> batcher(
            options, microbatch::cost_by([](const std::uint64_t& id) { return cost_of(id); }),
            [&round, max_batch_cost, per_producer](Batch<std::uint64_t>& batch) {
                std::uint64_t cost = 0;
                std::vector<std::uint64_t> results;
                for (const std::uint64_t id : batch) {
                    cost += cost_of(id);
                    round.processed[id].fetch_add(1);
                    results.push_back(id * 3);
                }
                if (max_batch_cost != 0 && batch.size() > 1 && cost > max_batch_cost) {
                    round.over_bound.fetch_add(1);
                }
                // One producer's items keep their order inside a batch (batches of one lane may
                // run concurrently on several workers, so across batches order is not observable
                // here).
                std::vector<std::uint64_t> last(round.producers, 0);
                for (const std::uint64_t id : batch) {
                    const std::uint64_t producer = id / per_producer;
                    const std::uint64_t index = id % per_producer + 1;
                    if (index <= last[producer]) {
                        round.out_of_order.fetch_add(1);
                    }
                    last[producer] = index;
                }
                return results;
            });
        std::vector<std::thread> threads;
        // Handles are waited for after close(): without a time bound a partial batch leaves
        // only then.
        std::vector<std::vector<Handle<std::uint64_t>>> all_handles(producers);
        std::vector<std::vector<std::uint64_t>> all_handle_ids(producers);
        for (std::size_t p = 0; p < producers; ++p) {
            threads.emplace_back([&, p, form_seed = random()] {
                std::mt19937_64 local(form_seed);
                std::vector<Handle<std::uint64_t>>& handles = all_handles[p];
                std::vector<std::uint64_t>& handle_ids = all_handle_ids[p];
                const auto callback_for = [&round](std::uint64_t id) {
                    return [&round, id](Outcome<std::uint64_t>&& outcome) {
                        if (outcome.has_value() && outcome.value() == id * 3) {
                            round.completed[id].fetch_add(1);
                        }
                    };
                };
                std::size_t i = 0;
                while (i < per_producer) {
                    const std::uint64_t id = p * per_producer + i;
                    const unsigned form = static_cast<unsigned>(local() % 8);
                    try {
                        if (form >= 6) {  // a bulk run of up to 5 items
                            const std::size_t n =
                                std::min<std::size_t>(1 + local() % 5, per_producer - i);
                            std::vector<std::uint64_t> run;
                            for (std::size_t k = 0; k < n; ++k) {
                                run.push_back(id + k);
                            }
                            std::size_t accepted_n = n;
                            SubmitStatus status = SubmitStatus::accepted;
                            try {
                                if (form == 6) {
                                    const auto result = batcher.try_post_n(run.begin(), n);
                                    accepted_n = result.accepted;
                                    status = result.status;
                                } else {
                                    batcher.submit_n(
                                        run.begin(), n,
                                        [&round, id](std::size_t k, Outcome<std::uint64_t>&& o) {
                                            if (o.has_value() && o.value() == (id + k) * 3) {
                                                round.completed[id + k].fetch_add(1);
                                            }
                                        });
                                }
                            } catch (const microbatch::CostLimitError&) {
                                accepted_n = 0;
                                while (cost_of(run[accepted_n]) <= max_pending_cost) {
                                    ++accepted_n;
                                }
                                round.fate[run[accepted_n]] = cost_refused;
                                status = SubmitStatus::full;
                                for (std::size_t k = 0; k < accepted_n; ++k) {
                                    round.fate[run[k]] = accepted;
                                }
                                for (std::size_t k = accepted_n + 1; k < n; ++k) {
                                    round.fate[run[k]] = refused;  // never tried
                                }
                                i += n;
                                continue;
                            } catch (const microbatch::BulkClosedError& error) {
                                accepted_n = error.accepted();
                                status = SubmitStatus::closed;
                            }
                            for (std::size_t k = 0; k < n; ++k) {
                                round.fate[run[k]] = k < accepted_n ? accepted : refused;
                            }
                            (void)status;
                            i += n;
                            continue;
                        }
                        SubmitStatus status = SubmitStatus::accepted;
                        switch (form) {
                            case 0:
                                batcher.post(id);
                                break;
                            case 1:
                                handles.push_back(batcher.submit(id));
                                handle_ids.push_back(id);
                                break;
                            case 2:
                                batcher.submit(id, callback_for(id));
                                break;
                            case 3:
                                status = batcher.try_submit(id);
                                break;
                            case 4:
                                status = batcher.try_submit(id, callback_for(id));
                                break;
                            default:
                                status = batcher.submit_for(id, callback_for(id), 100us);
                                break;
                        }
                        round.fate[id] = status == SubmitStatus::accepted ? accepted : refused;
                    } catch (const microbatch::CostLimitError&) {
                        round.fate[id] = cost_refused;
                    } catch (const microbatch::ClosedError&) {
                        round.fate[id] = refused;
                    }
                    ++i;
                }
            });
        }
        if (close_early) {
            std::this_thread::sleep_for(std::chrono::microseconds(random() % 2000));
            batcher.close();
        }
        for (auto& thread : threads) {
            thread.join();
        }
        batcher.close();
        for (std::size_t p = 0; p < producers; ++p) {
            for (std::size_t h = 0; h < all_handles[p].size(); ++h) {
                if (all_handles[p][h].get() == all_handle_ids[p][h] * 3) {
                    round.completed[all_handle_ids[p][h]].fetch_add(1);
                }
            }
        }
        const microbatch::Stats stats = batcher.stats();
        std::uint64_t accepted_cost = 0;
        std::uint64_t oversized = 0;
        std::uint64_t accepted_items = 0;
        for (std::size_t id = 0; id < items; ++id) {
            if (round.fate[id] == accepted) {
                ++accepted_items;
                accepted_cost += cost_of(id);
                oversized += max_batch_cost != 0 && cost_of(id) > max_batch_cost ? 1 : 0;
            }
        }
        CHECK(stats.items_accepted == accepted_items);
        CHECK(stats.item_cost_total == accepted_cost);
        CHECK(stats.items_oversized == oversized);
        CHECK(batcher.pending_cost() == 0);
    }
    CHECK(round.over_bound.load() == 0);
    CHECK(round.out_of_order.load() == 0);
    std::size_t wrong = 0;
    for (std::size_t id = 0; id < items; ++id) {
        const int fate = round.fate[id].load();
        const bool heavy = max_pending_cost != 0 && cost_of(id) > max_pending_cost;
        if (fate == accepted) {
            wrong += round.processed[id].load() == 1 ? 0 : 1;
            wrong += heavy ? 1 : 0;
        } else {
            wrong += round.processed[id].load() == 0 ? 0 : 1;
            wrong += round.completed[id].load() == 0 ? 0 : 1;
            wrong += fate == none ? 1 : 0;
            wrong += (fate == cost_refused) != heavy && fate != refused ? 1 : 0;
        }
        wrong += round.completed[id].load() > 1 ? 1 : 0;
    }
    CHECK(wrong == 0);
}

}  // namespace

TEST_CASE("Weighted batches: every item once, batches within the cost bound, costs add up") {
    const std::uint64_t first = seed();
    std::printf("weighted stress: MICROBATCH_STRESS_SEED=%llu\n",
                static_cast<unsigned long long>(first));
    std::mt19937_64 random(first);
    const auto rounds = static_cast<int>(50 * scale());
    for (int r = 0; r < std::max(rounds, 1); ++r) {
        run_round(random, static_cast<std::size_t>(1000 * scale()) + 1);
    }
}
