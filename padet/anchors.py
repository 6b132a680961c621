"""SSD-style anchors of PADet (paper §3, "Anchor Design and Matching": SSD's settings; the
sizes are SSD300's COCO fractions, which the paper does not list).

detectron2's ``DefaultAnchorGenerator`` takes the product sizes x ratios and cannot express SSD's
extra square anchor of size sqrt(s_k * s_{k+1}), hence this small prior generator.
"""
import math

import torch
from torch import nn

__all__ = ["SSDAnchorGenerator", "flatten_anchor_maps"]


class SSDAnchorGenerator(nn.Module):
    """One anchor scale per level with SSD's aspect ratios.

    Per location of level k (base size s_k), as (w, h): (s_k, s_k); (s', s') with
    s' = sqrt(s_k * s_{k+1}); then (s_k*sqrt(r), s_k/sqrt(r)) and (s_k/sqrt(r), s_k*sqrt(r)) for
    every extra ratio r. Centres are ((x + 0.5) * step_x, (y + 0.5) * step_y), step = image size /
    map size. Flattening order: level, y, x, anchor (the order of the heads' flattened maps).
    """

    def __init__(self, *, input_size, size_fractions, aspect_ratios, clip=True):
        super().__init__()
        if len(size_fractions) != len(aspect_ratios) + 1:
            raise ValueError(
                f"ANCHOR_SIZE_FRACTIONS needs one entry per level plus s_{{K+1}}: got "
                f"{len(size_fractions)} fractions for {len(aspect_ratios)} levels"
            )
        self.sizes = [float(f) * input_size for f in size_fractions]
        self.aspect_ratios = [[float(r) for r in ratios] for ratios in aspect_ratios]
        self.clip = clip
        self._cache = {}

    @property
    def num_anchors(self):
        """Anchors per location of each level (6 on D1-D4, 4 on D5-D6 by default)."""
        return [2 + 2 * len(r) for r in self.aspect_ratios]

    def cell_shapes(self, level):
        """(A, 2) tensor of the (w, h) of one location's anchors on ``level``."""
        s, s_next = self.sizes[level], self.sizes[level + 1]
        shapes = [(s, s), (math.sqrt(s * s_next),) * 2]
        for r in self.aspect_ratios[level]:
            shapes += [(s * math.sqrt(r), s / math.sqrt(r)), (s / math.sqrt(r), s * math.sqrt(r))]
        return torch.tensor(shapes, dtype=torch.float32)

    def forward(self, grid_sizes, image_size, device="cpu"):
        """Anchors (M, 4) in XYXY for maps ``grid_sizes`` [(H_k, W_k)] of an (H, W) image.

        Cached per (grid sizes, image size, device); ``image_size`` is the padded batch size.
        """
        grid_sizes = tuple((int(h), int(w)) for h, w in grid_sizes)
        image_size = (int(image_size[0]), int(image_size[1]))
        if len(grid_sizes) != len(self.aspect_ratios):
            raise ValueError(f"{len(grid_sizes)} feature maps for {len(self.aspect_ratios)} "
                             "anchor levels (ANCHOR_ASPECT_RATIOS)")
        key = (grid_sizes, image_size, str(device))
        if key not in self._cache:
            self._cache[key] = self._generate(grid_sizes, image_size).to(device)
        return self._cache[key]

    def _generate(self, grid_sizes, image_size):
        img_h, img_w = image_size
        anchors = []
        for level, (h, w) in enumerate(grid_sizes):
            ys = (torch.arange(h, dtype=torch.float32) + 0.5) * (img_h / h)
            xs = (torch.arange(w, dtype=torch.float32) + 0.5) * (img_w / w)
            cy, cx = torch.meshgrid(ys, xs, indexing="ij")
            centres = torch.stack([cx, cy], dim=-1).reshape(h * w, 1, 2)
            half = self.cell_shapes(level)[None] / 2
            anchors.append(torch.cat([centres - half, centres + half], dim=-1).reshape(-1, 4))
        anchors = torch.cat(anchors)
        if self.clip:
            anchors[:, 0::2] = anchors[:, 0::2].clamp(0, img_w)
            anchors[:, 1::2] = anchors[:, 1::2].clamp(0, img_h)
        return anchors


def flatten_anchor_maps(maps, k):
    """Per-level prediction maps (N, A*k, H, W) -> one (N, sum_l H*W*A, k) tensor in anchor order
    (level, y, x, anchor): each map is viewed as (N, A, k, H, W) and permuted to (N, H, W, A, k)."""
    flat = []
    for m in maps:
        n, _, h, w = m.shape
        flat.append(m.view(n, -1, k, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, k))
    return torch.cat(flat, dim=1)
