// LayerHooks: the seams a sync strategy needs inside forward and backward, per unit (a
// layer's contiguous range of the ParamBuffer, ParamBuffer::units()).
//
//  * BeforeForward(u) / BeforeBackward(u): unit u's parameters are about to be read
//    (ZeRO-3 gathers them here).
//  * ParamsDone(u): unit u's parameters are not read again until its next
//    BeforeForward / BeforeBackward (ZeRO-3 may release them).
//  * GradientsReady(u): unit u's gradients are final for this backward pass (a DDP bucket
//    or a ZeRO-2 reduce-scatter can start while backward goes on); its parameters are
//    done. With gradient accumulation a step has several passes (SyncStrategy says which
//    is the last).
//
// The order of these calls is the same in every forward/backward pass and on every rank
// of a group (ZeRO-3 records it in the first pass to know which unit to prefetch next).
//
// GPT: units are embed (wte, wpe), h.0 .. h.{L-1}, ln_f. The tied output head reads wte
// at the end of forward and at the start of backward, so embed is used twice in forward
// (BeforeForward(embed) again before the head), BeforeBackward(embed) comes first in
// backward, and GradientsReady(embed) last of all (the embedding's gradient is summed
// then). Calls happen on the model's thread.
//
// With ModelContext::recompute full the model also reads a block's parameters between its
// BeforeBackward and its GradientsReady to re-run the block's forward: no extra calls, the
// same sequence as without recompute.
#pragma once

#include "common/status.h"

namespace pszero::model {

class LayerHooks {
 public:
  virtual ~LayerHooks() = default;
  virtual Status BeforeForward(int /*unit*/) { return Status::Ok(); }
  virtual Status BeforeBackward(int /*unit*/) { return Status::Ok(); }
  virtual Status ParamsDone(int /*unit*/) { return Status::Ok(); }
  virtual Status GradientsReady(int /*unit*/) { return Status::Ok(); }
};

}  // namespace pszero::model
