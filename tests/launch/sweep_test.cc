// The pure parts of `pszero-bench sweep` (launch/bench/sweep.h): config expansion and its
// errors, the child command lines, CSV rows from the subcommands' JSON, the ETA.
#include "launch/bench/sweep.h"

#include <gtest/gtest.h>

#include <set>

namespace pszero::bench::sweep {
namespace {

using nlohmann::json;
using nlohmann::ordered_json;

std::string FlagsOf(const SweepItem& item) {
  std::string out;
  for (const auto& [flag, value] : item.flags)
    out += flag + (value.empty() ? "" : "=" + value) + " ";
  return out;
}

TEST(SweepTest, ListsMultiplyOutFirstKeyOutermost) {
  const ordered_json config = ordered_json::parse(R"({"items": [
    {"kind": "train", "model": "gpt-tiny", "workers": [2, 4], "sync": ["allreduce", "zero3"],
     "steps": 3, "deterministic": true, "check": false},
    {"kind": "collective", "op": "allgather", "min_bytes": "1K", "timeout_s": 30}]})");
  Result<std::vector<SweepItem>> items = ParseConfig(config, 900);
  ASSERT_TRUE(items.ok()) << items.status().ToString();
  ASSERT_EQ(items->size(), 5u);
  EXPECT_EQ(FlagsOf((*items)[0]),
            "--model=gpt-tiny --workers=2 --sync=allreduce --steps=3 --deterministic ");
  EXPECT_EQ(FlagsOf((*items)[1]),
            "--model=gpt-tiny --workers=2 --sync=zero3 --steps=3 --deterministic ");
  EXPECT_EQ(FlagsOf((*items)[2]),
            "--model=gpt-tiny --workers=4 --sync=allreduce --steps=3 --deterministic ");
  EXPECT_EQ((*items)[3].params["workers"], 4);
  EXPECT_EQ((*items)[3].params["sync"], "zero3");
  EXPECT_EQ((*items)[0].name,
            "train model=gpt-tiny workers=2 sync=allreduce steps=3 deterministic");
  EXPECT_EQ((*items)[0].timeout_s, 900);
  EXPECT_EQ((*items)[4].kind, "collective");
  EXPECT_EQ(FlagsOf((*items)[4]), "--op=allgather --min-bytes=1K ");
  EXPECT_EQ((*items)[4].timeout_s, 30);
  for (size_t i = 0; i < items->size(); ++i) EXPECT_EQ((*items)[i].index, static_cast<int>(i) + 1);
}

TEST(SweepTest, ConfigErrorsNameTheItemAndKey) {
  auto error = [](const char* text) {
    Result<std::vector<SweepItem>> r = ParseConfig(ordered_json::parse(text), 900);
    return r.ok() ? std::string("ok") : r.status().message();
  };
  EXPECT_EQ(error(R"({"items": [{"kind": "trian"}]})"),
            "items[0].kind: unknown kind 'trian' (collective, p2p, ps, train, simulate)");
  EXPECT_EQ(error(R"({"items": [{"model": "mlp"}]})"), "items[0].kind: missing, or not a string");
  EXPECT_EQ(error(R"({"items": []})"), "items: missing, or not a non-empty list");
  EXPECT_EQ(error(R"({"itemz": []})"), "itemz: unknown key (items, timeout_s, comment)");
  EXPECT_EQ(error(R"({"items": [{"kind": "p2p"}, {"kind": "ps", "output": "x"}]})"),
            "items[1].output: set by the sweep itself");
  EXPECT_EQ(error(R"({"items": [{"kind": "ps", "workers": []}]})"), "items[0].workers: empty list");
  EXPECT_EQ(error(R"({"items": [{"kind": "ps", "workers": {"a": 1}}]})"),
            "items[0].workers: must be a string, number, boolean or a list of them");
  EXPECT_EQ(error(R"({"items": [{"kind": "ps", "timeout_s": 0}]})"),
            "items[0].timeout_s: must be a number of seconds in (0, 1e6]");
  EXPECT_EQ(error(R"({"items": [{"kind": "ps", "timeout_s": 1e308}]})"),
            "items[0].timeout_s: must be a number of seconds in (0, 1e6]");
  EXPECT_EQ(error(R"({"items": [{"kind": "train", "calibrate": "sweep"}]})"),
            "items[0].calibrate: a file or \"sweep\", simulate items only");
}

