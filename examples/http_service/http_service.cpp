// http_service: an HTTP service whose endpoints are served through microbatch batchers.
//
// Every request's items are submitted together (submit_n) to a microbatch::Batcher and the handler
// waits on their handles, so concurrent requests share batches:
//
//   POST /v1/double   a number or a JSON array of numbers -> {"result": 2x or [2x, ...]}
//   POST /v1/model    the same input -> {"result": model(x) or [...]}: a simulated model call
//                     that costs a fixed alpha per call plus beta per item (busy-waited on
//                     steady_clock, as a CPU/GPU model call keeps its device busy). This is
//                     where batching pays: a batch of B items pays alpha once.
//   GET  /metrics     batcher and HTTP counters in the Prometheus text format
//   GET  /healthz     "ok"
//
// Another method on one of these paths gets 405 with an Allow header; an unknown path, 404.
//
// Deadlines (issue 11): a POST may carry `X-Request-Timeout-Ms: N`; its items are then
// submitted with the deadline now + N ms. An item whose deadline passed before its batch ran
// answers 504; with admission control (on unless --no-admission-control) a request predicted
// to finish late is refused at once with 503, a reason and Retry-After. The other items of such
// a request are cancelled. /metrics counts both (http_deadline_requests_total{outcome=...}) and
// the batchers' expired, cancelled and refused items.
//
// SIGINT/SIGTERM stop accepting connections, let in-flight requests finish (their batches run
// to completion), close the batchers, and exit 0.
//
//   http_service --port 8080                  # serve until Ctrl-C
//   curl -s -d '[1, 2, 3]' localhost:8080/v1/model
//   http_service --load                       # load test B=1 vs B=32 over loopback
//   http_service --test                       # self-check for CTest
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <httplib.h>
#include <microbatch/microbatch.hpp>
#include <nlohmann/json.hpp>

namespace {

constexpr const char* program_name = "http_service";
using Clock = std::chrono::steady_clock;
using Json = nlohmann::json;

// ---- Command line -----------------------------------------------------------------------------

constexpr const char* usage_text =
    "usage: http_service [options]            serve until SIGINT/SIGTERM\n"
    "       http_service --load [options]     load test: B=1 vs B=--batch-size, side by side\n"
    "       http_service --test               self-check (endpoints, metrics, load, drain)\n"
    "\n"
    "Endpoints: POST /v1/double, POST /v1/model (a number or a JSON array of numbers),\n"
    "GET /metrics (Prometheus text format), GET /healthz.\n"
    "\n"
    "server options (also used by --load for the servers it starts):\n"
    "  --host ADDRESS      listen address (default 127.0.0.1)\n"
    "  --port N            listen port; 0 = ephemeral, printed at start (default 8080)\n"
    "  --batch-size N      max_batch_size of both batchers (default 32)\n"
    "  --delay-us N        max_delay in microseconds (default 500)\n"
    "  --workers N         worker threads per batcher (default 1)\n"
    "  --capacity N        items a batcher holds before submits block; 0 = the larger of\n"
    "                      4 x batch size and --http-threads (default 0)\n"
    "  --model-alpha-us N  fixed cost of one model call in microseconds (default 1000)\n"
    "  --model-beta-us N   cost per item of a model call in microseconds (default 10)\n"
    "  --http-threads N    HTTP connection threads (default 64)\n"
    "  --max-items N       largest array accepted per request (default 1000)\n"
    "  --no-admission-control  accept requests with X-Request-Timeout-Ms even when they are\n"
    "                      predicted to finish late (they then expire: 504)\n"
    "\n"
    "load options (--load starts its own servers on ephemeral loopback ports, one with B=1,\n"
    "one with B=--batch-size, and drives POST /v1/model over keep-alive connections):\n"
    "  --requests N        requests per run (default 4000)\n"
    "  --concurrency N     concurrent clients (default 32)\n"
    "  --items N           items per request (default 1)\n"
    "  --max-seconds N     stop a run after N seconds (default 10)\n"
    "\n"
    "  --help              show this help\n";

struct ServiceConfig {
    std::size_t batch_size = 32;
    std::size_t delay_us = 500;
    std::size_t workers = 1;
    std::size_t capacity = 0;  // 0: max(4 x batch_size, http_threads)
    std::size_t model_alpha_us = 1000;
    std::size_t model_beta_us = 10;
    std::size_t http_threads = 64;
    std::size_t max_items = 1000;
    bool admission_control = true;
};

struct LoadConfig {
    std::size_t requests = 4000;
    std::size_t concurrency = 32;
    std::size_t items = 1;
    std::size_t max_seconds = 10;
};

enum class Mode { serve, load, test };

struct Config {
    Mode mode = Mode::serve;
    std::string host = "127.0.0.1";
    int port = 8080;
    ServiceConfig service;
    LoadConfig load;
};

[[noreturn]] void usage_error(const std::string& message) {
    std::fprintf(stderr, "%s: %s (see --help)\n", program_name, message.c_str());
    std::exit(2);
}

std::size_t parse_count(const std::string& flag, const std::string& text, std::size_t min,
                        std::size_t max) {
    const bool digits = !text.empty() && std::all_of(text.begin(), text.end(),
                                                     [](char c) { return c >= '0' && c <= '9'; });
    errno = 0;
    const unsigned long long value = digits ? std::strtoull(text.c_str(), nullptr, 10) : 0;
    if (!digits || errno == ERANGE || value < min || value > max) {
        usage_error(flag + " expects an integer in [" + std::to_string(min) + ", " +
                    std::to_string(max) + "], got '" + text + "'");
    }
    return static_cast<std::size_t>(value);
}

Config parse_command_line(int argc, char** argv) {
    Config config;
    std::vector<std::string> args(argv + 1, argv + argc);
    for (std::size_t i = 0; i < args.size(); ++i) {
        std::string flag = args[i];
        std::string value;
        bool has_value = false;
        if (const auto equals = flag.find('='); flag.rfind("--", 0) == 0 && equals != flag.npos) {
            value = flag.substr(equals + 1);
            flag.resize(equals);
            has_value = true;
        }
        const auto take_value = [&]() -> const std::string& {
            if (!has_value) {
                if (i + 1 >= args.size()) {
                    usage_error(flag + " needs a value");
                }
                value = args[++i];
                has_value = true;
            }
            return value;
        };
        const auto no_value = [&] {
            if (has_value) {
                usage_error(flag + " takes no value");
            }
        };
        ServiceConfig& service = config.service;
        if (flag == "--help" || flag == "-h") {
            no_value();
            std::fputs(usage_text, stdout);
            std::exit(0);
        } else if (flag == "--load" || flag == "--test") {
            no_value();
            if (config.mode != Mode::serve) {
                usage_error("--load and --test exclude each other");
            }
            config.mode = flag == "--load" ? Mode::load : Mode::test;
        } else if (flag == "--host") {
            config.host = take_value();
            if (config.host.empty()) {
                usage_error("--host needs a non-empty value");
            }
        } else if (flag == "--port") {
            config.port = static_cast<int>(parse_count(flag, take_value(), 0, 65535));
        } else if (flag == "--batch-size") {
            service.batch_size = parse_count(flag, take_value(), 1, 65536);
        } else if (flag == "--delay-us") {
            service.delay_us = parse_count(flag, take_value(), 0, 10000000);
        } else if (flag == "--workers") {
            service.workers = parse_count(flag, take_value(), 1, 64);
        } else if (flag == "--capacity") {
            service.capacity = parse_count(flag, take_value(), 0, 1000000);
        } else if (flag == "--model-alpha-us") {
            service.model_alpha_us = parse_count(flag, take_value(), 0, 1000000);
        } else if (flag == "--model-beta-us") {
            service.model_beta_us = parse_count(flag, take_value(), 0, 1000000);
        } else if (flag == "--http-threads") {
            service.http_threads = parse_count(flag, take_value(), 1, 1024);
        } else if (flag == "--max-items") {
            service.max_items = parse_count(flag, take_value(), 1, 1000000);
        } else if (flag == "--no-admission-control") {
            no_value();
            service.admission_control = false;
        } else if (flag == "--requests") {
            config.load.requests = parse_count(flag, take_value(), 1, 10000000);
        } else if (flag == "--concurrency") {
            config.load.concurrency = parse_count(flag, take_value(), 1, 512);
        } else if (flag == "--items") {
            config.load.items = parse_count(flag, take_value(), 1, 1000000);
        } else if (flag == "--max-seconds") {
            config.load.max_seconds = parse_count(flag, take_value(), 1, 3600);
        } else {
            usage_error("unknown argument '" + args[i] + "'");
        }
    }
    if (config.mode == Mode::load && config.load.items > config.service.max_items) {
        usage_error("--items " + std::to_string(config.load.items) + " exceeds --max-items " +
                    std::to_string(config.service.max_items));
    }
    return config;
}

// ---- The "models" -----------------------------------------------------------------------------

double doubled(double x) {
    return 2 * x;
}

// The simulated model's answer for one item: a logistic curve.
double predict(double x) {
    return 1.0 / (1.0 + std::exp(-x));
}

// A model call keeps its device busy for its whole duration; so does this.
void busy_wait(std::chrono::nanoseconds duration) {
    const Clock::time_point until = Clock::now() + duration;
    while (Clock::now() < until) {
        // spin
    }
}

// ---- Prometheus text format -------------------------------------------------------------------

class MetricsWriter {
public:
    // Starts a metric family: its HELP and TYPE lines.
    void family(const char* name, const char* type, const char* help) {
        text_ +=
            std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
    }
    void sample(const std::string& name, const std::string& labels, double value) {
        char number[32];
        std::snprintf(number, sizeof number, "%.9g", value);
        line(name, labels, number);
    }
    void sample(const std::string& name, const std::string& labels, std::uint64_t value) {
        line(name, labels, std::to_string(value));
    }
    const std::string& text() const { return text_; }

private:
    void line(const std::string& name, const std::string& labels, const std::string& value) {
        text_ += labels.empty() ? name : name + "{" + labels + "}";
        text_ += " " + value + "\n";
    }

