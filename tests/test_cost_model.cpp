// Tests of microbatch::CostModel and microbatch::CostModelFitter: closed forms against hand
// computations and brute-force searches, fits against known coefficients. No timing.

#include "microbatch/cost_model.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>
#include <optional>
#include <queue>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "catch_shim.hpp"

#if defined(CATCH_VERSION_MAJOR) && CATCH_VERSION_MAJOR >= 3
using Catch::Approx;  // Catch2 v2 declares Approx globally, v3 only in namespace Catch
#endif

using microbatch::CostModel;
using microbatch::CostModelFitter;
using Seconds = CostModel::Seconds;

namespace {

constexpr double infinity = std::numeric_limits<double>::infinity();
constexpr double not_a_number = std::numeric_limits<double>::quiet_NaN();

/// The message of the std::invalid_argument @p call throws, or a marker that it threw none.
std::string invalid_argument_message(const std::function<void()>& call) {
    try {
        call();
    } catch (const std::invalid_argument& error) {
        return error.what();
    }
    return "<no std::invalid_argument thrown>";
}

bool contains(const std::string& text, const std::string& part) {
    return text.find(part) != std::string::npos;
}

/// Makespan of ceil(N/B) batches (full ones first, the partial one last) list-scheduled on W
/// workers, by simulation: each batch goes to the worker that becomes free first.
double simulated_makespan(const CostModel& model, std::size_t items, std::size_t batch_size,
                          std::size_t workers) {
    std::priority_queue<double, std::vector<double>, std::greater<>> free_at;
    for (std::size_t w = 0; w < workers; ++w) {
        free_at.push(0.0);
    }
    double makespan = 0.0;
    for (std::size_t first = 0; first < items; first += batch_size) {
        const std::size_t size = std::min(batch_size, items - first);
        const double done = free_at.top() + model.batch_time(size).count();
        free_at.pop();
        free_at.push(done);
        makespan = std::max(makespan, done);
    }
    return makespan;
}

/// Smallest B in [1, search_limit] with throughput(B, W) >= rate, by trying every B.
std::optional<std::size_t> brute_force_min_batch(const CostModel& model, double rate,
                                                 std::size_t workers, std::size_t search_limit) {
    for (std::size_t b = 1; b <= search_limit; ++b) {
        if (model.throughput(b, workers) >= rate) {
            return b;
        }
    }
    return std::nullopt;
}

/// Largest B in [1, search_limit] whose expected latency is within budget, by trying every B.
template <typename Latency>
std::optional<std::size_t> brute_force_max_batch(std::size_t search_limit, Seconds budget,
                                                 Latency&& latency) {
    std::optional<std::size_t> best;
    for (std::size_t b = 1; b <= search_limit; ++b) {
        if (latency(b) <= budget) {
            best = b;
        }
    }
    return best;
}

/// Least-squares line by the textbook two-pass method, as an independent reference.
std::pair<double, double> two_pass_line(const std::vector<std::pair<std::size_t, double>>& data) {
    double mean_x = 0.0;
    double mean_y = 0.0;
    for (const auto& [x, y] : data) {
        mean_x += static_cast<double>(x);
        mean_y += y;
    }
    mean_x /= static_cast<double>(data.size());
    mean_y /= static_cast<double>(data.size());
    double sxx = 0.0;
    double sxy = 0.0;
    for (const auto& [x, y] : data) {
        sxx += (static_cast<double>(x) - mean_x) * (static_cast<double>(x) - mean_x);
        sxy += (static_cast<double>(x) - mean_x) * (y - mean_y);
    }
    const double slope = sxy / sxx;
    return {mean_y - slope * mean_x, slope};
}

const CostModel one_and_a_half = CostModel::from_seconds(1.0, 0.5);  // alpha = 1 s, beta = 0.5 s

}  // namespace

// ---------------------------------------------------------------------------------------------
// CostModel: closed forms

