#include "launch/bench/collective.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "common/half.h"
#include "common/tensor.h"

namespace pszero::bench {

using collectives::Communicator;
using collectives::ReduceOp;

double BusFactor(const std::string& op, int n) {
  if (op == "allreduce") return 2.0 * (n - 1) / n;
  if (op == "broadcast") return 1.0;
  return static_cast<double>(n - 1) / n;
}

namespace {

// Small integers, exact in every dtype and in every sum of up to 64 ranks.
double Value(int rank, int64_t i) { return static_cast<double>((rank + 1) + (i % 5)); }

void FillHost(const Tensor& t, int rank, int64_t offset) {
  for (int64_t i = 0; i < t.numel(); ++i) {
    const float v = static_cast<float>(Value(rank, offset + i));
    switch (t.dtype()) {
      case DType::kFloat32:
        t.data<float>()[i] = v;
        break;
      case DType::kBFloat16:
        t.data<bf16_t>()[i] = {FloatToBf16Bits(v)};
        break;
      case DType::kFloat16:
        t.data<fp16_t>()[i] = {FloatToFp16Bits(v)};
        break;
      case DType::kInt32:
        t.data<int32_t>()[i] = static_cast<int32_t>(v);
        break;
      case DType::kInt64:
        t.data<int64_t>()[i] = static_cast<int64_t>(v);
        break;
      case DType::kUInt8:
        t.data<uint8_t>()[i] = static_cast<uint8_t>(v);
        break;
    }
  }
}

// Fills a host or device tensor (device: through a host copy).
Status Fill(const Tensor& t, int rank, int64_t offset) {
  if (t.device() == Device::kHost) {
    FillHost(t, rank, offset);
    return Status::Ok();
  }
  PSZERO_ASSIGN_OR_RETURN(Tensor host,
                          Tensor::Empty(t.shape(), t.dtype(), MemoryCategory::kOther, nullptr));
  FillHost(host, rank, offset);
  return Tensor(t).CopyFrom(host);
}

// A host view of `t` to read results from (a copy when `t` lives on the device).
Result<Tensor> OnHost(const Tensor& t) {
  if (t.device() == Device::kHost) return t;
  return t.Clone(MemoryCategory::kOther, nullptr, Device::kHost);
}

double Get(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kFloat32:
      return t.data<float>()[i];
    case DType::kBFloat16:
      return Bf16BitsToFloat(t.data<bf16_t>()[i].bits);
    case DType::kFloat16:
      return Fp16BitsToFloat(t.data<fp16_t>()[i].bits);
    case DType::kInt32:
      return t.data<int32_t>()[i];
    case DType::kInt64:
      return static_cast<double>(t.data<int64_t>()[i]);
    case DType::kUInt8:
      return t.data<uint8_t>()[i];
  }
  return 0;
}

double Reduced(int n, int64_t i, ReduceOp op) {
  double acc = 0, mx = 0;
  for (int r = 0; r < n; ++r) {
    acc += Value(r, i);
    mx = std::max(mx, Value(r, i));
  }
  if (op == ReduceOp::kMax) return mx;
  return op == ReduceOp::kAvg ? acc / n : acc;
}

struct Buffers {
  Tensor in, out;
};

Result<Buffers> Allocate(const std::string& op, int64_t count, int n, int rank, DType dtype,
                         Device device, bool shared, bool in_place) {
  Buffers b;
  const int64_t block = count / n;
  // Block `rank` of `whole`, a view that lives as long as `whole` (both in Buffers).
  auto own_block = [&](const Tensor& whole) {
    return Tensor::Wrap(static_cast<std::byte*>(whole.data()) + rank * block * DTypeSize(dtype),
                        {block}, dtype, device);
  };
  auto make = [&](int64_t c) {
    if (shared && device == Device::kHost) {
      return Tensor::EmptyShared({c}, dtype, MemoryCategory::kCommBuffers, nullptr);
    }
    return Tensor::Empty({c}, dtype, MemoryCategory::kCommBuffers, nullptr, device);
  };
  if (op == "allreduce" || op == "broadcast") {
    PSZERO_ASSIGN_OR_RETURN(b.in, make(count));
  } else if (op == "reduce_scatter") {
    PSZERO_ASSIGN_OR_RETURN(b.in, make(count));
    if (in_place) {
      b.out = own_block(b.in);
    } else {
      PSZERO_ASSIGN_OR_RETURN(b.out, make(block));
    }
  } else if (op == "allgather") {
    PSZERO_ASSIGN_OR_RETURN(b.out, make(count));
    if (in_place) {
      b.in = own_block(b.out);
    } else {
      PSZERO_ASSIGN_OR_RETURN(b.in, make(block));
    }
  } else {
    PSZERO_ASSIGN_OR_RETURN(b.in, make(count));
    PSZERO_ASSIGN_OR_RETURN(b.out, make(count));
  }
  return b;
}

Status RunOnce(Communicator& comm, const CollectiveSweep& s, const Buffers& b) {
  if (s.op == "allreduce") return comm.AllReduce(b.in, s.reduce);
  if (s.op == "reduce_scatter") return comm.ReduceScatter(b.in, b.out, s.reduce);
  if (s.op == "allgather") return comm.AllGather(b.in, b.out);
  if (s.op == "broadcast") return comm.Broadcast(b.in, 0);
  return comm.AllToAll(b.in, b.out);
}

// Fills the inputs, runs the op once, and counts the elements that differ from the
// reference.
Result<int64_t> Check(Communicator& comm, const CollectiveSweep& s, const Buffers& b) {
  const int n = comm.size(), r = comm.rank();
  const int64_t block = (s.op == "allgather" ? b.in.numel() : b.in.numel() / n);
  // All-to-all: block p of rank r's input holds rank r's values at offset p*block.
  PSZERO_RETURN_IF_ERROR(Fill(b.in, r, s.op == "allgather" ? r * block : 0));
  PSZERO_RETURN_IF_ERROR(RunOnce(comm, s, b));
  Buffers h;
  PSZERO_ASSIGN_OR_RETURN(h.in, OnHost(b.in));
  if (b.out.defined()) {
    PSZERO_ASSIGN_OR_RETURN(h.out, OnHost(b.out));
  }
  int64_t wrong = 0;
  if (s.op == "allreduce") {
    for (int64_t i = 0; i < h.in.numel(); ++i) wrong += Get(h.in, i) != Reduced(n, i, s.reduce);
  } else if (s.op == "reduce_scatter") {
    for (int64_t i = 0; i < block; ++i) {
      wrong += Get(h.out, i) != Reduced(n, r * block + i, s.reduce);
    }
  } else if (s.op == "allgather") {
    for (int64_t i = 0; i < h.out.numel(); ++i) wrong += Get(h.out, i) != Value(i / block, i);
  } else if (s.op == "broadcast") {
    for (int64_t i = 0; i < h.in.numel(); ++i) wrong += Get(h.in, i) != Value(0, i);
  } else {
    for (int64_t i = 0; i < h.out.numel(); ++i) {
      const int64_t from = i / block;  // rank p sent its block r
      wrong += Get(h.out, i) != Value(static_cast<int>(from), r * block + i % block);
    }
  }
  // Everyone's count: the sum over ranks.
  PSZERO_ASSIGN_OR_RETURN(Tensor t,
                          Tensor::Empty({1}, DType::kInt64, MemoryCategory::kOther, nullptr));
  t.data<int64_t>()[0] = wrong;
  PSZERO_RETURN_IF_ERROR(comm.AllReduce(t, ReduceOp::kSum));
  return t.data<int64_t>()[0];
}

}  // namespace

