// JSON text and protobuf conversions of the wire contract (src/codec.hpp).
#include "codec.hpp"
#include "transport/request_decoding.hpp"

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

// ---- caller text, JSON limits and request decoding (src/transport/request_decoding.hpp) ----------

TEST(CallerText, KeepsShortPrintableTextAndEscapesTheRest) {
  EXPECT_EQ(rx::detail::caller_text("example_dag"), "example_dag");
  EXPECT_EQ(rx::detail::caller_text("caf\xc3\xa9"), "caf\xc3\xa9");  // valid UTF-8 stays as it is
  EXPECT_EQ(rx::detail::caller_text("a\nb\\c\xff"), "a\\x0ab\\x5cc\\xff");
}

TEST(CallerText, CutsLongTextAtACharacterBoundaryAndSaysHowLongItWas) {
  EXPECT_EQ(rx::detail::caller_text(std::string(100, 'x'), 4), "xxxx...(100 bytes)");
  // "é" is two bytes: a cut after 3 bytes would split the second one.
  EXPECT_EQ(rx::detail::caller_text("\xc3\xa9\xc3\xa9\xc3\xa9", 3), "\xc3\xa9...(6 bytes)");
  EXPECT_EQ(rx::detail::caller_key({std::string(70, 'd'), "t", "r", -1}),
            std::string(64, 'd') + "...(70 bytes)/t/r[-1]");
}

TEST(JsonLimits, CountValuesAtEveryLevelAndStringBytesWhileParsing) {
  rx::detail::JsonLimits limits;
  limits.max_values = 4;  // {"a":[1,{"b":2}]} holds 5: the object, the array, 1, the inner object, 2
  limits.max_string_bytes = 3;
  boost::json::object out;
  std::string error;
  rx::detail::JsonViolation violation{};
  EXPECT_TRUE(rx::detail::parse_json_object(R"({"a":[1,2]})", limits, out, error, &violation)) << error;
  EXPECT_FALSE(rx::detail::parse_json_object(R"({"a":[1,{"b":2}]})", limits, out, error, &violation));
  EXPECT_EQ(violation, rx::detail::JsonViolation::too_many_values);
  EXPECT_FALSE(rx::detail::parse_json_object(R"({"abcd":1})", limits, out, error, &violation));
  EXPECT_EQ(violation, rx::detail::JsonViolation::string_too_long);
  // An escape counts as the byte it decodes to: "\u0041bc" is 3 bytes.
  EXPECT_TRUE(rx::detail::parse_json_object(R"({"s":"\u0041bc"})", limits, out, error, &violation)) << error;
}

TEST(JsonLimits, ReadsNumbersWithHugeNegativeExponentsAsZeroAndRefusesHugePositiveOnes) {
  boost::json::object out;
  std::string error;
  rx::detail::JsonViolation violation{};
  ASSERT_TRUE(
      rx::detail::parse_json_object(R"({"a":-1.5e-2147483649,"b":[0.0E+99999999999]})", {}, out, error, &violation))
      << error;
  EXPECT_EQ(out.at("a").as_double(), 0.0);
  EXPECT_EQ(out.at("b").as_array().at(0).as_double(), 0.0);
  EXPECT_FALSE(rx::detail::parse_json_object(R"({"a":1e2147483648})", {}, out, error, &violation));
  EXPECT_EQ(violation, rx::detail::JsonViolation::number_too_large);
  // A string that looks like such a number is a string.
  ASSERT_TRUE(rx::detail::parse_json_object(R"({"s":"1e-99999999999"})", rx::detail::JsonLimits{}, out, error))
      << error;
  EXPECT_EQ(out.at("s").as_string(), "1e-99999999999");
}

TEST(RequestDecoding, ReadsASendRequestSkippingUnknownFieldsAndOtherWireTypes) {
  remote_xcomm::v1::SendRequest request;
  rx::detail::to_proto(rx::TaskInstanceKey{"dag", "task", "run", 3}, *request.mutable_key());
  request.set_payload_json(R"({"a":1})");
  std::string bytes = request.SerializeAsString();
  bytes.append("\x18\x05");              // field 3, a varint: unknown
  bytes.append("\x15\x01\x02\x03\x04");  // field 2 as a fixed32: another wire type, skipped as unknown
  rx::detail::SendRequestView decoded;
  boost::json::object payload;
  const grpc::Status status = rx::detail::decode_send(bytes, {}, decoded, payload);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(decoded.key, (rx::TaskInstanceKeyView{"dag", "task", "run", 3}));
  EXPECT_EQ(payload, (boost::json::object{{"a", 1}}));
}

TEST(RequestDecoding, AnExchangeFrameWithABadKeyKeepsItsIdAndItsOwnError) {
  remote_xcomm::v1::ExchangeRequest batch;
  auto* bad = batch.add_frames();
  bad->mutable_key()->set_dag_id(std::string(2000, 'd'));
  bad->set_id(41);  // serialised after the key
  batch.add_frames()->set_id(42);
  std::vector<rx::detail::ExchangeFrameView> frames;
  const std::string bytes = batch.SerializeAsString();  // the views point into it
  const grpc::Status status = rx::detail::decode_exchange_request(bytes, {}, frames);
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_EQ(frames.size(), 2U);
  EXPECT_EQ(frames[0].id, 41U);
  EXPECT_EQ(frames[0].error.substr(0, 44), "key.dag_id is 2000 bytes, over the server's ");
  EXPECT_EQ(frames[1].id, 42U);
  EXPECT_TRUE(frames[1].error.empty());
}

TEST(RequestDecoding, AKeyWithoutMapIndexOrNoKeyAtAllReadsAsProto3sDefaults) {
  remote_xcomm::v1::SendRequest request;
  request.mutable_key()->set_dag_id("dag");  // map_index 0 is not on the wire
  rx::detail::SendRequestView decoded;
  const std::string bytes = request.SerializeAsString();  // the views point into it
  ASSERT_TRUE(rx::detail::decode_send_request(bytes, {}, decoded).ok());
  EXPECT_EQ(decoded.key, (rx::TaskInstanceKeyView{"dag", "", "", 0}));
  ASSERT_TRUE(rx::detail::decode_send_request("", {}, decoded).ok());
  EXPECT_EQ(decoded.key, (rx::TaskInstanceKeyView{"", "", "", 0}));
  remote_xcomm::v1::ExchangeRequest batch;
  batch.add_frames()->set_id(1);
  std::vector<rx::detail::ExchangeFrameView> frames;
  const std::string batch_bytes = batch.SerializeAsString();
  ASSERT_TRUE(rx::detail::decode_exchange_request(batch_bytes, {}, frames).ok());
  ASSERT_EQ(frames.size(), 1U);
  EXPECT_EQ(frames[0].key.map_index, 0);
}