TEST_CASE("CostModel batch_time is alpha plus beta times the batch size", "[cost_model]") {
    CHECK(one_and_a_half.batch_time(1).count() == Approx(1.5));
    CHECK(one_and_a_half.batch_time(4).count() == Approx(3.0));

    using namespace std::chrono_literals;
    const CostModel model{50us, 2ns};
    CHECK(model.batch_time(1000).count() == Approx(52e-6));
    CHECK(model.per_batch.count() == Approx(50e-6));
}

TEST_CASE("CostModel predicted_total spreads full batches evenly over the busy workers",
          "[cost_model]") {
    // ceil(N/B) * T(B) / min(W, ceil(N/B)), T(4) = 3 s, T(3) = 2.5 s
    CHECK(one_and_a_half.predicted_total(10, 4, 2).count() == Approx(4.5));
    CHECK(one_and_a_half.predicted_total(10, 4, 3).count() == Approx(3.0));
    CHECK(one_and_a_half.predicted_total(8, 4, 2).count() == Approx(3.0));
    CHECK(one_and_a_half.predicted_total(9, 3, 2).count() == Approx(3.75));
    CHECK(one_and_a_half.predicted_total(1, 1, 1).count() == Approx(1.5));
    CHECK(one_and_a_half.predicted_total(10, 4, 1).count() == Approx(9.0));

    SECTION("more workers than batches leaves the extra workers idle") {
        CHECK(one_and_a_half.predicted_total(10, 4, 5).count() == Approx(3.0));
        CHECK(one_and_a_half.predicted_total(2, 4, 8).count() == Approx(3.0));
    }
}

TEST_CASE("CostModel predicted_makespan runs the partial last batch on the first free worker",
          "[cost_model]") {
    // T(4) = 3 s, T(3) = 2.5 s, T(2) = 2 s, T(1) = 1.5 s
    CHECK(one_and_a_half.predicted_makespan(10, 4, 2).count() == Approx(5.0));  // 3 + T(2)
    CHECK(one_and_a_half.predicted_makespan(10, 4, 3).count() == Approx(3.0));  // in parallel
    CHECK(one_and_a_half.predicted_makespan(10, 4, 1).count() == Approx(8.0));  // 3 + 3 + 2
    CHECK(one_and_a_half.predicted_makespan(11, 4, 1).count() == Approx(8.5));  // 3 + 3 + 2.5
    CHECK(one_and_a_half.predicted_makespan(13, 4, 2).count() == Approx(6.0));  // 2 rounds
    CHECK(one_and_a_half.predicted_makespan(9, 3, 2).count() == Approx(5.0));   // no partial
    CHECK(one_and_a_half.predicted_makespan(8, 4, 2).count() == Approx(3.0));   // one round

    SECTION("more workers than batches: the longest batch decides") {
        CHECK(one_and_a_half.predicted_makespan(10, 4, 5).count() == Approx(3.0));
        CHECK(one_and_a_half.predicted_makespan(2, 4, 8).count() == Approx(2.0));  // only T(2)
        CHECK(one_and_a_half.predicted_makespan(1, 1000, 3).count() == Approx(1.5));
    }

    SECTION("agrees with simulated list scheduling on a grid") {
        const CostModel model = CostModel::from_seconds(0.25, 0.125);  // exact in binary
        for (std::size_t items = 1; items <= 40; ++items) {
            for (std::size_t batch = 1; batch <= 12; ++batch) {
                for (std::size_t workers = 1; workers <= 5; ++workers) {
                    INFO("N=" << items << " B=" << batch << " W=" << workers);
                    CHECK(model.predicted_makespan(items, batch, workers).count() ==
                          Approx(simulated_makespan(model, items, batch, workers)));
                }
            }
        }
    }
}

TEST_CASE("CostModel throughput is W times B over the batch time", "[cost_model]") {
    CHECK(one_and_a_half.throughput(4, 2) == Approx(8.0 / 3.0));
    CHECK(one_and_a_half.throughput(1, 1) == Approx(1.0 / 1.5));
    // Tends to W / beta as B grows.
    CHECK(one_and_a_half.throughput(1'000'000, 3) == Approx(6.0).epsilon(1e-5));

    SECTION("a free model has unbounded throughput") {
        CHECK(CostModel{}.throughput(16, 1) == infinity);
    }
}