    std::string text_;
};

double seconds(std::chrono::nanoseconds duration) {
    return std::chrono::duration<double>(duration).count();
}

// One batcher's series: its label, a stats snapshot, and the bounds it was built with.
struct BatcherMetrics {
    std::string batcher;
    microbatch::Stats stats;
    std::size_t max_batch_size = 0;
    std::size_t capacity = 0;
};

void write_batcher_metrics(MetricsWriter& out, const std::vector<BatcherMetrics>& batchers) {
    const auto each = [&](const char* name, const char* type, const char* help, auto value) {
        out.family(name, type, help);
        for (const BatcherMetrics& b : batchers) {
            out.sample(name, "batcher=\"" + b.batcher + "\"", value(b));
        }
    };
    // Same, for a series computed from the stats alone.
    const auto each_stat = [&](const char* name, const char* type, const char* help, auto value) {
        each(name, type, help, [&value](const BatcherMetrics& b) { return value(b.stats); });
    };
    using Stats = microbatch::Stats;
    each_stat("microbatch_items_accepted_total", "counter", "Items the batcher accepted.",
              [](const Stats& s) { return s.items_accepted; });
    each_stat("microbatch_items_processed_total", "counter", "Items whose batch succeeded.",
              [](const Stats& s) { return s.items_processed; });
    each_stat("microbatch_items_failed_total", "counter", "Items whose batch failed.",
              [](const Stats& s) { return s.items_failed; });
    each_stat("microbatch_items_expired_total", "counter",
              "Items whose deadline passed before their batch ran (never processed).",
              [](const Stats& s) { return s.items_expired; });
    each_stat("microbatch_items_cancelled_total", "counter",
              "Items cancelled through their handle before their batch ran.",
              [](const Stats& s) { return s.items_cancelled; });

    out.family("microbatch_items_rejected_total", "counter",
               "Submits the batcher refused, by reason: full (try/timed submit at capacity), "
               "closed, error (the item's construction threw), infeasible (admission control: "
               "predicted to finish after its deadline).");
    for (const BatcherMetrics& b : batchers) {
        const std::pair<const char*, std::uint64_t> reasons[] = {
            {"full", b.stats.items_rejected_full},
            {"closed", b.stats.items_rejected_closed},
            {"error", b.stats.items_rejected_error},
            {"infeasible", b.stats.items_rejected_infeasible}};
        for (const auto& [reason, count] : reasons) {
            out.sample("microbatch_items_rejected_total",
                       "batcher=\"" + b.batcher + "\",reason=\"" + reason + "\"", count);
        }
    }
    each_stat("microbatch_items_in_flight", "gauge", "Items accepted and not finished yet.",
              [](const Stats& s) {
                  return s.items_accepted - s.items_processed - s.items_failed - s.items_expired -
                         s.items_cancelled;
              });
    each("microbatch_capacity_items", "gauge",
         "Items the batcher holds (accepted, not finished) before submits block.",
         [](const BatcherMetrics& b) { return static_cast<std::uint64_t>(b.capacity); });
    each_stat("microbatch_callback_exceptions_total", "counter",
              "Exceptions thrown by per-item completion callbacks.",
              [](const Stats& s) { return s.callback_exceptions; });

    out.family("microbatch_batches_total", "counter", "Batches dispatched, by reason.");
    for (const BatcherMetrics& b : batchers) {
        const std::string& batcher = b.batcher;
        const Stats& stats = b.stats;
        const std::pair<const char*, std::uint64_t> reasons[] = {
            {"full", stats.batches_full},
            {"deadline", stats.batches_deadline},
            {"flush", stats.batches_flush},
            {"close", stats.batches_close},
            {"worker_free", stats.batches_worker_free},
            {"early", stats.batches_early},
            {"item_deadline", stats.batches_item_deadline}};
        for (const auto& [reason, count] : reasons) {
            out.sample("microbatch_batches_total",
                       "batcher=\"" + batcher + "\",reason=\"" + reason + "\"", count);
        }
    }
    each_stat("microbatch_batches_failed_total", "counter",
              "Batches whose function threw or returned a wrong number of results.",
              [](const Stats& s) { return s.batches_failed; });

    // Stats::batch_size_histogram[k] counts batches of [2^k, 2^(k+1)) items: cumulative
    // Prometheus buckets with le = 2^(k+1) - 1, up to the first bound >= max_batch_size.
    out.family("microbatch_batch_size_items", "histogram", "Items per completed batch.");
    for (const BatcherMetrics& b : batchers) {
        const std::string& batcher = b.batcher;
        const Stats& stats = b.stats;
        std::uint64_t cumulative = 0;
        for (std::size_t k = 0; k < stats.batch_size_histogram.size(); ++k) {
            cumulative += stats.batch_size_histogram[k];
            const std::uint64_t bound = (std::uint64_t{2} << k) - 1;
            out.sample("microbatch_batch_size_items_bucket",
                       "batcher=\"" + batcher + "\",le=\"" + std::to_string(bound) + "\"",
                       cumulative);
            if (bound >= b.max_batch_size) {
                break;
            }
        }
        const std::string label = "batcher=\"" + batcher + "\"";
        out.sample("microbatch_batch_size_items_bucket", label + ",le=\"+Inf\"",
                   stats.batches_completed);
        out.sample("microbatch_batch_size_items_sum", label,
                   stats.items_processed + stats.items_failed);
        out.sample("microbatch_batch_size_items_count", label, stats.batches_completed);
    }

    const auto summary = [&](const char* name, const char* help, auto field) {
        out.family(name, "summary", help);
        for (const BatcherMetrics& b : batchers) {
            const std::string label = "batcher=\"" + b.batcher + "\"";
            const auto& stats = b.stats;
            out.sample(std::string(name) + "_sum", label, seconds(field(stats).total));
            out.sample(std::string(name) + "_count", label, field(stats).count);
        }
    };
    summary("microbatch_queue_delay_seconds",
            "Per batch, how long its oldest item waited from submit to dispatch.",
            [](const Stats& s) { return s.queue_delay; });
    summary("microbatch_processing_seconds", "Per batch, how long the batch function ran.",
            [](const Stats& s) { return s.processing_time; });
    each_stat("microbatch_queue_delay_max_seconds", "gauge", "Longest queue delay of any batch.",
              [](const Stats& s) { return seconds(s.queue_delay.max); });
    each_stat("microbatch_processing_max_seconds", "gauge", "Longest run of the batch function.",
              [](const Stats& s) { return seconds(s.processing_time.max); });
}

// ---- The service ------------------------------------------------------------------------------

class Service {
public:
    explicit Service(const ServiceConfig& config)
        : config_(config),
          doubler_(options(config),
                   [](microbatch::Batch<double>& batch) {
                       std::vector<double> results;
                       results.reserve(batch.size());
                       for (const double x : batch) {
                           results.push_back(doubled(x));
                       }
                       return results;
                   }),
          model_(options(config), [this](microbatch::Batch<double>& batch) {
              // One call for the whole batch: alpha once, beta per item.
              busy_wait(std::chrono::microseconds(config_.model_alpha_us +
                                                  config_.model_beta_us * batch.size()));
              std::vector<double> results;
              results.reserve(batch.size());
              for (const double x : batch) {
                  results.push_back(predict(x));
              }
              return results;
          }) {
        const std::size_t threads = config.http_threads;
        server_.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
        server_.set_tcp_nodelay(true);
        // Keep-alive connections hold a thread each; an idle one is closed after 1 s, which
        // also bounds how long shutdown waits for idle clients.
        server_.set_keep_alive_max_count(100000);
        server_.set_keep_alive_timeout(1);
        server_.set_read_timeout(5, 0);
        server_.set_write_timeout(5, 0);
        server_.set_payload_max_length(16 * 1024 * 1024);

        server_.Post("/v1/double",
                     [this](const httplib::Request& request, httplib::Response& response) {
                         serve_items(doubler_, request, response);
                     });
        server_.Post("/v1/model",
                     [this](const httplib::Request& request, httplib::Response& response) {
                         serve_items(model_, request, response);
                     });
        server_.Get("/metrics", [this](const httplib::Request&, httplib::Response& response) {
            response.set_content(metrics(), "text/plain; version=0.0.4; charset=utf-8");
        });
        server_.Get("/healthz", [](const httplib::Request&, httplib::Response& response) {
            response.set_content("ok\n", "text/plain");
        });
        // A known path asked with a method it does not serve: 405 with an Allow header, where
        // httplib would answer 404 as for an unknown path. (HEAD goes to the GET handlers.)
        const auto not_allowed = [](const char* allow) {
            return [allow](const httplib::Request& request, httplib::Response& response) {
                response.set_header("Allow", allow);
                reply_error(response, 405,
                            request.method + " not allowed on " + request.path + "; use " + allow);
            };
        };
        for (const char* path : {"/v1/double", "/v1/model"}) {
            server_.Get(path, not_allowed("POST"));
            server_.Put(path, not_allowed("POST"));
            server_.Patch(path, not_allowed("POST"));
            server_.Delete(path, not_allowed("POST"));
            server_.Options(path, not_allowed("POST"));
        }
        for (const char* path : {"/metrics", "/healthz"}) {
            server_.Post(path, not_allowed("GET, HEAD"));
            server_.Put(path, not_allowed("GET, HEAD"));
            server_.Patch(path, not_allowed("GET, HEAD"));
            server_.Delete(path, not_allowed("GET, HEAD"));
            server_.Options(path, not_allowed("GET, HEAD"));
        }
        server_.set_logger(
            [this](const httplib::Request& request, const httplib::Response& response) {
                count_request(request.path, response.status);
            });
    }

