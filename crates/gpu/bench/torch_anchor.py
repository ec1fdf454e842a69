#!/usr/bin/env python3
"""PyTorch anchor for the GPU engine's benchmark, run on the same machine in the same call.

Times (CUDA events, median of repeats after warm-up): matmul 4096^3 in fp32 (no TF32), TF32 and
fp16; torchvision ResNet-50 (random weights, eval) at batch 1 and 32 in fp32 (cuDNN defaults,
TF32 convolutions allowed) and fp16, with the input already on the GPU and with a host->device
copy of the input and device->host copy of the output (what metal_mps's run() does); the Simple
CNN and ResNet block of models/create_test_model.py at batch 1.
"""
import statistics
import time

import torch
import torch.nn as nn
import torchvision

dev = "cuda"
torch.backends.cudnn.benchmark = True


def cuda_time(fn, reps=30, warm=5):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)


def wall_time(fn, reps=30, warm=5):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


print(torch.__version__, torch.cuda.get_device_name())
print("\n| torch matmul 4096^3 | ms | TFLOP/s |\n|---|---|---|")
n = 4096
for name, dt, tf32 in [("fp32", torch.float32, False), ("tf32", torch.float32, True), ("fp16", torch.float16, False)]:
    torch.backends.cuda.matmul.allow_tf32 = tf32
    a = torch.randn(n, n, device=dev, dtype=dt)
    b = torch.randn(n, n, device=dev, dtype=dt)
    ms = cuda_time(lambda: a @ b, reps=20)
    print(f"| {name} | {ms:.3f} | {2 * n**3 / ms / 1e9:.1f} |")
torch.backends.cuda.matmul.allow_tf32 = False


class SimpleCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        return self.pool(torch.relu(self.conv(x)))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64)
        self.c2, self.b2 = nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64)

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        return torch.relu(self.b2(self.c2(y)) + x)


print("\n| torch model | batch | precision | ms on-GPU input (events) | ms host in/out (wall) |\n|---|---|---|---|---|")
models = [("simple_cnn", SimpleCNN, (3, 224, 224), [1, 32]), ("resnet_block", Block, (64, 56, 56), [1, 32]),
          ("resnet50", lambda: torchvision.models.resnet50(weights=None), (3, 224, 224), [1, 32])]
with torch.inference_mode():
    for name, make, chw, batches in models:
        for prec, dt in [("fp32", torch.float32), ("fp16", torch.float16)]:
            m = make().eval().to(dev, dt)
            for b in batches:
                x = torch.randn(b, *chw, device=dev, dtype=dt)
                xh = x.cpu()
                ms = cuda_time(lambda: m(x))
                wall = wall_time(lambda: m(xh.to(dev)).cpu())
                print(f"| {name} | {b} | {prec} | {ms:.3f} | {wall:.3f} |")
