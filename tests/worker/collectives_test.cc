// Every collective, dtype and reduction with ranks as threads, against a serial
// double-precision reference; the deterministic variant bit-equal to a serial
// left-to-right fp32 sum; subgroups; bytes per rank equal to the ring bound; the
// hierarchical all-reduce, reduce-scatter and all-gather with ranks posing as hosts.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/half.h"
#include "tests/worker/collective_test_util.h"
#include "worker/collectives/communicator.h"
#include "worker/collectives/flight_recorder.h"
#include "worker/collectives/intra_host.h"
#include "worker/collectives/stream.h"

namespace pszero::collectives {
namespace {

using testing::CommRanks;

// Value of element i on rank r, exactly representable in every dtype under test.
double InputValue(int r, int64_t i, DType dtype) {
  uint64_t x = (static_cast<uint64_t>(r) + 1) * 0x9E3779B97F4A7C15ull ^
               (static_cast<uint64_t>(i) * 0xBF58476D1CE4E5B9ull);
  x ^= x >> 31;
  const int v = static_cast<int>(x % 2001) - 1000;  // -1000..1000
  switch (dtype) {
    case DType::kInt32:
    case DType::kInt64:
      return v;
    case DType::kFloat32:
      return v / 1024.0 + 1.0 / 3;  // needs rounding, so summation order shows
    default:                        // bf16 / fp16: 8 significant bits
      return v / 64.0;
  }
}

void Store(void* base, int64_t i, DType dtype, double v) {
  switch (dtype) {
    case DType::kFloat32:
      static_cast<float*>(base)[i] = static_cast<float>(v);
      break;
    case DType::kBFloat16:
      static_cast<uint16_t*>(base)[i] = FloatToBf16Bits(static_cast<float>(v));
      break;
    case DType::kFloat16:
      static_cast<uint16_t*>(base)[i] = FloatToFp16Bits(static_cast<float>(v));
      break;
    case DType::kInt32:
      static_cast<int32_t*>(base)[i] = static_cast<int32_t>(v);
      break;
    case DType::kInt64:
      static_cast<int64_t*>(base)[i] = static_cast<int64_t>(v);
      break;
    case DType::kUInt8:
      static_cast<uint8_t*>(base)[i] = static_cast<uint8_t>(v);
      break;
  }
}

double Load(const void* base, int64_t i, DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return static_cast<const float*>(base)[i];
    case DType::kBFloat16:
      return Bf16BitsToFloat(static_cast<const uint16_t*>(base)[i]);
    case DType::kFloat16:
      return Fp16BitsToFloat(static_cast<const uint16_t*>(base)[i]);
    case DType::kInt32:
      return static_cast<const int32_t*>(base)[i];
    case DType::kInt64:
      return static_cast<double>(static_cast<const int64_t*>(base)[i]);
    case DType::kUInt8:
      return static_cast<const uint8_t*>(base)[i];
  }
  return 0;
}

// The element as the rank holds it (after rounding to dtype).
double Held(int r, int64_t i, DType dtype) {
  uint64_t bits = 0;
  Store(&bits, 0, dtype, InputValue(r, i, dtype));
  return Load(&bits, 0, dtype);
}

double Reference(int n, int64_t i, DType dtype, ReduceOp op) {
  double acc = Held(0, i, dtype);
  for (int r = 1; r < n; ++r) {
    acc = op == ReduceOp::kMax ? std::max(acc, Held(r, i, dtype)) : acc + Held(r, i, dtype);
  }
  return op == ReduceOp::kAvg ? acc / n : acc;
}

// Rounding error bound of a sum of n held values of element i computed in any order with
// a rounding to dtype after each addition: n roundings of at most half an ulp of a
// partial sum, each bounded by the sum of magnitudes.
double Tolerance(DType dtype, int n, int64_t i) {
  double magnitude = 1;
  for (int r = 0; r < n; ++r) magnitude += std::fabs(Held(r, i, dtype));
  switch (dtype) {
    case DType::kFloat32:
      return std::ldexp(1.0, -24) * n * magnitude;
    case DType::kBFloat16:
      return std::ldexp(1.0, -8) * n * magnitude;
    case DType::kFloat16:
      return std::ldexp(1.0, -11) * n * magnitude;
    default:
      return 0;
  }
}

// `shared`: in shared host memory, which the intra-host path reads in place.
Tensor Make(int64_t count, DType dtype, bool shared = false) {
  Result<Tensor> t = shared ? Tensor::ZerosShared({count}, dtype, MemoryCategory::kOther, nullptr)
                            : Tensor::Zeros({count}, dtype, MemoryCategory::kOther, nullptr);
  EXPECT_TRUE(t.ok()) << t.status().ToString();
  return std::move(t).value();
}

Tensor Inputs(int r, int64_t count, DType dtype, bool shared = false) {
  Tensor t = Make(count, dtype, shared);
  for (int64_t i = 0; i < count; ++i) Store(t.data(), i, dtype, InputValue(r, i, dtype));
  return t;
}

struct Config {
  const char* name;
  CommunicatorOptions options;
  bool intra_host = false;  // the intra-host path must be the one taken
  bool shared = false;      // buffers in shared memory: the ops must read them in place
};

std::vector<Config> Configs() {
  CommunicatorOptions direct;
  direct.small_message_bytes = size_t{1} << 40;
  direct.intra_host = false;
  CommunicatorOptions ring;
  ring.small_message_bytes = 0;
  ring.segment_bytes = 96;  // many segments, uneven ones included
  ring.segments_in_flight = 3;
  ring.intra_host = false;
  CommunicatorOptions det = ring;
  det.deterministic = true;
  CommunicatorOptions shm;
  shm.small_message_bytes = 0;
  shm.intra_host_segment_bytes = 96;  // many segments, uneven ones included
  CommunicatorOptions single = shm;
  single.intra_host_single_copy_min_bytes = 0;
  return {{"direct", direct},
          {"ring", ring},
          {"deterministic", det},
          {"intra-host", shm, /*intra_host=*/true},
          {"single-copy", single, /*intra_host=*/true, /*shared=*/true}};
}

// The path the config asks for is the one the ranks took.
void ExpectPath(CommRanks& ranks, const Config& config) {
  if (ranks.size() < 2) return;
  for (int r = 0; r < ranks.size(); ++r) {
    EXPECT_EQ(ranks.comm(r).intra_host_active(), config.intra_host)
        << config.name << " rank " << r << ": " << ranks.comm(r).intra_host_why_not();
    if (config.shared) {
      EXPECT_GT(ranks.comm(r).single_copy_ops(), 0) << config.name << " rank " << r;
    } else {
      EXPECT_EQ(ranks.comm(r).single_copy_ops(), 0) << config.name << " rank " << r;
    }
  }
}

std::vector<int64_t> Counts(int n) {
  std::vector<int64_t> c = {0, 1, n - 1, 1009};
  c.erase(std::unique(c.begin(), c.end()), c.end());
  return c;
}

const DType kDTypes[] = {DType::kFloat32, DType::kBFloat16, DType::kFloat16, DType::kInt32,
                         DType::kInt64};
const int kWorldSizes[] = {1, 2, 3, 4, 5, 8};

class CollectivesTest : public ::testing::TestWithParam<int> {};

TEST_P(CollectivesTest, AllReduceEveryDTypeOpAndAlgorithm) {
  const int n = GetParam();
  for (const Config& config : Configs()) {
    CommRanks ranks(n, config.options);
    ASSERT_EQ(ranks.size(), n);
    for (DType dtype : kDTypes) {
      for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax}) {
        if (!CheckReduce(dtype, op).ok()) continue;
        for (int64_t count : Counts(n)) {
          std::vector<Tensor> data(n);
          for (int r = 0; r < n; ++r) data[r] = Inputs(r, count, dtype, config.shared);
          CommRanks::ExpectAllOk(
              ranks.Run([&](int r) { return ranks.comm(r).AllReduce(data[r], op); }));
          for (int r = 0; r < n; ++r) {
            for (int64_t i = 0; i < count; ++i) {
              const double ref = Reference(n, i, dtype, op);
              ASSERT_NEAR(Load(data[r].data(), i, dtype), ref, Tolerance(dtype, n, i))
                  << config.name << " " << DTypeName(dtype) << " " << ReduceOpName(op) << " count "
                  << count << " rank " << r << " element " << i;
            }
          }
        }
      }
    }
    ExpectPath(ranks, config);
  }
}