TEST(SweepTest, ChildArgsForwardToTrainAndPsOnly) {
  const ordered_json config = ordered_json::parse(R"({"items": [
    {"kind": "train", "sync": "zero1", "workers": 2},
    {"kind": "ps", "servers": 1},
    {"kind": "collective", "ranks": 2, "check": true},
    {"kind": "simulate", "model": "gpt-tiny", "calibrate": "sweep"}]})");
  Result<std::vector<SweepItem>> items = ParseConfig(config, 900);
  ASSERT_TRUE(items.ok());
  const ForwardedFlags forwarded = {{"--emulate-hosts", "4"}, {"--link-gbit", "10"}};
  EXPECT_EQ(
      ChildArgs((*items)[0], forwarded, "o.json", "rep", {}),
      (std::vector<std::string>{"train", "--sync", "zero1", "--workers", "2", "--emulate-hosts",
                                "4", "--link-gbit", "10", "--json", "--report-dir", "rep"}));
  EXPECT_EQ(ChildArgs((*items)[1], forwarded, "o.json", "rep", {}),
            (std::vector<std::string>{"ps", "--servers", "1", "--emulate-hosts", "4", "--link-gbit",
                                      "10", "--json", "--output", "o.json"}));
  EXPECT_EQ(ChildArgs((*items)[2], forwarded, "o.json", "rep", {}),
            (std::vector<std::string>{"collective", "--ranks", "2", "--check", "--json", "--output",
                                      "o.json"}));
  ASSERT_TRUE((*items)[3].calibrate_from_sweep);
  EXPECT_EQ(ChildArgs((*items)[3], forwarded, "o.json", "rep", {"a.json", "b.json"}),
            (std::vector<std::string>{"simulate", "--model", "gpt-tiny", "--calibrate", "a.json",
                                      "b.json", "--json", "--output", "o.json"}));
}

// A simulate item calibrated on the sweep's runs predicts what they ran: --grad-accum,
// --recompute and --recompute-layers that every train item before it shares are passed on
// (the item's own win; differing values, defaults and other items are left alone).
TEST(SweepTest, SimulateFromSweepTakesTheTrainItemsGradAccumAndRecompute) {
  const ordered_json config = ordered_json::parse(R"({"items": [
    {"kind": "train", "model": "gpt-tiny", "sync": ["allreduce", "zero3"], "grad_accum": 4,
     "recompute": "full", "recompute_layers": [2, 3]},
    {"kind": "simulate", "model": "gpt-tiny", "workers": 8, "calibrate": "sweep"},
    {"kind": "simulate", "model": "gpt-tiny", "calibrate": "sweep", "grad_accum": 2},
    {"kind": "simulate", "model": "gpt-tiny", "calibrate": "x.json"},
    {"kind": "train", "model": "gpt-tiny", "grad_accum": 4, "recompute": "selective"},
    {"kind": "simulate", "model": "gpt-tiny", "calibrate": "sweep"}]})");
  Result<std::vector<SweepItem>> items = ParseConfig(config, 900);
  ASSERT_TRUE(items.ok()) << items.status().ToString();
  ASSERT_EQ(items->size(), 9u);
  EXPECT_EQ(FlagsOf((*items)[4]), "--model=gpt-tiny --workers=8 --grad-accum=4 --recompute=full ");
  EXPECT_EQ((*items)[4].name,
            "simulate model=gpt-tiny workers=8 calibrate=sweep grad-accum=4 recompute=full");
  EXPECT_EQ(ChildArgs((*items)[4], {}, "o.json", "rep", {"r1.json"}),
            (std::vector<std::string>{"simulate", "--model", "gpt-tiny", "--workers", "8",
                                      "--grad-accum", "4", "--recompute", "full", "--calibrate",
                                      "r1.json", "--json", "--output", "o.json"}));
  EXPECT_EQ(FlagsOf((*items)[5]), "--model=gpt-tiny --grad-accum=2 --recompute=full ");
  EXPECT_EQ(FlagsOf((*items)[6]), "--model=gpt-tiny --calibrate=x.json ");
  // After a train item with another --recompute and no --recompute-layers: only K agrees.
  EXPECT_EQ(FlagsOf((*items)[8]), "--model=gpt-tiny --grad-accum=4 ");
  // Train items at the defaults pass nothing on (the presets' command lines are unchanged).
  Result<ordered_json> quick = PresetConfig("quick");
  ASSERT_TRUE(quick.ok());
  Result<std::vector<SweepItem>> preset = ParseConfig(*quick, 900);
  ASSERT_TRUE(preset.ok());
  EXPECT_EQ(FlagsOf(preset->back()),
            "--model=gpt-tiny --sync=all --servers=1 --workers=8 --project-to=1024 "
            "--fit-host-cores ");
}

