#pragma once
/**
 * @file microbatch.hpp
 * @brief The umbrella header: includes every public microbatch header.
 *
 * microbatch groups items submitted one at a time into batches bounded by size and time, runs a
 * user function on each batch in a thread pool, and hands results back per item (handles or
 * callbacks) or merged through a lock-free aggregator. See README.md for an overview.
 */

#include "microbatch/version.hpp"

#include "microbatch/aggregation_ops.hpp"
#include "microbatch/aggregator.hpp"
#include "microbatch/batch.hpp"
#include "microbatch/batcher.hpp"
#include "microbatch/clock.hpp"
#include "microbatch/close_result.hpp"
#include "microbatch/cost_model.hpp"
#include "microbatch/cost_model_fitter.hpp"
#include "microbatch/errors.hpp"
#include "microbatch/executor.hpp"
#include "microbatch/handle.hpp"
#include "microbatch/item_cost.hpp"
#include "microbatch/item_deadline.hpp"
#include "microbatch/keyed_batcher.hpp"
#include "microbatch/keyed_options.hpp"
#include "microbatch/keyed_stats.hpp"
#include "microbatch/merge_into.hpp"
#include "microbatch/options.hpp"
#include "microbatch/ordered_collector.hpp"
#include "microbatch/outcome.hpp"
#include "microbatch/stats.hpp"
#include "microbatch/submit_result.hpp"
#include "microbatch/thread_pool.hpp"