TEST_P(CollectivesTest, ReduceScatterAndAllGather) {
  const int n = GetParam();
  for (const Config& config : Configs()) {
    CommRanks ranks(n, config.options);
    for (DType dtype : {DType::kFloat32, DType::kBFloat16, DType::kInt64}) {
      for (int64_t block : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{257}}) {
        std::vector<Tensor> in(n), out(n);
        for (int r = 0; r < n; ++r) {
          in[r] = Inputs(r, block * n, dtype, config.shared);
          out[r] = Make(block, dtype, config.shared);
        }
        CommRanks::ExpectAllOk(ranks.Run(
            [&](int r) { return ranks.comm(r).ReduceScatter(in[r], out[r], ReduceOp::kSum); }));
        for (int r = 0; r < n; ++r) {
          for (int64_t i = 0; i < block; ++i) {
            const double ref = Reference(n, r * block + i, dtype, ReduceOp::kSum);
            ASSERT_NEAR(Load(out[r].data(), i, dtype), ref, Tolerance(dtype, n, r * block + i))
                << config.name << " reduce_scatter " << DTypeName(dtype) << " block " << block
                << " rank " << r << " element " << i;
          }
        }
        // All-gather the blocks back: every rank gets every rank's input block r.
        std::vector<Tensor> gathered(n);
        for (int r = 0; r < n; ++r) {
          gathered[r] = Make(block * n, dtype, config.shared);
          in[r] = Inputs(r, block, dtype, config.shared);
        }
        CommRanks::ExpectAllOk(
            ranks.Run([&](int r) { return ranks.comm(r).AllGather(in[r], gathered[r]); }));
        for (int r = 0; r < n; ++r) {
          for (int p = 0; p < n; ++p) {
            for (int64_t i = 0; i < block; ++i) {
              ASSERT_EQ(Load(gathered[r].data(), p * block + i, dtype), Held(p, i, dtype))
                  << config.name << " allgather rank " << r << " block " << p << " elem " << i;
            }
          }
        }
      }
    }
    ExpectPath(ranks, config);
  }
}

TEST_P(CollectivesTest, BroadcastFromEveryRoot) {
  const int n = GetParam();
  for (const Config& config : Configs()) {
    CommRanks ranks(n, config.options);
    for (int root = 0; root < n; ++root) {
      for (int64_t count : {int64_t{0}, int64_t{1}, int64_t{1009}}) {
        std::vector<Tensor> data(n);
        for (int r = 0; r < n; ++r) data[r] = Inputs(r, count, DType::kFloat32, config.shared);
        CommRanks::ExpectAllOk(
            ranks.Run([&](int r) { return ranks.comm(r).Broadcast(data[r], root); }));
        for (int r = 0; r < n; ++r) {
          // memcmp of zero bytes still needs valid pointers; an empty tensor holds none.
          if (count > 0) {
            ASSERT_EQ(std::memcmp(data[r].data(), data[root].data(), data[r].nbytes()), 0)
                << config.name << " root " << root << " rank " << r;
          }
          for (int64_t i = 0; i < count; ++i) {
            ASSERT_EQ(Load(data[r].data(), i, DType::kFloat32), Held(root, i, DType::kFloat32));
          }
        }
      }
    }
    ExpectPath(ranks, config);
  }
}

TEST_P(CollectivesTest, AllToAllAndV) {
  const int n = GetParam();
  for (bool intra : {false, true}) {
    CommunicatorOptions options;
    options.small_message_bytes = 0;
    options.intra_host = intra;
    CommRanks ranks(n, options);
    const int64_t block = 33;
    std::vector<Tensor> in(n), out(n);
    for (int r = 0; r < n; ++r) {
      in[r] = Make(block * n, DType::kInt32);
      out[r] = Make(block * n, DType::kInt32);
      for (int64_t i = 0; i < block * n; ++i) in[r].data<int32_t>()[i] = r * 100000 + i;
    }
    CommRanks::ExpectAllOk(ranks.Run([&](int r) { return ranks.comm(r).AllToAll(in[r], out[r]); }));
    for (int r = 0; r < n; ++r) {
      for (int p = 0; p < n; ++p) {
        for (int64_t i = 0; i < block; ++i) {
          ASSERT_EQ(out[r].data<int32_t>()[p * block + i], p * 100000 + r * block + i);
        }
      }
    }
    // V form: rank r sends (r + p) % 3 + p elements to rank p.
    auto count = [](int from, int to) { return static_cast<int64_t>((from + to) % 3 + to); };
    std::vector<Tensor> vin(n), vout(n);
    for (int r = 0; r < n; ++r) {
      vin[r] = Make(64 * n, DType::kInt64);
      vout[r] = Make(64 * n, DType::kInt64);
      int64_t off = 0;
      for (int p = 0; p < n; ++p) {
        for (int64_t i = 0; i < count(r, p); ++i)
          vin[r].data<int64_t>()[off++] = r * 1000 + p * 10 + i;
      }
    }
    CommRanks::ExpectAllOk(ranks.Run([&](int r) {
      std::vector<int64_t> sc(n), rc(n);
      for (int p = 0; p < n; ++p) {
        sc[p] = count(r, p);
        rc[p] = count(p, r);
      }
      return ranks.comm(r).AllToAllV(vin[r], sc, vout[r], rc);
    }));
    for (int r = 0; r < n; ++r) {
      int64_t off = 0;
      for (int p = 0; p < n; ++p) {
        for (int64_t i = 0; i < count(p, r); ++i) {
          ASSERT_EQ(vout[r].data<int64_t>()[off++], p * 1000 + r * 10 + i) << "intra " << intra;
        }
      }
    }
    ExpectPath(ranks, {"alltoall", options, intra});
  }
}

