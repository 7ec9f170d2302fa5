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
//   * Token ids (prefix caching: allocate_tokens, append_tokens, append_batch_tokens,
//     match_prefix, block_hashes) are a 1-d uint32 buffer (numpy.uint32) or any sequence /
//     iterable of ints in 0..2**32-1 (a str is rejected): TypeError for a wrong type, ValueError
//     for an id >= 2**32, OverflowError for a negative one. A salt is str (its UTF-8 bytes) or
//     bytes. They get their own *_tokens names: append(seq, n) keeps rejecting a list.
// Adding a C++ method: one .def line here (with kRelease if it can take time) and one line in
// pkv.pyi.
#include <pybind11/numpy.h>
#include <pybind11/operators.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
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

// Releases the GIL for one C++ call (the bare CPython calls: this is the per-step path).
class NoGil {
 public:
  NoGil() : state_(PyEval_SaveThread()) {}
  ~NoGil() { PyEval_RestoreThread(state_); }
  NoGil(const NoGil&) = delete;
  NoGil& operator=(const NoGil&) = delete;

 private:
  PyThreadState* state_;
};

// ---- id lists: a buffer of unsigned 64-bit ints (numpy uint64) or any iterable of ints ----------
// This is the per-step path of a Python scheduler, so it avoids pybind11's general machinery:
// the buffer is read through Py_buffer directly and lists / tuples by index.

template <class T>
void read_ints(PyObject* src, std::vector<T>& out, const char* what) {
  out.clear();
  if (PyObject_CheckBuffer(src)) {
    Py_buffer view;
    if (PyObject_GetBuffer(src, &view, PyBUF_FORMAT | PyBUF_STRIDES) != 0) {
      throw py::error_already_set();
    }
    const char* f = view.format != nullptr ? view.format : "B";
    if (*f == '=' || *f == '<' || *f == '@') ++f;
    const bool u64 =
        view.itemsize == 8 && (std::string_view(f) == "Q" || std::string_view(f) == "L");
    if (view.ndim != 1 || !u64) {
      const std::string msg = std::string(what) +
                              ": a buffer must be one-dimensional uint64 (got '" +
                              (view.format != nullptr ? view.format : "B") + "', " +
                              std::to_string(view.ndim) + " dimensions)";
      PyBuffer_Release(&view);
      throw py::type_error(msg);
    }
    const auto n = static_cast<std::size_t>(view.shape[0]);
    out.resize(n);
    const char* p = static_cast<const char*>(view.buf);
    for (std::size_t i = 0; i < n; ++i) {
      std::uint64_t v;
      std::memcpy(&v, p + static_cast<py::ssize_t>(i) * view.strides[0], sizeof v);
      out[i] = T{v};
    }
    PyBuffer_Release(&view);
    return;
  }
  auto push = [&](PyObject* item) {
    if (!PyLong_Check(item)) {
      throw py::type_error(std::string(what) + ": expected int, got " + Py_TYPE(item)->tp_name);
    }
    const unsigned long long v = PyLong_AsUnsignedLongLong(item);
    if (v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) throw py::error_already_set();
    out.push_back(T{static_cast<std::uint64_t>(v)});
  };
  if (PyList_Check(src) || PyTuple_Check(src)) {
    const bool list = PyList_Check(src);
    const py::ssize_t n = list ? PyList_GET_SIZE(src) : PyTuple_GET_SIZE(src);
    out.reserve(static_cast<std::size_t>(n));
    // The size is read each round: converting an int cannot run Python code that resizes src.
    for (py::ssize_t i = 0; i < n; ++i)
      push(list ? PyList_GET_ITEM(src, i) : PyTuple_GET_ITEM(src, i));
    return;
  }
  for (py::handle item : py::reinterpret_borrow<py::iterable>(src)) push(item.ptr());
}

struct SizeT {  // read_ints target for token counts
  std::uint64_t v;
};

// ---- token ids: a buffer of uint32 (numpy uint32) or any iterable of ints in 0..2**32-1
// ----------