TEST_CASE("CostModel expected_latency adds the mean fill wait to the batch time", "[cost_model]") {
    // lambda = 2 items/s, B = 4: mean wait (4 - 1) / (2 * 2) = 0.75 s, T(4) = 3 s.
    CHECK(one_and_a_half.expected_latency(4, 2.0, 2).count() == Approx(3.75));
    CHECK(one_and_a_half.expected_latency(1, 0.5, 1).count() == Approx(1.5));  // no wait at B = 1

    SECTION("a time bound that fires first dispatches smaller batches") {
        // D = 1 s: n_D = 1 + floor(2 * 1) = 3 items; their mean wait 1 - 2 / 4 = 0.5 s, T(3) = 2.5
        CHECK(one_and_a_half.expected_latency(4, 2.0, 2, Seconds{1.0}).count() == Approx(3.0));
        // D = 2 s: the batch fills at 1.5 s, before the timer.
        CHECK(one_and_a_half.expected_latency(4, 2.0, 2, Seconds{2.0}).count() == Approx(3.75));
        // D = 0: every batch holds one item that waits for nothing.
        CHECK(one_and_a_half.expected_latency(4, 2.0, 4, Seconds{0.0}).count() == Approx(1.5));
        CHECK(one_and_a_half.expected_latency(4, 2.0, 2, Seconds{infinity}).count() ==
              Approx(3.75));
    }

    SECTION("is infinite when the workers cannot keep up") {
        // throughput(1, 1) = 2/3 items/s < 2 items/s
        CHECK(one_and_a_half.expected_latency(1, 2.0, 1).count() == infinity);
        // D = 0 forces batches of 1 even when B = 4 would keep up.
        CHECK(one_and_a_half.expected_latency(4, 2.0, 1, Seconds{0.0}).count() == infinity);
    }
}

// ---------------------------------------------------------------------------------------------
// CostModel: searches against brute force

TEST_CASE("CostModel min_batch_for_rate matches a brute-force search", "[cost_model]") {
    const double alpha = GENERATE(0.0, 1e-6, 1e-4);
    const double beta = GENERATE(0.0, 1e-7);
    const std::size_t workers = GENERATE(1, 2, 4);
    const CostModel model = CostModel::from_seconds(alpha, beta);
    for (const double rate : {1e3, 1e4, 1e5, 1e6, 5e6, 1e7, 2e7, 3e7, 4e7, 1e9}) {
        INFO("alpha=" << alpha << " beta=" << beta << " W=" << workers << " rate=" << rate);
        const std::optional<std::size_t> answer = model.min_batch_for_rate(rate, workers);
        constexpr std::size_t search_limit = 200'000;
        const std::optional<std::size_t> expected =
            brute_force_min_batch(model, rate, workers, search_limit);
        if (answer && *answer > search_limit) {
            // Beyond the brute-force range: check minimality directly.
            CHECK(model.throughput(*answer, workers) >= rate);
            CHECK(model.throughput(*answer - 1, workers) < rate);
            CHECK_FALSE(expected);
        } else {
            CHECK(answer == expected);
        }
        if (!answer) {
            // Infeasible exactly when lambda * beta >= W (or alpha = 0 and W / beta < lambda).
            CHECK((rate * beta >= static_cast<double>(workers) ||
                   model.throughput(search_limit, workers) < rate));
        }
    }
}

