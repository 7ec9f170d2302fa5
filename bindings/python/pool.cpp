// bindings/python/pool.cpp — BlockPool: the fixed pool of reference-counted blocks
// (pkv/block_pool.hpp), on its own.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "errors.hpp"
#include "module.hpp"

namespace pkv_python {

void bind_pool(py::module_& m) {
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
}

}  // namespace pkv_python