void read_tokens(PyObject* src, std::vector<pkv::TokenId>& out, const char* what) {
  out.clear();
  if (PyObject_CheckBuffer(src)) {
    Py_buffer view;
    if (PyObject_GetBuffer(src, &view, PyBUF_FORMAT | PyBUF_STRIDES) != 0) {
      throw py::error_already_set();
    }
    const char* f = view.format != nullptr ? view.format : "B";
    if (*f == '=' || *f == '<' || *f == '@') ++f;
    const bool u32 =
        view.itemsize == 4 && (std::string_view(f) == "I" || std::string_view(f) == "L");
    if (view.ndim != 1 || !u32) {
      const std::string msg = std::string(what) +
                              ": a buffer must be one-dimensional uint32 (got '" +
                              (view.format != nullptr ? view.format : "B") + "', " +
                              std::to_string(view.ndim) + " dimensions)";
      PyBuffer_Release(&view);
      throw py::type_error(msg);
    }
    const auto n = static_cast<std::size_t>(view.shape[0]);
    out.resize(n);
    const char* p = static_cast<const char*>(view.buf);
    for (std::size_t i = 0; i < n; ++i) {
      std::memcpy(&out[i], p + static_cast<py::ssize_t>(i) * view.strides[0], sizeof(out[i]));
    }
    PyBuffer_Release(&view);
    return;
  }
  if (PyUnicode_Check(src)) {  // iterable, but of characters: never token ids
    throw py::type_error(std::string(what) + ": expected a sequence of ints, got str");
  }
  auto push = [&](PyObject* item) {
    if (!PyLong_Check(item)) {
      throw py::type_error(std::string(what) + ": expected int, got " + Py_TYPE(item)->tp_name);
    }
    const unsigned long long v = PyLong_AsUnsignedLongLong(item);
    if (v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) throw py::error_already_set();
    if (v > UINT32_MAX) {
      throw py::value_error(std::string(what) + ": token id " + std::to_string(v) +
                            " does not fit in 32 bits");
    }
    out.push_back(static_cast<pkv::TokenId>(v));
  };
  if (PyList_Check(src) || PyTuple_Check(src)) {
    const bool list = PyList_Check(src);
    const py::ssize_t n = list ? PyList_GET_SIZE(src) : PyTuple_GET_SIZE(src);
    out.reserve(static_cast<std::size_t>(n));
    for (py::ssize_t i = 0; i < n; ++i)
      push(list ? PyList_GET_ITEM(src, i) : PyTuple_GET_ITEM(src, i));
    return;
  }
  if (!PyObject_HasAttrString(src, "__iter__") && !PySequence_Check(src)) {
    throw py::type_error(std::string(what) +
                         ": expected a sequence of ints or a uint32 array, got " +
                         Py_TYPE(src)->tp_name);
  }
  // Iterating runs Python code (a generator), which may call pkv on this thread and reuse `out`
  // (thread-local scratch): collect into a local vector and store it at the end.
  std::vector<pkv::TokenId> local;
  local.swap(out);
  local.clear();
  for (py::handle item : py::reinterpret_borrow<py::iterable>(src)) {
    push(item.ptr());
    local.push_back(out.back());
    out.clear();
  }
  out.swap(local);
}

// A salt: str (its UTF-8 bytes) or bytes; anything else is a TypeError. The view borrows from src.
std::string_view salt_arg(PyObject* src) {
  if (PyUnicode_Check(src)) {
    Py_ssize_t n = 0;
    const char* p = PyUnicode_AsUTF8AndSize(src, &n);
    if (p == nullptr) throw py::error_already_set();
    return {p, static_cast<std::size_t>(n)};
  }
  if (PyBytes_Check(src)) {
    return {PyBytes_AS_STRING(src), static_cast<std::size_t>(PyBytes_GET_SIZE(src))};
  }
  throw py::type_error(std::string("salt: expected str or bytes, got ") + Py_TYPE(src)->tp_name);
}

