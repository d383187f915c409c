// What the cluster tools people already run say about where a process stands, read from
// environment variables: Slurm (SLURM_*), torchrun-style (MASTER_ADDR, NODE_RANK, ...)
// and Open MPI (OMPI_COMM_WORLD_*). Pure functions over an EnvMap, so that tests feed
// them fake environments; docs/cluster.md lists every variable and which wins.
//
// Two levels, as in torchrun:
//  * a node launcher (pszero-launch, one per machine) learns the number of nodes, its node
//    rank and the master's address (DeriveNodeEnv);
//  * a single process started by someone else's launcher (mpirun, torchrun-style tools)
//    learns its global rank, local rank and the master (DeriveProcessEnv).
// Thread-safe: nothing here has state.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace pszero {

using EnvMap = std::map<std::string, std::string>;

// This process's environment as an EnvMap.
EnvMap CurrentEnv();

// Expands a Slurm host list: "node[01-04,07],gpu5,rack[1-2]-n[3-4]" gives node01 node02
// node03 node04 node07 gpu5 rack1-n3 rack1-n4 rack2-n3 rack2-n4 (zero padding kept, as
// Slurm writes it). InvalidArgument naming the bad part.
Result<std::vector<std::string>> ExpandSlurmNodeList(const std::string& list);

// The rendezvous port under Slurm when MASTER_PORT is not set: one per job, so that two
// jobs sharing a node do not collide (20000 + job id mod 20000).
uint16_t SlurmDefaultPort(uint64_t job_id);

// Default port of the rendezvous service when nothing else says (torchrun's).
inline constexpr uint16_t kDefaultMasterPort = 29500;

// What a node launcher learned from its environment; unset fields: nothing said.
struct NodeEnv {
  std::optional<int> nnodes;
  std::optional<int> node_rank;
  std::optional<std::string> master_addr;
  std::optional<uint16_t> master_port;
  std::string source;  // "slurm", "torchrun", "slurm+torchrun" or "" (nothing found)
};

// Slurm (when SLURM_JOB_ID, SLURM_NNODES, SLURM_NODELIST or SLURM_JOB_NODELIST, and
// SLURM_NODEID or SLURM_PROCID are set): nnodes = SLURM_NNODES, node rank = SLURM_NODEID
// (SLURM_PROCID when absent; `srun` runs one task per node), master = first host of the
// node list, port = SlurmDefaultPort(SLURM_JOB_ID). Then torchrun-style variables override
// what they name: NNODES, NODE_RANK (or GROUP_RANK), MASTER_ADDR, MASTER_PORT.
// SLURM_LOCALID > 0 (a second task on a node) is refused: one node launcher per node.
// InvalidArgument naming the variable on a malformed value.
Result<NodeEnv> DeriveNodeEnv(const EnvMap& env);

// What a single process (pszero-worker or pszero-server started by another launcher)
// learned from its environment.
struct ProcessEnv {
  std::optional<int> rank;        // global rank among its role
  std::optional<int> world_size;  // processes of its role
  std::optional<int> local_rank;  // rank on its machine
  std::optional<int> node_rank;
  std::optional<std::string> master_addr;
  std::optional<uint16_t> master_port;
  std::string source;  // "ompi", "torchrun" or ""
};

// Open MPI (OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _NODE_RANK) first, else torchrun
// style (RANK, WORLD_SIZE, LOCAL_RANK, NODE_RANK or GROUP_RANK); MASTER_ADDR and
// MASTER_PORT with either. InvalidArgument naming the variable on a malformed value.
Result<ProcessEnv> DeriveProcessEnv(const EnvMap& env);

// Sets the PSZERO_* variable of every field of `process` that the environment does not
// already hold (PSZERO_RANK, PSZERO_LOCAL_RANK, PSZERO_NODE_RANK, PSZERO_MASTER_ADDR,
// PSZERO_MASTER_PORT): explicit PSZERO_* settings and then flags win. Call before parsing
// flags, from main.
void ExportProcessEnv(const ProcessEnv& process);

}  // namespace pszero