TEST_CASE("CostModel min_batch_for_rate handles exact boundaries and impossible rates",
          "[cost_model]") {
    // throughput(B, 2) = 2B / (1 + 0.5B) = 2 exactly at B = 2.
    CHECK(one_and_a_half.min_batch_for_rate(2.0, 2) == std::optional<std::size_t>{2});
    // lambda * beta = 4 * 0.5 = W: the asymptote is never reached.
    CHECK_FALSE(one_and_a_half.min_batch_for_rate(4.0, 2));
    CHECK_FALSE(one_and_a_half.min_batch_for_rate(100.0, 2));
    // A very slow rate is met by single items.
    CHECK(one_and_a_half.min_batch_for_rate(0.001, 1) == std::optional<std::size_t>{1});
    // A free model keeps up with anything.
    CHECK(CostModel{}.min_batch_for_rate(1e300, 1) == std::optional<std::size_t>{1});
    // Needing more than max_searched_batch_size items per batch counts as impossible.
    const CostModel huge_overhead = CostModel::from_seconds(1e6, 0.0);
    CHECK_FALSE(huge_overhead.min_batch_for_rate(1e6, 1));
}

TEST_CASE("CostModel max_batch_for_latency matches a brute-force search", "[cost_model]") {
    const double alpha = GENERATE(0.0, 1e-5, 1e-4);
    const double beta = GENERATE(1e-7, 1e-6);
    const std::size_t workers = GENERATE(1, 2);
    const CostModel model = CostModel::from_seconds(alpha, beta);
    constexpr std::size_t search_limit = 20'000;
    for (const double rate : {1e3, 1e4, 1e5, 1e6}) {
        for (const double budget_seconds : {0.0, 5e-5, 1e-4, 3e-4, 1e-3, 1e-2}) {
            const Seconds budget{budget_seconds};
            INFO("alpha=" << alpha << " beta=" << beta << " W=" << workers << " rate=" << rate
                          << " budget=" << budget_seconds);
            const std::optional<std::size_t> answer =
                model.max_batch_for_latency(budget, rate, workers);
            REQUIRE((!answer || *answer < search_limit));  // the brute force covers it
            const auto latency = [&](std::size_t b) {
                return model.expected_latency(b, rate, workers);
            };
            CHECK(answer == brute_force_max_batch(search_limit, budget, latency));
            if (answer) {
                CHECK(latency(*answer) <= budget);
                CHECK(latency(*answer + 1) > budget);
            }

            for (const double delay_seconds : {0.0, 1e-4, 1e-3, 5e-3, infinity}) {
                const Seconds max_delay{delay_seconds};
                INFO("max_delay=" << delay_seconds);
                const std::optional<std::size_t> bounded =
                    model.max_batch_for_latency(budget, rate, workers, max_delay);
                const double items_by_timer = 1.0 + std::floor(rate * delay_seconds);
                const std::size_t range = items_by_timer < static_cast<double>(search_limit)
                                              ? static_cast<std::size_t>(items_by_timer)
                                              : search_limit;
                REQUIRE((!bounded || *bounded < search_limit));
                const auto bounded_latency = [&](std::size_t b) {
                    return model.expected_latency(b, rate, workers, max_delay);
                };
                CHECK(bounded == brute_force_max_batch(range, budget, bounded_latency));
                if (bounded) {
                    CHECK(*bounded <= answer.value());  // a time bound never allows larger batches
                }
            }
        }
    }
}

TEST_CASE("CostModel max_batch_for_latency prefers n_D to any larger size under a time bound",
          "[cost_model]") {
    // lambda = 1000/s, D = 10 ms: n_D = 11. Larger B give the same 11-item batches, later.
    const CostModel model = CostModel::from_seconds(1e-4, 1e-6);
    const Seconds max_delay{0.01};
    const Seconds at_n_d = model.expected_latency(11, 1000.0, 1, max_delay);
    for (std::size_t b = 12; b < 40; ++b) {
        CHECK(model.expected_latency(b, 1000.0, 1, max_delay) >= at_n_d);
    }
    CHECK(model.max_batch_for_latency(Seconds{1.0}, 1000.0, 1, max_delay) ==
          std::optional<std::size_t>{11});
    // Without the time bound a 1 s budget allows far larger batches.
    CHECK(model.max_batch_for_latency(Seconds{1.0}, 1000.0, 1).value() > 1000);
}

