#!/usr/bin/env python3
"""PyTorch yardstick for `pszero-bench train --peer torch`.

Trains pszero's model presets (worker/model/config.cc: the same shapes, parameter counts,
loss and optimizer; not the same initial weights or data, so losses are comparable in size
only) with N CPU processes over gloo, one run per sync mode, and prints one JSON document:

  allreduce  DistributedDataParallel
  zero1      DistributedDataParallel + ZeroRedundancyOptimizer (optimizer state sharded)
  zero2      FullyShardedDataParallel(SHARD_GRAD_OP), one FSDP unit per block
  zero3      FullyShardedDataParallel(FULL_SHARD), one FSDP unit per block

Each process uses --threads intra-op threads (torch.set_num_threads) and --batch-per-rank
rows of the preset; a step is zero_grad + forward + backward + optimizer step, timed on
every rank; the step time is the slowest rank's, and the figure is the median over --steps
steps (no warm-up step: pszero's report takes the median over all its steps too). A mode
that fails (torch 1.13's FSDP does not even import under Python 3.11) gets "error" with the
exception text and null figures: nothing is made up. Exit 0 when the JSON was printed
(even with failed modes), 2 for bad arguments, 1 when torch cannot be imported.
"""

import argparse
import json
import math
import multiprocessing
import socket
import statistics
import sys
import time
import traceback

PRESETS = {
    "mlp": dict(kind="mlp", layers=4, d=1024, heads=1, seq=1, batch=16, ffn=4, vocab=0),
    "gpt-tiny": dict(kind="gpt", layers=4, d=256, heads=4, seq=128, batch=8, ffn=4, vocab=256),
    "gpt-small": dict(kind="gpt", layers=12, d=768, heads=12, seq=256, batch=4, ffn=4, vocab=256),
}
IMPLS = {
    "allreduce": "DistributedDataParallel",
    "zero1": "DistributedDataParallel+ZeroRedundancyOptimizer",
    "zero2": "FullyShardedDataParallel(SHARD_GRAD_OP)",
    "zero3": "FullyShardedDataParallel(FULL_SHARD)",
}
ADAMW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)


def build_model(cfg, seed):
    """pszero's presets in torch: GPT-2 blocks (pre-LN, GELU tanh MLP, learned positions,
    tied embeddings, LayerNorm eps 1e-5, biases everywhere) or the residual MLP with MSE
    against a fixed random target."""
    import torch
    from torch import nn
    import torch.nn.functional as F

    d, h = cfg["d"], cfg["d"] * cfg["ffn"]

    class MlpBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = nn.LayerNorm(d, eps=1e-5)
            self.fc = nn.Linear(d, h)
            self.proj = nn.Linear(h, d)

        def forward(self, x):
            return x + self.proj(F.gelu(self.fc(self.ln(x)), approximate="tanh"))

    class GptBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = cfg["heads"]
            self.ln_1 = nn.LayerNorm(d, eps=1e-5)
            self.qkv = nn.Linear(d, 3 * d)
            self.attn_proj = nn.Linear(d, d)
            self.mlp = MlpBlock()
            # A plain attribute, not a buffer: DDP broadcasts buffers and gloo has no bool.
            self.mask = torch.ones(cfg["seq"], cfg["seq"], dtype=torch.bool).tril()

        def forward(self, x):
            b, t, c = x.shape
            hd = c // self.heads
            q, k, v = self.qkv(self.ln_1(x)).split(c, dim=2)
            q = q.view(b, t, self.heads, hd).transpose(1, 2)
            k = k.view(b, t, self.heads, hd).transpose(1, 2)
            v = v.view(b, t, self.heads, hd).transpose(1, 2)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
            att = att.masked_fill(~self.mask[:t, :t], float("-inf")).softmax(dim=-1)
            y = (att @ v).transpose(1, 2).reshape(b, t, c)
            return self.mlp(x + self.attn_proj(y))

    class Gpt(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(cfg["vocab"], d)
            self.wpe = nn.Embedding(cfg["seq"], d)
            self.blocks = nn.ModuleList([GptBlock() for _ in range(cfg["layers"])])
            self.ln_f = nn.LayerNorm(d, eps=1e-5)

        def forward(self, tokens, targets):
            pos = torch.arange(tokens.shape[1])
            x = self.wte(tokens) + self.wpe(pos)
            for blk in self.blocks:
                x = blk(x)
            logits = self.ln_f(x) @ self.wte.weight.t()  # tied head
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([MlpBlock() for _ in range(cfg["layers"])])
            gen = torch.Generator().manual_seed(seed + 1)
            self.register_buffer("target", torch.randn(cfg["batch"], d, generator=gen))

        def forward(self, x, _):
            for blk in self.blocks:
                x = blk(x)
            return F.mse_loss(x, self.target[: x.shape[0]])

    torch.manual_seed(seed)
    model = Gpt() if cfg["kind"] == "gpt" else Mlp()
    # GPT-2 initialization (docs/model.md).
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            nn.init.zeros_(p)
        elif ".ln" in name or name.startswith("ln_f"):
            nn.init.ones_(p)
        elif name == "wpe.weight":
            nn.init.normal_(p, 0.0, 0.01)
        elif name.endswith("attn_proj.weight") or name.endswith("mlp.proj.weight"):
            nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg["layers"]))
        else:
            nn.init.normal_(p, 0.0, 0.02)
    return model, (GptBlock if cfg["kind"] == "gpt" else MlpBlock)


