"""Inference: CAMs for a batch (:mod:`.cams`), CAMs to label maps (:mod:`.labels`), slide streaming (``slide``).

```python
from histo_daen.config.schema import InferenceConfig
from histo_daen.inference import cams_to_label_map, compute_cams

settings = InferenceConfig()                           # SEAM's scales with flips, predicted labels > 0.25
result = compute_cams(model, images, settings=settings)  # images (B, 3, H, W) RGB in [0, 1]
labels = cams_to_label_map(result.cams, images, settings=settings, labels_used=result.labels_used,
                           background=result.background)  # (B, H, W) uint8 dataset indices, 4 = exclude
```
"""

from __future__ import annotations

from histo_daen.inference.cams import CamResult, CamSettings, compute_cams
from histo_daen.inference.labels import cams_to_label_map, white_glass_mask

__all__ = ["CamResult", "CamSettings", "cams_to_label_map", "compute_cams", "white_glass_mask"]
