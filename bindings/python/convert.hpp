// bindings/python/convert.hpp — Python arguments to C++ values: ids (a buffer of uint64, numpy
// uint64, or any iterable of ints), token ids (a buffer of uint32, numpy uint32, or any iterable of
// ints in 0..2**32-1, never a str) and salts (str or bytes).
//
// This is the per-step path of a Python scheduler, so it avoids pybind11's general machinery: a
// buffer is read through Py_buffer directly and lists / tuples by index. Everything here is inline
// so that the per-step methods (per_step.cpp) compile it into their own bodies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "module.hpp"

namespace pkv_python {

// An int argument as an unsigned 64-bit value: TypeError for a non-int, OverflowError for a
// negative or too large one (PyLong_AsUnsignedLongLong's errors).
inline std::uint64_t u64_arg(PyObject* o) {
  const unsigned long long v = PyLong_AsUnsignedLongLong(o);
  if (v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) throw py::error_already_set();
  return static_cast<std::uint64_t>(v);
}

// One element of an id or token list: an int (TypeError naming `what` otherwise). The error is
// built out of line so that the per-item loops inline this.
[[noreturn, gnu::cold, gnu::noinline]] inline void throw_not_int(PyObject* item, const char* what) {
  throw py::type_error(std::string(what) + ": expected int, got " + Py_TYPE(item)->tp_name);
}
inline std::uint64_t list_int(PyObject* item, const char* what) {
  if (!PyLong_Check(item)) throw_not_int(item, what);
  return u64_arg(item);
}

// If src has the buffer protocol: reads it into out as T{V} per element and returns true. The
// buffer must be one-dimensional with items of sizeof(V) bytes in format `code` or 'L' (any byte
// order prefix); strides are honoured. Anything else is a TypeError naming `what` and `type`.
template <class V, class T>
bool read_uint_buffer(PyObject* src, std::vector<T>& out, const char* what, std::string_view code,
                      const char* type) {
  if (!PyObject_CheckBuffer(src)) return false;
  Py_buffer view;
  if (PyObject_GetBuffer(src, &view, PyBUF_FORMAT | PyBUF_STRIDES) != 0) {
    throw py::error_already_set();
  }
  const char* f = view.format != nullptr ? view.format : "B";
  if (*f == '=' || *f == '<' || *f == '@') ++f;
  const bool match = view.itemsize == static_cast<py::ssize_t>(sizeof(V)) &&
                     (std::string_view(f) == code || std::string_view(f) == "L");
  if (view.ndim != 1 || !match) {
    const std::string msg = std::string(what) + ": a buffer must be one-dimensional " + type +
                            " (got '" + (view.format != nullptr ? view.format : "B") + "', " +
                            std::to_string(view.ndim) + " dimensions)";
    PyBuffer_Release(&view);
    throw py::type_error(msg);
  }
  const auto n = static_cast<std::size_t>(view.shape[0]);
  out.resize(n);
  const char* p = static_cast<const char*>(view.buf);
  for (std::size_t i = 0; i < n; ++i) {
    V v;
    std::memcpy(&v, p + static_cast<py::ssize_t>(i) * view.strides[0], sizeof v);
    out[i] = T{v};
  }
  PyBuffer_Release(&view);
  return true;
}

// Ids (or counts): a uint64 buffer or any iterable of ints in 0..2**64-1.
template <class T>
void read_ints(PyObject* src, std::vector<T>& out, const char* what) {
  out.clear();
  if (read_uint_buffer<std::uint64_t>(src, out, what, "Q", "uint64")) return;
  auto push = [&](PyObject* item) { out.push_back(T{list_int(item, what)}); };
  // Lists and tuples by index. This loop is written out here and in read_tokens rather than
  // shared: with GCC 12, a shared helper taking `push` made every item dearer.
  if (PyList_Check(src) || PyTuple_Check(src)) {
    const bool list = PyList_Check(src);
    const py::ssize_t n = list ? PyList_GET_SIZE(src) : PyTuple_GET_SIZE(src);
    out.reserve(static_cast<std::size_t>(n));
    // The size is read once: converting an int cannot run Python code that resizes src.
    for (py::ssize_t i = 0; i < n; ++i)
      push(list ? PyList_GET_ITEM(src, i) : PyTuple_GET_ITEM(src, i));
    return;
  }
  for (py::handle item : py::reinterpret_borrow<py::iterable>(src)) push(item.ptr());
}

struct SizeT {  // read_ints target for token counts
  std::uint64_t v;
};

// Token ids: a uint32 buffer or any sequence / iterable of ints in 0..2**32-1 (a str is rejected):
// TypeError for a wrong type, ValueError for an id >= 2**32, OverflowError for a negative one.
inline void read_tokens(PyObject* src, std::vector<pkv::TokenId>& out, const char* what) {
  out.clear();
  if (read_uint_buffer<std::uint32_t>(src, out, what, "I", "uint32")) return;
  if (PyUnicode_Check(src)) {  // iterable, but of characters: never token ids
    throw py::type_error(std::string(what) + ": expected a sequence of ints, got str");
  }
  auto push = [&](PyObject* item) {
    const std::uint64_t v = list_int(item, what);
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
inline std::string_view salt_arg(PyObject* src) {
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

// Scratch for token-id conversions: per thread, so a step allocates nothing once warm. One
// vector for the whole module (inline), as every call converts at most one token list at a time.
inline thread_local std::vector<pkv::TokenId> t_tokens;

}  // namespace pkv_python