TEST_CASE("CostModel max_batch_for_latency is empty when sizes within budget cannot keep up",
          "[cost_model]") {
    // alpha = 1 ms, beta = 0: one worker needs B >= 1000 for 1e6 items/s, whose latency is
    // 999 / 2e6 + 1 ms ~ 1.5 ms; a 1.2 ms budget allows only B <= 401.
    const CostModel model = CostModel::from_seconds(1e-3, 0.0);
    CHECK_FALSE(model.max_batch_for_latency(Seconds{1.2e-3}, 1e6, 1));
    CHECK(model.max_batch_for_latency(Seconds{2e-3}, 1e6, 1) == std::optional<std::size_t>{2001});
    // Below alpha nothing fits at all.
    CHECK_FALSE(model.max_batch_for_latency(Seconds{0.5e-3}, 1.0, 1));
    // An infinite budget is met by the largest size searched.
    CHECK(model.max_batch_for_latency(Seconds{infinity}, 1e6, 1) ==
          std::optional<std::size_t>{CostModel::max_searched_batch_size});
}

// ---------------------------------------------------------------------------------------------
// CostModel: argument validation

TEST_CASE("CostModel rejects invalid arguments naming the argument and its value",
          "[cost_model][errors]") {
    const CostModel& m = one_and_a_half;
    const auto check_message = [](const std::function<void()>& call, const std::string& where,
                                  const std::string& argument, const std::string& value) {
        const std::string message = invalid_argument_message(call);
        INFO(message);
        CHECK(contains(message, where));
        CHECK(contains(message, argument));
        CHECK(contains(message, "(got " + value));
    };
    check_message([&] { (void)m.batch_time(0); }, "batch_time", "batch_size", "0");
    check_message([&] { (void)m.predicted_total(0, 4, 2); }, "predicted_total", "item_count", "0");
    check_message([&] { (void)m.predicted_total(10, 0, 2); }, "predicted_total", "batch_size", "0");
    check_message([&] { (void)m.predicted_total(10, 4, 0); }, "predicted_total", "workers", "0");
    check_message([&] { (void)m.predicted_makespan(0, 4, 2); }, "predicted_makespan", "item_count",
                  "0");
    check_message([&] { (void)m.predicted_makespan(10, 4, 0); }, "predicted_makespan", "workers",
                  "0");
    check_message([&] { (void)m.throughput(0, 1); }, "throughput", "batch_size", "0");
    check_message([&] { (void)m.throughput(1, 0); }, "throughput", "workers", "0");
    check_message([&] { (void)m.min_batch_for_rate(0.0, 1); }, "min_batch_for_rate", "arrival_rate",
                  "0");
    check_message([&] { (void)m.min_batch_for_rate(-5.0, 1); }, "min_batch_for_rate",
                  "arrival_rate", "-5");
    check_message([&] { (void)m.min_batch_for_rate(infinity, 1); }, "min_batch_for_rate",
                  "arrival_rate", "inf");
    check_message([&] { (void)m.min_batch_for_rate(not_a_number, 1); }, "min_batch_for_rate",
                  "arrival_rate", "nan");
    check_message([&] { (void)m.min_batch_for_rate(1.0, 0); }, "min_batch_for_rate", "workers",
                  "0");
    check_message([&] { (void)m.expected_latency(0, 1.0, 1); }, "expected_latency", "batch_size",
                  "0");
    check_message([&] { (void)m.expected_latency(1, 1.0, 1, Seconds{-0.25}); }, "expected_latency",
                  "max_delay", "-0.25");
    check_message([&] { (void)m.max_batch_for_latency(Seconds{-1.0}, 1.0, 1); },
                  "max_batch_for_latency", "latency_budget", "-1");
    check_message([&] { (void)m.max_batch_for_latency(Seconds{1.0}, 0.0, 1); },
                  "max_batch_for_latency", "arrival_rate", "0");
    check_message([&] { (void)m.max_batch_for_latency(Seconds{1.0}, 1.0, 0); },
                  "max_batch_for_latency", "workers", "0");
    check_message([&] { (void)m.max_batch_for_latency(Seconds{1.0}, 1.0, 1, Seconds{-2.0}); },
                  "max_batch_for_latency", "max_delay", "-2");

    SECTION("invalid coefficients are reported by every query") {
        check_message([] { (void)CostModel::from_seconds(-1.0, 0.0); }, "from_seconds", "per_batch",
                      "-1");
        check_message([] { (void)CostModel::from_seconds(0.0, infinity); }, "from_seconds",
                      "per_item", "inf");
        const CostModel negative{Seconds{0.0}, Seconds{-0.5}};
        check_message([&] { (void)negative.batch_time(1); }, "batch_time", "per_item", "-0.5");
        check_message([&] { (void)negative.throughput(1, 1); }, "throughput", "per_item", "-0.5");
        const CostModel nan_overhead{Seconds{not_a_number}, Seconds{0.0}};
        check_message([&] { (void)nan_overhead.min_batch_for_rate(1.0, 1); }, "min_batch_for_rate",
                      "per_batch", "nan");
    }
}