TEST_P(CollectivesTest, DeterministicIsBitEqualToSerialSumForEverySegmentSize) {
  const int n = GetParam();
  const int64_t count = 4099;
  for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
    // Serial left-to-right fp32 sum, rounded once.
    Tensor expected = Make(count, dtype);
    for (int64_t i = 0; i < count; ++i) {
      float acc = static_cast<float>(Held(0, i, dtype));
      for (int r = 1; r < n; ++r) acc += static_cast<float>(Held(r, i, dtype));
      Store(expected.data(), i, dtype, acc);
    }
    for (size_t segment : {size_t{64}, size_t{1000}, size_t{1} << 20}) {
      for (size_t small : {size_t{0}, size_t{1} << 30}) {
        // Transport, intra-host staged, intra-host single copy.
        for (int path : {0, 1, 2}) {
          const bool intra = path > 0, shared = path == 2;
          CommunicatorOptions options;
          options.deterministic = true;
          options.segment_bytes = segment;
          options.intra_host_segment_bytes = segment;
          options.small_message_bytes = small;
          options.intra_host = intra;
          options.intra_host_single_copy_min_bytes = 0;
          CommRanks ranks(n, options);
          std::vector<Tensor> data(n);
          for (int r = 0; r < n; ++r) data[r] = Inputs(r, count, dtype, shared);
          CommRanks::ExpectAllOk(
              ranks.Run([&](int r) { return ranks.comm(r).AllReduce(data[r], ReduceOp::kSum); }));
          for (int r = 0; r < n; ++r) {
            ASSERT_EQ(std::memcmp(data[r].data(), expected.data(), expected.nbytes()), 0)
                << DTypeName(dtype) << " segment " << segment << " small " << small << " intra "
                << intra << " rank " << r;
          }
          ExpectPath(ranks, {"deterministic", options, intra, shared});
        }
      }
    }
  }
}

TEST_P(CollectivesTest, BarrierAndRepeatedOps) {
  const int n = GetParam();
  CommRanks ranks(n, {});
  CommRanks::ExpectAllOk(ranks.Run([&](int r) -> Status {
    for (int i = 0; i < 20; ++i) {
      PSZERO_RETURN_IF_ERROR(ranks.comm(r).Barrier());
      Tensor t = Make(3, DType::kInt64);
      t.data<int64_t>()[0] = r;
      t.data<int64_t>()[1] = i;
      t.data<int64_t>()[2] = 1;
      PSZERO_RETURN_IF_ERROR(ranks.comm(r).AllReduce(t, ReduceOp::kSum));
      if (t.data<int64_t>()[0] != n * (n - 1) / 2 || t.data<int64_t>()[1] != i * n ||
          t.data<int64_t>()[2] != n) {
        return Status::Internal("wrong sum in iteration " + std::to_string(i));
      }
    }
    return Status::Ok();
  }));
}

INSTANTIATE_TEST_SUITE_P(Ranks, CollectivesTest, ::testing::ValuesIn(kWorldSizes),
                         [](const auto& info) { return "N" + std::to_string(info.param); });

TEST(CollectivesSplitTest, TwoByTwoGroups) {
  CommRanks ranks(4, {});
  std::vector<std::unique_ptr<Communicator>> rows(4), cols(4);
  CommRanks::ExpectAllOk(ranks.Run([&](int r) -> Status {
    PSZERO_ASSIGN_OR_RETURN(rows[r], ranks.comm(r).Split(r / 2, r));
    PSZERO_ASSIGN_OR_RETURN(cols[r], ranks.comm(r).Split(r % 2, -r));  // reversed order
    return Status::Ok();
  }));
  for (int r = 0; r < 4; ++r) {
    ASSERT_EQ(rows[r]->size(), 2);
    EXPECT_EQ(rows[r]->rank(), r % 2);
    EXPECT_EQ(cols[r]->rank(), 1 - r / 2);  // key -r puts the higher rank first
    EXPECT_NE(rows[r]->id(), cols[r]->id());
    EXPECT_NE(rows[r]->id(), 0u);
  }
  // Both splits in flight in an interleaved order; each sums only its own group.
  std::vector<Tensor> a(4), b(4);
  CommRanks::ExpectAllOk(ranks.Run([&](int r) -> Status {
    a[r] = Make(5000, DType::kFloat32);
    b[r] = Make(5000, DType::kFloat32);
    for (int i = 0; i < 5000; ++i) {
      a[r].data<float>()[i] = static_cast<float>(r + 1);
      b[r].data<float>()[i] = static_cast<float>(10 * (r + 1));
    }
    PSZERO_RETURN_IF_ERROR(rows[r]->AllReduce(a[r], ReduceOp::kSum));
    return cols[r]->AllReduce(b[r], ReduceOp::kSum);
  }));
  for (int r = 0; r < 4; ++r) {
    const float row_sum = r < 2 ? 1 + 2 : 3 + 4;
    const float col_sum = r % 2 == 0 ? 10 + 30 : 20 + 40;
    EXPECT_EQ(a[r].data<float>()[4999], row_sum);
    EXPECT_EQ(b[r].data<float>()[0], col_sum);
  }
  // A negative color takes part but gets no communicator.
  std::vector<std::unique_ptr<Communicator>> some(4);
  CommRanks::ExpectAllOk(ranks.Run([&](int r) -> Status {
    PSZERO_ASSIGN_OR_RETURN(some[r], ranks.comm(r).Split(r == 3 ? -1 : 0, r));
    return Status::Ok();
  }));
  EXPECT_EQ(some[3], nullptr);
  EXPECT_EQ(some[0]->size(), 3);
}

