// Python objects <-> boost::json, as the json module maps them, but strict: only what JSON carries.
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <pybind11/pybind11.h>

#include <string_view>

namespace rx::python {

/// Converts dict/list/tuple/str/int/float/bool/None (and their subclasses) to JSON. Throws
/// (as Python exceptions) TypeError naming the type of anything else (a dict key that is not a
/// str included), OverflowError for an int outside [-2^63, 2^64), ValueError for NaN or infinity
/// (JSON cannot carry them) or for nesting deeper than 512 (a list that contains itself).
/// Needs the GIL.
[[nodiscard]] boost::json::value to_json(pybind11::handle object);

/// As to_json, for an object that must be a dict; `what` names it in the TypeError.
[[nodiscard]] boost::json::object to_json_object(pybind11::handle object, std::string_view what);

/// JSON to Python: object -> dict, array -> list, string -> str, integers -> int, double ->
/// float, bool, null -> None. Needs the GIL.
[[nodiscard]] pybind11::object from_json(const boost::json::value& value);
[[nodiscard]] pybind11::dict from_json(const boost::json::object& object);

}  // namespace rx::python