// ---------------------------------------------------------------------------------------------
// CostModelFitter

TEST_CASE("CostModelFitter recovers alpha and beta from noise-free samples",
          "[cost_model][fitter]") {
    const double alpha = GENERATE(0.0, 50e-6, 2e-3);
    const double beta = GENERATE(0.0, 2e-9, 1e-6);
    CostModelFitter fitter;
    for (int repeat = 0; repeat < 3; ++repeat) {
        for (std::size_t size = 1; size <= 4096; size *= 2) {
            fitter.add(size, Seconds{alpha + beta * static_cast<double>(size)});
        }
    }
    INFO("alpha=" << alpha << " beta=" << beta);
    REQUIRE(fitter.sample_count() == 39);
    const std::optional<CostModel> model = fitter.fit();
    REQUIRE(model);
    CHECK(model->per_batch.count() == Approx(alpha).epsilon(1e-9).margin(1e-15));
    CHECK(model->per_item.count() == Approx(beta).epsilon(1e-9).margin(1e-18));
    CHECK(fitter.r_squared().value() == Approx(1.0).epsilon(1e-12));
}

TEST_CASE("CostModelFitter is unaffected by symmetric noise", "[cost_model][fitter]") {
    // Noise +d and -d at every batch size is orthogonal to both 1 and x, so the least-squares
    // line is exactly the noise-free one; only R^2 drops.
    const double alpha = 40e-6;
    const double beta = 3e-8;
    const double noise = GENERATE(1e-7, 1e-5);
    CostModelFitter fitter;
    for (const std::size_t size : {1, 3, 10, 64, 100, 1000, 4096}) {
        const double exact = alpha + beta * static_cast<double>(size);
        fitter.add(size, Seconds{exact + noise});
        fitter.add(size, Seconds{exact - noise});
        fitter.add(size, Seconds{exact});
    }
    const std::optional<CostModel> model = fitter.fit();
    REQUIRE(model);
    CHECK(model->per_batch.count() == Approx(alpha).epsilon(1e-9));
    CHECK(model->per_item.count() == Approx(beta).epsilon(1e-9));
    const double r_squared = fitter.r_squared().value();
    CHECK(r_squared < 1.0);
    CHECK(r_squared > 0.0);
}

TEST_CASE("CostModelFitter matches a two-pass least-squares reference on noisy data",
          "[cost_model][fitter]") {
    std::mt19937_64 random(12345);  // fixed seed: the same data on every run
    std::uniform_int_distribution<std::size_t> sizes(1, 2048);
    std::uniform_real_distribution<double> noise(-5e-6, 5e-6);
    std::vector<std::pair<std::size_t, double>> samples;
    for (int i = 0; i < 5000; ++i) {
        const std::size_t size = sizes(random);
        samples.emplace_back(size, 20e-6 + 4e-9 * static_cast<double>(size) + noise(random));
    }
    const auto [intercept, slope] = two_pass_line(samples);
    REQUIRE(intercept > 0.0);
    const std::optional<CostModel> model = microbatch::fit_cost_model(samples);
    REQUIRE(model);
    CHECK(model->per_batch.count() == Approx(intercept).epsilon(1e-9));
    CHECK(model->per_item.count() == Approx(slope).epsilon(1e-9));
    CHECK(model->per_batch.count() == Approx(20e-6).epsilon(0.05));
    CHECK(model->per_item.count() == Approx(4e-9).epsilon(0.05));
}