// 64 MiB arrays through the default options (intra-host path, and the ring): allreduce,
// reduce-scatter and all-gather against the serial double-precision reference.
TEST(CollectivesLargeTest, SixtyFourMiB) {
  for (int n : {2, 4}) {
    // Intra-host staged, intra-host single copy, transport.
    for (int path : {0, 1, 2}) {
      const bool intra = path < 2, shared = path == 1;
      CommunicatorOptions options;
      options.intra_host = intra;
      CommRanks ranks(n, options);
      const int64_t count = (int64_t{64} << 20) / 4;
      std::vector<Tensor> data(n), block(n);
      for (int r = 0; r < n; ++r) {
        data[r] = Inputs(r, count, DType::kFloat32, shared);
        block[r] = Make(count / n, DType::kFloat32, shared);
      }
      CommRanks::ExpectAllOk(ranks.Run([&](int r) -> Status {
        PSZERO_RETURN_IF_ERROR(ranks.comm(r).AllReduce(data[r], ReduceOp::kSum));
        // Reduce-scatter the reduced array again (each block becomes n times the sum) and
        // gather the blocks back.
        PSZERO_RETURN_IF_ERROR(ranks.comm(r).ReduceScatter(data[r], block[r], ReduceOp::kSum));
        return ranks.comm(r).AllGather(block[r], data[r]);
      }));
      for (int r = 0; r < n; ++r) {
        for (int64_t i = 0; i < count; i += 997) {
          const double ref = n * Reference(n, i, DType::kFloat32, ReduceOp::kSum);
          ASSERT_NEAR(Load(data[r].data(), i, DType::kFloat32), ref,
                      2 * n * Tolerance(DType::kFloat32, n, i))
              << "n " << n << " path " << path << " rank " << r << " element " << i;
        }
      }
      ExpectPath(ranks, {"64 MiB", options, intra, shared});
    }
  }
}

TEST(CollectivesBytesTest, RingMovesExactlyTheBound) {
  for (int n : {2, 3, 4}) {
    CommunicatorOptions options;
    options.small_message_bytes = 0;
    options.segment_bytes = 4096;
    options.intra_host = false;
    // The flat ring from the first op on (no host-layout exchange before it).
    options.hierarchical = false;
    CommRanks ranks(n, options);
    const int64_t count = 3 * 4 * 5 * 1024;  // divisible by every n
    const uint64_t s = static_cast<uint64_t>(count) * 4;
    std::vector<Tensor> data(n), out(n);
    std::vector<PeerByteCounters> before(n);
    for (int r = 0; r < n; ++r) {
      data[r] = Inputs(r, count, DType::kFloat32);
      out[r] = Make(count / n, DType::kFloat32);
      before[r] = ranks.transport(r).TotalCounters();
    }
    CommRanks::ExpectAllOk(
        ranks.Run([&](int r) { return ranks.comm(r).AllReduce(data[r], ReduceOp::kSum); }));
    for (int r = 0; r < n; ++r) {
      const PeerByteCounters after = ranks.transport(r).TotalCounters();
      EXPECT_EQ(after.bytes_sent - before[r].bytes_sent, 2 * (n - 1) * s / n) << "n " << n;
      EXPECT_EQ(after.bytes_received - before[r].bytes_received, 2 * (n - 1) * s / n);
      before[r] = after;
    }
    CommRanks::ExpectAllOk(ranks.Run(
        [&](int r) { return ranks.comm(r).ReduceScatter(data[r], out[r], ReduceOp::kSum); }));
    for (int r = 0; r < n; ++r) {
      const PeerByteCounters after = ranks.transport(r).TotalCounters();
      EXPECT_EQ(after.bytes_sent - before[r].bytes_sent, (n - 1) * s / n) << "n " << n;
    }
  }
}

// The intra-host path reads what the ring would send: each rank pulls, and serves to its
// peers, 2(N-1)/N * S bytes for an all-reduce and (N-1)/N * S for reduce-scatter and
// all-gather, while the transport carries none of it.
TEST(CollectivesBytesTest, IntraHostMovesExactlyTheBoundAndNothingOverTheTransport) {
  for (int n : {2, 3, 4}) {
    for (bool shared : {false, true}) {  // staged; single copy
      SCOPED_TRACE(shared ? "single copy" : "staged");
      CommunicatorOptions options;
      options.small_message_bytes = 0;
      options.intra_host_segment_bytes = 4096;
      CommRanks ranks(n, options);
      const int64_t count = 3 * 4 * 5 * 1024;  // divisible by every n
      const int64_t s = count * 4;
      std::vector<Tensor> data(n), out(n);
      for (int r = 0; r < n; ++r) {
        data[r] = Inputs(r, count, DType::kFloat32, shared);
        out[r] = Make(count / n, DType::kFloat32, shared);
      }
      // The first op sets the path up (a few small messages over the transport).
      CommRanks::ExpectAllOk(
          ranks.Run([&](int r) { return ranks.comm(r).AllReduce(data[r], ReduceOp::kSum); }));
      ASSERT_TRUE(ranks.comm(0).intra_host_active()) << ranks.comm(0).intra_host_why_not();
      std::vector<PeerByteCounters> wire(n);
      std::vector<int64_t> sent(n), received(n);
      for (int r = 0; r < n; ++r) {
        wire[r] = ranks.transport(r).TotalCounters();
        sent[r] = ranks.comm(r).bytes_sent();
        received[r] = ranks.comm(r).bytes_received();
      }
      CommRanks::ExpectAllOk(
          ranks.Run([&](int r) { return ranks.comm(r).AllReduce(data[r], ReduceOp::kSum); }));
      for (int r = 0; r < n; ++r) {
        EXPECT_EQ(ranks.comm(r).bytes_sent() - sent[r], 2 * (n - 1) * s / n) << "n " << n;
        EXPECT_EQ(ranks.comm(r).bytes_received() - received[r], 2 * (n - 1) * s / n) << "n " << n;
        sent[r] = ranks.comm(r).bytes_sent();
        received[r] = ranks.comm(r).bytes_received();
      }
      CommRanks::ExpectAllOk(ranks.Run(
          [&](int r) { return ranks.comm(r).ReduceScatter(data[r], out[r], ReduceOp::kSum); }));
      CommRanks::ExpectAllOk(
          ranks.Run([&](int r) { return ranks.comm(r).AllGather(out[r], data[r]); }));
      for (int r = 0; r < n; ++r) {
        EXPECT_EQ(ranks.comm(r).bytes_sent() - sent[r], 2 * (n - 1) * s / n) << "n " << n;
        EXPECT_EQ(ranks.comm(r).bytes_received() - received[r], 2 * (n - 1) * s / n) << "n " << n;
        const PeerByteCounters now = ranks.transport(r).TotalCounters();
        EXPECT_EQ(now.bytes_sent, wire[r].bytes_sent) << "n " << n << " rank " << r;
        EXPECT_EQ(now.bytes_received, wire[r].bytes_received) << "n " << n << " rank " << r;
        EXPECT_EQ(ranks.comm(r).single_copy_ops(), shared ? 4 : 0) << "n " << n << " rank " << r;
      }
    }
  }
}

