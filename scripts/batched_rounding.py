"""Op by op: how vmap's batched kernels round against N plain ones (and layout against layout).

For random inputs of the ``cpu``/``tiny`` networks' layer shapes, 4 tiles, float32: the largest
relative difference of a vmapped convolution (its output and its weight gradient) and of vmapped
training-mode batch norm from the same operations run tile by tile, and of the plain path's own
channels-last kernels from its contiguous ones.  "bitwise" says when they are identical.

Usage::

    .venv/bin/python scripts/batched_rounding.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import vmap

N = 4
SHAPES = ((32, 8, 3, 64), (8, 13, 3, 64), (26, 26, 1, 32), (13, 21, 3, 16))


def _rel(a: torch.Tensor, b: torch.Tensor) -> str:
    if torch.equal(a, b):
        return "bitwise"
    return f"{float((a - b).abs().max() / b.abs().max()):.1e}"


def main() -> int:
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {N} tiles, float32; largest relative difference")
    for c_in, c_out, k, size in SHAPES:
        x = torch.randn(N, 1, c_in, size, size, generator=gen)
        w = torch.randn(N, c_out, c_in, k, k, generator=gen) * 0.1
        b = torch.randn(N, c_out, generator=gen)
        gy = torch.randn(N, 1, c_out, size, size, generator=gen)

        def conv(xx, ww, bb, k=k):
            return F.conv2d(xx, ww, bb, padding=k // 2)

        ws, wv = w.clone().requires_grad_(), w.clone().requires_grad_()
        sep = torch.stack([conv(x[i], ws[i], b[i]) for i in range(N)])
        vm = vmap(conv)(x, wv, b)
        (sep * gy).sum().backward()
        (vm * gy).sum().backward()
        cl = conv(x[0].contiguous(memory_format=torch.channels_last),
                  w[0].contiguous(memory_format=torch.channels_last), b[0])
        print(f"conv {c_in}->{c_out} {k}×{k} {size} px: vmap {_rel(vm.detach(), sep.detach())}, "
              f"weight gradient {_rel(wv.grad, ws.grad)}; plain channels-last vs contiguous "
              f"{_rel(cl, sep[0].detach())}")
    x = torch.randn(N, 1, 13, 32, 32, generator=gen) * 3 + 1
    weight, bias = torch.rand(N, 13, generator=gen), torch.randn(N, 13, generator=gen)

    def norm(xx, ww, bb):
        return F.batch_norm(xx, None, None, ww, bb, training=True)

    sep = torch.stack([norm(x[i], weight[i], bias[i]) for i in range(N)])
    cl = norm(x[0].contiguous(memory_format=torch.channels_last), weight[0], bias[0])
    print(f"batch norm 13 channels 32 px: vmap {_rel(vmap(norm)(x, weight, bias), sep)}; "
          f"plain channels-last vs contiguous {_rel(cl, sep[0])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
