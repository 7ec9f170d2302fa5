// bindings/python/per_step.cpp — the calls a Python scheduler makes every step: allocate, append,
// append_tokens, append_batch, free and fork as plain METH_FASTCALL methods of PagedKvCache, the
// BatchOutcome that a batch returns (a C struct sequence), and append_batch_tokens.
//
// pybind11's dispatcher (argument vectors, the overload loop) is a large share of a call this
// small, so these methods bypass it (positional arguments only): ints converted with
// PyLong_AsUnsignedLongLong (TypeError for a non-int, OverflowError for a negative or too large
// one), the GIL released around the C++ call, errors raised exactly as pybind11's translator
// raises them. They stay in one file with the conversions of convert.hpp inlined into them.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "convert.hpp"
#include "errors.hpp"
#include "module.hpp"

namespace pkv_python {
namespace {

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

// BatchOutcome is a struct sequence (a named tuple made in C): much cheaper to build than a
// pybind11 class instance, and a decode step makes one.
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

}  // namespace

// append_batch_tokens(seqs, tokens): one token id per item.
py::object append_batch_tokens(C& c, py::handle seqs, py::handle tokens) {
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

namespace {

// pybind11's record of PagedKvCache, looked up once: py::cast<C&> would look it up by typeid (a
// hash of the type's name) on every call, a large share of a per-step method's cost.
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

void bind_batch_outcome(py::module_& m) {
  g_outcome_type = PyStructSequence_NewType(&g_outcome_desc);
  if (g_outcome_type == nullptr) throw py::error_already_set();
  m.attr("BatchOutcome") = py::handle(reinterpret_cast<PyObject*>(g_outcome_type));
}

void add_per_step_methods(py::class_<C>& cache_class) {
  g_cache_type = py::detail::get_type_info(typeid(C));
  for (PyMethodDef& def : g_fast_methods) {
    if (def.ml_name == nullptr) break;
    PyObject* descr = PyDescr_NewMethod(reinterpret_cast<PyTypeObject*>(cache_class.ptr()), &def);
    if (descr == nullptr) throw py::error_already_set();
    cache_class.attr(def.ml_name) = py::reinterpret_steal<py::object>(descr);
  }
}

}  // namespace pkv_python
