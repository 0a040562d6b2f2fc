"""The decode step of Llama-architecture models without the module tree (gpt-fast's recipe, eagerly).

A decode step reads every weight once, so at batch 1 it should run at memory speed; through the transformers
module tree it did not (``trlm bench generate``'s profile, 2-core CPU): a third of a SmolLM2-135M step was Python
and small operators around the matrix products — module calls, keyword plumbing, a ``torch.cat`` of every layer's
whole key/value cache per token — and bf16 matrix-vector products ran at a third of the memory bandwidth.

:class:`FastDecoder` runs the same step as a flat loop over the layers' weight tensors:

* **the same operators in the same order** as transformers' Llama (RMSNorm in float32, rotary embedding, SDPA with
  the same mask), so the logits are bit-identical to the module path in float32 and bf16 (tests) — except where
  the same bits come cheaper: q, k, v (and gate, up) as one product each, and a verify step's attention reading
  the shared grouped-query key / value heads in place instead of copying them per query head;
* **a key/value buffer** (:class:`KVBuffers`) with spare columns: a step writes its tokens in place and attention
  reads a view, instead of concatenating the cache per layer per token;
* in bf16 on a CPU with oneDNN, **prepacked weights** (``mkldnn._reorder_linear_weight``: the blocked layout the
  oneDNN kernel reads faster; 1.3x over ``F.linear`` for a whole step's products at batch 1, same bits).

Prefill, scoring and hidden states keep the module path (large products, where the module overhead is small).
Forward hooks on decoder blocks (steering) run in the step as they would in the module; any other hook sends
the batch down the module path, so a hook is never skipped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ARCHITECTURES = ("LlamaForCausalLM",)


class KVBuffers:
    """Every layer's keys and values, (B, kv heads, capacity, head dim), the first ``length`` columns in use.

    The interface :class:`~trlm.core.schema.DecodeState` needs of a cache: ``crop(-n)`` (forget the last n
    columns), ``batch_select_indices(rows)`` and ``get_seq_length()``.
    """

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], length: int):
        self.keys, self.values, self.length = keys, values, length

    @classmethod
    def from_cache(cls, cache, spare: int = 64) -> "KVBuffers":
        """A copy of a transformers ``DynamicCache`` with ``spare`` free columns per layer."""
        keys, values = [], []
        for layer in cache.layers:
            k, v = layer.keys, layer.values
            B, H, L, D = k.shape
            kb = k.new_empty(B, H, L + spare, D)
            vb = v.new_empty(B, H, L + spare, D)
            kb[:, :, :L] = k
            vb[:, :, :L] = v
            keys.append(kb)
            values.append(vb)
        return cls(keys, values, cache.layers[0].keys.shape[2])

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def get_seq_length(self) -> int:
        return self.length

    def reserve(self, n: int) -> None:
        """Room for ``n`` more columns (the buffers double when full: amortised O(1) per token)."""
        need = self.length + n
        if need <= self.capacity:
            return
        cap = max(need, 2 * self.capacity)
        for buffers in (self.keys, self.values):
            for i, b in enumerate(buffers):
                grown = b.new_empty(b.shape[0], b.shape[1], cap, b.shape[3])
                grown[:, :, :self.length] = b[:, :, :self.length]
                buffers[i] = grown

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, H, q, D) keys / values after the used columns; the layer's keys and values so far (views)."""
        end = self.length + k.shape[2]
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def crop(self, n: int) -> None:
        if n > 0:
            raise ValueError(f"crop takes minus the number of columns to forget, got {n}")
        self.length += n

    def batch_select_indices(self, rows: torch.Tensor) -> None:
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]


