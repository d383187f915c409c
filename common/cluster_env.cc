#include "common/cluster_env.h"

#include <cstdlib>
#include <limits>

extern char** environ;

namespace pszero {

EnvMap CurrentEnv() {
  EnvMap env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string entry(*e);
    const size_t eq = entry.find('=');
    if (eq == std::string::npos) continue;
    env.emplace(entry.substr(0, eq), entry.substr(eq + 1));
  }
  return env;
}

namespace {

bool AllDigits(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// Expands one bracket body "01-04,07" into its numbers, each as wide as written.
Result<std::vector<std::string>> ExpandRanges(const std::string& body, const std::string& whole) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= body.size()) {
    size_t comma = body.find(',', start);
    if (comma == std::string::npos) comma = body.size();
    const std::string part = body.substr(start, comma - start);
    const size_t dash = part.find('-');
    const std::string lo = part.substr(0, dash);
    const std::string hi = dash == std::string::npos ? lo : part.substr(dash + 1);
    if (!AllDigits(lo) || !AllDigits(hi) || lo.size() > 9 || hi.size() > 9) {
      return Status::InvalidArgument("bad range '" + part + "' in node list '" + whole + "'");
    }
    const long a = std::stol(lo);
    const long b = std::stol(hi);
    if (b < a || b - a > 100000) {
      return Status::InvalidArgument("bad range '" + part + "' in node list '" + whole + "'");
    }
    for (long n = a; n <= b; ++n) {
      std::string digits = std::to_string(n);
      if (digits.size() < lo.size()) digits.insert(0, lo.size() - digits.size(), '0');
      out.push_back(std::move(digits));
    }
    start = comma + 1;
  }
  return out;
}

// Expands one host pattern (no top-level comma): every bracket group multiplies.
Result<std::vector<std::string>> ExpandPattern(const std::string& pattern,
                                               const std::string& whole) {
  const size_t open = pattern.find('[');
  if (open == std::string::npos) {
    if (pattern.find(']') != std::string::npos) {
      return Status::InvalidArgument("unbalanced ']' in node list '" + whole + "'");
    }
    return std::vector<std::string>{pattern};
  }
  const size_t close = pattern.find(']', open);
  if (close == std::string::npos) {
    return Status::InvalidArgument("unbalanced '[' in node list '" + whole + "'");
  }
  const std::string prefix = pattern.substr(0, open);
  if (prefix.find(']') != std::string::npos) {
    return Status::InvalidArgument("unbalanced ']' in node list '" + whole + "'");
  }
  PSZERO_ASSIGN_OR_RETURN(std::vector<std::string> numbers,
                          ExpandRanges(pattern.substr(open + 1, close - open - 1), whole));
  PSZERO_ASSIGN_OR_RETURN(std::vector<std::string> rests,
                          ExpandPattern(pattern.substr(close + 1), whole));
  std::vector<std::string> out;
  for (const std::string& n : numbers) {
    for (const std::string& r : rests) out.push_back(prefix + n + r);
  }
  return out;
}

std::optional<std::string> Get(const EnvMap& env, const std::string& name) {
  auto it = env.find(name);
  if (it == env.end() || it->second.empty()) return std::nullopt;
  return it->second;
}

// An integer variable in [lo, hi]; nullopt when unset.
Result<std::optional<int64_t>> GetInt(const EnvMap& env, const std::string& name, int64_t lo,
                                      int64_t hi) {
  const std::optional<std::string> v = Get(env, name);
  if (!v) return std::optional<int64_t>();
  if (!AllDigits(*v) || v->size() > 18) {
    return Status::InvalidArgument("$" + name + ": not a non-negative integer: '" + *v + "'");
  }
  const int64_t n = std::stoll(*v);
  if (n < lo || n > hi) {
    return Status::InvalidArgument("$" + name + ": " + *v + " outside [" + std::to_string(lo) +
                                   ", " + std::to_string(hi) + "]");
  }
  return std::optional<int64_t>(n);
}

template <typename T>
void Assign(std::optional<T>& field, const std::optional<int64_t>& v) {
  if (v) field = static_cast<T>(*v);
}

