// bindings/python/module.cpp — the Python module `pkv` (pybind11) over the public C++ API: its
// contract, the order in which its names are created (each file's bind_* function, module.hpp),
// and its module-level functions (block_hashes, the benchmark helper _cpp_append_loop).
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
// Adding a C++ method: one .def line in the file of its concern (with kRelease if it can take
// time; a per-step method in per_step.cpp's table instead) and one line in pkv.pyi.
#include "module.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string_view>
#include <vector>

#include "convert.hpp"
#include "errors.hpp"

namespace pkv_python {
namespace {

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
}  // namespace pkv_python

PYBIND11_MODULE(pkv, m) {
  using namespace pkv_python;
  m.doc() =
      "pkv: a thread-safe paged KV-cache block manager (PagedAttention). The GIL is released "
      "inside every call that can take time.";
  m.attr("SeqId") = py::module_::import("builtins").attr("int");
  m.attr("BlockId") = py::module_::import("builtins").attr("int");

  bind_errors(m);
  bind_values(m);
  bind_block_table(m);
  bind_batch_outcome(m);
  bind_cache(m);
  bind_pool(m);

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