def _packable(dtype: torch.dtype, device: torch.device) -> bool:
    return (dtype == torch.bfloat16 and device.type == "cpu" and torch.backends.mkldnn.is_available()
            and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _version(t: torch.Tensor) -> int | None:
    """A tensor's in-place-write counter (None for an inference tensor, which keeps none)."""
    return None if t.is_inference() else t._version


class _Linear:
    """Weights as the step reads them: several modules' weights stacked into one product (q, k, v; gate, up),
    prepacked for oneDNN in bf16 on a CPU, else ``F.linear``. A stacked product gives each output the same bits
    as its own module's (one dot product per output; tests)."""

    __slots__ = ("modules", "sources", "versions", "weight", "bias", "packed", "in_features")

    def __init__(self, modules: list[torch.nn.Linear], pack: bool):
        self.modules, self.sources = modules, [m.weight for m in modules]
        self.in_features = modules[0].in_features
        self.versions = [_version(w) for w in self.sources]
        with torch.no_grad():
            stack = len(modules) > 1
            self.weight = torch.cat([m.weight for m in modules]) if stack else modules[0].weight
            biases = [m.bias for m in modules]
            self.bias = None if biases[0] is None else torch.cat(biases) if stack else biases[0]
        self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), 1) if pack else None
        if self.packed is not None and stack:
            self.weight = None  # (only the packed copy is read)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is None:
            return F.linear(x, self.weight, self.bias)
        shape = x.shape
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]), self.packed, self.bias, "none", [], "")
        return y.reshape(*shape[:-1], y.shape[-1])

    def stale(self) -> bool:
        """Whether a module's weight was written in place or replaced since the copy was made."""
        return any(m.weight is not w or _version(w) != v for m, w, v in zip(self.modules, self.sources, self.versions))


def unsupported(model: torch.nn.Module) -> str | None:
    """Why ``model`` cannot take the fast step (None if it can)."""
    name = type(model).__name__
    if name not in ARCHITECTURES:
        return f"{name} is not one of {', '.join(ARCHITECTURES)}"
    cfg = model.config
    if getattr(cfg, "_attn_implementation", None) != "sdpa":
        return f"attention implementation {cfg._attn_implementation!r} (the step mirrors 'sdpa')"
    if getattr(cfg, "hidden_act", None) != "silu" or getattr(cfg, "pretraining_tp", 1) != 1:
        return "activation other than silu or pretraining_tp > 1"
    return None