TEST(CollectivesIntraHostTest, EnvironmentTurnsItOff) {
  ASSERT_EQ(setenv("PSZERO_INTRA_HOST", "0", 1), 0);
  CommunicatorOptions options;
  options.small_message_bytes = 0;
  CommRanks ranks(2, options);
  std::vector<Tensor> data(2);
  for (int r = 0; r < 2; ++r) data[r] = Inputs(r, 1000, DType::kFloat32);
  CommRanks::ExpectAllOk(
      ranks.Run([&](int r) { return ranks.comm(r).AllReduce(data[r], ReduceOp::kSum); }));
  unsetenv("PSZERO_INTRA_HOST");
  for (int r = 0; r < 2; ++r) {
    EXPECT_FALSE(ranks.comm(r).intra_host_active());
    EXPECT_EQ(ranks.comm(r).intra_host_why_not(), "PSZERO_INTRA_HOST=0");
    EXPECT_NEAR(Load(data[r].data(), 5, DType::kFloat32),
                Reference(2, 5, DType::kFloat32, ReduceOp::kSum), Tolerance(DType::kFloat32, 2, 5));
  }
}

// A peer whose set-up record names another host (boot id, network namespace — an
// emulated host — or pid/mount namespace) keeps the group off the intra-host path.
TEST(CollectivesIntraHostTest, AnotherHostKeepsTheGroupOnTheTransport) {
  const int ranks[] = {0, 7};
  for (int field = 0; field < 4; ++field) {  // boot, net, pid, mount namespace
    std::string why;
    auto group = IntraHostGroup::Create(
        0, 2, ranks, size_t{128} << 10,
        [&](std::span<const std::byte> record, std::span<std::byte> out) -> Status {
          std::memcpy(out.data(), record.data(), record.size());
          std::memcpy(out.data() + record.size(), record.data(), record.size());
          out[record.size() + 8 * field] ^= std::byte{1};  // the peer differs in one key
          return Status::Ok();
        },
        &why);
    ASSERT_TRUE(group.ok()) << group.status().ToString();
    EXPECT_EQ(group.value(), nullptr) << "field " << field;
    EXPECT_EQ(why, "rank 7 is on another host") << "field " << field;
  }
}

// ---------------------------------------------------------------------------------------
// Hierarchical collectives: ranks as threads posing as hosts (CommunicatorOptions::
// test_host_id). The intra-host steps run on the shared-memory path (the threads are on
// one real host), the inter-host steps over the transport.

struct HostLayout {
  const char* name;
  std::vector<int64_t> hosts;  // host of each rank
  int h = 0, l = 0;            // H x L when regular, else 0
};

std::vector<HostLayout> Layouts() {
  return {{"2x2", {0, 0, 1, 1}, 2, 2},
          {"2x3", {0, 0, 0, 1, 1, 1}, 2, 3},
          {"2x2 interleaved", {0, 1, 0, 1}, 2, 2},
          {"3+1 irregular", {0, 0, 0, 1}},
          {"2+3 irregular", {0, 0, 1, 1, 1}}};
}

void ExpectHierarchical(CommRanks& ranks, const HostLayout& layout, bool active) {
  for (int r = 0; r < ranks.size(); ++r) {
    EXPECT_EQ(ranks.comm(r).hierarchical_active(), active)
        << layout.name << " rank " << r << ": " << ranks.comm(r).hierarchical_why_not();
    EXPECT_EQ(ranks.comm(r).hierarchical_hosts(), active ? layout.h : 0) << layout.name;
    // The group spans hosts: never the intra-host path as a whole.
    EXPECT_FALSE(ranks.comm(r).intra_host_active()) << layout.name << " rank " << r;
  }
}

// Small segments so that every step runs several rounds; the inter-host step direct or
// ring.
CommunicatorOptions LayoutTestOptions(bool ring) {
  CommunicatorOptions options;
  options.small_message_bytes = ring ? 0 : size_t{1} << 40;
  options.segment_bytes = 96;
  options.intra_host_segment_bytes = 1024;  // rounds of uneven pieces
  return options;
}

TEST(CollectivesHierarchicalTest, AllReduceMatchesTheReferenceOnEveryLayout) {
  for (const HostLayout& layout : Layouts()) {
    const int n = static_cast<int>(layout.hosts.size());
    for (bool ring : {false, true}) {  // inter-host step direct / ring
      CommRanks ranks(layout.hosts, LayoutTestOptions(ring));
      ASSERT_EQ(ranks.size(), n);
      for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
        for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax}) {
          for (int64_t count :
               {int64_t{0}, int64_t{1}, int64_t{2}, int64_t{1009}, int64_t{(1 << 16) + 7}}) {
            std::vector<double> ref(static_cast<size_t>(count)), tol(ref.size());
            for (int64_t i = 0; i < count; ++i) {
              ref[i] = Reference(n, i, dtype, op);
              tol[i] = Tolerance(dtype, n, i);
            }
            for (bool shared : {false, true}) {
              std::vector<Tensor> data(n);
              for (int r = 0; r < n; ++r) data[r] = Inputs(r, count, dtype, shared);
              CommRanks::ExpectAllOk(
                  ranks.Run([&](int r) { return ranks.comm(r).AllReduce(data[r], op); }));
              for (int r = 0; r < n; ++r) {
                for (int64_t i = 0; i < count; ++i) {
                  ASSERT_NEAR(Load(data[r].data(), i, dtype), ref[i], tol[i])
                      << layout.name << (ring ? " ring " : " direct ") << DTypeName(dtype) << " "
                      << ReduceOpName(op) << " count " << count << " shared " << shared << " rank "
                      << r << " element " << i;
                }
              }
            }
          }
        }
      }
      ExpectHierarchical(ranks, layout, layout.h > 0);
    }
  }
}

