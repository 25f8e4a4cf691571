// JSON text and protobuf conversions of the wire contract (src/codec.hpp).
#include "codec.hpp"

#include <boost/json/parse.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

namespace {

using rx::detail::DEFAULT_MAX_JSON_DEPTH;
using rx::detail::parse_json_object;

struct Parsed {
  bool ok = false;
  boost::json::object object;
  std::string error;
};

Parsed parse(std::string_view text, std::size_t max_depth = DEFAULT_MAX_JSON_DEPTH) {
  Parsed parsed;
  parsed.ok = parse_json_object(text, max_depth, parsed.object, parsed.error);
  return parsed;
}

// An object holding `depth` levels of nested objects and arrays in all, e.g. depth 3: {"n":[{}]}.
std::string nested(std::size_t depth) {
  std::string open;
  std::string close;
  for (std::size_t level = 1; level <= depth; ++level) {
    if (level % 2 == 1) {
      open.append(level < depth ? "{\"n\":" : "{");
      close.push_back('}');
    } else {
      open.push_back('[');
      close.push_back(']');
    }
  }
  std::reverse(close.begin(), close.end());
  return open.append(close);
}

TEST(Codec, ParsesAJsonObject) {
  const Parsed parsed = parse(R"({"xcoms":{"greeting":"hello"},"map_index":-1,"list":[1,2.5,null,true]})");
  ASSERT_TRUE(parsed.ok) << parsed.error;
  EXPECT_EQ(
      parsed.object,
      boost::json::parse(R"({"xcoms":{"greeting":"hello"},"map_index":-1,"list":[1,2.5,null,true]})").as_object());
  EXPECT_TRUE(parsed.error.empty());
}

TEST(Codec, ReadsEmptyTextAsTheEmptyObject) {
  boost::json::object out{{"stale", 1}};
  std::string error;
  ASSERT_TRUE(parse_json_object("", DEFAULT_MAX_JSON_DEPTH, out, error)) << error;
  EXPECT_TRUE(out.empty());
}

TEST(Codec, RejectsAJsonArraySayingAnObjectIsRequired) {
  const Parsed parsed = parse("[1,2,3]");
  EXPECT_FALSE(parsed.ok);
  EXPECT_NE(parsed.error.find("must be a JSON object"), std::string::npos) << parsed.error;
  EXPECT_NE(parsed.error.find("array"), std::string::npos) << parsed.error;
}

TEST(Codec, RejectsScalarsNamingTheirKind) {
  const std::pair<const char*, const char*> cases[] = {
      {"42", "int64"}, {"-1.5", "double"}, {R"("text")", "string"}, {"true", "bool"}, {"null", "null"}};
  for (const auto& [text, kind] : cases) {
    const Parsed parsed = parse(text);
    EXPECT_FALSE(parsed.ok) << text;
    EXPECT_NE(parsed.error.find("must be a JSON object"), std::string::npos) << text << ": " << parsed.error;
    EXPECT_NE(parsed.error.find(kind), std::string::npos) << text << ": " << parsed.error;
  }
}

TEST(Codec, RejectsMalformedJsonSayingItIsNotValidJson) {
  for (const char* text : {"{not json", "{\"a\":", "{} {}", "{'a':1}", " "}) {
    const Parsed parsed = parse(text);
    EXPECT_FALSE(parsed.ok) << text;
    EXPECT_EQ(parsed.error.rfind("payload is not valid JSON: ", 0), 0U) << text << ": " << parsed.error;
  }
}

TEST(Codec, AcceptsNestingAtTheDepthLimit) {
  const std::string text = nested(5);
  ASSERT_EQ(text, R"({"n":[{"n":[{}]}]})");
  const Parsed parsed = parse(text, 5);
  EXPECT_TRUE(parsed.ok) << parsed.error;
}

TEST(Codec, RejectsNestingDeeperThanTheLimitSayingItIsTooDeep) {
  const Parsed parsed = parse(nested(6), 5);
  EXPECT_FALSE(parsed.ok);
  EXPECT_NE(parsed.error.find("deep"), std::string::npos) << parsed.error;
}

TEST(Codec, RejectsPayloadsDeeperThanTheDefaultLimit) {
  EXPECT_TRUE(parse(nested(DEFAULT_MAX_JSON_DEPTH)).ok);
  EXPECT_FALSE(parse(nested(DEFAULT_MAX_JSON_DEPTH + 1)).ok);
}

TEST(Codec, SerializedObjectsParseBackToThemselves) {
  const boost::json::object original{
      {"dag_id", "example_dag"}, {"map_index", -1}, {"xcoms", {{"text", "h\u00e9llo \"quoted\"\n"}, {"n", 1.25}}}};
  const Parsed parsed = parse(rx::detail::serialize_json(original));
  ASSERT_TRUE(parsed.ok) << parsed.error;
  EXPECT_EQ(parsed.object, original);
}

TEST(Codec, SerializesTheEmptyObjectAsBraces) { EXPECT_EQ(rx::detail::serialize_json({}), "{}"); }

TEST(Codec, KeyToProtoAndViewOfRoundTrip) {
  const rx::TaskInstanceKey key{"dag", "task", "manual__2026-11-29", 7};
  remote_xcomm::v1::TaskInstanceKey proto;
  rx::detail::to_proto(key, proto);
  EXPECT_EQ(proto.dag_id(), "dag");
  EXPECT_EQ(proto.task_id(), "task");
  EXPECT_EQ(proto.run_id(), "manual__2026-11-29");
  EXPECT_EQ(proto.map_index(), 7);
  EXPECT_EQ(rx::detail::view_of(proto), key.view());
  EXPECT_EQ(rx::TaskInstanceKey::from(rx::detail::view_of(proto)), key);
}

TEST(Codec, UnmappedKeyKeepsMapIndexMinusOneOnTheWire) {
  const rx::TaskInstanceKey key{"dag", "task", "run", -1};
  remote_xcomm::v1::TaskInstanceKey proto;
  rx::detail::to_proto(key, proto);
  EXPECT_EQ(proto.map_index(), -1);
  EXPECT_EQ(rx::TaskInstanceKey::from(rx::detail::view_of(proto)), key);
}

}  // namespace
