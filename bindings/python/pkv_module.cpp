// The Python module `pkv` (pybind11) over the public C++ API.
//
// Contract
//   * Names and behaviour are the C++ ones (paged_kv_cache.hpp), with the seed's names; SeqId and
//     BlockId are Python ints (pkv.SeqId is int). A negative, too large (>= 2**64) or non-int id
//     is rejected by the argument conversion (TypeError) before pkv is called.
//   * Every pkv::Error raises a pkv.Error subclass (OutOfMemory, SequenceNotFound, BlockNotFound,
//     InvalidOperation, InvalidArgument) whose `code` is a pkv.Errc and whose str() / `message` is
//     the seed's text.
//   * The GIL is released inside every call that locks, allocates or scans (py::call_guard or a
//     gil_scoped_release around the C++ call), so Python threads run pkv calls in parallel; the
//     C++ thread-safety contract applies unchanged. Arguments are converted and results built
//     while the GIL is held.
//   * repr() and str() of PagedKvCache are the seed's Display form.
// Adding a C++ method: one .def line here (with kRelease if it can take time) and one line in
// pkv.pyi.
#include <pybind11/numpy.h>
#include <pybind11/operators.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "pkv/pkv.hpp"

namespace py = pybind11;
using pkv::BlockId;
using pkv::SeqId;