    Service(const Service&) = delete;
    Service& operator=(const Service&) = delete;

    // Binds @p host:@p port (0 = ephemeral); returns the port, or -1.
    int bind(const std::string& host, int port) {
        if (port == 0) {
            return server_.bind_to_any_port(host);
        }
        return server_.bind_to_port(host, port) ? port : -1;
    }

    // Serves until stop(); returns once every accepted connection has been answered.
    void run() {
        {
            std::lock_guard<std::mutex> lock(run_mutex_);
            if (stop_requested_) {
                return;
            }
            run_entered_ = true;
        }
        server_.listen_after_bind();
        finished_.store(true);
    }

    // Stops accepting; in-flight requests still get their answers, without waiting for
    // max_delay: their partial batches are flushed. Callable from any thread, any number of
    // times, before or during run().
    void stop() {
        {
            std::lock_guard<std::mutex> lock(run_mutex_);
            if (stop_requested_) {
                return;
            }
            stop_requested_ = true;
            if (!run_entered_) {
                return;  // run() will see stop_requested_ and not start
            }
        }
        // httplib's stop() acts only on a listening server: wait until run() got that far.
        while (!server_.is_running() && !finished_.load()) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        server_.stop();
        // Requests already inside their handlers keep running; dispatch the items they are
        // waiting for now. (An item submitted after this still waits at most max_delay.)
        doubler_.flush();
        model_.flush();
    }

    // Waits until every item submitted so far has finished and is counted in the stats.
    // (A handle completes just before its batch's statistics are recorded.)
    void wait_idle() {
        doubler_.wait_idle();
        model_.wait_idle();
    }