TEST_CASE("CostModelFitter stays accurate for batch sizes with a large common offset",
          "[cost_model][fitter]") {
    // Raw sums of x^2 (~1e20 per sample) would cancel catastrophically here.
    const double alpha = 1e-3;
    const double beta = 1e-9;
    CostModelFitter fitter;
    for (std::size_t k = 0; k < 200; ++k) {
        const std::size_t size = 1'000'000'000 + k * 1000;
        fitter.add(size, Seconds{alpha + beta * static_cast<double>(size)});
    }
    const std::optional<CostModel> model = fitter.fit();
    REQUIRE(model);
    CHECK(model->per_item.count() == Approx(beta).epsilon(1e-6));
    CHECK(model->per_batch.count() == Approx(alpha).epsilon(1e-6));
}

TEST_CASE("CostModelFitter has no fit before two distinct batch sizes", "[cost_model][fitter]") {
    CostModelFitter fitter;
    CHECK(fitter.sample_count() == 0);
    CHECK_FALSE(fitter.fit());
    CHECK_FALSE(fitter.r_squared());
    for (int i = 0; i < 10; ++i) {
        fitter.add(64, Seconds{1e-3 + 1e-6 * i});
    }
    CHECK(fitter.sample_count() == 10);
    CHECK_FALSE(fitter.fit());
    CHECK_FALSE(fitter.r_squared());

    fitter.add(128, std::chrono::milliseconds(2));
    REQUIRE(fitter.fit());
    CHECK(fitter.sample_count() == 11);

    SECTION("two samples determine the line exactly") {
        CostModelFitter two;
        two.add(10, Seconds{2.0});
        two.add(20, Seconds{3.0});
        const CostModel model = two.fit().value();
        CHECK(model.per_batch.count() == Approx(1.0));
        CHECK(model.per_item.count() == Approx(0.1));
        CHECK(two.r_squared().value() == Approx(1.0));
    }
    SECTION("reset forgets everything") {
        fitter.reset();
        CHECK(fitter.sample_count() == 0);
        CHECK_FALSE(fitter.fit());
    }
    SECTION("the convenience function agrees") {
        CHECK_FALSE(microbatch::fit_cost_model({}));
        CHECK_FALSE(microbatch::fit_cost_model({{8, 1.0}, {8, 2.0}}));
        CHECK(microbatch::fit_cost_model({{8, 1.0}, {16, 2.0}}).value().per_item.count() ==
              Approx(0.125));
    }
}

TEST_CASE("CostModelFitter keeps coefficients non-negative", "[cost_model][fitter]") {
    SECTION("a negative least-squares intercept falls back to a line through the origin") {
        // y = 0.5 x - 0.3 at x = 1, 2, 3: the best line with alpha = 0 has
        // beta = sum(xy) / sum(x^2) = (0.2 + 1.4 + 3.6) / 14.
        CostModelFitter fitter;
        fitter.add(1, Seconds{0.2});
        fitter.add(2, Seconds{0.7});
        fitter.add(3, Seconds{1.2});
        const CostModel model = fitter.fit().value();
        CHECK(model.per_batch.count() == 0.0);
        CHECK(model.per_item.count() == Approx(5.2 / 14.0));
        // SSE = sum (y - beta x)^2; S_yy = 0.5
        const double b = 5.2 / 14.0;
        const double sse =
            std::pow(0.2 - b, 2) + std::pow(0.7 - 2 * b, 2) + std::pow(1.2 - 3 * b, 2);
        CHECK(fitter.r_squared().value() == Approx(1.0 - sse / 0.5));
    }
    SECTION("a negative least-squares slope falls back to a constant") {
        CostModelFitter fitter;
        fitter.add(1, Seconds{3.0});
        fitter.add(2, Seconds{2.0});
        fitter.add(3, Seconds{1.0});
        const CostModel model = fitter.fit().value();
        CHECK(model.per_item.count() == 0.0);
        CHECK(model.per_batch.count() == Approx(2.0));
        CHECK(fitter.r_squared().value() == Approx(0.0).margin(1e-12));
    }
    SECTION("equal durations fit a constant exactly") {
        CostModelFitter fitter;
        for (std::size_t size = 1; size <= 5; ++size) {
            fitter.add(size, Seconds{0.75});
        }
        const CostModel model = fitter.fit().value();
        CHECK(model.per_item.count() == 0.0);
        CHECK(model.per_batch.count() == 0.75);
        CHECK(fitter.r_squared().value() == 1.0);
    }
}

