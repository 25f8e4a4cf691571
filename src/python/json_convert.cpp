#include "json_convert.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

namespace py = pybind11;

namespace rx::python {
namespace {

// Deeper than any payload a server accepts (ServerOptions::max_json_depth is 64 by default), and
// far below what the C stack holds: it turns a container that contains itself into a ValueError.
constexpr std::size_t MAX_DEPTH = 512;

std::string type_name(py::handle object) { return py::str(py::type::handle_of(object).attr("__qualname__")); }

boost::json::value convert(py::handle object, std::size_t depth) {
  if (depth > MAX_DEPTH) {
    throw py::value_error("cannot convert to JSON: nested more than " + std::to_string(MAX_DEPTH) +
                          " levels deep (does a container contain itself?)");
  }
  PyObject* raw = object.ptr();
  if (raw == Py_None) {
    return nullptr;
  }
  if (PyBool_Check(raw)) {  // before int: bool is an int subclass
    return raw == Py_True;
  }
  if (PyLong_Check(raw)) {
    int overflow = 0;
    const long long signed_value = PyLong_AsLongLongAndOverflow(raw, &overflow);
    if (overflow == 0) {
      if (signed_value == -1 && PyErr_Occurred() != nullptr) {
        throw py::error_already_set();
      }
      return static_cast<std::int64_t>(signed_value);
    }
    if (overflow > 0) {
      const unsigned long long unsigned_value = PyLong_AsUnsignedLongLong(raw);
      if (!(unsigned_value == static_cast<unsigned long long>(-1) && PyErr_Occurred() != nullptr)) {
        return static_cast<std::uint64_t>(unsigned_value);
      }
      PyErr_Clear();
    }
    PyErr_SetString(PyExc_OverflowError, ("cannot convert to JSON: " + std::string(py::repr(object)) +
                                          " is outside the 64-bit integers JSON carries here ([-2**63, 2**64))")
                                             .c_str());
    throw py::error_already_set();
  }
  if (PyFloat_Check(raw)) {
    const double number = PyFloat_AS_DOUBLE(raw);
    if (!std::isfinite(number)) {
      throw py::value_error("cannot convert to JSON: " + std::string(py::repr(object)) +
                            " (JSON has no NaN or infinity)");
    }
    return number;
  }
  if (PyUnicode_Check(raw)) {
    Py_ssize_t size = 0;
    const char* text = PyUnicode_AsUTF8AndSize(raw, &size);  // raises UnicodeEncodeError for lone surrogates
    if (text == nullptr) {
      throw py::error_already_set();
    }
    return boost::json::string(text, static_cast<std::size_t>(size));
  }
  if (PyDict_Check(raw)) {
    boost::json::object out;
    out.reserve(static_cast<std::size_t>(PyDict_Size(raw)));
    PyObject* key = nullptr;
    PyObject* item = nullptr;
    Py_ssize_t position = 0;
    while (PyDict_Next(raw, &position, &key, &item) != 0) {
      if (!PyUnicode_Check(key)) {
        throw py::type_error("cannot convert to JSON: dict keys must be str, got " + type_name(key) + " (" +
                             std::string(py::repr(key)) + ")");
      }
      Py_ssize_t size = 0;
      const char* text = PyUnicode_AsUTF8AndSize(key, &size);
      if (text == nullptr) {
        throw py::error_already_set();
      }
      // PyDict_Next borrows: hold the value while converting it, as converting may run Python code.
      const py::object held = py::reinterpret_borrow<py::object>(item);
      out[std::string_view(text, static_cast<std::size_t>(size))] = convert(held, depth + 1);
    }
    return out;
  }
  if (PyList_Check(raw) || PyTuple_Check(raw)) {
    const py::sequence sequence = py::reinterpret_borrow<py::sequence>(object);
    boost::json::array out;
    out.reserve(sequence.size());
    for (py::handle item : sequence) {
      out.push_back(convert(item, depth + 1));
    }
    return out;
  }
  throw py::type_error("cannot convert to JSON: object of type " + type_name(object) +
                       " (JSON takes dict, list, tuple, str, int, float, bool and None)");
}

}  // namespace

boost::json::value to_json(py::handle object) { return convert(object, 0); }

boost::json::object to_json_object(py::handle object, std::string_view what) {
  if (!PyDict_Check(object.ptr())) {
    throw py::type_error(std::string(what) + " must be a dict, got " + type_name(object));
  }
  return std::move(convert(object, 0).as_object());
}

py::object from_json(const boost::json::value& value) {
  switch (value.kind()) {
    case boost::json::kind::null:
      return py::none();
    case boost::json::kind::bool_:
      return py::bool_(value.get_bool());
    case boost::json::kind::int64:
      return py::int_(value.get_int64());
    case boost::json::kind::uint64:
      return py::int_(value.get_uint64());
    case boost::json::kind::double_:
      return py::float_(value.get_double());
    case boost::json::kind::string: {
      const auto& text = value.get_string();
      return py::str(text.data(), text.size());
    }
    case boost::json::kind::array: {
      const auto& array = value.get_array();
      py::list out(array.size());
      for (std::size_t i = 0; i < array.size(); ++i) {
        out[i] = from_json(array[i]);
      }
      return out;
    }
    case boost::json::kind::object:
      return from_json(value.get_object());
  }
  return py::none();
}

py::dict from_json(const boost::json::object& object) {
  py::dict out;
  for (const auto& [key, item] : object) {
    out[py::str(key.data(), key.size())] = from_json(item);
  }
  return out;
}

}  // namespace rx::python