class FastDecoder:
    """The decode step of one Llama-architecture model, over its own weight tensors (shared, not copied, except
    bf16's prepacked copies of the linear weights)."""

    def __init__(self, model: torch.nn.Module):
        reason = unsupported(model)
        if reason:
            raise ValueError(f"no fast decode step: {reason}")
        self.model = model
        cfg = model.config
        self.blocks = list(model.model.layers[: cfg.num_hidden_layers])
        self.eps = cfg.rms_norm_eps
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.n_heads, self.n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.n_rep = self.n_heads // self.n_kv
        self.inter = cfg.intermediate_size
        self.scaling = self.blocks[0].self_attn.scaling
        p = next(model.parameters())
        self.packed = _packable(p.dtype, p.device)
        self._build()

    def _build(self) -> None:
        pack = self.packed
        self.linears = [
            tuple(_Linear(ms, pack) for ms in ([b.self_attn.q_proj, b.self_attn.k_proj, b.self_attn.v_proj],
                                               [b.self_attn.o_proj], [b.mlp.gate_proj, b.mlp.up_proj],
                                               [b.mlp.down_proj]))
            for b in self.blocks]
        self.head = _Linear([self.model.lm_head], pack)

    def refresh(self) -> None:
        """Repack the weights if any was changed in place since they were packed (training between calls)."""
        if self.head.stale() or any(lin.stale() for layer in self.linears for lin in layer):
            self._build()

    def products(self) -> list[_Linear]:
        """Every weight product of a step (stacked where the step stacks them), the output head last."""
        return [lin for layer in self.linears for lin in layer] + [self.head]

    def hooks_ok(self) -> bool:
        """Whether every hook on the model is a plain forward hook on a decoder block (which the step runs)."""
        from torch.nn.modules import module as nn_module

        if any((nn_module._global_forward_hooks, nn_module._global_forward_pre_hooks,
                nn_module._global_backward_hooks)):
            return False
        blocks = {id(b) for b in self.blocks}
        for m in self.model.modules():
            if m._forward_pre_hooks or m._forward_hooks_with_kwargs or m._forward_hooks_always_called:
                return False
            if m._forward_hooks and id(m) not in blocks:
                return False
        return True

    def _norm(self, h: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        dtype = h.dtype  # LlamaRMSNorm, operator for operator
        h = h.to(torch.float32)
        variance = h.pow(2).mean(-1, keepdim=True)
        h = h * torch.rsqrt(variance + self.eps)
        return weight * h.to(dtype)

    @staticmethod
    def _mask(mask2d: torch.Tensor, q: int) -> torch.Tensor | None:
        """transformers' SDPA mask for q new tokens after a cache: None when nothing is masked and q == 1 (the
        kernel then needs none), else (B, 1, q, kv) bool = causal and not padding."""
        kv = mask2d.shape[1]
        pad = mask2d.bool()
        if q == 1 and bool(pad.all()):
            return None
        q_idx = torch.arange(kv - q, kv, device=pad.device)
        causal = torch.arange(kv, device=pad.device)[None, :] <= q_idx[:, None]  # (q, kv)
        return (causal[None, None] & pad[:, None, None, :]).expand(pad.shape[0], 1, q, kv)

    def _attend(self, q, k, v, mask):
        """SDPA over the grouped-query heads. transformers copies every key / value head ``n_rep`` times when a
        mask is needed for several new tokens (a verify step); the kernel's ``enable_gqa`` reads the shared heads
        in place and gives the same bits (tests) at a third of the time at batch 16."""
        B, H, n, D = q.shape
        if self.n_rep > 1:
            if mask is not None and n == 1:
                q = q.reshape(B, H // self.n_rep, self.n_rep, D)  # transformers' layout for one new token
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling)
            else:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling, enable_gqa=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scaling)
        return out.reshape(B, -1, n, D).transpose(1, 2).contiguous()

    @torch.inference_mode()
    def step(self, cache: KVBuffers, tokens: torch.Tensor, mask2d: torch.Tensor, pos: torch.Tensor,
             keep: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, q, V) after each of ``tokens`` (B, q); ``mask2d`` (B, cached + q) marks real tokens,
        ``pos`` (B, q) their position ids. Writes the tokens' keys and values into ``cache``. ``keep`` (B,): only
        the logits after token ``keep[b]`` of each row, (B, 1, V) (the output head is a fifth of the weights)."""
        inner = self.model.model
        B, n = tokens.shape
        h = F.embedding(tokens, inner.embed_tokens.weight)
        cos, sin = inner.rotary_emb(h, position_ids=pos)
        cos, sin = cos[:, None], sin[:, None]  # (B, 1, q, D)
        mask = self._mask(mask2d, n)
        cache.reserve(n)
        half, H, Hkv, D = self.head_dim // 2, self.n_heads, self.n_kv, self.head_dim
        for i, (block, (wqkv, wo, wgu, wd)) in enumerate(zip(self.blocks, self.linears)):
            block_in = h
            x = self._norm(h, block.input_layernorm.weight)
            qkv = wqkv(x).view(B, n, H + 2 * Hkv, D).transpose(1, 2)  # (B, heads, q, D)
            qk = qkv[:, :H + Hkv]  # rotary on queries and keys at once (elementwise: the same bits)
            qk = (qk * cos) + (torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin)
            k, v = cache.write(i, qk[:, H:], qkv[:, H + Hkv:])
            a = self._attend(qk[:, :H], k, v, mask).reshape(B, n, -1).contiguous()
            h = h + wo(a)
            gate, up = wgu(self._norm(h, block.post_attention_layernorm.weight)).split(self.inter, -1)
            h = h + wd(F.silu(gate) * up)
            for hook in block._forward_hooks.values():  # steering: the block's output through its hooks
                out = hook(block, (block_in,), h)  # (module, inputs, output), as nn.Module calls it
                if out is not None:
                    h = out[0] if isinstance(out, tuple) else out
        cache.length += n
        if keep is not None:
            h = h[torch.arange(B, device=h.device), keep][:, None]
        return self.head(self._norm(h, inner.norm.weight))