TEST_CASE("CostModelFitter merge equals adding every sample to one fitter",
          "[cost_model][fitter]") {
    std::mt19937_64 random(7);
    std::uniform_int_distribution<std::size_t> sizes(1, 500);
    std::uniform_real_distribution<double> noise(0.0, 1e-5);
    CostModelFitter all;
    CostModelFitter first;
    CostModelFitter second;
    for (int i = 0; i < 1000; ++i) {
        const std::size_t size = sizes(random);
        const Seconds duration{1e-4 + 1e-7 * static_cast<double>(size) + noise(random)};
        all.add(size, duration);
        (i % 3 == 0 ? first : second).add(size, duration);
    }
    CostModelFitter merged = first;
    merged.merge(second);
    CHECK(merged.sample_count() == all.sample_count());
    CHECK(merged.fit()->per_batch.count() == Approx(all.fit()->per_batch.count()).epsilon(1e-9));
    CHECK(merged.fit()->per_item.count() == Approx(all.fit()->per_item.count()).epsilon(1e-9));
    CHECK(merged.r_squared().value() == Approx(all.r_squared().value()).epsilon(1e-9));

    SECTION("merging with empty fitters changes nothing") {
        CostModelFitter empty;
        empty.merge(all);
        CHECK(empty.fit()->per_item.count() == all.fit()->per_item.count());
        const double before = all.fit()->per_item.count();
        all.merge(CostModelFitter{});
        CHECK(all.fit()->per_item.count() == before);
    }
    SECTION("two single-size fitters with different sizes merge into a fit") {
        CostModelFitter small;
        CostModelFitter large;
        small.add(10, Seconds{2.0});
        small.add(10, Seconds{2.0});
        large.add(20, Seconds{3.0});
        REQUIRE_FALSE(small.fit());
        REQUIRE_FALSE(large.fit());
        small.merge(large);
        const CostModel model = small.fit().value();
        CHECK(model.per_batch.count() == Approx(1.0));
        CHECK(model.per_item.count() == Approx(0.1));
    }
}

TEST_CASE("CostModelFitter rejects invalid samples and stays unchanged",
          "[cost_model][fitter][errors]") {
    CostModelFitter fitter;
    fitter.add(1, Seconds{1.0});
    const auto zero_size = invalid_argument_message([&] { fitter.add(0, Seconds{1.0}); });
    CHECK(contains(zero_size, "batch_size"));
    CHECK(contains(zero_size, "(got 0)"));
    const auto negative = invalid_argument_message([&] { fitter.add(2, Seconds{-3.0}); });
    CHECK(contains(negative, "duration"));
    CHECK(contains(negative, "(got -3 s)"));
    const auto nan = invalid_argument_message([&] { fitter.add(2, Seconds{not_a_number}); });
    CHECK(contains(nan, "duration"));
    const auto inf = invalid_argument_message([&] { fitter.add(2, Seconds{infinity}); });
    CHECK(contains(inf, "duration"));
    CHECK(fitter.sample_count() == 1);
    CHECK_FALSE(fitter.fit());
    const auto from_vector = invalid_argument_message([] {
        (void)microbatch::fit_cost_model({{4, 1.0}, {0, 1.0}});
    });
    CHECK(contains(from_vector, "batch_size"));
}
