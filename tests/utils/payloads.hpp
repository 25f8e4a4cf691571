// Small payloads the tests send, so that every reply can be matched to its request.
#pragma once

#include <boost/json/object.hpp>

namespace rx_test {

/// {"id": id}.
inline boost::json::object with_id(int id) {
  boost::json::object object;
  object["id"] = id;
  return object;
}

}  // namespace rx_test