constexpr int64_t kMaxInt = std::numeric_limits<int>::max();

}  // namespace

Result<std::vector<std::string>> ExpandSlurmNodeList(const std::string& list) {
  std::vector<std::string> hosts;
  int depth = 0;
  size_t start = 0;
  for (size_t i = 0; i <= list.size(); ++i) {
    const char c = i < list.size() ? list[i] : ',';
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (depth < 0 || depth > 1) {
      return Status::InvalidArgument("unbalanced brackets in node list '" + list + "'");
    }
    if (c != ',' || depth != 0) continue;
    const std::string item = list.substr(start, i - start);
    start = i + 1;
    if (item.empty()) return Status::InvalidArgument("empty host in node list '" + list + "'");
    PSZERO_ASSIGN_OR_RETURN(std::vector<std::string> expanded, ExpandPattern(item, list));
    hosts.insert(hosts.end(), expanded.begin(), expanded.end());
  }
  if (depth != 0) return Status::InvalidArgument("unbalanced '[' in node list '" + list + "'");
  return hosts;
}

uint16_t SlurmDefaultPort(uint64_t job_id) { return static_cast<uint16_t>(20000 + job_id % 20000); }

Result<NodeEnv> DeriveNodeEnv(const EnvMap& env) {
  NodeEnv out;
  const std::optional<std::string> job = Get(env, "SLURM_JOB_ID");
  std::optional<std::string> nodelist = Get(env, "SLURM_JOB_NODELIST");
  if (!nodelist) nodelist = Get(env, "SLURM_NODELIST");
  const bool slurm = job && Get(env, "SLURM_NNODES") && nodelist &&
                     (Get(env, "SLURM_NODEID") || Get(env, "SLURM_PROCID"));
  if (slurm) {
    PSZERO_ASSIGN_OR_RETURN(auto nnodes, GetInt(env, "SLURM_NNODES", 1, 65536));
    PSZERO_ASSIGN_OR_RETURN(auto node_id, GetInt(env, "SLURM_NODEID", 0, 65535));
    if (!node_id) {
      PSZERO_ASSIGN_OR_RETURN(node_id, GetInt(env, "SLURM_PROCID", 0, 65535));
    }
    PSZERO_ASSIGN_OR_RETURN(auto local_id, GetInt(env, "SLURM_LOCALID", 0, 65535));
    if (local_id && *local_id > 0) {
      return Status::InvalidArgument("$SLURM_LOCALID: " + std::to_string(*local_id) +
                                     ": run one pszero-launch per node (srun "
                                     "--ntasks-per-node=1); it starts the node's workers");
    }
    PSZERO_ASSIGN_OR_RETURN(auto job_id, GetInt(env, "SLURM_JOB_ID", 0, INT64_MAX / 2));
    Result<std::vector<std::string>> expanded = ExpandSlurmNodeList(*nodelist);
    if (!expanded.ok()) {
      return Status::InvalidArgument(std::string(Get(env, "SLURM_JOB_NODELIST")
                                                     ? "$SLURM_JOB_NODELIST: "
                                                     : "$SLURM_NODELIST: ") +
                                     expanded.status().message());
    }
    const std::vector<std::string>& hosts = *expanded;
    if (hosts.empty()) return Status::InvalidArgument("$SLURM_NODELIST: no hosts");
    if (*node_id >= *nnodes) {
      return Status::InvalidArgument("$SLURM_NODEID/$SLURM_PROCID: " + std::to_string(*node_id) +
                                     " not below $SLURM_NNODES " + std::to_string(*nnodes) +
                                     " (run one pszero-launch per node: srun --ntasks-per-node=1)");
    }
    Assign(out.nnodes, nnodes);
    Assign(out.node_rank, node_id);
    out.master_addr = hosts.front();
    out.master_port = SlurmDefaultPort(static_cast<uint64_t>(*job_id));
    out.source = "slurm";
  }
  bool torchrun = false;
  PSZERO_ASSIGN_OR_RETURN(auto nnodes, GetInt(env, "NNODES", 1, 65536));
  PSZERO_ASSIGN_OR_RETURN(auto node_rank, GetInt(env, "NODE_RANK", 0, 65535));
  if (!node_rank) {
    PSZERO_ASSIGN_OR_RETURN(node_rank, GetInt(env, "GROUP_RANK", 0, 65535));
  }
  PSZERO_ASSIGN_OR_RETURN(auto port, GetInt(env, "MASTER_PORT", 1, 65535));
  if (nnodes || node_rank || port) torchrun = true;
  Assign(out.nnodes, nnodes);
  Assign(out.node_rank, node_rank);
  Assign(out.master_port, port);
  if (auto addr = Get(env, "MASTER_ADDR")) {
    out.master_addr = *addr;
    torchrun = true;
  }
  if (torchrun) out.source = out.source.empty() ? "torchrun" : out.source + "+torchrun";
  return out;
}