// Scratch for token-id conversions: per thread, so a step allocates nothing once warm.
thread_local std::vector<pkv::TokenId> t_tokens;

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
                                              std::optional<double> threshold, bool prefix_caching,
                                              pkv::HashAlgorithm prefix_hash, bool verify_tokens) {
  pkv::PagedKvCache::Options o{};
  o.prefix.enabled = prefix_caching;
  o.prefix.hash = prefix_hash;
  o.prefix.verify_tokens = verify_tokens;
  o.pool.magazine_size = magazine_size;
  o.hold_copy_sources = hold_copy_sources;
  o.affinity_shift = affinity_shift;
  auto c =
      value_or_raise(pkv::PagedKvCache::create(num_blocks, block_size, num_heads, head_dim, o));
  if (strategy) value_or_raise(c->set_eviction_strategy(*strategy));
  if (threshold) value_or_raise(c->set_eviction_threshold(*threshold));
  return c;
}

// BatchOutcome is a struct sequence (a named tuple made in C): building one costs a few hundred
// instructions, a pybind11 class instance several times that, and a decode step makes one.
PyTypeObject* g_outcome_type = nullptr;
PyStructSequence_Field g_outcome_fields[] = {
    {"items", "number of items in the call"},
    {"copies", "[(item, CopyOp)] in item order: perform these copies before the step's writes"},
    {"errors", "[(item, pkv.Error)] in item order: these items changed nothing"},
    {nullptr, nullptr}};
PyStructSequence_Desc g_outcome_desc = {
    "pkv.BatchOutcome", "What one append_batch did: every item appended except those in `errors`.",
    g_outcome_fields, 3};

py::object outcome_object(const pkv::AppendBatchOutcome& o) {
  py::object t = py::reinterpret_steal<py::object>(PyStructSequence_New(g_outcome_type));
  if (!t) throw py::error_already_set();
  py::list copies(o.copies.size());
  for (std::size_t i = 0; i < o.copies.size(); ++i) {
    copies[i] = py::make_tuple(o.copies[i].item, py::cast(o.copies[i].copy));
  }
  py::list errors(o.errors.size());
  for (std::size_t i = 0; i < o.errors.size(); ++i) {
    errors[i] = py::make_tuple(o.errors[i].item, error_object(o.errors[i].error));
  }
  PyStructSequence_SetItem(t.ptr(), 0, py::int_(o.items).release().ptr());
  PyStructSequence_SetItem(t.ptr(), 1, copies.release().ptr());
  PyStructSequence_SetItem(t.ptr(), 2, errors.release().ptr());
  return t;
}

// append_batch(seqs, num_tokens=1): ids and counts converted with the GIL, the step run without.
py::object append_batch(pkv::PagedKvCache& c, PyObject* seqs, PyObject* num_tokens) {
  struct Scratch {
    std::vector<SeqId> ids;
    std::vector<SizeT> counts_in;
    std::vector<std::size_t> counts;
    pkv::AppendBatchOutcome out;
  };
  thread_local Scratch scratch;
  Scratch& t = scratch;  // one TLS lookup per call
  read_ints(seqs, t.ids, "append_batch seqs");
  if (PyLong_Check(num_tokens)) {
    const unsigned long long n = PyLong_AsUnsignedLongLong(num_tokens);
    if (n == static_cast<unsigned long long>(-1) && PyErr_Occurred()) throw py::error_already_set();
    NoGil nogil;
    c.append_batch(t.ids, static_cast<std::size_t>(n), t.out);
  } else {
    read_ints(num_tokens, t.counts_in, "append_batch num_tokens");
    t.counts.resize(t.counts_in.size());
    for (std::size_t i = 0; i < t.counts.size(); ++i) t.counts[i] = t.counts_in[i].v;
    pkv::Result<void> r;
    {
      NoGil nogil;
      r = c.append_batch(t.ids, t.counts, t.out);
    }
    value_or_raise(r);
  }
  return outcome_object(t.out);
}

