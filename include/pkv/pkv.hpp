// pkv/pkv.hpp — umbrella header: everything public in pkv.
//
// pkv manages the KV-cache blocks of an LLM serving engine (PagedAttention), safely and quickly
// when many scheduler threads call it at once. Start with PagedKvCache (paged_kv_cache.hpp); the
// block pool underneath (block_pool.hpp) is usable on its own.
#pragma once

#include "pkv/block_hash.hpp"
#include "pkv/block_pool.hpp"
#include "pkv/paged_kv_cache.hpp"
#include "pkv/prefix_types.hpp"
#include "pkv/types.hpp"
