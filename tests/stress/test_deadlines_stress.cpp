// Stress test for deadlines, cancellation and admission control (issue 11): producers submit
// items with short random deadlines (and some without), cancel some of their handles at random
// moments while batches form and run, and the batcher refuses what it predicts to finish late.
// Every item must end exactly once as processed, expired, cancelled or refused, its handle or
// callback must say which, no expired or cancelled item may reach process_batch, and the stats
// must add up. Assertions run on the test thread only; no outcome depends on timing.
//
// Environment: MICROBATCH_STRESS_SCALE=<x> multiplies the work (default 1).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <memory>
#include <random>
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
    return parsed > 0.0 ? parsed : 1.0;
}

enum Fate : int { unknown = 0, processed = 1, expired = 2, cancelled = 3, refused = 4, wrong = 5 };

int fate_of(const Outcome<int>& outcome, int id) {
    if (outcome) {
        return outcome.value() == 3 * id ? processed : wrong;
    }
    try {
        std::rethrow_exception(outcome.error());
    } catch (const microbatch::DeadlineExceeded&) {
        return expired;
    } catch (const microbatch::Cancelled&) {
        return cancelled;
    } catch (...) {
        return wrong;
    }
}

}  // namespace

TEST_CASE("Every item ends exactly once as processed, expired, cancelled or refused",
          "[stress][deadlines]") {
    const bool admission = GENERATE(false, true);
    const bool sealing = GENERATE(true, false);
    INFO("admission_control " << admission << ", deadline_sealing " << sealing);
    constexpr int producers = 4;
    const int per_producer = static_cast<int>(3000 * scale());
    const int total = producers * per_producer;
    std::unique_ptr<std::atomic<int>[]> seen(new std::atomic<int>[total]);
    std::unique_ptr<std::atomic<int>[]> fate(new std::atomic<int>[total]);
    std::unique_ptr<std::atomic<int>[]> cancel_won(new std::atomic<int>[total]);
    for (int i = 0; i < total; ++i) {
        seen[i].store(0);
        fate[i].store(unknown);
        cancel_won[i].store(0);
    }
    struct Item {
        int id;
    };
    {
        Batcher<Item, int> batcher(Options{}
                                       .max_batch_size(16)
                                       .max_delay(200us)
                                       .workers(2)
                                       .capacity(64)
                                       .admission_control(admission)
                                       .deadline_sealing(sealing),
                                   [&](Batch<Item>& batch) {
                                       const auto now = std::chrono::steady_clock::now();
                                       std::vector<int> out;
                                       for (const Item& item : batch) {
                                           seen[item.id].fetch_add(1);
                                           out.push_back(3 * item.id);
                                       }
                                       // A little work, so that batches overlap submits and
                                       // cancels.
                                       const auto until =
                                           now + std::chrono::microseconds(20 + 2 * batch.size());
                                       while (std::chrono::steady_clock::now() < until) {
                                       }
                                       return out;
                                   });
        std::vector<std::thread> threads;
        for (int p = 0; p < producers; ++p) {
            threads.emplace_back([&, p] {
                std::mt19937 random(static_cast<unsigned>(p) * 7919U + 1U);
                std::vector<std::pair<int, Handle<int>>> held;
                for (int n = 0; n < per_producer; ++n) {
                    const int id = p * per_producer + n;
                    const unsigned roll = random() % 16;
                    const auto timeout = std::chrono::microseconds(random() % 1500);
                    const auto now = std::chrono::steady_clock::now();
                    const auto deadline = now + timeout;  // absolute, on the batcher's clock
                    const Item item{id};
                    if (roll < 2) {  // no deadline at all
                        held.emplace_back(id, batcher.submit(item));
                    } else if (roll < 5) {  // a callback
                        try {
                            batcher.submit(deadline, item, [&fate, id](Outcome<int>&& outcome) {
                                fate[id].store(fate_of(outcome, id));
                            });
                        } catch (const microbatch::DeadlineInfeasible&) {
                            fate[id].store(refused);
                        }
                    } else if (roll < 7) {  // fire-and-forget: only counted
                        const SubmitStatus status = batcher.try_submit(deadline, item);
                        fate[id].store(status == SubmitStatus::infeasible ? refused
                                       : status == SubmitStatus::full     ? refused + 10
                                                                          : processed + 20);
                    } else {
                        auto result = batcher.try_submit_handle(deadline, item);
                        if (result.status == SubmitStatus::infeasible) {
                            fate[id].store(refused);
                            continue;
                        }
                        if (result.status != SubmitStatus::accepted) {
                            fate[id].store(refused + 10);  // full: also never processed
                            continue;
                        }
                        if (roll < 10 && result.handle.cancel()) {  // at once
                            cancel_won[id].store(1);
                        }
                        held.emplace_back(id, std::move(result.handle));
                    }
                    // Cancel an older handle now and then: it races with its batch.
                    if (!held.empty() && random() % 4 == 0) {
                        auto& entry = held[random() % held.size()];
                        if (entry.second.valid() && entry.second.cancel()) {
                            cancel_won[entry.first].store(1);
                        }
                    }
                    if (held.size() > 64) {
                        for (auto& entry : held) {
                            if (entry.second.valid()) {
                                Outcome<int> outcome = [&entry]() {
                                    try {
                                        return Outcome<int>(entry.second.get());
                                    } catch (...) {
                                        return Outcome<int>(std::current_exception());
                                    }
                                }();
                                fate[entry.first].store(fate_of(outcome, entry.first));
                            }
                        }
                        held.clear();
                    }
                }
                for (auto& entry : held) {
                    Outcome<int> outcome = [&entry]() {
                        try {
                            return Outcome<int>(entry.second.get());
                        } catch (...) {
                            return Outcome<int>(std::current_exception());
                        }
                    }();
                    fate[entry.first].store(fate_of(outcome, entry.first));
                }
            });
        }
        for (auto& thread : threads) {
            thread.join();
        }
        batcher.close();

        // ---- Every item exactly once
        // -------------------------------------------------------------
        int counts[6] = {0, 0, 0, 0, 0, 0};
        int posted_refused = 0;
        int posted_accepted = 0;
        int bad = 0;
        for (int id = 0; id < total; ++id) {
            const int f = fate[id].load();
            const int s = seen[id].load();
            if (f == processed + 20) {  // an accepted post: processed or expired, at most once
                ++posted_accepted;
                bad += s > 1 ? 1 : 0;
                continue;
            }
            if (f == refused + 10) {
                ++posted_refused;
                bad += s != 0 ? 1 : 0;
                continue;
            }
            REQUIRE(f >= unknown);
            REQUIRE(f <= wrong);
            ++counts[f];
            const bool ok = f == processed ? s == 1 : (f != unknown && f != wrong && s == 0);
            bad += ok ? 0 : 1;
            // A won cancel always ends as Cancelled; a lost one never does.
            bad += (cancel_won[id].load() == 1) == (f == cancelled) ? 0 : 1;
        }
        UNSCOPED_INFO("processed " << counts[processed] << ", expired " << counts[expired]
                                   << ", cancelled " << counts[cancelled] << ", refused "
                                   << counts[refused] << ", posts " << posted_accepted
                                   << " accepted / " << posted_refused << " full");
        CHECK(bad == 0);
        CHECK(counts[unknown] == 0);
        CHECK(counts[wrong] == 0);
        const microbatch::Stats stats = batcher.stats();
        CHECK(stats.items_accepted == stats.items_processed + stats.items_failed +
                                          stats.items_expired + stats.items_cancelled);
        CHECK(stats.items_failed == 0);
        CHECK(stats.items_cancelled == static_cast<std::uint64_t>(counts[cancelled]));
        CHECK(stats.items_rejected_infeasible == static_cast<std::uint64_t>(counts[refused]));
        CHECK(stats.items_rejected_full == static_cast<std::uint64_t>(posted_refused));
        CHECK(stats.items_submitted == static_cast<std::uint64_t>(total));
        // Posts are not tracked individually: the processed and expired totals include them.
        CHECK(stats.items_processed + stats.items_expired ==
              static_cast<std::uint64_t>(counts[processed] + counts[expired] + posted_accepted));
        if (!admission) {
            CHECK(stats.items_rejected_infeasible == 0);
        }
    }
}