// append_batch_tokens(seqs, tokens): one token id per item.
py::object append_batch_tokens(pkv::PagedKvCache& c, py::handle seqs, py::handle tokens) {
  thread_local std::vector<SeqId> ids;
  thread_local pkv::AppendBatchOutcome out;
  read_ints(seqs.ptr(), ids, "append_batch_tokens seqs");
  auto& toks = t_tokens;
  read_tokens(tokens.ptr(), toks, "append_batch_tokens tokens");
  pkv::Result<void> r;
  {
    NoGil nogil;
    r = c.append_batch(ids, std::span<const pkv::TokenId>(toks), out);
  }
  value_or_raise(r);
  return outcome_object(out);
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

// ---- fast methods
// --------------------------------------------------------------------------------- allocate,
// append, append_batch, free and fork are what a scheduler calls every step. pybind11's dispatcher
// costs ~150 ns a call (argument vectors, overload loop); these are plain METH_FASTCALL methods
// instead (positional arguments only): ints converted with PyLong_AsUnsignedLongLong (TypeError for
// a non-int, OverflowError for a negative or too large one), the GIL released around the C++ call,
// errors raised exactly as pybind11's translator raises them.

using C = pkv::PagedKvCache;

void set_error(const pkv::Error& e) {
  py::object obj = error_object(e);
  PyErr_SetObject(g_error_types[static_cast<int>(e.code())], obj.ptr());
}

std::uint64_t u64_arg(PyObject* o) {
  const unsigned long long v = PyLong_AsUnsignedLongLong(o);
  if (v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) throw py::error_already_set();
  return static_cast<std::uint64_t>(v);
}

// pybind11's record of PagedKvCache, looked up once: py::cast<C&> would look it up by typeid (a
// hash of the type's name) on every call, a quarter of a fast method's instructions.
const py::detail::type_info* g_cache_type = nullptr;

C& cache_of(PyObject* self) {
  // The method descriptor has checked that self is a PagedKvCache; one made by __new__ without
  // __init__ has no C++ object yet (its holder is not constructed).
  auto* inst = reinterpret_cast<py::detail::instance*>(self);
  const auto vh = inst->get_value_and_holder(g_cache_type, /*throw_if_missing=*/false);
  if (!vh || !vh.holder_constructed()) {
    throw py::type_error("pkv.PagedKvCache: __init__ was not called");
  }
  return *vh.value_ptr<C>();
}

// Runs one fast method: arity check, self -> C++ cache, body, and every C++ exception turned into
// the Python exception pybind11 would raise.
template <class Body>
PyObject* fast_method(PyObject* self, Py_ssize_t nargs, Py_ssize_t lo, Py_ssize_t hi,
                      const char* name, Body&& body) noexcept {
  try {
    if (nargs < lo || nargs > hi) {
      PyErr_Format(PyExc_TypeError, "PagedKvCache.%s() takes %zd to %zd arguments (%zd given)",
                   name, lo, hi, nargs);
      return nullptr;
    }
    C& c = cache_of(self);
    return body(c).release().ptr();
  } catch (const ErrorThrown& e) {
    set_error(e.error);
  } catch (py::error_already_set& e) {
    e.restore();
  } catch (const py::builtin_exception& e) {
    e.set_error();
  } catch (const std::bad_alloc&) {
    PyErr_NoMemory();
  } catch (const std::exception& e) {
    PyErr_SetString(PyExc_RuntimeError, e.what());
  } catch (...) {
    PyErr_SetString(PyExc_RuntimeError, "pkv: unknown C++ exception");
  }
  return nullptr;
}

PyObject* fast_allocate(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  return fast_method(self, nargs, 2, 2, "allocate", [&](C& c) {
    const SeqId seq{u64_arg(args[0])};
    const std::size_t n = u64_arg(args[1]);
    pkv::Result<void> r;
    {
      NoGil nogil;
      r = c.allocate(seq, n);
    }
    value_or_raise(r);
    return py::none();
  });
}

PyObject* fast_append(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  return fast_method(self, nargs, 2, 2, "append", [&](C& c) -> py::object {
    const SeqId seq{u64_arg(args[0])};
    const std::size_t n = u64_arg(args[1]);
    std::optional<pkv::Result<std::optional<pkv::CopyOp>>> r;
    {
      NoGil nogil;
      r.emplace(c.append(seq, n));
    }
    const auto op = value_or_raise(std::move(*r));
    if (!op) return py::none();
    return py::cast(*op);
  });
}

PyObject* fast_append_tokens(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  return fast_method(self, nargs, 2, 2, "append_tokens", [&](C& c) -> py::object {
    const SeqId seq{u64_arg(args[0])};
    auto& tokens = t_tokens;
    read_tokens(args[1], tokens, "append_tokens tokens");
    std::optional<pkv::Result<std::optional<pkv::CopyOp>>> r;
    {
      NoGil nogil;
      r.emplace(c.append(seq, std::span<const pkv::TokenId>(tokens)));
    }
    const auto op = value_or_raise(std::move(*r));
    if (!op) return py::none();
    return py::cast(*op);
  });
}

PyObject* fast_append_batch(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  return fast_method(self, nargs, 1, 2, "append_batch", [&](C& c) {
    static PyObject* const one = PyLong_FromLong(1);  // immortal small int
    return append_batch(c, args[0], nargs == 2 ? args[1] : one);
  });
}

PyObject* fast_free(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  return fast_method(self, nargs, 1, 1, "free", [&](C& c) {
    const SeqId seq{u64_arg(args[0])};
    pkv::Result<void> r;
    {
      NoGil nogil;
      r = c.free(seq);
    }
    value_or_raise(r);
    return py::none();
  });
}

PyObject* fast_fork(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  return fast_method(self, nargs, 2, 2, "fork", [&](C& c) {
    const SeqId src{u64_arg(args[0])};
    const SeqId dst{u64_arg(args[1])};
    pkv::Result<void> r;
    {
      NoGil nogil;
      r = c.fork(src, dst);
    }
    value_or_raise(r);
    return py::none();
  });
}

template <class F>
PyCFunction as_cfunction(F* f) {
  return reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(f));
}

