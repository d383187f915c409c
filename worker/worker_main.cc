// pszero-worker: one worker process of a job. For now it lives only the control-plane
// part of its life (join, barriers, publish/lookup, heartbeats, clean exit); see
// common/control_plane_main.h.
#include "common/control_plane_main.h"

int main(int argc, char** argv) {
  return pszero::ControlPlaneMain(pszero::Role::kWorker, argc, argv);
}