    // Processes whatever is still queued and stops the batchers (after run() returned).
    void close() {
        doubler_.close();
        model_.close();
    }

    std::size_t in_flight() const { return in_flight_.load(); }
    microbatch::Stats model_stats() const { return model_.stats(); }
    microbatch::Stats double_stats() const { return doubler_.stats(); }

    std::string metrics() const {
        MetricsWriter out;
        write_batcher_metrics(
            out, {batcher_metrics("double", doubler_), batcher_metrics("model", model_)});
        out.family("http_requests_total", "counter", "HTTP requests answered, by path and code.");
        std::lock_guard<std::mutex> lock(requests_mutex_);
        for (const auto& [key, count] : requests_) {
            out.sample("http_requests_total",
                       "path=\"" + key.first + "\",code=\"" + std::to_string(key.second) + "\"",
                       count);
        }
        out.family("http_deadline_requests_total", "counter",
                   "Requests with X-Request-Timeout-Ms that failed their deadline, by outcome: "
                   "expired (an item's deadline passed before its batch ran: 504), refused "
                   "(admission control predicted a late finish: 503).");
        out.sample("http_deadline_requests_total", "outcome=\"expired\"",
                   static_cast<std::uint64_t>(deadline_expired_.load()));
        out.sample("http_deadline_requests_total", "outcome=\"refused\"",
                   static_cast<std::uint64_t>(deadline_refused_.load()));
        out.family("http_requests_in_flight", "gauge", "Batched requests being served.");
        out.sample("http_requests_in_flight", "", static_cast<std::uint64_t>(in_flight()));
        return out.text();
    }

private:
    using DoubleBatcher = microbatch::Batcher<double, double>;

    static BatcherMetrics batcher_metrics(const char* name, const DoubleBatcher& batcher) {
        return {name, batcher.stats(), batcher.options().max_batch_size(),
                batcher.options().effective_capacity()};
    }

    static microbatch::Options options(const ServiceConfig& config) {
        return microbatch::Options{}
            .max_batch_size(config.batch_size)
            .max_delay(std::chrono::microseconds(config.delay_us))
            .workers(config.workers)
            .capacity(config.capacity != 0 ? std::max(config.capacity, config.batch_size)
                                           : std::max(4 * config.batch_size, config.http_threads))
            .admission_control(config.admission_control);
    }

    static void reply_error(httplib::Response& response, int status, const std::string& message) {
        response.status = status;
        response.set_content(Json{{"error", message}}.dump() + "\n", "application/json");
    }

    // Parses the items, submits each one, waits for all their results, answers.
    void serve_items(DoubleBatcher& batcher, const httplib::Request& request,
                     httplib::Response& response) {
        in_flight_.fetch_add(1);
        struct Leave {
            std::atomic<std::size_t>& counter;
            ~Leave() { counter.fetch_sub(1); }
        } leave{in_flight_};

        const Json body = Json::parse(request.body, nullptr, /*allow_exceptions=*/false);
        if (body.is_discarded()) {
            return reply_error(response, 400, "the body is not valid JSON");
        }
        if (!body.is_number() && !body.is_array()) {
            return reply_error(response, 400, "expected a number or an array of numbers");
        }
        if (body.is_array() && body.size() > config_.max_items) {
            return reply_error(response, 413,
                               "at most " + std::to_string(config_.max_items) + " items");
        }
        std::vector<double> items;
        if (body.is_number()) {
            items.push_back(body.get<double>());
        } else {
            items.reserve(body.size());
            for (const Json& item : body) {
                if (!item.is_number()) {
                    return reply_error(response, 400, "expected an array of numbers");
                }
                items.push_back(item.get<double>());
            }
        }

        // X-Request-Timeout-Ms: every item gets the deadline now + that many milliseconds.
        std::optional<Clock::time_point> deadline;
        if (request.has_header("X-Request-Timeout-Ms")) {
            const std::string value = request.get_header_value("X-Request-Timeout-Ms");
            char* end = nullptr;
            errno = 0;
            const unsigned long long ms = std::strtoull(value.c_str(), &end, 10);
            if (value.empty() || value[0] == '-' || *end != '\0' || errno != 0 || ms > 86400000) {
                return reply_error(response, 400,
                                   "X-Request-Timeout-Ms must be a number of milliseconds in "
                                   "[0, 86400000] (got \"" +
                                       value + "\")");
            }
            deadline = Clock::now() + std::chrono::milliseconds(ms);
        }

        std::vector<microbatch::Handle<double>> handles;
        handles.reserve(items.size());
        // A request that fails its deadline withdraws its other items (Handle::cancel): they
        // would only take batch slots and model time from requests that can still make it.
        const auto cancel_rest = [&handles] {
            for (microbatch::Handle<double>& handle : handles) {
                if (handle.valid()) {
                    handle.cancel();
                }
            }
        };
        try {
            // One bulk submission for the request's items: they claim their slots together
            // (as few batches as possible) instead of queueing item by item behind other
            // requests' items when the batcher is full; with a deadline, admission control
            // admits or refuses the request as a whole. Blocks while the batcher is full.
            if (deadline) {
                batcher.submit_n(*deadline, items.begin(), items.size(),
                                 std::back_inserter(handles));
            } else {
                batcher.submit_n(items.begin(), items.size(), std::back_inserter(handles));
            }
            Json results = Json::array();
            for (microbatch::Handle<double>& handle : handles) {
                results.push_back(handle.get());
            }
            Json answer;
            answer["result"] = body.is_number() ? results.front() : results;
            response.set_content(answer.dump() + "\n", "application/json");
        } catch (const microbatch::DeadlineInfeasible&) {
            cancel_rest();
            deadline_refused_.fetch_add(1);
            const long long retry = retry_after_seconds(batcher);
            response.set_header("Retry-After", std::to_string(retry));
            reply_error(response, 503,
                        "cannot finish within X-Request-Timeout-Ms: the work already queued "
                        "would make it late (admission control); retry in " +
                            std::to_string(retry) + " s or with a longer timeout");
        } catch (const microbatch::DeadlineExceeded&) {
            cancel_rest();
            deadline_expired_.fetch_add(1);
            reply_error(response, 504,
                        "X-Request-Timeout-Ms passed before the items were processed");
        } catch (const microbatch::ClosedError&) {
            reply_error(response, 503, "shutting down");
        } catch (const std::exception& error) {
            reply_error(response, 500, error.what());
        }
    }

    // Retry-After for a refused request: how long the items already pending take to drain, from
    // the batcher's online cost fit (alpha per batch, beta per item), rounded up to whole seconds.
    static long long retry_after_seconds(const DoubleBatcher& batcher) {
        const microbatch::Stats stats = batcher.stats();
        const auto fit = stats.batch_cost.fit();
        const double pending = static_cast<double>(batcher.pending());
        const double size = static_cast<double>(batcher.max_batch_size());
        double seconds = 0.0;
        if (fit) {
            seconds = (std::ceil(pending / size) * std::max(0.0, fit->per_batch.count()) +
                       pending * std::max(0.0, fit->per_item.count())) /
                      static_cast<double>(std::max<std::size_t>(1, batcher.max_in_flight()));
        }
        return std::max(1LL, static_cast<long long>(std::ceil(seconds)));
    }

