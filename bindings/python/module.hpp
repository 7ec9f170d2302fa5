// bindings/python/module.hpp — what the files of the Python module `pkv` share: the pybind11
// headers (every file includes the same ones, so every file sees the same type casters), the
// namespace, the small helpers several files use, and the one registration function each file
// exports. module.cpp calls them in the order the module's names are created.
//
// Files, one concern each:
//   module.cpp    the module: contract, registration order, module-level functions
//   errors.*      pkv.Error and its subclasses; pkv::Error -> Python exception
//   convert.hpp   Python ids, token ids and salts -> C++ (the buffer protocol, lists, iterables)
//   values.cpp    the value types (EvictionStrategy, HashAlgorithm, stats, CopyOp, SequenceInfo)
//   cache.cpp     PagedKvCache's pybind11 methods and the BlockTable it returns
//   per_step.cpp  the per-step calls (plain METH_FASTCALL methods) and BatchOutcome
//   pool.cpp      BlockPool
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/operators.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <sstream>
#include <string>

#include "pkv/pkv.hpp"

namespace pkv_python {

namespace py = pybind11;
using pkv::BlockId;
using pkv::SeqId;
using C = pkv::PagedKvCache;

// Releases the GIL for the duration of a pybind11-bound call (.def(..., kRelease())).
using kRelease = py::call_guard<py::gil_scoped_release>;

template <class T>
std::string printed(const T& v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

// Registration, in module.cpp's order.
void bind_errors(py::module_& m);         // errors.cpp: Errc, Error and its subclasses
void bind_values(py::module_& m);         // values.cpp
void bind_block_table(py::module_& m);    // cache.cpp
void bind_batch_outcome(py::module_& m);  // per_step.cpp
void bind_cache(py::module_& m);          // cache.cpp (calls add_per_step_methods)
void bind_pool(py::module_& m);           // pool.cpp

// per_step.cpp: adds the METH_FASTCALL methods to the bound PagedKvCache class.
void add_per_step_methods(py::class_<C>& cache_class);
// per_step.cpp: append_batch_tokens(seqs, tokens), bound through pybind11 by cache.cpp.
py::object append_batch_tokens(C& c, py::handle seqs, py::handle tokens);

}  // namespace pkv_python
