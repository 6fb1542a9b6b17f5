"""Median step time per window of 100-iteration runs (session 18's EP=2 scripts): python s18_windows.py LABEL...

The first label is the reference; logs are /tmp/train/LABEL.log. Windows: iterations 6-60, 61-100, 6-100.
"""

import re
import statistics
import sys

labels = sys.argv[1:]
times = {
    label: [
        float(m[1])
        for m in re.finditer(r"elapsed time per iteration \(ms\): ([\d.]+)", open(f"/tmp/train/{label}.log").read())
    ]
    for label in labels
}
for first, last in ((5, 60), (60, 100), (5, 100)):
    if min(len(t) for t in times.values()) <= first:
        continue
    medians = {label: statistics.median(times[label][first:last]) for label in labels}
    ref = medians[labels[0]]
    cells = [f"{label} {medians[label]:.1f} ({ref / medians[label]:.3f}x)" for label in labels[1:]]
    print(f"iterations {first + 1}-{last}: {labels[0]} {ref:.1f}", *cells)
losses = {label: re.findall(r"lm loss: ([\d.E+-]+)", open(f"/tmp/train/{label}.log").read()) for label in labels}
comet = [label for label in labels if label != "megatron"]
print("losses equal (printed digits) among", comet, ":", all(losses[label] == losses[comet[0]] for label in comet))