def batch(cfg, rows, seed, rank, step):
    import torch

    gen = torch.Generator().manual_seed((seed * 1000003 + rank) * 1000003 + step)
    if cfg["kind"] == "gpt":
        data = torch.randint(0, cfg["vocab"], (rows, cfg["seq"] + 1), generator=gen)
        return data[:, :-1], data[:, 1:]
    return torch.randn(rows, cfg["d"], generator=gen), None


def wrap(mode, model, block_cls):
    """The torch counterpart of a pszero sync mode: (module, optimizer)."""
    import torch

    if mode in ("allreduce", "zero1"):
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp = DDP(model)
        if mode == "allreduce":
            return ddp, torch.optim.AdamW(ddp.parameters(), **ADAMW)
        from torch.distributed.optim import ZeroRedundancyOptimizer

        return ddp, ZeroRedundancyOptimizer(
            ddp.parameters(), optimizer_class=torch.optim.AdamW, **ADAMW)
    import functools

    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp import ShardingStrategy
    from torch.distributed.fsdp.wrap import transformer_auto_wrap_policy

    strategy = ShardingStrategy.FULL_SHARD if mode == "zero3" else ShardingStrategy.SHARD_GRAD_OP
    policy = functools.partial(transformer_auto_wrap_policy, transformer_layer_cls={block_cls})
    fsdp = FSDP(model, sharding_strategy=strategy, auto_wrap_policy=policy)
    return fsdp, torch.optim.AdamW(fsdp.parameters(), **ADAMW)


def rank_main(rank, args, cfg, mode, port, queue):
    try:
        import torch
        import torch.distributed as dist

        torch.set_num_threads(args.threads)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=args.workers)
        model, block_cls = build_model(cfg, args.seed)
        params = sum(p.numel() for p in model.parameters())
        module, opt = wrap(mode, model, block_cls)
        times, losses = [], []
        for step in range(args.steps):
            x, y = batch(cfg, args.batch_per_rank, args.seed, rank, step)
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = module(x, y)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
            losses.append(float(loss.detach()))
        # The step time is the slowest rank's; the loss is the replicas' mean.
        t = torch.tensor(times, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        l = torch.tensor(losses, dtype=torch.float64)
        dist.all_reduce(l)
        if rank == 0:
            queue.put({"params": params, "step_s": t.tolist(),
                       "losses": (l / args.workers).tolist()})
        dist.destroy_process_group()
    except Exception as e:  # reported, never hidden: the parent puts it in the JSON
        queue.put({"rank": rank, "error": f"{type(e).__name__}: {e}",
                   "traceback": traceback.format_exc(limit=4)})
        sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_mode(args, cfg, mode):
    out = {"mode": mode, "torch_impl": IMPLS[mode], "step_s_median": None,
           "tokens_per_s": None, "final_loss": None, "error": None}
    if mode in ("zero2", "zero3"):
        try:
            import torch.distributed.fsdp  # noqa: F401
        except Exception as e:  # torch 1.13 + Python 3.11: a dataclass error at import
            out["error"] = f"import torch.distributed.fsdp failed: {type(e).__name__}: {e}"
            return out
    ctx = multiprocessing.get_context("fork")  # no second `import torch` per process
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=rank_main, args=(r, args, cfg, mode, port, queue))
             for r in range(args.workers)]
    for p in procs:
        p.start()
    result, errors = None, []
    deadline = time.monotonic() + args.timeout
    import queue as queue_mod
    while result is None and time.monotonic() < deadline:
        try:
            msg = queue.get(timeout=1.0)
        except queue_mod.Empty:
            if all(p.exitcode is not None for p in procs):
                break
            continue
        if "error" in msg:
            errors.append(msg)
            break
        result = msg
    for p in procs:
        p.join(timeout=max(1.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join()
    if result is None:
        if errors:
            print(errors[0]["traceback"], file=sys.stderr)
            out["error"] = f"rank {errors[0]['rank']}: {errors[0]['error']}"
        elif time.monotonic() >= deadline:
            out["error"] = f"timed out after {args.timeout} s"
        else:
            codes = [p.exitcode for p in procs]
            out["error"] = f"processes exited with codes {codes} and no result"
        return out
    steps = result["step_s"]
    median = statistics.median(steps)
    out.update(params=result["params"], step_s=steps, losses=result["losses"],
               step_s_median=median,
               tokens_per_s=args.tokens_per_step / median,
               final_loss=result["losses"][-1])
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=sorted(PRESETS), default="gpt-tiny")
    ap.add_argument("--modes", default="allreduce,zero3",
                    help="comma list of allreduce, zero1, zero2, zero3")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per mode")
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    bad = [m for m in modes if m not in IMPLS]
    if bad or not modes:
        ap.error(f"--modes: unknown mode {bad[0] if bad else '(none)'!r}")
    for name in ("workers", "steps", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name}: must be at least 1")
    cfg = PRESETS[args.model]
    args.batch_per_rank = cfg["batch"]
    tokens = cfg["batch"] * (cfg["seq"] if cfg["kind"] == "gpt" else 1)
    args.tokens_per_step = tokens * args.workers
    try:
        import torch
    except Exception as e:
        print(json.dumps({"peer": "torch", "error": f"PyTorch not importable: {e}"}))
        return 1
    doc = {
        "peer": "torch", "torch_version": torch.__version__,
        "python": sys.version.split()[0], "backend": "gloo", "device": "cpu",
        "model": args.model, "workers": args.workers, "steps": args.steps,
        "threads": args.threads, "batch_per_rank": args.batch_per_rank,
        "tokens_per_step": args.tokens_per_step,
        "runs": [run_mode(args, cfg, m) for m in modes],
    }
    print(json.dumps(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
