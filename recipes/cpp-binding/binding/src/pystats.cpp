// pybind11 binding to libstats: std::vector<double> and std::string convert to list and str,
// std::domain_error thrown in libstats arrives in Python as ValueError.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "stats/stats.hpp"

namespace py = pybind11;

PYBIND11_MODULE(pystats, m) {
  m.doc() = "Summary statistics from the libstats C++ library";
  m.def("library_version", &stats::version, "Version of the libstats shared library loaded");

  py::class_<stats::Series>(m, "Series")
      .def(py::init<std::string>(), py::arg("name"))
      .def("add", &stats::Series::add, py::arg("value"))
      .def("extend", &stats::Series::extend, py::arg("values"))
      .def_property_readonly("name", &stats::Series::name)
      .def_property_readonly("values", &stats::Series::values)
      .def("__len__", &stats::Series::size)
      .def("mean", &stats::Series::mean)
      .def("variance", &stats::Series::variance)
      .def("median", &stats::Series::median)
      .def("min", &stats::Series::min)
      .def("max", &stats::Series::max)
      .def("summary", &stats::Series::summary)
      .def("__repr__", [](const stats::Series& s) {
        return "<Series '" + s.name() + "' n=" + std::to_string(s.size()) + ">";
      });
}