Result<std::vector<CollectiveRow>> RunCollectiveSweep(Communicator& comm,
                                                      const CollectiveSweep& sweep) {
  const int n = comm.size();
  const size_t es = DTypeSize(sweep.dtype);
  std::vector<CollectiveRow> rows;
  PSZERO_ASSIGN_OR_RETURN(Tensor clock,
                          Tensor::Empty({1}, DType::kInt64, MemoryCategory::kOther, nullptr));
  for (size_t size : sweep.sizes) {
    CollectiveRow row;
    row.count = std::max<int64_t>(n, static_cast<int64_t>(size / es) / n * n);
    row.bytes = row.count * static_cast<int64_t>(es);
    PSZERO_ASSIGN_OR_RETURN(Buffers b,
                            Allocate(sweep.op, row.count, n, comm.rank(), sweep.dtype, sweep.device,
                                     sweep.shared_buffers, sweep.in_place));
    PSZERO_RETURN_IF_ERROR(Fill(b.in, comm.rank(), 0));
    for (int i = 0; i < sweep.warmup; ++i) PSZERO_RETURN_IF_ERROR(RunOnce(comm, sweep, b));
    PSZERO_RETURN_IF_ERROR(comm.Barrier());
    const int64_t sent_before = comm.bytes_sent();
    const uint64_t wire_before = comm.transport()->TotalCounters().bytes_sent;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < sweep.iters; ++i) PSZERO_RETURN_IF_ERROR(RunOnce(comm, sweep, b));
    const auto ns =
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    row.bytes_sent =
        static_cast<uint64_t>(comm.bytes_sent() - sent_before) / static_cast<uint64_t>(sweep.iters);
    row.transport_bytes_sent = (comm.transport()->TotalCounters().bytes_sent - wire_before) /
                               static_cast<uint64_t>(sweep.iters);
    clock.data<int64_t>()[0] = ns;
    PSZERO_RETURN_IF_ERROR(comm.AllReduce(clock, ReduceOp::kMax));
    const double seconds = static_cast<double>(clock.data<int64_t>()[0]) / 1e9 / sweep.iters;
    row.time_us = seconds * 1e6;
    row.algbw_gbps = static_cast<double>(row.bytes) / seconds / 1e9;
    row.busbw_gbps = row.algbw_gbps * BusFactor(sweep.op, n);
    if (sweep.check) {
      PSZERO_ASSIGN_OR_RETURN(row.wrong, Check(comm, sweep, b));
    }
    rows.push_back(row);
  }
  return rows;
}

