"""The markdown table of bench/results.sh from its eval JSON files and timings, plus a scatter
PNG per row for the 2-D toy set (numpy + zlib, no plotting library needed).

usage: results_table.py toy|fashion OUT_DIR "name|options|checkpoint" ...
"""
import json
import os
import struct
import sys
import zlib

import h5py
import numpy as np


def scatter_png(points, path, size=200, extent=3.0):
    """White canvas, one dark pixel per sample, the gmm-ring's 8 mode centres in red."""
    img = np.full((size, size, 3), 255, np.uint8)
    ij = ((points + extent) / (2 * extent) * (size - 1)).round().astype(int)
    ok = (ij >= 0).all(1) & (ij < size).all(1)
    img[size - 1 - ij[ok, 1], ij[ok, 0]] = (30, 30, 30)
    for k in range(8):
        c = 2 * np.array([np.cos(k * np.pi / 4), np.sin(k * np.pi / 4)])
        i, j = ((c + extent) / (2 * extent) * (size - 1)).round().astype(int)
        img[size - 1 - j - 1:size - 1 - j + 2, i - 1:i + 2] = (220, 30, 30)
    raw = b"".join(b"\0" + row.tobytes() for row in img)
    chunk = lambda tag, data: struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def main():
    kind, out, rows = sys.argv[1], sys.argv[2], sys.argv[3:]
    times = {}
    if os.path.exists(f"{out}/times.txt"):
        for line in open(f"{out}/times.txt"):
            name, seconds = line.split()
            # Sampling rows: the last real run; training and distillation: the longest (a re-run
            # that finds them complete takes seconds).
            times[name] = max(times.get(name, 0.0), float(seconds)) if name in ("teacher_training", "distillation") else float(seconds)
    if kind == "toy":
        print("| row | forward passes / sample | NLL (nats) | modes covered | off-mode | Fréchet (data space) | s / 1000 samples | samples |")
        print("|---|---|---|---|---|---|---|---|")
    else:
        print("| row | forward passes / sample | Fréchet (classifier features) | classifier accuracy on the asked class | s / 1000 samples | grid |")
        print("|---|---|---|---|---|---|")
    entries = [("real data", "", "")] + [tuple(r.split("|")) for r in rows]
    for name, options, checkpoint in entries:
        tag = "real" if name == "real data" else name.replace(" ", "_").lower()
        j = json.load(open(f"{out}/{tag}.json"))
        opts = options.split()
        steps = int(opts[opts.index("--steps") + 1]) if "--steps" in opts else (int(name.split()[1]) if name.startswith("student") else 0)
        passes = steps * (2 if "--guidance-scale" in opts else 1)
        n = j["samples"]["rows"] if isinstance(j.get("samples"), dict) and "rows" in j["samples"] else None
        t = times.get(tag)
        per_k = f"{t / n * 1000:.1f}" if t and n else "–"
        if kind == "toy":
            g = j["gmm"]
            png = f"docs/results/toy_{tag}.png"
            if name != "real data":
                scatter_png(h5py.File(f"{out}/{tag}/samples.h5")["x"][:], png)
            else:
                scatter_png(h5py.File(f"{out}/real.h5")["x"][:], png)
            print(f"| {name} | {passes or '–'} | {g['nll']:.3f} | {g['covered_modes']}/{g['modes']} | "
                  f"{g['off_mode_fraction']:.3f} | {j['frechet_distance_data']:.4f} | {per_k} | ![]({png[5:]}) |")
        else:
            acc = j.get("conditional_accuracy")
            grid = f"![](results/fashion_{tag}.png)" if name != "real data" else ""
            print(f"| {name} | {passes or '–'} | {j['frechet_distance']:.2f} | "
                  f"{acc if acc is None else f'{acc:.3f}'} | {per_k} | {grid} |")


if __name__ == "__main__":
    main()