TEST(SweepTest, PresetsParseAndCoverEveryKind) {
  for (const char* name : {"quick", "full"}) {
    Result<ordered_json> config = PresetConfig(name);
    ASSERT_TRUE(config.ok()) << name;
    Result<std::vector<SweepItem>> items = ParseConfig(*config, 900);
    ASSERT_TRUE(items.ok()) << name << ": " << items.status().ToString();
    std::set<std::string> kinds;
    for (const SweepItem& item : *items) kinds.insert(item.kind);
    EXPECT_EQ(kinds.size(), ItemKinds().size()) << name;
    // The simulate item comes last, so that it calibrates on everything measured.
    EXPECT_EQ(items->back().kind, "simulate") << name;
  }
  EXPECT_FALSE(PresetConfig("slow").ok());
}

TEST(SweepTest, CsvQuotesOnlyWhatNeedsIt) {
  CsvTable t;
  t.header = {"a", "b"};
  t.rows = {{"plain", "x,y"}, {"say \"hi\"", "1.5"}};
  EXPECT_EQ(t.Render(), "a,b\nplain,\"x,y\"\n\"say \"\"hi\"\"\",1.5\n");
  EXPECT_EQ(CsvNumber(json(42)), "42");
  EXPECT_EQ(CsvNumber(json(0.1)), "0.1");
  EXPECT_EQ(CsvNumber(json(1.0 / 3)), "0.333333333");
  EXPECT_EQ(CsvNumber(json("x")), "");
}

TEST(SweepTest, CollectiveRowsWithTheOpenMpiLine) {
  const json result = json::parse(R"({"benchmark": "collective", "op": "allreduce", "ranks": 2,
    "dtype": "fp32",
    "rows": [{"bytes": 1024, "count": 256, "time_us": 10.5, "algbw_gbps": 0.1,
              "busbw_gbps": 0.1, "wrong": -1}],
    "mpi_rows": [{"bytes": 1024, "count": 256, "time_us": 5, "algbw_gbps": 0.2,
                  "busbw_gbps": 0.2, "wrong": -1}]})");
  std::map<std::string, CsvTable> tables;
  AppendCsvRows("collective", "collective op=allreduce", result, &tables);
  AppendCsvRows("collective", "again", result, &tables);
  ASSERT_EQ(tables.count("collectives.csv"), 1u);
  EXPECT_EQ(tables["collectives.csv"].Render(),
            "item,impl,op,ranks,dtype,bytes,count,time_us,algbw_gbps,busbw_gbps,wrong\n"
            "collective op=allreduce,pszero,allreduce,2,fp32,1024,256,10.5,0.1,0.1,-1\n"
            "collective op=allreduce,openmpi,allreduce,2,fp32,1024,256,5,0.2,0.2,-1\n"
            "again,pszero,allreduce,2,fp32,1024,256,10.5,0.1,0.1,-1\n"
            "again,openmpi,allreduce,2,fp32,1024,256,5,0.2,0.2,-1\n");
  AppendCsvRows("collective", "bad", json("not an object"), &tables);
  EXPECT_EQ(tables["collectives.csv"].rows.size(), 4u);
}