nlohmann::json ToJson(const std::vector<CollectiveRow>& rows) {
  nlohmann::json out = nlohmann::json::array();
  for (const CollectiveRow& r : rows) {
    out.push_back({{"bytes", r.bytes},
                   {"count", r.count},
                   {"time_us", r.time_us},
                   {"algbw_gbps", r.algbw_gbps},
                   {"busbw_gbps", r.busbw_gbps},
                   {"wrong", r.wrong},
                   {"bytes_sent_rank0", r.bytes_sent},
                   {"transport_bytes_sent_rank0", r.transport_bytes_sent}});
  }
  return out;
}

Result<std::vector<CollectiveRow>> RowsFromJson(const nlohmann::json& rows) {
  std::vector<CollectiveRow> out;
  try {
    for (const auto& j : rows) {
      CollectiveRow r;
      r.bytes = j.at("bytes").get<int64_t>();
      r.count = j.at("count").get<int64_t>();
      r.time_us = j.at("time_us").get<double>();
      r.algbw_gbps = j.at("algbw_gbps").get<double>();
      r.busbw_gbps = j.at("busbw_gbps").get<double>();
      r.wrong = j.value("wrong", int64_t{-1});
      r.bytes_sent = j.value("bytes_sent_rank0", uint64_t{0});
      r.transport_bytes_sent = j.value("transport_bytes_sent_rank0", uint64_t{0});
      out.push_back(r);
    }
  } catch (const nlohmann::json::exception& e) {
    return Status::Corruption(std::string("collective rows: ") + e.what());
  }
  return out;
}

}  // namespace pszero::bench