namespace {

// ---- errors
// --------------------------------------------------------------------------------------

// A pkv::Error on its way out of a binding; translated into a pkv.Error subclass with the GIL
// held (after the call guard has re-acquired it).
struct ErrorThrown {
  pkv::Error error;
};

[[noreturn]] void raise(const pkv::Error& e) {
  throw ErrorThrown{e};
}

// The exception classes, indexed by Errc; created once at import and kept for the process.
PyObject* g_error_base = nullptr;
PyObject* g_error_types[5] = {};

// A pkv.Error instance for `e` (code and message set), not raised.
py::object error_object(const pkv::Error& e) {
  PyObject* type = g_error_types[static_cast<int>(e.code())];
  py::object obj =
      py::reinterpret_steal<py::object>(PyObject_CallFunction(type, "s", e.message().c_str()));
  if (!obj) throw py::error_already_set();
  obj.attr("message") = e.message();
  return obj;
}

template <class T>
T value_or_raise(pkv::Result<T> r) {
  if (!r) raise(r.error());
  return std::move(r).value();
}
void value_or_raise(const pkv::Result<void>& r) {
  if (!r) raise(r.error());
}

template <class T>
std::string printed(const T& v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

using kRelease = py::call_guard<py::gil_scoped_release>;

// ---- id lists: a buffer of unsigned 64-bit ints (numpy uint64) or any iterable of ints ----------

template <class T>
void read_ints(const py::handle& src, std::vector<T>& out, const char* what) {
  out.clear();
  if (PyObject_CheckBuffer(src.ptr())) {
    py::buffer_info b = py::reinterpret_borrow<py::buffer>(src).request();
    const bool u64 = b.itemsize == 8 && (b.format == "Q" || b.format == "L");
    if (b.ndim != 1 || !u64) {
      throw py::type_error(std::string(what) + ": a buffer must be one-dimensional uint64 (got " +
                           b.format + ", " + std::to_string(b.ndim) + " dimensions)");
    }
    out.reserve(static_cast<std::size_t>(b.shape[0]));
    const char* p = static_cast<const char*>(b.ptr);
    for (py::ssize_t i = 0; i < b.shape[0]; ++i) {
      out.push_back(T{*reinterpret_cast<const std::uint64_t*>(p + i * b.strides[0])});
    }
    return;
  }
  if (PyList_Check(src.ptr()) || PyTuple_Check(src.ptr())) {
    py::sequence seq = py::reinterpret_borrow<py::sequence>(src);
    out.reserve(seq.size());
  }
  for (py::handle item : src) {
    if (!PyLong_Check(item.ptr())) {
      throw py::type_error(std::string(what) + ": expected int, got " +
                           std::string(py::str(py::type::of(item).attr("__name__"))));
    }
    const unsigned long long v = PyLong_AsUnsignedLongLong(item.ptr());
    if (v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) throw py::error_already_set();
    out.push_back(T{static_cast<std::uint64_t>(v)});
  }
}

struct SizeT {  // read_ints target for token counts
  std::uint64_t v;
};

// ---- BlockTable: a block table that numpy reads without copying (buffer protocol, uint32) ------

struct BlockTable {
  std::vector<std::uint32_t> ids;
};

BlockTable block_table(const pkv::PagedKvCache& c, SeqId seq) {
  auto info = c.get_sequence(seq);
  if (!info) raise(pkv::Error::sequence_not_found(seq));
  BlockTable t;
  t.ids.reserve(info->block_ids.size());
  for (BlockId b : info->block_ids) t.ids.push_back(b.value);
  return t;
}

std::unique_ptr<pkv::PagedKvCache> make_cache(std::size_t num_blocks, std::size_t block_size,
                                              std::size_t num_heads, std::size_t head_dim,
                                              std::uint32_t magazine_size, bool hold_copy_sources,
                                              unsigned affinity_shift,
                                              std::optional<pkv::EvictionStrategy> strategy,
                                              std::optional<double> threshold) {
  pkv::PagedKvCache::Options o{};
  o.pool.magazine_size = magazine_size;
  o.hold_copy_sources = hold_copy_sources;
  o.affinity_shift = affinity_shift;
  auto c =
      value_or_raise(pkv::PagedKvCache::create(num_blocks, block_size, num_heads, head_dim, o));
  if (strategy) value_or_raise(c->set_eviction_strategy(*strategy));
  if (threshold) value_or_raise(c->set_eviction_threshold(*threshold));
  return c;
}

// append_batch(seqs, num_tokens=1): ids and counts converted with the GIL, the step run without.
pkv::AppendBatchOutcome append_batch(pkv::PagedKvCache& c, const py::handle& seqs,
                                     const py::handle& num_tokens) {
  thread_local std::vector<SeqId> ids;
  thread_local std::vector<SizeT> counts_in;
  thread_local std::vector<std::size_t> counts;
  read_ints(seqs, ids, "append_batch seqs");
  pkv::AppendBatchOutcome out;
  if (PyLong_Check(num_tokens.ptr())) {
    const std::size_t n = num_tokens.cast<std::size_t>();
    py::gil_scoped_release nogil;
    c.append_batch(ids, n, out);
    return out;
  }
  read_ints(num_tokens, counts_in, "append_batch num_tokens");
  counts.resize(counts_in.size());
  for (std::size_t i = 0; i < counts.size(); ++i) counts[i] = counts_in[i].v;
  pkv::Result<void> r;
  {
    py::gil_scoped_release nogil;
    r = c.append_batch(ids, counts, out);
  }
  value_or_raise(r);
  return out;
}

// Benchmark helper (bench/python): `steps` rounds of append(seq, num_tokens) over `seqs`, run in
// C++ with the GIL released; returns the elapsed nanoseconds. The Python loop doing the same calls
// minus this is the cost of crossing into C++.
std::uint64_t cpp_append_loop(pkv::PagedKvCache& c, const std::vector<std::uint64_t>& seqs,
                              std::size_t steps, std::size_t num_tokens) {
  py::gil_scoped_release nogil;
  const auto t0 = std::chrono::steady_clock::now();
  std::size_t failures = 0;
  for (std::size_t s = 0; s < steps; ++s) {
    for (std::uint64_t id : seqs) failures += c.append(SeqId{id}, num_tokens).has_value() ? 0 : 1;
  }
  const auto t1 = std::chrono::steady_clock::now();
  if (failures != 0) raise(pkv::Error::invalid_operation("benchmark append failed"));
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
}

}  // namespace

PYBIND11_MODULE(pkv, m) {
  m.doc() =
      "pkv: a thread-safe paged KV-cache block manager (PagedAttention). The GIL is released "
      "inside every call that can take time.";
  m.attr("SeqId") = py::module_::import("builtins").attr("int");
  m.attr("BlockId") = py::module_::import("builtins").attr("int");

  py::enum_<pkv::Errc>(m, "Errc")
      .value("out_of_memory", pkv::Errc::out_of_memory)
      .value("sequence_not_found", pkv::Errc::sequence_not_found)
      .value("block_not_found", pkv::Errc::block_not_found)
      .value("invalid_operation", pkv::Errc::invalid_operation)
      .value("invalid_argument", pkv::Errc::invalid_argument);

  // ---- exceptions ----
  g_error_base = PyErr_NewExceptionWithDoc(
      "pkv.Error", "A pkv call failed; `code` is a pkv.Errc, str() and `message` the seed's text.",
      PyExc_Exception, nullptr);
  m.attr("Error") = py::handle(g_error_base);
  const char* names[5] = {"OutOfMemory", "SequenceNotFound", "BlockNotFound", "InvalidOperation",
                          "InvalidArgument"};
  for (int i = 0; i < 5; ++i) {
    const std::string qualified = std::string("pkv.") + names[i];
    g_error_types[i] = PyErr_NewExceptionWithDoc(qualified.c_str(), nullptr, g_error_base, nullptr);
    py::handle type(g_error_types[i]);
    type.attr("code") = py::cast(static_cast<pkv::Errc>(i));
    m.attr(names[i]) = type;
  }
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ErrorThrown& e) {
      py::object obj = error_object(e.error);
      PyErr_SetObject(g_error_types[static_cast<int>(e.error.code())], obj.ptr());
    }
  });

  // ---- value types ----
  py::class_<pkv::EvictionStrategy>(m, "EvictionStrategy")
      .def(py::init<>(), "LRU, the default.")
      .def_static("lru", &pkv::EvictionStrategy::lru)
      .def_static("lfu", &pkv::EvictionStrategy::lfu)
      .def_static("longest_first", &pkv::EvictionStrategy::longest_first)
      .def_static("priority", &pkv::EvictionStrategy::priority, py::arg("levels"))
      .def_static("streaming_llm", &pkv::EvictionStrategy::streaming_llm, py::arg("sink_tokens"),
                  py::arg("window_tokens"))
      .def_property_readonly("kind",
                             [](const pkv::EvictionStrategy& s) {
                               switch (s.kind()) {
                                 case pkv::EvictionStrategy::Kind::lru:
                                   return "lru";
                                 case pkv::EvictionStrategy::Kind::lfu:
                                   return "lfu";
                                 case pkv::EvictionStrategy::Kind::longest_first:
                                   return "longest_first";
                                 case pkv::EvictionStrategy::Kind::priority:
                                   return "priority";
                                 case pkv::EvictionStrategy::Kind::streaming_llm:
                                   return "streaming_llm";
                               }
                               return "unknown";
                             })
      .def_property_readonly("levels", &pkv::EvictionStrategy::levels)
      .def_property_readonly("sink_tokens", &pkv::EvictionStrategy::sink_tokens)
      .def_property_readonly("window_tokens", &pkv::EvictionStrategy::window_tokens)
      .def(py::self == py::self)
      .def("__hash__",
           [](const pkv::EvictionStrategy& s) {
             return py::hash(py::make_tuple(static_cast<int>(s.kind()), s.levels(), s.sink_tokens(),
                                            s.window_tokens()));
           })
      .def("__repr__", [](const pkv::EvictionStrategy& s) { return printed(s); })
      .def("__str__", [](const pkv::EvictionStrategy& s) { return printed(s); });

  py::class_<pkv::CopyOp>(m, "CopyOp", "Copy the KV data of block src into block dst.")
      .def(py::init([](std::uint32_t src, std::uint32_t dst) {
             return pkv::CopyOp{BlockId{src}, BlockId{dst}};
           }),
           py::arg("src"), py::arg("dst"))
      .def_property_readonly("src", [](const pkv::CopyOp& c) { return c.src.value; })
      .def_property_readonly("dst", [](const pkv::CopyOp& c) { return c.dst.value; })
      .def(py::self == py::self)
      .def("__repr__",
           [](const pkv::CopyOp& c) {
             return "CopyOp(src=" + std::to_string(c.src.value) +
                    ", dst=" + std::to_string(c.dst.value) + ")";
           })
      .def("__str__", [](const pkv::CopyOp& c) { return printed(c); });

  py::class_<pkv::CacheStats>(m, "CacheStats")
      .def_readonly("total_allocations", &pkv::CacheStats::total_allocations)
      .def_readonly("total_frees", &pkv::CacheStats::total_frees)
      .def_readonly("total_evictions", &pkv::CacheStats::total_evictions)
      .def_readonly("total_forks", &pkv::CacheStats::total_forks)
      .def_readonly("peak_blocks_used", &pkv::CacheStats::peak_blocks_used)
      .def(py::self == py::self)
      .def("__repr__", [](const pkv::CacheStats& s) {
        return "CacheStats(total_allocations=" + std::to_string(s.total_allocations) +
               ", total_frees=" + std::to_string(s.total_frees) +
               ", total_evictions=" + std::to_string(s.total_evictions) +
               ", total_forks=" + std::to_string(s.total_forks) +
               ", peak_blocks_used=" + std::to_string(s.peak_blocks_used) + ")";
      });

  py::class_<pkv::SequenceInfo>(m, "SequenceInfo", "A snapshot of one sequence.")
      .def_property_readonly("seq_id", [](const pkv::SequenceInfo& s) { return s.seq_id.value; })
      .def_readonly("num_tokens", &pkv::SequenceInfo::num_tokens)
      .def_property_readonly("block_ids",
                             [](const pkv::SequenceInfo& s) {
                               std::vector<std::uint32_t> ids;
                               ids.reserve(s.block_ids.size());
                               for (BlockId b : s.block_ids) ids.push_back(b.value);
                               return ids;
                             })
      .def_readonly("last_access", &pkv::SequenceInfo::last_access)
      .def_readonly("access_count", &pkv::SequenceInfo::access_count)
      .def_readonly("priority", &pkv::SequenceInfo::priority)
      .def_property_readonly("token_runs",
                             [](const pkv::SequenceInfo& s) {
                               py::list runs;
                               for (const auto& r : s.token_runs) {
                                 runs.append(py::make_tuple(r.first_token, r.slot, r.length));
                               }
                               return runs;
                             })
      .def("num_blocks", &pkv::SequenceInfo::num_blocks)
      .def("slot_of",
           [](const pkv::SequenceInfo& s, std::uint64_t i) {
             if (i >= s.num_tokens) {
               raise(pkv::Error::invalid_argument("token " + std::to_string(i) +
                                                  " is not kept (num_tokens " +
                                                  std::to_string(s.num_tokens) + ")"));
             }
             return s.slot_of(i);
           })
      .def("__repr__", [](const pkv::SequenceInfo& s) {
        return "SequenceInfo(" + pkv::to_string(s.seq_id) +
               ", num_tokens=" + std::to_string(s.num_tokens) +
               ", blocks=" + std::to_string(s.block_ids.size()) + ")";
      });

  py::class_<BlockTable>(m, "BlockTable", py::buffer_protocol(),
                         "A block table: a sequence of ints and a uint32 buffer (numpy reads it "
                         "without copying: numpy.asarray(table)).")
      .def_buffer([](BlockTable& t) {
        return py::buffer_info(t.ids.data(), sizeof(std::uint32_t),
                               py::format_descriptor<std::uint32_t>::format(), 1,
                               {static_cast<py::ssize_t>(t.ids.size())},
                               {static_cast<py::ssize_t>(sizeof(std::uint32_t))}, true);
      })
      .def("__len__", [](const BlockTable& t) { return t.ids.size(); })
      .def("__getitem__",
           [](const BlockTable& t, py::ssize_t i) {
             const auto n = static_cast<py::ssize_t>(t.ids.size());
             if (i < 0) i += n;
             if (i < 0 || i >= n) throw py::index_error("block table index out of range");
             return t.ids[static_cast<std::size_t>(i)];
           })
      .def("tolist", [](const BlockTable& t) { return t.ids; })
      .def("__eq__", [](const BlockTable& t,
                        const std::vector<std::uint32_t>& other) { return t.ids == other; })
      .def("__repr__", [](const BlockTable& t) {
        std::string s = "BlockTable([";
        for (std::size_t i = 0; i < t.ids.size(); ++i) {
          s += (i ? ", " : "") + std::to_string(t.ids[i]);
        }
        return s + "])";
      });

  py::class_<pkv::AppendBatchOutcome>(m, "BatchOutcome",
                                      "What one append_batch did: every item appended except "
                                      "those in `errors`; `copies` are the CopyOps to perform.")
      .def_readonly("items", &pkv::AppendBatchOutcome::items)
      .def_property_readonly("all_appended", &pkv::AppendBatchOutcome::all_appended)
      .def_property_readonly("copies",
                             [](const pkv::AppendBatchOutcome& o) {
                               py::list l;
                               for (const auto& c : o.copies) {
                                 l.append(py::make_tuple(c.item, py::cast(c.copy)));
                               }
                               return l;
                             })
      .def_property_readonly("errors",
                             [](const pkv::AppendBatchOutcome& o) {
                               py::list l;
                               for (const auto& e : o.errors) {
                                 l.append(py::make_tuple(e.item, error_object(e.error)));
                               }
                               return l;
                             })
      .def(
          "item",
          [](const pkv::AppendBatchOutcome& o, std::size_t i) {
            if (i >= o.items) throw py::index_error("batch item index out of range");
            return value_or_raise(o.item(i));
          },
          py::arg("i"), "Item i's outcome as append() returns it (raises its error).")
      .def("__len__", [](const pkv::AppendBatchOutcome& o) { return o.items; })
      .def("__repr__", [](const pkv::AppendBatchOutcome& o) {
        return "BatchOutcome(items=" + std::to_string(o.items) +
               ", copies=" + std::to_string(o.copies.size()) +
               ", errors=" + std::to_string(o.errors.size()) + ")";
      });

  // ---- the cache ----
  using C = pkv::PagedKvCache;
  py::class_<C>(m, "PagedKvCache")
      .def(py::init(&make_cache), py::arg("num_blocks"), py::arg("block_size"),
           py::arg("num_heads"), py::arg("head_dim"), py::kw_only(),
           py::arg("magazine_size") = pkv::BlockPoolOptions{}.magazine_size,
           py::arg("hold_copy_sources") = false, py::arg("affinity_shift") = 0u,
           py::arg("eviction_strategy") = py::none(), py::arg("eviction_threshold") = py::none(),
           kRelease())
      // configuration
      .def(
          "set_eviction_strategy",
          [](C& c, const pkv::EvictionStrategy& s) { value_or_raise(c.set_eviction_strategy(s)); },
          py::arg("strategy"), kRelease())
      .def("eviction_strategy", &C::eviction_strategy, kRelease())
      .def(
          "set_eviction_threshold",
          [](C& c, double t) { value_or_raise(c.set_eviction_threshold(t)); }, py::arg("threshold"))
      .def("eviction_threshold", &C::eviction_threshold)
      .def(
          "set_priority",
          [](C& c, std::uint64_t s, std::uint32_t p) {
            value_or_raise(c.set_priority(SeqId{s}, p));
          },
          py::arg("seq"), py::arg("priority"), kRelease())
      .def(
          "pin", [](C& c, std::uint64_t s) { value_or_raise(c.pin(SeqId{s})); }, py::arg("seq"),
          kRelease())
      .def(
          "unpin", [](C& c, std::uint64_t s) { value_or_raise(c.unpin(SeqId{s})); }, py::arg("seq"),
          kRelease())
      .def(
          "copy_done", [](C& c, std::uint64_t s) { return value_or_raise(c.copy_done(SeqId{s})); },
          py::arg("seq"), kRelease())
      // figures (lock-free; cheap, so the GIL is kept)
      .def("block_size", &C::block_size)
      .def("total_blocks", &C::total_blocks)
      .def("free_block_count", &C::free_block_count)
      .def("used_block_count", &C::used_block_count)
      .def("utilization", &C::utilization)
      .def("block_memory_bytes", &C::block_memory_bytes)
      .def("total_memory_bytes", &C::total_memory_bytes)
      .def("used_memory_bytes", &C::used_memory_bytes)
      .def("needs_eviction", &C::needs_eviction)
      .def("num_sequences", &C::num_sequences)
      .def("stats", &C::stats)
      .def("__len__", &C::num_sequences)
      // sequences
      .def(
          "allocate",
          [](C& c, std::uint64_t s, std::size_t n) { value_or_raise(c.allocate(SeqId{s}, n)); },
          py::arg("seq"), py::arg("num_tokens"), kRelease())
      .def(
          "append",
          [](C& c, std::uint64_t s, std::size_t n) {
            return value_or_raise(c.append(SeqId{s}, n));
          },
          py::arg("seq"), py::arg("num_tokens"), kRelease(),
          "Adds tokens; returns the CopyOp to perform first, or None.")
      .def("append_batch", &append_batch, py::arg("seqs"), py::arg("num_tokens") = 1,
           "One decode step: append(seqs[i], n) for each item in order; seqs is a list of ints "
           "or a uint64 array, num_tokens an int or one count per item.")
      .def(
          "free", [](C& c, std::uint64_t s) { value_or_raise(c.free(SeqId{s})); }, py::arg("seq"),
          kRelease())
      .def(
          "fork",
          [](C& c, std::uint64_t src, std::uint64_t dst) {
            value_or_raise(c.fork(SeqId{src}, SeqId{dst}));
          },
          py::arg("src"), py::arg("dst"), kRelease())
      .def(
          "get_sequence", [](const C& c, std::uint64_t s) { return c.get_sequence(SeqId{s}); },
          py::arg("seq"), kRelease())
      .def(
          "block_table", [](const C& c, std::uint64_t s) { return block_table(c, SeqId{s}); },
          py::arg("seq"), kRelease())
      .def(
          "__contains__",
          [](const C& c, std::uint64_t s) { return c.get_sequence(SeqId{s}).has_value(); },
          kRelease())
      .def(
          "sequence_ids",
          [](const C& c) {
            std::vector<std::uint64_t> ids;
            for (SeqId s : c.sequence_ids()) ids.push_back(s.value);
            return ids;
          },
          kRelease())
      // eviction
      .def(
          "select_eviction_target",
          [](const C& c) -> std::optional<std::uint64_t> {
            auto t = c.select_eviction_target();
            if (!t) return std::nullopt;
            return t->value;
          },
          kRelease())
      .def(
          "evict", [](C& c) { return value_or_raise(c.evict()).value; }, kRelease())
      .def(
          "evict_to_threshold",
          [](C& c, double target) {
            std::vector<std::uint64_t> ids;
            for (SeqId s : value_or_raise(c.evict_to_threshold(target))) ids.push_back(s.value);
            return ids;
          },
          py::arg("target"), kRelease())
      .def(
          "apply_streaming_llm",
          [](C& c, std::uint64_t s, std::size_t sink, std::size_t window) {
            return value_or_raise(c.apply_streaming_llm(SeqId{s}, sink, window));
          },
          py::arg("seq"), py::arg("sink_tokens"), py::arg("window_tokens"), kRelease())
      .def(
          "shard_index", [](const C& c, std::uint64_t s) { return c.shard_index(SeqId{s}); },
          py::arg("seq"))
      .def("validate_unsafe", &C::validate_unsafe, kRelease(),
           "Full structural check; '' when sound. NOT thread-safe: call only when quiescent.")
      .def(
          "__repr__", [](const C& c) { return printed(c); }, kRelease())
      .def(
          "__str__", [](const C& c) { return printed(c); }, kRelease());

  // ---- the pool ----
  using P = pkv::BlockPool;
  py::class_<P>(m, "BlockPool")
      .def(py::init([](std::size_t n, std::uint32_t magazine) {
             return value_or_raise(P::create(n, P::Options{magazine}));
           }),
           py::arg("num_blocks"), py::kw_only(),
           py::arg("magazine_size") = pkv::BlockPoolOptions{}.magazine_size, kRelease())
      .def("capacity", &P::capacity)
      .def("magazine_size", &P::magazine_size)
      .def("free_count", &P::free_count)
      .def("used_count", &P::used_count)
      .def(
          "acquire", [](P& p) { return value_or_raise(p.acquire()).value; }, kRelease())
      .def(
          "acquire_n",
          [](P& p, std::size_t k) {
            std::vector<BlockId> got;
            value_or_raise(p.acquire(k, got));
            std::vector<std::uint32_t> ids;
            for (BlockId b : got) ids.push_back(b.value);
            return ids;
          },
          py::arg("k"), kRelease())
      .def(
          "retain", [](P& p, std::uint32_t b) { value_or_raise(p.retain(BlockId{b})); },
          py::arg("block"), kRelease())
      .def(
          "retain_n",
          [](P& p, const std::vector<std::uint32_t>& blocks) {
            std::vector<BlockId> ids(blocks.size());
            std::transform(blocks.begin(), blocks.end(), ids.begin(),
                           [](std::uint32_t b) { return BlockId{b}; });
            value_or_raise(p.retain(std::span<const BlockId>(ids)));
          },
          py::arg("blocks"), kRelease())
      .def(
          "release", [](P& p, std::uint32_t b) { return value_or_raise(p.release(BlockId{b})); },
          py::arg("block"), kRelease())
      .def(
          "release_n",
          [](P& p, const std::vector<std::uint32_t>& blocks) {
            std::vector<BlockId> ids(blocks.size());
            std::transform(blocks.begin(), blocks.end(), ids.begin(),
                           [](std::uint32_t b) { return BlockId{b}; });
            return value_or_raise(p.release(std::span<const BlockId>(ids)));
          },
          py::arg("blocks"), kRelease())
      .def(
          "ref_count", [](const P& p, std::uint32_t b) { return p.ref_count(BlockId{b}); },
          py::arg("block"))
      .def("total_acquired", &P::total_acquired)
      .def("total_released", &P::total_released)
      .def("validate_unsafe", &P::validate_unsafe, kRelease());

  m.def("_cpp_append_loop", &cpp_append_loop, py::arg("cache"), py::arg("seqs"), py::arg("steps"),
        py::arg("num_tokens"),
        "Benchmark helper: steps x append(seq, num_tokens) over seqs in C++; elapsed ns.");
}
