// The posix_spawn attributes of every process a launcher starts (workers, servers, remote
// node launchers over ssh): its own process group, so a terminal's Ctrl-C reaches only the
// launcher, which forwards it once; the signals the launcher handles or ignores back to
// their defaults, and none blocked. RAII over posix_spawnattr_t.
#pragma once

#include <signal.h>
#include <spawn.h>

namespace pszero {

class ChildSpawnAttributes {
 public:
  ChildSpawnAttributes() {
    posix_spawnattr_init(&attr_);
    sigset_t defaults, empty;
    sigemptyset(&defaults);
    for (int sig : {SIGINT, SIGTERM, SIGCHLD, SIGPIPE, SIGHUP, SIGUSR1}) sigaddset(&defaults, sig);
    sigemptyset(&empty);
    posix_spawnattr_setflags(
        &attr_, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);
    posix_spawnattr_setpgroup(&attr_, 0);
    posix_spawnattr_setsigdefault(&attr_, &defaults);
    posix_spawnattr_setsigmask(&attr_, &empty);
  }
  ~ChildSpawnAttributes() { posix_spawnattr_destroy(&attr_); }
  ChildSpawnAttributes(const ChildSpawnAttributes&) = delete;
  ChildSpawnAttributes& operator=(const ChildSpawnAttributes&) = delete;

  const posix_spawnattr_t* get() const { return &attr_; }

 private:
  posix_spawnattr_t attr_;
};

}  // namespace pszero
