"""What the SD-LoRA paper (ICLR 2025) and its official logs report, for pipelines/reproduce.py to print beside the
measured numbers. Acc / AAA in %, from the paper's Tables 2, 3 and 6 (mean over 5 runs; the standard error in
brackets only for the SD-LoRA row), and each official log's per-task accuracy curve (one seed each; the official
repository's logs/). docs/method.md §8 keeps the same figures with their notes.
"""

from __future__ import annotations

# benchmark -> method -> (Acc, AAA, Acc standard error, AAA standard error); None where the paper gives none
PAPER = {
    "imagenet_r_5": {"slora": (79.15, 83.01, 0.20, 0.42), "slora_rr": (79.01, 82.50, None, None),
                     "slora_kd": (78.85, 82.47, None, None)},
    "imagenet_r_10": {"slora": (77.34, 82.04, 0.35, 0.24), "slora_rr": (77.18, 81.74, None, None),
                      "slora_kd": (77.03, 81.52, None, None)},
    "imagenet_r_20": {"slora": (75.26, 80.22, 0.37, 0.72), "slora_rr": (74.05, 80.65, None, None),
                      "slora_kd": (74.12, 80.11, None, None)},
    "imagenet_a": {"slora": (55.96, 64.95, 0.73, 1.63), "slora_rr": (55.59, 64.59, None, None),
                   "slora_kd": (54.24, 63.89, None, None)},
    "domainnet": {"slora": (72.82, 78.89, 0.37, 0.50), "slora_rr": (72.58, 78.79, None, None),
                  "slora_kd": (72.15, 78.44, None, None)},
    "cifar100": {"slora": (88.01, 92.54, 0.31, 0.18), "slora_rr": (87.26, 92.05, None, None),
                 "slora_kd": (87.09, 92.01, None, None)},
    "cub": {"slora": (77.48, 85.59, 0.20, 0.44), "slora_rr": (76.35, 83.89, None, None),
            "slora_kd": (75.95, 83.21, None, None)},
}

# benchmark -> (log file, its class-order seed, per-task top-1 accuracy curve); SD-LoRA only. The files' names do
# not say their task count: InR-T20.log is N = 10 and InR-T10.log is N = 20.
OFFICIAL_LOGS = {
    "cifar100": ("C100.log", 1994, (97.30, 96.35, 95.67, 93.85, 92.50, 91.45, 89.97, 88.70, 87.46, 87.26)),
    "imagenet_a": ("InA.log", 1993, (82.29, 78.33, 74.58, 71.92, 68.97, 66.56, 64.41, 61.70, 60.29, 58.66)),
    "imagenet_r_5": ("InR-T5.log", 1995, (89.64, 84.43, 81.37, 80.22, 79.32)),
    "imagenet_r_10": ("InR-T20.log", 1996, (89.24, 86.79, 86.43, 84.04, 82.35, 80.95, 79.68, 79.29, 78.93, 78.17)),
    "imagenet_r_20": ("InR-T10.log", 1995, (90.73, 89.47, 85.79, 84.16, 82.72, 81.99, 81.06, 80.24, 79.60, 78.99,
                                            78.18, 77.37, 76.26, 75.78, 76.07, 76.17, 75.62, 75.38, 75.30, 75.13)),
}

# The seeds the authors named in their repository's issue 14 (the paper gives none).
SEEDS = (1993, 1994, 1995, 1996, 1997)
METHODS = ("slora", "slora_rr", "slora_kd")