    void count_request(const std::string& path, int status) {
        static const char* const known[] = {"/v1/double", "/v1/model", "/metrics", "/healthz"};
        const bool is_known =
            std::find(std::begin(known), std::end(known), path) != std::end(known);
        std::lock_guard<std::mutex> lock(requests_mutex_);
        ++requests_[{is_known ? path : std::string("other"), status}];  // bounded label set
    }

    ServiceConfig config_;
    // Declared before server_, so they outlive it: handlers use them until the server is gone.
    DoubleBatcher doubler_;
    DoubleBatcher model_;
    std::atomic<std::size_t> in_flight_{0};
    std::atomic<std::uint64_t> deadline_expired_{0};  // requests answered 504
    std::atomic<std::uint64_t> deadline_refused_{0};  // requests answered 503 by admission control
    mutable std::mutex requests_mutex_;
    std::map<std::pair<std::string, int>, std::uint64_t> requests_;
    std::mutex run_mutex_;
    bool stop_requested_ = false;  // guarded by run_mutex_
    bool run_entered_ = false;     // guarded by run_mutex_
    std::atomic<bool> finished_{false};
    httplib::Server server_;
};

// ---- Signals ----------------------------------------------------------------------------------

// Turns SIGINT/SIGTERM into a call on an ordinary thread: the constructor blocks both signals
// (every thread started afterwards inherits the mask, so none is interrupted), and a watcher
// thread waits for them with sigtimedwait. A second signal exits at once.
class ShutdownSignals {
public:
    ShutdownSignals() {
        sigemptyset(&signals_);
        sigaddset(&signals_, SIGINT);
        sigaddset(&signals_, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &signals_, nullptr);
    }
    ShutdownSignals(const ShutdownSignals&) = delete;
    ShutdownSignals& operator=(const ShutdownSignals&) = delete;
    ~ShutdownSignals() {
        stop_.store(true);
        if (watcher_.joinable()) {
            watcher_.join();
        }
    }