// Reduce-scatter and all-gather, in place and out of place, against the reference on every
// layout; a fresh group per layout runs only these ops, so the hierarchy is theirs.
TEST(CollectivesHierarchicalTest, ReduceScatterAndAllGatherMatchTheReferenceOnEveryLayout) {
  for (const HostLayout& layout : Layouts()) {
    const int n = static_cast<int>(layout.hosts.size());
    for (bool ring : {false, true}) {  // steps direct / ring
      CommRanks ranks(layout.hosts, LayoutTestOptions(ring));
      ASSERT_EQ(ranks.size(), n);
      for (DType dtype : {DType::kFloat32, DType::kBFloat16}) {
        const int64_t es = static_cast<int64_t>(DTypeSize(dtype));
        for (int64_t block :
             {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{1009}, int64_t{(1 << 14) + 3}}) {
          for (bool in_place : {false, true}) {
            const std::string what = std::string(layout.name) + (ring ? " ring " : " direct ") +
                                     std::string(DTypeName(dtype)) + " block " +
                                     std::to_string(block) +
                                     (in_place ? " in place" : " out of place");
            for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax}) {
              std::vector<Tensor> in(n), out(n);
              for (int r = 0; r < n; ++r) {
                in[r] = Inputs(r, block * n, dtype);
                out[r] = in_place
                             ? Tensor::Wrap(static_cast<std::byte*>(in[r].data()) + r * block * es,
                                            {block}, dtype)
                             : Make(block, dtype);
              }
              CommRanks::ExpectAllOk(
                  ranks.Run([&](int r) { return ranks.comm(r).ReduceScatter(in[r], out[r], op); }));
              for (int r = 0; r < n; ++r) {
                for (int64_t i = 0; i < block; ++i) {
                  const int64_t e = r * block + i;
                  ASSERT_NEAR(Load(out[r].data(), i, dtype), Reference(n, e, dtype, op),
                              Tolerance(dtype, n, e))
                      << what << " reduce_scatter " << ReduceOpName(op) << " rank " << r
                      << " element " << i;
                }
              }
            }
            std::vector<Tensor> gathered(n), mine(n);
            for (int r = 0; r < n; ++r) {
              gathered[r] = Make(block * n, dtype);
              mine[r] = in_place ? Tensor::Wrap(
                                       static_cast<std::byte*>(gathered[r].data()) + r * block * es,
                                       {block}, dtype)
                                 : Make(block, dtype);
              for (int64_t i = 0; i < block; ++i) {
                Store(mine[r].data(), i, dtype, InputValue(r, i, dtype));
              }
            }
            CommRanks::ExpectAllOk(
                ranks.Run([&](int r) { return ranks.comm(r).AllGather(mine[r], gathered[r]); }));
            for (int r = 0; r < n; ++r) {
              for (int p = 0; p < n; ++p) {
                for (int64_t i = 0; i < block; ++i) {
                  ASSERT_EQ(Load(gathered[r].data(), p * block + i, dtype), Held(p, i, dtype))
                      << what << " allgather rank " << r << " block " << p << " element " << i;
                }
              }
            }
          }
        }
      }
      ExpectHierarchical(ranks, layout, layout.h > 0);
    }
  }
}

// A hierarchical op that fails (rank 0 alone: its host peer never joins) is FAILED
// in the flight recorder under the communicator the caller used, not only under the
// sub-communicators its steps ran on.
TEST(CollectivesHierarchicalTest, FailedOpIsRecordedAsFailed) {
  CommRanks ranks(std::vector<int64_t>{0, 0, 1, 1}, CommunicatorOptions{});
  ASSERT_EQ(ranks.size(), 4);
  const int64_t count = 4096;
  std::vector<Tensor> data(4);
  for (int r = 0; r < 4; ++r) data[r] = Inputs(r, count, DType::kFloat32);
  CommRanks::ExpectAllOk(
      ranks.Run([&](int r) { return ranks.comm(r).AllReduce(data[r], ReduceOp::kSum); }));
  ASSERT_TRUE(ranks.comm(0).hierarchical_active()) << ranks.comm(0).hierarchical_why_not();
  CommunicatorOptions quick = ranks.comm(0).options();
  quick.timeout = std::chrono::milliseconds(300);
  ranks.comm(0).set_options(quick);
  Tensor block = Make(count / 4, DType::kFloat32);
  const std::vector<std::pair<const char*, std::function<Status()>>> ops = {
      {"allreduce", [&] { return ranks.comm(0).AllReduce(data[0], ReduceOp::kSum); }},
      {"reduce_scatter",
       [&] { return ranks.comm(0).ReduceScatter(data[0], block, ReduceOp::kSum); }},
      {"allgather", [&] { return ranks.comm(0).AllGather(block, data[0]); }}};
  for (const auto& [name, run] : ops) {
    const Status s = run();
    ASSERT_FALSE(s.ok()) << name;
    const uint32_t id = ranks.comm(0).id();
    OpRecord last;
    for (const OpRecord& r : FlightRecorder::Get().Snapshot()) {
      if (r.comm == id && r.comm_rank == 0 && r.op == name) last = r;
    }
    ASSERT_NE(last.id, 0u) << name;
    EXPECT_NE(last.end_us, 0) << name;
    EXPECT_FALSE(last.ok) << name << ": " << s.ToString();
  }
}

// Reduce-scatter and all-gather in place and out of place, next to hierarchical
// all-reduces on the same communicators (all three hierarchical on regular layouts).
TEST(CollectivesHierarchicalTest, ReduceScatterAndAllGatherInAndOutOfPlace) {
  for (const HostLayout& layout : Layouts()) {
    const int n = static_cast<int>(layout.hosts.size());
    CommunicatorOptions options;
    options.small_message_bytes = 0;
    options.segment_bytes = 256;
    CommRanks ranks(layout.hosts, options);
    for (bool in_place : {false, true}) {
      for (int64_t block : {int64_t{0}, int64_t{1}, int64_t{1009}}) {
        std::vector<Tensor> in(n), out(n), all(n);
        for (int r = 0; r < n; ++r) {
          in[r] = Inputs(r, block * n, DType::kFloat32);
          out[r] = in_place ? Tensor::Wrap(static_cast<float*>(in[r].data()) + r * block, {block},
                                           DType::kFloat32)
                            : Make(block, DType::kFloat32);
          all[r] = Inputs(r, block * n + 3, DType::kFloat32);
        }
        CommRanks::ExpectAllOk(ranks.Run([&](int r) -> Status {
          PSZERO_RETURN_IF_ERROR(ranks.comm(r).AllReduce(all[r], ReduceOp::kSum));
          return ranks.comm(r).ReduceScatter(in[r], out[r], ReduceOp::kSum);
        }));
        for (int r = 0; r < n; ++r) {
          for (int64_t i = 0; i < block; ++i) {
            ASSERT_NEAR(Load(out[r].data(), i, DType::kFloat32),
                        Reference(n, r * block + i, DType::kFloat32, ReduceOp::kSum),
                        Tolerance(DType::kFloat32, n, r * block + i))
                << layout.name << " reduce_scatter in place " << in_place << " rank " << r;
          }
          for (int64_t i = 0; i < block * n + 3; ++i) {
            ASSERT_NEAR(Load(all[r].data(), i, DType::kFloat32),
                        Reference(n, i, DType::kFloat32, ReduceOp::kSum),
                        Tolerance(DType::kFloat32, n, i))
                << layout.name << " allreduce rank " << r << " element " << i;
          }
        }
        // Every rank's own block back to everyone.
        std::vector<Tensor> gathered(n), mine(n);
        for (int r = 0; r < n; ++r) {
          gathered[r] = Make(block * n, DType::kFloat32);
          mine[r] = in_place ? Tensor::Wrap(static_cast<float*>(gathered[r].data()) + r * block,
                                            {block}, DType::kFloat32)
                             : Make(block, DType::kFloat32);
          for (int64_t i = 0; i < block; ++i) {
            Store(mine[r].data(), i, DType::kFloat32, InputValue(r, i, DType::kFloat32));
          }
        }
        CommRanks::ExpectAllOk(
            ranks.Run([&](int r) { return ranks.comm(r).AllGather(mine[r], gathered[r]); }));
        for (int r = 0; r < n; ++r) {
          for (int p = 0; p < n; ++p) {
            for (int64_t i = 0; i < block; ++i) {
              ASSERT_EQ(Load(gathered[r].data(), p * block + i, DType::kFloat32),
                        Held(p, i, DType::kFloat32))
                  << layout.name << " allgather in place " << in_place << " rank " << r;
            }
          }
        }
      }
    }
    ExpectHierarchical(ranks, layout, layout.h > 0);
  }
}