PyMethodDef g_fast_methods[] = {
    {"allocate", as_cfunction(&fast_allocate), METH_FASTCALL,
     "allocate(seq, num_tokens, /): registers seq with ceil(num_tokens / block_size) blocks."},
    {"append", as_cfunction(&fast_append), METH_FASTCALL,
     "append(seq, num_tokens, /): adds tokens; returns the CopyOp to perform first, or None."},
    {"append_tokens", as_cfunction(&fast_append_tokens), METH_FASTCALL,
     "append_tokens(seq, tokens, /): append with token ids (a sequence of ints or a uint32 "
     "array), which first commits what seq held; returns the CopyOp to perform first, or None."},
    {"append_batch", as_cfunction(&fast_append_batch), METH_FASTCALL,
     "append_batch(seqs, num_tokens=1, /): one decode step, append(seqs[i], n) for each item in "
     "order. seqs is a list of ints or a uint64 array; num_tokens an int or one count per item. "
     "Returns BatchOutcome(items, copies, errors)."},
    {"free", as_cfunction(&fast_free), METH_FASTCALL,
     "free(seq, /): drops the sequence and one reference to each of its blocks."},
    {"fork", as_cfunction(&fast_fork), METH_FASTCALL,
     "fork(src, dst, /): dst shares every block of src (copy-on-write)."},
    {nullptr, nullptr, 0, nullptr}};

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
      set_error(e.error);
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

  py::enum_<pkv::HashAlgorithm>(m, "HashAlgorithm", "The digest naming a cached block.")
      .value("sha256", pkv::HashAlgorithm::sha256)
      .value("xxh3_128", pkv::HashAlgorithm::xxh3_128);

  py::class_<pkv::PrefixCacheStats>(m, "PrefixCacheStats",
                                    "The prefix cache's counters (pkv/prefix_types.hpp).")
      .def_readonly("requests", &pkv::PrefixCacheStats::requests)
      .def_readonly("queries", &pkv::PrefixCacheStats::queries)
      .def_readonly("hits", &pkv::PrefixCacheStats::hits)
      .def_readonly("published", &pkv::PrefixCacheStats::published)
      .def_readonly("reclaimed", &pkv::PrefixCacheStats::reclaimed)
      .def_readonly("verify_failures", &pkv::PrefixCacheStats::verify_failures)
      .def("hit_rate", &pkv::PrefixCacheStats::hit_rate)
      .def(py::self == py::self)
      .def("__repr__", [](const pkv::PrefixCacheStats& s) {
        return "PrefixCacheStats(requests=" + std::to_string(s.requests) +
               ", queries=" + std::to_string(s.queries) + ", hits=" + std::to_string(s.hits) +
               ", published=" + std::to_string(s.published) +
               ", reclaimed=" + std::to_string(s.reclaimed) +
               ", verify_failures=" + std::to_string(s.verify_failures) + ")";
      });

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
      .def("__eq__",
           [](const BlockTable& t, const py::object& other) {
             // Equal to a list of the same ints or a BlockTable of them; anything else is not.
             if (py::isinstance<BlockTable>(other)) {
               return t.ids == other.cast<const BlockTable&>().ids;
             }
             return PyList_Check(other.ptr()) && py::cast(t.ids).equal(other);
           })
      .def("__repr__", [](const BlockTable& t) {
        std::string s = "BlockTable([";
        for (std::size_t i = 0; i < t.ids.size(); ++i) {
          s += (i ? ", " : "") + std::to_string(t.ids[i]);
        }
        return s + "])";
      });

  g_outcome_type = PyStructSequence_NewType(&g_outcome_desc);
  if (g_outcome_type == nullptr) throw py::error_already_set();
  m.attr("BatchOutcome") = py::handle(reinterpret_cast<PyObject*>(g_outcome_type));

  // ---- the cache ----
  py::class_<C> cache_class(m, "PagedKvCache");
  cache_class
      .def(py::init(&make_cache), py::arg("num_blocks"), py::arg("block_size"),
           py::arg("num_heads"), py::arg("head_dim"), py::kw_only(),
           py::arg("magazine_size") = pkv::BlockPoolOptions{}.magazine_size,
           py::arg("hold_copy_sources") = false, py::arg("affinity_shift") = 0u,
           py::arg("eviction_strategy") = py::none(), py::arg("eviction_threshold") = py::none(),
           py::arg("prefix_caching") = true, py::arg("prefix_hash") = pkv::HashAlgorithm::sha256,
           py::arg("verify_tokens") = false, kRelease())
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
      // sequences (allocate, append, append_batch, free, fork: fast methods, below)
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
      .def(
          "fork_many",
          [](C& c, std::uint64_t src, py::handle dsts) {
            std::vector<SeqId> ids;
            read_ints(dsts.ptr(), ids, "fork_many dsts");
            py::gil_scoped_release nogil;
            value_or_raise(c.fork_many(SeqId{src}, ids));
          },
          py::arg("src"), py::arg("dsts"),
          "fork(src, d) for every d of dsts in one step, all or nothing.")
      .def(
          "free_many",
          [](C& c, py::handle seqs) {
            std::vector<SeqId> ids;
            read_ints(seqs.ptr(), ids, "free_many seqs");
            pkv::FreeManyOutcome out;
            {
              py::gil_scoped_release nogil;
              c.free_many(ids, out);
            }
            py::list errors;
            for (const auto& e : out.errors)
              errors.append(py::make_tuple(e.item, error_object(e.error)));
            return errors;
          },
          py::arg("seqs"),
          "free(seqs[i]) for each item in order; returns [(item, pkv.Error)] of the items that "
          "failed (each changed nothing); [] when all were freed.")
      .def(
          "truncate",
          [](C& c, std::uint64_t s, std::size_t n) {
            return value_or_raise(c.truncate(SeqId{s}, n));
          },
          py::arg("seq"), py::arg("num_tokens"), kRelease(),
          "Drops the last num_tokens tokens; returns how many blocks left the table.")
      // prefix caching
      .def(
          "allocate_tokens",
          [](C& c, std::uint64_t seq, py::handle prompt, py::handle salt) {
            auto& t = t_tokens;
            read_tokens(prompt.ptr(), t, "allocate_tokens prompt");
            const std::string_view sv = salt_arg(salt.ptr());
            std::optional<pkv::Result<std::size_t>> r;
            {
              py::gil_scoped_release nogil;
              r.emplace(c.allocate(SeqId{seq}, t, sv));
            }
            return value_or_raise(std::move(*r));
          },
          py::arg("seq"), py::arg("prompt"), py::arg("salt") = "",
          "Registers seq with the blocks of prompt (token ids: a sequence of ints or a uint32 "
          "array), sharing its longest cached prefix under salt (str or bytes); returns how many "
          "leading tokens were found cached.")
      .def("append_batch_tokens", &append_batch_tokens, py::arg("seqs"), py::arg("tokens"),
           "One decode step with token ids: append(seqs[i], [tokens[i]]) for each item in order. "
           "Returns BatchOutcome(items, copies, errors).")
      .def(
          "commit",
          [](C& c, std::uint64_t s, std::size_t n) {
            return value_or_raise(c.commit(SeqId{s}, n));
          },
          py::arg("seq"), py::arg("num_tokens"), kRelease(),
          "The KV of the first num_tokens tokens is written: their full blocks become findable. "
          "Returns how many blocks were newly published.")
      .def(
          "match_prefix",
          [](const C& c, py::handle tokens, py::handle salt) {
            auto& t = t_tokens;
            read_tokens(tokens.ptr(), t, "match_prefix tokens");
            const std::string_view sv = salt_arg(salt.ptr());
            py::gil_scoped_release nogil;
            return c.match_prefix(t, sv);
          },
          py::arg("tokens"), py::arg("salt") = "",
          "How many leading tokens allocate(.., tokens, salt) would find cached now; no effect.")
      .def("cached_block_count", &C::cached_block_count)
      .def("reclaimable_block_count", &C::reclaimable_block_count)
      .def("prefix_stats", &C::prefix_stats)
      .def(
          "reset_prefix_cache", [](C& c) { value_or_raise(c.reset_prefix_cache()); }, kRelease())
      .def(
          "block_ref_count",
          [](const C& c, std::uint32_t b) { return c.block_ref_count(BlockId{b}); },
          py::arg("block"))
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
  g_cache_type = py::detail::get_type_info(typeid(C));
  for (PyMethodDef& def : g_fast_methods) {
    if (def.ml_name == nullptr) break;
    PyObject* descr = PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(cache_class.ptr()), &def);
    if (descr == nullptr) throw py::error_already_set();
    cache_class.attr(def.ml_name) = py::reinterpret_steal<py::object>(descr);
  }

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

  m.def(
      "block_hashes",
      [](py::handle tokens, std::size_t block_size, py::handle salt, pkv::HashAlgorithm a) {
        auto& t = t_tokens;
        read_tokens(tokens.ptr(), t, "block_hashes tokens");
        const std::string_view sv = salt_arg(salt.ptr());
        std::vector<pkv::BlockHash> hs;
        {
          py::gil_scoped_release nogil;
          try {
            hs = pkv::block_hashes(t, block_size, sv, a);
          } catch (const std::invalid_argument& e) {  // block_size 0
            raise(pkv::Error::invalid_argument(e.what()));
          }
        }
        py::list out(hs.size());
        for (std::size_t i = 0; i < hs.size(); ++i) {
          out[i] = py::bytes(reinterpret_cast<const char*>(hs[i].bytes.data()), hs[i].bytes.size());
        }
        return out;
      },
      py::arg("tokens"), py::arg("block_size"), py::arg("salt") = "",
      py::arg("algorithm") = pkv::HashAlgorithm::sha256,
      "The chain hashes (32 bytes each; .hex() is the C++ to_hex()) of the len(tokens) // "
      "block_size full blocks of tokens under salt. block_size 0 raises pkv.InvalidArgument.");

  m.def("_cpp_append_loop", &cpp_append_loop, py::arg("cache"), py::arg("seqs"), py::arg("steps"),
        py::arg("num_tokens"),
        "Benchmark helper: steps x append(seq, num_tokens) over seqs in C++; elapsed ns.");
}