TEST(SweepTest, SimulateRowsPerProjectedWorkerCount) {
  const json result = json::parse(R"({"workload": {"name": "gpt-tiny"},
    "options": {"workers": 2},
    "modes": [{"mode": "zero3", "step_s": 9}],
    "projection": {"zero3": [
      {"mode": "zero3", "workers": 1, "step_s": 1.5, "compute_s": 1, "comm_s": 0,
       "exposed_comm_s": 0, "bytes_sent_per_rank": 0, "memory": {"total": 64, "formula": "16Ψ/D"}},
      {"mode": "zero3", "workers": 2, "step_s": 2.5, "compute_s": 1, "comm_s": 1,
       "exposed_comm_s": 1, "bytes_sent_per_rank": 8, "memory": {"total": 32, "formula": "16Ψ/D"}}
    ]}})");
  std::map<std::string, CsvTable> tables;
  AppendCsvRows("simulate", "sim", result, &tables);
  const CsvTable& t = tables["simulate.csv"];
  ASSERT_EQ(t.rows.size(), 2u);
  EXPECT_EQ(t.header[2], "workers");
  EXPECT_EQ(t.rows[1], (std::vector<std::string>{"sim", "gpt-tiny", "2", "zero3", "2.5", "1", "1",
                                                 "1", "8", "32", "16Ψ/D"}));
}

TEST(SweepTest, RankMemoryTakesTheLargestRank) {
  const json report = json::parse(R"({"ranks": [
    {"rank": 0, "memory": {"categories": {"params": {"live": 1, "peak": 10}},
                           "model_state": {"measured_peak": 10,
                                           "predicted_by_category": {"params": 10}}}},
    {"rank": 1, "memory": {"categories": {"params": {"live": 1, "peak": 20},
                                          "optimizer": {"live": 0, "peak": 5}},
                           "model_state": {"measured_peak": 25,
                                           "predicted_by_category": {"params": 20}}}}]})");
  const json m = RankMemory(report);
  EXPECT_EQ(m["rank"], 1);
  EXPECT_EQ(m["peak"]["params"], 20);
  EXPECT_EQ(m["peak"]["optimizer"], 5);
  EXPECT_EQ(m["predicted"]["params"], 20);
  EXPECT_TRUE(RankMemory(json::object()).is_null());
}

TEST(SweepTest, CalibrationTakesRunReportsAndThreeCollectives) {
  EXPECT_TRUE(UsableForCalibration(json::parse(R"({"schema": "pszero.run/1"})")));
  for (const char* op : {"allreduce", "reduce_scatter", "allgather"}) {
    EXPECT_TRUE(UsableForCalibration({{"benchmark", "collective"}, {"op", op}})) << op;
  }
  EXPECT_FALSE(UsableForCalibration({{"benchmark", "collective"}, {"op", "broadcast"}}));
  EXPECT_FALSE(UsableForCalibration({{"benchmark", "ps"}}));
  EXPECT_FALSE(UsableForCalibration(json::array()));
}

TEST(SweepTest, EtaUsesTheMeanOfFinishedItemsOfTheSameKind) {
  const ordered_json config = ordered_json::parse(R"({"items": [
    {"kind": "train", "workers": [1, 2, 3]}, {"kind": "p2p"}, {"kind": "ps"}]})");
  Result<std::vector<SweepItem>> items = ParseConfig(config, 900);
  ASSERT_TRUE(items.ok());
  EXPECT_LT(EstimateRemainingSeconds(*items, {}), 0);
  // One train done in 10 s: two more trains (10 each), p2p and ps at the overall mean (10).
  EXPECT_DOUBLE_EQ(EstimateRemainingSeconds(*items, {10}), 40);
  // Trains 10 and 20 s: one more train at 15, p2p and ps at the overall mean 15.
  EXPECT_DOUBLE_EQ(EstimateRemainingSeconds(*items, {10, 20}), 45);
  EXPECT_DOUBLE_EQ(EstimateRemainingSeconds(*items, {10, 20, 30, 2, 4}), 0);
  EXPECT_EQ(ProgressLine(3, 12, 41, 130, "train workers=4"),
            "[3/12] 00:41 elapsed, ETA 02:10  train workers=4");
  EXPECT_EQ(ProgressLine(1, 2, 0, -1, "p2p"), "[1/2] 00:00 elapsed, ETA --:--  p2p");
}

}  // namespace
}  // namespace pszero::bench::sweep