// Under `deterministic` the flat algorithm keeps the ascending-rank-order sum, bit-equal to
// the serial left-to-right fp32 sum (the hierarchical one would sum host by host).
TEST(CollectivesHierarchicalTest, DeterministicStaysFlatAndBitEqual) {
  const HostLayout layout = Layouts()[0];
  const int n = 4;
  const int64_t count = 4099;
  CommunicatorOptions options;
  options.deterministic = true;
  options.small_message_bytes = 0;
  CommRanks ranks(layout.hosts, options);
  std::vector<Tensor> data(n);
  for (int r = 0; r < n; ++r) data[r] = Inputs(r, count, DType::kFloat32);
  CommRanks::ExpectAllOk(
      ranks.Run([&](int r) { return ranks.comm(r).AllReduce(data[r], ReduceOp::kSum); }));
  for (int64_t i = 0; i < count; ++i) {
    float acc = static_cast<float>(Held(0, i, DType::kFloat32));
    for (int r = 1; r < n; ++r) acc += static_cast<float>(Held(r, i, DType::kFloat32));
    for (int r = 0; r < n; ++r) ASSERT_EQ(data[r].data<float>()[i], acc) << "element " << i;
  }
  ExpectHierarchical(ranks, layout, false);
}

TEST(CollectivesHierarchicalTest, SwitchesAndThreshold) {
  const HostLayout layout = Layouts()[0];
  auto run = [&](const CommunicatorOptions& options, int64_t count) {
    CommRanks ranks(layout.hosts, options);
    std::vector<Tensor> data(4);
    for (int r = 0; r < 4; ++r) data[r] = Inputs(r, count, DType::kFloat32);
    CommRanks::ExpectAllOk(
        ranks.Run([&](int r) { return ranks.comm(r).AllReduce(data[r], ReduceOp::kSum); }));
    for (int r = 0; r < 4; ++r) {
      EXPECT_NEAR(Load(data[r].data(), count - 1, DType::kFloat32),
                  Reference(4, count - 1, DType::kFloat32, ReduceOp::kSum),
                  Tolerance(DType::kFloat32, 4, count - 1));
    }
    return std::pair{ranks.comm(0).hierarchical_active(), ranks.comm(0).hierarchical_why_not()};
  };
  CommunicatorOptions off;
  off.hierarchical = false;
  EXPECT_FALSE(run(off, 1000).first);
  CommunicatorOptions above;
  above.hierarchical_min_bytes = 4000;
  EXPECT_FALSE(run(above, 1000).first);  // 4000 bytes: not above the switch point
  EXPECT_TRUE(run(above, 1001).first);
  ASSERT_EQ(setenv("PSZERO_HIERARCHICAL", "0", 1), 0);
  const auto [active, why] = run({}, 1000);
  unsetenv("PSZERO_HIERARCHICAL");
  EXPECT_FALSE(active);
  EXPECT_EQ(why, "PSZERO_HIERARCHICAL=0");
  EXPECT_EQ(run({}, 1000).second, "");
}

// Bytes, exactly, for an all-reduce of S bytes: each rank sends 2(H-1)/H * S/L over the
// transport (its inter-host ring of S/L bytes) and serves its host peers 2(L-1)/L * S
// through shared memory; a host's link carries 2(H-1)/H * S out. The flat ring over the
// same ranks (blocked by host) sends 2(N-1)/N * S per rank over the transport,
// 2(N-1)/N * S across each host link. A reduce-scatter (S its input) and an all-gather (S
// its output) move half of each.
TEST(CollectivesHierarchicalTest, BytesPerRankAndPerHostLinkAreExact) {
  for (const HostLayout& layout : {Layouts()[0], Layouts()[1]}) {
    const int n = static_cast<int>(layout.hosts.size()), h = layout.h, l = layout.l;
    for (bool hierarchical : {true, false}) {
      CommunicatorOptions options;
      options.small_message_bytes = 0;
      options.segment_bytes = 4096;
      options.hierarchical = hierarchical;
      CommRanks ranks(layout.hosts, options);
      const int64_t count = 3 * 4 * 5 * 1024;  // divisible by every n, l and n * l
      const int64_t s = count * 4;
      std::vector<Tensor> data(n), block(n);
      for (int r = 0; r < n; ++r) {
        data[r] = Inputs(r, count, DType::kFloat32);
        block[r] = Make(count / n, DType::kFloat32);
      }
      // The first op sets the paths up (a few small messages over the transport).
      CommRanks::ExpectAllOk(
          ranks.Run([&](int r) { return ranks.comm(r).AllReduce(data[r], ReduceOp::kSum); }));
      ASSERT_EQ(ranks.comm(0).hierarchical_active(), hierarchical);
      // bytes[r][p]: what rank r's transport sent to rank p.
      auto sent = [&] {
        std::vector<std::vector<int64_t>> b(n, std::vector<int64_t>(n, 0));
        for (int r = 0; r < n; ++r) {
          for (int p = 0; p < n; ++p) {
            if (p != r) b[r][p] = static_cast<int64_t>(ranks.transport(r).Counters(p).bytes_sent);
          }
        }
        return b;
      };
      const std::vector<std::pair<const char*, std::function<Status(int)>>> ops = {
          {"allreduce", [&](int r) { return ranks.comm(r).AllReduce(data[r], ReduceOp::kSum); }},
          {"reduce_scatter",
           [&](int r) { return ranks.comm(r).ReduceScatter(data[r], block[r], ReduceOp::kSum); }},
          {"allgather", [&](int r) { return ranks.comm(r).AllGather(block[r], data[r]); }}};
      for (const auto& [name, run] : ops) {
        SCOPED_TRACE(std::string(layout.name) + (hierarchical ? " hierarchical " : " flat ") +
                     name);
        const int64_t f = std::string(name) == "allreduce" ? 2 : 1;  // passes over S
        const auto before = sent();
        std::vector<int64_t> comm_before(n);
        for (int r = 0; r < n; ++r) comm_before[r] = ranks.comm(r).bytes_sent();
        CommRanks::ExpectAllOk(ranks.Run(run));
        const auto after = sent();
        std::vector<int64_t> link(h, 0);
        for (int r = 0; r < n; ++r) {
          int64_t wire = 0;
          for (int p = 0; p < n; ++p) {
            const int64_t d = after[r][p] - before[r][p];
            wire += d;
            if (layout.hosts[p] != layout.hosts[r]) {
              link[layout.hosts[r]] += d;
            } else if (hierarchical) {
              EXPECT_EQ(d, 0) << "rank " << r << " to host peer " << p;  // shared memory
            }
          }
          const int64_t comm = ranks.comm(r).bytes_sent() - comm_before[r];
          if (hierarchical) {
            EXPECT_EQ(wire, f * (h - 1) * s / (h * l)) << "rank " << r;
            EXPECT_EQ(comm, f * (h - 1) * s / (h * l) + f * (l - 1) * s / l) << "rank " << r;
          } else {
            EXPECT_EQ(wire, f * (n - 1) * s / n) << "rank " << r;
            EXPECT_EQ(comm, f * (n - 1) * s / n) << "rank " << r;
          }
        }
        for (int host = 0; host < h; ++host) {
          EXPECT_EQ(link[host], hierarchical ? f * (h - 1) * s / h : f * (n - 1) * s / n)
              << "host " << host;
        }
      }
    }
  }
}

