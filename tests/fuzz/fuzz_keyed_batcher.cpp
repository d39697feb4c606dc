// libFuzzer target for microbatch::KeyedBatcher (issue 12, items 4 and 1). The input bytes choose
// the options (default batch size and delay, capacity, key cap, idle timeout; item costs or not,
// a default max_batch_cost, a max_pending_cost), then at most 200 operations on up to 6 keys:
// submits (handle, post, try_submit; each item's cost from the input), flush(), flush(key),
// clock advances, per-key limits (size, delay, cost) and poison items. The batcher runs batches
// inline (an inline executor) on a ManualClock, so every run is deterministic, and a sequential
// reference model predicts every batch of every key (items and reason), every acceptance,
// KeyLimitError or CostLimitError, every handle's outcome and the stats after close(). With the
// inline executor nothing runs while a submit looks for room, so a submit over `capacity` or
// `max_pending_cost` seals every partial batch (reason full) and gets in: try forms never see
// `full` here (the unit tests cover it with a manual executor).
//
// Build: clang++ -std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude
//        tests/fuzz/fuzz_keyed_batcher.cpp -o fuzz_keyed_batcher
// Run:   ./fuzz_keyed_batcher -max_total_time=60 <scratch-corpus-dir> tests/fuzz/keyed_corpus
// -DMICROBATCH_FUZZ_STANDALONE builds a main() that replays files (any compiler).

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <stdexcept>
#include <utility>
#include <vector>

#include "microbatch/clock.hpp"
#include "microbatch/keyed_batcher.hpp"

