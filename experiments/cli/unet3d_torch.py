"""The same unet3d training step in PyTorch, for `npm run bench`'s same-machine comparison.

Mirrors architectures/unet3d.ts (Isensee et al. 2017): 3x3x3 conv (no bias) + instance norm (affine) +
leaky ReLU 0.01, residual context modules, strided-conv downsampling, nearest x2 upsampling + conv,
concatenated skips, localization modules (3x3x3 then 1x1x1 halving), a 1x1x1 head with bias; soft Dice +
binary cross-entropy on sigmoid outputs; Adam. Uses whatever torch is installed (Debian's python3-torch
is enough); it is not a dependency of the project.

usage: python3 unet3d_torch.py D H W base depth repeats threads [device]  -> prints one JSON line

device: cpu (default) or cuda (e.g. cuda:0). On CUDA every step ends with torch.cuda.synchronize(), the
line adds peak_bytes (torch.cuda.max_memory_allocated over the run) and the GPU's name, cuDNN picks its
convolution algorithms in the warm-up step (cudnn.benchmark), and convolutions run in plain fp32 like
tfjs's (TF32 off) unless VOLSEG_TORCH_TF32=1. Every line has the final step's loss.
"""
import json
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def cna(cin, cout, k=3, stride=1):
    return nn.Sequential(
        nn.Conv3d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
        nn.InstanceNorm3d(cout, affine=True, eps=1e-5),
        nn.LeakyReLU(0.01),
    )


class UNet3d(nn.Module):
    def __init__(self, cin, cout, base, depth):
        super().__init__()
        f = [base * 2**l for l in range(depth)]
        self.depth = depth
        self.enc_in = nn.ModuleList()
        self.ctx = nn.ModuleList()
        for l in range(depth):
            self.enc_in.append(cna(cin, f[0]) if l == 0 else cna(f[l - 1], f[l], stride=2))
            self.ctx.append(nn.Sequential(cna(f[l], f[l]), cna(f[l], f[l])))
        self.upconv = nn.ModuleList()
        self.loc1 = nn.ModuleList()
        self.loc2 = nn.ModuleList()
        for l in range(depth - 2, -1, -1):
            self.upconv.append(cna(f[l + 1], f[l]))
            self.loc1.append(cna(2 * f[l], 2 * f[l]))
            self.loc2.append(cna(2 * f[l], f[l], k=1) if l > 0 else nn.Identity())
        self.head = nn.Conv3d(2 * f[0], cout, 1, bias=True)

    def forward(self, x):
        skips = []
        h = x
        for l in range(self.depth):
            a = self.enc_in[l](h)
            h = a + self.ctx[l](a)
            skips.append(h)
        for i, l in enumerate(range(self.depth - 2, -1, -1)):
            up = self.upconv[i](F.interpolate(h, scale_factor=2, mode="nearest"))
            h = self.loc2[i](self.loc1[i](torch.cat([skips[l], up], 1)))
        return self.head(h)


def loss_fn(logits, target):
    p = torch.sigmoid(logits)
    axes = (0, 2, 3, 4)
    inter = (p * target).sum(axes)
    denom = p.sum(axes) + target.sum(axes)
    dice = (2 * inter + 1e-5) / (denom + 1e-5)
    return 1 - dice.mean() + F.binary_cross_entropy_with_logits(logits, target)


def main():
    d, h, w, base, depth, repeats, threads = (int(v) for v in sys.argv[1:8])
    device = torch.device(sys.argv[8] if len(sys.argv) > 8 else "cpu")
    cuda = device.type == "cuda"
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if cuda:
        tf32 = os.environ.get("VOLSEG_TORCH_TF32") == "1"
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = True
    net = UNet3d(4, 3, base, depth)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(1, 4, d, h, w)
    y = (torch.rand(1, 3, d, h, w) > 0.7).float()
    net, x, y = net.to(device), x.to(device), y.to(device)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(repeats + 1):
        sync()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        sync()
        if i > 0:  # the first step is warm-up
            times.append(time.perf_counter() - t0)
    times.sort()
    out = {
        "ms": 1000 * times[len(times) // 2],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "params": sum(p.numel() for p in net.parameters()),
        "device": str(device),
        "loss": float(loss.detach()),
    }
    if cuda:
        out["peak_bytes"] = torch.cuda.max_memory_allocated(device)
        out["gpu"] = torch.cuda.get_device_name(device)
        out["tf32"] = torch.backends.cudnn.allow_tf32
        out["cudnn"] = torch.backends.cudnn.version()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