// Buckets all-reduced asynchronously on a stream while the issuing thread goes on; they
// complete in issue order with the right sums.
TEST(CollectiveStreamTest, AsyncOpsCompleteInIssueOrder) {
  const int n = 3;
  CommRanks ranks(n, {});
  constexpr int kBuckets = 12;
  std::vector<std::vector<Tensor>> buckets(n, std::vector<Tensor>(kBuckets));
  std::vector<std::vector<int>> order(n);
  CommRanks::ExpectAllOk(ranks.Run([&](int r) -> Status {
    CollectiveStream stream;
    std::vector<Work> works;
    for (int b = 0; b < kBuckets; ++b) {
      buckets[r][b] = Make(1000 + 977 * b, DType::kFloat32);  // small and ring-sized
      std::fill_n(buckets[r][b].data<float>(), buckets[r][b].numel(), float(r + b));
      works.push_back(stream.Enqueue("bucket " + std::to_string(b), [&, r, b] {
        order[r].push_back(b);
        return ranks.comm(r).AllReduce(buckets[r][b], ReduceOp::kSum);
      }));
    }
    for (int b = 0; b < kBuckets; ++b) {
      PSZERO_RETURN_IF_ERROR(works[b].Wait(std::chrono::seconds(60)));
      for (int earlier = 0; earlier < b; ++earlier) {
        if (!works[earlier].Done()) return Status::Internal("bucket done before an earlier one");
      }
    }
    return stream.Synchronize(std::chrono::seconds(60));
  }));
  for (int r = 0; r < n; ++r) {
    ASSERT_EQ(order[r].size(), static_cast<size_t>(kBuckets));
    for (int b = 0; b < kBuckets; ++b) {
      EXPECT_EQ(order[r][b], b);
      EXPECT_EQ(buckets[r][b].data<float>()[buckets[r][b].numel() - 1], float(3 * b + 0 + 1 + 2));
    }
  }
}

TEST(CollectiveStreamTest, FailureIsReportedByWorkAndSynchronize) {
  CollectiveStream stream;
  Work ok = stream.Enqueue("first", [] { return Status::Ok(); });
  Work bad = stream.Enqueue("second", [] { return Status::Unavailable("rank 2 lost"); });
  EXPECT_TRUE(ok.Wait(std::chrono::seconds(10)).ok());
  Status s = bad.Wait(std::chrono::seconds(10));
  EXPECT_EQ(s.code(), StatusCode::kUnavailable);
  EXPECT_EQ(s.message(), "second: rank 2 lost");
  EXPECT_EQ(stream.Synchronize(std::chrono::seconds(10)).message(), "second: rank 2 lost");
}

TEST(CollectivesErrorsTest, BadArgumentsAreInvalidArgument) {
  CommRanks ranks(1, {});
  Communicator& c = ranks.comm(0);
  Tensor ints = Make(4, DType::kInt32);
  EXPECT_EQ(c.AllReduce(ints, ReduceOp::kAvg).code(), StatusCode::kInvalidArgument);
  Tensor a = Make(4, DType::kFloat32), b = Make(3, DType::kFloat32);
  EXPECT_EQ(c.ReduceScatter(a, b, ReduceOp::kSum).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.AllGather(a, b).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(c.Broadcast(a, 1).code(), StatusCode::kInvalidArgument);
  Tensor m = *Tensor::Zeros({4, 4}, DType::kFloat32, MemoryCategory::kOther, nullptr);
  EXPECT_EQ(c.AllReduce(*m.Transpose(0, 1), ReduceOp::kSum).code(), StatusCode::kInvalidArgument);
}

// An op that fails (here: its peer never joins, so the deadline passes) is FAILED in the
// flight recorder, as the hang diagnosis and SIGUSR1 dumps show it, not "ok".
TEST(CollectivesErrorsTest, FailedOpIsRecordedAsFailed) {
  CommunicatorOptions options;
  options.timeout = std::chrono::milliseconds(300);
  options.intra_host = false;
  CommRanks ranks(2, options);
  ASSERT_EQ(ranks.size(), 2);
  Tensor t = Make(16, DType::kFloat32);
  const Status s = ranks.comm(0).AllReduce(t, ReduceOp::kSum);
  EXPECT_EQ(s.code(), StatusCode::kDeadlineExceeded) << s.ToString();
  const OpRecord last = FlightRecorder::Get().Latest();
  EXPECT_EQ(last.op, "allreduce");
  EXPECT_EQ(last.comm, ranks.comm(0).id());
  EXPECT_NE(last.end_us, 0);
  EXPECT_FALSE(last.ok);
  EXPECT_NE(FlightRecorder::Get().Dump().find("FAILED"), std::string::npos);
}

}  // namespace
}  // namespace pszero::collectives
