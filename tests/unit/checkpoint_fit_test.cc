// model/checkpoint_fit.h: a checkpoint of another graph is refused before anything is restored.
#include "model/checkpoint_fit.h"

#include <gtest/gtest.h>

namespace processor {
namespace {

VariableSpec Variable(std::string name, std::vector<int64_t> shape, TF_DataType dtype = TF_FLOAT) {
  VariableSpec v;
  v.name = std::move(name);
  v.dtype = dtype;
  v.known_rank = true;
  v.shape = std::move(shape);
  return v;
}

TEST(CheckpointFit, TheSameShapesAndDtypesFit) {
  const std::vector<VariableSpec> graph = {Variable("w", {3, 4}), Variable("step", {}, TF_INT64)};
  EXPECT_TRUE(CheckCheckpointFits(graph, {{"w", TF_FLOAT, {3, 4}}, {"step", TF_INT64, {}}, {"slot", TF_FLOAT, {9}}}).ok());
}

TEST(CheckpointFit, AnUnknownDimensionOrRankOfTheGraphMatchesAny) {
  VariableSpec unknown_rank = Variable("v", {});
  unknown_rank.known_rank = false;
  EXPECT_TRUE(CheckCheckpointFits({Variable("w", {-1, 4}), unknown_rank}, {{"w", TF_FLOAT, {7, 4}}, {"v", TF_FLOAT, {2, 2}}}).ok());
}

TEST(CheckpointFit, VariablesTheCheckpointDoesNotHoldAreLeftToTheRestore) {
  EXPECT_TRUE(CheckCheckpointFits({Variable("part_0", {5, 2})}, {{"table", TF_FLOAT, {10, 2}}}).ok());
}

TEST(CheckpointFit, AnotherShapeOrDtypeIsRefusedByName) {
  Status shape = CheckCheckpointFits({Variable("w", {3, 4})}, {{"w", TF_FLOAT, {4, 4}}});
  EXPECT_EQ(shape.message(), "variable 'w' has shape [4,4] in the checkpoint but [3,4] in the graph (a checkpoint of another graph?)");
  Status rank = CheckCheckpointFits({Variable("w", {3, 4})}, {{"w", TF_FLOAT, {12}}});
  EXPECT_FALSE(rank.ok());
  Status dtype = CheckCheckpointFits({Variable("w", {3})}, {{"w", TF_DOUBLE, {3}}});
  EXPECT_EQ(dtype.message(), "variable 'w' has dtype DT_DOUBLE in the checkpoint but DT_FLOAT in the graph (a checkpoint of another graph?)");
}

}  // namespace
}  // namespace processor
