// feature_store/embedding_variables.h: a GraphDef with DeepRec's EV ops becomes one stock TensorFlow
// imports, with what the feature store needs to serve the EV.
#include "feature_store/embedding_variables.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "common/wire_format.h"
#include "feature_store/node_def_writer.h"

namespace processor {
namespace {

using node_def::AttrEntry;
using node_def::ShapeAttr;
using node_def::StringAttr;
using node_def::TypeAttr;

std::string Node(const std::string& name, const std::string& op, std::vector<std::string> inputs,
                 std::map<std::string, std::string> attrs = {}) {
  wire::StringWriter node;
  node.Bytes(1, name);
  node.Bytes(2, op);
  for (const std::string& input : inputs) node.Bytes(3, input);
  for (const auto& [key, value] : attrs) node.Bytes(5, AttrEntry(key, value));
  return node.str();
}

struct Parsed {
  std::string op;
  std::vector<std::string> inputs;
};

std::map<std::string, Parsed> Nodes(const std::string& graph_def) {
  std::map<std::string, Parsed> nodes;
  wire::Reader r(graph_def);
  uint32_t field, type;
  while (r.NextField(&field, &type)) {
    wire::Reader node(r.LengthDelimited());
    std::string name;
    Parsed parsed;
    while (node.NextField(&field, &type)) {
      if (type != wire::kLengthDelimited) {
        node.Skip(type);
        continue;
      }
      const std::string value(node.LengthDelimited());
      if (field == 1) name = value;
      if (field == 2) parsed.op = value;
      if (field == 3) parsed.inputs.push_back(value);
    }
    nodes[name] = parsed;
  }
  return nodes;
}

TEST(EmbeddingVariables, DeepRecsOpsBecomeAGraphStockTensorFlowImports) {
  const std::string float_type = TypeAttr(TF_FLOAT), int64_type = TypeAttr(TF_INT64);
  wire::StringWriter graph;
  for (const std::string& node : {
           Node("ev", "KvVarHandleOp", {}, {{"dtype", float_type}, {"Tkeys", int64_type}, {"shape", ShapeAttr({4})},
                                            {"shared_name", StringAttr("ev_saved")}}),
           Node("ids", "Placeholder", {}, {{"dtype", int64_type}}),
           Node("dv", "Const", {}, {{"dtype", float_type}}),
           Node("ev/read", "Identity", {"ev"}, {{"T", TypeAttr(TF_RESOURCE)}}),
           Node("gather", "KvResourceGather", {"ev/read", "ids", "dv", "^ids"},
                {{"dtype", float_type}, {"Tkeys", int64_type}}),
           Node("init_value", "Const", {}, {{"dtype", float_type}}),
           Node("empty_key", "Const", {}, {{"dtype", int64_type}}),
           Node("ev/init", "InitializeKvVariableOp", {"ev", "ev", "init_value", "empty_key"},
                {{"default_value_dim", node_def::IntAttr(32)}}),
           Node("slot", "KvVarHandleOp", {}, {{"dtype", float_type}, {"Tkeys", int64_type}, {"shape", ShapeAttr({4})}}),
           Node("slot/init", "InitializeKvVariableOp", {"slot", "ev", "init_value", "empty_key"}),
           Node("save", "SaveV2", {"ev"}),
           Node("save/after", "Identity", {"save"}),
           Node("incr", "IncrSave", {"ids"}),
           Node("init", "NoOp", {"^ev/init", "^slot/init", "^incr"}),
           Node("out", "Identity", {"gather"})}) {
    graph.Bytes(1, node);
  }
  std::string rewritten;
  std::vector<DeepRecEmbedding> evs;
  ASSERT_TRUE(MentionsEmbeddingVariables(graph.str()));
  ASSERT_TRUE(RewriteEmbeddingVariables(graph.str(), {"out"}, &rewritten, &evs).ok());
  EXPECT_FALSE(MentionsEmbeddingVariables(rewritten));

  const std::map<std::string, Parsed> nodes = Nodes(rewritten);
  EXPECT_EQ(nodes.at("ev").op, "VarHandleOp");
  EXPECT_EQ(nodes.at("gather").op, "ResourceGather");
  EXPECT_EQ(nodes.at("gather").inputs, (std::vector<std::string>{"ev", "ids", "^ids"}));
  EXPECT_EQ(nodes.at("init").inputs, std::vector<std::string>{});  // its control inputs went with their nodes
  for (const char* dropped : {"ev/init", "slot/init", "save", "save/after", "incr"}) {
    EXPECT_EQ(nodes.count(dropped), 0u) << dropped;
  }
  for (const char* kept : {"ids", "init_value", "ev/read", "out", "slot"}) EXPECT_EQ(nodes.count(kept), 1u) << kept;

  ASSERT_EQ(evs.size(), 1u);  // the slot is never gathered
  EXPECT_EQ(evs[0].name, "ev");
  EXPECT_EQ(evs[0].saved_name, "ev_saved");
  EXPECT_EQ(evs[0].dim, 4);
  EXPECT_EQ(evs[0].key_dtype, TF_INT64);
  EXPECT_EQ(evs[0].default_value, "init_value");
  EXPECT_EQ(evs[0].default_value_dim, 32);
}

TEST(EmbeddingVariables, AnOutputNeedingAnotherDeepRecOpIsRefusedNamingIt) {
  wire::StringWriter graph;
  for (const std::string& node : {Node("ev", "KvVarHandleOp", {}, {{"shape", ShapeAttr({4})}}),
                                  Node("ids", "Placeholder", {}),
                                  Node("fused", "FusedEmbeddingSparseLookUp", {"ids"}),
                                  Node("out", "Identity", {"fused"})}) {
    graph.Bytes(1, node);
  }
  std::string rewritten;
  std::vector<DeepRecEmbedding> evs;
  const Status status = RewriteEmbeddingVariables(graph.str(), {"out"}, &rewritten, &evs);
  EXPECT_EQ(status.message(), "signature output 'out' needs 'fused' (FusedEmbeddingSparseLookUp), which stock "
                              "TensorFlow cannot run (of DeepRec's ops, this build serves EmbeddingVariables read "
                              "by KvResourceGather)");
}

TEST(EmbeddingVariables, OnlyAnOpFieldCountsAsAMention) {
  EXPECT_FALSE(MentionsEmbeddingVariables("a docstring naming KvVarHandleOp"));
  EXPECT_TRUE(MentionsEmbeddingVariables(Node("ev", "KvVarHandleOp", {})));
}

}  // namespace
}  // namespace processor
