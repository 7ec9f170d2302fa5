// bindings/python/errors.hpp — how a pkv::Error becomes a Python exception: pkv.Error and its
// subclasses (one per pkv.Errc, made at import), the C++ exception that carries a pkv::Error out
// of a binding, and value_or_raise for a pkv::Result.
//
// A binding throws ErrorThrown (raise / value_or_raise); it is translated into the pkv.Error
// subclass with the GIL held: by the translator that bind_errors registers for pybind11-bound
// methods, by set_error in the per-step methods' own exception guard.
#pragma once

#include <utility>

#include "module.hpp"

namespace pkv_python {

// A pkv::Error on its way out of a binding; translated into a pkv.Error subclass with the GIL
// held (after the call guard has re-acquired it).
struct ErrorThrown {
  pkv::Error error;
};

[[noreturn]] void raise(const pkv::Error& e);

template <class T>
T value_or_raise(pkv::Result<T> r) {
  if (!r) raise(r.error());
  return std::move(r).value();
}
inline void value_or_raise(const pkv::Result<void>& r) {
  if (!r) raise(r.error());
}

// A pkv.Error instance for `e` (code and message set), not raised. Needs the GIL.
py::object error_object(const pkv::Error& e);

// Sets the Python error indicator to the pkv.Error subclass of `e`. Needs the GIL.
void set_error(const pkv::Error& e);

}  // namespace pkv_python