    // Calls @p handler(signal) on the watcher thread when the first signal arrives. Once.
    void on_signal(std::function<void(int)> handler) {
        if (watcher_.joinable()) {
            throw std::logic_error("ShutdownSignals::on_signal called twice");
        }
        watcher_ = std::thread([this, handler = std::move(handler)] {
            const timespec tick{0, 100 * 1000 * 1000};  // re-check stop_ ten times a second
            bool first = true;
            while (!stop_.load()) {
                const int signal = sigtimedwait(&signals_, nullptr, &tick);
                if (signal <= 0) {
                    continue;
                }
                if (!first) {
                    std::fprintf(stderr, "%s: second signal, exiting without draining\n",
                                 program_name);
                    std::_Exit(1);
                }
                first = false;
                handler(signal);
            }
        });
    }

private:
    sigset_t signals_{};
    std::atomic<bool> stop_{false};
    std::thread watcher_;
};

// ---- Load generator ---------------------------------------------------------------------------

struct LoadResult {
    std::size_t batch_size = 0;
    std::size_t ok = 0;
    std::size_t errors = 0;
    std::string first_error;
    double seconds = 0;
    std::vector<double> latencies_ms;
    microbatch::Stats model;  // the server's model batcher after the run
};

double input_value(std::size_t request, std::size_t item, std::size_t items_per_request) {
    return static_cast<double>((request * items_per_request + item) % 2001) / 100.0 - 10.0;
}

// Checks one /v1/model or /v1/double answer against @p expected.
bool check_answer(const httplib::Result& result, const std::vector<double>& expected, bool single,
                  std::string& error) {
    if (!result) {
        error = "request failed: " + httplib::to_string(result.error());
        return false;
    }
    if (result->status != 200) {
        error = "status " + std::to_string(result->status) + ": " + result->body;
        return false;
    }
    const Json answer = Json::parse(result->body, nullptr, false);
    if (answer.is_discarded() || !answer.contains("result")) {
        error = "malformed answer: " + result->body;
        return false;
    }
    const Json& value = answer["result"];
    bool same = false;
    if (single) {
        same = value.is_number() && value.get<double>() == expected.front();
    } else if (value.is_array() && value.size() == expected.size()) {
        same = true;
        for (std::size_t i = 0; i < expected.size(); ++i) {
            same = same && value[i].is_number() && value[i].get<double>() == expected[i];
        }
    }
    if (!same) {
        error = "wrong result: " + result->body;
    }
    return same;
}

std::string request_body(const std::vector<double>& items, bool single) {
    return single ? Json(items.front()).dump() : Json(items).dump();
}

// Drives POST /v1/model on 127.0.0.1:@p port from load.concurrency keep-alive clients until
// load.requests requests are done or load.max_seconds have passed.
LoadResult run_load(int port, const LoadConfig& load) {
    LoadResult result;
    std::atomic<std::size_t> next_request{0};
    std::mutex mutex;
    std::condition_variable all_ready;
    std::size_t ready = 0;
    Clock::time_point start;
    std::mutex connect_mutex;

    std::vector<std::vector<double>> latencies(load.concurrency);
    std::vector<std::size_t> errors(load.concurrency, 0);
    std::vector<std::string> first_errors(load.concurrency);
    std::vector<std::thread> clients;
    for (std::size_t c = 0; c < load.concurrency; ++c) {
        clients.emplace_back([&, c] {
            httplib::Client client("127.0.0.1", port);
            client.set_keep_alive(true);
            client.set_tcp_nodelay(true);
            client.set_connection_timeout(5, 0);
            client.set_read_timeout(30, 0);
            client.set_write_timeout(10, 0);
            {
                // Connect one client at a time (the server's listen backlog is short) and
                // outside the measured interval.
                std::lock_guard<std::mutex> lock(connect_mutex);
                client.Get("/healthz");
            }
            {
                std::unique_lock<std::mutex> lock(mutex);
                if (++ready == load.concurrency) {
                    start = Clock::now();
                    all_ready.notify_all();
                } else {
                    all_ready.wait(lock, [&] { return ready == load.concurrency; });
                }
            }
            const Clock::time_point stop_at = start + std::chrono::seconds(load.max_seconds);
            std::vector<double> items(load.items);
            std::vector<double> expected(load.items);
            for (;;) {
                const std::size_t request = next_request.fetch_add(1);
                if (request >= load.requests || Clock::now() >= stop_at) {
                    break;
                }
                for (std::size_t i = 0; i < load.items; ++i) {
                    items[i] = input_value(request, i, load.items);
                    expected[i] = predict(items[i]);
                }
                const bool single = load.items == 1;
                const Clock::time_point sent = Clock::now();
                const httplib::Result answer =
                    client.Post("/v1/model", request_body(items, single), "application/json");
                const Clock::time_point received = Clock::now();
                std::string error;
                if (check_answer(answer, expected, single, error)) {
                    latencies[c].push_back(
                        std::chrono::duration<double, std::milli>(received - sent).count());
                } else if (errors[c]++ == 0) {
                    first_errors[c] = error;
                }
            }
        });
    }
    for (std::thread& client : clients) {
        client.join();
    }
    result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    for (std::size_t c = 0; c < load.concurrency; ++c) {
        result.latencies_ms.insert(result.latencies_ms.end(), latencies[c].begin(),
                                   latencies[c].end());
        result.errors += errors[c];
        if (result.first_error.empty()) {
            result.first_error = first_errors[c];
        }
    }
    result.ok = result.latencies_ms.size();
    std::sort(result.latencies_ms.begin(), result.latencies_ms.end());
    return result;
}

double percentile(const std::vector<double>& sorted, double q) {
    if (sorted.empty()) {
        return 0;
    }
    const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
    return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
}

// Starts a server with max_batch_size @p batch_size on an ephemeral loopback port, loads it,
// stops it.
LoadResult load_one(ServiceConfig service_config, std::size_t batch_size, const LoadConfig& load) {
    service_config.batch_size = batch_size;
    // Every keep-alive client holds a server thread; leave room for /metrics and friends.
    service_config.http_threads = std::max(service_config.http_threads, load.concurrency + 8);
    service_config.max_items = std::max(service_config.max_items, load.items);
    Service service(service_config);
    const int port = service.bind("127.0.0.1", 0);
    if (port <= 0) {
        throw std::runtime_error("cannot bind an ephemeral port on 127.0.0.1");
    }
    std::thread server([&] { service.run(); });
    LoadResult result = run_load(port, load);
    service.stop();
    server.join();
    service.close();
    result.batch_size = batch_size;
    result.model = service.model_stats();
    return result;
}

void print_comparison(const std::vector<LoadResult>& results) {
    const auto row = [&](const char* label, auto cell) {
        std::printf("%-26s", label);
        for (const LoadResult& result : results) {
            std::printf("%14s", cell(result).c_str());
        }
        std::printf("\n");
    };
    const auto fixed = [](double value, int decimals) {
        char text[32];
        std::snprintf(text, sizeof text, "%.*f", decimals, value);
        return std::string(text);
    };
    const auto throughput = [](const LoadResult& r) {
        return r.seconds > 0 ? static_cast<double>(r.ok) / r.seconds : 0.0;
    };
    row("", [](const LoadResult& r) {
        return "B=" + std::to_string(r.batch_size) + (r.batch_size == 1 ? " (off)" : " (on)");
    });
    row("requests ok", [](const LoadResult& r) { return std::to_string(r.ok); });
    row("errors", [](const LoadResult& r) { return std::to_string(r.errors); });
    row("seconds", [&](const LoadResult& r) { return fixed(r.seconds, 2); });
    row("throughput (requests/s)", [&](const LoadResult& r) { return fixed(throughput(r), 0); });
    row("latency p50 (ms)",
        [&](const LoadResult& r) { return fixed(percentile(r.latencies_ms, 0.50), 2); });
    row("latency p99 (ms)",
        [&](const LoadResult& r) { return fixed(percentile(r.latencies_ms, 0.99), 2); });
    row("model calls (batches)",
        [](const LoadResult& r) { return std::to_string(r.model.batches_completed); });
    row("mean batch size",
        [&](const LoadResult& r) { return fixed(r.model.batch_size_mean(), 1); });
    row("throughput speed-up", [&](const LoadResult& r) {
        const double base = throughput(results.front());
        return base > 0 ? fixed(throughput(r) / base, 1) + "x" : std::string("-");
    });
}

std::vector<LoadResult> compare(const Config& config) {
    const ServiceConfig& s = config.service;
    const LoadConfig& load = config.load;
    std::printf(
        "%s --load: POST /v1/model, up to %zu requests x %zu item(s) or %zu s per run, %zu "
        "concurrent keep-alive clients over 127.0.0.1\n"
        "model call: alpha %zu us + beta %zu us per item (busy-wait); %zu worker(s), max_delay "
        "%zu us\n\n",
        program_name, load.requests, load.items, load.max_seconds, load.concurrency,
        s.model_alpha_us, s.model_beta_us, s.workers, s.delay_us);
    std::fflush(stdout);
    std::vector<LoadResult> results;
    results.push_back(load_one(s, 1, load));
    if (s.batch_size != 1) {
        results.push_back(load_one(s, s.batch_size, load));
    }
    print_comparison(results);
    for (const LoadResult& result : results) {
        if (result.errors != 0) {
            std::fprintf(stderr, "%s: B=%zu: %zu failed requests, first: %s\n", program_name,
                         result.batch_size, result.errors, result.first_error.c_str());
        }
    }
    return results;
}

// ---- Serve ------------------------------------------------------------------------------------

int serve(const Config& config) {
    ShutdownSignals signals;  // first: every thread created from here on has them blocked
    Service service(config.service);
    const int port = service.bind(config.host, config.port);
    if (port <= 0) {
        std::fprintf(stderr, "%s: cannot listen on %s:%d: %s\n", program_name, config.host.c_str(),
                     config.port, std::strerror(errno));
        return 1;
    }
    const ServiceConfig& s = config.service;
    std::printf(
        "%s: listening on http://%s:%d (batch size %zu, max_delay %zu us, %zu worker(s), "
        "model alpha %zu us + beta %zu us/item)\n",
        program_name, config.host.c_str(), port, s.batch_size, s.delay_us, s.workers,
        s.model_alpha_us, s.model_beta_us);
    std::printf("try: curl -s -d '[1, 2, 3]' http://%s:%d/v1/model\n", config.host.c_str(), port);
    std::fflush(stdout);

    signals.on_signal([&](int signal) {
        std::printf("%s: %s received: draining in-flight requests\n", program_name,
                    signal == SIGINT ? "SIGINT" : "SIGTERM");
        std::fflush(stdout);
        service.stop();
    });
    service.run();    // returns after stop() once every in-flight request was answered
    service.close();  // nothing is left in the batchers; close() makes that certain
    const microbatch::Stats model = service.model_stats();
    const microbatch::Stats doubled_stats = service.double_stats();
    std::printf(
        "%s: stopped. model: %llu items in %llu batches; double: %llu items in %llu "
        "batches\n",
        program_name, static_cast<unsigned long long>(model.items_processed),
        static_cast<unsigned long long>(model.batches_completed),
        static_cast<unsigned long long>(doubled_stats.items_processed),
        static_cast<unsigned long long>(doubled_stats.batches_completed));
    return 0;
}

// ---- Self-test --------------------------------------------------------------------------------

class Checker {
public:
    void check(bool ok, const std::string& what) {
        if (!ok) {
            std::lock_guard<std::mutex> lock(mutex_);
            std::fprintf(stderr, "%s: FAILED: %s\n", program_name, what.c_str());
            ++failures_;
        }
    }
    int failures() const { return failures_; }

private:
    std::mutex mutex_;
    int failures_ = 0;
};

// The value of the sample "<name>{<labels>}" in a Prometheus text page, or -1.
double metric(const std::string& page, const std::string& series) {
    const std::string prefix = "\n" + series + " ";
    const std::size_t at = page.find(prefix);
    return at == std::string::npos ? -1.0 : std::atof(page.c_str() + at + prefix.size());
}

void test_endpoints(Checker& checker) {
    ServiceConfig config;
    config.batch_size = 8;
    config.delay_us = 2000;
    config.workers = 2;
    config.model_alpha_us = 200;
    config.model_beta_us = 5;
    config.http_threads = 16;
    config.max_items = 100;
    Service service(config);
    const int port = service.bind("127.0.0.1", 0);
    checker.check(port > 0, "bind an ephemeral port");
    if (port <= 0) {
        return;
    }
    std::thread server([&] { service.run(); });

    httplib::Client client("127.0.0.1", port);
    client.set_read_timeout(10, 0);
    const auto health = client.Get("/healthz");
    checker.check(health && health->status == 200 && health->body == "ok\n", "GET /healthz");

    std::string error;
    checker.check(
        check_answer(client.Post("/v1/double", "21", "application/json"), {42.0}, true, error),
        "POST /v1/double 21: " + error);
    checker.check(check_answer(client.Post("/v1/double", "[1, 2.5, -3]", "application/json"),
                               {2.0, 5.0, -6.0}, false, error),
                  "POST /v1/double [1, 2.5, -3]: " + error);
    checker.check(
        check_answer(client.Post("/v1/model", "0", "application/json"), {0.5}, true, error),
        "POST /v1/model 0: " + error);
    const auto empty = client.Post("/v1/double", "[]", "application/json");
    checker.check(
        empty && empty->status == 200 && Json::parse(empty->body)["result"] == Json::array(),
        "POST /v1/double []");
    std::size_t rejected = 0;
    for (const char* bad : {"not json", "{\"x\": 1}", "[1, \"two\"]", "\"3\""}) {
        const auto answer = client.Post("/v1/double", bad, "application/json");
        checker.check(answer && answer->status == 400, std::string("400 for body ") + bad);
        ++rejected;
    }
    const auto too_many =
        client.Post("/v1/double", Json(std::vector<double>(config.max_items + 1, 1.0)).dump(),
                    "application/json");
    checker.check(too_many && too_many->status == 413, "413 for too many items");
    const auto get_double = client.Get("/v1/double");
    checker.check(
        get_double && get_double->status == 405 && get_double->get_header_value("Allow") == "POST",
        "405 (Allow: POST) for GET /v1/double");
    const auto post_metrics = client.Post("/metrics", "x", "text/plain");
    checker.check(post_metrics && post_metrics->status == 405 &&
                      post_metrics->get_header_value("Allow") == "GET, HEAD",
                  "405 (Allow: GET, HEAD) for POST /metrics");
    const auto delete_model = client.Delete("/v1/model");
    checker.check(delete_model && delete_model->status == 405, "405 for DELETE /v1/model");
    const auto unknown = client.Get("/v1/nothing");
    checker.check(unknown && unknown->status == 404, "404 for an unknown path");

    // Concurrent clients, both endpoints, 1 to 3 items per request: every answer exact.
    std::atomic<std::uint64_t> double_items{3 + 1};  // the requests above: 21, [1, 2.5, -3]
    std::atomic<std::uint64_t> model_items{1};
    std::vector<std::thread> clients;
    for (std::size_t c = 0; c < 8; ++c) {
        clients.emplace_back([&, c] {
            httplib::Client own("127.0.0.1", port);
            own.set_keep_alive(true);
            own.set_read_timeout(10, 0);
            for (std::size_t r = 0; r < 30; ++r) {
                const std::size_t count = 1 + (c + r) % 3;
                std::vector<double> items;
                std::vector<double> expected;
                const bool model = (c + r) % 2 == 0;
                for (std::size_t i = 0; i < count; ++i) {
                    items.push_back(input_value(c * 100 + r, i, count));
                    expected.push_back(model ? predict(items.back()) : doubled(items.back()));
                }
                std::string failure;
                const bool single = count == 1;
                checker.check(
                    check_answer(own.Post(model ? "/v1/model" : "/v1/double",
                                          request_body(items, single), "application/json"),
                                 expected, single, failure),
                    "concurrent request: " + failure);
                (model ? model_items : double_items).fetch_add(count);
            }
        });
    }
    for (std::thread& thread : clients) {
        thread.join();
    }

    service.wait_idle();  // so that the counters include the last batches
    const auto page = client.Get("/metrics");
    checker.check(page && page->status == 200 &&
                      page->get_header_value("Content-Type").rfind("text/plain", 0) == 0,
                  "GET /metrics");
    const std::string text = page ? "\n" + page->body : std::string();
    checker.check(metric(text, "microbatch_items_processed_total{batcher=\"double\"}") ==
                      static_cast<double>(double_items.load()),
                  "metrics: double items processed");
    checker.check(metric(text, "microbatch_items_processed_total{batcher=\"model\"}") ==
                      static_cast<double>(model_items.load()),
                  "metrics: model items processed");
    const microbatch::Stats model = service.model_stats();
    checker.check(metric(text, "microbatch_batch_size_items_count{batcher=\"model\"}") ==
                      static_cast<double>(model.batches_completed),
                  "metrics: model batch count");
    checker.check(
        metric(text, "microbatch_batch_size_items_bucket{batcher=\"model\",le=\"+Inf\"}") ==
            static_cast<double>(model.batches_completed),
        "metrics: histogram +Inf bucket");
    for (const char* reason : {"full", "closed", "error"}) {
        checker.check(metric(text, std::string("microbatch_items_rejected_total{batcher=\"double\","
                                               "reason=\"") +
                                       reason + "\"}") == 0.0,
                      std::string("metrics: no rejections for reason ") + reason);
    }
    checker.check(metric(text, "microbatch_callback_exceptions_total{batcher=\"model\"}") == 0.0,
                  "metrics: callback exceptions");
    // capacity 0 in the config: max(4 x batch_size, http_threads) = max(32, 16)
    checker.check(metric(text, "microbatch_capacity_items{batcher=\"model\"}") == 32.0,
                  "metrics: capacity");
    checker.check(metric(text, "http_requests_total{path=\"/v1/double\",code=\"400\"}") ==
                      static_cast<double>(rejected),
                  "metrics: 400s counted");
    checker.check(text.find("# TYPE microbatch_batch_size_items histogram") != std::string::npos,
                  "metrics: TYPE lines");

    // Deadlines: the model has run batches (a fit with alpha = 200 us), so a request that must
    // finish now is refused at once by admission control.
    httplib::Headers now_header = {{"X-Request-Timeout-Ms", "0"}};
    const auto refused = client.Post("/v1/model", now_header, "[1, 2]", "application/json");
    checker.check(
        refused && refused->status == 503 && !refused->get_header_value("Retry-After").empty(),
        "503 with Retry-After for X-Request-Timeout-Ms: 0 (admission control)");
    httplib::Headers long_header = {{"X-Request-Timeout-Ms", "60000"}};
    checker.check(check_answer(client.Post("/v1/model", long_header, "0", "application/json"),
                               {0.5}, true, error),
                  "POST /v1/model with a 60 s timeout: " + error);
    httplib::Headers bad_header = {{"X-Request-Timeout-Ms", "soon"}};
    const auto bad_timeout = client.Post("/v1/model", bad_header, "0", "application/json");
    checker.check(bad_timeout && bad_timeout->status == 400, "400 for a bad X-Request-Timeout-Ms");
    service.wait_idle();
    const std::string after = "\n" + client.Get("/metrics")->body;
    checker.check(metric(after, "http_deadline_requests_total{outcome=\"refused\"}") == 1.0,
                  "metrics: refused deadline requests");
    checker.check(metric(after,
                         "microbatch_items_rejected_total{batcher=\"model\","
                         "reason=\"infeasible\"}") == 2.0,
                  "metrics: infeasible items (both items of the refused request: a request's "
                  "items are admitted or refused together)");
    std::printf(
        "endpoints: /healthz, /v1/double, /v1/model, /metrics answered correctly "
        "(%llu model items in %llu batches)\n",
        static_cast<unsigned long long>(model.items_processed),
        static_cast<unsigned long long>(model.batches_completed));

    service.stop();
    server.join();
    service.close();
}

// Without admission control a request whose timeout has already run out is accepted, and its
// items expire when their batch forms: 504. The items not expired yet are cancelled.
void test_deadline_expiry(Checker& checker) {
    ServiceConfig config;
    config.batch_size = 8;
    config.http_threads = 4;
    config.admission_control = false;
    Service service(config);
    const int port = service.bind("127.0.0.1", 0);
    checker.check(port > 0, "bind an ephemeral port");
    if (port <= 0) {
        return;
    }
    std::thread server([&service] { service.run(); });
    httplib::Client client("127.0.0.1", port);
    client.set_read_timeout(10, 0);
    httplib::Headers now_header = {{"X-Request-Timeout-Ms", "0"}};
    const auto expired = client.Post("/v1/double", now_header, "[1, 2, 3]", "application/json");
    checker.check(expired && expired->status == 504, "504 for items whose deadline passed");
    service.wait_idle();
    const auto page = client.Get("/metrics");
    const std::string text = page ? "\n" + page->body : std::string();
    checker.check(metric(text, "http_deadline_requests_total{outcome=\"expired\"}") == 1.0,
                  "metrics: expired deadline requests");
    checker.check(metric(text, "microbatch_items_expired_total{batcher=\"double\"}") +
                          metric(text, "microbatch_items_cancelled_total{batcher=\"double\"}") ==
                      3.0,
                  "metrics: the request's items expired or were cancelled");
    checker.check(metric(text, "microbatch_items_processed_total{batcher=\"double\"}") == 0.0,
                  "metrics: no expired item processed");
    std::printf("deadlines: 503 + Retry-After when refused, 504 when expired, counted\n");
    service.stop();
    server.join();
    service.close();
}

void test_load(Checker& checker) {
    Config config;
    config.service.batch_size = 16;
    config.service.model_alpha_us = 500;
    config.service.model_beta_us = 5;
    config.load.requests = 300;
    config.load.concurrency = 16;
    config.load.max_seconds = 5;
    for (const LoadResult& result : compare(config)) {
        checker.check(result.errors == 0 && result.ok > 0,
                      "load B=" + std::to_string(result.batch_size) + ": " +
                          std::to_string(result.errors) + " errors " + result.first_error);
        checker.check(result.model.items_processed == result.ok + result.errors,
                      "load: model items processed == requests");
    }
}

// SIGTERM while requests wait in a batch: every one of them is still answered, at once.
void test_drain_on_signal(Checker& checker, ShutdownSignals& signals) {
    ServiceConfig config;
    config.batch_size = 64;
    config.delay_us = 30000000;  // 30 s: the requests' partial batch waits for the shutdown
    config.model_alpha_us = 1000;
    config.http_threads = 16;
    Service service(config);
    const int port = service.bind("127.0.0.1", 0);
    checker.check(port > 0, "bind an ephemeral port");
    if (port <= 0) {
        return;
    }
    std::atomic<bool> signalled{false};
    signals.on_signal([&](int) {
        signalled.store(true);
        service.stop();
    });
    std::thread server([&] { service.run(); });

    // Connect the clients one after another first (keep-alive; the listen backlog is short).
    constexpr std::size_t requests = 8;
    std::vector<std::unique_ptr<httplib::Client>> connections;
    for (std::size_t c = 0; c < requests; ++c) {
        connections.push_back(std::make_unique<httplib::Client>("127.0.0.1", port));
        connections.back()->set_keep_alive(true);
        connections.back()->set_read_timeout(10, 0);
        const auto health = connections.back()->Get("/healthz");
        checker.check(health && health->status == 200, "connect client");
    }
    std::vector<std::thread> clients;
    for (std::size_t c = 0; c < requests; ++c) {
        clients.emplace_back([&, c] {
            const double x = static_cast<double>(c);
            std::string failure;
            checker.check(
                check_answer(connections[c]->Post("/v1/model", Json(x).dump(), "application/json"),
                             {predict(x)}, true, failure),
                "request in flight at SIGTERM: " + failure);
        });
    }
    // The signal arrives while every item waits in the batcher.
    const Clock::time_point give_up = Clock::now() + std::chrono::seconds(10);
    while (service.model_stats().items_accepted < requests && Clock::now() < give_up) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    checker.check(
        service.model_stats().items_accepted == requests && service.in_flight() == requests,
        "all requests in flight before the signal");
    const Clock::time_point signal_sent = Clock::now();
    kill(getpid(), SIGTERM);
    server.join();  // run() returns only after the in-flight requests were answered
    const double drain_seconds = std::chrono::duration<double>(Clock::now() - signal_sent).count();
    for (std::thread& client : clients) {
        client.join();
    }
    checker.check(signalled.load(), "SIGTERM reached the watcher");
    // Well below the 30 s max_delay: stop() flushed the waiting batch.
    checker.check(drain_seconds < 10, "drain took " + std::to_string(drain_seconds) + " s");
    httplib::Client late("127.0.0.1", port);
    late.set_connection_timeout(2, 0);
    checker.check(!late.Get("/healthz"), "no new connections after shutdown");
    service.close();
    const microbatch::Stats model = service.model_stats();
    checker.check(model.items_processed == requests, "drained requests processed");
    std::printf(
        "drain: SIGTERM with %zu requests in flight; all %llu answered, server stopped "
        "%.2f s after the signal\n",
        requests, static_cast<unsigned long long>(model.items_processed), drain_seconds);
}

int self_test() {
    ShutdownSignals signals;  // before any thread starts, as in serve()
    Checker checker;
    test_endpoints(checker);
    test_deadline_expiry(checker);
    std::printf("\n");
    test_load(checker);
    std::printf("\n");
    test_drain_on_signal(checker, signals);
    if (checker.failures() != 0) {
        std::fprintf(stderr, "%s: %d check(s) failed\n", program_name, checker.failures());
        return 1;
    }
    std::printf("check: all http_service checks passed\n");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    const Config config = parse_command_line(argc, argv);
    try {
        switch (config.mode) {
            case Mode::serve:
                return serve(config);
            case Mode::load: {
                bool failed = false;
                for (const LoadResult& result : compare(config)) {
                    failed = failed || result.errors != 0;
                }
                return failed ? 1 : 0;
            }
            case Mode::test:
                return self_test();
        }
    } catch (const std::exception& error) {
        std::fprintf(stderr, "%s: %s\n", program_name, error.what());
    }
    return 1;
}