#define FUZZ_CHECK(condition)                                                                   \
    do {                                                                                        \
        if (!(condition)) {                                                                     \
            std::fprintf(stderr, "fuzz_keyed_batcher: check failed at line %d: %s\n", __LINE__, \
                         #condition);                                                           \
            std::abort();                                                                       \
        }                                                                                       \
    } while (false)

namespace {

using microbatch::Batch;
using microbatch::DispatchReason;
using microbatch::KeyedOptions;
using microbatch::ManualClock;
using Millis = std::chrono::milliseconds;

constexpr std::size_t max_operations = 200;
constexpr int key_count = 6;
constexpr std::int64_t no_delay = -1;  // no time bound

class Input {
public:
    Input(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
    std::uint8_t byte() { return position_ < size_ ? data_[position_++] : 0; }
    bool done() const { return position_ >= size_; }

private:
    const std::uint8_t* data_;
    std::size_t size_;
    std::size_t position_ = 0;
};

struct SeenBatch {
    std::vector<int> items;
    DispatchReason reason;
    bool operator==(const SeenBatch& other) const {
        return items == other.items && reason == other.reason;
    }
};

// The sequential reference model. Times in milliseconds.
struct Model {
    struct Limits {
        std::size_t size;
        std::int64_t delay;
        std::size_t cost;  // 0: none
    };
    struct Key {
        std::vector<int> open;  // the open batch's items
        std::size_t open_cost = 0;
        std::size_t bound = 0;
        std::size_t cost_bound = 0;  // 0: none
        std::int64_t due_at = 0;     // no_delay: never
        bool live = false;
        std::int64_t idle_since = 0;
        std::vector<SeenBatch> batches;
    };
    std::size_t default_size = 1;
    std::int64_t default_delay = no_delay;
    std::size_t capacity = 1;
    std::size_t max_keys = 1;
    std::int64_t idle_timeout = no_delay;
    std::size_t default_cost = 0;  // max_batch_cost; 0: none
    std::size_t max_pending_cost = 0;
    std::map<int, Limits> limits;
    Key keys[key_count];
    std::int64_t now = 0;
    std::size_t pending = 0;
    std::size_t pending_cost = 0;
    std::map<int, std::size_t> cost_of;  // id -> cost
    std::uint64_t item_cost_total = 0, batch_item_cost_max = 0, oversized = 0;
    std::vector<int> poisoned;       // ids
    std::map<int, bool> outcome_ok;  // id -> batch succeeded
    std::uint64_t accepted = 0, rejected_key_limit = 0, failed_items = 0;
    std::uint64_t by_reason[6] = {};

    std::size_t bound_of(int key) const {
        const auto found = limits.find(key);
        return found != limits.end() ? found->second.size : default_size;
    }
    std::int64_t delay_of(int key) const {
        const auto found = limits.find(key);
        return found != limits.end() ? found->second.delay : default_delay;
    }
    std::size_t cost_bound_of(int key) const {
        const auto found = limits.find(key);
        return found != limits.end() ? found->second.cost : default_cost;
    }
    bool expired(const Key& key) const {
        return idle_timeout != no_delay && key.open.empty() && key.idle_since + idle_timeout <= now;
    }
    // @p reopened: the key gets a new batch at once (sealed before an item above the cost
    // bound), so it does not become idle.
    void seal(int k, DispatchReason reason, bool reopened = false) {
        Key& key = keys[k];
        const bool poison = std::any_of(key.open.begin(), key.open.end(), [&](int id) {
            return std::find(poisoned.begin(), poisoned.end(), id) != poisoned.end();
        });
        for (int id : key.open) {
            outcome_ok[id] = !poison;
        }
        failed_items += poison ? key.open.size() : 0;
        pending -= key.open.size();
        pending_cost -= key.open_cost;
        item_cost_total += key.open_cost;
        batch_item_cost_max = std::max<std::uint64_t>(batch_item_cost_max, key.open_cost);
        key.open_cost = 0;
        key.batches.push_back(SeenBatch{std::exchange(key.open, {}), reason});
        ++by_reason[static_cast<int>(reason)];
        if (reopened) {
            return;
        }
        key.idle_since = now;
        if (idle_timeout == 0) {
            key.live = false;  // reclaimed at once (by the timer or the next submit)
        }
    }
    enum Verdict { accepted_item, key_limit, cost_limit };
    bool pending_cost_fits(std::size_t cost) const {
        return max_pending_cost == 0 || pending_cost + cost <= max_pending_cost;
    }
    Verdict submit(int k, int id, std::size_t cost) {
        if (max_pending_cost != 0 && cost > max_pending_cost) {
            return cost_limit;  // checked first, whatever else
        }
        if (pending >= capacity || !pending_cost_fits(cost)) {
            for (int other = 0; other < key_count; ++other) {
                if (!keys[other].open.empty()) {
                    seal(other, DispatchReason::full);
                }
            }
        }
        Key& key = keys[k];
        const bool live = key.live && !expired(key);
        if (!live) {
            std::size_t in_use = 0;
            for (const Key& other : keys) {
                in_use += other.live && !expired(other) ? 1 : 0;
            }
            if (in_use >= max_keys) {
                ++rejected_key_limit;
                return key_limit;
            }
            for (Key& other : keys) {  // reclaimed, on demand or by the timer
                other.live = other.live && !expired(other);
            }
            key.live = true;
        }
        ++accepted;
        ++pending;
        pending_cost += cost;
        cost_of[id] = cost;
        if (!key.open.empty() && key.cost_bound != 0 && key.open_cost + cost > key.cost_bound) {
            seal(k, DispatchReason::full, true);  // it would go above its cost bound: seal first
        }
        if (key.open.empty()) {
            key.bound = bound_of(k);
            key.cost_bound = cost_bound_of(k);
            const std::int64_t delay = delay_of(k);
            key.due_at = delay == no_delay ? no_delay : now + delay;
        }
        key.open.push_back(id);
        key.open_cost += cost;
        oversized += key.cost_bound != 0 && cost > key.cost_bound ? 1 : 0;
        if (key.open.size() >= key.bound ||
            (key.cost_bound != 0 && key.open_cost != 0 && key.open_cost >= key.cost_bound)) {
            seal(k, DispatchReason::full);
        } else if (key.due_at != no_delay && key.due_at <= now) {
            seal(k, DispatchReason::deadline);
        }
        return accepted_item;
    }
    void advance(std::int64_t step) {
        now += step;
        for (int k = 0; k < key_count; ++k) {
            if (!keys[k].open.empty() && keys[k].due_at != no_delay && keys[k].due_at <= now) {
                seal(k, DispatchReason::deadline);
            }
        }
        for (Key& key : keys) {
            key.live = key.live && !expired(key);
        }
    }
};

std::int64_t decode_delay(std::uint8_t byte) {
    return byte % 5 == 4 ? no_delay : byte % 5;  // 0..3 ms or none
}

std::chrono::nanoseconds to_duration(std::int64_t delay) {
    return delay == no_delay ? std::chrono::nanoseconds::max()
                             : std::chrono::nanoseconds(Millis(delay));
}

void run_one(const std::uint8_t* data, std::size_t size) {
    Input input(data, size);
    Model model;
    model.default_size = 1 + input.byte() % 6;
    model.default_delay = decode_delay(input.byte());
    model.capacity = 6 + input.byte() % 12;
    model.max_keys = 1 + input.byte() % 4;
    const std::uint8_t timeout = input.byte();
    model.idle_timeout = timeout % 4 == 3 ? no_delay : timeout % 4;
    // Costs: bit 0 a cost function; bits 1-2 a default max_batch_cost (none or 4..); bits 3-4 a
    // max_pending_cost (none or 8..), so that items (cost 0..23) may exceed either.
    const std::uint8_t costs = input.byte();
    const bool costed = (costs & 1) != 0;
    if (costed) {
        model.default_cost = (costs >> 1) % 4 == 0 ? 0 : 4 + ((costs >> 1) % 4) * 5;
        model.max_pending_cost = (costs >> 3) % 4 == 0 ? 0 : 8 + ((costs >> 3) % 4) * 10;
    }

    ManualClock clock;
    std::mutex mutex;
    std::map<int, std::vector<SeenBatch>> seen;
    std::vector<int> poisoned;           // shared with process_batch (read under mutex)
    std::map<int, std::size_t> cost_of;  // id -> cost, for the cost function
    const KeyedOptions options = KeyedOptions{}
                                     .max_batch_size(model.default_size)
                                     .max_delay(to_duration(model.default_delay))
                                     .capacity(model.capacity)
                                     .max_keys(model.max_keys)
                                     .key_idle_timeout(to_duration(model.idle_timeout))
                                     .max_batch_cost(model.default_cost)
                                     .max_pending_cost(model.max_pending_cost)
                                     .max_in_flight(KeyedOptions::unlimited_in_flight)
                                     .executor([](microbatch::Task task) { task(); });
    auto process = [&](const int& key, Batch<int>& batch) {
        std::lock_guard<std::mutex> lock(mutex);
        seen[key].push_back(
            SeenBatch{std::vector<int>(batch.begin(), batch.end()), batch.reason()});
        std::vector<int> results;
        for (int id : batch) {
            if (std::find(poisoned.begin(), poisoned.end(), id) != poisoned.end()) {
                throw std::runtime_error("poison");
            }
            results.push_back(id * 2);
        }
        return results;
    };
    using Keyed = microbatch::KeyedBatcher<int, int, int, ManualClock>;
    // The cost function reads the cost the input gave the item (ids are unique); it runs on the
    // submitting thread, which is this one.
    auto batcher =
        costed ? std::make_unique<Keyed>(options, microbatch::cost_by([&cost_of](const int& id) {
                                             return cost_of.at(id);
                                         }),
                                         process, clock)
               : std::make_unique<Keyed>(options, process, clock);

    std::vector<std::pair<int, microbatch::Handle<int>>> handles;
    int next_id = 0;
    for (std::size_t operation = 0; operation < max_operations && !input.done(); ++operation) {
        const std::uint8_t op = input.byte();
        const int key = input.byte() % key_count;
        switch (op % 8) {
            case 0:
            case 1:
            case 2: {
                const int id = next_id++;
                const std::size_t cost = costed ? input.byte() % 24 : 0;
                cost_of[id] = cost;
                const Model::Verdict expected = model.submit(key, id, cost);
                Model::Verdict verdict = Model::accepted_item;
                try {
                    if (op % 8 == 0) {
                        handles.emplace_back(id, batcher->submit(key, id));
                    } else if (op % 8 == 1) {
                        batcher->post(key, id);
                    } else {
                        FUZZ_CHECK(batcher->try_submit(key, id) ==
                                   microbatch::SubmitStatus::accepted);
                    }
                } catch (const microbatch::KeyLimitError&) {
                    verdict = Model::key_limit;
                } catch (const microbatch::CostLimitError&) {
                    verdict = Model::cost_limit;
                }
                FUZZ_CHECK(verdict == expected);
                break;
            }
            case 3:
                batcher->flush();
                for (int k = 0; k < key_count; ++k) {
                    if (!model.keys[k].open.empty()) {
                        model.seal(k, DispatchReason::flush);
                    }
                }
                break;
            case 4:
                batcher->flush(key);
                if (!model.keys[key].open.empty()) {
                    model.seal(key, DispatchReason::flush);
                }
                break;
            case 5: {
                const std::int64_t step = 1 + input.byte() % 3;
                clock.advance(Millis(step));
                model.advance(step);
                break;
            }
            case 6: {
                const std::size_t bound = 1 + input.byte() % 6;
                const std::int64_t delay = decode_delay(input.byte());
                microbatch::KeyLimits limits{bound, to_duration(delay)};
                std::size_t cost_bound = model.default_cost;
                if (costed) {
                    const std::uint8_t byte = input.byte();
                    if (byte % 3 != 0) {  // else keep the default
                        cost_bound = byte % 3 == 1 ? 0 : 2 + byte % 20;
                        limits.max_batch_cost = cost_bound;
                    }
                }
                batcher->set_key_limits(key, limits);
                model.limits[key] = {bound, delay, cost_bound};
                break;
            }
            default: {
                std::lock_guard<std::mutex> lock(mutex);
                poisoned.push_back(next_id);  // the next item poisons its batch
                model.poisoned.push_back(next_id);
                break;
            }
        }
    }
    batcher->close();
    for (int k = 0; k < key_count; ++k) {
        if (!model.keys[k].open.empty()) {
            model.seal(k, DispatchReason::close);
        }
    }
    for (auto& entry : handles) {
        bool ok = true;
        try {
            FUZZ_CHECK(entry.second.get() == entry.first * 2);
        } catch (const std::runtime_error&) {
            ok = false;
        }
        FUZZ_CHECK(ok == model.outcome_ok.at(entry.first));
    }
    for (int k = 0; k < key_count; ++k) {
        FUZZ_CHECK(seen[k] == model.keys[k].batches);
    }
    const auto stats = batcher->stats();
    FUZZ_CHECK(stats.items_accepted == model.accepted);
    FUZZ_CHECK(stats.items_rejected_key_limit == model.rejected_key_limit);
    FUZZ_CHECK(stats.items_failed == model.failed_items);
    FUZZ_CHECK(stats.items_processed + stats.items_failed == stats.items_accepted);
    FUZZ_CHECK(stats.batches_full == model.by_reason[static_cast<int>(DispatchReason::full)]);
    FUZZ_CHECK(stats.batches_deadline ==
               model.by_reason[static_cast<int>(DispatchReason::deadline)]);
    FUZZ_CHECK(stats.batches_flush == model.by_reason[static_cast<int>(DispatchReason::flush)]);
    FUZZ_CHECK(stats.batches_close == model.by_reason[static_cast<int>(DispatchReason::close)]);
    FUZZ_CHECK(stats.pending == 0);
    FUZZ_CHECK(stats.pending_cost == 0);
    FUZZ_CHECK(batcher->pending_cost() == 0);
    FUZZ_CHECK(stats.item_cost_total == model.item_cost_total);
    FUZZ_CHECK(stats.batch_item_cost_max == model.batch_item_cost_max);
    FUZZ_CHECK(stats.items_oversized == model.oversized);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    run_one(data, size);
    return 0;
}

#if defined(MICROBATCH_FUZZ_STANDALONE)
#include <fstream>
#include <iterator>

int main(int argc, char** argv) {
    for (int i = 1; i < argc; ++i) {
        std::ifstream file(argv[i], std::ios::binary);
        const std::vector<char> bytes((std::istreambuf_iterator<char>(file)),
                                      std::istreambuf_iterator<char>());
        run_one(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
        std::printf("%s: ok\n", argv[i]);
    }
    return 0;
}
#endif
