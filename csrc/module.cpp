// dmcmc_fast._C — the extension's module: the functions it binds (defined in the other csrc/*.cpp files).
// The Python layer (dmcmc_fast/kernels/noise.py, dmcmc_fast/rng.py, dmcmc_fast/serve.py) checks arguments and documents them.
#include <torch/extension.h>
#include <pybind11/stl.h>

#include "slots.h"

// csrc/philox.cpp: per-chain Philox draws on the CPU (see dmcmc_fast/kernels/noise.py)
int64_t philox_stream();
torch::Tensor philox_uniform(int64_t seed, torch::Tensor chain_ids, torch::Tensor steps, int64_t n, int64_t stream);
torch::Tensor philox_normal(int64_t seed, torch::Tensor chain_ids, torch::Tensor steps, int64_t n, int64_t stream);
torch::Tensor philox_normal_steps(int64_t seed, torch::Tensor chain_ids, torch::Tensor steps, int64_t n_steps,
                                  int64_t n, int64_t stream);
torch::Tensor philox_normal_at(int64_t seed, torch::Tensor chain_ids, int64_t step, int64_t n, int64_t stream,
                               double scale);
torch::Tensor philox_normal_runs(int64_t seed, torch::Tensor chain_ids, int64_t step0, int64_t n_runs, int64_t run,
                                 int64_t stride, int64_t n, int64_t stream);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "dmcmc_fast._C: per-chain Philox draws on the CPU (dmcmc_fast/kernels/noise.py); the slot books of "
            "continuous batching (csrc/slots.cpp, dmcmc_fast/serve.py)";
  m.def("philox_stream", &philox_stream);
  m.def("philox_uniform", &philox_uniform);
  m.def("philox_normal", &philox_normal);
  m.def("philox_normal_steps", &philox_normal_steps);
  m.def("philox_normal_at", &philox_normal_at);
  m.def("philox_normal_runs", &philox_normal_runs);
  py::class_<SlotBooks>(m, "SlotBooks")
      .def(py::init<int64_t>(), py::arg("n_slots"))
      .def("admit", &SlotBooks::admit, py::arg("owner"), py::arg("rows"), py::arg("chain0"))
      .def("release", &SlotBooks::release, py::arg("owner"))
      .def("slots_of", &SlotBooks::slots_of, py::arg("owner"))
      .def("grant", &SlotBooks::grant, py::arg("wants"), py::arg("splittable"))
      .def("record_call", &SlotBooks::record_call, py::arg("owners"), py::arg("rows"))
      .def("calls", &SlotBooks::calls, py::arg("owner"))
      .def("free_slots", &SlotBooks::free_slots)
      .def("n_slots", &SlotBooks::n_slots)
      .def("table", &SlotBooks::table);
}
