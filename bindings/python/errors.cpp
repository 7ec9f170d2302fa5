// bindings/python/errors.cpp — pkv.Errc, pkv.Error and its subclasses (OutOfMemory,
// SequenceNotFound, BlockNotFound, InvalidOperation, InvalidArgument), and the translation of a
// pkv::Error into one of them (errors.hpp).
#include "errors.hpp"

#include <exception>
#include <string>

namespace pkv_python {
namespace {

// The exception classes, indexed by Errc; created once at import and kept for the process.
PyObject* g_error_base = nullptr;
PyObject* g_error_types[5] = {};

}  // namespace

void raise(const pkv::Error& e) {
  throw ErrorThrown{e};
}

py::object error_object(const pkv::Error& e) {
  PyObject* type = g_error_types[static_cast<int>(e.code())];
  py::object obj =
      py::reinterpret_steal<py::object>(PyObject_CallFunction(type, "s", e.message().c_str()));
  if (!obj) throw py::error_already_set();
  obj.attr("message") = e.message();
  return obj;
}

void set_error(const pkv::Error& e) {
  py::object obj = error_object(e);
  PyErr_SetObject(g_error_types[static_cast<int>(e.code())], obj.ptr());
}

void bind_errors(py::module_& m) {
  py::enum_<pkv::Errc>(m, "Errc")
      .value("out_of_memory", pkv::Errc::out_of_memory)
      .value("sequence_not_found", pkv::Errc::sequence_not_found)
      .value("block_not_found", pkv::Errc::block_not_found)
      .value("invalid_operation", pkv::Errc::invalid_operation)
      .value("invalid_argument", pkv::Errc::invalid_argument);

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
}

}  // namespace pkv_python