Result<ProcessEnv> DeriveProcessEnv(const EnvMap& env) {
  ProcessEnv out;
  if (Get(env, "OMPI_COMM_WORLD_RANK")) {
    PSZERO_ASSIGN_OR_RETURN(auto size, GetInt(env, "OMPI_COMM_WORLD_SIZE", 1, kMaxInt));
    PSZERO_ASSIGN_OR_RETURN(auto rank, GetInt(env, "OMPI_COMM_WORLD_RANK", 0, kMaxInt - 1));
    PSZERO_ASSIGN_OR_RETURN(auto local, GetInt(env, "OMPI_COMM_WORLD_LOCAL_RANK", 0, kMaxInt));
    PSZERO_ASSIGN_OR_RETURN(auto node, GetInt(env, "OMPI_COMM_WORLD_NODE_RANK", 0, kMaxInt));
    Assign(out.rank, rank);
    Assign(out.world_size, size);
    Assign(out.local_rank, local);
    Assign(out.node_rank, node);
    out.source = "ompi";
  } else if (Get(env, "RANK")) {
    PSZERO_ASSIGN_OR_RETURN(auto size, GetInt(env, "WORLD_SIZE", 1, kMaxInt));
    PSZERO_ASSIGN_OR_RETURN(auto rank, GetInt(env, "RANK", 0, kMaxInt - 1));
    PSZERO_ASSIGN_OR_RETURN(auto local, GetInt(env, "LOCAL_RANK", 0, kMaxInt));
    PSZERO_ASSIGN_OR_RETURN(auto node, GetInt(env, "NODE_RANK", 0, kMaxInt));
    if (!node) {
      PSZERO_ASSIGN_OR_RETURN(node, GetInt(env, "GROUP_RANK", 0, kMaxInt));
    }
    Assign(out.rank, rank);
    Assign(out.world_size, size);
    Assign(out.local_rank, local);
    Assign(out.node_rank, node);
    out.source = "torchrun";
  }
  if (out.rank && out.world_size && *out.rank >= *out.world_size) {
    return Status::InvalidArgument(
        std::string(out.source == "ompi" ? "$OMPI_COMM_WORLD_RANK " : "$RANK ") +
        std::to_string(*out.rank) + " not below the world size " + std::to_string(*out.world_size));
  }
  if (!out.source.empty()) {
    if (auto addr = Get(env, "MASTER_ADDR")) out.master_addr = *addr;
    PSZERO_ASSIGN_OR_RETURN(auto port, GetInt(env, "MASTER_PORT", 1, 65535));
    Assign(out.master_port, port);
  }
  return out;
}

void ExportProcessEnv(const ProcessEnv& process) {
  auto set = [](const char* name, const std::string& value) {
    ::setenv(name, value.c_str(), /*overwrite=*/0);
  };
  if (process.rank) set("PSZERO_RANK", std::to_string(*process.rank));
  if (process.local_rank) set("PSZERO_LOCAL_RANK", std::to_string(*process.local_rank));
  if (process.node_rank) set("PSZERO_NODE_RANK", std::to_string(*process.node_rank));
  if (process.master_addr) set("PSZERO_MASTER_ADDR", *process.master_addr);
  if (process.master_port) set("PSZERO_MASTER_PORT", std::to_string(*process.master_port));
}

}  // namespace pszero
