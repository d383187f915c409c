// LayerHooks: the seams a sync strategy needs inside forward and backward, per unit (a
// layer's contiguous range of the ParamBuffer, ParamBuffer::units()).
//
//  * BeforeForward(u) / BeforeBackward(u): unit u's parameters are about to be read
//    (ZeRO-3 gathers them here).
//  * GradientsReady(u): unit u's gradients are final for this step (a DDP bucket or a
//    ZeRO-2 reduce-scatter can start while backward goes on).
//
// GPT: units are embed (wte, wpe), h.0 .. h.{L-1}, ln_f. The tied output head reads wte
// at the start of backward, so BeforeBackward(embed) comes first there, and
// GradientsReady(embed) last of all. Calls happen on the model's thread.
#pragma once

#include "common/status.h"

namespace pszero::model {

class LayerHooks {
 public:
  virtual ~LayerHooks() = default;
  virtual Status BeforeForward(int /*unit*/) { return Status::Ok(); }
  virtual Status BeforeBackward(int /*unit*/) { return Status::Ok(); }
  virtual Status GradientsReady(int /*unit*/) { return Status::Ok(); }
};

}  // namespace pszero::model
